//! SenML JSON (110) and SenML CBOR (112), RFC 8428 with LwM2M's `vlo`.

use super::cbor_util::{cbor_err, read_bytes, read_str, read_value, write_float, Items};
use crate::lwm2m::node::{base64_decode, base64_encode, err, FormatError, Value};
use crate::lwm2m::path::Path;
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};
use serde_json::{Map, Value as Json};
use std::borrow::Cow;

/// Decoded records: full path and value (none in a path list).
pub type Records = Vec<(Path, Option<Value>)>;

/// Decoded records with their SenML time (`bt` + `t`), when given.
pub type TimedRecords = Vec<(Path, Option<Value>, Option<f64>)>;

fn untimed(r: TimedRecords) -> Records {
    r.into_iter().map(|(p, v, _)| (p, v)).collect()
}

/// Most records one payload may hold, so a small packet cannot
/// make the decoder allocate without limit.
const MAX_RECORDS: usize = 65_536;

/// Splits paths into a shared base name and the rest; the base always ends in `/`.
fn base_name(paths: &[&Path]) -> String {
    let segs = |p: &Path| -> Vec<u16> {
        [Some(p.object), p.instance, p.resource, p.resource_instance]
            .into_iter()
            .flatten()
            .collect()
    };
    let Some(first) = paths.first() else {
        return String::new();
    };
    let mut common = segs(first);
    for p in &paths[1..] {
        let s = segs(p);
        let n = common.iter().zip(&s).take_while(|(a, b)| a == b).count();
        common.truncate(n);
    }
    // Keep at least one segment in every name.
    let shortest = paths.iter().map(|p| p.depth()).min().unwrap_or(0);
    common.truncate(shortest.saturating_sub(1));
    let mut s = String::from("/");
    for x in common {
        s.push_str(&x.to_string());
        s.push('/');
    }
    s
}

/// A record's name: relative to the base name when there is one, else
/// the full path. Without a base name a name must be the whole path with
/// its leading `/` (LwM2M 1.1 7.4.4); a strict SenML reader takes
/// `0/1/0` for a name of its own, not for `/0/1/0`.
fn relative(p: &Path, bn: &str) -> String {
    let full = p.to_string();
    if bn.len() <= 1 {
        return full;
    }
    full.strip_prefix(bn).map(str::to_string).unwrap_or(full)
}

fn join(bn: &str, n: &str) -> Result<Path, FormatError> {
    let err = |e: crate::lwm2m::path::PathError| FormatError(format!("SenML name: {e}"));
    // Names are short: join them on the stack, not in a new String per record.
    let mut buf = [0u8; 64];
    let len = bn.len() + n.len();
    if len <= buf.len() {
        buf[..bn.len()].copy_from_slice(bn.as_bytes());
        buf[bn.len()..len].copy_from_slice(n.as_bytes());
        if let Ok(name) = std::str::from_utf8(&buf[..len]) {
            return Path::parse(name).map_err(err);
        }
    }
    Path::parse(&format!("{bn}{n}")).map_err(err)
}

/// Encodes values as SenML JSON.
pub fn encode_json(entries: &[(Path, Value)]) -> Vec<u8> {
    let bn = base_name(&entries.iter().map(|(p, _)| p).collect::<Vec<_>>());
    let mut records = Vec::with_capacity(entries.len());
    for (i, (p, v)) in entries.iter().enumerate() {
        let mut r = Map::new();
        if i == 0 && bn.len() > 1 {
            r.insert("bn".into(), Json::String(bn.clone()));
        }
        r.insert("n".into(), Json::String(relative(p, &bn)));
        let (k, j) = match v {
            Value::String(s) | Value::Corelnk(s) => ("vs", Json::String(s.clone())),
            Value::Boolean(b) => ("vb", Json::Bool(*b)),
            Value::Opaque(b) => ("vd", Json::String(base64_encode(b, true))),
            Value::Objlnk(o, i) => ("vlo", Json::String(format!("{o}:{i}"))),
            other => ("v", other.to_json()),
        };
        r.insert(k.into(), j);
        records.push(Json::Object(r));
    }
    serde_json::to_vec(&Json::Array(records)).unwrap_or_default()
}

/// A SenML JSON path list (`[{"n":"/3/0/9"}]`).
pub fn encode_paths_json(paths: &[Path]) -> Vec<u8> {
    let records: Vec<Json> = paths
        .iter()
        .map(|p| {
            Json::Object(Map::from_iter([(
                "n".to_string(),
                Json::String(p.to_string()),
            )]))
        })
        .collect();
    serde_json::to_vec(&Json::Array(records)).unwrap_or_default()
}

/// Decodes SenML JSON records.
pub fn decode_json(b: &[u8]) -> Result<Records, FormatError> {
    decode_json_timed(b).map(untimed)
}

/// Decodes SenML JSON records with their times.
pub fn decode_json_timed(b: &[u8]) -> Result<TimedRecords, FormatError> {
    let j: Json =
        serde_json::from_slice(b).map_err(|e| FormatError(format!("malformed SenML JSON: {e}")))?;
    let Json::Array(records) = j else {
        return err("SenML JSON must be an array of records");
    };
    if records.len() > MAX_RECORDS {
        return err("too many SenML records");
    }
    let mut bn = String::new();
    let mut bt = None;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Json::Object(r) = r else {
            return err("SenML record is not an object");
        };
        if let Some(b) = r.get("bn") {
            bn = b
                .as_str()
                .ok_or_else(|| FormatError("SenML bn is not a string".into()))?
                .to_string();
        }
        let number = |k: &str| -> Result<Option<f64>, FormatError> {
            match r.get(k) {
                None => Ok(None),
                Some(j) => j
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| FormatError(format!("SenML {k} is not a number"))),
            }
        };
        if let Some(b) = number("bt")? {
            bt = Some(b);
        }
        let t = record_time(bt, number("t")?);
        let n = match r.get("n") {
            Some(Json::String(s)) => s.as_str(),
            Some(_) => return err("SenML n is not a string"),
            None => "",
        };
        let p = join(&bn, n)?;
        let v = if let Some(v) = r.get("v") {
            let n = v
                .as_number()
                .ok_or_else(|| FormatError(format!("{p}: SenML v is not a number")))?;
            Some(Value::from_json_number(n))
        } else if let Some(v) = r.get("vs") {
            Some(Value::String(
                v.as_str()
                    .ok_or_else(|| FormatError(format!("{p}: vs is not a string")))?
                    .to_string(),
            ))
        } else if let Some(v) = r.get("vb") {
            Some(Value::Boolean(v.as_bool().ok_or_else(|| {
                FormatError(format!("{p}: vb is not a boolean"))
            })?))
        } else if let Some(v) = r.get("vd") {
            let s = v
                .as_str()
                .ok_or_else(|| FormatError(format!("{p}: vd is not a string")))?;
            Some(Value::Opaque(base64_decode(s).ok_or_else(|| {
                FormatError(format!("{p}: vd is not base64"))
            })?))
        } else if let Some(v) = r.get("vlo") {
            let s = v
                .as_str()
                .ok_or_else(|| FormatError(format!("{p}: vlo is not a string")))?;
            Some(Value::String(s.to_string()).coerce(crate::lwm2m::model::ResourceType::Objlnk)?)
        } else {
            None
        };
        out.push((p, v, t));
    }
    Ok(out)
}

/// A record's time: base time plus its own, when either is given.
fn record_time(bt: Option<f64>, t: Option<f64>) -> Option<f64> {
    match (bt, t) {
        (None, None) => None,
        (b, t) => Some(b.unwrap_or(0.0) + t.unwrap_or(0.0)),
    }
}

const BT: i64 = -3;
const T: i64 = 6;
const BN: i64 = -2;
const N: i64 = 0;
const V: i64 = 2;
const VS: i64 = 3;
const VB: i64 = 4;
const VD: i64 = 8;

/// Encodes values as SenML CBOR.
pub fn encode_cbor(entries: &[(Path, Value)]) -> Vec<u8> {
    let bn = base_name(&entries.iter().map(|(p, _)| p).collect::<Vec<_>>());
    let mut e = Encoder::new(Vec::with_capacity(16 * entries.len() + 8));
    let _ = e.array(entries.len() as u64);
    for (i, (p, v)) in entries.iter().enumerate() {
        let with_bn = i == 0 && bn.len() > 1;
        let _ = e.map(if with_bn { 3 } else { 2 });
        if with_bn {
            let _ = e.i64(BN).and_then(|e| e.str(&bn));
        }
        let _ = e.i64(N).and_then(|e| e.str(&relative(p, &bn)));
        let _ = match v {
            Value::String(s) | Value::Corelnk(s) => e.i64(VS).and_then(|e| e.str(s)),
            Value::Boolean(b) => e.i64(VB).and_then(|e| e.bool(*b)),
            Value::Opaque(b) => e.i64(VD).and_then(|e| e.bytes(b)),
            Value::Objlnk(o, i) => e.str("vlo").and_then(|e| e.str(&format!("{o}:{i}"))),
            Value::Integer(x) | Value::Time(x) => e.i64(V).and_then(|e| e.i64(*x)),
            Value::Unsigned(x) => e.i64(V).and_then(|e| e.u64(*x)),
            Value::Float(f) => e.i64(V).and_then(|e| write_float(e, *f)),
        };
    }
    e.into_writer()
}

/// A SenML CBOR path list.
pub fn encode_paths_cbor(paths: &[Path]) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    let _ = e.array(paths.len() as u64);
    for p in paths {
        let _ = e
            .map(1)
            .and_then(|e| e.i64(N))
            .and_then(|e| e.str(&p.to_string()));
    }
    e.into_writer()
}

/// Decodes SenML CBOR records.
pub fn decode_cbor(b: &[u8]) -> Result<Records, FormatError> {
    decode_cbor_timed(b).map(untimed)
}

/// Decodes SenML CBOR records with their times.
pub fn decode_cbor_timed(b: &[u8]) -> Result<TimedRecords, FormatError> {
    let mut d = Decoder::new(b);
    let mut records = Items::array(&mut d)?;
    // Checked before narrowing: on 32-bit boards a cast would wrap a huge
    // claimed length into a small one. An indefinite array is counted as
    // it is read.
    let limit = MAX_RECORDS.min(b.len());
    let n = match records.claimed().map(usize::try_from) {
        Some(Ok(n)) if n <= limit => n,
        Some(_) => return err("too many SenML records"),
        None => 0,
    };
    let mut bn: Cow<str> = Cow::Borrowed("");
    let mut bt = None;
    let mut out = Vec::with_capacity(n);
    while records.next(&mut d)? {
        if out.len() >= limit {
            return err("too many SenML records");
        }
        let mut t = None;
        let mut fields = Items::map(&mut d)?;
        let mut name: Cow<str> = Cow::Borrowed("");
        let mut value = None;
        while fields.next(&mut d)? {
            let key: Result<i64, Cow<str>> = match d.datatype().map_err(cbor_err)? {
                Type::String | Type::StringIndef => Err(read_str(&mut d)?),
                _ => Ok(d.i64().map_err(cbor_err)?),
            };
            match key {
                Ok(BN) => bn = read_str(&mut d)?,
                Ok(N) => name = read_str(&mut d)?,
                Ok(BT) => bt = Some(cbor_number(&mut d)?),
                Ok(T) => t = Some(cbor_number(&mut d)?),
                Ok(V) => {
                    value = Some(match read_value(&mut d)? {
                        v @ (Value::Integer(_) | Value::Unsigned(_) | Value::Float(_)) => v,
                        _ => return err("SenML v is not a number"),
                    })
                }
                Ok(VS) => value = Some(Value::String(read_str(&mut d)?.into_owned())),
                Ok(VB) => value = Some(Value::Boolean(d.bool().map_err(cbor_err)?)),
                Ok(VD) => value = Some(Value::Opaque(read_bytes(&mut d)?.into_owned())),
                Err(k) if k == "vlo" => {
                    let s = read_str(&mut d)?.into_owned();
                    value =
                        Some(Value::String(s).coerce(crate::lwm2m::model::ResourceType::Objlnk)?);
                }
                _ => d.skip().map_err(cbor_err)?,
            }
        }
        out.push((join(&bn, &name)?, value, record_time(bt, t)));
    }
    if d.position() != b.len() {
        return err("trailing bytes after SenML CBOR");
    }
    Ok(out)
}

fn cbor_number(d: &mut Decoder) -> Result<f64, FormatError> {
    match read_value(d)? {
        Value::Integer(i) => Ok(i as f64),
        Value::Unsigned(u) => Ok(u as f64),
        Value::Float(f) => Ok(f),
        _ => err("SenML time is not a number"),
    }
}
