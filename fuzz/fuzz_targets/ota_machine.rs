//! The OTA machine driven by arbitrary answers, values, fetches and time:
//! whatever a device says, the machine never panics, and an ended update
//! stays ended.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::ota::{Action, Image, Kind, Ota, OtaConfig, StartOptions, Strategy};
use lwm2m_gw::server::command::Answer;
use std::time::{Duration, Instant};

const RESULTS: [&str; 12] = [
    "CONTINUE",
    "CHANGED",
    "CONTENT",
    "CREATED",
    "REQUEST_ENTITY_TOO_LARGE",
    "REQUEST_ENTITY_INCOMPLETE",
    "TIMEOUT",
    "SERVICE_UNAVAILABLE",
    "DEVICE_NOT_REGISTERED",
    "DEVICE_ASLEEP",
    "NOT_FOUND",
    "QUEUED",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let mut now = Instant::now();
    let mut ota = Ota::new(OtaConfig::default(), now);
    ota.set_pull_bases(Some("coap://h:1".into()), Some("coaps://h:2".into()));
    let kind = if data[0] % 2 == 0 {
        Kind::Firmware
    } else {
        Kind::Software
    };
    let image = Image {
        id: "ab".repeat(32),
        kind,
        title: "t".into(),
        version: "2".into(),
        size: (u16::from_be_bytes([data[1], data[2]]) as u64) + 1,
        added_ms: 0,
    };
    let strategy = match data[3] % 3 {
        0 => Some(Strategy::Push),
        1 => Some(Strategy::Pull),
        _ => None,
    };
    let opts = StartOptions {
        block_size: 16 << (data[3] % 7),
        strategy,
        ..StartOptions::default()
    };
    let _ = ota.start(now, 0, "d", image, opts);
    let mut handles: Vec<u64> = Vec::new();
    for chunk in data[4..].chunks(4) {
        while let Some(a) = ota.poll_action() {
            match a {
                Action::Block { handle, .. } | Action::Command { handle, .. } => {
                    handles.push(handle)
                }
                _ => {}
            }
        }
        while ota.poll_event().is_some() {}
        let [op, x, y, z] = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
            *chunk.get(3).unwrap_or(&0),
        ];
        match op % 5 {
            0 | 1 => {
                if let Some(h) = handles.get(x as usize % handles.len().max(1)).copied() {
                    let result = RESULTS[y as usize % RESULTS.len()];
                    let value = match z % 5 {
                        0 => None,
                        1 => Some(serde_json::json!({"block1": [x, y % 2 == 0, z % 8]})),
                        2 => Some(
                            serde_json::json!({"3": x % 4, "5": y % 10, "7": x % 5, "9": y, "1": "2"}),
                        ),
                        3 => Some(serde_json::json!("2")),
                        _ => Some(serde_json::json!({"8": {"0": x % 6}, "9": y % 3})),
                    };
                    let a = Answer {
                        result,
                        value,
                        error: None,
                    };
                    ota.on_answer(now, 1, h, &a);
                }
            }
            2 => ota.on_fetched(now, 1, "d", (x as u64) << (y % 16)),
            3 => ota.device_seen(now, "d"),
            _ => {
                now += Duration::from_millis((x as u64) << (y % 12));
                ota.handle_timeout(now, 1);
            }
        }
    }
    let _ = ota.record("d").map(|r| r.to_json(0));
});
