//! The DTLS client matrix: one device per DTLS implementation that is not
//! the gateway's registers with a pre-shared key, is read through its
//! session, and is refused with a wrong key. OpenSSL, GnuTLS and wolfSSL
//! are Debian's libraries, Mbed TLS is python-mbedtls's, tinydtls is
//! DTLSSocket's under aiocoap (tests/peers/dtls_device.py drives them);
//! Mbed TLS with a minimum below TLS 1.1, whose first ClientHello carries
//! record version 254.0, is the simulator on the mbedtls crate. All are
//! installed by scripts/setup.sh --test.

mod common;

use common::{config, python, rpc, Gateway, TempDir};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const KEY: &str = "7365637265746b657930313233343536";
const WRONG: &str = "00112233445566778899aabbccddeeff";
/// Every stack of tests/peers/dtls_device.py.
const STACKS: [&str; 5] = ["openssl", "gnutls", "mbedtls", "tinydtls", "wolfssl"];

/// A peer process, killed on drop, with its stdout lines on a channel.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(cmd: &mut Command) -> Peer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("peer starts");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Peer { child, lines }
    }

    fn python(gw: &Gateway, stack: &str, ep: &str, key: &str) -> Peer {
        let dtls = gw.dtls.unwrap();
        Peer::spawn(
            Command::new(python())
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/peers/dtls_device.py"
                ))
                .args([stack, "127.0.0.1", &dtls.port().to_string(), ep, ep, key]),
        )
    }

    fn sim(gw: &Gateway, prefix: &str, key: &str) -> Peer {
        Peer::spawn(
            Command::new(env!("CARGO_BIN_EXE_lwm2m-gw-sim"))
                .args(["--server", &gw.dtls.unwrap().to_string()])
                .args(["--prefix", prefix, "--psk", key, "--dtls-min", "ssl3"]),
        )
    }

    /// The first line the peer printed, within `limit`.
    fn first_line(&self, limit: Duration) -> String {
        self.lines.recv_timeout(limit).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn add_psk(gw: &Gateway, ep: &str) {
    let out = gw.cli(&["device", "add", ep, "--psk-identity", ep, "--psk-key", KEY]);
    assert!(out.status.success(), "{}", common::printed(&out));
}

#[test]
fn psk_devices_on_five_dtls_stacks_register_are_read_and_a_wrong_key_is_refused() {
    let dir = TempDir::new("dtls-matrix");
    let gw = Gateway::start(
        &dir.0,
        &config(
            "127.0.0.1",
            "[registration]\nallow_unknown_endpoints = false",
        ),
    );
    let mut c = gw.control();
    // All at once: the gateway serves five handshakes side by side.
    let peers: Vec<(&str, String, Peer)> = STACKS
        .iter()
        .map(|&stack| {
            let ep = format!("m-{stack}");
            add_psk(&gw, &ep);
            let p = Peer::python(&gw, stack, &ep, KEY);
            (stack, ep, p)
        })
        .collect();
    for (stack, ep, p) in &peers {
        let line = p.first_line(Duration::from_secs(30));
        assert_eq!(line, "registered", "{stack}: {line}");
        let r = rpc(&mut c, ep, "Read", json!({"id": "/3/0/0"}));
        assert_eq!(r["result"], "CONTENT", "{stack}: {r}");
        assert_eq!(r["value"], format!("{stack} device"), "{stack}: {r}");
        let r = rpc(&mut c, ep, "Read", json!({"id": "/3/0/9"}));
        assert_eq!(r["value"], 87, "{stack}: {r}");
    }
    drop(peers);
    for stack in STACKS {
        let ep = format!("m-{stack}");
        let p = Peer::python(&gw, stack, &ep, WRONG);
        let line = p.first_line(Duration::from_secs(60));
        assert!(
            line.starts_with("failed:"),
            "{stack} with a wrong key: {line:?}"
        );
        assert!(
            gw.wait_log(
                &format!("(PSK identity \"{ep}\"): bad record MAC"),
                Duration::from_secs(5)
            ),
            "{stack}: the gateway logs the wrong key"
        );
    }
}

/// Mbed TLS 2.x writes its configured minimum version into the record
/// header of its first ClientHello: 254.0 for a minimum of SSL 3.0, as
/// devices on a widespread commercial LwM2M client send it. The receive
/// filter once dropped exactly this as junk.
#[test]
fn an_mbedtls_client_with_a_minimum_below_tls_1_1_registers_and_is_read() {
    let dir = TempDir::new("dtls-fe00");
    let gw = Gateway::start(
        &dir.0,
        &config(
            "127.0.0.1",
            "[registration]\nallow_unknown_endpoints = false",
        ),
    );
    add_psk(&gw, "old0");
    let sim = Peer::sim(&gw, "old", KEY);
    let line = sim.first_line(Duration::from_secs(20));
    assert!(line.contains("1/1 devices registered"), "{line:?}");
    let mut c = gw.control();
    let r = rpc(&mut c, "old0", "Read", json!({"id": "/3/0/0"}));
    assert_eq!(r["value"], "lwm2m-gw simulator", "{r}");
    let s = c
        .call(json!({"op": "stats"}).as_object().unwrap().clone())
        .unwrap();
    // Nothing dropped as junk, in the kernel's filter or after it.
    let udp = &s["value"]["udp"]["dtls"];
    assert_eq!(udp["junk"], 0, "{s}");
    assert!(
        matches!(udp["kernelDropped"].as_u64(), Some(0) | None),
        "{s}"
    );
    drop(sim);

    add_psk(&gw, "oldbad0");
    let bad = Peer::sim(&gw, "oldbad", WRONG);
    let _ = bad.first_line(Duration::from_secs(20));
    assert!(gw.wait_log(
        "(PSK identity \"oldbad0\"): bad record MAC",
        Duration::from_secs(5)
    ));
    assert!(!gw.log_contains("ep=oldbad0 registered"));
}
