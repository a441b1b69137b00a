//! Profiles and credentials through the CLI against a running gateway:
//! validation, admission on plain CoAP, the profile applied to a simulated
//! device, latest values offline, and persistence across `kill -9`.

mod common;

use common::{config, Client, Gateway, Sim, TempDir, Watch};
use serde_json::Value as Json;
use std::path::Path;
use std::time::Duration;

const THERMO: &str = r#"
name = "thermo"
objects = [3, 3303]
format = "SENML_CBOR"
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
pmin = 1
pmax = 30
"#;

/// Runs `lwm2m-gw ARGS --control-socket <gw's>`; exit status and stdout+stderr.
fn cli(gw: &Gateway, args: &[&str]) -> (bool, String) {
    let out = gw.cli(args);
    (out.status.success(), common::printed(&out))
}

fn json(gw: &Gateway, args: &[&str]) -> Json {
    let mut a = args.to_vec();
    a.push("--json");
    let (_, text) = cli(gw, &a);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(Json::Null)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn profiles_and_credentials_are_checked_applied_and_kept() {
    let dir = TempDir::new("provision");
    // Profiles also come from files; a broken file is skipped, not fatal.
    let pdir = dir.0.join("profiles");
    std::fs::create_dir_all(&pdir).unwrap();
    write(
        &pdir,
        "site.toml",
        "name = \"site\"\n[resources.\"/3/0/9\"]\ntelemetry = true\n",
    );
    write(
        &pdir,
        "broken.toml",
        "name = \"broken\"\nobjects = [31337]\n",
    );
    let cfg = config(
        "127.0.0.1",
        &format!(
            "[registration]\nallow_unknown_endpoints = false\n[models]\nprofiles_dir = \"{}\"\n",
            pdir.display()
        ),
    );
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(
        gw.wait_log("profile \"broken\" in", Duration::from_secs(2)),
        "{:?}",
        common::log_lines(&gw)
    );
    assert!(
        !gw.log_contains("admitted over plain CoAP"),
        "no warning when unknown endpoints are refused"
    );

    // Profiles: a good one is stored, bad ones are refused with the reason.
    let good = write(&dir.0, "thermo.toml", THERMO);
    let (ok, out) = cli(&gw, &["profile", "import", &good]);
    assert!(ok && out.contains("CREATED"), "{out}");
    let bad = write(
        &dir.0,
        "bad.toml",
        "name = \"bad\"\n[resources.\"/3303/0/9999\"]\ntelemetry = true\n",
    );
    let (ok, out) = cli(&gw, &["profile", "import", &bad]);
    assert!(
        !ok && out.contains("object 3303 has no resource 9999"),
        "{out}"
    );
    let list = json(&gw, &["profile", "list"]);
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "site", "thermo"]);
    let (ok, out) = cli(&gw, &["profile", "show", "thermo"]);
    assert!(ok && out.contains("[resources.\"/3303/0/5700\"]"), "{out}");

    // Credentials: validated, nothing stored on error.
    let (ok, out) = cli(
        &gw,
        &[
            "device",
            "add",
            "x",
            "--psk-identity",
            "x",
            "--psk-key",
            "0011",
        ],
    );
    assert!(!ok && out.contains("32, 64 or 128 hex characters"), "{out}");
    let (ok, out) = cli(&gw, &["device", "add", "y", "--profile", "nope"]);
    assert!(!ok && out.contains("unknown profile \"nope\""), "{out}");
    let (ok, out) = cli(&gw, &["device", "add", "z", "--rpk-key", "bm90IGEga2V5"]);
    assert!(!ok && out.contains("SubjectPublicKeyInfo"), "{out}");
    let import = write(
        &dir.0,
        "devices.toml",
        "[[device]]\nendpoint = \"ok-1\"\n[[device]]\nendpoint = \"bad-1\"\nprofile = \"missing\"\n",
    );
    let (ok, out) = cli(&gw, &["device", "import", &import]);
    assert!(!ok && out.contains("bad-1: unknown profile"), "{out}");
    assert_eq!(
        json(&gw, &["device", "list"])["value"],
        serde_json::json!([]),
        "all or nothing"
    );
    let key = "00112233445566778899aabbccddeeff";
    for args in [
        &["device", "add", "t-0", "--profile", "thermo"][..],
        &[
            "device",
            "add",
            "psk-dev",
            "--psk-identity",
            "psk-dev-id",
            "--psk-key",
            key,
        ],
    ] {
        let (ok, out) = cli(&gw, args);
        assert!(ok, "{args:?}: {out}");
    }
    let list = json(&gw, &["device", "list"]);
    assert_eq!(list["value"][0]["mode"], "PSK");
    assert!(!list.to_string().contains(key), "keys are never printed");
    let (ok, out) = cli(&gw, &["profile", "rm", "thermo"]);
    assert!(!ok && out.contains("used by t-0"), "{out}");

    // Admission on plain CoAP.
    let mut c = Client::new(gw.addr);
    assert_eq!(
        c.register("psk-dev", &[], b"</3/0>").code.to_string(),
        "4.03"
    );
    assert_eq!(
        c.register("stranger", &[], b"</3/0>").code.to_string(),
        "4.03"
    );

    // The profile is applied when the device registers.
    let mut watch = Watch::start(&gw, Some("t-0"));
    let _sim = Sim::start_with(gw.addr, 1, "t-", "tlv", &["--notify-ms", "200"]);
    let seen = watch.collect(Duration::from_millis(1500));
    let origins: Vec<&str> = seen.iter().map(|r| r["origin"].as_str().unwrap()).collect();
    assert!(
        origins.starts_with(&["read", "read", "observe"]),
        "{origins:?}"
    );
    assert!(
        origins.iter().filter(|o| **o == "observe").count() >= 3,
        "{origins:?}"
    );
    // `device EP --json` prints the device itself.
    let dev = json(&gw, &["device", "t-0"]);
    assert_eq!(
        dev["attributes"]["manufacturer"]["value"], "lwm2m-gw simulator",
        "{dev}"
    );
    assert!(dev["telemetry"]["temperature"]["value"].is_f64(), "{dev}");
    assert!(dev["telemetry"]["battery"]["value"].is_i64(), "{dev}");
    assert_eq!(dev["credential"]["profile"], "thermo");
    let (ok, out) = cli(&gw, &["rpc", "t-0", "Read {\"key\":\"temperature\"}"]);
    assert!(ok && out.starts_with("CONTENT"), "{out}");

    // Everything survives kill -9.
    gw.kill9();
    let gw = Gateway::start(&dir.0, &cfg);
    assert!(gw.wait_log("3 profiles, 2 device credentials", Duration::from_secs(5)));
    let mut c = Client::new(gw.addr);
    assert_eq!(
        c.register("psk-dev", &[], b"</3/0>").code.to_string(),
        "4.03"
    );
    let (ok, _) = cli(&gw, &["device", "rm", "psk-dev"]);
    assert!(ok);
    let (ok, out) = cli(&gw, &["device", "rm", "psk-dev"]);
    assert!(!ok && out.contains("NOT_FOUND"), "{out}");
}
