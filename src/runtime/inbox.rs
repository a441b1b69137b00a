//! The receive thread of one UDP socket: it drains the kernel's queue in
//! batches, drops what is not even a frame of the port's protocol, and
//! queues the rest in two lanes: sources within their rate in the first,
//! which the loop always empties first, over-rate sources in the second.
//!
//! The event loop stops reading while it stores, flushes and sends; under
//! a flood the kernel's queue then fills, and the kernel drops datagrams
//! of known devices as readily as garbage. This thread does nothing but
//! read, so the kernel's queue stays short, and a flooding source only
//! delays and loses its own datagrams.

use crate::dtls::hello::NotARecord;
use crate::logging::LogLimit;
use smol::channel::{Receiver, Sender};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Datagrams taken from the kernel per system call.
const RECV_BATCH: usize = 64;
/// Second-lane datagrams the loop takes per turn: a turn spent on a flood
/// is a turn a device's answer waits for.
const SECOND_LANE_TURN: usize = 32;
/// Second-lane datagrams the loop takes per second at most. Without a
/// bound the loop spends every spare cycle answering a flood (measured:
/// 89% of a core, 40% of it in sendto), and a device's Read then waits for
/// the CPU behind it. No device sends over `coap.source_rate` in normal
/// use, so this lane only serves bursts and floods.
const SECOND_LANE_RATE: f64 = 5_000.0;
/// Batches closer together than this are a stream...
const STREAM_GAP: Duration = Duration::from_micros(500);
/// ...and the thread pauses this long after a partial batch of one.
const STREAM_PAUSE: Duration = Duration::from_micros(100);
/// Sources whose rate is tracked; past it, idle ones are forgotten.
const MAX_SOURCES: usize = 16_384;

/// What the port carries, for the cheap first look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    /// CoAP over UDP (RFC 7252).
    Coap,
    /// DTLS records.
    Dtls,
}

/// Why the first look dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Junk {
    /// Shorter than the protocol's header.
    Short,
    /// A DTLS content type DTLS 1.0/1.2 does not send.
    ContentType,
    /// A CoAP version other than 1, or a major version other than DTLS's.
    Version,
}

impl Junk {
    /// Every reason, in the order of [`Counters::junk`].
    pub const ALL: [Junk; 3] = [Junk::Short, Junk::ContentType, Junk::Version];

    /// The name under `junkBy` in `stats`.
    pub fn name(self) -> &'static str {
        match self {
            Junk::Short => "short",
            Junk::ContentType => "contentType",
            Junk::Version => "version",
        }
    }
}

impl Frames {
    /// Whether `b` could be a frame at all, or why not. Only what RFC 7252
    /// (and the DTLS record layer) says to drop silently is dropped here;
    /// anything that might earn an answer goes on to the loop.
    pub fn look(self, b: &[u8]) -> Result<(), Junk> {
        match self {
            Frames::Coap if b.len() < 4 => Err(Junk::Short),
            Frames::Coap if b[0] >> 6 != 1 => Err(Junk::Version),
            Frames::Coap => Ok(()),
            Frames::Dtls => crate::dtls::hello::record_header(b).map_err(|e| match e {
                NotARecord::Short => Junk::Short,
                NotARecord::ContentType => Junk::ContentType,
                NotARecord::Version => Junk::Version,
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Frames::Coap => "CoAP message",
            Frames::Dtls => "DTLS record",
        }
    }
}

/// One datagram as the thread took it.
#[derive(Debug)]
pub struct Datagram {
    /// Its bytes, cut at the largest accepted size plus one.
    pub bytes: Box<[u8]>,
    /// The sender, IPv4 as IPv4 also on a dual-stack socket.
    pub peer: SocketAddr,
    /// The gateway address it was sent to, where the kernel said.
    pub local: Option<IpAddr>,
}

/// What the thread counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams read from the kernel.
    pub received: AtomicU64,
    /// Not a frame of this port's protocol, by [`Junk::ALL`]'s reasons.
    pub junk: [AtomicU64; 3],
    /// From a source over its rate, with the second lane full.
    pub limited: AtomicU64,
    /// From a source within its rate, with the first lane full.
    pub overflow: AtomicU64,
}

/// The loop's side: the queue, the counters, and the thread.
pub struct Inbox {
    lanes: Arc<Lanes>,
    /// A token whenever the thread queued something.
    wake: Receiver<()>,
    /// Second-lane datagrams left to take this turn.
    budget: Mutex<Budget>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    fd: RawFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the loop may still take from the second lane: a token bucket
/// refilled at [`SECOND_LANE_RATE`], and this turn's share of it.
struct Budget {
    tokens: f64,
    at: Instant,
    turn: usize,
}

impl Budget {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * SECOND_LANE_RATE).min(SECOND_LANE_TURN as f64);
        self.at = now;
    }

    /// When a whole turn's share will have accrued.
    fn full_at(&self) -> Instant {
        let missing = (SECOND_LANE_TURN as f64 - self.tokens).max(0.0);
        self.at + Duration::from_secs_f64(missing / SECOND_LANE_RATE)
    }
}

/// The two lanes between the thread and the loop, each bounded.
struct Lanes {
    /// Sources within their rate, then over-rate sources.
    queues: Mutex<[VecDeque<Datagram>; 2]>,
    /// Datagrams per lane at most.
    cap: usize,
}

impl Lanes {
    /// How many datagrams wait in each lane.
    fn lens(&self) -> [usize; 2] {
        self.queues
            .lock()
            .map(|q| [q[0].len(), q[1].len()])
            .unwrap_or([0, 0])
    }
}

/// How the thread reads: the socket, its protocol, the sizes and limit.
pub struct Setup {
    /// The socket, owned by the [`Inbox`]'s owner, which drops the inbox first.
    pub fd: RawFd,
    /// What the port carries.
    pub frames: Frames,
    /// Largest datagram accepted; one more byte is read to see an oversize one.
    pub max_datagram: usize,
    /// Datagrams queued for the loop at most, per lane.
    pub queue: usize,
    /// Datagrams/s per source in the first lane (0: no second lane).
    pub source_rate: u32,
    /// Names the port in log lines.
    pub what: String,
}

impl Inbox {
    /// Starts the thread on `setup.fd`, which must stay open until the
    /// inbox is dropped.
    pub fn start(setup: Setup) -> io::Result<Inbox> {
        let lanes = Arc::new(Lanes {
            queues: Mutex::new([VecDeque::new(), VecDeque::new()]),
            cap: setup.queue.max(1),
        });
        let (wake_tx, wake) = smol::channel::bounded(1);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let fd = setup.fd;
        let thread = {
            let (counters, stop, lanes) = (counters.clone(), stop.clone(), lanes.clone());
            std::thread::Builder::new()
                .name(format!("recv {}", setup.what))
                .spawn(move || Reader::new(setup, lanes, wake_tx, counters, stop).run())?
        };
        Ok(Inbox {
            lanes,
            wake,
            budget: Mutex::new(Budget {
                tokens: SECOND_LANE_TURN as f64,
                at: Instant::now(),
                turn: SECOND_LANE_TURN,
            }),
            counters,
            stop,
            fd,
            thread: Some(thread),
        })
    }

    /// Waits until a datagram the loop may take is queued: any in the
    /// first lane, or one in the second once its budget has refilled.
    pub async fn readable(&self) {
        loop {
            let [first, second] = self.lanes.lens();
            if first > 0 {
                return;
            }
            let refilled = if second > 0 {
                let mut b = self.lock_budget();
                b.refill(Instant::now());
                if b.tokens >= 1.0 {
                    return;
                }
                Some(b.full_at())
            } else {
                None
            };
            let woken = async {
                if self.wake.recv().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            match refilled {
                Some(at) => {
                    smol::future::or(woken, async {
                        smol::Timer::at(at).await;
                    })
                    .await
                }
                None => woken.await,
            }
        }
    }

    /// A new turn of the loop: it may take a few second-lane datagrams
    /// again, as many as the budget holds.
    pub fn new_turn(&self) {
        let mut b = self.lock_budget();
        b.refill(Instant::now());
        b.turn = (b.tokens as usize).min(SECOND_LANE_TURN);
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        // Only the loop takes this lock; a poisoned one still holds numbers.
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next queued datagram, if any: the first lane's, else the
    /// second's while this turn's share of it lasts.
    pub fn try_take(&self) -> Option<Datagram> {
        let mut q = self.lanes.queues.lock().ok()?;
        if let Some(d) = q[0].pop_front() {
            return Some(d);
        }
        let mut b = self.lock_budget();
        if b.turn == 0 {
            return None;
        }
        let d = q[1].pop_front()?;
        b.turn -= 1;
        b.tokens -= 1.0;
        Some(d)
    }

    /// The thread's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the thread out of poll (on an unconnected UDP socket the
        // call reports ENOTCONN but still wakes it); its timeout is the
        // fallback.
        // SAFETY: the descriptor is still open: its owner drops it after us.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Per-source token buckets: which lane a datagram goes to.
struct Limiter {
    rate: f64,
    sources: HashMap<SocketAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limiter {
    fn new(rate: u32) -> Limiter {
        Limiter {
            rate: rate as f64,
            sources: HashMap::new(),
        }
    }

    /// Whether a datagram from `peer` is within its source's rate.
    fn within(&mut self, peer: SocketAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if !self.sources.contains_key(&peer) && self.sources.len() >= MAX_SOURCES {
            // Forget sources whose bucket has refilled: to them a fresh
            // bucket is the same.
            let full = Duration::from_secs(1);
            self.sources.retain(|_, b| now.duration_since(b.at) < full);
            if self.sources.len() >= MAX_SOURCES {
                // Untracked: second lane, with the flood that filled the table.
                return false;
            }
        }
        let rate = self.rate;
        let b = self.sources.entry(peer).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The thread: buffers for one batch and what it decides with.
struct Reader {
    setup: Setup,
    lanes: Arc<Lanes>,
    wake: Sender<()>,
    /// This batch's datagrams per lane, queued in one go.
    batch: [Vec<Datagram>; 2],
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    limiter: Limiter,
    junk_log: LogLimit,
    /// Kernel drops when last logged, when last looked at, and how often
    /// they may be logged.
    drops_seen: u64,
    drops_at: Instant,
    drops_log: LogLimit,
}

impl Reader {
    fn new(
        setup: Setup,
        lanes: Arc<Lanes>,
        wake: Sender<()>,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
    ) -> Reader {
        Reader {
            limiter: Limiter::new(setup.source_rate),
            setup,
            lanes,
            wake,
            batch: [Vec::new(), Vec::new()],
            counters,
            stop,
            junk_log: LogLimit::new(20, Duration::from_secs(10)),
            drops_seen: 0,
            drops_at: Instant::now(),
            drops_log: LogLimit::new(1, Duration::from_secs(10)),
        }
    }

    fn run(mut self) {
        raise_priority(&self.setup.what);
        let size = self.setup.max_datagram + 1;
        let mut bufs = vec![0u8; size * RECV_BATCH];
        // SAFETY: plain C structs, all-zero is a valid value.
        let mut names: Vec<libc::sockaddr_storage> =
            vec![unsafe { std::mem::zeroed() }; RECV_BATCH];
        // u64s keep each control buffer aligned for cmsghdr.
        let mut controls = vec![[0u64; 8]; RECV_BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .chunks_mut(size)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            })
            .collect();
        // SAFETY: as above.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; RECV_BATCH];
        let mut last = Instant::now();
        while !self.stop.load(Ordering::Relaxed) && !self.wake.is_closed() {
            for i in 0..RECV_BATCH {
                let h = &mut msgs[i].msg_hdr;
                h.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = controls[i].as_mut_ptr() as *mut libc::c_void;
                h.msg_controllen = std::mem::size_of_val(&controls[i]) as _;
                h.msg_flags = 0;
                msgs[i].msg_len = 0;
            }
            // SAFETY: every pointer in msgs points into the vectors above,
            // which outlive the call and are not otherwise borrowed.
            let n = unsafe {
                libc::recvmmsg(
                    self.setup.fd,
                    msgs.as_mut_ptr(),
                    RECV_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => self.wait(),
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        log::warn!("{} receive: {e}", self.setup.what);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                continue;
            }
            let now = Instant::now();
            self.kernel_drops(now);
            let n = n as usize;
            self.counters
                .received
                .fetch_add(n as u64, Ordering::Relaxed);
            for i in 0..n {
                let len = (msgs[i].msg_len as usize).min(size);
                let Some(peer) = sockaddr(&names[i]) else {
                    continue;
                };
                let bytes = &bufs[i * size..i * size + len];
                if let Err(why) = self.setup.frames.look(bytes) {
                    self.junk(now, peer, len, why);
                    continue;
                }
                let within = self.limiter.within(peer, now);
                // SAFETY: the kernel filled this message's header and
                // control buffer in this call.
                let local = unsafe { pktinfo(&msgs[i].msg_hdr) };
                let d = Datagram {
                    bytes: bytes.into(),
                    peer,
                    local,
                };
                self.batch[usize::from(!within)].push(d);
            }
            self.queue_batch();
            if n < RECV_BATCH {
                // The kernel's queue is empty. In a steady stream, a short
                // pause lets the next call take many datagrams at once
                // instead of waking (and waking the loop) per datagram;
                // after a quiet spell the next datagram goes on at once.
                if now.duration_since(last) < STREAM_GAP {
                    std::thread::sleep(STREAM_PAUSE);
                } else {
                    self.wait();
                }
            }
            last = now;
        }
    }

    /// Hands this batch to the loop under one lock and one wake-up;
    /// what finds its lane full is dropped and counted.
    fn queue_batch(&mut self) {
        if self.batch.iter().all(Vec::is_empty) {
            return;
        }
        let Ok(mut q) = self.lanes.queues.lock() else {
            // Poisoned: the loop panicked and is gone.
            self.batch.iter_mut().for_each(Vec::clear);
            return;
        };
        // The loop needs waking for a device's datagram, or for flood
        // that finds it idle; more flood it takes when its budget allows,
        // and waking it for each batch of that costs a core (measured).
        let wake = !self.batch[0].is_empty() || q[1].is_empty();
        for (lane, batch) in self.batch.iter_mut().enumerate() {
            let room = self.lanes.cap.saturating_sub(q[lane].len());
            let over = batch.len().saturating_sub(room) as u64;
            if over > 0 {
                let c = if lane == 0 {
                    &self.counters.overflow
                } else {
                    &self.counters.limited
                };
                c.fetch_add(over, Ordering::Relaxed);
            }
            q[lane].extend(batch.drain(..).take(room));
        }
        drop(q);
        if wake {
            let _ = self.wake.try_send(());
        }
    }

    fn junk(&mut self, now: Instant, peer: SocketAddr, len: usize, why: Junk) {
        self.counters.junk[why as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(held) = self.junk_log.check(now) {
            log::info!(
                "peer={peer} {}: datagram of {len} bytes is no {} ({}); dropped{}",
                self.setup.what,
                self.setup.frames.name(),
                why.name(),
                crate::logging::held_note(held)
            );
        }
    }

    /// Logs what the kernel dropped since the last line: looked at once
    /// a second, logged at most once every ten.
    fn kernel_drops(&mut self, now: Instant) {
        if now.duration_since(self.drops_at) < Duration::from_secs(1) {
            return;
        }
        self.drops_at = now;
        let Some(total) = kernel_drops(self.setup.fd) else {
            return;
        };
        if total > self.drops_seen && self.drops_log.check(now).is_some() {
            log::info!(
                "{}: the kernel dropped {} datagrams (no {}, or the socket buffer full)",
                self.setup.what,
                total - self.drops_seen,
                self.setup.frames.name()
            );
            self.drops_seen = total;
        }
    }

    /// Sleeps until the socket is readable, shut down, or a second passed.
    fn wait(&mut self) {
        let mut p = libc::pollfd {
            fd: self.setup.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd that lives through the call.
        unsafe { libc::poll(&mut p, 1, 1000) };
        self.kernel_drops(Instant::now());
    }
}

// asm-generic values, the same on x86_64, arm and aarch64.
const SO_ATTACH_FILTER: libc::c_int = 26;
const SO_MEMINFO: libc::c_int = 55;

/// Classic BPF instructions; jumps count the instructions they skip.
const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}
const LD_LEN: u16 = 0x80; // A = datagram length, UDP header included
const LDB: u16 = 0x30; // A = byte at k (0: the UDP header's first byte)
const AND: u16 = 0x54; // A &= k
const JEQ: u16 = 0x15; // A == k
const JGE: u16 = 0x35; // A >= k
const RET: u16 = 0x06; // keep k bytes (0: drop)
const KEEP: u32 = u32::MAX;
/// The UDP payload's offset: UDP socket filters see the UDP header first.
const P: u32 = 8;

/// The first look of [`Frames::plausible`], run by the kernel before the
/// datagram is queued: junk then costs the sender, not the gateway.
fn program(frames: Frames) -> &'static [libc::sock_filter] {
    const COAP: [libc::sock_filter; 7] = [
        op(LD_LEN, 0, 0, 0),
        op(JGE, 0, 4, P + 4),
        op(LDB, 0, 0, P),
        op(AND, 0, 0, 0xc0),
        op(JEQ, 0, 1, 0x40),
        op(RET, 0, 0, KEEP),
        op(RET, 0, 0, 0),
    ];
    // Any 254.x record version passes, as in `record_header`.
    const DTLS: [libc::sock_filter; 12] = [
        op(LD_LEN, 0, 0, 0),
        op(JGE, 0, 9, P + 13),
        op(LDB, 0, 0, P),
        op(JEQ, 4, 0, 20),
        op(JEQ, 3, 0, 21),
        op(JEQ, 2, 0, 22),
        op(JEQ, 1, 0, 23),
        op(JEQ, 0, 3, 25),
        op(LDB, 0, 0, P + 1),
        op(JEQ, 0, 1, 0xfe),
        op(RET, 0, 0, KEEP),
        op(RET, 0, 0, 0),
    ];
    match frames {
        Frames::Coap => &COAP,
        Frames::Dtls => &DTLS,
    }
}

/// Attaches the kernel side of the first look to `fd`. Where the kernel
/// refuses it, the thread's own look still drops junk, at its own cost.
pub fn attach_filter(fd: RawFd, frames: Frames) -> io::Result<()> {
    let prog = program(frames);
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the program is static and the kernel copies it in.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams the kernel dropped for this socket: refused by the filter,
/// or no room in the socket buffer.
pub fn kernel_drops(fd: RawFd) -> Option<u64> {
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    let i = libc::SK_MEMINFO_DROPS as usize;
    (r == 0 && (len as usize) > i * 4).then(|| info[i] as u64)
}

/// Asks for a higher share of the CPU for this thread: when a flood and
/// the gateway compete for the cores, the kernel drops datagrams of known
/// devices from a full socket buffer whenever this thread waits its turn.
/// Needs RLIMIT_NICE (the systemd unit's `LimitNICE=-10`) or CAP_SYS_NICE;
/// without either the thread runs at the process's priority.
fn raise_priority(what: &str) {
    // SAFETY: gettid and setpriority on this thread only.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -10)
    };
    if r != 0 {
        log::debug!(
            "{what}: receive thread at normal priority ({})",
            io::Error::last_os_error()
        );
    }
}

/// The peer in a filled `sockaddr_storage`; IPv4-mapped IPv6 as IPv4.
fn sockaddr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family says which struct the storage holds; both fit in it.
    unsafe {
        match name.ss_family as libc::c_int {
            libc::AF_INET => {
                let a: libc::sockaddr_in = std::ptr::read(name as *const _ as *const _);
                Some(SocketAddr::from((
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a: libc::sockaddr_in6 = std::ptr::read(name as *const _ as *const _);
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
                Some(SocketAddr::new(ip, u16::from_be(a.sin6_port)))
            }
            _ => None,
        }
    }
}

/// The destination address from an IP_PKTINFO or IPV6_PKTINFO control
/// message (IPv4 on a dual-stack socket comes as IPV6_PKTINFO, mapped).
///
/// # Safety
/// `msg` must have been filled by the kernel, its control buffer intact.
unsafe fn pktinfo(msg: &libc::msghdr) -> Option<IpAddr> {
    let mut local = None;
    let mut c = libc::CMSG_FIRSTHDR(msg);
    while !c.is_null() {
        let data = libc::CMSG_DATA(c);
        match ((*c).cmsg_level, (*c).cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                let i: libc::in_pktinfo = std::ptr::read_unaligned(data as *const _);
                // The interface address the packet was accepted on.
                local = Some(IpAddr::V4(u32::from_be(i.ipi_spec_dst.s_addr).into()));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                let i: libc::in6_pktinfo = std::ptr::read_unaligned(data as *const _);
                let a = Ipv6Addr::from(i.ipi6_addr.s6_addr);
                local = Some(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4));
            }
            _ => {}
        }
        c = libc::CMSG_NXTHDR(msg, c);
    }
    local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_lane_budget_refills_at_its_rate_up_to_one_turn() {
        let t0 = Instant::now();
        let mut b = Budget {
            tokens: 0.0,
            at: t0,
            turn: 0,
        };
        b.refill(t0 + Duration::from_millis(1));
        assert!((b.tokens - SECOND_LANE_RATE / 1000.0).abs() < 1e-6);
        let full = b.full_at();
        let wait = full - (t0 + Duration::from_millis(1));
        let expect = (SECOND_LANE_TURN as f64 - b.tokens) / SECOND_LANE_RATE;
        assert!((wait.as_secs_f64() - expect).abs() < 1e-6);
        // A long idle spell gives one turn's share, not a burst.
        b.refill(t0 + Duration::from_secs(60));
        assert_eq!(b.tokens, SECOND_LANE_TURN as f64);
        assert!(b.full_at() <= t0 + Duration::from_secs(60));
    }

    #[test]
    fn only_what_the_rfcs_drop_silently_is_junk() {
        assert_eq!(Frames::Coap.look(&[0x40, 0x01, 0x00]), Err(Junk::Short));
        assert_eq!(
            Frames::Coap.look(&[0x80, 0x01, 0x00, 0x01]),
            Err(Junk::Version)
        );
        assert_eq!(
            Frames::Coap.look(&[0x00, 0x01, 0x00, 0x01]),
            Err(Junk::Version)
        );
        // A format error past the header still gets its RST from the loop.
        assert_eq!(Frames::Coap.look(&[0x49, 0x01, 0x00, 0x01]), Ok(()));
        let mut hello = vec![22, 0xfe, 0xfd];
        hello.resize(13, 0);
        assert_eq!(Frames::Dtls.look(&hello), Ok(()));
        hello[2] = 0xff;
        assert_eq!(Frames::Dtls.look(&hello), Ok(()));
        // Mbed TLS 2.x with a minimum below TLS 1.1.
        hello[2] = 0x00;
        assert_eq!(Frames::Dtls.look(&hello), Ok(()));
        hello[0] = 25;
        assert_eq!(Frames::Dtls.look(&hello), Ok(()));
        assert_eq!(Frames::Dtls.look(&hello[..12]), Err(Junk::Short));
        hello[0] = 24;
        assert_eq!(Frames::Dtls.look(&hello), Err(Junk::ContentType));
        hello[0] = 23;
        hello[1] = 3;
        assert_eq!(Frames::Dtls.look(&hello), Err(Junk::Version));
    }

    #[test]
    fn an_over_rate_source_goes_to_the_second_lane_and_earns_its_rate_back() {
        let mut l = Limiter::new(100);
        let t0 = Instant::now();
        let flood: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let device: SocketAddr = "192.0.2.2:5683".parse().unwrap();
        // A burst of one second's rate, then the rest is over it.
        assert_eq!((0..1000).filter(|_| l.within(flood, t0)).count(), 100);
        assert!(l.within(device, t0));
        // 50 ms later the flood has earned 5 datagrams, no more.
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!((0..100).filter(|_| l.within(flood, t1)).count(), 5);
        // The rate off: everything is within it.
        let mut off = Limiter::new(0);
        assert!((0..10_000).all(|_| off.within(flood, t0)));
    }

    #[test]
    fn a_full_source_table_forgets_idle_sources_and_stays_bounded() {
        let mut l = Limiter::new(10);
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES {
            let a = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1));
            l.within(a, t0);
        }
        assert_eq!(l.sources.len(), MAX_SOURCES);
        // Still all fresh: a new source is not tracked and waits in the
        // second lane.
        let new: SocketAddr = "192.0.2.9:1".parse().unwrap();
        assert!(!l.within(new, t0));
        assert_eq!(l.sources.len(), MAX_SOURCES);
        // A second later every bucket is full again: forgotten.
        assert!(l.within(new, t0 + Duration::from_secs(2)));
        assert_eq!(l.sources.len(), 1);
    }
}
