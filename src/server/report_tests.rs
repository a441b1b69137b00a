//! Observe, notifications, Send and queue mode against a simulated device,
//! in memory on a virtual clock.

use super::*;
use crate::lwm2m::{ContentFormat, Path};
use serde_json::json;

use super::test_pair::{Pair, DEV, UNIX};

fn values(r: &[Report]) -> Vec<(String, serde_json::Value)> {
    r.iter()
        .flat_map(|r| r.readings.iter())
        .map(|x| (x.path.to_string(), x.value.to_json()))
        .collect()
}

#[test]
fn observe_reports_first_value_and_every_notification_con_and_non() {
    for format in [
        ContentFormat::SenmlCbor,
        ContentFormat::Tlv,
        ContentFormat::SenmlJson,
    ] {
        let mut p = Pair::new(format, false);
        assert_eq!(
            p.rpc("Observe", json!({"id": "/3303/0"}))["result"],
            "CONTENT"
        );
        let first = p.reports();
        assert_eq!(first.len(), 1, "{format}");
        assert!(values(&first).iter().any(|(k, _)| k == "/3303/0/5700"));
        assert_eq!(p.dev.notify(p.t, UNIX, true), 1);
        p.pump();
        assert_eq!(p.dev.notify(p.t, UNIX, false), 1);
        p.pump();
        let r = p.reports();
        assert_eq!(r.len(), 2, "{format}: {r:?}");
        assert!(r
            .iter()
            .all(|r| r.endpoint.as_ref() == "dev1" && r.origin == Origin::Observe));
        assert_eq!(p.gw.report_stats().notifications, 2);
        // The record the store keeps names token, paths and format.
        let stored: Vec<Persist> = std::iter::from_fn(|| p.gw.poll_persist()).collect();
        assert!(
            stored.iter().any(|x| matches!(x, Persist::Observation(o)
                if o.paths == ["/3303/0"] && o.format == format.code() && !o.token.is_empty())),
            "{stored:?}"
        );
    }
}

#[test]
fn proactive_cancel_sends_observe_1_and_the_device_stops() {
    let mut p = Pair::new(ContentFormat::SenmlCbor, false);
    p.rpc("Observe", json!({"id": "/3/0/9"}));
    p.rpc("Observe", json!({"id": "/3303/0/5700"}));
    assert_eq!(p.dev.observers(), 2);
    p.to_device.clear();
    assert_eq!(p.rpc("ObserveCancel", json!({"id": "/3/0/9"}))["value"], 1);
    p.pump();
    let cancel: Vec<&Message> = p
        .to_device
        .iter()
        .filter(|m| m.code == Code::GET && m.observe() == Some(1))
        .collect();
    assert_eq!(cancel.len(), 1, "{:?}", p.to_device);
    assert_eq!(p.dev.observers(), 1);
    assert_eq!(
        p.rpc("ObserveReadAll", json!({}))["value"],
        json!(["/3303/0/5700"])
    );
    assert_eq!(p.rpc("ObserveCancelAll", json!({}))["value"], 1);
    assert_eq!(p.dev.observers(), 0);
    assert!(std::iter::from_fn(|| p.gw.poll_persist())
        .any(|x| matches!(x, Persist::ObservationGone { .. })));
}

#[test]
fn observe_composite_reports_every_path_and_cancels() {
    let mut p = Pair::new(ContentFormat::SenmlCbor, false);
    let a = p.rpc(
        "ObserveComposite",
        json!({"ids": ["/3/0/9", "/3303/0/5700"]}),
    );
    assert_eq!(a["result"], "CONTENT", "{a}");
    assert!(a["value"]["/3/0/9"].is_i64(), "{a}");
    p.reports();
    p.dev.notify(p.t, UNIX, false);
    p.pump();
    let v = values(&p.reports());
    let paths: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(paths, ["/3/0/9", "/3303/0/5700"]);
    assert_eq!(
        p.rpc("ObserveReadAll", json!({}))["value"],
        json!([["/3/0/9", "/3303/0/5700"]])
    );
    let a = p.rpc(
        "ObserveCompositeCancel",
        json!({"ids": ["/3303/0/5700", "/3/0/9"]}),
    );
    assert_eq!(a["value"], 1);
    assert_eq!(p.dev.observers(), 0);
}

#[test]
fn send_is_decoded_with_device_timestamps_and_unknown_senders_are_refused() {
    let mut p = Pair::new(ContentFormat::SenmlCbor, false);
    p.reports();
    let paths = [
        Path::parse("/3/0/9").unwrap(),
        Path::parse("/3303/0/5700").unwrap(),
    ];
    for cf in [
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::Lwm2mCbor,
    ] {
        p.dev.send_values(p.t, UNIX, &paths, cf);
        p.pump();
        let r = p.reports();
        assert_eq!(r.len(), 1, "{cf}");
        assert_eq!(r[0].origin, Origin::Send);
        assert_eq!(values(&r).len(), 2, "{cf}");
    }
    // A SenML record with a relative time of -10 s is stamped 10 s back.
    let mut m = Message::new(MsgType::Con, Code::POST, 900, Token::EMPTY);
    m.set_uri_path("/dp");
    m.set_uint_option(opt::CONTENT_FORMAT, 110);
    m.payload = br#"[{"bn":"/3/0/","n":"9","v":55,"t":-10}]"#.to_vec();
    p.gw.handle_datagram(p.t, UNIX, DEV.parse().unwrap(), &m.encode());
    let r = p.reports();
    assert_eq!(r[0].readings[0].ts_ms, UNIX - 10_000);
    assert_eq!(r[0].readings[0].value, crate::lwm2m::Value::Integer(55));
    // Unknown sender, wrong format, garbage.
    let stranger: SocketAddr = "[::1]:41000".parse().unwrap();
    let answers = |p: &mut Pair| -> Vec<Code> {
        std::iter::from_fn(|| p.gw.poll_transmit())
            .map(|t| Message::decode(&t.bytes).unwrap().code)
            .collect()
    };
    answers(&mut p);
    m.mid = 901;
    p.gw.handle_datagram(p.t, UNIX, stranger, &m.encode());
    assert_eq!(answers(&mut p), [Code::FORBIDDEN]);
    m.mid = 902;
    m.set_uint_option(opt::CONTENT_FORMAT, 11542);
    p.gw.handle_datagram(p.t, UNIX, DEV.parse().unwrap(), &m.encode());
    assert_eq!(answers(&mut p), [Code::UNSUPPORTED_CONTENT_FORMAT]);
    m.mid = 903;
    m.set_uint_option(opt::CONTENT_FORMAT, 112);
    m.payload = vec![0x9f, 0xff, 0x00];
    p.gw.handle_datagram(p.t, UNIX, DEV.parse().unwrap(), &m.encode());
    assert_eq!(answers(&mut p), [Code::BAD_REQUEST]);
    assert!(p.reports().is_empty());
}

#[test]
fn queued_requests_wait_for_the_device_and_go_out_in_order() {
    let mut p = Pair::new(ContentFormat::SenmlCbor, true);
    assert!(p.gw.registry().get("dev1").unwrap().queue_mode);
    // Let both sides fall asleep.
    p.advance(Duration::from_secs(10));
    assert!(!p.dev.is_awake(p.t));
    let served_before = p.dev.served.values().sum::<u64>();
    let r1 = p.start("Read", json!({"id": "/3/0/15"}));
    let w = p.start(
        "WriteReplace",
        json!({"id": "/3/0/15", "value": "Asia/Tokyo"}),
    );
    let r2 = p.start("Read", json!({"id": "/3/0/15"}));
    let queued: Vec<_> = std::iter::from_fn(|| p.gw.poll_answer()).collect();
    assert_eq!(queued.len(), 3);
    assert!(
        queued.iter().all(|(_, a)| a.result == "QUEUED"),
        "{queued:?}"
    );
    assert_eq!(queued[2].1.value.as_ref().unwrap()["position"], 3);
    assert_eq!(p.gw.queued_count(), 3);
    p.advance(Duration::from_secs(20));
    assert_eq!(
        p.dev.served.values().sum::<u64>(),
        served_before,
        "nothing sent while asleep"
    );
    // The device wakes with an Update: the three go out, in order.
    p.t += Duration::from_secs(40);
    p.advance(Duration::from_secs(1));
    let a1 = p.answer(r1);
    assert_eq!(a1["value"], "Europe/Berlin", "{a1}");
    assert_eq!(p.answer(w)["result"], "CHANGED");
    assert_eq!(p.answer(r2)["value"], "Asia/Tokyo");
    assert_eq!(p.gw.queued_count(), 0);
    let stored: Vec<Persist> = std::iter::from_fn(|| p.gw.poll_persist()).collect();
    assert_eq!(
        stored
            .iter()
            .filter(|x| matches!(x, Persist::Queued(_)))
            .count(),
        3
    );
    assert_eq!(
        stored
            .iter()
            .filter(|x| matches!(x, Persist::QueuedGone { .. }))
            .count(),
        3
    );
    // While awake a command goes straight out.
    assert_eq!(p.rpc("Read", json!({"id": "/3/0/9"}))["result"], "CONTENT");
}

#[test]
fn queued_requests_expire_and_are_bounded() {
    let mut p = Pair::new(ContentFormat::SenmlCbor, true);
    p.gw.queue_cfg.ttl = Duration::from_secs(30);
    p.gw.queue_cfg.max_per_device = 2;
    p.advance(Duration::from_secs(10));
    let a = p.start("Read", json!({"id": "/3/0/9"}));
    p.start("Read", json!({"id": "/3/0/9"}));
    let full = p.start("Read", json!({"id": "/3/0/9"}));
    let got: Vec<_> = std::iter::from_fn(|| p.gw.poll_answer()).collect();
    assert_eq!(
        got[2],
        (
            full,
            Answer::fail(
                "SERVICE_UNAVAILABLE",
                "2 requests already wait for this sleeping device"
            )
        )
    );
    // Time passes on the wall clock too.
    p.gw.last_unix_ms = UNIX + 31_000;
    p.advance(Duration::from_secs(2));
    let got: Vec<_> = std::iter::from_fn(|| p.gw.poll_answer()).collect();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0, got[0].1.result), (a, "EXPIRED"));
    assert_eq!(p.gw.queued_count(), 0);
}

#[test]
fn restored_observation_takes_notifications_without_a_new_observe() {
    let mut p = Pair::new(ContentFormat::Tlv, false);
    p.rpc("Observe", json!({"id": "/3303/0/5700"}));
    let stored: Vec<Persist> = std::iter::from_fn(|| p.gw.poll_persist()).collect();
    let rec = stored
        .iter()
        .find_map(|x| match x {
            Persist::Observation(o) => Some(o.clone()),
            _ => None,
        })
        .unwrap();
    let reg = p.gw.registry().get("dev1").unwrap().clone();
    // A new gateway process: registration and observation come from the store.
    let mut gw = Server::new(ServerConfig::default(), 9);
    gw.set_models(Arc::new(ModelLibrary::embedded()));
    assert!(gw.restore(p.t, UNIX, reg));
    assert!(gw.restore_observation(&rec));
    p.gw = gw;
    p.to_device.clear();
    p.dev.notify(p.t, UNIX, true);
    p.pump();
    let r = p.reports();
    assert_eq!(values(&r).len(), 1);
    assert_eq!(r[0].readings[0].path.to_string(), "/3303/0/5700");
    // Only the ACK of the notification went to the device.
    assert!(
        p.to_device.iter().all(|m| m.code == Code::EMPTY),
        "{:?}",
        p.to_device
    );
    // An observation from an older registration is not taken back.
    let mut stale = rec.clone();
    stale.reg_id ^= 1;
    assert!(!p.gw.restore_observation(&stale));
}

#[test]
fn observations_follow_a_device_that_updates_from_a_new_address() {
    let mut p = Pair::new(ContentFormat::SenmlCbor, false);
    p.rpc("Observe", json!({"id": "/3/0/9"}));
    p.reports();
    p.dev_addr = "[::1]:40999".parse().unwrap();
    p.advance(Duration::from_secs(61));
    assert_eq!(p.gw.registry().get("dev1").unwrap().peer, p.dev_addr);
    p.to_device.clear();
    p.dev.notify(p.t, UNIX, true);
    p.pump();
    assert_eq!(p.reports().len(), 1);
    assert!(
        p.to_device.iter().all(|m| m.mtype != MsgType::Rst),
        "{:?}",
        p.to_device
    );
    let moved = std::iter::from_fn(|| p.gw.poll_persist())
        .any(|x| matches!(x, Persist::Observation(o) if o.peer == "[::1]:40999".parse().unwrap()));
    assert!(moved, "the stored observation names the new address");
}

#[test]
fn a_stored_queued_request_goes_out_when_the_device_wakes_after_a_restart() {
    let mut p = Pair::new(ContentFormat::SenmlCbor, true);
    p.advance(Duration::from_secs(10));
    let reg = p.gw.registry().get("dev1").unwrap().clone();
    let mut gw = Server::new(ServerConfig::default(), 9);
    gw.set_models(Arc::new(ModelLibrary::embedded()));
    assert!(gw.restore(p.t, UNIX, reg));
    let rec = QueuedRecord {
        endpoint: "dev1".into(),
        seq: 41,
        method: "Execute".into(),
        params: r#"{"id":"/3/0/4"}"#.into(),
        queued_ms: UNIX,
        expires_ms: UNIX + 3_600_000,
    };
    assert!(gw.restore_queued(p.t, &rec));
    assert_eq!(gw.queued_count(), 1);
    p.gw = gw;
    p.t += Duration::from_secs(60);
    p.advance(Duration::from_secs(1));
    assert_eq!(
        p.dev.executed().last().map(|x| x.to_string()),
        Some("/3/0/4".into())
    );
    assert_eq!(p.gw.queued_count(), 0);
    let gone = std::iter::from_fn(|| p.gw.poll_persist())
        .any(|x| matches!(x, Persist::QueuedGone { seq: 41, .. }));
    assert!(gone);
}
