//! Information reporting end to end over real UDP: observe, notify and
//! cancel with the simulator, stale notifications, Send, observations
//! surviving `kill -9`, and queue mode.

mod common;

use common::{config, rpc, Gateway, LiveDevice, Sim, TempDir, Watch};
use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use lwm2m_gw::lwm2m::ContentFormat;
use serde_json::{json, Value as Json};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn from<'a>(reports: &'a [Json], ep: &str) -> Vec<&'a Json> {
    reports.iter().filter(|r| r["endpoint"] == ep).collect()
}

fn stats(gw: &Gateway) -> Json {
    let mut c = gw.control();
    let mut req = serde_json::Map::new();
    req.insert("op".into(), "stats".into());
    c.call(req).unwrap()["value"].clone()
}

#[test]
fn simulator_notifications_con_and_non_flow_until_cancelled() {
    let dir = TempDir::new("observe-sim");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let _non = Sim::start_with(gw.addr, 1, "non-", "tlv", &["--notify-ms", "100"]);
    let _con = Sim::start_with(
        gw.addr,
        1,
        "con-",
        "senml-cbor",
        &["--notify-ms", "100", "--con"],
    );
    let mut watch = Watch::start(&gw, None);
    let mut c = gw.control();
    for ep in ["non-0", "con-0"] {
        let a = rpc(&mut c, ep, "Observe", json!({"id": "/3303/0/5700"}));
        assert_eq!(a["result"], "CONTENT", "{a}");
    }
    let seen = watch.collect(Duration::from_millis(1500));
    for ep in ["non-0", "con-0"] {
        let mine = from(&seen, ep);
        assert!(mine.len() >= 5, "{ep}: {} reports: {seen:?}", mine.len());
        for r in mine {
            assert_eq!(r["origin"], "observe");
            assert_eq!(r["values"][0]["path"], "/3303/0/5700");
            assert!(r["values"][0]["value"].is_f64(), "{r}");
            assert!(r["values"][0]["ts"].as_u64().unwrap() > 1_600_000_000_000);
        }
    }
    let a = rpc(
        &mut c,
        "non-0",
        "ObserveCancel",
        json!({"id": "/3303/0/5700"}),
    );
    assert_eq!(a["value"], 1, "{a}");
    watch.collect(Duration::from_millis(300));
    let after = watch.collect(Duration::from_millis(1000));
    assert!(from(&after, "non-0").is_empty(), "{after:?}");
    assert!(from(&after, "con-0").len() >= 5, "{after:?}");
    assert_eq!(
        rpc(&mut c, "con-0", "ObserveReadAll", json!({}))["value"],
        json!(["/3303/0/5700"])
    );
    let s = stats(&gw);
    assert!(s["notifications"].as_u64().unwrap() >= 20, "{s}");
    assert_eq!(s["observations"], 1, "{s}");
}

/// A device scripted by the test on a raw socket, to send notifications
/// in an order no well-behaved client would.
struct Raw {
    sock: UdpSocket,
    gw: SocketAddr,
    mid: u16,
}

impl Raw {
    fn new(gw: SocketAddr) -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw { sock, gw, mid: 100 }
    }

    fn recv(&self) -> Message {
        let mut buf = [0u8; 2048];
        let (n, _) = self
            .sock
            .recv_from(&mut buf)
            .expect("datagram from gateway");
        Message::decode(&buf[..n]).unwrap()
    }

    fn send(&mut self, mut m: Message) -> Option<Message> {
        self.mid += 1;
        m.mid = self.mid;
        self.sock.send_to(&m.encode(), self.gw).unwrap();
        (m.mtype == MsgType::Con).then(|| self.recv())
    }

    fn register(&mut self, ep: &str) {
        let mut m = Message::new(MsgType::Con, Code::POST, 0, Token::from_u64(1));
        m.set_uri_path("rd");
        m.add_option(opt::URI_QUERY, format!("ep={ep}").into_bytes());
        m.add_option(opt::URI_QUERY, b"lwm2m=1.1".to_vec());
        m.set_uint_option(opt::CONTENT_FORMAT, 40);
        m.payload = b"</3/0>,</3303/0>".to_vec();
        assert_eq!(self.send(m).unwrap().code, Code::CREATED);
    }
}

#[test]
fn out_of_order_notifications_are_dropped_and_send_is_reported() {
    let dir = TempDir::new("observe-order");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let mut dev = Raw::new(gw.addr);
    dev.register("raw-1");
    let mut watch = Watch::start(&gw, Some("raw-1"));
    let sock = gw.control_socket();
    let waiter = std::thread::spawn(move || {
        let mut c =
            lwm2m_gw::control::socket::Client::connect(&sock, Duration::from_secs(10)).unwrap();
        rpc(
            &mut c,
            "raw-1",
            "Observe",
            json!({"id": "/3303/0/5700", "format": "text"}),
        )
    });
    let obs = dev.recv();
    assert_eq!((obs.code, obs.observe()), (Code::GET, Some(0)));
    let mut first = Message::new(MsgType::Ack, Code::CONTENT, obs.mid, obs.token);
    first.set_uint_option(opt::OBSERVE, 5);
    first.set_uint_option(opt::CONTENT_FORMAT, 0);
    first.payload = b"20".to_vec();
    dev.sock.send_to(&first.encode(), gw.addr).unwrap();
    assert_eq!(waiter.join().unwrap()["value"], 20.0);
    for (t, seq, v) in [
        (MsgType::Con, 7, "21"),
        (MsgType::Con, 6, "99"),
        (MsgType::Non, 8, "22"),
        (MsgType::Non, 7, "98"),
        (MsgType::Con, 9, "23"),
    ] {
        let mut n = Message::new(t, Code::CONTENT, 0, obs.token);
        n.set_uint_option(opt::OBSERVE, seq);
        n.set_uint_option(opt::CONTENT_FORMAT, 0);
        n.payload = v.as_bytes().to_vec();
        if let Some(ack) = dev.send(n) {
            assert_eq!((ack.mtype, ack.code), (MsgType::Ack, Code::EMPTY));
        }
    }
    let got: Vec<f64> = watch
        .collect(Duration::from_millis(600))
        .iter()
        .map(|r| r["values"][0]["value"].as_f64().unwrap())
        .collect();
    assert_eq!(got, [20.0, 21.0, 22.0, 23.0]);
    assert_eq!(stats(&gw)["staleNotifications"], 2);

    // Send: SenML JSON with a device timestamp.
    let mut send = Message::new(MsgType::Con, Code::POST, 0, Token::from_u64(9));
    send.set_uri_path("dp");
    send.set_uint_option(opt::CONTENT_FORMAT, 110);
    send.payload =
        br#"[{"bn":"/3303/0/","bt":1700000000,"n":"5700","v":24.5},{"n":"5701","vs":"Cel"}]"#
            .to_vec();
    assert_eq!(dev.send(send.clone()).unwrap().code, Code::CHANGED);
    let r = watch.next(Duration::from_secs(2)).expect("Send report");
    assert_eq!(r["origin"], "send");
    assert_eq!(r["values"][0]["value"], 24.5);
    assert_eq!(r["values"][0]["ts"], 1_700_000_000_000u64);
    assert_eq!(r["values"][1]["value"], "Cel");
    // A broken Send is refused with 4.00 and the gateway goes on.
    send.payload = b"[{\"n\":".to_vec();
    assert_eq!(dev.send(send).unwrap().code, Code::BAD_REQUEST);
    assert!(gw.wait_log(
        "ep=raw-1 Send in SENML_JSON did not decode",
        Duration::from_secs(2)
    ));
}

#[test]
fn observations_survive_kill_9_without_a_new_observe() {
    let dir = TempDir::new("observe-restart");
    let port = common::free_udp_port();
    let cfg = config("127.0.0.1", "");
    let gw = Gateway::start_on(&dir.0, &cfg, port);
    let dev = LiveDevice::start(gw.addr, "keep-1", ContentFormat::SenmlCbor);
    let mut c = gw.control();
    assert_eq!(
        rpc(&mut c, "keep-1", "Observe", json!({"id": "/3303/0/5700"}))["result"],
        "CONTENT"
    );
    assert_eq!(
        rpc(
            &mut c,
            "keep-1",
            "ObserveComposite",
            json!({"ids": ["/3/0/9", "/3/0/13"]})
        )["result"],
        "CONTENT"
    );
    drop(c);
    gw.kill9();
    let gw = Gateway::start_on(&dir.0, &cfg, port);
    assert!(
        gw.wait_log("2 observations restored", Duration::from_secs(5)),
        "{:?}",
        common::log_lines(&gw)
    );
    let mut watch = Watch::start(&gw, None);
    for con in [true, false] {
        dev.notify(con);
        let mut got = Vec::new();
        while got.len() < 2 {
            let r = watch
                .next(Duration::from_secs(3))
                .expect("notification after restart");
            got.push(r["values"][0]["path"].as_str().unwrap().to_string());
        }
        got.sort();
        assert_eq!(got, ["/3/0/9", "/3303/0/5700"], "con={con}");
    }
    let (served, observers) = dev.served();
    assert_eq!(served.get("observe"), Some(&1), "{served:?}");
    assert_eq!(served.get("observe-composite"), Some(&1), "{served:?}");
    assert_eq!(observers, 2);
    // The device did not have to register again.
    assert!(!gw.log_contains("ep=keep-1 registered"));
    let mut c = gw.control();
    assert_eq!(
        rpc(&mut c, "keep-1", "ObserveReadAll", json!({}))["value"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn queued_read_and_write_reach_a_sleeping_device_in_order() {
    let dir = TempDir::new("observe-queue");
    let gw = Gateway::start(
        &dir.0,
        &config("127.0.0.1", "[queue]\nawake_window_s = 1\n"),
    );
    let _sim = Sim::start_with(
        gw.addr,
        1,
        "sleepy-",
        "senml-cbor",
        &["--queue", "--awake-ms", "1500", "--update-ms", "4000"],
    );
    let reg = rpc(&mut gw.control(), "sleepy-0", "DiscoverAll", json!({}));
    assert_eq!(reg["result"], "CONTENT");
    // Past the gateway's awake window: the device counts as asleep.
    std::thread::sleep(Duration::from_millis(1200));
    let start = std::time::Instant::now();
    let call = |method: &str, params: Json| {
        let mut c = gw.control();
        let req = json!({"op": "rpc", "endpoint": "sleepy-0", "method": method,
                         "params": params, "wait": true});
        let Json::Object(m) = req else { unreachable!() };
        let first = c.call(m).unwrap();
        assert_eq!(first["result"], "QUEUED", "{first}");
        (c, first)
    };
    let (mut c1, q1) = call("Read", json!({"id": "/3/0/15"}));
    let (mut c2, _) = call(
        "WriteReplace",
        json!({"id": "/3/0/15", "value": "Asia/Tokyo"}),
    );
    assert_eq!(q1["value"]["position"], 1);
    // The CLI waits the same way and prints both lines.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(["rpc", "--wait", "--json", "--control-socket"])
        .arg(gw.control_socket())
        .args(["sleepy-0", "Read {\"id\":\"/3/0/15\"}"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "QUEUED comes at once"
    );
    let a1 = c1.next_line().unwrap();
    let a2 = c2.next_line().unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Json> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(a1["value"], "Europe/Berlin", "{a1}");
    assert_eq!(a2["result"], "CHANGED", "{a2}");
    assert_eq!(lines[0]["result"], "QUEUED");
    assert_eq!(lines[1]["value"], "Asia/Tokyo", "{lines:?}");
    assert!(gw.log_contains("ep=sleepy-0 sending queued Read #"));
    assert_eq!(stats(&gw)["queued"], 0);
}
