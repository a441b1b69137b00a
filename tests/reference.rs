//! Every RPC example of the feature reference (ThingsBoard's LwM2M device
//! API page in ../shared/reference/) runs, in the page's order, against the
//! simulator through the gateway, and each answers with the page's result.
//! The simulator announces object 1 as version 1.2 and object 19 as 1.1,
//! and object 3 without a version (1.0), as the page's device does.
//! Skipped, and said so, where ../shared/ is absent (a user's fresh clone).

mod common;

use common::{config, rpc, Gateway, Sim, TempDir};
use serde_json::{json, Value as Json};
use std::path::Path;

/// The page's examples: (request line, result it answers with).
fn examples(page: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = page.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() != "# Request:" {
            continue;
        }
        let request = lines[i + 1].trim().to_string();
        let result = lines[i + 2..]
            .iter()
            .skip_while(|l| l.trim() != "# Response:")
            .nth(1)
            .and_then(|r| r.split("\"result\":\"").nth(1))
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string();
        out.push((request, result));
    }
    out
}

#[test]
fn every_rpc_example_of_the_reference_answers_against_the_simulator() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/thingsboard-lwm2m-device-api.txt");
    let Ok(page) = std::fs::read_to_string(&page) else {
        println!("SKIPPED: {} is absent (a fresh clone)", page.display());
        return;
    };
    let examples = examples(&page);
    assert!(examples.len() >= 25, "{examples:?}");
    let dir = TempDir::new("reference");
    let gw = Gateway::start(&dir.0, &config("127.0.0.1", ""));
    let _sim = Sim::start_with(
        gw.addr,
        1,
        "ref-",
        "senml-cbor",
        // The firmware update the page executes must not reboot the
        // device in the middle of the walk.
        &[
            "--object-version",
            "1=1.2,19=1.1",
            "--ota-update-ms",
            "600000",
        ],
    );
    let mut c = gw.control();
    let mut call = |request: &str| -> Json {
        let (method, params) = request.split_once(' ').unwrap_or((request, "{}"));
        let params: Json =
            serde_json::from_str(params.trim()).unwrap_or_else(|e| panic!("{request}: {e}"));
        rpc(&mut c, "ref-0", method, params)
    };
    // What the page's device had before its examples: a firmware package
    // downloaded (Execute /5/0/2 updates it), and the observations a
    // profile sets up (the page cancels /5/0/7 and /5/0/5).
    assert_eq!(
        call(r#"WriteReplace {"id":"/5/0/0","value":"53494d504b470a"}"#)["result"],
        "CHANGED"
    );
    for id in ["/5/0/7", "/5/0/5"] {
        assert_eq!(
            call(&format!(r#"Observe {{"id":"{id}"}}"#))["result"],
            "CONTENT"
        );
    }
    for (request, want) in &examples {
        let a = call(request);
        // The page writes DELETE where CoAP's 2.02 is DELETED.
        let want = if want == "DELETE" { "DELETED" } else { want };
        assert_eq!(a["result"], *want, "{request}: {a}");
        println!("{request} -> {}", a["result"]);
        let method = request.split(' ').next().unwrap();
        match method {
            "Read" | "Observe" => assert!(!a["value"].is_null(), "{request}: {a}"),
            "ObserveCancel" => assert_eq!(a["value"], 1, "{request}: {a}"),
            "ObserveReadAll" | "DiscoverAll" => assert!(a["value"].is_array(), "{a}"),
            _ => {}
        }
    }
    // The version the device registered is the one a versioned id must
    // name: object 3 came without `ver`, so as 1.0.
    let a = call(r#"Read {"id":"/3_1.2/0/9"}"#);
    assert_eq!(a["result"], "BAD_REQUEST", "{a}");
    let why = a["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("version 1.2") && why.contains("registered version 1.0"),
        "{a}"
    );
    let a = call(r#"Read {"id":"/19_1.1/0/0"}"#);
    assert_eq!(a["result"], "CONTENT", "{a}");
    assert_eq!(
        a["value"],
        json!({"0": "00ad456797", "25": "25ad456700"}),
        "the page's last WriteReplace: {a}"
    );
}
