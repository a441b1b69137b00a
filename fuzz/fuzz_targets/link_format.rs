//! CoRE link format (Register payloads, Discover answers): what parses
//! formats and parses again to the same links; paths parse without panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::lwm2m::link;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = lwm2m_gw::lwm2m::Path::parse(text);
    if let Ok(links) = link::parse(text) {
        let again = link::parse(&link::format(&links)).expect("formatted links parse");
        assert_eq!(again, links, "parse(format(l)) == l");
    }
});
