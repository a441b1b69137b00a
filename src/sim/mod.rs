//! Simulated LwM2M client (sans-IO): objects 1, 3, 4, 5, 6, 9 and 3303 with
//! changing values, answering every device-management operation in every
//! content format. Drives the end-to-end tests and the benchmarks.

use crate::coap::{self, opt, Code, Engine, Event, IncomingId, Message, MsgType, Token, Transmit};
use crate::lwm2m::format::{self, ContentFormat};
use crate::lwm2m::node::{Instance, Node, Resource, Value};
use crate::lwm2m::{ModelLibrary, Operations, Path, Version};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            observe: true,
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
                Event::Request { id, msg, peer } => self.serve(now, unix_ms, id, peer, msg),
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
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.engine.poll_transmit()
    }

    /// Earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.engine.poll_timeout(), self.next_update]
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

    fn operations(&self, object: u16, r: u16) -> Operations {
        self.models
            .resource(object, r)
            .map(|m| m.operations)
            .unwrap_or_default()
    }

    fn is_executable(&self, p: &Path) -> bool {
        p.resource
            .is_some_and(|r| self.operations(p.object, r).execute)
    }

    fn readable(&self, object: u16, r: u16) -> bool {
        self.operations(object, r).read
    }

    fn writable(&self, object: u16, r: u16) -> bool {
        self.operations(object, r).write
    }

    /// The node at `path`; with `only_readable`, leaves out write-only
    /// resources and refuses to read one directly.
    fn node(&self, path: &Path, only_readable: bool) -> Result<Node, Refusal> {
        let not_found = || (Code::NOT_FOUND, format!("{path} does not exist"));
        let insts = self.objects.get(&path.object).ok_or_else(not_found)?;
        let filter = |o: u16, inst: &Instance| -> Instance {
            inst.iter()
                .filter(|(r, _)| !only_readable || self.readable(o, **r))
                .map(|(r, v)| (*r, v.clone()))
                .collect()
        };
        let Some(i) = path.instance else {
            return Ok(Node::Object(
                insts
                    .iter()
                    .map(|(i, inst)| (*i, filter(path.object, inst)))
                    .collect(),
            ));
        };
        let inst = insts.get(&i).ok_or_else(not_found)?;
        let Some(r) = path.resource else {
            return Ok(Node::Instance(filter(path.object, inst)));
        };
        if only_readable && !self.readable(path.object, r) && inst.contains_key(&r) {
            return refuse(Code::METHOD_NOT_ALLOWED, format!("{path} is not readable"));
        }
        let res = inst.get(&r).ok_or_else(not_found)?;
        match (path.resource_instance, res) {
            (None, res) => Ok(Node::Resource(res.clone())),
            (Some(ri), Resource::Multiple(m)) => m
                .get(&ri)
                .cloned()
                .map(Node::ResourceInstance)
                .ok_or_else(not_found),
            (Some(_), Resource::Single(_)) => Err(not_found()),
        }
    }

    fn pick_format(&self, accept: Option<u16>, node: &Node) -> Result<ContentFormat, Refusal> {
        let cf = match accept {
            Some(c) => ContentFormat::from_code(c).ok_or((
                Code::NOT_ACCEPTABLE,
                format!("content format {c} not supported"),
            ))?,
            None => self.cfg.format,
        };
        let single = matches!(
            node,
            Node::ResourceInstance(_) | Node::Resource(Resource::Single(_))
        );
        if !cf.is_structured() && !single {
            return refuse(Code::NOT_ACCEPTABLE, format!("{cf} carries one value"));
        }
        Ok(cf)
    }

    fn read_op(&mut self, p: &Path, accept: Option<u16>) -> Result<Message, Refusal> {
        let node = self.node(p, true)?;
        let cf = self.pick_format(accept, &node)?;
        let payload =
            format::encode(cf, p, &node).map_err(|e| (Code::NOT_ACCEPTABLE, e.to_string()))?;
        let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
        m.set_uint_option(opt::CONTENT_FORMAT, cf.code() as u64);
        m.payload = payload;
        Ok(m)
    }

    fn discover(&self, p: &Path) -> Result<Message, Refusal> {
        let node = self.node(p, false)?;
        let mut links = vec![];
        let attrs = |q: &Path| -> String {
            self.attributes
                .get(q)
                .map(|a| a.iter().map(|x| format!(";{x}")).collect())
                .unwrap_or_default()
        };
        links.push(format!("<{p}>{}", attrs(p)));
        let res_link = |q: Path, r: &Resource| {
            let dim = match r {
                Resource::Multiple(m) => format!(";dim={}", m.len()),
                Resource::Single(_) => String::new(),
            };
            format!("<{q}>{dim}{}", attrs(&q))
        };
        match &node {
            Node::Object(o) => {
                for i in o.keys() {
                    links.push(format!("</{}/{i}>", p.object));
                }
            }
            Node::Instance(inst) => {
                for (r, res) in inst {
                    links.push(res_link(
                        Path {
                            resource: Some(*r),
                            ..*p
                        },
                        res,
                    ));
                }
            }
            Node::Resource(res) => links = vec![res_link(*p, res)],
            Node::ResourceInstance(_) => {
                return refuse(Code::BAD_REQUEST, "cannot discover a resource instance")
            }
        }
        let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
        m.set_uint_option(opt::CONTENT_FORMAT, ContentFormat::Link.code() as u64);
        m.payload = links.join(",").into_bytes();
        Ok(m)
    }

    fn write_attributes(&mut self, p: &Path, msg: &Message) -> Result<Message, Refusal> {
        self.node(p, false)?;
        let entry = self.attributes.entry(*p).or_default();
        for q in msg.uri_query() {
            let name = q.split('=').next().unwrap_or("").to_string();
            entry.retain(|a| a.split('=').next() != Some(&name));
            if q.contains('=') {
                entry.push(q);
            }
        }
        Ok(changed(Code::CHANGED))
    }

    fn decode_payload(&self, p: &Path, msg: &Message) -> Result<Node, Refusal> {
        let c = msg.content_format().unwrap_or(0);
        let cf = ContentFormat::from_code(c).ok_or((
            Code::UNSUPPORTED_CONTENT_FORMAT,
            format!("content format {c} not supported"),
        ))?;
        format::decode(cf, p, &msg.payload, &*self.models)
            .map_err(|e| (Code::BAD_REQUEST, e.to_string()))
    }

    fn write(&mut self, p: &Path, msg: &Message, replace: bool) -> Result<Message, Refusal> {
        if p.instance.is_none() {
            return refuse(Code::METHOD_NOT_ALLOWED, "cannot write an object");
        }
        // Write-only resources (a firmware package) exist once written.
        self.node(
            &Path {
                resource: None,
                resource_instance: None,
                ..*p
            },
            false,
        )?;
        let node = self.decode_payload(p, msg)?;
        let entries = node.entries(p);
        for (q, _) in &entries {
            if !self.writable(q.object, q.resource.unwrap_or(0)) {
                return refuse(Code::METHOD_NOT_ALLOWED, format!("{q} is not writable"));
            }
        }
        let inst = self
            .objects
            .get_mut(&p.object)
            .and_then(|o| o.get_mut(&p.instance.unwrap_or(0)))
            .ok_or((Code::NOT_FOUND, format!("{p} does not exist")))?;
        match node {
            Node::Resource(res) => {
                let r = p.resource.unwrap_or(0);
                match (res, inst.get_mut(&r), replace) {
                    (Resource::Multiple(new), Some(Resource::Multiple(old)), false) => {
                        old.extend(new)
                    }
                    (res, _, _) => {
                        inst.insert(r, res);
                    }
                }
            }
            Node::ResourceInstance(v) => match inst.get_mut(&p.resource.unwrap_or(0)) {
                Some(Resource::Multiple(m)) => {
                    m.insert(p.resource_instance.unwrap_or(0), v);
                }
                _ => return refuse(Code::NOT_FOUND, format!("{p} does not exist")),
            },
            Node::Instance(new) => {
                for (r, res) in new {
                    match (res, inst.get_mut(&r), replace) {
                        (Resource::Multiple(n), Some(Resource::Multiple(old)), false) => {
                            old.extend(n)
                        }
                        (res, _, _) => {
                            inst.insert(r, res);
                        }
                    }
                }
            }
            Node::Object(_) => return refuse(Code::BAD_REQUEST, "object payload for an instance"),
        }
        Ok(changed(Code::CHANGED))
    }

    fn create(&mut self, p: &Path, msg: &Message) -> Result<Message, Refusal> {
        if !self.objects.contains_key(&p.object) {
            return refuse(
                Code::NOT_FOUND,
                format!("object {} not supported", p.object),
            );
        }
        let multiple = self.models.get(p.object, None).is_some_and(|m| m.multiple);
        if !multiple {
            return refuse(
                Code::METHOD_NOT_ALLOWED,
                format!("object {} is single-instance", p.object),
            );
        }
        let node = self.decode_payload(p, msg)?;
        let Node::Object(mut o) = node else {
            return refuse(Code::BAD_REQUEST, "Create needs an instance");
        };
        let objects = self.objects.entry(p.object).or_default();
        let (id, inst) = match o.pop_first() {
            Some((id, inst)) => (id, inst),
            None => (
                (0..u16::MAX)
                    .find(|i| !objects.contains_key(i))
                    .unwrap_or(0),
                Instance::new(),
            ),
        };
        if objects.contains_key(&id) {
            return refuse(
                Code::BAD_REQUEST,
                format!("instance /{}/{id} exists", p.object),
            );
        }
        objects.insert(id, inst);
        let mut m = changed(Code::CREATED);
        m.add_option(opt::LOCATION_PATH, p.object.to_string().into_bytes());
        m.add_option(opt::LOCATION_PATH, id.to_string().into_bytes());
        Ok(m)
    }

    fn delete(&mut self, p: &Path) -> Result<Message, Refusal> {
        if p.depth() != 2 {
            return refuse(
                Code::METHOD_NOT_ALLOWED,
                "only object instances can be deleted",
            );
        }
        if p.object == 3 {
            return refuse(
                Code::METHOD_NOT_ALLOWED,
                "the Device object cannot be deleted",
            );
        }
        match self
            .objects
            .get_mut(&p.object)
            .and_then(|o| o.remove(&p.instance.unwrap_or(0)))
        {
            Some(_) => Ok(changed(Code::DELETED)),
            None => refuse(Code::NOT_FOUND, format!("{p} does not exist")),
        }
    }

    fn execute(&mut self, now: Instant, p: &Path, msg: &Message) -> Result<Message, Refusal> {
        self.node(
            &Path {
                resource: None,
                ..*p
            },
            false,
        )?;
        if !msg.payload.is_empty() && std::str::from_utf8(&msg.payload).is_err() {
            return refuse(Code::BAD_REQUEST, "arguments are not text");
        }
        // A long-running simulator keeps only the latest executions.
        if self.executed.len() >= MAX_EXECUTED {
            self.executed.remove(0);
        }
        self.executed.push(*p);
        if (p.object, p.resource) == (1, Some(8)) {
            self.send_update(now);
        }
        if (p.object, p.resource) == (5, Some(2)) {
            if let Some(inst) = self.objects.get_mut(&5).and_then(|o| o.get_mut(&0)) {
                inst.insert(3, Resource::Single(Value::Integer(3)));
            }
        }
        Ok(changed(Code::CHANGED))
    }

    fn read_composite(&mut self, msg: &Message, accept: Option<u16>) -> Result<Message, Refusal> {
        let cf = composite(msg.content_format(), Code::UNSUPPORTED_CONTENT_FORMAT)?;
        let paths = format::decode_paths(cf, &msg.payload)
            .map_err(|e| (Code::BAD_REQUEST, e.to_string()))?;
        let mut entries = Vec::new();
        for p in &paths {
            if let Ok(node) = self.node(p, true) {
                entries.extend(node.entries(p));
            }
        }
        let out = match accept {
            Some(_) => composite(accept, Code::NOT_ACCEPTABLE)?,
            None => cf,
        };
        let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
        m.set_uint_option(opt::CONTENT_FORMAT, out.code() as u64);
        m.payload = format::encode_entries(out, &entries)
            .map_err(|e| (Code::NOT_ACCEPTABLE, e.to_string()))?;
        Ok(m)
    }

    fn write_composite(&mut self, msg: &Message) -> Result<Message, Refusal> {
        let cf = composite(msg.content_format(), Code::UNSUPPORTED_CONTENT_FORMAT)?;
        let entries = format::decode_entries(cf, &msg.payload, &*self.models)
            .map_err(|e| (Code::BAD_REQUEST, e.to_string()))?;
        // All or nothing: check every target before changing any.
        for (p, _) in &entries {
            let parent = Path {
                resource_instance: None,
                ..*p
            };
            self.node(
                &Path {
                    resource: None,
                    ..parent
                },
                false,
            )?;
            if p.resource.is_none() || !self.writable(p.object, p.resource.unwrap_or(0)) {
                return refuse(Code::METHOD_NOT_ALLOWED, format!("{p} is not writable"));
            }
        }
        for (p, v) in entries {
            let inst = self
                .objects
                .get_mut(&p.object)
                .and_then(|o| o.get_mut(&p.instance.unwrap_or(0)));
            if let Some(inst) = inst {
                let r = p.resource.unwrap_or(0);
                match p.resource_instance {
                    None => {
                        inst.insert(r, Resource::Single(v));
                    }
                    Some(ri) => {
                        if let Resource::Multiple(m) = inst
                            .entry(r)
                            .or_insert_with(|| Resource::Multiple(BTreeMap::new()))
                        {
                            m.insert(ri, v);
                        }
                    }
                }
            }
        }
        Ok(changed(Code::CHANGED))
    }
}

/// A format that carries paths from several objects, or `refusal`.
fn composite(code: Option<u16>, refusal: Code) -> Result<ContentFormat, Refusal> {
    let c = code.unwrap_or(0);
    ContentFormat::from_code(c)
        .filter(|f| f.is_composite())
        .ok_or((
            refusal,
            format!("content format {c} cannot carry composite values"),
        ))
}

fn changed(code: Code) -> Message {
    Message::new(MsgType::Ack, code, 0, Token::EMPTY)
}
