//! The LwM2M server: registration, device management, observe, Send and
//! queue mode over the CoAP engine (sans-IO).
//!
//! `Server` owns the CoAP engine and the registry. The I/O shell feeds it
//! datagrams and time, persists the registry events and `Persist` records
//! it emits, and sends the datagrams it hands out.

pub mod answer;
pub mod command;
pub mod observe;
pub mod packages;
mod provision;
pub mod queue;
pub mod registry;
mod schema;
pub mod transport_log;

use crate::coap::{
    self, opt, Code, Engine, Event, IncomingId, Message, MsgType, RequestError, RequestId, Token,
    Transmit,
};
use crate::credentials::Authenticated;
use crate::lwm2m::ModelLibrary;
use command::{Action, Answer, DeviceSchema, Expect, Method};
use observe::Observation;
pub use observe::{ObservationRecord, Origin, Reading, Report, ReportStats};
use queue::{DeviceQueue, Queued};
pub use queue::{QueueConfig, QueuedRecord};
pub use registry::{Binding, ObjectLink, RegError, RegId, Registration, Registry};
use serde_json::Value as Json;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Content-Format of CoRE link format.
const LINK_FORMAT: u16 = 40;

/// What the registry reports; the store and the northbound side follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client registered; `replaced` is its previous registration, if any.
    Registered {
        /// The new registration.
        reg: Registration,
        /// The registration it replaced.
        replaced: Option<Box<Registration>>,
    },
    /// A client sent an Update.
    Updated(Registration),
    /// A client de-registered.
    Deregistered(Registration),
    /// A registration's lifetime ran out.
    Expired(Registration),
}

impl ServerEvent {
    /// The registration the event is about.
    pub fn registration(&self) -> &Registration {
        match self {
            ServerEvent::Registered { reg, .. } => reg,
            ServerEvent::Updated(r) | ServerEvent::Deregistered(r) | ServerEvent::Expired(r) => r,
        }
    }
}

/// State the store must follow, besides registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// An observation was established.
    Observation(ObservationRecord),
    /// One observation ended.
    ObservationGone {
        /// The device.
        endpoint: Box<str>,
        /// Its token.
        token: Token,
    },
    /// Every observation of a device ended.
    ObservationsGone(Box<str>),
    /// A request was queued for a sleeping device.
    Queued(QueuedRecord),
    /// A queued request finished.
    QueuedGone {
        /// The device.
        endpoint: Box<str>,
        /// Its sequence number.
        seq: u64,
    },
}

/// Who asks to register, for the admission policy.
#[derive(Debug, Clone)]
pub struct Admission<'a> {
    /// Endpoint name.
    pub endpoint: &'a str,
    /// Transport address.
    pub peer: SocketAddr,
}

/// Admission policy: `Err(reason)` refuses the Register with 4.03.
pub type AdmissionPolicy = Box<dyn Fn(&Admission) -> Result<(), String> + Send>;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// CoAP engine settings.
    pub coap: coap::Config,
    /// Most registrations kept.
    pub max_registrations: usize,
    /// Time past a lifetime before a registration is dropped.
    pub expiry_grace: Duration,
    /// Queue mode.
    pub queue: QueueConfig,
    /// Decoded reports held for the I/O shell; the oldest go first.
    pub max_reports: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            coap: coap::Config::default(),
            max_registrations: 100_000,
            expiry_grace: Duration::from_secs(30),
            queue: QueueConfig::default(),
            max_reports: 65_536,
        }
    }
}

/// A command sent to a device and waiting for its answer.
struct Pending {
    handle: u64,
    endpoint: Box<str>,
    expect: Expect,
    /// Set for a request that waited in a queue-mode device's queue.
    queued: Option<Queued>,
}

/// The sans-IO LwM2M server.
pub struct Server {
    engine: Engine,
    registry: Registry,
    events: VecDeque<ServerEvent>,
    admission: AdmissionPolicy,
    models: Arc<ModelLibrary>,
    pending: HashMap<RequestId, Pending>,
    answers: VecDeque<(u64, Answer)>,
    observations: HashMap<RequestId, Observation>,
    observed: HashMap<Box<str>, observe::ObsSet>,
    /// Recent transport log lines of devices whose profile asks for them.
    transport_lines: transport_log::TransportLog,
    reports: VecDeque<Arc<Report>>,
    max_reports: usize,
    report_stats: ReportStats,
    persist: VecDeque<Persist>,
    queue_cfg: QueueConfig,
    queues: HashMap<Box<str>, DeviceQueue>,
    awake_until: HashMap<Box<str>, Instant>,
    next_seq: u64,
    /// When held requests are next checked for expiry; none while none are held.
    next_sweep: Option<Instant>,
    profiles: HashMap<String, Arc<crate::profile::Resolved>>,
    credentials: HashMap<String, crate::credentials::Credential>,
    allow_unknown: bool,
    latest: provision::Latest,
    to_apply: Vec<Registration>,
    last_unix_ms: u64,
    /// Values came in that the device sees acknowledged (a Send, a
    /// confirmable notification) since `acknowledged_values` was asked.
    acknowledged: bool,
    /// Peers that proved who they are over DTLS, and whether their session
    /// is still open. An entry outlives its session while a registration
    /// made over it lives, so that nothing for it goes out in the clear.
    secure_peers: HashMap<SocketAddr, (Authenticated, bool)>,
    /// Packages served for pull updates.
    packages: packages::Packages,
    /// Lines about refused requests, bounded (a flood must not flood the log).
    bad_log: crate::logging::LogLimit,
}

impl Server {
    /// A server; `seed` feeds tokens, message ids and registration ids.
    pub fn new(cfg: ServerConfig, seed: u64) -> Server {
        Server {
            engine: Engine::new(cfg.coap, seed),
            registry: Registry::new(
                cfg.max_registrations,
                cfg.expiry_grace,
                seed.rotate_left(17) ^ 0x5bd1_e995,
            ),
            events: VecDeque::new(),
            admission: Box::new(|_| Ok(())),
            models: ModelLibrary::embedded_shared(),
            pending: HashMap::new(),
            answers: VecDeque::new(),
            observations: HashMap::new(),
            observed: HashMap::new(),
            transport_lines: Default::default(),
            reports: VecDeque::new(),
            max_reports: cfg.max_reports.max(1),
            report_stats: ReportStats::default(),
            persist: VecDeque::new(),
            queue_cfg: cfg.queue,
            queues: HashMap::new(),
            awake_until: HashMap::new(),
            next_seq: 0,
            next_sweep: None,
            profiles: HashMap::from([(
                crate::profile::DEFAULT.to_string(),
                Arc::new(crate::profile::Resolved {
                    profile: crate::profile::Profile::default_profile(),
                    mapped: Vec::new(),
                }),
            )]),
            credentials: HashMap::new(),
            allow_unknown: true,
            latest: HashMap::new(),
            to_apply: Vec::new(),
            last_unix_ms: 0,
            acknowledged: false,
            secure_peers: HashMap::new(),
            packages: packages::Packages::default(),
            bad_log: crate::logging::LogLimit::new(50, Duration::from_secs(10)),
        }
    }

    /// The object models used to check and type commands.
    pub fn models(&self) -> &ModelLibrary {
        &self.models
    }

    /// Replaces the object models used to check and type commands.
    pub fn set_models(&mut self, models: Arc<ModelLibrary>) {
        self.models = models;
    }

    /// Runs a command of the command language for `endpoint`; its answer
    /// comes out of `poll_answer` with `handle`, at once when the command is
    /// refused or needs no device, else when the device answers.
    pub fn command(
        &mut self,
        now: Instant,
        handle: u64,
        endpoint: &str,
        method: &str,
        params: &Json,
    ) {
        let answer = self.start_command(now, handle, endpoint, method, params);
        if let Some(a) = answer {
            self.answers.push_back((handle, a));
        }
    }

    fn start_command(
        &mut self,
        now: Instant,
        handle: u64,
        endpoint: &str,
        method_name: &str,
        params: &Json,
    ) -> Option<Answer> {
        let Some(method) = Method::parse(method_name) else {
            return Some(Answer::bad_request(format!(
                "unknown method {method_name:?}; known: {}",
                Method::ALL.map(Method::name).join(", ")
            )));
        };
        if !params.is_object() {
            return Some(Answer::bad_request("params must be a JSON object"));
        }
        let Some(reg) = self.registry.get(endpoint) else {
            return Some(Answer::fail(
                "DEVICE_NOT_REGISTERED",
                format!("no registration for endpoint {endpoint:?}"),
            ));
        };
        let peer = reg.peer;
        let profile = self.profile_of(endpoint).map(|r| &**r);
        let action = match command::plan(reg, &self.models, profile, method, params) {
            Ok(a) => a,
            Err(e) => {
                log::info!("ep={endpoint} {} refused: {e}", method.name());
                return Some(Answer::bad_request(e));
            }
        };
        let cancelled = |n: usize| Some(Answer::ok("CONTENT", Some(Json::from(n))));
        match action {
            Action::Answer(a) => Some(a),
            Action::ObserveReadAll => Some(self.observe_read_all(endpoint)),
            Action::ObserveCancel(path) => {
                cancelled(self.cancel_observations(now, endpoint, |k| *k == (false, vec![path])))
            }
            Action::ObserveCompositeCancel(mut paths) => {
                paths.sort();
                cancelled(self.cancel_observations(now, endpoint, |k| {
                    let mut mine = k.1.clone();
                    mine.sort();
                    k.0 && mine == paths
                }))
            }
            Action::ObserveCancelAll => {
                cancelled(self.cancel_observations(now, endpoint, |_| true))
            }
            Action::Send(_) if self.must_queue(now, endpoint) => {
                Some(self.enqueue(now, handle, endpoint, method, params))
            }
            Action::Send(plan) => {
                log::debug!("ep={endpoint} {} {}", method.name(), plan.msg.code);
                match self.engine.request(now, peer, plan.msg) {
                    Ok(id) => {
                        self.pending.insert(
                            id,
                            Pending {
                                handle,
                                endpoint: endpoint.into(),
                                expect: plan.expect,
                                queued: None,
                            },
                        );
                        None
                    }
                    Err(e) => {
                        log::warn!("ep={endpoint} {} not sent: {e}", method.name());
                        Some(Answer::fail("SERVICE_UNAVAILABLE", e.to_string()))
                    }
                }
            }
        }
    }

    /// Sends one block of a package to `endpoint`: a PUT of octet-stream
    /// with `block` as its Block1 option (and Size1 on block 0). Its answer
    /// comes out of `poll_answer` with `handle`, carrying the device's
    /// Block1 option. Blocks are never queued: a queue-mode device that is
    /// not awake answers DEVICE_ASLEEP at once, and the sender waits for it.
    #[allow(clippy::too_many_arguments)]
    pub fn block_write(
        &mut self,
        now: Instant,
        handle: u64,
        endpoint: &str,
        path: &crate::lwm2m::Path,
        block: coap::BlockOpt,
        size1: Option<u64>,
        payload: Vec<u8>,
    ) {
        let Some(reg) = self.registry.get(endpoint) else {
            self.answers.push_back((
                handle,
                Answer::fail(
                    "DEVICE_NOT_REGISTERED",
                    format!("no registration for endpoint {endpoint:?}"),
                ),
            ));
            return;
        };
        let peer = reg.peer;
        if self.must_queue(now, endpoint) {
            self.answers.push_back((
                handle,
                Answer::fail("DEVICE_ASLEEP", "the queue-mode device is not listening"),
            ));
            return;
        }
        let mut m = Message::new(MsgType::Con, Code::PUT, 0, Token::EMPTY);
        m.set_uri_path(&path.to_string());
        m.set_uint_option(
            opt::CONTENT_FORMAT,
            crate::lwm2m::format::ContentFormat::Opaque.code() as u64,
        );
        m.set_option(opt::BLOCK1, block.encode());
        if let Some(s) = size1 {
            m.set_uint_option(opt::SIZE1, s);
        }
        m.payload = payload;
        match self.engine.request(now, peer, m) {
            Ok(id) => {
                self.pending.insert(
                    id,
                    Pending {
                        handle,
                        endpoint: endpoint.into(),
                        expect: Expect::Block,
                        queued: None,
                    },
                );
            }
            Err(e) => self
                .answers
                .push_back((handle, Answer::fail("SERVICE_UNAVAILABLE", e.to_string()))),
        }
    }

    /// Next command answer, with the caller's handle.
    pub fn poll_answer(&mut self) -> Option<(u64, Answer)> {
        self.answers.pop_front()
    }

    /// Commands waiting for a device.
    pub fn pending_commands(&self) -> usize {
        self.pending.len()
    }

    fn complete(&mut self, now: Instant, id: RequestId, msg: Message) {
        let Some(mut p) = self.pending.remove(&id) else {
            log::debug!("answer for a request nobody waits for ({})", msg.code);
            return;
        };
        let answer = match self.registry.get(&p.endpoint) {
            Some(reg) => {
                let schema = DeviceSchema::new(&self.models, reg);
                command::answer(&p.expect, &msg, &schema)
            }
            None => Answer::fail(
                "DEVICE_NOT_REGISTERED",
                "the device left before it answered",
            ),
        };
        let key = match &p.expect {
            Expect::Observe(path) => Some((false, vec![*path])),
            Expect::ObserveComposite(paths) => Some((true, paths.clone())),
            _ => None,
        };
        if let Some(key) = key {
            if msg.observe().is_some() && answer.is_success() {
                self.established(now, id, &p.endpoint, key, &msg);
            } else {
                self.engine.cancel(now, id);
            }
        }
        if !answer.is_success() {
            log::info!("ep={} command answered {}", p.endpoint, answer.result);
        }
        // The profile's reads report their values; so does a profile
        // Observe the device answered without observing (RFC 7641 lets a
        // server decline): the value is then read once.
        match (&p.queued, &p.expect) {
            (Some(item), Expect::Node(path)) if item.internal && answer.is_success() => {
                self.profile_read(&p.endpoint, path, &msg);
            }
            (Some(item), Expect::Observe(path))
                if item.internal && answer.is_success() && msg.observe().is_none() =>
            {
                self.profile_read(&p.endpoint, path, &msg);
            }
            _ => {}
        }
        match p.queued.take() {
            Some(item) => self.queued_answered(now, &p.endpoint, item, Ok(answer)),
            None => self.answers.push_back((p.handle, answer)),
        }
    }

    fn fail(&mut self, now: Instant, id: RequestId, error: RequestError) {
        if let Some(mut p) = self.pending.remove(&id) {
            log::info!("ep={} command failed: {error}", p.endpoint);
            match p.queued.take() {
                Some(item) => self.queued_answered(now, &p.endpoint, item, Err(error)),
                None => self.answers.push_back((
                    p.handle,
                    Answer::fail(failure_name(error), error.to_string()),
                )),
            }
        }
    }

    /// Replaces the admission policy (the default admits everyone).
    pub fn set_admission(&mut self, policy: AdmissionPolicy) {
        self.admission = policy;
    }

    /// The registrations.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Puts back a stored registration at start-up; false when it expired meanwhile.
    pub fn restore(&mut self, now: Instant, unix_ms: u64, reg: Registration) -> bool {
        self.registry.restore(now, unix_ms, reg)
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, unix_ms: u64, peer: SocketAddr, bytes: &[u8]) {
        self.last_unix_ms = unix_ms;
        self.engine.handle_datagram(now, peer, bytes);
        self.drain_engine(now, unix_ms);
        for reg in std::mem::take(&mut self.to_apply) {
            self.apply_profile(now, &reg);
        }
        self.touch(now, peer);
    }

    /// A datagram too large for the receive buffer, of which `head` was read.
    pub fn handle_oversize(&mut self, now: Instant, peer: SocketAddr, head: &[u8]) {
        self.engine.handle_oversize(now, peer, head);
    }

    /// A DTLS session opened (`Some`) or ended (`None`) for `peer`.
    /// Datagrams from a secure peer are fed to `handle_datagram` as usual;
    /// what they may register, update or de-register is bound to `auth`.
    pub fn secure_session(&mut self, peer: SocketAddr, auth: Option<Authenticated>) {
        match auth {
            Some(a) => {
                self.secure_peers.insert(peer, (a, true));
            }
            None => {
                let keep = match (
                    self.secure_peers.get(&peer),
                    self.registry.get_by_peer(peer),
                ) {
                    (Some((a, _)), Some(reg)) => reg.endpoint == a.endpoint,
                    _ => false,
                };
                if keep {
                    if let Some(e) = self.secure_peers.get_mut(&peer) {
                        e.1 = false;
                    }
                } else {
                    self.secure_peers.remove(&peer);
                }
            }
        }
    }

    /// True for a peer whose traffic must go through DTLS: plain datagrams
    /// from it are not to be believed, and none are to be sent to it.
    pub fn is_secure_peer(&self, peer: SocketAddr) -> bool {
        self.secure_peers.contains_key(&peer)
    }

    /// Forgets a secure peer whose session is gone once no registration
    /// needs it any more.
    fn release_peer(&mut self, peer: SocketAddr) {
        if self.secure_peers.get(&peer).is_some_and(|(_, open)| !open) {
            self.secure_peers.remove(&peer);
        }
    }

    /// Admission of a register, update or de-register of `endpoint` from
    /// `peer`: over DTLS the session's credential must be the endpoint's;
    /// over plain CoAP the endpoint must not have a secure credential.
    fn admit_from(&self, peer: SocketAddr, endpoint: &str) -> Result<(), String> {
        match self.secure_peers.get(&peer) {
            Some((a, _)) => self.admit_secure(endpoint, a),
            None => self.admit(endpoint, false),
        }
    }

    /// Next change the store must follow.
    pub fn poll_persist(&mut self) -> Option<Persist> {
        self.persist.pop_front()
    }

    /// CoAP engine counters.
    pub fn coap_stats(&self) -> coap::engine::Stats {
        self.engine.stats()
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        // Timeouts end commands; no request can come out of a timer, so
        // the wall clock of the last datagram is good enough.
        self.drain_engine(now, self.last_unix_ms);
        if self.next_sweep.is_some_and(|t| now >= t) {
            self.next_sweep = None;
            self.expire_queued();
            if !self.queues.is_empty() {
                self.arm_sweep(now);
            }
        }
        for reg in self.registry.expire(now) {
            self.release_peer(reg.peer);
            self.drop_observations(now, &reg.endpoint);
            self.drop_queue(&reg.endpoint);
            self.forget_latest(&reg.endpoint);
            log::info!(
                "ep={} registration {} expired (lifetime {} s)",
                reg.endpoint,
                reg.id,
                reg.lifetime
            );
            self.events.push_back(ServerEvent::Expired(reg));
        }
    }

    /// Earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sweep = self.next_sweep;
        [
            self.engine.poll_timeout(),
            self.registry.next_expiry(),
            sweep,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.engine.poll_transmit()
    }

    /// Whether values arrived, since the last call, whose acknowledgement
    /// (the 2.04 of a Send, the ACK of a confirmable notification) is among
    /// the datagrams to send: the caller makes their reports durable first.
    pub fn acknowledged_values(&mut self) -> bool {
        std::mem::take(&mut self.acknowledged)
    }

    /// Next registry event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    fn drain_engine(&mut self, now: Instant, unix_ms: u64) {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Request { id, peer, msg } => {
                    self.handle_request(now, unix_ms, id, peer, msg)
                }
                Event::Response { id, msg, .. } => self.complete(now, id, msg),
                Event::Notification { id, msg, .. } => {
                    self.acknowledged |= msg.mtype == MsgType::Con;
                    self.notification(id, &msg, true)
                }
                Event::Failed { id, error, .. } => self.fail(now, id, error),
                // The gateway serves no observations of its own.
                Event::ObserverGone { .. } => {}
            }
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: IncomingId,
        peer: SocketAddr,
        msg: Message,
    ) {
        let path = msg.uri_path();
        let segs: Vec<&str> = path.iter().map(String::as_str).collect();
        let resp = match (segs.as_slice(), msg.code) {
            (["rd"], Code::POST) => self.register(now, unix_ms, peer, &msg),
            (["rd", reg_id], Code::POST) => self.update(now, unix_ms, peer, reg_id, &msg),
            (["rd", reg_id], Code::DELETE) => self.deregister(now, peer, reg_id),
            (["dp"], Code::POST) => self.handle_send(now, peer, &msg),
            (["fw", token], Code::GET) => match self.fetch(id, peer, token, &msg) {
                Some(refusal) => refusal,
                // Answered once the shell has read the block.
                None => return,
            },
            (["rd"], _) | (["rd", _], _) | (["dp"], _) => {
                reply(Code::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => {
                if let Some(held) = self.bad_log.check(now) {
                    log::info!(
                        "peer={peer} {} /{} refused with 4.04: no such resource{}",
                        msg.code,
                        segs.join("/"),
                        crate::logging::held_note(held)
                    );
                }
                reply(Code::NOT_FOUND, "no such resource")
            }
        };
        self.engine.respond(now, id, resp);
    }

    fn register(&mut self, now: Instant, unix_ms: u64, peer: SocketAddr, msg: &Message) -> Message {
        let query = msg.uri_query();
        let result = (|| {
            let params = registry::parse_params(&query)?;
            let ep = params
                .endpoint
                .as_deref()
                .ok_or_else(|| RegError::BadRequest("missing ep".into()))?;
            check_format(msg)?;
            let objects = registry::parse_object_list(&msg.payload)?;
            self.admit_from(peer, ep).map_err(RegError::Forbidden)?;
            (self.admission)(&Admission { endpoint: ep, peer }).map_err(RegError::Forbidden)?;
            self.registry.register(now, unix_ms, peer, params, objects)
        })();
        match result {
            Ok((reg, replaced)) => {
                log::info!(
                    "ep={} registered id={} peer={peer} lt={} lwm2m={} b={} objects={}{}",
                    reg.endpoint,
                    reg.id,
                    reg.lifetime,
                    reg.lwm2m_version,
                    reg.binding,
                    reg.objects.len(),
                    replaced
                        .as_ref()
                        .map_or(String::new(), |r| format!(" (replaces {})", r.id))
                );
                let mut resp = Message::new(MsgType::Ack, Code::CREATED, 0, Token::EMPTY);
                resp.add_option(opt::LOCATION_PATH, b"rd".to_vec());
                resp.add_option(opt::LOCATION_PATH, reg.id.to_string().into_bytes());
                if let Some(old) = &replaced {
                    self.drop_observations(now, &reg.endpoint);
                    if old.peer != reg.peer {
                        self.release_peer(old.peer);
                    }
                }
                // Applied once the 2.01 is on its way: a client may ignore
                // requests that overtake its registration's answer.
                self.to_apply.push(reg.clone());
                self.events.push_back(ServerEvent::Registered {
                    reg,
                    replaced: replaced.map(Box::new),
                });
                resp
            }
            Err(e) => {
                let ep = query
                    .iter()
                    .find_map(|q| q.strip_prefix("ep="))
                    .unwrap_or("?");
                if let Some(held) = self.bad_log.check(now) {
                    log::warn!(
                        "ep={ep} peer={peer} register refused with {}: {e}{}",
                        e.code(),
                        crate::logging::held_note(held)
                    );
                }
                reply(e.code(), &e.to_string())
            }
        }
    }

    fn update(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: SocketAddr,
        reg_id: &str,
        msg: &Message,
    ) -> Message {
        let old_peer = self.registry.get_by_id(reg_id).map(|r| r.peer);
        let result = (|| {
            let params = registry::parse_params(&msg.uri_query())?;
            if params.endpoint.is_some() || params.version.is_some() {
                return Err(RegError::BadRequest(
                    "ep and lwm2m are not allowed in Update".into(),
                ));
            }
            check_format(msg)?;
            // The admission policy holds for Updates too: a credential
            // provisioned after the device registered over plain CoAP
            // ends that registration's plain Updates.
            if let Some(ep) = self.registry.get_by_id(reg_id).map(|r| r.endpoint.clone()) {
                self.admit_from(peer, &ep).map_err(RegError::Forbidden)?;
            }
            let objects = if msg.payload.is_empty() {
                None
            } else {
                Some(registry::parse_object_list(&msg.payload)?)
            };
            self.registry
                .update(now, unix_ms, peer, reg_id, params, objects)
        })();
        match result {
            Ok(reg) => {
                log::debug!(
                    "ep={} updated id={} peer={peer} lt={}",
                    reg.endpoint,
                    reg.id,
                    reg.lifetime
                );
                if let Some(old) = old_peer.filter(|p| *p != peer) {
                    self.move_observations(now, &reg, peer);
                    self.release_peer(old);
                }
                self.events.push_back(ServerEvent::Updated(reg));
                reply(Code::CHANGED, "")
            }
            Err(e) => {
                if let Some(held) = self.bad_log.check(now) {
                    log::info!(
                        "peer={peer} update of {reg_id} refused with {}: {e}{}",
                        e.code(),
                        crate::logging::held_note(held)
                    );
                }
                reply(e.code(), &e.to_string())
            }
        }
    }

    fn deregister(&mut self, now: Instant, peer: SocketAddr, reg_id: &str) -> Message {
        if let Some(ep) = self.registry.get_by_id(reg_id).map(|r| r.endpoint.clone()) {
            if let Err(e) = self.admit_from(peer, &ep) {
                log::warn!("ep={ep} peer={peer} de-register refused with 4.03: {e}");
                return reply(Code::FORBIDDEN, &e);
            }
        }
        match self.registry.deregister(reg_id) {
            Some(reg) => {
                log::info!(
                    "ep={} de-registered id={} peer={peer}",
                    reg.endpoint,
                    reg.id
                );
                self.drop_observations(now, &reg.endpoint);
                self.drop_queue(&reg.endpoint);
                self.forget_latest(&reg.endpoint);
                self.release_peer(reg.peer);
                self.events.push_back(ServerEvent::Deregistered(reg));
                reply(Code::DELETED, "")
            }
            None => {
                if let Some(held) = self.bad_log.check(now) {
                    log::info!(
                        "peer={peer} de-register of unknown registration {reg_id}{}",
                        crate::logging::held_note(held)
                    );
                }
                reply(Code::NOT_FOUND, "unknown registration")
            }
        }
    }
}

fn check_format(msg: &Message) -> Result<(), RegError> {
    match msg.content_format() {
        Some(cf) if cf != LINK_FORMAT && !msg.payload.is_empty() => {
            Err(RegError::UnsupportedFormat(cf))
        }
        _ => Ok(()),
    }
}

/// The result name of a request that ended without an answer.
fn failure_name(e: RequestError) -> &'static str {
    match e {
        RequestError::Timeout => "TIMEOUT",
        RequestError::Reset => "RESET",
        RequestError::TooLarge => "REQUEST_ENTITY_TOO_LARGE",
        RequestError::BlockMismatch => "REQUEST_ENTITY_INCOMPLETE",
    }
}

fn reply(code: Code, diagnostic: &str) -> Message {
    coap::engine::error_response(code, diagnostic)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod command_tests;

#[cfg(test)]
mod report_tests;

#[cfg(test)]
mod test_pair;

#[cfg(test)]
mod provision_tests;
