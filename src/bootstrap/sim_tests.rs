//! The bootstrap server against the simulated device, both in memory:
//! classic and Bootstrap-Pack, LwM2M 1.0 (TLV only, no Discover), 1.1
//! and 1.2, NoSec and PSK accounts.

use super::*;
use crate::lwm2m::ModelLibrary;
use crate::sim::{BootstrapProgress, ServerAccount, SimConfig, SimDevice};
use std::path::Path as FsPath;
use std::sync::Arc;

const BS: &str = "127.0.0.1:5687";
const DEV: &str = "127.0.0.1:40002";

fn run(
    version: crate::lwm2m::Version,
    format: ContentFormat,
    pack: bool,
    spec: EntrySpec,
) -> (Option<BootstrapProgress>, Bootstrap, Vec<BsEvent>) {
    let keys: KeySource = Box::new(|b: &mut [u8]| b.fill(0x5a));
    let mut bs = Bootstrap::new(BootstrapConfig::default(), 11, keys);
    bs.put_entry(spec.build(FsPath::new(".")).unwrap());
    let models = Arc::new(ModelLibrary::embedded());
    let mut cfg = SimConfig::new(&spec.endpoint, BS.parse().unwrap(), format);
    cfg.lwm2m_version = version;
    let mut dev = SimDevice::new(cfg, models, 1).unwrap();
    let t = Instant::now();
    dev.bootstrap(t, BS.parse().unwrap(), pack);
    let mut events = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        while let Some(x) = dev.poll_transmit() {
            moved = true;
            bs.handle_datagram(t, 1, DEV.parse().unwrap(), &x.bytes);
        }
        events.extend(std::iter::from_fn(|| bs.poll_event()));
        while let Some(x) = bs.poll_transmit() {
            moved = true;
            dev.handle_datagram(t, 1, BS.parse().unwrap(), &x.bytes);
        }
        if !moved {
            break;
        }
    }
    (dev.bootstrap_progress().cloned(), bs, events)
}

fn spec(ep: &str, server_security: &str) -> EntrySpec {
    EntrySpec {
        endpoint: ep.into(),
        server_security: Some(server_security.into()),
        lifetime: Some(120),
        ..EntrySpec::default()
    }
}

fn done(p: Option<BootstrapProgress>) -> ServerAccount {
    match p {
        Some(BootstrapProgress::Done(a)) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_1_1_device_bootstraps_a_nosec_account_in_its_own_format() {
    let (p, bs, _) = run(
        crate::lwm2m::Version::new(1, 1),
        ContentFormat::SenmlCbor,
        false,
        spec("s-11", "nosec"),
    );
    let a = done(p);
    assert_eq!(a.uri, "coap://127.0.0.1:5685");
    assert_eq!((a.mode, a.lifetime, a.binding.as_str()), (3, 120, "U"));
    assert_eq!(bs.state("s-11").unwrap().phase, Phase::Finished);
}

#[test]
fn a_1_0_device_without_discover_and_with_tlv_only_bootstraps_psk() {
    let (p, bs, events) = run(
        crate::lwm2m::Version::new(1, 0),
        ContentFormat::Tlv,
        false,
        spec("s-10", "psk"),
    );
    let a = done(p);
    assert_eq!(a.uri, "coaps://127.0.0.1:5686");
    assert_eq!(a.mode, 0);
    assert_eq!(a.identity, b"s-10");
    assert_eq!(a.key, vec![0x5a; 16]);
    assert_eq!(bs.state("s-10").unwrap().phase, Phase::Finished);
    assert!(events
        .iter()
        .any(|e| matches!(e, BsEvent::Credential(c) if c.endpoint == "s-10")));
}

#[test]
fn a_1_0_device_is_written_in_tlv_whatever_format_it_prefers() {
    // It prefers SenML JSON for reads but, being 1.0, sends no pct and
    // takes only TLV for bootstrap writes (4.15 otherwise).
    let (p, _, _) = run(
        crate::lwm2m::Version::new(1, 0),
        ContentFormat::SenmlJson,
        false,
        spec("s-10b", "nosec"),
    );
    done(p);
}

#[test]
fn a_1_2_device_takes_the_bootstrap_pack() {
    let (p, bs, _) = run(
        crate::lwm2m::Version::new(1, 2),
        ContentFormat::Lwm2mCbor,
        true,
        spec("s-12", "psk"),
    );
    let a = done(p);
    assert_eq!(a.uri, "coaps://127.0.0.1:5686");
    assert_eq!(a.key, vec![0x5a; 16]);
    assert_eq!(bs.state("s-12").unwrap().attempts, 1);
}

#[test]
fn a_1_2_device_falls_back_to_the_classic_sequence_when_bspack_is_not_found() {
    let keys: KeySource = Box::new(|b: &mut [u8]| b.fill(0x5a));
    let mut bs = Bootstrap::new(BootstrapConfig::default(), 11, keys);
    bs.put_entry(spec("s-12b", "nosec").build(FsPath::new(".")).unwrap());
    let models = Arc::new(ModelLibrary::embedded());
    let mut cfg = SimConfig::new("s-12b", BS.parse().unwrap(), ContentFormat::SenmlCbor);
    cfg.lwm2m_version = crate::lwm2m::Version::new(1, 2);
    let mut dev = SimDevice::new(cfg, models, 1).unwrap();
    let t = Instant::now();
    dev.bootstrap(t, BS.parse().unwrap(), true);
    // An older bootstrap server: 4.04 to GET /bspack.
    let ask = Message::decode(&dev.poll_transmit().unwrap().bytes).unwrap();
    assert_eq!(ask.uri_path(), ["bspack"]);
    let nf = Message::new(MsgType::Ack, Code::NOT_FOUND, ask.mid, ask.token);
    dev.handle_datagram(t, 1, BS.parse().unwrap(), &nf.encode());
    for _ in 0..100 {
        let mut moved = false;
        while let Some(x) = dev.poll_transmit() {
            moved = true;
            bs.handle_datagram(t, 1, DEV.parse().unwrap(), &x.bytes);
        }
        while let Some(x) = bs.poll_transmit() {
            moved = true;
            dev.handle_datagram(t, 1, BS.parse().unwrap(), &x.bytes);
        }
        if !moved {
            break;
        }
    }
    done(dev.bootstrap_progress().cloned());
    assert_eq!(bs.state("s-12b").unwrap().phase, Phase::Finished);
}
