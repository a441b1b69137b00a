//! CoRE link format (RFC 6690) as LwM2M uses it in Register and Update.

use std::fmt;

/// One link: a target and its attributes in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The URI between `<` and `>`.
    pub target: String,
    /// Attributes; a value-less attribute has `None`.
    pub attrs: Vec<(String, Option<String>)>,
}

impl Link {
    /// The first value of an attribute, quotes removed.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Why a link-format payload was refused, with the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError {
    /// Byte offset in the payload.
    pub offset: usize,
    /// What was wrong.
    pub message: &'static str,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link format, byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for LinkError {}

/// Parses a link-format payload. Whitespace around links is tolerated
/// (some clients send a newline after commas).
pub fn parse(input: &str) -> Result<Vec<Link>, LinkError> {
    let b = input.as_bytes();
    let mut i = 0;
    let mut links = Vec::new();
    let err = |offset, message| Err(LinkError { offset, message });
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i == b.len() {
        return Ok(links);
    }
    loop {
        skip_ws(&mut i);
        if b.get(i) != Some(&b'<') {
            return err(i, "expected '<'");
        }
        let Some(end) = input[i + 1..].find('>') else {
            return err(i, "unterminated '<'");
        };
        let target = input[i + 1..i + 1 + end].to_string();
        if target.contains(['<', ',', '"']) {
            return err(i, "invalid character in link target");
        }
        i += end + 2;
        let mut attrs = Vec::new();
        loop {
            skip_ws(&mut i);
            if b.get(i) != Some(&b';') {
                break;
            }
            i += 1;
            let start = i;
            while i < b.len() && !matches!(b[i], b'=' | b';' | b',') {
                i += 1;
            }
            let name = input[start..i].trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.*".contains(&c))
            {
                return err(start, "invalid attribute name");
            }
            let value = if b.get(i) == Some(&b'=') {
                i += 1;
                if b.get(i) == Some(&b'"') {
                    let Some(close) = input[i + 1..].find('"') else {
                        return err(i, "unterminated quoted value");
                    };
                    let v = input[i + 1..i + 1 + close].to_string();
                    i += close + 2;
                    Some(v)
                } else {
                    let start = i;
                    while i < b.len() && !matches!(b[i], b';' | b',') {
                        i += 1;
                    }
                    let v = input[start..i].trim();
                    // RFC 6690's ptoken has no DQUOTE; one here would not
                    // survive being written back quoted.
                    if v.contains('"') {
                        return err(start, "'\"' in an unquoted attribute value");
                    }
                    Some(v.to_string())
                }
            } else {
                None
            };
            attrs.push((name.to_string(), value));
        }
        links.push(Link { target, attrs });
        skip_ws(&mut i);
        match b.get(i) {
            None => return Ok(links),
            Some(b',') => i += 1,
            Some(_) => return err(i, "expected ',' or ';'"),
        }
    }
}

/// Writes links back in link format.
pub fn format(links: &[Link]) -> String {
    let mut out = String::new();
    for (n, l) in links.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('<');
        out.push_str(&l.target);
        out.push('>');
        for (k, v) in &l.attrs {
            out.push(';');
            out.push_str(k);
            if let Some(v) = v {
                out.push('=');
                let plain = !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit() || c == b'.');
                if plain {
                    out.push_str(v);
                } else {
                    out.push('"');
                    out.push_str(v);
                    out.push('"');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lwm2m_registration_payload_with_root_and_versions() {
        let l = parse(
            "</>;rt=\"oma.lwm2m\";ct=\"60 110 112 11542\",</1/0>,</3>;ver=1.1,</3/0>,</3303/0>",
        )
        .unwrap();
        assert_eq!(l.len(), 5);
        assert_eq!(l[0].target, "/");
        assert_eq!(l[0].attr("rt"), Some("oma.lwm2m"));
        assert_eq!(l[0].attr("ct"), Some("60 110 112 11542"));
        assert_eq!(l[2].attr("ver"), Some("1.1"));
        assert_eq!(l[4].target, "/3303/0");
    }

    #[test]
    fn tolerates_whitespace_and_valueless_attributes() {
        let l = parse(" </1/0>;obs,\n </2/0> ").unwrap();
        assert_eq!(l[0].attrs, vec![("obs".to_string(), None)]);
        assert_eq!(l[1].target, "/2/0");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn quoted_values_may_hold_commas_and_semicolons() {
        let l = parse("</a>;title=\"x, y; z\",</b>").unwrap();
        assert_eq!(l[0].attr("title"), Some("x, y; z"));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn refuses_malformed_payloads_with_offset() {
        for bad in [
            "/1/0",
            "</1/0",
            "</1/0>;",
            "</1/0>x",
            "</1/0>;ver=\"1.0",
            "</a>,",
            "</a>;=1",
            // Found by fuzz/link_format: unquoted, it could not be written back.
            "</a>;x=a\"b",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("</1/0>,x").unwrap_err().offset, 7);
    }

    #[test]
    fn random_input_never_panics_even_with_multibyte_characters() {
        let alphabet: Vec<char> = "<>;=\",/ 0a1.é€".chars().collect();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50_000 {
            let s: String = (0..rng.usize(..24))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            if let Ok(links) = parse(&s) {
                assert_eq!(parse(&format(&links)).ok(), Some(links), "{s:?}");
            }
        }
    }

    #[test]
    fn format_round_trips() {
        let s = "</>;rt=\"oma.lwm2m\";ct=11543,</3/0>;ver=1.1;obs";
        assert_eq!(format(&parse(s).unwrap()), s);
    }
}
