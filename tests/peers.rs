//! Registration against independent CoAP stacks: libcoap's coap-client and aiocoap.
//! Both are installed by scripts/setup.sh.

mod common;

use common::{config, python, tool, Gateway, TempDir};
use std::process::Command;

fn coap_client(args: &[&str]) -> String {
    let out = Command::new(tool("coap-client-notls"))
        .args(["-v", "7", "-B", "10"])
        .args(args)
        .output()
        .expect("coap-client runs");
    common::printed(&out)
}

/// A Register with a link-format object list, as libcoap sends it.
fn coap_register(objects: &str, url: &str) -> String {
    coap_client(&["-m", "post", "-t", "40", "-e", objects, url])
}

#[test]
fn libcoap_client_registers_updates_and_deregisters() {
    let dir = TempDir::new("libcoap");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let base = format!("coap://127.0.0.1:{}", gw.addr.port());
    let out = coap_register(
        "</1/0>,</3/0>",
        &format!("{base}/rd?ep=libcoap-1&lt=60&lwm2m=1.1"),
    );
    assert!(out.contains("c:2.01"), "{out}");
    // libcoap prints the options of the response: Location-Path:rd, Location-Path:<id>
    let id = out
        .split("Location-Path:rd, Location-Path:")
        .nth(1)
        .and_then(|s| s.split([' ', ']', ',']).next())
        .unwrap_or_else(|| panic!("no location in {out}"))
        .to_string();
    let out = coap_client(&["-m", "post", &format!("{base}/rd/{id}?lt=120")]);
    assert!(out.contains("c:2.04"), "{out}");
    let out = coap_client(&["-m", "delete", &format!("{base}/rd/{id}")]);
    assert!(out.contains("c:2.02"), "{out}");
    let out = coap_client(&["-m", "post", &format!("{base}/rd/{id}")]);
    assert!(out.contains("4.04"), "{out}");
    assert!(gw.log_contains("ep=libcoap-1 registered"));
}

#[test]
fn libcoap_client_gets_precondition_failed_for_unknown_version() {
    let dir = TempDir::new("libcoap-ver");
    let gw = Gateway::start(&dir.0, &config("::1", ""));
    let out = coap_register(
        "</3/0>",
        &format!("coap://[::1]:{}/rd?ep=old&lwm2m=0.9", gw.addr.port()),
    );
    assert!(out.contains("4.12"), "{out}");
}

#[test]
fn aiocoap_client_registers_with_a_block_wise_payload() {
    let dir = TempDir::new("aiocoap");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/aiocoap_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("127.0.0.1:{}", gw.addr.port()))
        .args(["aio-1", "200"])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aiocoap client failed (run scripts/setup.sh?): {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or("");
    // The payload is larger than one block, so aiocoap sends it with Block1.
    let payload_len: usize = line
        .split("\"payload_len\": ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(payload_len > 1024, "{line}");
    assert!(line.contains("\"register\": \"2.01 Created\""), "{line}");
    assert!(line.contains("\"update\": \"2.04 Changed\""), "{line}");
    assert!(line.contains("\"deregister\": \"2.02 Deleted\""), "{line}");
    assert!(
        line.contains("\"update_after_deregister\": \"4.04 Not Found\""),
        "{line}"
    );
    assert!(gw.log_contains("ep=aio-1 registered"));
    assert!(
        gw.log_contains("objects=202"),
        "all objects of the block-wise payload arrived"
    );
}
