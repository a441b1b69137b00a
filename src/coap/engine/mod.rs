//! Sans-IO CoAP endpoint: the engine's state and its public face. Each
//! concern has its own file: the message layer (`message`), requests from
//! peers (`incoming`), our requests and their matching (`exchange`),
//! block-wise transfer (`blockwise`) and observe (`observe`).
//!
//! The engine never reads a clock or touches a socket. Callers feed it
//! datagrams and the current time, and drain datagrams to send, the next
//! deadline and events. Every table a peer can grow is bounded by `Config`.

mod blockwise;
mod exchange;
mod incoming;
mod message;
mod observe;

use super::msg::{Code, Message, MsgType, Token};
use blockwise::{Assembly, BlockKey, CachedBody};
use exchange::Exchange;
use incoming::Incoming;
use message::{DedupEntry, Outgoing, PeerState};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Transmission parameters and table bounds.
#[derive(Debug, Clone)]
pub struct Config {
    /// ACK_TIMEOUT.
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR (at least 1.0).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u32,
    /// NSTART: outstanding requests per peer; further ones wait in a queue.
    pub nstart: usize,
    /// EXCHANGE_LIFETIME: how long a confirmable message ID is remembered.
    pub exchange_lifetime: Duration,
    /// NON_LIFETIME: how long a non-confirmable message ID is remembered.
    pub non_lifetime: Duration,
    /// How long the application may take before an empty ACK goes out and
    /// the answer becomes a separate response.
    pub piggyback_window: Duration,
    /// How long a request waits for a separate or non-confirmable response.
    pub response_timeout: Duration,
    /// Preferred block size (16..=1024, a power of two).
    pub block_size: usize,
    /// Largest body assembled from blocks, either direction.
    pub max_body_size: usize,
    /// Remembered message IDs (deduplication cache entries).
    pub max_dedup: usize,
    /// Requests handed to the application and not yet answered.
    pub max_incoming: usize,
    /// Client exchanges in flight or queued, all peers together.
    pub max_exchanges: usize,
    /// Established observations, all peers together.
    pub max_observations: usize,
    /// Requests queued behind NSTART for one peer.
    pub max_queue_per_peer: usize,
    /// Peers with message-ID state.
    pub max_peers: usize,
    /// Block-wise transfers in progress (uploads plus cached large bodies).
    pub max_block_states: usize,
    /// Block1 uploads are put together before the application sees them,
    /// except to these paths (`5/0/0`), whose blocks are handed over as
    /// they come (a device streaming a firmware package to flash).
    pub stream_block1: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
            exchange_lifetime: Duration::from_secs(247),
            non_lifetime: Duration::from_secs(145),
            piggyback_window: Duration::from_millis(1500),
            response_timeout: Duration::from_secs(93),
            block_size: 1024,
            max_body_size: 1 << 20,
            max_dedup: 65_536,
            max_incoming: 4096,
            max_exchanges: 16_384,
            max_observations: 200_000,
            max_queue_per_peer: 32,
            max_peers: 65_536,
            max_block_states: 1024,
            stream_block1: Vec::new(),
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub peer: SocketAddr,
    /// Encoded CoAP message.
    pub bytes: Vec<u8>,
}

/// Handle of a request received from a peer, to answer with `respond`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncomingId(pub u64);

/// Handle of a request this endpoint sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Why a request of ours ended without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// No acknowledgement after MAX_RETRANSMIT, or no response in time.
    Timeout,
    /// The peer answered with a Reset.
    Reset,
    /// A block-wise response grew past `max_body_size`.
    TooLarge,
    /// The peer broke the block-wise sequence.
    BlockMismatch,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestError::Timeout => "timeout",
            RequestError::Reset => "reset by peer",
            RequestError::TooLarge => "response too large",
            RequestError::BlockMismatch => "block-wise sequence broken by peer",
        })
    }
}

/// Why the engine refused to start a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    /// The exchange table or the peer's queue is full.
    Busy,
    /// The request is not a request (code class 0) or not CON/NON.
    NotARequest,
    /// The payload is larger than `max_body_size`.
    TooLarge,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineError::Busy => "too many requests in flight",
            EngineError::NotARequest => "message is not a CON or NON request",
            EngineError::TooLarge => "request body too large",
        })
    }
}

impl std::error::Error for EngineError {}

/// What the engine reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request for the application, reassembled if it came in blocks.
    Request {
        /// Answer with `respond(id, ..)`.
        id: IncomingId,
        /// Sender.
        peer: SocketAddr,
        /// The request.
        msg: Message,
    },
    /// The final response to one of our requests, reassembled if in blocks.
    Response {
        /// Our request.
        id: RequestId,
        /// Responder.
        peer: SocketAddr,
        /// The response.
        msg: Message,
    },
    /// A later notification for one of our observe requests.
    Notification {
        /// The observe request.
        id: RequestId,
        /// Sender.
        peer: SocketAddr,
        /// The notification.
        msg: Message,
    },
    /// A peer answered one of our notifications with a Reset, or never
    /// acknowledged a confirmable one: it no longer observes.
    ObserverGone {
        /// The observer.
        peer: SocketAddr,
        /// The observation's token.
        token: Token,
    },
    /// One of our requests ended without a response.
    Failed {
        /// Our request.
        id: RequestId,
        /// Peer.
        peer: SocketAddr,
        /// Why.
        error: RequestError,
    },
}

/// Counters for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Datagrams that did not decode.
    pub malformed: u64,
    /// Duplicates answered from the cache or ignored.
    pub duplicates: u64,
    /// Our confirmable messages sent again.
    pub retransmissions: u64,
    /// Requests refused because a table was full.
    pub overload_refusals: u64,
    /// Notifications older than one already delivered (RFC 7641 3.4), dropped.
    pub stale_notifications: u64,
    /// Datagrams larger than the receive buffer (requests among them answered 4.13).
    pub oversize: u64,
    /// Responses with an unknown token held while observations were being
    /// restored, and replayed once they were.
    pub held: u64,
    /// Such responses past the hold's bound, dropped without a Reset.
    pub held_dropped: u64,
}

/// Most responses held while observations are restored; a device whose
/// notification is dropped past it is not reset, and a confirmable one is
/// sent again by the device.
pub const MAX_HELD: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Retransmit(SocketAddr, u16),
    ExchangeDeadline(u64),
    IncomingExpire(u64),
}

/// The CoAP endpoint state machine.
pub struct Engine {
    cfg: Config,
    rng: fastrand::Rng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    dedup: HashMap<(SocketAddr, u16), DedupEntry>,
    dedup_order: VecDeque<(Instant, SocketAddr, u16)>,
    next_incoming: u64,
    incoming: HashMap<u64, Incoming>,
    piggyback_order: VecDeque<(Instant, u64)>,
    outgoing: HashMap<(SocketAddr, u16), Outgoing>,
    next_exchange: u64,
    exchanges: HashMap<u64, Exchange>,
    by_token: HashMap<(SocketAddr, Token), u64>,
    established: usize,
    /// NON notifications sent lately, so a Reset (which names only the
    /// message id) can be matched to its observer; oldest first out.
    non_notifications: HashMap<(SocketAddr, u16), Token>,
    non_order: VecDeque<(SocketAddr, u16)>,
    /// The confirmable notification in transit per observer.
    con_notifications: HashMap<(SocketAddr, Token), u16>,
    peers: HashMap<SocketAddr, PeerState>,
    assemblies: HashMap<BlockKey, Assembly>,
    bodies: HashMap<BlockKey, CachedBody>,
    block_order: VecDeque<(Instant, BlockKey)>,
    /// While observations are being restored, responses whose token is not
    /// known yet wait here instead of being reset (which would cancel the
    /// device's side of an observation about to be restored).
    held: Option<VecDeque<(SocketAddr, Message)>>,
    stats: Stats,
    /// Lines about malformed datagrams, bounded.
    bad_log: crate::logging::LogLimit,
}

impl Engine {
    /// A new engine; `seed` feeds the token and message-ID generator and
    /// should come from the OS random source outside tests.
    pub fn new(cfg: Config, seed: u64) -> Engine {
        Engine {
            cfg,
            rng: fastrand::Rng::with_seed(seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: BinaryHeap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            next_incoming: 1,
            incoming: HashMap::new(),
            piggyback_order: VecDeque::new(),
            outgoing: HashMap::new(),
            next_exchange: 1,
            exchanges: HashMap::new(),
            by_token: HashMap::new(),
            established: 0,
            non_notifications: HashMap::new(),
            non_order: VecDeque::new(),
            con_notifications: HashMap::new(),
            peers: HashMap::new(),
            assemblies: HashMap::new(),
            bodies: HashMap::new(),
            block_order: VecDeque::new(),
            held: None,
            stats: Stats::default(),
            bad_log: crate::logging::LogLimit::new(50, Duration::from_secs(10)),
        }
    }

    /// From now on, responses with an unknown token are held (up to
    /// [`MAX_HELD`]) rather than reset, until [`Engine::release_held`].
    pub fn hold_unknown_responses(&mut self) {
        self.held.get_or_insert_with(VecDeque::new);
    }

    /// Ends the hold and feeds each held response again, now that the
    /// observations they belong to are known; what is still unknown is
    /// reset as usual.
    pub fn release_held(&mut self, now: Instant) {
        for (peer, msg) in self.held.take().unwrap_or_default() {
            self.handle_separate_response(now, peer, msg);
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Earliest instant at which `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.peek().map(|Reverse((t, _))| *t),
            self.dedup_order.front().map(|e| e.0),
            self.piggyback_order.front().map(|e| e.0),
            self.block_order.front().map(|e| e.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                if let Some(held) = self.bad_log.check(now) {
                    log::info!(
                        "peer={peer} malformed CoAP datagram ({} bytes): {e}{}",
                        bytes.len(),
                        crate::logging::held_note(held)
                    );
                }
                // RFC 7252 4.2: a confirmable message that cannot be processed is rejected with RST.
                if let Some((MsgType::Con, mid)) = Message::peek_header(bytes) {
                    self.send_reset(peer, mid);
                }
                return;
            }
        };
        match msg.mtype {
            MsgType::Ack | MsgType::Rst => self.handle_ack_or_reset(now, peer, msg),
            MsgType::Con | MsgType::Non => {
                if msg.code == Code::EMPTY {
                    if msg.mtype == MsgType::Con {
                        // CoAP ping.
                        self.send_reset(peer, msg.mid);
                    }
                } else if msg.code.is_request() {
                    self.handle_request(now, peer, msg);
                } else {
                    self.handle_separate_response(now, peer, msg);
                }
            }
        }
    }

    /// Processes every deadline up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_dedup(now);
        self.expire_piggyback(now);
        self.expire_blocks(now);
        while let Some(Reverse((t, timer))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Retransmit(peer, mid) => self.on_retransmit_timer(now, t, peer, mid),
                Timer::ExchangeDeadline(id) => {
                    if self.exchanges.get(&id).and_then(|x| x.deadline) == Some(t) {
                        self.fail_exchange(now, id, RequestError::Timeout);
                    }
                }
                Timer::IncomingExpire(id) => {
                    if let Some(inc) = self.incoming.remove(&id) {
                        log::debug!(
                            "peer={} request never answered by the application",
                            inc.peer
                        );
                    }
                }
            }
        }
    }
}

/// A response with a diagnostic payload (RFC 7252 5.5.2).
pub fn error_response(code: Code, diagnostic: &str) -> Message {
    let mut m = Message::new(MsgType::Ack, code, 0, Token::EMPTY);
    m.payload = diagnostic.as_bytes().to_vec();
    m
}

#[cfg(test)]
mod test_util;

#[cfg(test)]
mod tests;
