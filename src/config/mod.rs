//! Gateway configuration: embedded defaults, a TOML file, command-line overrides,
//! resolved once into the typed [`Settings`] each part is built from.

mod settings;

pub use settings::*;

use crate::coap;
use crate::server::ServerConfig;
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The whole configuration. Every field has a default, so an empty file
/// (or none) is a working gateway.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// CoAP transport.
    pub coap: CoapSection,
    /// Registration interface.
    pub registration: RegistrationSection,
    /// Persistent state.
    pub store: StoreSection,
    /// Object models.
    pub models: ModelsSection,
    /// Local control socket.
    pub control: ControlSection,
    /// Queue mode (sleeping devices).
    pub queue: QueueSection,
    /// Reported values (observations and Send).
    pub reporting: ReportingSection,
    /// Northbound MQTT bridge.
    pub mqtt: MqttSection,
    /// DTLS for devices.
    pub dtls: DtlsSection,
    /// The bootstrap server.
    pub bootstrap: BootstrapSection,
    /// Firmware and software updates.
    pub ota: OtaSection,
    /// The local web console.
    pub http: HttpSection,
    /// How the gateway runs as a service.
    pub service: ServiceSection,
}

/// `[service]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSection {
    /// On SIGTERM or SIGINT the gateway finishes its turn, flushes the
    /// store and closes the MQTT session within this many seconds, else
    /// it exits anyway.
    pub stop_timeout_s: u64,
}

impl Default for ServiceSection {
    fn default() -> Self {
        ServiceSection { stop_timeout_s: 5 }
    }
}

/// `[http]`: the local web console, off unless `enabled` or `listen` is set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Serve the console, on `listen` or else [`DEFAULT_HTTP_LISTEN`].
    pub enabled: bool,
    /// Address and port to serve on; setting it switches the console on.
    pub listen: Option<std::net::SocketAddr>,
    /// The console password's salted hash (`lwm2m-gw http passwd` writes it).
    pub password_hash: Option<String>,
    /// A static token for scripts (`Authorization: Bearer`); also accepted
    /// at the login form.
    pub token: Option<String>,
    /// HTTP connections open at once.
    pub max_connections: usize,
    /// Browser sessions at once; past it the least recently used ends.
    pub max_sessions: usize,
    /// HTTPS with the gateway's certificate (the DTLS one: `dtls.cert_file`
    /// and `dtls.key_file`, or the pair made in `<data>/dtls`).
    pub tls: bool,
    /// A session ends after this long without a request.
    pub session_idle_s: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            enabled: false,
            listen: None,
            password_hash: None,
            token: None,
            max_connections: 32,
            max_sessions: 16,
            tls: false,
            session_idle_s: 3600,
        }
    }
}

/// Where the console listens when it is switched on without an address.
pub const DEFAULT_HTTP_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

impl HttpSection {
    /// Where the console listens, if it is on.
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.or(self.enabled.then_some(DEFAULT_HTTP_LISTEN))
    }
}

/// `[ota]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtaSection {
    /// Transfers at once; more wait QUEUED.
    pub max_concurrent: usize,
    /// An update that does not move for this long is retried.
    pub stall_timeout_s: u64,
    /// Retries (stalls, lost blocks, restarts) before an update fails.
    pub retries: u32,
    /// Longest pause between two reads of a device's update state.
    pub poll_interval_s: u64,
    /// Bytes the image store may hold (`<data_dir>/ota/`).
    pub max_store_bytes: u64,
    /// An update whose device reports success but another version than
    /// the image's ends FAILED, not UPDATED with the mismatch reported.
    pub require_version: bool,
}

impl Default for OtaSection {
    fn default() -> Self {
        OtaSection {
            max_concurrent: 4,
            stall_timeout_s: 60,
            retries: 3,
            poll_interval_s: 10,
            max_store_bytes: 256 << 20,
            require_version: false,
        }
    }
}

/// `[bootstrap]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapSection {
    /// UDP port of the plain bootstrap server (on `coap.bind`); 0: off.
    pub port: u16,
    /// UDP port of the DTLS bootstrap server; 0: off (also off when
    /// `dtls.enabled` is false).
    pub dtls_port: u16,
    /// A bootstrap whose device stays silent this long between two steps
    /// is recorded as failed.
    pub stall_timeout_s: u64,
    /// Bootstraps running at once; more get 5.03 and retry.
    pub max_sessions: usize,
    /// Host of the server URIs handed out; unset: the address each
    /// bootstrap request arrived on. Set it behind NAT, or to the DNS name
    /// the server certificate carries.
    pub server_host: Option<String>,
}

impl Default for BootstrapSection {
    fn default() -> Self {
        BootstrapSection {
            port: 5687,
            dtls_port: 5688,
            stall_timeout_s: 60,
            max_sessions: 1024,
            server_host: None,
        }
    }
}

/// `[dtls]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DtlsSection {
    /// Serve DTLS at all.
    pub enabled: bool,
    /// UDP port for CoAP over DTLS (bound on `coap.bind`).
    pub port: u16,
    /// Cipher suites by IANA name, in preference order.
    pub ciphersuites: Vec<String>,
    /// Sessions kept at most; when full the least recently heard goes.
    pub max_sessions: usize,
    /// Handshakes in progress at most.
    pub max_handshakes: usize,
    /// A session silent this long is dropped; the device handshakes again.
    pub idle_timeout_s: u64,
    /// First and last retransmission timeout of a handshake, ms.
    pub handshake_timeout_min_ms: u64,
    /// Last retransmission timeout; a handshake then gives up.
    pub handshake_timeout_max_ms: u64,
    /// Server certificate chain (PEM or DER); default: a self-signed one
    /// for the server key, kept in `<data>/dtls/`.
    pub cert_file: Option<PathBuf>,
    /// Server private key (PEM or DER); default: a P-256 key made on first
    /// start in `<data>/dtls/`, its public key logged for RPK provisioning.
    pub key_file: Option<PathBuf>,
    /// CA certificates device certificates must chain to (X.509 by CN).
    pub ca_file: Option<PathBuf>,
    /// The host devices dial, the CN of the certificate made when no
    /// `cert_file` is set; default `coap.bind` when it is one address, else
    /// the first non-loopback IPv4 address, else the host name.
    pub server_host: Option<String>,
    /// subjectAltName entries of that certificate, DNS names or IP
    /// addresses; none by default (Mbed TLS 2.x clients ignore the CN once
    /// a SAN is present).
    pub cert_san: Vec<String>,
}

impl Default for DtlsSection {
    fn default() -> Self {
        let s = crate::dtls::Settings::default();
        DtlsSection {
            enabled: true,
            port: 5686,
            ciphersuites: crate::dtls::DEFAULT_SUITES
                .iter()
                .map(|n| n.to_string())
                .collect(),
            max_sessions: s.max_sessions,
            max_handshakes: s.max_handshakes,
            idle_timeout_s: s.idle_timeout.as_secs(),
            handshake_timeout_min_ms: s.handshake_timeout.0.as_millis() as u64,
            handshake_timeout_max_ms: s.handshake_timeout.1.as_millis() as u64,
            cert_file: None,
            key_file: None,
            ca_file: None,
            server_host: None,
            cert_san: Vec::new(),
        }
    }
}

/// `[mqtt]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSection {
    /// Broker, `mqtt://host:port`; empty: no northbound bridge.
    pub url: String,
    /// MQTT client id.
    pub client_id: String,
    /// ThingsBoard gateway device access token (sent as the user name).
    pub access_token: Option<String>,
    /// User name, when not using an access token.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Keep-alive in seconds.
    pub keepalive_s: u64,
    /// QoS of uplink messages: 1 (at least once) or 0.
    pub qos: u8,
    /// Messages published and not yet acknowledged.
    pub max_in_flight: usize,
    /// Store-and-forward queue bound in MiB; the oldest messages go first.
    pub max_queue_mb: u64,
    /// Largest telemetry or attributes message built from one batch, KiB.
    pub max_batch_kb: usize,
    /// `mqtts://`: CA certificates (PEM) for the broker; default the system's.
    pub ca_file: Option<PathBuf>,
    /// `mqtts://`: client certificate (PEM), with `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// `mqtts://`: client private key (PEM).
    pub client_key_file: Option<PathBuf>,
    /// Protocol version: "3.1.1" or "5".
    pub protocol: String,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            url: String::new(),
            client_id: "lwm2m-gw".into(),
            access_token: None,
            username: None,
            password: None,
            keepalive_s: 30,
            qos: 1,
            max_in_flight: 1000,
            max_queue_mb: 64,
            max_batch_kb: 64,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            protocol: "3.1.1".into(),
        }
    }
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSection {
    /// Seconds a queue-mode device counts as awake after its last message.
    pub awake_window_s: u64,
    /// Requests held per sleeping device.
    pub max_per_device: usize,
    /// Seconds a held request may wait before it is dropped.
    pub request_ttl_s: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        let q = crate::server::QueueConfig::default();
        QueueSection {
            awake_window_s: q.awake_window.as_secs(),
            max_per_device: q.max_per_device,
            request_ttl_s: q.ttl.as_secs(),
        }
    }
}

/// `[reporting]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReportingSection {
    /// Decoded reports buffered for consumers; the oldest are dropped first.
    pub max_buffered_reports: usize,
}

impl Default for ReportingSection {
    fn default() -> Self {
        ReportingSection {
            max_buffered_reports: ServerConfig::default().max_reports,
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSection {
    /// Socket path; default `$RUNTIME_DIRECTORY/control.sock`, else
    /// `control.sock` in the data directory.
    pub socket: Option<PathBuf>,
    /// Control connections open at once.
    pub max_connections: usize,
    /// Requests in flight on one connection.
    pub max_in_flight: usize,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            socket: None,
            max_connections: 64,
            max_in_flight: 4096,
        }
    }
}

/// `[coap]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CoapSection {
    /// Address to bind; `::` is dual-stack IPv6 and IPv4.
    pub bind: IpAddr,
    /// UDP port for plain CoAP.
    pub port: u16,
    /// ACK_TIMEOUT in milliseconds.
    pub ack_timeout_ms: u64,
    /// ACK_RANDOM_FACTOR.
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u32,
    /// NSTART per device.
    pub nstart: usize,
    /// EXCHANGE_LIFETIME in seconds (message-ID memory).
    pub exchange_lifetime_s: u64,
    /// NON_LIFETIME in seconds.
    pub non_lifetime_s: u64,
    /// Time before an empty ACK is sent and the answer goes out separately.
    pub piggyback_ms: u64,
    /// How long a request to a device waits for a separate response.
    pub response_timeout_s: u64,
    /// Preferred block size (16 to 1024, power of two).
    pub block_size: usize,
    /// Largest body assembled from blocks.
    pub max_body_bytes: usize,
    /// Remembered message IDs.
    pub max_dedup: usize,
    /// Requests from devices being processed at once.
    pub max_incoming: usize,
    /// Requests to devices in flight or queued, all devices together.
    pub max_exchanges: usize,
    /// Observations kept, all devices together.
    pub max_observations: usize,
    /// Requests queued behind NSTART per device.
    pub max_queue_per_peer: usize,
    /// Devices with message-ID state.
    pub max_peers: usize,
    /// Block-wise transfers in progress.
    pub max_block_transfers: usize,
    /// Largest datagram accepted.
    pub max_datagram: usize,
    /// UDP socket receive and send buffer in KiB (capped by net.core.rmem_max).
    pub socket_buffer_kb: usize,
    /// Datagrams per second one source address (IP and port) may send
    /// while the gateway is behind; past it, its datagrams are dropped
    /// first. 0: no limit.
    pub source_rate: u32,
}

/// `[registration]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationSection {
    /// Most registrations kept; new endpoints beyond it get 5.03.
    pub max_registrations: usize,
    /// Seconds past a lifetime before a registration is dropped.
    pub expiry_grace_s: u64,
    /// Admit endpoints that have no credential (plain CoAP, default profile).
    /// Handy on a developer's first run; production configs set it false.
    pub allow_unknown_endpoints: bool,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// State directory; default `$STATE_DIRECTORY` or `./data`.
    pub data_dir: Option<PathBuf>,
    /// sled page cache in MiB.
    pub cache_mb: u64,
    /// sled background flush interval in milliseconds.
    pub flush_every_ms: u64,
}

/// `[models]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsSection {
    /// Directory of system models, read on top of the built-in ones.
    pub dir: PathBuf,
    /// Directory of device profiles (`*.toml`), read at start; profiles
    /// imported with `lwm2m-gw profile import` take precedence.
    pub profiles_dir: PathBuf,
}

impl Default for CoapSection {
    fn default() -> Self {
        let c = coap::Config::default();
        CoapSection {
            bind: IpAddr::from([0u16; 8]),
            port: 5685,
            ack_timeout_ms: c.ack_timeout.as_millis() as u64,
            ack_random_factor: c.ack_random_factor,
            max_retransmit: c.max_retransmit,
            nstart: c.nstart,
            exchange_lifetime_s: c.exchange_lifetime.as_secs(),
            non_lifetime_s: c.non_lifetime.as_secs(),
            piggyback_ms: c.piggyback_window.as_millis() as u64,
            response_timeout_s: c.response_timeout.as_secs(),
            block_size: c.block_size,
            max_body_bytes: c.max_body_size,
            max_dedup: c.max_dedup,
            max_incoming: c.max_incoming,
            max_exchanges: c.max_exchanges,
            max_observations: c.max_observations,
            max_queue_per_peer: c.max_queue_per_peer,
            max_peers: c.max_peers,
            max_block_transfers: c.max_block_states,
            max_datagram: 1500,
            socket_buffer_kb: 4096,
            source_rate: 1000,
        }
    }
}

impl Default for RegistrationSection {
    fn default() -> Self {
        let s = ServerConfig::default();
        RegistrationSection {
            max_registrations: s.max_registrations,
            expiry_grace_s: s.expiry_grace.as_secs(),
            allow_unknown_endpoints: true,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            data_dir: None,
            cache_mb: 16,
            flush_every_ms: 500,
        }
    }
}

impl Default for ModelsSection {
    fn default() -> Self {
        ModelsSection {
            dir: PathBuf::from("./models"),
            profiles_dir: PathBuf::from("./profiles"),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a TOML file; unknown keys are errors so typos do not pass silently.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim_end().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The console's credentials, checked: a broken hash, an empty token,
    /// or listening beyond loopback with neither, is refused here.
    pub fn http_credentials(&self) -> Result<crate::console::Credentials, ConfigError> {
        let h = &self.http;
        let password = match &h.password_hash {
            Some(p) => Some(
                crate::console::auth::PasswordHash::parse(p)
                    .map_err(|e| ConfigError(format!("http.{e}")))?,
            ),
            None => None,
        };
        if h.token.as_deref().is_some_and(|t| t.trim().len() < 16) {
            return Err(ConfigError(
                "http.token must be at least 16 characters".into(),
            ));
        }
        let creds = crate::console::Credentials {
            password,
            token: h.token.clone(),
        };
        if let Some(addr) = h.listen_addr() {
            if !addr.ip().is_loopback() && !creds.any() {
                return Err(ConfigError(format!(
                    "http.listen = {addr} reaches beyond this machine, and no console \
                     credentials are set: run `lwm2m-gw http passwd` (or set http.token), \
                     or listen on 127.0.0.1"
                )));
            }
        }
        Ok(creds)
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.coap;
        let bad = |m: String| Err(ConfigError(m));
        if !(16..=1024).contains(&c.block_size) || !c.block_size.is_power_of_two() {
            return bad(format!(
                "coap.block_size = {}: must be a power of two from 16 to 1024",
                c.block_size
            ));
        }
        if !(c.ack_random_factor >= 1.0 && c.ack_random_factor <= 10.0) {
            return bad(format!(
                "coap.ack_random_factor = {}: must be from 1.0 to 10.0",
                c.ack_random_factor
            ));
        }
        if c.ack_timeout_ms == 0 || c.max_retransmit > 20 {
            return bad(
                "coap.ack_timeout_ms must be above 0 and coap.max_retransmit at most 20".into(),
            );
        }
        for (name, v) in [
            ("coap.nstart", c.nstart),
            ("coap.max_dedup", c.max_dedup),
            ("coap.max_incoming", c.max_incoming),
            ("coap.max_exchanges", c.max_exchanges),
            ("coap.max_observations", c.max_observations),
            ("queue.max_per_device", self.queue.max_per_device),
            (
                "reporting.max_buffered_reports",
                self.reporting.max_buffered_reports,
            ),
            ("coap.max_peers", c.max_peers),
            ("bootstrap.max_sessions", self.bootstrap.max_sessions),
            ("ota.max_concurrent", self.ota.max_concurrent),
            ("ota.stall_timeout_s", self.ota.stall_timeout_s as usize),
            ("ota.poll_interval_s", self.ota.poll_interval_s as usize),
            (
                "service.stop_timeout_s",
                self.service.stop_timeout_s as usize,
            ),
            ("coap.max_block_transfers", c.max_block_transfers),
            (
                "registration.max_registrations",
                self.registration.max_registrations,
            ),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if !(64..=65_507).contains(&c.max_datagram) {
            return bad(format!(
                "coap.max_datagram = {}: must be from 64 to 65507",
                c.max_datagram
            ));
        }
        if c.max_body_bytes < c.block_size {
            return bad("coap.max_body_bytes must be at least coap.block_size".into());
        }
        self.http_credentials()?;
        if self.http.max_connections == 0
            || self.http.max_sessions == 0
            || self.http.session_idle_s == 0
        {
            return bad(
                "http.max_connections, http.max_sessions and http.session_idle_s must be at least 1"
                    .into(),
            );
        }
        if self.control.max_connections == 0 || self.control.max_in_flight == 0 {
            return bad(
                "control.max_connections and control.max_in_flight must be at least 1".into(),
            );
        }
        if !self.mqtt.url.is_empty() {
            self.mqtt_settings()?;
        }
        if self.mqtt.qos > 1 {
            return bad(format!("mqtt.qos = {}: must be 0 or 1", self.mqtt.qos));
        }
        if self.mqtt.max_in_flight == 0
            || self.mqtt.max_queue_mb == 0
            || self.mqtt.max_batch_kb == 0
        {
            return bad(
                "mqtt.max_in_flight, max_queue_mb and max_batch_kb must be at least 1".into(),
            );
        }
        self.dtls_settings()?;
        self.cert_names()?;
        if self.store.cache_mb == 0 {
            return bad("store.cache_mb must be at least 1".into());
        }
        Ok(())
    }

    /// The state directory: the configured one, else `$STATE_DIRECTORY`
    /// (its first entry, as systemd may list several), else `./data`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.store.data_dir {
            return d.clone();
        }
        match std::env::var("STATE_DIRECTORY") {
            Ok(s) if !s.is_empty() => PathBuf::from(s.split(':').next().unwrap_or(&s)),
            _ => PathBuf::from("./data"),
        }
    }

    /// The control socket path.
    pub fn control_socket(&self) -> PathBuf {
        match &self.control.socket {
            Some(p) => p.clone(),
            None => default_control_socket(&self.data_dir()),
        }
    }

    /// Where `model import` keeps site models.
    pub fn site_models_dir(&self) -> PathBuf {
        self.data_dir().join("models")
    }
}

/// The default control socket: `$RUNTIME_DIRECTORY/control.sock` under
/// systemd, else `control.sock` in the data directory.
pub fn default_control_socket(data_dir: &Path) -> PathBuf {
    match std::env::var("RUNTIME_DIRECTORY") {
        Ok(s) if !s.is_empty() => {
            PathBuf::from(s.split(':').next().unwrap_or(&s)).join("control.sock")
        }
        _ => data_dir.join("control.sock"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.coap_addr().port(), 5685);
        assert!(c.coap.bind.is_unspecified());
    }

    #[test]
    fn file_values_are_applied() {
        let c = Config::from_toml(
            "[coap]\nport = 6000\nbind = \"127.0.0.1\"\nmax_retransmit = 2\n[registration]\nexpiry_grace_s = 1\n[store]\ndata_dir = \"/var/lib/x\"\ncache_mb = 4\n[models]\ndir = \"/usr/share/m\"\n",
        )
        .unwrap();
        assert_eq!(c.coap_addr(), "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.server().coap.max_retransmit, 2);
        assert_eq!(c.store().cache_bytes, 4 << 20);
        assert_eq!(c.data_dir(), PathBuf::from("/var/lib/x"));
        assert_eq!(c.site_models_dir(), PathBuf::from("/var/lib/x/models"));
    }

    #[test]
    fn typos_and_bad_values_are_clear_errors() {
        let e = Config::from_toml("[coap]\nprot = 1\n").unwrap_err();
        assert!(e.0.contains("prot"), "{e}");
        let e = Config::from_toml("[coap]\nport = \"x\"\n").unwrap_err();
        assert!(e.0.contains("port"), "{e}");
        let e = Config::from_toml("[coap]\nblock_size = 100\n").unwrap_err();
        assert!(e.0.contains("block_size"), "{e}");
        assert!(Config::from_toml("[coap]\nack_random_factor = 0.5\n").is_err());
        assert!(Config::from_toml("[registration]\nmax_registrations = 0\n").is_err());
        assert!(Config::from_toml("not toml [").is_err());
        let e = Config::from_file(Path::new("/nonexistent.toml")).unwrap_err();
        assert!(e.0.starts_with("/nonexistent.toml"));
    }
}
