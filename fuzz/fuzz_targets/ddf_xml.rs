//! DDF object model files: a broken one is an error, never a panic; what
//! parses writes back and parses again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::lwm2m::ddf;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = ddf::parse(text) {
        for obj in &file.objects {
            let _ = ddf::parse(&ddf::write(obj));
        }
    }
});
