//! Profiles as the store keeps them: JSON since version 2, so that a field
//! added later decodes from what an older gateway wrote; version 1 was
//! postcard of the layout below, kept here only to read it back.

use super::{BootstrapSettings, NotifyAttributes, OtaSettings, Profile, ResourceRule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The profile as version 1 stored it (postcard: field order is layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileV1 {
    name: String,
    objects: Vec<u16>,
    format: Option<String>,
    awake_window_s: Option<u64>,
    transport_log: bool,
    resources: BTreeMap<String, ResourceRule>,
    attributes: BTreeMap<String, NotifyAttributes>,
    ota: Option<OtaV1>,
    bootstrap: Option<BootstrapSettings>,
}

/// Version 1's `[ota]`: the strategy only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OtaV1 {
    strategy: Option<String>,
}

impl From<ProfileV1> for Profile {
    fn from(p: ProfileV1) -> Profile {
        Profile {
            name: p.name,
            objects: p.objects,
            format: p.format,
            awake_window_s: p.awake_window_s,
            transport_log: p.transport_log,
            resources: p.resources,
            attributes: p.attributes,
            ota: p.ota.map(|o| OtaSettings {
                strategy: o.strategy,
                ..OtaSettings::default()
            }),
            bootstrap: p.bootstrap,
        }
    }
}

#[cfg(test)]
impl ProfileV1 {
    /// What a version-1 gateway stored for `p` (its `[ota]` strategy only).
    pub fn of(p: &Profile) -> ProfileV1 {
        ProfileV1 {
            name: p.name.clone(),
            objects: p.objects.clone(),
            format: p.format.clone(),
            awake_window_s: p.awake_window_s,
            transport_log: p.transport_log,
            resources: p.resources.clone(),
            attributes: p.attributes.clone(),
            ota: p.ota.as_ref().map(|o| OtaV1 {
                strategy: o.strategy.clone(),
            }),
            bootstrap: p.bootstrap.clone(),
        }
    }
}
