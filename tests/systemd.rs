//! The systemd integration: the unit file passes `systemd-analyze verify`,
//! the gateway says READY=1 once it serves and pings the watchdog, and the
//! production configuration is valid and admits only provisioned devices.

mod common;

use common::{tool, TempDir};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Runs `systemd-analyze verify` on the unit, with `drop_in` (a board's
/// `board.conf`) beside it where systemd looks for drop-ins. verify exits 0
/// even for an unknown key, but names the file it came from, so any remark
/// naming the unit or its drop-in directory fails.
fn verify_unit(name: &str, drop_in: Option<&Path>) {
    let dir = TempDir::new(name);
    // verify insists that ExecStart exists: point it at the built binary.
    let unit = std::fs::read_to_string(repo("systemd/lwm2m-gw.service")).unwrap();
    let unit = unit.replace("/usr/bin/lwm2m-gw", env!("CARGO_BIN_EXE_lwm2m-gw"));
    let path = dir.0.join("lwm2m-gw.service");
    std::fs::write(&path, unit).unwrap();
    if let Some(conf) = drop_in {
        let d = dir.0.join("lwm2m-gw.service.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::copy(conf, d.join("board.conf")).unwrap();
    }
    // The trailing colon keeps systemd's own unit directories as well.
    let out = Command::new(tool("systemd-analyze"))
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.0.display()))
        .output()
        .unwrap();
    let text = common::printed(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("lwm2m-gw.service"),
        "verify has remarks on the unit or {drop_in:?}: {text}"
    );
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    verify_unit("unit", None);
}

#[test]
fn every_board_drop_in_passes_systemd_analyze_verify() {
    for entry in std::fs::read_dir(repo("boards")).unwrap() {
        let conf = entry.unwrap().path().join("lwm2m-gw.service.d/board.conf");
        verify_unit("board-unit", Some(&conf));
    }
}

#[test]
fn ready_is_sent_once_serving_and_the_watchdog_is_pinged() {
    let dir = TempDir::new("notify");
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::fs::write(
        dir.0.join("gw.toml"),
        "[coap]\nbind = \"127.0.0.1\"\nport = 0\n[dtls]\nport = 0\n[bootstrap]\nport = 0\ndtls_port = 0\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(["serve", "--config"])
        .arg(dir.0.join("gw.toml"))
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env_remove("RUNTIME_DIRECTORY")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within 10 s");
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving CoAP on 127.0.0.1:"),
        "{ready}"
    );
    // By then the CoAP socket answers: a ping gets its Reset.
    let addr = ready
        .split("serving CoAP on ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(&[0x40, 0x00, 0x12, 0x34], addr).unwrap();
    let mut r = [0u8; 16];
    let (rn, _) = udp
        .recv_from(&mut r)
        .expect("the CoAP socket answers after READY");
    assert_eq!((rn, r[0] >> 4 & 0x3), (4, 3), "a Reset to the CoAP ping");
    // Pings every 100 ms (half of 200 ms).
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1000) {
        let n = sock.recv(&mut buf).unwrap();
        if &buf[..n] == b"WATCHDOG=1" {
            pings += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // About 10; a loaded machine may delay some, and none may flood.
    assert!((3..=30).contains(&pings), "{pings} watchdog pings in 1 s");
}

#[test]
fn the_production_config_is_valid_and_refuses_unknown_endpoints() {
    let cfg = lwm2m_gw::config::Config::from_file(&repo("systemd/lwm2m-gw.toml")).unwrap();
    assert!(!cfg.registration.allow_unknown_endpoints);
    assert_eq!(cfg.models.dir, Path::new("/usr/share/lwm2m-gw/models"));
}

#[test]
fn every_board_config_is_valid_and_refuses_unknown_endpoints() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo("boards")).unwrap() {
        let dir = entry.unwrap().path();
        let cfg = lwm2m_gw::config::Config::from_file(&dir.join("lwm2m-gw.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(
            !cfg.registration.allow_unknown_endpoints,
            "{}",
            dir.display()
        );
        let dropin = std::fs::read_to_string(dir.join("lwm2m-gw.service.d/board.conf")).unwrap();
        assert!(dropin.contains("MemoryMax="), "{}", dir.display());
        n += 1;
    }
    assert!(
        n >= 3,
        "boards for rpi3 (armv7), rpi4/5 and a generic aarch64 board"
    );
}
