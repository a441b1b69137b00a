//! Device profiles: per device type, which resources become attributes,
//! telemetry and observations, their keys, notification attributes, the
//! preferred content format and the queue-mode awake window.

use crate::lwm2m::format::ContentFormat;
use crate::lwm2m::model::camel_case_key;
use crate::lwm2m::{ModelLibrary, Path, ResourceType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub mod stored;

/// The profile of devices that have none of their own.
pub const DEFAULT: &str = "default";

/// A device profile, as written in TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Name devices refer to.
    pub name: String,
    /// Objects the device type supports.
    #[serde(default)]
    pub objects: Vec<u16>,
    /// Preferred content format (`SENML_CBOR`, `TLV`, ...).
    #[serde(default)]
    pub format: Option<String>,
    /// Queue mode: seconds a device counts as awake after its last message.
    #[serde(default)]
    pub awake_window_s: Option<u64>,
    /// Publish a log of the device's CoAP exchanges as telemetry `transportLog`.
    #[serde(default)]
    pub transport_log: bool,
    /// Per resource (`"/3/0/9"`): what it becomes.
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceRule>,
    /// Notification attributes written on connect, per object, instance or
    /// resource path.
    #[serde(default)]
    pub attributes: BTreeMap<String, NotifyAttributes>,
    /// Firmware update settings, for the OTA issue.
    #[serde(default)]
    pub ota: Option<OtaSettings>,
    /// Bootstrap settings, for the bootstrap issue.
    #[serde(default)]
    pub bootstrap: Option<BootstrapSettings>,
}

/// What one resource becomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRule {
    /// Key name; default the camelCase of the resource name.
    #[serde(default)]
    pub key: Option<String>,
    /// Read on connect and sent as a client attribute.
    #[serde(default)]
    pub attribute: bool,
    /// Sent as time series.
    #[serde(default)]
    pub telemetry: bool,
    /// Observed on connect.
    #[serde(default)]
    pub observe: bool,
}

/// Write-Attributes parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyAttributes {
    /// Minimum period, seconds.
    #[serde(default)]
    pub pmin: Option<u32>,
    /// Maximum period, seconds.
    #[serde(default)]
    pub pmax: Option<u32>,
    /// Greater than.
    #[serde(default)]
    pub gt: Option<f64>,
    /// Less than.
    #[serde(default)]
    pub lt: Option<f64>,
    /// Step.
    #[serde(default)]
    pub st: Option<f64>,
}

/// How updates reach this profile's devices (`ota start` flags win).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtaSettings {
    /// Firmware: `push` (Block1 to /5/0/0), `pull` (URI in /5/0/1) or
    /// `auto` (as the device's /5/0/9 allows). The first profile format's
    /// name for `fw_strategy`.
    #[serde(default)]
    pub strategy: Option<String>,
    /// Firmware strategy; wins over `strategy`.
    #[serde(default)]
    pub fw_strategy: Option<String>,
    /// Software: `push` (Block1 to /9/0/2) or `pull` (URI in /9/0/3).
    #[serde(default)]
    pub sw_strategy: Option<String>,
    /// Block size for pushes, 16 to 1024 (default 1024).
    #[serde(default)]
    pub block_size: Option<u32>,
    /// Software: Activate (/9/0/10) after Install.
    #[serde(default)]
    pub sw_activate: Option<bool>,
    /// A device that reports success with another version fails the
    /// update; none: the gateway's `ota.require_version`.
    #[serde(default)]
    pub require_version: Option<bool>,
}

impl OtaSettings {
    /// The strategy named for `software` or firmware.
    pub fn strategy_for(&self, software: bool) -> Option<&str> {
        if software {
            self.sw_strategy.as_deref()
        } else {
            self.fw_strategy.as_deref().or(self.strategy.as_deref())
        }
    }
}

/// Defaults of the bootstrap entries made with this profile, for what
/// `bootstrap add` or an import line leaves out. No field skips its
/// serialization: the store's postcard cannot tell a skipped field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSettings {
    /// Kept from the first profile format; bootstrap is per entry.
    #[serde(default)]
    pub enabled: bool,
    /// Registration lifetime handed out, seconds.
    #[serde(default)]
    pub lifetime: Option<u32>,
    /// Binding handed out: `U` or `UQ`.
    #[serde(default)]
    pub binding: Option<String>,
    /// `nosec` or `psk`.
    #[serde(default)]
    pub server_security: Option<String>,
    /// Further Bootstrap-Writes before Finish, by path (`"/3/0/14" =
    /// "+02:00"`): objects other than 0 and 1, typed by the models.
    #[serde(default)]
    pub writes: BTreeMap<String, WriteValue>,
}

/// A value to write, kept as JSON text: TOML gives any value, and the
/// store (postcard, which cannot describe itself) keeps the text.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteValue(pub String);

impl Serialize for WriteValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let j: serde_json::Value =
                serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
            j.serialize(s)
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for WriteValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let j = serde_json::Value::deserialize(d)?;
            Ok(WriteValue(j.to_string()))
        } else {
            Ok(WriteValue(String::deserialize(d)?))
        }
    }
}

/// A profile that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError(pub String);

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProfileError {}

/// One resource of a profile, checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The resource (object, instance, resource).
    pub path: Path,
    /// Its key.
    pub key: String,
    /// The rule.
    pub rule: ResourceRule,
}

impl Profile {
    /// The built-in profile: nothing read, observed or written on connect.
    pub fn default_profile() -> Profile {
        Profile {
            name: DEFAULT.into(),
            objects: Vec::new(),
            format: None,
            awake_window_s: None,
            transport_log: false,
            resources: BTreeMap::new(),
            attributes: BTreeMap::new(),
            ota: None,
            bootstrap: None,
        }
    }

    /// Parses TOML text; the result still has to pass `check`.
    pub fn from_toml(text: &str) -> Result<Profile, ProfileError> {
        toml::from_str(text).map_err(|e| ProfileError(e.to_string().trim_end().to_string()))
    }

    /// Checks the profile against the object models: known objects and
    /// resources, readable where read or observed, unique keys, sane
    /// notification attributes.
    pub fn check(&self, lib: &ModelLibrary) -> Result<(), ProfileError> {
        let bad = |m: String| Err(ProfileError(format!("profile {:?}: {m}", self.name)));
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad("a name is 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        for o in &self.objects {
            if lib.get(*o, None).is_none() {
                return bad(format!("object {o} has no model in the library"));
            }
        }
        if let Some(f) = &self.format {
            match ContentFormat::from_name(f) {
                Some(cf) if cf.is_structured() => {}
                _ => return bad(format!("format {f:?} is not a structured content format")),
            }
        }
        if let Some(o) = &self.ota {
            for (k, v) in [
                ("strategy", &o.strategy),
                ("fw_strategy", &o.fw_strategy),
                ("sw_strategy", &o.sw_strategy),
            ] {
                if let Some(x) = v {
                    if !matches!(x.to_ascii_lowercase().as_str(), "push" | "pull" | "auto") {
                        return bad(format!("ota.{k} {x:?}: give push, pull or auto"));
                    }
                }
            }
            if let Some(b) = o.block_size {
                if !(16..=1024).contains(&b) || !b.is_power_of_two() {
                    return bad(format!(
                        "ota.block_size {b}: give 16, 32, 64, 128, 256, 512 or 1024"
                    ));
                }
            }
        }
        if let Some(b) = &self.bootstrap {
            if b.lifetime == Some(0) {
                return bad("bootstrap.lifetime must be at least 1 s".into());
            }
            if let Some(x) = &b.binding {
                if !matches!(x.as_str(), "U" | "UQ") {
                    return bad(format!("bootstrap.binding {x:?}: give U or UQ"));
                }
            }
            if let Some(x) = &b.server_security {
                if !matches!(x.to_ascii_lowercase().as_str(), "nosec" | "no_sec" | "psk") {
                    return bad(format!(
                        "bootstrap.server_security {x:?}: give nosec or psk"
                    ));
                }
            }
            for (p, v) in &b.writes {
                let path = crate::lwm2m::Path::parse(p).map_err(|e| {
                    ProfileError(format!("profile {:?}: bootstrap.writes: {e}", self.name))
                })?;
                if path.object <= 1 || path.instance.is_none() {
                    return bad(format!(
                        "bootstrap.writes {p}: an instance or resource of an object other than 0 and 1 (the server account is the gateway's)"
                    ));
                }
                let j: serde_json::Value = serde_json::from_str(&v.0).map_err(|e| {
                    ProfileError(format!(
                        "profile {:?}: bootstrap.writes {p}: {e}",
                        self.name
                    ))
                })?;
                if let Err(e) = crate::lwm2m::node::Node::from_json(&path, &j, lib) {
                    return bad(format!("bootstrap.writes {p}: {e}"));
                }
            }
        }
        let mut keys = BTreeMap::new();
        for m in self.mapped(lib)? {
            if let Some(other) = keys.insert(m.key.to_ascii_lowercase(), m.path) {
                return bad(format!("key {:?} names both {other} and {}", m.key, m.path));
            }
        }
        for (p, a) in &self.attributes {
            let path = self.path_in(p, lib)?;
            if path.resource_instance.is_some() {
                return bad(format!(
                    "{p}: attributes go to an object, instance or resource"
                ));
            }
            if let (Some(pmin), Some(pmax)) = (a.pmin, a.pmax) {
                if pmin > pmax {
                    return bad(format!("{p}: pmin {pmin} is above pmax {pmax}"));
                }
            }
            if a.st.is_some_and(|st| st <= 0.0) {
                return bad(format!("{p}: st must be above 0"));
            }
            if let (Some(lt), Some(gt)) = (a.lt, a.gt) {
                if lt >= gt {
                    return bad(format!("{p}: lt {lt} must be below gt {gt}"));
                }
            }
            if a.gt.is_some() || a.lt.is_some() || a.st.is_some() {
                let numeric = path.resource.is_some_and(|r| {
                    lib.resource(path.object, r).is_some_and(|m| {
                        matches!(
                            m.rtype,
                            ResourceType::Integer
                                | ResourceType::UnsignedInteger
                                | ResourceType::Float
                        )
                    })
                });
                if !numeric {
                    return bad(format!("{p}: gt, lt and st need a numeric resource"));
                }
            }
        }
        Ok(())
    }

    /// A path of the profile: parsed, of a known object, and of an object
    /// the profile lists (when it lists any).
    fn path_in(&self, p: &str, lib: &ModelLibrary) -> Result<Path, ProfileError> {
        let err = |m: String| ProfileError(format!("profile {:?}: {p}: {m}", self.name));
        let path = Path::parse(p).map_err(|e| err(e.to_string()))?;
        let Some(model) = lib.get(path.object, None) else {
            return Err(err(format!("object {} has no model", path.object)));
        };
        if !self.objects.is_empty() && !self.objects.contains(&path.object) {
            return Err(err(format!(
                "object {} is not among the profile's objects",
                path.object
            )));
        }
        if let Some(r) = path.resource {
            if model.resource(r).is_none() {
                return Err(err(format!("object {} has no resource {r}", path.object)));
            }
        }
        Ok(path)
    }

    /// Every resource rule, resolved against the models.
    pub fn mapped(&self, lib: &ModelLibrary) -> Result<Vec<Mapped>, ProfileError> {
        let mut out = Vec::with_capacity(self.resources.len());
        for (p, rule) in &self.resources {
            let path = self.path_in(p, lib)?;
            let err = |m: &str| ProfileError(format!("profile {:?}: {p}: {m}", self.name));
            let (Some(_), Some(r)) = (path.instance, path.resource) else {
                return Err(err("rules go to a resource, like /3/0/9"));
            };
            if path.resource_instance.is_some() {
                return Err(err("rules go to a resource, like /3/0/9"));
            }
            let Some(model) = lib.resource(path.object, r) else {
                return Err(err("no such resource"));
            };
            if (rule.attribute || rule.telemetry || rule.observe) && !model.operations.read {
                return Err(err(&format!("{} is not readable", model.name)));
            }
            let key = match &rule.key {
                Some(k) if k.trim().is_empty() => return Err(err("empty key")),
                Some(k) => k.clone(),
                None => camel_case_key(&model.name),
            };
            out.push(Mapped {
                path,
                key,
                rule: rule.clone(),
            });
        }
        Ok(out)
    }

    /// The preferred content format, if any.
    pub fn content_format(&self) -> Option<ContentFormat> {
        self.format.as_deref().and_then(ContentFormat::from_name)
    }
}

/// A checked profile with its rules resolved, as the server uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The profile.
    pub profile: Profile,
    /// Its resource rules, resolved.
    pub mapped: Vec<Mapped>,
}

impl Resolved {
    /// Checks `profile` against `lib` and resolves its rules.
    pub fn new(profile: Profile, lib: &ModelLibrary) -> Result<Resolved, ProfileError> {
        profile.check(lib)?;
        let mapped = profile.mapped(lib)?;
        Ok(Resolved { profile, mapped })
    }

    /// The rule of the resource at `path` (resource instances share their
    /// resource's rule).
    pub fn rule_for(&self, path: &Path) -> Option<&Mapped> {
        self.mapped.iter().find(|m| {
            m.path.object == path.object
                && m.path.instance == path.instance
                && m.path.resource == path.resource
        })
    }

    /// The resource a key names, case ignored.
    pub fn path_of(&self, key: &str) -> Option<Path> {
        self.mapped
            .iter()
            .find(|m| m.key.eq_ignore_ascii_case(key))
            .map(|m| m.path)
    }
}

/// Reads every `*.toml` profile in `dir`, in name order. A file that does
/// not parse is skipped with the reason; a missing directory is no profiles.
pub fn load_dir(dir: &std::path::Path) -> Vec<Profile> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<std::path::PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|t| Profile::from_toml(&t).map_err(|e| e.0))
        {
            Ok(p) => out.push(p),
            Err(e) => log::error!("profile file {} skipped: {e}", f.display()),
        }
    }
    out
}

impl NotifyAttributes {
    /// The attributes as a Write-Attributes parameter object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(v) = self.pmin {
            m.insert("pmin".into(), v.into());
        }
        if let Some(v) = self.pmax {
            m.insert("pmax".into(), v.into());
        }
        for (k, v) in [("gt", self.gt), ("lt", self.lt), ("st", self.st)] {
            if let Some(v) = v {
                m.insert(k.into(), v.into());
            }
        }
        serde_json::Value::Object(m)
    }
}

#[cfg(test)]
mod tests;
