//! The bootstrap server fed datagrams (requests and answers to its own
//! steps) from two peers, one of them an enrolled endpoint.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::bootstrap::{Bootstrap, BootstrapConfig, EntrySpec, KeySource};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let keys: KeySource = Box::new(|b: &mut [u8]| b.fill(3));
    let mut bs = Bootstrap::new(BootstrapConfig::default(), 4, keys);
    for (ep, sec) in [("bs-a", "nosec"), ("bs-b", "psk")] {
        let spec = EntrySpec {
            endpoint: ep.into(),
            server_security: Some(sec.into()),
            ..EntrySpec::default()
        };
        bs.put_entry(spec.build(std::path::Path::new(".")).unwrap());
    }
    let mut now = Instant::now();
    let peers = [
        "127.0.0.1:7000".parse().unwrap(),
        "127.0.0.1:7001".parse().unwrap(),
    ];
    let mut rest = data;
    while rest.len() >= 3 {
        let (head, tail) = rest.split_at(3);
        let peer = peers[head[0] as usize % 2];
        now += Duration::from_millis(head[1] as u64 * 200);
        let len = (head[2] as usize).min(tail.len());
        let (dgram, tail) = tail.split_at(len);
        rest = tail;
        bs.handle_datagram(now, 1, peer, dgram);
        bs.handle_timeout(now);
        while bs.poll_transmit().is_some() {}
        while bs.poll_event().is_some() {}
    }
});
