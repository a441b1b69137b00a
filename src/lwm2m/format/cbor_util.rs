//! CBOR helpers shared by the CBOR-based formats (minicbor underneath).

use crate::lwm2m::node::{err, FormatError, Value};
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};
use std::borrow::Cow;

/// CBOR tag for epoch-based date/time (RFC 8949 3.4.2).
const TAG_EPOCH: u64 = 1;

/// Error text for a malformed CBOR payload.
pub fn cbor_err(e: minicbor::decode::Error) -> FormatError {
    FormatError(format!("malformed CBOR: {e}"))
}

/// Writes one value; writing to a Vec cannot fail.
pub fn write_value(e: &mut Encoder<Vec<u8>>, v: &Value) {
    let _ = match v {
        Value::String(s) | Value::Corelnk(s) => e.str(s),
        Value::Integer(i) => e.i64(*i),
        Value::Unsigned(u) => e.u64(*u),
        Value::Float(f) => write_float(e, *f),
        Value::Boolean(b) => e.bool(*b),
        Value::Opaque(b) => e.bytes(b),
        Value::Time(t) => e
            .tag(minicbor::data::Tag::new(TAG_EPOCH))
            .and_then(|e| e.i64(*t)),
        Value::Objlnk(o, i) => e.str(&format!("{o}:{i}")),
    };
}

/// Floats go out as 32-bit when that loses nothing.
pub fn write_float(
    e: &mut Encoder<Vec<u8>>,
    f: f64,
) -> Result<&mut Encoder<Vec<u8>>, minicbor::encode::Error<std::convert::Infallible>> {
    if (f as f32) as f64 == f || f.is_nan() {
        e.f32(f as f32)
    } else {
        e.f64(f)
    }
}

/// One value as a complete CBOR payload (Content-Format 60).
pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    write_value(&mut e, v);
    e.into_writer()
}

/// A complete single-value CBOR payload.
pub fn decode_value(b: &[u8]) -> Result<Value, FormatError> {
    let mut d = Decoder::new(b);
    let v = read_value(&mut d)?;
    if d.position() != b.len() {
        return err("trailing bytes after the CBOR value");
    }
    Ok(v)
}

/// Tags allowed in front of one value; a payload of nothing but tags must
/// not recurse without end.
const MAX_TAGS: usize = 4;

/// Reads one value; its type is what CBOR says, to be coerced by the caller.
pub fn read_value(d: &mut Decoder) -> Result<Value, FormatError> {
    read_tagged(d, 0)
}

fn read_tagged(d: &mut Decoder, tags: usize) -> Result<Value, FormatError> {
    Ok(match d.datatype().map_err(cbor_err)? {
        Type::Bool => Value::Boolean(d.bool().map_err(cbor_err)?),
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
            let u = d.u64().map_err(cbor_err)?;
            match i64::try_from(u) {
                Ok(i) => Value::Integer(i),
                Err(_) => Value::Unsigned(u),
            }
        }
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            Value::Integer(d.i64().map_err(cbor_err)?)
        }
        Type::F16 => Value::Float(read_f16(d)?),
        Type::F32 | Type::F64 => Value::Float(d.f64().map_err(cbor_err)?),
        Type::String | Type::StringIndef => Value::String(read_str(d)?.into_owned()),
        Type::Bytes | Type::BytesIndef => Value::Opaque(read_bytes(d)?.into_owned()),
        Type::Tag if tags >= MAX_TAGS => return err("too many CBOR tags on one value"),
        Type::Tag => {
            let tag = d.tag().map_err(cbor_err)?;
            match (tag.as_u64(), read_tagged(d, tags + 1)?) {
                (TAG_EPOCH, Value::Integer(t)) => Value::Time(t),
                (TAG_EPOCH, Value::Float(f)) => Value::Time(f as i64),
                (_, v) => v,
            }
        }
        t => return err(format!("unexpected CBOR {t} where a value belongs")),
    })
}

/// A text string, definite or indefinite (RFC 8949 3.2.3: its chunks
/// joined); borrowed from the input where it is one piece.
pub fn read_str<'b>(d: &mut Decoder<'b>) -> Result<Cow<'b, str>, FormatError> {
    match d.datatype().map_err(cbor_err)? {
        Type::StringIndef => {
            let mut s = String::new();
            for chunk in d.str_iter().map_err(cbor_err)? {
                s.push_str(chunk.map_err(cbor_err)?);
            }
            Ok(Cow::Owned(s))
        }
        _ => Ok(Cow::Borrowed(d.str().map_err(cbor_err)?)),
    }
}

/// A byte string, definite or indefinite; borrowed where it is one piece.
pub fn read_bytes<'b>(d: &mut Decoder<'b>) -> Result<Cow<'b, [u8]>, FormatError> {
    match d.datatype().map_err(cbor_err)? {
        Type::BytesIndef => {
            let mut b = Vec::new();
            for chunk in d.bytes_iter().map_err(cbor_err)? {
                b.extend_from_slice(chunk.map_err(cbor_err)?);
            }
            Ok(Cow::Owned(b))
        }
        _ => Ok(Cow::Borrowed(d.bytes().map_err(cbor_err)?)),
    }
}

/// The items of an array or map whose header was just read: a count for a
/// definite one, or up to the break code for an indefinite one (RFC 8949
/// 3.2.2), which encoders may emit at any depth.
pub struct Items {
    left: Option<u64>,
}

impl Items {
    /// Reads an array header.
    pub fn array(d: &mut Decoder) -> Result<Items, FormatError> {
        Ok(Items {
            left: d.array().map_err(cbor_err)?,
        })
    }

    /// Reads a map header.
    pub fn map(d: &mut Decoder) -> Result<Items, FormatError> {
        Ok(Items {
            left: d.map().map_err(cbor_err)?,
        })
    }

    /// The count a definite header claims; none for an indefinite one.
    pub fn claimed(&self) -> Option<u64> {
        self.left
    }

    /// Whether another item (or map entry) follows; consumes the break
    /// that ends an indefinite one.
    pub fn next(&mut self, d: &mut Decoder) -> Result<bool, FormatError> {
        match &mut self.left {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => {
                if d.datatype().map_err(cbor_err)? == Type::Break {
                    d.set_position(d.position() + 1);
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }
}

/// Half-precision floats without pulling in the `half` crate.
fn read_f16(d: &mut Decoder) -> Result<f64, FormatError> {
    let p = d.position();
    let b = d.input();
    if b.len() < p + 3 {
        return err("truncated CBOR half float");
    }
    let h = u16::from_be_bytes([b[p + 1], b[p + 2]]);
    d.set_position(p + 3);
    let (sign, exp, frac) = (
        (h >> 15) as i32,
        ((h >> 10) & 0x1f) as i32,
        (h & 0x3ff) as f64,
    );
    let mag = match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    };
    Ok(if sign == 1 { -mag } else { mag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_decode() {
        assert_eq!(
            decode_value(&[0xf9, 0x3c, 0x00]).unwrap(),
            Value::Float(1.0)
        );
        assert_eq!(
            decode_value(&[0xf9, 0xc4, 0x00]).unwrap(),
            Value::Float(-4.0)
        );
        assert_eq!(
            decode_value(&[0xf9, 0x00, 0x01]).unwrap(),
            Value::Float(5.960464477539063e-8)
        );
    }

    #[test]
    fn values_round_trip_and_time_is_tagged() {
        for v in [
            Value::Integer(-5),
            Value::Integer(1 << 40),
            Value::Unsigned(u64::MAX),
            Value::Float(1.5),
            Value::Float(0.1),
            Value::Boolean(true),
            Value::String("é".into()),
            Value::Opaque(vec![1, 2]),
            Value::Time(1_700_000_000),
        ] {
            assert_eq!(decode_value(&encode_value(&v)).unwrap(), v);
        }
        assert_eq!(encode_value(&Value::Time(1))[0], 0xc1);
        assert!(decode_value(&[0x01, 0x02]).is_err());
        assert!(decode_value(&[0x19]).is_err());
        // A body of nothing but tags is refused, not a stack overflow.
        let mut tags = vec![0xc1; 100_000];
        tags.push(0x01);
        assert!(decode_value(&tags).is_err());
    }
}
