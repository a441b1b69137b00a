//! Every content format's decoders (TLV, SenML JSON and CBOR, LwM2M CBOR,
//! OMA JSON, CBOR, text, opaque) on a path the first bytes choose; what
//! decodes encodes again without panicking, and SenML path lists round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lwm2m_gw::lwm2m::format::{self, ContentFormat};
use lwm2m_gw::lwm2m::{ModelLibrary, Path};
use std::sync::OnceLock;

fn models() -> &'static ModelLibrary {
    static M: OnceLock<ModelLibrary> = OnceLock::new();
    M.get_or_init(ModelLibrary::embedded)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cf = ContentFormat::ALL[data[0] as usize % ContentFormat::ALL.len()];
    let paths = [
        "/3/0",
        "/3/0/9",
        "/3/0/7",
        "/3303/0/5700",
        "/5/0/0",
        "/1",
        "/3",
        "/9/0/1",
    ];
    let at = Path::parse(paths[data[1] as usize % paths.len()]).unwrap();
    let bytes = &data[2..];
    let lib = models();
    if let Ok(node) = format::decode(cf, &at, bytes, lib) {
        let _ = format::encode(cf, &at, &node);
        let _ = node.to_json();
    }
    if let Ok(entries) = format::decode_entries(cf, bytes, lib) {
        let _ = format::encode_entries(cf, &entries);
    }
    let _ = format::decode_readings(cf, Some(&at), bytes, lib);
    if let Ok(ps) = format::decode_paths(cf, bytes) {
        if let Ok(enc) = format::encode_paths(cf, &ps) {
            // The encoder writes each path once and leaves out a path its
            // parent covers (/0 covers /0/1): the same resources are named.
            let back = format::decode_paths(cf, &enc).expect("an encoded path list decodes");
            let covers = |q: &Path, p: &Path| lwm2m_gw::lwm2m::node::within(q, p);
            for p in &ps {
                assert!(
                    back.iter().any(|q| covers(q, p)),
                    "{p} is covered: {cf} {ps:?} -> {back:?}"
                );
            }
            for q in &back {
                assert!(ps.contains(q), "{q} was asked for");
            }
        }
    }
});
