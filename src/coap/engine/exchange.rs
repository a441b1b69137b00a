//! Our requests to peers: NSTART and per-peer queues, matching ACKs and
//! separate responses by message ID and token, Block1 and Block2 follow-up,
//! deadlines and failures.

use super::message::{Dedup, Owner, PeerState};
use super::{Engine, EngineError, Event, RequestError, RequestId, Timer, Transmit};
use crate::coap::msg::{opt, BlockOpt, Code, Message, MsgType, Token};
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) peer: SocketAddr,
    pub(super) token: Token,
    pub(super) request: Message,
    pub(super) mid: Option<u16>,
    pub(super) started: bool,
    pub(super) block1: Option<(u8, usize)>,
    /// A Block2 download under way: the body so far and the first block's
    /// message. Boxed: every established observation is an exchange, and
    /// few exchanges are downloads.
    pub(super) block2_acc: Option<Box<(Vec<u8>, Message)>>,
    pub(super) next_block2: Option<BlockOpt>,
    pub(super) observe: bool,
    pub(super) established: bool,
    pub(super) deadline: Option<Instant>,
    /// Observe value and arrival of the freshest notification so far.
    pub(super) last_seq: Option<(u32, Instant)>,
    /// For a fetch of a block-wise notification's later blocks: the observation.
    pub(super) follows: Option<u64>,
    /// The application asked for one block itself (a Block2 option on its
    /// request): the answer is handed over as it is, never followed.
    pub(super) one_block: bool,
}

/// The fetch of a block-wise notification's later blocks.
pub(super) struct Follow {
    pub(super) observation: u64,
    pub(super) acc: (Vec<u8>, Message),
    pub(super) next: BlockOpt,
}

impl Engine {
    /// Starts a request. `msg` carries type (CON or NON), code, options and
    /// payload; the engine assigns token and message ID. A GET with
    /// Observe=0 becomes an observation whose later notifications come out
    /// as `Event::Notification`.
    pub fn request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mut msg: Message,
    ) -> Result<RequestId, EngineError> {
        if !msg.code.is_request() || !matches!(msg.mtype, MsgType::Con | MsgType::Non) {
            return Err(EngineError::NotARequest);
        }
        if msg.payload.len() > self.cfg.max_body_size {
            return Err(EngineError::TooLarge);
        }
        self.check_room(now, peer)?;
        msg.token = self.new_token(peer);
        self.start_exchange(now, peer, msg, None).map(RequestId)
    }

    /// Room for one more exchange with `peer`.
    pub(super) fn check_room(&mut self, now: Instant, peer: SocketAddr) -> Result<(), EngineError> {
        // Established observations have their own bound.
        if self.exchanges.len() - self.established >= self.cfg.max_exchanges
            || (!self.peers.contains_key(&peer) && !self.make_room_for_peer(now))
        {
            self.stats.overload_refusals += 1;
            return Err(EngineError::Busy);
        }
        Ok(())
    }

    /// Starts (or queues behind NSTART) an exchange for `msg`, whose token is set.
    pub(super) fn start_exchange(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: Message,
        follow: Option<Follow>,
    ) -> Result<u64, EngineError> {
        let token = msg.token;
        let observe = follow.is_none() && msg.observe() == Some(0);
        let (follows, block2_acc, next_block2) = match follow {
            Some(f) => (Some(f.observation), Some(Box::new(f.acc)), Some(f.next)),
            None => (None, None, None),
        };
        let id = self.next_exchange;
        self.next_exchange += 1;
        // A request that carries its own Block1 is one block already.
        let block1 = if msg.payload.len() > self.cfg.block_size && msg.block1().is_none() {
            Some((BlockOpt::szx_for(self.cfg.block_size), 0))
        } else {
            None
        };
        let initial_mid = self.rng.u16(..);
        let ps = self.peers.entry(peer).or_insert(PeerState {
            next_mid: initial_mid,
            active: 0,
            queue: VecDeque::new(),
            last_used: now,
        });
        ps.last_used = now;
        let start_now = ps.active < self.cfg.nstart.max(1);
        if !start_now {
            if ps.queue.len() >= self.cfg.max_queue_per_peer {
                self.stats.overload_refusals += 1;
                return Err(EngineError::Busy);
            }
            ps.queue.push_back(id);
        } else {
            ps.active += 1;
        }
        let one_block = follows.is_none() && msg.block2().is_some();
        self.exchanges.insert(
            id,
            Exchange {
                one_block,
                peer,
                token,
                request: msg,
                mid: None,
                started: start_now,
                block1,
                block2_acc,
                next_block2,
                observe,
                established: false,
                deadline: None,
                last_seq: None,
                follows,
            },
        );
        self.by_token.insert((peer, token), id);
        if start_now {
            self.transmit_exchange(now, id);
        }
        Ok(id)
    }

    /// A request or observation still known, with its token.
    pub fn request_message(&self, id: RequestId) -> Option<Message> {
        self.exchanges.get(&id.0).map(|x| {
            let mut m = x.request.clone();
            m.token = x.token;
            m
        })
    }

    /// The token of a request or observation still known.
    pub fn token(&self, id: RequestId) -> Option<Token> {
        self.exchanges.get(&id.0).map(|x| x.token)
    }

    /// Forgets a request or observation. A later notification for it is
    /// answered with a Reset (RFC 7641 reactive cancellation).
    pub fn cancel(&mut self, now: Instant, id: RequestId) {
        self.finish_exchange(now, id.0);
    }

    pub(super) fn handle_ack_or_reset(&mut self, now: Instant, peer: SocketAddr, msg: Message) {
        if msg.mtype == MsgType::Rst {
            if let Some(token) = self.non_notifications.remove(&(peer, msg.mid)) {
                self.events.push_back(Event::ObserverGone { peer, token });
                return;
            }
        }
        let Some(out) = self.outgoing.get(&(peer, msg.mid)) else {
            log::trace!(
                "peer={peer} {:?} for unknown message id {}",
                msg.mtype,
                msg.mid
            );
            return;
        };
        let owner = out.owner;
        if msg.mtype == MsgType::Ack && msg.code != Code::EMPTY {
            // A piggybacked response must carry the request's token.
            if let Owner::Exchange(id) = owner {
                if self.exchanges.get(&id).map(|x| x.token) != Some(msg.token) {
                    return;
                }
            }
        }
        self.outgoing.remove(&(peer, msg.mid));
        let id = match owner {
            Owner::Exchange(id) => id,
            Owner::Notification(token) => {
                self.con_notifications.remove(&(peer, token));
                if msg.mtype == MsgType::Rst {
                    self.events.push_back(Event::ObserverGone { peer, token });
                }
                return;
            }
            Owner::SeparateResponse => return,
        };
        if msg.mtype == MsgType::Rst {
            return self.fail_exchange(now, id, RequestError::Reset);
        }
        if msg.code == Code::EMPTY {
            if let Some(x) = self.exchanges.get_mut(&id) {
                x.mid = None;
                let deadline = now + self.cfg.response_timeout;
                x.deadline = Some(deadline);
                self.timers
                    .push(Reverse((deadline, Timer::ExchangeDeadline(id))));
            }
            return;
        }
        self.on_response(now, id, msg);
    }

    pub(super) fn handle_separate_response(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: Message,
    ) {
        if self.replay_duplicate(peer, msg.mid) {
            return;
        }
        let Some(&id) = self.by_token.get(&(peer, msg.token)) else {
            if let Some(held) = &mut self.held {
                if held.len() < super::MAX_HELD {
                    self.stats.held += 1;
                    held.push_back((peer, msg));
                } else {
                    self.stats.held_dropped += 1;
                }
                return;
            }
            // Unknown token: reject so the peer stops (also cancels stale observations).
            if msg.mtype == MsgType::Con || msg.observe().is_some() {
                self.send_reset(peer, msg.mid);
            }
            return;
        };
        if msg.mtype == MsgType::Con {
            let ack = Message::new(MsgType::Ack, Code::EMPTY, msg.mid, Token::EMPTY).encode();
            self.transmits.push_back(Transmit {
                peer,
                bytes: ack.clone(),
            });
            self.remember(now, peer, msg.mid, MsgType::Con, Dedup::Reply(ack));
        } else {
            self.remember(now, peer, msg.mid, MsgType::Non, Dedup::InProgress);
        }
        // The response may overtake the ACK of our request.
        if let Some(mid) = self.exchanges.get(&id).and_then(|x| x.mid) {
            self.outgoing.remove(&(peer, mid));
        }
        self.on_response(now, id, msg);
    }

    pub(super) fn on_response(&mut self, now: Instant, id: u64, msg: Message) {
        let Some(x) = self.exchanges.get_mut(&id) else {
            return;
        };
        let peer = x.peer;
        x.mid = None;
        x.deadline = None;
        if x.established {
            return self.on_notification(now, id, msg);
        }
        // Block1 upload in progress: continue on 2.31.
        if let Some((szx, offset)) = x.block1 {
            let sent = BlockOpt::szx_size(szx).min(x.request.payload.len() - offset);
            if msg.code == Code::CONTINUE && offset + sent < x.request.payload.len() {
                let peer_szx = match msg.block1() {
                    Some(Ok(b)) => b.szx,
                    _ => szx,
                };
                let new_szx = szx.min(peer_szx);
                x.block1 = Some((new_szx, offset + sent));
                return self.transmit_exchange(now, id);
            }
            x.block1 = None;
        }
        // Block2 download: fetch the next block.
        if let Some(Ok(b2)) = msg.block2().filter(|_| !x.one_block) {
            let acc_len = x.block2_acc.as_ref().map_or(0, |a| a.0.len());
            if b2.offset() != acc_len {
                return self.fail_exchange(now, id, RequestError::BlockMismatch);
            }
            if acc_len + msg.payload.len() > self.cfg.max_body_size {
                return self.fail_exchange(now, id, RequestError::TooLarge);
            }
            if b2.more {
                if msg.payload.len() != b2.size() {
                    return self.fail_exchange(now, id, RequestError::BlockMismatch);
                }
                let acc = x
                    .block2_acc
                    .get_or_insert_with(|| Box::new((Vec::new(), msg.clone())));
                acc.0.extend_from_slice(&msg.payload);
                x.next_block2 = Some(BlockOpt::new(b2.num + 1, false, b2.szx));
                return self.transmit_exchange(now, id);
            }
        }
        let mut msg = msg;
        if let Some(acc) = x.block2_acc.take() {
            let (mut body, first) = *acc;
            body.extend_from_slice(&msg.payload);
            let code = msg.code;
            msg = first;
            msg.code = code;
            msg.payload = body;
            msg.remove_option(opt::BLOCK2);
        }
        x.next_block2 = None;
        if let Some(observation) = x.follows {
            // The last block of a block-wise notification.
            self.finish_exchange(now, id);
            if self.exchanges.contains_key(&observation) && msg.code.is_success() {
                self.events.push_back(Event::Notification {
                    id: RequestId(observation),
                    peer,
                    msg,
                });
            }
            return;
        }
        let keep = x.observe
            && msg.observe().is_some()
            && msg.code.is_success()
            && self.established < self.cfg.max_observations;
        if keep {
            // From now on it is an observation: it leaves the NSTART count.
            x.established = true;
            // Held as long as the observation lives: no spare capacity.
            x.request.shrink_to_fit();
            x.last_seq = msg.observe().map(|v| (v, now));
            x.started = false;
            self.established += 1;
            self.release_slot(now, peer);
        }
        self.events.push_back(Event::Response {
            id: RequestId(id),
            peer,
            msg,
        });
        if !keep {
            self.finish_exchange(now, id);
        }
    }

    pub(super) fn transmit_exchange(&mut self, now: Instant, id: u64) {
        let block_size = self.cfg.block_size;
        let Some(x) = self.exchanges.get_mut(&id) else {
            return;
        };
        let peer = x.peer;
        let mut m = x.request.clone();
        m.token = x.token;
        if let Some((szx, offset)) = x.block1 {
            let size = BlockOpt::szx_size(szx);
            let end = (offset + size).min(x.request.payload.len());
            m.payload = x.request.payload[offset..end].to_vec();
            let num = (offset / size) as u32;
            m.set_option(
                opt::BLOCK1,
                BlockOpt {
                    num,
                    more: end < x.request.payload.len(),
                    szx,
                }
                .encode(),
            );
            if offset == 0 {
                m.set_uint_option(opt::SIZE1, x.request.payload.len() as u64);
            }
        }
        if let Some(b2) = x.next_block2 {
            // RFC 7959 2.4: later block requests carry no Observe option.
            m.remove_option(opt::OBSERVE);
            m.set_option(opt::BLOCK2, b2.encode());
        } else if block_size < 1024 && m.code == Code::GET && m.block2().is_none() {
            m.set_option(
                opt::BLOCK2,
                BlockOpt::new(0, false, BlockOpt::szx_for(block_size)).encode(),
            );
        }
        let mid = self.next_mid(now, peer);
        m.mid = mid;
        let bytes = m.encode();
        let Some(x) = self.exchanges.get_mut(&id) else {
            return;
        };
        x.mid = Some(mid);
        if m.mtype == MsgType::Con {
            self.track_con(now, peer, mid, bytes.clone(), Owner::Exchange(id));
        } else {
            let deadline = now + self.cfg.response_timeout;
            x.deadline = Some(deadline);
            self.timers
                .push(Reverse((deadline, Timer::ExchangeDeadline(id))));
        }
        self.transmits.push_back(Transmit { peer, bytes });
    }

    pub(super) fn fail_exchange(&mut self, now: Instant, id: u64, error: RequestError) {
        if let Some(x) = self.exchanges.get(&id) {
            let peer = x.peer;
            if x.follows.is_some() {
                // Only the notification is lost; the observation goes on.
                log::debug!("peer={peer} later blocks of a notification not fetched: {error}");
                return self.finish_exchange(now, id);
            }
            log::debug!("peer={peer} request {id} failed: {error}");
            self.events.push_back(Event::Failed {
                id: RequestId(id),
                peer,
                error,
            });
        }
        self.finish_exchange(now, id);
    }

    pub(super) fn finish_exchange(&mut self, now: Instant, id: u64) {
        let Some(x) = self.exchanges.remove(&id) else {
            return;
        };
        if x.established {
            self.established -= 1;
        }
        self.by_token.remove(&(x.peer, x.token));
        if let Some(mid) = x.mid {
            self.outgoing.remove(&(x.peer, mid));
        }
        if x.started {
            self.release_slot(now, x.peer);
        } else if let Some(ps) = self.peers.get_mut(&x.peer) {
            ps.queue.retain(|q| *q != id);
        }
    }

    pub(super) fn release_slot(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(ps) = self.peers.get_mut(&peer) {
            ps.active = ps.active.saturating_sub(1);
        }
        self.start_queued(now, peer);
    }

    pub(super) fn start_queued(&mut self, now: Instant, peer: SocketAddr) {
        let nstart = self.cfg.nstart.max(1);
        loop {
            let Some(ps) = self.peers.get_mut(&peer) else {
                return;
            };
            if ps.active >= nstart {
                return;
            }
            let Some(next) = ps.queue.pop_front() else {
                return;
            };
            let Some(x) = self.exchanges.get_mut(&next) else {
                continue;
            };
            x.started = true;
            ps.active += 1;
            self.transmit_exchange(now, next);
        }
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
