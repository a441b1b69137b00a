//! Full bootstraps per second: Bootstrap-Request to Bootstrap-Finish
//! acknowledged, many devices in parallel, over plain CoAP (NoSec account)
//! and over DTLS with a bootstrap PSK (PSK account, so a generated key
//! flushed before each Finish); with the gateway's RSS before and after.
//!
//! Run: `cargo bench --bench bootstrap` (options after `--`: `--devices N`
//! enrolled per kind (2000), `--threads N` device threads (32),
//! `--seconds N` per round (5), `--rounds N` (3)). The devices are played
//! by this process: each thread owns one socket and bootstraps one
//! endpoint after another, answering the server's steps at once.

mod common;

use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use lwm2m_gw::dtls::mbed::{Session, Step};
use lwm2m_gw::dtls::Keys;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "00112233445566778899aabbccddeeff";

/// One device's link: plain, or a DTLS session over the same socket.
struct Link {
    sock: UdpSocket,
    tls: Option<Session>,
    epoch: Instant,
}

impl Link {
    fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn send(&mut self, m: &Message) {
        let bytes = m.encode();
        match &mut self.tls {
            Some(s) => {
                let _ = s.write(self.epoch.elapsed().as_millis() as u64, &bytes);
                for d in s.take_transmits().collect::<Vec<_>>() {
                    let _ = self.sock.send(&d);
                }
            }
            None => {
                let _ = self.sock.send(&bytes);
            }
        }
    }

    /// The next CoAP message, or None after the socket's timeout.
    fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 2048];
        loop {
            let n = self.sock.recv(&mut buf).ok()?;
            let ms = self.ms();
            match &mut self.tls {
                Some(s) => {
                    let mut plain = Vec::new();
                    if let Step::Closed(_) = s.handle(ms, &Keys::default(), &buf[..n], &mut plain) {
                        return None;
                    }
                    for d in s.take_transmits().collect::<Vec<_>>() {
                        let _ = self.sock.send(&d);
                    }
                    if let Some(p) = plain.into_iter().next() {
                        return Message::decode(&p).ok();
                    }
                }
                None => return Message::decode(&buf[..n]).ok(),
            }
        }
    }
}

/// One whole bootstrap of `ep`; true when Finish came and was answered.
fn bootstrap(link: &mut Link, ep: &str, mid: &mut u16) -> bool {
    *mid = mid.wrapping_add(1);
    let mut req = Message::new(
        MsgType::Con,
        Code::POST,
        *mid,
        Token::new(&mid.to_be_bytes()).unwrap(),
    );
    req.set_uri_path("/bs");
    req.add_option(opt::URI_QUERY, format!("ep={ep}").into_bytes());
    link.send(&req);
    loop {
        let Some(m) = link.recv() else {
            return false;
        };
        if m.mtype != MsgType::Con {
            if m.mid == *mid && m.code != Code::CHANGED {
                return false;
            }
            continue;
        }
        let (code, body): (Code, &[u8]) = match m.code {
            Code::DELETE => (Code::DELETED, b""),
            Code::GET => (Code::CONTENT, b"</0/0>"),
            _ => (Code::CHANGED, b""),
        };
        let mut a = Message::new(MsgType::Ack, code, m.mid, m.token);
        if !body.is_empty() {
            a.set_uint_option(opt::CONTENT_FORMAT, 40);
            a.payload = body.to_vec();
        }
        link.send(&a);
        if m.code == Code::POST {
            return true;
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bootstraps per second over `seconds`, `threads` devices at a time.
fn round(
    bs: SocketAddr,
    secure: bool,
    prefix: &str,
    devices: usize,
    threads: usize,
    seconds: u64,
) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.connect(bs).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut link = Link {
                    sock,
                    tls: None,
                    epoch,
                };
                let mut mid: u16 = fastrand::u16(..);
                // Each thread takes the endpoints t, t + threads, ...
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let ep = format!("{prefix}{}", i % devices);
                    if secure {
                        // One session per device: its identity is its own.
                        link.tls = common::psk_handshake(&link.sock, &ep, KEY, epoch);
                        if link.tls.is_none() {
                            failed.fetch_add(1, Ordering::Relaxed);
                            i += threads;
                            continue;
                        }
                    }
                    if bootstrap(&mut link, &ep, &mut mid) {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(s) = &mut link.tls {
                        s.close();
                        for d in s.take_transmits().collect::<Vec<_>>() {
                            let _ = link.sock.send(&d);
                        }
                    }
                    i += threads;
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    (rate, failed.load(Ordering::Relaxed))
}

/// `bootstrap import` of a CSV with `devices` entries per kind.
fn enrol(sock: &std::path::Path, dir: &std::path::Path, devices: usize) {
    let csv = dir.join("enrol.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(f, "endpoint,psk_identity,psk_key,server_security").unwrap();
    for i in 0..devices {
        writeln!(f, "plain-{i},,,nosec").unwrap();
        writeln!(f, "secure-{i},secure-{i},{KEY},psk").unwrap();
    }
    drop(f);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(["bootstrap", "import"])
        .arg(&csv)
        .arg("--control-socket")
        .arg(sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn main() {
    let devices = common::arg("--devices", 2000);
    let threads = common::arg("--threads", 32);
    let seconds = common::arg("--seconds", 5) as u64;
    let rounds = common::arg("--rounds", 3);
    let dir = common::bench_dir("bootstrap");
    let free = || {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (plain, secure) = (free(), free());
    std::fs::write(
        dir.join("gw.toml"),
        format!(
            "[coap]\nbind = \"127.0.0.1\"\nport = 0\n[dtls]\nport = 0\nmax_sessions = {}\n\
             [bootstrap]\nport = {plain}\ndtls_port = {secure}\n",
            threads * 4
        ),
    )
    .unwrap();
    let sock = dir.join("control.sock");
    let (gw, _) = common::start_gateway(
        &dir,
        &[
            "--control-socket".as_ref(),
            sock.as_os_str(),
            "--bootstrap-port".as_ref(),
            plain.to_string().as_ref(),
            "--bootstrap-dtls-port".as_ref(),
            secure.to_string().as_ref(),
        ],
        "warn,lwm2m_gw::runtime=info",
    );
    let gw = common::Kill(gw);
    let pid = gw.0.id();
    enrol(&sock, &dir, devices);
    let before = common::rss_kib(pid);
    println!(
        "bootstrap: {devices} entries per kind, {threads} devices at a time, {rounds} rounds of {seconds} s; gateway RSS {before} KiB"
    );
    for (name, port, secure) in [("plain", plain, false), ("psk", secure, true)] {
        let bs = SocketAddr::from(([127, 0, 0, 1], port));
        let prefix = if secure { "secure-" } else { "plain-" };
        let mut rates = Vec::new();
        for r in 0..rounds {
            let (rate, failed) = round(bs, secure, prefix, devices, threads, seconds);
            println!("  {name} round {r}: {rate:.0} bootstraps/s ({failed} failed)");
            rates.push(rate);
        }
        println!(
            "{name}: median {:.0} bootstraps/s (goal >= {}); gateway RSS {} KiB",
            median(rates),
            if secure { 1000 } else { 2000 },
            common::rss_kib(pid)
        );
    }
    let stats = common::stats(&sock);
    println!(
        "gateway stats: bootstrap {} dtls {}",
        stats["bootstrap"], stats["dtls"]
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
