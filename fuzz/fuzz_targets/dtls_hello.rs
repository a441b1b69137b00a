//! The DTLS front: ClientHello parsing before any state, and the
//! normalisation applied to what it accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::dtls::hello;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = hello::parse_client_hello(data) {
        let _ = hello::fatal_alert(&h, hello::UNSUPPORTED_CERTIFICATE);
        let mut d = data.to_vec();
        hello::normalise_record_version(&mut d);
        assert!(
            hello::parse_client_hello(&d).is_some(),
            "a normalised hello still parses"
        );
    }
});
