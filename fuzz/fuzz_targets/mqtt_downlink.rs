//! Messages from the platform (RPC, shared attributes, attribute answers)
//! on the topics the bridge subscribes to.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::northbound::thingsboard;

fuzz_target!(|data: &[u8]| {
    let Some((&t, payload)) = data.split_first() else {
        return;
    };
    let topics = [
        thingsboard::RPC,
        thingsboard::ATTRIBUTES,
        thingsboard::ATTRIBUTES_RESPONSE,
        "v1/gateway/other",
    ];
    let _ = thingsboard::parse(topics[t as usize % topics.len()], payload);
});
