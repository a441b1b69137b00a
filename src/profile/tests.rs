use super::*;

fn lib() -> ModelLibrary {
    ModelLibrary::embedded()
}

const THERMO: &str = r#"
name = "thermometer"
objects = [3, 3303]
format = "SENML_CBOR"
awake_window_s = 30
transport_log = true

[resources."/3/0/0"]
attribute = true

[resources."/3/0/9"]
telemetry = true
observe = true
key = "battery"

[resources."/3303/0/5700"]
telemetry = true

[attributes."/3303/0/5700"]
pmin = 10
pmax = 60
st = 0.5

[ota]
strategy = "pull"
"#;

#[test]
fn a_profile_parses_checks_and_maps_keys() {
    let p = Profile::from_toml(THERMO).unwrap();
    p.check(&lib()).unwrap();
    let m = p.mapped(&lib()).unwrap();
    let keys: Vec<(String, &str)> = m
        .iter()
        .map(|x| (x.path.to_string(), x.key.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("/3/0/0".to_string(), "manufacturer"),
            ("/3/0/9".to_string(), "battery"),
            ("/3303/0/5700".to_string(), "sensorValue"),
        ]
    );
    assert_eq!(p.content_format(), Some(ContentFormat::SenmlCbor));
    assert_eq!(
        p.attributes["/3303/0/5700"].to_json(),
        serde_json::json!({"pmin": 10, "pmax": 60, "st": 0.5})
    );
    // It survives the store's encoding.
    let b = serde_json::to_vec(&p).unwrap();
    assert_eq!(serde_json::from_slice::<Profile>(&b).unwrap(), p);
}

#[test]
fn profiles_naming_unknown_things_are_refused_clearly() {
    let cases = [
        ("name = \"x\"\nobjects = [77]\n", "object 77 has no model"),
        ("name = \"x\"\n[resources.\"/3/0/999\"]\ntelemetry = true\n", "no resource 999"),
        ("name = \"x\"\n[resources.\"/31337/0/1\"]\ntelemetry = true\n", "object 31337 has no model"),
        ("name = \"x\"\nobjects = [3]\n[resources.\"/3303/0/5700\"]\ntelemetry = true\n", "not among the profile's objects"),
        ("name = \"x\"\n[resources.\"/3/0/4\"]\ntelemetry = true\n", "not readable"),
        ("name = \"x\"\n[resources.\"/3/0\"]\ntelemetry = true\n", "rules go to a resource"),
        ("name = \"x\"\n[resources.\"/3/0/9\"]\nkey = \"k\"\n[resources.\"/3/0/10\"]\nkey = \"K\"\n", "names both"),
        ("name = \"x\"\n[attributes.\"/3/0/9\"]\npmin = 60\npmax = 10\n", "pmin 60 is above pmax 10"),
        ("name = \"x\"\n[attributes.\"/3/0/0\"]\ngt = 1.0\n", "numeric resource"),
        ("name = \"x\"\nformat = \"TEXT\"\n", "not a structured content format"),
        ("name = \"bad name\"\n", "a name is"),
        ("name = \"x\"\n[ota]\nfw_strategy = \"ftp\"\n", "ota.fw_strategy \"ftp\": give push, pull or auto"),
        ("name = \"x\"\n[ota]\nblock_size = 100\n", "ota.block_size 100"),
    ];
    for (text, want) in cases {
        let e = Profile::from_toml(text).unwrap().check(&lib()).unwrap_err();
        assert!(e.0.contains(want), "{text:?}: {e}");
    }
    let e = Profile::from_toml("name = \"x\"\ntelemetri = []\n").unwrap_err();
    assert!(e.0.contains("telemetri"), "{e}");
}

#[test]
fn bootstrap_writes_survive_the_store_and_toml_round_trips() {
    let p = Profile::from_toml(
        "name = \"clocks\"\n[bootstrap]\nlifetime = 60\n[bootstrap.writes]\n\"/3/0/14\" = \"+02:00\"\n\"/3/0/13\" = 1700000000\n",
    )
    .unwrap();
    p.check(&ModelLibrary::embedded()).unwrap();
    // The store keeps profiles as JSON.
    let bytes = serde_json::to_vec(&p).unwrap();
    let back: Profile = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, p);
    let w = &back.bootstrap.as_ref().unwrap().writes;
    assert_eq!(w["/3/0/14"].0, "\"+02:00\"");
    assert_eq!(w["/3/0/13"].0, "1700000000");
    // `profile show` prints TOML that imports again as the same profile.
    let text = toml::to_string(&back).unwrap();
    assert_eq!(Profile::from_toml(&text).unwrap(), p);
}
