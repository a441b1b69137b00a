//! The configuration resolved into typed settings, one struct per part:
//! checked once at start, so that no part reads the raw sections.

use super::{Config, ConfigError};
use crate::coap;
use crate::server::ServerConfig;
use crate::store::StoreConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a gateway is built from, each part's settings apart.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The state directory.
    pub data_dir: PathBuf,
    /// The plain CoAP listener.
    pub coap: Listen,
    /// The DTLS listener and its sessions; none when `dtls.enabled` is false.
    pub dtls: Option<DtlsListen>,
    /// The local control socket.
    pub control: ControlSettings,
    /// The northbound MQTT bridge; none without `mqtt.url`.
    pub mqtt: Option<BridgeSettings>,
    /// The sled store.
    pub store: StoreConfig,
    /// Where object models and device profiles are read from.
    pub models: ModelDirs,
    /// The LwM2M server core: engine, registry, queue mode, reporting.
    pub server: ServerConfig,
    /// Admit endpoints without a credential over plain CoAP.
    pub allow_unknown_endpoints: bool,
    /// The bootstrap server; none when both its ports are 0.
    pub bootstrap: Option<BootstrapSettings>,
    /// Firmware and software updates.
    pub ota: OtaSettings,
    /// The local web console; none unless `http.enabled` or `http.listen`.
    pub http: Option<HttpSettings>,
}

/// The local web console.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// Who may log in.
    pub credentials: crate::console::Credentials,
    /// HTTP connections open at once.
    pub max_connections: usize,
    /// Browser sessions at once.
    pub max_sessions: usize,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// HTTPS with these key and certificate files (made in the directory
    /// when none are configured); none: plain HTTP.
    pub tls: Option<(crate::dtls::identity::Files, PathBuf)>,
}

/// Firmware and software updates.
#[derive(Debug, Clone)]
pub struct OtaSettings {
    /// The machine's limits and timers.
    pub core: crate::ota::OtaConfig,
    /// The image directory.
    pub dir: PathBuf,
    /// Bytes it may hold.
    pub max_store_bytes: u64,
    /// The host in pull URLs (`dtls.server_host`, else `coap.bind`, else
    /// the primary address).
    pub host: String,
}

/// The bootstrap server's listeners and core.
#[derive(Debug, Clone)]
pub struct BootstrapSettings {
    /// The plain listener, if on.
    pub listen: Option<Listen>,
    /// The DTLS listener, if on (it shares the server's key and certificate).
    pub dtls: Option<DtlsListen>,
    /// The core: engine, stall timeout, server URI parts.
    pub core: crate::bootstrap::BootstrapConfig,
}

/// A UDP listener.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Address and port to bind (port 0: any free port).
    pub addr: SocketAddr,
    /// Receive and send buffer asked of the kernel, bytes.
    pub socket_buffer: usize,
    /// Largest datagram accepted.
    pub max_datagram: usize,
    /// Datagrams/s one source may send while the receive queue is behind (0: unlimited).
    pub source_rate: u32,
}

/// CoAP over DTLS.
#[derive(Debug, Clone)]
pub struct DtlsListen {
    /// Its UDP listener.
    pub listen: Listen,
    /// Session limits, timers and cipher suites.
    pub session: crate::dtls::Settings,
    /// Configured key, certificate and trust store files.
    pub files: crate::dtls::identity::Files,
    /// Where a key and certificate made on first start are kept.
    pub dir: PathBuf,
}

/// The control socket.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Socket path.
    pub path: PathBuf,
    /// Connections open at once.
    pub max_connections: usize,
    /// Requests in flight on one connection.
    pub max_in_flight: usize,
}

/// The northbound bridge.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Broker connection.
    pub broker: crate::northbound::MqttSettings,
    /// Store-and-forward queue bound, bytes.
    pub max_queue_bytes: u64,
    /// Largest telemetry or attributes message built from one batch, bytes.
    pub max_batch_bytes: usize,
}

/// Model and profile directories.
#[derive(Debug, Clone)]
pub struct ModelDirs {
    /// System models, read on top of the built-in ones.
    pub system: PathBuf,
    /// Site models that `model import` added.
    pub site: PathBuf,
    /// Device profiles read at start.
    pub profiles: PathBuf,
}

impl TryFrom<Config> for Settings {
    type Error = ConfigError;

    fn try_from(c: Config) -> Result<Settings, ConfigError> {
        c.resolve()
    }
}

impl Config {
    /// Resolves the sections into each part's settings, checking what a
    /// part would otherwise refuse only once it starts.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        self.validate()?;
        let data_dir = self.data_dir();
        let listen = |port| Listen {
            addr: SocketAddr::new(self.coap.bind, port),
            socket_buffer: self.coap.socket_buffer_kb * 1024,
            max_datagram: self.coap.max_datagram,
            source_rate: self.coap.source_rate,
        };
        let dtls = if self.dtls.enabled {
            Some(DtlsListen {
                listen: listen(self.dtls.port),
                session: self.dtls_settings()?,
                files: self.dtls_files(),
                dir: data_dir.join("dtls"),
            })
        } else {
            None
        };
        let mqtt = self.mqtt_settings()?.map(|broker| BridgeSettings {
            broker,
            max_queue_bytes: self.mqtt.max_queue_mb << 20,
            max_batch_bytes: self.mqtt.max_batch_kb << 10,
        });
        let b = &self.bootstrap;
        let bs_dtls = match &dtls {
            Some(d) if b.dtls_port != 0 => Some(DtlsListen {
                listen: listen(b.dtls_port),
                ..d.clone()
            }),
            _ => None,
        };
        let bootstrap = if b.port == 0 && bs_dtls.is_none() {
            None
        } else {
            Some(BootstrapSettings {
                listen: (b.port != 0).then(|| listen(b.port)),
                dtls: bs_dtls,
                core: crate::bootstrap::BootstrapConfig {
                    coap: self.server().coap,
                    stall_timeout: Duration::from_secs(b.stall_timeout_s.max(1)),
                    max_sessions: b.max_sessions,
                    server_host: self.server_host()?,
                    coap_port: self.coap.port,
                    dtls_port: self.dtls.enabled.then_some(self.dtls.port),
                    host_override: match &b.server_host {
                        Some(h) if !name_ok(h) => {
                            return Err(ConfigError(format!(
                                "bootstrap.server_host = {h:?}: a host name or an IP address"
                            )))
                        }
                        h => h.clone(),
                    },
                    server_public_key: Vec::new(),
                    server_certificate: Vec::new(),
                },
            })
        };
        let o = &self.ota;
        let ota = OtaSettings {
            core: crate::ota::OtaConfig {
                max_concurrent: o.max_concurrent,
                stall_timeout: Duration::from_secs(o.stall_timeout_s),
                retries: o.retries,
                poll_interval: Duration::from_secs(o.poll_interval_s),
                require_version: o.require_version,
                // Set by the runtime once the ports are bound.
                pull_plain: None,
                pull_secure: None,
            },
            host: self.server_host()?,
            dir: self.data_dir().join("ota"),
            max_store_bytes: o.max_store_bytes,
        };
        let http = match self.http.listen_addr() {
            Some(listen) => Some(HttpSettings {
                listen,
                credentials: self.http_credentials()?,
                max_connections: self.http.max_connections,
                max_sessions: self.http.max_sessions,
                session_idle: Duration::from_secs(self.http.session_idle_s),
                tls: self
                    .http
                    .tls
                    .then(|| (self.dtls_files(), self.data_dir().join("dtls"))),
            }),
            None => None,
        };
        Ok(Settings {
            bootstrap,
            ota,
            http,
            coap: listen(self.coap.port),
            dtls,
            control: ControlSettings {
                path: self.control_socket(),
                max_connections: self.control.max_connections,
                max_in_flight: self.control.max_in_flight,
            },
            mqtt,
            store: self.store(),
            models: ModelDirs {
                system: self.models.dir.clone(),
                site: self.site_models_dir(),
                profiles: self.models.profiles_dir.clone(),
            },
            server: self.server(),
            allow_unknown_endpoints: self.registration.allow_unknown_endpoints,
            data_dir,
        })
    }

    /// DTLS session settings, checked.
    pub fn dtls_settings(&self) -> Result<crate::dtls::Settings, ConfigError> {
        let d = &self.dtls;
        let mut suites = Vec::new();
        for name in &d.ciphersuites {
            match crate::dtls::mbed::suite_id(name) {
                Some(id) => suites.push(id),
                None => {
                    return Err(ConfigError(format!(
                        "dtls.ciphersuites: {name:?} is not a cipher suite this build has (IANA names, e.g. TLS_PSK_WITH_AES_128_CCM_8)"
                    )))
                }
            }
        }
        if d.enabled && suites.is_empty() {
            return Err(ConfigError("dtls.ciphersuites is empty".into()));
        }
        if d.max_sessions == 0 || d.max_handshakes == 0 || d.idle_timeout_s == 0 {
            return Err(ConfigError(
                "dtls.max_sessions, max_handshakes and idle_timeout_s must be at least 1".into(),
            ));
        }
        if d.handshake_timeout_min_ms == 0
            || d.handshake_timeout_max_ms < d.handshake_timeout_min_ms
        {
            return Err(ConfigError(
                "dtls.handshake_timeout_min_ms must be above 0 and at most handshake_timeout_max_ms".into(),
            ));
        }
        Ok(crate::dtls::Settings {
            suites,
            max_sessions: d.max_sessions,
            max_handshakes: d.max_handshakes,
            idle_timeout: Duration::from_secs(d.idle_timeout_s),
            handshake_timeout: (
                Duration::from_millis(d.handshake_timeout_min_ms),
                Duration::from_millis(d.handshake_timeout_max_ms),
            ),
        })
    }

    /// The host devices dial: `dtls.server_host`, else `coap.bind` when it
    /// is one address, else the first non-loopback IPv4 address, else the
    /// host name. The certificate's CN and the bootstrap server's URIs.
    pub fn server_host(&self) -> Result<String, ConfigError> {
        let host = match &self.dtls.server_host {
            Some(h) => h.clone(),
            None if !self.coap.bind.is_unspecified() => self.coap.bind.to_string(),
            None => primary_address().unwrap_or_else(host_name),
        };
        if !name_ok(&host) {
            return Err(ConfigError(format!(
                "dtls.server_host = {host:?}: a host name or an IP address"
            )));
        }
        Ok(host)
    }

    /// The names of the certificate made when no `dtls.cert_file` is set.
    pub fn cert_names(&self) -> Result<crate::dtls::identity::CertNames, ConfigError> {
        let d = &self.dtls;
        let host = self.server_host()?;
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        for san in &d.cert_san {
            match san.parse::<std::net::IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) if name_ok(san) && !san.contains(':') => dns.push(san.clone()),
                Err(_) => {
                    return Err(ConfigError(format!(
                        "dtls.cert_san: {san:?} is neither a DNS name nor an IP address"
                    )))
                }
            }
        }
        Ok(crate::dtls::identity::CertNames { host, dns, ips })
    }

    /// Where the gateway's DTLS key, certificate and trust store come from.
    pub fn dtls_files(&self) -> crate::dtls::identity::Files {
        crate::dtls::identity::Files {
            names: self.cert_names().unwrap_or_default(),
            certificate: self.dtls.cert_file.clone(),
            key: self.dtls.key_file.clone(),
            trust_store: self.dtls.ca_file.clone(),
        }
    }

    /// The DTLS listening address.
    pub fn dtls_addr(&self) -> SocketAddr {
        SocketAddr::new(self.coap.bind, self.dtls.port)
    }

    /// The CoAP listening address.
    pub fn coap_addr(&self) -> SocketAddr {
        SocketAddr::new(self.coap.bind, self.coap.port)
    }

    /// Engine and registry settings.
    pub fn server(&self) -> ServerConfig {
        let c = &self.coap;
        ServerConfig {
            coap: coap::Config {
                ack_timeout: Duration::from_millis(c.ack_timeout_ms),
                ack_random_factor: c.ack_random_factor,
                max_retransmit: c.max_retransmit,
                nstart: c.nstart,
                exchange_lifetime: Duration::from_secs(c.exchange_lifetime_s),
                non_lifetime: Duration::from_secs(c.non_lifetime_s),
                piggyback_window: Duration::from_millis(c.piggyback_ms),
                response_timeout: Duration::from_secs(c.response_timeout_s),
                block_size: c.block_size,
                max_body_size: c.max_body_bytes,
                max_dedup: c.max_dedup,
                max_incoming: c.max_incoming,
                max_exchanges: c.max_exchanges,
                max_observations: c.max_observations,
                max_queue_per_peer: c.max_queue_per_peer,
                max_peers: c.max_peers,
                max_block_states: c.max_block_transfers,
                stream_block1: Vec::new(),
            },
            max_registrations: self.registration.max_registrations,
            expiry_grace: Duration::from_secs(self.registration.expiry_grace_s),
            queue: crate::server::QueueConfig {
                awake_window: Duration::from_secs(self.queue.awake_window_s),
                max_per_device: self.queue.max_per_device,
                ttl: Duration::from_secs(self.queue.request_ttl_s),
            },
            max_reports: self.reporting.max_buffered_reports,
        }
    }

    /// The MQTT bridge settings, or none when `mqtt.url` is empty.
    pub fn mqtt_settings(&self) -> Result<Option<crate::northbound::MqttSettings>, ConfigError> {
        let m = &self.mqtt;
        if m.url.is_empty() {
            return Ok(None);
        }
        let (host, port, tls) =
            crate::northbound::parse_url(&m.url).map_err(|e| ConfigError(e.0))?;
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| ConfigError(format!("mqtt.{what} {}: {e}", p.display())))
        };
        let tls = if tls {
            let ca = m
                .ca_file
                .as_deref()
                .map(|p| read("ca_file", p))
                .transpose()?;
            let client_auth = match (&m.client_cert_file, &m.client_key_file) {
                (Some(c), Some(k)) => {
                    Some((read("client_cert_file", c)?, read("client_key_file", k)?))
                }
                (None, None) => None,
                _ => {
                    return Err(ConfigError(
                        "mqtt: client_cert_file and client_key_file go together".into(),
                    ))
                }
            };
            if let Some(ca) = &ca {
                if !String::from_utf8_lossy(ca).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError("mqtt.ca_file: not a PEM certificate".into()));
                }
            }
            Some(crate::northbound::TlsSettings { ca, client_auth })
        } else {
            if m.ca_file.is_some() || m.client_cert_file.is_some() {
                return Err(ConfigError(
                    "mqtt: ca_file and client certificates need an mqtts:// url".into(),
                ));
            }
            None
        };
        if m.access_token.is_some() && m.username.is_some() {
            return Err(ConfigError(
                "mqtt: give access_token or username, not both".into(),
            ));
        }
        Ok(Some(crate::northbound::MqttSettings {
            host,
            port,
            client_id: m.client_id.clone(),
            username: m.access_token.clone().or_else(|| m.username.clone()),
            password: m.password.clone(),
            keepalive: Duration::from_secs(m.keepalive_s),
            qos: m.qos,
            window: m.max_in_flight,
            tls,
            v5: match m.protocol.as_str() {
                "3.1.1" | "3" | "4" => false,
                "5" | "5.0" => true,
                other => {
                    return Err(ConfigError(format!(
                        "mqtt.protocol = {other:?}: \"3.1.1\" or \"5\""
                    )))
                }
            },
        }))
    }

    /// Store settings.
    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            dir: self.data_dir(),
            cache_bytes: self.store.cache_mb << 20,
            flush_every_ms: self.store.flush_every_ms,
        }
    }
}

/// A host name or an IP address as a certificate name or URI host.
fn name_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*' | '_'))
}

/// The first IPv4 address of an interface that is up and not loopback:
/// on a site gateway, the address devices on the LAN dial.
fn primary_address() -> Option<String> {
    let mut found = None;
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut p = list;
        while !p.is_null() {
            let a = &*p;
            let up = a.ifa_flags & (libc::IFF_UP as u32) != 0;
            let lo = a.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0;
            if up && !lo && !a.ifa_addr.is_null() && (*a.ifa_addr).sa_family as i32 == libc::AF_INET
            {
                let sin = &*(a.ifa_addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_link_local() {
                    found = Some(ip.to_string());
                    break;
                }
            }
            p = a.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// This machine's host name, else the old fixed CN.
fn host_name() -> String {
    let mut b = [0u8; 256];
    // SAFETY: gethostname writes at most b.len() bytes into b.
    let r = unsafe { libc::gethostname(b.as_mut_ptr() as *mut libc::c_char, b.len()) };
    let n = b.iter().position(|c| *c == 0).unwrap_or(0);
    match std::str::from_utf8(&b[..n]) {
        Ok(h) if r == 0 && !h.is_empty() => h.to_string(),
        _ => "lwm2m-gw".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_off_until_enabled_and_refused_beyond_loopback_without_credentials() {
        assert!(Config::from_toml("")
            .unwrap()
            .resolve()
            .unwrap()
            .http
            .is_none());
        let on = Config::from_toml("[http]\nenabled = true\n").unwrap();
        let h = on.resolve().unwrap().http.expect("on");
        assert_eq!(h.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(!h.credentials.any() && h.tls.is_none());
        let e = Config::from_toml("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
        assert!(e.0.contains("lwm2m-gw http passwd"), "{e:?}");
        let e =
            Config::from_toml("[http]\nlisten = \"[::]:8080\"\ntoken = \"short\"\n").unwrap_err();
        assert!(e.0.contains("16 characters"), "{e:?}");
        let e = Config::from_toml("[http]\npassword_hash = \"plain\"\n").unwrap_err();
        assert!(e.0.contains("http.password_hash"), "{e:?}");
        let ok = Config::from_toml(
            "[http]\nlisten = \"0.0.0.0:8443\"\ntoken = \"0123456789abcdef\"\ntls = true\n",
        )
        .unwrap();
        let h = ok.resolve().unwrap().http.expect("on");
        assert!(h.credentials.any());
        assert!(h.tls.expect("https").1.ends_with("dtls"));
    }

    #[test]
    fn resolving_gives_each_part_its_settings() {
        let c = Config::from_toml(
            "[coap]\nport = 6000\nbind = \"127.0.0.1\"\nsocket_buffer_kb = 8\n[dtls]\nport = 6001\n[control]\nsocket = \"/run/x.sock\"\n[store]\ndata_dir = \"/var/lib/x\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\nmax_queue_mb = 2\nmax_batch_kb = 3\n",
        )
        .unwrap();
        let s = c.resolve().unwrap();
        assert_eq!(s.coap.addr, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(s.coap.socket_buffer, 8192);
        let d = s.dtls.expect("dtls on by default");
        assert_eq!(d.listen.addr, "127.0.0.1:6001".parse().unwrap());
        assert_eq!(d.dir, PathBuf::from("/var/lib/x/dtls"));
        assert_eq!(s.control.path, PathBuf::from("/run/x.sock"));
        assert_eq!(s.models.site, PathBuf::from("/var/lib/x/models"));
        let m = s.mqtt.expect("a bridge with a url");
        assert_eq!(
            (m.broker.port, m.max_queue_bytes, m.max_batch_bytes),
            (1884, 2 << 20, 3 << 10)
        );
    }

    #[test]
    fn parts_that_are_off_resolve_to_none() {
        let c = Config::from_toml("[dtls]\nenabled = false\n").unwrap();
        let s = c.resolve().unwrap();
        assert!(s.dtls.is_none() && s.mqtt.is_none());
    }
}
