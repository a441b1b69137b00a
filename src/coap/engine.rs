//! Sans-IO CoAP endpoint: reliability, deduplication, block-wise transfer, tokens.
//!
//! The engine never reads a clock or touches a socket. Callers feed it
//! datagrams and the current time, and drain datagrams to send, the next
//! deadline and events. Every table a peer can grow is bounded by `Config`.

use super::msg::{opt, BlockOpt, Code, Message, MsgType, Token};
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
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
}

#[derive(Debug)]
enum Dedup {
    InProgress,
    Reply(Vec<u8>),
}

#[derive(Debug)]
struct DedupEntry {
    state: Dedup,
    expires: Instant,
}

#[derive(Debug)]
struct Incoming {
    peer: SocketAddr,
    mid: u16,
    token: Token,
    mtype: MsgType,
    acked: bool,
    block1: Option<BlockOpt>,
    block2: Option<BlockOpt>,
    fingerprint: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Exchange(u64),
    SeparateResponse,
    Notification(Token),
}

#[derive(Debug)]
struct Outgoing {
    bytes: Vec<u8>,
    retransmits: u32,
    timeout: Duration,
    next: Instant,
    owner: Owner,
}

#[derive(Debug)]
struct Exchange {
    peer: SocketAddr,
    token: Token,
    request: Message,
    mid: Option<u16>,
    started: bool,
    block1: Option<(u8, usize)>,
    block2_acc: Option<(Vec<u8>, Message)>,
    next_block2: Option<BlockOpt>,
    observe: bool,
    established: bool,
    deadline: Option<Instant>,
    /// Observe value and arrival of the freshest notification so far.
    last_seq: Option<(u32, Instant)>,
    /// For a fetch of a block-wise notification's later blocks: the observation.
    follows: Option<u64>,
}

#[derive(Debug)]
struct PeerState {
    next_mid: u16,
    active: usize,
    queue: VecDeque<u64>,
    last_used: Instant,
}

#[derive(Debug)]
struct Assembly {
    buf: Vec<u8>,
    expires: Instant,
}

#[derive(Debug)]
struct CachedBody {
    template: Message,
    body: Vec<u8>,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retransmit(SocketAddr, u16),
    ExchangeDeadline(u64),
    IncomingExpire(u64),
}

type BlockKey = (SocketAddr, u64);

/// The fetch of a block-wise notification's later blocks.
struct Follow {
    observation: u64,
    acc: (Vec<u8>, Message),
    next: BlockOpt,
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
    stats: Stats,
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
            stats: Stats::default(),
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
                log::debug!(
                    "peer={peer} malformed CoAP datagram ({} bytes): {e}",
                    bytes.len()
                );
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

    /// Answers a request from `Event::Request`. Large bodies go out
    /// block-wise; late answers go out as separate responses.
    pub fn respond(&mut self, now: Instant, id: IncomingId, resp: Message) {
        let Some(inc) = self.incoming.remove(&id.0) else {
            log::debug!("response for unknown or expired request {}", id.0);
            return;
        };
        self.send_response(now, inc, resp);
    }

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
    fn check_room(&mut self, now: Instant, peer: SocketAddr) -> Result<(), EngineError> {
        // Established observations have their own bound.
        if self.exchanges.len() - self.established >= self.cfg.max_exchanges
            || (!self.peers.contains_key(&peer) && !self.make_room_for_peer(now))
        {
            self.stats.overload_refusals += 1;
            return Err(EngineError::Busy);
        }
        Ok(())
    }

    fn new_token(&mut self, peer: SocketAddr) -> Token {
        loop {
            let t = Token::from_u64(self.rng.u64(..));
            if !self.by_token.contains_key(&(peer, t)) {
                return t;
            }
        }
    }

    /// Starts (or queues behind NSTART) an exchange for `msg`, whose token is set.
    fn start_exchange(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: Message,
        follow: Option<Follow>,
    ) -> Result<u64, EngineError> {
        let token = msg.token;
        let observe = follow.is_none() && msg.observe() == Some(0);
        let (follows, block2_acc, next_block2) = match follow {
            Some(f) => (Some(f.observation), Some(f.acc), Some(f.next)),
            None => (None, None, None),
        };
        let id = self.next_exchange;
        self.next_exchange += 1;
        let block1 = if msg.payload.len() > self.cfg.block_size {
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
        self.exchanges.insert(
            id,
            Exchange {
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

    /// Takes back an observation established before a restart: `request`
    /// is the original Observe request with its token. Nothing is sent;
    /// notifications carrying that token from `peer` come out as
    /// `Event::Notification` for the returned id.
    pub fn adopt_observation(
        &mut self,
        peer: SocketAddr,
        request: Message,
    ) -> Result<RequestId, EngineError> {
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
            },
        );
        self.established += 1;
        Ok(RequestId(id))
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

    /// Forgets a request or observation. A later notification for it is
    /// answered with a Reset (RFC 7641 reactive cancellation).
    pub fn cancel(&mut self, now: Instant, id: RequestId) {
        self.finish_exchange(now, id.0);
    }

    /// Processes every deadline up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, peer, mid)) = self.dedup_order.front() {
            if t > now {
                break;
            }
            self.dedup_order.pop_front();
            if self.dedup.get(&(peer, mid)).is_some_and(|e| e.expires == t) {
                self.dedup.remove(&(peer, mid));
            }
        }
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

    // ----- receiving -----

    /// A message ID seen before: sends the cached answer again, if there is
    /// one, and tells the caller to stop.
    fn replay_duplicate(&mut self, peer: SocketAddr, mid: u16) -> bool {
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

    fn handle_request(&mut self, now: Instant, peer: SocketAddr, mut msg: Message) {
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
                    let szx = self.block_szx(&inc);
                    if let Some(cached) = self.bodies.get(&(peer, fingerprint)) {
                        // Only the asked-for block is copied out of the cache.
                        let out = cut_block(&cached.template, &cached.body, b2.num, szx);
                        return self.send_reply(now, inc, out);
                    }
                }
            }
            None => {}
        }
        match msg.block1() {
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

    /// Adds one Block1 block to its upload. `Ok(Some(body))` when complete,
    /// `Ok(None)` when more blocks are expected, `Err(response)` to refuse.
    fn absorb_block1(
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

    fn handle_ack_or_reset(&mut self, now: Instant, peer: SocketAddr, msg: Message) {
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

    fn handle_separate_response(&mut self, now: Instant, peer: SocketAddr, msg: Message) {
        if self.replay_duplicate(peer, msg.mid) {
            return;
        }
        let Some(&id) = self.by_token.get(&(peer, msg.token)) else {
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

    fn on_response(&mut self, now: Instant, id: u64, msg: Message) {
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
        if let Some(Ok(b2)) = msg.block2() {
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
                    .get_or_insert_with(|| (Vec::new(), msg.clone()));
                acc.0.extend_from_slice(&msg.payload);
                x.next_block2 = Some(BlockOpt::new(b2.num + 1, false, b2.szx));
                return self.transmit_exchange(now, id);
            }
        }
        let mut msg = msg;
        if let Some((mut body, first)) = x.block2_acc.take() {
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

    /// A notification for established observation `id`: dropped when
    /// older than one already delivered, followed when block-wise.
    fn on_notification(&mut self, now: Instant, id: u64, msg: Message) {
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

    // ----- sending -----

    fn transmit_exchange(&mut self, now: Instant, id: u64) {
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

    fn send_response(&mut self, now: Instant, inc: Incoming, mut resp: Message) {
        if let Some(b1) = inc.block1 {
            if resp.option(opt::BLOCK1).is_none() {
                resp.set_option(opt::BLOCK1, b1.encode());
            }
        }
        let szx = self.block_szx(&inc);
        let size = BlockOpt::szx_size(szx);
        let num = inc.block2.map_or(0, |b| b.num);
        if resp.payload.len() > size || num > 0 {
            let body = std::mem::take(&mut resp.payload);
            if resp.option(opt::ETAG).is_none() {
                let mut h = DefaultHasher::new();
                body.hash(&mut h);
                resp.set_option(opt::ETAG, h.finish().to_be_bytes()[..4].to_vec());
            }
            let out = cut_block(&resp, &body, num, szx);
            let more = (num as usize + 1) * size < body.len();
            let key = (inc.peer, inc.fingerprint);
            if more
                && (self.bodies.contains_key(&key)
                    || self.block_states() < self.cfg.max_block_states)
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
            resp = out;
        }
        self.send_reply(now, inc, resp);
    }

    /// The block size exponent for an answer: ours, or smaller if the peer asked.
    fn block_szx(&self, inc: &Incoming) -> u8 {
        let ours = BlockOpt::szx_for(self.cfg.block_size);
        inc.block2.map_or(ours, |b| b.szx.min(ours))
    }

    /// Sends an answer as piggybacked ACK, separate CON or NON, as the
    /// request's type and progress require.
    fn send_reply(&mut self, now: Instant, inc: Incoming, mut resp: Message) {
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

    fn send_empty_ack_for(&mut self, now: Instant, id: u64) {
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

    fn send_reset(&mut self, peer: SocketAddr, mid: u16) {
        self.transmits.push_back(Transmit {
            peer,
            bytes: Message::new(MsgType::Rst, Code::EMPTY, mid, Token::EMPTY).encode(),
        });
    }

    fn track_con(
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

    fn on_retransmit_timer(&mut self, now: Instant, t: Instant, peer: SocketAddr, mid: u16) {
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

    // ----- bookkeeping -----

    fn remember(&mut self, now: Instant, peer: SocketAddr, mid: u16, mtype: MsgType, state: Dedup) {
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

    fn next_mid(&mut self, now: Instant, peer: SocketAddr) -> u16 {
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
    fn make_room_for_peer(&mut self, now: Instant) -> bool {
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

    /// Queues an expiry check for a block-wise state, keeping the queue
    /// sorted and no longer than a small multiple of the state table.
    fn push_block_expiry(&mut self, at: Instant, key: BlockKey) {
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

    fn block_states(&self) -> usize {
        self.assemblies.len() + self.bodies.len()
    }

    fn fail_exchange(&mut self, now: Instant, id: u64, error: RequestError) {
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

    fn finish_exchange(&mut self, now: Instant, id: u64) {
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

    fn release_slot(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(ps) = self.peers.get_mut(&peer) {
            ps.active = ps.active.saturating_sub(1);
        }
        self.start_queued(now, peer);
    }

    fn start_queued(&mut self, now: Instant, peer: SocketAddr) {
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

/// Block `num` of `body` as an answer built on `template` (which carries
/// code and options, no payload); 4.02 when the block lies past the end.
fn cut_block(template: &Message, body: &[u8], num: u32, szx: u8) -> Message {
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

/// RFC 7641 3.4: is notification `v2`, arriving at `t2`, newer than
/// `v1`, which arrived at `t1`? Observe values are 24-bit and wrap.
fn is_fresh(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t2.saturating_duration_since(t1) > Duration::from_secs(128)
}

/// A response with a diagnostic payload (RFC 7252 5.5.2).
pub fn error_response(code: Code, diagnostic: &str) -> Message {
    let mut m = Message::new(MsgType::Ack, code, 0, Token::EMPTY);
    m.payload = diagnostic.as_bytes().to_vec();
    m
}

/// Identifies the resource a request targets, across the blocks of one
/// transfer (RFC 7959 2.5: blocks are matched by endpoint and request URI).
fn fingerprint(m: &Message) -> u64 {
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
#[path = "engine_tests.rs"]
mod tests;
