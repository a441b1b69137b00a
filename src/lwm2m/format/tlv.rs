//! OMA TLV (11542): the binary format of LwM2M 1.0, typed by the model.

use crate::lwm2m::model::ResourceType;
use crate::lwm2m::node::{err, FormatError, Node, Resource, Schema, Value};
use crate::lwm2m::path::Path;

const OBJECT_INSTANCE: u8 = 0b00;
const RESOURCE_INSTANCE: u8 = 0b01;
const MULTIPLE_RESOURCE: u8 = 0b10;
const RESOURCE: u8 = 0b11;

/// Deepest nesting TLV allows (instance > multiple resource > instance).
const MAX_DEPTH: usize = 3;

fn put(out: &mut Vec<u8>, kind: u8, id: u16, value: &[u8]) {
    let mut t = kind << 6;
    if id > 0xff {
        t |= 0x20;
    }
    let len = value.len();
    match len {
        0..=7 => t |= len as u8,
        8..=0xff => t |= 0x08,
        0x100..=0xffff => t |= 0x10,
        _ => t |= 0x18,
    }
    out.push(t);
    if id > 0xff {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    match len {
        0..=7 => {}
        8..=0xff => out.push(len as u8),
        0x100..=0xffff => out.extend_from_slice(&(len as u16).to_be_bytes()),
        _ => out.extend_from_slice(&(len as u32).to_be_bytes()[1..]),
    }
    out.extend_from_slice(value);
}

/// The TLV value bytes of one value (integers in the fewest of 1, 2, 4, 8 bytes).
pub fn value_bytes(v: &Value) -> Vec<u8> {
    fn int(i: i64) -> Vec<u8> {
        if let Ok(x) = i8::try_from(i) {
            x.to_be_bytes().to_vec()
        } else if let Ok(x) = i16::try_from(i) {
            x.to_be_bytes().to_vec()
        } else if let Ok(x) = i32::try_from(i) {
            x.to_be_bytes().to_vec()
        } else {
            i.to_be_bytes().to_vec()
        }
    }
    match v {
        Value::String(s) | Value::Corelnk(s) => s.as_bytes().to_vec(),
        Value::Integer(i) | Value::Time(i) => int(*i),
        Value::Unsigned(u) => {
            if let Ok(x) = u8::try_from(*u) {
                vec![x]
            } else if let Ok(x) = u16::try_from(*u) {
                x.to_be_bytes().to_vec()
            } else if let Ok(x) = u32::try_from(*u) {
                x.to_be_bytes().to_vec()
            } else {
                u.to_be_bytes().to_vec()
            }
        }
        Value::Float(f) => {
            if (*f as f32) as f64 == *f {
                (*f as f32).to_be_bytes().to_vec()
            } else {
                f.to_be_bytes().to_vec()
            }
        }
        Value::Boolean(b) => vec![*b as u8],
        Value::Opaque(b) => b.clone(),
        Value::Objlnk(o, i) => [o.to_be_bytes(), i.to_be_bytes()].concat(),
    }
}

/// A value of type `t` from TLV value bytes; unknown types stay opaque.
pub fn parse_value(b: &[u8], t: Option<ResourceType>) -> Result<Value, FormatError> {
    use ResourceType as T;
    let t = match t {
        Some(t) => t,
        None => return Ok(Value::Opaque(b.to_vec())),
    };
    let int = || -> Result<i64, FormatError> {
        Ok(match b.len() {
            1 => b[0] as i8 as i64,
            2 => i16::from_be_bytes([b[0], b[1]]) as i64,
            4 => i32::from_be_bytes(b.try_into().unwrap_or_default()) as i64,
            8 => i64::from_be_bytes(b.try_into().unwrap_or_default()),
            n => return err(format!("TLV integer of {n} bytes (1, 2, 4 or 8 allowed)")),
        })
    };
    Ok(match t {
        T::String | T::None => Value::String(utf8(b)?),
        T::Corelnk => Value::Corelnk(utf8(b)?),
        T::Integer => Value::Integer(int()?),
        T::Time => Value::Time(int()?),
        T::UnsignedInteger => {
            let mut x = 0u64;
            if !matches!(b.len(), 1 | 2 | 4 | 8) {
                return err(format!("TLV unsigned integer of {} bytes", b.len()));
            }
            for &c in b {
                x = x << 8 | c as u64;
            }
            Value::Unsigned(x)
        }
        T::Float => match b.len() {
            4 => Value::Float(f32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64),
            8 => Value::Float(f64::from_be_bytes(b.try_into().unwrap_or_default())),
            n => return err(format!("TLV float of {n} bytes (4 or 8 allowed)")),
        },
        T::Boolean => match b {
            [0] => Value::Boolean(false),
            [1] => Value::Boolean(true),
            _ => return err("TLV boolean must be one byte 0 or 1"),
        },
        T::Opaque => Value::Opaque(b.to_vec()),
        T::Objlnk => match b {
            [a, b2, c, d] => {
                Value::Objlnk(u16::from_be_bytes([*a, *b2]), u16::from_be_bytes([*c, *d]))
            }
            _ => return err("TLV object link must be 4 bytes"),
        },
    })
}

fn utf8(b: &[u8]) -> Result<String, FormatError> {
    String::from_utf8(b.to_vec()).map_err(|_| FormatError("TLV string is not UTF-8".into()))
}

fn put_resource(out: &mut Vec<u8>, id: u16, r: &Resource) {
    match r {
        Resource::Single(v) => put(out, RESOURCE, id, &value_bytes(v)),
        Resource::Multiple(m) => {
            let mut inner = Vec::new();
            for (ri, v) in m {
                put(&mut inner, RESOURCE_INSTANCE, *ri, &value_bytes(v));
            }
            put(out, MULTIPLE_RESOURCE, id, &inner);
        }
    }
}

/// Encodes `node` at `at`.
pub fn encode(at: &Path, node: &Node) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    match node {
        Node::Object(o) => {
            for (i, inst) in o {
                let mut inner = Vec::new();
                for (r, res) in inst {
                    put_resource(&mut inner, *r, res);
                }
                put(&mut out, OBJECT_INSTANCE, *i, &inner);
            }
        }
        Node::Instance(inst) => {
            for (r, res) in inst {
                put_resource(&mut out, *r, res);
            }
        }
        Node::Resource(res) => match at.resource {
            Some(r) => put_resource(&mut out, r, res),
            None => return err(format!("{at} is not a resource path")),
        },
        Node::ResourceInstance(v) => match at.resource_instance {
            Some(ri) => put(&mut out, RESOURCE_INSTANCE, ri, &value_bytes(v)),
            None => return err(format!("{at} is not a resource instance path")),
        },
    }
    Ok(out)
}

struct Item<'a> {
    kind: u8,
    id: u16,
    value: &'a [u8],
}

fn items(mut b: &[u8]) -> Result<Vec<Item<'_>>, FormatError> {
    let mut out = Vec::new();
    let short = || FormatError("truncated TLV".into());
    while !b.is_empty() {
        let t = b[0];
        let id_len = if t & 0x20 != 0 { 2 } else { 1 };
        let len_len = ((t >> 3) & 3) as usize;
        let head = 1 + id_len + len_len;
        if b.len() < head {
            return Err(short());
        }
        let id = if id_len == 2 {
            u16::from_be_bytes([b[1], b[2]])
        } else {
            b[1] as u16
        };
        let len = if len_len == 0 {
            (t & 7) as usize
        } else {
            b[1 + id_len..head]
                .iter()
                .fold(0usize, |a, &x| a << 8 | x as usize)
        };
        if b.len() < head + len {
            return Err(short());
        }
        out.push(Item {
            kind: t >> 6,
            id,
            value: &b[head..head + len],
        });
        b = &b[head + len..];
    }
    Ok(out)
}

/// Decodes a TLV payload answering (or writing) `at`.
pub fn decode(at: &Path, bytes: &[u8], schema: &dyn Schema) -> Result<Node, FormatError> {
    let mut entries = Vec::new();
    let mut empty = Vec::new();
    walk(*at, bytes, schema, &mut entries, &mut empty, 0)?;
    let mut node = Node::from_entries(at, entries, schema)?;
    // A multiple resource with no instances is a value TLV can express.
    for p in empty {
        let (Some(i), Some(r)) = (p.instance, p.resource) else {
            continue;
        };
        let inst = match &mut node {
            Node::Object(o) => o.entry(i).or_default(),
            Node::Instance(inst) => inst,
            _ => continue,
        };
        inst.entry(r)
            .or_insert_with(|| Resource::Multiple(Default::default()));
    }
    Ok(node)
}

fn walk(
    base: Path,
    bytes: &[u8],
    schema: &dyn Schema,
    out: &mut Vec<(Path, Value)>,
    empty: &mut Vec<Path>,
    depth: usize,
) -> Result<(), FormatError> {
    if depth > MAX_DEPTH {
        return err("TLV nested too deeply");
    }
    let rtype = |r: u16| schema.resource(base.object, r).map(|(t, _)| t);
    for it in items(bytes)? {
        let mut p = base;
        match it.kind {
            OBJECT_INSTANCE => {
                if base.instance.is_some() {
                    // A client may wrap a single-instance answer in its instance.
                    if base.instance != Some(it.id) || base.resource.is_some() {
                        return err(format!("TLV object instance {} inside {base}", it.id));
                    }
                } else {
                    p.instance = Some(it.id);
                }
                walk(p, it.value, schema, out, empty, depth + 1)?;
            }
            RESOURCE => {
                if base.instance.is_none() || base.resource_instance.is_some() {
                    return err(format!("TLV resource {} has no instance at {base}", it.id));
                }
                if base.resource.is_some_and(|r| r != it.id) {
                    return err(format!("TLV resource {} at {base}", it.id));
                }
                p.resource = Some(it.id);
                out.push((p, parse_value(it.value, rtype(it.id))?));
            }
            MULTIPLE_RESOURCE => {
                if base.instance.is_none() || base.resource.is_some_and(|r| r != it.id) {
                    return err(format!("TLV multiple resource {} at {base}", it.id));
                }
                p.resource = Some(it.id);
                let mut inner = Vec::new();
                walk(p, it.value, schema, &mut inner, empty, depth + 1)?;
                if inner.is_empty() {
                    empty.push(p);
                }
                if inner.iter().any(|(q, _)| q.resource_instance.is_none()) {
                    return err(format!(
                        "TLV multiple resource {} holds a plain resource",
                        it.id
                    ));
                }
                out.extend(inner);
            }
            _ => {
                let Some(r) = base.resource else {
                    return err(format!(
                        "TLV resource instance {} outside a resource",
                        it.id
                    ));
                };
                if base.resource_instance.is_some_and(|ri| ri != it.id) {
                    return err(format!("TLV resource instance {} at {base}", it.id));
                }
                p.resource_instance = Some(it.id);
                out.push((p, parse_value(it.value, rtype(r))?));
            }
        }
    }
    Ok(())
}
