//! RPC Read round trips through the real sockets: control socket -> gateway
//! -> UDP -> simulated device -> back, with 1 000 simulated devices.
//!
//! Run: `cargo bench --bench rpc` (options after `--`: `--devices N
//! --single N --rounds N --per-round N --clients N --window N`).
//! Prints p50/p99 of single Reads one at a time and the median Reads/s of
//! several rounds with many in flight across devices.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

struct Opts {
    devices: usize,
    single: usize,
    rounds: usize,
    per_round: usize,
    clients: usize,
    window: usize,
}

fn opts() -> Opts {
    Opts {
        devices: common::arg("--devices", 1000),
        single: common::arg("--single", 5000),
        rounds: common::arg("--rounds", 5),
        per_round: common::arg("--per-round", 50_000),
        clients: common::arg("--clients", 2),
        window: common::arg("--window", 256),
    }
}

fn read_line(id: usize, ep: usize) -> String {
    format!(
        "{{\"id\":{id},\"op\":\"rpc\",\"endpoint\":\"b-{ep}\",\"method\":\"Read\",\"params\":{{\"id\":\"/3/0/9\"}}}}\n"
    )
}

fn check(line: &str) {
    assert!(line.contains("\"CONTENT\""), "unexpected answer {line}");
}

/// `count` Reads with `window` in flight on one connection; returns the time taken.
fn pipelined(sock: &Path, count: usize, window: usize, devices: usize, offset: usize) -> Duration {
    let s = UnixStream::connect(sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let start = Instant::now();
    let mut sent = 0;
    let mut buf = String::new();
    let mut line = String::new();
    for done in 0..count {
        buf.clear();
        while sent < count && sent - done < window {
            buf.push_str(&read_line(sent, (offset + sent) % devices));
            sent += 1;
        }
        if !buf.is_empty() {
            w.write_all(buf.as_bytes()).unwrap();
        }
        line.clear();
        r.read_line(&mut line).unwrap();
        check(&line);
    }
    start.elapsed()
}

fn main() {
    let o = opts();
    let dir = common::bench_dir("rpc-bench");
    let (gw, addr, sock) = common::gateway_with_socket(&dir);
    let server = addr.to_string();
    let args = [
        "--server",
        &server,
        "--prefix",
        "b-",
        "--format",
        "senml-cbor",
    ];
    let (_sim, first) = common::start_sim(&args, o.devices);
    print!("{first}");

    // Warm-up.
    pipelined(&sock, 5_000, 64, o.devices, 0);

    // Single Reads, one at a time, through one control connection.
    let s = UnixStream::connect(&sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut lat = Vec::with_capacity(o.single);
    let mut line = String::new();
    for i in 0..o.single {
        let req = read_line(i, i % o.devices);
        let t = Instant::now();
        w.write_all(req.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        lat.push(t.elapsed());
        check(&line);
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "single Read through the control socket, one at a time ({} Reads, {} devices): p50 {:.0} us, p99 {:.0} us, max {:.0} us (target p99 <= 1000 us)",
        o.single,
        o.devices,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        lat[lat.len() - 1].as_secs_f64() * 1e6
    );

    // Many in flight across devices.
    let mut rates = Vec::new();
    for round in 0..o.rounds {
        let per = o.per_round / o.clients;
        let start = Instant::now();
        let hs: Vec<_> = (0..o.clients)
            .map(|c| {
                let sock = sock.clone();
                let (w, d) = (o.window, o.devices);
                std::thread::spawn(move || pipelined(&sock, per, w, d, c * 7919))
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let rate = (per * o.clients) as f64 / start.elapsed().as_secs_f64();
        println!("round {}: {rate:>8.0} Reads/s", round + 1);
        rates.push(rate);
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "median: {:.0} Reads/s with {} connections x {} in flight over {} devices (target >= 20000)",
        rates[rates.len() / 2],
        o.clients,
        o.window,
        o.devices
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
