//! Block-wise transfer (RFC 7959): uploads reassembled, large answers cut
//! into blocks from a bounded cache, both expiring when abandoned.

use super::{error_response, Engine};
use crate::coap::msg::{opt, BlockOpt, Code, Message};
use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::Instant;

pub(super) type BlockKey = (SocketAddr, u64);

#[derive(Debug)]
pub(super) struct Assembly {
    pub(super) buf: Vec<u8>,
    pub(super) expires: Instant,
}

#[derive(Debug)]
pub(super) struct CachedBody {
    pub(super) template: Message,
    pub(super) body: Vec<u8>,
    pub(super) expires: Instant,
}

impl Engine {
    /// Adds one Block1 block to its upload. `Ok(Some(body))` when complete,
    /// `Ok(None)` when more blocks are expected, `Err(response)` to refuse.
    pub(super) fn absorb_block1(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        fp: u64,
        msg: &Message,
        b1: BlockOpt,
    ) -> Result<Option<Vec<u8>>, Message> {
        let key = (peer, fp);
        let max = self.cfg.max_body_size;
        let too_large = || {
            let mut r = error_response(Code::REQUEST_ENTITY_TOO_LARGE, "body too large");
            r.set_uint_option(opt::SIZE1, max as u64);
            r
        };
        if msg
            .uint_option(opt::SIZE1)
            .is_some_and(|s| s as usize > max)
        {
            self.assemblies.remove(&key);
            return Err(too_large());
        }
        if b1.more && msg.payload.len() != b1.size() {
            self.assemblies.remove(&key);
            return Err(error_response(
                Code::BAD_REQUEST,
                "block payload does not match its size",
            ));
        }
        if b1.num == 0 {
            if !self.assemblies.contains_key(&key)
                && self.block_states() >= self.cfg.max_block_states
            {
                self.stats.overload_refusals += 1;
                let mut r = error_response(Code::SERVICE_UNAVAILABLE, "too many block transfers");
                r.set_uint_option(opt::MAX_AGE, 5);
                return Err(r);
            }
            let expires = now + self.cfg.exchange_lifetime;
            self.assemblies.insert(
                key,
                Assembly {
                    buf: Vec::new(),
                    expires,
                },
            );
            self.push_block_expiry(expires, key);
        }
        let Some(asm) = self.assemblies.get_mut(&key) else {
            return Err(error_response(
                Code::REQUEST_ENTITY_INCOMPLETE,
                "no block 0 seen",
            ));
        };
        if b1.offset() != asm.buf.len() {
            self.assemblies.remove(&key);
            return Err(error_response(
                Code::REQUEST_ENTITY_INCOMPLETE,
                "block out of sequence",
            ));
        }
        if asm.buf.len() + msg.payload.len() > max {
            self.assemblies.remove(&key);
            return Err(too_large());
        }
        asm.buf.extend_from_slice(&msg.payload);
        if !b1.more {
            return Ok(self.assemblies.remove(&key).map(|a| a.buf));
        }
        // The upload's one expiry entry is renewed lazily when it comes due.
        asm.expires = now + self.cfg.exchange_lifetime;
        Ok(None)
    }

    /// The part of an answer that goes out: the whole of a small one, else
    /// the block the peer asked for, with the body kept for the later
    /// blocks (bounded with the uploads by `max_block_states`).
    pub(super) fn answer_block(
        &mut self,
        now: Instant,
        key: BlockKey,
        block2: Option<BlockOpt>,
        mut resp: Message,
    ) -> Message {
        // The application cut its block itself (a package served from a
        // file, a block at a time).
        if resp.option(opt::BLOCK2).is_some() {
            return resp;
        }
        let szx = self.block_szx(block2);
        let size = BlockOpt::szx_size(szx);
        let num = block2.map_or(0, |b| b.num);
        if resp.payload.len() <= size && num == 0 {
            return resp;
        }
        let body = std::mem::take(&mut resp.payload);
        if resp.option(opt::ETAG).is_none() {
            let mut h = DefaultHasher::new();
            body.hash(&mut h);
            resp.set_option(opt::ETAG, h.finish().to_be_bytes()[..4].to_vec());
        }
        let out = cut_block(&resp, &body, num, szx);
        let more = (num as usize + 1) * size < body.len();
        if more
            && (self.bodies.contains_key(&key) || self.block_states() < self.cfg.max_block_states)
        {
            let expires = now + self.cfg.exchange_lifetime;
            self.bodies.insert(
                key,
                CachedBody {
                    template: resp,
                    body,
                    expires,
                },
            );
            self.push_block_expiry(expires, key);
        }
        out
    }

    /// The block size exponent for an answer: ours, or smaller if the peer asked.
    pub(super) fn block_szx(&self, block2: Option<BlockOpt>) -> u8 {
        let ours = BlockOpt::szx_for(self.cfg.block_size);
        block2.map_or(ours, |b| b.szx.min(ours))
    }

    /// Queues an expiry check for a block-wise state, keeping the queue
    /// sorted and no longer than a small multiple of the state table.
    pub(super) fn push_block_expiry(&mut self, at: Instant, key: BlockKey) {
        let at = self.block_order.back().map_or(at, |b| at.max(b.0));
        self.block_order.push_back((at, key));
        if self.block_order.len() > 2 * self.cfg.max_block_states + 64 {
            let (asm, bodies) = (&self.assemblies, &self.bodies);
            let mut seen = std::collections::HashSet::new();
            // Keep the last entry per live key: it carries the latest time.
            let mut kept: VecDeque<(Instant, BlockKey)> = self
                .block_order
                .iter()
                .rev()
                .filter(|(_, k)| (asm.contains_key(k) || bodies.contains_key(k)) && seen.insert(*k))
                .copied()
                .collect();
            kept.make_contiguous().reverse();
            self.block_order = kept;
        }
    }

    pub(super) fn block_states(&self) -> usize {
        self.assemblies.len() + self.bodies.len()
    }

    /// Drops uploads and cached bodies that nobody continued in time.
    pub(super) fn expire_blocks(&mut self, now: Instant) {
        while let Some(&(t, key)) = self.block_order.front() {
            if t > now {
                break;
            }
            self.block_order.pop_front();
            let mut renew = None;
            if let Some(a) = self.assemblies.get(&key) {
                if a.expires <= t {
                    self.assemblies.remove(&key);
                } else {
                    renew = Some(a.expires);
                }
            }
            if let Some(b) = self.bodies.get(&key) {
                if b.expires <= t {
                    self.bodies.remove(&key);
                } else {
                    renew = renew.max(Some(b.expires));
                }
            }
            if let Some(at) = renew {
                self.push_block_expiry(at, key);
            }
        }
    }
}

/// Block `num` of `body` as an answer built on `template` (which carries
/// code and options, no payload); 4.02 when the block lies past the end.
pub(super) fn cut_block(template: &Message, body: &[u8], num: u32, szx: u8) -> Message {
    let size = BlockOpt::szx_size(szx);
    let offset = num as usize * size;
    if num > 0 && offset >= body.len() {
        return error_response(Code::BAD_OPTION, "block number out of range");
    }
    let end = (offset + size).min(body.len());
    let mut out = template.clone();
    out.payload = body[offset..end].to_vec();
    out.set_option(
        opt::BLOCK2,
        BlockOpt::new(num, end < body.len(), szx).encode(),
    );
    if num == 0 {
        out.set_uint_option(opt::SIZE2, body.len() as u64);
    }
    out
}

/// Identifies the resource a request targets, across the blocks of one
/// transfer (RFC 7959 2.5: blocks are matched by endpoint and request URI).
pub(super) fn fingerprint(m: &Message) -> u64 {
    let mut h = DefaultHasher::new();
    m.code.0.hash(&mut h);
    for o in &m.options {
        if !matches!(
            o.number,
            opt::BLOCK1 | opt::BLOCK2 | opt::SIZE1 | opt::SIZE2 | opt::OBSERVE | opt::ETAG
        ) {
            o.number.hash(&mut h);
            o.value.hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
#[path = "blockwise_tests.rs"]
mod tests;
