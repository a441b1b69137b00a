//! Device management end to end: the gateway process, simulated devices
//! over loopback UDP, the control socket, the CLI, and an aiocoap device.

mod common;

use common::{config, python, rpc, Gateway, Sim, TempDir};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn ok(a: &Value, result: &str, what: &str) {
    assert_eq!(a["result"], result, "{what}: {a}");
}

#[test]
fn every_command_works_end_to_end_in_tlv_senml_json_senml_cbor_and_lwm2m_cbor() {
    let dir = TempDir::new("rpc-formats");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let _sim = Sim::start(gw.addr, 4, "fmt-", "tlv,senml-json,senml-cbor,lwm2m-cbor");
    let mut c = gw.control();
    for (i, name) in ["TLV", "SENML_JSON", "SENML_CBOR", "LWM2M_CBOR"]
        .iter()
        .enumerate()
    {
        let ep = format!("fmt-{i}");
        let ep = ep.as_str();
        let mut call = |m: &str, p: Value| rpc(&mut c, ep, m, p);
        let a = call("Read", json!({"id": "/3/0/9"}));
        ok(&a, "CONTENT", name);
        assert!(a["value"].is_i64(), "{name}: {a}");
        assert_eq!(
            call("Read", json!({"key": "serialNumber"}))["value"],
            ep,
            "{name}"
        );
        // The simulator announces object 3 without `ver`: version 1.0.
        let a = call("Read", json!({"id": "/3_1.0/0"}));
        assert_eq!(
            a["value"]["7"],
            json!({"0": 3800, "1": 5000}),
            "{name}: {a}"
        );
        assert!(call("Read", json!({"id": "/3303"}))["value"]["0"]["5700"].is_f64());
        let a = call("Discover", json!({"id": "/3/0"}));
        assert!(
            a["value"].as_array().is_some_and(|l| l.len() > 10),
            "{name}: {a}"
        );
        ok(
            &call(
                "WriteReplace",
                json!({"key": "timezone", "value": "Europe/Kyiv"}),
            ),
            "CHANGED",
            name,
        );
        ok(
            &call(
                "WriteUpdate",
                json!({"id": "/3/0", "value": {"14": "+02:00"}}),
            ),
            "CHANGED",
            name,
        );
        let a = call("Read", json!({"id": "/3/0/15"}));
        assert_eq!(a["value"], "Europe/Kyiv", "{name}");
        ok(
            &call(
                "WriteAttributes",
                json!({"id": "/3/0/9", "attributes": {"pmin": 5, "pmax": 60}}),
            ),
            "CHANGED",
            name,
        );
        let a = call("ReadComposite", json!({"ids": ["/3/0/14", "/1/0/1"]}));
        assert_eq!(
            a["value"],
            json!({"/3/0/14": "+02:00", "/1/0/1": 300}),
            "{name}"
        );
        ok(
            &call(
                "WriteComposite",
                json!({"nodes": {"/1/0/2": 7, "utcOffset": "+03:00"}}),
            ),
            "CHANGED",
            name,
        );
        let a = call(
            "ReadComposite",
            json!({"keys": ["utcOffset", "defaultMinimumPeriod"]}),
        );
        assert_eq!(
            a["value"],
            json!({"/3/0/14": "+03:00", "/1/0/2": 7}),
            "{name}"
        );
        // Update with no package downloaded: the device refuses, the
        // refusal comes back as such, and the state stays Idle.
        ok(
            &call("Execute", json!({"id": "/5/0/2"})),
            "METHOD_NOT_ALLOWED",
            name,
        );
        assert_eq!(
            call("Read", json!({"key": "state"}))["value"],
            0,
            "{name}: no update started"
        );
        ok(
            &call("Create", json!({"id": "/9/3", "value": {"14": "op"}})),
            "CREATED",
            name,
        );
        ok(&call("Delete", json!({"id": "/9/3"})), "DELETED", name);
        ok(
            &call("Observe", json!({"id": "/3303/0/5700"})),
            "CONTENT",
            name,
        );
        assert_eq!(
            call("ObserveReadAll", json!({}))["value"],
            json!(["/3303/0/5700"])
        );
        assert_eq!(
            call("ObserveCancel", json!({"id": "/3303/0/5700"}))["value"],
            1
        );
        assert_eq!(call("ObserveCancelAll", json!({}))["value"], 0);
        let a = call("DiscoverAll", json!({}));
        // The root, /1/0, /3/0, /4/0, /5/0, /6/0, /9/0, /19/0, /19/1, /3303/0.
        assert_eq!(a["value"].as_array().map(Vec::len), Some(10), "{name}: {a}");
        let a = call("WriteReplace", json!({"id": "/3/0/9", "value": 1}));
        ok(&a, "BAD_REQUEST", name);
    }
    assert!(gw.log_contains("ep=fmt-0 WriteReplace refused: /3/0/9 (Battery Level) is read-only"));
}

#[test]
fn many_commands_in_flight_on_one_connection_all_get_their_answer() {
    let dir = TempDir::new("rpc-pipelined");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let _sim = Sim::start(gw.addr, 20, "p-", "senml-cbor");
    let mut s = std::os::unix::net::UnixStream::connect(gw.control_socket()).unwrap();
    use std::io::Write;
    let mut out = String::new();
    for i in 0..400 {
        out.push_str(&format!(
            "{{\"id\":{i},\"op\":\"rpc\",\"endpoint\":\"p-{}\",\"method\":\"Read\",\"params\":{{\"id\":\"/3/0/2\"}}}}\n",
            i % 20
        ));
    }
    s.write_all(out.as_bytes()).unwrap();
    let mut seen = vec![false; 400];
    let mut r = BufReader::new(s);
    for _ in 0..400 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let a: Value = serde_json::from_str(&line).unwrap();
        let id = a["id"].as_u64().unwrap() as usize;
        assert_eq!(a["value"], format!("p-{}", id % 20), "{a}");
        assert!(!seen[id]);
        seen[id] = true;
    }
}

fn cli(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let out = gw.cli(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_prints_answers_lists_devices_and_fails_with_non_zero_exit() {
    let dir = TempDir::new("rpc-cli");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let _sim = Sim::start(gw.addr, 2, "cli-", "tlv");
    let (okay, out, _) = cli(&gw, &["rpc", "cli-1", r#"Read {"id":"/3/0/2"}"#]);
    assert!(okay && out == "CONTENT\ncli-1\n", "{out}");
    let (okay, out, _) = cli(
        &gw,
        &[
            "rpc",
            "cli-0",
            "Read",
            r#"{"key":"availablePowerSources"}"#,
            "--json",
        ],
    );
    assert!(okay, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!({"result": "CONTENT", "value": {"0": 1, "1": 5}}));
    let (okay, out, err) = cli(&gw, &["rpc", "cli-0", r#"Execute {"id":"/3/0/9"}"#]);
    assert!(
        !okay && out.starts_with("BAD_REQUEST") && err.contains("not executable"),
        "{out}{err}"
    );
    let (okay, out, _) = cli(&gw, &["rpc", "nobody", "DiscoverAll"]);
    assert!(!okay && out.starts_with("DEVICE_NOT_REGISTERED"), "{out}");
    let (okay, _, err) = cli(&gw, &["rpc", "cli-0", "Read {not json"]);
    assert!(!okay && err.contains("not JSON"), "{err}");
    let (okay, out, _) = cli(&gw, &["devices"]);
    assert!(
        okay && out.contains("cli-0") && out.contains("cli-1") && out.contains("2 devices"),
        "{out}"
    );
    assert!(out.lines().nth(1).unwrap().contains("/3303/0"), "{out}");
    let (okay, out, _) = cli(&gw, &["devices", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        okay && v.as_array().unwrap().len() == 2 && v[0]["binding"] == "U",
        "{out}"
    );
    let (okay, out, _) = cli(&gw, &["device", "cli-1"]);
    assert!(
        okay && out.contains("LwM2M version    1.1") && out.contains("127.0.0.1:"),
        "{out}"
    );
    let (okay, out, _) = cli(&gw, &["device", "ghost"]);
    assert!(!okay && out.contains("DEVICE_NOT_REGISTERED"), "{out}");
    // No gateway at the socket: a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(["devices", "--control-socket"])
        .arg(dir.0.join("nothing.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the gateway's control socket")
    );
    // The socket is group-accessible only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(gw.control_socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn an_aiocoap_device_is_read_written_and_executed() {
    let dir = TempDir::new("rpc-aiocoap");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let mut dev = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/aiocoap_device.py"
        ))
        .arg(format!("127.0.0.1:{}", gw.addr.port()))
        .arg("aio-dev")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(first, "registered");
        let mut c = gw.control();
        let a = rpc(&mut c, "aio-dev", "Read", json!({"id": "/3/0/9"}));
        assert_eq!(
            (&a["result"], &a["value"]),
            (&json!("CONTENT"), &json!(87)),
            "{a}"
        );
        let a = rpc(
            &mut c,
            "aio-dev",
            "WriteReplace",
            json!({"key": "timezone", "value": "Asia/Tokyo"}),
        );
        assert_eq!(a["result"], "CHANGED", "{a}");
        let a = rpc(&mut c, "aio-dev", "Read", json!({"id": "/3/0/15"}));
        assert_eq!(a["value"], "Asia/Tokyo");
        let a = rpc(&mut c, "aio-dev", "Execute", json!({"id": "/3/0/4"}));
        assert_eq!(a["result"], "CHANGED", "{a}");
        // The device's own view confirms both changes.
        let state: Value = loop {
            let l = lines.next().unwrap().unwrap();
            let v: Value = serde_json::from_str(&l).unwrap();
            if v["reboots"] == 1 {
                break v;
            }
        };
        assert_eq!(state["timezone"], "Asia/Tokyo");
        let a = rpc(&mut c, "aio-dev", "Read", json!({"id": "/3/0/0"}));
        assert_eq!(a["result"], "NOT_FOUND", "{a}");
    }));
    let _ = dev.kill();
    let _ = dev.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
