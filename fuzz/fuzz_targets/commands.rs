//! The command language on a registered device: a method name and JSON
//! parameters from the input, then the device's answer bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use lwm2m_gw::server::command::Method;
use lwm2m_gw::server::{Server, ServerConfig};
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let cut = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (params, answer) = rest.split_at(cut);
    let Ok(params) = serde_json::from_slice::<serde_json::Value>(params) else {
        return;
    };
    let mut s = Server::new(ServerConfig::default(), 5);
    let now = Instant::now();
    let dev = "127.0.0.1:6000".parse().unwrap();
    let mut reg = Message::new(MsgType::Con, Code::POST, 1, Token::new(&[1]).unwrap());
    reg.set_uri_path("rd");
    reg.add_option(opt::URI_QUERY, b"ep=cmd".to_vec());
    reg.add_option(opt::URI_QUERY, b"lwm2m=1.2".to_vec());
    reg.set_uint_option(opt::CONTENT_FORMAT, 40);
    reg.payload = b"</1/0>,</3/0>,</5/0>,</9/0>,</3303/0>".to_vec();
    s.handle_datagram(now, 1, dev, &reg.encode());
    while s.poll_transmit().is_some() {}
    let method = Method::ALL[m as usize % Method::ALL.len()].name();
    s.command(now, 9, "cmd", method, &params);
    // Answer the request the command sent with the rest of the input.
    while let Some(t) = s.poll_transmit() {
        if let Ok(req) = Message::decode(&t.bytes) {
            if req.mtype == MsgType::Con {
                let mut a = Message::new(MsgType::Ack, Code::CONTENT, req.mid, req.token);
                if let Some((&cf, body)) = answer.split_first() {
                    let cfs = [11542u64, 110, 112, 11544, 11543, 0, 42, 60, 40];
                    a.set_uint_option(opt::CONTENT_FORMAT, cfs[cf as usize % cfs.len()]);
                    a.payload = body.to_vec();
                }
                s.handle_datagram(now, 2, dev, &a.encode());
            }
        }
    }
    while s.poll_answer().is_some() {}
});
