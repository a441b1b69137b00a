//! Floods at line rate while a real device is served: random datagrams to
//! the CoAP and DTLS ports and a unique-endpoint Register flood, with RPC
//! Reads to one simulated device timed before and during the flood.
//!
//! Run: `cargo bench --bench flood` (options after `--`: `--seconds N`
//! flood length, `--rpcs N` Reads per phase, `--random N` random senders
//! to the CoAP port, `--dtls N` to the DTLS port, `--register N` Register
//! flooders, `--max-registrations N`, `--flooder-nice N`).
//!
//! The flooders run at nice 19 by default: on a site they are other
//! machines, so they must not take the CPU the gateway, the device and the
//! operator's client would have there; they still get every cycle those
//! leave. `--flooder-nice 0` measures the worse case of a flood from the
//! gateway's own board.
//! Prints the Reads' p50/p99 idle and under flood with their ratio (the
//! goal is a p99 ratio <= 10), what each flooder sent, the gateway's peak
//! RSS, its registrations against the cap, and its drop counters.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads /3/0/9 of `ep` one at a time, `gap` apart; latencies of the
/// answered ones and how many failed. A Read unanswered after 10 s counts
/// as failed (its connection is dropped, so a late answer is not taken
/// for the next one's).
fn reads(sock: &Path, ep: &str, count: usize, gap: Duration) -> (Vec<Duration>, usize) {
    let connect = || {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (s.try_clone().unwrap(), BufReader::new(s))
    };
    let (mut w, mut r) = connect();
    let mut lat = Vec::with_capacity(count);
    let mut failed = 0;
    let mut line = String::new();
    for i in 0..count {
        let req = format!(
            "{{\"id\":{i},\"op\":\"rpc\",\"endpoint\":\"{ep}\",\"method\":\"Read\",\"params\":{{\"id\":\"/3/0/9\"}}}}\n"
        );
        let t = Instant::now();
        w.write_all(req.as_bytes()).unwrap();
        line.clear();
        match r.read_line(&mut line) {
            Ok(_) if line.contains("\"CONTENT\"") => {
                lat.push(t.elapsed());
                if std::env::var_os("FLOOD_TRACE").is_some() {
                    eprintln!("read {i} at {:?}: {:?}", t, t.elapsed());
                }
            }
            _ => {
                failed += 1;
                eprintln!("Read {i} failed after {:?}: {}", t.elapsed(), line.trim());
                (w, r) = connect();
            }
        }
        std::thread::sleep(gap);
    }
    lat.sort();
    (lat, failed)
}

fn pct(lat: &[Duration], p: f64) -> f64 {
    if lat.is_empty() {
        return f64::NAN;
    }
    lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3
}

/// What one flooder sends.
#[derive(Clone, Copy)]
enum Kind {
    Random,
    Register,
}

/// Sends until `stop`, at `nice`; returns the datagrams sent.
fn flooder(kind: Kind, to: SocketAddr, n: usize, nice: i32, stop: Arc<AtomicBool>) -> u64 {
    // SAFETY: on Linux, PRIO_PROCESS with 0 names the calling thread only.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(to).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut rng = fastrand::Rng::with_seed(n as u64 * 7919 + 1);
    let mut sent = 0u64;
    let mut buf = [0u8; 256];
    let mut sink = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let r = match kind {
                Kind::Random => {
                    let len = rng.usize(1..buf.len());
                    rng.fill(&mut buf[..len]);
                    sock.send(&buf[..len])
                }
                Kind::Register => {
                    let m = common::register_msg(rng.u16(..), &format!("flood{n}-{sent}"));
                    sock.send(&m)
                }
            };
            if r.is_ok() {
                sent += 1;
            }
        }
        // Answers (2.01, 5.03, RST) are read and thrown away so they do
        // not pile up in this socket.
        while sock.recv(&mut sink).is_ok() {}
    }
    sent
}

fn main() {
    let seconds = common::arg("--seconds", 15) as u64;
    let rpcs = common::arg("--rpcs", 400);
    let random = common::arg("--random", 2);
    let dtls_random = common::arg("--dtls", 1);
    let register = common::arg("--register", 1);
    let max_regs = common::arg("--max-registrations", 5000);
    let nice = common::arg("--flooder-nice", 19) as i32;

    let dir = common::bench_dir("flood");
    let toml = std::fs::read_to_string(dir.join("gw.toml")).unwrap();
    std::fs::write(
        dir.join("gw.toml"),
        format!("{toml}[registration]\nmax_registrations = {max_regs}\n"),
    )
    .unwrap();
    let sock = dir.join("control.sock");
    let (gw, coap, dtls) = common::start_gateway_dtls(
        &dir,
        &["--control-socket".as_ref(), sock.as_os_str()],
        "warn,lwm2m_gw::runtime=info",
    );
    let gw = common::Kill(gw);
    let dtls = dtls.expect("the gateway's DTLS port");
    let server = coap.to_string();
    let (_sim, _) = common::start_sim(&["--server", &server, "--prefix", "real-"], 1);

    // RSS sampled through both phases.
    let pid = gw.0.id();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(common::rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let gap = Duration::from_millis((seconds * 1000 / rpcs.max(1) as u64).max(1));
    reads(&sock, "real-0", 20, Duration::from_millis(5));
    let (idle, idle_failed) = reads(&sock, "real-0", rpcs, gap);
    let idle_rss = common::rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let mut floods = Vec::new();
    let mut n = 0;
    for (kind, to, count, name) in [
        (Kind::Random, coap, random, "random -> CoAP"),
        (Kind::Random, dtls, dtls_random, "random -> DTLS"),
        (Kind::Register, coap, register, "Register -> CoAP"),
    ] {
        for _ in 0..count {
            let stop = stop.clone();
            n += 1;
            let i = n;
            floods.push((
                name,
                std::thread::spawn(move || flooder(kind, to, i, nice, stop)),
            ));
        }
    }
    let started = Instant::now();
    let (flood, flood_failed) = reads(&sock, "real-0", rpcs, gap);
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let mut sent: Vec<(&str, u64)> = Vec::new();
    for (name, h) in floods {
        let s = h.join().unwrap();
        match sent.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += s,
            None => sent.push((name, s)),
        }
    }
    // Let the gateway drain what the flood left queued.
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let st = common::stats(&sock);

    println!(
        "idle:  {} Reads, p50 {:.2} ms, p99 {:.2} ms, {} failed",
        idle.len(),
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        idle_failed
    );
    println!(
        "flood: {} Reads, p50 {:.2} ms, p99 {:.2} ms, {} failed; p99 ratio {:.1} (goal <= 10), flooders at nice {nice}",
        flood.len(),
        pct(&flood, 0.5),
        pct(&flood, 0.99),
        flood_failed,
        pct(&flood, 0.99) / pct(&idle, 0.99)
    );
    for (name, s) in &sent {
        println!(
            "sent {name}: {s} datagrams in {secs:.1} s ({:.0}/s)",
            *s as f64 / secs
        );
    }
    println!(
        "gateway RSS: {idle_rss} KiB idle, peak {} KiB; registrations {} (cap {max_regs})",
        peak.load(Ordering::Relaxed),
        st["registrations"]
    );
    let mut counters = serde_json::Map::new();
    for k in [
        "malformedDatagrams",
        "overloadRefusals",
        "oversizeDatagrams",
    ] {
        if let Some(v) = st.get(k) {
            counters.insert(k.into(), v.clone());
        }
    }
    counters.insert("dtls".into(), st["dtls"].clone());
    if let Some(v) = st.get("udp") {
        counters.insert("udp".into(), v.clone());
    }
    println!("counters: {}", serde_json::Value::Object(counters));
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
