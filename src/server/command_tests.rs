//! The command language against a simulated device, in memory on a virtual clock.

use super::test_pair::Pair;
use crate::lwm2m::ContentFormat;
use serde_json::json;

fn ok(a: &serde_json::Value, result: &str) {
    assert_eq!(a["result"], result, "{a}");
}

fn every_command_in(format: ContentFormat) {
    let mut p = Pair::new(format, false);
    let f = format.name();
    // Read: resource by id, by versioned id, by key, instance, object, multiple resource.
    let a = p.rpc("Read", json!({"id": "/3/0/9"}));
    ok(&a, "CONTENT");
    assert!(
        a["value"].as_i64().is_some_and(|v| (1..=100).contains(&v)),
        "{f}: {a}"
    );
    // The device announced /3/0 without `ver`: version 1.0.
    ok(&p.rpc("Read", json!({"id": "/3_1.0/0/0"})), "CONTENT");
    let a = p.rpc("Read", json!({"id": "/3_1.2/0/0"}));
    ok(&a, "BAD_REQUEST");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("registered version 1.0"),
        "{a}"
    );
    let a = p.rpc("Read", json!({"key": "manufacturer"}));
    assert_eq!(a["value"], "lwm2m-gw simulator", "{f}");
    let a = p.rpc("Read", json!({"id": "/3/0"}));
    assert_eq!(a["value"]["6"], json!({"0": 1, "1": 5}), "{f}: {a}");
    assert_eq!(a["value"]["2"], "dev1");
    let a = p.rpc("Read", json!({"id": "/3303"}));
    assert!(a["value"]["0"]["5700"].as_f64().is_some(), "{f}: {a}");
    let a = p.rpc("Read", json!({"id": "/3/0/7/1"}));
    assert_eq!(a["value"], 5000, "{f}");
    // Discover.
    let a = p.rpc("Discover", json!({"id": "/3/0"}));
    ok(&a, "CONTENT");
    assert!(
        a["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["url"] == "/3/0/6" && l["attributes"]["dim"] == "2"),
        "{a}"
    );
    // Writes.
    ok(
        &p.rpc(
            "WriteReplace",
            json!({"key": "timezone", "value": "Europe/Kyiv"}),
        ),
        "CHANGED",
    );
    assert_eq!(
        p.rpc("Read", json!({"id": "/3/0/15"}))["value"],
        "Europe/Kyiv"
    );
    ok(
        &p.rpc(
            "WriteUpdate",
            json!({"id": "/3/0", "value": {"14": "+5", "15": "Asia/Tashkent"}}),
        ),
        "CHANGED",
    );
    assert_eq!(p.rpc("Read", json!({"id": "/3/0/14"}))["value"], "+5");
    ok(
        &p.rpc("WriteReplace", json!({"id": "/1/0/3", "value": 120})),
        "CHANGED",
    );
    assert_eq!(p.rpc("Read", json!({"id": "/1/0/3"}))["value"], 120);
    ok(
        &p.rpc("WriteReplace", json!({"id": "/5/0/0", "value": "00ad4567"})),
        "CHANGED",
    );
    ok(
        &p.rpc(
            "WriteUpdate",
            json!({"id": "/3/0/13", "value": 1_700_000_123}),
        ),
        "CHANGED",
    );
    // Write-Attributes, then Discover shows them.
    ok(
        &p.rpc(
            "WriteAttributes",
            json!({"id": "/3/0/9", "attributes": {"pmin": 10, "pmax": 120, "gt": 50}}),
        ),
        "CHANGED",
    );
    let a = p.rpc("Discover", json!({"id": "/3/0/9"}));
    assert_eq!(a["value"][0]["attributes"]["pmax"], "120", "{a}");
    // Composite.
    let a = p.rpc(
        "ReadComposite",
        json!({"ids": ["/3/0/9", "/1/0", "/3303/0/5700"]}),
    );
    ok(&a, "CONTENT");
    assert!(
        a["value"]["/3/0/9"].is_number() && a["value"]["/1/0"]["1"] == 300,
        "{f}: {a}"
    );
    let a = p.rpc(
        "ReadComposite",
        json!({"keys": ["batteryLevel", "state", "sensorValue"]}),
    );
    assert!(a["value"]["/5/0/3"].is_number(), "{f}: {a}");
    ok(&p.rpc("WriteComposite", json!({"nodes": {"/3/0/14": "+04", "defaultMinimumPeriod": 5, "packageUri": "coap://127.0.0.1:5685/fw"}})), "CHANGED");
    let a = p.rpc(
        "ReadComposite",
        json!({"ids": ["/3/0/14", "/1/0/2", "/5/0/1"]}),
    );
    assert_eq!(
        a["value"],
        json!({"/3/0/14": "+04", "/1/0/2": 5, "/5/0/1": "coap://127.0.0.1:5685/fw"}),
        "{f}"
    );
    // Execute, Create, Delete.
    ok(&p.rpc("Execute", json!({"id": "/3/0/4"})), "CHANGED");
    ok(
        &p.rpc("Execute", json!({"id": "/9/0/6", "args": "0='fast',1"})),
        "CHANGED",
    );
    assert_eq!(p.dev.executed().len(), 2);
    ok(
        &p.rpc(
            "Create",
            json!({"id": "/9", "value": {"1": {"14": "operator", "15": "secret"}}}),
        ),
        "CREATED",
    );
    ok(&p.rpc("Read", json!({"id": "/9/1"})), "CONTENT");
    ok(&p.rpc("Delete", json!({"id": "/9/1"})), "DELETED");
    ok(&p.rpc("Read", json!({"id": "/9/1"})), "NOT_FOUND");
    // Observe and its bookkeeping.
    let a = p.rpc("Observe", json!({"id": "/3/0/9"}));
    ok(&a, "CONTENT");
    assert!(a["value"].is_number());
    ok(&p.rpc("Observe", json!({"key": "sensorValue"})), "CONTENT");
    assert_eq!(
        p.rpc("ObserveReadAll", json!({}))["value"],
        json!(["/3/0/9", "/3303/0/5700"])
    );
    assert_eq!(p.rpc("ObserveCancel", json!({"id": "/3/0/9"}))["value"], 1);
    assert_eq!(p.rpc("ObserveCancelAll", json!({}))["value"], 1);
    assert_eq!(p.rpc("ObserveReadAll", json!({}))["value"], json!([]));
    // DiscoverAll answers from the registration.
    let a = p.rpc("DiscoverAll", json!({}));
    assert!(
        a["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["url"] == "/3303/0"),
        "{a}"
    );
    assert!(a["value"][0]["attributes"]["ct"]
        .as_str()
        .unwrap()
        .starts_with(&format.code().to_string()));
}

#[test]
fn every_command_works_in_tlv() {
    every_command_in(ContentFormat::Tlv);
}

#[test]
fn every_command_works_in_senml_json() {
    every_command_in(ContentFormat::SenmlJson);
}

#[test]
fn every_command_works_in_senml_cbor() {
    every_command_in(ContentFormat::SenmlCbor);
}

#[test]
fn every_command_works_in_lwm2m_cbor() {
    every_command_in(ContentFormat::Lwm2mCbor);
}

#[test]
fn every_command_works_in_oma_json() {
    every_command_in(ContentFormat::OmaJson);
}

#[test]
fn bad_commands_are_refused_before_anything_is_sent() {
    let mut p = Pair::new(ContentFormat::SenmlCbor, false);
    let served_before: u64 = p.dev.served.values().sum();
    for (m, params, why) in [
        ("Reed", json!({"id": "/3/0/9"}), "unknown method"),
        ("Read", json!({"id": "/3/x/9"}), "invalid LwM2M path"),
        ("Read", json!({"id": "/42/0"}), "did not register object 42"),
        ("Read", json!({"key": "nonsense"}), "unknown key"),
        ("Read", json!({"id": "/3/0/99"}), "has no resource 99"),
        ("Read", json!({"id": "/3/0/4"}), "not readable"),
        ("Read", json!({}), "needs an \"id\""),
        (
            "WriteReplace",
            json!({"id": "/3/0/9", "value": 5}),
            "read-only",
        ),
        (
            "WriteReplace",
            json!({"id": "/1/0/1", "value": "soon"}),
            "not a valid integer",
        ),
        (
            "WriteReplace",
            json!({"id": "/6/0/0", "value": 1}),
            "read-only",
        ),
        (
            "WriteReplace",
            json!({"id": "/5/0/0", "value": "xyz"}),
            "not a valid opaque",
        ),
        (
            "WriteReplace",
            json!({"id": "/1/0/6", "value": 3}),
            "does not fit",
        ),
        ("WriteUpdate", json!({"id": "/3/0"}), "needs a \"value\""),
        ("Execute", json!({"id": "/3/0/9"}), "not executable"),
        (
            "Execute",
            json!({"id": "/3/0/4", "args": "x=1"}),
            "must look like",
        ),
        ("Delete", json!({"id": "/3/0"}), "cannot be deleted"),
        (
            "WriteAttributes",
            json!({"id": "/3/0/9", "attributes": {"pmin": 20, "pmax": 10}}),
            "greater than pmax",
        ),
        (
            "WriteAttributes",
            json!({"id": "/3/0/0", "attributes": {"gt": 1}}),
            "numeric",
        ),
        (
            "WriteAttributes",
            json!({"id": "/3/0/9", "attributes": {"foo": 1}}),
            "unknown attribute",
        ),
        ("ReadComposite", json!({"ids": []}), "at least one"),
        (
            "WriteComposite",
            json!({"nodes": {"/3/0/9": 1}}),
            "read-only",
        ),
        (
            "Read",
            json!({"id": "/3/0/9", "format": "XML"}),
            "unknown content format",
        ),
    ] {
        let a = p.rpc(m, params.clone());
        assert_eq!(a["result"], "BAD_REQUEST", "{m} {params}: {a}");
        let e = a["error"].as_str().unwrap();
        assert!(e.contains(why), "{m} {params}: {e}");
    }
    let served_after: u64 = p.dev.served.values().sum();
    assert_eq!(served_before, served_after, "nothing reached the device");
    let a = p.rpc("Read", json!([]));
    assert_eq!(a["result"], "BAD_REQUEST");
}

#[test]
fn unknown_devices_and_silent_devices_get_gateway_outcomes() {
    let mut p = Pair::new(ContentFormat::Tlv, false);
    p.next += 1;
    p.gw.command(p.t, 99, "nobody", "Read", &json!({"id": "/3/0/9"}));
    let (h, a) = p.gw.poll_answer().unwrap();
    assert_eq!((h, a.result), (99, "DEVICE_NOT_REGISTERED"));
    p.mute = true;
    let a = p.rpc("Read", json!({"id": "/3/0/9"}));
    assert_eq!(a["result"], "TIMEOUT", "{a}");
    assert_eq!(p.gw.pending_commands(), 0);
}

#[test]
fn device_errors_come_back_with_their_code_name() {
    let mut p = Pair::new(ContentFormat::SenmlJson, false);
    let a = p.rpc("Read", json!({"id": "/3/0/22"}));
    assert_eq!(a["result"], "NOT_FOUND", "{a}");
    let a = p.rpc("Create", json!({"id": "/3", "value": {"1": {"14": "+1"}}}));
    assert_eq!(a["result"], "METHOD_NOT_ALLOWED", "{a}");
    // The text format is only for single values; the device refuses others.
    let a = p.rpc("Read", json!({"id": "/3/0/9", "format": "TEXT"}));
    assert!(a["value"].is_number(), "{a}");
}

#[test]
fn a_composite_read_with_unregistered_objects_still_reaches_the_device() {
    let mut p = Pair::new(ContentFormat::SenmlJson, false);
    let served = |p: &Pair| p.dev.served.get("read-composite").copied().unwrap_or(0);
    let before = served(&p);
    // Interoperability test int-236: 3339 is an object this client lacks.
    let a = p.rpc(
        "ReadComposite",
        json!({"ids": ["/3/0/9", "/3339/0/5527", "/3303/0/5700"]}),
    );
    ok(&a, "CONTENT");
    assert!(a["value"]["/3/0/9"].is_number(), "{a}");
    assert!(a["value"]["/3303/0/5700"].is_number(), "{a}");
    assert!(a["value"].get("/3339/0/5527").is_none(), "{a}");
    assert_eq!(served(&p), before + 1);
    // No path can be right: refused, and nothing is sent.
    let a = p.rpc("ReadComposite", json!({"ids": ["/3339/0/5527", "/42/0"]}));
    assert_eq!(a["result"], "BAD_REQUEST", "{a}");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("did not register object 3339"),
        "{a}"
    );
    // A malformed path is refused whatever else is asked.
    let a = p.rpc("ReadComposite", json!({"ids": ["/3/0/9", "/3/x"]}));
    assert_eq!(a["result"], "BAD_REQUEST", "{a}");
    assert_eq!(served(&p), before + 1);
}

#[test]
fn ids_and_paths_come_out_in_numeric_order() {
    let mut p = Pair::new(ContentFormat::SenmlJson, false);
    let a = p.rpc("Read", json!({"id": "/3/0"}));
    let keys: Vec<u16> = a["value"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    assert!(keys.iter().any(|k| *k >= 10), "{keys:?}");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    // The JSON text too, as the CLI, watch and MQTT print it.
    let text = a["value"].to_string();
    assert!(text.find("\"2\":") < text.find("\"10\":"), "{text}");
    // A composite answer follows path order, not the order asked in.
    let a = p.rpc(
        "ReadComposite",
        json!({"ids": ["/3303/0/5700", "/3/0/9", "/1/0"]}),
    );
    let keys: Vec<&String> = a["value"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["/1/0", "/3/0/9", "/3303/0/5700"], "{a}");
}
