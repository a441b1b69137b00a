use super::*;

fn peer() -> SocketAddr {
    "127.0.0.1:5683".parse().unwrap()
}

fn engine(cfg: Config) -> (Engine, Instant) {
    (Engine::new(cfg, 42), Instant::now())
}

fn con(code: Code, mid: u16, token: &[u8], path: &str) -> Message {
    let mut m = Message::new(MsgType::Con, code, mid, Token::new(token).unwrap());
    m.set_uri_path(path);
    m
}

fn drain(e: &mut Engine) -> Vec<Message> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|t| Message::decode(&t.bytes).unwrap())
        .collect()
}

fn events(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn only_request(e: &mut Engine) -> (IncomingId, Message) {
    let ev = events(e);
    assert_eq!(ev.len(), 1, "{ev:?}");
    match ev.into_iter().next().unwrap() {
        Event::Request { id, msg, .. } => (id, msg),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn changed() -> Message {
    Message::new(MsgType::Ack, Code::CHANGED, 0, Token::EMPTY)
}

fn content(payload: &[u8]) -> Message {
    let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
    m.payload = payload.to_vec();
    m
}

#[test]
fn answer_given_at_once_is_piggybacked_on_the_ack() {
    let (mut e, t0) = engine(Config::default());
    e.handle_datagram(t0, peer(), &con(Code::GET, 7, b"tk", "a").encode());
    let (id, req) = only_request(&mut e);
    assert_eq!(req.uri_path(), vec!["a"]);
    e.respond(t0, id, content(b"hi"));
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].mtype, out[0].code, out[0].mid),
        (MsgType::Ack, Code::CONTENT, 7)
    );
    assert_eq!(out[0].token.as_bytes(), b"tk");
    assert_eq!(out[0].payload, b"hi");
}

#[test]
fn duplicate_request_replays_cached_response_without_new_event() {
    let (mut e, t0) = engine(Config::default());
    let req = con(Code::POST, 9, b"x", "rd").encode();
    e.handle_datagram(t0, peer(), &req);
    // A duplicate while the application is still working: ignored.
    e.handle_datagram(t0, peer(), &req);
    let (id, _) = only_request(&mut e);
    assert!(drain(&mut e).is_empty());
    e.respond(t0, id, content(b"ok"));
    let first = drain(&mut e);
    e.handle_datagram(t0 + Duration::from_secs(100), peer(), &req);
    assert!(events(&mut e).is_empty());
    assert_eq!(drain(&mut e), first);
    assert_eq!(e.stats().duplicates, 2);
    // After EXCHANGE_LIFETIME the message ID is forgotten and processed anew.
    let later = t0 + Duration::from_secs(248);
    e.handle_timeout(later);
    e.handle_datagram(later, peer(), &req);
    assert_eq!(events(&mut e).len(), 1);
}

#[test]
fn slow_answer_becomes_separate_confirmable_response_and_is_retransmitted() {
    let (mut e, t0) = engine(Config::default());
    e.handle_datagram(t0, peer(), &con(Code::GET, 3, b"ab", "slow").encode());
    let (id, _) = only_request(&mut e);
    let deadline = e.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Config::default().piggyback_window);
    e.handle_timeout(deadline);
    let out = drain(&mut e);
    assert_eq!(
        (out[0].mtype, out[0].code, out[0].mid),
        (MsgType::Ack, Code::EMPTY, 3)
    );
    let t1 = deadline + Duration::from_millis(10);
    e.respond(t1, id, content(b"late"));
    let sep = drain(&mut e);
    assert_eq!((sep[0].mtype, sep[0].code), (MsgType::Con, Code::CONTENT));
    assert_eq!(sep[0].token.as_bytes(), b"ab");
    // Not acknowledged: sent again between ACK_TIMEOUT and ACK_TIMEOUT * 1.5.
    let rt = e.poll_timeout().unwrap();
    assert!(
        rt >= t1 + Duration::from_secs(2) && rt <= t1 + Duration::from_secs(3),
        "{:?}",
        rt - t1
    );
    e.handle_timeout(rt);
    assert_eq!(drain(&mut e), sep);
    // The ACK stops it.
    let ack = Message::new(MsgType::Ack, Code::EMPTY, sep[0].mid, Token::EMPTY);
    e.handle_datagram(rt, peer(), &ack.encode());
    e.handle_timeout(rt + Duration::from_secs(60));
    assert!(drain(&mut e).is_empty());
}

#[test]
fn unacknowledged_request_is_retransmitted_four_times_with_doubling_then_fails() {
    let (mut e, t0) = engine(Config::default());
    let id = e
        .request(t0, peer(), con(Code::GET, 0, b"", "3/0/9"))
        .unwrap();
    let first = drain(&mut e);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].token.as_bytes().len(), 8);
    let mut sends = vec![t0];
    let mut now = t0;
    while let Some(t) = e.poll_timeout() {
        if t > t0 + Duration::from_secs(200) {
            break;
        }
        now = t;
        e.handle_timeout(now);
        if !drain(&mut e).is_empty() {
            sends.push(now);
        }
        if !events(&mut e).is_empty() {
            break;
        }
    }
    assert_eq!(sends.len(), 5, "initial send plus MAX_RETRANSMIT");
    let gaps: Vec<f64> = sends
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(gaps[0] >= 2.0 && gaps[0] <= 3.0, "{gaps:?}");
    for w in gaps.windows(2) {
        assert!((w[1] / w[0] - 2.0).abs() < 1e-6, "{gaps:?}");
    }
    // The failure comes after the last wait, at 2^5 - 1 = 31 timeouts.
    let total = (now - t0).as_secs_f64();
    assert!((62.0..=93.0).contains(&total), "{total}");
    let _ = id;
    assert_eq!(e.stats().retransmissions, 4);
}

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

fn block1_req(mid: u16, num: u32, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut m = con(Code::POST, mid, b"up", "rd");
    m.set_option(opt::BLOCK1, BlockOpt { num, more, szx: 0 }.encode());
    m.payload = payload.to_vec();
    m.encode()
}

#[test]
fn block1_upload_is_reassembled_and_acknowledged_with_continue() {
    let (mut e, t0) = engine(Config::default());
    e.handle_datagram(t0, peer(), &block1_req(1, 0, true, &[b'a'; 16]));
    let c = drain(&mut e);
    assert_eq!(c[0].code, Code::CONTINUE);
    assert_eq!(c[0].block1(), Some(Ok(BlockOpt::new(0, true, 0))));
    e.handle_datagram(t0, peer(), &block1_req(2, 1, true, &[b'b'; 16]));
    assert_eq!(drain(&mut e)[0].code, Code::CONTINUE);
    assert!(events(&mut e).is_empty());
    e.handle_datagram(t0, peer(), &block1_req(3, 2, false, b"cc"));
    let (id, msg) = only_request(&mut e);
    assert_eq!(msg.payload.len(), 34);
    assert!(msg.payload.starts_with(&[b'a'; 16]) && msg.payload.ends_with(b"cc"));
    assert!(msg.block1().is_none());
    e.respond(t0, id, changed());
    let fin = drain(&mut e);
    assert_eq!(fin[0].code, Code::CHANGED);
    assert_eq!(fin[0].block1(), Some(Ok(BlockOpt::new(2, false, 0))));
}

#[test]
fn block1_out_of_sequence_gets_request_entity_incomplete() {
    let (mut e, t0) = engine(Config::default());
    e.handle_datagram(t0, peer(), &block1_req(1, 0, true, &[0; 16]));
    drain(&mut e);
    e.handle_datagram(t0, peer(), &block1_req(2, 2, true, &[0; 16]));
    assert_eq!(drain(&mut e)[0].code, Code::REQUEST_ENTITY_INCOMPLETE);
}

#[test]
fn block1_beyond_max_body_gets_entity_too_large_with_size1() {
    let cfg = Config {
        max_body_size: 20,
        ..Default::default()
    };
    let (mut e, t0) = engine(cfg);
    e.handle_datagram(t0, peer(), &block1_req(1, 0, true, &[0; 16]));
    drain(&mut e);
    e.handle_datagram(t0, peer(), &block1_req(2, 1, true, &[0; 16]));
    let r = drain(&mut e).remove(0);
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.uint_option(opt::SIZE1), Some(20));
}

#[test]
fn large_response_is_served_block_wise_from_cache() {
    let (mut e, t0) = engine(Config::default());
    let body: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    e.handle_datagram(t0, peer(), &con(Code::GET, 1, b"t", "big").encode());
    let (id, _) = only_request(&mut e);
    e.respond(t0, id, content(&body));
    let b0 = drain(&mut e).remove(0);
    assert_eq!(b0.block2(), Some(Ok(BlockOpt::new(0, true, 6))));
    assert_eq!(b0.uint_option(opt::SIZE2), Some(2500));
    let mut got = b0.payload.clone();
    for (mid, num) in [(2u16, 1u32), (3, 2)] {
        let mut r = con(Code::GET, mid, b"t", "big");
        r.set_option(
            opt::BLOCK2,
            BlockOpt {
                num,
                more: false,
                szx: 6,
            }
            .encode(),
        );
        e.handle_datagram(t0, peer(), &r.encode());
        assert!(events(&mut e).is_empty(), "served from the cache");
        let b = drain(&mut e).remove(0);
        assert_eq!(b.option(opt::ETAG), b0.option(opt::ETAG));
        got.extend_from_slice(&b.payload);
        assert_eq!(b.block2().unwrap().unwrap().more, num < 2);
    }
    assert_eq!(got, body);
    // A block past the end, asked while the body is still cached, is refused.
    let mut r = con(Code::GET, 9, b"t", "big");
    r.set_option(opt::BLOCK2, BlockOpt::new(7, false, 6).encode());
    e.handle_datagram(t0, peer(), &r.encode());
    assert!(events(&mut e).is_empty());
    assert_eq!(drain(&mut e).remove(0).code, Code::BAD_OPTION);
}

#[test]
fn peer_asking_for_small_blocks_gets_small_blocks() {
    let (mut e, t0) = engine(Config::default());
    let mut r = con(Code::GET, 1, b"t", "big");
    r.set_option(opt::BLOCK2, BlockOpt::new(0, false, 2).encode());
    e.handle_datagram(t0, peer(), &r.encode());
    let (id, _) = only_request(&mut e);
    e.respond(t0, id, content(&[7; 100]));
    let b0 = drain(&mut e).remove(0);
    assert_eq!(b0.payload.len(), 64);
    assert_eq!(b0.block2(), Some(Ok(BlockOpt::new(0, true, 2))));
}

#[test]
fn client_block1_upload_follows_peer_block_size() {
    let cfg = Config {
        block_size: 64,
        ..Default::default()
    };
    let (mut e, t0) = engine(cfg);
    let mut req = con(Code::PUT, 0, b"", "5/0/0");
    req.payload = (0..150u8).collect();
    let id = e.request(t0, peer(), req).unwrap();
    let mut received = Vec::new();
    let mut peer_szx = 1; // the peer wants 32-byte blocks after the first
    loop {
        let m = drain(&mut e).remove(0);
        let b = m.block1().unwrap().unwrap();
        assert_eq!(b.offset(), received.len());
        received.extend_from_slice(&m.payload);
        let mut ack = Message::new(
            MsgType::Ack,
            if b.more {
                Code::CONTINUE
            } else {
                Code::CHANGED
            },
            m.mid,
            m.token,
        );
        ack.set_option(
            opt::BLOCK1,
            BlockOpt::new(b.num, b.more, peer_szx.min(b.szx)).encode(),
        );
        peer_szx = 1;
        e.handle_datagram(t0, peer(), &ack.encode());
        if !b.more {
            break;
        }
    }
    assert_eq!(received, (0..150u8).collect::<Vec<_>>());
    match &events(&mut e)[..] {
        [Event::Response { id: got, msg, .. }] => {
            assert_eq!(*got, id);
            assert_eq!(msg.code, Code::CHANGED);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_follows_block2_response_to_the_end() {
    let (mut e, t0) = engine(Config::default());
    let id = e.request(t0, peer(), con(Code::GET, 0, b"", "3")).unwrap();
    let body: Vec<u8> = (0..40u8).collect();
    for num in 0..3u32 {
        let m = drain(&mut e).remove(0);
        if num > 0 {
            assert_eq!(m.block2().unwrap().unwrap().num, num);
        }
        let mut ack = Message::new(MsgType::Ack, Code::CONTENT, m.mid, m.token);
        let end = ((num as usize + 1) * 16).min(40);
        ack.payload = body[num as usize * 16..end].to_vec();
        ack.set_uint_option(opt::CONTENT_FORMAT, 11542);
        ack.set_option(
            opt::BLOCK2,
            BlockOpt {
                num,
                more: num < 2,
                szx: 0,
            }
            .encode(),
        );
        e.handle_datagram(t0, peer(), &ack.encode());
    }
    match &events(&mut e)[..] {
        [Event::Response { id: got, msg, .. }] => {
            assert_eq!(*got, id);
            assert_eq!(msg.payload, body);
            assert_eq!(msg.content_format(), Some(11542));
            assert!(msg.block2().is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unrecognized_critical_option_gets_bad_option() {
    let (mut e, t0) = engine(Config::default());
    let mut m = con(Code::GET, 1, b"", "x");
    m.add_option(2049, vec![1]);
    e.handle_datagram(t0, peer(), &m.encode());
    assert!(events(&mut e).is_empty());
    assert_eq!(drain(&mut e)[0].code, Code::BAD_OPTION);
    // An unknown elective (even) option is ignored.
    let mut m = con(Code::GET, 2, b"", "x");
    m.add_option(2048, vec![1]);
    e.handle_datagram(t0, peer(), &m.encode());
    assert_eq!(events(&mut e).len(), 1);
}

#[test]
fn malformed_confirmable_is_reset_and_ping_is_answered() {
    let (mut e, t0) = engine(Config::default());
    e.handle_datagram(t0, peer(), &[0x40, 0x01, 0x12, 0x34, 0xf0]);
    let r = drain(&mut e).remove(0);
    assert_eq!((r.mtype, r.mid), (MsgType::Rst, 0x1234));
    e.handle_datagram(t0, peer(), &[0x40, 0x00, 0x00, 0x05]);
    assert_eq!(drain(&mut e)[0].mtype, MsgType::Rst);
    e.handle_datagram(t0, peer(), &[0x01]);
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.stats().malformed, 2);
}

#[test]
fn deduplication_table_stays_bounded_under_flood() {
    let cfg = Config {
        max_dedup: 100,
        max_incoming: 50,
        ..Default::default()
    };
    let (mut e, t0) = engine(cfg);
    for mid in 0..1000u16 {
        e.handle_datagram(t0, peer(), &con(Code::GET, mid, b"", "x").encode());
    }
    assert!(e.dedup.len() <= 100);
    assert!(e.incoming.len() <= 50);
    let refused = drain(&mut e)
        .iter()
        .filter(|m| m.code == Code::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(refused, 950);
}

#[test]
fn observation_delivers_notifications_until_cancelled_then_resets() {
    let (mut e, t0) = engine(Config::default());
    let mut req = con(Code::GET, 0, b"", "3303/0/5700");
    req.set_uint_option(opt::OBSERVE, 0);
    let id = e.request(t0, peer(), req).unwrap();
    let sent = drain(&mut e).remove(0);
    let mut first = Message::new(MsgType::Ack, Code::CONTENT, sent.mid, sent.token);
    first.set_uint_option(opt::OBSERVE, 1);
    e.handle_datagram(t0, peer(), &first.encode());
    assert!(matches!(&events(&mut e)[..], [Event::Response { .. }]));
    // The observation no longer blocks NSTART.
    e.request(t0, peer(), con(Code::GET, 0, b"", "3/0"))
        .unwrap();
    assert_eq!(drain(&mut e).len(), 1);
    let mut n = Message::new(MsgType::Con, Code::CONTENT, 77, sent.token);
    n.set_uint_option(opt::OBSERVE, 2);
    n.payload = b"21.5".to_vec();
    e.handle_datagram(t0, peer(), &n.encode());
    assert_eq!(drain(&mut e)[0].mtype, MsgType::Ack);
    assert!(matches!(&events(&mut e)[..], [Event::Notification { id: got, .. }] if *got == id));
    e.cancel(t0, id);
    n.mid = 78;
    e.handle_datagram(t0, peer(), &n.encode());
    let r = drain(&mut e).remove(0);
    assert_eq!((r.mtype, r.mid), (MsgType::Rst, 78));
}

#[test]
fn tokens_are_eight_random_bytes_and_distinct() {
    let (mut e, t0) = engine(Config::default());
    let mut seen = std::collections::HashSet::new();
    for i in 0..200u16 {
        let p: SocketAddr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
        e.request(t0, p, con(Code::GET, 0, b"", "1")).unwrap();
        let m = drain(&mut e).remove(0);
        assert_eq!(m.token.as_bytes().len(), 8);
        assert!(seen.insert(m.token));
    }
}

#[test]
fn answered_requests_leave_no_timers_behind() {
    let (mut e, t0) = engine(Config::default());
    for mid in 0..1000u16 {
        e.handle_datagram(t0, peer(), &con(Code::GET, mid, b"", "x").encode());
        let (id, _) = only_request(&mut e);
        e.respond(t0, id, content(b""));
    }
    assert_eq!(drain(&mut e).len(), 1000);
    assert!(e.timers.is_empty());
    e.handle_timeout(t0 + Config::default().piggyback_window);
    assert!(e.piggyback_order.is_empty() && e.timers.is_empty());
    // An unanswered NON request is still forgotten after EXCHANGE_LIFETIME.
    let mut non = con(Code::GET, 5000, b"", "x");
    non.mtype = MsgType::Non;
    e.handle_datagram(t0, peer(), &non.encode());
    assert_eq!(events(&mut e).len(), 1);
    e.handle_timeout(t0 + Duration::from_secs(2));
    assert!(drain(&mut e).is_empty(), "no empty ACK for NON");
    e.handle_timeout(t0 + Duration::from_secs(300));
    assert!(e.incoming.is_empty());
}

#[test]
fn expiry_queues_stay_bounded_under_long_uploads_and_request_floods() {
    let cfg = Config {
        max_block_states: 4,
        max_incoming: 8,
        max_body_size: 1 << 30,
        ..Default::default()
    };
    let (mut e, t0) = engine(cfg);
    // One long upload of 20 000 16-byte blocks on one key.
    for num in 0..20_000u32 {
        e.handle_datagram(
            t0,
            peer(),
            &block1_req((num % 60_000) as u16, num, true, &[0; 16]),
        );
        drain(&mut e);
    }
    assert!(e.block_order.len() <= 2 * 4 + 65, "{}", e.block_order.len());
    // Many uploads on distinct URIs that complete at once.
    for i in 0..5_000u16 {
        let mut m = con(Code::POST, 30_000 + i, b"u", &format!("up/{i}"));
        m.set_option(opt::BLOCK1, BlockOpt::new(0, true, 0).encode());
        m.payload = vec![0; 16];
        e.handle_datagram(t0, peer(), &m.encode());
        drain(&mut e);
    }
    assert!(e.block_order.len() <= 2 * 4 + 65, "{}", e.block_order.len());
    // Requests answered at once leave no piggyback entries behind past the bound.
    for mid in 0..5_000u16 {
        e.handle_datagram(t0, peer(), &con(Code::GET, 40_000 + mid, b"", "x").encode());
        let (id, _) = only_request(&mut e);
        e.respond(t0, id, content(b""));
        drain(&mut e);
    }
    assert!(
        e.piggyback_order.len() <= 2 * 8 + 65,
        "{}",
        e.piggyback_order.len()
    );
    // The long upload is still alive and completes.
    e.handle_timeout(t0 + Duration::from_secs(1));
    e.handle_datagram(t0, peer(), &block1_req(59_999, 20_000, false, b"end"));
    let (_, msg) = only_request(&mut e);
    assert_eq!(msg.payload.len(), 20_000 * 16 + 3);
}

#[test]
fn slow_request_arriving_during_compaction_still_gets_its_empty_ack() {
    let cfg = Config {
        max_incoming: 2,
        ..Default::default()
    };
    let (mut e, t0) = engine(cfg);
    // 68 answered requests fill the queue to its bound (2 * 2 + 64), so the
    // slow request's own entry is the push that triggers the compaction.
    for mid in 0..68u16 {
        e.handle_datagram(t0, peer(), &con(Code::GET, mid, b"", "x").encode());
        let (id, _) = only_request(&mut e);
        e.respond(t0, id, content(b""));
    }
    drain(&mut e);
    e.handle_datagram(t0, peer(), &con(Code::GET, 999, b"", "slow").encode());
    only_request(&mut e);
    e.handle_timeout(t0 + Config::default().piggyback_window);
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].mtype, out[0].code, out[0].mid),
        (MsgType::Ack, Code::EMPTY, 999)
    );
}

#[test]
fn block2_request_past_an_empty_answer_gets_bad_option_not_a_crash() {
    let (mut e, t0) = engine(Config::default());
    let mut r = con(Code::POST, 1, b"t", "rd/abc");
    r.set_option(opt::BLOCK2, BlockOpt::new(3, false, 6).encode());
    e.handle_datagram(t0, peer(), &r.encode());
    let (id, _) = only_request(&mut e);
    e.respond(t0, id, changed());
    assert_eq!(drain(&mut e)[0].code, Code::BAD_OPTION);
    // Block 0 of an empty answer is just the answer.
    let mut r = con(Code::POST, 2, b"t", "rd/abc");
    r.set_option(opt::BLOCK2, BlockOpt::new(0, false, 6).encode());
    e.handle_datagram(t0, peer(), &r.encode());
    let (id, _) = only_request(&mut e);
    e.respond(t0, id, changed());
    assert_eq!(drain(&mut e)[0].code, Code::CHANGED);
}

#[test]
fn random_datagrams_with_valid_headers_never_panic_the_engine() {
    let (mut e, t0) = engine(Config {
        max_body_size: 4096,
        ..Default::default()
    });
    let mut rng = fastrand::Rng::with_seed(99);
    let numbers = [1u16, 4, 6, 8, 11, 12, 14, 15, 17, 23, 27, 28, 60];
    for i in 0..30_000u32 {
        let mtype = [MsgType::Con, MsgType::Non, MsgType::Ack, MsgType::Rst][rng.usize(..4)];
        let code = Code([0, 1, 2, 3, 4, 5, 7, 0x41, 0x44, 0x45, 0x5f][rng.usize(..11)]);
        let mut m = Message::new(mtype, code, rng.u16(..8), Token::from_u64(rng.u64(..4)));
        for _ in 0..rng.usize(..4) {
            let n = numbers[rng.usize(..numbers.len())];
            let v: Vec<u8> = (0..rng.usize(..4)).map(|_| rng.u8(..)).collect();
            m.add_option(n, v);
        }
        m.payload = (0..rng.usize(..40)).map(|_| rng.u8(..)).collect();
        if code == Code::EMPTY {
            m = Message::new(mtype, code, m.mid, Token::EMPTY);
        }
        e.handle_datagram(t0 + Duration::from_millis(i as u64), peer(), &m.encode());
        while let Some(ev) = e.poll_event() {
            if let Event::Request { id, .. } = ev {
                let mut resp = content(&vec![1; rng.usize(..3000)]);
                resp.code = Code::CONTENT;
                e.respond(t0, id, resp);
            }
        }
        if i % 7 == 0 {
            let _ = e.request(t0, peer(), con(Code::GET, 0, b"", "3/0"));
        }
        e.handle_timeout(t0 + Duration::from_millis(i as u64));
        drain(&mut e);
    }
}

/// An established observation of /3303/0/5700 whose first answer carried Observe=10.
fn observing(e: &mut Engine, t0: Instant) -> (RequestId, Token) {
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

fn notification(t: MsgType, mid: u16, token: Token, seq: u32, body: &[u8]) -> Message {
    let mut n = Message::new(t, Code::CONTENT, mid, token);
    n.set_uint_option(opt::OBSERVE, seq as u64);
    n.payload = body.to_vec();
    n
}

fn notified(e: &mut Engine) -> Vec<Vec<u8>> {
    events(e)
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Notification { msg, .. } => Some(msg.payload),
            _ => None,
        })
        .collect()
}

#[test]
fn stale_notifications_are_acknowledged_but_dropped() {
    let (mut e, t0) = engine(Config::default());
    let (_, tk) = observing(&mut e, t0);
    for (mid, seq, body, t) in [
        (1, 12, "a", MsgType::Con),
        (2, 11, "stale", MsgType::Con),
        (3, 13, "b", MsgType::Non),
        (4, 12, "stale", MsgType::Non),
        (5, 10, "stale", MsgType::Con),
    ] {
        e.handle_datagram(
            t0,
            peer(),
            &notification(t, mid, tk, seq, body.as_bytes()).encode(),
        );
    }
    assert_eq!(notified(&mut e), [b"a".to_vec(), b"b".to_vec()]);
    // Every CON got its ACK, stale or not.
    let acks = drain(&mut e)
        .iter()
        .filter(|m| m.mtype == MsgType::Ack)
        .count();
    assert_eq!(acks, 3);
    assert_eq!(e.stats().stale_notifications, 3);
    // The 24-bit values wrap: each step below is less than 2^23 forward.
    for (mid, seq, body) in [(6, 0x7f_ffff, b"c"), (7, 0xff_fff0, b"d"), (8, 3, b"e")] {
        e.handle_datagram(
            t0,
            peer(),
            &notification(MsgType::Non, mid, tk, seq, body).encode(),
        );
    }
    // More than 2^23 forward counts as backward...
    e.handle_datagram(
        t0,
        peer(),
        &notification(MsgType::Non, 9, tk, 0x80_0004, b"x").encode(),
    );
    // ...unless 128 s have passed.
    let later = t0 + Duration::from_secs(129);
    e.handle_datagram(
        later,
        peer(),
        &notification(MsgType::Non, 10, tk, 1, b"f").encode(),
    );
    assert_eq!(
        notified(&mut e),
        [b"c".to_vec(), b"d".to_vec(), b"e".to_vec(), b"f".to_vec()]
    );
}

#[test]
fn block_wise_notification_is_fetched_whole_without_observe() {
    let (mut e, t0) = engine(Config::default());
    let (id, tk) = observing(&mut e, t0);
    drain(&mut e);
    let body: Vec<u8> = (0..40u8).collect();
    let mut n = notification(MsgType::Con, 9, tk, 11, &body[..16]);
    n.set_option(opt::BLOCK2, BlockOpt::new(0, true, 0).encode());
    e.handle_datagram(t0, peer(), &n.encode());
    assert!(notified(&mut e).is_empty());
    let out = drain(&mut e);
    assert_eq!(out[0].mtype, MsgType::Ack);
    let get = &out[1];
    assert_eq!(get.code, Code::GET);
    assert_eq!(get.observe(), None);
    assert_ne!(get.token, tk);
    assert_eq!(get.block2(), Some(Ok(BlockOpt::new(1, false, 0))));
    for (num, more) in [(1u32, true), (2, false)] {
        let sent = if num == 1 {
            get.clone()
        } else {
            drain(&mut e).remove(0)
        };
        let end = ((num as usize + 1) * 16).min(body.len());
        let mut b = Message::new(MsgType::Ack, Code::CONTENT, sent.mid, sent.token);
        b.set_option(opt::BLOCK2, BlockOpt::new(num, more, 0).encode());
        b.payload = body[num as usize * 16..end].to_vec();
        e.handle_datagram(t0, peer(), &b.encode());
    }
    let ev = events(&mut e);
    assert!(
        matches!(&ev[..], [Event::Notification { id: got, msg, .. }] if *got == id && msg.payload == body),
        "{ev:?}"
    );
}

#[test]
fn adopted_observation_takes_notifications_and_cancels_proactively() {
    let (mut e, t0) = engine(Config::default());
    let mut req = con(Code::GET, 0, b"tk1", "3/0/9");
    req.set_uint_option(opt::OBSERVE, 0);
    let id = e.adopt_observation(peer(), req.clone()).unwrap();
    assert!(drain(&mut e).is_empty(), "adopting sends nothing");
    let tk = Token::new(b"tk1").unwrap();
    e.handle_datagram(
        t0,
        peer(),
        &notification(MsgType::Non, 1, tk, 5, b"x").encode(),
    );
    assert_eq!(notified(&mut e), [b"x".to_vec()]);
    assert!(
        e.adopt_observation(peer(), req).is_err(),
        "same token twice"
    );
    let cancel = e.cancel_observation(t0, id).unwrap();
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].observe(), out[0].token), (Some(1), tk));
    let ack = content(b"9");
    let mut ack = Message {
        mid: out[0].mid,
        token: tk,
        ..ack
    };
    ack.mtype = MsgType::Ack;
    e.handle_datagram(t0, peer(), &ack.encode());
    assert!(matches!(&events(&mut e)[..], [Event::Response { id: got, .. }] if *got == cancel));
    // Later notifications with that token are refused.
    e.handle_datagram(
        t0,
        peer(),
        &notification(MsgType::Non, 2, tk, 6, b"y").encode(),
    );
    assert_eq!(drain(&mut e)[0].mtype, MsgType::Rst);
}

#[test]
fn notifying_an_observer_that_resets_reports_it_gone() {
    let (mut e, t0) = engine(Config::default());
    let tk = Token::new(b"ob").unwrap();
    for t in [MsgType::Con, MsgType::Non] {
        e.notify(t0, peer(), notification(t, 0, tk, 3, b"v"));
        let sent = drain(&mut e).remove(0);
        assert_eq!((sent.mtype, sent.token), (t, tk));
        let rst = Message::new(MsgType::Rst, Code::EMPTY, sent.mid, Token::EMPTY);
        e.handle_datagram(t0, peer(), &rst.encode());
        assert!(
            matches!(&events(&mut e)[..], [Event::ObserverGone { token, .. }] if *token == tk),
            "{t:?}"
        );
    }
    // A CON notification never acknowledged also ends the observer.
    e.notify(t0, peer(), notification(MsgType::Con, 0, tk, 4, b"v"));
    for s in 1..=120 {
        e.handle_timeout(t0 + Duration::from_secs(s));
    }
    assert_eq!(drain(&mut e).len(), 5, "sent and retransmitted four times");
    assert!(events(&mut e)
        .iter()
        .any(|ev| matches!(ev, Event::ObserverGone { .. })));
}

#[test]
fn observations_beyond_the_bound_are_not_kept() {
    let (mut e, t0) = engine(Config {
        max_observations: 1,
        ..Config::default()
    });
    let (_, first) = observing(&mut e, t0);
    let (_, second) = observing(&mut e, t0);
    drain(&mut e);
    for (mid, tk) in [(1, first), (2, second)] {
        e.handle_datagram(
            t0,
            peer(),
            &notification(MsgType::Non, mid, tk, 20, b"v").encode(),
        );
    }
    assert_eq!(notified(&mut e).len(), 1);
    assert_eq!(
        drain(&mut e)[0].mtype,
        MsgType::Rst,
        "the second is unknown"
    );
    let mut req = con(Code::GET, 0, b"t3", "1");
    req.set_uint_option(opt::OBSERVE, 0);
    assert_eq!(e.adopt_observation(peer(), req), Err(EngineError::Busy));
}

#[test]
fn a_newer_confirmable_notification_replaces_one_in_transit() {
    let (mut e, t0) = engine(Config::default());
    let tk = Token::new(b"ob").unwrap();
    e.notify(t0, peer(), notification(MsgType::Con, 0, tk, 3, b"old"));
    e.notify(t0, peer(), notification(MsgType::Con, 0, tk, 4, b"new"));
    assert_eq!(drain(&mut e).len(), 2);
    e.handle_timeout(t0 + Duration::from_secs(4));
    let again = drain(&mut e);
    assert_eq!(again.len(), 1, "only the newer one is retransmitted");
    assert_eq!(again[0].payload, b"new");
}
