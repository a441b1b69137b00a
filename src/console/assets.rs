//! The console's pages, script and style, built into the binary: the page
//! loads nothing from the network.

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    /// Its path under `/`.
    pub path: &'static str,
    /// Content-Type.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("web/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("web/style.css"),
    },
];

/// The OpenAPI 3 document of `/api/`.
pub const OPENAPI: &str = include_str!("web/openapi.json");

/// The asset at `path`; `/index.html` is `/`.
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_embedded_files_and_no_remote_ones() {
        let page = find("/").unwrap().body;
        for a in &ASSETS[1..] {
            assert!(page.contains(a.path), "{} not linked", a.path);
        }
        for a in &ASSETS {
            assert!(
                !a.body.contains("http://") && !a.body.contains("https://"),
                "{}",
                a.path
            );
        }
    }

    #[test]
    fn the_openapi_document_is_json_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/login",
            "/api/logout",
            "/api/session",
            "/api/devices",
            "/api/devices/{endpoint}",
            "/api/devices/{endpoint}/rpc",
            "/api/stats",
            "/api/ota/images",
            "/api/ota/updates",
            "/api/ota/updates/{endpoint}",
            "/api/events",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
    }
}
