//! The LwM2M server: registration interface over the CoAP engine (sans-IO).
//!
//! `Server` owns the CoAP engine and the registry. The I/O shell feeds it
//! datagrams and time, persists the registry events it emits, and sends the
//! datagrams it hands out.

pub mod registry;

use crate::coap::{self, opt, Code, Engine, Event, IncomingId, Message, MsgType, Token, Transmit};
pub use registry::{Binding, ObjectLink, RegError, RegId, Registration, Registry};
use std::collections::VecDeque;
use std::net::SocketAddr;
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            coap: coap::Config::default(),
            max_registrations: 100_000,
            expiry_grace: Duration::from_secs(30),
        }
    }
}

/// The sans-IO LwM2M server.
pub struct Server {
    engine: Engine,
    registry: Registry,
    events: VecDeque<ServerEvent>,
    admission: AdmissionPolicy,
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
        self.engine.handle_datagram(now, peer, bytes);
        self.drain_engine(now, unix_ms);
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        for reg in self.registry.expire(now) {
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
        [self.engine.poll_timeout(), self.registry.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.engine.poll_transmit()
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
                Event::Response { peer, msg, .. } | Event::Notification { peer, msg, .. } => {
                    log::debug!("peer={peer} unexpected response {}", msg.code);
                }
                Event::Failed { peer, error, .. } => {
                    log::debug!("peer={peer} request failed: {error}")
                }
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
            (["rd", reg_id], Code::DELETE) => self.deregister(peer, reg_id),
            (["rd"], _) | (["rd", _], _) => reply(Code::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => reply(Code::NOT_FOUND, "no such resource"),
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
                log::warn!(
                    "ep={ep} peer={peer} register refused with {}: {e}",
                    e.code()
                );
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
        let result = (|| {
            let params = registry::parse_params(&msg.uri_query())?;
            if params.endpoint.is_some() || params.version.is_some() {
                return Err(RegError::BadRequest(
                    "ep and lwm2m are not allowed in Update".into(),
                ));
            }
            check_format(msg)?;
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
                self.events.push_back(ServerEvent::Updated(reg));
                reply(Code::CHANGED, "")
            }
            Err(e) => {
                log::info!(
                    "peer={peer} update of {reg_id} refused with {}: {e}",
                    e.code()
                );
                reply(e.code(), &e.to_string())
            }
        }
    }

    fn deregister(&mut self, peer: SocketAddr, reg_id: &str) -> Message {
        match self.registry.deregister(reg_id) {
            Some(reg) => {
                log::info!(
                    "ep={} de-registered id={} peer={peer}",
                    reg.endpoint,
                    reg.id
                );
                self.events.push_back(ServerEvent::Deregistered(reg));
                reply(Code::DELETED, "")
            }
            None => {
                log::info!("peer={peer} de-register of unknown registration {reg_id}");
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

fn reply(code: Code, diagnostic: &str) -> Message {
    coap::engine::error_response(code, diagnostic)
}

#[cfg(test)]
mod tests;
