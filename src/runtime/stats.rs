//! The gateway's counters for `lwm2m-gw stats` and the benchmarks.

use crate::server::Server;
use serde_json::{json, Value as Json};

/// Counters of the server core, with the transports' own beside them.
pub fn json(server: &Server, watchers: usize, mqtt: Json, dtls: Json) -> Json {
    let r = server.report_stats();
    let c = server.coap_stats();
    json!({
        "registrations": server.registry().len(),
        "observations": server.observation_count(),
        "queued": server.queued_count(),
        "notifications": r.notifications,
        "sends": r.sends,
        "readings": r.readings,
        "undecodable": r.undecodable,
        "reportsDropped": r.reports_dropped,
        "staleNotifications": c.stale_notifications,
        "malformedDatagrams": c.malformed,
        "duplicates": c.duplicates,
        "retransmissions": c.retransmissions,
        "overloadRefusals": c.overload_refusals,
        "oversizeDatagrams": c.oversize,
        "heldAtRestore": c.held,
        "heldAtRestoreDropped": c.held_dropped,
        "watchers": watchers,
        "mqtt": mqtt,
        "dtls": dtls,
        "rssKb": rss_kb(),
        "uptimeS": uptime_s(),
    })
}

/// When the gateway started, for `uptimeS`.
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Marks the start; later calls keep the first time.
pub fn mark_start() {
    STARTED.get_or_init(std::time::Instant::now);
}

/// Seconds since [`mark_start`].
fn uptime_s() -> u64 {
    STARTED.get().map_or(0, |t| t.elapsed().as_secs())
}

/// This process's resident memory in KiB, from /proc (0 where unavailable).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
