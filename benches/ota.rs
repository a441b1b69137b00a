//! Firmware push throughput: one device, then many in parallel, with the
//! gateway's RSS per running transfer. The devices are `lwm2m-gw-sim`
//! (objects 5 and 9 that hash each block as it comes), on loopback.
//!
//! Run: `cargo bench --bench ota` (options after `--`: `--mib N` image
//! size for the single device (16), `--devices N` in parallel (64),
//! `--each-mib N` image size for each of them (2), `--rounds N` (3)).
//! Throughput counts image bytes from `ota start` until the device
//! acknowledged the last block, polled every 20 ms.

mod common;

use serde_json::Value as Json;
use std::path::Path;
use std::time::{Duration, Instant};

fn call(sock: &Path, req: Json) -> Json {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut req = req;
    req["id"] = 1.into();
    w.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn image(dir: &Path, version: &str, bytes: usize) -> std::path::PathBuf {
    let p = dir.join(format!("{version}.bin"));
    let mut b = format!("SIMPKG version={version}\n").into_bytes();
    let mut x = 0x1234_5678u32;
    b.extend((0..bytes).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    std::fs::write(&p, b).unwrap();
    p
}

fn add(sock: &Path, file: &Path, version: &str) -> String {
    let a = call(
        sock,
        serde_json::json!({"op": "ota-add", "file": file.display().to_string(),
            "kind": "firmware", "title": "bench", "version": version}),
    );
    a["value"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{a}"))
        .to_string()
}

/// Starts the update of `eps` and waits until each acknowledged its last
/// block; seconds from the start, and the gateway's peak RSS meanwhile.
fn push(sock: &Path, pid: u32, eps: &[String], id: &str) -> (f64, u64) {
    let t0 = Instant::now();
    for ep in eps {
        let a = call(
            sock,
            serde_json::json!({"op": "ota-start", "endpoint": ep, "image": id}),
        );
        assert_eq!(a["result"], "CREATED", "{a}");
    }
    let mut peak = 0;
    loop {
        peak = peak.max(common::rss_kib(pid));
        let a = call(sock, serde_json::json!({"op": "ota-status"}));
        let l = a["value"].as_array().cloned().unwrap_or_default();
        let mine: Vec<&Json> = l
            .iter()
            .filter(|r| eps.iter().any(|e| r["endpoint"] == e.as_str()))
            .collect();
        if mine.iter().any(|r| r["state"] == "FAILED") {
            panic!("an update failed: {mine:?}");
        }
        let downloaded = mine
            .iter()
            .filter(|r| {
                matches!(
                    r["state"].as_str(),
                    Some("DOWNLOADED" | "VERIFIED" | "UPDATING" | "UPDATED")
                )
            })
            .count();
        if downloaded == eps.len() {
            return (t0.elapsed().as_secs_f64(), peak);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "too slow: {mine:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every update ended, so the next round starts clean.
fn settle(sock: &Path) {
    let t0 = Instant::now();
    loop {
        let a = call(sock, serde_json::json!({"op": "ota-status"}));
        let l = a["value"].as_array().cloned().unwrap_or_default();
        if l.iter()
            .all(|r| matches!(r["state"].as_str(), Some("UPDATED" | "FAILED")))
        {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{l:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mib = common::arg("--mib", 16);
    let devices = common::arg("--devices", 64);
    let each = common::arg("--each-mib", 2);
    let rounds = common::arg("--rounds", 3);
    let dir = common::bench_dir("ota");
    std::fs::write(
        dir.join("gw.toml"),
        format!(
            "[coap]\nbind = \"127.0.0.1\"\nport = 0\n[dtls]\nport = 0\n\
             [ota]\nmax_concurrent = {devices}\nmax_store_bytes = {}\n",
            (mib + each * rounds + 64) << 20
        ),
    )
    .unwrap();
    let (gw, addr, sock) = common::gateway_with_socket(&dir);
    let pid = gw.0.id();
    let server = addr.to_string();
    // One simulator process: the single device and the parallel ones.
    let (_sim, _) = common::start_sim(
        &[
            "--server",
            &server,
            "--prefix",
            "ota-",
            "--ota-update-ms",
            "10",
        ],
        devices + rounds,
    );
    let idle = common::rss_kib(pid);
    println!(
        "ota push: {mib} MiB to one device, then {devices} devices x {each} MiB; {rounds} rounds; gateway RSS {idle} KiB idle"
    );
    let mut single = Vec::new();
    for r in 0..rounds {
        // A new version each round: an updated device takes no image twice.
        let f = image(&dir, &format!("one-{r}"), mib << 20);
        let id = add(&sock, &f, &format!("one-{r}"));
        let ep = format!("ota-{}", devices + r);
        let (secs, peak) = push(&sock, pid, std::slice::from_ref(&ep), &id);
        let rate = mib as f64 / secs;
        println!("  one device, round {r}: {rate:.2} MiB/s ({secs:.2} s), peak RSS {peak} KiB");
        single.push(rate);
        settle(&sock);
        let _ = call(&sock, serde_json::json!({"op": "ota-rm", "image": id}));
    }
    println!("one device: median {:.2} MiB/s (goal >= 5)", median(single));
    let mut many = Vec::new();
    let mut per = Vec::new();
    for r in 0..rounds {
        let f = image(&dir, &format!("many-{r}"), each << 20);
        let id = add(&sock, &f, &format!("many-{r}"));
        let eps: Vec<String> = (0..devices).map(|i| format!("ota-{i}")).collect();
        let before = common::rss_kib(pid);
        let (secs, peak) = push(&sock, pid, &eps, &id);
        let rate = (devices * each) as f64 / secs;
        let kib = peak.saturating_sub(before) as f64 / devices as f64;
        println!(
            "  {devices} devices, round {r}: {rate:.1} MiB/s aggregate ({secs:.2} s), RSS {before} -> {peak} KiB, {kib:.0} KiB per transfer"
        );
        many.push(rate);
        per.push(kib);
        settle(&sock);
        let _ = call(&sock, serde_json::json!({"op": "ota-rm", "image": id}));
    }
    // The first round grows the heap; later ones reuse it. The worst round
    // is the figure.
    let worst = per.iter().copied().fold(0.0f64, f64::max);
    println!(
        "{devices} devices: median {:.1} MiB/s aggregate (goal >= 30), at most {worst:.0} KiB RSS per transfer in a round (goal <= 256)",
        median(many)
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
