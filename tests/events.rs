//! The registry event stream, observed in-process while a real client talks UDP.

mod common;

use common::{Client, TempDir};
use lwm2m_gw::config::Config;
use lwm2m_gw::runtime::Gateway;
use lwm2m_gw::server::ServerEvent;
use std::time::Duration;

#[test]
fn subscribers_see_registered_updated_deregistered_and_expired() {
    let dir = TempDir::new("events");
    let mut cfg = Config::from_toml(
        "[coap]\nbind = \"127.0.0.1\"\nport = 0\n[registration]\nexpiry_grace_s = 0\n",
    )
    .unwrap();
    cfg.store.data_dir = Some(dir.0.join("data"));
    let mut gw = Gateway::start(cfg).unwrap();
    let addr = gw.local_addr();
    let rx = gw.subscribe(64);
    std::thread::spawn(move || smol::block_on(gw.run()));
    let next = || {
        smol::block_on(async {
            smol::future::or(async { rx.recv().await.ok() }, async {
                smol::Timer::after(Duration::from_secs(5)).await;
                None
            })
            .await
        })
        .expect("an event within 5 s")
    };

    let mut c = Client::new(addr);
    let loc = c.register("ev-1", &["lt=60"], b"</3/0>").location_path();
    match next() {
        ServerEvent::Registered {
            reg,
            replaced: None,
        } => {
            assert_eq!(reg.endpoint, "ev-1");
            assert_eq!(format!("rd/{}", reg.id), loc);
        }
        other => panic!("{other:?}"),
    }
    c.request(lwm2m_gw::coap::Code::POST, &loc, &["lt=90"], b"");
    assert!(matches!(next(), ServerEvent::Updated(r) if r.lifetime == 90));
    c.request(lwm2m_gw::coap::Code::DELETE, &loc, &[], b"");
    assert!(matches!(next(), ServerEvent::Deregistered(r) if r.endpoint == "ev-1"));
    c.register("ev-2", &["lt=1"], b"");
    assert!(matches!(next(), ServerEvent::Registered { .. }));
    assert!(matches!(next(), ServerEvent::Expired(r) if r.endpoint == "ev-2"));
}
