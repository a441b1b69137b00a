//! Queue mode: requests for sleeping devices wait (bounded, persisted) and
//! go out in order while the device is awake.

use super::command::{self, Action, Answer, Method};
use super::{Pending, Persist, Server};
use crate::coap::{RequestError, RequestId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Queue-mode settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// How long a queue-mode device counts as awake after its last message.
    pub awake_window: Duration,
    /// Requests held per sleeping device; more are refused.
    pub max_per_device: usize,
    /// How long a held request may wait before it is dropped.
    pub ttl: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            // CoAP's MAX_TRANSMIT_WAIT, the LwM2M default for queue mode.
            awake_window: Duration::from_secs(93),
            max_per_device: 32,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A held request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecord {
    /// The device.
    pub endpoint: String,
    /// Order of arrival, gateway-wide.
    pub seq: u64,
    /// Command method.
    pub method: String,
    /// Command parameters, JSON text.
    pub params: String,
    /// When it was queued (Unix ms).
    pub queued_ms: u64,
    /// When it is dropped unless sent (Unix ms).
    pub expires_ms: u64,
}

/// A held request.
pub(super) struct Queued {
    pub(super) seq: u64,
    pub(super) method: Method,
    pub(super) params: Json,
    /// Who waits for the outcome (none after a restart).
    pub(super) handle: Option<u64>,
    pub(super) queued_ms: u64,
    pub(super) expires_ms: u64,
    /// Made by the gateway (the profile on registration): not stored, and
    /// its outcome is only logged.
    pub(super) internal: bool,
}

/// One device's held requests.
#[derive(Default)]
pub(super) struct DeviceQueue {
    pub(super) items: VecDeque<Queued>,
    pub(super) in_flight: Option<RequestId>,
}

impl Server {
    /// Can a request go to this device now? Always for devices not in
    /// queue mode; for the others only while awake.
    pub(super) fn reachable(&self, now: Instant, endpoint: &str) -> bool {
        match self.registry.get(endpoint) {
            Some(reg) if reg.queue_mode => self.awake_until.get(endpoint).is_some_and(|t| *t > now),
            Some(_) => true,
            None => false,
        }
    }

    /// Must a command for this device wait in its queue?
    pub(super) fn must_queue(&self, now: Instant, endpoint: &str) -> bool {
        let busy = self
            .queues
            .get(endpoint)
            .is_some_and(|q| !q.items.is_empty() || q.in_flight.is_some());
        self.registry.get(endpoint).is_some_and(|r| r.queue_mode)
            && (busy || !self.reachable(now, endpoint))
    }

    /// Holds a checked command for a sleeping device; answers QUEUED.
    pub(super) fn enqueue(
        &mut self,
        now: Instant,
        handle: u64,
        endpoint: &str,
        method: Method,
        params: &Json,
    ) -> Answer {
        self.arm_sweep(now);
        let max = self.queue_cfg.max_per_device;
        let q = self.queues.entry(endpoint.into()).or_default();
        if q.items.len() >= max {
            log::warn!(
                "ep={endpoint} {} refused: {max} requests already queued",
                method.name()
            );
            return Answer::fail(
                "SERVICE_UNAVAILABLE",
                format!("{max} requests already wait for this sleeping device"),
            );
        }
        self.next_seq += 1;
        let now_ms = self.last_unix_ms;
        let item = Queued {
            seq: self.next_seq,
            method,
            params: params.clone(),
            handle: Some(handle),
            queued_ms: now_ms,
            expires_ms: now_ms + self.queue_cfg.ttl.as_millis() as u64,
            internal: false,
        };
        self.persist
            .push_back(Persist::Queued(record(endpoint, &item)));
        let position = q.items.len() + q.in_flight.is_some() as usize + 1;
        log::info!(
            "ep={endpoint} {} #{} queued until the device wakes (position {position})",
            method.name(),
            item.seq
        );
        let seq = item.seq;
        q.items.push_back(item);
        Answer::ok("QUEUED", Some(json!({"seq": seq, "position": position})))
    }

    /// Makes sure held requests are checked for expiry within a second.
    pub(super) fn arm_sweep(&mut self, now: Instant) {
        self.next_sweep.get_or_insert(now + Duration::from_secs(1));
    }

    /// Puts back a stored request at start-up. Nobody waits for its
    /// outcome any more; it is logged when it comes.
    pub fn restore_queued(&mut self, now: Instant, rec: &QueuedRecord) -> bool {
        self.arm_sweep(now);
        let (Some(method), Ok(params)) = (
            Method::parse(&rec.method),
            serde_json::from_str::<Json>(&rec.params),
        ) else {
            log::warn!(
                "ep={} stored request #{} is unusable; dropped",
                rec.endpoint,
                rec.seq
            );
            return false;
        };
        self.next_seq = self.next_seq.max(rec.seq);
        self.queues
            .entry(rec.endpoint.as_str().into())
            .or_default()
            .items
            .push_back(Queued {
                seq: rec.seq,
                method,
                params,
                handle: None,
                queued_ms: rec.queued_ms,
                expires_ms: rec.expires_ms,
                internal: false,
            });
        true
    }

    /// Requests held, all devices together.
    pub fn queued_count(&self) -> usize {
        self.queues
            .values()
            .map(|q| q.items.len() + q.in_flight.is_some() as usize)
            .sum()
    }

    /// A datagram came from `peer`: a queue-mode device is awake for the
    /// configured window, and its held requests start to go out.
    pub(super) fn touch(&mut self, now: Instant, peer: std::net::SocketAddr) {
        let Some(reg) = self.registry.get_by_peer(peer) else {
            return;
        };
        if !reg.queue_mode {
            return;
        }
        let ep: Box<str> = reg.endpoint.as_str().into();
        let window = self
            .profile_of(&ep)
            .and_then(|r| r.profile.awake_window_s)
            .map_or(self.queue_cfg.awake_window, Duration::from_secs);
        self.awake_until.insert(ep.clone(), now + window);
        self.drain_queue(now, &ep);
    }

    /// Sends the device's next held request, if it is awake and none is
    /// in flight; one at a time keeps them in order.
    pub(super) fn drain_queue(&mut self, now: Instant, endpoint: &str) {
        loop {
            if !self.reachable(now, endpoint) {
                return;
            }
            let Some(q) = self.queues.get_mut(endpoint) else {
                return;
            };
            if q.in_flight.is_some() {
                return;
            }
            let Some(item) = q.items.pop_front() else {
                self.queues.remove(endpoint);
                return;
            };
            if item.expires_ms <= self.last_unix_ms {
                self.queued_done(endpoint, item, expired());
                continue;
            }
            let Some(reg) = self.registry.get(endpoint) else {
                return;
            };
            let peer = reg.peer;
            // Planned again: the device may have re-registered with other objects.
            let profile = self.profile_of(endpoint).map(|r| &**r);
            let plan = match command::plan(reg, &self.models, profile, item.method, &item.params) {
                Ok(Action::Send(plan)) => plan,
                Ok(_) => {
                    self.queued_done(endpoint, item, Answer::bad_request("not a device request"));
                    continue;
                }
                Err(e) => {
                    self.queued_done(endpoint, item, Answer::bad_request(e));
                    continue;
                }
            };
            match self.engine.request(now, peer, plan.msg) {
                Ok(id) => {
                    log::info!(
                        "ep={endpoint} sending queued {} #{}",
                        item.method.name(),
                        item.seq
                    );
                    if let Some(q) = self.queues.get_mut(endpoint) {
                        q.in_flight = Some(id);
                    }
                    self.pending.insert(
                        id,
                        Pending {
                            handle: item.handle.unwrap_or(0),
                            endpoint: endpoint.into(),
                            expect: plan.expect,
                            queued: Some(item),
                        },
                    );
                    return;
                }
                Err(e) => {
                    // The engine is full: keep it for the next wake-up.
                    log::warn!("ep={endpoint} queued request not sent: {e}");
                    if let Some(q) = self.queues.get_mut(endpoint) {
                        q.items.push_front(item);
                    }
                    return;
                }
            }
        }
    }

    /// A queued request went out and ended: a timeout means the device
    /// fell asleep first, so the request goes back to the head of its
    /// queue; any other outcome is final.
    pub(super) fn queued_answered(
        &mut self,
        now: Instant,
        endpoint: &str,
        item: Queued,
        outcome: Result<Answer, RequestError>,
    ) {
        if let Some(q) = self.queues.get_mut(endpoint) {
            q.in_flight = None;
        }
        match outcome {
            Err(RequestError::Timeout) if self.registry.get(endpoint).is_some() => {
                log::info!(
                    "ep={endpoint} queued {} #{} not answered; held for the next wake-up",
                    item.method.name(),
                    item.seq
                );
                self.awake_until.remove(endpoint);
                self.queues
                    .entry(endpoint.into())
                    .or_default()
                    .items
                    .push_front(item);
            }
            Err(e) => {
                let a = Answer::fail(super::failure_name(e), e.to_string());
                self.queued_done(endpoint, item, a);
                self.drain_queue(now, endpoint);
            }
            Ok(a) => {
                self.queued_done(endpoint, item, a);
                self.drain_queue(now, endpoint);
            }
        }
    }

    /// A held request is finished: removed from the store, outcome given.
    fn queued_done(&mut self, endpoint: &str, item: Queued, answer: Answer) {
        if item.internal {
            if !answer.is_success() {
                log::info!(
                    "ep={endpoint} profile {} {}: {}{}",
                    item.method.name(),
                    item.params.get("id").and_then(Json::as_str).unwrap_or(""),
                    answer.result,
                    answer
                        .error
                        .as_deref()
                        .map_or(String::new(), |e| format!(" ({e})"))
                );
            }
            return;
        }
        log::info!(
            "ep={endpoint} queued {} #{} (waited {} s): {}{}",
            item.method.name(),
            item.seq,
            self.last_unix_ms.saturating_sub(item.queued_ms) / 1000,
            answer.result,
            answer
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(" ({e})"))
        );
        self.persist.push_back(Persist::QueuedGone {
            endpoint: endpoint.into(),
            seq: item.seq,
        });
        if let Some(h) = item.handle {
            self.answers.push_back((h, answer));
        }
    }

    /// Drops held requests past their time.
    pub(super) fn expire_queued(&mut self) {
        let now_ms = self.last_unix_ms;
        let mut gone = Vec::new();
        for (ep, q) in &mut self.queues {
            while let Some(pos) = q.items.iter().position(|i| i.expires_ms <= now_ms) {
                if let Some(item) = q.items.remove(pos) {
                    gone.push((ep.clone(), item));
                }
            }
        }
        for (ep, item) in gone {
            self.queued_done(&ep, item, expired());
        }
        self.queues
            .retain(|_, q| !q.items.is_empty() || q.in_flight.is_some());
    }

    /// A device left: its held requests end with DEVICE_NOT_REGISTERED.
    pub(super) fn drop_queue(&mut self, endpoint: &str) {
        self.awake_until.remove(endpoint);
        let Some(q) = self.queues.remove(endpoint) else {
            return;
        };
        for item in q.items {
            let a = Answer::fail("DEVICE_NOT_REGISTERED", "the device left before it woke up");
            self.queued_done(endpoint, item, a);
        }
    }
}

fn expired() -> Answer {
    Answer::fail("EXPIRED", "the device did not wake up in time")
}

/// The stored form of a held request.
fn record(endpoint: &str, q: &Queued) -> QueuedRecord {
    QueuedRecord {
        endpoint: endpoint.to_string(),
        seq: q.seq,
        method: q.method.name().to_string(),
        params: q.params.to_string(),
        queued_ms: q.queued_ms,
        expires_ms: q.expires_ms,
    }
}
