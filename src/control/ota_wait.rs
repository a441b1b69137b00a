//! `ota start --wait`: follows the started updates until each has ended,
//! with a progress bar per device on a terminal and plain lines otherwise.

use super::socket::Client;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

/// Polls the updates of `endpoints` until all ended; true when every one
/// reached UPDATED.
pub fn wait(
    client: &mut Client,
    endpoints: &[String],
    json: bool,
) -> Result<bool, Box<dyn std::error::Error>> {
    let tty = std::io::stderr().is_terminal() && !json;
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:<16} {bar:30} {bytes:>10}/{total_bytes:<10} {percent:>3}% {binary_bytes_per_sec:>12} ETA {eta:>4} {msg}",
    )
    .map_err(|e| e.to_string())?;
    let mut bars: BTreeMap<String, indicatif::ProgressBar> = BTreeMap::new();
    let mut last: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut done: BTreeMap<String, Json> = BTreeMap::new();
    while done.len() < endpoints.len() {
        for ep in endpoints {
            if done.contains_key(ep) {
                continue;
            }
            let mut req = serde_json::Map::new();
            req.insert("op".into(), "ota-status".into());
            req.insert("endpoint".into(), ep.clone().into());
            let a = client.call(req)?;
            let r = a["value"].clone();
            let state = r["state"].as_str().unwrap_or("?").to_string();
            let acked = r["acknowledged"].as_u64().unwrap_or(0);
            let step = r["step"].as_str().unwrap_or("").to_string();
            if tty {
                let bar = bars.entry(ep.clone()).or_insert_with(|| {
                    let b = multi.add(indicatif::ProgressBar::new(
                        r["bytes"].as_u64().unwrap_or(0),
                    ));
                    b.set_style(style.clone());
                    b.set_prefix(ep.clone());
                    b
                });
                bar.set_position(acked);
                bar.set_message(format!("{state} {step}"));
            } else if last.get(ep) != Some(&(state.clone(), acked / (64 * 1024))) {
                // A line when the state changes, and every 64 KiB.
                let line = if json {
                    r.to_string()
                } else {
                    format!(
                        "{ep} {state} {}% ({acked}/{} bytes) {step}",
                        r["progress"], r["bytes"]
                    )
                };
                println!("{line}");
                last.insert(ep.clone(), (state.clone(), acked / (64 * 1024)));
            }
            if matches!(state.as_str(), "UPDATED" | "FAILED") || a["result"] != "CONTENT" {
                if let Some(b) = bars.get(ep) {
                    let why = r["error"].as_str().unwrap_or("");
                    b.finish_with_message(format!("{state} {why}"));
                }
                done.insert(ep.clone(), r);
            }
        }
        if done.len() < endpoints.len() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut all = true;
    for (ep, r) in &done {
        let state = r["state"].as_str().unwrap_or("?");
        all &= state == "UPDATED";
        if !json {
            match state {
                "UPDATED" => match r["versionMismatch"].as_str() {
                    Some(why) => println!("{ep}: UPDATED, version unverified: {why}"),
                    None => println!(
                        "{ep}: UPDATED, runs {}",
                        r["currentVersion"].as_str().unwrap_or("?")
                    ),
                },
                s => println!("{ep}: {s}: {}", r["error"].as_str().unwrap_or("")),
            }
        }
    }
    Ok(all)
}
