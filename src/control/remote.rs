//! The CLI subcommands that talk to a running gateway over its control
//! socket: rpc, devices, watch, stats and the admin requests (credentials,
//! profiles, bootstrap entries, updates), and how their answers print.

use super::common::Common;
use crate::control::socket::Client;
use serde_json::Value as Json;
use std::time::Duration;

/// Where the systemd unit's gateway listens (`RuntimeDirectory=lwm2m-gw`).
const SYSTEMD_SOCKET: &str = "/run/lwm2m-gw/control.sock";

pub(super) fn connect(c: &Common) -> Result<Client, Box<dyn std::error::Error>> {
    let cfg = c.config()?;
    let timeout = Duration::from_secs(c.timeout_s.unwrap_or(120).max(1));
    let mut path = cfg.control_socket();
    // An operator's shell has no $RUNTIME_DIRECTORY: find the service's
    // socket when nothing more specific was given and none is here.
    let unspecific = c.control_socket.is_none() && c.config.is_none() && c.data_dir.is_none();
    if unspecific && !path.exists() && std::path::Path::new(SYSTEMD_SOCKET).exists() {
        path = SYSTEMD_SOCKET.into();
    }
    Ok(Client::connect(&path, timeout)?)
}

/// Splits `Read {"id":"/3/0/9"}` into the method and its JSON parameters.
fn parse_command(cmd: &str, params: Option<&str>) -> Result<(String, Json), String> {
    let (method, rest) = match params {
        Some(p) => (cmd.trim(), p.trim()),
        None => match cmd.trim().split_once(char::is_whitespace) {
            Some((m, rest)) => (m, rest.trim()),
            None => (cmd.trim(), ""),
        },
    };
    if method.is_empty() {
        return Err("no method given".into());
    }
    let params = if rest.is_empty() {
        Json::Object(Default::default())
    } else {
        serde_json::from_str(rest).map_err(|e| format!("parameters are not JSON ({e}): {rest}"))?
    };
    Ok((method.to_string(), params))
}

pub(super) fn rpc(
    c: &Common,
    ep: &str,
    cmd: &str,
    params: Option<&str>,
) -> Result<bool, Box<dyn std::error::Error>> {
    let (method, params) = parse_command(cmd, params)?;
    let mut client = connect(c)?;
    let mut req = serde_json::Map::new();
    req.insert("op".into(), "rpc".into());
    req.insert("endpoint".into(), ep.into());
    req.insert("method".into(), method.into());
    req.insert("params".into(), params);
    if c.wait {
        req.insert("wait".into(), true.into());
    }
    let mut answer = client.call(req)?;
    let queued = answer.get("result").and_then(Json::as_str) == Some("QUEUED");
    show(c, &mut answer);
    if !queued {
        return Ok(is_success(&answer));
    }
    if !c.wait {
        // Held for the device: not a failure.
        return Ok(true);
    }
    let mut outcome = client
        .next_line()
        .map_err(|e| format!("no outcome yet ({e}); the request stays queued in the gateway"))?;
    show(c, &mut outcome);
    Ok(is_success(&outcome))
}

fn show(c: &Common, answer: &mut Json) {
    if let Some(m) = answer.as_object_mut() {
        m.remove("id");
    }
    if c.json {
        println!("{answer}");
    } else {
        print_answer(answer);
    }
}

fn is_success(a: &Json) -> bool {
    matches!(
        a.get("result").and_then(Json::as_str),
        Some("CONTENT" | "CHANGED" | "CREATED" | "DELETED" | "VALID" | "CONTINUE")
    )
}

/// Streams reports until `--count` is reached, or forever.
pub(super) fn watch(c: &Common, ep: Option<&str>) -> Result<bool, Box<dyn std::error::Error>> {
    use std::io::Write;
    let mut client = connect(c)?;
    let mut req = serde_json::Map::new();
    req.insert("op".into(), "watch".into());
    if let Some(ep) = ep {
        req.insert("endpoint".into(), ep.into());
    }
    let first = client.call(req)?;
    if first.get("result").and_then(Json::as_str) != Some("CONTENT") {
        print_answer(&first);
        return Ok(false);
    }
    client.set_timeout(c.timeout_s.map(|s| Duration::from_secs(s.max(1))))?;
    let mut seen = 0;
    let out = std::io::stdout();
    while c.count.is_none_or(|n| seen < n) {
        let mut r = client.next_line()?;
        seen += 1;
        if let Some(m) = r.as_object_mut() {
            m.remove("id");
        }
        let mut out = out.lock();
        if c.json {
            writeln!(out, "{r}")?;
        } else {
            let values: Vec<String> = r["values"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|x| format!("{}={}", x["path"].as_str().unwrap_or("?"), x["value"]))
                        .collect()
                })
                .unwrap_or_default();
            writeln!(
                out,
                "{} {} {}",
                r["endpoint"].as_str().unwrap_or("?"),
                r["origin"].as_str().unwrap_or("?"),
                values.join(" ")
            )?;
        }
        out.flush()?;
    }
    Ok(true)
}

/// The credential and the latest values of `device EP`.
fn print_provisioning(value: &Json, ago: &dyn Fn(&Json) -> String) {
    let cred = &value["credential"];
    if cred.is_object() {
        println!(
            "{:<16} {} (profile {})",
            "security",
            cred["mode"].as_str().unwrap_or("?"),
            cred["profile"].as_str().unwrap_or("?")
        );
    } else {
        println!("{:<16} none provisioned (default profile)", "security");
    }
    for (section, label) in [("attributes", "attributes"), ("telemetry", "telemetry")] {
        let Some(m) = value[section].as_object() else {
            continue;
        };
        if m.is_empty() {
            continue;
        }
        println!("{label}:");
        for (k, v) in m {
            println!("  {k:<24} {:<24} {}", v["value"].to_string(), ago(&v["ts"]));
        }
    }
}

/// One administration request to the running gateway; prints its answer.
pub(super) fn admin(c: &Common, req: Json) -> Result<bool, Box<dyn std::error::Error>> {
    let mut client = connect(c)?;
    let Json::Object(m) = req else {
        return Err("internal: request is not an object".into());
    };
    let mut a = client.call(m)?;
    let ok = is_success(&a);
    show(c, &mut a);
    Ok(ok)
}

pub(super) fn bootstrap(
    c: &Common,
    cmd: super::bootstrap_cli::BsCommand,
) -> Result<bool, Box<dyn std::error::Error>> {
    use super::bootstrap_cli::{print_list, print_one, request, BsCommand};
    let table = matches!(cmd, BsCommand::List | BsCommand::Show(_));
    let Json::Object(req) = request(cmd)? else {
        return Err("internal: request is not an object".into());
    };
    let mut client = connect(c)?;
    let mut a = client.call(req)?;
    let ok = is_success(&a);
    match &a["value"] {
        Json::Array(list) if table && ok && !c.json => print_list(list),
        v @ Json::Object(_) if table && ok && !c.json => print_one(v),
        _ => show(c, &mut a),
    }
    Ok(ok)
}

pub(super) fn ota(
    c: &Common,
    cmd: super::ota_cli::OtaCommand,
) -> Result<bool, Box<dyn std::error::Error>> {
    use super::ota_cli::{print_images, print_update, print_updates, request, OtaCommand};
    let Json::Object(req) = request(&cmd) else {
        return Err("internal: request is not an object".into());
    };
    let mut client = connect(c)?;
    let mut a = client.call(req)?;
    let ok = is_success(&a);
    if !ok || c.json && !(c.wait && matches!(cmd, OtaCommand::Start { .. })) {
        show(c, &mut a);
        return Ok(ok);
    }
    match (&cmd, &a["value"]) {
        (OtaCommand::List, Json::Array(l)) => print_images(l),
        (OtaCommand::Status(None), Json::Array(l)) => print_updates(l),
        (OtaCommand::Status(Some(_)) | OtaCommand::Cancel(_), v) => print_update(v),
        (OtaCommand::Add(..), v) => println!("{v}"),
        (OtaCommand::Start { .. }, v) if c.wait => {
            let eps: Vec<String> = v["started"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|r| r["endpoint"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for r in v["refused"].as_array().into_iter().flatten() {
                eprintln!("not started: {} ({})", r["endpoint"], r["error"]);
            }
            return super::ota_wait::wait(&mut client, &eps, c.json);
        }
        (OtaCommand::Start { .. }, v) => {
            let started = v["started"].as_array().map_or(0, Vec::len);
            println!("{started} updates started");
            for r in v["refused"].as_array().into_iter().flatten() {
                eprintln!("not started: {} ({})", r["endpoint"], r["error"]);
            }
        }
        _ => print_answer(&a),
    }
    Ok(ok)
}

pub(super) fn stats(c: &Common) -> Result<bool, Box<dyn std::error::Error>> {
    let mut client = connect(c)?;
    let mut req = serde_json::Map::new();
    req.insert("op".into(), "stats".into());
    let mut a = client.call(req)?;
    if c.json {
        show(c, &mut a);
    } else if let Some(m) = a["value"].as_object() {
        for (k, v) in m {
            println!("{k:<20} {v}");
        }
    } else {
        print_answer(&a);
    }
    Ok(is_success(&a))
}

fn print_answer(a: &Json) {
    println!("{}", a.get("result").and_then(Json::as_str).unwrap_or("?"));
    if let Some(v) = a.get("value") {
        match v {
            Json::String(s) => println!("{s}"),
            Json::Object(_) | Json::Array(_) => {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            }
            other => println!("{other}"),
        }
    }
    if let Some(e) = a.get("error").and_then(Json::as_str) {
        eprintln!("error: {e}");
    }
}

pub(super) fn devices(c: &Common, one: Option<&str>) -> Result<bool, Box<dyn std::error::Error>> {
    let mut client = connect(c)?;
    let mut req = serde_json::Map::new();
    match one {
        Some(ep) => {
            req.insert("op".into(), "device".into());
            req.insert("endpoint".into(), ep.into());
        }
        None => {
            req.insert("op".into(), "devices".into());
        }
    }
    let answer = client.call(req)?;
    if !is_success(&answer) {
        print_answer(&answer);
        return Ok(false);
    }
    let value = answer.get("value").cloned().unwrap_or(Json::Null);
    if c.json {
        println!("{value}");
        return Ok(true);
    }
    let now = crate::clock::unix_ms();
    let ago = |ms: &Json| -> String {
        let t = ms.as_u64().unwrap_or(0);
        format!("{}s ago", now.saturating_sub(t) / 1000)
    };
    match one {
        Some(_) if value["registered"] == Json::Bool(false) => {
            println!(
                "{:<16} {}",
                "endpoint",
                value["endpoint"].as_str().unwrap_or("")
            );
            println!("{:<16} not registered", "registration");
            print_provisioning(&value, &ago);
        }
        Some(_) => {
            for (k, label) in [
                ("endpoint", "endpoint"),
                ("registrationId", "registration"),
                ("address", "address"),
                ("lifetime", "lifetime (s)"),
                ("binding", "binding"),
                ("queueMode", "queue mode"),
                ("lwm2mVersion", "LwM2M version"),
                ("rootPath", "root path"),
                ("contentFormats", "content formats"),
                ("objects", "objects"),
            ] {
                let v = &value[k];
                let text = match v {
                    Json::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                        .collect::<Vec<_>>()
                        .join(" "),
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("{label:<16} {text}");
            }
            println!("{:<16} {}", "registered", ago(&value["registeredAt"]));
            println!("{:<16} {}", "last seen", ago(&value["lastSeen"]));
            print_provisioning(&value, &ago);
        }
        None => {
            let list = value.as_array().cloned().unwrap_or_default();
            println!(
                "{:<24} {:<40} {:>8} {:<7} {:<5} {:<10} OBJECTS",
                "ENDPOINT", "ADDRESS", "LIFETIME", "BINDING", "LWM2M", "LAST SEEN"
            );
            for d in &list {
                let objects: Vec<&str> = d["objects"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Json::as_str).collect())
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<40} {:>8} {:<7} {:<5} {:<10} {}",
                    d["endpoint"].as_str().unwrap_or(""),
                    d["address"].as_str().unwrap_or(""),
                    d["lifetime"],
                    d["binding"].as_str().unwrap_or(""),
                    d["lwm2mVersion"].as_str().unwrap_or(""),
                    ago(&d["lastSeen"]),
                    objects.join(" ")
                );
            }
            println!("{} devices", list.len());
        }
    }
    Ok(true)
}
