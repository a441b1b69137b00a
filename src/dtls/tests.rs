//! In-memory handshakes between our server and an Mbed TLS client, on a
//! virtual clock.

use super::identity::{self, Files};
use super::mbed::{Session, Step};
use super::*;
use crate::credentials::{Credential, Security};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn temp_dir() -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "lwm2m-gw-dtls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn psk_credential(ep: &str, identity: &str, key: &[u8]) -> Credential {
    Credential {
        endpoint: ep.into(),
        profile: "default".into(),
        security: Security::Psk {
            identity: identity.into(),
            key: key.to_vec(),
        },
    }
}

struct Net {
    server: DtlsServer,
    client: Session,
    addr: SocketAddr,
    start: Instant,
    now_ms: u64,
    /// Datagrams from the server the test chose to lose.
    lose_server: usize,
    received: Vec<Vec<u8>>,
    client_step: Step,
}

impl Net {
    fn new(creds: &[Credential], identity: &str, key: &[u8]) -> Net {
        let dir = temp_dir();
        let id = identity::load(&Files::default(), &dir).expect("identity");
        let rng = identity::rng().unwrap();
        let settings = Settings::default();
        let cfg = identity::server_config(&settings, &id, rng.clone()).unwrap();
        let start = Instant::now();
        let mut server = DtlsServer::new(cfg, settings.clone(), start);
        server.set_keys(Keys::from_credentials(creds));
        let ccfg =
            identity::psk_client_config(&settings.suites[..1], identity, key, rng, None).unwrap();
        let client = Session::client(&ccfg).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        Net {
            server,
            client,
            addr: "127.0.0.1:40000".parse().unwrap(),
            start,
            now_ms: 0,
            lose_server: 0,
            received: Vec::new(),
            client_step: Step::Handshaking,
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.now_ms)
    }

    /// Moves datagrams both ways until neither side has anything to say.
    fn pump(&mut self) {
        let none = Keys::default();
        for _ in 0..50 {
            let mut moved = false;
            let out: Vec<Vec<u8>> = self.client.take_transmits().collect();
            for d in out {
                moved = true;
                self.server.handle_datagram(self.now(), self.addr, &d);
            }
            while let Some((to, d)) = self.server.poll_transmit() {
                assert_eq!(to, self.addr);
                moved = true;
                if self.lose_server > 0 {
                    self.lose_server -= 1;
                    continue;
                }
                let mut plain = Vec::new();
                self.client_step = self.client.handle(self.now_ms, &none, &d, &mut plain);
                self.received.extend(plain);
            }
            if !moved {
                return;
            }
        }
        panic!("the peers never went quiet");
    }

    fn connect(&mut self) {
        self.client_step = self.client.start(self.now_ms, &Keys::default());
        self.pump();
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

#[test]
fn psk_handshake_binds_the_identity_to_its_endpoint_and_carries_data_both_ways() {
    let key = [0x11u8; 16];
    let mut n = Net::new(&[psk_credential("node-1", "id-1", &key)], "id-1", &key);
    n.connect();
    assert!(n.client.is_open(), "client: {:?}", n.client_step);
    let ev = n.events();
    assert_eq!(
        ev,
        vec![Event::Established {
            peer: n.addr,
            auth: Authenticated {
                endpoint: "node-1".into(),
                mode: "PSK",
                pinned: true
            }
        }]
    );
    assert_eq!(n.server.stats().hello_verify, 1, "cookie exchange first");
    n.client.write(n.now_ms, b"coap up").unwrap();
    n.pump();
    assert_eq!(
        n.events(),
        vec![Event::Data {
            peer: n.addr,
            bytes: b"coap up".to_vec()
        }]
    );
    n.server.send(n.now(), n.addr, b"coap down").unwrap();
    n.pump();
    assert_eq!(n.received, vec![b"coap down".to_vec()]);
    assert_eq!(n.server.stats().sessions, 1);
}

/// Handshakes with the client's identity and key and expects a refusal
/// that leaves nothing behind.
fn assert_refused(identity: &str, key: &[u8]) {
    let mut n = Net::new(
        &[psk_credential("node-1", "id-1", &[0x11; 16])],
        identity,
        key,
    );
    n.connect();
    assert!(!n.client.is_open());
    assert!(n.events().is_empty());
    let s = n.server.stats();
    assert_eq!((s.sessions, s.handshaking, s.failed), (0, 0, 1));
}

#[test]
fn unknown_psk_identity_fails_the_handshake() {
    assert_refused("id-x", &[0x11; 16]);
}

#[test]
fn wrong_psk_key_fails_the_handshake() {
    assert_refused("id-1", &[0x22; 16]);
}

#[test]
fn lost_server_flight_is_resent_when_our_clock_says_so() {
    let key = [0x11u8; 16];
    let mut n = Net::new(&[psk_credential("node-1", "id-1", &key)], "id-1", &key);
    n.client.start(0, &Keys::default());
    // HelloVerifyRequest gets through; the ServerHello flight is lost.
    let out: Vec<Vec<u8>> = n.client.take_transmits().collect();
    for d in out {
        n.server.handle_datagram(n.now(), n.addr, &d);
    }
    n.pump_once_client_side();
    n.lose_server = usize::MAX;
    n.pump();
    n.lose_server = 0;
    assert!(!n.client.is_open());
    let due = n.server.poll_timeout().expect("a timer runs");
    assert!(due <= n.now() + Duration::from_millis(200));
    // Nothing is resent before the retransmission timeout (1 s)...
    n.now_ms = 500;
    n.server.handle_timeout(n.now());
    assert!(n.server.poll_transmit().is_none());
    // ...and the flight comes again after it.
    n.now_ms = 1100;
    n.server.handle_timeout(n.now());
    n.pump();
    assert!(n.client.is_open(), "client: {:?}", n.client_step);
}

impl Net {
    fn pump_once_client_side(&mut self) {
        let none = Keys::default();
        while let Some((_, d)) = self.server.poll_transmit() {
            let mut plain = Vec::new();
            self.client.handle(self.now_ms, &none, &d, &mut plain);
        }
    }
}

#[test]
fn client_hello_with_record_version_fe00_completes_the_handshake() {
    let key = [0x11u8; 16];
    let mut n = Net::new(&[psk_credential("node-1", "id-1", &key)], "id-1", &key);
    n.client.start(0, &Keys::default());
    let none = Keys::default();
    for round in 0..2 {
        let out: Vec<Vec<u8>> = n.client.take_transmits().collect();
        for mut d in out {
            if d[0] == 22 && d[1] == 0xFE {
                d[2] = 0x00;
            }
            n.server.handle_datagram(n.now(), n.addr, &d);
        }
        while let Some((_, d)) = n.server.poll_transmit() {
            n.client.handle(0, &none, &d, &mut Vec::new());
        }
        assert!(round == 0 || n.server.stats().handshaking == 1);
    }
    n.pump();
    assert!(n.client.is_open());
}

#[test]
fn idle_sessions_are_evicted_and_reported_closed() {
    let key = [0x11u8; 16];
    let mut n = Net::new(&[psk_credential("node-1", "id-1", &key)], "id-1", &key);
    n.server.settings.idle_timeout = Duration::from_secs(10);
    n.connect();
    n.events();
    n.now_ms = 5_000;
    n.server.handle_timeout(n.now());
    assert_eq!(n.server.stats().sessions, 1);
    n.now_ms = 11_000;
    n.server.handle_timeout(n.now());
    assert_eq!(n.server.stats().sessions, 0);
    assert!(matches!(n.events().as_slice(), [Event::Closed { .. }]));
    assert!(n.server.send(n.now(), n.addr, b"x").is_err());
}

#[test]
fn records_from_unknown_peers_and_garbage_are_dropped_without_state() {
    let key = [0x11u8; 16];
    let mut n = Net::new(&[psk_credential("node-1", "id-1", &key)], "id-1", &key);
    // Not even a record: garbage, counted as such.
    for d in [&b""[..], b"\x17\xfe\xfd\x00\x01", &[0xff; 40]] {
        n.server.handle_datagram(n.now(), n.addr, d);
    }
    // A well-formed application-data record from a peer with no session.
    let mut record = vec![0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7, 0, 4];
    record.extend_from_slice(&[1, 2, 3, 4]);
    n.server.handle_datagram(n.now(), n.addr, &record);
    assert!(n.server.poll_transmit().is_none());
    assert_eq!(n.server.stats().garbage, 3);
    assert_eq!(n.server.stats().no_session, 1);
    assert_eq!(n.server.poll_timeout(), None, "no state kept");
}

#[test]
fn without_a_raw_key_stack_a_raw_key_hello_gets_an_alert_and_leaves_no_state() {
    let key = [0x11u8; 16];
    let mut n = Net::new(&[psk_credential("node-1", "id-1", &key)], "id-1", &key);
    let hello = hello::tests::client_hello([0xFE, 0xFD], &[], true);
    n.server.handle_datagram(n.now(), n.addr, &hello);
    let (to, alert) = n.server.poll_transmit().expect("an alert");
    assert_eq!(to, n.addr);
    assert_eq!(alert[0], 21, "alert record");
    assert_eq!(
        &alert[alert.len() - 2..],
        &[2, hello::UNSUPPORTED_CERTIFICATE]
    );
    assert_eq!(n.server.stats().rpk_refused, 1);
    assert_eq!(n.server.poll_timeout(), None);
}

fn made_certificate(dir: &std::path::Path) -> mbedtls::alloc::Box<mbedtls::x509::Certificate> {
    let mut pem = std::fs::read(dir.join("server-cert.pem")).unwrap();
    pem.push(0);
    mbedtls::x509::Certificate::from_pem(&pem).unwrap()
}

#[test]
fn the_made_certificate_names_the_host_and_is_made_again_when_the_names_change() {
    use identity::CertNames;
    let dir = temp_dir();
    let names = CertNames {
        host: "127.0.0.1".into(),
        dns: Vec::new(),
        ips: Vec::new(),
    };
    let files = Files {
        names: names.clone(),
        ..Files::default()
    };
    let first = identity::load(&files, &dir).expect("identity");
    let c = made_certificate(&dir);
    assert_eq!(c.subject().unwrap(), "CN=127.0.0.1");
    // No SAN unless asked: Mbed TLS 2.x clients then ignore the CN.
    let san_oid = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let ext = c.extensions_raw().unwrap_or_default();
    assert!(!ext.windows(5).any(|w| w == san_oid), "{ext:x?}");
    // The same names again: the same certificate, nothing made.
    let again = identity::load(&files, &dir).expect("identity");
    assert!(again.made.is_empty() && again.remade.is_empty());
    // SANs configured: made again, same key.
    let files = Files {
        names: CertNames {
            host: "gw.site.example".into(),
            dns: vec!["gw.site.example".into()],
            ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        },
        ..Files::default()
    };
    let third = identity::load(&files, &dir).expect("identity");
    assert!(third.made.is_empty(), "{:?}", third.made);
    assert_eq!(third.remade.len(), 1, "{:?}", third.remade);
    assert_eq!(third.public_key, first.public_key);
    let c = made_certificate(&dir);
    assert_eq!(c.subject().unwrap(), "CN=gw.site.example");
    let ext = c.extensions_raw().unwrap();
    assert!(ext.windows(5).any(|w| w == san_oid), "{ext:x?}");
    assert!(
        ext.windows(6).any(|w| w == [0x87, 4, 127, 0, 0, 1]),
        "{ext:x?}"
    );
    assert!(ext.windows(2).any(|w| w == [0x87, 16]), "{ext:x?}");
    let dns = b"gw.site.example";
    assert!(ext.windows(dns.len()).any(|w| w == dns), "{ext:x?}");
    let _ = std::fs::remove_dir_all(&dir);
}
