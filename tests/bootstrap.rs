//! The bootstrap server end to end: the simulator bootstrapping over
//! plain CoAP and DTLS and then registering with what it was handed,
//! libcoap's coap-client as an independent peer (refusals, Bootstrap-Pack),
//! key rotation checked with gnutls-cli, the trigger, and kill -9 in the
//! middle of a bootstrap.

mod common;

use common::{free_udp_port, tool, Client, Gateway, Sim, TempDir};
use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use lwm2m_gw::lwm2m::format::{self, ContentFormat};
use lwm2m_gw::lwm2m::node::Value;
use lwm2m_gw::lwm2m::ModelLibrary;
use serde_json::Value as Json;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const BS_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f";

/// A gateway with the bootstrap server on free ports and no admission
/// without a credential: a device registers only with what it was handed.
struct Site {
    gw: Gateway,
    plain: SocketAddr,
    secure: SocketAddr,
}

fn site(dir: &std::path::Path) -> Site {
    let (p, s) = (free_udp_port(), free_udp_port());
    site_on(dir, p, s, 0)
}

fn site_on(dir: &std::path::Path, plain: u16, secure: u16, coap: u16) -> Site {
    let cfg = format!(
        "[coap]\nbind = \"127.0.0.1\"\n[registration]\nallow_unknown_endpoints = false\n\
         [bootstrap]\nport = {plain}\ndtls_port = {secure}\nstall_timeout_s = 30\n"
    );
    let gw = Gateway::start_on(dir, &cfg, coap);
    Site {
        gw,
        plain: SocketAddr::from(([127, 0, 0, 1], plain)),
        secure: SocketAddr::from(([127, 0, 0, 1], secure)),
    }
}

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

fn state(gw: &Gateway, ep: &str) -> Json {
    cli_json(gw, &["bootstrap", "show", ep])["value"]["bootstrap"].clone()
}

fn credential(gw: &Gateway, ep: &str) -> Option<Json> {
    cli_json(gw, &["device", "list"])["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["endpoint"] == ep)
        .cloned()
}

#[test]
fn a_nosec_bootstrap_hands_out_an_account_the_device_registers_with() {
    let dir = TempDir::new("bs-nosec");
    let s = site(&dir.0);
    let (ok, out) = cli(&s.gw, &["bootstrap", "add", "bs-nosec-0"]);
    assert!(ok, "{out}");
    assert_eq!(state(&s.gw, "bs-nosec-0")["state"], "pending");
    let _sim = Sim::start_with(
        s.gw.addr,
        1,
        "bs-nosec-",
        "senml-cbor",
        &["--bootstrap", &s.plain.to_string()],
    );
    assert_eq!(state(&s.gw, "bs-nosec-0")["state"], "finished");
    assert_eq!(credential(&s.gw, "bs-nosec-0").unwrap()["mode"], "NO_SEC");
    let (_, devices) = cli(&s.gw, &["devices"]);
    assert!(devices.contains("bs-nosec-0"), "{devices}");
    let (_, list) = cli(&s.gw, &["bootstrap", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("bs-nosec-0") && l.contains("finished")),
        "{list}"
    );
}

/// The Bootstrap-Pack as a client that is not ours reads it: aiocoap
/// fetches it, cbor2 and Python's json decode it, and the SenML rules of a
/// strict client resolve every name to a whole LwM2M path (a real client
/// once refused names without their leading slash and fell back to the
/// classic bootstrap).
#[test]
fn the_bootstrap_pack_is_read_by_an_independent_senml_decoder_in_cbor_and_json() {
    let dir = TempDir::new("bs-pack-reader");
    let s = site(&dir.0);
    for fmt in ["cbor", "json"] {
        let ep = format!("bs-pack-{fmt}");
        let (ok, out) = cli(&s.gw, &["bootstrap", "add", &ep]);
        assert!(ok, "{out}");
        let out = Command::new(common::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/bspack_reader.py"
            ))
            .args([&s.plain.to_string(), &ep, fmt])
            .output()
            .unwrap();
        let text = common::printed(&out);
        let got: Json = serde_json::from_str(text.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{fmt}: {e}: {text}"));
        let r = &got["records"];
        assert!(r.is_object(), "{fmt}: {got}");
        let uri = r["/0/1/0"]
            .as_str()
            .unwrap_or_else(|| panic!("{fmt}: {got}"));
        assert!(uri.starts_with("coap://127.0.0.1:"), "{fmt}: {got}");
        assert_eq!(r["/0/1/1"], false, "{fmt}: not a bootstrap server: {got}");
        assert_eq!(r["/0/1/2"], 3, "{fmt}: NoSec: {got}");
        assert_eq!(r["/0/1/10"], r["/1/0/0"], "{fmt}: short server ids: {got}");
        assert!(r["/1/0/1"].as_u64().is_some(), "{fmt}: lifetime: {got}");
        assert_eq!(r["/1/0/7"], "U", "{fmt}: {got}");
        assert_eq!(
            got["format"],
            if fmt == "cbor" { 112 } else { 110 },
            "{got}"
        );
    }
}

#[test]
fn a_psk_bootstrap_on_the_dtls_port_gives_a_key_the_dtls_register_is_accepted_with() {
    let dir = TempDir::new("bs-psk");
    let s = site(&dir.0);
    let (ok, out) = cli(
        &s.gw,
        &[
            "bootstrap",
            "add",
            "bs-psk-0",
            "--psk-identity",
            "bs-psk-0",
            "--psk-key",
            BS_KEY_HEX,
            "--server-security",
            "psk",
        ],
    );
    assert!(ok, "{out}");
    let _sim = Sim::start_with(
        s.gw.addr,
        1,
        "bs-psk-",
        "senml-cbor",
        &["--bootstrap", &s.secure.to_string(), "--psk", BS_KEY_HEX],
    );
    let c = credential(&s.gw, "bs-psk-0").expect("the account became a credential");
    assert_eq!(
        (c["mode"].as_str(), c["pskIdentity"].as_str()),
        (Some("PSK"), Some("bs-psk-0"))
    );
    assert_eq!(c["pskKeyBits"], 128);
    // Registered over DTLS: with allow_unknown_endpoints off and a PSK
    // credential, plain CoAP would have been refused.
    assert!(s
        .gw
        .wait_log("ep=bs-psk-0 registered", Duration::from_secs(5)));
    let key_logged = common::log_lines(&s.gw)
        .iter()
        .any(|l| l.to_ascii_lowercase().contains("key=") || l.contains(BS_KEY_HEX));
    assert!(!key_logged, "keys are never logged");
}

fn coap_client(args: &[&str]) -> String {
    let out = Command::new(tool("coap-client-notls"))
        .args(["-B", "5"])
        .args(args)
        .output()
        .expect("coap-client runs");
    common::printed(&out)
}

#[test]
fn unknown_endpoints_wrong_keys_and_plain_requests_for_dtls_entries_are_refused() {
    let dir = TempDir::new("bs-refused");
    let s = site(&dir.0);
    let (ok, out) = cli(
        &s.gw,
        &[
            "bootstrap",
            "add",
            "bs-dtls-0",
            "--psk-identity",
            "bs-dtls-0",
            "--psk-key",
            BS_KEY_HEX,
        ],
    );
    assert!(ok, "{out}");
    let unknown = coap_client(&["-m", "post", &format!("coap://{}/bs?ep=stranger", s.plain)]);
    assert!(unknown.lines().any(|l| l.starts_with("4.00")), "{unknown}");
    let plain = coap_client(&["-m", "post", &format!("coap://{}/bs?ep=bs-dtls-0", s.plain)]);
    assert!(plain.lines().any(|l| l.starts_with("4.03")), "{plain}");
    // The right identity with the wrong key: no handshake, no bootstrap.
    let out = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw-sim"))
        .args(["--count", "1", "--prefix", "bs-dtls-", "--threads", "1"])
        .args(["--bootstrap", &s.secure.to_string()])
        .args(["--psk", "ffffffffffffffffffffffffffffffff"])
        .output()
        .unwrap();
    let printed = common::printed(&out);
    assert!(printed.contains("0/1 devices registered"), "{printed}");
    assert!(printed.contains("DTLS handshake failed"), "{printed}");
    assert_eq!(state(&s.gw, "bs-dtls-0")["state"], "pending");
    assert!(credential(&s.gw, "bs-dtls-0").is_none());
    assert!(credential(&s.gw, "stranger").is_none());
    // Bad input on the CLI changes nothing.
    for bad in [
        &[
            "bootstrap",
            "add",
            "x1",
            "--psk-identity",
            "i",
            "--psk-key",
            "abc",
        ][..],
        &["bootstrap", "add", "x2", "--profile", "no-such-profile"][..],
        &["bootstrap", "add", "x3", "--server-security", "tls"][..],
        &[
            "bootstrap",
            "add",
            "x4",
            "--psk-identity",
            "bs-dtls-0",
            "--psk-key",
            BS_KEY_HEX,
        ][..],
    ] {
        let (ok, out) = cli(&s.gw, bad);
        assert!(!ok, "{bad:?} was accepted: {out}");
    }
    assert_eq!(
        cli_json(&s.gw, &["bootstrap", "list"])["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Fetches a Bootstrap-Pack over plain CoAP, block by block when it is
/// larger than one datagram: its resources by path.
fn pack(plain: SocketAddr, ep: &str) -> std::collections::HashMap<String, Value> {
    let c = Client::new(plain);
    let mut body = Vec::new();
    for num in 0u64.. {
        let mid = fastrand::u16(..);
        let mut m = Message::new(
            MsgType::Con,
            Code::GET,
            mid,
            Token::from_u64(fastrand::u64(..)),
        );
        m.set_uri_path("bspack");
        m.add_option(opt::URI_QUERY, format!("ep={ep}").into_bytes());
        m.set_uint_option(opt::ACCEPT, ContentFormat::SenmlJson.code() as u64);
        if num > 0 {
            // Block2: NUM, M = 0, SZX 6 (1024 bytes).
            m.set_uint_option(opt::BLOCK2, (num << 4) | 6);
        }
        c.sock.send_to(&m.encode(), plain).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = c.sock.recv_from(&mut buf).expect("the pack within 5 s");
        let r = Message::decode(&buf[..n]).unwrap();
        assert_eq!((r.mid, r.code), (mid, Code::CONTENT), "{r:?}");
        body.extend_from_slice(&r.payload);
        match r.block2() {
            Some(Ok(b)) if b.more => continue,
            _ => break,
        }
    }
    let models = ModelLibrary::embedded();
    format::decode_entries(ContentFormat::SenmlJson, &body, &models)
        .unwrap()
        .into_iter()
        .map(|(p, v)| (p.to_string(), v))
        .collect()
}

fn opaque(pack: &std::collections::HashMap<String, Value>, path: &str) -> Vec<u8> {
    match pack.get(path) {
        Some(Value::Opaque(b)) => b.clone(),
        other => panic!("{path}: {other:?}"),
    }
}

/// The PSK a Bootstrap-Pack hands out.
fn pack_key(plain: SocketAddr, ep: &str) -> Vec<u8> {
    opaque(&pack(plain, ep), "/0/1/5")
}

fn psk_handshake(port: u16, identity: &str, key: &[u8]) -> bool {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(tool("gnutls-cli"))
        .args(["--udp", "--pskusername", identity, "--pskkey", &hex])
        .arg("--priority=NORMAL:-VERS-ALL:+VERS-DTLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:+AES-128-CCM-8")
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("gnutls-cli runs");
    common::printed(&out).contains("Handshake was completed")
}

#[test]
fn each_bootstrap_rotates_the_key_and_the_old_one_stops_working() {
    let dir = TempDir::new("bs-rotate");
    let s = site(&dir.0);
    let (ok, out) = cli(
        &s.gw,
        &["bootstrap", "add", "bs-rot", "--server-security", "psk"],
    );
    assert!(ok, "{out}");
    // coap-client asks for the pack as an independent peer: SenML JSON
    // with the account's URI.
    let text = coap_client(&[
        "-m",
        "get",
        "-A",
        "110",
        &format!("coap://{}/bspack?ep=bs-rot", s.plain),
    ]);
    let dtls_port = s.gw.dtls.unwrap().port();
    assert!(
        text.contains(&format!("coaps://127.0.0.1:{dtls_port}")),
        "{text}"
    );
    let first = pack_key(s.plain, "bs-rot");
    let second = pack_key(s.plain, "bs-rot");
    assert_eq!((first.len(), second.len()), (16, 16));
    assert_ne!(first, second);
    assert!(psk_handshake(dtls_port, "bs-rot", &second));
    assert!(!psk_handshake(dtls_port, "bs-rot", &first));
    assert_eq!(state(&s.gw, "bs-rot")["attempts"], 3);
}

#[test]
fn a_trigger_makes_a_registered_device_bootstrap_again() {
    let dir = TempDir::new("bs-trigger");
    let s = site(&dir.0);
    let (ok, out) = cli(
        &s.gw,
        &["bootstrap", "add", "bs-trig-0", "--server-security", "psk"],
    );
    assert!(ok, "{out}");
    let _sim = Sim::start_with(
        s.gw.addr,
        1,
        "bs-trig-",
        "tlv",
        &["--bootstrap", &s.plain.to_string()],
    );
    assert_eq!(state(&s.gw, "bs-trig-0")["attempts"], 1);
    let (ok, out) = cli(&s.gw, &["bootstrap", "trigger", "bs-trig-0"]);
    assert!(ok && out.contains("CHANGED"), "{out}");
    assert!(common::wait_until(Duration::from_secs(10), || {
        let st = state(&s.gw, "bs-trig-0");
        st["attempts"] == 2 && st["state"] == "finished"
    }));
    // It registers again, over DTLS with the new key.
    assert!(common::wait_until(Duration::from_secs(10), || {
        common::log_lines(&s.gw)
            .iter()
            .filter(|l| l.contains("ep=bs-trig-0 registered"))
            .count()
            == 2
    }));
    let (ok, out) = cli(&s.gw, &["bootstrap", "trigger", "nobody"]);
    assert!(!ok && out.contains("NOT_FOUND"), "{out}");
}

#[test]
fn a_kill_9_mid_bootstrap_leaves_no_account_and_the_next_attempt_succeeds() {
    let dir = TempDir::new("bs-kill");
    let (p, q, coap) = (free_udp_port(), free_udp_port(), free_udp_port());
    let s = site_on(&dir.0, p, q, coap);
    let (ok, out) = cli(
        &s.gw,
        &["bootstrap", "add", "bs-kill-0", "--server-security", "psk"],
    );
    assert!(ok, "{out}");
    // A device that asks, then never answers the server's first Delete.
    let mut dev = Client::new(s.plain);
    let r = dev.request(Code::POST, "bs", &["ep=bs-kill-0"], b"");
    assert_eq!(r.code, Code::CHANGED);
    assert!(s.gw.wait_log("ep=bs-kill-0 peer=", Duration::from_secs(2)));
    assert_eq!(state(&s.gw, "bs-kill-0")["state"], "in progress");
    s.gw.kill9();
    let s = site_on(&dir.0, p, q, coap);
    let st = state(&s.gw, "bs-kill-0");
    assert_eq!(st["state"], "failed", "{st}");
    assert!(
        st["reason"].as_str().unwrap().contains("stopped during"),
        "{st}"
    );
    assert!(
        credential(&s.gw, "bs-kill-0").is_none(),
        "no half-made account"
    );
    let _sim = Sim::start_with(
        s.gw.addr,
        1,
        "bs-kill-",
        "senml-cbor",
        &["--bootstrap", &s.plain.to_string()],
    );
    assert_eq!(state(&s.gw, "bs-kill-0")["state"], "finished");
    assert!(credential(&s.gw, "bs-kill-0").is_some());
}

#[test]
fn an_import_with_one_bad_line_names_it_and_imports_nothing() {
    let dir = TempDir::new("bs-import");
    let s = site(&dir.0);
    let csv = dir.0.join("site.csv");
    std::fs::write(
        &csv,
        "endpoint,server_security,lifetime\nimp-1,psk,60\nimp-2,nosec,\nimp-3,psk,soon\n",
    )
    .unwrap();
    let (ok, out) = cli(&s.gw, &["bootstrap", "import", csv.to_str().unwrap()]);
    assert!(!ok && out.contains("line 4"), "{out}");
    assert!(cli_json(&s.gw, &["bootstrap", "list"])["value"]
        .as_array()
        .unwrap()
        .is_empty());
    std::fs::write(
        &csv,
        "endpoint,server_security,lifetime\nimp-1,psk,60\nimp-2,nosec,\n",
    )
    .unwrap();
    let (ok, out) = cli(&s.gw, &["bootstrap", "import", csv.to_str().unwrap()]);
    assert!(ok, "{out}");
    let toml = dir.0.join("site.toml");
    std::fs::write(
        &toml,
        "[[device]]\nendpoint = \"imp-3\"\nbinding = \"UQ\"\n[[device]]\nendpoint = \"imp-4\"\nserver_uri = \"coap://192.0.2.1:5685\"\n",
    )
    .unwrap();
    let (ok, out) = cli(&s.gw, &["bootstrap", "import", toml.to_str().unwrap()]);
    assert!(ok, "{out}");
    let list = cli_json(&s.gw, &["bootstrap", "list"])["value"].clone();
    let eps: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(eps, ["imp-1", "imp-2", "imp-3", "imp-4"]);
    assert_eq!(list[0]["lifetime"], 60);
    assert_eq!(list[2]["binding"], "UQ");
    let (ok, _) = cli(&s.gw, &["bootstrap", "rm", "imp-2"]);
    assert!(ok);
    let (ok, out) = cli(&s.gw, &["bootstrap", "show", "imp-2"]);
    assert!(!ok && out.contains("NOT_FOUND"), "{out}");
}

#[test]
fn devices_of_each_lwm2m_version_bootstrap_then_register() {
    let dir = TempDir::new("bs-versions");
    let s = site(&dir.0);
    for ep in ["v10-0", "v11-0", "v12-0"] {
        let (ok, out) = cli(&s.gw, &["bootstrap", "add", ep, "--server-security", "psk"]);
        assert!(ok, "{out}");
    }
    let bs = s.plain.to_string();
    // 1.0: TLV only, no Bootstrap-Discover; 1.1: SenML CBOR named by pct;
    // 1.2: Bootstrap-Pack.
    let _v10 = Sim::start_with(
        s.gw.addr,
        1,
        "v10-",
        "tlv",
        &["--bootstrap", &bs, "--lwm2m", "1.0"],
    );
    let _v11 = Sim::start_with(s.gw.addr, 1, "v11-", "senml-cbor", &["--bootstrap", &bs]);
    let _v12 = Sim::start_with(
        s.gw.addr,
        1,
        "v12-",
        "lwm2m-cbor",
        &["--bootstrap", &bs, "--lwm2m", "1.2", "--bootstrap-pack"],
    );
    for ep in ["v10-0", "v11-0", "v12-0"] {
        assert_eq!(state(&s.gw, ep)["state"], "finished", "{ep}");
        assert_eq!(credential(&s.gw, ep).unwrap()["mode"], "PSK", "{ep}");
    }
    assert!(s.gw.log_contains("ep=v12-0 peer="));
    assert!(common::log_lines(&s.gw)
        .iter()
        .any(|l| l.contains("ep=v12-0") && l.contains("Bootstrap-Pack delivered")));
    assert!(common::log_lines(&s.gw)
        .iter()
        .any(|l| l.contains("ep=v11-0") && l.contains("bootstrap started (pct=SENML_CBOR)")));
}

#[test]
fn a_profiles_bootstrap_table_fills_what_an_entry_leaves_out() {
    let dir = TempDir::new("bs-profile");
    let s = site(&dir.0);
    let profile = dir.0.join("meters.toml");
    std::fs::write(
        &profile,
        "name = \"meters\"\n[bootstrap]\nlifetime = 77\nbinding = \"UQ\"\nserver_security = \"psk\"\n",
    )
    .unwrap();
    let (ok, out) = cli(&s.gw, &["profile", "import", profile.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&s.gw, &["bootstrap", "add", "m-1", "--profile", "meters"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &s.gw,
        &[
            "bootstrap",
            "add",
            "m-2",
            "--profile",
            "meters",
            "--lifetime",
            "30",
            "--server-security",
            "nosec",
        ],
    );
    assert!(ok, "{out}");
    let m1 = cli_json(&s.gw, &["bootstrap", "show", "m-1"])["value"].clone();
    assert_eq!(
        (
            m1["lifetime"].as_u64(),
            m1["binding"].as_str(),
            m1["serverSecurity"].as_str()
        ),
        (Some(77), Some("UQ"), Some("PSK"))
    );
    let m2 = cli_json(&s.gw, &["bootstrap", "show", "m-2"])["value"].clone();
    assert_eq!(
        (
            m2["lifetime"].as_u64(),
            m2["binding"].as_str(),
            m2["serverSecurity"].as_str()
        ),
        (Some(30), Some("UQ"), Some("NO_SEC"))
    );
    // A profile whose [bootstrap] table cannot work is refused.
    std::fs::write(&profile, "name = \"bad\"\n[bootstrap]\nbinding = \"S\"\n").unwrap();
    let (ok, out) = cli(&s.gw, &["profile", "import", profile.to_str().unwrap()]);
    assert!(!ok && out.contains("U or UQ"), "{out}");
}

#[test]
fn a_profiles_extra_writes_reach_the_device_during_its_bootstrap() {
    let dir = TempDir::new("bs-writes");
    let s = site(&dir.0);
    let profile = dir.0.join("clocks.toml");
    std::fs::write(
        &profile,
        "name = \"clocks\"\n[bootstrap.writes]\n\"/3/0/14\" = \"+02:00\"\n\"/3/0/15\" = \"Europe/Helsinki\"\n",
    )
    .unwrap();
    let (ok, out) = cli(&s.gw, &["profile", "import", profile.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&s.gw, &["bootstrap", "add", "clk-0", "--profile", "clocks"]);
    assert!(ok, "{out}");
    let _sim = Sim::start_with(
        s.gw.addr,
        1,
        "clk-",
        "senml-json",
        &["--bootstrap", &s.plain.to_string()],
    );
    let mut c = s.gw.control();
    let a = common::rpc(
        &mut c,
        "clk-0",
        "Read",
        serde_json::json!({"id": "/3/0/15"}),
    );
    assert_eq!(a["value"], "Europe/Helsinki", "{a}");
    let a = common::rpc(
        &mut c,
        "clk-0",
        "Read",
        serde_json::json!({"id": "/3/0/14"}),
    );
    assert_eq!(a["value"], "+02:00", "{a}");
    // A write to the account's own objects is refused with the profile.
    std::fs::write(
        &profile,
        "name = \"clocks2\"\n[bootstrap.writes]\n\"/1/0/1\" = 5\n",
    )
    .unwrap();
    let (ok, out) = cli(&s.gw, &["profile", "import", profile.to_str().unwrap()]);
    assert!(!ok && out.contains("other than 0 and 1"), "{out}");
}

fn sh(dir: &std::path::Path, script: &str) {
    let out = Command::new("sh")
        .args(["-c", &format!("set -e; cd {}; {script}", dir.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", common::printed(&out));
}

fn coap_client_gnutls(args: &[&str]) -> String {
    let out = Command::new(tool("coap-client-gnutls"))
        .args(["-B", "5"])
        .args(args)
        .output()
        .expect("coap-client runs");
    common::printed(&out)
}

#[test]
fn rpk_and_x509_accounts_register_over_dtls_with_exactly_what_was_handed_out() {
    let dir = TempDir::new("bs-rpk-x509");
    let s = site(&dir.0);
    let d = &dir.0;
    sh(
        d,
        "openssl ecparam -name prime256v1 -genkey -noout -out rpk.key
         openssl ecparam -name prime256v1 -genkey -noout -out x509.key
         openssl req -x509 -new -key x509.key -subj '/CN=bs-x509' -days 30 -out x509.pem
         openssl ecparam -name secp384r1 -genkey -noout -out p384.key",
    );
    let f = |n: &str| d.join(n).display().to_string();
    let (ok, out) = cli(
        &s.gw,
        &[
            "bootstrap",
            "add",
            "bs-rpk",
            "--server-security",
            "rpk",
            "--server-key",
            &f("rpk.key"),
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &s.gw,
        &[
            "bootstrap",
            "add",
            "bs-x509",
            "--server-cert",
            &f("x509.pem"),
            "--server-key",
            &f("x509.key"),
        ],
    );
    assert!(ok, "{out}");
    // Refused, and nothing stored: a curve the RPK suite cannot use, and
    // a key already handed to another endpoint.
    let (ok, out) = cli(
        &s.gw,
        &[
            "bootstrap",
            "add",
            "bs-384",
            "--server-security",
            "rpk",
            "--server-key",
            &f("p384.key"),
        ],
    );
    assert!(!ok && out.contains("EC P-256"), "{out}");
    let (ok, out) = cli(
        &s.gw,
        &["bootstrap", "add", "bs-twin", "--server-key", &f("rpk.key")],
    );
    assert!(!ok && out.contains("also given to bs-rpk"), "{out}");
    let (_, list) = cli(&s.gw, &["bootstrap", "list"]);
    assert!(list.contains("2 bootstrap entries"), "{list}");
    assert!(
        !list.contains("BEGIN") && !out.contains("PRIVATE"),
        "{list}"
    );

    let dtls = s.gw.dtls.expect("the LwM2M server's DTLS port").port();
    let server_key = common::log_lines(&s.gw)
        .iter()
        .find_map(|l| {
            l.split("for RPK provisioning): ")
                .nth(1)
                .map(str::to_string)
        })
        .expect("the gateway logs its public key");
    let register = |ep: &str| format!("coaps://127.0.0.1:{dtls}/rd?ep={ep}&lt=120&b=U");

    // RPK: mode 1, the device's own public key, the gateway's public key,
    // and a PKCS#8 private key openssl reads.
    let p = pack(s.plain, "bs-rpk");
    assert_eq!(
        p["/0/1/0"],
        Value::String(format!("coaps://127.0.0.1:{dtls}"))
    );
    assert_eq!(p["/0/1/2"], Value::Integer(1));
    sh(
        d,
        "openssl ec -in rpk.key -pubout -outform DER -out rpk.pub.der",
    );
    assert_eq!(
        opaque(&p, "/0/1/3"),
        std::fs::read(d.join("rpk.pub.der")).unwrap()
    );
    assert_eq!(
        lwm2m_gw::lwm2m::node::base64_encode(&opaque(&p, "/0/1/4"), false),
        server_key
    );
    std::fs::write(d.join("handed.p8"), opaque(&p, "/0/1/5")).unwrap();
    // PKCS#8 as LwM2M asks; coap-client's raw-key loader wants the
    // traditional EC PEM, which openssl makes from it.
    sh(
        d,
        "openssl pkey -inform DER -in handed.p8 -traditional -out handed.pem",
    );
    let out = coap_client_gnutls(&["-m", "post", "-M", &f("handed.pem"), &register("bs-rpk")]);
    assert!(
        s.gw.wait_log("ep=bs-rpk registered", Duration::from_secs(5)),
        "{out}"
    );
    assert!(s
        .gw
        .log_contains("ep=bs-rpk LwM2M server credential RPK from bootstrap stored"));

    // X.509: mode 2, the device's certificate, the gateway's certificate.
    let p = pack(s.plain, "bs-x509");
    assert_eq!(p["/0/1/2"], Value::Integer(2));
    std::fs::write(d.join("handed-cert.der"), opaque(&p, "/0/1/3")).unwrap();
    std::fs::write(d.join("gateway-cert.der"), opaque(&p, "/0/1/4")).unwrap();
    std::fs::write(d.join("handed-x.p8"), opaque(&p, "/0/1/5")).unwrap();
    sh(
        d,
        "openssl x509 -inform DER -in handed-cert.der -out handed-cert.pem
         openssl pkey -inform DER -in handed-x.p8 -traditional -out handed-x.pem
         openssl x509 -inform DER -in gateway-cert.der -pubkey -noout | openssl pkey -pubin -outform DER -out gw.pub.der",
    );
    assert_eq!(
        lwm2m_gw::lwm2m::node::base64_encode(&std::fs::read(d.join("gw.pub.der")).unwrap(), false),
        server_key,
        "/0/1/4 is the certificate of the gateway's key"
    );
    let out = coap_client_gnutls(&[
        "-m",
        "post",
        "-c",
        &f("handed-cert.pem"),
        "-j",
        &f("handed-x.pem"),
        &register("bs-x509"),
    ]);
    assert!(
        s.gw.wait_log("ep=bs-x509 registered", Duration::from_secs(5)),
        "{out}"
    );
    assert_eq!(credential(&s.gw, "bs-x509").unwrap()["mode"], "X509");
}
