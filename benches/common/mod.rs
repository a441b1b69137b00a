//! Shared by the benchmarks: options and the gateway process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process killed on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway's counters, through `{"op":"stats"}` on its control socket.
pub fn stats(sock: &Path) -> serde_json::Value {
    use std::io::Write;
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(b"{\"id\":1,\"op\":\"stats\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str::<serde_json::Value>(&line).unwrap()["value"].clone()
}

/// The release gateway on `<dir>/gw.toml` with its control socket in
/// `dir`, killed on drop; its CoAP address and control socket.
pub fn gateway_with_socket(dir: &Path) -> (Kill, SocketAddr, std::path::PathBuf) {
    let sock = dir.join("control.sock");
    let (gw, addr) = start_gateway(
        dir,
        &["--control-socket".as_ref(), sock.as_os_str()],
        "warn,lwm2m_gw::runtime=info",
    );
    (Kill(gw), addr, sock)
}

/// A fresh directory for one benchmark run, holding a `gw.toml` that binds
/// the gateway to loopback on an OS-chosen port.
pub fn bench_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lwm2m-gw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gw.toml"),
        "[coap]\nbind = \"127.0.0.1\"\nport = 0\n[dtls]\nport = 0\n",
    )
    .unwrap();
    dir
}

/// Starts `lwm2m-gw-sim` with `args` and waits until its `count` devices
/// registered; returns it and its first line.
pub fn start_sim(args: &[&str], count: usize) -> (Kill, String) {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw-sim"))
        .args(args)
        .args(["--count", &count.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start simulator");
    let mut first = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains(&format!("{0}/{0}", count)), "{first}");
    (Kill(sim), first)
}

/// A process's resident set size in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The value of `--name N` on the command line, else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .rev()
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// Starts the release gateway with `<dir>/gw.toml` and the data under
/// `<dir>/data`, plus `extra` arguments; returns it and its CoAP address.
pub fn start_gateway(
    dir: &Path,
    extra: &[&std::ffi::OsStr],
    rust_log: &str,
) -> (Child, SocketAddr) {
    let (child, coap, _) = start_gateway_dtls(dir, extra, rust_log);
    (child, coap)
}

/// Like `start_gateway`, also with the DTLS address (when `rust_log` lets
/// the runtime's start-up lines through).
pub fn start_gateway_dtls(
    dir: &Path,
    extra: &[&std::ffi::OsStr],
    rust_log: &str,
) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("gw.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .env("RUST_LOG", rust_log)
        .env_remove("RUNTIME_DIRECTORY")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gateway");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut dtls = None;
    let addr: SocketAddr = loop {
        let line = lines.next().expect("gateway log").unwrap();
        if let Some(rest) = line.split("CoAP over DTLS on udp ").nth(1) {
            dtls = rest.split(' ').next().and_then(|a| a.parse().ok());
        }
        if let Some(rest) = line.split("listening on CoAP udp ").nth(1) {
            break rest.split([' ', ';']).next().unwrap().parse().unwrap();
        }
    };
    // Keep reading so the gateway never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr, dtls)
}
