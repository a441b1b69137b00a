//! `lwm2m-gw bootstrap ...`: enrol devices with the gateway's bootstrap
//! server, list and show their state, remove them, trigger a re-bootstrap.

use crate::bootstrap::entry::{parse_csv, ImportFile};
use crate::bootstrap::EntrySpec;
use serde_json::{json, Value as Json};
use std::path::Path;

/// A bootstrap subcommand.
#[derive(Debug)]
pub enum BsCommand {
    /// `bootstrap add EP` with the flags in the spec.
    Add(Box<EntrySpec>),
    /// `bootstrap import FILE` (TOML `[[device]]` tables, or CSV).
    Import(std::path::PathBuf),
    /// `bootstrap list`.
    List,
    /// `bootstrap show EP`.
    Show(String),
    /// `bootstrap rm EP`.
    Rm(String),
    /// `bootstrap trigger EP`.
    Trigger(String),
}

/// Parses the words after `bootstrap`; `spec` holds the flags given.
pub fn parse(words: &[&str], spec: EntrySpec) -> Result<BsCommand, String> {
    Ok(match words {
        ["add", ep] => BsCommand::Add(Box::new(EntrySpec {
            endpoint: ep.to_string(),
            ..spec
        })),
        ["import", f] => BsCommand::Import(f.into()),
        ["list"] => BsCommand::List,
        ["show", ep] => BsCommand::Show(ep.to_string()),
        ["rm", ep] => BsCommand::Rm(ep.to_string()),
        ["trigger", ep] => BsCommand::Trigger(ep.to_string()),
        _ => {
            return Err(
                "bootstrap takes add EP [flags], import FILE, list, show EP, rm EP or trigger EP"
                    .into(),
            )
        }
    })
}

/// The control-socket request of a subcommand; entries are checked here
/// first, so a bad line names its line and nothing is sent.
pub fn request(cmd: BsCommand) -> Result<Json, String> {
    Ok(match cmd {
        BsCommand::Add(spec) => {
            let e = spec.build(Path::new(".")).map_err(|e| e.0)?;
            json!({"op": "bootstrap-add", "entries": [e]})
        }
        BsCommand::Import(file) => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let base = file.parent().unwrap_or(Path::new("."));
            let specs: Vec<(usize, EntrySpec)> = if file
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("csv"))
            {
                parse_csv(&text).map_err(|e| format!("{}: {e}", file.display()))?
            } else {
                let parsed: ImportFile =
                    toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
                // TOML tables carry no line of their own: number them.
                parsed
                    .device
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| (i + 1, s))
                    .collect()
            };
            let mut entries = Vec::new();
            for (n, s) in specs {
                let what = if file
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("csv"))
                {
                    format!("line {n}")
                } else {
                    format!("[[device]] #{n}")
                };
                entries.push(
                    s.build(base)
                        .map_err(|e| format!("{}: {what}: {e}", file.display()))?,
                );
            }
            json!({"op": "bootstrap-add", "entries": entries})
        }
        BsCommand::List => json!({"op": "bootstrap-list"}),
        BsCommand::Show(ep) => json!({"op": "bootstrap-show", "endpoint": ep}),
        BsCommand::Rm(ep) => json!({"op": "bootstrap-rm", "endpoint": ep}),
        BsCommand::Trigger(ep) => json!({"op": "bootstrap-trigger", "endpoint": ep}),
    })
}

/// Prints `bootstrap list` as a table.
pub fn print_list(list: &[Json]) {
    println!(
        "{:<24} {:<10} {:<8} {:<12} DETAIL",
        "ENDPOINT", "BOOTSTRAP", "SERVER", "STATE"
    );
    for e in list {
        let st = &e["bootstrap"];
        println!(
            "{:<24} {:<10} {:<8} {:<12} {}",
            e["endpoint"].as_str().unwrap_or(""),
            e["bootstrapSecurity"]["mode"].as_str().unwrap_or(""),
            e["serverSecurity"].as_str().unwrap_or(""),
            st["state"].as_str().unwrap_or("?"),
            detail(st)
        );
    }
    println!("{} bootstrap entries", list.len());
}

/// Prints `bootstrap show` as lines of label and value.
pub fn print_one(e: &Json) {
    let st = &e["bootstrap"];
    let line = |k: &str, v: String| println!("{k:<18} {v}");
    line("endpoint", e["endpoint"].as_str().unwrap_or("").into());
    line("profile", e["profile"].as_str().unwrap_or("").into());
    line(
        "bootstrap over",
        match e["bootstrapSecurity"]["mode"].as_str() {
            Some("NO_SEC") | None => "plain CoAP".into(),
            Some(m) => format!("DTLS ({m})"),
        },
    );
    line(
        "server account",
        e["serverSecurity"].as_str().unwrap_or("").into(),
    );
    line(
        "server URI",
        e["serverUri"]
            .as_str()
            .unwrap_or("(from the address the request reached)")
            .into(),
    );
    line("lifetime (s)", e["lifetime"].to_string());
    line("binding", e["binding"].as_str().unwrap_or("").into());
    line("state", st["state"].as_str().unwrap_or("?").into());
    let d = detail(st);
    if !d.is_empty() {
        line("", d);
    }
    line("attempts", st["attempts"].to_string());
}

fn detail(st: &Json) -> String {
    match st["state"].as_str() {
        Some("in progress") => format!("waiting on {}", st["step"].as_str().unwrap_or("?")),
        Some("failed") => match st["code"].as_str() {
            Some(c) => format!("{} ({c})", st["reason"].as_str().unwrap_or("")),
            None => st["reason"].as_str().unwrap_or("").into(),
        },
        _ => String::new(),
    }
}
