//! Requests from peers: checked, reassembled when block-wise, handed to the
//! application, and answered in time (piggybacked, else separately).

use super::blockwise::{cut_block, fingerprint};
use super::message::{Dedup, Owner};
use super::{error_response, Engine, Event, IncomingId, Timer, Transmit};
use crate::coap::msg::{opt, BlockOpt, Code, Message, MsgType, Token};
use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) peer: SocketAddr,
    pub(super) mid: u16,
    pub(super) token: Token,
    pub(super) mtype: MsgType,
    pub(super) acked: bool,
    pub(super) block1: Option<BlockOpt>,
    pub(super) block2: Option<BlockOpt>,
    pub(super) fingerprint: u64,
}

impl Engine {
    /// A datagram larger than the receive buffer, of which only `head` was
    /// read. A request gets 4.13 with Size1 (the largest body taken
    /// block-wise) and Block1 (the block size to use), so the device sends
    /// it again in blocks instead of retransmitting it until it gives up
    /// (RFC 7959 2.9.3); its retransmissions get the same answer.
    pub fn handle_oversize(&mut self, now: Instant, peer: SocketAddr, head: &[u8]) {
        self.stats.oversize += 1;
        let n = self.stats.oversize;
        let Some((mtype, mid)) = Message::peek_header(head) else {
            return;
        };
        let tkl = (head[0] & 0x0f) as usize;
        let code = Code(head[1]);
        let token = match head.get(4..4 + tkl).and_then(Token::new) {
            Some(t) if tkl <= 8 => t,
            _ => return,
        };
        if !matches!(mtype, MsgType::Con | MsgType::Non) || !code.is_request() {
            if mtype == MsgType::Con {
                // RFC 7252 4.2: a confirmable message that cannot be processed.
                self.send_reset(peer, mid);
            }
            return;
        }
        if self.replay_duplicate(peer, mid) {
            return;
        }
        if n.is_power_of_two() {
            log::warn!(
                "peer={peer} request datagram of more than {} bytes answered 4.13 ({n} oversize datagrams so far)",
                head.len() - 1
            );
        }
        self.remember(now, peer, mid, mtype, Dedup::InProgress);
        let inc = Incoming {
            peer,
            mid,
            token,
            mtype,
            acked: false,
            block1: None,
            block2: None,
            fingerprint: 0,
        };
        let mut resp = error_response(
            Code::REQUEST_ENTITY_TOO_LARGE,
            "datagram too large; send it block-wise",
        );
        resp.set_uint_option(opt::SIZE1, self.cfg.max_body_size as u64);
        let szx = BlockOpt::szx_for(self.cfg.block_size);
        resp.set_option(opt::BLOCK1, BlockOpt::new(0, false, szx).encode());
        self.send_reply(now, inc, resp);
    }

    /// Answers a request from `Event::Request`. Large bodies go out
    /// block-wise; late answers go out as separate responses.
    pub fn respond(&mut self, now: Instant, id: IncomingId, resp: Message) {
        let Some(inc) = self.incoming.remove(&id.0) else {
            log::debug!("response for unknown or expired request {}", id.0);
            return;
        };
        self.send_response(now, inc, resp);
    }

    pub(super) fn handle_request(&mut self, now: Instant, peer: SocketAddr, mut msg: Message) {
        if self.replay_duplicate(peer, msg.mid) {
            return;
        }
        let fingerprint = fingerprint(&msg);
        let mut inc = Incoming {
            peer,
            mid: msg.mid,
            token: msg.token,
            mtype: msg.mtype,
            acked: false,
            block1: None,
            block2: None,
            fingerprint,
        };
        self.remember(now, peer, msg.mid, msg.mtype, Dedup::InProgress);

        if let Some(bad) = msg
            .options
            .iter()
            .find(|o| opt::is_critical(o.number) && !opt::is_known(o.number))
        {
            log::debug!("peer={peer} unrecognized critical option {}", bad.number);
            return self.send_response(
                now,
                inc,
                error_response(Code::BAD_OPTION, "unrecognized critical option"),
            );
        }
        match msg.block2() {
            Some(Err(())) => {
                return self.send_response(
                    now,
                    inc,
                    error_response(Code::BAD_OPTION, "invalid Block2"),
                )
            }
            Some(Ok(b2)) => {
                inc.block2 = Some(b2);
                if b2.num > 0 {
                    let szx = self.block_szx(inc.block2);
                    if let Some(cached) = self.bodies.get(&(peer, fingerprint)) {
                        // Only the asked-for block is copied out of the cache.
                        let out = cut_block(&cached.template, &cached.body, b2.num, szx);
                        return self.send_reply(now, inc, out);
                    }
                }
            }
            None => {}
        }
        let streamed = !self.cfg.stream_block1.is_empty()
            && self.cfg.stream_block1.contains(&msg.uri_path().join("/"));
        match msg.block1().filter(|_| !streamed) {
            Some(Err(())) => {
                return self.send_response(
                    now,
                    inc,
                    error_response(Code::BAD_OPTION, "invalid Block1"),
                )
            }
            Some(Ok(b1)) => match self.absorb_block1(now, peer, fingerprint, &msg, b1) {
                Ok(Some(body)) => {
                    msg.payload = body;
                    msg.remove_option(opt::BLOCK1);
                    msg.remove_option(opt::SIZE1);
                    inc.block1 = Some(BlockOpt { more: false, ..b1 });
                }
                Ok(None) => {
                    let mut cont = Message::new(MsgType::Ack, Code::CONTINUE, 0, Token::EMPTY);
                    let szx = b1.szx.min(BlockOpt::szx_for(self.cfg.block_size));
                    cont.set_option(
                        opt::BLOCK1,
                        BlockOpt {
                            num: b1.num,
                            more: true,
                            szx,
                        }
                        .encode(),
                    );
                    return self.send_response(now, inc, cont);
                }
                Err(resp) => return self.send_response(now, inc, resp),
            },
            None => {}
        }
        if self.incoming.len() >= self.cfg.max_incoming {
            self.stats.overload_refusals += 1;
            log::warn!(
                "peer={peer} request refused: {} requests already waiting",
                self.incoming.len()
            );
            let mut resp = error_response(Code::SERVICE_UNAVAILABLE, "overloaded");
            resp.set_uint_option(opt::MAX_AGE, 5);
            return self.send_response(now, inc, resp);
        }
        let id = self.next_incoming;
        self.next_incoming += 1;
        // Every request gets the same short window; only those still unanswered
        // at its end take an expiry timer, so the timer heap does not grow
        // with the request rate.
        self.incoming.insert(id, inc);
        self.piggyback_order
            .push_back((now + self.cfg.piggyback_window, id));
        if self.piggyback_order.len() > 2 * self.cfg.max_incoming + 64 {
            // Entries of answered requests wait for their time; a flood of
            // quickly answered requests must not grow the queue past its table.
            let incoming = &self.incoming;
            self.piggyback_order
                .retain(|(_, i)| incoming.contains_key(i));
        }
        self.events.push_back(Event::Request {
            id: IncomingId(id),
            peer,
            msg,
        });
    }

    /// Sends an empty ACK for every request still unanswered at the end of
    /// its piggyback window; it then gets an expiry timer of its own.
    pub(super) fn expire_piggyback(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.piggyback_order.front() {
            if t > now {
                break;
            }
            self.piggyback_order.pop_front();
            if self.incoming.contains_key(&id) {
                self.send_empty_ack_for(now, id);
                let expiry = now + self.cfg.exchange_lifetime;
                self.timers
                    .push(Reverse((expiry, Timer::IncomingExpire(id))));
            }
        }
    }

    /// Answers a request: the block the peer asked for, with the Block1
    /// of a finished upload echoed.
    pub(super) fn send_response(&mut self, now: Instant, inc: Incoming, mut resp: Message) {
        if let Some(b1) = inc.block1 {
            if resp.option(opt::BLOCK1).is_none() {
                resp.set_option(opt::BLOCK1, b1.encode());
            }
        }
        let resp = self.answer_block(now, (inc.peer, inc.fingerprint), inc.block2, resp);
        self.send_reply(now, inc, resp);
    }

    /// Sends an answer as piggybacked ACK, separate CON or NON, as the
    /// request's type and progress require.
    pub(super) fn send_reply(&mut self, now: Instant, inc: Incoming, mut resp: Message) {
        let peer = inc.peer;
        resp.token = inc.token;
        match (inc.mtype, inc.acked) {
            (MsgType::Con, false) => {
                resp.mtype = MsgType::Ack;
                resp.mid = inc.mid;
                let bytes = resp.encode();
                self.remember(
                    now,
                    peer,
                    inc.mid,
                    MsgType::Con,
                    Dedup::Reply(bytes.clone()),
                );
                self.transmits.push_back(Transmit { peer, bytes });
            }
            (MsgType::Con, true) => {
                resp.mtype = MsgType::Con;
                resp.mid = self.next_mid(now, peer);
                let bytes = resp.encode();
                self.track_con(now, peer, resp.mid, bytes.clone(), Owner::SeparateResponse);
                self.transmits.push_back(Transmit { peer, bytes });
            }
            _ => {
                resp.mtype = MsgType::Non;
                resp.mid = self.next_mid(now, peer);
                self.transmits.push_back(Transmit {
                    peer,
                    bytes: resp.encode(),
                });
            }
        }
    }

    pub(super) fn send_empty_ack_for(&mut self, now: Instant, id: u64) {
        let Some(inc) = self.incoming.get_mut(&id) else {
            return;
        };
        if inc.acked || inc.mtype != MsgType::Con {
            return;
        }
        inc.acked = true;
        let (peer, mid) = (inc.peer, inc.mid);
        let bytes = Message::new(MsgType::Ack, Code::EMPTY, mid, Token::EMPTY).encode();
        self.remember(now, peer, mid, MsgType::Con, Dedup::Reply(bytes.clone()));
        self.transmits.push_back(Transmit { peer, bytes });
    }
}
