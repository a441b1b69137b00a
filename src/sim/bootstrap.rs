//! The simulated device as a bootstrap client: Bootstrap-Request (or
//! Bootstrap-Pack first, for 1.2), the server's Delete, Discover and
//! Write of objects 0 and 1, Bootstrap-Finish, and the account it got.

use super::{refuse, Refusal, SimDevice};
use crate::coap::{self, opt, Code, IncomingId, Message, MsgType, RequestId, Token};
use crate::lwm2m::format::{self, ContentFormat};
use crate::lwm2m::node::{Instance, Node, Resource, Value};
use crate::lwm2m::{Path, Version};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Where a simulated bootstrap stands.
#[derive(Debug, Clone, PartialEq)]
pub enum BootstrapProgress {
    /// Asked, waiting for the server's sequence.
    Running,
    /// Bootstrap-Finish (or the pack) arrived: the account it carried.
    Done(ServerAccount),
    /// The server refused, or the account did not make sense.
    Failed(String),
}

/// The LwM2M server account a bootstrap handed the device.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerAccount {
    /// `coap://host:port` or `coaps://host:port`.
    pub uri: String,
    /// Security mode: 0 PSK, 3 NoSec.
    pub mode: i64,
    /// PSK identity.
    pub identity: Vec<u8>,
    /// PSK key.
    pub key: Vec<u8>,
    /// Registration lifetime.
    pub lifetime: u32,
    /// Binding.
    pub binding: String,
}

impl ServerAccount {
    /// The server's address from the URI, when it is an IP literal.
    pub fn addr(&self) -> Option<SocketAddr> {
        let rest = self.uri.split_once("://")?.1;
        rest.trim_end_matches('/').parse().ok()
    }
}

/// Bootstrap state of a device.
#[derive(Debug)]
pub(super) struct BsClient {
    server: SocketAddr,
    request: Option<RequestId>,
    /// Asked GET /bspack first; a 4.04 falls back to POST /bs.
    pack: bool,
    security: BTreeMap<u16, Instance>,
    servers: BTreeMap<u16, Instance>,
    pub(super) progress: BootstrapProgress,
}

impl SimDevice {
    /// Starts a bootstrap with the server at `server`: Bootstrap-Pack
    /// first when `pack` (LwM2M 1.2), else Bootstrap-Request.
    pub fn bootstrap(&mut self, now: Instant, server: SocketAddr, pack: bool) {
        let mut bs = BsClient {
            server,
            request: None,
            pack,
            // The bootstrap account itself stays at /0/0.
            security: BTreeMap::from([(
                0,
                Instance::from([(1, Resource::Single(Value::Boolean(true)))]),
            )]),
            servers: BTreeMap::new(),
            progress: BootstrapProgress::Running,
        };
        bs.request = self.send_bootstrap_request(now, server, pack);
        self.bs = Some(bs);
    }

    /// Where the bootstrap stands, if one was started.
    pub fn bootstrap_progress(&self) -> Option<&BootstrapProgress> {
        self.bs.as_ref().map(|b| &b.progress)
    }

    fn send_bootstrap_request(
        &mut self,
        now: Instant,
        server: SocketAddr,
        pack: bool,
    ) -> Option<RequestId> {
        let code = if pack { Code::GET } else { Code::POST };
        let mut m = Message::new(MsgType::Con, code, 0, Token::EMPTY);
        m.set_uri_path(if pack { "/bspack" } else { "/bs" });
        m.add_option(
            opt::URI_QUERY,
            format!("ep={}", self.cfg.endpoint).into_bytes(),
        );
        if pack {
            m.set_uint_option(opt::ACCEPT, ContentFormat::SenmlCbor.code() as u64);
        } else if self.cfg.lwm2m_version > Version::new(1, 0) {
            m.add_option(
                opt::URI_QUERY,
                format!("pct={}", self.cfg.format.code()).into_bytes(),
            );
        }
        self.engine.request(now, server, m).ok()
    }

    /// The answer to our Bootstrap-Request or -Pack; false when `id` is
    /// not ours.
    pub(super) fn bootstrap_response(
        &mut self,
        now: Instant,
        id: RequestId,
        msg: &Message,
    ) -> bool {
        let Some(bs) = &mut self.bs else {
            return false;
        };
        if bs.request != Some(id) {
            return false;
        }
        bs.request = None;
        if bs.pack {
            if msg.code == Code::CONTENT {
                let cf = msg
                    .content_format()
                    .and_then(ContentFormat::from_code)
                    .unwrap_or(ContentFormat::SenmlCbor);
                match format::decode_entries(cf, &msg.payload, &*self.models) {
                    Ok(entries) => {
                        for (p, v) in entries {
                            let (Some(i), Some(r)) = (p.instance, p.resource) else {
                                continue;
                            };
                            let table = match p.object {
                                0 => &mut bs.security,
                                1 => &mut bs.servers,
                                _ => continue,
                            };
                            table.entry(i).or_default().insert(r, Resource::Single(v));
                        }
                        bs.progress = account(bs);
                    }
                    Err(e) => bs.progress = BootstrapProgress::Failed(format!("bspack: {e}")),
                }
            } else if msg.code == Code::NOT_FOUND || msg.code == Code::METHOD_NOT_ALLOWED {
                // A server without Bootstrap-Pack: the classic sequence.
                bs.pack = false;
                let server = bs.server;
                let r = self.send_bootstrap_request(now, server, false);
                if let Some(bs) = &mut self.bs {
                    bs.request = r;
                }
            } else {
                bs.progress = BootstrapProgress::Failed(format!("bspack answered {}", msg.code));
            }
        } else if !msg.code.is_success() {
            bs.progress = BootstrapProgress::Failed(format!(
                "Bootstrap-Request answered {}: {}",
                msg.code,
                String::from_utf8_lossy(&msg.payload)
            ));
        }
        true
    }

    /// Our Bootstrap-Request or -Pack got no answer.
    pub(super) fn bootstrap_failed(&mut self, id: RequestId, why: &str) -> bool {
        match &mut self.bs {
            Some(bs) if bs.request == Some(id) => {
                bs.request = None;
                bs.progress = BootstrapProgress::Failed(why.to_string());
                true
            }
            _ => false,
        }
    }

    /// A request from the bootstrap server; false when it is not from it.
    pub(super) fn bootstrap_serve(
        &mut self,
        now: Instant,
        id: IncomingId,
        peer: SocketAddr,
        msg: &Message,
    ) -> bool {
        match &self.bs {
            Some(bs) if bs.server == peer && bs.progress == BootstrapProgress::Running => {}
            _ => return false,
        }
        let result = self.bootstrap_dispatch(msg);
        *self
            .served
            .entry(if result.is_ok() {
                "bootstrap"
            } else {
                "bootstrap-refused"
            })
            .or_default() += 1;
        let resp = match result {
            Ok(m) => m,
            Err((code, text)) => coap::engine::error_response(code, &text),
        };
        self.engine.respond(now, id, resp);
        true
    }

    fn bootstrap_dispatch(&mut self, msg: &Message) -> Result<Message, Refusal> {
        // Writes beyond the account (a profile's extra writes) go to the
        // device's own objects, as any Write would.
        let segs = msg.uri_path();
        if msg.code == Code::PUT && segs.first().is_some_and(|o| o != "0" && o != "1") {
            let p = Path::parse(&segs.join("/")).map_err(|e| (Code::BAD_REQUEST, e.to_string()))?;
            return self.write(&p, msg, true);
        }
        self.bootstrap_step(msg).map(|(code, body)| {
            let mut m = Message::new(MsgType::Ack, code, 0, Token::EMPTY);
            if let Some(links) = body {
                m.set_uint_option(opt::CONTENT_FORMAT, ContentFormat::Link.code() as u64);
                m.payload = links.into_bytes();
            }
            m
        })
    }

    /// One bootstrap operation: its code, and a link-format body for Discover.
    fn bootstrap_step(&mut self, msg: &Message) -> Result<(Code, Option<String>), Refusal> {
        let v10 = self.cfg.lwm2m_version == Version::new(1, 0);
        let segs = msg.uri_path();
        let models = self.models.clone();
        let Some(bs) = &mut self.bs else {
            return refuse(Code::NOT_FOUND, "not bootstrapping");
        };
        if segs == ["bs"] && msg.code == Code::POST {
            bs.progress = account(bs);
            return match &bs.progress {
                BootstrapProgress::Failed(e) => refuse(Code::NOT_ACCEPTABLE, e.clone()),
                _ => Ok((Code::CHANGED, None)),
            };
        }
        let path = if segs.is_empty() {
            None
        } else {
            Some(Path::parse(&segs.join("/")).map_err(|e| (Code::BAD_REQUEST, e.to_string()))?)
        };
        match (msg.code, path) {
            (Code::DELETE, None) => {
                bs.security.retain(|_, i| is_bootstrap_account(i));
                bs.servers.clear();
                Ok((Code::DELETED, None))
            }
            (Code::DELETE, Some(p)) if p.object == 0 => {
                match p.instance {
                    Some(i) if bs.security.get(&i).is_some_and(is_bootstrap_account) => {
                        return refuse(Code::BAD_REQUEST, "the bootstrap account stays")
                    }
                    Some(i) => {
                        bs.security.remove(&i);
                    }
                    None => bs.security.retain(|_, i| is_bootstrap_account(i)),
                }
                Ok((Code::DELETED, None))
            }
            (Code::DELETE, Some(p)) if p.object == 1 => {
                match p.instance {
                    Some(i) => {
                        bs.servers.remove(&i);
                    }
                    None => bs.servers.clear(),
                }
                Ok((Code::DELETED, None))
            }
            (Code::DELETE, Some(_)) => Ok((Code::DELETED, None)),
            (Code::GET, Some(p)) if p.object == 0 && p.instance.is_none() => {
                if v10 {
                    return refuse(Code::METHOD_NOT_ALLOWED, "LwM2M 1.0: no Bootstrap-Discover");
                }
                Ok((Code::CONTENT, Some(discover(bs))))
            }
            (Code::PUT, Some(p)) if p.object <= 1 && p.instance.is_some() => {
                let cf = msg
                    .content_format()
                    .and_then(ContentFormat::from_code)
                    .ok_or((
                        Code::UNSUPPORTED_CONTENT_FORMAT,
                        "no Content-Format".to_string(),
                    ))?;
                if v10 && cf != ContentFormat::Tlv {
                    return refuse(Code::UNSUPPORTED_CONTENT_FORMAT, "LwM2M 1.0: TLV only");
                }
                let node = format::decode(cf, &p, &msg.payload, &*models)
                    .map_err(|e| (Code::BAD_REQUEST, e.to_string()))?;
                let Node::Instance(inst) = node else {
                    return refuse(Code::BAD_REQUEST, "an instance was expected");
                };
                let iid = p.instance.unwrap_or(0);
                let table = if p.object == 0 {
                    &mut bs.security
                } else {
                    &mut bs.servers
                };
                if p.object == 0 && table.get(&iid).is_some_and(is_bootstrap_account) {
                    return refuse(Code::BAD_REQUEST, "that instance is the bootstrap account");
                }
                table.insert(iid, inst);
                Ok((Code::CHANGED, None))
            }
            _ => refuse(Code::METHOD_NOT_ALLOWED, "not a bootstrap operation"),
        }
    }

    /// Takes the account: the server address, lifetime and binding the
    /// device registers with from now on.
    pub fn use_account(&mut self, account: &ServerAccount) {
        if let Some(a) = account.addr() {
            self.cfg.server = a;
        }
        self.cfg.lifetime = account.lifetime;
    }
}

fn is_bootstrap_account(i: &Instance) -> bool {
    matches!(i.get(&1), Some(Resource::Single(Value::Boolean(true))))
}

fn discover(bs: &BsClient) -> String {
    let mut links: Vec<String> = vec!["lwm2m=\"1.1\"".into()];
    links.extend(bs.security.keys().map(|i| format!("</0/{i}>")));
    links.join(",")
}

/// The account that objects 0 and 1 now hold: one non-bootstrap security
/// instance and the server instance with the same short server id.
fn account(bs: &BsClient) -> BootstrapProgress {
    let get = |i: &Instance, r: u16| match i.get(&r) {
        Some(Resource::Single(v)) => Some(v.clone()),
        _ => None,
    };
    let Some(sec) = bs.security.values().find(|i| !is_bootstrap_account(i)) else {
        return BootstrapProgress::Failed("no LwM2M server security instance".into());
    };
    let ssid = get(sec, 10);
    let Some(srv) = bs
        .servers
        .values()
        .find(|i| ssid.is_some() && get(i, 0) == ssid)
    else {
        return BootstrapProgress::Failed("no server instance with the security's short id".into());
    };
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let bytes = |v: Option<Value>| match v {
        Some(Value::Opaque(b)) => b,
        _ => Vec::new(),
    };
    let int = |v: Option<Value>| match v {
        Some(Value::Integer(n)) => n,
        Some(Value::Unsigned(n)) => n as i64,
        _ => -1,
    };
    BootstrapProgress::Done(ServerAccount {
        uri: text(get(sec, 0)),
        mode: int(get(sec, 2)),
        identity: bytes(get(sec, 3)),
        key: bytes(get(sec, 5)),
        lifetime: int(get(srv, 1)).max(1) as u32,
        binding: text(get(srv, 7)),
    })
}
