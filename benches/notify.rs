//! Notifications decoded per second through the real UDP socket, with
//! 10 000 observed simulated devices, and the gateway's memory while it runs.
//!
//! Run: `cargo bench --bench notify` (options after `--`: `--devices N
//! --interval-ms MS --seconds S --con 1`). For each format (SenML CBOR, then
//! TLV) it starts the gateway and `lwm2m-gw-sim`, observes one object
//! instance per device, lets every device notify every MS milliseconds, and
//! samples the gateway's counters and RSS once a second.

mod common;

use std::time::{Duration, Instant};

fn run(format: &str, devices: usize, interval_ms: usize, seconds: usize, con: bool) {
    let dir = common::bench_dir(&format!("notify-bench-{format}"));
    let (_gw, addr, sock) = common::gateway_with_socket(&dir);
    let (server, n) = (addr.to_string(), interval_ms.to_string());
    let mut args = vec!["--server", &server, "--prefix", "n-", "--format", format];
    args.extend(["--notify-ms", &n]);
    if con {
        args.push("--con");
    }
    let (_sim, _) = common::start_sim(&args, devices);
    let t = Instant::now();
    common::observe_all(&sock, "n-", devices, 256);
    println!(
        "{format}: {devices} devices registered and observed in {} ms",
        t.elapsed().as_millis()
    );
    // Let the rate settle, then sample once a second.
    std::thread::sleep(Duration::from_secs(2));
    let mut rates = Vec::new();
    let mut rss = Vec::new();
    let mut last = common::stats(&sock);
    let mut t_last = Instant::now();
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        let now = common::stats(&sock);
        let dt = t_last.elapsed().as_secs_f64();
        t_last = Instant::now();
        let n = now["notifications"].as_u64().unwrap() - last["notifications"].as_u64().unwrap();
        rates.push(n as f64 / dt);
        rss.push(now["rssKb"].as_u64().unwrap());
        last = now;
    }
    let mut sorted = rates.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{format}: per-second rates {:?}",
        rates.iter().map(|r| *r as u64).collect::<Vec<_>>()
    );
    println!(
        "{format}: median {:.0} notifications/s decoded ({} notifications every {interval_ms} ms from {devices} devices; target >= 100000)",
        sorted[sorted.len() / 2],
        if con { "CON" } else { "NON" },
    );
    println!(
        "{format}: gateway RSS first/last/max {} / {} / {} KiB; readings {}, undecodable {}, stale {}, reports dropped {}",
        rss[0],
        rss[rss.len() - 1],
        rss.iter().max().unwrap(),
        last["readings"],
        last["undecodable"],
        last["staleNotifications"],
        last["reportsDropped"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let devices = common::arg("--devices", 10_000);
    let interval = common::arg("--interval-ms", 50);
    let seconds = common::arg("--seconds", 10);
    let con = common::arg("--con", 0) == 1;
    for format in ["senml-cbor", "tlv"] {
        run(format, devices, interval, seconds, con);
    }
}
