//! The bootstrap server against a scripted device, in memory.

use super::*;
use crate::credentials::Security;
use crate::lwm2m::format;
use crate::lwm2m::node::{Node, Resource, Schema, Value};
use crate::lwm2m::ModelLibrary;
use std::path::Path as FsPath;

const DEV: &str = "127.0.0.1:40001";

fn dev() -> SocketAddr {
    DEV.parse().unwrap()
}

fn server() -> (Bootstrap, Instant) {
    let keys: KeySource = Box::new(|b: &mut [u8]| b.fill(0xab));
    (
        Bootstrap::new(BootstrapConfig::default(), 3, keys),
        Instant::now(),
    )
}

fn entry(ep: &str, f: impl FnOnce(&mut EntrySpec)) -> Entry {
    let mut s = EntrySpec {
        endpoint: ep.into(),
        ..EntrySpec::default()
    };
    f(&mut s);
    s.build(FsPath::new(".")).unwrap()
}

fn bs_request(mid: u16, query: &[&str]) -> Vec<u8> {
    let mut m = Message::new(MsgType::Con, Code::POST, mid, Token::new(&[1, 2]).unwrap());
    m.set_uri_path("/bs");
    for q in query {
        m.add_option(opt::URI_QUERY, q.as_bytes().to_vec());
    }
    m.encode()
}

fn sent(bs: &mut Bootstrap) -> Vec<Message> {
    std::iter::from_fn(|| bs.poll_transmit())
        .map(|t| Message::decode(&t.bytes).unwrap())
        .collect()
}

fn events(bs: &mut Bootstrap) -> Vec<BsEvent> {
    std::iter::from_fn(|| bs.poll_event()).collect()
}

fn answer(bs: &mut Bootstrap, t: Instant, req: &Message, code: Code, payload: &[u8]) {
    let mut a = Message::new(MsgType::Ack, code, req.mid, req.token);
    a.payload = payload.to_vec();
    bs.handle_datagram(t, 1, dev(), &a.encode());
}

/// The first request the server sent since the last look, if any.
fn next_request(bs: &mut Bootstrap) -> Option<Message> {
    sent(bs).into_iter().find(|m| m.mtype == MsgType::Con)
}

fn describe(m: &Message) -> String {
    format!("{} /{}", m.code, m.uri_path().join("/"))
}

/// A device that does what it is told: answers every step with success,
/// Discover with its bootstrap account at /0/0; returns the requests seen
/// and the decoded writes.
fn obedient(bs: &mut Bootstrap, t: Instant) -> (Vec<String>, Vec<(String, Node)>) {
    let models = ModelLibrary::embedded();
    let mut seen = Vec::new();
    let mut writes = Vec::new();
    loop {
        let out = sent(bs);
        let reqs: Vec<Message> = out
            .into_iter()
            .filter(|m| m.mtype == MsgType::Con)
            .collect();
        if reqs.is_empty() {
            return (seen, writes);
        }
        for r in reqs {
            seen.push(describe(&r));
            let code = match r.code {
                Code::DELETE => Code::DELETED,
                Code::GET => {
                    answer(bs, t, &r, Code::CONTENT, b"</0/0>,</1>");
                    continue;
                }
                Code::PUT => {
                    let p = Path::parse(&r.uri_path().join("/")).unwrap();
                    let cf = ContentFormat::from_code(r.content_format().unwrap()).unwrap();
                    let node = format::decode(cf, &p, &r.payload, &models as &dyn Schema).unwrap();
                    writes.push((p.to_string(), node));
                    Code::CHANGED
                }
                _ => Code::CHANGED,
            };
            answer(bs, t, &r, code, b"");
        }
    }
}

fn single(node: &Node, r: u16) -> Value {
    match node {
        Node::Instance(i) => match &i[&r] {
            Resource::Single(v) => v.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_nosec_bootstrap_deletes_writes_both_instances_then_finishes() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-1", |_| {}));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-1"]));
    let first = sent(&mut bs);
    assert_eq!(first[0].code, Code::CHANGED, "2.04 first");
    // Feed the first step back so `obedient` sees it too.
    let (steps, writes) = {
        let r = first[1].clone();
        answer(&mut bs, t, &r, Code::DELETED, b"");
        let (mut steps, writes) = obedient(&mut bs, t);
        steps.insert(0, describe(&r));
        (steps, writes)
    };
    let want = [
        (Code::DELETE, "/0"),
        (Code::DELETE, "/1"),
        (Code::GET, "/0"),
        (Code::PUT, "/0/1"),
        (Code::PUT, "/1/0"),
        (Code::POST, "/bs"),
    ]
    .map(|(c, p)| format!("{c} {p}"));
    assert_eq!(steps, want);
    assert_eq!(writes[0].0, "/0/1");
    assert_eq!(
        single(&writes[0].1, 0),
        Value::String("coap://127.0.0.1:5685".into())
    );
    assert_eq!(single(&writes[0].1, 1), Value::Boolean(false));
    assert_eq!(single(&writes[0].1, 2), Value::Integer(3));
    assert_eq!(single(&writes[0].1, 10), Value::Integer(1));
    assert_eq!(writes[1].0, "/1/0");
    assert_eq!(single(&writes[1].1, 1), Value::Integer(300));
    assert_eq!(single(&writes[1].1, 7), Value::String("U".into()));
    let ev = events(&mut bs);
    assert!(ev.contains(&BsEvent::Credential(Credential {
        endpoint: "dev-1".into(),
        profile: "default".into(),
        security: Security::NoSec
    })));
    assert_eq!(bs.state("dev-1").unwrap().phase, Phase::Finished);
    assert_eq!(bs.running(), 0);
}

#[test]
fn a_psk_account_carries_a_generated_key_stored_before_finish_leaves() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-2", |s| s.server_security = Some("psk".into())));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-2"]));
    let mut writes = Vec::new();
    let mut credential_before_finish = false;
    while let Some(r) = next_request(&mut bs) {
        let r = &r;
        if r.code == Code::POST {
            // Finish is being sent: its credential is already in the events.
            credential_before_finish = events(&mut bs).iter().any(|e| {
                matches!(e, BsEvent::Credential(c) if c.security == Security::Psk {
                    identity: "dev-2".into(),
                    key: vec![0xab; 16],
                })
            });
        }
        if r.code == Code::PUT {
            writes.push(r.clone());
        }
        answer(&mut bs, t, r, Code::CHANGED, b"");
    }
    assert!(credential_before_finish);
    let models = ModelLibrary::embedded();
    let sec = &writes[0];
    let node = format::decode(
        ContentFormat::Tlv,
        &Path::parse("/0/1").unwrap(),
        &sec.payload,
        &models as &dyn Schema,
    )
    .unwrap();
    assert_eq!(
        single(&node, 0),
        Value::String("coaps://127.0.0.1:5686".into())
    );
    assert_eq!(single(&node, 2), Value::Integer(0));
    assert_eq!(single(&node, 3), Value::Opaque(b"dev-2".to_vec()));
    assert_eq!(single(&node, 5), Value::Opaque(vec![0xab; 16]));
}

#[test]
fn an_unknown_endpoint_is_refused_and_nothing_is_stored() {
    let (mut bs, t) = server();
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=stranger"]));
    let out = sent(&mut bs);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code, Code::BAD_REQUEST);
    assert!(events(&mut bs).is_empty());
    assert_eq!(bs.refused, 1);
}

#[test]
fn an_entry_that_requires_dtls_is_refused_over_plain_udp() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-3", |s| {
        s.psk_identity = Some("id-3".into());
        s.psk_key = Some("000102030405060708090a0b0c0d0e0f".into());
    }));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-3"]));
    assert_eq!(sent(&mut bs)[0].code, Code::FORBIDDEN);
    // Over DTLS with that entry's identity it starts.
    bs.secure_session(
        t,
        dev(),
        Some(Authenticated {
            endpoint: "dev-3".into(),
            mode: "PSK",
            pinned: true,
        }),
    );
    bs.handle_datagram(t, 1, dev(), &bs_request(2, &["ep=dev-3"]));
    assert_eq!(sent(&mut bs)[0].code, Code::CHANGED);
}

#[test]
fn a_dtls_identity_bootstraps_only_its_own_endpoint() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-4", |_| {}));
    bs.secure_session(
        t,
        dev(),
        Some(Authenticated {
            endpoint: "dev-5".into(),
            mode: "PSK",
            pinned: true,
        }),
    );
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-4"]));
    assert_eq!(sent(&mut bs)[0].code, Code::FORBIDDEN);
}

/// Runs the sequence until the first Write and returns it.
fn until_write(bs: &mut Bootstrap, t: Instant) -> Message {
    loop {
        let r = next_request(bs).expect("a request");
        if r.code == Code::PUT {
            return r;
        }
        // A 1.0 client: no Bootstrap-Discover.
        let code = if r.code == Code::GET {
            Code::METHOD_NOT_ALLOWED
        } else {
            Code::DELETED
        };
        answer(bs, t, &r, code, b"");
    }
}

#[test]
fn writes_fall_back_to_another_format_on_4_15_and_start_in_the_one_pct_names() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-6", |_| {}));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-6"]));
    let w = until_write(&mut bs, t);
    assert_eq!(w.uri_path().join("/"), "0/1", "no Discover answer: /0/1");
    assert_eq!(w.content_format(), Some(ContentFormat::Tlv.code()));
    answer(&mut bs, t, &w, Code::UNSUPPORTED_CONTENT_FORMAT, b"");
    let again = sent(&mut bs);
    assert_eq!(again[0].uri_path().join("/"), "0/1");
    assert_eq!(
        again[0].content_format(),
        Some(ContentFormat::SenmlCbor.code())
    );

    let (mut bs, t) = server();
    bs.put_entry(entry("dev-7", |_| {}));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-7", "pct=110"]));
    let w = until_write(&mut bs, t);
    assert_eq!(w.content_format(), Some(ContentFormat::SenmlJson.code()));
}

#[test]
fn a_4_06_on_finish_is_a_failure_with_the_diagnostic_kept() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-8", |_| {}));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-8"]));
    while let Some(r) = next_request(&mut bs) {
        let r = &r;
        if r.code == Code::POST {
            answer(&mut bs, t, r, Code::NOT_ACCEPTABLE, b"no server account");
        } else {
            answer(&mut bs, t, r, Code::CHANGED, b"");
        }
    }
    match &bs.state("dev-8").unwrap().phase {
        Phase::Failed { reason, code } => {
            assert_eq!(code.as_deref(), Some("4.06"));
            assert!(reason.contains("no server account"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_device_silent_between_steps_fails_the_bootstrap_and_a_retry_starts_clean() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-9", |_| {}));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-9"]));
    let _ = sent(&mut bs);
    // Retransmissions, then silence past the stall timeout.
    let mut now = t;
    while bs.running() > 0 {
        now = bs.poll_timeout().unwrap().max(now);
        bs.handle_timeout(now);
        let _ = sent(&mut bs);
        assert!(now < t + Duration::from_secs(300), "never gave up");
    }
    match &bs.state("dev-9").unwrap().phase {
        Phase::Failed { reason, .. } => assert!(
            reason.contains("Delete /0"),
            "names the step it stalled on: {reason}"
        ),
        other => panic!("{other:?}"),
    }
    bs.handle_datagram(now, 1, dev(), &bs_request(2, &["ep=dev-9"]));
    let out = sent(&mut bs);
    assert_eq!(out[0].code, Code::CHANGED);
    assert_eq!(
        describe(&out[1]),
        describe(&{
            let mut m = Message::new(MsgType::Con, Code::DELETE, 0, Token::EMPTY);
            m.set_uri_path("/0");
            m
        })
    );
    assert_eq!(bs.state("dev-9").unwrap().attempts, 2);
}

#[test]
fn bootstrap_pack_answers_the_whole_account_in_senml() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-10", |s| s.server_security = Some("psk".into())));
    let mut m = Message::new(MsgType::Con, Code::GET, 5, Token::new(&[9]).unwrap());
    m.set_uri_path("/bspack");
    m.add_option(opt::URI_QUERY, b"ep=dev-10".to_vec());
    m.set_uint_option(opt::ACCEPT, ContentFormat::SenmlJson.code() as u64);
    bs.handle_datagram(t, 1, dev(), &m.encode());
    let out = sent(&mut bs);
    assert_eq!(out[0].code, Code::CONTENT);
    assert_eq!(
        out[0].content_format(),
        Some(ContentFormat::SenmlJson.code())
    );
    let models = ModelLibrary::embedded();
    let values = format::decode_entries(
        ContentFormat::SenmlJson,
        &out[0].payload,
        &models as &dyn Schema,
    )
    .unwrap();
    let get = |p: &str| {
        values
            .iter()
            .find(|(q, _)| q.to_string() == p)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("/0/1/0"),
        Some(Value::String("coaps://127.0.0.1:5686".into()))
    );
    assert_eq!(get("/0/1/5"), Some(Value::Opaque(vec![0xab; 16])));
    assert_eq!(get("/1/0/1"), Some(Value::Integer(300)));
    assert!(events(&mut bs)
        .iter()
        .any(|e| matches!(e, BsEvent::Credential(c) if c.endpoint == "dev-10")));
    assert_eq!(bs.state("dev-10").unwrap().phase, Phase::Finished);
}

#[test]
fn a_bootstrap_cut_by_a_restart_is_recorded_as_failed() {
    let (mut bs, _) = server();
    bs.restore(
        entry("dev-11", |_| {}),
        Some(State {
            endpoint: "dev-11".into(),
            phase: Phase::InProgress {
                step: "Write /0/1".into(),
            },
            attempts: 1,
            changed_ms: 5,
        }),
    );
    match &bs.state("dev-11").unwrap().phase {
        Phase::Failed { reason, .. } => assert!(reason.contains("Write /0/1"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_runs_start_and_end_are_durable_and_its_steps_are_not() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-12", |_| {}));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-12"]));
    let r = sent(&mut bs).remove(1);
    answer(&mut bs, t, &r, Code::DELETED, b"");
    let _ = obedient(&mut bs, t);
    let durable: Vec<(String, bool)> = events(&mut bs)
        .into_iter()
        .filter_map(|e| match e {
            BsEvent::State { state, durable } => Some((
                match state.phase {
                    Phase::InProgress { step } => step,
                    other => format!("{other:?}"),
                },
                durable,
            )),
            BsEvent::Credential(_) => None,
        })
        .collect();
    assert_eq!(durable.first(), Some(&("Delete /0".to_string(), true)));
    assert_eq!(durable.last(), Some(&("Finished".to_string(), true)));
    assert!(
        durable[1..durable.len() - 1].iter().all(|(_, d)| !d),
        "{durable:?}"
    );
}

#[test]
fn a_dtls_session_that_ends_mid_bootstrap_fails_it_and_nothing_goes_out_in_the_clear() {
    let (mut bs, t) = server();
    bs.put_entry(entry("dev-13", |s| s.server_security = Some("psk".into())));
    let auth = Authenticated {
        endpoint: "dev-13".into(),
        mode: "PSK",
        pinned: true,
    };
    bs.secure_session(t, dev(), Some(auth));
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-13"]));
    let _ = sent(&mut bs);
    // The account's datagrams are for the session only, even between
    // its end and the moment the run is failed.
    assert!(bs.is_secure_peer(dev()));
    bs.secure_session(t, dev(), None);
    match &bs.state("dev-13").unwrap().phase {
        Phase::Failed { reason, .. } => assert!(reason.contains("DTLS session ended"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(bs.running(), 0);
    // No retransmission of the step follows.
    bs.handle_timeout(t + Duration::from_secs(10));
    assert!(sent(&mut bs).is_empty());
}

#[test]
fn a_profiles_extra_writes_go_out_before_finish_typed_by_the_models() {
    let (mut bs, t) = server();
    bs.set_models(std::sync::Arc::new(ModelLibrary::embedded()));
    let mut e = entry("dev-14", |_| {});
    e.writes = vec![
        ("/3/0/14".into(), "\"+02:00\"".into()),
        ("/3/0/99".into(), "1".into()),
    ];
    bs.put_entry(e);
    bs.handle_datagram(t, 1, dev(), &bs_request(1, &["ep=dev-14"]));
    let r = sent(&mut bs).remove(1);
    answer(&mut bs, t, &r, Code::DELETED, b"");
    let (steps, writes) = obedient(&mut bs, t);
    let n = steps.len();
    assert_eq!(steps[n - 2], format!("{} /3/0/14", Code::PUT), "{steps:?}");
    assert_eq!(steps[n - 1], format!("{} /bs", Code::POST));
    let (p, node) = writes.last().unwrap();
    assert_eq!(p, "/3/0/14");
    assert_eq!(
        node,
        &Node::Resource(Resource::Single(Value::String("+02:00".into())))
    );
    // The write no model knows (/3/0/99) was left out, not sent.
    assert!(!steps.iter().any(|s| s.ends_with("/3/0/99")));
    assert_eq!(bs.state("dev-14").unwrap().phase, Phase::Finished);
}

/// Runs one obedient bootstrap of `ep` whose request arrived on `local`;
/// the security instance written.
fn security_written(bs: &mut Bootstrap, t: Instant, ep: &str, local: Option<&str>) -> Node {
    let local = local.map(|l| l.parse().unwrap());
    let q = format!("ep={ep}");
    // A fresh message id each time, or the engine answers a duplicate.
    static MID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(9000);
    let mid = MID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    bs.handle_datagram_on(t, 1, dev(), local, &bs_request(mid, &[q.as_str()]));
    let (steps, writes) = obedient(bs, t);
    writes
        .into_iter()
        .find(|(p, _)| p.starts_with("/0/"))
        .unwrap_or_else(|| panic!("no security instance written: {steps:?}"))
        .1
}

#[test]
fn a_built_server_uri_names_the_address_the_request_arrived_on() {
    let (mut bs, t) = server();
    bs.put_entry(entry("mh-1", |_| {}));
    let uri = |n: &Node| single(n, 0);
    let on = |bs: &mut Bootstrap, local| uri(&security_written(bs, t, "mh-1", local));
    assert_eq!(
        on(&mut bs, Some("192.0.2.7")),
        Value::String("coap://192.0.2.7:5685".into())
    );
    assert_eq!(
        on(&mut bs, Some("10.1.2.3")),
        Value::String("coap://10.1.2.3:5685".into())
    );
    // IPv4 on a dual-stack socket, IPv6 in brackets.
    assert_eq!(
        on(&mut bs, Some("::ffff:10.9.8.7")),
        Value::String("coap://10.9.8.7:5685".into())
    );
    assert_eq!(
        on(&mut bs, Some("2001:db8::5")),
        Value::String("coap://[2001:db8::5]:5685".into())
    );
    // Nothing a device could dial: the configured host.
    for nowhere in [None, Some("fe80::1"), Some("0.0.0.0")] {
        assert_eq!(
            on(&mut bs, nowhere),
            Value::String("coap://127.0.0.1:5685".into())
        );
    }
    // The operator's host beats the arrival address; an entry's URI both.
    let keys: KeySource = Box::new(|b: &mut [u8]| b.fill(1));
    let mut nat = Bootstrap::new(
        BootstrapConfig {
            host_override: Some("gw.example".into()),
            ..BootstrapConfig::default()
        },
        3,
        keys,
    );
    nat.put_entry(entry("mh-2", |_| {}));
    nat.put_entry(entry("mh-3", |s| {
        s.server_uri = Some("coap://lwm2m.site:5683".into())
    }));
    let w = security_written(&mut nat, t, "mh-2", Some("192.0.2.7"));
    assert_eq!(uri(&w), Value::String("coap://gw.example:5685".into()));
    let w = security_written(&mut nat, t, "mh-3", Some("192.0.2.7"));
    assert_eq!(uri(&w), Value::String("coap://lwm2m.site:5683".into()));
}

/// A key pair and a self-signed certificate for it, PEM files in a fresh
/// directory (made by the DTLS identity loader, as for the gateway).
fn device_pki(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lwm2m-gw-bs-{name}-{}-{}",
        std::process::id(),
        crate::clock::random_seed()
    ));
    crate::dtls::identity::load(&crate::dtls::identity::Files::default(), &dir).unwrap();
    dir
}

#[test]
fn rpk_and_x509_accounts_carry_the_devices_keys_and_the_gateways() {
    let a = device_pki("a");
    let b = device_pki("b");
    let key = |d: &std::path::Path| d.join("server-key.pem").display().to_string();
    let cert = |d: &std::path::Path| d.join("server-cert.pem").display().to_string();
    let (public, pkcs8) =
        crate::dtls::identity::device_key_pair(&std::fs::read(key(&a)).unwrap()).unwrap();
    // PKCS#8 (RFC 5958): version 0, then the key's algorithm.
    assert_eq!(&pkcs8[..2], &[0x30, pkcs8[1]]);
    assert!(pkcs8
        .windows(9)
        .any(|w| w == [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]));
    assert_eq!(
        crate::dtls::identity::device_key_pair(&pkcs8).unwrap(),
        (public.clone(), pkcs8.clone()),
        "Mbed TLS reads the PKCS#8 it was handed back to the same key"
    );
    let keys: KeySource = Box::new(|b: &mut [u8]| b.fill(1));
    let mut bs = Bootstrap::new(BootstrapConfig::default(), 3, keys);
    bs.set_server_identity(vec![0x30, 1, 2], vec![0x30, 3, 4]);
    let t = Instant::now();

    bs.put_entry(entry("rpk-1", |s| {
        s.server_security = Some("rpk".into());
        s.server_key = Some(key(&a));
    }));
    let w = security_written(&mut bs, t, "rpk-1", None);
    assert_eq!(
        single(&w, 0),
        Value::String("coaps://127.0.0.1:5686".into())
    );
    assert_eq!(single(&w, 2), Value::Integer(1));
    assert_eq!(single(&w, 3), Value::Opaque(public.clone()));
    assert_eq!(single(&w, 4), Value::Opaque(vec![0x30, 1, 2]));
    assert_eq!(single(&w, 5), Value::Opaque(pkcs8.clone()));
    let creds: Vec<Credential> = events(&mut bs)
        .into_iter()
        .filter_map(|e| match e {
            BsEvent::Credential(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(
        creds[0].security,
        Security::Rpk {
            public_key: public.clone()
        }
    );

    // The mode follows the files when it is not named.
    bs.put_entry(entry("x509-1", |s| {
        s.server_cert = Some(cert(&a));
        s.server_key = Some(key(&a));
    }));
    let w = security_written(&mut bs, t, "x509-1", None);
    let der = crate::credentials::certificate(&std::fs::read(cert(&a)).unwrap()).unwrap();
    assert_eq!(single(&w, 2), Value::Integer(2));
    assert_eq!(single(&w, 3), Value::Opaque(der.clone()));
    assert_eq!(single(&w, 4), Value::Opaque(vec![0x30, 3, 4]));
    assert_eq!(single(&w, 5), Value::Opaque(pkcs8));
    let cred = events(&mut bs).into_iter().find_map(|e| match e {
        BsEvent::Credential(c) => Some(c),
        _ => None,
    });
    assert_eq!(
        cred.unwrap().security,
        Security::X509 {
            certificate: Some(der)
        }
    );

    // Mistakes name themselves.
    let fails = |f: &dyn Fn(&mut EntrySpec)| {
        let mut s = EntrySpec {
            endpoint: "bad".into(),
            ..EntrySpec::default()
        };
        f(&mut s);
        s.build(FsPath::new(".")).unwrap_err().0
    };
    let e = fails(&|s| s.server_security = Some("rpk".into()));
    assert!(e.contains("needs --server-key"), "{e}");
    let e = fails(&|s| {
        s.server_security = Some("x509".into());
        s.server_key = Some(key(&a));
    });
    assert!(
        e.contains("--server-cert FILE and --server-key FILE"),
        "{e}"
    );
    let e = fails(&|s| {
        s.server_cert = Some(cert(&a));
        s.server_key = Some(key(&b));
    });
    assert!(e.contains("is not the certificate of the key"), "{e}");
    let e = fails(&|s| {
        s.server_security = Some("psk".into());
        s.server_key = Some(key(&a));
    });
    assert!(e.contains("are for rpk or x509"), "{e}");
    let e = fails(&|s| {
        s.server_security = Some("rpk".into());
        s.server_key = Some(cert(&a));
    });
    assert!(e.contains("not a private key"), "{e}");
    let e = fails(&|s| s.server_security = Some("tls".into()));
    assert!(e.contains("give nosec, psk, rpk"), "{e}");
    // The key never shows in a debug print.
    let e = entry("rpk-2", |s| s.server_key = Some(key(&a)));
    assert!(format!("{e:?}").contains("server_security: RPK"));
    let _ = std::fs::remove_dir_all(a);
    let _ = std::fs::remove_dir_all(b);
}
