//! The web console's HTTP server: a thread of its own with a small tokio
//! runtime and hyper's HTTP/1.1 server. Every API call becomes a request
//! on the control socket's channel, so it runs through the one command
//! path in the gateway loop.

use super::error::RunError;
use crate::config::HttpSettings;
use crate::console::api::{self, Refusal, Route};
use crate::console::{self, Gate, Presented, COOKIE};
use crate::control::socket::{CtlRequest, Reply};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value as Json};
use smol::channel::Sender;
use smol::lock::Semaphore;
use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body taken (a login or a command).
const MAX_BODY: usize = 64 * 1024;
/// Commands of all console connections in flight in the loop at once.
const MAX_IN_FLIGHT: usize = 256;
/// Reports an event stream may have waiting before it loses some.
const EVENT_BACKLOG: usize = 256;
/// A comment line this often keeps an idle event stream open.
const EVENT_KEEPALIVE: Duration = Duration::from_secs(15);
/// Longest wait for a command's answer: past the longest RPC timeout.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The console, serving on its own thread until the process ends.
pub struct Console {
    local_addr: SocketAddr,
}

impl Console {
    /// Binds `cfg.listen` and starts serving; API calls go to `requests`.
    pub fn start(cfg: HttpSettings, requests: Sender<CtlRequest>) -> Result<Console, RunError> {
        let listener = std::net::TcpListener::bind(cfg.listen)
            .map_err(|e| RunError::Io(format!("web console on {}", cfg.listen), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| RunError::Io("web console address".into(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| RunError::Io("web console socket".into(), e))?;
        let tls = match &cfg.tls {
            Some((files, dir)) => Some(tls_acceptor(files, dir)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        if !cfg.credentials.any() {
            log::warn!(
                "web console on {scheme}://{local_addr}/ without a password: anyone on this \
                 machine can use it (set one with `lwm2m-gw http passwd`)"
            );
        } else {
            log::info!("web console on {scheme}://{local_addr}/");
        }
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || serve(listener, cfg, tls, requests))
            .map_err(|e| RunError::Io("web console thread".into(), e))?;
        Ok(Console { local_addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// HTTPS with the gateway's own key and certificate chain, as DTLS
/// serves them (made on first start when none are configured).
fn tls_acceptor(
    files: &crate::dtls::identity::Files,
    dir: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, RunError> {
    use rustls::pki_types::{
        CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    };
    let id = crate::dtls::identity::load(files, dir)
        .map_err(|e| RunError::Config(format!("web console HTTPS: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = id
        .chain_der
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    // Mbed TLS writes an EC key as SEC1 and an RSA key as PKCS#1; a key
    // rustls cannot sign with fails all three.
    let keys: [PrivateKeyDer<'static>; 3] = [
        PrivateSec1KeyDer::from(id.private_der.clone()).into(),
        PrivatePkcs1KeyDer::from(id.private_der.clone()).into(),
        PrivatePkcs8KeyDer::from(id.private_der.clone()).into(),
    ];
    let mut last = String::new();
    for key in keys {
        match rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key)
        {
            Ok(mut c) => {
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                return Ok(tokio_rustls::TlsAcceptor::from(Arc::new(c)));
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(RunError::Config(format!(
        "web console HTTPS: the gateway's key and certificate do not make a TLS server: {last}"
    )))
}

/// What every connection shares.
struct Shared {
    /// Cookies carry Secure: the console is served over HTTPS.
    secure: bool,
    gate: RefCell<Gate>,
    /// Refused requests are logged within this bound.
    refused_log: RefCell<crate::logging::LogLimit>,
    requests: Sender<CtlRequest>,
    in_flight: Arc<Semaphore>,
}

fn serve(
    listener: std::net::TcpListener,
    cfg: HttpSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    requests: Sender<CtlRequest>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("web console: cannot start its runtime: {e}; console off");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                log::error!("web console: {e}; console off");
                return;
            }
        };
        let shared = Rc::new(Shared {
            secure: tls.is_some(),
            gate: RefCell::new(Gate::new(
                cfg.credentials.clone(),
                cfg.max_sessions,
                cfg.session_idle,
                Instant::now(),
            )),
            refused_log: RefCell::new(crate::logging::LogLimit::new(50, Duration::from_secs(10))),
            requests,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        });
        let connections = Arc::new(Semaphore::new(cfg.max_connections));
        loop {
            // At the bound, new connections wait in the kernel's backlog.
            let permit = connections.acquire_arc().await;
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("web console accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Events are small writes: without this, Nagle's algorithm
            // holds one back for the client's delayed ACK (40 ms measured
            // at p99 in benches/console.rs).
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let tls = tls.clone();
            tokio::task::spawn_local(async move {
                match tls {
                    None => connection(shared, peer, stream).await,
                    Some(acceptor) => {
                        let shake =
                            tokio::time::timeout(Duration::from_secs(20), acceptor.accept(stream));
                        match shake.await {
                            Ok(Ok(s)) => connection(shared, peer, s).await,
                            Ok(Err(e)) => log::debug!("web console TLS from {peer}: {e}"),
                            Err(_) => {
                                log::debug!("web console TLS from {peer}: handshake timed out")
                            }
                        }
                    }
                }
                drop(permit);
            });
        }
    });
}

/// Serves one connection's requests until it closes.
async fn connection<S>(shared: Rc<Shared>, peer: SocketAddr, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, peer, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(20))
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = conn.await {
        log::debug!("web console connection from {peer}: {e}");
    }
}

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    r
}

fn json_response(status: u16, body: &Json) -> Response<Body> {
    full(status, "application/json", body.to_string())
}

fn refusal(r: Refusal) -> Response<Body> {
    let result = match r.status {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        413 => "REQUEST_ENTITY_TOO_LARGE",
        421 => "MISDIRECTED_REQUEST",
        429 => "TOO_MANY_REQUESTS",
        _ => "SERVICE_UNAVAILABLE",
    };
    json_response(r.status, &json!({"result": result, "error": r.message}))
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn cookie_value(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    if !crate::clock::random_bytes(&mut b) {
        // No kernel randomness: no session may be guessable, so none opens.
        return String::new();
    }
    crate::lwm2m::node::hex(&b)
}

fn session_cookie(value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let age = max_age.map_or(String::new(), |a| format!("; Max-Age={a}"));
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"
    ))
    .unwrap_or(HeaderValue::from_static("lwgw_session=; Path=/"))
}

/// Headers that keep the page from being framed, sniffed or fed remote code.
fn harden(r: &mut Response<Body>) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

async fn handle(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let mut r = respond(shared, peer, req).await;
    harden(&mut r);
    r
}

async fn respond(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let now = Instant::now();
    let creds = shared.gate.borrow().has_credentials();
    if !creds {
        let host = header_str(&req, header::HOST).unwrap_or("");
        if !console::loopback_host(host) {
            if let Some(held) = shared.refused_log.borrow_mut().check(now) {
                log::warn!(
                    "web console: request from {peer} for host {host:?} refused (no credentials, \
                     loopback names only){}",
                    crate::logging::held_note(held)
                );
            }
            return refusal(Refusal {
                status: 421,
                message: "without console credentials only localhost names are served".into(),
            });
        }
    }
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let cookie = cookie_value(&req).map(str::to_string);
    let bearer = header_str(&req, header::AUTHORIZATION)
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let csrf = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let status = if e.to_string().contains("length limit") {
                413
            } else {
                400
            };
            return refusal(Refusal {
                status,
                message: format!("request body: {e}"),
            });
        }
    };
    let presented = Presented {
        cookie: cookie.as_deref(),
        bearer: bearer.as_deref(),
        csrf: csrf.as_deref(),
    };
    let route = match api::route(&method, &path, query.as_deref(), &body) {
        Ok(r) => r,
        Err(e) => return refusal(e),
    };
    match route {
        Route::Asset(a) => full(200, a.content_type, a.body),
        Route::OpenApi => full(200, "application/json", crate::console::assets::OPENAPI),
        Route::Login(b) => {
            let (c, x) = (random_hex(), random_hex());
            if c.is_empty() || x.is_empty() {
                return refusal(Refusal {
                    status: 503,
                    message: "no randomness for a session".into(),
                });
            }
            let attempt = match shared.gate.borrow_mut().login_attempt(now, peer.ip(), &b) {
                Ok(a) => a,
                Err(e) => return refusal(e),
            };
            // The hashing must not stall the other connections (event
            // streams among them).
            let check = attempt.clone();
            let ok = tokio::task::spawn_blocking(move || check.verify())
                .await
                .unwrap_or(false);
            let res =
                shared
                    .gate
                    .borrow_mut()
                    .login_outcome(Instant::now(), &attempt, ok, c.clone(), x);
            match res {
                Ok(csrf) => {
                    let mut r = json_response(200, &json!({"csrf": csrf}));
                    r.headers_mut()
                        .insert(header::SET_COOKIE, session_cookie(&c, None, shared.secure));
                    r
                }
                Err(e) => refusal(e),
            }
        }
        Route::Logout => {
            if let Err(e) = shared.gate.borrow_mut().admit(now, presented, true) {
                return refusal(e);
            }
            shared.gate.borrow_mut().logout(presented);
            let mut r = full(204, "application/json", Bytes::new());
            r.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie("", Some(0), shared.secure),
            );
            r
        }
        Route::Session => {
            let mut gate = shared.gate.borrow_mut();
            if let Some(csrf) = gate.session(now, presented) {
                return json_response(200, &json!({"csrf": csrf}));
            }
            let c = random_hex();
            match gate.open_without_credentials(now, c.clone(), random_hex()) {
                Some(csrf) if !c.is_empty() && !csrf.is_empty() => {
                    let mut r = json_response(200, &json!({"csrf": csrf}));
                    r.headers_mut()
                        .insert(header::SET_COOKIE, session_cookie(&c, None, shared.secure));
                    r
                }
                _ => refusal(Refusal {
                    status: 401,
                    message: "log in first".into(),
                }),
            }
        }
        Route::Command { req, writes } => {
            if let Err(e) = shared.gate.borrow_mut().admit(now, presented, writes) {
                return refusal(e);
            }
            command(shared, req).await
        }
        Route::Events(endpoint) => {
            if let Err(e) = shared.gate.borrow_mut().admit(now, presented, false) {
                return refusal(e);
            }
            events(shared, endpoint).await
        }
    }
}

/// The HTTP status of an answer line. Only `result` and `error` are kept:
/// a device list of 10 000 is megabytes, and a second tree of it here
/// would cost as much memory again.
fn status_of_line(line: &str) -> u16 {
    #[derive(serde::Deserialize)]
    struct Head {
        result: Option<String>,
        error: Option<String>,
    }
    match serde_json::from_str::<Head>(line) {
        Ok(h) => api::status_of(&json!({"result": h.result, "error": h.error})),
        Err(_) => 500,
    }
}

/// Runs one request through the command path and answers with its outcome.
async fn command(shared: &Shared, req: Json) -> Response<Body> {
    let (tx, rx) = smol::channel::bounded::<Reply>(4);
    let permit = shared.in_flight.acquire_arc().await;
    let unavailable = |m: &str| {
        refusal(Refusal {
            status: 503,
            message: m.into(),
        })
    };
    if shared
        .requests
        .send(CtlRequest {
            req,
            reply: tx,
            permit,
        })
        .await
        .is_err()
    {
        return unavailable("the gateway is stopping");
    }
    match tokio::time::timeout(ANSWER_WAIT, rx.recv()).await {
        Ok(Ok(reply)) => full(status_of_line(&reply.line), "application/json", reply.line),
        Ok(Err(_)) => unavailable("the gateway dropped the request"),
        Err(_) => refusal(Refusal {
            status: 504,
            message: "no answer in time".into(),
        }),
    }
}

/// A `watch` on the command path, carried as server-sent events.
async fn events(shared: &Shared, endpoint: Option<String>) -> Response<Body> {
    let (tx, rx) = smol::channel::bounded::<Reply>(EVENT_BACKLOG);
    let permit = shared.in_flight.acquire_arc().await;
    let mut req = json!({"op": "watch"});
    if let Some(ep) = endpoint {
        req["endpoint"] = ep.into();
    }
    if shared
        .requests
        .send(CtlRequest {
            req,
            reply: tx,
            permit,
        })
        .await
        .is_err()
    {
        return refusal(Refusal {
            status: 503,
            message: "the gateway is stopping".into(),
        });
    }
    // The first line says whether the watch started.
    let first = match rx.recv().await {
        Ok(r) => r.line,
        Err(_) => {
            return refusal(Refusal {
                status: 503,
                message: "the gateway dropped the request".into(),
            })
        }
    };
    let status = status_of_line(&first);
    if status >= 300 {
        return full(status, "application/json", first);
    }
    let stream = smol::stream::unfold(rx, |rx| async move {
        let frame = match tokio::time::timeout(EVENT_KEEPALIVE, rx.recv()).await {
            Ok(Ok(r)) => format!("data: {}\n\n", r.line),
            Ok(Err(_)) => return None,
            Err(_) => ": keep-alive\n\n".to_string(),
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(frame))), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}
