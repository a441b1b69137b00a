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
    cfg.dtls.port = 0;
    cfg.bootstrap.port = 0;
    cfg.bootstrap.dtls_port = 0;
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

#[test]
fn report_subscribers_get_typed_readings_from_send() {
    use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
    use lwm2m_gw::lwm2m::Value;
    use lwm2m_gw::server::Origin;
    let dir = TempDir::new("reports");
    let mut cfg = Config::from_toml("[coap]\nbind = \"127.0.0.1\"\nport = 0\n").unwrap();
    cfg.store.data_dir = Some(dir.0.join("data"));
    cfg.dtls.port = 0;
    cfg.bootstrap.port = 0;
    cfg.bootstrap.dtls_port = 0;
    let mut gw = Gateway::start(cfg).unwrap();
    let addr = gw.local_addr();
    let rx = gw.subscribe_reports(16);
    std::thread::spawn(move || smol::block_on(gw.run()));
    let mut c = Client::new(addr);
    c.register("rep-1", &["lwm2m=1.1"], b"</3/0>");
    let mut send = Message::new(MsgType::Con, Code::POST, 4242, Token::from_u64(3));
    send.set_uri_path("dp");
    send.set_uint_option(opt::CONTENT_FORMAT, 110);
    send.payload = br#"[{"bn":"/3/0/","n":"9","v":77},{"n":"13","v":1700000000}]"#.to_vec();
    c.sock.send_to(&send.encode(), addr).unwrap();
    let r = smol::block_on(async {
        smol::future::or(async { rx.recv().await.ok() }, async {
            smol::Timer::after(Duration::from_secs(5)).await;
            None
        })
        .await
    })
    .expect("a report within 5 s");
    assert_eq!((&*r.endpoint, r.origin), ("rep-1", Origin::Send));
    let values: Vec<(String, Value)> = r
        .readings
        .iter()
        .map(|x| (x.path.to_string(), x.value.clone()))
        .collect();
    // Typed through the Device model: battery an integer, current time a time.
    assert_eq!(
        values,
        [
            ("/3/0/9".to_string(), Value::Integer(77)),
            ("/3/0/13".to_string(), Value::Time(1_700_000_000)),
        ]
    );
}
