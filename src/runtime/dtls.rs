//! The DTLS shell: its UDP socket, the sans-IO DTLS layer between that
//! socket and the server, and which datagrams may leave in the clear.

use super::error::RunError;
use super::udp::{Socket, BATCH};
use crate::bootstrap::Bootstrap;
use crate::coap::Transmit;
use crate::config::DtlsListen;
use crate::credentials::{Authenticated, Credential};
use crate::dtls::{self, DtlsServer, Keys};
use crate::server::Server;
use serde_json::{json, Value as Json};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// What a DTLS shell hands decrypted datagrams and sessions to: the
/// LwM2M server, or the bootstrap server on its own port.
pub trait Secured {
    /// A decrypted datagram, and the gateway address it arrived on.
    fn datagram(&mut self, now: Instant, peer: SocketAddr, local: Option<IpAddr>, bytes: &[u8]);
    /// A session opened (`Some`) or ended (`None`).
    fn session(&mut self, now: Instant, peer: SocketAddr, auth: Option<Authenticated>);
    /// Whether `peer` must only be answered through its session.
    fn is_secure_peer(&self, peer: SocketAddr) -> bool;
}

impl Secured for Server {
    fn datagram(&mut self, now: Instant, peer: SocketAddr, _: Option<IpAddr>, bytes: &[u8]) {
        self.handle_datagram(now, crate::clock::unix_ms(), peer, bytes)
    }
    fn session(&mut self, _now: Instant, peer: SocketAddr, auth: Option<Authenticated>) {
        self.secure_session(peer, auth)
    }
    fn is_secure_peer(&self, peer: SocketAddr) -> bool {
        Server::is_secure_peer(self, peer)
    }
}

impl Secured for Bootstrap {
    fn datagram(&mut self, now: Instant, peer: SocketAddr, local: Option<IpAddr>, bytes: &[u8]) {
        self.handle_datagram_on(now, crate::clock::unix_ms(), peer, local, bytes)
    }
    fn session(&mut self, now: Instant, peer: SocketAddr, auth: Option<Authenticated>) {
        self.secure_session(now, peer, auth)
    }
    fn is_secure_peer(&self, peer: SocketAddr) -> bool {
        Bootstrap::is_secure_peer(self, peer)
    }
}

/// CoAP over DTLS: a socket and its sessions.
pub struct Shell {
    dtls: DtlsServer,
    socket: Socket,
    /// Datagrams for secure peers without an open session, not sent.
    unsent: u64,
    /// The gateway's public key and certificate, for bootstrap.
    identity: ServerIdentity,
}

/// What devices given a RPK or X.509 account must trust: the gateway's
/// public key (DER SubjectPublicKeyInfo) and certificate (DER).
#[derive(Debug, Clone, Default)]
pub struct ServerIdentity {
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// DER certificate.
    pub certificate: Vec<u8>,
}

impl Shell {
    /// Loads or makes the server's key and certificate, and puts the DTLS
    /// layer in front of an already bound socket.
    pub fn start(
        cfg: &DtlsListen,
        socket: Socket,
        keys: Keys,
        what: &str,
    ) -> Result<Shell, RunError> {
        let id = dtls::identity::load(&cfg.files, &cfg.dir)
            .map_err(|e| RunError::Config(e.to_string()))?;
        for p in &id.made {
            log::info!("DTLS: made {} (first start)", p.display());
        }
        if what == "CoAP" {
            log::info!(
                "DTLS server public key (base64 SubjectPublicKeyInfo, for RPK provisioning): {}",
                id.public_key_base64()
            );
        }
        let rng = dtls::identity::rng().map_err(|e| RunError::Config(e.to_string()))?;
        let config = dtls::identity::server_config(&cfg.session, &id, rng)
            .map_err(|e| RunError::Config(e.to_string()))?;
        let mut d = DtlsServer::new(config, cfg.session.clone(), Instant::now());
        d.set_keys(keys);
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
        log::info!(
            "{what} over DTLS on udp {}{} (PSK, X.509{}{})",
            socket.local_addr(),
            if socket.dual_stack() {
                " (IPv4 and IPv6)"
            } else {
                ""
            },
            if cfg.files.trust_store.is_some() {
                " by CA or stored certificate"
            } else {
                " by stored certificate"
            },
            if rpk { ", RPK" } else { "" }
        );
        Ok(Shell {
            dtls: d,
            socket,
            unsent: 0,
            identity: ServerIdentity {
                public_key: id.public_key.clone(),
                certificate: id.certificate_der.clone(),
            },
        })
    }

    /// The gateway's public key and certificate.
    pub fn server_identity(&self) -> ServerIdentity {
        self.identity.clone()
    }

    /// The socket, to wait on.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The next DTLS timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.dtls.poll_timeout()
    }

    /// Reads the socket, runs the DTLS timers and hands what the sessions
    /// decrypted, opened and closed to the server.
    pub fn receive(&mut self, core: &mut impl Secured, now: Instant, buf: &mut [u8]) {
        self.socket.new_turn();
        for _ in 0..BATCH {
            match self.socket.try_recv_on(buf) {
                Ok((n, peer, local)) => {
                    self.dtls.handle_datagram(now, peer, &buf[..n]);
                    // Drained per datagram: what it decrypted arrived on
                    // its local address.
                    self.drain(core, now, local);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("dtls udp receive: {e}");
                    break;
                }
            }
        }
        self.dtls.handle_timeout(now);
        self.drain(core, now, None);
    }

    fn drain(&mut self, core: &mut impl Secured, now: Instant, local: Option<IpAddr>) {
        while let Some(ev) = self.dtls.poll_event() {
            match ev {
                dtls::Event::Established { peer, auth } => core.session(now, peer, Some(auth)),
                dtls::Event::Data { peer, bytes } => core.datagram(now, peer, local, &bytes),
                dtls::Event::Closed { peer, .. } => core.session(now, peer, None),
            }
        }
    }

    /// Takes a datagram of the server's: sealed into its peer's session,
    /// held back from a secure peer without one, or handed back to go out
    /// in the clear.
    pub fn route(&mut self, core: &impl Secured, now: Instant, t: Transmit) -> Option<Transmit> {
        if self.dtls.is_open(&t.peer) {
            if let Err(e) = self.dtls.send(now, t.peer, &t.bytes) {
                log::debug!("peer={} DTLS send failed: {e}", t.peer);
            }
            return None;
        }
        if core.is_secure_peer(t.peer) {
            // Never in the clear; the device handshakes again and the
            // request times out or is retried meanwhile.
            self.unsent += 1;
            log::debug!(
                "peer={} has no open DTLS session; {} bytes not sent",
                t.peer,
                t.bytes.len()
            );
            return None;
        }
        Some(t)
    }

    /// Writes out what the DTLS layer has to send.
    pub async fn send_all(&mut self) {
        while let Some((to, d)) = self.dtls.poll_transmit() {
            self.socket.send_to(to, &d).await;
        }
    }

    /// One credential more (or a new key for one), in force at once.
    pub fn add_key(&mut self, c: &Credential) {
        self.dtls.add_key(c);
    }

    /// Handshakes are checked against these credentials from now on.
    pub fn set_keys(&mut self, keys: Keys) {
        self.dtls.set_keys(keys);
    }

    /// DTLS counters for `stats`, with the plain datagrams refused because
    /// their peer must use DTLS.
    pub fn stats_json(&self, plain_dropped: u64) -> Json {
        let d = self.dtls.stats();
        json!({
            "sessions": d.sessions,
            "handshaking": d.handshaking,
            "handshakes": d.handshakes,
            "failed": d.failed,
            "helloVerify": d.hello_verify,
            "busy": d.busy,
            "evicted": d.evicted,
            "noSession": d.no_session,
            "rpkRefused": d.rpk_refused,
            "garbage": d.garbage,
            "unsent": self.unsent,
            "plainDropped": plain_dropped,
        })
    }
}
