//! A command's outcome, as the command language reports it: a result name
//! (a CoAP code name or a gateway outcome), a value or an error.

use crate::coap::Code;
use serde_json::{Map, Value as Json};

/// The outcome of a command, as JSON `{"result": .., "value": .., "error": ..}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// CoAP code name (`CONTENT`) or gateway outcome (`TIMEOUT`).
    pub result: &'static str,
    /// Structured value, for reads.
    pub value: Option<Json>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Answer {
    /// A successful answer.
    pub fn ok(result: &'static str, value: Option<Json>) -> Answer {
        Answer {
            result,
            value,
            error: None,
        }
    }

    /// A failed answer.
    pub fn fail(result: &'static str, error: impl Into<String>) -> Answer {
        Answer {
            result,
            value: None,
            error: Some(error.into()),
        }
    }

    /// A refused command.
    pub fn bad_request(error: impl Into<String>) -> Answer {
        Answer::fail("BAD_REQUEST", error)
    }

    /// True for 2.xx results.
    pub fn is_success(&self) -> bool {
        matches!(
            self.result,
            "CONTENT" | "CHANGED" | "CREATED" | "DELETED" | "VALID" | "CONTINUE"
        )
    }

    /// The JSON form.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("result".into(), Json::from(self.result));
        if let Some(v) = &self.value {
            m.insert("value".into(), v.clone());
        }
        if let Some(e) = &self.error {
            m.insert("error".into(), Json::from(e.as_str()));
        }
        Json::Object(m)
    }
}

/// The result name of a CoAP response code.
pub fn result_name(c: Code) -> &'static str {
    match (c.class(), c.detail()) {
        (2, 1) => "CREATED",
        (2, 2) => "DELETED",
        (2, 3) => "VALID",
        (2, 4) => "CHANGED",
        (2, 5) => "CONTENT",
        (2, 31) => "CONTINUE",
        (4, 0) => "BAD_REQUEST",
        (4, 1) => "UNAUTHORIZED",
        (4, 2) => "BAD_OPTION",
        (4, 3) => "FORBIDDEN",
        (4, 4) => "NOT_FOUND",
        (4, 5) => "METHOD_NOT_ALLOWED",
        (4, 6) => "NOT_ACCEPTABLE",
        (4, 8) => "REQUEST_ENTITY_INCOMPLETE",
        (4, 9) => "CONFLICT",
        (4, 12) => "PRECONDITION_FAILED",
        (4, 13) => "REQUEST_ENTITY_TOO_LARGE",
        (4, 15) => "UNSUPPORTED_CONTENT_FORMAT",
        (5, 0) => "INTERNAL_SERVER_ERROR",
        (5, 1) => "NOT_IMPLEMENTED",
        (5, 2) => "BAD_GATEWAY",
        (5, 3) => "SERVICE_UNAVAILABLE",
        (5, 4) => "GATEWAY_TIMEOUT",
        (5, 5) => "PROXYING_NOT_SUPPORTED",
        (4, _) => "BAD_REQUEST",
        _ => "INTERNAL_SERVER_ERROR",
    }
}
