//! Simulated LwM2M client (sans-IO): objects 1, 3, 4, 5, 6, 9 and 3303 with
//! changing values, answering every device-management operation in every
//! content format. Drives the end-to-end tests and the benchmarks.

use crate::coap::{self, opt, Code, Engine, Event, IncomingId, Message, MsgType, Token, Transmit};
use crate::lwm2m::format::{self, ContentFormat};
use crate::lwm2m::node::{Instance, Node, Resource, Value};
use crate::lwm2m::{ModelLibrary, Path, Version};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod bootstrap;
mod operations;
mod ota;

pub use bootstrap::{BootstrapProgress, ServerAccount};
pub use ota::{OtaFailure, OtaSimConfig};

/// Settings of one simulated device.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Endpoint name.
    pub endpoint: String,
    /// The gateway's CoAP address.
    pub server: SocketAddr,
    /// Registration lifetime, seconds.
    pub lifetime: u32,
    /// Preferred content format, announced first in `ct`.
    pub format: ContentFormat,
    /// LwM2M version announced.
    pub lwm2m_version: Version,
    /// Queue mode: the device listens only for `awake` after it last spoke.
    pub queue_mode: bool,
    /// How long a queue-mode device listens after it last spoke.
    pub awake: Duration,
    /// Update interval; default three quarters of the lifetime.
    pub update_every: Option<Duration>,
    /// Accept observations; when false, an Observe is answered as a plain
    /// read (RFC 7641 lets a server decline).
    pub observe: bool,
    /// How objects 5 and 9 behave.
    pub ota: OtaSimConfig,
    /// Object versions announced with `ver` in the Register; the others
    /// go without, so as version 1.0.
    pub object_versions: Vec<(u16, Version)>,
}

impl SimConfig {
    /// A device announcing `format`, LwM2M 1.2 for LwM2M CBOR, else 1.1.
    pub fn new(endpoint: &str, server: SocketAddr, format: ContentFormat) -> SimConfig {
        SimConfig {
            endpoint: endpoint.to_string(),
            server,
            lifetime: 300,
            format,
            lwm2m_version: if format == ContentFormat::Lwm2mCbor {
                Version::new(1, 2)
            } else {
                Version::new(1, 1)
            },
            queue_mode: false,
            awake: Duration::from_secs(2),
            update_every: None,
            object_versions: Vec::new(),
            observe: true,
            ota: OtaSimConfig::default(),
        }
    }
}

/// Registration progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// Not started or de-registered.
    Idle,
    /// Register sent.
    Registering,
    /// Registered at this location (`/rd/xyz`).
    Registered(String),
    /// The gateway refused or did not answer.
    Failed(String),
}

/// One simulated device.
pub struct SimDevice {
    cfg: SimConfig,
    engine: Engine,
    models: Arc<ModelLibrary>,
    objects: BTreeMap<u16, BTreeMap<u16, Instance>>,
    attributes: HashMap<Path, Vec<String>>,
    state: RegState,
    reg_request: Option<coap::RequestId>,
    next_update: Option<Instant>,
    rng: fastrand::Rng,
    observe_seq: u32,
    observers: BTreeMap<Vec<u8>, Observer>,
    awake_until: Option<Instant>,
    /// Operations served, by kind, for tests and logs.
    pub served: BTreeMap<&'static str, u64>,
    /// Datagrams ignored while asleep (queue mode).
    pub ignored_asleep: u64,
    executed: Vec<Path>,
    /// The bootstrap client, once a bootstrap was started.
    bs: Option<bootstrap::BsClient>,
    /// The server executed Bootstrap-Request Trigger (/1/x/9).
    rebootstrap: bool,
    /// Packages coming in, and an update under way.
    ota: ota::OtaObjects,
}

/// Someone observing one of our resources.
struct Observer {
    peer: SocketAddr,
    /// The Observe request, replayed to build each notification.
    request: Message,
}

/// The initial data: (path, JSON value) typed by the models.
fn initial_data(endpoint: &str) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("/1/0/0", json!(1)),
        ("/1/0/1", json!(300)),
        ("/1/0/2", json!(1)),
        ("/1/0/3", json!(60)),
        ("/1/0/6", json!(false)),
        ("/1/0/7", json!("U")),
        ("/3/0/0", json!("lwm2m-gw simulator")),
        ("/3/0/1", json!("SIM-1")),
        ("/3/0/2", json!(endpoint)),
        ("/3/0/3", json!("1.0.0")),
        ("/3/0/6", json!({"0": 1, "1": 5})),
        ("/3/0/7", json!({"0": 3800, "1": 5000})),
        ("/3/0/8", json!({"0": 125, "1": 900})),
        ("/3/0/9", json!(100)),
        ("/3/0/10", json!(15)),
        ("/3/0/11", json!({"0": 0})),
        ("/3/0/13", json!(0)),
        ("/3/0/14", json!("+01:00")),
        ("/3/0/15", json!("Europe/Berlin")),
        ("/3/0/16", json!("U")),
        ("/3/0/17", json!("sensor")),
        ("/3/0/18", json!("1.0")),
        ("/3/0/19", json!("1.0.0")),
        ("/3/0/20", json!(0)),
        ("/3/0/21", json!(128)),
        ("/4/0/0", json!(0)),
        ("/4/0/1", json!({"0": 0, "1": 6})),
        ("/4/0/2", json!(-70)),
        ("/4/0/3", json!(80)),
        ("/4/0/4", json!({"0": "192.0.2.10"})),
        ("/4/0/8", json!(12345)),
        ("/4/0/9", json!(1)),
        ("/4/0/10", json!(262)),
        ("/5/0/1", json!("")),
        ("/5/0/3", json!(0)),
        ("/5/0/5", json!(0)),
        ("/5/0/6", json!("")),
        ("/5/0/7", json!("")),
        ("/5/0/8", json!({"0": 0, "1": 1})),
        ("/5/0/9", json!(2)),
        ("/6/0/0", json!(52.52)),
        ("/6/0/1", json!(13.405)),
        ("/6/0/2", json!(34.0)),
        ("/6/0/3", json!(10.0)),
        ("/6/0/5", json!(0)),
        ("/6/0/6", json!(0.0)),
        ("/9/0/0", json!("app")),
        ("/9/0/1", json!("1.0")),
        ("/9/0/7", json!(0)),
        ("/9/0/8", json!(false)),
        ("/9/0/9", json!(0)),
        ("/9/0/12", json!(false)),
        // BinaryAppDataContainer: two instances of application data.
        ("/19/0/0", json!({"0": "0102"})),
        ("/19/1/0", json!({"0": "0a0b0c"})),
        ("/3303/0/5601", json!(21.0)),
        ("/3303/0/5602", json!(21.0)),
        ("/3303/0/5603", json!(-40.0)),
        ("/3303/0/5604", json!(85.0)),
        ("/3303/0/5700", json!(21.0)),
        ("/3303/0/5701", json!("Cel")),
        ("/3303/0/5750", json!("room")),
    ]
}

/// Observations one device keeps; beyond them an Observe is answered as
/// a plain read (RFC 7641 allows a server to decline).
const MAX_OBSERVERS: usize = 64;

/// Executions remembered for `executed()`.
const MAX_EXECUTED: usize = 256;

/// Why a request was refused: CoAP code and message.
type Refusal = (Code, String);

fn refuse<T>(code: Code, msg: impl Into<String>) -> Result<T, Refusal> {
    Err((code, msg.into()))
}

impl SimDevice {
    /// A device with its initial values; fails if the models do not fit.
    pub fn new(cfg: SimConfig, models: Arc<ModelLibrary>, seed: u64) -> Result<SimDevice, String> {
        let mut objects: BTreeMap<u16, BTreeMap<u16, Instance>> = BTreeMap::new();
        for (p, j) in initial_data(&cfg.endpoint) {
            let path = Path::parse(p).map_err(|e| e.to_string())?;
            let node = Node::from_json(&path, &j, &*models).map_err(|e| format!("{p}: {e}"))?;
            let Node::Resource(res) = node else {
                return Err(format!("{p} is not a resource"));
            };
            objects
                .entry(path.object)
                .or_default()
                .entry(path.instance.unwrap_or(0))
                .or_default()
                .insert(path.resource.unwrap_or(0), res);
        }
        let coap = coap::Config {
            ack_timeout: Duration::from_secs(2),
            max_exchanges: 64,
            max_dedup: 256,
            max_peers: 4,
            max_incoming: 64,
            max_block_states: 8,
            // Packages are hashed block by block, never held whole.
            stream_block1: vec!["5/0/0".into(), "9/0/2".into()],
            ..coap::Config::default()
        };
        Ok(SimDevice {
            cfg,
            engine: Engine::new(coap, seed),
            models,
            objects,
            attributes: HashMap::new(),
            state: RegState::Idle,
            reg_request: None,
            next_update: None,
            rng: fastrand::Rng::with_seed(seed ^ 0x9e37_79b9),
            observe_seq: 2,
            observers: BTreeMap::new(),
            awake_until: None,
            served: BTreeMap::new(),
            ignored_asleep: 0,
            executed: Vec::new(),
            bs: None,
            rebootstrap: false,
            ota: ota::OtaObjects::default(),
        })
    }

    /// The endpoint name.
    pub fn endpoint(&self) -> &str {
        &self.cfg.endpoint
    }

    /// Registration progress.
    pub fn state(&self) -> &RegState {
        &self.state
    }

    /// True once after the server executed Bootstrap-Request Trigger.
    pub fn take_rebootstrap(&mut self) -> bool {
        std::mem::take(&mut self.rebootstrap)
    }

    /// The latest resources executed (at most 256), oldest first.
    pub fn executed(&self) -> &[Path] {
        &self.executed
    }

    /// Sends Register.
    pub fn register(&mut self, now: Instant) {
        let mut m = Message::new(MsgType::Con, Code::POST, 0, Token::EMPTY);
        m.set_uri_path("/rd");
        for q in [
            format!("ep={}", self.cfg.endpoint),
            format!("lt={}", self.cfg.lifetime),
            format!("lwm2m={}", self.cfg.lwm2m_version),
            "b=U".to_string(),
        ] {
            m.add_option(opt::URI_QUERY, q.into_bytes());
        }
        if self.cfg.queue_mode {
            m.add_option(opt::URI_QUERY, b"Q".to_vec());
        }
        // A new registration ends every observation (LwM2M 1.1 6.4.1).
        self.observers.clear();
        m.set_uint_option(opt::CONTENT_FORMAT, ContentFormat::Link.code() as u64);
        m.payload = self.object_links().into_bytes();
        self.send_registration(now, m);
        self.state = RegState::Registering;
    }

    /// Sends De-register.
    pub fn deregister(&mut self, now: Instant) {
        if let RegState::Registered(loc) = &self.state {
            let mut m = Message::new(MsgType::Con, Code::DELETE, 0, Token::EMPTY);
            m.set_uri_path(loc);
            let _ = self.engine.request(now, self.cfg.server, m);
        }
        self.state = RegState::Idle;
        self.next_update = None;
    }

    fn send_registration(&mut self, now: Instant, m: Message) {
        self.wake(now);
        match self.engine.request(now, self.cfg.server, m) {
            Ok(id) => self.reg_request = Some(id),
            Err(e) => self.state = RegState::Failed(e.to_string()),
        }
    }

    fn send_update(&mut self, now: Instant) {
        if let RegState::Registered(loc) = &self.state {
            let mut m = Message::new(MsgType::Con, Code::POST, 0, Token::EMPTY);
            m.set_uri_path(loc);
            self.send_registration(now, m);
        }
    }

    fn object_links(&self) -> String {
        let mut cts = vec![self.cfg.format.code()];
        for f in [
            ContentFormat::SenmlCbor,
            ContentFormat::SenmlJson,
            ContentFormat::Tlv,
            ContentFormat::Lwm2mCbor,
            ContentFormat::OmaJson,
        ] {
            if !cts.contains(&f.code()) {
                cts.push(f.code());
            }
        }
        let cts: Vec<String> = cts.iter().map(u16::to_string).collect();
        let mut s = format!("</>;rt=\"oma.lwm2m\";ct=\"{}\"", cts.join(" "));
        for (o, insts) in &self.objects {
            if let Some((_, v)) = self.cfg.object_versions.iter().find(|(id, _)| id == o) {
                s.push_str(&format!(",</{o}>;ver={v}"));
            }
            for i in insts.keys() {
                s.push_str(&format!(",</{o}/{i}>"));
            }
        }
        s
    }

    /// A queue-mode device listens for its awake time after it speaks.
    fn wake(&mut self, now: Instant) {
        if self.cfg.queue_mode {
            self.awake_until = Some(now + self.cfg.awake);
        }
    }

    /// False while a queue-mode device sleeps: its radio is off.
    pub fn is_awake(&self, now: Instant) -> bool {
        !self.cfg.queue_mode || self.awake_until.is_some_and(|t| t > now)
    }

    /// Observations the gateway holds on this device.
    pub fn observers(&self) -> usize {
        self.observers.len()
    }

    /// Sends a notification to every observer with fresh values, CON or
    /// NON; returns how many went out.
    pub fn notify(&mut self, now: Instant, unix_ms: u64, confirmable: bool) -> usize {
        self.refresh(unix_ms);
        let mut sent = 0;
        let observers: Vec<(SocketAddr, Message)> = self
            .observers
            .values()
            .map(|o| (o.peer, o.request.clone()))
            .collect();
        for (peer, req) in observers {
            let (_, result) = self.dispatch(now, &req);
            let Ok(mut m) = result else {
                continue;
            };
            self.observe_seq = self.observe_seq.wrapping_add(1) & 0xff_ffff;
            m.set_uint_option(opt::OBSERVE, self.observe_seq as u64);
            m.mtype = if confirmable {
                MsgType::Con
            } else {
                MsgType::Non
            };
            m.token = req.token;
            self.engine.notify(now, peer, m);
            sent += 1;
        }
        if sent > 0 {
            self.wake(now);
        }
        sent
    }

    /// Notifies the observers of `paths` (an update's state changed).
    fn notify_paths(&mut self, now: Instant, paths: &[Path]) {
        let observers: Vec<(SocketAddr, Message)> = self
            .observers
            .values()
            .filter(|o| {
                Path::parse(&o.request.uri_path().join("/")).is_ok_and(|p| paths.contains(&p))
            })
            .map(|o| (o.peer, o.request.clone()))
            .collect();
        for (peer, req) in observers {
            let (_, result) = self.dispatch(now, &req);
            let Ok(mut m) = result else {
                continue;
            };
            self.observe_seq = self.observe_seq.wrapping_add(1) & 0xff_ffff;
            m.set_uint_option(opt::OBSERVE, self.observe_seq as u64);
            m.mtype = MsgType::Non;
            m.token = req.token;
            self.engine.notify(now, peer, m);
        }
    }

    /// Sends a Send (`POST /dp`) with the values at `paths` in `format`.
    pub fn send_values(&mut self, now: Instant, unix_ms: u64, paths: &[Path], cf: ContentFormat) {
        self.refresh(unix_ms);
        let mut entries = Vec::new();
        for p in paths {
            if let Ok(node) = self.node(p, true) {
                entries.extend(node.entries(p));
            }
        }
        let Ok(payload) = format::encode_entries(cf, &entries) else {
            return;
        };
        let mut m = Message::new(MsgType::Con, Code::POST, 0, Token::EMPTY);
        m.set_uri_path("/dp");
        m.set_uint_option(opt::CONTENT_FORMAT, cf.code() as u64);
        m.payload = payload;
        self.wake(now);
        let _ = self.engine.request(now, self.cfg.server, m);
    }

    /// Feeds a datagram from the gateway.
    pub fn handle_datagram(&mut self, now: Instant, unix_ms: u64, peer: SocketAddr, bytes: &[u8]) {
        if !self.is_awake(now) {
            self.ignored_asleep += 1;
            return;
        }
        self.engine.handle_datagram(now, peer, bytes);
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Request { id, msg, peer } if self.bootstrap_serve(now, id, peer, &msg) => {}
                Event::Request { id, msg, peer } => self.serve(now, unix_ms, id, peer, msg),
                Event::Response { id, msg, .. } if self.bootstrap_response(now, id, &msg) => {}
                Event::Response { id, msg, .. } if self.package_fetched(now, id, Ok(&msg)) => {}
                Event::Failed { id, .. } if self.package_fetched(now, id, Err(())) => {}
                Event::Failed { id, error, .. }
                    if self.bootstrap_failed(id, &error.to_string()) => {}
                Event::ObserverGone { token, .. } => {
                    self.observers.remove(token.as_bytes());
                }
                Event::Response { id, msg, .. } if Some(id) == self.reg_request => {
                    self.reg_request = None;
                    if msg.code == Code::CREATED {
                        self.state = RegState::Registered(format!("/{}", msg.location_path()));
                        self.schedule_update(now);
                    } else if msg.code == Code::CHANGED {
                        self.schedule_update(now);
                    } else if msg.code == Code::NOT_FOUND
                        && matches!(self.state, RegState::Registered(_))
                    {
                        // The gateway lost us: register again.
                        self.register(now);
                    } else {
                        self.state = RegState::Failed(format!("gateway answered {}", msg.code));
                    }
                }
                Event::Failed { id, error, .. } if Some(id) == self.reg_request => {
                    self.reg_request = None;
                    self.state = RegState::Failed(error.to_string());
                }
                _ => {}
            }
        }
    }

    fn schedule_update(&mut self, now: Instant) {
        let every = self.cfg.update_every.unwrap_or(Duration::from_secs(
            (self.cfg.lifetime as u64 * 3 / 4).max(1),
        ));
        self.next_update = Some(now + every);
    }

    /// Runs timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Failed { id, error, .. }
                    if self.bootstrap_failed(id, &error.to_string()) => {}
                Event::Failed { id, .. } if self.package_fetched(now, id, Err(())) => {}
                Event::Failed { id, error, .. } if Some(id) == self.reg_request => {
                    self.reg_request = None;
                    self.state = RegState::Failed(error.to_string());
                }
                Event::ObserverGone { token, .. } => {
                    self.observers.remove(token.as_bytes());
                }
                _ => {}
            }
        }
        if self.next_update.is_some_and(|t| t <= now) {
            self.next_update = None;
            self.send_update(now);
        }
        self.ota_timeout(now);
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.engine.poll_transmit()
    }

    /// Earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.engine.poll_timeout(),
            self.next_update,
            self.ota.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Values that change by themselves, brought up to date before a read.
    fn refresh(&mut self, unix_ms: u64) {
        let secs = (unix_ms / 1000) as i64;
        let t = unix_ms as f64 / 1000.0;
        let temp = 21.0 + 3.0 * (t / 60.0).sin() + self.rng.f64() * 0.1;
        let temp = (temp * 100.0).round() / 100.0;
        let battery = 100 - ((unix_ms / 60_000) % 100) as i64;
        let rssi = -60 - self.rng.i64(0..30);
        let set = |o: &mut BTreeMap<u16, BTreeMap<u16, Instance>>, obj, res, v| {
            if let Some(inst) = o.get_mut(&obj).and_then(|x| x.get_mut(&0)) {
                inst.insert(res, Resource::Single(v));
            }
        };
        set(&mut self.objects, 3, 9, Value::Integer(battery));
        set(&mut self.objects, 3, 13, Value::Time(secs));
        set(&mut self.objects, 4, 2, Value::Integer(rssi));
        set(&mut self.objects, 6, 5, Value::Time(secs));
        set(&mut self.objects, 3303, 5700, Value::Float(temp));
        if let Some(inst) = self.objects.get_mut(&3303).and_then(|x| x.get_mut(&0)) {
            for (r, keep_min) in [(5601u16, true), (5602, false)] {
                if let Some(Resource::Single(Value::Float(v))) = inst.get(&r) {
                    let nv = if keep_min { v.min(temp) } else { v.max(temp) };
                    inst.insert(r, Resource::Single(Value::Float(nv)));
                }
            }
        }
    }

    fn serve(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: IncomingId,
        peer: SocketAddr,
        msg: Message,
    ) {
        self.refresh(unix_ms);
        self.wake(now);
        let (kind, result) = self.dispatch(now, &msg);
        *self.served.entry(kind).or_default() += 1;
        let resp = match result {
            Ok(mut r) => {
                match msg.observe() {
                    Some(0)
                        if r.code.is_success()
                            && self.cfg.observe
                            && self.observers.len() < MAX_OBSERVERS =>
                    {
                        self.observe_seq = self.observe_seq.wrapping_add(1) & 0xff_ffff;
                        r.set_uint_option(opt::OBSERVE, self.observe_seq as u64);
                        let request = msg.clone();
                        self.observers
                            .insert(msg.token.as_bytes().to_vec(), Observer { peer, request });
                    }
                    Some(1) => {
                        self.observers.remove(msg.token.as_bytes());
                        *self.served.entry("observe-cancel").or_default() += 1;
                    }
                    _ => {}
                }
                r
            }
            Err((code, text)) => coap::engine::error_response(code, &text),
        };
        self.engine.respond(now, id, resp);
    }

    fn dispatch(
        &mut self,
        now: Instant,
        msg: &Message,
    ) -> (&'static str, Result<Message, Refusal>) {
        let segs = msg.uri_path();
        let path = if segs.is_empty() {
            None
        } else {
            match Path::parse(&segs.join("/")) {
                Ok(p) => Some(p),
                Err(e) => return ("bad", refuse(Code::NOT_FOUND, e.to_string())),
            }
        };
        let accept = msg.uint_option(opt::ACCEPT).map(|c| c as u16);
        match (msg.code, path) {
            (Code::GET, Some(p)) if accept == Some(ContentFormat::Link.code()) => {
                ("discover", self.discover(&p))
            }
            (Code::GET, Some(p)) if msg.observe().is_some() => {
                ("observe", self.read_op(&p, accept))
            }
            (Code::FETCH, None) if msg.observe().is_some() => {
                ("observe-composite", self.read_composite(msg, accept))
            }
            (Code::GET, Some(p)) => ("read", self.read_op(&p, accept)),
            (Code::PUT, Some(p))
                if matches!(
                    (p.object, p.instance, p.resource),
                    (5, Some(0), Some(1)) | (9, Some(0), Some(3))
                ) && !(msg.payload.is_empty() && msg.content_format().is_none()) =>
            {
                ("package-uri", self.package_uri(now, &p, msg))
            }
            (Code::PUT, Some(p))
                if matches!(
                    (p.object, p.instance, p.resource),
                    (5, Some(0), Some(0)) | (9, Some(0), Some(2))
                ) && (msg.block1().is_some()
                    || msg.content_format() == Some(ContentFormat::Opaque.code())) =>
            {
                ("package", self.package_block(now, &p, msg))
            }
            // A whole package written in one request in a structured
            // format (TLV, SenML): the package is its opaque value.
            (Code::PUT, Some(p))
                if matches!(
                    (p.object, p.instance, p.resource),
                    (5, Some(0), Some(0)) | (9, Some(0), Some(2))
                ) && msg.content_format().is_some() =>
            {
                let whole = match self.decode_payload(&p, msg) {
                    Ok(Node::Resource(Resource::Single(Value::Opaque(b)))) => Ok(b),
                    Ok(_) => refuse(Code::BAD_REQUEST, "a package is one opaque value"),
                    Err(e) => Err(e),
                };
                let answer = whole.and_then(|b| {
                    let mut m = msg.clone();
                    m.payload = b;
                    self.package_block(now, &p, &m)
                });
                ("package", answer)
            }
            (Code::PUT, Some(p)) if msg.payload.is_empty() && msg.content_format().is_none() => {
                ("write-attributes", self.write_attributes(&p, msg))
            }
            (Code::PUT, Some(p)) => ("write", self.write(&p, msg, true)),
            (Code::POST, Some(p)) if p.depth() == 1 => ("create", self.create(&p, msg)),
            (Code::POST, Some(p)) if p.depth() == 3 && self.is_executable(&p) => {
                ("execute", self.execute(now, &p, msg))
            }
            (Code::POST, Some(p)) => ("write", self.write(&p, msg, false)),
            (Code::DELETE, Some(p)) => ("delete", self.delete(&p)),
            (Code::FETCH, None) => ("read-composite", self.read_composite(msg, accept)),
            (Code::IPATCH, None) => ("write-composite", self.write_composite(msg)),
            _ => (
                "bad",
                refuse(Code::METHOD_NOT_ALLOWED, "not supported here"),
            ),
        }
    }
}
