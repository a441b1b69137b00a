//! The admin commands as one enum, parsed in one place from a control-socket
//! line; the MQTT RPC path builds the same values directly.

use crate::bootstrap::Entry;
use crate::credentials::Credential;
use crate::server::command::Answer;
use serde_json::Value as Json;

/// One admin command, whatever transport it came by.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A device-management command (`Read {"id":"/3/0/9"}` and the rest of the RPC set).
    Command {
        /// The device.
        endpoint: String,
        /// The method name, as the command language spells it.
        method: String,
        /// Its parameters (an object).
        params: Json,
    },
    /// Every registration.
    Devices,
    /// One device: registration, credential, latest values.
    Device(String),
    /// A stream of decoded reports, of one device or all.
    Watch(Option<String>),
    /// The gateway's counters.
    Stats,
    /// Profile names and their use.
    Profiles,
    /// One profile as TOML.
    Profile(String),
    /// Adds or replaces a profile given as TOML.
    ProfilePut(String),
    /// Removes a profile no device uses.
    ProfileRm(String),
    /// Every provisioned credential, keys left out.
    Credentials,
    /// Provisions one device.
    DeviceAdd(Credential),
    /// Provisions many devices, all or none.
    DeviceImport(Vec<Credential>),
    /// Removes a device's credential.
    DeviceRm(String),
    /// Adds or replaces bootstrap entries, all or none.
    BootstrapAdd(Vec<Entry>),
    /// Every bootstrap entry with its state.
    BootstrapList,
    /// One bootstrap entry with its state.
    BootstrapShow(String),
    /// Removes a bootstrap entry.
    BootstrapRm(String),
    /// Makes a registered device bootstrap again (Execute /1/x/9).
    BootstrapTrigger(String),
    /// Copies an image file into the store.
    OtaAdd {
        /// The file, as the gateway's process can open it.
        file: std::path::PathBuf,
        /// `firmware` or `software`.
        kind: String,
        /// Title.
        title: String,
        /// Version.
        version: String,
    },
    /// The images in the store.
    OtaList,
    /// Removes an image no update uses.
    OtaRm(String),
    /// Starts updating one device, or every device of a profile.
    OtaStart {
        /// The device, or none with `profile`.
        endpoint: Option<String>,
        /// Every device with this profile.
        profile: Option<String>,
        /// Image id (or a unique prefix).
        image: String,
        /// Block size; default the profile's, else 1024.
        block_size: Option<u32>,
        /// Software: Activate after Install.
        activate: bool,
        /// `push`, `pull` or `auto`; none: the profile's, else push.
        strategy: Option<String>,
    },
    /// Updates, of one device or all.
    OtaStatus(Option<String>),
    /// Ends a device's update.
    OtaCancel(String),
}

/// Every `op` a control line may name, for the error that lists them.
const OPS: &str = "rpc, devices, device, watch, stats, profiles, profile, profile-put, \
                   profile-rm, credentials, device-add, device-import, device-rm, \
                   bootstrap-add, bootstrap-list, bootstrap-show, bootstrap-rm, bootstrap-trigger, \
                   ota-add, ota-list, ota-rm, ota-start, ota-status, ota-cancel";

impl Request {
    /// Parses a control-socket request object; the error is the answer to send.
    pub fn parse(req: &Json) -> Result<Request, Answer> {
        let op = req.get("op").and_then(Json::as_str).unwrap_or("");
        let text = |k: &str| req.get(k).and_then(Json::as_str).unwrap_or("").to_string();
        let endpoint = req
            .get("endpoint")
            .and_then(Json::as_str)
            .map(str::to_string);
        let missing = || Answer::bad_request("\"endpoint\" is missing");
        Ok(match op {
            "rpc" => Request::Command {
                endpoint: endpoint.ok_or_else(missing)?,
                method: text("method"),
                params: req
                    .get("params")
                    .cloned()
                    .unwrap_or_else(|| Json::Object(Default::default())),
            },
            "devices" => Request::Devices,
            "device" => Request::Device(endpoint.ok_or_else(missing)?),
            "watch" => Request::Watch(endpoint),
            "stats" => Request::Stats,
            "profiles" => Request::Profiles,
            "profile" => Request::Profile(text("name")),
            "profile-put" => Request::ProfilePut(text("toml")),
            "profile-rm" => Request::ProfileRm(text("name")),
            "credentials" => Request::Credentials,
            "device-add" => Request::DeviceAdd(
                serde_json::from_value(req.get("credential").cloned().unwrap_or(Json::Null))
                    .map_err(|e| Answer::bad_request(format!("credential: {e}")))?,
            ),
            "device-import" => Request::DeviceImport(
                serde_json::from_value(req.get("credentials").cloned().unwrap_or(Json::Null))
                    .map_err(|e| Answer::bad_request(format!("credentials: {e}")))?,
            ),
            "device-rm" => Request::DeviceRm(text("endpoint")),
            "bootstrap-add" => Request::BootstrapAdd(
                serde_json::from_value(req.get("entries").cloned().unwrap_or(Json::Null))
                    .map_err(|e| Answer::bad_request(format!("entries: {e}")))?,
            ),
            "bootstrap-list" => Request::BootstrapList,
            "bootstrap-show" => Request::BootstrapShow(endpoint.ok_or_else(missing)?),
            "bootstrap-rm" => Request::BootstrapRm(endpoint.ok_or_else(missing)?),
            "bootstrap-trigger" => Request::BootstrapTrigger(endpoint.ok_or_else(missing)?),
            "ota-add" => Request::OtaAdd {
                file: text("file").into(),
                kind: text("kind"),
                title: text("title"),
                version: text("version"),
            },
            "ota-list" => Request::OtaList,
            "ota-rm" => Request::OtaRm(text("image")),
            "ota-start" => Request::OtaStart {
                endpoint: endpoint.clone(),
                profile: req
                    .get("profile")
                    .and_then(Json::as_str)
                    .map(str::to_string),
                image: text("image"),
                block_size: req
                    .get("blockSize")
                    .and_then(Json::as_u64)
                    .map(|b| b.min(u32::MAX as u64) as u32),
                activate: req.get("activate").and_then(Json::as_bool).unwrap_or(false),
                strategy: req
                    .get("strategy")
                    .and_then(Json::as_str)
                    .map(str::to_string),
            },
            "ota-status" => Request::OtaStatus(endpoint),
            "ota-cancel" => Request::OtaCancel(endpoint.ok_or_else(missing)?),
            other => {
                return Err(Answer::bad_request(format!(
                    "unknown op {other:?}; known: {OPS}"
                )))
            }
        })
    }

    /// The device a command is about, for its transport log line.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Request::Command { endpoint, .. } | Request::Device(endpoint) => Some(endpoint),
            Request::Watch(ep) => ep.as_deref(),
            Request::DeviceRm(ep)
            | Request::OtaCancel(ep)
            | Request::BootstrapShow(ep)
            | Request::BootstrapRm(ep)
            | Request::BootstrapTrigger(ep) => Some(ep),
            _ => None,
        }
    }

    /// Does it change credentials (so the DTLS layer must see the new ones)?
    pub fn changes_credentials(&self) -> bool {
        matches!(
            self,
            Request::DeviceAdd(_) | Request::DeviceImport(_) | Request::DeviceRm(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_rpc_line_becomes_a_command_with_empty_params_by_default() {
        let r = Request::parse(&json!({"op": "rpc", "endpoint": "ep", "method": "Read"})).unwrap();
        assert_eq!(
            r,
            Request::Command {
                endpoint: "ep".into(),
                method: "Read".into(),
                params: json!({})
            }
        );
        assert_eq!(r.endpoint(), Some("ep"));
    }

    #[test]
    fn a_missing_endpoint_or_unknown_op_is_a_bad_request_naming_it() {
        let a = Request::parse(&json!({"op": "device"})).unwrap_err();
        assert_eq!(a.result, "BAD_REQUEST");
        assert_eq!(a.error.as_deref(), Some("\"endpoint\" is missing"));
        let a = Request::parse(&json!({"op": "reboot"})).unwrap_err();
        let e = a.error.unwrap();
        assert!(
            e.contains("\"reboot\"") && e.contains("device-import"),
            "{e}"
        );
        let a = Request::parse(&json!({"op": "device-add", "credential": 7})).unwrap_err();
        assert!(a.error.unwrap().starts_with("credential: "));
    }

    #[test]
    fn only_device_provisioning_changes_credentials() {
        assert!(Request::parse(&json!({"op": "device-rm", "endpoint": "x"}))
            .unwrap()
            .changes_credentials());
        assert!(!Request::Profiles.changes_credentials());
        assert!(!Request::Watch(None).changes_credentials());
    }
}
