//! Registrations per second through the real server over loopback UDP, and
//! the server's RSS growth per stored registration.
//!
//! Run: `cargo bench --bench registrations` (options after `--`:
//! `--rounds N --per-round N --clients N --window N`).

mod common;

use common::load;
use std::time::{Duration, Instant};

struct Opts {
    rounds: usize,
    per_round: usize,
    clients: usize,
    window: usize,
}

fn opts() -> Opts {
    Opts {
        rounds: common::arg("--rounds", 5),
        per_round: common::arg("--per-round", 10_000),
        clients: common::arg("--clients", 4),
        window: common::arg("--window", 64),
    }
}

fn main() {
    let o = opts();
    let dir = std::env::temp_dir().join(format!("lwm2m-gw-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Extra gateway settings for experiments, e.g. BENCH_GW_CONFIG='[store]\ncache_mb = 4'.
    let extra = std::env::var("BENCH_GW_CONFIG")
        .unwrap_or_default()
        .replace("\\n", "\n");
    // DTLS on a free port too, unless the experiment sets it.
    let dtls = if extra.contains("[dtls]") {
        ""
    } else {
        "[dtls]\nport = 0\n"
    };
    let toml = format!("[coap]\nbind = \"127.0.0.1\"\nport = 0\n{dtls}{extra}\n");
    std::fs::write(dir.join("gw.toml"), toml).unwrap();
    let (mut child, addr) =
        common::start_gateway(&dir, &[], "info,lwm2m_gw::server=warn,sled=warn");
    let pid = child.id();
    // Warm-up: allocator, sled and the socket path, with endpoints that are then removed from the count.
    load(addr, "warm-", 2_000, o.window);
    std::thread::sleep(Duration::from_millis(700));
    let rss0 = common::rss_kib(pid);
    println!(
        "registrations: {} rounds of {} new endpoints, {} clients x {} in flight, server pid {pid}",
        o.rounds, o.per_round, o.clients, o.window
    );
    let mut rates = Vec::new();
    let mut rss_after_first = 0;
    for round in 0..o.rounds {
        let per_client = o.per_round / o.clients;
        let start = Instant::now();
        let handles: Vec<_> = (0..o.clients)
            .map(|c| {
                let prefix = format!("bench-r{round}-c{c}-");
                let w = o.window;
                std::thread::spawn(move || load(addr, &prefix, per_client, w))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = (per_client * o.clients) as f64 / secs;
        rates.push(rate);
        std::thread::sleep(Duration::from_millis(700));
        let rss = common::rss_kib(pid);
        if round == 0 {
            rss_after_first = rss;
        }
        println!(
            "round {}: {:>8.0} registrations/s  server RSS {} KiB",
            round + 1,
            rate,
            rss
        );
    }
    let mut sorted = rates.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = sorted[sorted.len() / 2];
    let total = o.per_round * o.rounds;
    let rss_end = common::rss_kib(pid);
    println!("median: {median:.0} registrations/s (target >= 20000)");
    println!(
        "RSS growth over the first {} registrations: {} KiB = {:.0} bytes/registration (target <= 2048)",
        o.per_round,
        rss_after_first.saturating_sub(rss0),
        (rss_after_first.saturating_sub(rss0) * 1024) as f64 / o.per_round as f64
    );
    println!(
        "RSS growth over all {total} registrations: {} KiB = {:.0} bytes/registration; RSS {rss0} -> {rss_end} KiB",
        rss_end.saturating_sub(rss0),
        (rss_end.saturating_sub(rss0) * 1024) as f64 / total as f64
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
