//! The bad-input table (issue 19, part 6): malformed CoAP framing, bad
//! LwM2M requests, and garbage on the DTLS and bootstrap ports, each sent
//! over a real socket. For each: the answer RFC 7252 and LwM2M ask for
//! (a 4.xx, a Reset, or silence), bounded log lines, and a gateway that
//! goes on serving.

mod common;

use common::{config, Client, Gateway, TempDir};
use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const OBJECTS: &[u8] = b"</1/0>,</3/0>";

/// What a case must get back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Nothing at all.
    Silence,
    /// A Reset with the message's id.
    Reset,
    /// A response with this code.
    Answer(Code),
}

/// A valid request's bytes, to break.
fn request(
    mtype: MsgType,
    code: Code,
    mid: u16,
    path: &str,
    query: &[&str],
    cf: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let mut m = Message::new(mtype, code, mid, Token::new(&[0xab, 0xcd]).unwrap());
    if !path.is_empty() {
        m.set_uri_path(path);
    }
    for q in query {
        m.add_option(opt::URI_QUERY, q.as_bytes().to_vec());
    }
    if let Some(cf) = cf {
        m.set_uint_option(opt::CONTENT_FORMAT, cf as u64);
    }
    m.payload = payload.to_vec();
    m.encode()
}

fn con(code: Code, mid: u16, path: &str, query: &[&str], payload: &[u8]) -> Vec<u8> {
    let cf = (!payload.is_empty()).then_some(40);
    request(MsgType::Con, code, mid, path, query, cf, payload)
}

/// Sends `bytes` from a fresh socket; what came back within 400 ms.
fn exchange(to: SocketAddr, bytes: &[u8]) -> Vec<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    s.send_to(bytes, to).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

/// Checks one case's answers against what it wants; the failure text.
fn check(name: &str, mid: Option<u16>, want: Want, got: &[Vec<u8>]) -> Result<(), String> {
    let msgs: Vec<Message> = got.iter().filter_map(|b| Message::decode(b).ok()).collect();
    let ok = match want {
        Want::Silence => got.is_empty(),
        Want::Reset => msgs.len() == 1 && msgs[0].mtype == MsgType::Rst && Some(msgs[0].mid) == mid,
        Want::Answer(c) => msgs.len() == 1 && msgs[0].code == c,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name}: wanted {want:?}, got {:?}",
            msgs.iter()
                .map(|m| format!("{:?} {} mid {}", m.mtype, m.code, m.mid))
                .collect::<Vec<_>>()
        ))
    }
}

#[test]
fn every_bad_input_gets_its_answer_and_the_gateway_goes_on() {
    let dir = TempDir::new("bad-input");
    let bs_port = common::free_udp_port();
    let gw = Gateway::start(
        &dir.0,
        &config(
            "127.0.0.1",
            &format!("[bootstrap]\nport = {bs_port}\ndtls_port = 0\n"),
        ),
    );
    let coap = gw.addr;
    // A registered device, for the cases that need one (Send).
    let mut dev = Client::new(coap);
    let reg = dev.register("good-dev", &["lt=300", "lwm2m=1.1"], OBJECTS);
    assert_eq!(reg.code, Code::CREATED);

    let mut header_only = con(Code::GET, 7001, "", &[], b"");
    header_only.truncate(4);
    header_only[0] &= 0xf0; // TKL 0
    let with = |extra: &[u8]| {
        let mut b = header_only.clone();
        b.extend_from_slice(extra);
        b
    };
    let long_ep = format!("ep={}", "e".repeat(300));
    let mut critical = Message::new(MsgType::Con, Code::GET, 7014, Token::EMPTY);
    critical.set_uri_path("rd");
    critical.add_option(9, b"x".to_vec()); // critical (odd) and unknown
    let mut elective = Message::new(MsgType::Con, Code::GET, 7015, Token::EMPTY);
    elective.set_uri_path("nothing");
    elective.add_option(2048, b"x".to_vec()); // elective (even) and unknown: ignored

    let framing: Vec<(&str, Vec<u8>, Option<u16>, Want)> = vec![
        ("empty datagram", vec![], None, Want::Silence),
        ("three bytes", vec![0x40, 0x01, 0x00], None, Want::Silence),
        (
            "version 2",
            {
                let mut b = con(Code::GET, 7002, "rd", &[], b"");
                b[0] = (b[0] & 0x3f) | 0x80;
                b
            },
            None,
            Want::Silence,
        ),
        (
            "version 0",
            {
                let mut b = con(Code::GET, 7003, "rd", &[], b"");
                b[0] &= 0x3f;
                b
            },
            None,
            Want::Silence,
        ),
        (
            "TKL 9 (CON)",
            {
                let mut b = vec![0x49, 0x01, 0x1b, 0x5c];
                b.extend_from_slice(&[1; 9]);
                b
            },
            Some(0x1b5c),
            Want::Reset,
        ),
        (
            "TKL 15 (NON)",
            {
                let mut b = vec![0x5f, 0x01, 0x1b, 0x5d];
                b.extend_from_slice(&[1; 15]);
                b
            },
            None,
            Want::Silence,
        ),
        (
            "option delta 15 that is not the payload marker (CON)",
            with(&[0xf1, 0x00]),
            Some(7001),
            Want::Reset,
        ),
        (
            "option length 15 (CON)",
            with(&[0x1f, 0x00]),
            Some(7001),
            Want::Reset,
        ),
        (
            "payload marker without payload (CON)",
            with(&[0xff]),
            Some(7001),
            Want::Reset,
        ),
        (
            "option running past the end (CON)",
            with(&[0xb5, b'r']),
            Some(7001),
            Want::Reset,
        ),
        (
            "token shorter than TKL (CON)",
            vec![0x48, 0x01, 0x1b, 0x5e, 1, 2],
            Some(0x1b5e),
            Want::Reset,
        ),
        (
            "empty message with a token (CON)",
            vec![0x41, 0x00, 0x1b, 0x5f, 9],
            Some(0x1b5f),
            Want::Reset,
        ),
        (
            "CoAP ping",
            vec![0x40, 0x00, 0x1b, 0x60],
            Some(0x1b60),
            Want::Reset,
        ),
        (
            "unknown critical option",
            critical.encode(),
            None,
            Want::Answer(Code::BAD_OPTION),
        ),
        (
            "unknown elective option (ignored)",
            elective.encode(),
            None,
            Want::Answer(Code::NOT_FOUND),
        ),
        (
            "unknown method 0.31",
            {
                let mut b = con(Code::GET, 7016, "rd", &[], b"");
                b[1] = 0x1f;
                b
            },
            None,
            Want::Answer(Code::METHOD_NOT_ALLOWED),
        ),
        (
            "ACK that answers nothing",
            vec![0x60, 0x44, 0x1b, 0x61],
            None,
            Want::Silence,
        ),
        (
            "Reset that answers nothing",
            vec![0x70, 0x00, 0x1b, 0x62],
            None,
            Want::Silence,
        ),
        (
            "oversize datagram (1 500 bytes)",
            con(Code::POST, 7017, "rd", &["ep=big"], &[b'<'; 1500]),
            None,
            Want::Answer(Code::REQUEST_ENTITY_TOO_LARGE),
        ),
        (
            "unknown path",
            con(Code::GET, 7018, "nothing", &[], b""),
            None,
            Want::Answer(Code::NOT_FOUND),
        ),
    ];
    let lwm2m: Vec<(&str, Vec<u8>, Option<u16>, Want)> = vec![
        (
            "Register without ep",
            con(Code::POST, 7101, "rd", &["lt=60"], OBJECTS),
            None,
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "Register with an empty ep",
            con(Code::POST, 7102, "rd", &["ep="], OBJECTS),
            None,
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "Register with a 300-character ep",
            con(Code::POST, 7103, "rd", &[long_ep.as_str()], OBJECTS),
            None,
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "Register with a control character in ep",
            con(Code::POST, 7104, "rd", &["ep=a\u{1}b"], OBJECTS),
            None,
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "Register with lt=abc",
            con(Code::POST, 7105, "rd", &["ep=x", "lt=abc"], OBJECTS),
            None,
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "Register with lt=-5",
            con(Code::POST, 7106, "rd", &["ep=x", "lt=-5"], OBJECTS),
            None,
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "Register with broken link format",
            con(Code::POST, 7107, "rd", &["ep=x"], b"<<</3/0>,,<"),
            None,
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "Register with a text payload",
            request(
                MsgType::Con,
                Code::POST,
                7108,
                "rd",
                &["ep=x"],
                Some(0),
                OBJECTS,
            ),
            None,
            Want::Answer(Code::UNSUPPORTED_CONTENT_FORMAT),
        ),
        (
            "Register as LwM2M 9.9",
            con(Code::POST, 7109, "rd", &["ep=x", "lwm2m=9.9"], OBJECTS),
            None,
            Want::Answer(Code::PRECONDITION_FAILED),
        ),
        (
            "Update of an unknown location",
            con(Code::POST, 7110, "rd/nope", &[], b""),
            None,
            Want::Answer(Code::NOT_FOUND),
        ),
        (
            "De-register of an unknown location",
            con(Code::DELETE, 7111, "rd/nope", &[], b""),
            None,
            Want::Answer(Code::NOT_FOUND),
        ),
        (
            "GET on /rd",
            con(Code::GET, 7112, "rd", &[], b""),
            None,
            Want::Answer(Code::METHOD_NOT_ALLOWED),
        ),
        (
            "Send from an unregistered peer",
            request(MsgType::Con, Code::POST, 7113, "dp", &[], Some(110), b"[]"),
            None,
            Want::Answer(Code::FORBIDDEN),
        ),
        (
            "pull URL that was never made",
            con(Code::GET, 7114, "fw/deadbeef", &[], b""),
            None,
            Want::Answer(Code::NOT_FOUND),
        ),
        (
            "Bootstrap-Request on the server port",
            con(Code::POST, 7115, "bs", &["ep=x"], b""),
            None,
            Want::Answer(Code::NOT_FOUND),
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes, mid, want) in framing.iter().chain(lwm2m.iter()) {
        if let Err(e) = check(name, *mid, *want, &exchange(coap, bytes)) {
            failures.push(e);
        }
    }
    // Send with broken payloads from the registered device's own socket.
    let sends: [(&str, u16, &[u8], Code); 3] = [
        (
            "Send of broken SenML JSON",
            110,
            b"[{\"n\":",
            Code::BAD_REQUEST,
        ),
        (
            "Send of broken SenML CBOR",
            112,
            &[0x9f, 0xa2, 0x00],
            Code::BAD_REQUEST,
        ),
        (
            "Send in TLV (not a Send format)",
            11542,
            &[0xc8, 0x00, 0x20, 0x01],
            Code::UNSUPPORTED_CONTENT_FORMAT,
        ),
    ];
    for (i, (name, cf, payload, code)) in sends.iter().enumerate() {
        let b = request(
            MsgType::Con,
            Code::POST,
            7200 + i as u16,
            "dp",
            &[],
            Some(*cf),
            payload,
        );
        dev.sock.send_to(&b, coap).unwrap();
        let mut buf = [0u8; 2048];
        dev.sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let got = match dev.sock.recv_from(&mut buf) {
            Ok((n, _)) => vec![buf[..n].to_vec()],
            Err(_) => vec![],
        };
        if let Err(e) = check(name, None, Want::Answer(*code), &got) {
            failures.push(e);
        }
    }
    // The DTLS port: random bytes and a truncated record are dropped unread.
    let dtls = gw.dtls.expect("DTLS on");
    let mut rng = fastrand::Rng::with_seed(19);
    for i in 0..200 {
        let len = rng.usize(0..120);
        let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if i % 3 == 0 && !b.is_empty() {
            b[0] = 0x16; // a handshake record's type, nothing after it right
        }
        if let Err(e) = check(
            "garbage on the DTLS port",
            None,
            Want::Silence,
            &exchange_quick(dtls, &b),
        ) {
            failures.push(e);
            break;
        }
    }
    // A handshake record shorter than its own header: this one panicked
    // the DTLS front before fuzz/dtls_hello found it.
    let mut short = vec![0x16, 0xfe, 0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0x99, 0, 0, 0];
    short.extend_from_slice(&[0x27; 13]);
    if let Err(e) = check(
        "a record shorter than its handshake header",
        None,
        Want::Silence,
        &exchange(dtls, &short),
    ) {
        failures.push(e);
    }
    // The bootstrap port.
    let bs = SocketAddr::from(([127, 0, 0, 1], bs_port));
    for (name, bytes, want) in [
        (
            "Bootstrap-Request without ep",
            con(Code::POST, 7301, "bs", &[], b""),
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "Bootstrap-Request of an unknown endpoint",
            con(Code::POST, 7302, "bs", &["ep=nobody"], b""),
            Want::Answer(Code::BAD_REQUEST),
        ),
        (
            "garbage on the bootstrap port",
            vec![0x99; 30],
            Want::Silence,
        ),
    ] {
        if let Err(e) = check(name, None, want, &exchange(bs, &bytes)) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Still serving, counted, and logged with bounds.
    assert_eq!(
        Client::new(coap)
            .register("after-bad-input", &["lt=60"], OBJECTS)
            .code,
        Code::CREATED
    );
    let out = gw.cli(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &stats["value"];
    assert!(v["malformedDatagrams"].as_u64().unwrap_or(0) >= 8, "{v}");
    // Junk never reaches the loop: the kernel's filter drops what is no
    // frame at all (short, or CoAP version other than 1; no DTLS record
    // header), and counts it.
    let n = |j: &serde_json::Value| j.as_u64().unwrap_or(0);
    assert!(
        n(&v["udp"]["coap"]["kernelDropped"]) + n(&v["udp"]["coap"]["junk"]) >= 4,
        "{v}"
    );
    assert!(
        n(&v["dtls"]["garbage"]) + n(&v["udp"]["dtls"]["kernelDropped"]) >= 150,
        "{v}"
    );
    let lines = common::log_lines(&gw);
    assert!(lines.iter().all(|l| !l.contains("panicked")));
    assert!(lines.iter().any(|l| l.contains("malformed CoAP datagram")));
    assert!(lines
        .iter()
        .any(|l| l.contains("register refused with 4.00")));
    assert!(lines.iter().any(|l| l.contains("no DTLS record")));
    let garbage_lines = lines
        .iter()
        .filter(|l| l.contains("no DTLS record"))
        .count();
    assert!(
        garbage_lines <= 50,
        "the log is bounded: {garbage_lines} lines for 200 datagrams"
    );
}

/// Like `exchange`, with a short wait (garbage is meant to get nothing).
fn exchange_quick(to: SocketAddr, bytes: &[u8]) -> Vec<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    s.send_to(bytes, to).unwrap();
    let mut buf = [0u8; 4096];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => vec![buf[..n].to_vec()],
        Err(_) => vec![],
    }
}
