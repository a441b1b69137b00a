//! Device credentials: per endpoint its security mode (NoSec, PSK, RPK,
//! X.509) and profile, validated before anything is stored.

use crate::lwm2m::node::{base64_decode, base64_encode, unhex};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use std::fmt;
use std::path::Path;

/// How an endpoint must secure its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    /// Plain CoAP.
    NoSec,
    /// DTLS with a pre-shared key.
    Psk {
        /// PSK identity the device presents.
        identity: String,
        /// The key (16, 32 or 64 bytes).
        key: Vec<u8>,
    },
    /// DTLS with a raw public key (RFC 7250).
    Rpk {
        /// The device's public key, DER SubjectPublicKeyInfo.
        public_key: Vec<u8>,
    },
    /// DTLS with an X.509 certificate.
    X509 {
        /// The device's certificate (DER); none: any certificate from the
        /// trust store whose CN is the endpoint name.
        certificate: Option<Vec<u8>>,
    },
}

impl Security {
    /// True for the modes that need DTLS.
    pub fn is_secure(&self) -> bool {
        !matches!(self, Security::NoSec)
    }

    /// `NO_SEC`, `PSK`, `RPK` or `X509`, as ThingsBoard names them.
    pub fn mode(&self) -> &'static str {
        match self {
            Security::NoSec => "NO_SEC",
            Security::Psk { .. } => "PSK",
            Security::Rpk { .. } => "RPK",
            Security::X509 { .. } => "X509",
        }
    }
}

/// Whom a secure session proved to be: what the DTLS layer hands the
/// server, which then binds registrations to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The endpoint the credential belongs to (for X.509 without a stored
    /// certificate: the certificate's CN).
    pub endpoint: String,
    /// `PSK`, `RPK` or `X509`.
    pub mode: &'static str,
    /// True when the session matched stored key material (a PSK, a stored
    /// certificate or key); false for a CA-signed certificate's CN.
    pub pinned: bool,
}

/// An endpoint's credential and profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Endpoint name.
    pub endpoint: String,
    /// Profile name.
    pub profile: String,
    /// Security mode and material.
    pub security: Security,
}

impl Credential {
    /// JSON for listings; keys are never shown, only their size.
    pub fn to_json(&self) -> Json {
        let mut j = json!({
            "endpoint": self.endpoint,
            "profile": self.profile,
            "mode": self.security.mode(),
        });
        match &self.security {
            Security::NoSec => {}
            Security::Psk { identity, key } => {
                j["pskIdentity"] = identity.as_str().into();
                j["pskKeyBits"] = (key.len() * 8).into();
            }
            Security::Rpk { public_key } => {
                j["rpkKey"] = base64_encode(public_key, false).into();
            }
            Security::X509 { certificate } => {
                j["x509"] = match certificate {
                    Some(c) => format!("certificate, {} bytes", c.len()).into(),
                    None => "any trusted certificate with CN = endpoint".into(),
                };
            }
        }
        j
    }
}

/// A credential that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError(pub String);

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CredentialError {}

fn bad<T>(m: impl Into<String>) -> Result<T, CredentialError> {
    Err(CredentialError(m.into()))
}

/// A credential as written by a user: `device add` flags, or one
/// `[[device]]` of an import file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// Endpoint name.
    pub endpoint: String,
    /// Profile name (default: `default`).
    #[serde(default)]
    pub profile: Option<String>,
    /// PSK identity.
    #[serde(default)]
    pub psk_identity: Option<String>,
    /// PSK key, hex.
    #[serde(default)]
    pub psk_key: Option<String>,
    /// RPK: base64 DER SubjectPublicKeyInfo.
    #[serde(default)]
    pub rpk_key: Option<String>,
    /// X.509: the device certificate, PEM or DER text in a file (path).
    #[serde(default)]
    pub x509_cert: Option<String>,
    /// X.509 bound by CN = endpoint, no stored certificate.
    #[serde(default)]
    pub x509: bool,
}

/// An import file: `[[device]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportFile {
    /// The devices.
    #[serde(default)]
    pub device: Vec<CredentialSpec>,
}

impl CredentialSpec {
    /// Checks the spec and builds the credential. Certificate files are
    /// read relative to `base` (the import file's directory or the
    /// working directory). The profile's existence is the caller's check.
    pub fn build(&self, base: &Path) -> Result<Credential, CredentialError> {
        check_endpoint(&self.endpoint)?;
        let ep = &self.endpoint;
        let modes = [
            self.psk_identity.is_some() || self.psk_key.is_some(),
            self.rpk_key.is_some(),
            self.x509_cert.is_some() || self.x509,
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            return bad(format!(
                "{ep}: give one security mode: PSK (identity and key), RPK or X.509"
            ));
        }
        let security = if modes[0] {
            let (Some(identity), Some(key)) = (&self.psk_identity, &self.psk_key) else {
                return bad(format!("{ep}: PSK needs both an identity and a key"));
            };
            Security::Psk {
                identity: psk_identity(identity)?,
                key: psk_key(key)?,
            }
        } else if let Some(k) = &self.rpk_key {
            Security::Rpk {
                public_key: rpk_key(k)?,
            }
        } else if let Some(f) = &self.x509_cert {
            let path = base.join(f);
            let bytes = std::fs::read(&path)
                .map_err(|e| CredentialError(format!("{ep}: {}: {e}", path.display())))?;
            Security::X509 {
                certificate: Some(
                    certificate(&bytes)
                        .map_err(|e| CredentialError(format!("{}: {e}", path.display())))?,
                ),
            }
        } else if self.x509 {
            Security::X509 { certificate: None }
        } else {
            Security::NoSec
        };
        let profile = self
            .profile
            .clone()
            .unwrap_or_else(|| crate::profile::DEFAULT.to_string());
        Ok(Credential {
            endpoint: ep.clone(),
            profile,
            security,
        })
    }
}

/// Endpoint names as LwM2M clients send them: non-empty, printable, short.
pub fn check_endpoint(ep: &str) -> Result<(), CredentialError> {
    if ep.is_empty() || ep.len() > 256 || ep.chars().any(|c| c.is_control()) {
        return bad(format!(
            "endpoint {ep:?}: 1 to 256 characters, no control characters"
        ));
    }
    Ok(())
}

fn psk_identity(s: &str) -> Result<String, CredentialError> {
    // RFC 4279: identities up to 2^16-1 bytes; DTLS stacks take 128 at most.
    if s.is_empty() || s.len() > 128 {
        return bad(format!("PSK identity {s:?}: 1 to 128 bytes"));
    }
    Ok(s.to_string())
}

/// A PSK key: 32, 64 or 128 hex characters (128, 256 or 512 bits).
pub fn psk_key(s: &str) -> Result<Vec<u8>, CredentialError> {
    let s = s.trim();
    if ![32, 64, 128].contains(&s.len()) {
        return bad(format!(
            "PSK key must be 32, 64 or 128 hex characters, not {}",
            s.len()
        ));
    }
    unhex(s).ok_or_else(|| CredentialError("PSK key is not hexadecimal".into()))
}

/// An RPK: base64 of a DER SubjectPublicKeyInfo.
pub fn rpk_key(s: &str) -> Result<Vec<u8>, CredentialError> {
    let s = s.trim();
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
    {
        return bad("RPK key is not base64");
    }
    let der = base64_decode(s).ok_or_else(|| CredentialError("RPK key is not base64".into()))?;
    check_spki(&der)?;
    Ok(der)
}

/// A certificate in PEM or DER; returns DER.
pub fn certificate(bytes: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let der = match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {
            let body: String = text
                .split("-----BEGIN CERTIFICATE-----")
                .nth(1)
                .and_then(|r| r.split("-----END CERTIFICATE-----").next())
                .ok_or_else(|| CredentialError("PEM certificate without its END line".into()))?
                .split_whitespace()
                .collect();
            base64_decode(&body)
                .ok_or_else(|| CredentialError("PEM certificate is not base64".into()))?
        }
        _ => bytes.to_vec(),
    };
    let (tag, inner, rest) = der_item(&der).ok_or_else(not_der)?;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm, signature }
    if tag != 0x30 || !rest.is_empty() || der_item(inner).is_none_or(|(t, _, _)| t != 0x30) {
        return Err(not_der());
    }
    Ok(der)
}

fn not_der() -> CredentialError {
    CredentialError("not a DER or PEM X.509 certificate".into())
}

/// SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE { OID, .. }, subjectPublicKey BIT STRING }
fn check_spki(der: &[u8]) -> Result<(), CredentialError> {
    let wrong = || CredentialError("RPK key is not a DER SubjectPublicKeyInfo".into());
    let (tag, inner, rest) = der_item(der).ok_or_else(wrong)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(wrong());
    }
    let (alg_tag, alg, after) = der_item(inner).ok_or_else(wrong)?;
    let (oid_tag, _, _) = der_item(alg).ok_or_else(wrong)?;
    let (bits_tag, bits, end) = der_item(after).ok_or_else(wrong)?;
    if alg_tag != 0x30 || oid_tag != 0x06 || bits_tag != 0x03 || bits.len() < 2 || !end.is_empty() {
        return Err(wrong());
    }
    Ok(())
}

/// One DER item: tag, contents, and what follows it.
fn der_item(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (first as usize, b)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |a, x| (a << 8) | *x as usize);
        (len, &b[n..])
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

#[cfg(test)]
mod tests;
