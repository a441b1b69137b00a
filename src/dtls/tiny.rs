//! Raw-public-key sessions (RFC 7250) on tinydtls, the one thing Mbed TLS
//! 2.28 cannot do: TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 with raw keys on
//! both sides. Datagrams in, datagrams and events out; no sockets.

use super::{DtlsError, Keys};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::raw::{c_int, c_uchar, c_ushort};
use tinydtls_sys as t;

extern "C" {
    // In tinydtls's dtls_debug.h; the crate's bindings leave it out.
    fn dtls_set_log_level(level: c_int);
}

/// What a raw-key session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TinyEvent {
    /// Handshake done; the endpoint whose stored key the client proved.
    Connected(SocketAddr, String),
    /// Decrypted application data.
    Data(SocketAddr, Vec<u8>),
    /// An alert ended the session (or the handshake).
    Closed(SocketAddr, String),
}

/// The server's P-256 key as tinydtls wants it: raw scalar and point.
struct RawKey {
    d: [u8; 32],
    x: [u8; 32],
    y: [u8; 32],
}

struct State {
    key: RawKey,
    ecdsa: t::dtls_ecdsa_key_t,
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    events: Vec<TinyEvent>,
    /// Valid only during a call into the library.
    keys: *const Keys,
    /// Endpoints whose key a peer presented, until the handshake is done.
    proved: HashMap<SocketAddr, String>,
}

/// The tinydtls context serving raw-public-key clients.
pub struct Tiny {
    ctx: *mut t::dtls_context_t,
    state: Box<State>,
    _handlers: Box<t::dtls_handler_t>,
}

// The context and its pointers belong to this value alone.
unsafe impl Send for Tiny {}

static INIT: std::sync::Once = std::sync::Once::new();

impl Tiny {
    /// A context with the server's key, given as the SEC1 DER of a P-256
    /// private key (what Mbed TLS writes for an EC key).
    pub fn new(sec1_der: &[u8]) -> Result<Tiny, DtlsError> {
        let key = raw_key(sec1_der)
            .ok_or_else(|| DtlsError::Config("raw public keys need a P-256 server key".into()))?;
        INIT.call_once(|| unsafe {
            t::dtls_init();
            // Its own log lines would go to stderr around ours.
            dtls_set_log_level(0);
        });
        let mut state = Box::new(State {
            key,
            ecdsa: unsafe { std::mem::zeroed() },
            outbox: Vec::new(),
            events: Vec::new(),
            keys: std::ptr::null(),
            proved: HashMap::new(),
        });
        state.ecdsa = t::dtls_ecdsa_key_t {
            curve: t::dtls_ecdh_curve::DTLS_ECDH_CURVE_SECP256R1,
            priv_key: state.key.d.as_ptr(),
            pub_key_x: state.key.x.as_ptr(),
            pub_key_y: state.key.y.as_ptr(),
        };
        let mut handlers: Box<t::dtls_handler_t> = Box::new(unsafe { std::mem::zeroed() });
        handlers.write = Some(write_cb);
        handlers.read = Some(read_cb);
        handlers.event = Some(event_cb);
        handlers.get_ecdsa_key = Some(get_ecdsa_key_cb);
        handlers.verify_ecdsa_key = Some(verify_ecdsa_key_cb);
        let ctx = unsafe { t::dtls_new_context(&mut *state as *mut State as *mut _) };
        if ctx.is_null() {
            return Err(DtlsError::Library("tinydtls: no context".into()));
        }
        unsafe { (*ctx).h = &mut *handlers };
        Ok(Tiny {
            ctx,
            state,
            _handlers: handlers,
        })
    }

    /// Feeds one datagram from `peer`.
    pub fn handle(&mut self, keys: &Keys, peer: SocketAddr, datagram: &[u8]) {
        let mut session = session_of(peer);
        let mut buf = datagram.to_vec();
        self.state.keys = keys;
        unsafe {
            t::dtls_handle_message(self.ctx, &mut session, buf.as_mut_ptr(), buf.len() as c_int);
        }
        self.state.keys = std::ptr::null();
    }

    /// Encrypts one CoAP datagram for a connected peer.
    pub fn write(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), DtlsError> {
        let mut session = session_of(peer);
        let mut buf = data.to_vec();
        let r = unsafe { t::dtls_write(self.ctx, &mut session, buf.as_mut_ptr(), buf.len()) };
        if r <= 0 {
            return Err(DtlsError::NotEstablished);
        }
        Ok(())
    }

    /// Drops a peer's state without a word to it (idle, or evicted).
    pub fn forget(&mut self, peer: SocketAddr) {
        let session = session_of(peer);
        self.state.proved.remove(&peer);
        unsafe {
            let p = t::dtls_get_peer(self.ctx, &session);
            if !p.is_null() {
                t::dtls_reset_peer(self.ctx, p);
            }
        }
    }

    /// Resends flights whose time has come; the library keeps its own
    /// monotonic clock for these.
    pub fn retransmit(&mut self) {
        let mut next: t::clock_time_t = 0;
        unsafe { t::dtls_check_retransmit(self.ctx, &mut next) };
    }

    /// Datagrams to send.
    pub fn take_transmits(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.state.outbox)
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<TinyEvent> {
        std::mem::take(&mut self.state.events)
    }
}

impl Drop for Tiny {
    fn drop(&mut self) {
        unsafe { t::dtls_free_context(self.ctx) };
    }
}

/// The 64 bytes X || Y of a P-256 SubjectPublicKeyInfo, as tinydtls
/// hands a client's key over.
pub fn spki_point(spki: &[u8]) -> Option<[u8; 64]> {
    // A P-256 SPKI is 91 bytes and ends with the uncompressed point 04 X Y.
    const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    if spki.len() != 91 || spki[26] != 0x04 || !spki.windows(10).any(|w| w == P256_OID) {
        return None;
    }
    spki[27..].try_into().ok()
}

/// d, X and Y from a SEC1 ECPrivateKey (RFC 5915) on P-256.
fn raw_key(der: &[u8]) -> Option<RawKey> {
    // SEQUENCE { INTEGER 1, OCTET STRING d, [0] curve OID, [1] BIT STRING point }
    let d_at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])?
        + 5;
    let d: [u8; 32] = der.get(d_at..d_at + 32)?.try_into().ok()?;
    let p_at = der.windows(4).position(|w| w == [0x03, 0x42, 0x00, 0x04])? + 4;
    let x: [u8; 32] = der.get(p_at..p_at + 32)?.try_into().ok()?;
    let y: [u8; 32] = der.get(p_at + 32..p_at + 64)?.try_into().ok()?;
    Some(RawKey { d, x, y })
}

fn session_of(peer: SocketAddr) -> t::session_t {
    let mut s: t::session_t = unsafe { std::mem::zeroed() };
    let (bytes, size): (Vec<u8>, usize) = match peer {
        SocketAddr::V4(a) => {
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            (as_bytes(&sin), std::mem::size_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(a) => {
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            (as_bytes(&sin6), std::mem::size_of::<libc::sockaddr_in6>())
        }
    };
    let room = std::mem::size_of_val(&s.addr);
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            &mut s.addr as *mut _ as *mut u8,
            bytes.len().min(room),
        )
    };
    s.size = size as _;
    s
}

fn as_bytes<T>(v: &T) -> Vec<u8> {
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
        .to_vec()
}

unsafe fn peer_of(s: *const t::session_t) -> SocketAddr {
    let p = &(*s).addr as *const _ as *const u8;
    let family = std::ptr::read_unaligned(p as *const libc::sa_family_t);
    if c_int::from(family) == libc::AF_INET6 {
        let sin6 = std::ptr::read_unaligned(p as *const libc::sockaddr_in6);
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
            u16::from_be(sin6.sin6_port),
        )
    } else {
        let sin = std::ptr::read_unaligned(p as *const libc::sockaddr_in);
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())),
            u16::from_be(sin.sin_port),
        )
    }
}

unsafe fn state_of<'a>(ctx: *mut t::dtls_context_t) -> &'a mut State {
    &mut *((*ctx).app as *mut State)
}

unsafe extern "C" fn write_cb(
    ctx: *mut t::dtls_context_t,
    session: *mut t::session_t,
    buf: *mut u8,
    len: usize,
) -> c_int {
    let st = state_of(ctx);
    st.outbox.push((
        peer_of(session),
        std::slice::from_raw_parts(buf, len).to_vec(),
    ));
    len as c_int
}

unsafe extern "C" fn read_cb(
    ctx: *mut t::dtls_context_t,
    session: *mut t::session_t,
    buf: *mut u8,
    len: usize,
) -> c_int {
    let st = state_of(ctx);
    st.events.push(TinyEvent::Data(
        peer_of(session),
        std::slice::from_raw_parts(buf, len).to_vec(),
    ));
    0
}

unsafe extern "C" fn event_cb(
    ctx: *mut t::dtls_context_t,
    session: *mut t::session_t,
    level: t::dtls_alert_level_t,
    code: c_ushort,
) -> c_int {
    let st = state_of(ctx);
    let peer = peer_of(session);
    if u32::from(code) == t::DTLS_EVENT_CONNECTED {
        match st.proved.remove(&peer) {
            Some(ep) => st.events.push(TinyEvent::Connected(peer, ep)),
            None => st.events.push(TinyEvent::Closed(
                peer,
                "connected without a proved key".into(),
            )),
        }
    } else if code < 256 && (level == t::dtls_alert_level_t::DTLS_ALERT_LEVEL_FATAL || code == 0) {
        st.proved.remove(&peer);
        let why = match code {
            0 => "the peer closed the session".to_string(),
            42 => "bad certificate (raw key not provisioned)".to_string(),
            c => format!("alert {c}"),
        };
        st.events.push(TinyEvent::Closed(peer, why));
    }
    0
}

unsafe extern "C" fn get_ecdsa_key_cb(
    ctx: *mut t::dtls_context_t,
    _session: *const t::session_t,
    result: *mut *const t::dtls_ecdsa_key_t,
) -> c_int {
    *result = &state_of(ctx).ecdsa;
    0
}

unsafe extern "C" fn verify_ecdsa_key_cb(
    ctx: *mut t::dtls_context_t,
    session: *const t::session_t,
    x: *const c_uchar,
    y: *const c_uchar,
    size: usize,
) -> c_int {
    let st = state_of(ctx);
    if size != 32 || st.keys.is_null() {
        return -((2 << 8) | 42);
    }
    let mut point = [0u8; 64];
    point[..32].copy_from_slice(std::slice::from_raw_parts(x, 32));
    point[32..].copy_from_slice(std::slice::from_raw_parts(y, 32));
    match (*st.keys).raw_key(&point) {
        Some(ep) => {
            st.proved.insert(peer_of(session), ep.to_string());
            0
        }
        None => {
            st.events.push(TinyEvent::Closed(
                peer_of(session),
                "raw public key not provisioned for any endpoint".into(),
            ));
            // Fatal bad_certificate.
            -((2 << 8) | 42)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_p256_spki_yields_its_point_and_other_keys_none() {
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06,
            0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
        ];
        spki.extend((0..64).map(|i| i as u8));
        let p = spki_point(&spki).unwrap();
        assert_eq!(p[0], 0);
        assert_eq!(p[63], 63);
        assert!(spki_point(&spki[..90]).is_none());
    }

    #[test]
    fn addresses_survive_the_trip_through_a_session() {
        for a in ["127.0.0.1:5683", "[::1]:40000", "[fe80::1]:1"] {
            let a: SocketAddr = a.parse().unwrap();
            let s = session_of(a);
            assert_eq!(unsafe { peer_of(&s) }, a);
        }
    }
}
