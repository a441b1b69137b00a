use super::test_util::*;

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
