//! Observe (RFC 7641) on both sides: observations we hold (ordering,
//! block-wise notifications, adoption after a restart, proactive cancel)
//! and notifications we send to observers.

use super::exchange::{Exchange, Follow};
use super::message::Owner;
use super::{Engine, EngineError, Event, RequestId, Transmit};
use crate::coap::msg::{opt, BlockOpt, Message, MsgType};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl Engine {
    /// Takes back an observation established before a restart: `request`
    /// is the original Observe request with its token. Nothing is sent;
    /// notifications carrying that token from `peer` come out as
    /// `Event::Notification` for the returned id.
    pub fn adopt_observation(
        &mut self,
        peer: SocketAddr,
        mut request: Message,
    ) -> Result<RequestId, EngineError> {
        request.shrink_to_fit();
        if !request.code.is_request() {
            return Err(EngineError::NotARequest);
        }
        if self.established >= self.cfg.max_observations
            || self.by_token.contains_key(&(peer, request.token))
        {
            self.stats.overload_refusals += 1;
            return Err(EngineError::Busy);
        }
        let id = self.next_exchange;
        self.next_exchange += 1;
        self.by_token.insert((peer, request.token), id);
        self.exchanges.insert(
            id,
            Exchange {
                peer,
                token: request.token,
                request,
                mid: None,
                started: false,
                block1: None,
                block2_acc: None,
                next_block2: None,
                observe: true,
                established: true,
                deadline: None,
                last_seq: None,
                follows: None,
                one_block: false,
            },
        );
        self.established += 1;
        Ok(RequestId(id))
    }

    /// Ends an established observation proactively (RFC 7641 3.6): sends
    /// the Observe request again with Observe=1 and the same token. The
    /// answer comes out as an `Event::Response` for the returned id.
    pub fn cancel_observation(
        &mut self,
        now: Instant,
        id: RequestId,
    ) -> Result<RequestId, EngineError> {
        let Some(x) = self.exchanges.get(&id.0) else {
            return Err(EngineError::NotARequest);
        };
        let (peer, mut msg) = (x.peer, x.request.clone());
        msg.token = x.token;
        self.finish_exchange(now, id.0);
        self.check_room(now, peer)?;
        msg.set_uint_option(opt::OBSERVE, 1);
        self.start_exchange(now, peer, msg, None).map(RequestId)
    }

    /// Sends a notification to an observer (the server side of RFC 7641):
    /// `msg` is a CON or NON response carrying the observer's token and an
    /// Observe option. A Reset, or a confirmable one never acknowledged,
    /// comes back as `Event::ObserverGone`.
    pub fn notify(&mut self, now: Instant, peer: SocketAddr, mut msg: Message) {
        msg.mid = self.next_mid(now, peer);
        let bytes = msg.encode();
        if msg.mtype == MsgType::Con {
            // RFC 7641 4.5.2: a newer notification replaces one still in
            // transit, so an observer that is slow to acknowledge does not
            // get every stale state retransmitted.
            if let Some(old) = self.con_notifications.insert((peer, msg.token), msg.mid) {
                self.outgoing.remove(&(peer, old));
            }
            let owner = Owner::Notification(msg.token);
            self.track_con(now, peer, msg.mid, bytes.clone(), owner);
        } else {
            // A Reset to a NON notification names only its message id.
            let key = (peer, msg.mid);
            if self.non_notifications.insert(key, msg.token).is_none() {
                self.non_order.push_back(key);
            }
            while self.non_order.len() > self.cfg.max_dedup {
                if let Some(old) = self.non_order.pop_front() {
                    self.non_notifications.remove(&old);
                }
            }
        }
        self.transmits.push_back(Transmit { peer, bytes });
    }

    /// A notification for established observation `id`: dropped when
    /// older than one already delivered, followed when block-wise.
    pub(super) fn on_notification(&mut self, now: Instant, id: u64, msg: Message) {
        let Some(x) = self.exchanges.get_mut(&id) else {
            return;
        };
        let peer = x.peer;
        if let Some(v2) = msg.observe() {
            if let Some((v1, t1)) = x.last_seq {
                if !is_fresh(v1, t1, v2, now) {
                    self.stats.stale_notifications += 1;
                    log::trace!("peer={peer} stale notification {v2} after {v1} dropped");
                    return;
                }
            }
            x.last_seq = Some((v2, now));
        }
        match msg.block2() {
            Some(Ok(b2)) if b2.more && b2.num == 0 => {
                if msg.payload.len() != b2.size() || !msg.code.is_success() {
                    log::debug!("peer={peer} block-wise notification with a bad first block");
                    return;
                }
                // RFC 7959 3.4: the rest is fetched with plain GETs (no
                // Observe) under a token of its own.
                let mut req = x.request.clone();
                req.remove_option(opt::OBSERVE);
                req.mtype = MsgType::Con;
                if self.check_room(now, peer).is_err() {
                    log::debug!("peer={peer} block-wise notification dropped: too busy");
                    return;
                }
                req.token = self.new_token(peer);
                let mut first = msg.clone();
                first.payload.clear();
                let follow = Follow {
                    observation: id,
                    acc: (msg.payload, first),
                    next: BlockOpt::new(1, false, b2.szx),
                };
                let _ = self.start_exchange(now, peer, req, Some(follow));
            }
            _ => self.events.push_back(Event::Notification {
                id: RequestId(id),
                peer,
                msg,
            }),
        }
    }
}

/// RFC 7641 3.4: is notification `v2`, arriving at `t2`, newer than
/// `v1`, which arrived at `t1`? Observe values are 24-bit and wrap.
pub(super) fn is_fresh(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t2.saturating_duration_since(t1) > Duration::from_secs(128)
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
