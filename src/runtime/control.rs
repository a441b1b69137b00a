//! The control-socket shell: accepts connections, hands each request line
//! to the one command path, and carries answers and watched reports back.

use super::error::RunError;
use crate::config::ControlSettings;
use crate::control::socket::{self, CtlRequest};
use crate::control::{execute, Backend, Outcome, Request};
use crate::server::command::Answer;
use crate::server::Report;
use serde_json::Value as Json;
use smol::channel::{Receiver, Sender};
use smol::net::unix::UnixListener;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// Requests from all connections waiting for the gateway loop.
const QUEUE: usize = 1024;

/// A control client streaming decoded reports.
struct Watcher {
    /// The watch request's id, copied into every line.
    id: Json,
    /// Only this device's reports, if set.
    endpoint: Option<String>,
    tx: Sender<socket::Reply>,
    dropped: u64,
}

/// The control socket and the requests it has in flight.
pub struct Shell {
    path: PathBuf,
    listener: Option<UnixListener>,
    max_connections: usize,
    max_in_flight: usize,
    tx: Sender<CtlRequest>,
    rx: Receiver<CtlRequest>,
    /// Commands sent to devices, by handle, waiting for their answer.
    pending: HashMap<u64, CtlRequest>,
    watchers: Vec<Watcher>,
}

impl Shell {
    /// The shell for `cfg`, not yet bound.
    pub fn new(cfg: &ControlSettings) -> Shell {
        let (tx, rx) = smol::channel::bounded(QUEUE);
        Shell {
            path: cfg.path.clone(),
            listener: None,
            max_connections: cfg.max_connections,
            max_in_flight: cfg.max_in_flight,
            tx,
            rx,
            pending: HashMap::new(),
            watchers: Vec::new(),
        }
    }

    /// Binds the socket; connections are taken once `serve` runs.
    pub fn bind(&mut self) -> Result<(), RunError> {
        let listener = socket::bind(&self.path)
            .map_err(|e| RunError::Io(format!("control socket {}", self.path.display()), e))?;
        log::info!("control socket {}", self.path.display());
        self.listener = Some(listener);
        Ok(())
    }

    /// Starts accepting connections.
    pub fn serve(&mut self) {
        if let Some(listener) = self.listener.take() {
            smol::spawn(socket::serve(
                listener,
                self.tx.clone(),
                self.max_connections,
                self.max_in_flight,
            ))
            .detach();
        }
    }

    /// Where other front ends (the web console) put their requests.
    pub fn sender(&self) -> Sender<CtlRequest> {
        self.tx.clone()
    }

    /// Where requests arrive.
    pub fn requests(&self) -> Receiver<CtlRequest> {
        self.rx.clone()
    }

    /// Watch streams open.
    pub fn watchers(&self) -> usize {
        self.watchers.len()
    }

    /// Parses and runs one request line.
    pub fn handle(&mut self, b: &mut impl Backend, now: Instant, r: CtlRequest) {
        let req = match Request::parse(&r.req) {
            Ok(req) => req,
            Err(a) => return r.answer(a.to_json()),
        };
        if matches!(req, Request::Watch(_)) && self.watchers.len() >= self.max_connections {
            // One connection may ask many times; the watchers stay bounded.
            let busy = Answer::fail("SERVICE_UNAVAILABLE", "too many watch streams open");
            return r.answer(busy.to_json());
        }
        match execute(b, now, req) {
            Outcome::Done(a) => r.answer(a.to_json()),
            Outcome::Started(h) => {
                self.pending.insert(h, r);
            }
            Outcome::Watch(endpoint) => {
                let ok = Answer::ok("CONTENT", Some(Json::from("watching"))).to_json();
                if r.notice(ok) {
                    self.watchers.push(Watcher {
                        id: r.req.get("id").cloned().unwrap_or(Json::Null),
                        endpoint,
                        tx: r.reply.clone(),
                        dropped: 0,
                    });
                }
            }
        }
    }

    /// Delivers a device's answer if one of this socket's requests waits for
    /// it. Gives back the answer when the handle is not ours, else the
    /// device and transport log line when the command is over.
    pub fn answer(
        &mut self,
        handle: u64,
        answer: Answer,
    ) -> Result<Option<(String, String)>, Answer> {
        if answer.result == "QUEUED" {
            if let Some(r) = self.pending.get(&handle) {
                if r.wants_wait() {
                    // The outcome follows on the same id when the device wakes.
                    r.notice(answer.to_json());
                    return Ok(None);
                }
            }
        }
        let Some(r) = self.pending.remove(&handle) else {
            return Err(answer);
        };
        let ep = r.req.get("endpoint").and_then(Json::as_str);
        let line = ep.map(|ep| {
            let method = r.req.get("method").and_then(Json::as_str).unwrap_or("");
            (ep.to_string(), format!("{method}: {}", outcome(&answer)))
        });
        r.answer(answer.to_json());
        Ok(line)
    }

    /// Writes a decoded report to every watch stream that wants it.
    pub fn watch(&mut self, report: &Report) {
        if self.watchers.is_empty() {
            return;
        }
        let mut body = report.to_json();
        for w in &mut self.watchers {
            if w.endpoint
                .as_deref()
                .is_some_and(|e| e != &*report.endpoint)
            {
                continue;
            }
            body["id"] = w.id.clone();
            if !socket::extra_line(&w.tx, body.to_string()) && !w.tx.is_closed() {
                w.dropped += 1;
                if w.dropped.is_power_of_two() {
                    log::warn!(
                        "watch client is behind: {} reports dropped so far",
                        w.dropped
                    );
                }
            }
        }
        self.watchers.retain(|w| !w.tx.is_closed());
    }
}

/// A command's outcome in one line: result, then value or error.
pub fn outcome(a: &Answer) -> String {
    match (&a.value, &a.error) {
        (_, Some(e)) => format!("{} ({e})", a.result),
        (Some(v), None) => format!("{} {v}", a.result),
        (None, None) => a.result.to_string(),
    }
}
