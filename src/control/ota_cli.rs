//! `lwm2m-gw ota ...`: add images to the gateway's store, list and remove
//! them, start, watch and cancel updates.

use serde_json::{json, Value as Json};
use std::path::PathBuf;

/// The flags `ota` subcommands take.
#[derive(Debug, Default, Clone)]
pub struct OtaFlags {
    /// `--kind firmware|software`.
    pub kind: Option<String>,
    /// `--title T`.
    pub title: Option<String>,
    /// `--version V`.
    pub version: Option<String>,
    /// `--block-size N`.
    pub block_size: Option<u32>,
    /// `--activate`.
    pub activate: bool,
    /// `--strategy push|pull|auto`.
    pub strategy: Option<String>,
}

/// An `ota` subcommand.
#[derive(Debug)]
pub enum OtaCommand {
    /// `ota add FILE`.
    Add(PathBuf, OtaFlags),
    /// `ota list`.
    List,
    /// `ota rm ID`.
    Rm(String),
    /// `ota start EP ID` or `ota start --profile NAME ID`.
    Start {
        /// The device.
        endpoint: Option<String>,
        /// Or every device of this profile.
        profile: Option<String>,
        /// Image id or prefix.
        image: String,
        /// Block size and activation.
        flags: OtaFlags,
    },
    /// `ota status [EP]`.
    Status(Option<String>),
    /// `ota cancel EP`.
    Cancel(String),
}

/// Parses the words after `ota`.
pub fn parse(
    words: &[&str],
    flags: OtaFlags,
    profile: Option<String>,
) -> Result<OtaCommand, String> {
    Ok(match words {
        ["add", file] => {
            if flags.kind.is_none() || flags.title.is_none() || flags.version.is_none() {
                return Err(
                    "ota add FILE needs --kind firmware|software --title T --version V".into(),
                );
            }
            // The gateway opens the file: give it the whole path.
            let p = std::path::Path::new(file);
            let abs = std::fs::canonicalize(p).map_err(|e| format!("{file}: {e}"))?;
            OtaCommand::Add(abs, flags)
        }
        ["list"] => OtaCommand::List,
        ["rm", id] => OtaCommand::Rm(id.to_string()),
        ["start", image] if profile.is_some() => OtaCommand::Start {
            endpoint: None,
            profile,
            image: image.to_string(),
            flags,
        },
        ["start", ep, image] => OtaCommand::Start {
            endpoint: Some(ep.to_string()),
            profile: None,
            image: image.to_string(),
            flags,
        },
        ["status"] => OtaCommand::Status(None),
        ["status", ep] => OtaCommand::Status(Some(ep.to_string())),
        ["cancel", ep] => OtaCommand::Cancel(ep.to_string()),
        _ => {
            return Err(
                "ota takes add FILE --kind K --title T --version V, list, rm ID, \
                 start EP ID [--strategy push|pull|auto] [--block-size N] [--activate] [--wait], \
                 start --profile NAME ID, \
                 status [EP] or cancel EP"
                    .into(),
            )
        }
    })
}

/// The control-socket request of a subcommand.
pub fn request(cmd: &OtaCommand) -> Json {
    match cmd {
        OtaCommand::Add(file, f) => json!({
            "op": "ota-add",
            "file": file.display().to_string(),
            "kind": f.kind,
            "title": f.title,
            "version": f.version,
        }),
        OtaCommand::List => json!({"op": "ota-list"}),
        OtaCommand::Rm(id) => json!({"op": "ota-rm", "image": id}),
        OtaCommand::Start {
            endpoint,
            profile,
            image,
            flags,
        } => {
            let mut r = json!({"op": "ota-start", "image": image, "activate": flags.activate});
            if let Some(ep) = endpoint {
                r["endpoint"] = ep.clone().into();
            }
            if let Some(p) = profile {
                r["profile"] = p.clone().into();
            }
            if let Some(b) = flags.block_size {
                r["blockSize"] = b.into();
            }
            if let Some(s) = &flags.strategy {
                r["strategy"] = s.clone().into();
            }
            r
        }
        OtaCommand::Status(ep) => match ep {
            Some(ep) => json!({"op": "ota-status", "endpoint": ep}),
            None => json!({"op": "ota-status"}),
        },
        OtaCommand::Cancel(ep) => json!({"op": "ota-cancel", "endpoint": ep}),
    }
}

/// Prints `ota list` as a table.
pub fn print_images(list: &[Json]) {
    println!(
        "{:<14} {:<9} {:<20} {:<12} {:>10} IN USE",
        "ID", "KIND", "TITLE", "VERSION", "BYTES"
    );
    for i in list {
        println!(
            "{:<14} {:<9} {:<20} {:<12} {:>10} {}",
            i["id"].as_str().unwrap_or("").get(..12).unwrap_or(""),
            i["kind"].as_str().unwrap_or(""),
            i["title"].as_str().unwrap_or(""),
            i["version"].as_str().unwrap_or(""),
            i["size"],
            if i["inUse"] == true { "yes" } else { "" }
        );
    }
    println!("{} images", list.len());
}

/// Prints updates as a table: what each waits on, always.
pub fn print_updates(list: &[Json]) {
    println!(
        "{:<20} {:<9} {:<11} {:>5} {:<12} WAITING ON / WHY",
        "ENDPOINT", "KIND", "STATE", "%", "VERSION"
    );
    for r in list {
        println!(
            "{:<20} {:<9} {:<11} {:>5} {:<12} {}",
            r["endpoint"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["progress"],
            r["version"].as_str().unwrap_or(""),
            detail(r)
        );
    }
}

/// One update in lines of label and value.
pub fn print_update(r: &Json) {
    let line = |k: &str, v: String| println!("{k:<18} {v}");
    line("endpoint", r["endpoint"].as_str().unwrap_or("").into());
    line(
        "image",
        format!(
            "{} {} {} ({})",
            r["kind"].as_str().unwrap_or(""),
            r["title"].as_str().unwrap_or(""),
            r["version"].as_str().unwrap_or(""),
            r["image"].as_str().unwrap_or("").get(..12).unwrap_or("")
        ),
    );
    line("state", r["state"].as_str().unwrap_or("").into());
    line("waiting on", detail(r));
    line(
        "transfer",
        format!(
            "{} of {} bytes ({}%), {} blocks sent of {} bytes, {} retries",
            r["acknowledged"],
            r["bytes"],
            r["progress"],
            r["blocksSent"],
            r["blockSize"],
            r["retries"]
        ),
    );
    if let Some(a) = r["lastAnswer"].as_str() {
        line("device answered", a.into());
    }
    if !r["deviceState"].is_null() || !r["deviceResult"].is_null() {
        line(
            "device state",
            format!(
                "state {} result {}{}",
                r["deviceState"],
                r["deviceResult"],
                r["deviceResultText"]
                    .as_str()
                    .map_or(String::new(), |t| format!(" ({t})"))
            ),
        );
    }
    if let Some(v) = r["currentVersion"].as_str() {
        line("device version", v.into());
    }
    line(
        "since progress",
        format!(
            "{:.1} s",
            r["sinceProgressMs"].as_u64().unwrap_or(0) as f64 / 1000.0
        ),
    );
}

fn detail(r: &Json) -> String {
    match r["state"].as_str() {
        Some("FAILED") => r["error"].as_str().unwrap_or("").to_string(),
        Some("UPDATED") => match r["versionMismatch"].as_str() {
            Some(why) => format!("done, the version unverified: {why}"),
            None => format!(
                "done; the device runs {}",
                r["currentVersion"].as_str().unwrap_or("?")
            ),
        },
        _ => r["step"].as_str().unwrap_or("").to_string(),
    }
}
