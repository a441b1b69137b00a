//! The options the CLI's subcommands share, and the configuration they
//! make with the configuration file.

use crate::config::{Config, ConfigError};
use std::path::PathBuf;

/// Options shared by the subcommands that read the configuration.
#[derive(Debug, Default)]
pub(super) struct Common {
    pub(super) config: Option<PathBuf>,
    pub(super) coap_port: Option<u16>,
    pub(super) dtls_port: Option<u16>,
    pub(super) bootstrap_port: Option<u16>,
    pub(super) bootstrap_dtls_port: Option<u16>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) models_dir: Option<PathBuf>,
    pub(super) control_socket: Option<PathBuf>,
    pub(super) mqtt_url: Option<String>,
    pub(super) http_listen: Option<std::net::SocketAddr>,
    pub(super) json: bool,
    pub(super) timeout_s: Option<u64>,
    pub(super) wait: bool,
    pub(super) count: Option<u64>,
    pub(super) cred: crate::credentials::CredentialSpec,
    pub(super) bs: crate::bootstrap::EntrySpec,
    pub(super) ota: super::ota_cli::OtaFlags,
}

impl Common {
    /// The configuration file (or the defaults) with the flags on top.
    pub(super) fn config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(f) => Config::from_file(f)?,
            None => Config::default(),
        };
        if let Some(p) = self.dtls_port {
            c.dtls.port = p;
        }
        if let Some(p) = self.coap_port {
            c.coap.port = p;
        }
        if let Some(p) = self.bootstrap_port {
            c.bootstrap.port = p;
        }
        if let Some(p) = self.bootstrap_dtls_port {
            c.bootstrap.dtls_port = p;
        }
        if let Some(d) = &self.data_dir {
            c.store.data_dir = Some(d.clone());
        }
        if let Some(d) = &self.models_dir {
            c.models.dir = d.clone();
        }
        if let Some(p) = &self.control_socket {
            c.control.socket = Some(p.clone());
        }
        if let Some(u) = &self.mqtt_url {
            c.mqtt.url = u.clone();
        }
        if let Some(a) = self.http_listen {
            c.http.listen = Some(a);
        }
        c.validate()?;
        Ok(c)
    }
}
