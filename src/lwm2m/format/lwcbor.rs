//! LwM2M CBOR (11544): nested maps keyed by path ids, from LwM2M 1.2.

use super::cbor_util::{cbor_err, read_value, write_value, Items};
use super::senml::Records;
use crate::lwm2m::node::{err, FormatError, Value};
use crate::lwm2m::path::Path;
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};
use std::collections::BTreeMap;

enum Tree<'a> {
    Leaf(Option<&'a Value>),
    Map(BTreeMap<u16, Tree<'a>>),
}

fn segs(p: &Path) -> Vec<u16> {
    [Some(p.object), p.instance, p.resource, p.resource_instance]
        .into_iter()
        .flatten()
        .collect()
}

fn insert<'a>(root: &mut BTreeMap<u16, Tree<'a>>, path: &[u16], v: Option<&'a Value>) {
    let (first, rest) = (path[0], &path[1..]);
    if rest.is_empty() {
        root.insert(first, Tree::Leaf(v));
        return;
    }
    let t = root
        .entry(first)
        .or_insert_with(|| Tree::Map(BTreeMap::new()));
    if let Tree::Leaf(_) = t {
        *t = Tree::Map(BTreeMap::new());
    }
    if let Tree::Map(m) = t {
        insert(m, rest, v);
    }
}

/// A path of a path list: one asked for covers what is below it, so a
/// parent asked before or after its children stays, the children go.
/// (Found by fuzz/content_formats: /0 with /0/0 encoded as /0/0 alone.)
fn insert_path(root: &mut BTreeMap<u16, Tree<'_>>, path: &[u16]) {
    let (first, rest) = (path[0], &path[1..]);
    if rest.is_empty() {
        root.insert(first, Tree::Leaf(None));
        return;
    }
    match root
        .entry(first)
        .or_insert_with(|| Tree::Map(BTreeMap::new()))
    {
        // Its parent is asked for already.
        Tree::Leaf(_) => {}
        Tree::Map(m) => insert_path(m, rest),
    }
}

fn write(e: &mut Encoder<Vec<u8>>, m: &BTreeMap<u16, Tree>) {
    let _ = e.map(m.len() as u64);
    for (k, t) in m {
        let _ = e.u16(*k);
        match t {
            Tree::Leaf(Some(v)) => write_value(e, v),
            Tree::Leaf(None) => {
                let _ = e.null();
            }
            Tree::Map(m) => write(e, m),
        }
    }
}

/// Encodes values as nested maps from the root.
pub fn encode(entries: &[(Path, Value)]) -> Vec<u8> {
    let mut root = BTreeMap::new();
    for (p, v) in entries {
        insert(&mut root, &segs(p), Some(v));
    }
    let mut e = Encoder::new(Vec::with_capacity(8 * entries.len() + 4));
    write(&mut e, &root);
    e.into_writer()
}

/// A path list: the same maps with null values.
pub fn encode_paths(paths: &[Path]) -> Vec<u8> {
    let mut root = BTreeMap::new();
    for p in paths {
        insert_path(&mut root, &segs(p));
    }
    let mut e = Encoder::new(Vec::new());
    write(&mut e, &root);
    e.into_writer()
}

/// Decodes to full paths (keys may be single ids or arrays of ids).
pub fn decode(b: &[u8]) -> Result<Records, FormatError> {
    let mut d = Decoder::new(b);
    let mut out = Vec::new();
    read_map(&mut d, &mut Vec::new(), &mut out)?;
    if d.position() != b.len() {
        return err("trailing bytes after LwM2M CBOR");
    }
    Ok(out)
}

fn id(d: &mut Decoder) -> Result<u16, FormatError> {
    match d.u16() {
        Ok(v) if v != u16::MAX => Ok(v),
        _ => err("LwM2M CBOR key is not an id from 0 to 65534"),
    }
}

fn read_map(d: &mut Decoder, prefix: &mut Vec<u16>, out: &mut Records) -> Result<(), FormatError> {
    let mut entries = Items::map(d)?;
    while entries.next(d)? {
        let depth = prefix.len();
        match d.datatype().map_err(cbor_err)? {
            Type::Array | Type::ArrayIndef => {
                let mut ids = Items::array(d)?;
                while ids.next(d)? {
                    if prefix.len() >= 4 {
                        return err("LwM2M CBOR path is longer than 4 ids");
                    }
                    prefix.push(id(d)?);
                }
            }
            _ => prefix.push(id(d)?),
        }
        if prefix.len() > 4 || prefix.len() == depth {
            return err("LwM2M CBOR path is longer than 4 ids or empty");
        }
        match d.datatype().map_err(cbor_err)? {
            Type::Map | Type::MapIndef => read_map(d, prefix, out)?,
            Type::Null => {
                d.null().map_err(cbor_err)?;
                out.push((to_path(prefix), None));
            }
            _ => {
                let v = read_value(d)?;
                out.push((to_path(prefix), Some(v)));
            }
        }
        prefix.truncate(depth);
    }
    Ok(())
}

fn to_path(s: &[u16]) -> Path {
    Path {
        object: s[0],
        instance: s.get(1).copied(),
        resource: s.get(2).copied(),
        resource_instance: s.get(3).copied(),
    }
}
