//! A gateway killed with SIGKILL and started again on the same data holds
//! its registrations in about the memory it held them in before: the RSS
//! once they are all listed again is at most 1.3 times the live RSS, and
//! the peak (VmHWM, what the OOM killer sees) at most 1.6 times. The
//! figures at 50 000 and 100 000 are `cargo bench --bench restart`'s.

mod common;

use common::{config, Gateway, TempDir};
use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const DEVICES: usize = 20_000;
/// Registers in flight at once.
const WINDOW: usize = 32;

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn register(i: usize) -> Vec<u8> {
    let mid = i as u16;
    let mut m = Message::new(MsgType::Con, Code::POST, mid, Token::from_u64(i as u64 + 1));
    m.set_uri_path("rd");
    for q in [format!("ep=mem-{i}"), "lt=86400".into(), "lwm2m=1.1".into()] {
        m.add_option(opt::URI_QUERY, q.into_bytes());
    }
    m.set_uint_option(opt::CONTENT_FORMAT, 40);
    m.payload = b"</1/0>,</3/0>,</4/0>,</5/0>,</3303/0>".to_vec();
    m.encode()
}

/// Registers `DEVICES` endpoints, `WINDOW` at a time, resending what goes
/// unanswered; how many were created.
fn load(gw: std::net::SocketAddr) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut pending: Vec<usize> = Vec::new();
    let mut done = HashSet::new();
    let mut next = 0;
    let end = Instant::now() + Duration::from_secs(120);
    let mut buf = [0u8; 512];
    while done.len() < DEVICES && Instant::now() < end {
        while pending.len() < WINDOW && next < DEVICES {
            sock.send_to(&register(next), gw).unwrap();
            pending.push(next);
            next += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Ok(r) = Message::decode(&buf[..n]) {
                    if let Some(p) = pending.iter().position(|&i| i as u16 == r.mid) {
                        let i = pending.swap_remove(p);
                        if r.code == Code::CREATED {
                            done.insert(i);
                        }
                    }
                }
            }
            Err(_) => {
                for &i in &pending {
                    sock.send_to(&register(i), gw).unwrap();
                }
            }
        }
    }
    done.len()
}

fn registrations(gw: &Gateway) -> u64 {
    let out = gw.cli(&["stats", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .map(|v| v["value"]["registrations"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn after_a_kill_9_the_restarted_gateway_holds_its_registrations_in_the_memory_it_had() {
    let dir = TempDir::new("restart-memory");
    let cfg = config(
        "127.0.0.1",
        &format!("[registration]\nmax_registrations = {}\n", DEVICES + 100),
    );
    let gw = Gateway::start(&dir.0, &cfg);
    let port = gw.addr.port();
    let created = load(gw.addr);
    assert_eq!(created, DEVICES);
    std::thread::sleep(Duration::from_secs(1));
    let pid = gw.pid();
    let live = status_kib(pid, "VmRSS:");
    gw.kill9();

    let gw = Gateway::start_on(&dir.0, &cfg, port);
    assert!(
        common::wait_until(Duration::from_secs(60), || registrations(&gw)
            >= DEVICES as u64),
        "the registrations came back"
    );
    let pid = gw.pid();
    let after = status_kib(pid, "VmRSS:");
    let peak = status_kib(pid, "VmHWM:");
    println!(
        "{DEVICES} registrations: live {live} KiB, after the restart {after} KiB ({:.2} x), peak {peak} KiB ({:.2} x)",
        after as f64 / live as f64,
        peak as f64 / live as f64
    );
    assert!(
        after as f64 <= 1.3 * live as f64,
        "{after} KiB after, {live} KiB live"
    );
    assert!(
        peak as f64 <= 1.6 * live as f64,
        "peak {peak} KiB, {live} KiB live"
    );
}
