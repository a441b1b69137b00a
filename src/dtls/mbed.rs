//! DTLS sessions on Mbed TLS, driven without sockets or clocks: datagrams
//! and milliseconds in, datagrams and plaintext out.

use super::{DtlsError, Keys};
use mbedtls::ssl::config::{Config, Endpoint, Preset, Transport};
use mbedtls_sys as sys;
use std::collections::VecDeque;
use std::ffi::{c_void, CStr};
use std::os::raw::{c_int, c_uchar};
use std::sync::Arc;

/// Datagrams a session holds before the library has read them.
const MAX_INBOX: usize = 8;
/// Largest plaintext record we read.
const READ_BUF: usize = 2048;
/// Record size for our flights; fits an IPv6 minimum-MTU path.
const MTU: u16 = 1280;

/// What the library's callbacks see: our clock, our queues, our keys.
struct Io {
    now_ms: u64,
    timer_start: u64,
    timer_int: u32,
    timer_fin: u32,
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
    /// Only valid during a call into the library.
    keys: *const Keys,
    /// The endpoint a PSK identity or a stored certificate names.
    bound: Option<String>,
    /// The PSK identity the client presented.
    identity: Option<String>,
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The handshake goes on.
    Handshaking,
    /// The handshake finished in this call.
    Established,
    /// Established before this call.
    Open,
    /// The session ended; the reason, for the log.
    Closed(String),
}

/// One DTLS session with one peer.
pub struct Session {
    ssl: Box<sys::ssl_context>,
    io: Box<Io>,
    established: bool,
    closed: bool,
    // The library's context points into the config: it must outlive `ssl`.
    _config: Arc<Config>,
}

// The raw pointers inside only ever point at data the session owns.
unsafe impl Send for Session {}

impl Session {
    /// A server-side session for a peer that passed the cookie exchange.
    pub fn server(config: &Arc<Config>, client_id: &[u8]) -> Result<Session, DtlsError> {
        let mut s = Session::new(config)?;
        unsafe {
            let io = &mut *s.io as *mut Io as *mut c_void;
            let r =
                sys::ssl_set_client_transport_id(&mut *s.ssl, client_id.as_ptr(), client_id.len());
            if r != 0 {
                return Err(DtlsError::Library(format!("client id: {}", describe(r))));
            }
            sys::ssl_set_verify(&mut *s.ssl, Some(verify_cb), io);
        }
        Ok(s)
    }

    /// A client-side session; `start` sends its first flight.
    pub fn client(config: &Arc<Config>) -> Result<Session, DtlsError> {
        Session::new(config)
    }

    fn new(config: &Arc<Config>) -> Result<Session, DtlsError> {
        let mut io = Box::new(Io {
            now_ms: 0,
            timer_start: 0,
            timer_int: 0,
            timer_fin: 0,
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            keys: std::ptr::null(),
            bound: None,
            identity: None,
        });
        let mut ssl = Box::new(sys::ssl_context::default());
        unsafe {
            sys::ssl_init(&mut *ssl);
            let conf: *const sys::ssl_config = (&**config).into();
            let r = sys::ssl_setup(&mut *ssl, conf);
            if r != 0 {
                sys::ssl_free(&mut *ssl);
                return Err(DtlsError::Library(format!("ssl_setup: {}", describe(r))));
            }
            let p = &mut *io as *mut Io as *mut c_void;
            sys::ssl_set_bio(&mut *ssl, p, Some(bio_send), Some(bio_recv), None);
            sys::ssl_set_timer_cb(&mut *ssl, p, Some(set_timer), Some(get_timer));
            sys::ssl_set_mtu(&mut *ssl, MTU);
        }
        Ok(Session {
            ssl,
            io,
            established: false,
            closed: false,
            _config: config.clone(),
        })
    }

    fn enter(&mut self, now_ms: u64, keys: &Keys) {
        self.io.now_ms = now_ms;
        self.io.keys = keys;
    }

    fn leave(&mut self) {
        self.io.keys = std::ptr::null();
    }

    /// Client side: sends the first ClientHello.
    pub fn start(&mut self, now_ms: u64, keys: &Keys) -> Step {
        self.enter(now_ms, keys);
        let s = self.drive(&mut Vec::new());
        self.leave();
        s
    }

    /// Feeds one datagram; plaintext records come out in `plain`.
    pub fn handle(
        &mut self,
        now_ms: u64,
        keys: &Keys,
        datagram: &[u8],
        plain: &mut Vec<Vec<u8>>,
    ) -> Step {
        if self.closed {
            return Step::Closed("session closed".into());
        }
        if self.io.inbox.len() >= MAX_INBOX {
            self.io.inbox.pop_front();
        }
        self.io.inbox.push_back(datagram.to_vec());
        self.enter(now_ms, keys);
        let s = self.drive(plain);
        self.leave();
        s
    }

    /// Runs the retransmission timer.
    pub fn handle_timeout(&mut self, now_ms: u64, keys: &Keys) -> Step {
        if self.closed || self.established {
            return self.step_now();
        }
        self.enter(now_ms, keys);
        let s = self.drive(&mut Vec::new());
        self.leave();
        s
    }

    /// When the handshake's retransmission timer runs out.
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.established && !self.closed && self.io.timer_fin > 0)
            .then(|| self.io.timer_start + u64::from(self.io.timer_fin))
    }

    /// Encrypts one CoAP message into a record.
    pub fn write(&mut self, now_ms: u64, data: &[u8]) -> Result<(), DtlsError> {
        if !self.established || self.closed {
            return Err(DtlsError::NotEstablished);
        }
        self.io.now_ms = now_ms;
        let r = unsafe { sys::ssl_write(&mut *self.ssl, data.as_ptr(), data.len()) };
        if r < 0 {
            return Err(DtlsError::Library(format!("write: {}", describe(r))));
        }
        if (r as usize) < data.len() {
            return Err(DtlsError::TooLarge(data.len()));
        }
        Ok(())
    }

    /// Sends close_notify and ends the session.
    pub fn close(&mut self) {
        if !self.closed {
            if self.established {
                unsafe { sys::ssl_close_notify(&mut *self.ssl) };
            }
            self.closed = true;
        }
    }

    /// Ends a session with a fatal access_denied alert: the handshake was
    /// fine but the peer may not use the gateway.
    pub fn deny(&mut self) {
        if !self.closed {
            unsafe {
                sys::ssl_send_alert_message(
                    &mut *self.ssl,
                    sys::SSL_ALERT_LEVEL_FATAL as u8,
                    sys::SSL_ALERT_MSG_ACCESS_DENIED as u8,
                )
            };
            self.closed = true;
        }
    }

    /// Datagrams to send, oldest first.
    pub fn take_transmits(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.io.outbox.drain(..)
    }

    /// True once the handshake finished and until the session ends.
    pub fn is_open(&self) -> bool {
        self.established && !self.closed
    }

    /// The endpoint the PSK identity or the stored certificate belongs to.
    pub fn bound_endpoint(&self) -> Option<&str> {
        self.io.bound.as_deref()
    }

    /// The PSK identity the client presented, if any.
    pub fn psk_identity(&self) -> Option<&str> {
        self.io.identity.as_deref()
    }

    /// The negotiated cipher suite's name.
    pub fn ciphersuite(&self) -> String {
        unsafe {
            let p = sys::ssl_get_ciphersuite(&*self.ssl);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    /// The client's certificate (DER), when it sent one.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        unsafe {
            let c = sys::ssl_get_peer_cert(&*self.ssl);
            if c.is_null() || (*c).raw.p.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts((*c).raw.p, (*c).raw.len).to_vec())
        }
    }

    /// The common name of the client's certificate.
    pub fn peer_common_name(&self) -> Option<String> {
        let dn = unsafe {
            let c = sys::ssl_get_peer_cert(&*self.ssl);
            if c.is_null() {
                return None;
            }
            let mut buf = [0 as std::os::raw::c_char; 512];
            if sys::x509_dn_gets(buf.as_mut_ptr(), buf.len(), &(*c).subject) < 0 {
                return None;
            }
            CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
        };
        common_name(&dn)
    }

    /// Certificate verification flags (0: the chain is trusted).
    pub fn verify_result(&self) -> u32 {
        unsafe { sys::ssl_get_verify_result(&*self.ssl) }
    }

    fn step_now(&self) -> Step {
        if self.closed {
            Step::Closed("session closed".into())
        } else if self.established {
            Step::Open
        } else {
            Step::Handshaking
        }
    }

    fn drive(&mut self, plain: &mut Vec<Vec<u8>>) -> Step {
        let mut step = self.step_now();
        if !self.established {
            // A timer that ran out makes the library resend before it reads
            // the datagram waiting for it: go round until the inbox is empty.
            for _ in 0..=MAX_INBOX {
                let r = unsafe { sys::ssl_handshake(&mut *self.ssl) };
                match r {
                    0 => {
                        self.established = true;
                        step = Step::Established;
                        break;
                    }
                    sys::ERR_SSL_WANT_READ | sys::ERR_SSL_WANT_WRITE => {
                        if self.io.inbox.is_empty() {
                            return Step::Handshaking;
                        }
                    }
                    e => {
                        self.closed = true;
                        return Step::Closed(describe(e));
                    }
                }
            }
            if !self.established {
                return Step::Handshaking;
            }
        }
        let mut buf = [0u8; READ_BUF];
        loop {
            let r = unsafe { sys::ssl_read(&mut *self.ssl, buf.as_mut_ptr(), buf.len()) };
            match r {
                n if n > 0 => plain.push(buf[..n as usize].to_vec()),
                0 | sys::ERR_SSL_WANT_READ | sys::ERR_SSL_WANT_WRITE => {
                    if self.io.inbox.is_empty() {
                        return step;
                    }
                }
                sys::ERR_SSL_PEER_CLOSE_NOTIFY => {
                    self.closed = true;
                    return Step::Closed("the peer closed the session".into());
                }
                e => {
                    self.closed = true;
                    return Step::Closed(describe(e));
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        unsafe { sys::ssl_free(&mut *self.ssl) };
    }
}

/// A server or client configuration shell with our callbacks installed:
/// PSK by identity, cookies already checked by the stateless front,
/// DTLS 1.2 only, the given cipher suites and handshake timeouts.
pub fn config(
    endpoint: Endpoint,
    suites: &[c_int],
    handshake_ms: (u32, u32),
) -> Result<Config, DtlsError> {
    let server = matches!(endpoint, Endpoint::Server);
    let mut c = Config::new(endpoint, Transport::Datagram, Preset::Default);
    let mut list = suites.to_vec();
    list.push(0);
    c.set_ciphersuites(Arc::new(list));
    unsafe {
        let p: *mut sys::ssl_config = (&mut c).into();
        sys::ssl_conf_min_version(p, 3, 3);
        sys::ssl_conf_max_version(p, 3, 3);
        sys::ssl_conf_handshake_timeout(p, handshake_ms.0, handshake_ms.1);
        if server {
            sys::ssl_conf_psk_cb(p, Some(psk_cb), std::ptr::null_mut());
            sys::ssl_conf_dtls_cookies(
                p,
                Some(cookie_write),
                Some(cookie_check),
                std::ptr::null_mut(),
            );
        }
    }
    Ok(c)
}

/// Sets a config's certificate request mode.
pub fn set_authmode(c: &mut Config, required: bool) {
    let mode = if required {
        sys::SSL_VERIFY_REQUIRED
    } else {
        sys::SSL_VERIFY_OPTIONAL
    };
    unsafe { sys::ssl_conf_authmode((&mut *c).into(), mode) };
}

/// The IANA id of a cipher suite given by its IANA name
/// (`TLS_PSK_WITH_AES_128_CCM_8`), if this build has it.
pub fn suite_id(name: &str) -> Option<c_int> {
    let mbed = std::ffi::CString::new(name.replace('_', "-")).ok()?;
    let id = unsafe { sys::ssl_get_ciphersuite_id(mbed.as_ptr()) };
    (id != 0).then_some(id)
}

/// The library's words for an error code.
pub fn describe(code: c_int) -> String {
    let what = match code {
        sys::ERR_SSL_UNKNOWN_IDENTITY => "unknown PSK identity",
        sys::ERR_SSL_INVALID_MAC => "bad record MAC (wrong key?)",
        sys::ERR_SSL_TIMEOUT => "handshake timed out",
        sys::ERR_SSL_FATAL_ALERT_MESSAGE => "the peer sent a fatal alert",
        sys::ERR_X509_CERT_VERIFY_FAILED => "certificate not trusted",
        sys::ERR_SSL_BAD_HS_CERTIFICATE => "bad certificate message",
        _ => "",
    };
    let mut buf = [0 as std::os::raw::c_char; 160];
    let lib = unsafe {
        sys::strerror(code, buf.as_mut_ptr(), buf.len());
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    };
    if what.is_empty() {
        format!("{lib} (-0x{:04X})", -code)
    } else {
        format!("{what}: {lib} (-0x{:04X})", -code)
    }
}

/// The CN of a distinguished name as Mbed TLS prints it (`CN=ep1, O=x`).
fn common_name(dn: &str) -> Option<String> {
    dn.split(", ")
        .find_map(|part| part.strip_prefix("CN="))
        .map(str::to_string)
}

unsafe fn io_of<'a>(p: *mut c_void) -> &'a mut Io {
    &mut *(p as *mut Io)
}

unsafe extern "C" fn bio_send(p: *mut c_void, buf: *const c_uchar, len: usize) -> c_int {
    io_of(p)
        .outbox
        .push(std::slice::from_raw_parts(buf, len).to_vec());
    len as c_int
}

unsafe extern "C" fn bio_recv(p: *mut c_void, buf: *mut c_uchar, len: usize) -> c_int {
    match io_of(p).inbox.pop_front() {
        None => sys::ERR_SSL_WANT_READ,
        Some(d) => {
            // A datagram longer than the library's buffer is cut, as a
            // socket read would cut it; the record layer then drops it.
            let n = d.len().min(len);
            std::ptr::copy_nonoverlapping(d.as_ptr(), buf, n);
            n as c_int
        }
    }
}

unsafe extern "C" fn set_timer(p: *mut c_void, int_ms: u32, fin_ms: u32) {
    let io = io_of(p);
    io.timer_start = io.now_ms;
    io.timer_int = int_ms;
    io.timer_fin = fin_ms;
}

unsafe extern "C" fn get_timer(p: *mut c_void) -> c_int {
    let io = io_of(p);
    if io.timer_fin == 0 {
        return -1;
    }
    let elapsed = io.now_ms.saturating_sub(io.timer_start);
    if elapsed >= u64::from(io.timer_fin) {
        2
    } else if elapsed >= u64::from(io.timer_int) {
        1
    } else {
        0
    }
}

unsafe extern "C" fn psk_cb(
    _p: *mut c_void,
    ssl: *mut sys::ssl_context,
    identity: *const c_uchar,
    len: usize,
) -> c_int {
    let io = io_of((*ssl).p_bio);
    let id = std::slice::from_raw_parts(identity, len);
    io.identity = Some(String::from_utf8_lossy(id).into_owned());
    if io.keys.is_null() {
        return -1;
    }
    match (*io.keys).psk(id) {
        Some((endpoint, key)) => {
            io.bound = Some(endpoint.to_string());
            sys::ssl_set_hs_psk(ssl, key.as_ptr(), key.len())
        }
        // The library answers unknown_psk_identity.
        None => -1,
    }
}

unsafe extern "C" fn verify_cb(
    p: *mut c_void,
    crt: *mut sys::x509_crt,
    depth: c_int,
    flags: *mut u32,
) -> c_int {
    let io = io_of(p);
    if depth == 0 && !io.keys.is_null() && !(*crt).raw.p.is_null() {
        let der = std::slice::from_raw_parts((*crt).raw.p, (*crt).raw.len);
        if let Some(endpoint) = (*io.keys).certificate(der) {
            // A certificate stored for an endpoint is trusted as itself,
            // whoever signed it.
            io.bound = Some(endpoint.to_string());
            *flags = 0;
        }
    }
    0
}

unsafe extern "C" fn cookie_write(
    _p: *mut c_void,
    _p_out: *mut *mut c_uchar,
    _end: *mut c_uchar,
    _cli_id: *const c_uchar,
    _len: usize,
) -> c_int {
    // Never asked: the front has checked the cookie already.
    -1
}

unsafe extern "C" fn cookie_check(
    _p: *mut c_void,
    _cookie: *const c_uchar,
    _clen: usize,
    _cli_id: *const c_uchar,
    _len: usize,
) -> c_int {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_found_among_other_attributes() {
        assert_eq!(
            common_name("C=DE, O=Acme, CN=node-7").as_deref(),
            Some("node-7")
        );
        assert_eq!(common_name("O=Acme"), None);
    }

    #[test]
    fn iana_suite_names_map_to_their_ids() {
        assert_eq!(suite_id("TLS_PSK_WITH_AES_128_CCM_8"), Some(0xC0A8));
        assert_eq!(suite_id("TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"), Some(0xC0AE));
        assert_eq!(suite_id("TLS_NO_SUCH_SUITE"), None);
    }
}
