//! Executes admin commands against a narrow view of the gateway: the one
//! command path behind the control socket, the MQTT RPC topic and the CLI.

use super::request::Request;
use crate::credentials::Credential;
use crate::profile::Profile;
use crate::server::command::Answer;
use crate::server::{Registration, Server};
use crate::store::{Store, StoreError};
use serde_json::{json, Value as Json};
use std::time::Instant;

/// What the commands need of a running gateway.
pub trait Backend {
    /// The LwM2M server core.
    fn server(&self) -> &Server;
    /// The LwM2M server core, to change.
    fn server_mut(&mut self) -> &mut Server;
    /// The store that provisioning writes to.
    fn store(&self) -> &Store;
    /// A fresh handle for a command whose answer comes later.
    fn new_handle(&mut self) -> u64;
    /// The gateway's counters, transports included.
    fn stats(&self) -> Json;
    /// Credentials changed: whatever checks handshakes must see the new ones.
    fn credentials_changed(&mut self);
}

/// What became of a command.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Answered at once.
    Done(Answer),
    /// On its way to the device: `Server::poll_answer` brings the answer
    /// under this handle.
    Started(u64),
    /// The caller asked for a report stream; the transport that can carry
    /// one keeps it.
    Watch(Option<String>),
}

/// Runs one command.
pub fn execute(b: &mut impl Backend, now: Instant, req: Request) -> Outcome {
    let changes_credentials = req.changes_credentials();
    let outcome = match req {
        Request::Command {
            endpoint,
            method,
            params,
        } => {
            let h = b.new_handle();
            b.server_mut().command(now, h, &endpoint, &method, &params);
            return Outcome::Started(h);
        }
        Request::Watch(ep) => return Outcome::Watch(ep),
        Request::Devices => {
            let mut regs: Vec<_> = b.server().registry().iter().collect();
            regs.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
            let list: Vec<Json> = regs.into_iter().map(device_json).collect();
            Answer::ok("CONTENT", Some(Json::Array(list)))
        }
        Request::Device(ep) => device(b.server(), &ep),
        Request::Stats => Answer::ok("CONTENT", Some(b.stats())),
        other => provision(b, other).unwrap_or_else(|a| a),
    };
    if changes_credentials {
        b.credentials_changed();
    }
    Outcome::Done(outcome)
}

/// One device as `lwm2m-gw device EP` shows it, registered or not.
fn device(server: &Server, ep: &str) -> Answer {
    let reg = server.registry().get(ep);
    let cred = server.credential(ep);
    let latest = server.latest_json(ep);
    let known = reg.is_some()
        || cred.is_some()
        || latest["telemetry"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
        || latest["attributes"]
            .as_object()
            .is_some_and(|m| !m.is_empty());
    if !known {
        return Answer::fail(
            "DEVICE_NOT_REGISTERED",
            format!("no registration or credential for endpoint {ep:?}"),
        );
    }
    let mut v = match reg {
        Some(reg) => device_json(reg),
        None => json!({"endpoint": ep}),
    };
    v["registered"] = reg.is_some().into();
    v["credential"] = cred.map_or(Json::Null, |c| c.to_json());
    v["attributes"] = latest["attributes"].clone();
    v["telemetry"] = latest["telemetry"].clone();
    Answer::ok("CONTENT", Some(v))
}

/// Profile and credential administration: checked by the server, stored
/// and flushed before the answer, in force at once.
fn provision(b: &mut impl Backend, req: Request) -> Result<Answer, Answer> {
    let stored = |r: Result<(), StoreError>, store: &Store| {
        r.and_then(|_| store.flush().map(|_| ()))
            .map_err(|e| Answer::fail("INTERNAL_SERVER_ERROR", format!("store: {e}")))
    };
    match req {
        Request::Profiles => {
            let server = b.server();
            let list: Vec<Json> = server
                .profiles()
                .into_iter()
                .map(|p| {
                    let users = server
                        .credentials()
                        .iter()
                        .filter(|c| c.profile == p.name)
                        .count();
                    json!({"name": p.name, "objects": p.objects,
                        "resources": p.resources.len(), "devices": users})
                })
                .collect();
            Ok(Answer::ok("CONTENT", Some(Json::Array(list))))
        }
        Request::Profile(name) => {
            let p = b
                .server()
                .profile(&name)
                .ok_or_else(|| Answer::fail("NOT_FOUND", format!("no profile {name:?}")))?;
            let toml = toml::to_string(p).unwrap_or_default();
            Ok(Answer::ok("CONTENT", Some(Json::from(toml))))
        }
        Request::ProfilePut(text) => {
            let p = Profile::from_toml(&text).map_err(|e| Answer::bad_request(e.0))?;
            let name = p.name.clone();
            let existed = b.server().profile(&name).is_some();
            if name == crate::profile::DEFAULT && !existed {
                return Err(Answer::bad_request("\"default\" is reserved"));
            }
            b.server_mut()
                .set_profile(p.clone())
                .map_err(Answer::bad_request)?;
            stored(b.store().put_profile(&p), b.store())?;
            log::info!(
                "profile {name:?} {}",
                if existed { "replaced" } else { "added" }
            );
            Ok(Answer::ok(
                if existed { "CHANGED" } else { "CREATED" },
                None,
            ))
        }
        Request::ProfileRm(name) => {
            b.server_mut()
                .remove_profile(&name)
                .map_err(Answer::bad_request)?;
            stored(b.store().remove_profile(&name), b.store())?;
            log::info!("profile {name:?} removed");
            Ok(Answer::ok("DELETED", None))
        }
        Request::Credentials => {
            let list: Vec<Json> = b
                .server()
                .credentials()
                .into_iter()
                .map(Credential::to_json)
                .collect();
            Ok(Answer::ok("CONTENT", Some(Json::Array(list))))
        }
        Request::DeviceAdd(c) => add_credentials(b, vec![c]),
        Request::DeviceImport(list) => add_credentials(b, list),
        Request::DeviceRm(ep) => {
            if b.server_mut().remove_credential(&ep).is_none() {
                return Err(Answer::fail(
                    "NOT_FOUND",
                    format!("no credential for {ep:?}"),
                ));
            }
            stored(b.store().remove_credential(&ep), b.store())?;
            log::info!("ep={ep} credential removed");
            Ok(Answer::ok("DELETED", None))
        }
        other => Err(Answer::bad_request(format!(
            "not a provisioning request: {other:?}"
        ))),
    }
}

/// Adds credentials all or nothing: a failure puts the earlier ones back.
fn add_credentials(b: &mut impl Backend, list: Vec<Credential>) -> Result<Answer, Answer> {
    let server = b.server_mut();
    let mut undo: Vec<(String, Option<Credential>)> = Vec::new();
    for c in &list {
        let check = crate::credentials::check_endpoint(&c.endpoint)
            .map_err(|e| e.0)
            .and_then(|_| {
                let before = server.credential(&c.endpoint).cloned();
                server.set_credential(c.clone())?;
                undo.push((c.endpoint.clone(), before));
                Ok(())
            });
        if let Err(e) = check {
            for (ep, before) in undo.into_iter().rev() {
                server.remove_credential(&ep);
                if let Some(b) = before {
                    server.restore_credential(b);
                }
            }
            return Err(Answer::bad_request(format!("{}: {e}", c.endpoint)));
        }
    }
    let store = b.store();
    for c in &list {
        store
            .put_credential(c)
            .and_then(|_| store.flush().map(|_| ()))
            .map_err(|e| Answer::fail("INTERNAL_SERVER_ERROR", format!("store: {e}")))?;
        log::info!(
            "ep={} credential {} with profile {:?} stored",
            c.endpoint,
            c.security.mode(),
            c.profile
        );
    }
    Ok(Answer::ok("CHANGED", Some(Json::from(list.len()))))
}

/// One registration as control-socket JSON.
pub fn device_json(r: &Registration) -> Json {
    let objects: Vec<String> = r
        .objects
        .iter()
        .map(|o| match (o.instance, o.version) {
            (Some(i), _) => format!("/{}/{i}", o.object),
            (None, Some(v)) => format!("/{}_{v}", o.object),
            (None, None) => format!("/{}", o.object),
        })
        .collect();
    json!({
        "endpoint": r.endpoint,
        "registrationId": r.id.to_string(),
        "address": r.peer.to_string(),
        "lifetime": r.lifetime,
        "binding": r.binding.to_string(),
        "queueMode": r.queue_mode,
        "lwm2mVersion": r.lwm2m_version.to_string(),
        "rootPath": r.root_path(),
        "contentFormats": r.content_formats,
        "objects": objects,
        "registeredAt": r.registered_at_ms,
        "lastSeen": r.updated_at_ms,
    })
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
