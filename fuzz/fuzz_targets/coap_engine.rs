//! The CoAP engine fed datagram sequences from three peers on a virtual
//! clock: each input byte pair chooses peer and time step, then a datagram.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::coap::{Config, Engine, Event, Message};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        stream_block1: vec!["5/0/0".into()],
        ..Config::default()
    };
    let mut e = Engine::new(cfg, 7);
    let mut now = Instant::now();
    let peers = [
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
        "[::1]:3".parse().unwrap(),
    ];
    let mut rest = data;
    while rest.len() >= 3 {
        let (head, tail) = rest.split_at(3);
        let peer = peers[head[0] as usize % 3];
        now += Duration::from_millis(head[1] as u64 * 50);
        let len = (head[2] as usize).min(tail.len());
        let (dgram, tail) = tail.split_at(len);
        rest = tail;
        e.handle_datagram(now, peer, dgram);
        e.handle_timeout(now);
        while let Some(ev) = e.poll_event() {
            if let Event::Request { id, .. } = ev {
                // Answer some with a large body (block-wise), some not at all.
                if id.0 % 2 == 0 {
                    let mut m = Message::new(
                        lwm2m_gw::coap::MsgType::Ack,
                        lwm2m_gw::coap::Code::CONTENT,
                        0,
                        lwm2m_gw::coap::Token::EMPTY,
                    );
                    m.payload = vec![7; (id.0 as usize * 97) % 3000];
                    e.respond(now, id, m);
                }
            }
        }
        while e.poll_transmit().is_some() {}
    }
});
