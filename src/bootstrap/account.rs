//! The LwM2M server account a device is handed: its security (object 0)
//! and server (object 1) instances, their encodings, the Bootstrap-Pack,
//! and the credential the LwM2M server keeps for it.

use super::entry::{Entry, ServerSecurity};
use super::{BootstrapConfig, KeySource};
use crate::credentials::{Credential, Security};
use crate::lwm2m::format::{self, ContentFormat};
use crate::lwm2m::link::Link;
use crate::lwm2m::node::{FormatError, Instance, Node, Resource, Value};
use crate::lwm2m::Path;
use std::collections::VecDeque;
use std::net::IpAddr;

/// Security mode numbers of resource /0/x/2.
const MODE_PSK: i64 = 0;
const MODE_RPK: i64 = 1;
const MODE_X509: i64 = 2;
const MODE_NOSEC: i64 = 3;

/// Bytes of a generated PSK: 128 bits.
pub const PSK_BYTES: usize = 16;

/// One account, with freshly generated key material where it needs some.
#[derive(Debug, Clone)]
pub struct Account {
    uri: String,
    security: ServerSecurity,
    /// /0/x/3: PSK identity, device public key or device certificate.
    identity: Vec<u8>,
    /// /0/x/4: the gateway's public key (RPK) or certificate (X.509).
    server_key: Vec<u8>,
    /// /0/x/5: PSK or the device's private key.
    key: Vec<u8>,
    short_server_id: u16,
    lifetime: u32,
    binding: String,
}

impl Account {
    /// The account for `entry`; a PSK account gets a new random key.
    /// `local` is the gateway address the bootstrap request arrived on,
    /// when the shell knows it.
    pub fn new(
        entry: &Entry,
        cfg: &BootstrapConfig,
        keys: &mut KeySource,
        local: Option<IpAddr>,
    ) -> Account {
        let security = entry.server_security.clone();
        let uri = entry.server_uri.clone().unwrap_or_else(|| {
            let host = uri_host(cfg, local);
            match (security.is_secure(), cfg.dtls_port) {
                (true, Some(p)) => format!("coaps://{host}:{p}"),
                (true, None) => format!("coaps://{host}:5684"),
                (false, _) => format!("coap://{host}:{}", cfg.coap_port),
            }
        });
        let (identity, server_key, key) = match &security {
            ServerSecurity::NoSec => (Vec::new(), Vec::new(), Vec::new()),
            ServerSecurity::Psk => {
                let mut key = vec![0u8; PSK_BYTES];
                keys(&mut key);
                // One identity, one endpoint: the endpoint name is unique.
                (entry.endpoint.as_bytes().to_vec(), Vec::new(), key)
            }
            ServerSecurity::Rpk {
                public_key,
                private_key,
            } => (
                public_key.clone(),
                cfg.server_public_key.clone(),
                private_key.clone(),
            ),
            ServerSecurity::X509 {
                certificate,
                private_key,
            } => (
                certificate.clone(),
                cfg.server_certificate.clone(),
                private_key.clone(),
            ),
        };
        Account {
            uri,
            security,
            identity,
            server_key,
            key,
            short_server_id: entry.short_server_id,
            lifetime: entry.lifetime,
            binding: entry.binding.clone(),
        }
    }

    /// The server URI handed out.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The LwM2M Server Security instance (object 0).
    pub fn security_instance(&self) -> Instance {
        let mode = match self.security {
            ServerSecurity::NoSec => MODE_NOSEC,
            ServerSecurity::Psk => MODE_PSK,
            ServerSecurity::Rpk { .. } => MODE_RPK,
            ServerSecurity::X509 { .. } => MODE_X509,
        };
        [
            (0, Value::String(self.uri.clone())),
            (1, Value::Boolean(false)),
            (2, Value::Integer(mode)),
            (3, Value::Opaque(self.identity.clone())),
            (4, Value::Opaque(self.server_key.clone())),
            (5, Value::Opaque(self.key.clone())),
            (10, Value::Integer(self.short_server_id as i64)),
        ]
        .into_iter()
        .map(|(r, v)| (r, Resource::Single(v)))
        .collect()
    }

    /// The LwM2M Server instance (object 1).
    pub fn server_instance(&self) -> Instance {
        [
            (0, Value::Integer(self.short_server_id as i64)),
            (1, Value::Integer(self.lifetime as i64)),
            (6, Value::Boolean(true)),
            (7, Value::String(self.binding.clone())),
        ]
        .into_iter()
        .map(|(r, v)| (r, Resource::Single(v)))
        .collect()
    }

    /// The whole configuration as one Bootstrap-Pack payload.
    pub fn pack(&self, cf: ContentFormat, extra: &[(Path, Value)]) -> Result<Vec<u8>, FormatError> {
        let mut entries = Node::Instance(self.security_instance()).entries(&path(0, 1));
        entries.extend(Node::Instance(self.server_instance()).entries(&path(1, 0)));
        entries.extend_from_slice(extra);
        format::encode_entries(cf, &entries)
    }

    /// What the LwM2M server must accept from this device afterwards.
    pub fn credential(&self, entry: &Entry) -> Credential {
        let security = match &self.security {
            ServerSecurity::NoSec => Security::NoSec,
            ServerSecurity::Psk => Security::Psk {
                identity: String::from_utf8_lossy(&self.identity).into_owned(),
                key: self.key.clone(),
            },
            ServerSecurity::Rpk { public_key, .. } => Security::Rpk {
                public_key: public_key.clone(),
            },
            ServerSecurity::X509 { certificate, .. } => Security::X509 {
                certificate: Some(certificate.clone()),
            },
        };
        Credential {
            endpoint: entry.endpoint.clone(),
            profile: entry.profile.clone(),
            security,
        }
    }
}

/// The host of a built server URI: the address the request arrived on
/// (a multi-homed gateway answers on the one the device reaches), unless
/// the operator named a host; a link-local or wildcard address says
/// nothing a device can dial, so the configured host is used then.
fn uri_host(cfg: &BootstrapConfig, local: Option<IpAddr>) -> String {
    let local = local.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    });
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_link_local(),
        // fe80::/10 would need a zone the URI cannot carry.
        IpAddr::V6(a) => !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80,
    };
    let host = match (&cfg.host_override, local.filter(usable)) {
        (Some(h), _) => h.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => cfg.server_host.clone(),
    };
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    }
}

fn path(object: u16, iid: u16) -> Path {
    Path {
        instance: Some(iid),
        ..Path::object(object)
    }
}

/// Formats to write in, in order: the one the device named with `pct`,
/// then TLV (every 1.0 and 1.1 client reads it), SenML CBOR and SenML JSON.
pub fn formats(pct: Option<ContentFormat>) -> VecDeque<ContentFormat> {
    let mut v = VecDeque::new();
    if let Some(
        f @ (ContentFormat::Tlv
        | ContentFormat::SenmlCbor
        | ContentFormat::SenmlJson
        | ContentFormat::Lwm2mCbor),
    ) = pct
    {
        v.push_back(f);
    }
    for f in [
        ContentFormat::Tlv,
        ContentFormat::SenmlCbor,
        ContentFormat::SenmlJson,
    ] {
        if !v.contains(&f) {
            v.push_back(f);
        }
    }
    v
}

/// The security instance id to write: the lowest one the device's
/// Bootstrap-Discover of /0 does not list (what is left after the
/// deletes is the bootstrap account itself), 1 at the least.
pub fn free_security_instance(links: &[Link]) -> u16 {
    let used: Vec<u16> = links
        .iter()
        .filter_map(|l| {
            let p = l.target.trim_start_matches('/');
            let mut it = p.split('/');
            match (it.next(), it.next(), it.next()) {
                (Some("0"), Some(i), None) => i.parse().ok(),
                _ => None,
            }
        })
        .collect();
    (1..=u16::MAX).find(|i| !used.contains(i)).unwrap_or(1)
}
