//! Firmware and software updates end to end: images added with the CLI,
//! pushed block-wise to simulated devices over real sockets, checked byte
//! for byte (SHA-256 of what the device wrote), failures with their
//! reasons, a kill -9 mid-transfer, a profile-wide update.

mod common;

use common::{package, sha256_hex, Gateway, Sim, TempDir};
use serde_json::Value as Json;
use std::path::Path;
use std::time::Duration;

fn cli(gw: &Gateway, args: &[&str]) -> (bool, String) {
    let out = gw.cli(args);
    (out.status.success(), common::printed(&out))
}

fn cli_json(gw: &Gateway, args: &[&str]) -> Json {
    let mut a: Vec<&str> = args.to_vec();
    a.push("--json");
    let (ok, out) = cli(gw, &a);
    assert!(ok, "{args:?}: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn add(gw: &Gateway, file: &Path, kind: &str, title: &str, version: &str) -> String {
    let v = cli_json(
        gw,
        &[
            "ota",
            "add",
            file.to_str().unwrap(),
            "--kind",
            kind,
            "--title",
            title,
            "--version",
            version,
        ],
    );
    v["value"]["id"].as_str().unwrap().to_string()
}

fn status(gw: &Gateway, ep: &str) -> Json {
    cli_json(gw, &["ota", "status", ep])["value"].clone()
}

fn wait_state(gw: &Gateway, ep: &str, want: &[&str], limit: Duration) -> Json {
    let end = std::time::Instant::now() + limit;
    loop {
        let out = gw.cli(&["ota", "status", ep, "--json"]);
        let last =
            serde_json::from_slice::<Json>(&out.stdout).unwrap_or(Json::Null)["value"].clone();
        if want.contains(&last["state"].as_str().unwrap_or("")) {
            return last;
        }
        assert!(
            std::time::Instant::now() < end,
            "{ep} never reached {want:?}: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_firmware_push_ends_updated_with_the_exact_image_on_the_device() {
    let dir = TempDir::new("ota-fw");
    let gw = Gateway::start(&dir.0, &common::config("127.0.0.1", ""));
    let got = dir.0.join("received");
    std::fs::create_dir_all(&got).unwrap();
    let _sim = Sim::start_with(
        gw.addr,
        2,
        "fw-",
        "senml-cbor,tlv",
        &["--ota-dir", got.to_str().unwrap(), "--ota-max-block", "256"],
    );
    let img = package(&dir.0, "fw.bin", "2.0.10", 150_000, true);
    let id = add(&gw, &img, "firmware", "thermo-fw", "2.0.10");
    assert_eq!(id, sha256_hex(&std::fs::read(&img).unwrap()));
    // The same bytes again are the same image.
    assert_eq!(add(&gw, &img, "firmware", "thermo-fw", "2.0.10"), id);
    let (ok, out) = cli(&gw, &["ota", "list"]);
    assert!(
        ok && out.contains("thermo-fw") && out.contains("1 images"),
        "{out}"
    );

    // One device at the default 1024-byte blocks (it takes 256: the
    // gateway follows), one at 64-byte blocks; --wait follows both.
    let (ok, out) = cli(&gw, &["ota", "start", "fw-0", &id[..10], "--wait"]);
    assert!(ok, "{out}");
    assert!(out.contains("fw-0: UPDATED, runs 2.0.10"), "{out}");
    let (ok, out) = cli(
        &gw,
        &["ota", "start", "fw-1", &id, "--block-size", "64", "--wait"],
    );
    assert!(ok, "{out}");
    for ep in ["fw-0", "fw-1"] {
        let written = std::fs::read(got.join(format!("{ep}-fw.bin"))).unwrap();
        assert_eq!(sha256_hex(&written), id, "{ep} holds exactly the image");
        let s = status(&gw, ep);
        assert_eq!(s["state"], "UPDATED", "{s}");
        assert_eq!(s["currentVersion"], "2.0.10");
        assert_eq!(s["progress"], 100);
    }
    let s = status(&gw, "fw-0");
    assert_eq!(
        s["blockSize"], 256,
        "the device's block size was taken: {s}"
    );
    assert_eq!(status(&gw, "fw-1")["blockSize"], 64);
    // Updated is final: the device re-registered after its reboot, and
    // the same image is refused for it.
    let (ok, out) = cli(&gw, &["ota", "start", "fw-0", &id]);
    assert!(!ok && out.contains("already runs firmware 2.0.10"), "{out}");
    // The image is not in use any more and can go.
    let (ok, out) = cli(&gw, &["ota", "rm", &id]);
    assert!(ok, "{out}");
    assert!(!dir.0.join("data/ota").join(&id).exists());
}

/// A device that reports Update Result 1 (success) but keeps another
/// version in /3/0/3 (its platform's, or "v2.1.0" for "2.1") has updated:
/// UPDATED with the mismatch reported; a profile with
/// `require_version = true` keeps it FAILED.
#[test]
fn a_device_reporting_success_with_another_version_ends_updated_unless_the_version_is_required() {
    let dir = TempDir::new("ota-mismatch");
    let gw = Gateway::start(&dir.0, &common::config("127.0.0.1", ""));
    common::provision(&gw, "vm-0", "lenient", "name = \"lenient\"\n");
    common::provision(
        &gw,
        "vm-1",
        "strict",
        "name = \"strict\"\n[ota]\nrequire_version = true\n",
    );
    let _sim = Sim::start(gw.addr, 2, "vm-", "senml-cbor");
    // The device runs "3.14.0" after it, the operator's label is "2.1".
    let img = package(&dir.0, "fw.bin", "3.14.0", 3_000, true);
    let id = add(&gw, &img, "firmware", "valve-fw", "2.1");
    let (ok, out) = cli(&gw, &["ota", "start", "vm-0", &id, "--wait"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("vm-0: UPDATED, version unverified")
            && out.contains("\"3.14.0\" after the update, not \"2.1\""),
        "{out}"
    );
    let s = status(&gw, "vm-0");
    assert_eq!(s["state"], "UPDATED", "{s}");
    assert_eq!(s["versionVerified"], false, "{s}");
    assert_eq!(s["currentVersion"], "3.14.0", "{s}");
    assert_eq!(s["error"], Json::Null, "{s}");
    assert!(gw.log_contains("ep=vm-0 firmware update to 2.1: the device reports version"));

    let (ok, out) = cli(&gw, &["ota", "start", "vm-1", &id, "--wait"]);
    assert!(!ok, "{out}");
    let s = status(&gw, "vm-1");
    assert_eq!(s["state"], "FAILED", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains("(ota.require_version)"),
        "{s}"
    );
}

#[test]
fn a_bad_package_fails_with_the_devices_reason_and_an_image_in_use_stays() {
    let dir = TempDir::new("ota-bad");
    let gw = Gateway::start(
        &dir.0,
        &common::config("127.0.0.1", "[ota]\nstall_timeout_s = 5\nretries = 1\n"),
    );
    let _sim = Sim::start(gw.addr, 1, "bad-", "senml-cbor");
    let img = package(&dir.0, "bad.bin", "9", 20_000, false);
    let id = add(&gw, &img, "firmware", "fw", "9");
    let (ok, out) = cli(&gw, &["ota", "start", "bad-0", &id, "--block-size", "16"]);
    assert!(ok, "{out}");
    // While it runs, the image cannot be removed.
    let (ok, out) = cli(&gw, &["ota", "rm", &id]);
    assert!(
        !ok && out.contains("in use by the update of bad-0"),
        "{out}"
    );
    let s = wait_state(
        &gw,
        "bad-0",
        &["FAILED", "UPDATED"],
        Duration::from_secs(60),
    );
    assert_eq!(s["state"], "FAILED", "{s}");
    assert_eq!(
        s["error"],
        "the device reports: integrity check failure for the new firmware package (result 5)"
    );
    let (_, out) = cli(&gw, &["ota", "status", "bad-0"]);
    assert!(out.contains("integrity check failure"), "{out}");
    // An image past the store's bound is refused.
    let big = dir.0.join("big.bin");
    std::fs::write(&big, vec![0u8; 300 << 20]).unwrap();
    let (ok, out) = cli(
        &gw,
        &[
            "ota",
            "add",
            big.to_str().unwrap(),
            "--kind",
            "firmware",
            "--title",
            "big",
            "--version",
            "1",
        ],
    );
    assert!(!ok && out.contains("ota.max_store_bytes"), "{out}");
    std::fs::remove_file(big).unwrap();
}

#[test]
fn software_is_pushed_installed_and_activated() {
    let dir = TempDir::new("ota-sw");
    let gw = Gateway::start(&dir.0, &common::config("127.0.0.1", ""));
    let _sim = Sim::start(gw.addr, 2, "sw-", "senml-json");
    let img = package(&dir.0, "app.bin", "3.1", 40_000, true);
    let id = add(&gw, &img, "software", "app", "3.1");
    let (ok, out) = cli(
        &gw,
        &[
            "ota",
            "start",
            "sw-0",
            &id,
            "--activate",
            "--block-size",
            "512",
            "--wait",
        ],
    );
    assert!(ok && out.contains("sw-0: UPDATED, runs 3.1"), "{out}");
    let rec = cli_json(&gw, &["rpc", "sw-0", "Read", r#"{"id": "/9/0/12"}"#]);
    assert_eq!(rec["value"], true, "activated: {rec}");
    // The same package pulled through /9/0/3 by the other device.
    let (ok, out) = cli(
        &gw,
        &["ota", "start", "sw-1", &id, "--strategy", "pull", "--wait"],
    );
    assert!(ok && out.contains("sw-1: UPDATED, runs 3.1"), "{out}");
    assert_eq!(status(&gw, "sw-1")["strategy"], "pull");
}

#[test]
fn a_kill_9_mid_transfer_and_the_update_still_completes() {
    let dir = TempDir::new("ota-kill");
    let port = common::free_udp_port();
    let cfg = common::config("127.0.0.1", "");
    let gw = Gateway::start_on(&dir.0, &cfg, port);
    let got = dir.0.join("received");
    std::fs::create_dir_all(&got).unwrap();
    let _sim = Sim::start_with(
        gw.addr,
        1,
        "k-",
        "senml-cbor",
        &[
            "--ota-dir",
            got.to_str().unwrap(),
            "--lifetime",
            "30",
            "--update-ms",
            "1000",
        ],
    );
    let img = package(&dir.0, "fw.bin", "5", 120_000, true);
    let id = add(&gw, &img, "firmware", "fw", "5");
    let (ok, out) = cli(&gw, &["ota", "start", "k-0", &id, "--block-size", "32"]);
    assert!(ok, "{out}");
    assert!(common::wait_until(Duration::from_secs(30), || {
        status(&gw, "k-0")["progress"].as_u64().unwrap_or(0) >= 20
    }));
    gw.kill9();
    let gw = Gateway::start_on(&dir.0, &cfg, port);
    let s = wait_state(&gw, "k-0", &["UPDATED", "FAILED"], Duration::from_secs(120));
    assert_eq!(s["state"], "UPDATED", "{s}");
    assert!(
        s["retries"].as_u64().unwrap() >= 1,
        "the restart counts: {s}"
    );
    let written = std::fs::read(got.join("k-0-fw.bin")).unwrap();
    assert_eq!(sha256_hex(&written), id);
}

#[test]
fn a_profile_wide_update_runs_at_most_max_concurrent_at_once() {
    let dir = TempDir::new("ota-profile");
    let gw = Gateway::start(
        &dir.0,
        &common::config("127.0.0.1", "[ota]\nmax_concurrent = 4\n"),
    );
    let prof = dir.0.join("meters.toml");
    std::fs::write(
        &prof,
        "name = \"meters\"\nobjects = [3, 5]\n[ota]\nfw_strategy = \"auto\"\nblock_size = 512\n",
    )
    .unwrap();
    let (ok, out) = cli(&gw, &["profile", "import", prof.to_str().unwrap()]);
    assert!(ok, "{out}");
    for i in 0..20 {
        let (ok, out) = cli(
            &gw,
            &["device", "add", &format!("pm-{i}"), "--profile", "meters"],
        );
        assert!(ok, "{out}");
    }
    let _sim = Sim::start(gw.addr, 20, "pm-", "senml-cbor");
    let img = package(&dir.0, "fw.bin", "7", 30_000, true);
    let id = add(&gw, &img, "firmware", "meter-fw", "7");
    let watch = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut most = 0;
            let mut states = std::collections::BTreeSet::new();
            for _ in 0..400 {
                let l = cli_json(&gw, &["ota", "status"])["value"].clone();
                let l = l.as_array().cloned().unwrap_or_default();
                let running = l
                    .iter()
                    .filter(|r| {
                        !matches!(r["state"].as_str(), Some("QUEUED" | "UPDATED" | "FAILED"))
                    })
                    .count();
                most = most.max(running);
                for r in &l {
                    states.insert(r["state"].as_str().unwrap_or("").to_string());
                }
                if l.len() == 20 && l.iter().all(|r| r["state"] == "UPDATED") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (most, states)
        });
        let (ok, out) = cli(&gw, &["ota", "start", "--profile", "meters", &id, "--wait"]);
        assert!(ok, "{out}");
        h.join().unwrap()
    });
    assert!(watch.0 <= 4 && watch.0 >= 2, "at most 4 at once: {watch:?}");
    // The profile's [ota] table: its block size, push chosen by the device's
    // /5/0/9 (both).
    let s = status(&gw, "pm-7");
    assert_eq!(
        (s["blockSize"].as_u64(), s["strategy"].as_str()),
        (Some(512), Some("push")),
        "{s}"
    );
    assert!(watch.1.contains("QUEUED"), "the rest queued: {watch:?}");
}

fn coap_get(url: &str, block: &str, out: &Path) -> String {
    let o = std::process::Command::new(common::tool("coap-client-notls"))
        .args(["-m", "get", "-B", "10", "-b", block, "-o"])
        .arg(out)
        .arg(url)
        .output()
        .expect("coap-client runs");
    common::printed(&o)
}

/// Polls until the update of `ep` has a pull URL; the URL.
fn pull_url(gw: &Gateway, ep: &str) -> String {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(u) = status(gw, ep)["url"].as_str() {
            return u.to_string();
        }
        assert!(std::time::Instant::now() < end, "no pull URL for {ep}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pull_update_serves_a_secret_url_at_any_block_size_until_it_ends() {
    let dir = TempDir::new("ota-pull");
    let gw = Gateway::start(&dir.0, &common::config("127.0.0.1", ""));
    let got = dir.0.join("received");
    std::fs::create_dir_all(&got).unwrap();
    // 16-byte blocks: the device is slow enough for a second reader.
    let _sim = Sim::start_with(
        gw.addr,
        1,
        "pl-",
        "senml-cbor",
        &["--ota-dir", got.to_str().unwrap(), "--ota-max-block", "16"],
    );
    let img = package(&dir.0, "fw.bin", "6.1", 60_000, true);
    let bytes = std::fs::read(&img).unwrap();
    let id = add(&gw, &img, "firmware", "fw", "6.1");
    let (ok, out) = cli(&gw, &["ota", "start", "pl-0", &id, "--strategy", "pull"]);
    assert!(ok, "{out}");
    let url = pull_url(&gw, "pl-0");
    let token = url.rsplit('/').next().unwrap().to_string();
    assert_eq!(token.len(), 32, "128 random bits: {url}");
    assert!(
        url.starts_with(&format!("coap://127.0.0.1:{}/fw/", gw.addr.port())),
        "{url}"
    );
    // libcoap fetches the same URL at other block sizes: the same bytes.
    for b in ["64", "1024"] {
        let out_file = dir.0.join(format!("fetched-{b}.bin"));
        let printed = coap_get(&url, b, &out_file);
        assert_eq!(
            std::fs::read(&out_file).unwrap_or_default(),
            bytes,
            "block size {b}: {printed}"
        );
    }
    let s = wait_state(&gw, "pl-0", &["UPDATED", "FAILED"], Duration::from_secs(90));
    assert_eq!(s["state"], "UPDATED", "{s}");
    assert_eq!(s["strategy"], "pull");
    assert!(s["url"].is_null(), "{s}");
    let written = std::fs::read(got.join("pl-0-fw.bin")).unwrap();
    assert_eq!(
        sha256_hex(&written),
        id,
        "the device holds exactly the image"
    );
    // The update ended: its URL is gone.
    let printed = coap_get(&url, "1024", &dir.0.join("after.bin"));
    assert!(printed.contains("4.04"), "{printed}");
}

#[test]
fn a_dtls_device_pulls_over_dtls_only() {
    let dir = TempDir::new("ota-pull-dtls");
    let gw = Gateway::start(
        &dir.0,
        &common::config(
            "127.0.0.1",
            "[registration]\nallow_unknown_endpoints = false",
        ),
    );
    let key = "000102030405060708090a0b0c0d0e0f";
    let (ok, out) = cli(
        &gw,
        &[
            "device",
            "add",
            "dp-0",
            "--psk-identity",
            "dp-0",
            "--psk-key",
            key,
        ],
    );
    assert!(ok, "{out}");
    let got = dir.0.join("received");
    std::fs::create_dir_all(&got).unwrap();
    let dtls = gw.dtls.expect("DTLS on");
    let _sim = Sim::start_with(
        dtls,
        1,
        "dp-",
        "senml-cbor",
        &[
            "--psk",
            key,
            "--ota-dir",
            got.to_str().unwrap(),
            "--ota-max-block",
            "64",
        ],
    );
    let img = package(&dir.0, "fw.bin", "8", 40_000, true);
    let id = add(&gw, &img, "firmware", "fw", "8");
    let (ok, out) = cli(&gw, &["ota", "start", "dp-0", &id, "--strategy", "pull"]);
    assert!(ok, "{out}");
    let url = pull_url(&gw, "dp-0");
    assert!(
        url.starts_with(&format!("coaps://127.0.0.1:{}/fw/", dtls.port())),
        "{url}"
    );
    // The same token over plain CoAP: refused.
    let plain = url
        .replace("coaps://", "coap://")
        .replace(&dtls.port().to_string(), &gw.addr.port().to_string());
    let printed = coap_get(&plain, "1024", &dir.0.join("plain.bin"));
    assert!(printed.contains("4.03"), "{printed}");
    let s = wait_state(&gw, "dp-0", &["UPDATED", "FAILED"], Duration::from_secs(90));
    assert_eq!(s["state"], "UPDATED", "{s}");
    let written = std::fs::read(got.join("dp-0-fw.bin")).unwrap();
    assert_eq!(sha256_hex(&written), id);
    // A push to the same device over DTLS works too.
    let img2 = package(&dir.0, "fw2.bin", "9", 30_000, true);
    let id2 = add(&gw, &img2, "firmware", "fw", "9");
    let (ok, out) = cli(&gw, &["ota", "start", "dp-0", &id2, "--wait"]);
    assert!(ok && out.contains("UPDATED, runs 9"), "{out}");
}

#[test]
fn the_platforms_shared_attributes_start_an_update_that_ends_updated_upstream() {
    let dir = TempDir::new("ota-mqtt");
    let broker = common::Broker::start(&dir.0);
    let gw = Gateway::start(
        &dir.0,
        &common::config(
            "127.0.0.1",
            &format!("[mqtt]\nurl = \"{}\"\n", broker.url()),
        ),
    );
    let sub = common::Subscriber::start(&broker, "ota-sub");
    let _sim = Sim::start(gw.addr, 2, "mq-", "senml-cbor");
    let img = package(&dir.0, "fw.bin", "3.3", 25_000, true);
    let id = add(&gw, &img, "firmware", "meter-fw", "3.3");
    broker.publish(
        "v1/gateway/attributes",
        &format!(
            r#"{{"device":"mq-0","data":{{"fw_title":"meter-fw","fw_version":"3.3","fw_checksum":"{id}","fw_checksum_algorithm":"SHA256","fw_size":25100}}}}"#
        ),
    );
    broker.publish(
        "v1/gateway/attributes",
        r#"{"device":"mq-1","data":{"fw_title":"meter-fw","fw_version":"4.0"}}"#,
    );
    let values = |ep: &str, key: &str| -> Vec<Json> {
        sub.on("v1/gateway/telemetry")
            .iter()
            .filter_map(|m| m.get(ep).and_then(Json::as_array).cloned())
            .flatten()
            .filter_map(|e| e["values"].get(key).cloned())
            .collect()
    };
    sub.wait("v1/gateway/telemetry", Duration::from_secs(60), |_| {
        values("mq-0", "fw_state").contains(&Json::from("UPDATED"))
            && values("mq-1", "fw_state").contains(&Json::from("FAILED"))
    });
    let states: Vec<Json> = values("mq-0", "fw_state");
    assert!(states.contains(&Json::from("DOWNLOADING")), "{states:?}");
    assert_eq!(states.last(), Some(&Json::from("UPDATED")), "{states:?}");
    assert!(values("mq-0", "current_fw_version").contains(&Json::from("3.3")));
    assert!(values("mq-0", "fw_progress").contains(&Json::from(100)));
    assert_eq!(
        values("mq-1", "fw_error").last(),
        Some(&Json::from("image not in the local store")),
    );
    // The same assignment again (a reconnect's attribute answer) starts
    // nothing: the update is over.
    broker.publish(
        "v1/gateway/attributes",
        r#"{"device":"mq-0","data":{"fw_title":"meter-fw","fw_version":"3.3"}}"#,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&gw, "mq-0")["state"], "UPDATED");
    assert_eq!(status(&gw, "mq-0")["blocksSent"], 25);
    // The image the platform named arrives in the store: the same
    // assignment, sent again, now starts.
    let img4 = package(&dir.0, "fw4.bin", "4.0", 5_000, true);
    add(&gw, &img4, "firmware", "meter-fw", "4.0");
    broker.publish(
        "v1/gateway/attributes",
        r#"{"device":"mq-1","data":{"fw_title":"meter-fw","fw_version":"4.0"}}"#,
    );
    let s = wait_state(&gw, "mq-1", &["UPDATED"], Duration::from_secs(60));
    assert_eq!(s["currentVersion"], "4.0");
}

#[test]
fn a_queue_mode_device_gets_blocks_only_while_awake_and_still_ends_updated() {
    let dir = TempDir::new("ota-queue");
    let gw = Gateway::start(
        &dir.0,
        &common::config("127.0.0.1", "[queue]\nawake_window_s = 1\n"),
    );
    let _sim = Sim::start_with(
        gw.addr,
        1,
        "qm-",
        "senml-cbor",
        &["--queue", "--awake-ms", "1000", "--update-ms", "2500"],
    );
    // Let it fall asleep first.
    std::thread::sleep(Duration::from_millis(1500));
    let img = package(&dir.0, "fw.bin", "2.2", 20_000, true);
    let id = add(&gw, &img, "firmware", "fw", "2.2");
    let (ok, out) = cli(&gw, &["ota", "start", "qm-0", &id]);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(300));
    // Asleep: nothing reached it yet, and the status says what it waits on.
    let s = status(&gw, "qm-0");
    assert_eq!(
        (s["state"].as_str(), s["acknowledged"].as_u64()),
        (Some("INITIATED"), Some(0)),
        "{s}"
    );
    assert!(!s["step"].as_str().unwrap().is_empty(), "{s}");
    let s = wait_state(&gw, "qm-0", &["UPDATED", "FAILED"], Duration::from_secs(60));
    assert_eq!(s["state"], "UPDATED", "{s}");
}

#[test]
fn every_block_size_delivers_the_exact_image_end_to_end() {
    let dir = TempDir::new("ota-sizes");
    let gw = Gateway::start(
        &dir.0,
        &common::config("127.0.0.1", "[ota]\nmax_concurrent = 7\n"),
    );
    let got = dir.0.join("received");
    std::fs::create_dir_all(&got).unwrap();
    let _sim = Sim::start_with(
        gw.addr,
        7,
        "bs-",
        "senml-cbor",
        &["--ota-dir", got.to_str().unwrap()],
    );
    // Not a multiple of any block size: the last block is short.
    let img = package(&dir.0, "fw.bin", "1.16", 20_011, true);
    let id = add(&gw, &img, "firmware", "fw", "1.16");
    let sizes = [16, 32, 64, 128, 256, 512, 1024];
    for (i, b) in sizes.iter().enumerate() {
        let (ok, out) = cli(
            &gw,
            &[
                "ota",
                "start",
                &format!("bs-{i}"),
                &id,
                "--block-size",
                &b.to_string(),
            ],
        );
        assert!(ok, "{out}");
    }
    for (i, b) in sizes.iter().enumerate() {
        let ep = format!("bs-{i}");
        let s = wait_state(&gw, &ep, &["UPDATED", "FAILED"], Duration::from_secs(60));
        assert_eq!(s["state"], "UPDATED", "{b}: {s}");
        assert_eq!(s["blockSize"], *b);
        let written = std::fs::read(got.join(format!("{ep}-fw.bin"))).unwrap();
        assert_eq!(sha256_hex(&written), id, "block size {b}");
    }
}

#[test]
fn a_pull_url_outlives_a_kill_9_and_the_update_completes() {
    let dir = TempDir::new("ota-pull-kill");
    let port = common::free_udp_port();
    let cfg = common::config("127.0.0.1", "");
    let gw = Gateway::start_on(&dir.0, &cfg, port);
    let got = dir.0.join("received");
    std::fs::create_dir_all(&got).unwrap();
    let _sim = Sim::start_with(
        gw.addr,
        1,
        "pk-",
        "senml-cbor",
        &["--ota-dir", got.to_str().unwrap(), "--ota-max-block", "16"],
    );
    let img = package(&dir.0, "fw.bin", "7.7", 150_000, true);
    let id = add(&gw, &img, "firmware", "fw", "7.7");
    let (ok, out) = cli(&gw, &["ota", "start", "pk-0", &id, "--strategy", "pull"]);
    assert!(ok, "{out}");
    let url = pull_url(&gw, "pk-0");
    assert!(common::wait_until(Duration::from_secs(30), || {
        status(&gw, "pk-0")["progress"].as_u64().unwrap_or(0) >= 10
    }));
    gw.kill9();
    let gw = Gateway::start_on(&dir.0, &cfg, port);
    // Served again at once under the same secret, before the update ends.
    let s = status(&gw, "pk-0");
    assert_eq!(s["url"].as_str(), Some(url.as_str()), "{s}");
    let probe = dir.0.join("probe.bin");
    let printed = coap_get(&url, "1024", &probe);
    assert_eq!(
        std::fs::read(&probe).unwrap_or_default(),
        std::fs::read(&img).unwrap(),
        "{printed}"
    );
    let s = wait_state(
        &gw,
        "pk-0",
        &["UPDATED", "FAILED"],
        Duration::from_secs(120),
    );
    assert_eq!(s["state"], "UPDATED", "{s}");
    let written = std::fs::read(got.join("pk-0-fw.bin")).unwrap();
    assert_eq!(sha256_hex(&written), id);
    let printed = coap_get(&url, "1024", &dir.0.join("after.bin"));
    assert!(printed.contains("4.04"), "{printed}");
}
