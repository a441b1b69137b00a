//! The bootstrap shell: the bootstrap server's plain and DTLS sockets,
//! its entries and records in the store, and the LwM2M server accounts it
//! hands out, made durable before the datagram that carries them leaves.

use super::dtls;
use super::error::RunError;
use super::udp::{Frames, Socket, BATCH};
use crate::bootstrap::{Bootstrap, BsEvent, Entry, KeySource};
use crate::config::BootstrapSettings;
use crate::credentials::{Credential, Security};
use crate::dtls::Keys;
use crate::server::Server;
use crate::store::{Store, StoreError};
use std::io;
use std::time::Instant;

/// The accounts one turn handed out.
#[derive(Debug, Default)]
pub struct HandedOut {
    /// Their credentials, now the LwM2M server's.
    pub credentials: Vec<Credential>,
    /// The DTLS keys must be rebuilt, not only added to.
    pub rebuild: bool,
    /// Something was written that must be on disk before the turn's
    /// datagrams leave (an account, a run started, finished or failed).
    pub flush: bool,
}

/// The bootstrap server and its transports.
pub struct Shell {
    core: Bootstrap,
    udp: Option<Socket>,
    dtls: Option<dtls::Shell>,
}

impl Shell {
    /// Binds the ports; the core is built in [`Shell::start`].
    pub fn bind(cfg: &BootstrapSettings) -> Result<(Option<Socket>, Option<Socket>), RunError> {
        let bind = |l: &crate::config::Listen, frames, what: &str| {
            let mut s = Socket::bind(l, frames, what)?;
            // Server URIs name the address each request arrived on.
            s.want_arrival_address();
            Ok::<_, RunError>(s)
        };
        let udp = match &cfg.listen {
            Some(l) => Some(bind(l, Frames::Coap, "bootstrap udp")?),
            None => None,
        };
        let dtls = match &cfg.dtls {
            Some(d) => Some(bind(&d.listen, Frames::Dtls, "bootstrap dtls udp")?),
            None => None,
        };
        Ok((udp, dtls))
    }

    /// Restores the entries and records from the store and starts serving
    /// on the bound sockets; `coap_port` and `dtls_port` are the LwM2M
    /// server's, put in the URIs handed out, and `identity` its DTLS
    /// public key and certificate, handed out with RPK and X.509 accounts.
    pub fn start(
        cfg: &BootstrapSettings,
        sockets: (Option<Socket>, Option<Socket>),
        store: &Store,
        models: std::sync::Arc<crate::lwm2m::ModelLibrary>,
        coap_port: u16,
        dtls: Option<(u16, dtls::ServerIdentity)>,
    ) -> Result<Shell, RunError> {
        let keys: KeySource = Box::new(|buf: &mut [u8]| {
            if !crate::clock::random_bytes(buf) {
                log::error!("no kernel random source: a generated PSK is weak");
                let mut rng = fastrand::Rng::with_seed(crate::clock::random_seed());
                rng.fill(buf);
            }
        });
        let mut core = Bootstrap::new(cfg.core.clone(), crate::clock::random_seed(), keys);
        let dtls_port = dtls.as_ref().map(|d| d.0);
        core.set_server_ports(coap_port, dtls_port);
        if let Some((_, id)) = dtls {
            core.set_server_identity(id.public_key, id.certificate);
        }
        core.set_models(models);
        let mut states: std::collections::HashMap<String, crate::bootstrap::State> = store
            .bootstrap_states()?
            .into_iter()
            .map(|s| (s.endpoint.clone(), s))
            .collect();
        let entries = store.bootstrap_entries()?;
        let n = entries.len();
        for e in entries {
            let st = states.remove(&e.endpoint);
            core.restore(e, st);
        }
        let (udp, dtls_socket) = sockets;
        let dtls = match (&cfg.dtls, dtls_socket) {
            (Some(d), Some(s)) => Some(dtls::Shell::start(
                d,
                s,
                bootstrap_keys(core.entries()),
                "Bootstrap",
            )?),
            _ => None,
        };
        log::info!(
            "bootstrap server on {}{}; {n} bootstrap entries",
            udp.as_ref().map_or("no plain port".into(), |u| format!(
                "udp {}",
                u.local_addr()
            )),
            dtls.as_ref().map_or(String::new(), |d| format!(
                ", DTLS udp {}",
                d.socket().local_addr()
            )),
        );
        Ok(Shell { core, udp, dtls })
    }

    /// The core, for the command path.
    pub fn core(&self) -> &Bootstrap {
        &self.core
    }

    /// The core, to change.
    pub fn core_mut(&mut self) -> &mut Bootstrap {
        &mut self.core
    }

    /// The plain socket's address, if on.
    pub fn udp_addr(&self) -> Option<std::net::SocketAddr> {
        self.udp.as_ref().map(Socket::local_addr)
    }

    /// The DTLS socket's address, if on.
    pub fn dtls_addr(&self) -> Option<std::net::SocketAddr> {
        self.dtls.as_ref().map(|d| d.socket().local_addr())
    }

    /// The bootstrap DTLS port's counters, if it is on.
    pub fn dtls_stats(&self) -> serde_json::Value {
        self.dtls
            .as_ref()
            .map_or(serde_json::Value::Null, |d| d.stats_json(0))
    }

    /// Its sockets by the name `stats` gives them.
    pub fn sockets(&self) -> Vec<(&'static str, &Socket)> {
        let mut v = Vec::new();
        if let Some(u) = &self.udp {
            v.push(("bootstrap", u));
        }
        if let Some(d) = &self.dtls {
            v.push(("bootstrapDtls", d.socket()));
        }
        v
    }

    /// Entries changed: the DTLS port checks handshakes against them.
    pub fn entries_changed(&mut self) {
        if let Some(d) = &mut self.dtls {
            d.set_keys(bootstrap_keys(self.core.entries()));
        }
    }

    /// Resolves when a socket is readable (never, with none on).
    pub async fn readable(&self) {
        let plain = async {
            match &self.udp {
                Some(u) => u.readable().await,
                None => std::future::pending().await,
            }
        };
        let secure = async {
            match &self.dtls {
                Some(d) => d.socket().readable().await,
                None => std::future::pending().await,
            }
        };
        smol::future::or(plain, secure).await
    }

    /// The next timer of the core or its DTLS sessions.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.core.poll_timeout(),
            self.dtls.as_ref().and_then(|d| d.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Reads both sockets and runs the timers.
    pub fn receive(&mut self, now: Instant, buf: &mut [u8], max: usize) {
        if let Some(u) = &self.udp {
            u.new_turn();
            for _ in 0..BATCH {
                match u.try_recv_on(buf) {
                    Ok((n, peer, _)) if self.core.is_secure_peer(peer) || n > max => {
                        log::debug!("peer={peer} bootstrap datagram dropped ({n} bytes)");
                    }
                    Ok((n, peer, local)) => self.core.handle_datagram_on(
                        now,
                        crate::clock::unix_ms(),
                        peer,
                        local,
                        &buf[..n],
                    ),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("bootstrap udp receive: {e}");
                        break;
                    }
                }
            }
        }
        if let Some(d) = &mut self.dtls {
            d.receive(&mut self.core, now, buf);
        }
        self.core.handle_timeout(now);
    }

    /// Stores this turn's records and accounts; the accounts become the
    /// LwM2M server's credentials and are given back. Accounts must be
    /// flushed before [`Shell::send_all`] sends the Finish or pack that
    /// carries them, and so must a run's start and end; the steps between
    /// ride on sled's background flush.
    pub fn persist(&mut self, store: &Store, server: &mut Server) -> HandedOut {
        let mut out = HandedOut::default();
        while let Some(ev) = self.core.poll_event() {
            let r: Result<(), StoreError> = match &ev {
                BsEvent::State { state, durable } => {
                    out.flush |= *durable;
                    store.put_bootstrap_state(state)
                }
                BsEvent::Credential(c) => {
                    // A new key for the same PSK identity only adds to the
                    // DTLS keys, and a NoSec account after none or NoSec
                    // changes nothing there; anything else (a mode or an
                    // identity that changed) must drop the old material.
                    let old = server.credential(&c.endpoint).map(|o| &o.security);
                    let in_place = match (old, &c.security) {
                        (None | Some(Security::NoSec), Security::NoSec) => true,
                        (None, Security::Psk { .. }) => true,
                        (
                            Some(Security::Psk { identity: a, .. }),
                            Security::Psk { identity: b, .. },
                        ) => a == b,
                        _ => false,
                    };
                    out.rebuild |= !in_place;
                    out.flush = true;
                    out.credentials.push(c.clone());
                    apply_credential(server, store, c.clone())
                }
            };
            if let Err(e) = r {
                // Never the event itself: an account holds a key.
                let (what, ep) = match &ev {
                    BsEvent::State { state, .. } => ("bootstrap record", &state.endpoint),
                    BsEvent::Credential(c) => ("server account", &c.endpoint),
                };
                log::error!("ep={ep} could not store the {what}: {e}");
            }
        }
        out
    }

    /// Sends what the core has to send.
    pub async fn send_all(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.core.poll_transmit() {
            let t = match &mut self.dtls {
                Some(d) => match d.route(&self.core, now, t) {
                    Some(t) => t,
                    None => continue,
                },
                None => t,
            };
            if let Some(u) = &self.udp {
                u.send_to(t.peer, &t.bytes).await;
            }
        }
        if let Some(d) = &mut self.dtls {
            d.send_all().await;
        }
    }
}

/// The account a device was handed becomes its LwM2M server credential.
fn apply_credential(server: &mut Server, store: &Store, c: Credential) -> Result<(), StoreError> {
    if let Err(e) = server.set_credential(c.clone()) {
        // The entry was checked when it was made; a profile removed since
        // falls back to the default one, as at a restore.
        log::error!(
            "ep={} bootstrap account: {e}; kept with the default profile",
            c.endpoint
        );
        server.restore_credential(c.clone());
    }
    log::info!(
        "ep={} LwM2M server credential {} from bootstrap stored",
        c.endpoint,
        c.security.mode()
    );
    store.put_credential(&c)
}

/// What the bootstrap DTLS port accepts: each entry's own credential.
fn bootstrap_keys(entries: Vec<&Entry>) -> Keys {
    let creds: Vec<Credential> = entries
        .into_iter()
        .map(|e| Credential {
            endpoint: e.endpoint.clone(),
            profile: e.profile.clone(),
            security: e.security.clone(),
        })
        .collect();
    Keys::from_credentials(creds.iter())
}
