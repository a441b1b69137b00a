//! Shared helpers of the engine's tests: a peer, an engine, messages, and
//! drains of what the engine sent and reported.

pub(super) use super::*;
pub(super) use crate::coap::msg::{opt, BlockOpt, Code, Message, MsgType, Token};
pub(super) use std::net::SocketAddr;
pub(super) use std::time::{Duration, Instant};

pub(super) fn peer() -> SocketAddr {
    "127.0.0.1:5683".parse().unwrap()
}

pub(super) fn engine(cfg: Config) -> (Engine, Instant) {
    (Engine::new(cfg, 42), Instant::now())
}

pub(super) fn con(code: Code, mid: u16, token: &[u8], path: &str) -> Message {
    let mut m = Message::new(MsgType::Con, code, mid, Token::new(token).unwrap());
    m.set_uri_path(path);
    m
}

pub(super) fn drain(e: &mut Engine) -> Vec<Message> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|t| Message::decode(&t.bytes).unwrap())
        .collect()
}

pub(super) fn events(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

pub(super) fn only_request(e: &mut Engine) -> (IncomingId, Message) {
    let ev = events(e);
    assert_eq!(ev.len(), 1, "{ev:?}");
    match ev.into_iter().next().unwrap() {
        Event::Request { id, msg, .. } => (id, msg),
        other => panic!("expected a request, got {other:?}"),
    }
}

pub(super) fn changed() -> Message {
    Message::new(MsgType::Ack, Code::CHANGED, 0, Token::EMPTY)
}

pub(super) fn content(payload: &[u8]) -> Message {
    let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
    m.payload = payload.to_vec();
    m
}

pub(super) fn block1_req(mid: u16, num: u32, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut m = con(Code::POST, mid, b"up", "rd");
    m.set_option(opt::BLOCK1, BlockOpt { num, more, szx: 0 }.encode());
    m.payload = payload.to_vec();
    m.encode()
}

/// An established observation of /3303/0/5700 whose first answer carried Observe=10.
pub(super) fn observing(e: &mut Engine, t0: Instant) -> (RequestId, Token) {
    let mut req = con(Code::GET, 0, b"", "3303/0/5700");
    req.set_uint_option(opt::OBSERVE, 0);
    let id = e.request(t0, peer(), req).unwrap();
    let sent = drain(e).remove(0);
    let mut first = Message::new(MsgType::Ack, Code::CONTENT, sent.mid, sent.token);
    first.set_uint_option(opt::OBSERVE, 10);
    e.handle_datagram(t0, peer(), &first.encode());
    assert!(matches!(&events(e)[..], [Event::Response { .. }]));
    (id, sent.token)
}

pub(super) fn notification(t: MsgType, mid: u16, token: Token, seq: u32, body: &[u8]) -> Message {
    let mut n = Message::new(t, Code::CONTENT, mid, token);
    n.set_uint_option(opt::OBSERVE, seq as u64);
    n.payload = body.to_vec();
    n
}

pub(super) fn notified(e: &mut Engine) -> Vec<Vec<u8>> {
    events(e)
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Notification { msg, .. } => Some(msg.payload),
            _ => None,
        })
        .collect()
}
