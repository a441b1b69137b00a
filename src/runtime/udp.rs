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
            plain_dropped: 0,
        })
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
}
