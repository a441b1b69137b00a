//! kill -9 under load, repeated: devices send confirmable Sends, and
//! others confirmable notifications of an observed resource (a counter
//! each), through the gateway into a real mosquitto; the gateway is killed
//! with SIGKILL at random moments and restarted on the same port. Every
//! value a device saw acknowledged (a Send's 2.04, a notification's ACK)
//! is checked against what the broker delivered.
//!
//! Run: `cargo bench --bench kill9` (options after `--`: `--kills N`
//! (50), `--devices N` Send devices (4), `--observed N` notifying devices
//! (4), `--min-ms A --max-ms B` (the random time between kills, 300 to
//! 1500 ms)). Needs mosquitto (scripts/setup.sh
//! --test installs it). Prints acknowledged, delivered, lost (acknowledged
//! and never delivered: the goal is 0), duplicates (allowed by QoS 1),
//! order, whether every restart kept the registrations, and start times.

mod common;

use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROFILE: &str =
    "name = \"meter\"\n[resources.\"/3303/0/5700\"]\ntelemetry = true\nkey = \"temperature\"\n";
/// The gateway observes the value on registration (and after a restart
/// the observation is restored from its store, no new Observe).
const OBSERVED: &str = "name = \"probe\"\n[resources.\"/3303/0/5700\"]\ntelemetry = true\nobserve = true\nkey = \"temperature\"\n";

fn call(sock: &Path, req: Json) -> Json {
    let s = UnixStream::connect(sock).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn broker(dir: &Path, port: u16) -> common::Kill {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
    )
    .unwrap();
    let mosq = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mosquitto");
    let child = Command::new(mosq)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (scripts/setup.sh --test installs it)");
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    common::Kill(child)
}

/// Every (device, value) the broker delivered, in arrival order.
type Delivered = Arc<Mutex<Vec<(String, u64)>>>;

fn subscriber(port: u16, got: Delivered) -> common::Kill {
    let mut child = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "v1/gateway/telemetry",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(Json::Object(m)) = serde_json::from_str::<Json>(&line) else {
                continue;
            };
            let mut g = got.lock().unwrap();
            for (ep, entries) in m {
                for e in entries.as_array().into_iter().flatten() {
                    if let Some(v) = e["values"]["temperature"].as_f64() {
                        g.push((ep.clone(), v as u64));
                    }
                }
            }
        }
    });
    common::Kill(child)
}

fn register(sock: &UdpSocket, to: SocketAddr, mid: u16, ep: &str) -> bool {
    use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
    let mut m = Message::new(MsgType::Con, Code::POST, mid, Token::from_u64(mid as u64));
    m.set_uri_path("rd");
    m.set_uint_option(opt::CONTENT_FORMAT, 40);
    m.add_option(opt::URI_QUERY, format!("ep={ep}").into_bytes());
    m.add_option(opt::URI_QUERY, b"lt=86400".to_vec());
    m.payload = b"</3303/0>".to_vec();
    exchange(sock, to, &m.encode(), mid) == Some(Code::CREATED)
}

/// Sends `bytes` and waits 300 ms for the ACK of `mid`: its code.
fn exchange(
    sock: &UdpSocket,
    to: SocketAddr,
    bytes: &[u8],
    mid: u16,
) -> Option<lwm2m_gw::coap::Code> {
    use lwm2m_gw::coap::{Message, MsgType};
    sock.send_to(bytes, to).ok()?;
    let end = Instant::now() + Duration::from_millis(300);
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if let Ok(r) = Message::decode(&buf[..n]) {
                if r.mid == mid && r.mtype == MsgType::Ack {
                    return Some(r.code);
                }
            }
        }
    }
    None
}

/// What one device saw: acknowledged values, and Sends answered 4.04
/// (its registration was gone).
#[derive(Default)]
struct Seen {
    acked: BTreeSet<u64>,
    unregistered: u64,
}

/// Sends value after value (`base + n`) until `stop`; one in flight.
fn device(to: SocketAddr, ep: String, base: u64, stop: Arc<AtomicBool>) -> Seen {
    use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut seen = Seen::default();
    let mut mid = (base as u16).wrapping_mul(7919);
    while !register(&sock, to, mid, &ep) {
        mid = mid.wrapping_add(1);
    }
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        mid = mid.wrapping_add(1);
        let value = base + n;
        let mut m = Message::new(MsgType::Con, Code::POST, mid, Token::from_u64(value));
        m.set_uri_path("dp");
        m.set_uint_option(opt::CONTENT_FORMAT, 110);
        m.payload = format!(r#"[{{"n":"/3303/0/5700","v":{value}}}]"#).into_bytes();
        match exchange(&sock, to, &m.encode(), mid) {
            Some(Code::CHANGED) => {
                seen.acked.insert(value);
            }
            Some(Code::NOT_FOUND) => {
                seen.unregistered += 1;
                mid = mid.wrapping_add(1);
                register(&sock, to, mid, &ep);
            }
            _ => {}
        }
    }
    seen
}

/// Answers the gateway's Observe of /3303/0/5700, then notifies it with
/// confirmable notifications (`base + n`, text) until `stop`, one in
/// flight; any new Observe (a new token) is answered and taken on.
fn observed(to: SocketAddr, ep: String, base: u64, stop: Arc<AtomicBool>) -> Seen {
    use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut seen = Seen::default();
    let mut mid = (base as u16).wrapping_mul(7919);
    while !register(&sock, to, mid, &ep) {
        mid = mid.wrapping_add(1);
    }
    let mut token: Option<Token> = None;
    let mut n = 0u64;
    let mut seq = 2u64;
    let mut buf = [0u8; 1500];
    // The notification in flight: its message ID, value and when it went.
    let mut flight: Option<(u16, u64, Instant)> = None;
    while !stop.load(Ordering::Relaxed) {
        if let (None, Some(t)) = (flight, &token) {
            n += 1;
            seq += 1;
            mid = mid.wrapping_add(1);
            let value = base + n;
            let mut m = Message::new(MsgType::Con, Code::CONTENT, mid, *t);
            m.set_uint_option(opt::OBSERVE, seq);
            m.set_uint_option(opt::CONTENT_FORMAT, 0);
            m.payload = value.to_string().into_bytes();
            let _ = sock.send_to(&m.encode(), to);
            flight = Some((mid, value, Instant::now()));
        }
        if let Ok((len, from)) = sock.recv_from(&mut buf) {
            let Ok(r) = Message::decode(&buf[..len]) else {
                continue;
            };
            match (r.mtype, flight) {
                (MsgType::Ack, Some((m, value, _))) if r.mid == m => {
                    seen.acked.insert(value);
                    flight = None;
                }
                (MsgType::Rst, Some((m, _, _))) if r.mid == m => {
                    // The gateway does not know the observation any more.
                    seen.unregistered += 1;
                    flight = None;
                    token = None;
                }
                (MsgType::Con, _) if r.code == Code::GET && r.observe() == Some(0) => {
                    let mut a = Message::new(MsgType::Ack, Code::CONTENT, r.mid, r.token);
                    a.set_uint_option(opt::OBSERVE, seq);
                    a.set_uint_option(opt::CONTENT_FORMAT, 0);
                    a.payload = (base + n).to_string().into_bytes();
                    let _ = sock.send_to(&a.encode(), from);
                    token = Some(r.token);
                }
                (MsgType::Con, _) => {
                    let a = Message::new(MsgType::Ack, Code::NOT_FOUND, r.mid, r.token);
                    let _ = sock.send_to(&a.encode(), from);
                }
                _ => {}
            }
        }
        if let Some((_, _, at)) = flight {
            if at.elapsed() > Duration::from_millis(300) {
                // Unanswered (the gateway was down): that value was never
                // acknowledged; the next one goes out.
                flight = None;
            }
        }
    }
    seen
}

fn start(dir: &Path, sock: &Path, port: u16) -> (common::Kill, SocketAddr) {
    let p = port.to_string();
    let (child, addr) = common::start_gateway(
        dir,
        &[
            "--control-socket".as_ref(),
            sock.as_os_str(),
            "--coap-port".as_ref(),
            p.as_ref(),
        ],
        "warn,lwm2m_gw::runtime=info",
    );
    (common::Kill(child), addr)
}

fn main() {
    let kills = common::arg("--kills", 50);
    let devices = common::arg("--devices", 4);
    let notifying = common::arg("--observed", 4);
    let min_ms = common::arg("--min-ms", 300) as u64;
    let max_ms = common::arg("--max-ms", 1500).max(min_ms as usize + 1) as u64;
    let dir = common::bench_dir("kill9");
    let mqtt_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = std::fs::read_to_string(dir.join("gw.toml")).unwrap();
    cfg.push_str(&format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\n"));
    std::fs::write(dir.join("gw.toml"), cfg).unwrap();
    let _mosq = broker(&dir, mqtt_port);
    let got: Delivered = Arc::default();
    let _sub = subscriber(mqtt_port, got.clone());
    std::thread::sleep(Duration::from_millis(300));
    let sock: PathBuf = dir.join("control.sock");
    let (mut gw, addr) = start(&dir, &sock, 0);
    assert_eq!(
        call(&sock, json!({"op": "profile-put", "toml": PROFILE}))["result"],
        "CREATED"
    );
    assert_eq!(
        call(&sock, json!({"op": "profile-put", "toml": OBSERVED}))["result"],
        "CREATED"
    );
    for i in 0..devices + notifying {
        let profile = if i < devices { "meter" } else { "probe" };
        let cred = json!({"endpoint": format!("k-{i}"), "profile": profile, "security": "NoSec"});
        assert_eq!(
            call(&sock, json!({"op": "device-add", "credential": cred}))["result"],
            "CHANGED"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..devices + notifying)
        .map(|i| {
            let stop = stop.clone();
            let base = (i as u64 + 1) * 10_000_000;
            let ep = format!("k-{i}");
            if i < devices {
                std::thread::spawn(move || device(addr, ep, base, stop))
            } else {
                std::thread::spawn(move || observed(addr, ep, base, stop))
            }
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let mut rng = fastrand::Rng::with_seed(19);
    let mut starts = Vec::new();
    let mut intact = 0;
    let t0 = Instant::now();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.u64(min_ms..max_ms)));
        // SIGKILL, as Kill's drop does: no chance to flush anything.
        drop(gw);
        let t = Instant::now();
        let (g, _) = start(&dir, &sock, addr.port());
        starts.push(t.elapsed());
        gw = g;
        let n = common::stats(&sock)["registrations"].as_u64().unwrap_or(0);
        if n == (devices + notifying) as u64 {
            intact += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let secs = t0.elapsed().as_secs_f64();
    // Everything queued reaches the broker before counting.
    let end = Instant::now() + Duration::from_secs(60);
    while common::stats(&sock)["mqtt"]["queuedMessages"] != 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    drop(gw);

    let got = got.lock().unwrap().clone();
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (ep, v) in &got {
        per.entry(ep.clone()).or_default().push(*v);
    }
    let mut acked = 0;
    let mut acked_by_kind = [0usize; 2];
    let mut lost = Vec::new();
    let mut dups = 0;
    let mut out_of_order = 0;
    let mut unregistered = 0;
    for (i, s) in seen.iter().enumerate() {
        let ep = format!("k-{i}");
        let vals = per.get(&ep).cloned().unwrap_or_default();
        let distinct: BTreeSet<u64> = vals.iter().copied().collect();
        dups += vals.len() - distinct.len();
        // First deliveries must rise; a replayed duplicate may not.
        let mut first = BTreeSet::new();
        let mut last = 0;
        for v in vals {
            if first.insert(v) {
                if v < last {
                    out_of_order += 1;
                }
                last = v;
            }
        }
        acked += s.acked.len();
        acked_by_kind[usize::from(i >= devices)] += s.acked.len();
        unregistered += s.unregistered;
        lost.extend(s.acked.difference(&distinct).copied());
    }
    starts.sort();
    println!(
        "{kills} kills in {secs:.0} s; {devices} devices sending confirmable Sends, {notifying} sending confirmable notifications, one at a time each"
    );
    println!(
        "acknowledged: {} Sends (2.04), {} notifications (ACK)",
        acked_by_kind[0], acked_by_kind[1]
    );
    println!(
        "acknowledged {acked}, delivered {} ({} distinct), lost {} (goal 0){}, duplicates {dups} (QoS 1 allows them), out of order {out_of_order}",
        got.len(),
        got.len() - dups,
        lost.len(),
        if lost.is_empty() {
            String::new()
        } else {
            format!(": {:?}", &lost[..lost.len().min(10)])
        }
    );
    println!(
        "registrations intact after {intact} of {kills} restarts; {unregistered} Sends or notifications found their registration or observation gone; start to serving: median {:.0} ms, max {:.0} ms",
        starts[starts.len() / 2].as_secs_f64() * 1e3,
        starts[starts.len() - 1].as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
