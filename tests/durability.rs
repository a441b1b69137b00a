//! What a device was told is kept, is kept: the gateway aborts (as a power
//! cut or `kill -9` would end it) right after a Send's 2.04 leaves, with
//! the broker down, and every acknowledged value still reaches the broker
//! after a restart. A store damaged beyond reading is moved aside, said in
//! the log, `stats` and northbound, and the gateway starts clean once, not
//! in a loop. Real mosquitto on loopback, real UDP.

mod common;

use common::{config, Broker, Client, Gateway, Subscriber, TempDir};
use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;
use std::time::Duration;

const PROFILE: &str = r#"
name = "meter"
[resources."/3303/0/5700"]
telemetry = true
key = "temperature"
"#;

fn provision(gw: &Gateway) {
    let mut c = gw.control();
    let Json::Object(req) = json!({"op": "profile-put", "toml": PROFILE}) else {
        unreachable!()
    };
    assert_eq!(c.call(req).unwrap()["result"], "CREATED");
    let cred = json!({"endpoint": "d-1", "profile": "meter", "security": "NoSec"});
    let Json::Object(req) = json!({"op": "device-add", "credential": cred}) else {
        unreachable!()
    };
    assert_eq!(c.call(req).unwrap()["result"], "CHANGED");
}

/// A confirmable Send of one temperature (SenML JSON); whether it was
/// answered 2.04 within a second.
fn send(c: &mut Client, mid: u16, value: u64) -> bool {
    let mut m = Message::new(MsgType::Con, Code::POST, mid, Token::from_u64(value + 1));
    m.set_uri_path("dp");
    m.set_uint_option(opt::CONTENT_FORMAT, 110);
    m.payload = format!(r#"[{{"n":"/3303/0/5700","v":{value}}}]"#).into_bytes();
    c.sock
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    c.sock.send_to(&m.encode(), c.server).unwrap();
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = c.sock.recv_from(&mut buf) {
        if let Ok(r) = Message::decode(&buf[..n]) {
            if r.mid == mid && r.mtype == MsgType::Ack {
                return r.code == Code::CHANGED;
            }
        }
    }
    false
}

/// Every temperature of d-1 the broker has delivered.
fn delivered(sub: &Subscriber) -> BTreeSet<u64> {
    sub.on("v1/gateway/telemetry")
        .iter()
        .filter_map(|m| m.get("d-1").and_then(Json::as_array).cloned())
        .flatten()
        .filter_map(|e| e["values"]["temperature"].as_f64().map(|t| t as u64))
        .collect()
}

#[test]
fn a_value_acknowledged_just_before_a_crash_reaches_the_broker_after_restart() {
    let dir = TempDir::new("durability");
    let mut broker = Broker::start(&dir.0);
    let sub = Subscriber::start(&broker, "tb-durability");
    let cfg = config(
        "127.0.0.1",
        &format!("[mqtt]\nurl = \"{}\"\n", broker.url()),
    );
    let gw = Gateway::start(&dir.0, &cfg);
    provision(&gw);
    let port = gw.addr.port();
    let mut dev = Client::new(gw.addr);
    assert_eq!(
        dev.register("d-1", &["lt=300"], b"</3303/0>").code,
        Code::CREATED
    );
    drop(gw);

    let mut acknowledged = BTreeSet::new();
    let mut next = 0u64;
    // Crash after the 1st, 3rd and 7th acknowledged Send, the broker down each
    // time, so nothing but the store can keep the values.
    for crash_after in [1u64, 3, 7] {
        broker.stop();
        let n = crash_after.to_string();
        let mut gw = Gateway::start_with_env(
            &dir.0,
            &cfg,
            port,
            &[("LWM2M_GW_CRASH_AFTER_ACKS", n.as_str())],
        );
        for _ in 0..crash_after + 3 {
            next += 1;
            if send(&mut dev, next as u16, next) {
                acknowledged.insert(next);
            }
            if gw.exited() {
                break;
            }
        }
        let ended = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            gw.exited()
        });
        assert!(ended, "the crash point did not fire");
        broker.restart();
    }
    assert_eq!(acknowledged.len(), 1 + 3 + 7, "{acknowledged:?}");
    // A gateway without a crash point sends what was kept.
    let gw = Gateway::start_on(&dir.0, &cfg, port);
    let all = common::wait_until(Duration::from_secs(30), || {
        acknowledged.is_subset(&delivered(&sub))
    });
    let got = delivered(&sub);
    let lost: Vec<_> = acknowledged.difference(&got).collect();
    assert!(
        all,
        "acknowledged values lost: {lost:?} (broker got {got:?}: {:?}); gateway log: {:?}",
        sub.on("v1/gateway/telemetry"),
        common::log_lines(&gw)
    );
}

/// `systemctl stop` sends SIGTERM: the gateway stops reading, finishes its
/// turn, flushes, closes MQTT with a DISCONNECT and exits 0 within
/// `service.stop_timeout_s`, under a load of confirmable Sends; every
/// acknowledged value reaches the broker, and the next start restores
/// the registration.
#[test]
fn sigterm_under_confirmable_sends_stops_cleanly_within_the_bound_and_loses_nothing() {
    let dir = TempDir::new("sigterm");
    let broker = Broker::start(&dir.0);
    let sub = Subscriber::start(&broker, "tb-sigterm");
    let cfg = config(
        "127.0.0.1",
        &format!(
            "[mqtt]\nurl = \"{}\"\nclient_id = \"gw-sigterm\"\n[service]\nstop_timeout_s = 5\n",
            broker.url()
        ),
    );
    let mut gw = Gateway::start(&dir.0, &cfg);
    provision(&gw);
    let port = gw.addr.port();
    let mut dev = Client::new(gw.addr);
    assert_eq!(
        dev.register("d-1", &["lt=300"], b"</3303/0>").code,
        Code::CREATED
    );
    // Sends one after another from a thread, until the gateway is gone.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let halt = stop.clone();
    let (acked_tx, acked_rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        let mut acked = BTreeSet::new();
        let mut next = 0u64;
        while !halt.load(std::sync::atomic::Ordering::Relaxed) {
            next += 1;
            if send(&mut dev, next as u16, next) {
                acked.insert(next);
                let _ = acked_tx.send(next);
            }
        }
        acked
    });
    // Under load: 50 acknowledged, then SIGTERM.
    for _ in 0..50 {
        acked_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("Sends acknowledged under load");
    }
    let (status, took) = gw
        .signal(libc::SIGTERM, Duration::from_secs(5))
        .expect("the gateway ends within stop_timeout_s");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = sender.join().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        gw.log_contains("SIGTERM: stopping"),
        "{:?}",
        common::log_lines(&gw)
    );
    assert!(gw.log_contains("SIGTERM: stopped in"));
    assert!(gw.log_contains("northbound: disconnected"));
    // mosquitto's words for a DISCONNECT (a dropped socket reads
    // "closed its connection"); its log is written on a timer.
    let said = common::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&broker.log)
            .unwrap_or_default()
            .contains("Client gw-sigterm disconnected")
    });
    assert!(said, "the broker saw no DISCONNECT");
    println!(
        "SIGTERM under load: exit 0 after {} ms, {} Sends acknowledged",
        took.as_millis(),
        acknowledged.len()
    );

    let gw = Gateway::start_on(&dir.0, &cfg, port);
    assert!(
        gw.log_contains("1 registrations restored"),
        "{:?}",
        common::log_lines(&gw)
    );
    let all = common::wait_until(Duration::from_secs(30), || {
        acknowledged.is_subset(&delivered(&sub))
    });
    let lost: Vec<_> = acknowledged.difference(&delivered(&sub)).copied().collect();
    assert!(all, "acknowledged values lost: {lost:?}");
}

/// With the broker unreachable the bridge sits in its reconnect back-off;
/// a stop does not wait that out.
#[test]
fn sigterm_with_the_broker_down_does_not_wait_for_the_reconnect_back_off() {
    let dir = TempDir::new("sigterm-no-broker");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens there once the listener above is gone.
    let cfg = config(
        "127.0.0.1",
        &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n"),
    );
    let mut gw = Gateway::start(&dir.0, &cfg);
    // After the 4th failed attempt the back-off is 4 s, longer than the
    // half of stop_timeout_s (5) the stop gives the bridge.
    assert!(gw.wait_log("(4 attempts)", Duration::from_secs(15)));
    let (status, took) = gw
        .signal(libc::SIGTERM, Duration::from_secs(5))
        .expect("the gateway ends");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    assert!(
        !gw.log_contains("did not end"),
        "{:?}",
        common::log_lines(&gw)
    );
}

fn stats(gw: &Gateway) -> Json {
    let out = gw.cli(&["stats", "--json"]);
    serde_json::from_slice::<Json>(&out.stdout).unwrap()["value"].clone()
}

#[test]
fn a_damaged_store_is_moved_aside_reported_and_started_clean_once() {
    let dir = TempDir::new("damaged-store");
    let broker = Broker::start(&dir.0);
    let sub = Subscriber::start_with(&broker, "tb-damaged", &["v1/devices/me/#"]);
    let cfg = config(
        "127.0.0.1",
        &format!("[mqtt]\nurl = \"{}\"\n", broker.url()),
    );
    let gw = Gateway::start(&dir.0, &cfg);
    let port = gw.addr.port();
    let mut dev = Client::new(gw.addr);
    assert_eq!(
        dev.register("before", &["lt=300"], b"</3/0>").code,
        Code::CREATED
    );
    assert!(stats(&gw)["store"]["movedAside"].is_null());
    drop(gw);
    // Every file of the database overwritten, as a bad card or a torn
    // write would leave it.
    let db = dir.0.join("data").join("db");
    let mut damaged = 0;
    for e in std::fs::read_dir(&db).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, vec![0xa5u8; 4096]).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);

    let gw = Gateway::start_on(&dir.0, &cfg, port);
    let st = stats(&gw);
    let aside = st["store"]["movedAside"]
        .as_str()
        .expect("moved aside")
        .to_string();
    assert!(aside.contains("db.corrupt-"), "{st}");
    assert!(std::path::Path::new(&aside).is_dir(), "the copy is kept");
    assert!(st["store"]["reason"].is_string(), "{st}");
    assert_eq!(st["registrations"], 0, "{st}");
    assert!(common::log_lines(&gw)
        .iter()
        .any(|l| l.contains("STORE CORRUPT") && l.contains(&aside)));
    let told = sub.wait("v1/devices/me/attributes", Duration::from_secs(10), |m| {
        !m.is_empty()
    });
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["storeMovedAside"], aside.as_str());
    assert!(told[0]["storeCorruptAt"].as_u64().unwrap_or(0) > 0);
    // Serving as before, into the clean store.
    let mut dev = Client::new(gw.addr);
    assert_eq!(
        dev.register("after", &["lt=300"], b"</3/0>").code,
        Code::CREATED
    );
    std::thread::sleep(Duration::from_millis(700));
    drop(gw);

    // The next start opens the clean store: no second move, the copy
    // still named, what was stored since kept.
    let gw = Gateway::start_on(&dir.0, &cfg, port);
    let st = stats(&gw);
    assert!(st["store"]["movedAside"].is_null(), "{st}");
    assert_eq!(st["store"]["corruptCopies"], json!([aside]), "{st}");
    assert_eq!(st["registrations"], 1, "{st}");
    assert!(!common::log_lines(&gw)
        .iter()
        .any(|l| l.contains("STORE CORRUPT")));
    assert_eq!(sub.on("v1/devices/me/attributes").len(), 1);
}

/// A tmpfs mounted on a fresh directory, unmounted on drop; None where
/// this process may not mount one (not root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, mib: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A Register of `ep` and its answer within a second, if any.
fn try_register(c: &Client, mid: u16, ep: &str) -> Option<Message> {
    let mut m = Message::new(MsgType::Con, Code::POST, mid, Token::from_u64(mid as u64));
    m.set_uri_path("rd");
    m.set_uint_option(opt::CONTENT_FORMAT, 40);
    m.add_option(opt::URI_QUERY, format!("ep={ep}").into_bytes());
    m.add_option(opt::URI_QUERY, b"lt=300".to_vec());
    m.payload = b"</3/0>".to_vec();
    c.sock
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    c.sock.send_to(&m.encode(), c.server).unwrap();
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = c.sock.recv_from(&mut buf) {
        if let Ok(r) = Message::decode(&buf[..n]) {
            if r.mid == mid && r.mtype == MsgType::Ack {
                return Some(r);
            }
        }
    }
    None
}

#[test]
fn a_full_disk_stops_the_gateway_before_it_acknowledges_and_space_back_recovers() {
    let dir = TempDir::new("full-disk");
    let Some(disk) = Tmpfs::mount(&dir.0.join("disk"), 16) else {
        println!(
            "SKIPPED: a tmpfs cannot be mounted here (needs root); the full-disk test did not run"
        );
        return;
    };
    let cfg = config("127.0.0.1", "");
    let mut gw = Gateway::start(&disk.0, &cfg);
    let port = gw.addr.port();
    let c = Client::new(gw.addr);
    assert_eq!(
        try_register(&c, 1, "before").map(|r| r.code),
        Some(Code::CREATED)
    );
    // Fill the filesystem to the last byte.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let mut byte = [0u8; 1];
        while f.write_all(&byte).is_ok() {
            byte[0] = 1;
        }
    }
    // Registrations until the gateway stops: every 2.01 it gave must be
    // on disk, the rest were never acknowledged.
    let mut acked = Vec::new();
    for i in 0..500u16 {
        let ep = format!("full-{i}");
        match try_register(&c, 100 + i, &ep) {
            Some(r) if r.code == Code::CREATED => acked.push((ep, r.location_path())),
            _ => {}
        }
        if gw.exited() {
            break;
        }
    }
    let stopped = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        gw.exited()
    });
    assert!(stopped, "the gateway went on with a full disk");
    println!(
        "full disk: {} registrations acknowledged before the gateway stopped",
        acked.len()
    );
    assert!(
        common::log_lines(&gw)
            .iter()
            .any(|l| l.contains("STORE WRITE FAILED")),
        "{:?}",
        common::log_lines(&gw)
    );
    assert!(!common::log_lines(&gw)
        .iter()
        .any(|l| l.contains("panicked")));

    // Space back: the next start opens what was stored, and every
    // registration that was acknowledged is there.
    std::fs::remove_file(&filler).unwrap();
    let gw = Gateway::start_on(&disk.0, &cfg, port);
    let mut c = Client::new(gw.addr);
    for (ep, location) in &acked {
        let r = c.request(Code::POST, location, &[], b"");
        assert_eq!(r.code, Code::CHANGED, "{ep} was acknowledged and is gone");
    }
    assert_eq!(
        c.register("after", &["lt=60"], b"</3/0>").code,
        Code::CREATED
    );
    drop(gw);
}
