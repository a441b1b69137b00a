//! The update machine against a scripted device, in memory.

use super::update::Strategy;
use super::*;
use crate::coap::BlockOpt;
use crate::lwm2m::Path;
use crate::server::command::Answer;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn image(kind: Kind, size: u64, version: &str) -> Image {
    Image {
        id: format!("{:064x}", size * 31 + version.len() as u64),
        kind,
        title: "t".into(),
        version: version.into(),
        size,
        added_ms: 1,
    }
}

fn bytes(size: u64) -> Vec<u8> {
    (0..size).map(|i| (i * 13 % 251) as u8).collect()
}

/// A device with object 5 and 9 state machines, answering what the
/// machine sends.
struct Device {
    kind: Kind,
    image: Vec<u8>,
    got: Vec<u8>,
    /// Largest block it takes: larger ones get 2.31 with its size.
    max_block: usize,
    state: i64,
    result: i64,
    version: String,
    new_version: String,
    /// Result to report once the download ends (integrity failure...).
    verdict: Option<i64>,
    /// Blocks it does not answer (counts down).
    silent: u32,
    sizes: Vec<usize>,
    /// The token the gateway serves for it, and whether it fetches.
    served: Option<String>,
    pulling: bool,
    /// /5/0/9 it reports: 0 pull only, 1 push only, 2 both.
    delivery: i64,
    /// /5/0/7 (PkgVersion) it reports, if any.
    pkg_version: Option<String>,
}

impl Device {
    fn new(kind: Kind, image: Vec<u8>, new_version: &str) -> Device {
        Device {
            kind,
            image,
            got: Vec::new(),
            max_block: 1024,
            state: 0,
            result: 0,
            version: "1.0.0".into(),
            new_version: new_version.into(),
            verdict: None,
            silent: 0,
            sizes: Vec::new(),
            served: None,
            pulling: false,
            delivery: 2,
            pkg_version: None,
        }
    }

    /// The whole package is in: the device's verdict.
    fn downloaded(&mut self) {
        match (self.verdict, self.kind) {
            (Some(r), _) => {
                self.state = 0;
                self.result = r;
            }
            (None, Kind::Firmware) => self.state = 2,
            (None, Kind::Software) => {
                self.state = 3;
                self.result = 3;
            }
        }
    }

    fn state_map(&self) -> Json {
        match self.kind {
            Kind::Firmware => {
                let mut m =
                    json!({"3": self.state, "5": self.result, "8": {"0": 0}, "9": self.delivery});
                if let Some(p) = &self.pkg_version {
                    m["7"] = json!(p);
                }
                m
            }
            Kind::Software => {
                json!({"0": "app", "1": self.version, "7": self.state, "9": self.result})
            }
        }
    }

    /// The device's answer to one action, or none (silent).
    fn answer(&mut self, a: &Action) -> Option<(u64, Answer)> {
        match a {
            Action::Block {
                handle,
                offset,
                len,
                block,
                ..
            } => {
                if self.silent > 0 {
                    self.silent -= 1;
                    return None;
                }
                let size = block.size();
                assert_eq!(
                    *offset,
                    block.num as u64 * size as u64,
                    "offset and num agree"
                );
                if *offset as usize != self.got.len() {
                    return Some((*handle, Answer::fail("REQUEST_ENTITY_INCOMPLETE", "gap")));
                }
                let data = &self.image[*offset as usize..*offset as usize + *len];
                self.sizes.push(*len);
                if block.num == 0 {
                    // Downloading (object 5) or Download started (object 9).
                    self.state = 1;
                    self.result = 0;
                }
                if size > self.max_block {
                    // Takes the first max_block bytes, asks for that size.
                    self.got
                        .extend_from_slice(&data[..self.max_block.min(*len)]);
                    let s = BlockOpt::szx_for(self.max_block);
                    let num = *offset / self.max_block as u64;
                    return Some((
                        *handle,
                        Answer::ok("CONTINUE", Some(json!({"block1": [num, true, s]}))),
                    ));
                }
                self.got.extend_from_slice(data);
                if block.more {
                    Some((
                        *handle,
                        Answer::ok(
                            "CONTINUE",
                            Some(json!({"block1": [block.num, true, block.szx]})),
                        ),
                    ))
                } else {
                    self.downloaded();
                    Some((*handle, Answer::ok("CHANGED", None)))
                }
            }
            Action::Serve { token, .. } => {
                self.served = Some(token.clone());
                None
            }
            Action::Unserve { .. } => None,
            Action::Command {
                handle,
                method,
                params,
                ..
            } => {
                let id = params["id"].as_str().unwrap();
                let v = match (*method, id) {
                    ("Read", "/5/0") | ("Read", "/9/0") => self.state_map(),
                    ("Read" | "Observe", "/3/0/3") | ("Read" | "Observe", "/9/0/1") => {
                        json!(self.version)
                    }
                    ("Observe", "/5/0/3") | ("Observe", "/9/0/7") => json!(self.state),
                    ("Observe", "/5/0/5") | ("Observe", "/9/0/9") => json!(self.result),
                    ("Observe", "/5/0/7" | "/9/0/0" | "/9/0/3" | "/3/0/19") => json!(""),
                    ("Execute", "/5/0/2") => {
                        assert_eq!(self.state, 2, "Update only once downloaded");
                        self.state = 0;
                        self.result = 1;
                        self.version = self.new_version.clone();
                        return Some((*handle, Answer::ok("CHANGED", None)));
                    }
                    ("Execute", "/9/0/4") => {
                        self.state = 4;
                        self.result = 2;
                        self.version = self.new_version.clone();
                        return Some((*handle, Answer::ok("CHANGED", None)));
                    }
                    ("Execute", "/9/0/10") => return Some((*handle, Answer::ok("CHANGED", None))),
                    ("WriteReplace", "/5/0/1") | ("WriteReplace", "/9/0/3") => {
                        let url = params["value"].as_str().unwrap();
                        self.state = 0;
                        if let Some(t) = &self.served {
                            assert!(url.ends_with(&format!("/fw/{t}")), "{url}");
                            self.pulling = true;
                            self.got.clear();
                            self.state = 1;
                        }
                        return Some((*handle, Answer::ok("CHANGED", None)));
                    }
                    other => panic!("unexpected {other:?}"),
                };
                Some((*handle, Answer::ok("CONTENT", Some(v))))
            }
        }
    }
}

fn cfg() -> OtaConfig {
    OtaConfig {
        max_concurrent: 2,
        stall_timeout: Duration::from_secs(30),
        retries: 2,
        poll_interval: Duration::from_secs(4),
        ..OtaConfig::default()
    }
}

/// Runs the machine against `devices` until nothing moves; time jumps to
/// the next timer when nothing is in flight. Returns the time it ended.
fn run(
    ota: &mut Ota,
    devices: &mut [(&str, &mut Device)],
    mut t: Instant,
    limit: usize,
) -> Instant {
    for _ in 0..limit {
        let mut moved = false;
        while let Some(a) = ota.poll_action() {
            moved = true;
            let ep = match &a {
                Action::Block { endpoint, .. }
                | Action::Command { endpoint, .. }
                | Action::Serve { endpoint, .. } => endpoint.clone(),
                Action::Unserve { token } => {
                    for (_, d) in devices.iter_mut() {
                        if d.served.as_ref() == Some(token) {
                            d.served = None;
                        }
                    }
                    continue;
                }
            };
            let dev = devices.iter_mut().find(|(e, _)| *e == ep).unwrap();
            if let Some((h, ans)) = dev.1.answer(&a) {
                ota.on_answer(t, 1000, h, &ans);
            }
        }
        // Devices pulling: one block each per turn, as the server would
        // serve them.
        for (ep, d) in devices.iter_mut() {
            if d.pulling && d.served.is_some() {
                moved = true;
                let from = d.got.len();
                let to = (from + d.max_block).min(d.image.len());
                let chunk = d.image[from..to].to_vec();
                d.got.extend_from_slice(&chunk);
                d.sizes.push(chunk.len());
                if to == d.image.len() {
                    d.pulling = false;
                    d.downloaded();
                }
                ota.on_fetched(t, 1000, ep, to as u64);
            }
        }
        if !moved {
            match ota.poll_timeout() {
                Some(next) => {
                    t = t.max(next);
                    ota.handle_timeout(t, 1000);
                }
                None => return t,
            }
        }
    }
    t
}

/// Answers what comes before the first block (the delivery read, the
/// observations) as a device would; the first block's handle.
fn first_block(ota: &mut Ota, t: Instant) -> u64 {
    let mut dev = Device::new(Kind::Firmware, Vec::new(), "x");
    for _ in 0..20 {
        let a = ota.poll_action().expect("an action");
        if let Action::Block { handle, .. } = a {
            return handle;
        }
        if let Some((h, ans)) = dev.answer(&a) {
            ota.on_answer(t, 1, h, &ans);
        }
    }
    panic!("no block");
}

fn phase(ota: &Ota, ep: &str) -> Phase {
    ota.record(ep).unwrap().phase
}

#[test]
fn a_firmware_push_sends_every_byte_once_then_updates_and_reads_the_version() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let data = bytes(10_000);
    let img = image(Kind::Firmware, 10_000, "1.1.10");
    let mut dev = Device::new(Kind::Firmware, data.clone(), "1.1.10");
    ota.start(t, 1, "d1", img, StartOptions::default()).unwrap();
    run(&mut ota, &mut [("d1", &mut dev)], t, 1000);
    assert_eq!(dev.got, data, "the device holds exactly the image");
    assert_eq!(dev.sizes.len(), 10, "ten blocks of 1024, the last shorter");
    let r = ota.record("d1").unwrap();
    assert_eq!(r.phase, Phase::Updated, "{r:?}");
    assert_eq!(r.current_version.as_deref(), Some("1.1.10"));
    assert_eq!(r.percent(), 100);
    let keys: Vec<String> = r.northbound().into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&"fw_state".into()) && keys.contains(&"current_fw_version".into()));
    // The phases the platform saw, in order, each flushed.
    let phases: Vec<&str> = std::iter::from_fn(|| ota.poll_event())
        .filter_map(|e| match e {
            OtaEvent::Changed {
                record,
                durable: true,
            } => Some(record.phase.name()),
            _ => None,
        })
        .collect();
    let mut seen = phases.clone();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "QUEUED",
            "INITIATED",
            "DOWNLOADING",
            "DOWNLOADED",
            "VERIFIED",
            "UPDATING",
            "UPDATED"
        ]
    );
    // Updated is final: seeing the device again starts nothing.
    ota.device_seen(t, "d1");
    assert!(ota.poll_action().is_none());
    let again = ota.start(
        t,
        2,
        "d1",
        image(Kind::Firmware, 10_000, "1.1.10"),
        StartOptions::default(),
    );
    assert!(matches!(again, Err(OtaError::Busy(_))), "{again:?}");
}

#[test]
fn every_block_size_delivers_the_exact_bytes() {
    for bs in [16u32, 32, 64, 128, 256, 512, 1024] {
        let t = Instant::now();
        let mut ota = Ota::new(cfg(), t);
        let data = bytes(3_000);
        let mut dev = Device::new(Kind::Firmware, data.clone(), "2");
        let opts = StartOptions {
            block_size: bs,
            activate: false,
            ..StartOptions::default()
        };
        ota.start(t, 1, "d", image(Kind::Firmware, 3_000, "2"), opts)
            .unwrap();
        run(&mut ota, &mut [("d", &mut dev)], t, 10_000);
        assert_eq!(dev.got, data, "block size {bs}");
        assert!(dev.sizes.iter().all(|s| *s <= bs as usize));
        assert_eq!(phase(&ota, "d"), Phase::Updated, "block size {bs}");
    }
}

#[test]
fn a_device_asking_for_smaller_blocks_gets_them_from_where_it_stopped() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let data = bytes(5_000);
    let mut dev = Device::new(Kind::Firmware, data.clone(), "2");
    dev.max_block = 256;
    ota.start(
        t,
        1,
        "d",
        image(Kind::Firmware, 5_000, "2"),
        StartOptions::default(),
    )
    .unwrap();
    run(&mut ota, &mut [("d", &mut dev)], t, 1000);
    assert_eq!(dev.got, data);
    assert_eq!(dev.sizes[0], 1024, "the first block at the asked size");
    assert!(dev.sizes[1..].iter().all(|s| *s <= 256), "{:?}", dev.sizes);
    assert_eq!(ota.record("d").unwrap().block_size, 256);
    assert_eq!(phase(&ota, "d"), Phase::Updated);
}

#[test]
fn a_4_13_starts_again_with_smaller_blocks_and_a_4_08_from_block_0() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    ota.start(
        t,
        1,
        "d",
        image(Kind::Firmware, 4_000, "2"),
        StartOptions::default(),
    )
    .unwrap();
    let handle = first_block(&mut ota, t);
    ota.on_answer(
        t,
        1,
        handle,
        &Answer::fail("REQUEST_ENTITY_TOO_LARGE", "big"),
    );
    let b = std::iter::from_fn(|| ota.poll_action())
        .find_map(|a| match a {
            Action::Block {
                block,
                offset,
                handle,
                ..
            } => Some((block, offset, handle)),
            _ => None,
        })
        .unwrap();
    assert_eq!((b.0.size(), b.0.num, b.1), (512, 0, 0));
    assert_eq!(
        ota.record("d").unwrap().retries,
        0,
        "a size change is no retry"
    );
    ota.on_answer(
        t,
        1,
        b.2,
        &Answer::fail("REQUEST_ENTITY_INCOMPLETE", "lost"),
    );
    let r = ota.record("d").unwrap();
    assert_eq!((r.acked, r.retries), (0, 1));
    assert!(r
        .last_answer
        .as_deref()
        .unwrap()
        .contains("REQUEST_ENTITY_INCOMPLETE"));
}

#[test]
fn a_silent_device_is_retried_then_failed_with_the_step_it_stalled_on() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let data = bytes(3_000);
    let mut dev = Device::new(Kind::Firmware, data.clone(), "2");
    dev.silent = 1;
    ota.start(
        t,
        1,
        "d",
        image(Kind::Firmware, 3_000, "2"),
        StartOptions::default(),
    )
    .unwrap();
    let end = run(&mut ota, &mut [("d", &mut dev)], t, 1000);
    assert_eq!(dev.got, data, "resumed after one stall");
    assert_eq!(ota.record("d").unwrap().retries, 1);
    assert_eq!(phase(&ota, "d"), Phase::Updated);
    assert!(end >= t + Duration::from_secs(30), "the stall timer fired");

    let mut ota = Ota::new(cfg(), t);
    let mut dev = Device::new(Kind::Firmware, data, "2");
    dev.silent = 100;
    ota.start(
        t,
        1,
        "d",
        image(Kind::Firmware, 3_000, "2"),
        StartOptions::default(),
    )
    .unwrap();
    run(&mut ota, &mut [("d", &mut dev)], t, 1000);
    let r = ota.record("d").unwrap();
    assert_eq!(r.phase, Phase::Failed);
    let e = r.error.as_deref().unwrap();
    assert!(
        e.contains("no progress for 30 s during block 0 of 3") && e.contains("2 retries used"),
        "{e}"
    );
}

#[test]
fn a_failed_integrity_check_is_failed_with_the_devices_reason() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let mut dev = Device::new(Kind::Firmware, bytes(2_000), "2");
    dev.verdict = Some(5);
    ota.start(
        t,
        1,
        "d",
        image(Kind::Firmware, 2_000, "2"),
        StartOptions::default(),
    )
    .unwrap();
    run(&mut ota, &mut [("d", &mut dev)], t, 1000);
    let r = ota.record("d").unwrap();
    assert_eq!(r.phase, Phase::Failed);
    assert_eq!(
        r.error.as_deref(),
        Some("the device reports: integrity check failure for the new firmware package (result 5)")
    );
    assert_eq!(
        r.result_text(),
        Some("integrity check failure for the new firmware package")
    );
}

/// Updates `d` from 1.0.0 to image version `target` while the device
/// reports `reports` afterwards, with the machine's `require_version`.
fn update_reporting(kind: Kind, target: &str, reports: &str, strict: Option<bool>) -> Record {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let mut dev = Device::new(kind, bytes(500), reports);
    let opts = StartOptions {
        require_version: strict,
        ..StartOptions::default()
    };
    ota.start(t, 1, "d", image(kind, 500, target), opts)
        .unwrap();
    run(&mut ota, &mut [("d", &mut dev)], t, 1000);
    ota.record("d").unwrap().clone()
}

#[test]
fn versions_are_compared_whole() {
    // The device comes back with 1.1.1 where 1.1.10 was sent.
    let r = update_reporting(Kind::Firmware, "1.1.10", "1.1.1", Some(true));
    assert_eq!(r.phase, Phase::Failed);
    assert!(r
        .error
        .as_deref()
        .unwrap()
        .contains("\"1.1.1\" after the update, not \"1.1.10\""));
    let r = update_reporting(Kind::Firmware, "1.1.10", "1.1.10", Some(true));
    assert_eq!(r.phase, Phase::Updated);
    assert_eq!(r.version_verified(), Some(true));
}

#[test]
fn a_device_that_reports_success_with_another_version_ends_updated_with_the_mismatch_reported() {
    // Many devices keep their platform version in /3/0/3: it never
    // changes. Update Result 1 is success all the same.
    for kind in [Kind::Firmware, Kind::Software] {
        let r = update_reporting(kind, "2.1", "1.0.0", None);
        assert_eq!(r.phase, Phase::Updated, "{kind:?}: {r:?}");
        assert_eq!(r.error, None);
        assert_eq!(r.version_verified(), Some(false));
        let why = r.version_mismatch.clone().unwrap();
        assert!(
            why.contains("\"1.0.0\"") && why.contains("\"2.1\""),
            "{why}"
        );
        let p = kind.prefix();
        let nb: BTreeMap<String, Json> = r.northbound().into_iter().collect();
        assert_eq!(nb[&format!("{p}_state")], "UPDATED");
        assert_eq!(nb[&format!("{p}_verified")], false);
        assert_eq!(nb[&format!("{p}_error")], json!(why));
        assert_eq!(r.to_json(0)["versionVerified"], false);
        // The strict setting keeps FAILED for operators who want it.
        let r = update_reporting(kind, "2.1", "1.0.0", Some(true));
        assert_eq!(r.phase, Phase::Failed, "{kind:?}: {r:?}");
        assert!(r.error.unwrap().contains("ota.require_version"));
    }
    // The machine-wide setting is the default of an update.
    let t = Instant::now();
    let mut ota = Ota::new(
        OtaConfig {
            require_version: true,
            ..cfg()
        },
        t,
    );
    let mut dev = Device::new(Kind::Firmware, bytes(500), "1.0.0");
    let img = image(Kind::Firmware, 500, "2.1");
    ota.start(t, 1, "d", img, StartOptions::default()).unwrap();
    run(&mut ota, &mut [("d", &mut dev)], t, 1000);
    assert_eq!(ota.record("d").unwrap().phase, Phase::Failed);
}

#[test]
fn a_firmware_package_version_that_matches_verifies_the_update() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let mut dev = Device::new(Kind::Firmware, bytes(500), "zephyr-3.5");
    dev.pkg_version = Some("2.1".into());
    let opts = StartOptions {
        require_version: Some(true),
        ..StartOptions::default()
    };
    let img = image(Kind::Firmware, 500, "2.1");
    ota.start(t, 1, "d", img, opts).unwrap();
    run(&mut ota, &mut [("d", &mut dev)], t, 1000);
    let r = ota.record("d").unwrap();
    assert_eq!(r.phase, Phase::Updated, "{r:?}");
    assert_eq!(r.version_verified(), Some(true));
}

#[test]
fn a_record_stored_before_the_version_fields_decodes_with_their_defaults() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let img = image(Kind::Firmware, 500, "2.1");
    let mut rec = ota.start(t, 1, "d", img, StartOptions::default()).unwrap();
    let bytes = postcard::to_stdvec(&rec).unwrap();
    // The two appended fields, false and None, are a byte each.
    let old = &bytes[..bytes.len() - 2];
    let back: Record = postcard::from_bytes(old).unwrap();
    rec.require_version = false;
    rec.version_mismatch = None;
    assert_eq!(back, rec);
    rec.version_mismatch = Some("x".into());
    rec.require_version = true;
    let again: Record = postcard::from_bytes(&postcard::to_stdvec(&rec).unwrap()).unwrap();
    assert_eq!(again, rec);
}

#[test]
fn software_is_pushed_installed_and_activated() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let data = bytes(4_321);
    let mut dev = Device::new(Kind::Software, data.clone(), "3.0");
    let opts = StartOptions {
        block_size: 512,
        activate: true,
        ..StartOptions::default()
    };
    ota.start(t, 1, "s", image(Kind::Software, 4_321, "3.0"), opts)
        .unwrap();
    let mut executed = Vec::new();
    // Watch the Executes go by.
    let mut t2 = t;
    for _ in 0..1000 {
        let Some(a) = ota.poll_action() else {
            match ota.poll_timeout() {
                Some(n) => {
                    t2 = t2.max(n);
                    ota.handle_timeout(t2, 1);
                    continue;
                }
                None => break,
            }
        };
        if let Action::Command {
            method: "Execute",
            params,
            ..
        } = &a
        {
            executed.push(params["id"].as_str().unwrap().to_string());
        }
        if let Some((h, ans)) = dev.answer(&a) {
            ota.on_answer(t2, 1, h, &ans);
        }
    }
    assert_eq!(dev.got, data);
    assert_eq!(executed, ["/9/0/4", "/9/0/10"]);
    let r = ota.record("s").unwrap();
    assert_eq!(r.phase, Phase::Updated, "{r:?}");
    assert_eq!(r.current_version.as_deref(), Some("3.0"));
    assert!(r
        .northbound()
        .iter()
        .any(|(k, v)| k == "sw_state" && v == "UPDATED"));
}

#[test]
fn at_most_max_concurrent_transfers_run_and_the_rest_queue() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let data = bytes(2_048);
    let mut devs: Vec<Device> = (0..5)
        .map(|_| Device::new(Kind::Firmware, data.clone(), "2"))
        .collect();
    for i in 0..5 {
        ota.start(
            t,
            i,
            &format!("q{i}"),
            image(Kind::Firmware, 2_048, "2"),
            StartOptions::default(),
        )
        .unwrap();
    }
    assert_eq!(ota.running(), 2);
    assert_eq!(phase(&ota, "q4"), Phase::Queued);
    let names: Vec<String> = (0..5).map(|i| format!("q{i}")).collect();
    let mut pairs: Vec<(&str, &mut Device)> = names
        .iter()
        .map(String::as_str)
        .zip(devs.iter_mut())
        .collect();
    // Never more than two at once while they run.
    let mut t2 = t;
    for _ in 0..5000 {
        assert!(ota.running() <= 2);
        match ota.poll_action() {
            Some(a) => {
                let ep = match &a {
                    Action::Block { endpoint, .. }
                    | Action::Command { endpoint, .. }
                    | Action::Serve { endpoint, .. } => endpoint.clone(),
                    Action::Unserve { .. } => continue,
                };
                let d = pairs.iter_mut().find(|(e, _)| *e == ep).unwrap();
                if let Some((h, ans)) = d.1.answer(&a) {
                    ota.on_answer(t2, 1, h, &ans);
                }
            }
            None => match ota.poll_timeout() {
                Some(n) => {
                    t2 = t2.max(n);
                    ota.handle_timeout(t2, 1);
                }
                None => break,
            },
        }
    }
    for n in &names {
        assert_eq!(phase(&ota, n), Phase::Updated, "{n}");
    }
}

#[test]
fn a_restart_mid_transfer_resumes_where_the_device_was() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let data = bytes(8_192);
    let img = image(Kind::Firmware, 8_192, "2");
    ota.start(t, 1, "d", img.clone(), StartOptions::default())
        .unwrap();
    let mut dev = Device::new(Kind::Firmware, data.clone(), "2");
    // Four blocks through, then the gateway stops.
    let mut blocks = 0;
    while blocks < 4 {
        let a = ota.poll_action().unwrap();
        if matches!(a, Action::Block { .. }) {
            blocks += 1;
        }
        if let Some((h, ans)) = dev.answer(&a) {
            ota.on_answer(t, 1, h, &ans);
        }
    }
    let stored = ota.record("d").unwrap().clone();
    assert_eq!(stored.acked, 4096);
    let mut again = Ota::new(cfg(), t);
    again.restore_image(img);
    again.restore(stored, t);
    run(&mut again, &mut [("d", &mut dev)], t, 1000);
    assert_eq!(dev.got, data);
    let r = again.record("d").unwrap();
    assert_eq!((r.phase, r.retries), (Phase::Updated, 1));
    assert_eq!(dev.sizes.len(), 8, "no block sent twice");
}

#[test]
fn an_image_in_use_is_not_removed_and_ids_resolve_by_prefix() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    let img = image(Kind::Firmware, 100, "2");
    ota.add_image(img.clone()).unwrap();
    assert_eq!(ota.resolve(&img.id[..8]).unwrap().id, img.id);
    assert!(ota.resolve("ab").is_err());
    ota.start(t, 1, "d", img.clone(), StartOptions::default())
        .unwrap();
    let e = ota.remove_image(&img.id).unwrap_err();
    assert!(e.to_string().contains("in use by the update of d"), "{e}");
    ota.cancel("d").unwrap();
    assert_eq!(
        ota.record("d").unwrap().error.as_deref(),
        Some("cancelled by the operator")
    );
    ota.remove_image(&img.id).unwrap();
    assert!(ota.resolve(&img.id).is_err());
    let e = ota
        .start(
            t,
            1,
            "x",
            img,
            StartOptions {
                block_size: 100,
                activate: false,
                ..StartOptions::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("block size 100"), "{e}");
    let _ = Path::parse("/5/0/0").unwrap();
}

#[test]
fn a_pull_serves_a_secret_url_the_device_fetches_and_ends_with_it() {
    let t = Instant::now();
    let mut ota = Ota::new(cfg(), t);
    ota.set_pull_bases(Some("coap://192.0.2.1:5685".into()), None);
    let data = bytes(5_000);
    let mut dev = Device::new(Kind::Firmware, data.clone(), "4");
    dev.max_block = 512;
    let opts = StartOptions {
        strategy: Some(Strategy::Pull),
        ..StartOptions::default()
    };
    ota.start(t, 1, "p", image(Kind::Firmware, 5_000, "4"), opts)
        .unwrap();
    run(&mut ota, &mut [("p", &mut dev)], t, 1000);
    assert_eq!(dev.got, data);
    let r = ota.record("p").unwrap();
    assert_eq!(
        (r.phase, r.strategy),
        (Phase::Updated, Strategy::Pull),
        "{r:?}"
    );
    assert!(dev.served.is_none(), "the URL is no longer served");
    assert!(r.token.is_none() && r.url.is_none());
}

#[test]
fn the_strategy_follows_the_devices_delivery_method() {
    let t = Instant::now();
    // Auto with a pull-only device: pull.
    let mut ota = Ota::new(cfg(), t);
    ota.set_pull_bases(Some("coap://192.0.2.1:5685".into()), None);
    let mut dev = Device::new(Kind::Firmware, bytes(900), "4");
    dev.delivery = 0;
    let auto = StartOptions {
        strategy: None,
        ..StartOptions::default()
    };
    ota.start(t, 1, "a", image(Kind::Firmware, 900, "4"), auto)
        .unwrap();
    run(&mut ota, &mut [("a", &mut dev)], t, 1000);
    let r = ota.record("a").unwrap();
    assert_eq!((r.phase, r.strategy), (Phase::Updated, Strategy::Pull));
    // Push asked of a pull-only device: failed with the reason.
    let mut ota = Ota::new(cfg(), t);
    let mut dev = Device::new(Kind::Firmware, bytes(900), "4");
    dev.delivery = 0;
    ota.start(
        t,
        1,
        "b",
        image(Kind::Firmware, 900, "4"),
        StartOptions::default(),
    )
    .unwrap();
    run(&mut ota, &mut [("b", &mut dev)], t, 1000);
    let r = ota.record("b").unwrap();
    assert_eq!(r.phase, Phase::Failed);
    assert_eq!(
        r.error.as_deref(),
        Some("the device takes pull only (/5/0/9 = 0)")
    );
    // Pull over coaps asked of a device that lists CoAP only.
    let mut ota = Ota::new(cfg(), t);
    ota.set_pull_bases(None, Some("coaps://192.0.2.1:5686".into()));
    let mut dev = Device::new(Kind::Firmware, bytes(900), "4");
    let pull = StartOptions {
        strategy: Some(Strategy::Pull),
        secure: true,
        ..StartOptions::default()
    };
    ota.start(t, 1, "c", image(Kind::Firmware, 900, "4"), pull)
        .unwrap();
    run(&mut ota, &mut [("c", &mut dev)], t, 1000);
    let r = ota.record("c").unwrap();
    assert_eq!(
        r.error.as_deref(),
        Some("the device cannot fetch over coaps (/5/0/8 = [0])")
    );
}
