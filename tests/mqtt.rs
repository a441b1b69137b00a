//! The northbound bridge against a real mosquitto on loopback: ThingsBoard
//! gateway API shapes, RPC and shared attributes from the platform, bad
//! downlink input, and store-and-forward through a broker outage and a
//! `kill -9` of the gateway.

mod common;

use common::{config, Broker, Gateway, LiveDevice, Subscriber, TempDir};
use lwm2m_gw::lwm2m::ContentFormat;
use serde_json::{json, Value as Json};
use std::time::Duration;

const PROFILE: &str = r#"
name = "meter"
transport_log = true
[resources."/3/0/0"]
attribute = true
[resources."/3/0/15"]
attribute = true
key = "timezone"
[resources."/3303/0/5700"]
telemetry = true
observe = true
key = "temperature"
"#;

fn gw_config(broker: &Broker) -> String {
    config(
        "127.0.0.1",
        &format!("[mqtt]\nurl = \"{}\"\n", broker.url()),
    )
}

fn provision(gw: &Gateway, ep: &str) {
    common::provision(gw, ep, "meter", PROFILE);
}

fn mqtt_stats(gw: &Gateway) -> Json {
    let mut c = gw.control();
    let Json::Object(req) = json!({"op": "stats"}) else {
        unreachable!()
    };
    c.call(req).unwrap()["value"]["mqtt"].clone()
}

/// Every telemetry timestamp of `ep` received, in arrival order.
fn temperature_ts(sub: &Subscriber, ep: &str) -> Vec<u64> {
    sub.on("v1/gateway/telemetry")
        .iter()
        .filter_map(|m| m.get(ep).and_then(Json::as_array).cloned())
        .flatten()
        .filter(|e| e["values"].get("temperature").is_some())
        .map(|e| e["ts"].as_u64().unwrap())
        .collect()
}

#[test]
fn thingsboard_shapes_rpc_and_shared_attributes() {
    let dir = TempDir::new("mqtt-api");
    let broker = Broker::start(&dir.0);
    let sub = Subscriber::start(&broker, "tb-api");
    let gw = Gateway::start(&dir.0, &gw_config(&broker));
    assert!(gw.wait_log("northbound: connected", Duration::from_secs(10)));
    provision(&gw, "m-1");
    let dev = LiveDevice::start(gw.addr, "m-1", ContentFormat::SenmlCbor);
    let connect = sub.wait("v1/gateway/connect", Duration::from_secs(5), |m| {
        !m.is_empty()
    });
    assert_eq!(connect[0], json!({"device": "m-1", "type": "meter"}));
    let attrs = sub.wait("v1/gateway/attributes", Duration::from_secs(5), |m| {
        m.iter().any(|a| a["m-1"].get("timezone").is_some())
    });
    let all: serde_json::Map<String, Json> = attrs
        .iter()
        .filter_map(|a| a["m-1"].as_object().cloned())
        .flatten()
        .collect();
    assert_eq!(all["manufacturer"], "lwm2m-gw simulator");
    assert_eq!(all["timezone"], "Europe/Berlin");
    // The gateway asked the platform for the shared attributes it can write.
    let req = sub.wait(
        "v1/gateway/attributes/request",
        Duration::from_secs(5),
        |m| !m.is_empty(),
    );
    assert_eq!(req[0]["device"], "m-1");
    assert!(
        req[0]["keys"]
            .as_array()
            .unwrap()
            .contains(&json!("timezone")),
        "{req:?}"
    );
    for _ in 0..3 {
        dev.notify(false);
        std::thread::sleep(Duration::from_millis(50));
    }
    let ts = sub.wait("v1/gateway/telemetry", Duration::from_secs(5), |_| {
        temperature_ts(&sub, "m-1").len() >= 4
    });
    assert!(!ts.is_empty());
    let t = ts
        .iter()
        .flat_map(|x| x["m-1"].as_array().cloned().unwrap_or_default())
        .find(|e| e["values"].get("temperature").is_some())
        .unwrap();
    assert!(
        t["ts"].as_u64().unwrap() > 1_600_000_000_000 && t["values"]["temperature"].is_f64(),
        "{t}"
    );

    // Bad input on the downlink topics is logged and ignored.
    broker.publish("v1/gateway/rpc", "{not json");
    broker.publish("v1/gateway/attributes", r#"{"data":{"timezone":"x"}}"#);
    assert!(gw.wait_log(
        "northbound: ignored: v1/gateway/rpc: not JSON",
        Duration::from_secs(5)
    ));
    assert!(gw.wait_log(
        "northbound: ignored: v1/gateway/attributes: no \"device\"",
        Duration::from_secs(5)
    ));

    // RPC: the answer comes back on the same topic with the same id.
    broker.publish(
        "v1/gateway/rpc",
        r#"{"device":"m-1","data":{"id":77,"method":"Read","params":{"key":"temperature"}}}"#,
    );
    let answers = sub.wait("v1/gateway/rpc", Duration::from_secs(5), |m| {
        m.iter().any(|x| x["id"] == 77)
    });
    let a = answers.iter().find(|x| x["id"] == 77).expect("RPC answer");
    assert_eq!(a["device"], "m-1");
    assert_eq!(a["data"]["result"], "CONTENT", "{a}");
    assert!(a["data"]["value"].is_f64(), "{a}");
    broker.publish(
        "v1/gateway/rpc",
        r#"{"device":"m-1","data":{"id":78,"method":"Frobnicate","params":{}}}"#,
    );
    let answers = sub.wait("v1/gateway/rpc", Duration::from_secs(5), |m| {
        m.iter().any(|x| x["id"] == 78)
    });
    let a = answers.iter().find(|x| x["id"] == 78).unwrap();
    assert_eq!(a["data"]["result"], "BAD_REQUEST");

    // A shared attribute update becomes a Write, in both response shapes too.
    broker.publish(
        "v1/gateway/attributes",
        r#"{"device":"m-1","data":{"timezone":"Asia/Tokyo"}}"#,
    );
    assert!(gw.wait_log(
        "ep=m-1 shared attribute \"timezone\" written: CHANGED",
        Duration::from_secs(5)
    ));
    let mut c = gw.control();
    let read = common::rpc(&mut c, "m-1", "Read", json!({"key": "timezone"}));
    assert_eq!(read["value"], "Asia/Tokyo");
    broker.publish(
        "v1/gateway/attributes/response",
        r#"{"id":1,"device":"m-1","shared":{"timezone":"Europe/Kyiv"}}"#,
    );
    std::thread::sleep(Duration::from_millis(300));
    let read = common::rpc(&mut c, "m-1", "Read", json!({"key": "timezone"}));
    assert_eq!(read["value"], "Europe/Kyiv");
    // The profile asked for a transport log: registration and commands.
    let log: Vec<String> = sub
        .wait("v1/gateway/telemetry", Duration::from_secs(5), |m| {
            m.iter()
                .flat_map(|x| x["m-1"].as_array().cloned().unwrap_or_default())
                .any(|e| {
                    e["values"]["transportLog"]
                        .as_str()
                        .is_some_and(|l| l.contains("Kyiv"))
                })
        })
        .iter()
        .flat_map(|x| x["m-1"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["values"]["transportLog"].as_str().map(str::to_string))
        .collect();
    assert!(
        log.iter().any(|l| l.starts_with("Registered: lwm2m=1.1")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("RPC Read: CONTENT")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("RPC Frobnicate: BAD_REQUEST")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("Read: CONTENT \"Europe/Kyiv\"")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l == "Shared attribute timezone written: CHANGED"),
        "{log:?}"
    );
    let stats = mqtt_stats(&gw);
    assert_eq!(stats["connected"], true);
    assert_eq!(stats["badDownlink"], 2, "{stats}");
}

#[test]
fn nothing_is_lost_through_a_broker_outage_and_a_kill_9() {
    let dir = TempDir::new("mqtt-outage");
    let mut broker = Broker::start(&dir.0);
    let sub = Subscriber::start(&broker, "tb-outage");
    let cfg = gw_config(&broker);
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(gw.wait_log("northbound: connected", Duration::from_secs(10)));
    provision(&gw, "o-1");
    let dev = LiveDevice::start(gw.addr, "o-1", ContentFormat::Tlv);
    let notify = |n: usize| {
        for _ in 0..n {
            dev.notify(false);
            std::thread::sleep(Duration::from_millis(15));
        }
    };
    // The profile's observation first (its answer is the first value)...
    let observed = common::wait_until(Duration::from_secs(5), || dev.served().1 > 0);
    assert!(observed, "the profile did not observe");
    // ...then 20 notifications.
    notify(20);
    common::wait_until(Duration::from_secs(5), || {
        temperature_ts(&sub, "o-1").len() >= 21
    });
    assert_eq!(
        temperature_ts(&sub, "o-1").len(),
        21,
        "{:?}",
        sub.on("v1/gateway/telemetry")
    );

    // Outage: the broker goes away; 30 values wait in the queue.
    broker.stop();
    assert!(gw.wait_log("northbound: connection to", Duration::from_secs(10)));
    notify(30);
    broker.restart();
    common::wait_until(Duration::from_secs(30), || {
        temperature_ts(&sub, "o-1").len() >= 51
    });
    // Let the broker's acknowledgements reach the gateway before the next outage.
    let drained = common::wait_until(Duration::from_secs(10), || {
        mqtt_stats(&gw)["queuedMessages"] == 0
    });
    assert!(drained, "{}", mqtt_stats(&gw));

    // Outage again, and the gateway is killed during it.
    broker.stop();
    notify(25);
    std::thread::sleep(Duration::from_millis(500));
    gw.kill9();
    broker.restart();
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(
        gw.wait_log("from before; they go first", Duration::from_secs(10)),
        "{:?}",
        common::log_lines(&gw)
    );
    common::wait_until(Duration::from_secs(30), || {
        temperature_ts(&sub, "o-1").len() >= 76
    });

    let ts = temperature_ts(&sub, "o-1");
    // QoS 1 may repeat a message; a repeat carries the same ts as before.
    let mut first: Vec<u64> = Vec::new();
    for t in &ts {
        if !first.contains(t) {
            first.push(*t);
        }
    }
    assert_eq!(first.len(), 76, "every value arrived: {ts:?}");
    assert!(first.windows(2).all(|w| w[0] < w[1]), "in order: {ts:?}");
    // Repeats here come from the broker redelivering to the test's own
    // persistent session after its restart; the restarted gateway itself
    // published exactly what was left in its queue.
    common::wait_until(Duration::from_secs(10), || mqtt_stats(&gw)["acked"] == 25);
    let q = mqtt_stats(&gw);
    assert_eq!(
        (q["published"].as_u64(), q["acked"].as_u64()),
        (Some(25), Some(25)),
        "{q}"
    );
    assert_eq!(q["dropped"], 0, "{q}");
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (scripts/setup.sh --test installs it)")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other-ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=other-ca",
    ]);
}

#[test]
fn mqtts_with_a_trusted_ca_connects_and_an_untrusted_one_does_not() {
    let dir = TempDir::new("mqtt-tls");
    make_certs(&dir.0);
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.0.display();
    let broker = Broker::start_with(
        &dir.0,
        &format!("listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"),
    );
    let sub = Subscriber::start(&broker, "tb-tls");
    let gw_dir = dir.0.join("gw");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let cfg = config(
        "127.0.0.1",
        &format!("[mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{d}/ca.pem\"\n"),
    );
    let gw = Gateway::start(&gw_dir, &cfg);
    assert!(
        gw.wait_log("northbound: connected", Duration::from_secs(10)),
        "{:?}",
        common::log_lines(&gw)
    );
    let _dev = LiveDevice::start(gw.addr, "tls-1", ContentFormat::SenmlCbor);
    let c = sub.wait("v1/gateway/connect", Duration::from_secs(5), |m| {
        !m.is_empty()
    });
    assert_eq!(c[0]["device"], "tls-1");
    drop(gw);

    let bad_dir = dir.0.join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let cfg = config(
        "127.0.0.1",
        &format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{d}/other-ca.pem\"\n"
        ),
    );
    let gw = Gateway::start(&bad_dir, &cfg);
    assert!(
        gw.wait_log("northbound: cannot connect", Duration::from_secs(10)),
        "{:?}",
        common::log_lines(&gw)
    );
    assert!(!gw.log_contains("northbound: connected"));
}

#[test]
fn mqtt_5_carries_uplink_and_rpc_too() {
    let dir = TempDir::new("mqtt-v5");
    let broker = Broker::start(&dir.0);
    let sub = Subscriber::start(&broker, "tb-v5");
    let cfg = config(
        "127.0.0.1",
        &format!("[mqtt]\nurl = \"{}\"\nprotocol = \"5\"\n", broker.url()),
    );
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(
        gw.wait_log("(MQTT 5, connection 1)", Duration::from_secs(10)),
        "{:?}",
        common::log_lines(&gw)
    );
    let _dev = LiveDevice::start(gw.addr, "v5-1", ContentFormat::SenmlCbor);
    let c = sub.wait("v1/gateway/connect", Duration::from_secs(5), |m| {
        !m.is_empty()
    });
    assert_eq!(c[0], json!({"device": "v5-1", "type": "default"}));
    broker.publish(
        "v1/gateway/rpc",
        r#"{"device":"v5-1","data":{"id":"a1","method":"Read","params":{"id":"/3/0/0"}}}"#,
    );
    let answers = sub.wait("v1/gateway/rpc", Duration::from_secs(5), |m| {
        m.iter().any(|x| x["id"] == "a1")
    });
    let a = answers
        .iter()
        .find(|x| x["id"] == "a1")
        .expect("RPC answer over MQTT 5");
    assert_eq!(a["data"]["value"], "lwm2m-gw simulator");
}

#[test]
fn a_shared_attribute_for_a_sleeping_device_is_written_when_it_wakes() {
    let dir = TempDir::new("mqtt-sleepy");
    let broker = Broker::start(&dir.0);
    let cfg = config(
        "127.0.0.1",
        &format!(
            "[mqtt]\nurl = \"{}\"\n[queue]\nawake_window_s = 1\n",
            broker.url()
        ),
    );
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(gw.wait_log("northbound: connected", Duration::from_secs(10)));
    let _sim = common::Sim::start_with(
        gw.addr,
        1,
        "zz-",
        "senml-cbor",
        &["--queue", "--awake-ms", "1500", "--update-ms", "3000"],
    );
    // Past the gateway's awake window: the write waits for the next Update.
    std::thread::sleep(Duration::from_millis(1200));
    broker.publish(
        "v1/gateway/attributes",
        r#"{"device":"zz-0","data":{"timezone":"America/Lima"}}"#,
    );
    assert!(
        gw.wait_log(
            "ep=zz-0 shared attribute \"timezone\" written: CHANGED",
            Duration::from_secs(10)
        ),
        "{:?}",
        common::log_lines(&gw)
    );
    assert!(
        gw.log_contains("ep=zz-0 WriteReplace #"),
        "it waited in the queue"
    );
}
