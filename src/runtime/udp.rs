//! The plain CoAP shell: a UDP socket (dual-stack where asked), datagrams
//! read in batches into the server and its answers written back.

use super::error::RunError;
pub use super::inbox::Frames;
use super::inbox::{attach_filter, kernel_drops, Inbox, Junk, Setup};
use crate::config::Listen;
use crate::server::Server;
use smol::Async;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Datagrams read per wake-up before state is flushed and answers go out.
pub const BATCH: usize = 256;

/// A bound UDP socket: a thread of its own reads it (see [`Inbox`]), the
/// loop takes what that thread queued and sends on the socket itself.
pub struct Socket {
    // Before `socket`: the inbox's thread reads the descriptor until the
    // inbox is dropped.
    inbox: Inbox,
    socket: Async<UdpSocket>,
    local_addr: SocketAddr,
    dual_stack: bool,
    /// The kernel tells each datagram's destination address (IP_PKTINFO).
    pktinfo: bool,
    /// Plain CoAP datagrams from peers that must use DTLS, dropped.
    pub plain_dropped: u64,
}

impl Socket {
    /// Binds `listen.addr` with the configured buffers and starts its
    /// receive thread; `what` names it in errors and log lines.
    pub fn bind(listen: &Listen, frames: Frames, what: &str) -> Result<Socket, RunError> {
        use std::os::fd::AsRawFd;
        let (socket, dual_stack) = bind_udp(listen.addr)
            .map_err(|e| RunError::Io(format!("bind {what} {}", listen.addr), e))?;
        set_buffers(&socket, listen.socket_buffer);
        let socket = Async::new(socket).map_err(|e| RunError::Io(format!("{what} socket"), e))?;
        let local_addr = socket
            .get_ref()
            .local_addr()
            .map_err(|e| RunError::Io(format!("{what} socket"), e))?;
        if let Err(e) = attach_filter(socket.get_ref().as_raw_fd(), frames) {
            log::warn!(
                "{what} {local_addr}: no kernel filter for junk ({e}); the receive thread drops it"
            );
        }
        let inbox = Inbox::start(Setup {
            fd: socket.get_ref().as_raw_fd(),
            frames,
            max_datagram: listen.max_datagram,
            // About what the kernel buffer holds of small datagrams.
            queue: (listen.socket_buffer / 1024).clamp(256, 16_384),
            source_rate: listen.source_rate,
            what: format!("{what} {local_addr}"),
        })
        .map_err(|e| RunError::Io(format!("{what} receive thread"), e))?;
        Ok(Socket {
            inbox,
            socket,
            local_addr,
            dual_stack,
            pktinfo: false,
            plain_dropped: 0,
        })
    }

    /// From now on [`Socket::try_recv_on`] tells the gateway address each
    /// datagram arrived on, also on a wildcard bind.
    pub fn want_arrival_address(&mut self) {
        if self.local_addr.ip().is_unspecified() {
            self.enable_pktinfo();
        }
    }

    fn enable_pktinfo(&mut self) {
        use std::os::fd::AsRawFd;
        let (level, opt) = match self.local_addr {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        };
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on a descriptor we own, with a c_int argument.
        let r = unsafe {
            libc::setsockopt(
                self.socket.get_ref().as_raw_fd(),
                level,
                opt,
                &on as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            self.pktinfo = true;
        } else {
            log::warn!(
                "udp {}: the address each datagram arrives on is unknown ({}); \
                 bootstrap URIs name the configured host",
                self.local_addr,
                io::Error::last_os_error()
            );
        }
    }

    /// One datagram, if one is queued: its length, its peer (canonical)
    /// and the gateway address it was sent to, when known.
    pub fn try_recv_on(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        let d = self
            .inbox
            .try_take()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        let n = d.bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&d.bytes[..n]);
        let local = match d.local {
            Some(l) => Some(l),
            None if !self.pktinfo => Some(self.local_addr.ip()).filter(|ip| !ip.is_unspecified()),
            None => None,
        };
        Ok((n, d.peer, local))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether it takes IPv4 and IPv6 alike.
    pub fn dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// A new turn of the loop: the receive thread's second lane (over-rate
    /// sources) gets its few datagrams again.
    pub fn new_turn(&self) {
        self.inbox.new_turn()
    }

    /// Waits until a datagram is queued.
    pub async fn readable(&self) {
        self.inbox.readable().await
    }

    /// One datagram, if one is queued; the peer in its canonical form.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.try_recv_on(buf).map(|(n, p, _)| (n, p))
    }

    /// What the receive thread counted, for `stats`.
    pub fn stats_json(&self) -> serde_json::Value {
        let c = self.inbox.counters();
        serde_json::json!({
            "received": c.received.load(Ordering::Relaxed),
            "junk": self.junk(),
            "junkBy": Junk::ALL
                .iter()
                .map(|&j| (j.name().into(), c.junk[j as usize].load(Ordering::Relaxed).into()))
                .collect::<serde_json::Map<_, _>>(),
            "limited": c.limited.load(Ordering::Relaxed),
            "queueFull": c.overflow.load(Ordering::Relaxed),
            "kernelDropped": self.kernel_drops(),
        })
    }

    /// What the kernel dropped: junk its filter refused, and datagrams
    /// that found the socket buffer full. None where the kernel does not
    /// tell (SO_MEMINFO; qemu-user, for one, does not pass it through).
    pub fn kernel_drops(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        kernel_drops(self.socket.get_ref().as_raw_fd())
    }

    /// Datagrams the receive thread found to be no frame at all.
    pub fn junk(&self) -> u64 {
        let c = self.inbox.counters();
        c.junk.iter().map(|j| j.load(Ordering::Relaxed)).sum()
    }

    /// Reads a batch of plain CoAP datagrams into the server. `buf` is one
    /// byte longer than `max`, so a datagram over the limit shows itself.
    pub fn receive(&mut self, server: &mut Server, now: Instant, buf: &mut [u8], max: usize) {
        self.new_turn();
        for _ in 0..BATCH {
            match self.try_recv(buf) {
                Ok((n, peer)) if server.is_secure_peer(peer) => {
                    // Its traffic comes over DTLS: a plain datagram from
                    // its address is a spoof or a stray, never believed.
                    self.plain_dropped += 1;
                    log::debug!("peer={peer} plain CoAP from a DTLS peer dropped ({n} bytes)");
                }
                Ok((n, peer)) if n > max => {
                    // Only the first max + 1 bytes were read: enough for
                    // the header and token, to answer 4.13.
                    server.handle_oversize(now, peer, &buf[..n]);
                }
                Ok((n, peer)) => {
                    // The wall clock per datagram: it stamps reported
                    // values, and two in one batch are two data points.
                    let unix = crate::clock::unix_ms();
                    server.handle_datagram(now, unix, peer, &buf[..n])
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("udp receive: {e}");
                    break;
                }
            }
        }
    }

    /// Sends one datagram, waiting while the socket buffer is full.
    pub async fn send_to(&self, peer: SocketAddr, bytes: &[u8]) {
        let to = if self.dual_stack { mapped(peer) } else { peer };
        loop {
            match self.socket.get_ref().send_to(bytes, to) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("peer={peer} send failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Binds UDP. For the IPv6 wildcard the socket is made dual-stack whatever
/// the host's `net.ipv6.bindv6only`; where IPv6 is unavailable it falls back
/// to IPv4.
fn bind_udp(addr: SocketAddr) -> io::Result<(UdpSocket, bool)> {
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        match bind_dual_stack(addr.port()) {
            Ok(s) => return Ok((s, true)),
            Err(e) => {
                log::warn!("IPv6 unavailable ({e}); listening on IPv4 only");
                return UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
                    .map(|s| (s, false));
            }
        }
    }
    UdpSocket::bind(addr).map(|s| (s, false))
}

/// Asks for large socket buffers: with thousands of devices answering at
/// once, the default (about 200 KiB, a few hundred datagrams) overflows and
/// every dropped answer costs a 2 s retransmission. The kernel caps the
/// size at net.core.rmem_max / wmem_max.
fn set_buffers(sock: &UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt on a descriptor we own, with a c_int argument.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            log::warn!(
                "could not set UDP socket buffer to {bytes} bytes: {}",
                io::Error::last_os_error()
            );
        }
    }
}

fn bind_dual_stack(port: u16) -> io::Result<UdpSocket> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; it is closed on every error path.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = UdpSocket::from_raw_fd(fd);
        let off: libc::c_int = 0;
        if libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            &off as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        if libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}

/// IPv4 peers are sent to as `::ffff:a.b.c.d` on a dual-stack socket.
fn mapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_peers_are_mapped_on_a_dual_stack_socket() {
        let v4: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        assert_eq!(mapped(v4).to_string(), "[::ffff:192.0.2.1]:5683");
        let v6: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
        assert_eq!(mapped(v6), v6);
    }

    /// Binds `addr` with the control messages on (as on a wildcard bind),
    /// sends one datagram to it, and gives what `try_recv_on` saw.
    fn arrival(addr: &str) -> Option<(usize, SocketAddr, Option<IpAddr>)> {
        let listen = Listen {
            addr: addr.parse().unwrap(),
            socket_buffer: 65536,
            max_datagram: 1152,
            source_rate: 1000,
        };
        let mut s = match Socket::bind(&listen, Frames::Coap, "test") {
            Ok(s) => s,
            // No IPv6 loopback on this host.
            Err(_) => return None,
        };
        s.enable_pktinfo();
        assert!(s.pktinfo);
        let from = UdpSocket::bind(SocketAddr::new(s.local_addr().ip(), 0)).unwrap();
        from.send_to(b"hello", s.local_addr()).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..1000 {
            match s.try_recv_on(&mut buf) {
                Ok(r) => {
                    assert_eq!(&buf[..r.0], b"hello");
                    assert_eq!(r.1, from.local_addr().unwrap());
                    return Some(r);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(2))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the datagram never arrived");
    }

    #[test]
    fn the_kernel_tells_which_address_a_datagram_arrived_on() {
        let (_, _, local) = arrival("127.0.0.1:0").unwrap();
        assert_eq!(local, Some("127.0.0.1".parse().unwrap()));
        if let Some((_, _, local)) = arrival("[::1]:0") {
            assert_eq!(local, Some("::1".parse().unwrap()));
        }
    }

    /// Sends `datagrams` to a socket bound for `frames` and gives what
    /// reached the loop, with the socket's counters.
    fn through(frames: Frames, datagrams: &[Vec<u8>]) -> (Vec<Vec<u8>>, serde_json::Value) {
        let listen = Listen {
            addr: "127.0.0.1:0".parse().unwrap(),
            socket_buffer: 1 << 20,
            max_datagram: 1152,
            source_rate: 1000,
        };
        let s = Socket::bind(&listen, frames, "test").unwrap();
        let from = UdpSocket::bind("127.0.0.1:0").unwrap();
        for d in datagrams {
            from.send_to(d, s.local_addr()).unwrap();
        }
        // The end marker: the last datagram that should get through.
        from.send_to(datagrams.last().unwrap(), s.local_addr())
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1153];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let last = datagrams.last().unwrap();
        while got.iter().filter(|g| *g == last).count() < 2 {
            assert!(std::time::Instant::now() < deadline, "got {got:?}");
            match s.try_recv(&mut buf) {
                Ok((n, _)) => got.push(buf[..n].to_vec()),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
        got.pop();
        (got, s.stats_json())
    }

    #[test]
    fn junk_is_dropped_before_it_is_queued_and_counted() {
        let coap = vec![0x40, 0x01, 0x12, 0x34];
        let tkl9 = vec![0x49, 0x01, 0x12, 0x34];
        let sent = [
            vec![],
            vec![0x40, 0x01, 0x12],
            vec![0x80, 0x01, 0x12, 0x34],
            vec![0x00; 40],
            tkl9.clone(),
            coap.clone(),
        ];
        // What got through is the proof; the count only where the kernel
        // tells its drops (kernelDropped is null under qemu-user).
        let dropped = |st: &serde_json::Value| {
            st["kernelDropped"]
                .as_u64()
                .map(|k| k + st["junk"].as_u64().unwrap())
        };
        let (got, st) = through(Frames::Coap, &sent);
        assert_eq!(got, vec![tkl9, coap]);
        assert!(matches!(dropped(&st), Some(4) | None), "{st}");

        let mut hello = vec![22, 0xfe, 0xfd];
        hello.resize(60, 1);
        let mut old = hello.clone();
        old[2] = 0xff;
        let mut cid = hello.clone();
        cid[0] = 25;
        // Mbed TLS 2.x's first ClientHello with a minimum below TLS 1.1.
        let mut mbed = hello.clone();
        mbed[2] = 0x00;
        let sent = [
            vec![22, 0xfe, 0xfd, 0, 0],
            vec![0x99; 30],
            {
                let mut b = hello.clone();
                b[1] = 3;
                b
            },
            {
                let mut b = hello.clone();
                b[0] = 24;
                b
            },
            old.clone(),
            mbed.clone(),
            cid.clone(),
            hello.clone(),
        ];
        let (got, st) = through(Frames::Dtls, &sent);
        assert_eq!(got, vec![old, mbed, cid, hello]);
        assert!(matches!(dropped(&st), Some(4) | None), "{st}");
        // The kernel's filter did it, where it took the program.
        assert_eq!(st["junk"], 0, "{st}");
    }
}
