//! The web console under load: 10 000 observed simulated devices sending
//! 1 000 notifications/s in all; the gateway's CPU and RSS with the
//! console closed, then open (an event stream of every report, and the
//! device list loaded in headless Chromium), the event stream's latency,
//! and the page's load time.
//!
//! Run: `cargo bench --bench console` (options after `--`: `--devices N
//! --interval-ms MS` each device's notification interval, `--seconds S`
//! per phase, `--loads N` page loads). The page load needs Debian's
//! chromium and chromium-driver and the .venv's selenium, which
//! `scripts/setup.sh --test` installs; without them that line says so.
//!
//! Latency is from the gateway's receive stamp on each value (its `ts`) to
//! the moment this process reads the event: the loop, the watch channel,
//! the console thread and HTTP, on the same clock.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// CPU seconds (user + system) the process has used.
fn cpu_s(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = s.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// One request on a fresh connection; the status line, headers, body.
fn get(addr: SocketAddr, path: &str, cookie: &str) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    let status = head.lines().next().unwrap_or("").to_string();
    (status, head, raw[at + 4..].to_vec())
}

/// What a phase measured.
struct Phase {
    cpu_pct: f64,
    rss_kib: u64,
    notifications_per_s: f64,
}

fn measure(pid: u32, sock: &Path, seconds: u64) -> Phase {
    let before = common::stats(sock)["notifications"].as_u64().unwrap();
    let (c0, t0) = (cpu_s(pid), Instant::now());
    let mut rss = 0;
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        rss = rss.max(common::rss_kib(pid));
    }
    let dt = t0.elapsed().as_secs_f64();
    let after = common::stats(sock)["notifications"].as_u64().unwrap();
    Phase {
        cpu_pct: (cpu_s(pid) - c0) / dt * 100.0,
        rss_kib: rss,
        notifications_per_s: (after - before) as f64 / dt,
    }
}

/// Latency of one report line (the gateway's newest value stamp to now),
/// if it carries values.
fn latency(data: &str) -> Option<u64> {
    let now = unix_ms();
    let v = serde_json::from_str::<serde_json::Value>(data).ok()?;
    let ts = v["values"]
        .as_array()?
        .iter()
        .filter_map(|x| x["ts"].as_u64())
        .max()?;
    Some(now.saturating_sub(ts))
}

/// Reads report lines from `r` until `stop`, keeping their latencies;
/// `strip` takes a line's JSON out of its framing.
fn follow(
    mut r: impl BufRead,
    stop: &AtomicBool,
    lat: &Mutex<Vec<u64>>,
    strip: impl Fn(&str) -> Option<&str>,
) {
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        if let Some(l) = strip(line.trim_end()).and_then(latency) {
            lat.lock().unwrap().push(l);
        }
    }
}

fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn main() {
    let devices = common::arg("--devices", 10_000);
    let interval = common::arg("--interval-ms", 10_000);
    let seconds = common::arg("--seconds", 15) as u64;
    let loads = common::arg("--loads", 5);

    let dir = common::bench_dir("console");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = std::fs::read_to_string(dir.join("gw.toml")).unwrap();
    // No credentials on loopback: the page opens its session itself, so
    // no login is in the timings.
    std::fs::write(
        dir.join("gw.toml"),
        format!("{toml}[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let (gw, addr, sock) = common::gateway_with_socket(&dir);
    let pid = gw.0.id();
    let console: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (server, n) = (addr.to_string(), interval.to_string());
    let args = [
        "--server",
        &server,
        "--prefix",
        "c-",
        "--format",
        "senml-cbor",
        "--notify-ms",
        &n,
    ];
    let (_sim, _) = common::start_sim(&args, devices);
    let t = Instant::now();
    common::observe_all(&sock, "c-", devices, 256);
    println!(
        "{devices} devices registered and observed in {} ms, each notifying every {interval} ms",
        t.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(3));

    let closed = measure(pid, &sock, seconds);

    // The console opens: a session, then every report as an event.
    let (_, head, _) = get(console, "/api/session", "");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let t = Instant::now();
    let (status, _, body) = get(console, "/api/devices", &cookie);
    let list_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(status.contains("200"), "{status}");

    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader = {
        let (stop, lat, cookie) = (stop.clone(), lat.clone(), cookie.clone());
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(console).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            write!(
                s,
                "GET /api/events HTTP/1.1\r\nHost: {console}\r\nCookie: {cookie}\r\n\r\n"
            )
            .unwrap();
            follow(BufReader::new(s), &stop, &lat, |l| l.strip_prefix("data: "));
        })
    };
    // The same reports on the control socket: the path without HTTP.
    let ctl_lat = Arc::new(Mutex::new(Vec::<u64>::new()));
    let ctl_reader = {
        let (stop, lat, sock) = (stop.clone(), ctl_lat.clone(), sock.clone());
        std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(b"{\"id\":1,\"op\":\"watch\"}\n").unwrap();
            follow(BufReader::new(s), &stop, &lat, |l: &str| Some(l));
        })
    };
    // Page loads run while the stream is open and devices notify.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let browser = python.exists() && Path::new("/usr/bin/chromedriver").exists();
    let script = root.join("tests/browser/page_load.py");
    let loader = std::thread::spawn(move || {
        if !browser {
            return "skipped (chromium, chromedriver or .venv missing: scripts/setup.sh --test)"
                .to_string();
        }
        let out = std::process::Command::new(&python)
            .arg(script)
            .args(["--url", &format!("http://{console}/")])
            .args(["--devices", &devices.to_string()])
            .args(["--runs", &loads.to_string()])
            .output()
            .unwrap();
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim())
        }
    });
    let open = measure(pid, &sock, seconds);
    let page = loader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    ctl_reader.join().unwrap();
    let mut lat = lat.lock().unwrap().clone();
    lat.sort();
    let mut ctl_lat = ctl_lat.lock().unwrap().clone();
    ctl_lat.sort();

    println!(
        "console closed: gateway CPU {:.1}% of a core, RSS max {} KiB, {:.0} notifications/s",
        closed.cpu_pct, closed.rss_kib, closed.notifications_per_s
    );
    println!(
        "console open:   gateway CPU {:.1}% of a core, RSS max {} KiB, {:.0} notifications/s (CPU ratio {:.2}, RSS ratio {:.2})",
        open.cpu_pct,
        open.rss_kib,
        open.notifications_per_s,
        open.cpu_pct / closed.cpu_pct,
        open.rss_kib as f64 / closed.rss_kib as f64
    );
    println!(
        "event stream: {} events with values, latency p50 {} ms, p99 {} ms, max {} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    println!(
        "control socket watch, same time: {} reports, latency p50 {} ms, p99 {} ms, max {} ms",
        ctl_lat.len(),
        pct(&ctl_lat, 0.5),
        pct(&ctl_lat, 0.99),
        ctl_lat.last().copied().unwrap_or(0)
    );
    println!(
        "GET /api/devices: {} KiB for {devices} devices in {list_ms:.0} ms",
        body.len() / 1024
    );
    println!("device list in Chromium, navigation to drawn ({loads} loads): {page}");
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
