//! CoAP message decode; what decodes encodes back to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::coap::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("an encoded message decodes");
        assert_eq!(again, m, "decode(encode(m)) == m");
        let _ = Message::peek_header(data);
        let _ = (
            m.block1(),
            m.block2(),
            m.uri_path(),
            m.uri_query(),
            m.content_format(),
        );
    }
});
