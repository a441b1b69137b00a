//! The gateway's own DTLS key, certificate and trust store, loaded from
//! files or made on first start, and the server configuration built on them.

use super::{mbed, DtlsError, Settings};
use crate::lwm2m::node::base64_encode;
use mbedtls::alloc::List as MbedtlsList;
use mbedtls::hash::Type as MdType;
use mbedtls::pk::{EcGroupId, Pk};
use mbedtls::rng::{CtrDrbg, OsEntropy};
use mbedtls::ssl::config::{Config, Endpoint};
use mbedtls::x509::certificate::{Builder, Certificate};
use mbedtls::x509::Time;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The names a generated server certificate carries. Devices check the
/// name against the host they dial: Mbed TLS 2.x clients compare only the
/// CN and DNS-type SANs (and ignore the CN once a SAN extension exists),
/// OpenSSL-based ones check IP SANs. So the CN is the host devices dial,
/// and SANs are added only where configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertNames {
    /// The subject's CN.
    pub host: String,
    /// subjectAltName entries of type DNS.
    pub dns: Vec<String>,
    /// subjectAltName entries of type IP.
    pub ips: Vec<std::net::IpAddr>,
}

impl Default for CertNames {
    fn default() -> Self {
        CertNames {
            host: "lwm2m-gw".into(),
            dns: Vec::new(),
            ips: Vec::new(),
        }
    }
}

impl CertNames {
    /// One line naming them all, kept beside the certificate to tell when
    /// the settings changed.
    fn line(&self) -> String {
        let ips: Vec<String> = self.ips.iter().map(|i| i.to_string()).collect();
        format!(
            "CN={} DNS={} IP={}",
            self.host,
            self.dns.join(","),
            ips.join(",")
        )
    }

    /// The subjectAltName extension's value (RFC 5280 4.2.1.6: a SEQUENCE
    /// of dNSName [2] and iPAddress [7]); none without SANs.
    fn san_der(&self) -> Option<Vec<u8>> {
        if self.dns.is_empty() && self.ips.is_empty() {
            return None;
        }
        let mut body = Vec::new();
        for d in &self.dns {
            der_push(&mut body, 0x82, d.as_bytes());
        }
        for ip in &self.ips {
            match ip {
                std::net::IpAddr::V4(a) => der_push(&mut body, 0x87, &a.octets()),
                std::net::IpAddr::V6(a) => der_push(&mut body, 0x87, &a.octets()),
            }
        }
        let mut out = Vec::new();
        der_push(&mut out, 0x30, &body);
        Some(out)
    }
}

/// One DER element: tag, definite length, value.
fn der_push(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(value);
}

/// Where the gateway's DTLS material comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    /// The names of the certificate made when none is configured.
    pub names: CertNames,
    /// Server certificate chain (PEM or DER); default: a self-signed one
    /// made for the server key and kept in the data directory.
    pub certificate: Option<PathBuf>,
    /// Server private key (PEM or DER); default: made on first start.
    pub key: Option<PathBuf>,
    /// CA certificates that device certificates must chain to.
    pub trust_store: Option<PathBuf>,
}

/// The loaded material.
pub struct Identity {
    key: Arc<Pk>,
    certificate: Arc<MbedtlsList<Certificate>>,
    trust: Option<Arc<MbedtlsList<Certificate>>>,
    /// The public key, DER SubjectPublicKeyInfo, for RPK provisioning.
    pub public_key: Vec<u8>,
    /// The private key, DER (SEC1 for an EC key), for the raw-key stack.
    pub private_der: Vec<u8>,
    /// The first certificate of the chain, DER, for X.509 provisioning.
    pub certificate_der: Vec<u8>,
    /// The whole chain, DER, server certificate first (the web console's
    /// HTTPS serves it).
    pub chain_der: Vec<Vec<u8>>,
    /// Where a generated key or certificate was written, for the log.
    pub made: Vec<PathBuf>,
    /// A generated certificate made again because its names changed.
    pub remade: Vec<PathBuf>,
}

impl Identity {
    /// The public key in base64, as devices are provisioned with it.
    pub fn public_key_base64(&self) -> String {
        base64_encode(&self.public_key, false)
    }
}

/// A random generator seeded from the operating system, shared by sessions.
pub fn rng() -> Result<Arc<CtrDrbg>, DtlsError> {
    local_rng().map(Arc::new)
}

fn local_rng() -> Result<CtrDrbg, DtlsError> {
    CtrDrbg::new(Arc::new(OsEntropy::new()), Some(b"lwm2m-gw dtls"))
        .map_err(|e| DtlsError::Library(format!("random generator: {e}")))
}

fn read(path: &Path) -> Result<Vec<u8>, DtlsError> {
    let mut b =
        std::fs::read(path).map_err(|e| DtlsError::Config(format!("{}: {e}", path.display())))?;
    // Mbed TLS wants PEM text NUL-terminated.
    if b.starts_with(b"-----") {
        b.push(0);
    }
    Ok(b)
}

fn certificates(path: &Path) -> Result<MbedtlsList<Certificate>, DtlsError> {
    let b = read(path)?;
    let list = if b.starts_with(b"-----") {
        Certificate::from_pem_multiple(&b)
    } else {
        Certificate::from_der(&b).map(|c| {
            let mut l = MbedtlsList::new();
            l.push(c);
            l
        })
    };
    list.map_err(|e| DtlsError::Config(format!("{}: not a certificate: {e}", path.display())))
}

fn write_private(path: &Path, text: &str) -> Result<(), DtlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| DtlsError::Config(format!("{}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| DtlsError::Config(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| DtlsError::Config(format!("{}: {e}", path.display())))
}

/// Loads the configured files; without a key file, the key kept in
/// `dir` is used, made there (P-256) on first start, with a self-signed
/// certificate beside it.
pub fn load(files: &Files, dir: &Path) -> Result<Identity, DtlsError> {
    let (mut made, mut remade) = (Vec::new(), Vec::new());
    let key_path = files
        .key
        .clone()
        .unwrap_or_else(|| dir.join("server-key.pem"));
    if files.key.is_none() && !key_path.exists() {
        let mut g = local_rng()?;
        let mut k = Pk::generate_ec(&mut g, EcGroupId::SecP256R1)
            .map_err(|e| DtlsError::Library(format!("key generation: {e}")))?;
        let pem = k
            .write_private_pem_string()
            .map_err(|e| DtlsError::Library(format!("key encoding: {e}")))?;
        write_private(&key_path, &pem)?;
        made.push(key_path.clone());
    }
    let mut key = Pk::from_private_key(&read(&key_path)?, None).map_err(|e| {
        DtlsError::Config(format!("{}: not a private key: {e}", key_path.display()))
    })?;
    let public_key = key
        .write_public_der_vec()
        .map_err(|e| DtlsError::Library(format!("public key encoding: {e}")))?;
    let private_der = key
        .write_private_der_vec()
        .map_err(|e| DtlsError::Library(format!("key encoding: {e}")))?;
    let certificate = match &files.certificate {
        Some(p) => certificates(p)?,
        None => {
            let cert_path = dir.join("server-cert.pem");
            let names_path = dir.join("server-cert.names");
            let wanted = files.names.line();
            // A certificate made before names were recorded carried the
            // default CN only.
            let had = match std::fs::read_to_string(&names_path) {
                Ok(l) => l.trim().to_string(),
                Err(_) => CertNames::default().line(),
            };
            let renamed = cert_path.exists() && made.is_empty() && had != wanted;
            if !cert_path.exists() || !made.is_empty() || renamed {
                if renamed {
                    log::warn!(
                        "DTLS: the server certificate is made again for {wanted} (it was {had}): \
                         devices given the old certificate need the new one (the key is the same)"
                    );
                }
                let pem = self_signed(&mut key, &files.names)?;
                let _ = std::fs::remove_file(&cert_path);
                write_private(&cert_path, &pem)?;
                let _ = std::fs::remove_file(&names_path);
                write_private(&names_path, &format!("{wanted}\n"))?;
                if renamed {
                    remade.push(cert_path.clone());
                } else {
                    made.push(cert_path.clone());
                }
            }
            certificates(&cert_path)?
        }
    };
    let trust = match &files.trust_store {
        Some(p) => Some(Arc::new(certificates(p)?)),
        None => None,
    };
    let certificate_der = certificate
        .iter()
        .next()
        .map(|c| c.as_der().to_vec())
        .unwrap_or_default();
    let chain_der = certificate.iter().map(|c| c.as_der().to_vec()).collect();
    Ok(Identity {
        certificate_der,
        chain_der,
        key: Arc::new(key),
        certificate: Arc::new(certificate),
        trust,
        public_key,
        private_der,
        made,
        remade,
    })
}

/// A device's key pair from its private key file (PEM or DER; SEC1 or
/// PKCS#8): the DER SubjectPublicKeyInfo and the PKCS#8 DER private key
/// (RFC 5958), the encodings LwM2M's Security object carries.
pub fn device_key_pair(bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>), DtlsError> {
    let mut b = bytes.to_vec();
    if b.starts_with(b"-----") {
        b.push(0);
    }
    let bad = |e: mbedtls::Error| DtlsError::Config(format!("not a private key: {e}"));
    let mut key = Pk::from_private_key(&b, None).map_err(bad)?;
    let public = key.write_public_der_vec().map_err(bad)?;
    let private = key.write_private_der_vec().map_err(bad)?;
    let pkcs8 = pkcs8(&public, &private)
        .ok_or_else(|| DtlsError::Library("the key's DER encoding is not understood".into()))?;
    Ok((public, pkcs8))
}

/// The DER SubjectPublicKeyInfo of a DER certificate.
pub fn certificate_public_key(der: &[u8]) -> Result<Vec<u8>, DtlsError> {
    let bad = |e: mbedtls::Error| DtlsError::Config(format!("not a certificate: {e}"));
    let mut c = Certificate::from_der(der).map_err(bad)?;
    c.public_key_mut().write_public_der_vec().map_err(bad)
}

/// PrivateKeyInfo ::= SEQUENCE { version 0, the SPKI's AlgorithmIdentifier,
/// OCTET STRING holding the key as Mbed TLS wrote it (SEC1 or PKCS#1) }.
fn pkcs8(spki: &[u8], private: &[u8]) -> Option<Vec<u8>> {
    let (spki_body, _) = der_split(spki)?;
    let (_, after_alg) = der_split(spki_body)?;
    let alg = &spki_body[..spki_body.len() - after_alg.len()];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(alg);
    body.extend(der_tlv(0x04, private));
    Some(der_tlv(0x30, &body))
}

/// The content of the DER item at the start of `b`, and what follows it.
fn der_split(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < 2 + n {
            return None;
        }
        let len = b[2..2 + n]
            .iter()
            .fold(0usize, |a, x| (a << 8) | *x as usize);
        (len, 2 + n)
    };
    let end = head.checked_add(len).filter(|e| *e <= b.len())?;
    Some((&b[head..end], &b[end..]))
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        v.push(0x80 | bytes.len() as u8);
        v.extend(bytes);
    }
    v.extend_from_slice(content);
    v
}

/// A self-signed certificate for the server key, with `names`, valid for
/// 30 years: devices that pin it must not see it change.
fn self_signed(key: &mut Pk, names: &CertNames) -> Result<String, DtlsError> {
    let lib = |e: mbedtls::Error| DtlsError::Library(format!("self-signed certificate: {e}"));
    // Signing needs a second handle on the key: the builder takes it twice.
    let der = key
        .write_private_der_vec()
        .map_err(|e| DtlsError::Library(format!("key encoding: {e}")))?;
    let mut issuer = Pk::from_private_key(&der, None).map_err(lib)?;
    let mut serial = [0u8; 8];
    super::random_bytes(&mut serial);
    serial[0] &= 0x7F;
    let dn = format!("CN={}", names.host);
    let mut b = Builder::new();
    b.subject(&dn)
        .map_err(lib)?
        .issuer(&dn)
        .map_err(lib)?
        .subject_key(key)
        .issuer_key(&mut issuer)
        .signature_hash(MdType::Sha256)
        .serial(&serial)
        .map_err(lib)?
        .validity(
            Time::new(2024, 1, 1, 0, 0, 0).expect("valid date"),
            Time::new(2054, 1, 1, 0, 0, 0).expect("valid date"),
        )
        .map_err(lib)?;
    if let Some(san) = names.san_der() {
        // id-ce-subjectAltName, 2.5.29.17.
        b.extension(&[0x55, 0x1d, 0x11], &san, false).map_err(lib)?;
    }
    b.write_pem_string(&mut local_rng()?).map_err(lib)
}

/// The server configuration: our callbacks, the cipher suites, the
/// certificate and key, and the trust store when there is one (device
/// certificates must then chain to it, or be stored for their endpoint).
pub fn server_config(
    settings: &Settings,
    id: &Identity,
    rng: Arc<CtrDrbg>,
) -> Result<Arc<Config>, DtlsError> {
    if settings.suites.is_empty() {
        return Err(DtlsError::Config("no cipher suites".into()));
    }
    let ms = |d: std::time::Duration| d.as_millis().min(u32::MAX as u128) as u32;
    let mut c = mbed::config(
        Endpoint::Server,
        &settings.suites,
        (
            ms(settings.handshake_timeout.0),
            ms(settings.handshake_timeout.1),
        ),
    )?;
    c.set_rng(rng);
    c.push_cert(id.certificate.clone(), id.key.clone())
        .map_err(|e| DtlsError::Config(format!("server certificate and key: {e}")))?;
    match &id.trust {
        Some(ca) => {
            c.set_ca_list(ca.clone(), None);
            mbed::set_authmode(&mut c, true);
        }
        // No trust store: only stored device certificates can pass,
        // which the gateway checks once the handshake is done.
        None => mbed::set_authmode(&mut c, false),
    }
    Ok(Arc::new(c))
}

/// A client configuration with one PSK, for the simulator and tests.
pub fn psk_client_config(
    suites: &[std::os::raw::c_int],
    identity: &str,
    key: &[u8],
    rng: Arc<CtrDrbg>,
    lowest: Option<mbedtls::ssl::Version>,
) -> Result<Arc<Config>, DtlsError> {
    let mut c = mbed::config(Endpoint::Client, suites, (1000, 32_000))?;
    c.set_rng(rng);
    if let Some(v) = lowest {
        // Mbed TLS 2.x writes this minimum into its first ClientHello's
        // record version: SSL 3.0 comes out as 254.0.
        c.set_min_version(v)
            .map_err(|e| DtlsError::Config(format!("min version: {e}")))?;
    }
    c.set_psk(key, identity)
        .map_err(|e| DtlsError::Config(format!("psk: {e}")))?;
    Ok(Arc::new(c))
}
