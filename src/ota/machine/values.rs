//! Reading the device's values: its state, result and version resources
//! move an update on, end it, or say the version does not match.

use super::*;

impl Ota {
    /// The device reports success with another version than the image's:
    /// FAILED where the version is required, else UPDATED with the
    /// mismatch kept and reported.
    pub(super) fn version_differs(&mut self, endpoint: &str, why: String) {
        let Some(u) = self.updates.get_mut(endpoint) else {
            return;
        };
        if u.rec.require_version {
            self.fail(endpoint, format!("{why} (ota.require_version)"));
            return;
        }
        log::warn!(
            "ep={endpoint} {} update to {}: {why}; UPDATED as the device reports success",
            u.rec.image.kind.name(),
            u.rec.image.version
        );
        u.rec.version_mismatch = Some(why);
        self.set_phase(
            endpoint,
            Phase::Updated,
            "the device reports success, with another version",
        );
    }

    pub(super) fn version_path(&self, endpoint: &str) -> Option<Path> {
        let kind = self.updates.get(endpoint)?.rec.image.kind;
        Some(match kind {
            Kind::Firmware => Path::parse("/3/0/3").expect("valid"),
            Kind::Software => Path::parse("/9/0/1").expect("valid"),
        })
    }

    /// The key a version value is filed under among a read's resources:
    /// object 9 carries it itself (/9/0/1); /3/0/3 gets a key object 5
    /// does not use.
    pub(super) fn version_resource(&self, endpoint: &str) -> u16 {
        match self.updates.get(endpoint).map(|u| u.rec.image.kind) {
            Some(Kind::Software) => 1,
            _ => VERSION_KEY,
        }
    }

    /// The device's state resources (by resource id; the version under
    /// its key) moved the update on, or not.
    pub(super) fn on_value_map(&mut self, now: Instant, ep: &str, vals: BTreeMap<u16, Json>) {
        let Some(u) = self.updates.get_mut(ep) else {
            return;
        };
        if !u.is_active() {
            return;
        }
        let kind = u.rec.image.kind;
        let (state_r, result_r, version_r) = match kind {
            Kind::Firmware => (3u16, 5u16, VERSION_KEY),
            Kind::Software => (7, 9, 1),
        };
        let int = |r| vals.get(&r).and_then(Json::as_i64);
        let mut moved = false;
        let mut new_result = false;
        if let Some(s) = int(state_r) {
            moved |= u.rec.device_state != Some(s);
            u.rec.device_state = Some(s);
        }
        if let Some(r) = int(result_r) {
            new_result = u.rec.device_result != Some(r);
            moved |= new_result;
            u.rec.device_result = Some(r);
        }
        if let Some(v) = vals.get(&version_r).and_then(Json::as_str) {
            u.rec.current_version = Some(v.to_string());
        }
        if kind == Kind::Firmware {
            if let Some(v) = vals
                .get(&7)
                .and_then(Json::as_str)
                .filter(|v| !v.is_empty())
            {
                u.pkg_version = Some(v.to_string());
            }
        }

        if moved {
            u.rec.progress_ms = self.unix_ms;
            u.deadline = Some(now + self.cfg.stall_timeout);
        }
        let (state, result) = (u.rec.device_state, u.rec.device_result);
        let target = u.rec.image.version.clone();
        let version = u.rec.current_version.clone();
        // Compared whole: 1.1.1 is not 1.1.10. Firmware's PkgVersion
        // (/5/0/7) counts too: many devices keep a platform or library
        // version in /3/0/3.
        let verified = version.as_deref() == Some(target.as_str())
            || (version.is_some() && u.pkg_version.as_deref() == Some(target.as_str()));
        let phase = u.rec.phase;
        let failed = |r: i64| match kind {
            Kind::Firmware => (2..=9).contains(&r),
            Kind::Software => r >= 50,
        };
        let reason = |r: i64| match kind {
            Kind::Firmware => firmware_result(r),
            Kind::Software => software_result(r),
        };
        if let Some(r) = result.filter(|r| failed(*r)) {
            // During the download only a result that just changed is news:
            // the one left from an earlier update resets when it starts.
            let fresh = match phase {
                Phase::Initiated => false,
                Phase::Downloading => new_result,
                _ => true,
            };
            if fresh {
                self.fail(
                    ep,
                    format!("the device reports: {} (result {r})", reason(r)),
                );
                return;
            }
        }
        match (kind, phase) {
            (Kind::Firmware, Phase::Downloaded) => match state {
                Some(2) => self.set_phase(ep, Phase::Verified, "executing /5/0/2"),
                Some(3) => self.set_phase(ep, Phase::Updating, "the device updates"),
                Some(0) => self.dropped(now, ep),
                _ => {}
            },
            (Kind::Software, Phase::Downloaded) => match state {
                _ if result == Some(3) => self.set_phase(ep, Phase::Verified, "executing /9/0/4"),
                Some(3) => self.set_phase(ep, Phase::Verified, "executing /9/0/4"),
                Some(4) => self.set_phase(ep, Phase::Updating, "installed"),
                Some(0) => self.dropped(now, ep),
                _ => {}
            },
            (Kind::Firmware, Phase::Updating) => {
                let asked = vals.contains_key(&version_r);
                let idle_again = state == Some(0) && result == Some(0);
                match version.as_deref() {
                    Some(_) if verified => {
                        self.set_phase(ep, Phase::Updated, "the device runs the new version")
                    }
                    // LwM2M defines success by the Update Result.
                    Some(v) if asked && result == Some(1) => self.version_differs(
                        ep,
                        format!(
                            "the device reports version {v:?} after the update, not {target:?}"
                        ),
                    ),
                    _ if !asked && (result == Some(1) || idle_again) => self.read_version(ep),
                    _ => {
                        if moved {
                            self.changed(ep, false);
                        }
                    }
                }
            }
            (Kind::Software, Phase::Updating) => {
                let installed = state == Some(4) || result == Some(2);
                let activated = self.updates[ep].activated;
                let wants_activate = self.updates[ep].rec.activate;
                match version.as_deref() {
                    _ if !installed => {}
                    _ if wants_activate && !activated => self.activate(ep),
                    Some(_) if verified => {
                        self.set_phase(ep, Phase::Updated, "the device runs the new package")
                    }
                    Some(v) => self.version_differs(
                        ep,
                        format!(
                            "the device reports package version {v:?} after the install, not {target:?}"
                        ),
                    ),
                    None => self.read_version(ep),
                }
            }
            _ => {
                if moved {
                    self.changed(ep, false);
                }
            }
        }
    }
}
