//! The message layer (RFC 7252 4): message IDs and tokens, deduplication
//! with cached replies, confirmable retransmission, empty ACK and Reset.

use super::{Engine, Event, RequestError, Timer, Transmit};
use crate::coap::msg::{Code, Message, MsgType, Token};
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) enum Dedup {
    InProgress,
    Reply(Vec<u8>),
}

#[derive(Debug)]
pub(super) struct DedupEntry {
    pub(super) state: Dedup,
    pub(super) expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Exchange(u64),
    SeparateResponse,
    Notification(Token),
}

#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) bytes: Vec<u8>,
    pub(super) retransmits: u32,
    pub(super) timeout: Duration,
    pub(super) next: Instant,
    pub(super) owner: Owner,
}

#[derive(Debug)]
pub(super) struct PeerState {
    pub(super) next_mid: u16,
    pub(super) active: usize,
    pub(super) queue: VecDeque<u64>,
    pub(super) last_used: Instant,
}

impl Engine {
    pub(super) fn new_token(&mut self, peer: SocketAddr) -> Token {
        loop {
            let t = Token::from_u64(self.rng.u64(..));
            if !self.by_token.contains_key(&(peer, t)) {
                return t;
            }
        }
    }

    /// A message ID seen before: sends the cached answer again, if there is
    /// one, and tells the caller to stop.
    pub(super) fn replay_duplicate(&mut self, peer: SocketAddr, mid: u16) -> bool {
        let Some(entry) = self.dedup.get(&(peer, mid)) else {
            return false;
        };
        self.stats.duplicates += 1;
        if let Dedup::Reply(bytes) = &entry.state {
            self.transmits.push_back(Transmit {
                peer,
                bytes: bytes.clone(),
            });
        }
        true
    }

    pub(super) fn remember(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        mtype: MsgType,
        state: Dedup,
    ) {
        if let Some(e) = self.dedup.get_mut(&(peer, mid)) {
            e.state = state;
            return;
        }
        while self.dedup.len() >= self.cfg.max_dedup {
            // Evict the oldest entries first; a very late duplicate of one of
            // them is then processed again, which is the lesser harm.
            let Some((_, p, m)) = self.dedup_order.pop_front() else {
                break;
            };
            self.dedup.remove(&(p, m));
        }
        let life = if mtype == MsgType::Con {
            self.cfg.exchange_lifetime
        } else {
            self.cfg.non_lifetime
        };
        let expires = now + life;
        // Keep the order queue sorted: NON entries live shorter than CON ones.
        let expires = self
            .dedup_order
            .back()
            .map_or(expires, |b| expires.max(b.0));
        self.dedup
            .insert((peer, mid), DedupEntry { state, expires });
        self.dedup_order.push_back((expires, peer, mid));
    }

    /// Forgets message IDs whose lifetime is over.
    pub(super) fn expire_dedup(&mut self, now: Instant) {
        while let Some(&(t, peer, mid)) = self.dedup_order.front() {
            if t > now {
                break;
            }
            self.dedup_order.pop_front();
            if self.dedup.get(&(peer, mid)).is_some_and(|e| e.expires == t) {
                self.dedup.remove(&(peer, mid));
            }
        }
    }

    pub(super) fn next_mid(&mut self, now: Instant, peer: SocketAddr) -> u16 {
        if !self.peers.contains_key(&peer) {
            self.make_room_for_peer(now);
        }
        let initial = self.rng.u16(..);
        let ps = self.peers.entry(peer).or_insert(PeerState {
            next_mid: initial,
            active: 0,
            queue: VecDeque::new(),
            last_used: now,
        });
        ps.last_used = now;
        let mid = ps.next_mid;
        ps.next_mid = ps.next_mid.wrapping_add(1);
        mid
    }

    /// Frees a peer slot if the table is full. Only idle peers are dropped.
    pub(super) fn make_room_for_peer(&mut self, now: Instant) -> bool {
        if self.peers.len() < self.cfg.max_peers {
            return true;
        }
        let life = self.cfg.exchange_lifetime;
        self.peers.retain(|_, p| {
            p.active > 0 || !p.queue.is_empty() || now.duration_since(p.last_used) < life
        });
        if self.peers.len() < self.cfg.max_peers {
            return true;
        }
        let idle = self
            .peers
            .iter()
            .find(|(_, p)| p.active == 0 && p.queue.is_empty())
            .map(|(a, _)| *a);
        match idle {
            Some(a) => {
                self.peers.remove(&a);
                true
            }
            None => false,
        }
    }

    pub(super) fn send_reset(&mut self, peer: SocketAddr, mid: u16) {
        self.transmits.push_back(Transmit {
            peer,
            bytes: Message::new(MsgType::Rst, Code::EMPTY, mid, Token::EMPTY).encode(),
        });
    }

    pub(super) fn track_con(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        bytes: Vec<u8>,
        owner: Owner,
    ) {
        let base = self.cfg.ack_timeout.as_secs_f64();
        let factor = self.cfg.ack_random_factor.max(1.0);
        let timeout = Duration::from_secs_f64(base * (1.0 + self.rng.f64() * (factor - 1.0)));
        let next = now + timeout;
        self.outgoing.insert(
            (peer, mid),
            Outgoing {
                bytes,
                retransmits: 0,
                timeout,
                next,
                owner,
            },
        );
        self.timers
            .push(Reverse((next, Timer::Retransmit(peer, mid))));
    }

    pub(super) fn on_retransmit_timer(
        &mut self,
        now: Instant,
        t: Instant,
        peer: SocketAddr,
        mid: u16,
    ) {
        let Some(out) = self.outgoing.get_mut(&(peer, mid)) else {
            return;
        };
        if out.next != t {
            return;
        }
        if out.retransmits >= self.cfg.max_retransmit {
            let owner = out.owner;
            self.outgoing.remove(&(peer, mid));
            match owner {
                Owner::Exchange(id) => self.fail_exchange(now, id, RequestError::Timeout),
                Owner::SeparateResponse => {
                    log::debug!("peer={peer} separate response mid={mid} never acknowledged")
                }
                Owner::Notification(token) => {
                    self.con_notifications.remove(&(peer, token));
                    self.events.push_back(Event::ObserverGone { peer, token })
                }
            }
            return;
        }
        out.retransmits += 1;
        out.timeout *= 2;
        out.next = now + out.timeout;
        self.stats.retransmissions += 1;
        let next = out.next;
        self.transmits.push_back(Transmit {
            peer,
            bytes: out.bytes.clone(),
        });
        self.timers
            .push(Reverse((next, Timer::Retransmit(peer, mid))));
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
