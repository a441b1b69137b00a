//! Profiles and the gateway configuration: TOML that parses is checked
//! (against the models, and resolved into settings) without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::lwm2m::ModelLibrary;
use std::sync::OnceLock;

fn models() -> &'static ModelLibrary {
    static M: OnceLock<ModelLibrary> = OnceLock::new();
    M.get_or_init(ModelLibrary::embedded)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = lwm2m_gw::profile::Profile::from_toml(text) {
        if p.check(models()).is_ok() {
            let _ = p.mapped(models());
        }
    }
    if let Ok(c) = lwm2m_gw::config::Config::from_toml(text) {
        let _: Result<lwm2m_gw::config::Settings, _> = c.try_into();
    }
});
