//! Profiles and credentials in the server, against a simulated device.

use super::test_pair::{Pair, DEV, UNIX};
use super::*;
use crate::credentials::{Authenticated, Credential, Security};
use crate::lwm2m::ContentFormat;
use crate::profile::Profile;
use serde_json::json;

const THERMO: &str = r#"
name = "thermo"
objects = [3, 3303]
[resources."/3/0/0"]
attribute = true
[resources."/3/0/9"]
telemetry = true
key = "battery"
[resources."/3303/0/5700"]
telemetry = true
observe = true
key = "temperature"
[attributes."/3303/0/5700"]
pmin = 10
pmax = 60
"#;

fn provision(gw: &mut Server, ep: &str, security: Security) {
    gw.set_profile(Profile::from_toml(THERMO).unwrap()).unwrap();
    gw.set_credential(Credential {
        endpoint: ep.into(),
        profile: "thermo".into(),
        security,
    })
    .unwrap();
}

#[test]
fn the_profile_is_applied_on_registration() {
    let mut p = Pair::with(ContentFormat::SenmlCbor, false, |gw| {
        provision(gw, "dev1", Security::NoSec)
    });
    p.advance(Duration::from_millis(100));
    let served = &p.dev.served;
    assert_eq!(served.get("write-attributes"), Some(&1), "{served:?}");
    assert_eq!(served.get("read"), Some(&2), "{served:?}");
    assert_eq!(served.get("observe"), Some(&1), "{served:?}");
    // The attributes went out before the observation.
    let wa = p
        .to_device
        .iter()
        .position(|m| m.code == Code::PUT)
        .unwrap();
    let ob = p
        .to_device
        .iter()
        .position(|m| m.observe() == Some(0))
        .unwrap();
    assert!(wa < ob);
    let query = p.to_device[wa].uri_query();
    assert_eq!(query, ["pmax=60", "pmin=10"]);
    let reports = p.reports();
    let origins: Vec<(Origin, String)> = reports
        .iter()
        .map(|r| (r.origin, r.readings[0].path.to_string()))
        .collect();
    assert_eq!(
        origins,
        [
            (Origin::Read, "/3/0/0".to_string()),
            (Origin::Read, "/3/0/9".to_string()),
            (Origin::Observe, "/3303/0/5700".to_string()),
        ]
    );
    p.dev.notify(p.t, UNIX, false);
    p.pump();
    let latest = p.gw.latest_json("dev1");
    assert_eq!(
        latest["attributes"]["manufacturer"]["value"],
        "lwm2m-gw simulator"
    );
    assert!(latest["telemetry"]["battery"]["value"].is_i64(), "{latest}");
    assert!(
        latest["telemetry"]["temperature"]["value"].is_f64(),
        "{latest}"
    );
    // Profile keys name resources in commands.
    assert_eq!(
        p.rpc("Read", json!({"key": "Battery"}))["result"],
        "CONTENT"
    );
    assert_eq!(
        p.rpc("ObserveReadAll", json!({}))["value"],
        json!(["/3303/0/5700"])
    );
}

#[test]
fn secure_credentials_and_unknown_endpoints_are_refused_on_plain_coap() {
    let register = |gw: &mut Server, ep: &str, mid: u16| -> Code {
        let mut m = Message::new(MsgType::Con, Code::POST, mid, Token::from_u64(mid as u64));
        m.set_uri_path("rd");
        m.add_option(opt::URI_QUERY, format!("ep={ep}").into_bytes());
        gw.handle_datagram(Instant::now(), UNIX, DEV.parse().unwrap(), &m.encode());
        let t = gw.poll_transmit().unwrap();
        Message::decode(&t.bytes).unwrap().code
    };
    let mut gw = Server::new(ServerConfig::default(), 1);
    provision(
        &mut gw,
        "psk-dev",
        Security::Psk {
            identity: "id".into(),
            key: vec![1; 16],
        },
    );
    gw.set_credential(Credential {
        endpoint: "known".into(),
        profile: "default".into(),
        security: Security::NoSec,
    })
    .unwrap();
    assert_eq!(register(&mut gw, "psk-dev", 1), Code::FORBIDDEN);
    assert_eq!(register(&mut gw, "stranger", 2), Code::CREATED);
    // A PSK credential given to a device registered over plain CoAP ends
    // its plain Updates.
    let loc = gw.registry().get("stranger").unwrap().id.to_string();
    gw.set_credential(Credential {
        endpoint: "stranger".into(),
        profile: "default".into(),
        security: Security::Psk {
            identity: "stranger-id".into(),
            key: vec![3; 16],
        },
    })
    .unwrap();
    let mut up = Message::new(MsgType::Con, Code::POST, 9, Token::from_u64(9));
    up.set_uri_path(&format!("rd/{loc}"));
    gw.handle_datagram(Instant::now(), UNIX, DEV.parse().unwrap(), &up.encode());
    let t = gw.poll_transmit().unwrap();
    assert_eq!(Message::decode(&t.bytes).unwrap().code, Code::FORBIDDEN);
    gw.remove_credential("stranger");
    gw.set_allow_unknown(false);
    assert_eq!(register(&mut gw, "stranger2", 3), Code::FORBIDDEN);
    assert_eq!(register(&mut gw, "known", 4), Code::CREATED);
}

/// Sends a request from `from` and returns the answer's code.
fn request_from(
    gw: &mut Server,
    from: &str,
    path: &str,
    query: &str,
    code: Code,
    mid: u16,
) -> Code {
    let mut m = Message::new(MsgType::Con, code, mid, Token::from_u64(mid as u64));
    m.set_uri_path(path);
    if !query.is_empty() {
        m.add_option(opt::URI_QUERY, query.as_bytes().to_vec());
    }
    gw.handle_datagram(Instant::now(), UNIX, from.parse().unwrap(), &m.encode());
    let t = gw.poll_transmit().unwrap();
    Message::decode(&t.bytes).unwrap().code
}

fn psk_session(ep: &str) -> Option<Authenticated> {
    Some(Authenticated {
        endpoint: ep.into(),
        mode: "PSK",
        pinned: true,
    })
}

#[test]
fn a_dtls_session_registers_updates_and_deregisters_only_its_own_endpoint() {
    let mut gw = Server::new(ServerConfig::default(), 1);
    gw.set_allow_unknown(false);
    for (ep, id) in [("dev-a", "id-a"), ("dev-b", "id-b")] {
        provision(
            &mut gw,
            ep,
            Security::Psk {
                identity: id.into(),
                key: vec![1; 16],
            },
        );
    }
    let (a, b) = ("10.0.0.1:5000", "10.0.0.2:5000");
    gw.secure_session(a.parse().unwrap(), psk_session("dev-a"));
    gw.secure_session(b.parse().unwrap(), psk_session("dev-b"));
    // A's session cannot register B, nor B over A's.
    assert_eq!(
        request_from(&mut gw, a, "rd", "ep=dev-b", Code::POST, 1),
        Code::FORBIDDEN
    );
    assert_eq!(
        request_from(&mut gw, a, "rd", "ep=dev-a", Code::POST, 2),
        Code::CREATED
    );
    let loc_a = gw.registry().get("dev-a").unwrap().id.to_string();
    // B's session cannot update or de-register A's registration.
    let rd_a = format!("rd/{loc_a}");
    assert_eq!(
        request_from(&mut gw, b, &rd_a, "", Code::POST, 3),
        Code::FORBIDDEN
    );
    assert_eq!(
        request_from(&mut gw, b, &rd_a, "", Code::DELETE, 4),
        Code::FORBIDDEN
    );
    // Neither can a plain CoAP peer.
    let plain = "10.0.0.3:5000";
    assert_eq!(
        request_from(&mut gw, plain, &rd_a, "", Code::DELETE, 5),
        Code::FORBIDDEN
    );
    assert!(gw.registry().get("dev-a").is_some());
    assert_eq!(
        request_from(&mut gw, a, &rd_a, "", Code::POST, 6),
        Code::CHANGED
    );
    assert_eq!(
        request_from(&mut gw, a, &rd_a, "", Code::DELETE, 7),
        Code::DELETED
    );
}

#[test]
fn a_session_of_another_mode_or_certificate_is_refused() {
    let mut gw = Server::new(ServerConfig::default(), 1);
    gw.set_allow_unknown(false);
    provision(
        &mut gw,
        "psk-dev",
        Security::Psk {
            identity: "id".into(),
            key: vec![1; 16],
        },
    );
    provision(
        &mut gw,
        "pinned",
        Security::X509 {
            certificate: Some(vec![0x30, 0x03, 1, 2, 3]),
        },
    );
    provision(&mut gw, "by-cn", Security::X509 { certificate: None });
    let x509 = |ep: &str, pinned| {
        Some(Authenticated {
            endpoint: ep.into(),
            mode: "X509",
            pinned,
        })
    };
    let p = "10.0.0.9:7000";
    for (mid, ep, expected) in [
        (1, "psk-dev", Code::FORBIDDEN),
        (2, "pinned", Code::FORBIDDEN),
        (3, "unknown-cn", Code::FORBIDDEN),
        (4, "by-cn", Code::CREATED),
    ] {
        gw.secure_session(p.parse().unwrap(), x509(ep, false));
        let query = format!("ep={ep}");
        let code = request_from(&mut gw, p, "rd", &query, Code::POST, mid);
        assert_eq!(code, expected, "{ep}");
    }
}

#[test]
fn a_secure_peer_stays_secure_while_its_registration_lives() {
    let mut gw = Server::new(ServerConfig::default(), 1);
    let a = "10.0.0.1:5000";
    let peer = a.parse().unwrap();
    gw.secure_session(peer, psk_session("dev-a"));
    assert_eq!(
        request_from(&mut gw, a, "rd", "ep=dev-a", Code::POST, 1),
        Code::CREATED
    );
    gw.secure_session(peer, None);
    assert!(gw.is_secure_peer(peer), "nothing may go to it in the clear");
    let loc = gw.registry().get("dev-a").unwrap().id.to_string();
    gw.secure_session(peer, psk_session("dev-a"));
    assert_eq!(
        request_from(&mut gw, a, &format!("rd/{loc}"), "", Code::DELETE, 2),
        Code::DELETED
    );
    gw.secure_session(peer, None);
    assert!(!gw.is_secure_peer(peer));
    // A session that never registered leaves nothing behind.
    gw.secure_session("10.0.0.5:1".parse().unwrap(), psk_session("x"));
    gw.secure_session("10.0.0.5:1".parse().unwrap(), None);
    assert!(!gw.is_secure_peer("10.0.0.5:1".parse().unwrap()));
}

#[test]
fn profiles_and_credentials_keep_each_other_consistent() {
    let mut gw = Server::new(ServerConfig::default(), 1);
    let psk = |ep: &str, id: &str| Credential {
        endpoint: ep.into(),
        profile: "thermo".into(),
        security: Security::Psk {
            identity: id.into(),
            key: vec![2; 16],
        },
    };
    let e = gw.set_credential(psk("a", "id-a")).unwrap_err();
    assert!(e.contains("unknown profile \"thermo\""), "{e}");
    gw.set_profile(Profile::from_toml(THERMO).unwrap()).unwrap();
    gw.set_credential(psk("a", "id-a")).unwrap();
    let e = gw.set_credential(psk("b", "id-a")).unwrap_err();
    assert!(e.contains("already belongs to a"), "{e}");
    gw.set_credential(psk("a", "id-a")).unwrap();
    let e = gw.remove_profile("thermo").unwrap_err();
    assert!(e.contains("used by a"), "{e}");
    assert!(gw.remove_profile("default").is_err());
    gw.remove_credential("a").unwrap();
    gw.remove_profile("thermo").unwrap();
    let bad =
        Profile::from_toml("name = \"x\"\n[resources.\"/3/0/999\"]\ntelemetry = true\n").unwrap();
    assert!(gw.set_profile(bad).is_err());
    assert_eq!(gw.profiles().len(), 1);
}

#[test]
fn a_device_that_declines_to_observe_has_the_value_read_once() {
    let mut p = Pair::with_device(
        ContentFormat::SenmlCbor,
        false,
        |gw| provision(gw, "dev1", Security::NoSec),
        |d| d.observe = false,
    );
    p.advance(Duration::from_millis(100));
    let reports = p.reports();
    let temp = reports
        .iter()
        .find(|r| r.readings[0].path.to_string() == "/3303/0/5700")
        .expect("the declined observation's value is reported");
    assert_eq!(temp.origin, Origin::Read);
    assert_eq!(p.rpc("ObserveReadAll", json!({}))["value"], json!([]));
}
