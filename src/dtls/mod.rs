//! DTLS 1.2 for devices: a stateless cookie front, then one session per
//! peer on Mbed TLS, bound to the device credentials; sans-IO throughout.

pub mod hello;
pub mod identity;
pub mod mbed;
pub mod tiny;

use crate::credentials::{Authenticated, Credential, Security};
use hello::CookieJar;
use mbed::{Session, Step};
use mbedtls::ssl::config::Config;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::os::raw::c_int;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tiny::{Tiny, TinyEvent};

/// Why a DTLS operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsError {
    /// Settings that cannot work (an unknown cipher suite, a bad key file).
    Config(String),
    /// The library refused; its words.
    Library(String),
    /// Data for a peer without an open session.
    NotEstablished,
    /// A message larger than one record.
    TooLarge(usize),
}

impl fmt::Display for DtlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtlsError::Config(m) => write!(f, "dtls settings: {m}"),
            DtlsError::Library(m) => write!(f, "dtls: {m}"),
            DtlsError::NotEstablished => f.write_str("no open DTLS session with that peer"),
            DtlsError::TooLarge(n) => write!(f, "{n} bytes do not fit one DTLS record"),
        }
    }
}

impl std::error::Error for DtlsError {}

/// The key material the handshakes check against, taken from the
/// credentials store.
#[derive(Debug, Default)]
pub struct Keys {
    psk: HashMap<Vec<u8>, (String, Vec<u8>)>,
    certificates: HashMap<Vec<u8>, String>,
    raw_keys: HashMap<[u8; 64], String>,
}

impl Keys {
    /// Indexes PSK identities and stored certificates.
    pub fn from_credentials<'a>(creds: impl IntoIterator<Item = &'a Credential>) -> Keys {
        let mut k = Keys::default();
        for c in creds {
            k.insert(c);
        }
        k
    }

    /// Adds one credential's key material; a PSK identity given again
    /// takes the new key (a bootstrap rotating it).
    pub fn insert(&mut self, c: &Credential) {
        match &c.security {
            Security::Psk { identity, key } => {
                self.psk.insert(
                    identity.as_bytes().to_vec(),
                    (c.endpoint.clone(), key.clone()),
                );
            }
            Security::X509 {
                certificate: Some(der),
            } => {
                self.certificates.insert(der.clone(), c.endpoint.clone());
            }
            Security::Rpk { public_key } => match tiny::spki_point(public_key) {
                Some(p) => {
                    self.raw_keys.insert(p, c.endpoint.clone());
                }
                None => log::warn!(
                    "ep={} raw public key is not P-256; it cannot be used over DTLS",
                    c.endpoint
                ),
            },
            _ => {}
        }
    }

    /// The endpoint whose stored raw public key is this P-256 point (X || Y).
    pub fn raw_key(&self, point: &[u8; 64]) -> Option<&str> {
        self.raw_keys.get(point).map(String::as_str)
    }

    /// The endpoint and key of a PSK identity.
    pub fn psk(&self, identity: &[u8]) -> Option<(&str, &[u8])> {
        self.psk
            .get(identity)
            .map(|(e, k)| (e.as_str(), k.as_slice()))
    }

    /// The endpoint a stored certificate (DER) belongs to.
    pub fn certificate(&self, der: &[u8]) -> Option<&str> {
        self.certificates.get(der).map(String::as_str)
    }
}

/// DTLS server settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cipher suites by IANA id, in preference order.
    pub suites: Vec<c_int>,
    /// Sessions kept at most; the least recently heard goes first.
    pub max_sessions: usize,
    /// Handshakes in progress at most; more ClientHellos are dropped.
    pub max_handshakes: usize,
    /// A session with no datagram from its peer for this long is dropped.
    pub idle_timeout: Duration,
    /// Retransmission timeout bounds of a handshake (RFC 6347 4.2.4).
    pub handshake_timeout: (Duration, Duration),
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            suites: DEFAULT_SUITES
                .iter()
                .filter_map(|n| mbed::suite_id(n))
                .collect(),
            max_sessions: 2000,
            max_handshakes: 256,
            idle_timeout: Duration::from_secs(86_400),
            handshake_timeout: (Duration::from_secs(1), Duration::from_secs(32)),
        }
    }
}

/// The suites LwM2M mandates first, then common AEAD and CBC ones, then
/// ECDHE-PSK: the only PSK suites some builds of client stacks have
/// (Debian's wolfSSL 5.5, for one).
pub const DEFAULT_SUITES: &[&str] = &[
    "TLS_PSK_WITH_AES_128_CCM_8",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
    "TLS_PSK_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_PSK_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256",
];

/// What the DTLS layer tells the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A handshake finished and the peer proved who it is.
    Established {
        /// Peer address.
        peer: SocketAddr,
        /// Whom the credential names.
        auth: Authenticated,
    },
    /// A decrypted CoAP datagram.
    Data {
        /// Peer address.
        peer: SocketAddr,
        /// The plaintext.
        bytes: Vec<u8>,
    },
    /// An established session ended.
    Closed {
        /// Peer address.
        peer: SocketAddr,
        /// Why, for the log.
        reason: String,
    },
}

/// Counters for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open sessions.
    pub sessions: usize,
    /// Handshakes in progress.
    pub handshaking: usize,
    /// Handshakes completed and accepted.
    pub handshakes: u64,
    /// Handshakes that failed or were refused after they finished.
    pub failed: u64,
    /// HelloVerifyRequests sent.
    pub hello_verify: u64,
    /// ClientHellos dropped because too many handshakes were in progress.
    pub busy: u64,
    /// Sessions evicted: idle too long, or the oldest when full.
    pub evicted: u64,
    /// Datagrams from peers without a session, dropped.
    pub no_session: u64,
    /// ClientHellos offering only raw public keys, refused (no RPK stack).
    pub rpk_refused: u64,
    /// Datagrams that are no DTLS record at all, dropped unread.
    pub garbage: u64,
}

/// Whether `d` starts with a DTLS record header whose length fits the
/// datagram.
fn is_dtls_record(d: &[u8]) -> bool {
    hello::record_header(d).is_ok()
        && hello::RECORD_HEADER + u16::from_be_bytes([d[11], d[12]]) as usize <= d.len()
}

/// A raw-public-key session, served by tinydtls.
struct RpkEntry {
    last_ms: u64,
    auth: Authenticated,
}

struct Entry {
    session: Session,
    /// Last datagram from the peer, in ms on our clock.
    last_ms: u64,
    auth: Option<Authenticated>,
}

/// All DTLS sessions of one listening socket.
pub struct DtlsServer {
    config: Arc<Config>,
    settings: Settings,
    keys: Keys,
    jar: CookieJar,
    epoch: Instant,
    sessions: HashMap<SocketAddr, Entry>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    next_sweep_ms: u64,
    /// Sessions past the handshake and accepted.
    open: usize,
    /// Raw-public-key sessions, when tinydtls is on.
    tiny: Option<Tiny>,
    rpk: HashMap<SocketAddr, RpkEntry>,
    /// Our clock at the current call, for what callbacks report.
    now_ms: u64,
    stats: Stats,
    /// Lines about garbage, bounded.
    bad_log: crate::logging::LogLimit,
}

/// How often sessions are checked for timers while handshakes run, and
/// for idleness otherwise.
const SWEEP_HANDSHAKING_MS: u64 = 100;
const SWEEP_IDLE_MS: u64 = 1000;
/// Transmits held at most before the gateway sends them.
const MAX_TRANSMITS: usize = 65_536;

impl DtlsServer {
    /// A server on a finished configuration (see `identity::server_config`).
    pub fn new(config: Arc<Config>, settings: Settings, now: Instant) -> DtlsServer {
        DtlsServer {
            config,
            settings,
            keys: Keys::default(),
            jar: CookieJar::new(random_bytes, 0),
            epoch: now,
            sessions: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_sweep_ms: 0,
            open: 0,
            tiny: None,
            rpk: HashMap::new(),
            now_ms: 0,
            stats: Stats::default(),
            bad_log: crate::logging::LogLimit::new(50, std::time::Duration::from_secs(10)),
        }
    }

    /// Serves raw-public-key clients (RFC 7250) with tinydtls.
    pub fn enable_raw_keys(&mut self, tiny: Tiny) {
        self.tiny = Some(tiny);
    }

    /// Replaces the key material (after credentials change).
    pub fn set_keys(&mut self, keys: Keys) {
        self.keys = keys;
    }

    /// Adds one credential's key material, without rebuilding the rest.
    pub fn add_key(&mut self, c: &Credential) {
        self.keys.insert(c);
    }

    fn ms(&mut self, now: Instant) -> u64 {
        self.now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.now_ms
    }

    /// Feeds one datagram received on the DTLS socket.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        let now_ms = self.ms(now);
        if let Some(hello) = hello::parse_client_hello(datagram) {
            let open = self.sessions.get(&peer).map(|e| e.session.is_open());
            // A ClientHello retransmitted into a handshake in progress
            // belongs to that handshake.
            if open != Some(false) {
                if hello.wants_raw_public_key {
                    self.raw_key_hello(peer, datagram);
                    return;
                }
                let id = peer_id(peer);
                self.jar.rotate_if_due(now_ms, random_bytes);
                if !self.jar.verify(&id, &hello) {
                    self.stats.hello_verify += 1;
                    let hvr = self.jar.hello_verify_request(&id, &hello);
                    self.push_transmit(peer, hvr);
                    return;
                }
                if !self.start_session(now_ms, peer, &id) {
                    return;
                }
            }
            let mut d = datagram.to_vec();
            hello::normalise_record_version(&mut d);
            self.feed(now_ms, peer, &d);
            return;
        }
        if !is_dtls_record(datagram) {
            // Cheap to drop, and counted: a flood of it shows in stats.
            self.stats.garbage += 1;
            if let Some(held) = self.bad_log.check(now) {
                log::info!(
                    "peer={peer} datagram of {} bytes on the DTLS port is no DTLS record; dropped{}",
                    datagram.len(),
                    crate::logging::held_note(held)
                );
            }
            return;
        }
        if self.sessions.contains_key(&peer) {
            self.feed(now_ms, peer, datagram);
        } else if let Some(t) = &mut self.tiny {
            // Raw-key handshakes and sessions: tinydtls knows its peers and
            // drops records from anyone else.
            if let Some(e) = self.rpk.get_mut(&peer) {
                e.last_ms = now_ms;
            }
            t.handle(&self.keys, peer, datagram);
            self.after_tiny();
        } else {
            self.stats.no_session += 1;
            log::debug!("peer={peer} DTLS record without a session dropped");
        }
    }

    /// A ClientHello offering a raw public key goes to tinydtls, which
    /// answers it with its own stateless cookie exchange.
    fn raw_key_hello(&mut self, peer: SocketAddr, datagram: &[u8]) {
        if self.tiny.is_none() {
            self.stats.rpk_refused += 1;
            log::warn!(
                "peer={peer} DTLS ClientHello offers only a raw public key (RFC 7250); raw keys are off"
            );
            if let Some(h) = hello::parse_client_hello(datagram) {
                let alert = hello::fatal_alert(&h, hello::UNSUPPORTED_CERTIFICATE);
                self.push_transmit(peer, alert);
            }
            return;
        }
        if let Some(old) = self.sessions.remove(&peer) {
            self.ended(peer, old, "the peer started a new handshake".into());
        }
        let Some(t) = &mut self.tiny else {
            return;
        };
        if self.rpk.remove(&peer).is_some() {
            t.forget(peer);
            log::info!("peer={peer} DTLS raw-key session replaced by a new handshake");
            self.events.push_back(Event::Closed {
                peer,
                reason: "the peer started a new handshake".into(),
            });
        } else if self.sessions.len() + self.rpk.len() >= self.settings.max_sessions {
            self.stats.busy += 1;
            log::warn!("peer={peer} DTLS raw-key handshake dropped: session table full");
            return;
        }
        let mut d = datagram.to_vec();
        hello::normalise_record_version(&mut d);
        t.handle(&self.keys, peer, &d);
        self.after_tiny();
    }

    /// Takes tinydtls's datagrams and events.
    fn after_tiny(&mut self) {
        let Some(t) = &mut self.tiny else {
            return;
        };
        let out = t.take_transmits();
        let events = t.take_events();
        for (p, d) in out {
            self.push_transmit(p, d);
        }
        let now_ms = self.now_ms;
        for ev in events {
            match ev {
                TinyEvent::Connected(peer, endpoint) => {
                    let auth = Authenticated {
                        endpoint,
                        mode: "RPK",
                        pinned: true,
                    };
                    log::info!(
                        "ep={} peer={peer} DTLS session open (RPK, TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8)",
                        auth.endpoint
                    );
                    self.stats.handshakes += 1;
                    self.rpk.insert(
                        peer,
                        RpkEntry {
                            last_ms: now_ms,
                            auth: auth.clone(),
                        },
                    );
                    self.events.push_back(Event::Established { peer, auth });
                }
                TinyEvent::Data(peer, bytes) => {
                    if self.rpk.contains_key(&peer) {
                        self.events.push_back(Event::Data { peer, bytes });
                    }
                }
                TinyEvent::Closed(peer, reason) => match self.rpk.remove(&peer) {
                    Some(e) => {
                        log::info!(
                            "ep={} peer={peer} DTLS session closed: {reason}",
                            e.auth.endpoint
                        );
                        self.events.push_back(Event::Closed { peer, reason });
                    }
                    None => {
                        self.stats.failed += 1;
                        log::warn!("peer={peer} DTLS raw-key handshake failed: {reason}");
                    }
                },
            }
        }
    }

    /// Makes room and opens a session for a peer whose cookie checked out.
    fn start_session(&mut self, now_ms: u64, peer: SocketAddr, id: &[u8]) -> bool {
        if let Some(old) = self.sessions.remove(&peer) {
            // The device restarted on the same address: a new connection
            // (RFC 6347 4.2.8); the old session ends.
            self.ended(peer, old, "the peer started a new handshake".into());
        }
        if self.handshaking() >= self.settings.max_handshakes {
            self.stats.busy += 1;
            log::warn!(
                "peer={peer} DTLS handshake dropped: {} already in progress",
                self.settings.max_handshakes
            );
            return false;
        }
        if self.sessions.len() + self.rpk.len() >= self.settings.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .filter(|(_, e)| e.session.is_open())
                .min_by_key(|(_, e)| e.last_ms)
                .map(|(p, _)| *p);
            match oldest {
                Some(p) => {
                    let e = self.sessions.remove(&p).expect("present");
                    self.stats.evicted += 1;
                    self.ended(p, e, "evicted: session table full".into());
                }
                None => return false,
            }
        }
        match Session::server(&self.config, id) {
            Ok(session) => {
                self.sessions.insert(
                    peer,
                    Entry {
                        session,
                        last_ms: now_ms,
                        auth: None,
                    },
                );
                self.next_sweep_ms = self.next_sweep_ms.min(now_ms + SWEEP_HANDSHAKING_MS);
                true
            }
            Err(e) => {
                log::error!("peer={peer} {e}");
                false
            }
        }
    }

    fn feed(&mut self, now_ms: u64, peer: SocketAddr, datagram: &[u8]) {
        let Some(e) = self.sessions.get_mut(&peer) else {
            return;
        };
        e.last_ms = now_ms;
        let mut plain = Vec::new();
        let step = e.session.handle(now_ms, &self.keys, datagram, &mut plain);
        self.after(peer, step, plain);
    }

    fn after(&mut self, peer: SocketAddr, step: Step, plain: Vec<Vec<u8>>) {
        let Some(e) = self.sessions.get_mut(&peer) else {
            return;
        };
        let out: Vec<Vec<u8>> = e.session.take_transmits().collect();
        match step {
            Step::Handshaking | Step::Open => {}
            Step::Established => match authenticate(&e.session) {
                Ok(auth) => {
                    log::info!(
                        "ep={} peer={peer} DTLS session open ({}, {})",
                        auth.endpoint,
                        auth.mode,
                        e.session.ciphersuite()
                    );
                    e.auth = Some(auth.clone());
                    self.open += 1;
                    self.stats.handshakes += 1;
                    self.events.push_back(Event::Established { peer, auth });
                }
                Err(why) => {
                    log::warn!("peer={peer} DTLS handshake refused: {why}");
                    e.session.deny();
                    let alert: Vec<Vec<u8>> = e.session.take_transmits().collect();
                    self.stats.failed += 1;
                    self.sessions.remove(&peer);
                    for d in out.into_iter().chain(alert) {
                        self.push_transmit(peer, d);
                    }
                    return;
                }
            },
            Step::Closed(reason) => {
                for d in out {
                    self.push_transmit(peer, d);
                }
                if let Some(e) = self.sessions.remove(&peer) {
                    self.ended(peer, e, reason);
                }
                return;
            }
        }
        for d in out {
            self.push_transmit(peer, d);
        }
        for bytes in plain {
            self.events.push_back(Event::Data { peer, bytes });
        }
    }

    /// Logs and reports a session that is gone.
    fn ended(&mut self, peer: SocketAddr, e: Entry, reason: String) {
        match e.auth {
            Some(auth) => {
                self.open -= 1;
                log::info!(
                    "ep={} peer={peer} DTLS session closed: {reason}",
                    auth.endpoint
                );
                self.events.push_back(Event::Closed { peer, reason });
            }
            None => {
                self.stats.failed += 1;
                let who = e
                    .session
                    .psk_identity()
                    .map_or(String::new(), |i| format!(" (PSK identity {i:?})"));
                log::warn!("peer={peer} DTLS handshake failed{who}: {reason}");
            }
        }
    }

    fn push_transmit(&mut self, peer: SocketAddr, d: Vec<u8>) {
        if self.transmits.len() < MAX_TRANSMITS {
            self.transmits.push_back((peer, d));
        }
    }

    fn handshaking(&self) -> usize {
        self.sessions.len() - self.open_sessions()
    }

    fn open_sessions(&self) -> usize {
        self.open
    }

    /// Encrypts one CoAP datagram for a peer with an open session.
    pub fn send(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) -> Result<(), DtlsError> {
        let now_ms = self.ms(now);
        if self.rpk.contains_key(&peer) {
            if let Some(t) = &mut self.tiny {
                t.write(peer, bytes)?;
                self.after_tiny();
                return Ok(());
            }
        }
        let e = self
            .sessions
            .get_mut(&peer)
            .filter(|e| e.session.is_open())
            .ok_or(DtlsError::NotEstablished)?;
        e.session.write(now_ms, bytes)?;
        let out: Vec<Vec<u8>> = e.session.take_transmits().collect();
        for d in out {
            self.push_transmit(peer, d);
        }
        Ok(())
    }

    /// True when the peer has an open session.
    pub fn is_open(&self, peer: &SocketAddr) -> bool {
        self.sessions.get(peer).is_some_and(|e| e.session.is_open()) || self.rpk.contains_key(peer)
    }

    /// Runs retransmission timers and drops idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        if now_ms < self.next_sweep_ms {
            return;
        }
        let idle_ms = self.settings.idle_timeout.as_millis() as u64;
        let mut due = Vec::new();
        let mut idle = Vec::new();
        let mut handshaking = false;
        for (p, e) in &self.sessions {
            if e.session.is_open() {
                if now_ms.saturating_sub(e.last_ms) >= idle_ms {
                    idle.push(*p);
                }
            } else {
                handshaking = true;
                if e.session.poll_timeout().is_some_and(|t| t <= now_ms) {
                    due.push(*p);
                }
            }
        }
        for p in due {
            if let Some(e) = self.sessions.get_mut(&p) {
                let step = e.session.handle_timeout(now_ms, &self.keys);
                self.after(p, step, Vec::new());
            }
        }
        for p in idle {
            if let Some(e) = self.sessions.remove(&p) {
                self.stats.evicted += 1;
                self.ended(p, e, "idle".into());
            }
        }
        let idle_rpk: Vec<SocketAddr> = self
            .rpk
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.last_ms) >= idle_ms)
            .map(|(p, _)| *p)
            .collect();
        if let Some(t) = &mut self.tiny {
            for p in idle_rpk {
                t.forget(p);
                if let Some(e) = self.rpk.remove(&p) {
                    self.stats.evicted += 1;
                    log::info!("ep={} peer={p} DTLS session closed: idle", e.auth.endpoint);
                    self.events.push_back(Event::Closed {
                        peer: p,
                        reason: "idle".into(),
                    });
                }
            }
            t.retransmit();
        }
        self.after_tiny();
        self.next_sweep_ms = now_ms
            + if handshaking {
                SWEEP_HANDSHAKING_MS
            } else {
                SWEEP_IDLE_MS
            };
    }

    /// When `handle_timeout` wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.sessions.is_empty() || self.tiny.is_some())
            .then(|| self.epoch + Duration::from_millis(self.next_sweep_ms))
    }

    /// Next datagram to send on the DTLS socket.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let sessions = self.open_sessions();
        Stats {
            sessions: sessions + self.rpk.len(),
            handshaking: self.sessions.len() - sessions,
            ..self.stats
        }
    }
}

/// Whom a finished handshake proved: the PSK identity's endpoint, the
/// endpoint of a stored certificate, or a trusted certificate's CN.
fn authenticate(s: &Session) -> Result<Authenticated, String> {
    if s.psk_identity().is_some() && s.ciphersuite().contains("PSK") {
        return s
            .bound_endpoint()
            .map(|ep| Authenticated {
                endpoint: ep.to_string(),
                mode: "PSK",
                pinned: true,
            })
            .ok_or_else(|| "PSK identity without an endpoint".into());
    }
    if s.peer_certificate().is_none() {
        return Err("no client certificate".into());
    }
    if let Some(ep) = s.bound_endpoint() {
        return Ok(Authenticated {
            endpoint: ep.to_string(),
            mode: "X509",
            pinned: true,
        });
    }
    if s.verify_result() != 0 {
        return Err(format!(
            "client certificate not trusted (flags 0x{:x})",
            s.verify_result()
        ));
    }
    match s.peer_common_name() {
        Some(cn) if !cn.is_empty() => Ok(Authenticated {
            endpoint: cn,
            mode: "X509",
            pinned: false,
        }),
        _ => Err("client certificate has no CN".into()),
    }
}

/// The address bytes the cookie is bound to.
fn peer_id(peer: SocketAddr) -> Vec<u8> {
    let mut v = match peer.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&peer.port().to_be_bytes());
    v
}

/// Random bytes from the kernel, for cookie secrets.
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - filled,
                0,
            )
        };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom only fails on ancient kernels; fall back to the file.
            use std::io::Read;
            if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
                let _ = f.read_exact(&mut buf[filled..]);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests;
