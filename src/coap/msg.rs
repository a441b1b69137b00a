//! CoAP message codec (RFC 7252 section 3) with the options LwM2M uses.

use std::fmt;

/// CoAP message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// Confirmable: the receiver must acknowledge.
    Con = 0,
    /// Non-confirmable.
    Non = 1,
    /// Acknowledgement.
    Ack = 2,
    /// Reset.
    Rst = 3,
}

impl MsgType {
    fn from_bits(bits: u8) -> MsgType {
        match bits & 3 {
            0 => MsgType::Con,
            1 => MsgType::Non,
            2 => MsgType::Ack,
            _ => MsgType::Rst,
        }
    }
}

/// CoAP code: class in the top three bits, detail in the low five.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

impl Code {
    /// Builds a code from its dotted form, e.g. `Code::new(2, 5)` for 2.05.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class << 5) | (detail & 0x1f))
    }
    /// Empty message (0.00).
    pub const EMPTY: Code = Code::new(0, 0);
    /// GET.
    pub const GET: Code = Code::new(0, 1);
    /// POST.
    pub const POST: Code = Code::new(0, 2);
    /// PUT.
    pub const PUT: Code = Code::new(0, 3);
    /// DELETE.
    pub const DELETE: Code = Code::new(0, 4);
    /// FETCH (RFC 8132).
    pub const FETCH: Code = Code::new(0, 5);
    /// PATCH (RFC 8132).
    pub const PATCH: Code = Code::new(0, 6);
    /// iPATCH (RFC 8132).
    pub const IPATCH: Code = Code::new(0, 7);
    /// 2.01 Created.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: Code = Code::new(2, 2);
    /// 2.03 Valid.
    pub const VALID: Code = Code::new(2, 3);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 2.31 Continue (RFC 7959).
    pub const CONTINUE: Code = Code::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.02 Bad Option.
    pub const BAD_OPTION: Code = Code::new(4, 2);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Code = Code::new(4, 3);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    /// 4.08 Request Entity Incomplete (RFC 7959).
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    /// 4.12 Precondition Failed.
    pub const PRECONDITION_FAILED: Code = Code::new(4, 12);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    /// 5.01 Not Implemented.
    pub const NOT_IMPLEMENTED: Code = Code::new(5, 1);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);

    /// Code class (0 request, 2 success, 4 client error, 5 server error).
    pub fn class(self) -> u8 {
        self.0 >> 5
    }
    /// Code detail.
    pub fn detail(self) -> u8 {
        self.0 & 0x1f
    }
    /// True for method codes (0.01 to 0.31).
    pub fn is_request(self) -> bool {
        self.class() == 0 && self.0 != 0
    }
    /// True for response codes (classes 2, 4 and 5).
    pub fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }
    /// True for 2.xx codes.
    pub fn is_success(self) -> bool {
        self.class() == 2
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Option numbers (RFC 7252, 7641, 7959, 8613).
pub mod opt {
    /// If-Match.
    pub const IF_MATCH: u16 = 1;
    /// Uri-Host.
    pub const URI_HOST: u16 = 3;
    /// ETag.
    pub const ETAG: u16 = 4;
    /// If-None-Match.
    pub const IF_NONE_MATCH: u16 = 5;
    /// Observe (RFC 7641).
    pub const OBSERVE: u16 = 6;
    /// Uri-Port.
    pub const URI_PORT: u16 = 7;
    /// Location-Path.
    pub const LOCATION_PATH: u16 = 8;
    /// OSCORE (RFC 8613).
    pub const OSCORE: u16 = 9;
    /// Uri-Path.
    pub const URI_PATH: u16 = 11;
    /// Content-Format.
    pub const CONTENT_FORMAT: u16 = 12;
    /// Max-Age.
    pub const MAX_AGE: u16 = 14;
    /// Uri-Query.
    pub const URI_QUERY: u16 = 15;
    /// Accept.
    pub const ACCEPT: u16 = 17;
    /// Location-Query.
    pub const LOCATION_QUERY: u16 = 20;
    /// Block2 (RFC 7959).
    pub const BLOCK2: u16 = 23;
    /// Block1 (RFC 7959).
    pub const BLOCK1: u16 = 27;
    /// Size2 (RFC 7959).
    pub const SIZE2: u16 = 28;
    /// Proxy-Uri.
    pub const PROXY_URI: u16 = 35;
    /// Proxy-Scheme.
    pub const PROXY_SCHEME: u16 = 39;
    /// Size1.
    pub const SIZE1: u16 = 60;
    /// No-Response (RFC 7967).
    pub const NO_RESPONSE: u16 = 258;

    /// Options this implementation understands; an unknown critical (odd)
    /// option in a request is answered with 4.02.
    pub fn is_known(number: u16) -> bool {
        matches!(
            number,
            IF_MATCH
                | URI_HOST
                | ETAG
                | IF_NONE_MATCH
                | OBSERVE
                | URI_PORT
                | LOCATION_PATH
                | URI_PATH
                | CONTENT_FORMAT
                | MAX_AGE
                | URI_QUERY
                | ACCEPT
                | LOCATION_QUERY
                | BLOCK2
                | BLOCK1
                | SIZE2
                | SIZE1
                | NO_RESPONSE
        )
    }

    /// Critical options have odd numbers (RFC 7252 section 5.4.6).
    pub fn is_critical(number: u16) -> bool {
        number & 1 == 1
    }
}

/// A CoAP token, 0 to 8 bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Token {
    len: u8,
    bytes: [u8; 8],
}

impl Token {
    /// The empty token.
    pub const EMPTY: Token = Token {
        len: 0,
        bytes: [0; 8],
    };

    /// Builds a token from up to 8 bytes; longer input is rejected.
    pub fn new(b: &[u8]) -> Option<Token> {
        if b.len() > 8 {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes[..b.len()].copy_from_slice(b);
        Some(Token {
            len: b.len() as u8,
            bytes,
        })
    }

    /// An 8-byte token from a 64-bit value.
    pub fn from_u64(v: u64) -> Token {
        Token {
            len: 8,
            bytes: v.to_be_bytes(),
        }
    }

    /// The token bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One option instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapOption {
    /// Option number.
    pub number: u16,
    /// Raw option value.
    pub value: OptValue,
}

/// Bytes of an option value kept inside [`OptValue`] itself.
const INLINE: usize = 22;

/// An option value: up to 22 bytes (Uri-Path segments, queries, numbers,
/// ETags) inside the option, longer ones on the heap. The gateway holds a
/// request per observation, hundreds of thousands of them, and an
/// allocation per path segment cost more than the segment.
#[derive(Clone, PartialEq, Eq)]
pub struct OptValue(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl From<&[u8]> for OptValue {
    fn from(b: &[u8]) -> OptValue {
        if b.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            OptValue(Repr::Inline(b.len() as u8, bytes))
        } else {
            OptValue(Repr::Heap(b.into()))
        }
    }
}

impl From<Vec<u8>> for OptValue {
    fn from(v: Vec<u8>) -> OptValue {
        if v.len() <= INLINE {
            OptValue::from(v.as_slice())
        } else {
            OptValue(Repr::Heap(v.into_boxed_slice()))
        }
    }
}

impl std::ops::Deref for OptValue {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Repr::Heap(b) => b,
        }
    }
}

impl fmt::Debug for OptValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Block1/Block2 option value (RFC 7959 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOpt {
    /// Block number.
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: block size is 2^(szx+4), 0 to 6 over UDP.
    pub szx: u8,
}

impl BlockOpt {
    /// A block option value.
    pub const fn new(num: u32, more: bool, szx: u8) -> BlockOpt {
        BlockOpt { num, more, szx }
    }

    /// Block size in bytes.
    pub fn size(&self) -> usize {
        BlockOpt::szx_size(self.szx)
    }
    /// Block size for a size exponent.
    pub fn szx_size(szx: u8) -> usize {
        1usize << (szx as usize + 4)
    }
    /// Byte offset of this block.
    pub fn offset(&self) -> usize {
        self.num as usize * self.size()
    }
    /// Decodes an option value; `None` for values over 3 bytes or szx 7
    /// (BERT is not defined over UDP).
    pub fn decode(v: &[u8]) -> Option<BlockOpt> {
        if v.len() > 3 {
            return None;
        }
        let raw = decode_uint(v)? as u32;
        let szx = (raw & 7) as u8;
        if szx == 7 {
            return None;
        }
        Some(BlockOpt {
            num: raw >> 4,
            more: raw & 8 != 0,
            szx,
        })
    }
    /// Encodes to the minimal option value.
    pub fn encode(&self) -> Vec<u8> {
        encode_uint(((self.num as u64) << 4) | ((self.more as u64) << 3) | self.szx as u64)
    }
    /// The size exponent for a block size (rounded down to a power of two,
    /// clamped to 16..=1024).
    pub fn szx_for(size: usize) -> u8 {
        let size = size.clamp(16, 1024);
        (usize::BITS - 1 - size.leading_zeros()) as u8 - 4
    }
}

/// Why a datagram is not a well-formed CoAP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than four bytes.
    TooShort,
    /// Version field is not 1.
    BadVersion,
    /// Token length 9 to 15, or longer than the datagram.
    BadToken,
    /// Option delta or length nibble 15 outside the payload marker.
    ReservedNibble,
    /// An option runs past the end of the datagram.
    TruncatedOption,
    /// Option number overflowed 16 bits.
    OptionNumberOverflow,
    /// Payload marker followed by no payload.
    EmptyPayload,
    /// Empty message (0.00) carrying a token, options or payload.
    NonEmptyEmpty,
    /// Code class 1, 6 or 7 (reserved).
    ReservedClass,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DecodeError::TooShort => "datagram shorter than a CoAP header",
            DecodeError::BadVersion => "CoAP version is not 1",
            DecodeError::BadToken => "invalid token length",
            DecodeError::ReservedNibble => "reserved option nibble 15",
            DecodeError::TruncatedOption => "option runs past the datagram",
            DecodeError::OptionNumberOverflow => "option number above 65535",
            DecodeError::EmptyPayload => "payload marker without payload",
            DecodeError::NonEmptyEmpty => "empty message with token, options or payload",
            DecodeError::ReservedClass => "reserved code class",
        };
        f.write_str(s)
    }
}

impl std::error::Error for DecodeError {}

/// A decoded CoAP message. Options are kept sorted by number, repeated
/// options in their wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type.
    pub mtype: MsgType,
    /// Request method or response code.
    pub code: Code,
    /// Message ID.
    pub mid: u16,
    /// Token.
    pub token: Token,
    /// Options, sorted by number.
    pub options: Vec<CoapOption>,
    /// Payload (empty when absent).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with no options or payload.
    pub fn new(mtype: MsgType, code: Code, mid: u16, token: Token) -> Message {
        Message {
            mtype,
            code,
            mid,
            token,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Reads only the type and message ID of a datagram that may not
    /// decode, so a malformed confirmable message can still be reset.
    pub fn peek_header(b: &[u8]) -> Option<(MsgType, u16)> {
        if b.len() < 4 || b[0] >> 6 != 1 {
            return None;
        }
        Some((
            MsgType::from_bits(b[0] >> 4),
            u16::from_be_bytes([b[2], b[3]]),
        ))
    }

    /// Decodes a datagram.
    pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
        if b.len() < 4 {
            return Err(DecodeError::TooShort);
        }
        if b[0] >> 6 != 1 {
            return Err(DecodeError::BadVersion);
        }
        let mtype = MsgType::from_bits(b[0] >> 4);
        let tkl = (b[0] & 0x0f) as usize;
        let code = Code(b[1]);
        if matches!(code.class(), 1 | 6 | 7) {
            return Err(DecodeError::ReservedClass);
        }
        let mid = u16::from_be_bytes([b[2], b[3]]);
        if tkl > 8 || b.len() < 4 + tkl {
            return Err(DecodeError::BadToken);
        }
        let token = Token::new(&b[4..4 + tkl]).ok_or(DecodeError::BadToken)?;
        let mut pos = 4 + tkl;
        let mut options = Vec::new();
        let mut number: u32 = 0;
        let mut payload = Vec::new();
        while pos < b.len() {
            let head = b[pos];
            pos += 1;
            if head == 0xff {
                if pos == b.len() {
                    return Err(DecodeError::EmptyPayload);
                }
                payload = b[pos..].to_vec();
                break;
            }
            let delta = read_ext(head >> 4, b, &mut pos)?;
            let len = read_ext(head & 0x0f, b, &mut pos)? as usize;
            number += delta;
            if number > u16::MAX as u32 {
                return Err(DecodeError::OptionNumberOverflow);
            }
            if b.len() - pos < len {
                return Err(DecodeError::TruncatedOption);
            }
            options.push(CoapOption {
                number: number as u16,
                value: OptValue::from(&b[pos..pos + len]),
            });
            pos += len;
        }
        if code == Code::EMPTY && (tkl != 0 || !options.is_empty() || !payload.is_empty()) {
            return Err(DecodeError::NonEmptyEmpty);
        }
        Ok(Message {
            mtype,
            code,
            mid,
            token,
            options,
            payload,
        })
    }

    /// Encodes to a datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + 8
                + self.payload.len()
                + 1
                + self
                    .options
                    .iter()
                    .map(|o| o.value.len() + 3)
                    .sum::<usize>(),
        );
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded datagram to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let tkl = self.token.as_bytes().len() as u8;
        out.push(0x40 | ((self.mtype as u8) << 4) | tkl);
        out.push(self.code.0);
        out.extend_from_slice(&self.mid.to_be_bytes());
        out.extend_from_slice(self.token.as_bytes());
        let mut last = 0u16;
        for o in &self.options {
            let delta = (o.number - last) as u32;
            last = o.number;
            let len = o.value.len() as u32;
            let (dn, dext) = ext_nibble(delta);
            let (ln, lext) = ext_nibble(len);
            out.push((dn << 4) | ln);
            push_ext(out, dn, dext);
            push_ext(out, ln, lext);
            out.extend_from_slice(&o.value);
        }
        if !self.payload.is_empty() {
            out.push(0xff);
            out.extend_from_slice(&self.payload);
        }
    }

    /// Adds an option, keeping the list sorted (stable for repeats).
    pub fn add_option(&mut self, number: u16, value: Vec<u8>) {
        let at = self.options.partition_point(|o| o.number <= number);
        self.options.insert(
            at,
            CoapOption {
                number,
                value: value.into(),
            },
        );
    }

    /// Gives back spare capacity, for a message kept a long time (an
    /// observation's request).
    pub fn shrink_to_fit(&mut self) {
        self.options.shrink_to_fit();
        self.payload.shrink_to_fit();
    }

    /// Replaces every instance of an option with one value.
    pub fn set_option(&mut self, number: u16, value: Vec<u8>) {
        self.remove_option(number);
        self.add_option(number, value);
    }

    /// Adds an unsigned-integer option in its minimal encoding.
    pub fn set_uint_option(&mut self, number: u16, v: u64) {
        self.set_option(number, encode_uint(v));
    }

    /// Removes every instance of an option.
    pub fn remove_option(&mut self, number: u16) {
        self.options.retain(|o| o.number != number);
    }

    /// The first value of an option.
    pub fn option(&self, number: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|o| o.number == number)
            .map(|o| &*o.value)
    }

    /// Every value of a repeatable option, in order.
    pub fn options_of(&self, number: u16) -> impl Iterator<Item = &[u8]> {
        self.options
            .iter()
            .filter(move |o| o.number == number)
            .map(|o| &*o.value)
    }

    /// An unsigned-integer option; `None` when absent or longer than 8 bytes.
    pub fn uint_option(&self, number: u16) -> Option<u64> {
        self.option(number).and_then(decode_uint)
    }

    /// Uri-Path segments (invalid UTF-8 segments come back lossily decoded).
    pub fn uri_path(&self) -> Vec<String> {
        self.options_of(opt::URI_PATH)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Uri-Query items as raw strings.
    pub fn uri_query(&self) -> Vec<String> {
        self.options_of(opt::URI_QUERY)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Sets the Uri-Path from a `/`-separated string.
    pub fn set_uri_path(&mut self, path: &str) {
        self.remove_option(opt::URI_PATH);
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            self.add_option(opt::URI_PATH, seg.as_bytes().to_vec());
        }
    }

    /// Content-Format, if present.
    pub fn content_format(&self) -> Option<u16> {
        self.uint_option(opt::CONTENT_FORMAT).map(|v| v as u16)
    }

    /// Observe option value, if present.
    pub fn observe(&self) -> Option<u32> {
        self.uint_option(opt::OBSERVE).map(|v| v as u32)
    }

    /// Decoded Block1 option. `Some(Err(()))` when present but invalid.
    pub fn block1(&self) -> Option<Result<BlockOpt, ()>> {
        self.option(opt::BLOCK1)
            .map(|v| BlockOpt::decode(v).ok_or(()))
    }

    /// Decoded Block2 option. `Some(Err(()))` when present but invalid.
    pub fn block2(&self) -> Option<Result<BlockOpt, ()>> {
        self.option(opt::BLOCK2)
            .map(|v| BlockOpt::decode(v).ok_or(()))
    }

    /// Location-Path as a `/`-joined string.
    pub fn location_path(&self) -> String {
        let segs: Vec<String> = self
            .options_of(opt::LOCATION_PATH)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        segs.join("/")
    }
}

fn read_ext(nibble: u8, b: &[u8], pos: &mut usize) -> Result<u32, DecodeError> {
    match nibble {
        0..=12 => Ok(nibble as u32),
        13 => {
            let v = *b.get(*pos).ok_or(DecodeError::TruncatedOption)?;
            *pos += 1;
            Ok(v as u32 + 13)
        }
        14 => {
            if b.len() < *pos + 2 {
                return Err(DecodeError::TruncatedOption);
            }
            let v = u16::from_be_bytes([b[*pos], b[*pos + 1]]);
            *pos += 2;
            Ok(v as u32 + 269)
        }
        _ => Err(DecodeError::ReservedNibble),
    }
}

fn ext_nibble(v: u32) -> (u8, u32) {
    if v < 13 {
        (v as u8, 0)
    } else if v < 269 {
        (13, v - 13)
    } else {
        (14, v - 269)
    }
}

fn push_ext(out: &mut Vec<u8>, nibble: u8, ext: u32) {
    match nibble {
        13 => out.push(ext as u8),
        14 => out.extend_from_slice(&(ext as u16).to_be_bytes()),
        _ => {}
    }
}

/// Minimal big-endian encoding of an unsigned option value (0 is empty).
pub fn encode_uint(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8) as usize;
    bytes[skip..].to_vec()
}

/// Decodes an unsigned option value of up to 8 bytes.
pub fn decode_uint(v: &[u8]) -> Option<u64> {
    if v.len() > 8 {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rfc7252_figure_style_get_with_uri_path() {
        // CON GET mid 0x7d34, token none, Uri-Path "temperature".
        let wire = [
            0x40, 0x01, 0x7d, 0x34, 0xbb, b't', b'e', b'm', b'p', b'e', b'r', b'a', b't', b'u',
            b'r', b'e',
        ];
        let m = Message::decode(&wire).unwrap();
        assert_eq!(m.mtype, MsgType::Con);
        assert_eq!(m.code, Code::GET);
        assert_eq!(m.mid, 0x7d34);
        assert_eq!(m.uri_path(), vec!["temperature".to_string()]);
        assert_eq!(m.encode(), wire);
    }

    #[test]
    fn decodes_piggybacked_content_response_with_token_and_payload() {
        // ACK 2.05 mid 0x7d34, token 0x20, payload "22.3 C" (RFC 7252 figure 5 style).
        let wire = [
            0x61, 0x45, 0x7d, 0x34, 0x20, 0xff, b'2', b'2', b'.', b'3', b' ', b'C',
        ];
        let m = Message::decode(&wire).unwrap();
        assert_eq!(m.mtype, MsgType::Ack);
        assert_eq!(m.code, Code::CONTENT);
        assert_eq!(m.token.as_bytes(), &[0x20]);
        assert_eq!(m.payload, b"22.3 C");
        assert_eq!(m.encode(), wire);
    }

    #[test]
    fn option_deltas_use_extended_forms_both_ways() {
        let mut m = Message::new(
            MsgType::Non,
            Code::POST,
            1,
            Token::from_u64(0x0102030405060708),
        );
        m.add_option(opt::URI_PATH, b"rd".to_vec());
        m.add_option(opt::URI_QUERY, b"ep=x".to_vec());
        m.set_uint_option(opt::SIZE1, 300);
        m.add_option(opt::NO_RESPONSE, vec![2]);
        m.add_option(opt::URI_QUERY, vec![b'a'; 300]);
        m.payload = b"</1/0>".to_vec();
        let wire = m.encode();
        let back = Message::decode(&wire).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.uri_query()[1].len(), 300);
        assert_eq!(back.uint_option(opt::SIZE1), Some(300));
    }

    #[test]
    fn rejects_malformed_datagrams_without_panicking() {
        assert_eq!(Message::decode(&[0x40]), Err(DecodeError::TooShort));
        assert_eq!(
            Message::decode(&[0x80, 1, 0, 0]),
            Err(DecodeError::BadVersion)
        );
        assert_eq!(
            Message::decode(&[0x49, 1, 0, 0]),
            Err(DecodeError::BadToken)
        );
        assert_eq!(
            Message::decode(&[0x42, 1, 0, 0, 1]),
            Err(DecodeError::BadToken)
        );
        assert_eq!(
            Message::decode(&[0x40, 1, 0, 0, 0xff]),
            Err(DecodeError::EmptyPayload)
        );
        assert_eq!(
            Message::decode(&[0x40, 1, 0, 0, 0xf0]),
            Err(DecodeError::ReservedNibble)
        );
        assert_eq!(
            Message::decode(&[0x40, 1, 0, 0, 0x13, b'a']),
            Err(DecodeError::TruncatedOption)
        );
        assert_eq!(
            Message::decode(&[0x40, 1, 0, 0, 0xe0, 0]),
            Err(DecodeError::TruncatedOption)
        );
        assert_eq!(
            Message::decode(&[0x41, 0, 0, 0, 7]),
            Err(DecodeError::NonEmptyEmpty)
        );
        assert_eq!(
            Message::decode(&[0x40, 0x20, 0, 0]),
            Err(DecodeError::ReservedClass)
        );
        // Option number past 65535 through repeated 14-nibble deltas.
        let mut b = vec![0x40, 1, 0, 0];
        for _ in 0..2 {
            b.extend_from_slice(&[0xe0, 0xff, 0x00]);
        }
        assert_eq!(Message::decode(&b), Err(DecodeError::OptionNumberOverflow));
        assert_eq!(
            Message::peek_header(&[0x40, 1, 0x12, 0x34, 0xff]),
            Some((MsgType::Con, 0x1234))
        );
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if !b.is_empty() {
                b[0] = 0x40 | (b[0] & 0x3f);
            }
            if let Ok(m) = Message::decode(&b) {
                assert_eq!(Message::decode(&m.encode()).unwrap(), m);
            }
        }
    }

    #[test]
    fn block_option_round_trips_and_rejects_bert() {
        let b = BlockOpt::new(5, true, 6);
        assert_eq!(BlockOpt::decode(&b.encode()), Some(b));
        assert_eq!(b.size(), 1024);
        assert_eq!(b.offset(), 5120);
        // RFC 7959 figure: num 0, M 0, szx 0 encodes as an empty value.
        assert_eq!(BlockOpt::new(0, false, 0).encode(), Vec::<u8>::new());
        assert_eq!(BlockOpt::decode(&[0x0f]), None);
        assert_eq!(BlockOpt::decode(&[1, 2, 3, 4]), None);
        assert_eq!(BlockOpt::szx_for(1024), 6);
        assert_eq!(BlockOpt::szx_for(100), 2);
        assert_eq!(BlockOpt::szx_for(5000), 6);
    }

    #[test]
    fn uint_options_use_minimal_length() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(60), vec![60]);
        assert_eq!(encode_uint(11542), vec![0x2d, 0x16]);
        assert_eq!(decode_uint(&[0x2d, 0x16]), Some(11542));
        assert_eq!(decode_uint(&[0; 9]), None);
    }
}
