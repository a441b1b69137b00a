//! Content formats: encode and decode nodes in every LwM2M data format.
//!
//! Single-value formats (text, opaque, CBOR, link) live here; the
//! structured ones have a file each. Decoders use the `Schema` for the
//! types their format does not carry.

mod cbor_util;
mod lwcbor;
mod omajson;
mod senml;
mod tlv;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cbor_tests;

use super::model::ResourceType;
use super::node::{err, FormatError, Node, Resource, Schema, TextOpaque, Value};
use super::path::Path;
use std::fmt;

/// A CoAP Content-Format LwM2M defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentFormat {
    /// text/plain (0).
    Text,
    /// application/link-format (40).
    Link,
    /// application/octet-stream (42).
    Opaque,
    /// application/cbor (60), one value.
    Cbor,
    /// application/senml+json (110).
    SenmlJson,
    /// application/senml+cbor (112).
    SenmlCbor,
    /// application/vnd.oma.lwm2m+tlv (11542).
    Tlv,
    /// application/vnd.oma.lwm2m+json (11543).
    OmaJson,
    /// application/vnd.oma.lwm2m+cbor (11544).
    Lwm2mCbor,
}

impl ContentFormat {
    /// Every format, in a stable order.
    pub const ALL: [ContentFormat; 9] = [
        ContentFormat::Text,
        ContentFormat::Link,
        ContentFormat::Opaque,
        ContentFormat::Cbor,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::Tlv,
        ContentFormat::OmaJson,
        ContentFormat::Lwm2mCbor,
    ];

    /// The Content-Format number.
    pub fn code(self) -> u16 {
        match self {
            ContentFormat::Text => 0,
            ContentFormat::Link => 40,
            ContentFormat::Opaque => 42,
            ContentFormat::Cbor => 60,
            ContentFormat::SenmlJson => 110,
            ContentFormat::SenmlCbor => 112,
            ContentFormat::Tlv => 11542,
            ContentFormat::OmaJson => 11543,
            ContentFormat::Lwm2mCbor => 11544,
        }
    }

    /// The format with this number.
    pub fn from_code(c: u16) -> Option<ContentFormat> {
        ContentFormat::ALL.into_iter().find(|f| f.code() == c)
    }

    /// The format named in a command or on the command line
    /// (`TLV`, `SENML_JSON`, `senml-cbor`, `11544`...).
    pub fn from_name(s: &str) -> Option<ContentFormat> {
        if let Ok(c) = s.parse::<u16>() {
            return ContentFormat::from_code(c);
        }
        let n: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        ContentFormat::ALL.into_iter().find(|f| {
            f.name()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .eq_ignore_ascii_case(&n)
        })
    }

    /// Short upper-case name (`SENML_CBOR`).
    pub fn name(self) -> &'static str {
        match self {
            ContentFormat::Text => "TEXT",
            ContentFormat::Link => "LINK",
            ContentFormat::Opaque => "OPAQUE",
            ContentFormat::Cbor => "CBOR",
            ContentFormat::SenmlJson => "SENML_JSON",
            ContentFormat::SenmlCbor => "SENML_CBOR",
            ContentFormat::Tlv => "TLV",
            ContentFormat::OmaJson => "JSON",
            ContentFormat::Lwm2mCbor => "LWM2M_CBOR",
        }
    }

    /// True for formats that carry many values with their paths.
    pub fn is_structured(self) -> bool {
        matches!(
            self,
            ContentFormat::SenmlJson
                | ContentFormat::SenmlCbor
                | ContentFormat::Tlv
                | ContentFormat::OmaJson
                | ContentFormat::Lwm2mCbor
        )
    }

    /// True for formats that can carry values from several objects
    /// (Read-Composite, Write-Composite, Send).
    pub fn is_composite(self) -> bool {
        matches!(
            self,
            ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::Lwm2mCbor
        )
    }
}

impl fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Encodes `node` at path `at`.
pub fn encode(cf: ContentFormat, at: &Path, node: &Node) -> Result<Vec<u8>, FormatError> {
    match cf {
        ContentFormat::Tlv => tlv::encode(at, node),
        ContentFormat::SenmlJson => Ok(senml::encode_json(&node.entries(at))),
        ContentFormat::SenmlCbor => Ok(senml::encode_cbor(&node.entries(at))),
        ContentFormat::OmaJson => Ok(omajson::encode(at, &node.entries(at))),
        ContentFormat::Lwm2mCbor => Ok(lwcbor::encode(&node.entries(at))),
        single => encode_single(single, single_value(at, node)?),
    }
}

/// Decodes a payload that answers (or writes) path `at`.
pub fn decode(
    cf: ContentFormat,
    at: &Path,
    bytes: &[u8],
    schema: &dyn Schema,
) -> Result<Node, FormatError> {
    match cf {
        ContentFormat::Tlv => tlv::decode(at, bytes, schema),
        ContentFormat::SenmlJson
        | ContentFormat::SenmlCbor
        | ContentFormat::OmaJson
        | ContentFormat::Lwm2mCbor => {
            Node::from_entries(at, decode_entries(cf, bytes, schema)?, schema)
        }
        single => {
            let (Some(r), Some(_)) = (at.resource, at.instance) else {
                return err(format!(
                    "{single} carries one value; {at} is not a resource"
                ));
            };
            let t = schema.resource(at.object, r).map(|(t, _)| t);
            let v = decode_single(single, bytes, t)?;
            Ok(match at.resource_instance {
                Some(_) => Node::ResourceInstance(v),
                None => Node::Resource(Resource::Single(v)),
            })
        }
    }
}

/// Encodes values from anywhere in the tree (composite formats only).
pub fn encode_entries(
    cf: ContentFormat,
    entries: &[(Path, Value)],
) -> Result<Vec<u8>, FormatError> {
    match cf {
        ContentFormat::SenmlJson => Ok(senml::encode_json(entries)),
        ContentFormat::SenmlCbor => Ok(senml::encode_cbor(entries)),
        ContentFormat::Lwm2mCbor => Ok(lwcbor::encode(entries)),
        other => err(format!("{other} cannot carry values from several paths")),
    }
}

/// Decodes a structured payload into values with their full paths.
pub fn decode_entries(
    cf: ContentFormat,
    bytes: &[u8],
    schema: &dyn Schema,
) -> Result<Vec<(Path, Value)>, FormatError> {
    let raw = match cf {
        ContentFormat::SenmlJson => senml::decode_json(bytes)?,
        ContentFormat::SenmlCbor => senml::decode_cbor(bytes)?,
        ContentFormat::OmaJson => omajson::decode(bytes)?,
        ContentFormat::Lwm2mCbor => lwcbor::decode(bytes)?,
        ContentFormat::Tlv => return err("TLV has no absolute paths; decode it at a path instead"),
        other => return err(format!("{other} is not a structured format")),
    };
    raw.into_iter()
        .map(|(p, v)| {
            let v = match v {
                Some(v) => v,
                None => return err(format!("{p} has no value")),
            };
            Ok((p, typed(&p, v, schema)?))
        })
        .collect()
}

/// One reported value: full path, typed value, and the time the device
/// gave it (seconds; absolute, or relative to now when below 2^28 as in
/// RFC 8428 4.5.3).
pub type Reading = (Path, Value, Option<f64>);

/// Decodes a notification or Send payload into readings. `at` is the
/// observed path, needed by the formats without absolute paths.
pub fn decode_readings(
    cf: ContentFormat,
    at: Option<&Path>,
    bytes: &[u8],
    schema: &dyn Schema,
) -> Result<Vec<Reading>, FormatError> {
    let timed = match cf {
        ContentFormat::SenmlJson => senml::decode_json_timed(bytes)?,
        ContentFormat::SenmlCbor => senml::decode_cbor_timed(bytes)?,
        ContentFormat::OmaJson | ContentFormat::Lwm2mCbor => {
            let entries = decode_entries(cf, bytes, schema)?;
            return Ok(entries.into_iter().map(|(p, v)| (p, v, None)).collect());
        }
        other => {
            let Some(at) = at else {
                return err(format!("{other} needs a path to decode against"));
            };
            let node = decode(other, at, bytes, schema)?;
            return Ok(node
                .entries(at)
                .into_iter()
                .map(|(p, v)| (p, v, None))
                .collect());
        }
    };
    if timed.len() > MAX_READINGS {
        return err("too many values in one report");
    }
    timed
        .into_iter()
        .map(|(p, v, t)| match v {
            Some(v) => Ok((p, typed(&p, v, schema)?, t)),
            None => err(format!("{p} has no value")),
        })
        .collect()
}

/// Most values one report may carry.
const MAX_READINGS: usize = 65_536;

/// Encodes the path list of a Read-Composite or Observe-Composite request.
pub fn encode_paths(cf: ContentFormat, paths: &[Path]) -> Result<Vec<u8>, FormatError> {
    match cf {
        ContentFormat::SenmlJson => Ok(senml::encode_paths_json(paths)),
        ContentFormat::SenmlCbor => Ok(senml::encode_paths_cbor(paths)),
        ContentFormat::Lwm2mCbor => Ok(lwcbor::encode_paths(paths)),
        other => err(format!("{other} cannot carry a path list")),
    }
}

/// Decodes the path list of a Read-Composite request.
pub fn decode_paths(cf: ContentFormat, bytes: &[u8]) -> Result<Vec<Path>, FormatError> {
    let raw = match cf {
        ContentFormat::SenmlJson => senml::decode_json(bytes)?,
        ContentFormat::SenmlCbor => senml::decode_cbor(bytes)?,
        ContentFormat::Lwm2mCbor => lwcbor::decode(bytes)?,
        other => return err(format!("{other} cannot carry a path list")),
    };
    Ok(raw.into_iter().map(|(p, _)| p).collect())
}

/// Gives a decoded value the type of its resource, when the model knows it.
fn typed(p: &Path, v: Value, schema: &dyn Schema) -> Result<Value, FormatError> {
    match p.resource.and_then(|r| schema.resource(p.object, r)) {
        Some((t, _)) => v.coerce(t).map_err(|e| FormatError(format!("{p}: {e}"))),
        None => Ok(v),
    }
}

fn single_value<'a>(at: &Path, node: &'a Node) -> Result<&'a Value, FormatError> {
    match node {
        Node::Resource(Resource::Single(v)) | Node::ResourceInstance(v) => Ok(v),
        _ => err(format!(
            "{at} holds more than one value; use a structured format"
        )),
    }
}

fn encode_single(cf: ContentFormat, v: &Value) -> Result<Vec<u8>, FormatError> {
    match cf {
        ContentFormat::Text => Ok(v.to_text().into_bytes()),
        ContentFormat::Opaque => match v {
            Value::Opaque(b) => Ok(b.clone()),
            other => err(format!(
                "opaque format carries opaque values only, not {:?}",
                other.rtype()
            )),
        },
        ContentFormat::Link => match v {
            Value::Corelnk(s) => Ok(s.clone().into_bytes()),
            _ => err("link format carries CoRE link values only"),
        },
        ContentFormat::Cbor => Ok(cbor_util::encode_value(v)),
        other => err(format!("{other} is not a single-value format")),
    }
}

fn decode_single(
    cf: ContentFormat,
    bytes: &[u8],
    t: Option<ResourceType>,
) -> Result<Value, FormatError> {
    let text =
        || std::str::from_utf8(bytes).map_err(|_| FormatError("payload is not UTF-8".into()));
    match cf {
        ContentFormat::Text => Value::from_text(
            text()?,
            t.unwrap_or(ResourceType::String),
            TextOpaque::Base64,
        ),
        ContentFormat::Opaque => match t {
            None | Some(ResourceType::Opaque) => Ok(Value::Opaque(bytes.to_vec())),
            Some(t) => err(format!("an opaque payload does not fit a {t:?} resource")),
        },
        ContentFormat::Link => {
            Value::Corelnk(text()?.to_string()).coerce(t.unwrap_or(ResourceType::Corelnk))
        }
        ContentFormat::Cbor => {
            let v = cbor_util::decode_value(bytes)?;
            match t {
                Some(t) => v.coerce(t),
                None => Ok(v),
            }
        }
        other => err(format!("{other} is not a single-value format")),
    }
}
