//! Values per second from simulated devices through the gateway into a
//! real mosquitto, then a broker outage under the same load: the backlog's
//! peak against its bound, what was dropped, the replay rate, and whether
//! every value reported reached the subscriber.
//!
//! Run: `cargo bench --bench mqtt` (options after `--`: `--devices N
//! --interval-ms MS --seconds S --outage-s S`). Needs mosquitto and
//! mosquitto_sub (scripts/setup.sh --test installs them). Issue 19's long
//! outage: `-- --devices 200 --interval-ms 1000 --outage-s 600`.

mod common;

use serde_json::Value as Json;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// mosquitto with persistence, so the subscriber's session (and what is
/// queued for it) outlives a stop with SIGTERM.
fn broker(dir: &Path, port: u16) -> common::Kill {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\n",
            dir.display()
        ),
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

/// Stops mosquitto as an operator would (it saves its sessions).
fn stop_broker(mut b: common::Kill) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(b.0.id() as libc::pid_t, libc::SIGTERM) };
    let _ = b.0.wait();
}

/// Counts telemetry values arriving at the broker, with a persistent
/// QoS 1 session that reconnects by itself after an outage.
fn subscriber(port: u16, values: Arc<AtomicU64>) -> common::Kill {
    let mut child = Command::new("mosquitto_sub")
        .args(["-p", &port.to_string(), "-t", "v1/gateway/telemetry"])
        .args(["-c", "-i", "mqtt-bench-sub", "-q", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(j) = serde_json::from_str::<Json>(&line) else {
                continue;
            };
            let n: usize = j
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(Json::as_array)
                        .flatten()
                        .map(|e| e["values"].as_object().map_or(0, |v| v.len()))
                        .sum()
                })
                .unwrap_or(0);
            values.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    common::Kill(child)
}

fn main() {
    let devices = common::arg("--devices", 2000);
    let interval = common::arg("--interval-ms", 100);
    let seconds = common::arg("--seconds", 10);
    let outage = common::arg("--outage-s", 10);
    let dir = common::bench_dir("mqtt-bench");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = std::fs::read_to_string(dir.join("gw.toml")).unwrap();
    cfg.push_str(&format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n"));
    std::fs::write(dir.join("gw.toml"), cfg).unwrap();
    let mut mosq = Some(broker(&dir, port));
    let values = Arc::new(AtomicU64::new(0));
    let mut sub = Some(subscriber(port, values.clone()));
    let (_gw, addr, sock) = common::gateway_with_socket(&dir);
    let server = addr.to_string();
    let n = interval.to_string();
    let args = [
        "--server",
        &server,
        "--prefix",
        "q-",
        "--format",
        "senml-cbor",
        "--notify-ms",
        &n,
    ];
    let (sim, _) = common::start_sim(&args, devices);
    // Observe /3303/0 (7 values) on every device.
    let s = UnixStream::connect(&sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    for i in 0..devices {
        let req = format!(
            "{{\"id\":{i},\"op\":\"rpc\",\"endpoint\":\"q-{i}\",\"method\":\"Observe\",\"params\":{{\"id\":\"/3303/0\"}}}}\n"
        );
        w.write_all(req.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut rates = Vec::new();
    let mut last = values.load(Ordering::Relaxed);
    for _ in 0..seconds {
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let now = values.load(Ordering::Relaxed);
        rates.push((now - last) as f64 / t.elapsed().as_secs_f64());
        last = now;
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "live: median {:.0} values/s into mosquitto ({} devices x 7 values every {interval} ms; target >= 50000)",
        rates[rates.len() / 2],
        devices
    );
    // Outage: the broker goes away and the backlog grows.
    stop_broker(mosq.take().unwrap());
    let outage_start = Instant::now();
    let (mut peak_msgs, mut peak_bytes) = (0u64, 0u64);
    while outage_start.elapsed() < Duration::from_secs(outage as u64) {
        std::thread::sleep(Duration::from_millis(500));
        let m = common::stats(&sock)["mqtt"].clone();
        peak_msgs = peak_msgs.max(m["queuedMessages"].as_u64().unwrap_or(0));
        peak_bytes = peak_bytes.max(m["queuedBytes"].as_u64().unwrap_or(0));
    }
    drop(sim);
    std::thread::sleep(Duration::from_millis(500));
    let m = common::stats(&sock)["mqtt"].clone();
    println!(
        "outage {outage} s: backlog peak {peak_msgs} messages, {:.1} MiB (bound: mqtt.max_queue_mb, 64 MiB by default); dropped {}",
        peak_bytes as f64 / (1 << 20) as f64,
        m["dropped"]
    );
    let backlog = common::stats(&sock)["mqtt"]["queuedMessages"]
        .as_u64()
        .unwrap();
    let bytes = common::stats(&sock)["mqtt"]["queuedBytes"]
        .as_u64()
        .unwrap();
    let _mosq = broker(&dir, port);
    let t = Instant::now();
    let end = t + Duration::from_secs(300);
    let mut first_ack = None;
    loop {
        let s = common::stats(&sock)["mqtt"].clone();
        if first_ack.is_none() && s["connected"] == true {
            first_ack = Some(t.elapsed());
        }
        if s["queuedMessages"] == 0 || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed() - first_ack.unwrap_or_default();
    println!(
        "replay: {backlog} queued messages ({} MiB) published and acknowledged in {:.2} s after reconnecting: {:.0} messages/s (target >= 20000)",
        bytes >> 20,
        took.as_secs_f64(),
        backlog as f64 / took.as_secs_f64()
    );
    // Every value the gateway took from a device, against what the
    // subscriber got (once it has stopped growing).
    let mut last = u64::MAX;
    let end = Instant::now() + Duration::from_secs(60);
    while values.load(Ordering::Relaxed) != last && Instant::now() < end {
        last = values.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
    }
    let st = common::stats(&sock);
    println!(
        "delivered: {} values at the subscriber of {} the gateway took from devices; {} messages dropped at the bound",
        values.load(Ordering::Relaxed),
        st["readings"],
        st["mqtt"]["dropped"]
    );
    drop(sub.take());
    let _ = std::fs::remove_dir_all(&dir);
}
