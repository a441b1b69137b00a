//! Who may bootstrap and what each device is handed: bootstrap entries,
//! checked before anything is stored, and the state of each device's
//! latest bootstrap.

use crate::credentials::{Credential, CredentialError, CredentialSpec, Security};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use std::path::Path;

/// How the device will secure its connection to the LwM2M server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerSecurity {
    /// Plain CoAP.
    NoSec,
    /// DTLS with a PSK the gateway generates at each bootstrap.
    Psk,
    /// DTLS with a raw public key: the device's P-256 key pair, supplied
    /// with the entry.
    Rpk {
        /// DER SubjectPublicKeyInfo (resource /0/x/3).
        public_key: Vec<u8>,
        /// DER PKCS#8 private key, as LwM2M's E.1.1.2 asks (/0/x/5).
        private_key: Vec<u8>,
    },
    /// DTLS with a certificate: the device's certificate and its key.
    X509 {
        /// DER certificate (/0/x/3).
        certificate: Vec<u8>,
        /// DER PKCS#8 private key (/0/x/5).
        private_key: Vec<u8>,
    },
}

// Variants are only ever appended: the store holds entries in postcard,
// which numbers them.

impl std::fmt::Debug for ServerSecurity {
    // Never a private key in a log line or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mode())
    }
}

impl ServerSecurity {
    /// `nosec` or `psk`, as the CLI and profiles spell them (the modes that
    /// need no key material of the device's own).
    pub fn parse(s: &str) -> Result<ServerSecurity, CredentialError> {
        match s.to_ascii_lowercase().as_str() {
            "nosec" | "no_sec" => Ok(ServerSecurity::NoSec),
            "psk" => Ok(ServerSecurity::Psk),
            other => Err(CredentialError(format!(
                "server security {other:?}: give nosec or psk"
            ))),
        }
    }

    /// `NO_SEC`, `PSK`, `RPK` or `X509`.
    pub fn mode(&self) -> &'static str {
        match self {
            ServerSecurity::NoSec => "NO_SEC",
            ServerSecurity::Psk => "PSK",
            ServerSecurity::Rpk { .. } => "RPK",
            ServerSecurity::X509 { .. } => "X509",
        }
    }

    /// True for the modes that need DTLS.
    pub fn is_secure(&self) -> bool {
        !matches!(self, ServerSecurity::NoSec)
    }

    /// The account from `--server-security` and the device's key files
    /// (`--server-key`, `--server-cert`); with no mode named, the files
    /// given choose it.
    fn build(
        mode: Option<&str>,
        key: Option<&str>,
        cert: Option<&str>,
        base: &Path,
    ) -> Result<ServerSecurity, CredentialError> {
        let mode = match mode.map(str::to_ascii_lowercase) {
            Some(m) => m,
            None if cert.is_some() => "x509".into(),
            None if key.is_some() => "rpk".into(),
            None => "nosec".into(),
        };
        let read = |f: &str| {
            let p = base.join(f);
            std::fs::read(&p).map_err(|e| CredentialError(format!("{}: {e}", p.display())))
        };
        let pair = |f: &str| {
            crate::dtls::identity::device_key_pair(&read(f)?)
                .map_err(|e| CredentialError(format!("{f}: {e}")))
        };
        match (mode.as_str(), key, cert) {
            ("rpk", Some(k), None) => {
                let (public_key, private_key) = pair(k)?;
                if !public_key.starts_with(&P256_SPKI_PREFIX) {
                    return Err(CredentialError(format!(
                        "{k}: a raw-public-key account needs an EC P-256 key (the cipher suite \
                         LwM2M devices use with RPK)"
                    )));
                }
                Ok(ServerSecurity::Rpk {
                    public_key,
                    private_key,
                })
            }
            ("rpk", None, _) => Err(CredentialError(
                "a rpk server account needs --server-key FILE (the device's private key)".into(),
            )),
            ("x509", Some(k), Some(c)) => {
                let certificate = crate::credentials::certificate(&read(c)?)
                    .map_err(|e| CredentialError(format!("{c}: {e}")))?;
                let (public_key, private_key) = pair(k)?;
                if crate::dtls::identity::certificate_public_key(&certificate)
                    .map_err(|e| CredentialError(format!("{c}: {e}")))?
                    != public_key
                {
                    return Err(CredentialError(format!(
                        "{c} is not the certificate of the key in {k}"
                    )));
                }
                Ok(ServerSecurity::X509 {
                    certificate,
                    private_key,
                })
            }
            ("x509", _, _) => Err(CredentialError(
                "a x509 server account needs --server-cert FILE and --server-key FILE".into(),
            )),
            ("rpk", Some(_), Some(_)) => Err(CredentialError(
                "--server-cert is for a x509 server account, not rpk".into(),
            )),
            (m, None, None) => match ServerSecurity::parse(m) {
                Ok(s) => Ok(s),
                Err(_) => Err(CredentialError(format!(
                    "server security {m:?}: give nosec, psk, rpk (with --server-key) or x509 \
                     (with --server-cert and --server-key)"
                ))),
            },
            (m, _, _) => Err(CredentialError(format!(
                "--server-key and --server-cert are for rpk or x509 server accounts, not {m}"
            ))),
        }
    }
}

/// DER header of an EC P-256 SubjectPublicKeyInfo: id-ecPublicKey,
/// prime256v1, a 66-byte BIT STRING (an uncompressed point).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// One device the gateway bootstraps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Endpoint name.
    pub endpoint: String,
    /// The profile its LwM2M server credential gets.
    pub profile: String,
    /// How the device proves itself to the bootstrap server (NoSec: plain
    /// CoAP on the bootstrap port; the others: DTLS only).
    pub security: Security,
    /// What the device is told to use with the LwM2M server.
    pub server_security: ServerSecurity,
    /// The LwM2M server URI handed out; none: built from the address the
    /// bootstrap request reached.
    pub server_uri: Option<String>,
    /// Registration lifetime handed out, seconds.
    pub lifetime: u32,
    /// Binding handed out: `U` or `UQ`.
    pub binding: String,
    /// Short server id of the LwM2M server account.
    pub short_server_id: u16,
    /// What the user left out, for the profile's `[bootstrap]` defaults
    /// to fill when the entry is added.
    #[serde(default)]
    pub unset: Unset,
    /// Further Bootstrap-Writes from the profile, before Finish: path and
    /// value as JSON text, typed by the models when a run starts.
    #[serde(default)]
    pub writes: Vec<(String, String)>,
}

/// The entry fields a user did not give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unset {
    /// `lifetime`.
    pub lifetime: bool,
    /// `binding`.
    pub binding: bool,
    /// `server_security`.
    pub server_security: bool,
}

impl Entry {
    /// Fills what the user left out from the profile's `[bootstrap]`
    /// table (checked with the profile), then forgets what was left out.
    pub fn apply_defaults(&mut self, d: Option<&crate::profile::BootstrapSettings>) {
        if let Some(d) = d {
            if let (true, Some(l)) = (self.unset.lifetime, d.lifetime) {
                self.lifetime = l;
            }
            if let (true, Some(b)) = (self.unset.binding, &d.binding) {
                self.binding = b.clone();
            }
            if let (true, Some(s)) = (self.unset.server_security, &d.server_security) {
                if let Ok(s) = ServerSecurity::parse(s) {
                    self.server_security = s;
                }
            }
            self.writes = d
                .writes
                .iter()
                .map(|(p, v)| (p.clone(), v.0.clone()))
                .collect();
        }
        self.unset = Unset::default();
    }
}

impl Entry {
    /// JSON for listings; keys are never shown, only their size.
    pub fn to_json(&self) -> Json {
        let cred = Credential {
            endpoint: self.endpoint.clone(),
            profile: self.profile.clone(),
            security: self.security.clone(),
        }
        .to_json();
        json!({
            "endpoint": self.endpoint,
            "profile": self.profile,
            "bootstrapSecurity": cred,
            "serverSecurity": self.server_security.mode(),
            "serverUri": self.server_uri,
            "lifetime": self.lifetime,
            "binding": self.binding,
            "shortServerId": self.short_server_id,
        })
    }
}

/// A bootstrap entry as a user writes it: `bootstrap add` flags, one
/// `[[device]]` of a TOML import, or one CSV line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// Endpoint name.
    pub endpoint: String,
    /// Profile name (default: `default`).
    #[serde(default)]
    pub profile: Option<String>,
    /// Bootstrap PSK identity.
    #[serde(default)]
    pub psk_identity: Option<String>,
    /// Bootstrap PSK key, hex.
    #[serde(default)]
    pub psk_key: Option<String>,
    /// Bootstrap RPK: base64 DER SubjectPublicKeyInfo.
    #[serde(default)]
    pub rpk_key: Option<String>,
    /// Bootstrap X.509: the device certificate file.
    #[serde(default)]
    pub x509_cert: Option<String>,
    /// `nosec` (default), `psk`, `rpk` or `x509`.
    #[serde(default)]
    pub server_security: Option<String>,
    /// The device's private key for a rpk or x509 server account (PEM or
    /// DER file).
    #[serde(default)]
    pub server_key: Option<String>,
    /// The device's certificate for a x509 server account (PEM or DER file).
    #[serde(default)]
    pub server_cert: Option<String>,
    /// LwM2M server URI handed out.
    #[serde(default)]
    pub server_uri: Option<String>,
    /// Lifetime handed out, seconds (default 300).
    #[serde(default)]
    pub lifetime: Option<u32>,
    /// `U` (default) or `UQ`.
    #[serde(default)]
    pub binding: Option<String>,
}

/// A TOML import file: `[[device]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportFile {
    /// The entries.
    #[serde(default)]
    pub device: Vec<EntrySpec>,
}

/// Lifetime handed out when an entry names none.
pub const DEFAULT_LIFETIME: u32 = 300;

impl EntrySpec {
    /// Checks the spec and builds the entry; certificate files are read
    /// relative to `base`. The profile's existence is the caller's check.
    pub fn build(&self, base: &Path) -> Result<Entry, CredentialError> {
        let cred = CredentialSpec {
            endpoint: self.endpoint.clone(),
            profile: self.profile.clone(),
            psk_identity: self.psk_identity.clone(),
            psk_key: self.psk_key.clone(),
            rpk_key: self.rpk_key.clone(),
            x509_cert: self.x509_cert.clone(),
            x509: false,
        }
        .build(base)?;
        let ep = &self.endpoint;
        let server_security = ServerSecurity::build(
            self.server_security.as_deref(),
            self.server_key.as_deref(),
            self.server_cert.as_deref(),
            base,
        )
        .map_err(|e| CredentialError(format!("{ep}: {e}")))?;
        if let Some(uri) = &self.server_uri {
            check_uri(uri, &server_security).map_err(|e| CredentialError(format!("{ep}: {e}")))?;
        }
        let lifetime = self.lifetime.unwrap_or(DEFAULT_LIFETIME);
        if lifetime == 0 {
            return Err(CredentialError(format!(
                "{ep}: lifetime must be at least 1 s"
            )));
        }
        let binding = self.binding.clone().unwrap_or_else(|| "U".into());
        if !matches!(binding.as_str(), "U" | "UQ") {
            return Err(CredentialError(format!(
                "{ep}: binding {binding:?}: give U or UQ"
            )));
        }
        Ok(Entry {
            endpoint: cred.endpoint,
            profile: cred.profile,
            security: cred.security,
            server_security,
            server_uri: self.server_uri.clone(),
            lifetime,
            binding,
            short_server_id: 1,
            unset: Unset {
                lifetime: self.lifetime.is_none(),
                binding: self.binding.is_none(),
                server_security: self.server_security.is_none()
                    && self.server_key.is_none()
                    && self.server_cert.is_none(),
            },
            writes: Vec::new(),
        })
    }
}

/// A server URI must be CoAP, and coaps exactly when the account is secure.
fn check_uri(uri: &str, sec: &ServerSecurity) -> Result<(), String> {
    let scheme = uri.split_once("://").map(|(s, _)| s).unwrap_or("");
    match (scheme, sec.is_secure()) {
        ("coap", false) | ("coaps", true) => {}
        ("coap" | "coaps", secure) => {
            return Err(format!(
                "server URI {uri:?}: a {} account needs {}://",
                sec.mode(),
                if secure { "coaps" } else { "coap" }
            ))
        }
        _ => return Err(format!("server URI {uri:?} is not coap:// or coaps://")),
    }
    let rest = &uri[scheme.len() + 3..];
    if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("server URI {uri:?} names no host"));
    }
    Ok(())
}

/// Parses a CSV import: a header line naming columns from `EntrySpec`
/// (endpoint first), then one entry a line; `#` lines and blank lines are
/// skipped. An error names its line.
pub fn parse_csv(text: &str) -> Result<Vec<(usize, EntrySpec)>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((hl, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols.first() != Some(&"endpoint") {
        return Err(format!(
            "line {hl}: the header must start with \"endpoint\""
        ));
    }
    let mut out = Vec::new();
    for (n, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() > cols.len() {
            return Err(format!(
                "line {n}: {} fields, the header names {}",
                cells.len(),
                cols.len()
            ));
        }
        let mut s = EntrySpec::default();
        for (col, cell) in cols.iter().zip(cells) {
            if cell.is_empty() {
                continue;
            }
            let v = Some(cell.to_string());
            match *col {
                "endpoint" => s.endpoint = cell.to_string(),
                "profile" => s.profile = v,
                "psk_identity" => s.psk_identity = v,
                "psk_key" => s.psk_key = v,
                "rpk_key" => s.rpk_key = v,
                "x509_cert" => s.x509_cert = v,
                "server_security" => s.server_security = v,
                "server_key" => s.server_key = v,
                "server_cert" => s.server_cert = v,
                "server_uri" => s.server_uri = v,
                "lifetime" => {
                    s.lifetime = Some(
                        cell.parse()
                            .map_err(|_| format!("line {n}: lifetime {cell:?} is not a number"))?,
                    )
                }
                "binding" => s.binding = v,
                other => return Err(format!("line {hl}: unknown column {other:?}")),
            }
        }
        out.push((n, s));
    }
    Ok(out)
}

/// Where a device's latest bootstrap stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Never started since the entry was made.
    Pending,
    /// Running: the step it waits on.
    InProgress {
        /// What the device was last sent.
        step: String,
    },
    /// Bootstrap-Finish was acknowledged.
    Finished,
    /// It stopped: why, and the CoAP code the device answered, if any.
    Failed {
        /// Why.
        reason: String,
        /// The device's answer (`4.06`), if it gave one.
        code: Option<String>,
    },
}

/// A device's bootstrap record, kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Endpoint name.
    pub endpoint: String,
    /// Where it stands.
    pub phase: Phase,
    /// Bootstraps started since the entry was made.
    pub attempts: u32,
    /// Wall clock of the latest change, ms since 1970.
    pub changed_ms: u64,
}

impl State {
    /// A fresh record.
    pub fn pending(endpoint: &str) -> State {
        State {
            endpoint: endpoint.to_string(),
            phase: Phase::Pending,
            attempts: 0,
            changed_ms: 0,
        }
    }

    /// JSON for `bootstrap show` and `list`.
    pub fn to_json(&self) -> Json {
        let (state, detail) = match &self.phase {
            Phase::Pending => ("pending", json!({})),
            Phase::InProgress { step } => ("in progress", json!({ "step": step })),
            Phase::Finished => ("finished", json!({})),
            Phase::Failed { reason, code } => ("failed", json!({ "reason": reason, "code": code })),
        };
        let mut j = json!({
            "state": state,
            "attempts": self.attempts,
            "changedMs": self.changed_ms,
        });
        if let (Some(o), Json::Object(d)) = (j.as_object_mut(), detail) {
            o.extend(d);
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ep: &str) -> EntrySpec {
        EntrySpec {
            endpoint: ep.into(),
            ..EntrySpec::default()
        }
    }

    #[test]
    fn a_plain_entry_gets_the_defaults() {
        let e = spec("dev-1").build(Path::new(".")).unwrap();
        assert_eq!(e.security, Security::NoSec);
        assert_eq!(e.server_security, ServerSecurity::NoSec);
        assert_eq!(
            (e.lifetime, e.binding.as_str(), e.profile.as_str()),
            (300, "U", "default")
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let cases: [(EntrySpec, &str); 6] = [
            (
                EntrySpec {
                    psk_identity: Some("x".into()),
                    psk_key: Some("zz".into()),
                    ..spec("a")
                },
                "hex",
            ),
            (
                EntrySpec {
                    psk_identity: Some("x".into()),
                    psk_key: Some("0011".into()),
                    ..spec("a")
                },
                "",
            ),
            (
                EntrySpec {
                    server_security: Some("tls".into()),
                    ..spec("a")
                },
                "give nosec, psk, rpk",
            ),
            (
                EntrySpec {
                    server_security: Some("psk".into()),
                    server_uri: Some("coap://h:5686".into()),
                    ..spec("a")
                },
                "coaps://",
            ),
            (
                EntrySpec {
                    binding: Some("S".into()),
                    ..spec("a")
                },
                "U or UQ",
            ),
            (
                EntrySpec {
                    lifetime: Some(0),
                    ..spec("a")
                },
                "lifetime",
            ),
        ];
        for (s, want) in cases {
            let e = s.build(Path::new(".")).unwrap_err().0;
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn csv_lines_become_specs_and_errors_name_the_line() {
        let got =
            parse_csv("# site A\nendpoint,server_security,lifetime\nd1,psk,60\n\nd2,,\n").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 3);
        assert_eq!(got[0].1.server_security.as_deref(), Some("psk"));
        assert_eq!(got[0].1.lifetime, Some(60));
        assert_eq!(got[1].1.server_security, None);
        let e = parse_csv("endpoint,lifetime\nd1,soon\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse_csv("endpoint,colour\nd1,red\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }
}
