//! systemd's notification protocol: READY=1 once the gateway serves, and
//! watchdog pings from its main loop (`Type=notify`, `WatchdogSec=`).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where to send notifications, from `$NOTIFY_SOCKET`.
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
    watchdog: Option<Duration>,
}

enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The notifier systemd asked for, if any; the watchdog interval when
    /// `$WATCHDOG_USEC` is set for this process.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let target = match bytes.split_first() {
            Some((b'@', name)) => Target::Abstract(name.to_vec()),
            Some((b'/', _)) => Target::Path(path.clone().into()),
            _ => {
                log::warn!(
                    "NOTIFY_SOCKET {path:?} is neither a path nor an abstract name; ignored"
                );
                return None;
            }
        };
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .filter(|_| {
                // WATCHDOG_PID, when set, names the process that must ping.
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_none_or(|p| p == std::process::id())
            })
            .map(Duration::from_micros);
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot open a socket for systemd notifications: {e}");
                return None;
            }
        };
        Some(Notifier {
            socket,
            target,
            watchdog,
        })
    }

    /// How often to ping: half the watchdog interval, as systemd advises.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends one notification, e.g. `READY=1\nSTATUS=...`.
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Target::Path(p) => self.socket.send_to(state.as_bytes(), p).map(|_| ()),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                self.socket
                    .send_to_addr(state.as_bytes(), &addr)
                    .map(|_| ())
            }
        }
    }

    /// Tells systemd the gateway serves.
    pub fn ready(&self, status: &str) {
        if let Err(e) = self.send(&format!("READY=1\nSTATUS={status}")) {
            log::warn!("systemd notification failed: {e}");
        }
    }

    /// One watchdog ping.
    pub fn watchdog(&self) {
        if let Err(e) = self.send("WATCHDOG=1") {
            log::warn!("systemd watchdog ping failed: {e}");
        }
    }
}
