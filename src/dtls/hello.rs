//! The stateless front of the DTLS server: ClientHello parsing, cookies and
//! HelloVerifyRequest (RFC 6347 4.2.1), before any state is kept for a peer.

use mbedtls::hash::{Hmac, Type as MdType};

/// Record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// Handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Handshake type of a HelloVerifyRequest.
const HELLO_VERIFY_REQUEST: u8 = 3;
/// Bytes in a DTLS record header.
pub const RECORD_HEADER: usize = 13;
/// Bytes in a DTLS handshake header.
const HANDSHAKE_HEADER: usize = 12;
/// Bytes of cookie we hand out: a truncated HMAC-SHA256.
const COOKIE_LEN: usize = 16;
/// TLS extension: client_certificate_type (RFC 7250).
const EXT_CLIENT_CERT_TYPE: u16 = 19;
/// Certificate type value of a raw public key (RFC 7250).
const CERT_TYPE_RAW_PUBLIC_KEY: u8 = 2;

/// The parts of a ClientHello the front needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// Record sequence number (48 bits), echoed in the HelloVerifyRequest.
    pub record_seq: [u8; 6],
    /// Handshake message sequence, echoed as well.
    pub message_seq: u16,
    /// client_random.
    pub random: &'a [u8],
    /// legacy session id.
    pub session_id: &'a [u8],
    /// The cookie, empty on a first ClientHello.
    pub cookie: &'a [u8],
    /// The client offers only raw public keys for its own certificate.
    pub wants_raw_public_key: bool,
}

/// A datagram that starts with an epoch-0 handshake record: a ClientHello,
/// or None when it is anything else (or does not parse).
pub fn parse_client_hello(d: &[u8]) -> Option<ClientHello<'_>> {
    if d.len() < RECORD_HEADER + HANDSHAKE_HEADER || d[0] != HANDSHAKE || d[1] != 0xFE {
        return None;
    }
    if d[3] != 0 || d[4] != 0 {
        return None; // epoch 0 only: later epochs are encrypted
    }
    let rec_len = usize::from(u16::from_be_bytes([d[11], d[12]]));
    let rec = d.get(RECORD_HEADER..RECORD_HEADER + rec_len)?;
    // The record may claim less than a handshake header (found by
    // fuzz/dtls_hello: a 26-byte datagram panicked the front).
    if rec.len() < HANDSHAKE_HEADER || rec[0] != CLIENT_HELLO {
        return None;
    }
    let len = be24(&rec[1..4]);
    let frag_off = be24(&rec[6..9]);
    let frag_len = be24(&rec[9..12]);
    // A fragmented ClientHello is not worth the state it would need.
    if frag_off != 0 || frag_len != len {
        return None;
    }
    let body = rec.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + len)?;
    let mut r = Reader(body);
    r.take(2)?; // client_version
    let random = r.take(32)?;
    let session_id = r.vec8()?;
    let cookie = r.vec8()?;
    let _suites = r.vec16()?;
    let _compression = r.vec8()?;
    let mut wants_raw_public_key = false;
    if !r.0.is_empty() {
        let mut ext = Reader(r.vec16()?);
        while !ext.0.is_empty() {
            let kind = u16::from_be_bytes(ext.take(2)?.try_into().ok()?);
            let data = ext.vec16()?;
            if kind == EXT_CLIENT_CERT_TYPE {
                // A one-byte list length, then the types in preference order.
                wants_raw_public_key = data.get(1) == Some(&CERT_TYPE_RAW_PUBLIC_KEY);
            }
        }
    }
    let mut record_seq = [0u8; 6];
    record_seq.copy_from_slice(&d[5..11]);
    Some(ClientHello {
        record_seq,
        message_seq: u16::from_be_bytes([rec[4], rec[5]]),
        random,
        session_id,
        cookie,
        wants_raw_public_key,
    })
}

/// Some clients send their first ClientHello with a record version other
/// than 254.255 or 254.253 (Mbed TLS 2.x with a minimum below TLS 1.1
/// writes 254.0); the library only takes those two, so the front rewrites
/// the rest to 254.255.
pub fn normalise_record_version(d: &mut [u8]) {
    if d.len() >= RECORD_HEADER && d[0] == HANDSHAKE && d[1] == 0xFE && !matches!(d[2], 0xFD | 0xFF)
    {
        d[2] = 0xFF;
    }
}

/// Why a datagram is no DTLS record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotARecord {
    /// Shorter than a record header.
    Short,
    /// A content type that DTLS 1.0 and 1.2 do not send.
    ContentType,
    /// A major version other than DTLS's 254.
    Version,
}

/// Whether `d` starts with a DTLS 1.0/1.2 record header: content type 20
/// to 23, or 25 (tls12_cid), and major version 254 with any minor. The
/// minor is not checked: RFC 6347 4.1 tells a server not to rely on the
/// record version of a ClientHello, and Mbed TLS 2.x clients write their
/// configured minimum there (254.0 below TLS 1.1).
pub fn record_header(d: &[u8]) -> Result<(), NotARecord> {
    if d.len() < RECORD_HEADER {
        Err(NotARecord::Short)
    } else if !matches!(d[0], 20..=23 | 25) {
        Err(NotARecord::ContentType)
    } else if d[1] != 0xFE {
        Err(NotARecord::Version)
    } else {
        Ok(())
    }
}

/// Cookie secrets: the current one and the one before, so that a client
/// caught by a rotation still gets through.
pub struct CookieJar {
    current: [u8; 32],
    previous: [u8; 32],
    rotated_at_ms: u64,
}

/// How often the cookie secret changes.
const ROTATE_MS: u64 = 60_000;

impl CookieJar {
    /// A jar with secrets from the caller's random source.
    pub fn new(mut random: impl FnMut(&mut [u8]), now_ms: u64) -> CookieJar {
        let mut current = [0u8; 32];
        let mut previous = [0u8; 32];
        random(&mut current);
        random(&mut previous);
        CookieJar {
            current,
            previous,
            rotated_at_ms: now_ms,
        }
    }

    /// Changes the secret once a minute.
    pub fn rotate_if_due(&mut self, now_ms: u64, random: impl FnOnce(&mut [u8])) {
        if now_ms.saturating_sub(self.rotated_at_ms) >= ROTATE_MS {
            self.previous = self.current;
            random(&mut self.current);
            self.rotated_at_ms = now_ms;
        }
    }

    fn cookie(secret: &[u8; 32], peer: &[u8], hello: &ClientHello<'_>) -> [u8; COOKIE_LEN] {
        let mut input = Vec::with_capacity(peer.len() + 32 + hello.session_id.len());
        input.extend_from_slice(peer);
        input.extend_from_slice(hello.random);
        input.extend_from_slice(hello.session_id);
        let mut mac = [0u8; 32];
        // HMAC-SHA256 cannot fail with a 32-byte output buffer.
        let _ = Hmac::hmac(MdType::Sha256, secret, &input, &mut mac);
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&mac[..COOKIE_LEN]);
        c
    }

    /// True when the ClientHello carries a cookie this jar gave the peer.
    pub fn verify(&self, peer: &[u8], hello: &ClientHello<'_>) -> bool {
        hello.cookie.len() == COOKIE_LEN
            && [&self.current, &self.previous]
                .iter()
                .any(|s| constant_time_eq(&Self::cookie(s, peer, hello), hello.cookie))
    }

    /// The HelloVerifyRequest datagram answering a ClientHello.
    pub fn hello_verify_request(&self, peer: &[u8], hello: &ClientHello<'_>) -> Vec<u8> {
        let cookie = Self::cookie(&self.current, peer, hello);
        let body_len = 2 + 1 + COOKIE_LEN;
        let mut d = Vec::with_capacity(RECORD_HEADER + HANDSHAKE_HEADER + body_len);
        d.push(HANDSHAKE);
        d.extend_from_slice(&[0xFE, 0xFF]); // DTLS 1.0 here, as RFC 6347 4.2.1 asks
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&hello.record_seq);
        d.extend_from_slice(&((HANDSHAKE_HEADER + body_len) as u16).to_be_bytes());
        d.push(HELLO_VERIFY_REQUEST);
        d.extend_from_slice(&be24_bytes(body_len));
        d.extend_from_slice(&hello.message_seq.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0]);
        d.extend_from_slice(&be24_bytes(body_len));
        d.extend_from_slice(&[0xFE, 0xFF]);
        d.push(COOKIE_LEN as u8);
        d.extend_from_slice(&cookie);
        d
    }
}

/// Alert: unsupported_certificate.
pub const UNSUPPORTED_CERTIFICATE: u8 = 43;

/// A fatal alert record answering a ClientHello, sent without any state.
pub fn fatal_alert(hello: &ClientHello<'_>, description: u8) -> Vec<u8> {
    let mut d = vec![21, 0xFE, 0xFD, 0, 0];
    d.extend_from_slice(&hello.record_seq);
    d.extend_from_slice(&[0, 2, 2, description]);
    d
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn be24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

fn be24_bytes(n: usize) -> [u8; 3] {
    [(n >> 16) as u8, (n >> 8) as u8, n as u8]
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.take(1)?[0]);
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let l = self.take(2)?;
        self.take(usize::from(u16::from_be_bytes([l[0], l[1]])))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello as a client would send it, with an optional cookie and
    /// an optional client_certificate_type extension.
    pub(crate) fn client_hello(version: [u8; 2], cookie: &[u8], rpk: bool) -> Vec<u8> {
        let mut body = vec![0xFE, 0xFD];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 2, 0xC0, 0xA8]);
        body.extend_from_slice(&[1, 0]);
        if rpk {
            body.extend_from_slice(&[0, 6, 0, 19, 0, 2, 1, 2]);
        }
        let mut d = vec![HANDSHAKE, version[0], version[1], 0, 0, 0, 0, 0, 0, 0, 5];
        d.extend_from_slice(&((HANDSHAKE_HEADER + body.len()) as u16).to_be_bytes());
        d.push(CLIENT_HELLO);
        d.extend_from_slice(&be24_bytes(body.len()));
        d.extend_from_slice(&[0, 0, 0, 0, 0]);
        d.extend_from_slice(&be24_bytes(body.len()));
        d.extend_from_slice(&body);
        d
    }

    #[test]
    fn a_cookie_handed_out_is_accepted_only_from_the_same_peer() {
        let jar = CookieJar::new(|b| b.fill(1), 0);
        let first = client_hello([0xFE, 0xFF], &[], false);
        let h = parse_client_hello(&first).unwrap();
        assert!(h.cookie.is_empty());
        assert!(!jar.verify(b"peer-a", &h));
        let hvr = jar.hello_verify_request(b"peer-a", &h);
        assert_eq!(hvr[0], HANDSHAKE);
        assert_eq!(&hvr[5..11], &[0, 0, 0, 0, 0, 5], "record seq echoed");
        assert_eq!(hvr[RECORD_HEADER], HELLO_VERIFY_REQUEST);
        let cookie = &hvr[hvr.len() - COOKIE_LEN..];
        let second = client_hello([0xFE, 0xFD], cookie, false);
        let h2 = parse_client_hello(&second).unwrap();
        assert!(jar.verify(b"peer-a", &h2));
        assert!(!jar.verify(b"peer-b", &h2));
    }

    #[test]
    fn a_cookie_survives_one_rotation_but_not_two() {
        let mut n = 0u8;
        let mut rnd = |b: &mut [u8]| {
            n += 1;
            b.fill(n)
        };
        let mut jar = CookieJar::new(&mut rnd, 0);
        let h = client_hello([0xFE, 0xFF], &[], false);
        let hvr = jar.hello_verify_request(b"p", &parse_client_hello(&h).unwrap());
        let second = client_hello([0xFE, 0xFD], &hvr[hvr.len() - COOKIE_LEN..], false);
        jar.rotate_if_due(30_000, &mut rnd);
        assert!(jar.verify(b"p", &parse_client_hello(&second).unwrap()));
        jar.rotate_if_due(60_000, &mut rnd);
        assert!(jar.verify(b"p", &parse_client_hello(&second).unwrap()));
        jar.rotate_if_due(120_000, &mut rnd);
        assert!(!jar.verify(b"p", &parse_client_hello(&second).unwrap()));
    }

    #[test]
    fn record_version_fe00_is_read_and_rewritten() {
        let mut d = client_hello([0xFE, 0x00], &[], false);
        assert!(parse_client_hello(&d).is_some());
        normalise_record_version(&mut d);
        assert_eq!(&d[1..3], &[0xFE, 0xFF]);
        let mut d = client_hello([0xFE, 0xFD], &[], false);
        normalise_record_version(&mut d);
        assert_eq!(&d[1..3], &[0xFE, 0xFD]);
    }

    #[test]
    fn any_dtls_record_version_is_a_record_and_other_majors_are_not() {
        // The first 16 bytes of an Mbed TLS 2.28 client's ClientHello
        // with its minimum below TLS 1.1, then padded to a record.
        let mut mbed = vec![0x16, 0xfe, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xdc, 1, 0, 0];
        mbed.resize(60, 0);
        assert_eq!(record_header(&mbed), Ok(()));
        for minor in [0x00, 0x01, 0xfd, 0xfe, 0xff] {
            mbed[2] = minor;
            assert_eq!(record_header(&mbed), Ok(()), "254.{minor}");
        }
        mbed[1] = 0x03;
        assert_eq!(record_header(&mbed), Err(NotARecord::Version));
        mbed[1] = 0xfe;
        mbed[0] = 24;
        assert_eq!(record_header(&mbed), Err(NotARecord::ContentType));
        mbed[0] = 25;
        assert_eq!(record_header(&mbed[..12]), Err(NotARecord::Short));
        assert_eq!(record_header(&mbed[..13]), Ok(()));
    }

    #[test]
    fn raw_public_key_offer_is_seen() {
        let d = client_hello([0xFE, 0xFD], &[], true);
        assert!(parse_client_hello(&d).unwrap().wants_raw_public_key);
        let d = client_hello([0xFE, 0xFD], &[], false);
        assert!(!parse_client_hello(&d).unwrap().wants_raw_public_key);
    }

    #[test]
    fn truncated_and_foreign_datagrams_are_not_client_hellos() {
        let d = client_hello([0xFE, 0xFD], &[], false);
        for n in 0..d.len() {
            assert!(parse_client_hello(&d[..n]).is_none(), "prefix {n}");
        }
        let mut app = d.clone();
        app[0] = 23;
        assert!(parse_client_hello(&app).is_none());
        let mut epoch1 = d.clone();
        epoch1[4] = 1;
        assert!(parse_client_hello(&epoch1).is_none());
    }

    #[test]
    fn a_record_shorter_than_its_handshake_header_is_no_hello() {
        // Found by fuzz/dtls_hello: the record length says 0 (then 5)
        // while the datagram is long enough for both headers.
        let mut d = vec![0x16, 0xfe, 0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0x99, 0, 0, 0];
        d.extend_from_slice(&[0x27; 13]);
        assert!(parse_client_hello(&d).is_none());
        d[12] = 5;
        assert!(parse_client_hello(&d).is_none());
    }
}
