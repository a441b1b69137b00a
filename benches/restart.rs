//! Restart at capacity: a gateway holding N registrations and K
//! observations each is killed with SIGKILL and started again on the same
//! data. Prints RSS live, RSS after the restart, the peak during it
//! (VmHWM, what the OOM killer sees), the time to the first CoAP answer,
//! and the time until every observation delivers a notification again.
//!
//! Run: `cargo bench --bench restart` (options after `--`:
//! `--registrations N` (100000), `--observations K` per device (2),
//! `--clients N` (64)). The devices are played by this process: each
//! client socket registers its share of endpoints, answers the Observe
//! requests the gateway sends, and after the restart sends one
//! notification per observation.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The paths each device is observed on, in order; K takes the first K.
const PATHS: [&str; 4] = ["/3303/0/5700", "/3/0/9", "/3/0/10", "/3/0/13"];

/// One device farm socket: answers Observe requests and remembers their tokens.
struct Farm {
    sock: UdpSocket,
    tokens: Mutex<Vec<Vec<u8>>>,
}

fn observe_answer(req: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    // A CON request: ACK 2.05, Observe 1, text "21" (a number every observed resource takes).
    if req.len() < 4
        || req[0] >> 6 != 1
        || (req[0] >> 4) & 3 != 0
        || req[1] >> 5 != 0
        || req[1] == 0
    {
        return None;
    }
    let tkl = (req[0] & 0x0f) as usize;
    let token = req.get(4..4 + tkl)?.to_vec();
    let mut a = vec![0x60 | tkl as u8, 0x45, req[2], req[3]];
    a.extend_from_slice(&token);
    a.extend_from_slice(&[0x61, 0x01, 0x61, 0x00, 0xff]); // Observe 1, Content-Format 0
    a.extend_from_slice(b"21");
    Some((a, token))
}

fn notification(token: &[u8], mid: u16) -> Vec<u8> {
    // NON 2.05, Observe 2, text "22".
    let mut n = vec![0x50 | token.len() as u8, 0x45];
    n.extend_from_slice(&mid.to_be_bytes());
    n.extend_from_slice(token);
    n.extend_from_slice(&[0x61, 0x02, 0x61, 0x00, 0xff]);
    n.extend_from_slice(b"22");
    n
}

/// Sends every Observe command through one control connection, 256 in flight.
fn observe_all(sock: &std::path::Path, endpoints: &[String], k: usize) -> usize {
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let total = endpoints.len() * k;
    let reader = std::thread::spawn(move || {
        let mut ok = 0;
        let mut lines = BufReader::new(s).lines();
        for _ in 0..total {
            let l = lines.next().unwrap().unwrap();
            if l.contains("\"CONTENT\"") {
                ok += 1;
            }
        }
        ok
    });
    let mut id = 0;
    for ep in endpoints {
        for path in &PATHS[..k] {
            id += 1;
            writeln!(
                w,
                "{{\"id\":{id},\"op\":\"rpc\",\"endpoint\":\"{ep}\",\"method\":\"Observe\",\"params\":{{\"id\":\"{path}\"}}}}"
            )
            .unwrap();
        }
    }
    reader.join().unwrap()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `f` holds, polling every 50 ms, at most `limit`.
fn wait(limit: Duration, f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

fn main() {
    let n = common::arg("--registrations", 100_000);
    let k = common::arg("--observations", 2).min(PATHS.len());
    let clients = common::arg("--clients", 64).max(1);
    let dir = common::bench_dir("restart");
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("gw.toml"),
        format!(
            // One socket stands for many devices here, so NSTART and the
            // per-peer queue are raised to let the Observes through.
            "[coap]\nbind = \"127.0.0.1\"\nport = {port}\nmax_observations = {}\nnstart = 8\nmax_queue_per_peer = 4096\n[dtls]\nport = 0\n[registration]\nmax_registrations = {}\n",
            n * k + 1000,
            n + 1000
        ),
    )
    .unwrap();
    let sock_path = dir.join("control.sock");
    let gw_args = ["--control-socket".as_ref(), sock_path.as_os_str()];
    let (gw, addr) = common::start_gateway(&dir, &gw_args, "warn,lwm2m_gw::runtime=info,sled=warn");
    let mut gw = common::Kill(gw);
    println!(
        "restart: {n} registrations x {k} observations, {clients} device sockets, gateway pid {}",
        gw.0.id()
    );

    // Register, from each farm socket its share of the endpoints.
    let per = n / clients;
    let farms: Vec<Arc<Farm>> = (0..clients)
        .map(|_| {
            Arc::new(Farm {
                sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
                tokens: Mutex::new(Vec::new()),
            })
        })
        .collect();
    let start = Instant::now();
    let loads: Vec<_> = farms
        .iter()
        .enumerate()
        .map(|(c, f)| {
            let f = f.clone();
            std::thread::spawn(move || {
                common::load_from(&f.sock, addr, &format!("rs-{c}-"), per, 64)
            })
        })
        .collect();
    for l in loads {
        l.join().unwrap();
    }
    let endpoints: Vec<String> = (0..clients)
        .flat_map(|c| (0..per).map(move |i| format!("rs-{c}-{i}")))
        .collect();
    println!(
        "registered {} in {:.1} s",
        endpoints.len(),
        start.elapsed().as_secs_f64()
    );

    // The farms answer the gateway's Observe requests from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = farms
        .iter()
        .map(|f| {
            let (f, stop) = (f.clone(), stop.clone());
            std::thread::spawn(move || {
                f.sock
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, from)) = f.sock.recv_from(&mut buf) {
                        if let Some((answer, token)) = observe_answer(&buf[..len]) {
                            let _ = f.sock.send_to(&answer, from);
                            f.tokens.lock().unwrap().push(token);
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let observed = observe_all(&sock_path, &endpoints, k);
    println!(
        "observed {observed} of {} in {:.1} s",
        endpoints.len() * k,
        start.elapsed().as_secs_f64()
    );
    let pid = gw.0.id();
    std::thread::sleep(Duration::from_secs(2));
    let stats = common::stats(&sock_path);
    let live = status_kib(pid, "VmRSS:");
    println!(
        "live: RSS {live} KiB ({} registrations, {} observations), VmHWM {} KiB",
        stats["registrations"],
        stats["observations"],
        status_kib(pid, "VmHWM:")
    );

    // SIGKILL and start again on the same data, the same port.
    let _ = gw.0.kill();
    let _ = gw.0.wait();
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let start = Instant::now();
    let (gw, _) = common::start_gateway(&dir, &gw_args, "warn,lwm2m_gw::runtime=info,sled=warn");
    let gw = common::Kill(gw);
    let pid = gw.0.id();
    // A GET of a path nobody serves: the first answer (4.04) the restarted gateway gives.
    let mut mid: u16 = 1;
    let first = loop {
        mid = mid.wrapping_add(1);
        let mut get = vec![0x40, 0x01];
        get.extend_from_slice(&mid.to_be_bytes());
        get.extend_from_slice(&[0xb1, b'x']);
        let _ = probe.send_to(&get, addr);
        let mut b = [0u8; 64];
        if probe.recv_from(&mut b).is_ok() {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the gateway did not answer"
        );
    };
    println!(
        "first answer {:.0} ms after the restart",
        first.as_secs_f64() * 1000.0
    );

    // Every observation sends one notification; all must come through.
    let before = common::stats(&sock_path)["notifications"]
        .as_u64()
        .unwrap_or(0);
    let pace = Duration::from_secs_f64(32.0 * clients as f64 / 40_000.0);
    let senders: Vec<_> = farms
        .iter()
        .map(|f| {
            let f = f.clone();
            std::thread::spawn(move || {
                let tokens = f.tokens.lock().unwrap().clone();
                for (i, t) in tokens.iter().enumerate() {
                    let _ = f.sock.send_to(&notification(t, i as u16), addr);
                    if i % 32 == 31 {
                        // Paced to about 40 000/s from all sockets together:
                        // NON notifications beyond the receive buffer are lost.
                        std::thread::sleep(pace);
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let want = observed as u64;
    let all = wait(Duration::from_secs(120), || {
        common::stats(&sock_path)["notifications"]
            .as_u64()
            .unwrap_or(0)
            >= before + want
    });
    let delivering = start.elapsed();
    let got = common::stats(&sock_path)["notifications"]
        .as_u64()
        .unwrap_or(0)
        - before;
    let held = common::stats(&sock_path);
    println!(
        "held while observations were restored: {} (dropped past the bound: {})",
        held["heldAtRestore"], held["heldAtRestoreDropped"]
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = status_kib(pid, "VmRSS:");
    let peak = status_kib(pid, "VmHWM:");
    println!(
        "{} of {want} observations delivered a notification {:.1} s after the restart{}",
        got,
        delivering.as_secs_f64(),
        if all { "" } else { " (not all: timed out)" }
    );
    println!(
        "after restart: RSS {after} KiB = {:.2} x live (target <= 1.2), peak VmHWM {peak} KiB = {:.2} x live (target <= 1.3)",
        after as f64 / live as f64,
        peak as f64 / live as f64
    );
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        let _ = s.join();
    }
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
