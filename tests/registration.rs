//! Client registration end to end: the real binary on loopback UDP.

mod common;

use common::{config, Client, Gateway, TempDir};
use lwm2m_gw::coap::{Code, Message, MsgType};
use std::time::Duration;

/// The code a fresh client gets for an Update of `loc`.
fn update_code(gw: &Gateway, loc: &str) -> Code {
    Client::new(gw.addr).request(Code::POST, loc, &[], b"").code
}

const OBJECTS: &[u8] = b"</>;rt=\"oma.lwm2m\";ct=11543,</1/0>,</3/0>,</3303/0>";

#[test]
fn register_update_deregister_over_udp() {
    let dir = TempDir::new("rud");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let mut c = Client::new(gw.addr);
    let r = c.register("e2e-1", &["lt=300", "lwm2m=1.1", "b=U"], OBJECTS);
    assert_eq!(r.code, Code::CREATED);
    let loc = r.location_path();
    assert!(loc.starts_with("rd/") && loc.len() > 3, "{loc}");
    assert_eq!(
        c.request(Code::POST, &loc, &["lt=600"], b"").code,
        Code::CHANGED
    );
    assert_eq!(
        c.request(Code::POST, &loc, &[], b"</3/0>,</5/0>").code,
        Code::CHANGED
    );
    assert_eq!(c.request(Code::DELETE, &loc, &[], b"").code, Code::DELETED);
    assert_eq!(c.request(Code::POST, &loc, &[], b"").code, Code::NOT_FOUND);
    assert!(gw.log_contains("ep=e2e-1 registered"));
    assert!(gw.log_contains("ep=e2e-1 de-registered"));
}

#[test]
fn refused_registrations_get_their_codes() {
    let dir = TempDir::new("refuse");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let mut c = Client::new(gw.addr);
    assert_eq!(
        c.request(Code::POST, "rd", &["lt=60"], OBJECTS).code,
        Code::BAD_REQUEST
    );
    assert_eq!(c.register("x", &[], b"</1/0").code, Code::BAD_REQUEST);
    assert_eq!(
        c.register("x", &["lwm2m=1.3"], OBJECTS).code,
        Code::PRECONDITION_FAILED
    );
    assert_eq!(c.register("x", &["lwm2m=1.2"], OBJECTS).code, Code::CREATED);
    assert_eq!(c.register("y", &["lwm2m=1.0"], OBJECTS).code, Code::CREATED);
    assert_eq!(c.register("z", &[], OBJECTS).code, Code::CREATED);
}

#[test]
fn update_after_kill9_and_restart_answers_changed() {
    let dir = TempDir::new("restart");
    let cfg = config("127.0.0.1", "");
    let gw = Gateway::start(&dir.0, &cfg);
    let mut c = Client::new(gw.addr);
    let loc = c
        .register("survivor", &["lt=3600", "lwm2m=1.1"], OBJECTS)
        .location_path();
    // Killed right after the 2.01: the answer is only sent once the store is flushed.
    gw.kill9();
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(
        gw.log_contains("1 registrations restored"),
        "{:?}",
        common::log_lines(&gw)
    );
    let mut c = Client::new(gw.addr);
    assert_eq!(c.request(Code::POST, &loc, &[], b"").code, Code::CHANGED);
    assert_eq!(c.request(Code::DELETE, &loc, &[], b"").code, Code::DELETED);
    gw.kill9();
    // The de-registration is durable too.
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(gw.log_contains("0 registrations restored"));
    assert_eq!(update_code(&gw, &loc), Code::NOT_FOUND);
}

#[test]
fn lifetime_expiry_drops_the_registration() {
    let dir = TempDir::new("expiry");
    let gw = Gateway::start(
        &dir.0,
        &config("127.0.0.1", "[registration]\nexpiry_grace_s = 0"),
    );
    let mut c = Client::new(gw.addr);
    let loc = c.register("short", &["lt=1"], OBJECTS).location_path();
    let keep = c.register("long", &["lt=3600"], OBJECTS).location_path();
    assert!(
        gw.wait_log("ep=short registration", Duration::from_secs(5)),
        "no expiry logged"
    );
    assert!(gw.log_contains("expired"));
    assert_eq!(c.request(Code::POST, &loc, &[], b"").code, Code::NOT_FOUND);
    assert_eq!(c.request(Code::POST, &keep, &[], b"").code, Code::CHANGED);
}

#[test]
fn registration_that_expires_while_stopped_is_not_restored() {
    let dir = TempDir::new("expire-down");
    let cfg = config("127.0.0.1", "[registration]\nexpiry_grace_s = 0");
    let gw = Gateway::start(&dir.0, &cfg);
    let loc = Client::new(gw.addr)
        .register("sleepy", &["lt=1"], OBJECTS)
        .location_path();
    gw.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(
        gw.log_contains("(1 expired while stopped)"),
        "{:?}",
        common::log_lines(&gw)
    );
    assert_eq!(update_code(&gw, &loc), Code::NOT_FOUND);
}

#[test]
fn reregistration_replaces_the_previous_registration() {
    let dir = TempDir::new("rereg");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let mut c = Client::new(gw.addr);
    let old = c.register("dup", &[], OBJECTS).location_path();
    let new = c.register("dup", &[], OBJECTS).location_path();
    assert_ne!(old, new);
    assert_eq!(c.request(Code::POST, &old, &[], b"").code, Code::NOT_FOUND);
    assert_eq!(c.request(Code::POST, &new, &[], b"").code, Code::CHANGED);
}

#[test]
fn duplicate_register_datagram_gets_the_same_answer_once() {
    let dir = TempDir::new("dedup");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let c = Client::new(gw.addr);
    let mut m = Message::new(
        MsgType::Con,
        Code::POST,
        4242,
        lwm2m_gw::coap::Token::new(b"dd").unwrap(),
    );
    m.set_uri_path("rd");
    m.add_option(lwm2m_gw::coap::opt::URI_QUERY, b"ep=twice".to_vec());
    let bytes = m.encode();
    let mut answers = Vec::new();
    for _ in 0..2 {
        c.sock.send_to(&bytes, gw.addr).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = c.sock.recv_from(&mut buf).unwrap();
        answers.push(buf[..n].to_vec());
    }
    assert_eq!(
        answers[0], answers[1],
        "the retransmission is answered from the cache"
    );
    std::thread::sleep(Duration::from_millis(200));
    let registered = common::log_lines(&gw)
        .iter()
        .filter(|l| l.contains("ep=twice registered"))
        .count();
    assert_eq!(registered, 1);
}

#[test]
fn garbage_datagrams_do_not_disturb_the_gateway() {
    let dir = TempDir::new("garbage");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let mut c = Client::new(gw.addr);
    let mut rng = fastrand::Rng::with_seed(1);
    for i in 0..2000 {
        let len = rng.usize(0..80);
        let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if i % 2 == 0 && !b.is_empty() {
            b[0] = 0x40 | (b[0] & 0x3f);
        }
        c.sock.send_to(&b, gw.addr).unwrap();
    }
    // Oversized datagram.
    c.sock.send_to(&vec![0x40; 4000], gw.addr).unwrap();
    c.sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while c.sock.recv_from(&mut buf).is_ok() {}
    c.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        c.register("after-garbage", &[], OBJECTS).code,
        Code::CREATED
    );
}

#[test]
fn ipv6_loopback_clients_register() {
    let dir = TempDir::new("v6");
    let gw = Gateway::start(&dir.0, &config("::1", ""));
    assert!(gw.addr.is_ipv6());
    let mut c = Client::new(gw.addr);
    let loc = c.register("six", &["lwm2m=1.1"], OBJECTS).location_path();
    assert_eq!(c.request(Code::POST, &loc, &[], b"").code, Code::CHANGED);
    assert!(gw.log_contains("peer=[::1]"));
}

#[test]
fn bad_config_file_is_a_clear_error_not_a_panic() {
    let dir = TempDir::new("badcfg");
    let cfg = dir.0.join("bad.toml");
    std::fs::write(&cfg, "[coap]\nprot = 5\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prot") && err.contains("bad.toml"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn second_gateway_on_the_same_data_dir_is_refused_clearly() {
    let dir = TempDir::new("locked");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let loc = Client::new(gw.addr)
        .register("held", &[], OBJECTS)
        .location_path();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args([
            "serve",
            "--coap-port",
            "0",
            "--dtls-port",
            "0",
            "--bootstrap-port",
            "0",
            "--bootstrap-dtls-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.0.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The first gateway and its data are untouched.
    assert_eq!(update_code(&gw, &loc), Code::CHANGED);
}

/// A Register of `n` objects in link format (`</1/0>,</3/0>,</1000/0>,...`).
fn many_objects(n: u16) -> Vec<u8> {
    let mut links = vec!["</1/0>".to_string(), "</3/0>".to_string()];
    links.extend((0..n).map(|i| format!("</{}/0>", 10_000 + i)));
    links.join(",").into_bytes()
}

#[test]
fn an_oversize_register_is_answered_4_13_and_goes_through_block_wise() {
    use lwm2m_gw::coap::{opt, BlockOpt, Token};
    let dir = TempDir::new("oversize");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let mut c = Client::new(gw.addr);
    let payload = many_objects(500);
    assert!(payload.len() > 4000, "{}", payload.len());
    let r = c.register("big-1", &["lt=300"], &payload);
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.uint_option(opt::SIZE1), Some(1 << 20));
    let b1 = r.block1().expect("a Block1 option").unwrap();
    assert_eq!((b1.num, b1.size()), (0, 1024));
    assert!(gw.wait_log("answered 4.13", Duration::from_secs(5)));
    // The device does what the answer asks: the same Register, block-wise.
    let mut code = Code::EMPTY;
    for (num, chunk) in payload.chunks(b1.size()).enumerate() {
        let mut m = Message::new(
            MsgType::Con,
            Code::POST,
            900 + num as u16,
            Token::from_u64(7),
        );
        m.set_uri_path("rd");
        m.add_option(opt::URI_QUERY, b"ep=big-1".to_vec());
        m.add_option(opt::URI_QUERY, b"lt=300".to_vec());
        m.set_uint_option(opt::CONTENT_FORMAT, 40);
        let more = (num + 1) * b1.size() < payload.len();
        m.set_option(
            opt::BLOCK1,
            BlockOpt::new(num as u32, more, b1.szx).encode(),
        );
        m.payload = chunk.to_vec();
        c.sock.send_to(&m.encode(), c.server).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = c.sock.recv_from(&mut buf).unwrap();
        let a = Message::decode(&buf[..n]).unwrap();
        assert_eq!(a.mid, 900 + num as u16);
        code = a.code;
        if more {
            assert_eq!(code, Code::CONTINUE, "block {num}");
        }
    }
    assert_eq!(code, Code::CREATED);
    let out = gw.cli(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["value"]["oversizeDatagrams"], 1, "{stats}");
    let out = gw.cli(&["device", "big-1", "--json"]);
    let dev: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dev["objects"].as_array().map(Vec::len), Some(502), "{dev}");
}

#[test]
fn device_chosen_names_reach_the_log_escaped() {
    let dir = TempDir::new("escape");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let mut c = Client::new(gw.addr);
    let r = c.register("a\u{1}\u{1b}[2Jb", &["lt=300"], OBJECTS);
    assert_eq!(r.code, Code::BAD_REQUEST);
    assert!(gw.wait_log("register refused", Duration::from_secs(5)));
    let lines = common::log_lines(&gw);
    let line = lines
        .iter()
        .find(|l| l.contains("register refused"))
        .unwrap();
    assert!(line.contains("ep=a\\x01\\x1b[2Jb"), "{line}");
    assert!(
        lines.iter().all(|l| !l.chars().any(|ch| ch.is_control())),
        "a raw control character reached the log: {lines:?}"
    );
}
