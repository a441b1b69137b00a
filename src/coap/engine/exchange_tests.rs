use super::super::test_util::*;

#[test]
fn timeout_failure_is_reported_as_event() {
    let cfg = Config {
        max_retransmit: 0,
        ..Default::default()
    };
    let (mut e, t0) = engine(cfg);
    let id = e.request(t0, peer(), con(Code::GET, 0, b"", "3")).unwrap();
    drain(&mut e);
    e.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(
        events(&mut e),
        vec![Event::Failed {
            id,
            peer: peer(),
            error: RequestError::Timeout
        }]
    );
}

#[test]
fn empty_ack_then_separate_response_completes_request_once() {
    let (mut e, t0) = engine(Config::default());
    let id = e
        .request(t0, peer(), con(Code::GET, 0, b"", "3/0"))
        .unwrap();
    let sent = drain(&mut e).remove(0);
    e.handle_datagram(
        t0,
        peer(),
        &Message::new(MsgType::Ack, Code::EMPTY, sent.mid, Token::EMPTY).encode(),
    );
    assert!(events(&mut e).is_empty());
    let mut sep = Message::new(MsgType::Con, Code::CONTENT, 500, sent.token);
    sep.payload = b"v".to_vec();
    e.handle_datagram(t0, peer(), &sep.encode());
    let acks = drain(&mut e);
    assert_eq!((acks[0].mtype, acks[0].mid), (MsgType::Ack, 500));
    match &events(&mut e)[..] {
        [Event::Response { id: got, msg, .. }] => {
            assert_eq!(*got, id);
            assert_eq!(msg.payload, b"v");
        }
        other => panic!("{other:?}"),
    }
    // A duplicate of the separate response is acknowledged again, not delivered.
    e.handle_datagram(t0, peer(), &sep.encode());
    assert_eq!(drain(&mut e).len(), 1);
    assert!(events(&mut e).is_empty());
}

#[test]
fn separate_response_never_arriving_times_out() {
    let (mut e, t0) = engine(Config::default());
    let id = e
        .request(t0, peer(), con(Code::GET, 0, b"", "3/0"))
        .unwrap();
    let sent = drain(&mut e).remove(0);
    e.handle_datagram(
        t0,
        peer(),
        &Message::new(MsgType::Ack, Code::EMPTY, sent.mid, Token::EMPTY).encode(),
    );
    let t = e.poll_timeout().unwrap();
    assert!(t <= t0 + Config::default().response_timeout);
    e.handle_timeout(t0 + Config::default().response_timeout);
    assert_eq!(
        events(&mut e),
        vec![Event::Failed {
            id,
            peer: peer(),
            error: RequestError::Timeout
        }]
    );
}

#[test]
fn nstart_holds_second_request_until_first_completes() {
    let (mut e, t0) = engine(Config::default());
    let _a = e.request(t0, peer(), con(Code::GET, 0, b"", "1")).unwrap();
    let _b = e.request(t0, peer(), con(Code::GET, 0, b"", "2")).unwrap();
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    let mut ack = content(b"1");
    ack.mid = out[0].mid;
    ack.token = out[0].token;
    e.handle_datagram(t0, peer(), &ack.encode());
    let out2 = drain(&mut e);
    assert_eq!(out2.len(), 1);
    assert_eq!(out2[0].uri_path(), vec!["2"]);
    assert_ne!(out2[0].mid, out[0].mid);
    // Another peer is not held back.
    let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
    e.request(t0, other, con(Code::GET, 0, b"", "3")).unwrap();
    assert_eq!(drain(&mut e).len(), 1);
}

#[test]
fn per_peer_queue_is_bounded() {
    let cfg = Config {
        max_queue_per_peer: 2,
        ..Default::default()
    };
    let (mut e, t0) = engine(cfg);
    for _ in 0..3 {
        e.request(t0, peer(), con(Code::GET, 0, b"", "1")).unwrap();
    }
    assert_eq!(
        e.request(t0, peer(), con(Code::GET, 0, b"", "1")),
        Err(EngineError::Busy)
    );
}

#[test]
fn reset_fails_the_request() {
    let (mut e, t0) = engine(Config::default());
    let id = e.request(t0, peer(), con(Code::GET, 0, b"", "1")).unwrap();
    let sent = drain(&mut e).remove(0);
    e.handle_datagram(
        t0,
        peer(),
        &Message::new(MsgType::Rst, Code::EMPTY, sent.mid, Token::EMPTY).encode(),
    );
    assert_eq!(
        events(&mut e),
        vec![Event::Failed {
            id,
            peer: peer(),
            error: RequestError::Reset
        }]
    );
}
