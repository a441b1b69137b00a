//! DTLS: full PSK handshakes per second, CoAP requests per second over
//! established sessions, and the gateway's memory per idle session.
//! Clients run in this process on Mbed TLS over real loopback sockets, so
//! they share the machine's two cores with the gateway.
//!
//! Run: `cargo bench --bench dtls` (options after `--`: `--threads N`
//! handshaking clients, `--seconds N` per round, `--rounds N`,
//! `--idle N` sessions held open for the memory figure).

mod common;

use lwm2m_gw::dtls::mbed::Session;
use lwm2m_gw::dtls::Keys;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "00112233445566778899aabbccddeeff";

/// Handshakes over a blocking socket until the session is open.
fn handshake(sock: &UdpSocket, identity: &str, epoch: Instant) -> Option<Session> {
    common::psk_handshake(sock, identity, KEY, epoch)
}

fn connect(dtls: SocketAddr) -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(dtls).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `work(thread, stop, done)` on `threads` threads for `seconds` and
/// returns how many times a second they counted `done` meanwhile.
fn rate(
    threads: usize,
    seconds: u64,
    work: impl Fn(usize, &AtomicBool, &AtomicU64) + Send + Sync + 'static,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let work = Arc::new(work);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (done, stop, work) = (done.clone(), stop.clone(), work.clone());
            std::thread::spawn(move || work(t, &stop, &done))
        })
        .collect();
    let start = Instant::now();
    let before = done.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(seconds));
    let n = done.load(Ordering::Relaxed) - before;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    rate
}

/// Each thread handshakes, closes with close_notify, and starts again.
fn handshake_rate(dtls: SocketAddr, threads: usize, seconds: u64, identities: usize) -> f64 {
    let epoch = Instant::now();
    rate(threads, seconds, move |t, stop, done| {
        let sock = connect(dtls);
        let mut i = t;
        while !stop.load(Ordering::Relaxed) {
            if let Some(mut s) = handshake(&sock, &format!("d{}", i % identities), epoch) {
                s.close();
                for d in s.take_transmits().collect::<Vec<_>>() {
                    let _ = sock.send(&d);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            i += threads;
        }
    })
}

/// CoAP GETs of a path the gateway does not serve (answered 4.04 by the
/// server after decryption) over one open session per thread.
fn request_rate(dtls: SocketAddr, threads: usize, seconds: u64) -> f64 {
    let epoch = Instant::now();
    rate(threads, seconds, move |t, stop, done| {
        let sock = connect(dtls);
        let mut s = handshake(&sock, &format!("d{t}"), epoch).expect("session");
        let none = Keys::default();
        let ms = || epoch.elapsed().as_millis() as u64;
        let mut buf = [0u8; 2048];
        let mut mid: u16 = 0;
        while !stop.load(Ordering::Relaxed) {
            mid = mid.wrapping_add(1);
            let [a, b] = mid.to_be_bytes();
            // CON GET /x, 2-byte token.
            let req = [0x42, 0x01, a, b, a, b, 0xb1, b'x'];
            s.write(ms(), &req).unwrap();
            for d in s.take_transmits().collect::<Vec<_>>() {
                let _ = sock.send(&d);
            }
            while let Ok(n) = sock.recv(&mut buf) {
                let mut plain = Vec::new();
                s.handle(ms(), &none, &buf[..n], &mut plain);
                if plain.iter().any(|p| p.len() >= 4 && p[2..4] == [a, b]) {
                    done.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    })
}

/// Room for one socket per idle session.
fn raise_fd_limit() {
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn main() {
    let threads = common::arg("--threads", 16);
    let seconds = common::arg("--seconds", 5) as u64;
    let rounds = common::arg("--rounds", 3);
    let idle = common::arg("--idle", 2000);
    raise_fd_limit();
    let dir = common::bench_dir("dtls");
    std::fs::write(
        dir.join("gw.toml"),
        format!(
            "[coap]\nbind = \"127.0.0.1\"\nport = 0\n[dtls]\nport = 0\nmax_sessions = {}\nmax_handshakes = 1024\n[registration]\nallow_unknown_endpoints = false\n",
            idle + threads + 64
        ),
    )
    .unwrap();
    let identities = idle.max(threads);
    let mut import = String::new();
    for i in 0..identities {
        import.push_str(&format!(
            "[[device]]\nendpoint = \"d{i}\"\npsk_identity = \"d{i}\"\npsk_key = \"{KEY}\"\n"
        ));
    }
    std::fs::write(dir.join("devices.toml"), import).unwrap();
    let sock = dir.join("control.sock");
    let (gw, _, dtls) = common::start_gateway_dtls(
        &dir,
        &["--control-socket".as_ref(), sock.as_os_str()],
        "warn,lwm2m_gw::runtime=info",
    );
    let gw = common::Kill(gw);
    let dtls = dtls.expect("DTLS address in the gateway log");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(["device", "import"])
        .arg(dir.join("devices.toml"))
        .arg("--control-socket")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    println!(
        "dtls bench: {threads} client threads, {seconds} s rounds, {rounds} rounds, gateway {dtls}"
    );

    let mut hs = Vec::new();
    for r in 0..rounds {
        let rate = handshake_rate(dtls, threads, seconds, identities);
        println!("  round {r}: {rate:.0} full PSK handshakes/s (TLS_PSK_WITH_AES_128_CCM_8, cookie exchange included)");
        hs.push(rate);
    }
    let mut rq = Vec::new();
    for r in 0..rounds {
        let rate = request_rate(dtls, threads, seconds);
        println!("  round {r}: {rate:.0} CoAP requests/s over {threads} open sessions (one in flight each)");
        rq.push(rate);
    }

    // Memory: wait for the benchmark's own sessions to be closed, then open
    // `idle` sessions and leave them idle.
    std::thread::sleep(Duration::from_millis(500));
    let pid = gw.0.id();
    let before = common::rss_kib(pid);
    let epoch = Instant::now();
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        let sock = connect(dtls);
        if let Some(s) = handshake(&sock, &format!("d{i}"), epoch) {
            held.push((sock, s));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = common::rss_kib(pid);
    let stats = common::stats(&sock);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / held.len().max(1) as f64;
    println!(
        "  idle sessions: {} open (gateway says {}), RSS {before} KiB -> {after} KiB: {:.1} KiB per session",
        held.len(),
        stats["dtls"]["sessions"],
        per / 1024.0
    );
    println!(
        "dtls: median {:.0} handshakes/s, median {:.0} requests/s, {:.1} KiB per idle session (targets: >= 2000 handshakes/s, <= 40 KiB)",
        median(hs),
        median(rq),
        per / 1024.0
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
