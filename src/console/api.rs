//! The console's routes: which request line and body become which
//! command-path request, and which HTTP status an answer earns.

use serde_json::{json, Value as Json};

/// What a request asks for, before login is looked at.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// An embedded page or script.
    Asset(&'static super::assets::Asset),
    /// The OpenAPI document.
    OpenApi,
    /// Log in with a password or token.
    Login(Json),
    /// End this session.
    Logout,
    /// Whether this browser is logged in, and its CSRF token.
    Session,
    /// A request line for the command path; `writes` when it changes
    /// something (CSRF checked).
    Command {
        /// The control-socket request object.
        req: Json,
        /// Whether it changes state.
        writes: bool,
    },
    /// Server-sent events: decoded reports of one device or all.
    Events(Option<String>),
}

/// A refusal before any command runs: HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Why, for the JSON body.
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// Decodes `%XX` escapes of one path segment or query value.
pub fn percent_decode(s: &str) -> Result<String, Refusal> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| refuse(400, "bad percent escape in the path"))?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| refuse(400, "path is not UTF-8"))
}

fn query_value(query: Option<&str>, key: &str) -> Result<Option<String>, Refusal> {
    for pair in query.unwrap_or("").split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            if k == key {
                return percent_decode(&v.replace('+', " ")).map(Some);
            }
        }
    }
    Ok(None)
}

fn body_json(body: &[u8]) -> Result<Json, Refusal> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let v: Json =
        serde_json::from_slice(body).map_err(|e| refuse(400, format!("body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(refuse(400, "body must be a JSON object"));
    }
    Ok(v)
}

/// The route for a request; `body` is already bounded by the caller.
pub fn route(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> Result<Route, Refusal> {
    if !path.starts_with("/api/") {
        if method != "GET" && method != "HEAD" {
            return Err(refuse(405, "pages are only read"));
        }
        return super::assets::find(path)
            .map(Route::Asset)
            .ok_or_else(|| refuse(404, "no such page"));
    }
    let segs: Vec<&str> = path["/api/".len()..].split('/').collect();
    let cmd = |req: Json, writes: bool| Ok(Route::Command { req, writes });
    let ep = |s: &str| percent_decode(s);
    match (method, segs.as_slice()) {
        ("GET", ["openapi.json"]) => Ok(Route::OpenApi),
        ("POST", ["login"]) => Ok(Route::Login(body_json(body)?)),
        ("POST", ["logout"]) => Ok(Route::Logout),
        ("GET", ["session"]) => Ok(Route::Session),
        ("GET", ["devices"]) => cmd(json!({"op": "devices"}), false),
        ("GET", ["devices", e]) => cmd(json!({"op": "device", "endpoint": ep(e)?}), false),
        ("DELETE", ["devices", e]) => cmd(json!({"op": "device-rm", "endpoint": ep(e)?}), true),
        ("POST", ["devices", e, "rpc"]) => {
            let b = body_json(body)?;
            let method = b
                .get("method")
                .and_then(Json::as_str)
                .ok_or_else(|| refuse(400, "\"method\" is missing"))?;
            let params = b.get("params").cloned().unwrap_or_else(|| json!({}));
            if !params.is_object() {
                return Err(refuse(400, "\"params\" must be an object"));
            }
            cmd(
                json!({"op": "rpc", "endpoint": ep(e)?, "method": method, "params": params}),
                true,
            )
        }
        ("GET", ["stats"]) => cmd(json!({"op": "stats"}), false),
        ("GET", ["ota", "images"]) => cmd(json!({"op": "ota-list"}), false),
        ("GET", ["ota", "updates"]) => cmd(json!({"op": "ota-status"}), false),
        ("POST", ["ota", "updates"]) => {
            let mut b = body_json(body)?;
            b["op"] = "ota-start".into();
            cmd(b, true)
        }
        ("DELETE", ["ota", "updates", e]) => {
            cmd(json!({"op": "ota-cancel", "endpoint": ep(e)?}), true)
        }
        ("GET", ["events"]) => Ok(Route::Events(query_value(query, "endpoint")?)),
        (_, ["openapi.json" | "login" | "logout" | "session" | "devices" | "stats" | "events"])
        | (_, ["devices", _] | ["devices", _, "rpc"] | ["ota", _] | ["ota", "updates", _]) => {
            Err(refuse(405, format!("{method} is not allowed here")))
        }
        _ => Err(refuse(404, "no such API route; see /api/openapi.json")),
    }
}

/// The HTTP status for a command-path answer: 200 for a result, 202 for
/// a command queued for a sleeping device, else by the failure's name.
pub fn status_of(answer: &Json) -> u16 {
    let result = answer.get("result").and_then(Json::as_str).unwrap_or("");
    if answer.get("error").is_none_or(Json::is_null) {
        return if result == "QUEUED" { 202 } else { 200 };
    }
    match result {
        "BAD_REQUEST" | "NOT_ACCEPTABLE" | "UNSUPPORTED_CONTENT_FORMAT" => 400,
        "UNAUTHORIZED" | "FORBIDDEN" => 403,
        "NOT_FOUND" | "DEVICE_NOT_REGISTERED" => 404,
        "METHOD_NOT_ALLOWED" => 405,
        "CONFLICT" | "PRECONDITION_FAILED" => 409,
        "REQUEST_ENTITY_TOO_LARGE" => 413,
        "SERVICE_UNAVAILABLE" | "DEVICE_ASLEEP" => 503,
        "TIMEOUT" | "EXPIRED" => 504,
        "INTERNAL_SERVER_ERROR" => 500,
        // The device answered with an error, or could not be reached.
        _ => 502,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_routes_become_control_requests() {
        let r = route("GET", "/api/devices/dev%2F1", None, b"").unwrap();
        assert_eq!(
            r,
            Route::Command {
                req: json!({"op": "device", "endpoint": "dev/1"}),
                writes: false
            }
        );
        let r = route(
            "POST",
            "/api/devices/d1/rpc",
            None,
            br#"{"method":"Read","params":{"id":"/3/0/9"}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Route::Command {
                req: json!({"op":"rpc","endpoint":"d1","method":"Read","params":{"id":"/3/0/9"}}),
                writes: true
            }
        );
        assert_eq!(
            route("GET", "/api/events", Some("endpoint=a+b%21"), b"").unwrap(),
            Route::Events(Some("a b!".into()))
        );
        assert_eq!(
            route("DELETE", "/api/ota/updates/d1", None, b"").unwrap(),
            Route::Command {
                req: json!({"op": "ota-cancel", "endpoint": "d1"}),
                writes: true
            }
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        let status = |m, p, b: &[u8]| route(m, p, None, b).unwrap_err().status;
        assert_eq!(status("POST", "/api/devices/d1/rpc", b"{"), 400);
        assert_eq!(status("POST", "/api/devices/d1/rpc", b"{}"), 400);
        assert_eq!(status("POST", "/api/devices/d1/rpc", b"[1]"), 400);
        assert_eq!(
            status(
                "POST",
                "/api/devices/d1/rpc",
                br#"{"method":"Read","params":3}"#
            ),
            400
        );
        assert_eq!(status("GET", "/api/devices/%zz", b""), 400);
        assert_eq!(status("PUT", "/api/devices", b""), 405);
        assert_eq!(status("GET", "/api/nothing", b""), 404);
        assert_eq!(status("POST", "/index.html", b""), 405);
        assert_eq!(status("GET", "/nothing.html", b""), 404);
    }

    #[test]
    fn answers_map_to_http_statuses() {
        assert_eq!(status_of(&json!({"result":"CONTENT","value":1})), 200);
        assert_eq!(status_of(&json!({"result":"QUEUED"})), 202);
        assert_eq!(status_of(&json!({"result":"BAD_REQUEST","error":"x"})), 400);
        assert_eq!(
            status_of(&json!({"result":"DEVICE_NOT_REGISTERED","error":"x"})),
            404
        );
        assert_eq!(status_of(&json!({"result":"TIMEOUT","error":"x"})), 504);
        assert_eq!(
            status_of(&json!({"result":"METHOD_NOT_ALLOWED","error":"x"})),
            405
        );
        assert_eq!(
            status_of(&json!({"result":"NOT_IMPLEMENTED","error":"x"})),
            502
        );
    }
}
