//! The LwM2M server fed datagrams from three peers on a virtual clock,
//! after one real registration and a served pull package: registration,
//! Update, Send, responses to its requests and fetches of /fw.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use lwm2m_gw::server::{Server, ServerConfig};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut s = Server::new(ServerConfig::default(), 3);
    let mut now = Instant::now();
    let dev = "127.0.0.1:5000".parse().unwrap();
    let mut reg = Message::new(MsgType::Con, Code::POST, 1, Token::new(&[1]).unwrap());
    reg.set_uri_path("rd");
    reg.add_option(opt::URI_QUERY, b"ep=fz".to_vec());
    reg.add_option(opt::URI_QUERY, b"lwm2m=1.1".to_vec());
    reg.set_uint_option(opt::CONTENT_FORMAT, 40);
    reg.payload = b"</1/0>,</3/0>,</5/0>,</3303/0>".to_vec();
    s.handle_datagram(now, 1, dev, &reg.encode());
    s.serve_package(
        "tok".into(),
        lwm2m_gw::server::packages::Package {
            endpoint: "fz".into(),
            image: "ab".repeat(32),
            size: 5000,
            secure: false,
        },
    );
    // A request in flight, so responses have something to match.
    s.command(now, 1, "fz", "Read", &serde_json::json!({"id": "/3/0"}));
    let peers = [
        dev,
        "127.0.0.1:5001".parse().unwrap(),
        "[::1]:5002".parse().unwrap(),
    ];
    let mut rest = data;
    while rest.len() >= 3 {
        let (head, tail) = rest.split_at(3);
        let peer = peers[head[0] as usize % 3];
        now += Duration::from_millis(head[1] as u64 * 100);
        let len = (head[2] as usize).min(tail.len());
        let (dgram, tail) = tail.split_at(len);
        rest = tail;
        s.handle_datagram(now, 2, peer, dgram);
        s.handle_timeout(now);
        while let Some(f) = s.poll_fetch() {
            let n = f.len;
            s.answer_fetch(now, f, Ok(vec![0; n]));
        }
        while s.poll_transmit().is_some() {}
        while s.poll_answer().is_some() {}
        while s.poll_event().is_some() {}
        while s.poll_report().is_some() {}
        while s.poll_persist().is_some() {}
    }
});
