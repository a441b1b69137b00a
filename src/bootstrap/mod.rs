//! The LwM2M bootstrap server (sans-IO): Bootstrap-Request, the server's
//! Delete/Discover/Write/Finish sequence, Bootstrap-Pack, and the LwM2M
//! server account each device is handed.
//!
//! `Bootstrap` owns its own CoAP engine. The I/O shell feeds it datagrams
//! (and, on the DTLS port, who each session proved to be) and time; it
//! stores the [`BsEvent`]s and flushes them before it sends the datagrams
//! of the same turn, so a device is never told of an account the LwM2M
//! server could forget.

pub mod account;
pub mod entry;

use crate::coap::{
    self, opt, Code, Engine, Event, IncomingId, Message, MsgType, RequestError, RequestId, Token,
    Transmit,
};
use crate::credentials::{Authenticated, Credential};
use crate::lwm2m::format::ContentFormat;
use crate::lwm2m::node::Node;
use crate::lwm2m::{link, Path};
use account::Account;
pub use entry::{Entry, EntrySpec, Phase, ServerSecurity, State};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Bootstrap server settings.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// CoAP engine settings.
    pub coap: coap::Config,
    /// A bootstrap whose device stays silent this long between two steps
    /// is recorded as failed.
    pub stall_timeout: Duration,
    /// Bootstraps running at once; more get 5.03 and retry later.
    pub max_sessions: usize,
    /// The host put in the server URIs handed out (unless an entry names
    /// its own URI).
    pub server_host: String,
    /// The LwM2M server's plain CoAP port.
    pub coap_port: u16,
    /// The LwM2M server's DTLS port, if DTLS is on.
    pub dtls_port: Option<u16>,
    /// `bootstrap.server_host`: the host for every built URI, over the
    /// address each request arrived on (a gateway behind NAT, or a DNS
    /// name its certificate carries).
    pub host_override: Option<String>,
    /// The LwM2M server's public key (DER SubjectPublicKeyInfo), handed
    /// to devices with a raw-public-key account.
    pub server_public_key: Vec<u8>,
    /// The LwM2M server's certificate (DER), handed to devices with an
    /// X.509 account.
    pub server_certificate: Vec<u8>,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            coap: coap::Config::default(),
            stall_timeout: Duration::from_secs(60),
            max_sessions: 1024,
            server_host: "127.0.0.1".into(),
            coap_port: 5685,
            dtls_port: Some(5686),
            host_override: None,
            server_public_key: Vec::new(),
            server_certificate: Vec::new(),
        }
    }
}

/// What the shell must store: accounts and durable records are flushed
/// before that turn's datagrams leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BsEvent {
    /// A device's bootstrap record changed; `durable` when it entered
    /// another phase (started, finished, failed), which must survive a
    /// power cut, and not for a step within a run.
    State {
        /// The record.
        state: State,
        /// Flush it before this turn's datagrams leave.
        durable: bool,
    },
    /// The LwM2M server credential a device is about to be handed (sent
    /// with Bootstrap-Finish or in a Bootstrap-Pack).
    Credential(Credential),
}

/// One step of the server's sequence.
#[derive(Debug, Clone)]
enum Step {
    Delete(&'static str),
    Discover,
    Write(Path, crate::lwm2m::node::Node),
    Finish,
}

impl Step {
    fn name(&self) -> String {
        match self {
            Step::Delete(p) => format!("Delete {p}"),
            Step::Discover => "Discover /0".into(),
            Step::Write(p, _) => format!("Write {p}"),
            Step::Finish => "Bootstrap-Finish".into(),
        }
    }
}

/// One device's run.
struct Session {
    peer: SocketAddr,
    /// Started over DTLS: nothing of it may ever leave in the clear.
    secure: bool,
    /// Formats still to try for writes, the one in use first.
    formats: VecDeque<ContentFormat>,
    steps: VecDeque<Step>,
    current: Option<(Step, RequestId)>,
    account: Account,
    deadline: Instant,
}

/// Source of fresh key material (the OS random source in the shell).
pub type KeySource = Box<dyn FnMut(&mut [u8]) + Send>;

/// The sans-IO bootstrap server.
pub struct Bootstrap {
    cfg: BootstrapConfig,
    engine: Engine,
    entries: HashMap<String, Entry>,
    states: HashMap<String, State>,
    sessions: HashMap<String, Session>,
    by_request: HashMap<RequestId, String>,
    secure: HashMap<SocketAddr, Authenticated>,
    events: VecDeque<BsEvent>,
    keys: KeySource,
    unix_ms: u64,
    /// The gateway address the datagram being handled arrived on.
    arrived_on: Option<IpAddr>,
    /// Requests refused (unknown endpoint, wrong transport or identity).
    pub refused: u64,
    /// The object models a profile's extra writes are typed by.
    models: Option<std::sync::Arc<crate::lwm2m::ModelLibrary>>,
}

impl Bootstrap {
    /// A bootstrap server with no entries; `keys` fills generated PSKs.
    pub fn new(cfg: BootstrapConfig, seed: u64, keys: KeySource) -> Bootstrap {
        Bootstrap {
            engine: Engine::new(cfg.coap.clone(), seed),
            cfg,
            entries: HashMap::new(),
            states: HashMap::new(),
            sessions: HashMap::new(),
            by_request: HashMap::new(),
            secure: HashMap::new(),
            events: VecDeque::new(),
            keys,
            unix_ms: 0,
            arrived_on: None,
            refused: 0,
            models: None,
        }
    }

    /// The object models extra writes are typed by.
    pub fn set_models(&mut self, models: std::sync::Arc<crate::lwm2m::ModelLibrary>) {
        self.models = Some(models);
    }

    /// Adds or replaces an entry; its record starts pending.
    pub fn put_entry(&mut self, e: Entry) -> State {
        let st = State::pending(&e.endpoint);
        self.states.insert(e.endpoint.clone(), st.clone());
        self.entries.insert(e.endpoint.clone(), e);
        st
    }

    /// Puts back a stored entry and its record at start. A bootstrap that
    /// was running when the gateway stopped is recorded as failed; the
    /// device's next request starts clean.
    pub fn restore(&mut self, e: Entry, state: Option<State>) {
        let mut st = state.unwrap_or_else(|| State::pending(&e.endpoint));
        if let Phase::InProgress { step } = &st.phase {
            st.phase = Phase::Failed {
                reason: format!("the gateway stopped during {step}"),
                code: None,
            };
        }
        self.states.insert(e.endpoint.clone(), st);
        self.entries.insert(e.endpoint.clone(), e);
    }

    /// Removes an entry (a running bootstrap of it ends).
    pub fn remove_entry(&mut self, now: Instant, endpoint: &str) -> Option<Entry> {
        self.end_session(now, endpoint);
        self.states.remove(endpoint);
        self.entries.remove(endpoint)
    }

    /// One entry.
    pub fn entry(&self, endpoint: &str) -> Option<&Entry> {
        self.entries.get(endpoint)
    }

    /// Every entry, by endpoint.
    pub fn entries(&self) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.entries.values().collect();
        v.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        v
    }

    /// A device's bootstrap record.
    pub fn state(&self, endpoint: &str) -> Option<&State> {
        self.states.get(endpoint)
    }

    /// Bootstraps running now.
    pub fn running(&self) -> usize {
        self.sessions.len()
    }

    /// A DTLS session opened (`Some`) or ended (`None`) on the bootstrap
    /// port. A bootstrap running over a session that ended fails: its
    /// account (a key among it) is never sent in the clear.
    pub fn secure_session(&mut self, now: Instant, peer: SocketAddr, auth: Option<Authenticated>) {
        match auth {
            Some(a) => {
                self.secure.insert(peer, a);
            }
            None => {
                self.secure.remove(&peer);
                let cut: Vec<String> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.secure && s.peer == peer)
                    .map(|(ep, _)| ep.clone())
                    .collect();
                for ep in cut {
                    self.fail(
                        now,
                        &ep,
                        "the DTLS session ended during the bootstrap".into(),
                        None,
                    );
                }
            }
        }
    }

    /// Whether `peer` must only be answered through a DTLS session. A run
    /// begun over one ends with it ([`Bootstrap::secure_session`]), so no
    /// step of a secure run can be routed to a peer that is not secure.
    pub fn is_secure_peer(&self, peer: SocketAddr) -> bool {
        self.secure.contains_key(&peer)
    }

    /// Sets where the server URIs handed out point (the ports actually bound).
    pub fn set_server_ports(&mut self, coap: u16, dtls: Option<u16>) {
        self.cfg.coap_port = coap;
        self.cfg.dtls_port = dtls;
    }

    /// The LwM2M server's public key and certificate (DER), handed out
    /// with raw-public-key and X.509 accounts.
    pub fn set_server_identity(&mut self, public_key: Vec<u8>, certificate: Vec<u8>) {
        self.cfg.server_public_key = public_key;
        self.cfg.server_certificate = certificate;
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, unix_ms: u64, peer: SocketAddr, bytes: &[u8]) {
        self.handle_datagram_on(now, unix_ms, peer, None, bytes)
    }

    /// Feeds one received datagram that arrived on gateway address
    /// `local`: a server URI built for this request names that address.
    pub fn handle_datagram_on(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: SocketAddr,
        local: Option<IpAddr>,
        bytes: &[u8],
    ) {
        self.unix_ms = unix_ms;
        self.arrived_on = local;
        self.engine.handle_datagram(now, peer, bytes);
        self.drain(now);
        self.arrived_on = None;
    }

    /// Processes deadlines up to `now`: retransmissions, and bootstraps
    /// whose device went silent.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        self.drain(now);
        let stalled: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(ep, _)| ep.clone())
            .collect();
        for ep in stalled {
            let step = self
                .sessions
                .get(&ep)
                .and_then(|s| s.current.as_ref())
                .map_or("the next step".into(), |(st, _)| st.name());
            self.fail(
                now,
                &ep,
                format!("the device went silent during {step}"),
                None,
            );
        }
    }

    /// Earliest instant at which `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.values().map(|s| s.deadline).min();
        [self.engine.poll_timeout(), sessions]
            .into_iter()
            .flatten()
            .min()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.engine.poll_transmit()
    }

    /// Next change to store.
    pub fn poll_event(&mut self) -> Option<BsEvent> {
        self.events.pop_front()
    }

    /// CoAP counters of the bootstrap port.
    pub fn coap_stats(&self) -> coap::engine::Stats {
        self.engine.stats()
    }

    fn drain(&mut self, now: Instant) {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Request { id, peer, msg } => self.request(now, id, peer, msg),
                Event::Response { id, msg, .. } => self.response(now, id, msg),
                Event::Failed { id, error, .. } => {
                    if let Some(ep) = self.by_request.remove(&id) {
                        let step = self
                            .sessions
                            .get(&ep)
                            .and_then(|s| s.current.as_ref())
                            .map_or(String::new(), |(s, _)| s.name());
                        let why = match error {
                            RequestError::Timeout => format!("no answer to {step}"),
                            e => format!("{step}: {e}"),
                        };
                        self.fail(now, &ep, why, None);
                    }
                }
                Event::Notification { .. } | Event::ObserverGone { .. } => {}
            }
        }
    }

    fn request(&mut self, now: Instant, id: IncomingId, peer: SocketAddr, msg: Message) {
        let path = msg.uri_path();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let answer = match (msg.code, path.as_slice()) {
            (Code::POST, ["bs"]) => self.bootstrap_request(now, peer, &msg),
            (Code::GET, ["bspack"]) => self.bootstrap_pack(now, peer, &msg),
            (Code::POST | Code::GET, ["bs" | "bspack"]) => Err((
                Code::METHOD_NOT_ALLOWED,
                "Bootstrap-Request is POST /bs, Bootstrap-Pack GET /bspack".into(),
            )),
            _ => Err((Code::NOT_FOUND, "this is a bootstrap server".into())),
        };
        let resp = match answer {
            Ok(m) => m,
            Err((code, text)) => coap::engine::error_response(code, &text),
        };
        self.engine.respond(now, id, resp);
        // The first step goes out after the 2.04 (Leshan and the spec's
        // sequence diagrams alike).
        self.drain_sessions(now);
    }

    /// Checks who asks: an entry must exist, and the transport must be
    /// the one the entry requires, with the entry's own identity.
    fn admit(
        &mut self,
        peer: SocketAddr,
        msg: &Message,
    ) -> Result<(String, Entry), (Code, String)> {
        let Some(ep) = msg
            .uri_query()
            .into_iter()
            .find_map(|q| q.strip_prefix("ep=").map(str::to_string))
        else {
            return Err((Code::BAD_REQUEST, "ep= is missing".into()));
        };
        let secure = self.secure.get(&peer);
        let refused_code = if secure.is_some() {
            Code::FORBIDDEN
        } else {
            Code::BAD_REQUEST
        };
        let Some(entry) = self.entries.get(&ep).cloned() else {
            self.refused += 1;
            if self.refused.is_power_of_two() {
                log::warn!(
                    "ep={} peer={peer} bootstrap refused: no bootstrap entry ({} refusals so far)",
                    ep,
                    self.refused
                );
            }
            return Err((refused_code, "no bootstrap entry for this endpoint".into()));
        };
        match secure {
            Some(a) if a.endpoint != ep => {
                self.refused += 1;
                log::warn!(
                    "ep={ep} peer={peer} bootstrap refused: the DTLS identity belongs to {}",
                    a.endpoint
                );
                return Err((
                    Code::FORBIDDEN,
                    "the DTLS identity is another endpoint's".into(),
                ));
            }
            None if entry.security.is_secure() => {
                self.refused += 1;
                log::warn!(
                    "ep={ep} peer={peer} bootstrap refused: the entry requires DTLS ({})",
                    entry.security.mode()
                );
                return Err((
                    Code::FORBIDDEN,
                    "this endpoint must bootstrap over DTLS".into(),
                ));
            }
            _ => {}
        }
        Ok((ep, entry))
    }

    fn bootstrap_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: &Message,
    ) -> Result<Message, (Code, String)> {
        let (ep, entry) = self.admit(peer, msg)?;
        // A device that asks again starts clean, whatever it was doing.
        if !self.end_session(now, &ep) && self.sessions.len() >= self.cfg.max_sessions {
            return Err((
                Code::SERVICE_UNAVAILABLE,
                "too many bootstraps at once".into(),
            ));
        }
        let pct = msg
            .uri_query()
            .into_iter()
            .find_map(|q| q.strip_prefix("pct=").and_then(|v| v.parse::<u16>().ok()))
            .and_then(ContentFormat::from_code);
        let account = Account::new(&entry, &self.cfg, &mut self.keys, self.arrived_on);
        let steps: VecDeque<Step> = [
            Step::Delete("/0"),
            Step::Delete("/1"),
            Step::Discover,
            Step::Write(instance(0, 1), Node::Instance(account.security_instance())),
            Step::Write(instance(1, 0), Node::Instance(account.server_instance())),
        ]
        .into_iter()
        .chain(self.extra_writes(&ep, &entry))
        .chain([Step::Finish])
        .collect();
        log::info!(
            "ep={ep} peer={peer} bootstrap started{}",
            pct.map_or(String::new(), |f| format!(" (pct={f})"))
        );
        self.sessions.insert(
            ep.clone(),
            Session {
                peer,
                secure: self.secure.contains_key(&peer),
                formats: account::formats(pct),
                steps,
                current: None,
                account,
                deadline: now + self.cfg.stall_timeout,
            },
        );
        let st = self
            .states
            .entry(ep.clone())
            .or_insert_with(|| State::pending(&ep));
        st.attempts += 1;
        Ok(Message::new(MsgType::Ack, Code::CHANGED, 0, Token::EMPTY))
    }

    fn bootstrap_pack(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: &Message,
    ) -> Result<Message, (Code, String)> {
        let (ep, entry) = self.admit(peer, msg)?;
        let cf = match msg.uint_option(opt::ACCEPT).map(|c| c as u16) {
            None => ContentFormat::SenmlCbor,
            Some(c) => match ContentFormat::from_code(c) {
                Some(f @ (ContentFormat::SenmlCbor | ContentFormat::SenmlJson)) => f,
                _ => {
                    return Err((
                        Code::NOT_ACCEPTABLE,
                        "Bootstrap-Pack is SenML CBOR (112) or SenML JSON (110)".into(),
                    ))
                }
            },
        };
        let account = Account::new(&entry, &self.cfg, &mut self.keys, self.arrived_on);
        let extra: Vec<(Path, crate::lwm2m::node::Value)> = self
            .extra_writes(&ep, &entry)
            .into_iter()
            .flat_map(|s| match s {
                Step::Write(p, n) => n.entries(&p),
                _ => Vec::new(),
            })
            .collect();
        let body = account
            .pack(cf, &extra)
            .map_err(|e| (Code::INTERNAL_SERVER_ERROR, e.to_string()))?;
        self.end_session(now, &ep);
        self.events
            .push_back(BsEvent::Credential(account.credential(&entry)));
        let st = self
            .states
            .entry(ep.clone())
            .or_insert_with(|| State::pending(&ep));
        st.attempts += 1;
        log::info!(
            "ep={ep} peer={peer} Bootstrap-Pack delivered ({cf}, {} server account)",
            entry.server_security.mode()
        );
        self.set_phase(&ep, Phase::Finished);
        let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
        m.set_uint_option(opt::CONTENT_FORMAT, cf.code() as u64);
        m.payload = body;
        Ok(m)
    }

    /// Sends the next step of every session that waits for none.
    fn drain_sessions(&mut self, now: Instant) {
        let idle: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.current.is_none())
            .map(|(ep, _)| ep.clone())
            .collect();
        for ep in idle {
            self.next_step(now, &ep);
        }
    }

    fn next_step(&mut self, now: Instant, ep: &str) {
        let Some(s) = self.sessions.get_mut(ep) else {
            return;
        };
        let Some(step) = s.steps.pop_front() else {
            return;
        };
        let mut m = Message::new(MsgType::Con, Code::EMPTY, 0, Token::EMPTY);
        match &step {
            Step::Delete(p) => {
                m.code = Code::DELETE;
                m.set_uri_path(p);
            }
            Step::Discover => {
                m.code = Code::GET;
                m.set_uri_path("/0");
                m.set_uint_option(opt::ACCEPT, ContentFormat::Link.code() as u64);
            }
            Step::Write(p, inst) => {
                let Some(&cf) = s.formats.front() else {
                    return self.fail(now, ep, "no content format left to write in".into(), None);
                };
                let body = match crate::lwm2m::format::encode(cf, p, inst) {
                    Ok(b) => b,
                    Err(e) => return self.fail(now, ep, format!("{}: {e}", step.name()), None),
                };
                m.code = Code::PUT;
                m.set_uri_path(&p.to_string());
                m.set_uint_option(opt::CONTENT_FORMAT, cf.code() as u64);
                m.payload = body;
            }
            Step::Finish => {
                // The account becomes the LwM2M server's credential now:
                // stored and flushed before this Finish leaves.
                let cred = {
                    let entry = self.entries.get(ep);
                    entry.map(|e| s.account.credential(e))
                };
                if let Some(c) = cred {
                    self.events.push_back(BsEvent::Credential(c));
                }
                m.code = Code::POST;
                m.set_uri_path("/bs");
            }
        }
        let peer = s.peer;
        let name = step.name();
        match self.engine.request(now, peer, m) {
            Ok(id) => {
                s.current = Some((step, id));
                s.deadline = now + self.cfg.stall_timeout;
                self.by_request.insert(id, ep.to_string());
                self.set_phase(ep, Phase::InProgress { step: name });
            }
            Err(e) => self.fail(now, ep, format!("{name} not sent: {e}"), None),
        }
    }

    fn response(&mut self, now: Instant, id: RequestId, msg: Message) {
        let Some(ep) = self.by_request.remove(&id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&ep) else {
            return;
        };
        let Some((step, _)) = s.current.take() else {
            return;
        };
        let code = msg.code;
        let ok = match &step {
            // Nothing to delete is as good as deleted.
            Step::Delete(_) => code.is_success() || code == Code::NOT_FOUND,
            Step::Discover => {
                if code == Code::CONTENT {
                    let text = String::from_utf8_lossy(&msg.payload);
                    let iid =
                        account::free_security_instance(&link::parse(&text).unwrap_or_default());
                    if let Some(Step::Write(p, _)) = s.steps.front_mut() {
                        p.instance = Some(iid);
                    }
                }
                // A 1.0 client has no Bootstrap-Discover: keep /0/1.
                true
            }
            Step::Write(..)
                if matches!(
                    code,
                    Code::NOT_ACCEPTABLE | Code::UNSUPPORTED_CONTENT_FORMAT
                ) =>
            {
                let tried = s.formats.pop_front();
                if s.formats.is_empty() {
                    false
                } else {
                    log::info!(
                        "ep={ep} {} refused {} ({code}); trying {}",
                        step.name(),
                        tried.map_or(String::new(), |f| f.to_string()),
                        s.formats[0]
                    );
                    s.steps.push_front(step.clone());
                    true
                }
            }
            Step::Write(..) | Step::Finish => code.is_success(),
        };
        if !ok {
            let diag = String::from_utf8_lossy(&msg.payload).into_owned();
            let reason = if diag.is_empty() {
                format!("{} answered {code}", step.name())
            } else {
                format!("{} answered {code}: {diag}", step.name())
            };
            return self.fail(now, &ep, reason, Some(code.to_string()));
        }
        if matches!(step, Step::Finish) {
            self.sessions.remove(&ep);
            log::info!("ep={ep} bootstrap finished");
            self.set_phase(&ep, Phase::Finished);
            return;
        }
        self.next_step(now, &ep);
    }

    fn fail(&mut self, now: Instant, ep: &str, reason: String, code: Option<String>) {
        self.end_session(now, ep);
        log::warn!("ep={ep} bootstrap failed: {reason}");
        self.set_phase(ep, Phase::Failed { reason, code });
    }

    /// The profile's extra writes of an entry, typed by the models; one
    /// that no longer fits them is left out with a log line.
    fn extra_writes(&self, ep: &str, entry: &Entry) -> Vec<Step> {
        let mut out = Vec::new();
        for (p, text) in &entry.writes {
            let typed = Path::parse(p).map_err(|e| e.to_string()).and_then(|path| {
                let j: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
                let models = self.models.as_deref().ok_or("no models loaded")?;
                Node::from_json(&path, &j, models)
                    .map(|n| (path, n))
                    .map_err(|e| e.to_string())
            });
            match typed {
                Ok((path, node)) => out.push(Step::Write(path, node)),
                Err(e) => log::warn!("ep={ep} bootstrap write {p} left out: {e}"),
            }
        }
        out
    }

    /// Ends a device's run, if it has one, with its request in flight;
    /// true when there was one.
    fn end_session(&mut self, now: Instant, ep: &str) -> bool {
        let Some(s) = self.sessions.remove(ep) else {
            return false;
        };
        if let Some((_, id)) = s.current {
            self.by_request.remove(&id);
            self.engine.cancel(now, id);
        }
        true
    }

    fn set_phase(&mut self, ep: &str, phase: Phase) {
        let unix_ms = self.unix_ms;
        let st = self
            .states
            .entry(ep.to_string())
            .or_insert_with(|| State::pending(ep));
        let durable = std::mem::discriminant(&st.phase) != std::mem::discriminant(&phase);
        st.phase = phase;
        st.changed_ms = unix_ms;
        self.events.push_back(BsEvent::State {
            state: st.clone(),
            durable,
        });
    }
}

/// The path of one object instance.
fn instance(object: u16, iid: u16) -> Path {
    Path {
        instance: Some(iid),
        ..Path::object(object)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sim_tests;
