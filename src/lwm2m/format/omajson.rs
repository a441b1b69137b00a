//! OMA LwM2M JSON (11543), the JSON format of LwM2M 1.0.

use super::senml::Records;
use crate::lwm2m::model::ResourceType;
use crate::lwm2m::node::{base64_encode, err, FormatError, Value};
use crate::lwm2m::path::Path;
use serde_json::{Map, Value as Json};

/// Encodes values under `at` (names are relative to it).
pub fn encode(at: &Path, entries: &[(Path, Value)]) -> Vec<u8> {
    let bn = format!("{at}/");
    let e: Vec<Json> = entries
        .iter()
        .map(|(p, v)| {
            let full = p.to_string();
            let n = full.strip_prefix(&bn).unwrap_or("").to_string();
            let (k, j) = match v {
                Value::String(s) | Value::Corelnk(s) => ("sv", Json::String(s.clone())),
                Value::Opaque(b) => ("sv", Json::String(base64_encode(b, false))),
                Value::Boolean(b) => ("bv", Json::Bool(*b)),
                Value::Objlnk(o, i) => ("ov", Json::String(format!("{o}:{i}"))),
                other => ("v", other.to_json()),
            };
            let mut r = Map::new();
            if !n.is_empty() {
                r.insert("n".into(), Json::String(n));
            }
            r.insert(k.into(), j);
            Json::Object(r)
        })
        .collect();
    let mut root = Map::new();
    root.insert("bn".into(), Json::String(bn));
    root.insert("e".into(), Json::Array(e));
    serde_json::to_vec(&Json::Object(root)).unwrap_or_default()
}

/// Decodes to full paths; `sv` stays a string until the model types it
/// (an opaque resource's base64 is decoded by `coerce_opaque`).
pub fn decode(b: &[u8]) -> Result<Records, FormatError> {
    let j: Json =
        serde_json::from_slice(b).map_err(|e| FormatError(format!("malformed LwM2M JSON: {e}")))?;
    let bn = j
        .get("bn")
        .and_then(Json::as_str)
        .unwrap_or("/")
        .to_string();
    let Some(Json::Array(e)) = j.get("e") else {
        return err("LwM2M JSON needs an \"e\" array");
    };
    let mut out = Vec::with_capacity(e.len());
    for r in e {
        let n = r.get("n").and_then(Json::as_str).unwrap_or("");
        let name = if n.is_empty() {
            bn.trim_end_matches('/').to_string()
        } else {
            format!("{bn}{n}")
        };
        let p = Path::parse(&name).map_err(|e| FormatError(format!("LwM2M JSON name: {e}")))?;
        let v = if let Some(v) = r.get("v") {
            let n = v
                .as_number()
                .ok_or_else(|| FormatError(format!("{p}: v is not a number")))?;
            Value::from_json_number(n)
        } else if let Some(v) = r.get("sv") {
            Value::String(
                v.as_str()
                    .ok_or_else(|| FormatError(format!("{p}: sv is not a string")))?
                    .into(),
            )
        } else if let Some(v) = r.get("bv") {
            Value::Boolean(
                v.as_bool()
                    .ok_or_else(|| FormatError(format!("{p}: bv is not a boolean")))?,
            )
        } else if let Some(v) = r.get("ov") {
            Value::String(v.as_str().unwrap_or_default().into()).coerce(ResourceType::Objlnk)?
        } else {
            return err(format!("{p} has no value"));
        };
        out.push((p, Some(v)));
    }
    Ok(out)
}
