//! Stopping on SIGTERM or SIGINT: a thread of its own takes the signals
//! (sigwait), so the event loop hears of them as a message between turns,
//! never in the middle of one, and a stop that overruns its bound still
//! ends the process.

use smol::channel::Receiver;
use std::io;
use std::time::Duration;

/// The stop signals, as the event loop receives them.
pub struct Signals {
    rx: Receiver<&'static str>,
    bound: Duration,
}

impl Signals {
    /// Blocks SIGTERM and SIGINT in the calling thread, and so in every
    /// thread it starts from now on, and starts the thread that waits for
    /// them. Call it before any other thread is started, or that thread
    /// takes the signal's default action: the process dies mid-turn.
    ///
    /// The first signal goes to the loop; a stop that takes longer than
    /// `bound`, or a second signal, ends the process with status 1.
    pub fn install(bound: Duration) -> io::Result<Signals> {
        // SAFETY: a sigset_t on the stack, filled by the libc calls.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            set
        };
        let (tx, rx) = smol::channel::bounded(1);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let first = wait(&set, None);
                let _ = tx.try_send(first);
                match wait(&set, Some(bound)) {
                    "" => log::error!(
                        "the stop took longer than {} s (service.stop_timeout_s); exiting now",
                        bound.as_secs()
                    ),
                    again => log::warn!("{again} during the stop; exiting now"),
                }
                std::process::exit(1);
            })?;
        Ok(Signals { rx, bound })
    }

    /// The name of the signal, once one came.
    pub async fn recv(&self) -> &'static str {
        match self.rx.recv().await {
            Ok(s) => s,
            Err(_) => std::future::pending().await,
        }
    }

    /// How long a stop may take.
    pub fn bound(&self) -> Duration {
        self.bound
    }
}

/// Waits for a signal of `set`, at most `limit`; its name, or "" when the
/// time ran out.
fn wait(set: &libc::sigset_t, limit: Option<Duration>) -> &'static str {
    let end = limit.map(|l| std::time::Instant::now() + l);
    loop {
        let sig = match end {
            None => {
                let mut sig = 0;
                // SAFETY: `set` is a filled sigset_t; sig is written.
                match unsafe { libc::sigwait(set, &mut sig) } {
                    0 => sig,
                    _ => continue,
                }
            }
            Some(end) => {
                let left = end.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return "";
                }
                let ts = libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                };
                // SAFETY: `set` is filled; no siginfo is asked for.
                let r = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
                if r < 0 {
                    // EAGAIN (time out) is seen on the next round; EINTR
                    // just tries again.
                    continue;
                }
                r
            }
        };
        return match sig {
            libc::SIGTERM => "SIGTERM",
            libc::SIGINT => "SIGINT",
            _ => continue,
        };
    }
}
