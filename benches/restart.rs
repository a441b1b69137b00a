//! Restart at capacity: a gateway holding N registrations and K
//! observations each is killed with SIGKILL and started again on the same
//! data. Prints RSS live, RSS after the restart, the peak during it
//! (VmHWM, what the OOM killer sees), the time to the first CoAP answer,
//! and the time until every observation delivers a notification again.
//!
//! It also prints the goals of issue 27: after the restart at most 1.3 x
//! live RSS, VmHWM at most 1.6 x live, every registration listed within
//! 1 s of the start, and live memory per registration (RSS over the
//! freshly started gateway's) at most 1.5 KB without observations and
//! 2.5 KB with two each.
//!
//! Run: `cargo bench --bench restart` (options after `--`:
//! `--registrations N` (100000), `--observations K` per device (2; 0 for none),
//! `--clients N` (64), `--board NAME`). With `--board rpi3-armv7` (any
//! directory of `boards/`) the gateway is filled to that board's
//! `max_registrations` with its `max_observations` spread over them (at
//! most 4 per device), with its store cache, and runs in a memory cgroup
//! limited to the board's systemd `MemoryMax` (cgroup v1 or v2, where this
//! machine lets the bench make one): it prints whether the kernel's OOM
//! killer struck and the cgroup's peak. The devices are played by this process: each
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
    let board = board();
    let n = board
        .as_ref()
        .map_or(common::arg("--registrations", 100_000), |b| b.registrations);
    let k = board
        .as_ref()
        .map_or(common::arg("--observations", 2), |b| {
            b.observations / b.registrations
        })
        .min(PATHS.len());
    let clients = common::arg("--clients", 64).max(1);
    let dir = common::bench_dir("restart");
    let cgroup = board
        .as_ref()
        .and_then(|b| Cgroup::make(&b.name, b.memory_max));
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
            "[coap]\nbind = \"127.0.0.1\"\nport = {port}\nmax_observations = {}\nnstart = 8\nmax_queue_per_peer = 4096\n[dtls]\nport = 0\n[registration]\nmax_registrations = {}\n{}",
            board.as_ref().map_or(n * k + 1000, |b| b.observations),
            board.as_ref().map_or(n + 1000, |b| b.registrations),
            board.as_ref().map_or(
                // Extra settings for experiments: BENCH_GW_CONFIG='[store]\ncache_mb = 4'.
                std::env::var("BENCH_GW_CONFIG")
                    .unwrap_or_default()
                    .replace("\\n", "\n"),
                |b| format!("[store]\ncache_mb = {}\n", b.cache_mb)
            ),
        ),
    )
    .unwrap();
    let sock_path = dir.join("control.sock");
    let gw_args = ["--control-socket".as_ref(), sock_path.as_os_str()];
    let (gw, addr) = common::start_gateway_in(
        &dir,
        &gw_args,
        "warn,lwm2m_gw::runtime=info,sled=warn",
        cgroup.as_ref().map(|c| c.dir.as_path()),
    );
    let mut gw = common::Kill(gw);
    std::thread::sleep(Duration::from_millis(500));
    let empty = status_kib(gw.0.id(), "VmRSS:");
    println!(
        "restart: {n} registrations x {k} observations, {clients} device sockets, gateway pid {}, RSS empty {empty} KiB",
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
    let observed = if k == 0 {
        0
    } else {
        observe_all(&sock_path, &endpoints, k)
    };
    println!(
        "observed {observed} of {} in {:.1} s",
        endpoints.len() * k,
        start.elapsed().as_secs_f64()
    );
    let pid = gw.0.id();
    std::thread::sleep(Duration::from_secs(2));
    let stats = common::stats(&sock_path);
    let live = status_kib(pid, "VmRSS:");
    let registered = stats["registrations"].as_u64().unwrap_or(0);
    let per_reg = live.saturating_sub(empty) as f64 * 1.024 / registered.max(1) as f64;
    println!(
        "live: RSS {live} KiB ({registered} registrations, {} observations), VmHWM {} KiB; {per_reg:.2} KB per registration (target <= {})",
        stats["observations"],
        status_kib(pid, "VmHWM:"),
        if k == 0 { "1.5" } else { "2.5 with two observations" }
    );

    // SIGKILL and start again on the same data, the same port.
    let _ = gw.0.kill();
    let _ = gw.0.wait();
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    if let Some(c) = &cgroup {
        c.reset_peak();
    }
    let start = Instant::now();
    let (gw, _) = common::start_gateway_in(
        &dir,
        &gw_args,
        "warn,lwm2m_gw::runtime=info,sled=warn",
        cgroup.as_ref().map(|c| c.dir.as_path()),
    );
    let mut gw = common::Kill(gw);
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
    wait(Duration::from_secs(120), || {
        common::stats(&sock_path)["registrations"]
            .as_u64()
            .unwrap_or(0)
            >= registered
    });
    let listed = start.elapsed();
    let at_listed = status_kib(pid, "VmRSS:");
    println!(
        "all {registered} registrations listed {:.0} ms after the start (target <= 1000); RSS then {at_listed} KiB",
        listed.as_secs_f64() * 1000.0
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
        "after restart: RSS {after} KiB = {:.2} x live (target <= 1.3), peak VmHWM {peak} KiB = {:.2} x live (target <= 1.6)",
        after as f64 / live as f64,
        peak as f64 / live as f64
    );
    if let (Some(b), Some(c)) = (&board, &cgroup) {
        let alive = gw.0.try_wait().ok().flatten().is_none();
        println!(
            "board {}: MemoryMax {} MiB; cgroup peak during the restart {} MiB (RSS and page cache); OOM kills {}; gateway {}",
            b.name,
            b.memory_max >> 20,
            c.peak() >> 20,
            c.oom_kills(),
            if alive { "alive" } else { "GONE" }
        );
    } else if let Some(b) = &board {
        println!(
            "board {}: no memory cgroup could be made here; MemoryMax {} MiB not enforced",
            b.name,
            b.memory_max >> 20
        );
    }
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        let _ = s.join();
    }
    drop(gw);
    if let Some(c) = cgroup {
        c.remove();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a board's files say the gateway must fit.
struct Board {
    name: String,
    registrations: usize,
    observations: usize,
    cache_mb: u64,
    memory_max: u64,
}

/// The board named by `--board`, read from `boards/NAME/`.
fn board() -> Option<Board> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.windows(2).find(|w| w[0] == "--board")?[1].clone();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("boards")
        .join(&name);
    let cfg: toml::Table = std::fs::read_to_string(dir.join("lwm2m-gw.toml"))
        .expect("board config")
        .parse()
        .expect("board TOML");
    let int = |sec: &str, key: &str, default: i64| {
        cfg.get(sec)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_integer())
            .unwrap_or(default)
    };
    let dropin =
        std::fs::read_to_string(dir.join("lwm2m-gw.service.d/board.conf")).expect("board drop-in");
    let max = dropin
        .lines()
        .find_map(|l| l.trim().strip_prefix("MemoryMax="))
        .expect("MemoryMax in the drop-in");
    let memory_max = match max.trim().split_at(max.trim().len() - 1) {
        (v, "M") => v.parse::<u64>().unwrap() << 20,
        (v, "G") => v.parse::<u64>().unwrap() << 30,
        _ => panic!("MemoryMax={max}: M or G expected"),
    };
    Some(Board {
        name,
        registrations: int("registration", "max_registrations", 100_000) as usize,
        observations: int("coap", "max_observations", 200_000) as usize,
        cache_mb: int("store", "cache_mb", 16) as u64,
        memory_max,
    })
}

/// A memory cgroup of this bench's own, v2 or v1.
struct Cgroup {
    dir: std::path::PathBuf,
    v2: bool,
}

impl Cgroup {
    /// Makes one under this process's own cgroup, limited to `max` bytes.
    fn make(name: &str, max: u64) -> Option<Cgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let try_make = |dir: std::path::PathBuf, v2: bool| -> Option<Cgroup> {
            let dir = dir.join(format!("lwm2m-gw-bench-{name}-{}", std::process::id()));
            std::fs::create_dir(&dir).ok()?;
            let (limit, swap) = if v2 {
                ("memory.max", "memory.swap.max")
            } else {
                ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
            };
            if std::fs::write(dir.join(limit), max.to_string()).is_err() {
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
            // As under systemd: no swap to hide in (where the file exists).
            let _ = std::fs::write(
                dir.join(swap),
                if v2 { "0".into() } else { max.to_string() },
            );
            Some(Cgroup { dir, v2 })
        };
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory") {
                let base = std::path::Path::new("/sys/fs/cgroup/memory").join(path);
                if let Some(c) = try_make(base, false) {
                    return Some(c);
                }
            }
            if controllers.is_empty() {
                for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    let base = std::path::Path::new(root).join(path);
                    if base.join("cgroup.controllers").exists() {
                        if let Some(c) = try_make(base, true) {
                            return Some(c);
                        }
                    }
                }
            }
        }
        None
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Peak usage in bytes since the last reset.
    fn peak(&self) -> u64 {
        let f = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(f).trim().parse().unwrap_or(0)
    }

    fn reset_peak(&self) {
        let f = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        let _ = std::fs::write(self.dir.join(f), "0");
    }

    /// Processes the OOM killer ended in this cgroup.
    fn oom_kills(&self) -> u64 {
        let f = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.read(f)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn remove(self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
