//! Profiles and credentials in the server: admission, the profile applied
//! on registration, and the latest value of every key per device.

use super::command::Method;
use super::observe::{Origin, Report};
use super::queue::Queued;
use super::{Registration, Server};
use crate::credentials::{Authenticated, Credential, Security};
use crate::lwm2m::model::camel_case_key;
use crate::lwm2m::{Path, Value};
use crate::profile::{self, Profile, Resolved};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Reports kept per device for `device <ep>`, one per shape; the oldest
/// shape goes first.
const MAX_LATEST: usize = 64;

impl Server {
    /// Adds or replaces a profile after checking it against the models.
    pub fn set_profile(&mut self, p: Profile) -> Result<(), String> {
        let name = p.name.clone();
        let r = Resolved::new(p, &self.models).map_err(|e| e.to_string())?;
        self.profiles.insert(name, Arc::new(r));
        Ok(())
    }

    /// Removes a profile no credential uses; the default one stays.
    pub fn remove_profile(&mut self, name: &str) -> Result<Profile, String> {
        if name == profile::DEFAULT {
            return Err("the default profile cannot be removed".into());
        }
        let users: Vec<&str> = self
            .credentials
            .values()
            .filter(|c| c.profile == name)
            .map(|c| c.endpoint.as_str())
            .take(5)
            .collect();
        if !users.is_empty() {
            return Err(format!(
                "profile {name:?} is used by {}; change or remove those devices first",
                users.join(", ")
            ));
        }
        match self.profiles.remove(name) {
            Some(r) => Ok(r.profile.clone()),
            None => Err(format!("no profile {name:?}")),
        }
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> Vec<&Profile> {
        let mut v: Vec<&Profile> = self.profiles.values().map(|r| &r.profile).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One profile.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name).map(|r| &r.profile)
    }

    /// Adds or replaces an endpoint's credential: its profile must exist
    /// and a PSK identity may belong to one endpoint only.
    pub fn set_credential(&mut self, c: Credential) -> Result<(), String> {
        if !self.profiles.contains_key(&c.profile) {
            return Err(format!("unknown profile {:?}", c.profile));
        }
        if let crate::credentials::Security::Psk { identity, .. } = &c.security {
            let taken = self.credentials.values().find(|o| {
                o.endpoint != c.endpoint
                    && matches!(&o.security, crate::credentials::Security::Psk { identity: i, .. } if i == identity)
            });
            if let Some(o) = taken {
                return Err(format!(
                    "PSK identity {identity:?} already belongs to {}",
                    o.endpoint
                ));
            }
        }
        self.credentials.insert(c.endpoint.clone(), c);
        Ok(())
    }

    /// Puts back a stored credential at start-up, even when its profile
    /// did not load: the device then gets the default profile, but a
    /// secure credential still keeps it off plain CoAP.
    pub fn restore_credential(&mut self, c: Credential) {
        if !self.profiles.contains_key(&c.profile) {
            log::error!(
                "ep={} profile {:?} is missing; the default profile applies",
                c.endpoint,
                c.profile
            );
        }
        self.credentials.insert(c.endpoint.clone(), c);
    }

    /// Removes an endpoint's credential.
    pub fn remove_credential(&mut self, endpoint: &str) -> Option<Credential> {
        self.credentials.remove(endpoint)
    }

    /// Every credential, by endpoint.
    pub fn credentials(&self) -> Vec<&Credential> {
        let mut v: Vec<&Credential> = self.credentials.values().collect();
        v.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        v
    }

    /// One endpoint's credential.
    pub fn credential(&self, endpoint: &str) -> Option<&Credential> {
        self.credentials.get(endpoint)
    }

    /// Whether endpoints without a credential may register (over plain CoAP,
    /// with the default profile).
    pub fn set_allow_unknown(&mut self, allow: bool) {
        self.allow_unknown = allow;
    }

    /// The profile in force for an endpoint: its credential's, else the default.
    pub(super) fn profile_of(&self, endpoint: &str) -> Option<&Arc<Resolved>> {
        let name = self
            .credentials
            .get(endpoint)
            .map_or(profile::DEFAULT, |c| c.profile.as_str());
        self.profiles
            .get(name)
            .or_else(|| self.profiles.get(profile::DEFAULT))
    }

    /// Admission by credential: an endpoint with a secure credential never
    /// registers over plain CoAP; unknown endpoints only when allowed.
    pub(super) fn admit(&self, endpoint: &str, secure_transport: bool) -> Result<(), String> {
        match self.credentials.get(endpoint) {
            Some(c) if c.security.is_secure() && !secure_transport => Err(format!(
                "endpoint has a {} credential; plain CoAP refused",
                c.security.mode()
            )),
            Some(_) => Ok(()),
            None if self.allow_unknown => Ok(()),
            None => Err("unknown endpoint (no credential provisioned)".into()),
        }
    }

    /// Admission over DTLS: the session must belong to the endpoint, and
    /// its mode must be the one the endpoint's credential names.
    pub(super) fn admit_secure(&self, endpoint: &str, a: &Authenticated) -> Result<(), String> {
        if a.endpoint != endpoint {
            return Err(format!(
                "the DTLS session belongs to endpoint {:?}",
                a.endpoint
            ));
        }
        match self.credentials.get(endpoint).map(|c| &c.security) {
            Some(Security::Psk { .. }) if a.mode == "PSK" => Ok(()),
            Some(Security::Rpk { .. }) if a.mode == "RPK" => Ok(()),
            Some(Security::X509 { certificate }) if a.mode == "X509" => {
                if certificate.is_some() && !a.pinned {
                    Err("the endpoint's credential names another certificate".into())
                } else {
                    Ok(())
                }
            }
            // More security than the credential asks for is fine.
            Some(Security::NoSec) => Ok(()),
            Some(s) => Err(format!(
                "endpoint has a {} credential; the session used {}",
                s.mode(),
                a.mode
            )),
            None if self.allow_unknown => Ok(()),
            None => Err("unknown endpoint (no credential provisioned)".into()),
        }
    }

    /// On registration: Write-Attributes from the profile, then reads of
    /// attribute resources and of telemetry that is not observed, then the
    /// observations. They go out one at a time, like queued commands.
    pub(super) fn apply_profile(&mut self, now: Instant, reg: &Registration) {
        let Some(r) = self.profile_of(&reg.endpoint).cloned() else {
            return;
        };
        let has = |p: &Path| reg.objects.iter().any(|o| o.object == p.object);
        let mut actions: Vec<(Method, Json)> = Vec::new();
        for (p, a) in &r.profile.attributes {
            if Path::parse(p).is_ok_and(|p| has(&p)) {
                actions.push((
                    Method::WriteAttributes,
                    json!({"id": p, "attributes": a.to_json()}),
                ));
            }
        }
        let present = r.mapped.iter().filter(|m| has(&m.path));
        let (mut reads, mut observes) = (Vec::new(), Vec::new());
        for m in present {
            let id = json!({"id": m.path.to_string()});
            if m.rule.observe {
                observes.push((Method::Observe, id));
            } else if m.rule.attribute || m.rule.telemetry {
                reads.push((Method::Read, id));
            }
        }
        actions.extend(reads);
        actions.extend(observes);
        if actions.is_empty() {
            return;
        }
        log::info!(
            "ep={} applying profile {:?}: {} requests",
            reg.endpoint,
            r.profile.name,
            actions.len()
        );
        let q = self.queues.entry(reg.endpoint.as_str().into()).or_default();
        // A new registration starts over: profile requests of the old one go.
        q.items.retain(|i| !i.internal);
        let now_ms = self.last_unix_ms;
        for (method, params) in actions {
            self.next_seq += 1;
            q.items.push_back(Queued {
                seq: self.next_seq,
                method,
                params,
                handle: None,
                queued_ms: now_ms,
                expires_ms: now_ms + self.queue_cfg.ttl.as_millis() as u64,
                internal: true,
            });
        }
        self.arm_sweep(now);
        self.drain_queue(now, &reg.endpoint);
    }

    /// Remembers a device's latest reports: the newest report of each
    /// shape (same paths) replaces the older one. Sharing the report keeps
    /// this to a pointer swap on the notification path; the values are
    /// merged only when someone asks.
    pub(super) fn record_latest(&mut self, report: &Arc<Report>) {
        let slots = self.latest.entry(report.endpoint.clone()).or_default();
        let shape = |r: &Report| {
            (
                r.readings.len(),
                r.readings.first().map(|x| x.path),
                r.readings.last().map(|x| x.path),
            )
        };
        let mine = shape(report);
        if let Some(pos) = slots.iter().position(|s| shape(s) == mine) {
            slots.remove(pos);
        } else if slots.len() >= MAX_LATEST {
            slots.pop_front();
        }
        slots.push_back(report.clone());
    }

    /// The latest values of a device by key (the profile's key, else the
    /// camelCase of the resource name; `key_<n>` for a resource instance),
    /// split into attributes and telemetry as the profile says.
    pub fn latest_json(&self, endpoint: &str) -> Json {
        let Some(slots) = self.latest.get(endpoint) else {
            return json!({"attributes": {}, "telemetry": {}});
        };
        let mut values: HashMap<Path, (&Value, u64)> = HashMap::new();
        for r in slots {
            for x in &r.readings {
                values.insert(x.path, (&x.value, x.ts_ms));
            }
        }
        let profile = self.profile_of(endpoint).map(|r| &**r);
        let (mut attributes, mut telemetry) = (Map::new(), Map::new());
        let mut sorted: Vec<(&Path, &(&Value, u64))> = values.iter().collect();
        sorted.sort_by_key(|(p, _)| **p);
        for (path, (value, ts)) in sorted {
            let (key, attribute) = self.key_of(profile, path);
            let entry = json!({"value": value.to_json(), "ts": ts});
            if attribute {
                attributes.insert(key, entry);
            } else {
                telemetry.insert(key, entry);
            }
        }
        json!({"attributes": attributes, "telemetry": telemetry})
    }

    /// The key of a path (the profile's, else the camelCase of the resource
    /// name; `key_<n>` for a resource instance) and whether the profile
    /// makes it a client attribute rather than telemetry.
    fn key_of(&self, profile: Option<&Resolved>, path: &Path) -> (String, bool) {
        let rule = profile.and_then(|r| r.rule_for(path));
        let base = match rule {
            Some(m) => m.key.clone(),
            None => path
                .resource
                .and_then(|r| self.models.resource(path.object, r))
                .map_or_else(|| path.to_string(), |m| camel_case_key(&m.name)),
        };
        let key = match path.resource_instance {
            Some(ri) => format!("{base}_{ri}"),
            None => base,
        };
        (
            key,
            rule.is_some_and(|m| m.rule.attribute && !m.rule.telemetry),
        )
    }

    /// A report's values as (key, value, time, is a client attribute), for
    /// the northbound side.
    pub fn keyed(&self, report: &Report) -> Vec<(String, Json, u64, bool)> {
        let profile = self.profile_of(&report.endpoint).map(|r| &**r);
        report
            .readings
            .iter()
            .map(|r| {
                let (key, attribute) = self.key_of(profile, &r.path);
                (key, r.value.to_json(), r.ts_ms, attribute)
            })
            .collect()
    }

    /// Whether the device's profile asks for a transport log.
    pub fn transport_log(&self, endpoint: &str) -> bool {
        self.profile_of(endpoint)
            .is_some_and(|r| r.profile.transport_log)
    }

    /// Keeps a transport log line when the device's profile asks for one;
    /// gives it back (cut to its bound) for the platform, else none.
    pub fn log_transport(&mut self, endpoint: &str, ts_ms: u64, line: &str) -> Option<String> {
        if !self.transport_log(endpoint) {
            return None;
        }
        Some(self.transport_lines.record(endpoint, ts_ms, line))
    }

    /// A device's recent transport log lines, oldest first.
    pub fn transport_lines(&self, endpoint: &str) -> serde_json::Value {
        self.transport_lines.lines(endpoint)
    }

    /// The profile name in force for an endpoint.
    pub fn profile_name(&self, endpoint: &str) -> String {
        self.profile_of(endpoint)
            .map_or(profile::DEFAULT.to_string(), |r| r.profile.name.clone())
    }

    /// Keys of the profile's writable resources: the shared attributes the
    /// platform may set.
    pub fn shared_keys(&self, endpoint: &str) -> Vec<String> {
        let Some(r) = self.profile_of(endpoint) else {
            return Vec::new();
        };
        r.mapped
            .iter()
            .filter(|m| {
                m.path
                    .resource
                    .and_then(|res| self.models.resource(m.path.object, res))
                    .is_some_and(|rm| rm.operations.write)
            })
            .map(|m| m.key.clone())
            .collect()
    }

    /// The resource a key names for this device (profile key, else the
    /// camelCase resource name among its objects).
    pub fn path_of_key(&self, endpoint: &str, key: &str) -> Option<Path> {
        if let Some(p) = self.profile_of(endpoint).and_then(|r| r.path_of(key)) {
            return Some(p);
        }
        let reg = self.registry.get(endpoint)?;
        for o in &reg.objects {
            let model = self.models.get(o.object, None)?;
            if let Some(r) = model
                .resources
                .iter()
                .find(|r| camel_case_key(&r.name).eq_ignore_ascii_case(key))
            {
                return Some(Path {
                    object: o.object,
                    instance: Some(o.instance.unwrap_or(0)),
                    resource: Some(r.id),
                    resource_instance: None,
                });
            }
        }
        None
    }

    /// Forgets the latest values of a device that left and has no credential.
    pub(super) fn forget_latest(&mut self, endpoint: &str) {
        if !self.credentials.contains_key(endpoint) {
            self.latest.remove(endpoint);
        }
    }

    /// Reads made by the profile come out as reports too.
    pub(super) fn profile_read(&mut self, endpoint: &str, path: &Path, msg: &crate::coap::Message) {
        let Some(reg) = self.registry.get(endpoint) else {
            return;
        };
        let schema = super::command::DeviceSchema::new(&self.models, reg);
        let cf = msg
            .content_format()
            .and_then(crate::lwm2m::ContentFormat::from_code)
            .unwrap_or(crate::lwm2m::ContentFormat::Text);
        match crate::lwm2m::format::decode_readings(cf, Some(path), &msg.payload, &schema) {
            Ok(r) => self.push_report(endpoint.into(), Origin::Read, r),
            Err(e) => log::info!("ep={endpoint} profile read of {path} did not decode: {e}"),
        }
    }
}

/// The latest reports per device.
pub(super) type Latest = HashMap<Arc<str>, std::collections::VecDeque<Arc<Report>>>;
