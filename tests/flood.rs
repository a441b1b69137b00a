//! A flood does not cost a known device its datagrams: random datagrams
//! and a unique-endpoint Register flood at full speed against the CoAP
//! and DTLS ports while a simulated device is read over and over. The
//! short form of `cargo bench --bench flood` (which prints the latency
//! figures); this one checks only what must hold on any machine: every
//! Read answered, the registration cap held, and the drops counted.

mod common;

use common::{config, Gateway, Sim, TempDir};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A Register with endpoint `ep`, the shape a real client sends.
fn register(mid: u16, ep: &str) -> Vec<u8> {
    use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
    let mut m = Message::new(MsgType::Con, Code::POST, mid, Token::from_u64(mid as u64));
    m.set_uri_path("rd");
    m.set_uint_option(opt::CONTENT_FORMAT, 40);
    m.add_option(opt::URI_QUERY, format!("ep={ep}").into_bytes());
    m.add_option(opt::URI_QUERY, b"lt=300".to_vec());
    m.payload = b"</1/0>,</3/0>".to_vec();
    m.encode()
}

/// Sends until `stop`: random bytes, or Registers of new endpoints.
fn flooder(to: SocketAddr, registers: bool, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut rng = fastrand::Rng::with_seed(to.port() as u64);
    let mut buf = [0u8; 200];
    let mut sink = [0u8; 1500];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..64 {
            let ok = if registers {
                s.send(&register(n as u16, &format!("flood-{n}"))).is_ok()
            } else {
                let len = rng.usize(1..buf.len());
                rng.fill(&mut buf[..len]);
                s.send(&buf[..len]).is_ok()
            };
            n += ok as u64;
        }
        while s.recv(&mut sink).is_ok() {}
    }
    sent.fetch_add(n, Ordering::Relaxed);
}

#[test]
fn a_known_device_is_served_through_a_flood_and_the_drops_are_counted() {
    let dir = TempDir::new("flood");
    let gw = Gateway::start(
        &dir.0,
        &config(
            "127.0.0.1",
            "[dtls]\nport = 0\n[registration]\nmax_registrations = 300\n",
        ),
    );
    let dtls = gw.dtls.expect("DTLS on");
    let _sim = Sim::start(gw.addr, 1, "real-", "senml-json");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let floods: Vec<_> = [(gw.addr, false), (dtls, false), (gw.addr, true)]
        .into_iter()
        .map(|(to, reg)| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || flooder(to, reg, stop, sent))
        })
        .collect();
    // Reads of the real device while the flood runs; each must be
    // answered (the CLI waits out CoAP's retransmissions).
    let mut failed = Vec::new();
    for i in 0..40 {
        let out = gw.cli(&["rpc", "real-0", r#"Read {"id":"/3/0/9"}"#]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() || !text.contains("CONTENT") {
            failed.push(format!("Read {i}: {text}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    assert!(
        failed.is_empty(),
        "Reads failed under the flood: {failed:?}"
    );
    assert!(
        sent.load(Ordering::Relaxed) > 10_000,
        "the flood was no flood"
    );

    let out = gw.cli(&["stats", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &st["value"];
    let n = |j: &serde_json::Value| j.as_u64().unwrap_or(0);
    assert!(n(&v["registrations"]) <= 300, "the cap held: {v}");
    // Junk dropped by the kernel's filter on both ports, counted.
    assert!(n(&v["udp"]["coap"]["kernelDropped"]) > 0, "{v}");
    assert!(n(&v["udp"]["dtls"]["kernelDropped"]) > 0, "{v}");
    assert!(n(&v["udp"]["coap"]["received"]) > 1000, "{v}");
    // Still answering new devices afterwards: admitted, or 5.03 at the cap.
    let mut c = common::Client::new(gw.addr);
    let reg = c.register("real-after", &["lt=60"], b"</3/0>");
    let want = if n(&v["registrations"]) < 300 {
        lwm2m_gw::coap::Code::CREATED
    } else {
        lwm2m_gw::coap::Code::SERVICE_UNAVAILABLE
    };
    assert_eq!(reg.code, want, "{v}");
}
