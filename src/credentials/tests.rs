use super::*;

/// A P-256 public key made for these tests with `openssl ec -pubout -outform DER`.
const RPK: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE7OuZFJXXQzrllaeC4s7fLvSK66v2pE9oB0bgV8TnltOOKpsvjGxE0UGNRsJSCB9WTMH+PMM7+V7N3LQfzsJRHA==";

fn spec(ep: &str) -> CredentialSpec {
    CredentialSpec {
        endpoint: ep.into(),
        ..Default::default()
    }
}

fn here() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/credentials/testdata"
    ))
}

#[test]
fn every_mode_builds_from_its_flags() {
    let c = spec("plain").build(here()).unwrap();
    assert_eq!(
        (c.security.mode(), c.profile.as_str()),
        ("NO_SEC", "default")
    );
    let mut s = spec("psk-1");
    s.psk_identity = Some("psk-1-id".into());
    s.psk_key = Some("00112233445566778899aabbccddeeff".into());
    s.profile = Some("thermo".into());
    let c = s.build(here()).unwrap();
    assert!(c.security.is_secure());
    assert_eq!(c.to_json()["pskKeyBits"], 128);
    assert!(
        !c.to_json().to_string().contains("0011"),
        "keys are never shown"
    );
    let mut s = spec("rpk-1");
    s.rpk_key = Some(RPK.into());
    assert_eq!(s.build(here()).unwrap().security.mode(), "RPK");
    let mut s = spec("dev-x509");
    s.x509_cert = Some("dev-x509.pem".into());
    match s.build(here()).unwrap().security {
        Security::X509 {
            certificate: Some(der),
        } => assert_eq!(der[0], 0x30),
        other => panic!("{other:?}"),
    }
    let mut s = spec("cn-bound");
    s.x509 = true;
    assert_eq!(
        s.build(here()).unwrap().security,
        Security::X509 { certificate: None }
    );
}

#[test]
fn bad_material_gives_a_clear_error() {
    let psk = |k: &str| {
        let mut s = spec("e");
        s.psk_identity = Some("id".into());
        s.psk_key = Some(k.into());
        s.build(here()).unwrap_err().0
    };
    assert!(psk("0011").contains("32, 64 or 128 hex characters, not 4"));
    assert!(psk(&"zz".repeat(16)).contains("not hexadecimal"));
    let mut s = spec("e");
    s.psk_key = Some("00".repeat(16));
    assert!(s
        .build(here())
        .unwrap_err()
        .0
        .contains("both an identity and a key"));
    let rpk = |k: &str| {
        let mut s = spec("e");
        s.rpk_key = Some(k.into());
        s.build(here()).unwrap_err().0
    };
    assert!(rpk("not base64!").contains("not base64"));
    assert!(rpk("aGVsbG8gd29ybGQ=").contains("SubjectPublicKeyInfo"));
    assert!(rpk(&RPK[..40]).contains("SubjectPublicKeyInfo"));
    let mut s = spec("e");
    s.x509_cert = Some("missing.pem".into());
    assert!(s.build(here()).unwrap_err().0.contains("missing.pem"));
    assert!(certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").is_err());
    let mut s = spec("e");
    s.x509 = true;
    s.rpk_key = Some(RPK.into());
    assert!(s.build(here()).unwrap_err().0.contains("one security mode"));
    assert!(spec("").build(here()).is_err());
    assert!(spec("a\nb").build(here()).is_err());
}

#[test]
fn credentials_survive_the_stores_encoding() {
    let mut s = spec("psk-1");
    s.psk_identity = Some("id".into());
    s.psk_key = Some("ab".repeat(32));
    let c = s.build(here()).unwrap();
    let b = postcard::to_stdvec(&c).unwrap();
    assert_eq!(postcard::from_bytes::<Credential>(&b).unwrap(), c);
}

#[test]
fn import_files_list_devices() {
    let f: ImportFile = toml::from_str(
        "[[device]]\nendpoint = \"a\"\nprofile = \"p\"\n[[device]]\nendpoint = \"b\"\nx509 = true\n",
    )
    .unwrap();
    assert_eq!(f.device.len(), 2);
    assert!(toml::from_str::<ImportFile>("[[device]]\nendpoint = \"a\"\npsk = 1\n").is_err());
}
