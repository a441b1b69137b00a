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

/// Lines about bad input from the network, bounded: at most `max` in a
/// `window`, then one line saying how many were held back. A flood of
/// garbage costs a few lines, not one per datagram.
#[derive(Debug, Clone)]
pub struct LogLimit {
    max: u32,
    window: std::time::Duration,
    start: Option<std::time::Instant>,
    used: u32,
    held: u64,
}

impl LogLimit {
    /// At most `max` lines per `window`.
    pub const fn new(max: u32, window: std::time::Duration) -> LogLimit {
        LogLimit {
            max,
            window,
            start: None,
            used: 0,
            held: 0,
        }
    }

    /// Whether a line may go out at `now`; with it, the lines held back
    /// since the last one (to say so in the text, see [`held_note`]).
    pub fn check(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .start
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used >= self.max {
            self.held += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.held))
    }
}

/// ` (N more not logged)` for a count of held-back lines, else nothing.
pub fn held_note(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} more like it not logged)")
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_flood_logs_a_few_lines_and_then_says_how_many_it_held_back() {
        let t = Instant::now();
        let mut l = LogLimit::new(3, Duration::from_secs(10));
        let let_through: Vec<Option<u64>> = (0..1000).map(|_| l.check(t)).collect();
        assert_eq!(let_through.iter().filter(|x| x.is_some()).count(), 3);
        // The next window's first line tells of the 997 held back.
        assert_eq!(l.check(t + Duration::from_secs(10)), Some(997));
        assert_eq!(l.check(t + Duration::from_secs(11)), Some(0));
        assert_eq!(held_note(997), " (997 more like it not logged)");
    }
}
