//! Round trips for every format, and the LwM2M specification's own examples.

use super::*;
use crate::lwm2m::node::{hex, Instance, Resource};
use std::collections::{BTreeMap, HashMap};

pub(super) struct TestSchema(HashMap<(u16, u16), (ResourceType, bool)>);

impl Schema for TestSchema {
    fn resource(&self, o: u16, r: u16) -> Option<(ResourceType, bool)> {
        self.0.get(&(o, r)).copied()
    }
}

pub(super) fn device_schema() -> TestSchema {
    use ResourceType as T;
    let mut m = HashMap::new();
    for (r, t, multi) in [
        (0, T::String, false),
        (1, T::String, false),
        (2, T::String, false),
        (3, T::String, false),
        (6, T::Integer, true),
        (7, T::Integer, true),
        (8, T::Integer, true),
        (9, T::Integer, false),
        (10, T::Integer, false),
        (11, T::Integer, true),
        (13, T::Time, false),
        (14, T::String, false),
        (16, T::String, false),
    ] {
        m.insert((3, r), (t, multi));
    }
    TestSchema(m)
}

fn multi(v: &[(u16, i64)]) -> Resource {
    Resource::Multiple(v.iter().map(|&(k, x)| (k, Value::Integer(x))).collect())
}

fn s(x: &str) -> Resource {
    Resource::Single(Value::String(x.into()))
}

/// The Device object instance used in the specification's format examples.
pub(super) fn spec_device() -> Node {
    let mut i = Instance::new();
    i.insert(0, s("Open Mobile Alliance"));
    i.insert(1, s("Lightweight M2M Client"));
    i.insert(2, s("345000123"));
    i.insert(3, s("1.0"));
    i.insert(6, multi(&[(0, 1), (1, 5)]));
    i.insert(7, multi(&[(0, 3800), (1, 5000)]));
    i.insert(8, multi(&[(0, 125), (1, 900)]));
    i.insert(9, Resource::Single(Value::Integer(100)));
    i.insert(10, Resource::Single(Value::Integer(15)));
    i.insert(11, multi(&[(0, 0)]));
    i.insert(13, Resource::Single(Value::Time(1_367_491_215)));
    i.insert(14, s("+02:00"));
    i.insert(16, s("U"));
    Node::Instance(i)
}

fn unhex_spaced(h: &str) -> Vec<u8> {
    crate::lwm2m::node::unhex(&h.replace([' ', '\n'], "")).unwrap()
}

#[test]
fn tlv_matches_the_specification_device_example() {
    let expected = unhex_spaced(
        "C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
         C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
         C8 02 09 33 34 35 30 30 30 31 32 33
         C3 03 31 2E 30
         86 06 41 00 01 41 01 05
         88 07 08 42 00 0E D8 42 01 13 88
         87 08 41 00 7D 42 01 03 84
         C1 09 64
         C1 0A 0F
         83 0B 41 00 00
         C4 0D 51 82 42 8F
         C6 0E 2B 30 32 3A 30 30
         C1 10 55",
    );
    let at = Path::parse("/3/0").unwrap();
    let node = spec_device();
    assert_eq!(
        hex(&encode(ContentFormat::Tlv, &at, &node).unwrap()),
        hex(&expected)
    );
    assert_eq!(
        decode(ContentFormat::Tlv, &at, &expected, &device_schema()).unwrap(),
        node
    );
}

#[test]
fn tlv_single_resources_and_wrapped_instances_decode() {
    let schema = device_schema();
    let at = Path::parse("/3/0/9").unwrap();
    let node = decode(ContentFormat::Tlv, &at, &[0xC1, 0x09, 0x64], &schema).unwrap();
    assert_eq!(node, Node::Resource(Resource::Single(Value::Integer(100))));
    // Object read: instance 0 wrapping battery level.
    let at = Path::parse("/3").unwrap();
    let node = decode(
        ContentFormat::Tlv,
        &at,
        &[0x03, 0x00, 0xC1, 0x09, 0x64],
        &schema,
    )
    .unwrap();
    assert_eq!(
        node.entries(&at),
        vec![(Path::parse("/3/0/9").unwrap(), Value::Integer(100))]
    );
    // 16-bit ids and 16-bit lengths.
    let big = Node::Resource(Resource::Single(Value::Opaque(vec![7; 300])));
    let at = Path::parse("/19/0/300").unwrap();
    let bytes = encode(ContentFormat::Tlv, &at, &big).unwrap();
    assert_eq!(&bytes[..5], &[0xF0, 0x01, 0x2C, 0x01, 0x2C]);
}

#[test]
fn senml_json_specification_example_decodes() {
    let payload = br#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},
        {"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"9","v":100},
        {"n":"13","v":1367491215}]"#;
    let at = Path::parse("/3/0").unwrap();
    let node = decode(ContentFormat::SenmlJson, &at, payload, &device_schema()).unwrap();
    let mut i = Instance::new();
    i.insert(0, s("Open Mobile Alliance"));
    i.insert(6, multi(&[(0, 1), (1, 5)]));
    i.insert(9, Resource::Single(Value::Integer(100)));
    i.insert(13, Resource::Single(Value::Time(1_367_491_215)));
    assert_eq!(node, Node::Instance(i));
}

#[test]
fn senml_cbor_with_base_name_decodes() {
    // [{-2: "/3/0/", 0: "0", 3: "Open"}, {0: "9", 2: 100}]
    let mut b = vec![0x82, 0xA3, 0x21, 0x65];
    b.extend_from_slice(b"/3/0/");
    b.extend_from_slice(&[0x00, 0x61, b'0', 0x03, 0x64]);
    b.extend_from_slice(b"Open");
    b.extend_from_slice(&[0xA2, 0x00, 0x61, b'9', 0x02, 0x18, 0x64]);
    let e = decode_entries(ContentFormat::SenmlCbor, &b, &device_schema()).unwrap();
    assert_eq!(
        e,
        vec![
            (Path::parse("/3/0/0").unwrap(), Value::String("Open".into())),
            (Path::parse("/3/0/9").unwrap(), Value::Integer(100)),
        ]
    );
}

#[test]
fn senml_names_without_a_common_base_are_full_paths_and_old_relative_ones_still_decode() {
    // Objects 0 and 1 share no prefix: no base name, so every name is a
    // whole path with its leading slash, as a strict SenML reader needs.
    let entries = vec![
        (
            Path::parse("/0/1/0").unwrap(),
            Value::String("coap://gw".into()),
        ),
        (Path::parse("/1/0/1").unwrap(), Value::Integer(300)),
    ];
    let j: serde_json::Value =
        serde_json::from_slice(&encode_entries(ContentFormat::SenmlJson, &entries).unwrap())
            .unwrap();
    assert_eq!(j[0]["n"], "/0/1/0", "{j}");
    assert_eq!(j[1]["n"], "/1/0/1", "{j}");
    assert!(j[0].get("bn").is_none(), "{j}");
    let cbor = encode_entries(ContentFormat::SenmlCbor, &entries).unwrap();
    // {0: "/0/1/0", ...}: the name's text starts with the slash.
    assert_eq!(&cbor[..5], &[0x82, 0xA2, 0x00, 0x66, b'/'], "{cbor:02x?}");
    for cf in [ContentFormat::SenmlJson, ContentFormat::SenmlCbor] {
        let bytes = encode_entries(cf, &entries).unwrap();
        assert_eq!(
            decode_entries(cf, &bytes, &device_schema()).unwrap(),
            entries
        );
    }
    // What the gateway sent before: names without the slash and no base
    // name. Some readers take them as paths; so does ours.
    let old = br#"[{"n":"0/1/0","vs":"coap://gw"},{"n":"1/0/1","v":300}]"#;
    let back = decode_entries(ContentFormat::SenmlJson, old, &device_schema()).unwrap();
    assert_eq!(back[0].0, entries[0].0);
    assert_eq!(back[1].0, entries[1].0);
}

#[test]
fn lwm2m_cbor_accepts_array_keys() {
    // {[3, 0]: {0: "x", 9: 100}}
    let b = [
        0xA1, 0x82, 0x03, 0x00, 0xA2, 0x00, 0x61, b'x', 0x09, 0x18, 0x64,
    ];
    let e = decode_entries(ContentFormat::Lwm2mCbor, &b, &device_schema()).unwrap();
    assert_eq!(e[1], (Path::parse("/3/0/9").unwrap(), Value::Integer(100)));
    // Our own encoding nests one id per level: {3: {0: {9: 100}}}.
    let out = encode_entries(ContentFormat::Lwm2mCbor, &e[1..]).unwrap();
    assert_eq!(out, [0xA1, 0x03, 0xA1, 0x00, 0xA1, 0x09, 0x18, 0x64]);
}

#[test]
fn oma_json_specification_example_decodes() {
    let payload = br#"{"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},
        {"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"9","v":100},{"n":"13","v":1367491215}]}"#;
    let at = Path::parse("/3/0").unwrap();
    let node = decode(ContentFormat::OmaJson, &at, payload, &device_schema()).unwrap();
    assert_eq!(node.entries(&at).len(), 5);
    assert_eq!(node.entries(&at)[4].1, Value::Time(1_367_491_215));
}

#[test]
fn text_and_single_cbor_carry_one_value() {
    let schema = device_schema();
    let at = Path::parse("/3/0/9").unwrap();
    let n = decode(ContentFormat::Text, &at, b"87", &schema).unwrap();
    assert_eq!(n, Node::Resource(Resource::Single(Value::Integer(87))));
    assert_eq!(encode(ContentFormat::Text, &at, &n).unwrap(), b"87");
    assert!(decode(ContentFormat::Text, &at, b"eighty", &schema).is_err());
    let n2 = decode(ContentFormat::Cbor, &at, &[0x18, 0x57], &schema).unwrap();
    assert_eq!(n2, n);
    let inst = Path::parse("/3/0").unwrap();
    assert!(encode(ContentFormat::Text, &inst, &spec_device()).is_err());
    assert!(decode(ContentFormat::Opaque, &at, &[1], &schema).is_err());
}

#[test]
fn malformed_payloads_are_errors_not_panics() {
    let schema = device_schema();
    let at = Path::parse("/3/0").unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let good: Vec<(ContentFormat, Vec<u8>)> = [
        ContentFormat::Tlv,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::OmaJson,
        ContentFormat::Lwm2mCbor,
    ]
    .into_iter()
    .map(|cf| (cf, encode(cf, &at, &spec_device()).unwrap()))
    .collect();
    for _ in 0..3000 {
        let (cf, b) = &good[rng.usize(..good.len())];
        let mut b = b.clone();
        match rng.u8(..3) {
            0 => b.truncate(rng.usize(..b.len())),
            1 => {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            _ => b = (0..rng.usize(..40)).map(|_| rng.u8(..)).collect(),
        }
        let _ = decode(*cf, &at, &b, &schema);
        let _ = decode_entries(*cf, &b, &schema);
        let _ = decode_paths(*cf, &b);
    }
    // Deep or huge claims fail cleanly.
    assert!(decode(
        ContentFormat::SenmlCbor,
        &at,
        &[0x9B, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        &schema
    )
    .is_err());
    assert!(decode(ContentFormat::Tlv, &at, &[0xC8, 0x00, 0xff], &schema).is_err());
}

fn random_value(rng: &mut fastrand::Rng, t: ResourceType) -> Value {
    use ResourceType as T;
    match t {
        T::String => Value::String(
            (0..rng.usize(..12))
                .map(|_| rng.alphanumeric())
                .collect::<String>()
                + "é",
        ),
        T::Integer => Value::Integer(match rng.u8(..4) {
            0 => rng.i64(-128..128),
            1 => rng.i64(-40000..40000),
            2 => rng.i64(i32::MIN as i64..=i32::MAX as i64),
            _ => rng.i64(..),
        }),
        T::UnsignedInteger => Value::Unsigned(if rng.bool() {
            rng.u64(..300)
        } else {
            rng.u64(..)
        }),
        T::Float => Value::Float(if rng.bool() {
            rng.i32(..) as f64 / 8.0
        } else {
            rng.f64() * 1e6 - 5e5
        }),
        T::Boolean => Value::Boolean(rng.bool()),
        T::Opaque => Value::Opaque((0..rng.usize(..20)).map(|_| rng.u8(..)).collect()),
        T::Time => Value::Time(rng.i64(0..4_000_000_000)),
        T::Objlnk => Value::Objlnk(rng.u16(..65535), rng.u16(..65535)),
        T::Corelnk | T::None => Value::Corelnk("</3/0>;ver=1.1".into()),
    }
}

#[test]
fn every_structured_format_round_trips_random_nodes() {
    use ResourceType as T;
    let types = [
        T::String,
        T::Integer,
        T::UnsignedInteger,
        T::Float,
        T::Boolean,
        T::Opaque,
        T::Time,
        T::Objlnk,
        T::Corelnk,
    ];
    let mut rng = fastrand::Rng::with_seed(42);
    for round in 0..400 {
        let object = rng.u16(..40000);
        let mut schema = HashMap::new();
        let mut inst = Instance::new();
        for r in 0..rng.u16(1..12) {
            let rid = r * rng.u16(1..400);
            let t = types[rng.usize(..types.len())];
            let multiple = rng.u8(..4) == 0;
            schema.insert((object, rid), (t, multiple));
            inst.insert(
                rid,
                if multiple {
                    Resource::Multiple(
                        (0..rng.u16(..4))
                            .map(|k| (k * 3, random_value(&mut rng, t)))
                            .collect(),
                    )
                } else {
                    Resource::Single(random_value(&mut rng, t))
                },
            );
        }
        let schema = TestSchema(schema);
        let iid = rng.u16(..300);
        let obj = Node::Object(BTreeMap::from([(iid, inst.clone())]));
        let cases = [
            (Path::object(object), obj),
            (
                Path {
                    instance: Some(iid),
                    ..Path::object(object)
                },
                Node::Instance(inst.clone()),
            ),
        ];
        for cf in ContentFormat::ALL.into_iter().filter(|c| c.is_structured()) {
            for (at, node) in &cases {
                // Empty multiple resources leave no trace in flat formats.
                let expect = strip_empty(node);
                let bytes = encode(cf, at, node).unwrap();
                let back = decode(cf, at, &bytes, &schema)
                    .unwrap_or_else(|e| panic!("round {round} {cf} {at}: {e}"));
                let want = if cf == ContentFormat::Tlv {
                    node.clone()
                } else {
                    expect
                };
                assert_eq!(back, want, "round {round} {cf} {at}");
            }
        }
        // Every single resource in the single-value formats too.
        for (rid, res) in &inst {
            let at = Path {
                instance: Some(iid),
                resource: Some(*rid),
                ..Path::object(object)
            };
            if let Resource::Single(v) = res {
                let node = Node::Resource(res.clone());
                let mut formats = vec![ContentFormat::Text, ContentFormat::Cbor];
                if let Value::Opaque(_) = v {
                    formats.push(ContentFormat::Opaque);
                }
                for cf in formats {
                    let bytes = encode(cf, &at, &node).unwrap();
                    assert_eq!(decode(cf, &at, &bytes, &schema).unwrap(), node, "{cf} {at}");
                }
            }
        }
        // Composite: entries from two objects.
        let mut entries = Node::Instance(inst.clone()).entries(&cases[1].0);
        entries.push((Path::parse("/3/0/9").unwrap(), Value::Integer(5)));
        let both = Both(&schema, &device_schema());
        for cf in ContentFormat::ALL.into_iter().filter(|c| c.is_composite()) {
            let bytes = encode_entries(cf, &entries).unwrap();
            // LwM2M CBOR nests by path, so its order is path order.
            let mut got = decode_entries(cf, &bytes, &both).unwrap();
            let mut want = entries.clone();
            if cf == ContentFormat::Lwm2mCbor {
                want.sort_by_key(|e| e.0);
                got.sort_by_key(|e| e.0);
            }
            assert_eq!(got, want, "{cf}");
            let paths: Vec<Path> = entries.iter().map(|(p, _)| *p).collect();
            let mut sorted = paths.clone();
            sorted.sort();
            let mut got = decode_paths(cf, &encode_paths(cf, &paths).unwrap()).unwrap();
            got.sort();
            assert_eq!(got, sorted, "{cf}");
        }
    }
}

struct Both<'a>(&'a TestSchema, &'a TestSchema);

impl Schema for Both<'_> {
    fn resource(&self, o: u16, r: u16) -> Option<(ResourceType, bool)> {
        self.0.resource(o, r).or_else(|| self.1.resource(o, r))
    }
}

fn strip_empty(n: &Node) -> Node {
    let clean = |i: &Instance| -> Instance {
        i.iter()
            .filter(|(_, r)| !matches!(r, Resource::Multiple(m) if m.is_empty()))
            .map(|(k, r)| (*k, r.clone()))
            .collect()
    };
    match n {
        Node::Object(o) => Node::Object(
            o.iter()
                .map(|(k, i)| (*k, clean(i)))
                .filter(|(_, i)| !i.is_empty())
                .collect(),
        ),
        Node::Instance(i) => Node::Instance(clean(i)),
        other => other.clone(),
    }
}

#[test]
fn a_path_list_keeps_a_parent_asked_for_with_its_children() {
    // Found by fuzz/content_formats: LwM2M CBOR wrote /0 and /0/0 as /0/0
    // alone, so a Read-Composite of both lost the rest of object 0.
    let p = |s: &str| Path::parse(s).unwrap();
    for order in [
        vec![p("/0"), p("/0/0"), p("/3/0/1")],
        vec![p("/0/0"), p("/0"), p("/3/0/1")],
    ] {
        let cf = ContentFormat::Lwm2mCbor;
        let mut got = decode_paths(cf, &encode_paths(cf, &order).unwrap()).unwrap();
        got.sort();
        assert_eq!(got, vec![p("/0"), p("/3/0/1")]);
    }
}
