use super::super::test_util::*;

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
