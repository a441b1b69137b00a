//! Packages served for pull updates: `GET /fw/<token>` answered one Block2
//! block at a time (read from the image file by the shell), only to the
//! endpoint the token was made for when it came over DTLS.

use super::Server;
use crate::coap::{opt, BlockOpt, Code, IncomingId, Message, MsgType, Token};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Fetches waiting for their bytes at once; more get 5.03.
const MAX_FETCHES: usize = 4096;

/// A package handed out under a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The device it was made for.
    pub endpoint: String,
    /// The image id (its SHA-256).
    pub image: String,
    /// Bytes.
    pub size: u64,
    /// Only over DTLS (a coaps URL).
    pub secure: bool,
}

/// A block a device asked for: the shell reads it and hands it to
/// [`Server::answer_fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The request to answer.
    pub id: IncomingId,
    /// Who asked.
    pub peer: SocketAddr,
    /// The device the package is for.
    pub endpoint: String,
    /// The image.
    pub image: String,
    /// First byte of the block.
    pub offset: u64,
    /// Its length.
    pub len: usize,
    /// The Block2 option of the answer.
    pub block: BlockOpt,
    /// The image's size.
    pub size: u64,
}

/// The served packages and the fetches waiting for bytes.
#[derive(Debug, Default)]
pub(super) struct Packages {
    by_token: HashMap<String, Package>,
    fetches: std::collections::VecDeque<Fetch>,
}

impl Server {
    /// Serves `p` under `/fw/<token>` until [`Server::unserve_package`].
    pub fn serve_package(&mut self, token: String, p: Package) {
        self.packages.by_token.insert(token, p);
    }

    /// Stops serving a token: it answers 4.04 from now on.
    pub fn unserve_package(&mut self, token: &str) {
        self.packages.by_token.remove(token);
    }

    /// Next block to read for a device.
    pub fn poll_fetch(&mut self) -> Option<Fetch> {
        self.packages.fetches.pop_front()
    }

    /// Answers a fetch with its bytes (or 5.00 when they could not be read).
    pub fn answer_fetch(&mut self, now: Instant, f: Fetch, bytes: Result<Vec<u8>, String>) {
        let resp = match bytes {
            Ok(b) => {
                let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
                m.set_uint_option(
                    opt::CONTENT_FORMAT,
                    crate::lwm2m::format::ContentFormat::Opaque.code() as u64,
                );
                // The image's SHA-256 prefix: the same across restarts.
                let etag: Vec<u8> = (0..4)
                    .filter_map(|i| u8::from_str_radix(f.image.get(i * 2..i * 2 + 2)?, 16).ok())
                    .collect();
                m.set_option(opt::ETAG, etag);
                m.set_option(opt::BLOCK2, f.block.encode());
                m.set_uint_option(opt::SIZE2, f.size);
                m.payload = b;
                m
            }
            Err(e) => {
                log::error!("ep={} package block unreadable: {e}", f.endpoint);
                crate::coap::engine::error_response(
                    Code::INTERNAL_SERVER_ERROR,
                    "package unreadable",
                )
            }
        };
        self.engine.respond(now, f.id, resp);
    }

    /// A `GET /fw/<token>`: an answer now (a refusal), or none when the
    /// fetch waits for its bytes.
    pub(super) fn fetch(
        &mut self,
        id: IncomingId,
        peer: SocketAddr,
        token: &str,
        msg: &Message,
    ) -> Option<Message> {
        let reply = |c, t: &str| Some(crate::coap::engine::error_response(c, t));
        let Some(p) = self.packages.by_token.get(token) else {
            return reply(Code::NOT_FOUND, "no such package");
        };
        match self.secure_peers.get(&peer) {
            Some((a, _)) if a.endpoint != p.endpoint => {
                log::warn!(
                    "ep={} peer={peer} fetch of another endpoint's package refused",
                    a.endpoint
                );
                return reply(Code::FORBIDDEN, "this package is another device's");
            }
            None if p.secure => {
                log::warn!(
                    "ep={} peer={peer} plain fetch of a DTLS-only package refused",
                    p.endpoint
                );
                return reply(Code::FORBIDDEN, "this package is served over DTLS only");
            }
            _ => {}
        }
        let asked = match msg.block2() {
            Some(Ok(b)) => b,
            Some(Err(())) => return reply(Code::BAD_OPTION, "invalid Block2"),
            None => BlockOpt::new(0, false, 6),
        };
        let szx = asked.szx.min(6);
        let bs = BlockOpt::szx_size(szx) as u64;
        // A smaller size than asked keeps the same offset (RFC 7959 2.4).
        let offset = asked.num as u64 * BlockOpt::szx_size(asked.szx) as u64;
        if offset >= p.size && !(offset == 0 && p.size == 0) {
            return reply(Code::BAD_OPTION, "block beyond the package");
        }
        if self.packages.fetches.len() >= MAX_FETCHES {
            return reply(Code::SERVICE_UNAVAILABLE, "busy");
        }
        let len = (p.size - offset).min(bs) as usize;
        let block = BlockOpt::new((offset / bs) as u32, offset + (len as u64) < p.size, szx);
        self.packages.fetches.push_back(Fetch {
            id,
            peer,
            endpoint: p.endpoint.clone(),
            image: p.image.clone(),
            offset,
            len,
            block,
            size: p.size,
        });
        None
    }
}
