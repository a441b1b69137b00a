//! One device's update as it is stored and shown: its phase, the step it
//! waits on, how far the transfer got and what the device last said.

use super::{firmware_result, software_result, Image, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

/// Where an update stands, named as the platform's own OTA names it.
// Variants and fields are only ever appended: records are postcard in sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for a free transfer slot.
    Queued,
    /// Started; nothing acknowledged yet.
    Initiated,
    /// Blocks going out.
    Downloading,
    /// Every block acknowledged; waiting for the device to check it.
    Downloaded,
    /// The device reports the package downloaded and checked.
    Verified,
    /// Update (or Install) executed; waiting for the result.
    Updating,
    /// The device runs the new version. Final.
    Updated,
    /// Given up, with the reason. Final.
    Failed,
}

impl Phase {
    /// `QUEUED`, `INITIATED`, ... as in `fw_state`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Queued => "QUEUED",
            Phase::Initiated => "INITIATED",
            Phase::Downloading => "DOWNLOADING",
            Phase::Downloaded => "DOWNLOADED",
            Phase::Verified => "VERIFIED",
            Phase::Updating => "UPDATING",
            Phase::Updated => "UPDATED",
            Phase::Failed => "FAILED",
        }
    }

    /// Updated or failed: nothing more happens by itself.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Updated | Phase::Failed)
    }
}

/// How the image reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Block-wise writes of the package resource, one block in flight.
    Push,
    /// The device fetches a URL of the gateway's with Block2.
    Pull,
}

/// A device's update, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The device.
    pub endpoint: String,
    /// The image it gets.
    pub image: Image,
    /// How.
    pub strategy: Strategy,
    /// Where it stands.
    pub phase: Phase,
    /// What it waits on, in words.
    pub step: String,
    /// Block size in use (16..=1024).
    pub block_size: u32,
    /// Bytes the device acknowledged.
    pub acked: u64,
    /// Blocks sent, resends included.
    pub blocks_sent: u64,
    /// Retries used (a stall, a lost block, a restart, a dropped package).
    pub retries: u32,
    /// Why it failed.
    pub error: Option<String>,
    /// The device's last answer, in words.
    pub last_answer: Option<String>,
    /// Last State (/5/0/3) or Update State (/9/0/7) the device reported.
    pub device_state: Option<i64>,
    /// Last Update Result (/5/0/5 or /9/0/9) the device reported.
    pub device_result: Option<i64>,
    /// The version the device reported last (/3/0/3 or /9/0/1).
    pub current_version: Option<String>,
    /// When it was started, Unix ms.
    pub started_ms: u64,
    /// When it last moved, Unix ms.
    pub progress_ms: u64,
    /// When it ended, Unix ms.
    pub finished_ms: Option<u64>,
    /// Software: Activate (/9/0/10) after Install.
    pub activate: bool,
    /// The strategy is chosen from the device's /5/0/8 and /5/0/9.
    pub auto_strategy: bool,
    /// The device talks DTLS: a pull URL is coaps.
    pub secure: bool,
    /// Pull: the token of the URL, served until the update ends.
    pub token: Option<String>,
    /// Pull: the URL written to the device.
    pub url: Option<String>,
    /// A device that reports success with another version fails the
    /// update (else it is UPDATED with `version_mismatch`).
    #[serde(default, deserialize_with = "appended")]
    pub require_version: bool,
    /// UPDATED, but the device reports another version than the image's:
    /// what it reports.
    #[serde(default, deserialize_with = "appended")]
    pub version_mismatch: Option<String>,
}

/// Fields appended to a stored record: postcard has no field names, so a
/// record written before them ends where they begin; it decodes with
/// their defaults instead of not at all.
fn appended<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(T::deserialize(d).unwrap_or_default())
}

impl Record {
    /// Percent of the image the device acknowledged.
    pub fn percent(&self) -> u32 {
        (self.acked * 100)
            .checked_div(self.image.size)
            .map_or(100, |p| p.min(100) as u32)
    }

    /// UPDATED and the device reports the image's version: true; UPDATED
    /// with another one: false; not UPDATED: none.
    pub fn version_verified(&self) -> Option<bool> {
        (self.phase == Phase::Updated).then_some(self.version_mismatch.is_none())
    }

    /// The meaning of the device's last update result.
    pub fn result_text(&self) -> Option<&'static str> {
        self.device_result.map(|r| match self.image.kind {
            Kind::Firmware => firmware_result(r),
            Kind::Software => software_result(r),
        })
    }

    /// JSON for `ota status`; `now_ms` says how long since it last moved.
    pub fn to_json(&self, now_ms: u64) -> Json {
        json!({
            "endpoint": self.endpoint,
            "kind": self.image.kind.name(),
            "image": self.image.id,
            "title": self.image.title,
            "version": self.image.version,
            "strategy": match self.strategy {
                Strategy::Push => "push",
                Strategy::Pull => "pull",
            },
            "url": self.url,
            "state": self.phase.name(),
            "step": self.step,
            "progress": self.percent(),
            "bytes": self.image.size,
            "acknowledged": self.acked,
            "blockSize": self.block_size,
            "blocksSent": self.blocks_sent,
            "retries": self.retries,
            "error": self.error,
            "lastAnswer": self.last_answer,
            "deviceState": self.device_state,
            "deviceResult": self.device_result,
            "deviceResultText": self.result_text(),
            "currentVersion": self.current_version,
            "versionVerified": self.version_verified(),
            "versionMismatch": self.version_mismatch,
            "requireVersion": self.require_version,
            "started": self.started_ms,
            "sinceProgressMs": now_ms.saturating_sub(self.progress_ms),
            "finished": self.finished_ms,
        })
    }

    /// The platform's keys for it: `fw_state`, `fw_progress`, ... (or
    /// `sw_*`), with `current_*` once the device reports its version.
    pub fn northbound(&self) -> Vec<(String, Json)> {
        let p = self.image.kind.prefix();
        let mut v = vec![
            (format!("{p}_state"), Json::from(self.phase.name())),
            (format!("{p}_progress"), Json::from(self.percent())),
            (
                format!("{p}_error"),
                Json::from(
                    self.error
                        .clone()
                        .or_else(|| self.version_mismatch.clone())
                        .unwrap_or_default(),
                ),
            ),
        ];
        if self.phase == Phase::Updated {
            v.push((
                format!("current_{p}_title"),
                self.image.title.clone().into(),
            ));
            v.push((
                format!("{p}_verified"),
                self.version_mismatch.is_none().into(),
            ));
        }
        if let Some(cv) = &self.current_version {
            v.push((format!("current_{p}_version"), cv.clone().into()));
        }
        v
    }
}
