//! The plain CoAP shell: a UDP socket (dual-stack where asked), datagrams
//! read in batches into the server and its answers written back.

use super::error::RunError;
use crate::config::Listen;
use crate::server::Server;
use smol::Async;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Instant;

/// Datagrams read per wake-up before state is flushed and answers go out.
pub const BATCH: usize = 256;

/// A bound, non-blocking UDP socket.
pub struct Socket {
    socket: Async<UdpSocket>,
    local_addr: SocketAddr,
    dual_stack: bool,
    /// The kernel tells each datagram's destination address (IP_PKTINFO).
    pktinfo: bool,
    /// Plain CoAP datagrams from peers that must use DTLS, dropped.
    pub plain_dropped: u64,
}

impl Socket {
    /// Binds `listen.addr` with the configured buffers; `what` names it in errors.
    pub fn bind(listen: &Listen, what: &str) -> Result<Socket, RunError> {
        let (socket, dual_stack) = bind_udp(listen.addr)
            .map_err(|e| RunError::Io(format!("bind {what} {}", listen.addr), e))?;
        set_buffers(&socket, listen.socket_buffer);
        let socket = Async::new(socket).map_err(|e| RunError::Io(format!("{what} socket"), e))?;
        let local_addr = socket
            .get_ref()
            .local_addr()
            .map_err(|e| RunError::Io(format!("{what} socket"), e))?;
        Ok(Socket {
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

    /// One datagram, if one is waiting: its length, its peer (canonical)
    /// and the gateway address it was sent to, when known.
    pub fn try_recv_on(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        if !self.pktinfo {
            let bound = Some(self.local_addr.ip()).filter(|ip| !ip.is_unspecified());
            return self.try_recv(buf).map(|(n, p)| (n, p, bound));
        }
        use std::os::fd::AsRawFd;
        loop {
            match recv_pktinfo(self.socket.get_ref().as_raw_fd(), buf) {
                Ok((n, peer, local)) => return Ok((n, canonical(peer), local)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether it takes IPv4 and IPv6 alike.
    pub fn dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// Waits until a datagram can be read.
    pub async fn readable(&self) {
        let _ = self.socket.readable().await;
    }

    /// One datagram, if one is waiting; the peer in its canonical form.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            match self.socket.get_ref().recv_from(buf) {
                Ok((n, peer)) => return Ok((n, canonical(peer))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a batch of plain CoAP datagrams into the server. `buf` is one
    /// byte longer than `max`, so a datagram over the limit shows itself.
    pub fn receive(&mut self, server: &mut Server, now: Instant, buf: &mut [u8], max: usize) {
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

/// recvmsg with the destination address from its IP_PKTINFO or
/// IPV6_PKTINFO control message (IPv4 on a dual-stack socket comes as
/// IPV6_PKTINFO with a mapped address).
fn recv_pktinfo(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: msghdr points at buffers that live through the call; control
    // messages are read within msg_controllen via the CMSG macros, and
    // their payloads with unaligned reads.
    unsafe {
        let mut name: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // u64s keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let peer = match name.ss_family as libc::c_int {
            libc::AF_INET => {
                let a: libc::sockaddr_in = std::ptr::read(&name as *const _ as *const _);
                SocketAddr::from((
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                ))
            }
            libc::AF_INET6 => {
                let a: libc::sockaddr_in6 = std::ptr::read(&name as *const _ as *const _);
                SocketAddr::from((
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                ))
            }
            f => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("datagram from address family {f}"),
                ))
            }
        };
        let mut local = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
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
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, peer, local))
    }
}

/// IPv4 peers on a dual-stack socket appear as `::ffff:a.b.c.d`; the rest
/// of the gateway sees them as plain IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

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
    fn mapped_ipv4_peers_are_seen_as_ipv4_and_mapped_back() {
        let v4: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        let m = mapped(v4);
        assert_eq!(m.to_string(), "[::ffff:192.0.2.1]:5683");
        assert_eq!(canonical(m), v4);
        let v6: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(mapped(v6), v6);
    }

    /// Binds `addr` with the control messages on (as on a wildcard bind),
    /// sends one datagram to it, and gives what `try_recv_on` saw.
    fn arrival(addr: &str) -> Option<(usize, SocketAddr, Option<IpAddr>)> {
        let listen = Listen {
            addr: addr.parse().unwrap(),
            socket_buffer: 65536,
            max_datagram: 1152,
        };
        let mut s = match Socket::bind(&listen, "test") {
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
}
