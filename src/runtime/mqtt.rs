//! The MQTT bridge shell: platform RPCs and shared attributes into the one
//! command path, registrations, reports, answers and the transport log out
//! to the northbound queue in ThingsBoard's gateway shapes.

use super::control::outcome;
use super::error::RunError;
use crate::config::BridgeSettings;
use crate::control::{execute, Backend, Outcome, Request};
use crate::northbound::{thingsboard, Downlink, Northbound};
use crate::server::command::Answer;
use crate::server::{Report, Server, ServerEvent};
use crate::store::Store;
use serde_json::Value as Json;
use smol::channel::Receiver;
use std::collections::HashMap;
use std::time::Instant;

/// Transport log lines a device may have per minute.
const LOG_LINES_PER_MINUTE: u32 = 60;

/// What a command from the platform was, to answer it when the device has.
enum Pending {
    /// An RPC: device, request id and method.
    Rpc(String, Json, String),
    /// A shared attribute written to the resource its key names: device and key.
    Shared(String, String),
}

/// The running bridge and what it waits for.
pub struct Shell {
    northbound: Northbound,
    pending: HashMap<u64, Pending>,
    /// Transport log budget per device: minute started, lines, lines dropped.
    log_budget: HashMap<String, (u64, u32, u32)>,
    batch: thingsboard::Batch,
    last_log_ts: u64,
    max_batch: usize,
}

impl Shell {
    /// Opens the uplink queue in the store and starts the bridge thread.
    pub fn start(cfg: BridgeSettings, store: &Store) -> Result<Shell, RunError> {
        let s = &cfg.broker;
        log::info!(
            "northbound: MQTT to {}:{} as {:?}, QoS {}, queue up to {} MiB",
            s.host,
            s.port,
            s.client_id,
            s.qos,
            cfg.max_queue_bytes >> 20
        );
        let northbound = Northbound::start(cfg.broker, store, cfg.max_queue_bytes)?;
        Ok(Shell {
            northbound,
            pending: HashMap::new(),
            log_budget: HashMap::new(),
            batch: thingsboard::Batch::default(),
            last_log_ts: 0,
            max_batch: cfg.max_batch_bytes,
        })
    }

    /// Ends the bridge with a DISCONNECT, waiting at most `limit`; what
    /// the broker did not acknowledge stays queued.
    pub async fn close(self, limit: std::time::Duration) {
        if !self.northbound.close(limit).await {
            log::warn!("northbound: the bridge did not end within {limit:?}");
        }
    }

    /// What the platform sends down.
    pub fn downlink(&self) -> Receiver<Downlink> {
        self.northbound.downlink.clone()
    }

    /// Connection state and queue counters for `stats`.
    pub fn stats_json(&self) -> Json {
        let n = &self.northbound;
        n.status.to_json(n.queue_stats())
    }

    /// A message from the platform: an RPC runs the command language; a
    /// shared attribute becomes a write of the resource its key names.
    pub fn handle(&mut self, b: &mut impl Backend, now: Instant, d: Downlink) {
        match d {
            Downlink::Rpc {
                device,
                id,
                method,
                params,
            } => {
                log::info!("ep={device} RPC {method} (id {id}) from the platform");
                let req = Request::Command {
                    endpoint: device.clone(),
                    method: method.clone(),
                    params,
                };
                if let Outcome::Started(h) = execute(b, now, req) {
                    self.pending.insert(h, Pending::Rpc(device, id, method));
                }
            }
            Downlink::SharedUpdate { device, mut values } => {
                // The platform's own OTA keys start an update from the
                // local store; they name no resource.
                for kind in [crate::ota::Kind::Firmware, crate::ota::Kind::Software] {
                    let p = kind.prefix();
                    let text = |v: Option<&Json>| v.and_then(Json::as_str).map(str::to_string);
                    let title = text(values.get(&format!("{p}_title")));
                    let version = text(values.get(&format!("{p}_version")));
                    let sum = text(values.get(&format!("{p}_checksum")));
                    for k in [
                        "title",
                        "version",
                        "checksum",
                        "checksum_algorithm",
                        "size",
                        "url",
                        "tag",
                    ] {
                        values.remove(&format!("{p}_{k}"));
                    }
                    if let (Some(t), Some(v)) = (title, version) {
                        log::info!("ep={device} the platform assigns {} {t} {v}", kind.name());
                        crate::control::dispatch::ota_from_platform(
                            b,
                            now,
                            &device,
                            kind,
                            &t,
                            &v,
                            sum.as_deref(),
                        );
                    }
                }
                for (key, value) in values {
                    let Some(path) = b.server().path_of_key(&device, &key) else {
                        log::info!(
                            "ep={device} shared attribute {key:?} names no resource; ignored"
                        );
                        continue;
                    };
                    let req = Request::Command {
                        endpoint: device.clone(),
                        method: "WriteReplace".into(),
                        params: serde_json::json!({"id": path.to_string(), "value": value}),
                    };
                    if let Outcome::Started(h) = execute(b, now, req) {
                        self.pending.insert(h, Pending::Shared(device.clone(), key));
                    }
                }
            }
        }
    }

    /// Takes a device's answer to a command from the platform; gives it
    /// back when the handle is not the platform's.
    pub fn answer(
        &mut self,
        server: &mut Server,
        handle: u64,
        answer: Answer,
    ) -> Result<(), Answer> {
        match self.pending.get(&handle) {
            None => Err(answer),
            // The platform gets one answer per command: the outcome.
            Some(_) if answer.result == "QUEUED" => Ok(()),
            Some(_) => {
                match self.pending.remove(&handle) {
                    Some(Pending::Rpc(device, id, method)) => {
                        let body = thingsboard::rpc_answer(&device, &id, answer.to_json());
                        self.northbound.publish(thingsboard::RPC, &body);
                        let line = format!("RPC {method}: {}", outcome(&answer));
                        self.transport_log(server, &device, line);
                    }
                    Some(Pending::Shared(device, key)) => {
                        let level = if answer.is_success() {
                            log::Level::Info
                        } else {
                            log::Level::Warn
                        };
                        log::log!(
                            level,
                            "ep={device} shared attribute {key:?} written: {}{}",
                            answer.result,
                            answer
                                .error
                                .as_deref()
                                .map_or(String::new(), |e| format!(" ({e})"))
                        );
                        let line = format!("Shared attribute {key} written: {}", outcome(&answer));
                        self.transport_log(server, &device, line);
                    }
                    None => {}
                }
                Ok(())
            }
        }
    }

    /// A line of the device's transport log (telemetry key `transportLog`),
    /// when its profile asks for one: at most 60 lines a minute per device,
    /// the rest counted and said in the next minute's first line.
    /// The line is also kept with the device's recent ones for the console.
    pub fn transport_log(&mut self, server: &mut Server, endpoint: &str, line: String) {
        let now = crate::clock::unix_ms();
        let Some(line) = server.log_transport(endpoint, now, &line) else {
            return;
        };
        let (start, lines, dropped) = self
            .log_budget
            .entry(endpoint.to_string())
            .or_insert((now, 0, 0));
        if now.saturating_sub(*start) >= 60_000 {
            let missed = std::mem::take(dropped);
            *start = now;
            *lines = 0;
            if missed > 0 {
                *lines += 1;
                let note = format!("{missed} transport log lines dropped in the last minute");
                self.batch
                    .add(endpoint, "transportLog".into(), note.into(), now, false);
            }
        }
        if *lines >= LOG_LINES_PER_MINUTE {
            *dropped += 1;
            return;
        }
        *lines += 1;
        // One ms apart: lines of one batch must not share a time stamp.
        let ts = now.max(self.last_log_ts + 1);
        self.last_log_ts = ts;
        self.batch
            .add(endpoint, "transportLog".into(), line.into(), ts, false);
    }

    /// Registry events as the platform sees them: a registration connects
    /// the sub-device (and asks for its shared attributes), leaving
    /// disconnects it.
    pub fn events(&mut self, server: &mut Server, events: &[ServerEvent], next_handle: &mut u64) {
        for ev in events {
            let reg = ev.registration();
            let ep = &reg.endpoint;
            self.transport_log(server, ep, crate::server::transport_log::event_line(ev));
            let nb = &self.northbound;
            match ev {
                ServerEvent::Registered { .. } => {
                    nb.publish(
                        thingsboard::CONNECT,
                        &thingsboard::connect(ep, &server.profile_name(ep)),
                    );
                    let mut shared = server.shared_keys(ep);
                    // An assignment made while the device was away.
                    shared.extend(
                        [
                            "fw_title",
                            "fw_version",
                            "fw_checksum",
                            "sw_title",
                            "sw_version",
                            "sw_checksum",
                        ]
                        .map(String::from),
                    );
                    if !shared.is_empty() {
                        *next_handle += 1;
                        let body = thingsboard::attributes_request(*next_handle, ep, &shared);
                        nb.publish(thingsboard::ATTRIBUTES_REQUEST, &body);
                    }
                }
                ServerEvent::Deregistered(_) | ServerEvent::Expired(_) => {
                    nb.publish(thingsboard::DISCONNECT, &thingsboard::disconnect(ep));
                    self.log_budget.remove(ep.as_str());
                }
                ServerEvent::Updated(_) => {}
            }
        }
    }

    /// Adds a report's keyed values to the batch, sending it when full.
    pub fn report(&mut self, server: &Server, report: &Report) {
        for (key, value, ts, attribute) in server.keyed(report) {
            self.batch.add(&report.endpoint, key, value, ts, attribute);
        }
        if self.batch.size() >= self.max_batch {
            self.flush_batch();
        }
    }

    /// A device's update state, on the keys the platform's own OTA uses
    /// (`fw_state`, `fw_progress`, `fw_error`, `current_fw_version`...).
    pub fn ota(&mut self, rec: &crate::ota::Record) {
        let ts = crate::clock::unix_ms();
        for (key, value) in rec.northbound() {
            self.batch.add(&rec.endpoint, key, value, ts, false);
        }
    }

    /// Client attributes of the gateway itself, queued at once.
    pub fn gateway_attributes(&mut self, attrs: &Json) {
        self.northbound
            .publish(thingsboard::SELF_ATTRIBUTES, attrs.to_string().as_bytes());
    }

    /// Queues the gathered telemetry and attributes for the broker.
    pub fn flush_batch(&mut self) {
        for (topic, body) in self.batch.take() {
            self.northbound.publish(topic, &body);
        }
    }
}
