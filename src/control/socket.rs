//! The local control socket: JSON lines over a Unix stream socket.
//!
//! A request is one line `{"id": 7, "op": "rpc", "endpoint": "ep",
//! "method": "Read", "params": {...}}` (or `"op": "devices"`, or
//! `"op": "device"` with an endpoint); the answer is one line with the same
//! `id` and the fields of the answer (`result`, `value`, `error`). Many
//! requests may be in flight on one connection; answers come in the order
//! they complete. A command queued for a sleeping device answers QUEUED;
//! with `"wait": true` a second line with the same `id` brings its outcome.
//! `"op": "watch"` (optionally with an endpoint) streams decoded reports as
//! lines with the watch's `id`; `"op": "stats"` gives the gateway's counters.

use crate::server::command::Answer;
use serde_json::{json, Map, Value as Json};
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::lock::{Semaphore, SemaphoreGuardArc};
use smol::net::unix::{UnixListener, UnixStream};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Lines beyond answers (notices, watched reports) a connection buffers;
/// a client that reads slower loses watched reports, never answers.
pub const EXTRA_LINES: usize = 4096;

/// Longest request line accepted: a `device import` of tens of thousands
/// of devices is one line. Bounded, with the connections, by
/// `control.max_connections`.
const MAX_LINE: usize = 8 << 20;

/// A request from a control client, with the way back.
pub struct CtlRequest {
    /// The parsed request line.
    pub req: Json,
    /// Where the answer line goes.
    pub reply: Sender<Reply>,
    /// Held until the answer is written: bounds a connection's requests in flight.
    pub permit: SemaphoreGuardArc,
}

/// An answer line on its way to a client.
pub struct Reply {
    /// The line, without the newline.
    pub line: String,
    /// Released once written; none for the extra lines of `notice` and `watch`.
    pub permit: Option<SemaphoreGuardArc>,
}

impl CtlRequest {
    /// Sends the answer for this request; a vanished client is ignored.
    pub fn answer(self, answer: Json) {
        let line = with_id(&self.req, answer);
        let _ = self.reply.try_send(Reply {
            line,
            permit: Some(self.permit),
        });
    }

    /// Sends a line for this request ahead of its answer (QUEUED, or the
    /// start of a watch); false when the client is gone or not reading.
    pub fn notice(&self, line: Json) -> bool {
        extra_line(&self.reply, with_id(&self.req, line))
    }

    /// Did the client ask to wait for the outcome of a queued command?
    pub fn wants_wait(&self) -> bool {
        self.req.get("wait").and_then(Json::as_bool) == Some(true)
    }
}

/// Queues a line that holds no permit, within `EXTRA_LINES`; false when
/// the client is gone or too far behind.
pub fn extra_line(to: &Sender<Reply>, line: String) -> bool {
    to.len() < EXTRA_LINES && to.try_send(Reply { line, permit: None }).is_ok()
}

/// The answer JSON with the request's `id` copied in.
pub fn with_id(req: &Json, answer: Json) -> String {
    let mut m = match answer {
        Json::Object(m) => m,
        other => Map::from_iter([("value".to_string(), other)]),
    };
    if let Some(id) = req.get("id") {
        m.insert("id".into(), id.clone());
    }
    Json::Object(m).to_string()
}

/// Binds the control socket with mode 0660. A socket file left by a
/// gateway that died is replaced; a live one is an error.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another gateway answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Accepts connections and forwards their requests to `to_gateway`.
pub async fn serve(
    listener: UnixListener,
    to_gateway: Sender<CtlRequest>,
    max_connections: usize,
    max_in_flight: usize,
) {
    let connections = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("control socket accept: {e}");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = connections.try_acquire_arc() else {
            log::warn!("control socket: {max_connections} connections open; refusing another");
            let mut s = stream;
            let line =
                json!({"result": "SERVICE_UNAVAILABLE", "error": "too many control connections"});
            let _ = s.write_all(format!("{line}\n").as_bytes()).await;
            continue;
        };
        let tx = to_gateway.clone();
        smol::spawn(async move {
            connection(stream, tx, max_in_flight).await;
            drop(slot);
        })
        .detach();
    }
}

async fn connection(stream: UnixStream, to_gateway: Sender<CtlRequest>, max_in_flight: usize) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight.max(1)));
    // Room for every permit plus the extra lines, so an answer's try_send
    // never fails while the client is alive.
    let (reply_tx, reply_rx): (Sender<Reply>, Receiver<Reply>) =
        smol::channel::bounded(max_in_flight.max(1) + EXTRA_LINES);
    let mut writer = stream.clone();
    let write_task = smol::spawn(async move {
        let mut buf = Vec::with_capacity(4096);
        while let Ok(first) = reply_rx.recv().await {
            buf.clear();
            let mut permits = vec![first.permit];
            buf.extend_from_slice(first.line.as_bytes());
            buf.push(b'\n');
            // Group answers that are already waiting into one write.
            while let Ok(r) = reply_rx.try_recv() {
                buf.extend_from_slice(r.line.as_bytes());
                buf.push(b'\n');
                permits.push(r.permit);
                if buf.len() > 64 * 1024 {
                    break;
                }
            }
            if writer.write_all(&buf).await.is_err() {
                break;
            }
            drop(permits);
        }
    });
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let permit = in_flight.acquire_arc().await;
        match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await
        {
            Ok(0) => break,
            Ok(n) if n > MAX_LINE => {
                let _ = reply_tx.try_send(Reply {
                    line: json!({"result": "BAD_REQUEST", "error": "request line too long"})
                        .to_string(),
                    permit: Some(permit),
                });
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
        if line.trim().is_empty() {
            continue;
        }
        let req: Json = match serde_json::from_str(line.trim()) {
            Ok(j @ Json::Object(_)) => j,
            Ok(_) | Err(_) => {
                let _ = reply_tx.try_send(Reply {
                    line: Answer::bad_request("a request is one JSON object per line")
                        .to_json()
                        .to_string(),
                    permit: Some(permit),
                });
                continue;
            }
        };
        let r = CtlRequest {
            req,
            reply: reply_tx.clone(),
            permit,
        };
        if to_gateway.send(r).await.is_err() {
            break;
        }
    }
    drop(reply_tx);
    // Let answers still on their way reach the client before closing.
    write_task.await;
}

/// A blocking client for the CLI and tests.
pub struct Client {
    stream: std::io::BufReader<std::os::unix::net::UnixStream>,
    next_id: u64,
}

impl Client {
    /// Connects; `timeout` bounds each answer.
    pub fn connect(path: &Path, timeout: std::time::Duration) -> io::Result<Client> {
        let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot reach the gateway's control socket {}: {e}",
                    path.display()
                ),
            )
        })?;
        s.set_read_timeout(Some(timeout))?;
        Ok(Client {
            stream: std::io::BufReader::new(s),
            next_id: 0,
        })
    }

    /// Sends a request and waits for its answer.
    pub fn call(&mut self, mut req: Map<String, Json>) -> io::Result<Json> {
        use std::io::{BufRead, Write};
        self.next_id += 1;
        req.insert("id".into(), Json::from(self.next_id));
        let line = format!("{}\n", Json::Object(req));
        self.stream.get_mut().write_all(line.as_bytes())?;
        loop {
            let mut answer = String::new();
            if self.stream.read_line(&mut answer)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the gateway closed the control connection",
                ));
            }
            let j: Json = serde_json::from_str(&answer)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if j.get("id") == Some(&Json::from(self.next_id)) {
                return Ok(j);
            }
        }
    }

    /// The next line for the latest request (the outcome after QUEUED, or
    /// a watched report).
    pub fn next_line(&mut self) -> io::Result<Json> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the gateway closed the control connection",
            ));
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Changes how long `call` and `next` wait for a line (none: forever).
    pub fn set_timeout(&mut self, t: Option<std::time::Duration>) -> io::Result<()> {
        self.stream.get_ref().set_read_timeout(t)
    }
}
