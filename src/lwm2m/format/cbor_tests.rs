//! Indefinite-length CBOR (RFC 8949 3.2.2, 3.2.3) in the three CBOR formats:
//! encoders may emit it for maps, arrays, byte and text strings at any
//! depth, and LwM2M 1.2 clients do.

use super::tests::{device_schema, spec_device};
use super::*;
use minicbor::Encoder;

type Enc = Encoder<Vec<u8>>;

/// Text as an indefinite string of one- to four-byte chunks.
fn chunked_str(e: &mut Enc, s: &str) {
    e.begin_str().unwrap();
    let mut rest = s;
    while !rest.is_empty() {
        let mut n = rest.len().min(4);
        while !rest.is_char_boundary(n) {
            n -= 1;
        }
        e.str(&rest[..n]).unwrap();
        rest = &rest[n..];
    }
    e.end().unwrap();
}

/// The specification's Device object instance as LwM2M CBOR, every map
/// indefinite and every text string chunked: {_ 3: {_ 0: {_ 0: (_ "Open",
/// " Mob", ...), ..., 6: {_ 0: 1, 1: 5}, ...}}}.
fn device_indefinite() -> Vec<u8> {
    let Node::Instance(inst) = spec_device() else {
        unreachable!()
    };
    let mut e = Encoder::new(Vec::new());
    e.begin_map().unwrap().u16(3).unwrap();
    e.begin_map().unwrap().u16(0).unwrap();
    e.begin_map().unwrap();
    for (r, res) in &inst {
        e.u16(*r).unwrap();
        match res {
            Resource::Single(Value::String(s)) => chunked_str(&mut e, s),
            Resource::Single(Value::Integer(i)) => {
                e.i64(*i).unwrap();
            }
            Resource::Single(Value::Time(t)) => {
                e.tag(minicbor::data::Tag::new(1)).unwrap().i64(*t).unwrap();
            }
            Resource::Multiple(m) => {
                e.begin_map().unwrap();
                for (ri, v) in m {
                    let Value::Integer(i) = v else { unreachable!() };
                    e.u16(*ri).unwrap().i64(*i).unwrap();
                }
                e.end().unwrap();
            }
            other => unreachable!("{other:?}"),
        }
    }
    e.end().unwrap().end().unwrap().end().unwrap();
    e.into_writer()
}

#[test]
fn lwm2m_cbor_with_indefinite_maps_and_strings_at_every_depth_decodes() {
    let b = device_indefinite();
    assert_eq!(b[0], 0xbf, "an indefinite map opens the payload");
    let at = Path::parse("/3/0").unwrap();
    let node = decode(ContentFormat::Lwm2mCbor, &at, &b, &device_schema()).unwrap();
    assert_eq!(node, spec_device());
    // Our own answer stays definite-length and decodes to the same node.
    let ours = encode(ContentFormat::Lwm2mCbor, &at, &node).unwrap();
    assert!(!ours.contains(&0xff) || ours[0] != 0xbf);
    assert_eq!(
        decode(ContentFormat::Lwm2mCbor, &at, &ours, &device_schema()).unwrap(),
        node
    );
}

#[test]
fn lwm2m_cbor_accepts_an_indefinite_path_array_key() {
    // {_ [_ 3, 0]: {9: 100}}
    let mut e = Encoder::new(Vec::new());
    e.begin_map().unwrap();
    e.begin_array()
        .unwrap()
        .u16(3)
        .unwrap()
        .u16(0)
        .unwrap()
        .end()
        .unwrap();
    e.map(1).unwrap().u16(9).unwrap().u16(100).unwrap();
    e.end().unwrap();
    let b = e.into_writer();
    let entries = decode_entries(ContentFormat::Lwm2mCbor, &b, &device_schema()).unwrap();
    assert_eq!(
        entries,
        vec![(Path::parse("/3/0/9").unwrap(), Value::Integer(100))]
    );
}

#[test]
fn senml_cbor_with_an_indefinite_array_records_and_names_decodes() {
    // [_ {_ -2: (_ "/3/", "0/"), 0: (_ "0"), 3: (_ "Op", "en")}, {0: "9", 2: 100}, {_ 0: "6/1", 2: 5}]
    let mut e = Encoder::new(Vec::new());
    e.begin_array().unwrap();
    e.begin_map().unwrap().i8(-2).unwrap();
    chunked_str(&mut e, "/3/0/");
    e.i8(0).unwrap();
    chunked_str(&mut e, "0");
    e.i8(3).unwrap();
    chunked_str(&mut e, "Open");
    e.end().unwrap();
    e.map(2)
        .unwrap()
        .i8(0)
        .unwrap()
        .str("9")
        .unwrap()
        .i8(2)
        .unwrap()
        .u8(100)
        .unwrap();
    e.begin_map()
        .unwrap()
        .i8(0)
        .unwrap()
        .str("6/1")
        .unwrap()
        .i8(2)
        .unwrap()
        .u8(5)
        .unwrap();
    e.end().unwrap().end().unwrap();
    let b = e.into_writer();
    let entries = decode_entries(ContentFormat::SenmlCbor, &b, &device_schema()).unwrap();
    assert_eq!(
        entries,
        vec![
            (Path::parse("/3/0/0").unwrap(), Value::String("Open".into())),
            (Path::parse("/3/0/9").unwrap(), Value::Integer(100)),
            (Path::parse("/3/0/6/1").unwrap(), Value::Integer(5)),
        ]
    );
}

#[test]
fn senml_cbor_opaque_value_in_indefinite_chunks_decodes() {
    // [{0: "/3/0/17", 8: (_ h'0102', h'03')}] as opaque: vd is key 8.
    let mut e = Encoder::new(Vec::new());
    e.array(1).unwrap().map(2).unwrap();
    e.i8(0).unwrap().str("/3/0/17").unwrap();
    e.i8(8).unwrap().begin_bytes().unwrap();
    e.bytes(&[1, 2])
        .unwrap()
        .bytes(&[3])
        .unwrap()
        .end()
        .unwrap();
    let b = e.into_writer();
    let records = senml::decode_cbor(&b).unwrap();
    assert_eq!(records[0].1, Some(Value::Opaque(vec![1, 2, 3])));
}

#[test]
fn plain_cbor_single_values_in_indefinite_strings_decode() {
    let schema = device_schema();
    let at = Path::parse("/3/0/0").unwrap();
    let mut e = Encoder::new(Vec::new());
    chunked_str(&mut e, "Open Mobile Alliance");
    let b = e.into_writer();
    let n = decode(ContentFormat::Cbor, &at, &b, &schema).unwrap();
    assert_eq!(
        n,
        Node::Resource(Resource::Single(Value::String(
            "Open Mobile Alliance".into()
        )))
    );
}

#[test]
fn broken_indefinite_cbor_is_an_error_not_a_panic() {
    let schema = device_schema();
    let at = Path::parse("/3/0").unwrap();
    let whole = device_indefinite();
    // Every truncation of a valid payload: the break codes go missing.
    for n in 0..whole.len() {
        for cf in [
            ContentFormat::Lwm2mCbor,
            ContentFormat::SenmlCbor,
            ContentFormat::Cbor,
        ] {
            assert!(
                decode(cf, &at, &whole[..n], &schema).is_err(),
                "{cf:?} cut at {n}"
            );
        }
    }
    for bad in [
        &[0xff][..],                         // a break with nothing open
        &[0xbf, 0x03, 0xff][..],             // a key without a value
        &[0x9f, 0xbf, 0xff][..],             // an empty SenML record in an open array
        &[0x7f, 0x01, 0xff][..],             // a non-string chunk in a text string
        &[0xbf, 0x9f, 0xff, 0x01, 0xff][..], // an empty path array key
    ] {
        for cf in [
            ContentFormat::Lwm2mCbor,
            ContentFormat::SenmlCbor,
            ContentFormat::Cbor,
        ] {
            let _ = decode(cf, &at, bad, &schema);
        }
        assert!(
            decode(ContentFormat::Lwm2mCbor, &at, bad, &schema).is_err(),
            "{bad:x?}"
        );
    }
    // Deeply nested indefinite arrays in a value SenML skips: bounded, no stack overflow.
    let mut deep = vec![0x81, 0xa1, 0x18, 0x63];
    deep.extend(std::iter::repeat_n(0x9f, 100_000));
    assert!(senml::decode_cbor(&deep).is_err());
}
