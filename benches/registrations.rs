//! Registrations per second through the real server over loopback UDP, and
//! the server's RSS growth per stored registration.
//!
//! Run: `cargo bench --bench registrations` (options after `--`:
//! `--rounds N --per-round N --clients N --window N`).

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
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

fn register_msg(mid: u16, ep: &str) -> Vec<u8> {
    // CON POST /rd?ep=..&lt=86400&lwm2m=1.1, Content-Format 40, typical object list.
    let mut m = vec![0x42, 0x02];
    m.extend_from_slice(&mid.to_be_bytes());
    m.extend_from_slice(&mid.to_be_bytes()); // 2-byte token
    m.extend_from_slice(&[0xb2, b'r', b'd']); // Uri-Path (11) "rd"
    m.push(0x11);
    m.push(40); // Content-Format (12) = 40
    let query = |m: &mut Vec<u8>, delta: u8, q: &[u8]| {
        if q.len() < 13 {
            m.push((delta << 4) | q.len() as u8);
        } else {
            m.push((delta << 4) | 13);
            m.push(q.len() as u8 - 13);
        }
        m.extend_from_slice(q);
    };
    query(&mut m, 3, format!("ep={ep}").as_bytes()); // Uri-Query (15)
    query(&mut m, 0, b"lt=86400");
    query(&mut m, 0, b"lwm2m=1.1");
    m.push(0xff);
    m.extend_from_slice(b"</>;rt=\"oma.lwm2m\";ct=11542,</1/0>,</3/0>,</4/0>,</5/0>,</3303/0>");
    m
}

/// Registers `count` endpoints named `{prefix}{i}` with `window` in flight; returns elapsed time.
fn load(server: SocketAddr, prefix: &str, count: usize, window: usize) -> Duration {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut mid: u16 = fastrand::u16(..);
    let mut inflight: HashMap<u16, (Instant, Vec<u8>)> = HashMap::new();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    while done < count {
        while inflight.len() < window && next < count {
            mid = mid.wrapping_add(1);
            let msg = register_msg(mid, &format!("{prefix}{next}"));
            sock.send_to(&msg, server).unwrap();
            inflight.insert(mid, (Instant::now(), msg));
            next += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n >= 4 => {
                let m = u16::from_be_bytes([buf[2], buf[3]]);
                if buf[1] == 0x41 && inflight.remove(&m).is_some() {
                    done += 1;
                } else if buf[1] != 0x41 {
                    panic!("unexpected response code {:#x}", buf[1]);
                }
            }
            _ => {
                // Retransmit whatever waited too long (same message id: answered from the cache).
                let now = Instant::now();
                for (sent, msg) in inflight.values_mut() {
                    if now.duration_since(*sent) > Duration::from_secs(2) {
                        sock.send_to(msg, server).unwrap();
                        *sent = now;
                    }
                }
            }
        }
    }
    start.elapsed()
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
