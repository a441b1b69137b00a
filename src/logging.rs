//! Log lines for operators: env_logger's format, with every control
//! character of a message escaped, since endpoint names, paths, query
//! values and error details come from devices and the network.

use std::fmt::{self, Write as _};
use std::io::{self, Write};

/// Starts logging to stderr at `RUST_LOG`, else at `default` (`info`, `warn`).
pub fn init(default: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format(|buf, record| {
            let ts = buf.timestamp();
            write!(buf, "[{ts} {:<5} {}] ", record.level(), record.target())?;
            let mut out = Escaping {
                to: buf,
                error: None,
            };
            if write!(out, "{}", record.args()).is_err() {
                return Err(out.error.unwrap_or_else(|| io::Error::other("log format")));
            }
            writeln!(buf)
        })
        .init();
}

/// Control characters (terminal escapes, newlines that would forge a
/// line) and bidirectional overrides become `\xNN` or `\u{NNNN}`.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_into(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let mut rest = s;
    while let Some(i) = rest.find(needs_escape) {
        out.write_str(&rest[..i])?;
        let c = rest[i..].chars().next().unwrap_or_default();
        match c as u32 {
            n @ 0..=0xff => write!(out, "\\x{n:02x}")?,
            n => write!(out, "\\u{{{n:04x}}}")?,
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.write_str(rest)
}

/// A `fmt::Write` that escapes into an `io::Write`, keeping the first I/O error.
struct Escaping<'a, W: Write> {
    to: &'a mut W,
    error: Option<io::Error>,
}

impl<W: Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = Plain(self.to, None);
        let r = escape_into(&mut plain, s);
        if let Some(e) = plain.1 {
            self.error = Some(e);
        }
        r
    }
}

struct Plain<'a, W: Write>(&'a mut W, Option<io::Error>);

impl<W: Write> fmt::Write for Plain<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|e| {
            self.1 = Some(e);
            fmt::Error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s).unwrap();
        out
    }

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("ep=a\u{1}\u{1b}[2Jb"), "ep=a\\x01\\x1b[2Jb");
        assert_eq!(escape("line\nforged\r"), "line\\x0aforged\\x0d");
        assert_eq!(escape("x\u{202e}y\u{85}z"), "x\\u{202e}y\\x85z");
        assert_eq!(escape("Größe 5 °C, \"quoted\""), "Größe 5 °C, \"quoted\"");
    }

    #[test]
    fn the_escaping_writer_escapes_formatted_arguments_too() {
        let mut buf = Vec::new();
        let mut w = Escaping {
            to: &mut buf,
            error: None,
        };
        let ep = "a\u{7}b";
        write!(w, "ep={ep} n={}", 5).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "ep=a\\x07b n=5");
    }
}
