//! Information reporting: observations (kept across restarts), notifications
//! and Send decoded through the models into a bounded stream of readings.

use super::command::{Answer, DeviceSchema};
use super::{reply, Server};
use crate::coap::{Code, Message, RequestId};
use crate::lwm2m::format::{self, ContentFormat};
use crate::lwm2m::{Path, Value};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Where readings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The answer that established an observation, or a notification.
    Observe,
    /// A Send (`POST /dp`).
    Send,
    /// A read the device's profile asked for on registration.
    Read,
}

/// One value a device reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Full path.
    pub path: Path,
    /// Typed value.
    pub value: Value,
    /// Milliseconds since the Unix epoch: the device's time when it gave
    /// one, else the arrival time.
    pub ts_ms: u64,
}

/// The readings of one notification or Send.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The device.
    pub endpoint: Arc<str>,
    /// Observe or Send.
    pub origin: Origin,
    /// The values.
    pub readings: Vec<Reading>,
}

impl Report {
    /// `{"endpoint":..,"origin":"observe","values":[{"path":..,"value":..,"ts":..}]}`.
    pub fn to_json(&self) -> Json {
        let values: Vec<Json> = self
            .readings
            .iter()
            .map(|r| json!({"path": r.path.to_string(), "value": r.value.to_json(), "ts": r.ts_ms}))
            .collect();
        json!({
            "endpoint": &*self.endpoint,
            "origin": match self.origin {
                Origin::Observe => "observe",
                Origin::Send => "send",
                Origin::Read => "read",
            },
            "values": values,
        })
    }
}

/// An observation as stored: what it takes to accept its notifications
/// again after a restart, without a new Observe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservationRecord {
    /// The device.
    pub endpoint: String,
    /// The registration it was made under.
    pub reg_id: u64,
    /// Where the device speaks from.
    pub peer: SocketAddr,
    /// The Observe request's token.
    pub token: Vec<u8>,
    /// Observed paths (one, or several for a composite observation).
    pub paths: Vec<String>,
    /// Observe-Composite (FETCH) rather than Observe (GET).
    pub composite: bool,
    /// The Content-Format asked for.
    pub format: u16,
    /// The encoded Observe request, token included.
    pub request: Vec<u8>,
}

/// What an observation covers: composite or not, and its paths.
pub(super) type ObsKey = (bool, Vec<Path>);

/// One device's observations by what they cover, in key order. A sorted
/// vector, not a BTreeMap: a device has a handful, and a BTreeMap's first
/// node costs half a kilobyte for each of a gateway's many devices.
#[derive(Default)]
pub(super) struct ObsSet(Vec<(ObsKey, RequestId)>);

impl ObsSet {
    fn find(&self, key: &ObsKey) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// Adds or replaces; the replaced observation.
    pub(super) fn insert(&mut self, key: ObsKey, id: RequestId) -> Option<RequestId> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, id)),
            Err(i) => {
                self.0.insert(i, (key, id));
                None
            }
        }
    }

    pub(super) fn get(&self, key: &ObsKey) -> Option<&RequestId> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub(super) fn contains_key(&self, key: &ObsKey) -> bool {
        self.find(key).is_ok()
    }

    pub(super) fn remove(&mut self, key: &ObsKey) -> Option<RequestId> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&ObsKey, &RequestId)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &ObsKey> {
        self.0.iter().map(|(k, _)| k)
    }

    pub(super) fn into_values(self) -> impl Iterator<Item = RequestId> {
        self.0.into_iter().map(|(_, v)| v)
    }
}

/// A live observation.
pub(super) struct Observation {
    pub(super) endpoint: Arc<str>,
    pub(super) key: ObsKey,
    /// The model of the observed object, resolved once (plain observations).
    pub(super) model: Option<Arc<crate::lwm2m::ObjectModel>>,
}

/// Counters for logs, the control socket and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportStats {
    /// Notifications decoded into readings.
    pub notifications: u64,
    /// Send requests decoded into readings.
    pub sends: u64,
    /// Readings produced.
    pub readings: u64,
    /// Notifications or Sends that did not decode.
    pub undecodable: u64,
    /// Reports dropped because nobody took them in time.
    pub reports_dropped: u64,
}

impl Server {
    /// An Observe answer with an Observe option made observation `id`.
    pub(super) fn established(
        &mut self,
        now: Instant,
        id: RequestId,
        endpoint: &str,
        key: ObsKey,
        msg: &Message,
    ) {
        let Some(reg) = self.registry.get(endpoint) else {
            return self.engine.cancel(now, id);
        };
        if self.engine.token(id).is_none() {
            log::warn!(
                "ep={endpoint} observation of {} not kept: the observation table is full (coap.max_observations)",
                describe(&key)
            );
            return;
        }
        let (reg_id, peer) = (reg.id.0, reg.peer);
        let endpoint: Arc<str> = endpoint.into();
        let obs = self
            .observed
            .entry(endpoint.to_string().into())
            .or_default();
        if let Some(old) = obs.insert(key.clone(), id) {
            // The same target observed again: the newer observation wins.
            self.observations.remove(&old);
            if let Some(token) = self.engine.token(old) {
                self.persist.push_back(super::Persist::ObservationGone {
                    endpoint: endpoint.as_ref().into(),
                    token,
                });
            }
            self.engine.cancel(now, old);
        }
        if let Some(req) = self.engine.request_message(id) {
            let rec = record(&endpoint, reg_id, peer, &key, &req);
            self.persist.push_back(super::Persist::Observation(rec));
        }
        log::debug!("ep={endpoint} observing {}", describe(&key));
        self.track(id, endpoint, key);
        // The establishing answer carries the current value: report it too.
        self.notification(id, msg, false);
    }

    /// Starts restoring observations: until [`Server::end_restore`],
    /// notifications whose observation is not back yet are held, not reset.
    pub fn begin_restore(&mut self) {
        self.engine.hold_unknown_responses();
    }

    /// Every stored observation is back: the held notifications are
    /// delivered (or reset, for observations that did not come back).
    pub fn end_restore(&mut self, now: Instant) {
        self.engine.release_held(now);
        self.drain_engine(now, self.last_unix_ms);
    }

    /// Puts back a stored observation at start-up; false (and nothing is
    /// kept) when its registration is gone or the record is unusable.
    pub fn restore_observation(&mut self, rec: &ObservationRecord) -> bool {
        let Some(reg) = self.registry.get(&rec.endpoint) else {
            return false;
        };
        if reg.id.0 != rec.reg_id {
            return false;
        }
        let Ok(req) = Message::decode(&rec.request) else {
            log::warn!(
                "ep={} stored observation does not decode; dropped",
                rec.endpoint
            );
            return false;
        };
        let paths: Result<Vec<Path>, _> = rec.paths.iter().map(|p| Path::parse(p)).collect();
        let Ok(paths) = paths else {
            return false;
        };
        let key = (rec.composite, paths);
        if self
            .observed
            .get(rec.endpoint.as_str())
            .is_some_and(|o| o.contains_key(&key))
        {
            // Observed again while the restore was still going: the newer
            // observation wins, the stored one is dropped.
            return false;
        }
        // The device may have moved since; notifications come from where it
        // last registered or updated.
        let peer = reg.peer;
        let Ok(id) = self.engine.adopt_observation(peer, req) else {
            log::warn!(
                "ep={} observation not restored: observation table full",
                rec.endpoint
            );
            return false;
        };
        self.observed
            .entry(rec.endpoint.as_str().into())
            .or_default()
            .insert(key.clone(), id);
        self.track(id, rec.endpoint.as_str().into(), key);
        true
    }

    /// The device now speaks from `peer` (NAT rebinding, a new bearer):
    /// its observations follow, so its notifications are not reset.
    pub(super) fn move_observations(
        &mut self,
        now: Instant,
        reg: &super::Registration,
        peer: SocketAddr,
    ) {
        let Some(obs) = self.observed.get(reg.endpoint.as_str()) else {
            return;
        };
        let moved: Vec<(ObsKey, RequestId)> = obs.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (key, old) in moved {
            let Some(req) = self.engine.request_message(old) else {
                continue;
            };
            // Dropped here only; the device's next notification uses the new address.
            self.engine.cancel(now, old);
            self.observations.remove(&old);
            let Ok(id) = self.engine.adopt_observation(peer, req.clone()) else {
                if let Some(o) = self.observed.get_mut(reg.endpoint.as_str()) {
                    o.remove(&key);
                }
                continue;
            };
            if let Some(o) = self.observed.get_mut(reg.endpoint.as_str()) {
                o.insert(key.clone(), id);
            }
            let rec = record(&reg.endpoint, reg.id.0, peer, &key, &req);
            self.persist.push_back(super::Persist::Observation(rec));
            self.track(id, reg.endpoint.as_str().into(), key);
        }
        log::info!(
            "ep={} moved to {peer}; its observations follow",
            reg.endpoint
        );
    }

    /// Keeps a live observation, with its object's model resolved once.
    fn track(&mut self, id: RequestId, endpoint: Arc<str>, key: ObsKey) {
        let model = self.model_for(&endpoint, &key);
        self.observations.insert(
            id,
            Observation {
                endpoint,
                key,
                model,
            },
        );
    }

    /// The model of a plain observation's object, at the device's version.
    fn model_for(&self, endpoint: &str, key: &ObsKey) -> Option<Arc<crate::lwm2m::ObjectModel>> {
        let (false, paths) = key else {
            return None;
        };
        let reg = self.registry.get(endpoint)?;
        DeviceSchema::new(&self.models, reg)
            .model(paths.first()?.object)
            .cloned()
    }

    /// Decodes a notification (or establishing answer) into a report.
    pub(super) fn notification(&mut self, id: RequestId, msg: &Message, count: bool) {
        let Some(obs) = self.observations.get(&id) else {
            return;
        };
        let endpoint = obs.endpoint.clone();
        if !msg.code.is_success() {
            // RFC 7641 3.2: an error notification ends the observation.
            log::info!(
                "ep={endpoint} observation of {} ended by the device with {}",
                describe(&obs.key),
                msg.code
            );
            let key = obs.key.clone();
            return self.forget_observation(id, &endpoint, &key);
        }
        let Some(reg) = self.registry.get(&endpoint) else {
            return;
        };
        let schema = DeviceSchema::new(&self.models, reg);
        if let (Some(m), (false, paths)) = (&obs.model, &obs.key) {
            if let Some(p) = paths.first() {
                schema.hint(p.object, m);
            }
        }
        let at = match &obs.key {
            (false, paths) => paths.first(),
            (true, _) => None,
        };
        let cf = msg
            .content_format()
            .and_then(ContentFormat::from_code)
            .unwrap_or(ContentFormat::Text);
        match format::decode_readings(cf, at, &msg.payload, &schema) {
            Ok(r) => {
                if count {
                    self.report_stats.notifications += 1;
                }
                self.push_report(endpoint, super::observe::Origin::Observe, r);
            }
            Err(e) => {
                self.report_stats.undecodable += 1;
                log::info!("ep={endpoint} notification in {cf} did not decode: {e}");
            }
        }
    }

    /// Drops an observation from the tables and the store (not the engine).
    fn forget_observation(&mut self, id: RequestId, endpoint: &str, key: &ObsKey) {
        let token = self.engine.token(id);
        self.observations.remove(&id);
        if let Some(obs) = self.observed.get_mut(endpoint) {
            if obs.get(key) == Some(&id) {
                obs.remove(key);
            }
        }
        if let Some(token) = token {
            self.persist.push_back(super::Persist::ObservationGone {
                endpoint: endpoint.into(),
                token,
            });
        }
    }

    /// Cancels observations of `endpoint` matching `pick`: proactively
    /// (Observe=1, RFC 7641 3.6) when the device can be reached now, else
    /// only here, and its next notification gets a Reset. Returns how many.
    pub(super) fn cancel_observations(
        &mut self,
        now: Instant,
        endpoint: &str,
        pick: impl Fn(&ObsKey) -> bool,
    ) -> usize {
        let ids: Vec<(ObsKey, RequestId)> = self
            .observed
            .get(endpoint)
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| pick(k))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default();
        let reachable = self.reachable(now, endpoint);
        for (key, id) in &ids {
            self.forget_observation(*id, endpoint, key);
            if reachable {
                if let Err(e) = self.engine.cancel_observation(now, *id) {
                    log::debug!("ep={endpoint} proactive cancel not sent ({e}); cancelled here");
                    self.engine.cancel(now, *id);
                }
            } else {
                self.engine.cancel(now, *id);
            }
            log::debug!("ep={endpoint} observation of {} cancelled", describe(key));
        }
        ids.len()
    }

    /// The device's observations as JSON: a path for each plain one, a
    /// list of paths for each composite one.
    pub(super) fn observation_list(&self, endpoint: &str) -> Json {
        let list: Vec<Json> = self
            .observed
            .get(endpoint)
            .map(|o| {
                o.keys()
                    .map(|(composite, paths)| {
                        let names: Vec<Json> =
                            paths.iter().map(|p| Json::from(p.to_string())).collect();
                        match (composite, names.len()) {
                            (false, 1) => names.into_iter().next().unwrap_or(Json::Null),
                            _ => Json::Array(names),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Json::Array(list)
    }

    /// Forgets a device's observations when its registration ends.
    pub(super) fn drop_observations(&mut self, now: Instant, endpoint: &str) {
        if let Some(obs) = self.observed.remove(endpoint) {
            for id in obs.into_values() {
                self.observations.remove(&id);
                self.engine.cancel(now, id);
            }
            self.persist
                .push_back(super::Persist::ObservationsGone(endpoint.into()));
        }
    }

    /// Send (`POST /dp`, LwM2M 1.1+): values the device pushes on its own.
    pub(super) fn handle_send(
        &mut self,
        now: std::time::Instant,
        peer: SocketAddr,
        msg: &Message,
    ) -> Message {
        let Some(reg) = self.registry.get_by_peer(peer) else {
            if let Some(held) = self.bad_log.check(now) {
                log::info!(
                    "peer={peer} Send from a device that is not registered; refused{}",
                    crate::logging::held_note(held)
                );
            }
            return reply(Code::FORBIDDEN, "not registered");
        };
        let endpoint: Arc<str> = reg.endpoint.as_str().into();
        let cf = match msg.content_format().and_then(ContentFormat::from_code) {
            Some(
                cf @ (ContentFormat::SenmlJson
                | ContentFormat::SenmlCbor
                | ContentFormat::Lwm2mCbor),
            ) => cf,
            other => {
                if let Some(held) = self.bad_log.check(now) {
                    log::info!(
                        "ep={endpoint} Send in unsupported format {other:?}; refused{}",
                        crate::logging::held_note(held)
                    );
                }
                return reply(
                    Code::UNSUPPORTED_CONTENT_FORMAT,
                    "Send takes SenML JSON, SenML CBOR or LwM2M CBOR",
                );
            }
        };
        let schema = DeviceSchema::new(&self.models, reg);
        match format::decode_readings(cf, None, &msg.payload, &schema) {
            Ok(r) if r.is_empty() => reply(Code::BAD_REQUEST, "Send without values"),
            Ok(r) => {
                self.report_stats.sends += 1;
                log::debug!("ep={endpoint} Send of {} values", r.len());
                self.push_report(endpoint, Origin::Send, r);
                self.acknowledged = true;
                reply(Code::CHANGED, "")
            }
            Err(e) => {
                self.report_stats.undecodable += 1;
                if let Some(held) = self.bad_log.check(now) {
                    log::info!(
                        "ep={endpoint} Send in {cf} did not decode: {e}{}",
                        crate::logging::held_note(held)
                    );
                }
                reply(Code::BAD_REQUEST, &e.to_string())
            }
        }
    }

    pub(super) fn push_report(
        &mut self,
        endpoint: Arc<str>,
        origin: Origin,
        r: Vec<format::Reading>,
    ) {
        let now_ms = self.last_unix_ms;
        let mut readings: Vec<Reading> = r
            .into_iter()
            .map(|(path, value, t)| Reading {
                path,
                value,
                ts_ms: t.map_or(now_ms, |t| device_time_ms(t, now_ms)),
            })
            .collect();
        // Time order first, then numeric path order within one time, as
        // every output lists them (devices may send any order).
        readings.sort_by_key(|r| (r.ts_ms, r.path));
        self.report_stats.readings += readings.len() as u64;
        if self.reports.len() >= self.max_reports {
            self.reports.pop_front();
            self.report_stats.reports_dropped += 1;
            if self.report_stats.reports_dropped.is_power_of_two() {
                log::warn!(
                    "report stream is behind: {} reports dropped so far",
                    self.report_stats.reports_dropped
                );
            }
        }
        let report = Arc::new(Report {
            endpoint,
            origin,
            readings,
        });
        self.record_latest(&report);
        self.reports.push_back(report);
    }

    /// Next decoded report.
    pub fn poll_report(&mut self) -> Option<Arc<Report>> {
        self.reports.pop_front()
    }

    /// Report counters.
    pub fn report_stats(&self) -> ReportStats {
        self.report_stats
    }

    /// Live observations, all devices together.
    pub fn observation_count(&self) -> usize {
        self.observations.len()
    }

    /// The answer to ObserveReadAll.
    pub(super) fn observe_read_all(&self, endpoint: &str) -> Answer {
        Answer::ok("CONTENT", Some(self.observation_list(endpoint)))
    }
}

/// A SenML time (seconds) as Unix milliseconds: values below 2^28 are
/// relative to now (RFC 8428 4.5.3).
fn device_time_ms(t: f64, now_ms: u64) -> u64 {
    let ms = if t.abs() < (1u64 << 28) as f64 {
        now_ms as f64 + t * 1000.0
    } else {
        t * 1000.0
    };
    if ms.is_finite() && ms > 0.0 {
        ms as u64
    } else {
        now_ms
    }
}

/// The stored form of an observation.
fn record(
    endpoint: &str,
    reg_id: u64,
    peer: SocketAddr,
    key: &ObsKey,
    req: &Message,
) -> ObservationRecord {
    ObservationRecord {
        endpoint: endpoint.to_string(),
        reg_id,
        peer,
        token: req.token.as_bytes().to_vec(),
        paths: key.1.iter().map(Path::to_string).collect(),
        composite: key.0,
        format: req.uint_option(crate::coap::opt::ACCEPT).unwrap_or(0) as u16,
        request: req.encode(),
    }
}

fn describe(key: &ObsKey) -> String {
    let names: Vec<String> = key.1.iter().map(Path::to_string).collect();
    if key.0 {
        format!("[{}]", names.join(", "))
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senml_times_below_2_pow_28_are_relative_to_now() {
        assert_eq!(device_time_ms(-5.0, 1_000_000), 995_000);
        assert_eq!(device_time_ms(1.7e9, 5), 1_700_000_000_000);
        assert_eq!(device_time_ms(f64::NAN, 7), 7);
    }
}
