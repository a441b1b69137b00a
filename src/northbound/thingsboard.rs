//! ThingsBoard's gateway MQTT API: the uplink payloads and the parsing of
//! what the platform sends down.

use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;

/// Sub-device connected.
pub const CONNECT: &str = "v1/gateway/connect";
/// Sub-device disconnected.
pub const DISCONNECT: &str = "v1/gateway/disconnect";
/// Time series.
pub const TELEMETRY: &str = "v1/gateway/telemetry";
/// Client attributes up; shared attribute updates down.
pub const ATTRIBUTES: &str = "v1/gateway/attributes";
/// Attribute requests up.
pub const ATTRIBUTES_REQUEST: &str = "v1/gateway/attributes/request";
/// Attribute responses down.
pub const ATTRIBUTES_RESPONSE: &str = "v1/gateway/attributes/response";
/// The gateway's own client attributes (it is a device of the platform too).
pub const SELF_ATTRIBUTES: &str = "v1/devices/me/attributes";
/// RPC requests down, answers up.
pub const RPC: &str = "v1/gateway/rpc";

/// What the platform asks of the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    /// Run a command on a device; answer with the same id.
    Rpc {
        /// Endpoint.
        device: String,
        /// Request id, echoed in the answer.
        id: Json,
        /// Command method.
        method: String,
        /// Command parameters.
        params: Json,
    },
    /// Shared attributes changed: write the mapped resources.
    SharedUpdate {
        /// Endpoint.
        device: String,
        /// Key to new value.
        values: Map<String, Json>,
    },
}

/// A downlink message that cannot be used, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDownlink(pub String);

/// Parses a message received on `topic`. `Ok(None)` for the gateway's own
/// uplink shapes, which a plain broker echoes back on the shared topics.
pub fn parse(topic: &str, payload: &[u8]) -> Result<Option<Downlink>, BadDownlink> {
    let j: Json = serde_json::from_slice(payload)
        .map_err(|e| BadDownlink(format!("{topic}: not JSON ({e})")))?;
    let own = match topic {
        // An RPC answer carries its id at the top.
        RPC => j.get("id").is_some() && j.get("device").is_some(),
        // Client attributes are keyed by device, with no "device" field.
        ATTRIBUTES => {
            j.get("device").is_none()
                && j.get("data").is_none()
                && j.as_object()
                    .is_some_and(|m| !m.is_empty() && m.values().all(Json::is_object))
        }
        _ => false,
    };
    if own {
        return Ok(None);
    }
    parse_downlink(topic, &j).map(Some)
}

fn parse_downlink(topic: &str, j: &Json) -> Result<Downlink, BadDownlink> {
    let bad = |m: &str| BadDownlink(format!("{topic}: {m}"));
    let device = j
        .get("device")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("no \"device\""))?
        .to_string();
    match topic {
        RPC => {
            let data = j.get("data").ok_or_else(|| bad("no \"data\""))?;
            let id = data
                .get("id")
                .cloned()
                .ok_or_else(|| bad("no \"data.id\""))?;
            let method = data
                .get("method")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("no \"data.method\""))?
                .to_string();
            let params = match data.get("params") {
                None | Some(Json::Null) => json!({}),
                // ThingsBoard sends params as a JSON string from some widgets.
                Some(Json::String(s)) if s.trim_start().starts_with('{') => {
                    serde_json::from_str(s).map_err(|_| bad("params is not a JSON object"))?
                }
                Some(p) => p.clone(),
            };
            Ok(Downlink::Rpc {
                device,
                id,
                method,
                params,
            })
        }
        ATTRIBUTES => {
            let data = j
                .get("data")
                .and_then(Json::as_object)
                .ok_or_else(|| bad("no \"data\" object"))?;
            let mut values = data.clone();
            values.remove("deleted");
            Ok(Downlink::SharedUpdate { device, values })
        }
        ATTRIBUTES_RESPONSE => {
            // Old shape: "value" (one key, named by the request) or
            // "values"; new shape: "client" and "shared" objects.
            let mut values = Map::new();
            for k in ["values", "shared"] {
                if let Some(m) = j.get(k).and_then(Json::as_object) {
                    values.extend(m.clone());
                }
            }
            if let (Some(v), Some(key)) = (j.get("value"), j.get("key").and_then(Json::as_str)) {
                values.insert(key.to_string(), v.clone());
            }
            Ok(Downlink::SharedUpdate { device, values })
        }
        other => Err(BadDownlink(format!(
            "{other}: not a topic the gateway handles"
        ))),
    }
}

/// `{"device": EP, "type": PROFILE}`.
pub fn connect(device: &str, profile: &str) -> Vec<u8> {
    json!({"device": device, "type": profile})
        .to_string()
        .into_bytes()
}

/// `{"device": EP}`.
pub fn disconnect(device: &str) -> Vec<u8> {
    json!({"device": device}).to_string().into_bytes()
}

/// The answer to an RPC.
pub fn rpc_answer(device: &str, id: &Json, answer: Json) -> Vec<u8> {
    json!({"device": device, "id": id, "data": answer})
        .to_string()
        .into_bytes()
}

/// A request for shared attributes (`client: false`), in the shape every
/// ThingsBoard version takes: `keys` lists them.
pub fn attributes_request(id: u64, device: &str, shared: &[String]) -> Vec<u8> {
    json!({"id": id, "device": device, "client": false, "keys": shared})
        .to_string()
        .into_bytes()
}

/// Telemetry and client attributes of many devices, gathered for one
/// message each: `{EP: [{"ts": .., "values": {..}}]}` and `{EP: {..}}`.
#[derive(Default)]
pub struct Batch {
    telemetry: BTreeMap<String, BTreeMap<u64, Map<String, Json>>>,
    attributes: BTreeMap<String, Map<String, Json>>,
    size: usize,
}

impl Batch {
    /// Adds one value.
    pub fn add(&mut self, device: &str, key: String, value: Json, ts: u64, attribute: bool) {
        self.size += device.len() + key.len() + 24;
        if attribute {
            self.attributes
                .entry(device.to_string())
                .or_default()
                .insert(key, value);
        } else {
            self.telemetry
                .entry(device.to_string())
                .or_default()
                .entry(ts)
                .or_default()
                .insert(key, value);
        }
    }

    /// Roughly how large the messages would be.
    pub fn size(&self) -> usize {
        self.size
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.telemetry.is_empty() && self.attributes.is_empty()
    }

    /// The messages: (topic, payload), telemetry first.
    pub fn take(&mut self) -> Vec<(&'static str, Vec<u8>)> {
        let mut out = Vec::new();
        if !self.telemetry.is_empty() {
            let mut m = Map::new();
            for (dev, by_ts) in std::mem::take(&mut self.telemetry) {
                let list: Vec<Json> = by_ts
                    .into_iter()
                    .map(|(ts, values)| json!({"ts": ts, "values": values}))
                    .collect();
                m.insert(dev, Json::Array(list));
            }
            out.push((TELEMETRY, Json::Object(m).to_string().into_bytes()));
        }
        if !self.attributes.is_empty() {
            let m: Map<String, Json> = std::mem::take(&mut self.attributes)
                .into_iter()
                .map(|(d, a)| (d, Json::Object(a)))
                .collect();
            out.push((ATTRIBUTES, Json::Object(m).to_string().into_bytes()));
        }
        self.size = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downlink_shapes_parse() {
        let rpc = parse(
            RPC,
            br#"{"device":"d1","data":{"id":42,"method":"Read","params":{"id":"/3/0/9"}}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            rpc,
            Downlink::Rpc {
                device: "d1".into(),
                id: json!(42),
                method: "Read".into(),
                params: json!({"id": "/3/0/9"})
            }
        );
        let shared = parse(
            ATTRIBUTES,
            br#"{"device":"d1","data":{"timezone":"+02","deleted":["x"]}}"#,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(shared, Downlink::SharedUpdate { ref values, .. } if values.len() == 1));
        for body in [
            &br#"{"id":1,"device":"d1","key":"timezone","value":"+02"}"#[..],
            br#"{"id":1,"device":"d1","values":{"timezone":"+02"}}"#,
            br#"{"id":1,"device":"d1","client":{},"shared":{"timezone":"+02"}}"#,
        ] {
            let d = parse(ATTRIBUTES_RESPONSE, body).unwrap().unwrap();
            assert!(
                matches!(&d, Downlink::SharedUpdate { values, .. } if values["timezone"] == "+02"),
                "{d:?}"
            );
        }
        for (topic, body) in [
            (RPC, &b"{not json"[..]),
            (RPC, br#"{"data":{"id":1,"method":"Read"}}"#),
            (RPC, br#"{"device":"d","data":{"method":"Read"}}"#),
            (ATTRIBUTES, br#"{"device":"d","data":5}"#),
            ("other/topic", br#"{"device":"d"}"#),
        ] {
            assert!(
                parse(topic, body).is_err(),
                "{topic} {:?}",
                String::from_utf8_lossy(body)
            );
        }
        // The gateway's own uplink, echoed by a plain broker, is not an error.
        assert_eq!(
            parse(RPC, br#"{"device":"d","id":1,"data":{"result":"CONTENT"}}"#),
            Ok(None)
        );
        assert_eq!(
            parse(ATTRIBUTES, br#"{"d1":{"manufacturer":"ACME"}}"#),
            Ok(None)
        );
    }

    #[test]
    fn a_batch_groups_values_by_device_and_time() {
        let mut b = Batch::default();
        b.add("d1", "temperature".into(), json!(21.5), 1000, false);
        b.add("d1", "battery".into(), json!(90), 1000, false);
        b.add("d1", "temperature".into(), json!(21.7), 2000, false);
        b.add("d2", "manufacturer".into(), json!("ACME"), 1000, true);
        let msgs = b.take();
        assert_eq!(msgs[0].0, TELEMETRY);
        let t: Json = serde_json::from_slice(&msgs[0].1).unwrap();
        assert_eq!(
            t,
            json!({"d1": [{"ts": 1000, "values": {"temperature": 21.5, "battery": 90}},
                          {"ts": 2000, "values": {"temperature": 21.7}}]})
        );
        let a: Json = serde_json::from_slice(&msgs[1].1).unwrap();
        assert_eq!(a, json!({"d2": {"manufacturer": "ACME"}}));
        assert!(b.is_empty());
    }
}
