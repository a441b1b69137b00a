//! Control-socket lines: JSON that parses becomes a request or a clear
//! refusal; bootstrap import lines (CSV) too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(j) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = lwm2m_gw::control::Request::parse(&j);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(specs) = lwm2m_gw::bootstrap::entry::parse_csv(text) {
            for (_, s) in specs {
                let _ = s.build(std::path::Path::new("/nonexistent"));
            }
        }
    }
});
