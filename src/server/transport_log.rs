//! Each device's recent transport log lines (registrations and command
//! outcomes), for devices whose profile asks for one: the platform gets
//! them as `transportLog` telemetry, the web console reads them here.

use super::ServerEvent;
use serde_json::{json, Value as Json};
use std::collections::{HashMap, VecDeque};

/// Lines kept per device.
pub const LINES: usize = 50;
/// Devices kept; past it the one with the oldest last line is forgotten.
pub const DEVICES: usize = 4096;
/// Longest line kept, in characters.
pub const LINE_CHARS: usize = 500;

/// Recent lines by endpoint, bounded both ways.
#[derive(Debug, Default)]
pub struct TransportLog {
    by_ep: HashMap<String, VecDeque<(u64, String)>>,
}

impl TransportLog {
    /// Keeps `line` for `endpoint` at `ts_ms`; gives it back cut to
    /// [`LINE_CHARS`].
    pub fn record(&mut self, endpoint: &str, ts_ms: u64, line: &str) -> String {
        let line: String = line.chars().take(LINE_CHARS).collect();
        if !self.by_ep.contains_key(endpoint) && self.by_ep.len() >= DEVICES {
            let oldest = self
                .by_ep
                .iter()
                .min_by_key(|(_, l)| l.back().map_or(0, |(t, _)| *t))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.by_ep.remove(&k);
            }
        }
        let lines = self.by_ep.entry(endpoint.to_string()).or_default();
        if lines.len() >= LINES {
            lines.pop_front();
        }
        lines.push_back((ts_ms, line.clone()));
        line
    }

    /// A device's lines, oldest first: `[{"ts": .., "line": ..}]`.
    pub fn lines(&self, endpoint: &str) -> Json {
        Json::Array(
            self.by_ep
                .get(endpoint)
                .into_iter()
                .flatten()
                .map(|(ts, line)| json!({"ts": ts, "line": line}))
                .collect(),
        )
    }

    /// Forgets a device (its credential was removed).
    pub fn forget(&mut self, endpoint: &str) {
        self.by_ep.remove(endpoint);
    }
}

/// The transport log line for a registry event.
pub fn event_line(ev: &ServerEvent) -> String {
    let reg = ev.registration();
    match ev {
        ServerEvent::Registered { .. } => format!(
            "Registered: lwm2m={} lt={} b={} from {} with {} objects",
            reg.lwm2m_version,
            reg.lifetime,
            reg.binding,
            reg.peer,
            reg.objects.len()
        ),
        ServerEvent::Updated(_) => format!("Update: lt={} from {}", reg.lifetime, reg.peer),
        ServerEvent::Deregistered(_) => "De-registered".to_string(),
        ServerEvent::Expired(_) => "Registration expired".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_per_device_bounded_and_cut() {
        let mut t = TransportLog::default();
        for i in 0..(LINES + 5) {
            t.record("a", i as u64, &format!("line {i}"));
        }
        let a = t.lines("a");
        let a = a.as_array().unwrap();
        assert_eq!(a.len(), LINES);
        assert_eq!(a[0]["line"], "line 5");
        assert_eq!(a[LINES - 1]["ts"], (LINES + 4) as u64);
        let long = "x".repeat(LINE_CHARS + 10);
        assert_eq!(t.record("b", 1, &long).len(), LINE_CHARS);
        assert_eq!(t.lines("nobody"), json!([]));
        t.forget("a");
        assert_eq!(t.lines("a"), json!([]));
    }

    #[test]
    fn past_the_device_bound_the_stalest_device_goes() {
        let mut t = TransportLog::default();
        for i in 0..DEVICES {
            t.record(&format!("d{i}"), 100 + i as u64, "x");
        }
        t.record("d0", 10_000, "fresh");
        t.record("new", 10_001, "y");
        assert_eq!(t.lines("d1"), json!([]), "the stalest goes");
        assert_eq!(t.lines("d0").as_array().unwrap().len(), 2);
        assert_eq!(t.lines("new").as_array().unwrap().len(), 1);
    }
}
