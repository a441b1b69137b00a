//! Typed node model: objects, instances, resources, resource instances and values.
//!
//! A `Node` is always read together with the `Path` it sits at; the ids in
//! the path are not repeated inside the node. Types come from the object
//! models through `Schema`, because most content formats do not carry them.

use super::model::ResourceType;
use super::path::Path;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt;

/// One resource value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// UTF-8 string.
    String(String),
    /// Signed integer.
    Integer(i64),
    /// Unsigned integer.
    Unsigned(u64),
    /// Floating point.
    Float(f64),
    /// Boolean.
    Boolean(bool),
    /// Opaque bytes.
    Opaque(Vec<u8>),
    /// Unix time, seconds.
    Time(i64),
    /// Object link `object:instance`.
    Objlnk(u16, u16),
    /// CoRE link text.
    Corelnk(String),
}

/// A single- or multiple-instance resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// Single-instance resource.
    Single(Value),
    /// Multiple-instance resource, by resource instance id.
    Multiple(BTreeMap<u16, Value>),
}

/// Resources of one object instance, by resource id.
pub type Instance = BTreeMap<u16, Resource>;

/// A node of the data model; its ids are in the path it is paired with.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Every instance of an object, by instance id.
    Object(BTreeMap<u16, Instance>),
    /// One object instance.
    Instance(Instance),
    /// One resource.
    Resource(Resource),
    /// One resource instance.
    ResourceInstance(Value),
}

/// Why a value or a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

/// Shorthand for building a `FormatError`.
pub fn err<T>(msg: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError(msg.into()))
}

/// Where resource types come from (normally the model library).
pub trait Schema {
    /// Type and multiplicity of resource `object/_/resource`, if known.
    fn resource(&self, object: u16, resource: u16) -> Option<(ResourceType, bool)>;
}

impl Value {
    /// The resource type this value has.
    pub fn rtype(&self) -> ResourceType {
        match self {
            Value::String(_) => ResourceType::String,
            Value::Integer(_) => ResourceType::Integer,
            Value::Unsigned(_) => ResourceType::UnsignedInteger,
            Value::Float(_) => ResourceType::Float,
            Value::Boolean(_) => ResourceType::Boolean,
            Value::Opaque(_) => ResourceType::Opaque,
            Value::Time(_) => ResourceType::Time,
            Value::Objlnk(..) => ResourceType::Objlnk,
            Value::Corelnk(_) => ResourceType::Corelnk,
        }
    }

    /// Converts a value decoded without full type information (a SenML
    /// number, a string) to the model's type; refuses what does not fit.
    pub fn coerce(self, t: ResourceType) -> Result<Value, FormatError> {
        use ResourceType as T;
        if self.rtype() == t || t == T::None {
            return Ok(self);
        }
        let v = match (self, t) {
            (Value::Integer(i), T::Time) => Value::Time(i),
            (Value::Unsigned(u), T::Time) if u <= i64::MAX as u64 => Value::Time(u as i64),
            (Value::Unsigned(u), T::Integer) if u <= i64::MAX as u64 => Value::Integer(u as i64),
            (Value::Integer(i), T::UnsignedInteger) if i >= 0 => Value::Unsigned(i as u64),
            (Value::Time(i), T::Integer) => Value::Integer(i),
            (Value::Integer(i), T::Float) => Value::Float(i as f64),
            (Value::Unsigned(u), T::Float) => Value::Float(u as f64),
            (Value::Float(f), T::Integer) if is_whole(f) => Value::Integer(f as i64),
            (Value::Float(f), T::Time) if is_whole(f) => Value::Time(f as i64),
            (Value::Float(f), T::UnsignedInteger) if is_whole(f) && f >= 0.0 => {
                Value::Unsigned(f as u64)
            }
            (Value::String(s), T::Corelnk) => Value::Corelnk(s),
            (Value::Corelnk(s), T::String) => Value::String(s),
            (Value::String(s), T::Objlnk) => parse_objlnk(&s)?,
            // OMA JSON carries opaque values as base64 strings.
            (Value::String(s), T::Opaque) => Value::Opaque(
                base64_decode(&s).ok_or_else(|| FormatError(format!("{s:?} is not base64")))?,
            ),
            (v, t) => {
                return err(format!(
                    "a {} value does not fit a {} resource",
                    type_name(v.rtype()),
                    type_name(t)
                ))
            }
        };
        Ok(v)
    }

    /// The value as JSON for answers: numbers, strings, booleans; opaque
    /// as lower-case hex, object links as `"3:0"`, time as Unix seconds.
    pub fn to_json(&self) -> Json {
        match self {
            Value::String(s) | Value::Corelnk(s) => Json::String(s.clone()),
            Value::Integer(i) | Value::Time(i) => Json::from(*i),
            Value::Unsigned(u) => Json::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Value::Boolean(b) => Json::Bool(*b),
            Value::Opaque(b) => Json::String(hex(b)),
            Value::Objlnk(o, i) => Json::String(format!("{o}:{i}")),
        }
    }

    /// A value of type `t` from command JSON. Strings are accepted for
    /// numbers and booleans ("+5", "true") because ThingsBoard sends them so.
    pub fn from_json(j: &Json, t: ResourceType) -> Result<Value, FormatError> {
        use ResourceType as T;
        match (j, t) {
            (Json::String(s), _) => Value::from_text(s, t, TextOpaque::Hex),
            (Json::Bool(b), T::Boolean) => Ok(Value::Boolean(*b)),
            (Json::Number(n), T::Integer | T::Time) => n
                .as_i64()
                .map(|i| {
                    if t == T::Time {
                        Value::Time(i)
                    } else {
                        Value::Integer(i)
                    }
                })
                .ok_or_else(|| FormatError(format!("{n} is not a whole number in range"))),
            (Json::Number(n), T::UnsignedInteger) => n
                .as_u64()
                .map(Value::Unsigned)
                .ok_or_else(|| FormatError(format!("{n} is not an unsigned whole number"))),
            (Json::Number(n), T::Float) => n
                .as_f64()
                .map(Value::Float)
                .ok_or_else(|| FormatError(format!("{n} is not a number"))),
            (Json::Number(n), T::Boolean) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                Ok(Value::Boolean(n.as_u64() == Some(1)))
            }
            (j, t) => err(format!("{j} does not fit a {} resource", type_name(t))),
        }
    }

    /// A JSON number as the narrowest value that holds it (SenML `v`, OMA JSON `v`).
    pub fn from_json_number(n: &serde_json::Number) -> Value {
        if let Some(i) = n.as_i64() {
            Value::Integer(i)
        } else if let Some(u) = n.as_u64() {
            Value::Unsigned(u)
        } else {
            Value::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// Parses the text form of a value (text/plain payloads, command strings).
    pub fn from_text(s: &str, t: ResourceType, opaque: TextOpaque) -> Result<Value, FormatError> {
        use ResourceType as T;
        let bad = || FormatError(format!("{s:?} is not a valid {}", type_name(t)));
        let v = match t {
            T::String | T::None => Value::String(s.to_string()),
            T::Corelnk => Value::Corelnk(s.to_string()),
            T::Integer => Value::Integer(parse_int(s).ok_or_else(bad)?),
            T::Time => Value::Time(parse_int(s).ok_or_else(bad)?),
            T::UnsignedInteger => Value::Unsigned(
                s.trim()
                    .strip_prefix('+')
                    .unwrap_or(s.trim())
                    .parse()
                    .map_err(|_| bad())?,
            ),
            T::Float => {
                let f: f64 = s.trim().parse().map_err(|_| bad())?;
                if !f.is_finite() {
                    return Err(bad());
                }
                Value::Float(f)
            }
            T::Boolean => match s.trim() {
                "1" | "true" => Value::Boolean(true),
                "0" | "false" => Value::Boolean(false),
                _ => return Err(bad()),
            },
            T::Opaque => Value::Opaque(match opaque {
                TextOpaque::Hex => unhex(s.trim()).ok_or_else(bad)?,
                TextOpaque::Base64 => base64_decode(s.trim()).ok_or_else(bad)?,
            }),
            T::Objlnk => parse_objlnk(s)?,
        };
        Ok(v)
    }

    /// The text/plain form (opaque as base64, booleans as 0/1).
    pub fn to_text(&self) -> String {
        match self {
            Value::String(s) | Value::Corelnk(s) => s.clone(),
            Value::Integer(i) | Value::Time(i) => i.to_string(),
            Value::Unsigned(u) => u.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Boolean(b) => (if *b { "1" } else { "0" }).to_string(),
            Value::Opaque(b) => base64_encode(b, false),
            Value::Objlnk(o, i) => format!("{o}:{i}"),
        }
    }
}

/// How opaque values are spelled in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOpaque {
    /// Hex, as in commands.
    Hex,
    /// Base64, as in text/plain payloads.
    Base64,
}

fn is_whole(f: f64) -> bool {
    f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18
}

fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    s.strip_prefix('+').unwrap_or(s).parse().ok()
}

/// Formats a float so that it parses back to the same value.
fn format_float(f: f64) -> String {
    if is_whole(f) && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn parse_objlnk(s: &str) -> Result<Value, FormatError> {
    let bad = || FormatError(format!("{s:?} is not an object link like \"3:0\""));
    let (o, i) = s.trim().split_once(':').ok_or_else(bad)?;
    Ok(Value::Objlnk(
        o.parse().map_err(|_| bad())?,
        i.parse().map_err(|_| bad())?,
    ))
}

/// A readable type name for messages.
pub fn type_name(t: ResourceType) -> &'static str {
    match t {
        ResourceType::None => "executable",
        ResourceType::UnsignedInteger => "unsigned integer",
        ResourceType::String => "string",
        ResourceType::Integer => "integer",
        ResourceType::Float => "float",
        ResourceType::Boolean => "boolean",
        ResourceType::Opaque => "opaque",
        ResourceType::Time => "time",
        ResourceType::Objlnk => "object link",
        ResourceType::Corelnk => "CoRE link",
    }
}

impl Resource {
    /// The resource as answer JSON: a value, or `{"<instance>": value}`.
    pub fn to_json(&self) -> Json {
        match self {
            Resource::Single(v) => v.to_json(),
            Resource::Multiple(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

impl Node {
    /// The node as answer JSON; ids become object keys.
    pub fn to_json(&self) -> Json {
        fn inst(i: &Instance) -> Json {
            Json::Object(
                i.iter()
                    .map(|(k, r)| (k.to_string(), r.to_json()))
                    .collect(),
            )
        }
        match self {
            Node::Object(o) => {
                Json::Object(o.iter().map(|(k, i)| (k.to_string(), inst(i))).collect())
            }
            Node::Instance(i) => inst(i),
            Node::Resource(r) => r.to_json(),
            Node::ResourceInstance(v) => v.to_json(),
        }
    }

    /// Every value with its full path, in path order.
    pub fn entries(&self, at: &Path) -> Vec<(Path, Value)> {
        let mut out = Vec::new();
        let res = |out: &mut Vec<(Path, Value)>, p: Path, r: &Resource| match r {
            Resource::Single(v) => out.push((p, v.clone())),
            Resource::Multiple(m) => {
                for (ri, v) in m {
                    let mut q = p;
                    q.resource_instance = Some(*ri);
                    out.push((q, v.clone()));
                }
            }
        };
        match self {
            Node::Object(o) => {
                for (i, inst) in o {
                    for (r, rv) in inst {
                        let p = Path {
                            object: at.object,
                            instance: Some(*i),
                            resource: Some(*r),
                            resource_instance: None,
                        };
                        res(&mut out, p, rv);
                    }
                }
            }
            Node::Instance(inst) => {
                for (r, rv) in inst {
                    let mut p = *at;
                    p.resource = Some(*r);
                    res(&mut out, p, rv);
                }
            }
            Node::Resource(r) => res(&mut out, *at, r),
            Node::ResourceInstance(v) => out.push((*at, v.clone())),
        }
        out
    }

    /// Rebuilds the node at `at` from flat entries; entries outside `at`
    /// are refused. A resource is multiple when the schema says so or when
    /// an entry names a resource instance.
    pub fn from_entries(
        at: &Path,
        entries: Vec<(Path, Value)>,
        schema: &dyn Schema,
    ) -> Result<Node, FormatError> {
        let mut obj: BTreeMap<u16, Instance> = BTreeMap::new();
        for (p, v) in entries {
            if !within(at, &p) {
                return err(format!("{p} is outside the requested path {at}"));
            }
            let (Some(i), Some(r)) = (p.instance, p.resource) else {
                return err(format!("{p} does not name a resource"));
            };
            let multiple = p.resource_instance.is_some()
                || schema.resource(p.object, r).is_some_and(|(_, m)| m);
            let inst = obj.entry(i).or_default();
            match p.resource_instance {
                None if !multiple => {
                    inst.insert(r, Resource::Single(v));
                }
                None => {
                    return err(format!(
                        "{p} is a multiple resource; a value needs an instance id"
                    ))
                }
                Some(ri) => match inst
                    .entry(r)
                    .or_insert_with(|| Resource::Multiple(BTreeMap::new()))
                {
                    Resource::Multiple(m) => {
                        m.insert(ri, v);
                    }
                    Resource::Single(_) => {
                        return err(format!("{p}: resource given both as single and multiple"))
                    }
                },
            }
        }
        Ok(match (at.instance, at.resource, at.resource_instance) {
            (None, _, _) => Node::Object(obj),
            (Some(i), None, _) => Node::Instance(obj.remove(&i).unwrap_or_default()),
            (Some(i), Some(r), None) => {
                let multiple = schema.resource(at.object, r).is_some_and(|(_, m)| m);
                match obj.remove(&i).and_then(|mut inst| inst.remove(&r)) {
                    Some(res) => Node::Resource(res),
                    None if multiple => Node::Resource(Resource::Multiple(BTreeMap::new())),
                    None => return err(format!("no value for {at}")),
                }
            }
            (Some(i), Some(r), Some(ri)) => {
                match obj.remove(&i).and_then(|mut inst| inst.remove(&r)) {
                    Some(Resource::Multiple(mut m)) => match m.remove(&ri) {
                        Some(v) => Node::ResourceInstance(v),
                        None => return err(format!("no value for {at}")),
                    },
                    _ => return err(format!("no value for {at}")),
                }
            }
        })
    }

    /// A node at `at` from command JSON, typed by the schema: a value for a
    /// resource (or `{"<instance>": value}` for a multiple one),
    /// `{"<resource>": ...}` for an instance, `{"<instance>": {...}}` for an object.
    pub fn from_json(at: &Path, j: &Json, schema: &dyn Schema) -> Result<Node, FormatError> {
        let id = |k: &str| -> Result<u16, FormatError> {
            match k.parse::<u16>() {
                Ok(v) if v != u16::MAX => Ok(v),
                _ => err(format!("{k:?} is not an id from 0 to 65534")),
            }
        };
        fn object<'j>(
            at: &Path,
            j: &'j Json,
        ) -> Result<&'j serde_json::Map<String, Json>, FormatError> {
            j.as_object().ok_or_else(|| {
                FormatError(format!("expected a JSON object of ids at {at}, got {j}"))
            })
        }
        let rtype = |r: u16| -> Result<(ResourceType, bool), FormatError> {
            schema.resource(at.object, r).ok_or_else(|| {
                FormatError(format!(
                    "resource /{}/_/{r} is not in the object model",
                    at.object
                ))
            })
        };
        let resource = |r: u16, j: &Json| -> Result<Resource, FormatError> {
            let (t, multiple) = rtype(r)?;
            if multiple && !j.is_object() {
                // One value for a multiple resource: its instance 0, as
                // ThingsBoard's WriteReplace of /19/0/0 with "0081" means.
                let mut m = BTreeMap::new();
                m.insert(0, Value::from_json(j, t)?);
                Ok(Resource::Multiple(m))
            } else if multiple {
                let mut m = BTreeMap::new();
                for (k, v) in object(at, j)? {
                    m.insert(id(k)?, Value::from_json(v, t)?);
                }
                Ok(Resource::Multiple(m))
            } else {
                Ok(Resource::Single(Value::from_json(j, t)?))
            }
        };
        let instance = |j: &Json| -> Result<Instance, FormatError> {
            let mut inst = Instance::new();
            for (k, v) in object(at, j)? {
                let r = id(k)?;
                inst.insert(r, resource(r, v)?);
            }
            Ok(inst)
        };
        Ok(match (at.instance, at.resource, at.resource_instance) {
            (None, _, _) => {
                let mut o = BTreeMap::new();
                for (k, v) in object(at, j)? {
                    o.insert(id(k)?, instance(v)?);
                }
                Node::Object(o)
            }
            (Some(_), None, _) => Node::Instance(instance(j)?),
            (Some(_), Some(r), None) => Node::Resource(resource(r, j)?),
            (Some(_), Some(r), Some(_)) => {
                Node::ResourceInstance(Value::from_json(j, rtype(r)?.0)?)
            }
        })
    }
}

/// True when `p` is `at` or below it.
pub fn within(at: &Path, p: &Path) -> bool {
    let a = [at.instance, at.resource, at.resource_instance];
    let b = [p.instance, p.resource, p.resource_instance];
    at.object == p.object && a.iter().zip(b.iter()).all(|(x, y)| x.is_none() || x == y)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Parses hex (either case); `None` on odd length or other characters.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64; `url` selects the URL-safe alphabet without padding (SenML `vd`).
pub fn base64_encode(b: &[u8], url: bool) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..=chunk.len() {
            let mut c = B64[(n >> (18 - 6 * i) & 63) as usize];
            if url {
                c = match c {
                    b'+' => b'-',
                    b'/' => b'_',
                    c => c,
                };
            }
            out.push(c as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64 in either alphabet, padded or not.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema that knows nothing: values keep the type their format gives.
    struct NoSchema;

    impl Schema for NoSchema {
        fn resource(&self, _: u16, _: u16) -> Option<(ResourceType, bool)> {
            None
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes(), false), enc);
            assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
        }
        assert_eq!(base64_encode(&[0xfb, 0xff], true), "-_8");
        assert_eq!(base64_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert!(base64_decode("a*b").is_none() && base64_decode("a").is_none());
    }

    #[test]
    fn command_json_is_typed_by_the_resource() {
        let v = |j: Json, t| Value::from_json(&j, t);
        assert_eq!(
            v(Json::from("+5"), ResourceType::Integer),
            Ok(Value::Integer(5))
        );
        assert_eq!(
            v(Json::from(75), ResourceType::Float),
            Ok(Value::Float(75.0))
        );
        assert_eq!(
            v(Json::from("00ad"), ResourceType::Opaque),
            Ok(Value::Opaque(vec![0, 0xad]))
        );
        assert_eq!(
            v(Json::from("3:0"), ResourceType::Objlnk),
            Ok(Value::Objlnk(3, 0))
        );
        assert_eq!(
            v(Json::from(true), ResourceType::Boolean),
            Ok(Value::Boolean(true))
        );
        assert!(v(Json::from("abc"), ResourceType::Integer).is_err());
        assert!(v(Json::from(-1), ResourceType::UnsignedInteger).is_err());
        assert!(v(Json::from(1.5), ResourceType::Integer).is_err());
        assert!(v(Json::from("0g"), ResourceType::Opaque).is_err());
    }

    #[test]
    fn coercion_keeps_fitting_values_and_refuses_others() {
        assert_eq!(
            Value::Integer(5).coerce(ResourceType::Time),
            Ok(Value::Time(5))
        );
        assert_eq!(
            Value::Float(2.0).coerce(ResourceType::Integer),
            Ok(Value::Integer(2))
        );
        assert!(Value::Float(2.5).coerce(ResourceType::Integer).is_err());
        assert!(Value::Boolean(true).coerce(ResourceType::String).is_err());
        assert!(Value::Integer(-1)
            .coerce(ResourceType::UnsignedInteger)
            .is_err());
    }

    #[test]
    fn entries_and_back_give_the_same_node() {
        let mut inst = Instance::new();
        inst.insert(0, Resource::Single(Value::String("x".into())));
        inst.insert(
            6,
            Resource::Multiple(BTreeMap::from([
                (0, Value::Integer(1)),
                (1, Value::Integer(5)),
            ])),
        );
        let node = Node::Instance(inst);
        let at = Path::parse("/3/0").unwrap();
        let e = node.entries(&at);
        assert_eq!(e.len(), 3);
        assert_eq!(e[2].0, Path::parse("/3/0/6/1").unwrap());
        assert_eq!(Node::from_entries(&at, e, &NoSchema).unwrap(), node);
        let outside = vec![(Path::parse("/3/1/0").unwrap(), Value::Integer(1))];
        assert!(Node::from_entries(&at, outside, &NoSchema).is_err());
    }
}
