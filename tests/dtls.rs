//! CoAP over DTLS against independent peers: libcoap's coap-client on
//! GnuTLS (PSK, X.509, raw public keys) and on OpenSSL (PSK, X.509),
//! GnuTLS's gnutls-cli without renegotiation_info, hijack attempts, and the
//! simulator over DTLS end to end. coap-client, gnutls-cli and openssl are
//! installed by scripts/setup.sh.

mod common;

use common::{config, rpc, tool, Gateway, Sim, TempDir, Watch};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const KEY_TEXT: &str = "secretkey0123456";
/// `KEY_TEXT` in hex, as `device add --psk-key` takes it.
const KEY_HEX: &str = "7365637265746b657930313233343536";

fn coap_client(flavour: &str, args: &[&str]) -> String {
    let out = Command::new(tool(&format!("coap-client-{flavour}")))
        .args(["-B", "5"])
        .args(args)
        .output()
        .expect("coap-client runs");
    common::printed(&out)
}

/// True when coap-client printed a CoAP answer with `code` ("4.03"), not
/// a log line that happens to contain those characters.
fn answered(out: &str, code: &str) -> bool {
    out.lines().any(|l| l.starts_with(code))
}

/// True when coap-client printed any CoAP error answer.
fn any_answer(out: &str) -> bool {
    out.lines()
        .any(|l| l.len() > 4 && l.as_bytes()[1] == b'.' && l.as_bytes()[0].is_ascii_digit())
}

fn cli(gw: &Gateway, args: &[&str]) {
    let out = gw.cli(args);
    assert!(
        out.status.success(),
        "lwm2m-gw {args:?}: {}",
        common::printed(&out)
    );
}

fn add_psk(gw: &Gateway, ep: &str, identity: &str) {
    cli(
        gw,
        &[
            "device",
            "add",
            ep,
            "--psk-identity",
            identity,
            "--psk-key",
            KEY_HEX,
        ],
    );
}

fn url(gw: &Gateway, path_query: &str) -> String {
    format!("coaps://127.0.0.1:{}/{path_query}", gw.dtls.unwrap().port())
}

fn register_url(gw: &Gateway, ep: &str) -> String {
    url(gw, &format!("rd?ep={ep}&lt=120&b=U"))
}

/// The registration id the gateway logged for `ep`.
fn registration_id(gw: &Gateway, ep: &str) -> String {
    let needle = format!("ep={ep} registered id=");
    common::log_lines(gw)
        .iter()
        .rev()
        .find_map(|l| {
            l.split(&needle)
                .nth(1)
                .map(|r| r.split(' ').next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("{ep} never registered"))
}

fn strict() -> String {
    config(
        "127.0.0.1",
        "[registration]\nallow_unknown_endpoints = false",
    )
}

#[test]
fn psk_clients_on_gnutls_and_openssl_register_their_endpoint() {
    let dir = TempDir::new("dtls-psk");
    let gw = Gateway::start(&dir.0, &strict());
    for flavour in ["gnutls", "openssl"] {
        let ep = format!("psk-{flavour}");
        let id = format!("id-{flavour}");
        add_psk(&gw, &ep, &id);
        let out = coap_client(
            flavour,
            &[
                "-m",
                "post",
                "-u",
                &id,
                "-k",
                KEY_TEXT,
                "-t",
                "40",
                "-e",
                "</1/0>,</3/0>",
                &register_url(&gw, &ep),
            ],
        );
        assert!(
            gw.wait_log(&format!("ep={ep} registered"), Duration::from_secs(5)),
            "{flavour}: {out}"
        );
        assert!(gw.log_contains(&format!("ep={ep} peer=")), "session logged");
    }
}

#[test]
fn wrong_psk_key_and_unknown_identity_are_refused() {
    let dir = TempDir::new("dtls-psk-bad");
    let gw = Gateway::start(&dir.0, &strict());
    add_psk(&gw, "dev", "dev-id");
    for flavour in ["gnutls", "openssl"] {
        let wrong_key = coap_client(
            flavour,
            &[
                "-m",
                "post",
                "-u",
                "dev-id",
                "-k",
                "not-the-right-k",
                &register_url(&gw, "dev"),
            ],
        );
        let unknown = coap_client(
            flavour,
            &[
                "-m",
                "post",
                "-u",
                "who-am-i",
                "-k",
                KEY_TEXT,
                &register_url(&gw, "dev"),
            ],
        );
        assert!(
            !any_answer(&wrong_key) && !any_answer(&unknown),
            "no CoAP answer may come back: {wrong_key} {unknown}"
        );
    }
    assert!(gw.wait_log(
        "(PSK identity \"dev-id\"): bad record MAC",
        Duration::from_secs(5)
    ));
    assert!(gw.log_contains("(PSK identity \"who-am-i\"): unknown PSK identity"));
    assert!(!gw.log_contains("ep=dev registered"));
}

/// Older tinydtls-based devices send a ClientHello with neither the RFC 5746
/// renegotiation_info extension nor its SCSV. GnuTLS's
/// `%DISABLE_SAFE_RENEGOTIATION` omits both, which its own report confirms:
/// "safe renegotiation" is then missing from the negotiated options.
#[test]
fn a_client_hello_without_renegotiation_info_completes_the_psk_handshake() {
    let dir = TempDir::new("dtls-no-reneg");
    let gw = Gateway::start(&dir.0, &strict());
    add_psk(&gw, "old-dev", "old-id");
    let handshake = |priority_tail: &str| {
        let out = Command::new(tool("gnutls-cli"))
            .args(["--udp", "--pskusername", "old-id", "--pskkey", KEY_HEX])
            .arg(format!(
                "--priority=NORMAL:-VERS-ALL:+VERS-DTLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:+AES-128-CCM-8{priority_tail}"
            ))
            .args(["-p", &gw.dtls.unwrap().port().to_string(), "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("gnutls-cli runs");
        common::printed(&out)
    };
    let without = handshake(":%DISABLE_SAFE_RENEGOTIATION");
    assert!(without.contains("Handshake was completed"), "{without}");
    let options = without
        .lines()
        .find(|l| l.starts_with("- Options:"))
        .unwrap_or_else(|| panic!("no options line: {without}"));
    assert!(!options.contains("safe renegotiation"), "{options}");
    // The same client with the extension, so the check above can tell.
    let with = handshake("");
    assert!(with.contains("safe renegotiation"), "{with}");
    let opened = common::log_lines(&gw)
        .iter()
        .filter(|l| l.contains("ep=old-dev peer=") && l.contains("DTLS session open (PSK"))
        .count();
    assert_eq!(opened, 2, "both handshakes open a session");
}

/// A CA, a device certificate it signed (CN = `ep`), and a self-signed
/// one with the same CN; EC P-256 keys in "EC PRIVATE KEY" form.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, ep: &str) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let sh = format!(
            "set -e; cd {d}
             openssl ecparam -name prime256v1 -genkey -noout -out ca.key
             openssl req -x509 -new -key ca.key -subj '/CN=Site CA' -days 30 -out ca.pem
             openssl ecparam -name prime256v1 -genkey -noout -out dev.key
             openssl req -new -key dev.key -subj '/CN={ep}' -out dev.csr
             openssl x509 -req -in dev.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out dev.pem
             openssl ecparam -name prime256v1 -genkey -noout -out rogue.key
             openssl req -x509 -new -key rogue.key -subj '/CN={ep}' -days 30 -out rogue.pem",
            d = dir.display()
        );
        let out = Command::new("sh").args(["-c", &sh]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Registers `ep` with coap-client presenting certificate `name`
    /// (`dev` or `rogue`); what coap-client printed.
    fn register(&self, flavour: &str, name: &str, gw: &Gateway, ep: &str) -> String {
        let (cert, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        coap_client(
            flavour,
            &["-m", "post", "-c", &cert, "-j", &key, &register_url(gw, ep)],
        )
    }
}

#[test]
fn x509_clients_chained_to_the_trust_store_register_by_common_name() {
    let dir = TempDir::new("dtls-x509");
    let pki = Pki::new(&dir.0, "x509-dev");
    let cfg = format!(
        "{}\n[dtls]\nca_file = \"{}\"\n",
        strict(),
        pki.path("ca.pem")
    );
    let gw = Gateway::start(&dir.0, &cfg);
    cli(&gw, &["device", "add", "x509-dev", "--x509"]);
    for flavour in ["gnutls", "openssl"] {
        let out = pki.register(flavour, "dev", &gw, "x509-dev");
        assert!(
            gw.wait_log("ep=x509-dev registered", Duration::from_secs(5)),
            "{flavour}: {out}"
        );
        assert!(gw.log_contains("ep=x509-dev peer=127.0.0.1"));
    }
    // The certificate is good, but names another endpoint.
    let out = pki.register("gnutls", "dev", &gw, "someone-else");
    assert!(answered(&out, "4.03"), "{out}");
    // A self-signed certificate with the right CN is not trusted.
    let registered = common::log_lines(&gw)
        .iter()
        .filter(|l| l.contains("ep=x509-dev registered"))
        .count();
    for flavour in ["gnutls", "openssl"] {
        let out = pki.register(flavour, "rogue", &gw, "x509-dev");
        assert!(!any_answer(&out), "{flavour}: {out}");
    }
    assert!(gw.wait_log("DTLS handshake failed", Duration::from_secs(5)));
    let after = common::log_lines(&gw)
        .iter()
        .filter(|l| l.contains("ep=x509-dev registered"))
        .count();
    assert_eq!(registered, after, "the rogue certificate registered");
}

#[test]
fn a_stored_certificate_is_trusted_as_itself_and_others_are_denied() {
    let dir = TempDir::new("dtls-pinned");
    let pki = Pki::new(&dir.0, "pinned-dev");
    // No trust store: only stored certificates can pass.
    let gw = Gateway::start(&dir.0, &strict());
    cli(
        &gw,
        &[
            "device",
            "add",
            "pinned-dev",
            "--x509-cert",
            &pki.path("rogue.pem"),
        ],
    );
    for flavour in ["gnutls", "openssl"] {
        pki.register(flavour, "rogue", &gw, "pinned-dev");
        assert!(
            gw.wait_log("ep=pinned-dev registered", Duration::from_secs(5)),
            "{flavour}"
        );
    }
    let out = pki.register("gnutls", "dev", &gw, "pinned-dev");
    assert!(
        out.contains("Access was denied") || out.contains("'49'"),
        "{out}"
    );
    assert!(gw.wait_log(
        "DTLS handshake refused: client certificate not trusted",
        Duration::from_secs(5)
    ));
}

/// The base64 SubjectPublicKeyInfo of a private key file, as devices are
/// provisioned with it.
fn public_key_base64(key: &str) -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("openssl ec -in {key} -pubout -outform DER 2>/dev/null | base64 -w0"),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn raw_public_key_clients_register_with_the_key_stored_for_their_endpoint() {
    let dir = TempDir::new("dtls-rpk");
    let pki = Pki::new(&dir.0, "rpk-dev");
    let gw = Gateway::start(&dir.0, &strict());
    cli(
        &gw,
        &[
            "device",
            "add",
            "rpk-dev",
            "--rpk-key",
            &public_key_base64(&pki.path("dev.key")),
        ],
    );
    let rpk = |key: &str, ep: &str| {
        coap_client(
            "gnutls",
            &["-m", "post", "-M", &pki.path(key), &register_url(&gw, ep)],
        )
    };
    let out = rpk("dev.key", "rpk-dev");
    assert!(
        gw.wait_log("ep=rpk-dev registered", Duration::from_secs(5)),
        "{out}"
    );
    assert!(gw.log_contains("ep=rpk-dev peer=127.0.0.1"));
    assert!(gw.log_contains("(RPK, TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8)"));
    // The session proves rpk-dev: it cannot register another endpoint.
    let out = rpk("dev.key", "someone-else");
    assert!(answered(&out, "4.03"), "{out}");
    // A key nobody provisioned.
    let out = rpk("rogue.key", "rpk-dev");
    assert!(!any_answer(&out), "{out}");
    assert!(gw.wait_log(
        "raw-key handshake failed: raw public key not provisioned",
        Duration::from_secs(5)
    ));
    let registered = common::log_lines(&gw)
        .iter()
        .filter(|l| l.contains("ep=rpk-dev registered"))
        .count();
    assert_eq!(registered, 1);
}

#[test]
fn the_cli_prints_the_server_key_the_gateway_then_uses() {
    let dir = TempDir::new("dtls-key");
    let out = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(["server-key", "--data-dir"])
        .arg(dir.0.join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        key.starts_with("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"),
        "P-256: {key}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("server-key.pem"));
    let gw = Gateway::start(&dir.0, &strict());
    assert!(gw.log_contains(&key), "the gateway presents another key");
    assert!(!gw.log_contains("DTLS: made"), "the key was made twice");
}

#[test]
fn hijack_attempts_over_plain_coap_and_foreign_sessions_are_refused() {
    let dir = TempDir::new("dtls-hijack");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    add_psk(&gw, "dev-a", "id-a");
    add_psk(&gw, "dev-b", "id-b");
    let as_a = |path_query: String, method: &str| {
        coap_client(
            "gnutls",
            &["-m", method, "-u", "id-a", "-k", KEY_TEXT, &path_query],
        )
    };
    // NoSec registration of an endpoint that has a PSK credential.
    let plain = Command::new(tool("coap-client-notls"))
        .args(["-B", "5", "-m", "post"])
        .arg(format!(
            "coap://127.0.0.1:{}/rd?ep=dev-a&lt=120",
            gw.addr.port()
        ))
        .output()
        .unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout).to_string()
        + &String::from_utf8_lossy(&plain.stderr);
    assert!(answered(&plain, "4.03"), "{plain}");
    // A's session registering B.
    let out = as_a(register_url(&gw, "dev-b"), "post");
    assert!(answered(&out, "4.03"), "{out}");
    // B registers over its own session; A may neither update nor
    // de-register that registration, and neither may plain CoAP.
    coap_client(
        "openssl",
        &[
            "-m",
            "post",
            "-u",
            "id-b",
            "-k",
            KEY_TEXT,
            &register_url(&gw, "dev-b"),
        ],
    );
    assert!(gw.wait_log("ep=dev-b registered", Duration::from_secs(5)));
    let id_b = registration_id(&gw, "dev-b");
    let out = as_a(url(&gw, &format!("rd/{id_b}?lt=300")), "post");
    assert!(answered(&out, "4.03"), "update: {out}");
    let out = as_a(url(&gw, &format!("rd/{id_b}")), "delete");
    assert!(answered(&out, "4.03"), "de-register: {out}");
    let plain = Command::new(tool("coap-client-notls"))
        .args(["-B", "5", "-m", "delete"])
        .arg(format!("coap://127.0.0.1:{}/rd/{id_b}", gw.addr.port()))
        .output()
        .unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout).to_string()
        + &String::from_utf8_lossy(&plain.stderr);
    assert!(answered(&plain, "4.03"), "plain de-register: {plain}");
    let mut c = gw.control();
    let devices = c
        .call(json!({"op": "devices"}).as_object().unwrap().clone())
        .unwrap();
    assert!(devices.to_string().contains("dev-b"), "{devices}");
}

#[test]
fn simulated_devices_register_read_and_observe_over_dtls() {
    let dir = TempDir::new("dtls-sim");
    let gw = Gateway::start(&dir.0, &strict());
    let key = "00112233445566778899aabbccddeeff";
    for i in 0..3 {
        cli(
            &gw,
            &[
                "device",
                "add",
                &format!("dsim{i}"),
                "--psk-identity",
                &format!("dsim{i}"),
                "--psk-key",
                key,
            ],
        );
    }
    let _sim = Sim::start_with(
        gw.dtls.unwrap(),
        3,
        "dsim",
        "senml-cbor",
        &["--psk", key, "--notify-ms", "200"],
    );
    let mut c = gw.control();
    let r = rpc(&mut c, "dsim1", "Read", json!({"id": "/3/0/0"}));
    assert_eq!(r["result"], "CONTENT", "{r}");
    assert_eq!(r["value"], "lwm2m-gw simulator", "{r}");
    let mut watch = Watch::start(&gw, Some("dsim2"));
    let r = rpc(&mut c, "dsim2", "Observe", json!({"id": "/3303/0/5700"}));
    assert_eq!(r["result"], "CONTENT", "{r}");
    let reports = watch.collect(Duration::from_secs(2));
    assert!(reports.len() >= 3, "notifications over DTLS: {reports:?}");
    let s = c
        .call(json!({"op": "stats"}).as_object().unwrap().clone())
        .unwrap();
    assert_eq!(s["value"]["dtls"]["sessions"], 3, "{s}");
}
