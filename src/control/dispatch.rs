//! Executes admin commands against a narrow view of the gateway: the one
//! command path behind the control socket, the MQTT RPC topic and the CLI.

use super::request::Request;
use crate::bootstrap::{Bootstrap, Entry};
use crate::credentials::{Credential, Security};
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
    /// The bootstrap server, when it is on.
    fn bootstrap(&mut self) -> Option<&mut Bootstrap> {
        None
    }
    /// Bootstrap entries changed: the bootstrap DTLS port must see them.
    fn bootstrap_entries_changed(&mut self) {}
    /// The update machine, when there is one.
    fn ota(&mut self) -> Option<&mut crate::ota::Ota> {
        None
    }
    /// Copies an image file into the store in the background; the answer
    /// comes later under `handle`.
    fn ota_add(
        &mut self,
        handle: u64,
        file: std::path::PathBuf,
        kind: crate::ota::Kind,
        title: String,
        version: String,
    ) {
        let _ = (handle, file, kind, title, version);
    }
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
            let server = b.server();
            let list: Vec<Json> = regs
                .into_iter()
                .map(|r| {
                    let mut j = device_json(r);
                    let cred = server.credential(&r.endpoint);
                    j["profile"] = cred.map(|c| c.profile.clone()).into();
                    j["security"] = cred.map_or("NO_SEC", |c| c.security.mode()).into();
                    j
                })
                .collect();
            Answer::ok("CONTENT", Some(Json::Array(list)))
        }
        Request::Device(ep) => device(b.server(), &ep),
        Request::Stats => Answer::ok("CONTENT", Some(b.stats())),
        Request::BootstrapTrigger(ep) => match trigger(b, now, &ep) {
            Ok(h) => return Outcome::Started(h),
            Err(a) => a,
        },
        r @ (Request::BootstrapAdd(_)
        | Request::BootstrapList
        | Request::BootstrapShow(_)
        | Request::BootstrapRm(_)) => bootstrap(b, now, r).unwrap_or_else(|a| a),
        Request::OtaAdd {
            file,
            kind,
            title,
            version,
        } => match ota_add(b, file, &kind, title, version) {
            Ok(h) => return Outcome::Started(h),
            Err(a) => a,
        },
        r @ (Request::OtaList
        | Request::OtaRm(_)
        | Request::OtaStart { .. }
        | Request::OtaStatus(_)
        | Request::OtaCancel(_)) => ota(b, now, r).unwrap_or_else(|a| a),
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
    if let Some(reg) = reg {
        v["models"] = models_json(server, reg);
    }
    v["registered"] = reg.is_some().into();
    v["credential"] = cred.map_or(Json::Null, |c| c.to_json());
    v["attributes"] = latest["attributes"].clone();
    v["telemetry"] = latest["telemetry"].clone();
    v["transportLog"] = server.transport_lines(ep);
    Answer::ok("CONTENT", Some(v))
}

/// Names from the model library for the objects a device registered,
/// at the versions it announced: `{"3303": {"name": "Temperature",
/// "resources": {"5700": "Sensor Value", ...}}}`. Objects without a model
/// are left out.
fn models_json(server: &Server, reg: &crate::server::registry::Registration) -> Json {
    let mut out = serde_json::Map::new();
    for link in &reg.objects {
        let key = link.object.to_string();
        if out.contains_key(&key) {
            continue;
        }
        let version = reg
            .objects
            .iter()
            .filter(|l| l.object == link.object)
            .find_map(|l| l.version);
        let Some(m) = server.models().get(link.object, version) else {
            continue;
        };
        let resources: serde_json::Map<String, Json> = m
            .resources
            .iter()
            .map(|r| (r.id.to_string(), Json::from(r.name.as_str())))
            .collect();
        out.insert(key, json!({"name": m.name, "resources": resources}));
    }
    Json::Object(out)
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

/// Bootstrap entries: checked against the profiles and every identity in
/// use, stored and flushed before the answer, in force at once.
fn bootstrap(b: &mut impl Backend, now: Instant, req: Request) -> Result<Answer, Answer> {
    let off = || {
        Answer::fail(
            "NOT_FOUND",
            "the bootstrap server is off (bootstrap.port and bootstrap.dtls_port are 0)",
        )
    };
    match req {
        Request::BootstrapList => {
            let bs = b.bootstrap().ok_or_else(off)?;
            let list: Vec<Json> = bs
                .entries()
                .into_iter()
                .map(|e| entry_json(bs, e))
                .collect();
            Ok(Answer::ok("CONTENT", Some(Json::Array(list))))
        }
        Request::BootstrapShow(ep) => {
            let bs = b.bootstrap().ok_or_else(off)?;
            let e = bs.entry(&ep).ok_or_else(|| {
                Answer::fail("NOT_FOUND", format!("no bootstrap entry for {ep:?}"))
            })?;
            Ok(Answer::ok("CONTENT", Some(entry_json(bs, e))))
        }
        Request::BootstrapRm(ep) => {
            let bs = b.bootstrap().ok_or_else(off)?;
            if bs.remove_entry(now, &ep).is_none() {
                return Err(Answer::fail(
                    "NOT_FOUND",
                    format!("no bootstrap entry for {ep:?}"),
                ));
            }
            b.store()
                .remove_bootstrap_entry(&ep)
                .and_then(|_| b.store().flush().map(|_| ()))
                .map_err(|e| Answer::fail("INTERNAL_SERVER_ERROR", format!("store: {e}")))?;
            b.bootstrap_entries_changed();
            log::info!("ep={ep} bootstrap entry removed");
            Ok(Answer::ok("DELETED", None))
        }
        Request::BootstrapAdd(mut list) => {
            for e in &mut list {
                let d = b
                    .server()
                    .profile(&e.profile)
                    .and_then(|p| p.bootstrap.clone());
                e.apply_defaults(d.as_ref());
            }
            check_entries(b, &list).map_err(Answer::bad_request)?;
            b.bootstrap().ok_or_else(off)?;
            for e in &list {
                b.store()
                    .put_bootstrap_entry(e)
                    .map_err(|e| Answer::fail("INTERNAL_SERVER_ERROR", format!("store: {e}")))?;
            }
            let bs = b.bootstrap().ok_or_else(off)?;
            let states: Vec<_> = list.iter().map(|e| bs.put_entry(e.clone())).collect();
            for st in &states {
                b.store()
                    .put_bootstrap_state(st)
                    .map_err(|e| Answer::fail("INTERNAL_SERVER_ERROR", format!("store: {e}")))?;
            }
            b.store()
                .flush()
                .map_err(|e| Answer::fail("INTERNAL_SERVER_ERROR", format!("store: {e}")))?;
            b.bootstrap_entries_changed();
            for e in &list {
                log::info!(
                    "ep={} bootstrap entry stored: bootstrap {}, server account {}, profile {:?}",
                    e.endpoint,
                    e.security.mode(),
                    e.server_security.mode(),
                    e.profile
                );
            }
            Ok(Answer::ok("CHANGED", Some(Json::from(list.len()))))
        }
        other => Err(Answer::bad_request(format!(
            "not a bootstrap request: {other:?}"
        ))),
    }
}

/// How an update of `ep` runs: what the command names, else its profile's
/// `[ota]` table, else push in 1024-byte blocks; coaps for a device with a
/// DTLS credential.
fn start_options(
    s: &Server,
    ep: &str,
    kind: crate::ota::Kind,
    strategy: Option<&str>,
    block_size: Option<u32>,
    activate: bool,
) -> Result<crate::ota::StartOptions, Answer> {
    let software = kind == crate::ota::Kind::Software;
    let prof = s.profile(&s.profile_name(ep)).and_then(|p| p.ota.clone());
    let named = strategy.map(str::to_string).or_else(|| {
        prof.as_ref()
            .and_then(|o| o.strategy_for(software).map(str::to_string))
    });
    let strategy = match named.map(|n| n.to_ascii_lowercase()).as_deref() {
        None | Some("push") => Some(crate::ota::Strategy::Push),
        Some("pull") => Some(crate::ota::Strategy::Pull),
        Some("auto") => None,
        Some(x) => {
            return Err(Answer::bad_request(format!(
                "strategy {x:?}: give push, pull or auto"
            )))
        }
    };
    Ok(crate::ota::StartOptions {
        block_size: block_size
            .or(prof.as_ref().and_then(|o| o.block_size))
            .unwrap_or(1024),
        activate: activate || prof.as_ref().and_then(|o| o.sw_activate).unwrap_or(false),
        strategy,
        secure: s.credential(ep).is_some_and(|c| c.security.is_secure()),
        require_version: prof.as_ref().and_then(|o| o.require_version),
    })
}

/// The platform assigned a package (shared attributes `fw_title` and
/// `fw_version`, or `sw_*`, with an optional SHA-256 `fw_checksum`): the
/// update starts from the local store, or is FAILED with why, so the
/// platform sees it either way. One already running or done for that
/// version is left alone.
pub fn ota_from_platform(
    b: &mut impl Backend,
    now: Instant,
    device: &str,
    kind: crate::ota::Kind,
    title: &str,
    version: &str,
    checksum: Option<&str>,
) {
    let unix = crate::clock::unix_ms();
    let opts = match start_options(b.server(), device, kind, None, None, false) {
        Ok(o) => o,
        Err(a) => {
            log::warn!("ep={device} platform OTA: {}", a.error.unwrap_or_default());
            return;
        }
    };
    let Some(o) = b.ota() else { return };
    if let Some(r) = o.record(device) {
        let same = r.image.kind == kind && r.image.title == title && r.image.version == version;
        // The same assignment comes again at every reconnect: a failed
        // update is not retried by it (no update loop), unless it failed
        // only because the image was missing and the image is here now.
        let waited_for_image =
            r.image.id.is_empty() && o.find_image(kind, title, version).is_some();
        if same && !waited_for_image {
            log::debug!(
                "ep={device} platform OTA {title} {version}: already {}",
                r.phase.name()
            );
            return;
        }
        if !r.phase.is_final() {
            log::info!(
                "ep={device} platform OTA {title} {version} replaces the running update to {}",
                r.image.version
            );
            let _ = o.cancel(device);
        }
    }
    let img = match o.find_image(kind, title, version) {
        Some(i) => i.clone(),
        None => {
            o.refuse(
                now,
                unix,
                device,
                kind,
                title,
                version,
                "image not in the local store",
            );
            return;
        }
    };
    if let Some(sum) = checksum.filter(|c| !c.is_empty()) {
        if !sum.eq_ignore_ascii_case(&img.id) {
            let why = format!("checksum {sum} is not the local image's SHA-256 {}", img.id);
            o.refuse(now, unix, device, kind, title, version, &why);
            return;
        }
    }
    match o.start(now, unix, device, img, opts) {
        Ok(_) => log::info!("ep={device} platform OTA {title} {version} started"),
        Err(e) => log::warn!("ep={device} platform OTA {title} {version}: {e}"),
    }
}

fn ota_add(
    b: &mut impl Backend,
    file: std::path::PathBuf,
    kind: &str,
    title: String,
    version: String,
) -> Result<u64, Answer> {
    let kind = crate::ota::Kind::parse(kind).map_err(|e| e.answer())?;
    if !file.is_absolute() {
        return Err(Answer::bad_request(format!(
            "{}: give the image file as an absolute path (the gateway opens it)",
            file.display()
        )));
    }
    if title.trim().is_empty() || version.trim().is_empty() {
        return Err(Answer::bad_request(
            "an image needs a --title and a --version",
        ));
    }
    b.ota()
        .ok_or_else(|| Answer::fail("NOT_FOUND", "OTA is off"))?;
    let h = b.new_handle();
    b.ota_add(h, file, kind, title, version);
    Ok(h)
}

fn ota(b: &mut impl Backend, now: Instant, req: Request) -> Result<Answer, Answer> {
    let unix = crate::clock::unix_ms();
    match req {
        Request::OtaList => {
            let o = b
                .ota()
                .ok_or_else(|| Answer::fail("NOT_FOUND", "OTA is off"))?;
            let list: Vec<Json> = o
                .images()
                .into_iter()
                .map(|i| {
                    let mut j = i.to_json();
                    j["inUse"] = Json::from(o.uses_image(&i.id));
                    j
                })
                .collect();
            Ok(Answer::ok("CONTENT", Some(Json::Array(list))))
        }
        Request::OtaRm(id) => {
            let o = b
                .ota()
                .ok_or_else(|| Answer::fail("NOT_FOUND", "OTA is off"))?;
            let img = o.remove_image(&id).map_err(|e| e.answer())?;
            log::info!(
                "OTA image {} ({} {}) removed",
                img.id,
                img.title,
                img.version
            );
            Ok(Answer::ok("DELETED", Some(img.to_json())))
        }
        Request::OtaStatus(ep) => {
            let o = b
                .ota()
                .ok_or_else(|| Answer::fail("NOT_FOUND", "OTA is off"))?;
            match ep {
                Some(ep) => o
                    .record(&ep)
                    .map(|r| Answer::ok("CONTENT", Some(r.to_json(unix))))
                    .ok_or_else(|| Answer::fail("NOT_FOUND", format!("no update of {ep}"))),
                None => Ok(Answer::ok(
                    "CONTENT",
                    Some(Json::Array(o.records().map(|r| r.to_json(unix)).collect())),
                )),
            }
        }
        Request::OtaCancel(ep) => {
            let o = b
                .ota()
                .ok_or_else(|| Answer::fail("NOT_FOUND", "OTA is off"))?;
            let r = o.cancel(&ep).map_err(|e| e.answer())?;
            Ok(Answer::ok("CHANGED", Some(r.to_json(unix))))
        }
        Request::OtaStart {
            endpoint,
            profile,
            image,
            block_size,
            activate,
            strategy,
        } => {
            let targets: Vec<String> = match (endpoint, profile) {
                (Some(ep), None) => vec![ep],
                // Every provisioned device of the profile (it may be asleep
                // or away) and every registered one.
                (None, Some(p)) => {
                    if b.server().profile(&p).is_none() {
                        return Err(Answer::fail("NOT_FOUND", format!("no profile {p:?}")));
                    }
                    let mut eps: std::collections::BTreeSet<String> = b
                        .server()
                        .credentials()
                        .into_iter()
                        .filter(|c| c.profile == p)
                        .map(|c| c.endpoint.clone())
                        .collect();
                    eps.extend(
                        b.server()
                            .registry()
                            .iter()
                            .filter(|r| b.server().profile_name(&r.endpoint) == p)
                            .map(|r| r.endpoint.clone()),
                    );
                    if eps.is_empty() {
                        return Err(Answer::fail(
                            "NOT_FOUND",
                            format!("no device has profile {p:?}"),
                        ));
                    }
                    eps.into_iter().collect()
                }
                _ => {
                    return Err(Answer::bad_request(
                        "ota start takes an endpoint or a profile",
                    ))
                }
            };
            let img = b
                .ota()
                .ok_or_else(|| Answer::fail("NOT_FOUND", "OTA is off"))?
                .resolve(&image)
                .map_err(|e| e.answer())?
                .clone();
            let kind = img.kind;
            let plans: Vec<(String, crate::ota::StartOptions)> = targets
                .iter()
                .map(|ep| {
                    start_options(
                        b.server(),
                        ep,
                        kind,
                        strategy.as_deref(),
                        block_size,
                        activate,
                    )
                    .map(|o| (ep.clone(), o))
                })
                .collect::<Result<_, _>>()?;
            let o = b
                .ota()
                .ok_or_else(|| Answer::fail("NOT_FOUND", "OTA is off"))?;
            // All or none: a running update of one device refuses the set.
            for ep in &targets {
                if let Some(r) = o.record(ep).filter(|r| !r.phase.is_final()) {
                    return Err(Answer::fail(
                        "CONFLICT",
                        format!(
                            "{ep} is being updated ({}, {}); cancel that first",
                            r.phase.name(),
                            r.image.version
                        ),
                    ));
                }
            }
            let mut started = Vec::new();
            let mut refused = Vec::new();
            for (ep, opts) in &plans {
                match o.start(now, unix, ep, img.clone(), *opts) {
                    Ok(r) => started.push(r.to_json(unix)),
                    Err(e) => refused.push(json!({"endpoint": ep, "error": e.to_string()})),
                }
            }
            if started.is_empty() {
                return Err(Answer::fail(
                    "CONFLICT",
                    refused
                        .iter()
                        .map(|r| format!("{}: {}", r["endpoint"], r["error"]))
                        .collect::<Vec<_>>()
                        .join("; "),
                ));
            }
            Ok(Answer::ok(
                "CREATED",
                Some(json!({"started": started, "refused": refused})),
            ))
        }
        other => Err(Answer::bad_request(format!(
            "not an OTA request: {other:?}"
        ))),
    }
}

/// What makes a set of entries refused as a whole: an unknown profile, a
/// bad endpoint, an endpoint twice, or a PSK identity that another
/// endpoint already uses (on the bootstrap port or the LwM2M server's).
fn check_entries(b: &mut impl Backend, list: &[Entry]) -> Result<(), String> {
    let mut eps = std::collections::HashSet::new();
    let mut ids: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for e in list {
        crate::credentials::check_endpoint(&e.endpoint).map_err(|x| x.0)?;
        if !eps.insert(e.endpoint.as_str()) {
            return Err(format!("{}: named twice", e.endpoint));
        }
        if b.server().profile(&e.profile).is_none() {
            return Err(format!("{}: unknown profile {:?}", e.endpoint, e.profile));
        }
        if let Security::Psk { identity, .. } = &e.security {
            if let Some(other) = ids.insert(identity, &e.endpoint) {
                return Err(format!(
                    "{}: PSK identity {identity:?} is also given to {other}",
                    e.endpoint
                ));
            }
        }
        // The LwM2M server account's identity is the endpoint name.
        use crate::bootstrap::ServerSecurity as S;
        let clash = |c: &Security| match (&e.server_security, c) {
            (S::Psk, Security::Psk { identity, .. }) => *identity == e.endpoint,
            (S::Rpk { public_key: a, .. }, Security::Rpk { public_key: b }) => a == b,
            (
                S::X509 { certificate: a, .. },
                Security::X509 {
                    certificate: Some(b),
                },
            ) => a == b,
            _ => false,
        };
        // The LwM2M server tells devices apart by these; two endpoints
        // with one would be one device to it.
        let what = match &e.server_security {
            S::Psk => format!("the PSK identity {:?}", e.endpoint),
            S::Rpk { .. } => "the public key".into(),
            S::X509 { .. } => "the certificate".into(),
            S::NoSec => continue,
        };
        let taken = b
            .server()
            .credentials()
            .into_iter()
            .find(|c| c.endpoint != e.endpoint && clash(&c.security));
        if let Some(c) = taken {
            return Err(format!(
                "{}: {what} of its server account already belongs to {}",
                e.endpoint, c.endpoint
            ));
        }
        let twice = list.iter().find(|o| {
            o.endpoint != e.endpoint
                && match (&e.server_security, &o.server_security) {
                    (S::Rpk { public_key: a, .. }, S::Rpk { public_key: b, .. }) => a == b,
                    (S::X509 { certificate: a, .. }, S::X509 { certificate: b, .. }) => a == b,
                    _ => false,
                }
        });
        if let Some(o) = twice {
            return Err(format!(
                "{}: {what} of its server account is also given to {}",
                e.endpoint, o.endpoint
            ));
        }
    }
    let bs = b.bootstrap().ok_or("the bootstrap server is off")?;
    for e in list {
        use crate::bootstrap::ServerSecurity as S;
        let same_key = bs.entries().into_iter().find(|o| {
            o.endpoint != e.endpoint
                && match (&e.server_security, &o.server_security) {
                    (S::Rpk { public_key: a, .. }, S::Rpk { public_key: b, .. }) => a == b,
                    (S::X509 { certificate: a, .. }, S::X509 { certificate: b, .. }) => a == b,
                    _ => false,
                }
        });
        if let Some(o) = same_key {
            return Err(format!(
                "{}: its server account's key is also given to {}",
                e.endpoint, o.endpoint
            ));
        }
        if let Security::Psk { identity, .. } = &e.security {
            let taken = bs.entries().into_iter().find(|o| {
                o.endpoint != e.endpoint
                    && matches!(&o.security, Security::Psk { identity: i, .. } if i == identity)
            });
            if let Some(o) = taken {
                return Err(format!(
                    "{}: PSK identity {identity:?} already belongs to {}",
                    e.endpoint, o.endpoint
                ));
            }
        }
    }
    Ok(())
}

fn entry_json(bs: &Bootstrap, e: &Entry) -> Json {
    let mut j = e.to_json();
    j["bootstrap"] = bs.state(&e.endpoint).map_or(Json::Null, |s| s.to_json());
    j
}

/// Executes Bootstrap-Request Trigger (/1/x/9) on a registered device.
fn trigger(b: &mut impl Backend, now: Instant, ep: &str) -> Result<u64, Answer> {
    let known = b.bootstrap().map(|bs| bs.entry(ep).is_some());
    match known {
        None => {
            return Err(Answer::fail(
                "NOT_FOUND",
                "the bootstrap server is off (bootstrap.port and bootstrap.dtls_port are 0)",
            ))
        }
        Some(false) => {
            return Err(Answer::fail(
                "NOT_FOUND",
                format!("no bootstrap entry for {ep:?}: the device would find no account"),
            ))
        }
        Some(true) => {}
    }
    let Some(reg) = b.server().registry().get(ep) else {
        return Err(Answer::fail(
            "DEVICE_NOT_REGISTERED",
            format!("{ep:?} is not registered: nothing to trigger"),
        ));
    };
    let iid = reg
        .objects
        .iter()
        .find(|o| o.object == 1 && o.instance.is_some())
        .and_then(|o| o.instance)
        .unwrap_or(0);
    let h = b.new_handle();
    let params = json!({ "id": format!("/1/{iid}/9") });
    log::info!("ep={ep} Bootstrap-Request Trigger: Execute /1/{iid}/9");
    b.server_mut().command(now, h, ep, "Execute", &params);
    Ok(h)
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
