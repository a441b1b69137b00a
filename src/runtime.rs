//! The I/O shell: binds the CoAP and DTLS sockets, drives the sans-IO
//! server and DTLS layer with real time, persists registry, observation and queue changes with grouped
//! flushes, fans events and decoded reports out.

use crate::config::Config;
use crate::control::socket::{self, CtlRequest};
use crate::dtls::{self, DtlsServer, Keys};
use crate::lwm2m::ModelLibrary;
use crate::northbound::{thingsboard, Downlink, Northbound};
use crate::server::command::Answer;
use crate::server::{Persist, Report, Server, ServerEvent};
use crate::store::{Store, StoreError};
use serde_json::Value as Json;
use smol::channel::{Receiver, Sender, TrySendError};
use smol::net::unix::UnixListener;
use smol::Async;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Datagrams read per wake-up before state is flushed and answers go out.
const BATCH: usize = 256;

/// Why the gateway could not start or stopped.
#[derive(Debug)]
pub enum RunError {
    /// The store failed.
    Store(StoreError),
    /// A socket failed.
    Io(String, io::Error),
    /// The configuration cannot be used.
    Config(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Store(e) => write!(f, "{e}"),
            RunError::Io(what, e) => write!(f, "{what}: {e}"),
            RunError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        RunError::Store(e)
    }
}

/// A control client streaming decoded reports.
struct Watcher {
    /// The watch request's id, copied into every line.
    id: Json,
    /// Only this device's reports, if set.
    endpoint: Option<String>,
    tx: Sender<socket::Reply>,
    dropped: u64,
}

/// The DTLS side: its socket and sessions.
struct Secure {
    dtls: DtlsServer,
    socket: Async<UdpSocket>,
    local_addr: SocketAddr,
    dual_stack: bool,
    /// Datagrams for secure peers without an open session, not sent.
    unsent: u64,
    /// Plain CoAP datagrams from peers that must use DTLS, dropped.
    plain_dropped: u64,
}

/// A started gateway: store open, models loaded, socket bound.
pub struct Gateway {
    cfg: Config,
    server: Server,
    store: Store,
    socket: Async<UdpSocket>,
    local_addr: SocketAddr,
    dual_stack: bool,
    models: Arc<ModelLibrary>,
    subscribers: Vec<(Sender<ServerEvent>, u64)>,
    report_subscribers: Vec<(Sender<Arc<Report>>, u64)>,
    watchers: Vec<Watcher>,
    control: Option<UnixListener>,
    ctl_pending: HashMap<u64, CtlRequest>,
    /// RPCs from the platform: device, request id and method, by handle.
    mqtt_pending: HashMap<u64, (String, Json, String)>,
    /// Transport log budget per device: minute started, lines, lines dropped.
    log_budget: HashMap<String, (u64, u32, u32)>,
    /// Writes of shared attributes, for the log: device and key, by handle.
    internal_pending: HashMap<u64, (String, String)>,
    northbound: Option<Northbound>,
    secure: Option<Secure>,
    batch: thingsboard::Batch,
    last_log_ts: u64,
    max_batch: usize,
    next_handle: u64,
}

impl Gateway {
    /// Opens the store, loads the models, restores registrations and binds.
    pub fn start(cfg: Config) -> Result<Gateway, RunError> {
        let (store, _report) = Store::open(&cfg.store())?;
        let models = Arc::new(ModelLibrary::load(&cfg.models.dir, &cfg.site_models_dir()));
        let mut server = Server::new(cfg.server(), random_seed());
        server.set_models(models.clone());
        // Profile files first; imported ones (in the store) win on a name.
        for p in crate::profile::load_dir(&cfg.models.profiles_dir) {
            let name = p.name.clone();
            if let Err(e) = server.set_profile(p) {
                log::error!(
                    "profile {name:?} in {} skipped: {e}",
                    cfg.models.profiles_dir.display()
                );
            }
        }
        for p in store.profiles()? {
            let name = p.name.clone();
            if let Err(e) = server.set_profile(p) {
                log::error!("stored profile {name:?} no longer fits the models: {e}");
            }
        }
        let credentials = store.credentials()?;
        let provisioned = credentials.len();
        for c in credentials {
            server.restore_credential(c);
        }
        server.set_allow_unknown(cfg.registration.allow_unknown_endpoints);
        if cfg.registration.allow_unknown_endpoints {
            log::warn!(
                "endpoints without a credential are admitted over plain CoAP with the default profile \
                 (registration.allow_unknown_endpoints = true); production configs set it to false"
            );
        }
        let (now, unix) = (Instant::now(), unix_ms());
        let (mut kept, mut dropped) = (0, 0);
        for reg in store.registrations()? {
            let ep = reg.endpoint.clone();
            if server.restore(now, unix, reg) {
                kept += 1;
            } else {
                dropped += 1;
                store.remove_registration(&ep)?;
            }
        }
        let (mut observed, mut stale) = (0, 0);
        for rec in store.observations()? {
            if server.restore_observation(&rec) {
                observed += 1;
            } else {
                stale += 1;
                store.remove_observation(&rec.endpoint, &rec.token)?;
            }
        }
        let mut held = 0;
        for rec in store.queued()? {
            if server.registry().get(&rec.endpoint).is_some() && server.restore_queued(now, &rec) {
                held += 1;
            } else {
                log::info!(
                    "ep={} queued {} #{} dropped: the device is no longer registered",
                    rec.endpoint,
                    rec.method,
                    rec.seq
                );
                store.remove_queued(&rec.endpoint, rec.seq)?;
                stale += 1;
            }
        }
        if dropped + stale > 0 {
            store.flush()?;
        }
        let (socket, dual_stack) = bind_udp(cfg.coap_addr())
            .map_err(|e| RunError::Io(format!("bind udp {}", cfg.coap_addr()), e))?;
        set_buffers(&socket, cfg.coap.socket_buffer_kb * 1024);
        let socket = Async::new(socket).map_err(|e| RunError::Io("udp socket".into(), e))?;
        let addr = socket
            .get_ref()
            .local_addr()
            .map_err(|e| RunError::Io("udp socket".into(), e))?;
        let secure = if cfg.dtls.enabled {
            Some(start_dtls(&cfg, &server)?)
        } else {
            log::info!("DTLS: off (dtls.enabled = false)");
            None
        };
        // The control socket is bound before the start-up line: whoever waits
        // for that line may use the socket at once.
        let ctl_path = cfg.control_socket();
        let control = socket::bind(&ctl_path)
            .map_err(|e| RunError::Io(format!("control socket {}", ctl_path.display()), e))?;
        log::info!("control socket {}", ctl_path.display());
        log::info!(
            "lwm2m-gw {} listening on CoAP udp {addr}{}; data {}; {} object models; {kept} registrations restored ({dropped} expired while stopped)",
            env!("CARGO_PKG_VERSION"),
            if dual_stack { " (IPv4 and IPv6)" } else { "" },
            cfg.data_dir().display(),
            models.len(),
        );
        log::info!(
            "{observed} observations and {held} queued requests restored; {} profiles, {provisioned} device credentials",
            server.profiles().len()
        );
        let northbound = match cfg.mqtt_settings().map_err(|e| RunError::Config(e.0))? {
            Some(s) => {
                log::info!(
                    "northbound: MQTT to {}:{} as {:?}, QoS {}, queue up to {} MiB",
                    s.host,
                    s.port,
                    s.client_id,
                    s.qos,
                    cfg.mqtt.max_queue_mb
                );
                Some(Northbound::start(s, &store, cfg.mqtt.max_queue_mb << 20)?)
            }
            None => {
                log::info!("northbound: off (no mqtt.url)");
                None
            }
        };
        let max_batch = cfg.mqtt.max_batch_kb << 10;
        Ok(Gateway {
            cfg,
            server,
            store,
            socket,
            local_addr: addr,
            dual_stack,
            models,
            subscribers: Vec::new(),
            report_subscribers: Vec::new(),
            watchers: Vec::new(),
            control: Some(control),
            ctl_pending: HashMap::new(),
            mqtt_pending: HashMap::new(),
            log_budget: HashMap::new(),
            internal_pending: HashMap::new(),
            northbound,
            secure,
            batch: thingsboard::Batch::default(),
            last_log_ts: 0,
            max_batch,
            next_handle: 0,
        })
    }

    /// The bound CoAP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound DTLS address, when DTLS is on.
    pub fn dtls_addr(&self) -> Option<SocketAddr> {
        self.secure.as_ref().map(|s| s.local_addr)
    }

    /// A bounded stream of registry events. A subscriber that falls behind
    /// loses events (counted and logged), it never stalls the gateway.
    pub fn subscribe(&mut self, capacity: usize) -> Receiver<ServerEvent> {
        let (tx, rx) = smol::channel::bounded(capacity.max(1));
        self.subscribers.push((tx, 0));
        rx
    }

    /// A bounded stream of decoded reports (observations and Send), for
    /// the northbound side; a subscriber that falls behind loses reports.
    pub fn subscribe_reports(&mut self, capacity: usize) -> Receiver<Arc<Report>> {
        let (tx, rx) = smol::channel::bounded(capacity.max(1));
        self.report_subscribers.push((tx, 0));
        rx
    }

    /// Serves until a socket error.
    pub async fn run(mut self) -> Result<(), RunError> {
        let max = self.cfg.coap.max_datagram;
        let mut buf = vec![0u8; max + 1];
        let (ctl_tx, ctl_rx) = smol::channel::bounded::<CtlRequest>(1024);
        if let Some(listener) = self.control.take() {
            let c = &self.cfg.control;
            smol::spawn(socket::serve(
                listener,
                ctl_tx,
                c.max_connections,
                c.max_in_flight,
            ))
            .detach();
        }
        enum Wake {
            Io,
            Control(CtlRequest),
            Downlink(Downlink),
        }
        let down_rx = self.northbound.as_ref().map(|n| n.downlink.clone());
        // Sockets are bound and the store is open: tell systemd, and ping
        // its watchdog from this loop, so a loop that hangs gets restarted.
        let notifier = crate::notify::Notifier::from_env();
        let ping_every = notifier.as_ref().and_then(|n| n.ping_every());
        let mut next_ping = ping_every.map(|d| Instant::now() + d);
        if let Some(n) = &notifier {
            n.ready(&format!(
                "serving CoAP on {}, {} registrations",
                self.local_addr,
                self.server.registry().len()
            ));
            if next_ping.is_some() {
                n.watchdog();
            }
        }
        loop {
            let deadline = [
                self.server.poll_timeout(),
                next_ping,
                self.secure.as_ref().and_then(|s| s.dtls.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .min();
            let socket = &self.socket;
            let dsocket = self.secure.as_ref().map(|s| &s.socket);
            let io = async {
                let readable = smol::future::or(
                    async {
                        let _ = socket.readable().await;
                    },
                    async {
                        match dsocket {
                            Some(d) => {
                                let _ = d.readable().await;
                            }
                            None => std::future::pending().await,
                        }
                    },
                );
                match deadline {
                    Some(d) => {
                        smol::future::or(readable, async {
                            smol::Timer::at(d).await;
                        })
                        .await
                    }
                    None => readable.await,
                }
                Wake::Io
            };
            let ctl = async {
                match ctl_rx.recv().await {
                    Ok(r) => Wake::Control(r),
                    Err(_) => std::future::pending().await,
                }
            };
            let down = async {
                match &down_rx {
                    Some(rx) => match rx.recv().await {
                        Ok(d) => Wake::Downlink(d),
                        Err(_) => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            };
            let wake = smol::future::or(io, smol::future::or(ctl, down)).await;
            let now = Instant::now();
            if let (Some(at), Some(every), Some(n)) = (next_ping, ping_every, &notifier) {
                if now >= at {
                    n.watchdog();
                    next_ping = Some(now + every);
                }
            }
            match wake {
                Wake::Control(r) => self.control_request(now, r),
                Wake::Downlink(d) => self.downlink(now, d),
                Wake::Io => {}
            }
            if let Some(rx) = &down_rx {
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Ok(d) => self.downlink(now, d),
                        Err(_) => break,
                    }
                }
            }
            for _ in 0..BATCH {
                match ctl_rx.try_recv() {
                    Ok(r) => self.control_request(now, r),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            for _ in 0..BATCH {
                match self.socket.get_ref().recv_from(&mut buf) {
                    Ok((n, peer)) if n > max => {
                        log::debug!("peer={} datagram over {max} bytes dropped", canonical(peer));
                    }
                    Ok((n, peer)) if self.server.is_secure_peer(canonical(peer)) => {
                        // Its traffic comes over DTLS: a plain datagram from
                        // its address is a spoof or a stray, never believed.
                        if let Some(s) = &mut self.secure {
                            s.plain_dropped += 1;
                        }
                        log::debug!(
                            "peer={} plain CoAP from a DTLS peer dropped ({n} bytes)",
                            canonical(peer)
                        );
                    }
                    Ok((n, peer)) => {
                        // The wall clock per datagram: it stamps reported
                        // values, and two in one batch are two data points.
                        let unix = unix_ms();
                        self.server
                            .handle_datagram(now, unix, canonical(peer), &buf[..n])
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("udp receive: {e}");
                        break;
                    }
                }
            }
            self.receive_dtls(now, &mut buf);
            self.server.handle_timeout(now);
            self.persist_and_publish().await;
            self.send_all().await;
            self.publish_reports();
            while let Some((handle, answer)) = self.server.poll_answer() {
                if let Some((device, id, method)) = self.mqtt_pending.get(&handle) {
                    // The platform gets one answer per RPC: the outcome.
                    if answer.result != "QUEUED" {
                        let body = thingsboard::rpc_answer(device, id, answer.to_json());
                        if let Some(nb) = &self.northbound {
                            nb.publish(thingsboard::RPC, &body);
                        }
                        let line = format!("RPC {method}: {}", outcome(&answer));
                        let device = device.clone();
                        self.mqtt_pending.remove(&handle);
                        self.transport_log(&device, line);
                    }
                    continue;
                }
                if answer.result == "QUEUED" && self.internal_pending.contains_key(&handle) {
                    // The write waits for a sleeping device; its outcome comes later.
                    continue;
                }
                if let Some((device, key)) = self.internal_pending.remove(&handle) {
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
                    self.transport_log(&device, line);
                    continue;
                }
                if answer.result == "QUEUED" {
                    if let Some(r) = self.ctl_pending.get(&handle) {
                        if r.wants_wait() {
                            // The outcome follows on the same id when the device wakes.
                            r.notice(answer.to_json());
                            continue;
                        }
                    }
                }
                if let Some(r) = self.ctl_pending.remove(&handle) {
                    let ep = r
                        .req
                        .get("endpoint")
                        .and_then(Json::as_str)
                        .map(str::to_string);
                    if let Some(ep) = ep {
                        let method = r.req.get("method").and_then(Json::as_str).unwrap_or("");
                        let line = format!("{method}: {}", outcome(&answer));
                        self.transport_log(&ep, line);
                    }
                    r.answer(answer.to_json());
                }
            }
            self.flush_batch();
        }
    }

    /// A line of the device's transport log (telemetry key `transportLog`),
    /// when its profile asks for one: at most 60 lines a minute per device,
    /// the rest counted and said in the next minute's first line.
    fn transport_log(&mut self, endpoint: &str, line: String) {
        if self.northbound.is_none() || !self.server.transport_log(endpoint) {
            return;
        }
        let now = unix_ms();
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
        if *lines >= 60 {
            *dropped += 1;
            return;
        }
        *lines += 1;
        let line: String = line.chars().take(500).collect();
        // One ms apart: lines of one batch must not share a time stamp.
        let ts = now.max(self.last_log_ts + 1);
        self.last_log_ts = ts;
        self.batch
            .add(endpoint, "transportLog".into(), line.into(), ts, false);
    }

    /// A message from the platform: an RPC runs the command language; a
    /// shared attribute becomes a write of the resource its key names.
    fn downlink(&mut self, now: Instant, d: Downlink) {
        match d {
            Downlink::Rpc {
                device,
                id,
                method,
                params,
            } => {
                self.next_handle += 1;
                let h = self.next_handle;
                log::info!("ep={device} RPC {method} (id {id}) from the platform");
                self.mqtt_pending
                    .insert(h, (device.clone(), id, method.clone()));
                self.server.command(now, h, &device, &method, &params);
            }
            Downlink::SharedUpdate { device, values } => {
                for (key, value) in values {
                    let Some(path) = self.server.path_of_key(&device, &key) else {
                        log::info!(
                            "ep={device} shared attribute {key:?} names no resource; ignored"
                        );
                        continue;
                    };
                    self.next_handle += 1;
                    let h = self.next_handle;
                    self.internal_pending.insert(h, (device.clone(), key));
                    let params = serde_json::json!({"id": path.to_string(), "value": value});
                    self.server
                        .command(now, h, &device, "WriteReplace", &params);
                }
            }
        }
    }

    /// Hands decoded reports to subscribers and watching control clients.
    fn publish_reports(&mut self) {
        while let Some(report) = self.server.poll_report() {
            if self.northbound.is_some() {
                for (key, value, ts, attribute) in self.server.keyed(&report) {
                    self.batch.add(&report.endpoint, key, value, ts, attribute);
                }
                if self.batch.size() >= self.max_batch {
                    self.flush_batch();
                }
            }
            for (tx, dropped) in &mut self.report_subscribers {
                if let Err(TrySendError::Full(_)) = tx.try_send(report.clone()) {
                    *dropped += 1;
                    if dropped.is_power_of_two() {
                        log::warn!("report subscriber is behind: {dropped} reports dropped so far");
                    }
                }
            }
            if self.watchers.is_empty() {
                continue;
            }
            let mut body = report.to_json();
            for w in &mut self.watchers {
                if w.endpoint
                    .as_deref()
                    .is_some_and(|e| e != &*report.endpoint)
                {
                    continue;
                }
                body["id"] = w.id.clone();
                if !socket::extra_line(&w.tx, body.to_string()) && !w.tx.is_closed() {
                    w.dropped += 1;
                    if w.dropped.is_power_of_two() {
                        log::warn!(
                            "watch client is behind: {} reports dropped so far",
                            w.dropped
                        );
                    }
                }
            }
            self.watchers.retain(|w| !w.tx.is_closed());
        }
        self.report_subscribers.retain(|(tx, _)| !tx.is_closed());
        self.flush_batch();
    }

    /// Queues the gathered telemetry and attributes for the broker.
    fn flush_batch(&mut self) {
        let Some(nb) = &self.northbound else {
            return;
        };
        for (topic, body) in self.batch.take() {
            nb.publish(topic, &body);
        }
    }

    /// Registry events as the platform sees them: a registration connects
    /// the sub-device (and asks for its shared attributes), leaving
    /// disconnects it.
    fn publish_events(&mut self, events: &[ServerEvent]) {
        if self.northbound.is_none() {
            return;
        }
        for ev in events {
            let reg = ev.registration();
            let ep = &reg.endpoint;
            let line = match ev {
                ServerEvent::Registered { .. } => format!(
                    "Registered: lwm2m={} lt={} b={} from {} with {} objects",
                    reg.lwm2m_version,
                    reg.lifetime,
                    reg.binding,
                    reg.peer,
                    reg.objects.len()
                ),
                ServerEvent::Updated(_) => format!("Update: lt={} from {}", reg.lifetime, reg.peer),
                ServerEvent::Deregistered(_) => "De-registered".to_string(),
                ServerEvent::Expired(_) => "Registration expired".to_string(),
            };
            self.transport_log(ep, line);
            let Some(nb) = &self.northbound else {
                return;
            };
            match ev {
                ServerEvent::Registered { .. } => {
                    nb.publish(
                        thingsboard::CONNECT,
                        &thingsboard::connect(ep, &self.server.profile_name(ep)),
                    );
                    let shared = self.server.shared_keys(ep);
                    if !shared.is_empty() {
                        self.next_handle += 1;
                        let body = thingsboard::attributes_request(self.next_handle, ep, &shared);
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

    /// Profile and credential administration: checked by the server,
    /// stored and flushed before the answer, in force at once.
    fn provision(&mut self, op: &str, req: &Json) -> Answer {
        use crate::credentials::Credential;
        use crate::profile::Profile;
        let text = |k: &str| req.get(k).and_then(Json::as_str).unwrap_or("").to_string();
        let stored = |r: Result<(), StoreError>, store: &Store| {
            r.and_then(|_| store.flush().map(|_| ()))
                .map_err(|e| Answer::fail("INTERNAL_SERVER_ERROR", format!("store: {e}")))
        };
        let result: Result<Answer, Answer> = (|| match op {
            "profiles" => {
                let list: Vec<Json> = self
                    .server
                    .profiles()
                    .into_iter()
                    .map(|p| {
                        let users = self
                            .server
                            .credentials()
                            .iter()
                            .filter(|c| c.profile == p.name)
                            .count();
                        serde_json::json!({"name": p.name, "objects": p.objects,
                            "resources": p.resources.len(), "devices": users})
                    })
                    .collect();
                Ok(Answer::ok("CONTENT", Some(Json::Array(list))))
            }
            "profile" => {
                let name = text("name");
                let p = self
                    .server
                    .profile(&name)
                    .ok_or_else(|| Answer::fail("NOT_FOUND", format!("no profile {name:?}")))?;
                let toml = toml::to_string(p).unwrap_or_default();
                Ok(Answer::ok("CONTENT", Some(Json::from(toml))))
            }
            "profile-put" => {
                let p = Profile::from_toml(&text("toml")).map_err(|e| Answer::bad_request(e.0))?;
                let name = p.name.clone();
                let existed = self.server.profile(&name).is_some();
                if name == crate::profile::DEFAULT && !existed {
                    return Err(Answer::bad_request("\"default\" is reserved"));
                }
                self.server
                    .set_profile(p.clone())
                    .map_err(Answer::bad_request)?;
                stored(self.store.put_profile(&p), &self.store)?;
                log::info!(
                    "profile {name:?} {}",
                    if existed { "replaced" } else { "added" }
                );
                Ok(Answer::ok(
                    if existed { "CHANGED" } else { "CREATED" },
                    None,
                ))
            }
            "profile-rm" => {
                let name = text("name");
                self.server
                    .remove_profile(&name)
                    .map_err(Answer::bad_request)?;
                stored(self.store.remove_profile(&name), &self.store)?;
                log::info!("profile {name:?} removed");
                Ok(Answer::ok("DELETED", None))
            }
            "credentials" => {
                let list: Vec<Json> = self
                    .server
                    .credentials()
                    .into_iter()
                    .map(Credential::to_json)
                    .collect();
                Ok(Answer::ok("CONTENT", Some(Json::Array(list))))
            }
            "device-add" | "device-import" => {
                let list: Vec<Credential> = match op {
                    "device-add" => vec![serde_json::from_value(
                        req.get("credential").cloned().unwrap_or(Json::Null),
                    )
                    .map_err(|e| Answer::bad_request(format!("credential: {e}")))?],
                    _ => serde_json::from_value(
                        req.get("credentials").cloned().unwrap_or(Json::Null),
                    )
                    .map_err(|e| Answer::bad_request(format!("credentials: {e}")))?,
                };
                // All or nothing: a failure puts the earlier ones back.
                let mut undo: Vec<(String, Option<Credential>)> = Vec::new();
                for c in &list {
                    let check = crate::credentials::check_endpoint(&c.endpoint)
                        .map_err(|e| e.0)
                        .and_then(|_| {
                            let before = self.server.credential(&c.endpoint).cloned();
                            self.server.set_credential(c.clone())?;
                            undo.push((c.endpoint.clone(), before));
                            Ok(())
                        });
                    if let Err(e) = check {
                        for (ep, before) in undo.into_iter().rev() {
                            self.server.remove_credential(&ep);
                            if let Some(b) = before {
                                self.server.restore_credential(b);
                            }
                        }
                        return Err(Answer::bad_request(format!("{}: {e}", c.endpoint)));
                    }
                }
                for c in &list {
                    stored(self.store.put_credential(c), &self.store)?;
                    log::info!(
                        "ep={} credential {} with profile {:?} stored",
                        c.endpoint,
                        c.security.mode(),
                        c.profile
                    );
                }
                Ok(Answer::ok("CHANGED", Some(Json::from(list.len()))))
            }
            "device-rm" => {
                let ep = text("endpoint");
                if self.server.remove_credential(&ep).is_none() {
                    return Err(Answer::fail(
                        "NOT_FOUND",
                        format!("no credential for {ep:?}"),
                    ));
                }
                stored(self.store.remove_credential(&ep), &self.store)?;
                log::info!("ep={ep} credential removed");
                Ok(Answer::ok("DELETED", None))
            }
            _ => Err(Answer::bad_request(format!("unknown op {op:?}"))),
        })();
        result.unwrap_or_else(|a| a)
    }

    /// Counters for `lwm2m-gw stats` and the benchmarks.
    fn stats_json(&self) -> Json {
        let r = self.server.report_stats();
        let c = self.server.coap_stats();
        serde_json::json!({
            "registrations": self.server.registry().len(),
            "observations": self.server.observation_count(),
            "queued": self.server.queued_count(),
            "notifications": r.notifications,
            "sends": r.sends,
            "readings": r.readings,
            "undecodable": r.undecodable,
            "reportsDropped": r.reports_dropped,
            "staleNotifications": c.stale_notifications,
            "malformedDatagrams": c.malformed,
            "duplicates": c.duplicates,
            "retransmissions": c.retransmissions,
            "overloadRefusals": c.overload_refusals,
            "watchers": self.watchers.len(),
            "mqtt": self.northbound.as_ref().map_or(Json::Null, |n| n.status.to_json(n.queue_stats())),
            "dtls": self.secure.as_ref().map_or(Json::Null, |s| {
                let d = s.dtls.stats();
                serde_json::json!({
                    "sessions": d.sessions,
                    "handshaking": d.handshaking,
                    "handshakes": d.handshakes,
                    "failed": d.failed,
                    "helloVerify": d.hello_verify,
                    "busy": d.busy,
                    "evicted": d.evicted,
                    "noSession": d.no_session,
                    "rpkRefused": d.rpk_refused,
                    "unsent": s.unsent,
                    "plainDropped": s.plain_dropped,
                })
            }),
            "rssKb": rss_kb(),
        })
    }

    /// One control-socket request: commands go to the server, listings
    /// are answered from the registry.
    fn control_request(&mut self, now: Instant, r: CtlRequest) {
        let op = r
            .req
            .get("op")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        let endpoint = r
            .req
            .get("endpoint")
            .and_then(Json::as_str)
            .map(str::to_string);
        match (op.as_str(), endpoint.as_deref()) {
            ("rpc", Some(ep)) => {
                let method = r.req.get("method").and_then(Json::as_str).unwrap_or("");
                let empty = Json::Object(Default::default());
                let params = r.req.get("params").unwrap_or(&empty).clone();
                let (method, ep) = (method.to_string(), ep.to_string());
                self.next_handle += 1;
                let h = self.next_handle;
                self.ctl_pending.insert(h, r);
                self.server.command(now, h, &ep, &method, &params);
            }
            ("devices", _) => {
                let mut regs: Vec<_> = self.server.registry().iter().collect();
                regs.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
                let list: Vec<Json> = regs.into_iter().map(socket::device_json).collect();
                r.answer(Answer::ok("CONTENT", Some(Json::Array(list))).to_json());
            }
            ("device", Some(ep)) => {
                let reg = self.server.registry().get(ep);
                let cred = self.server.credential(ep);
                let latest = self.server.latest_json(ep);
                let known = reg.is_some()
                    || cred.is_some()
                    || latest["telemetry"].as_object().is_some_and(|m| !m.is_empty())
                    || latest["attributes"].as_object().is_some_and(|m| !m.is_empty());
                let a = if known {
                    let mut v = match reg {
                        Some(reg) => socket::device_json(reg),
                        None => serde_json::json!({"endpoint": ep}),
                    };
                    v["registered"] = reg.is_some().into();
                    v["credential"] = cred.map_or(Json::Null, |c| c.to_json());
                    v["attributes"] = latest["attributes"].clone();
                    v["telemetry"] = latest["telemetry"].clone();
                    Answer::ok("CONTENT", Some(v))
                } else {
                    Answer::fail(
                        "DEVICE_NOT_REGISTERED",
                        format!("no registration or credential for endpoint {ep:?}"),
                    )
                };
                r.answer(a.to_json());
            }
            (
                "profile-put" | "profile-rm" | "profiles" | "profile" | "device-add"
                | "device-import" | "device-rm" | "credentials",
                _,
            ) => {
                let a = self.provision(&op, &r.req);
                if op.starts_with("device-") {
                    self.refresh_keys();
                }
                r.answer(a.to_json());
            }
            ("watch", _) if self.watchers.len() >= self.cfg.control.max_connections => {
                // One connection may ask many times; the watchers stay bounded.
                r.answer(
                    Answer::fail("SERVICE_UNAVAILABLE", "too many watch streams open").to_json(),
                )
            }
            ("watch", ep) => {
                let ok = Answer::ok("CONTENT", Some(Json::from("watching"))).to_json();
                if r.notice(ok) {
                    self.watchers.push(Watcher {
                        id: r.req.get("id").cloned().unwrap_or(Json::Null),
                        endpoint: ep.map(str::to_string),
                        tx: r.reply.clone(),
                        dropped: 0,
                    });
                }
            }
            ("stats", _) => r.answer(Answer::ok("CONTENT", Some(self.stats_json())).to_json()),
            ("rpc" | "device", None) => {
                r.answer(Answer::bad_request("\"endpoint\" is missing").to_json())
            }
            (op, _) => r.answer(
                Answer::bad_request(format!(
                    "unknown op {op:?}; known: rpc, devices, device, watch, stats, profiles, \
                     profile, profile-put, profile-rm, credentials, device-add, device-import, device-rm"
                ))
                .to_json(),
            ),
        }
    }

    /// Writes registry changes, flushes once for the whole batch (so an
    /// answer never goes out for state a power cut could lose), then
    /// hands the events to subscribers.
    async fn persist_and_publish(&mut self) {
        let mut events = Vec::new();
        while let Some(ev) = self.server.poll_event() {
            let result = match &ev {
                ServerEvent::Registered { reg, .. } | ServerEvent::Updated(reg) => {
                    self.store.put_registration(reg)
                }
                ServerEvent::Deregistered(reg) | ServerEvent::Expired(reg) => {
                    self.store.remove_registration(&reg.endpoint)
                }
            };
            if let Err(e) = result {
                log::error!(
                    "ep={} could not store registration change: {e}",
                    ev.registration().endpoint
                );
            }
            if let ServerEvent::Registered { reg, .. } = &ev {
                let unknown: Vec<u16> = reg
                    .objects
                    .iter()
                    .map(|o| o.object)
                    .filter(|id| self.models.get(*id, None).is_none())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if !unknown.is_empty() {
                    log::info!(
                        "ep={} announces objects with no model in the library: {unknown:?}",
                        reg.endpoint
                    );
                }
            }
            events.push(ev);
        }
        let mut persisted = 0;
        while let Some(p) = self.server.poll_persist() {
            persisted += 1;
            let result = match &p {
                Persist::Observation(o) => self.store.put_observation(o),
                Persist::ObservationGone { endpoint, token } => {
                    self.store.remove_observation(endpoint, token.as_bytes())
                }
                Persist::ObservationsGone(endpoint) => self.store.remove_observations(endpoint),
                Persist::Queued(q) => self.store.put_queued(q),
                Persist::QueuedGone { endpoint, seq } => self.store.remove_queued(endpoint, *seq),
            };
            if let Err(e) = result {
                log::error!("could not store {p:?}: {e}");
            }
        }
        if events.is_empty() && persisted == 0 {
            return;
        }
        self.publish_events(&events);
        let store = self.store.clone();
        if let Err(e) = smol::unblock(move || store.flush()).await {
            log::error!("store flush failed: {e}");
        }
        for ev in events {
            for (tx, dropped) in &mut self.subscribers {
                if let Err(TrySendError::Full(_)) = tx.try_send(ev.clone()) {
                    *dropped += 1;
                    if dropped.is_power_of_two() {
                        log::warn!("event subscriber is behind: {dropped} events dropped so far");
                    }
                }
            }
        }
        self.subscribers.retain(|(tx, _)| !tx.is_closed());
    }

    async fn send_all(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.server.poll_transmit() {
            if let Some(sec) = &mut self.secure {
                if sec.dtls.is_open(&t.peer) {
                    if let Err(e) = sec.dtls.send(now, t.peer, &t.bytes) {
                        log::debug!("peer={} DTLS send failed: {e}", t.peer);
                    }
                    continue;
                }
                if self.server.is_secure_peer(t.peer) {
                    // Never in the clear; the device handshakes again and
                    // the request times out or is retried meanwhile.
                    sec.unsent += 1;
                    log::debug!(
                        "peer={} has no open DTLS session; {} bytes not sent",
                        t.peer,
                        t.bytes.len()
                    );
                    continue;
                }
            }
            send_to(&self.socket, self.dual_stack, t.peer, &t.bytes).await;
        }
        if let Some(sec) = &mut self.secure {
            while let Some((to, d)) = sec.dtls.poll_transmit() {
                send_to(&sec.socket, sec.dual_stack, to, &d).await;
            }
        }
    }

    /// Reads the DTLS socket, runs its timers and hands what the sessions
    /// decrypted, opened and closed to the server.
    fn receive_dtls(&mut self, now: Instant, buf: &mut [u8]) {
        let Some(sec) = &mut self.secure else {
            return;
        };
        for _ in 0..BATCH {
            match sec.socket.get_ref().recv_from(buf) {
                Ok((n, peer)) => sec.dtls.handle_datagram(now, canonical(peer), &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("dtls udp receive: {e}");
                    break;
                }
            }
        }
        sec.dtls.handle_timeout(now);
        while let Some(ev) = sec.dtls.poll_event() {
            match ev {
                dtls::Event::Established { peer, auth } => {
                    self.server.secure_session(peer, Some(auth))
                }
                dtls::Event::Data { peer, bytes } => {
                    self.server.handle_datagram(now, unix_ms(), peer, &bytes)
                }
                dtls::Event::Closed { peer, .. } => self.server.secure_session(peer, None),
            }
        }
    }

    /// The DTLS layer checks handshakes against the credentials as they are now.
    fn refresh_keys(&mut self) {
        if let Some(sec) = &mut self.secure {
            sec.dtls
                .set_keys(Keys::from_credentials(self.server.credentials()));
        }
    }
}

/// Sends one datagram, waiting while the socket buffer is full.
async fn send_to(socket: &Async<UdpSocket>, dual_stack: bool, peer: SocketAddr, bytes: &[u8]) {
    let to = if dual_stack { mapped(peer) } else { peer };
    loop {
        match socket.get_ref().send_to(bytes, to) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("peer={peer} send failed: {e}");
                break;
            }
        }
    }
}

/// Loads or makes the server's key and certificate, and binds the DTLS socket.
fn start_dtls(cfg: &Config, server: &Server) -> Result<Secure, RunError> {
    let settings = cfg.dtls_settings().map_err(|e| RunError::Config(e.0))?;
    let id = dtls::identity::load(&cfg.dtls_files(), &cfg.data_dir().join("dtls"))
        .map_err(|e| RunError::Config(e.to_string()))?;
    for p in &id.made {
        log::info!("DTLS: made {} (first start)", p.display());
    }
    log::info!(
        "DTLS server public key (base64 SubjectPublicKeyInfo, for RPK provisioning): {}",
        id.public_key_base64()
    );
    let rng = dtls::identity::rng().map_err(|e| RunError::Config(e.to_string()))?;
    let config = dtls::identity::server_config(&settings, &id, rng)
        .map_err(|e| RunError::Config(e.to_string()))?;
    let mut d = DtlsServer::new(config, settings, Instant::now());
    d.set_keys(Keys::from_credentials(server.credentials()));
    let rpk = match dtls::tiny::Tiny::new(&id.private_der) {
        Ok(t) => {
            d.enable_raw_keys(t);
            true
        }
        Err(e) => {
            log::warn!("DTLS: raw public keys off: {e}");
            false
        }
    };
    let (socket, dual_stack) = bind_udp(cfg.dtls_addr())
        .map_err(|e| RunError::Io(format!("bind dtls udp {}", cfg.dtls_addr()), e))?;
    set_buffers(&socket, cfg.coap.socket_buffer_kb * 1024);
    let socket = Async::new(socket).map_err(|e| RunError::Io("dtls udp socket".into(), e))?;
    let local_addr = socket
        .get_ref()
        .local_addr()
        .map_err(|e| RunError::Io("dtls udp socket".into(), e))?;
    log::info!(
        "CoAP over DTLS on udp {local_addr}{} (PSK, X.509{}{})",
        if dual_stack { " (IPv4 and IPv6)" } else { "" },
        if cfg.dtls.ca_file.is_some() {
            " by CA or stored certificate"
        } else {
            " by stored certificate"
        },
        if rpk { ", RPK" } else { "" }
    );
    Ok(Secure {
        dtls: d,
        socket,
        local_addr,
        dual_stack,
        unsent: 0,
        plain_dropped: 0,
    })
}

/// Binds UDP. For the IPv6 wildcard the socket is made dual-stack whatever
/// the host's `net.ipv6.bindv6only`; where IPv6 is unavailable it falls back
/// to IPv4.
fn bind_udp(addr: SocketAddr) -> io::Result<(UdpSocket, bool)> {
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        match bind_dual_stack(addr.port()) {
            Ok(s) => return Ok((s, true)),
            Err(e) => {
                log::warn!("IPv6 unavailable ({e}); listening on IPv4 only");
                return UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
                    .map(|s| (s, false));
            }
        }
    }
    UdpSocket::bind(addr).map(|s| (s, false))
}

/// Asks for large socket buffers: with thousands of devices answering at
/// once, the default (about 200 KiB, a few hundred datagrams) overflows and
/// every dropped answer costs a 2 s retransmission. The kernel caps the
/// size at net.core.rmem_max / wmem_max.
fn set_buffers(sock: &UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt on a descriptor we own, with a c_int argument.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            log::warn!(
                "could not set UDP socket buffer to {bytes} bytes: {}",
                io::Error::last_os_error()
            );
        }
    }
}

fn bind_dual_stack(port: u16) -> io::Result<UdpSocket> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; it is closed on every error path.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = UdpSocket::from_raw_fd(fd);
        let off: libc::c_int = 0;
        if libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            &off as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        if libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}

/// IPv4 peers on a dual-stack socket appear as `::ffff:a.b.c.d`; the rest
/// of the gateway sees them as plain IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

fn mapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        v6 => v6,
    }
}

/// A command's outcome in one line: result, then value or error.
fn outcome(a: &Answer) -> String {
    match (&a.value, &a.error) {
        (_, Some(e)) => format!("{} ({e})", a.result),
        (Some(v), None) => format!("{} {v}", a.result),
        (None, None) => a.result.to_string(),
    }
}

/// This process's resident memory in KiB, from /proc (0 where unavailable).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A seed from the OS random source, falling back to time and pid.
fn random_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => unix_ms() ^ ((std::process::id() as u64) << 32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_peers_are_seen_as_ipv4_and_mapped_back() {
        let v4: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        let m = mapped(v4);
        assert_eq!(m.to_string(), "[::ffff:192.0.2.1]:5683");
        assert_eq!(canonical(m), v4);
        let v6: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(mapped(v6), v6);
    }
}
