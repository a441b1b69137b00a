use super::super::test_util::*;

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

#[test]
fn notifications_held_during_a_restore_are_delivered_once_their_observation_is_back() {
    let (mut e, t0) = engine(Config::default());
    e.hold_unknown_responses();
    let known = Token::new(b"tk1").unwrap();
    let unknown = Token::new(b"zz9").unwrap();
    // A confirmable notification, its retransmission, and one for an
    // observation nobody restores: no Reset and no ACK while held.
    let con_n = notification(MsgType::Con, 7, known, 5, b"x").encode();
    e.handle_datagram(t0, peer(), &con_n);
    e.handle_datagram(t0, peer(), &con_n);
    e.handle_datagram(
        t0,
        peer(),
        &notification(MsgType::Non, 8, unknown, 1, b"?").encode(),
    );
    assert!(drain(&mut e).is_empty(), "nothing answered while held");
    assert!(events(&mut e).is_empty());
    assert_eq!(e.stats().held, 3);

    let mut req = con(Code::GET, 0, b"tk1", "3/0/9");
    req.set_uint_option(opt::OBSERVE, 0);
    e.adopt_observation(peer(), req).unwrap();
    e.release_held(t0);
    assert_eq!(notified(&mut e), [b"x".to_vec()], "delivered once");
    let out = drain(&mut e);
    let kinds: Vec<(MsgType, u16)> = out.iter().map(|m| (m.mtype, m.mid)).collect();
    // The ACK, the same ACK again for the retransmission, and a Reset for
    // the observation that did not come back.
    assert_eq!(
        kinds,
        [(MsgType::Ack, 7), (MsgType::Ack, 7), (MsgType::Rst, 8)]
    );
    // Back to normal: an unknown token is reset at once.
    e.handle_datagram(
        t0,
        peer(),
        &notification(MsgType::Non, 9, unknown, 2, b"?").encode(),
    );
    assert_eq!(drain(&mut e)[0].mtype, MsgType::Rst);
}

#[test]
fn the_hold_is_bounded_and_drops_without_a_reset() {
    let (mut e, t0) = engine(Config::default());
    e.hold_unknown_responses();
    for i in 0..(MAX_HELD as u32 + 10) {
        let tk = Token::new(&i.to_be_bytes()).unwrap();
        let n = notification(MsgType::Non, i as u16, tk, 1, b"").encode();
        let p: SocketAddr = format!("127.0.0.{}:{}", 1 + (i >> 16), 1000 + (i & 0x7fff))
            .parse()
            .unwrap();
        e.handle_datagram(t0, p, &n);
    }
    assert_eq!(e.stats().held, MAX_HELD as u64);
    assert_eq!(e.stats().held_dropped, 10);
    assert!(drain(&mut e).is_empty());
}
