use super::*;

fn peer() -> SocketAddr {
    "[::1]:56830".parse().unwrap()
}

struct Harness {
    s: Server,
    t: Instant,
    mid: u16,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            s: Server::new(ServerConfig::default(), 9),
            t: Instant::now(),
            mid: 100,
        }
    }

    fn send(&mut self, code: Code, path: &str, query: &[&str], payload: &[u8]) -> Message {
        self.mid += 1;
        let mut m = Message::new(MsgType::Con, code, self.mid, Token::new(&[1, 2]).unwrap());
        m.set_uri_path(path);
        for q in query {
            m.add_option(opt::URI_QUERY, q.as_bytes().to_vec());
        }
        if !payload.is_empty() {
            m.set_uint_option(opt::CONTENT_FORMAT, 40);
        }
        m.payload = payload.to_vec();
        self.s.handle_datagram(self.t, 1_000, peer(), &m.encode());
        let out = self.s.poll_transmit().expect("a response");
        assert!(self.s.poll_transmit().is_none());
        Message::decode(&out.bytes).unwrap()
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }
}

#[test]
fn register_answers_created_with_location_and_emits_event() {
    let mut h = Harness::new();
    let r = h.send(
        Code::POST,
        "rd",
        &["ep=node-1", "lt=300", "lwm2m=1.1", "b=U"],
        b"</>;rt=\"oma.lwm2m\";ct=11543,</1/0>,</3/0>",
    );
    assert_eq!(r.code, Code::CREATED);
    let loc = r.location_path();
    assert!(loc.starts_with("rd/"), "{loc}");
    match &h.events()[..] {
        [ServerEvent::Registered {
            reg,
            replaced: None,
        }] => {
            assert_eq!(format!("rd/{}", reg.id), loc);
            assert_eq!(reg.endpoint, "node-1");
            assert_eq!(reg.content_formats, vec![11543]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn update_and_deregister_by_location() {
    let mut h = Harness::new();
    let loc = h
        .send(Code::POST, "rd", &["ep=n"], b"</3/0>")
        .location_path();
    assert_eq!(
        h.send(Code::POST, &loc, &["lt=99"], b"").code,
        Code::CHANGED
    );
    assert_eq!(h.s.registry().get("n").unwrap().lifetime, 99);
    assert_eq!(h.send(Code::DELETE, &loc, &[], b"").code, Code::DELETED);
    assert_eq!(h.send(Code::POST, &loc, &[], b"").code, Code::NOT_FOUND);
    assert_eq!(h.send(Code::DELETE, &loc, &[], b"").code, Code::NOT_FOUND);
    let ev = h.events();
    assert!(matches!(ev[1], ServerEvent::Updated(_)));
    assert!(matches!(ev[2], ServerEvent::Deregistered(_)));
}

#[test]
fn refusals_use_the_codes_clients_expect() {
    let mut h = Harness::new();
    assert_eq!(
        h.send(Code::POST, "rd", &["lt=60"], b"</3/0>").code,
        Code::BAD_REQUEST
    );
    assert_eq!(
        h.send(Code::POST, "rd", &["ep=a"], b"</3/0").code,
        Code::BAD_REQUEST
    );
    assert_eq!(
        h.send(Code::POST, "rd", &["ep=a", "lwm2m=1.3"], b"</3/0>")
            .code,
        Code::PRECONDITION_FAILED
    );
    assert_eq!(
        h.send(Code::GET, "rd", &[], b"").code,
        Code::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        h.send(Code::POST, "nothing", &[], b"").code,
        Code::NOT_FOUND
    );
    let loc = h.send(Code::POST, "rd", &["ep=a"], b"").location_path();
    assert_eq!(
        h.send(Code::POST, &loc, &["ep=b"], b"").code,
        Code::BAD_REQUEST
    );
    assert_eq!(h.events().len(), 1);
}

#[test]
fn admission_policy_refusal_is_forbidden() {
    let mut h = Harness::new();
    h.s.set_admission(Box::new(|a| {
        if a.endpoint == "bad" {
            Err("not provisioned".into())
        } else {
            Ok(())
        }
    }));
    assert_eq!(
        h.send(Code::POST, "rd", &["ep=bad"], b"").code,
        Code::FORBIDDEN
    );
    assert_eq!(
        h.send(Code::POST, "rd", &["ep=good"], b"").code,
        Code::CREATED
    );
}

#[test]
fn expiry_fires_from_the_timer() {
    let mut h = Harness::new();
    h.send(Code::POST, "rd", &["ep=e", "lt=10"], b"");
    h.events();
    let grace = ServerConfig::default().expiry_grace;
    let at = h.s.poll_timeout().unwrap();
    assert!(at <= h.t + Duration::from_secs(10) + grace);
    h.s.handle_timeout(h.t + Duration::from_secs(10) + grace);
    assert!(matches!(&h.events()[..], [ServerEvent::Expired(r)] if r.endpoint == "e"));
    assert!(h.s.registry().is_empty());
}
