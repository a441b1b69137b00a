use super::super::test_util::*;

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
fn an_oversize_request_gets_entity_too_large_with_size1_and_block1_even_when_retransmitted() {
    let (mut e, t0) = engine(Config::default());
    let mut m = con(Code::POST, 77, b"tk", "rd");
    m.payload = vec![b'<'; 4400];
    let bytes = m.encode();
    // What a 1500-byte receive buffer (plus the byte that shows the overrun) holds.
    let head = &bytes[..1501];
    e.handle_oversize(t0, peer(), head);
    let out = drain(&mut e);
    assert_eq!(out.len(), 1, "{out:?}");
    let r = &out[0];
    assert_eq!(r.mtype, MsgType::Ack);
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!((r.mid, r.token), (77, Token::new(b"tk").unwrap()));
    let max = Config::default().max_body_size as u64;
    assert_eq!(r.uint_option(opt::SIZE1), Some(max));
    let b1 = r.block1().unwrap().unwrap();
    assert_eq!((b1.num, b1.more, b1.size()), (0, false, 1024));
    assert!(events(&mut e).is_empty());
    // The device retransmits it: the same answer, nothing for the application.
    e.handle_oversize(t0, peer(), head);
    assert_eq!(drain(&mut e), out);
    assert!(events(&mut e).is_empty());
    assert_eq!(e.stats().oversize, 2);
    // An oversize confirmable that is not a request can only be reset.
    let resp = Message::new(MsgType::Con, Code::CONTENT, 78, Token::EMPTY);
    let mut big = resp.encode();
    big.resize(1501, 0);
    e.handle_oversize(t0, peer(), &big);
    let out = drain(&mut e);
    assert_eq!((out.len(), out[0].mtype, out[0].mid), (1, MsgType::Rst, 78));
    // Garbage too short for a header is only counted.
    e.handle_oversize(t0, peer(), &[0xff]);
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.stats().oversize, 4);
}
