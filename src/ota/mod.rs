//! Firmware (object 5) and software (object 9) updates from the local
//! image store: the sans-IO update machine of each device, and the store.
//!
//! The machine ([`Ota`]) takes answers, values and time, and gives back
//! what to send ([`Action`]: a block of an image, or a command of the
//! command language) and records to store ([`OtaEvent`]). The runtime reads
//! the block's bytes from the [`images::ImageStore`] and hands both to the
//! LwM2M server.

pub mod images;
mod machine;
mod update;

pub use machine::{Action, Ota, OtaConfig, OtaEvent, StartOptions, OTA_HANDLE};
pub use update::{Phase, Record, Strategy};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

/// What an image updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Firmware, through object 5.
    Firmware,
    /// A software package, through object 9.
    Software,
}

impl Kind {
    /// `firmware` or `software`.
    pub fn parse(s: &str) -> Result<Kind, OtaError> {
        match s.to_ascii_lowercase().as_str() {
            "firmware" | "fw" => Ok(Kind::Firmware),
            "software" | "sw" => Ok(Kind::Software),
            other => Err(OtaError::BadInput(format!(
                "kind {other:?}: give firmware or software"
            ))),
        }
    }

    /// `firmware` or `software`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Firmware => "firmware",
            Kind::Software => "software",
        }
    }

    /// The prefix of its northbound keys: `fw` or `sw`.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Firmware => "fw",
            Kind::Software => "sw",
        }
    }

    /// The object: 5 or 9.
    pub fn object(self) -> u16 {
        match self {
            Kind::Firmware => 5,
            Kind::Software => 9,
        }
    }
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Its SHA-256, hex: the id, and the file name in the store.
    pub id: String,
    /// Firmware or software.
    pub kind: Kind,
    /// Title, as the platform names the package (`fw_title`).
    pub title: String,
    /// Version (`fw_version`), compared whole with what the device reports.
    pub version: String,
    /// Bytes.
    pub size: u64,
    /// When it was added, Unix ms.
    pub added_ms: u64,
}

impl Image {
    /// JSON for listings.
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id,
            "kind": self.kind.name(),
            "title": self.title,
            "version": self.version,
            "size": self.size,
            "sha256": self.id,
            "added": self.added_ms,
        })
    }
}

/// Why an OTA request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtaError {
    /// A bad argument: what is wrong with it.
    BadInput(String),
    /// The image store could not do it.
    Store(String),
    /// No such image, update or device.
    NotFound(String),
    /// Not now: an update runs, or the image is in use.
    Busy(String),
}

impl std::fmt::Display for OtaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OtaError::BadInput(s)
            | OtaError::Store(s)
            | OtaError::NotFound(s)
            | OtaError::Busy(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for OtaError {}

impl OtaError {
    /// The command answer that says it.
    pub fn answer(&self) -> crate::server::command::Answer {
        use crate::server::command::Answer;
        match self {
            OtaError::BadInput(s) => Answer::bad_request(s.clone()),
            OtaError::NotFound(s) => Answer::fail("NOT_FOUND", s.clone()),
            OtaError::Busy(s) => Answer::fail("CONFLICT", s.clone()),
            OtaError::Store(s) => Answer::fail("INTERNAL_SERVER_ERROR", s.clone()),
        }
    }
}

/// What Update Result `/5/0/5` means.
pub fn firmware_result(r: i64) -> &'static str {
    match r {
        0 => "initial value",
        1 => "firmware updated successfully",
        2 => "not enough flash memory for the new firmware package",
        3 => "out of RAM during the download",
        4 => "connection lost during the download",
        5 => "integrity check failure for the new firmware package",
        6 => "unsupported package type",
        7 => "invalid URI",
        8 => "firmware update failed",
        9 => "unsupported protocol",
        _ => "unknown update result",
    }
}

/// What Update Result `/9/0/9` means.
pub fn software_result(r: i64) -> &'static str {
    match r {
        0 => "initial value",
        1 => "downloading",
        2 => "software successfully installed",
        3 => "successfully downloaded and verified",
        50 => "not enough storage for the new software package",
        51 => "out of memory during the download",
        52 => "connection lost during the download",
        53 => "package integrity check failure",
        54 => "unsupported package type",
        56 => "invalid URI",
        57 => "device defined update error",
        58 => "software installation failure",
        59 => "uninstallation failure during forUpdate(arg=0)",
        _ => "unknown update result",
    }
}

#[cfg(test)]
mod tests;
