//! Shared by the benchmarks: options and the gateway process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway's counters, through `{"op":"stats"}` on its control socket.
pub fn stats(sock: &Path) -> serde_json::Value {
    use std::io::Write;
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(b"{\"id\":1,\"op\":\"stats\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str::<serde_json::Value>(&line).unwrap()["value"].clone()
}

/// The release gateway on `<dir>/gw.toml` with its control socket in
/// `dir`, killed on drop; its CoAP address and control socket.
pub fn gateway_with_socket(dir: &Path) -> (Kill, SocketAddr, std::path::PathBuf) {
    let sock = dir.join("control.sock");
    let (gw, addr) = start_gateway(
        dir,
        &["--control-socket".as_ref(), sock.as_os_str()],
        "warn,lwm2m_gw::runtime=info",
    );
    (Kill(gw), addr, sock)
}

/// A fresh directory for one benchmark run, holding a `gw.toml` that binds
/// the gateway to loopback on an OS-chosen port.
pub fn bench_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lwm2m-gw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gw.toml"),
        "[coap]\nbind = \"127.0.0.1\"\nport = 0\n[dtls]\nport = 0\n",
    )
    .unwrap();
    dir
}

/// Starts `lwm2m-gw-sim` with `args` and waits until its `count` devices
/// registered; returns it and its first line.
pub fn start_sim(args: &[&str], count: usize) -> (Kill, String) {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw-sim"))
        .args(args)
        .args(["--count", &count.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start simulator");
    let mut first = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains(&format!("{0}/{0}", count)), "{first}");
    (Kill(sim), first)
}

/// A process's resident set size in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The value of `--name N` on the command line, else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .rev()
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// Starts the release gateway with `<dir>/gw.toml` and the data under
/// `<dir>/data`, plus `extra` arguments; returns it and its CoAP address.
pub fn start_gateway(
    dir: &Path,
    extra: &[&std::ffi::OsStr],
    rust_log: &str,
) -> (Child, SocketAddr) {
    let (child, coap, _) = start_gateway_dtls(dir, extra, rust_log);
    (child, coap)
}

/// Like `start_gateway`, also with the DTLS address (when `rust_log` lets
/// the runtime's start-up lines through).
pub fn start_gateway_dtls(
    dir: &Path,
    extra: &[&std::ffi::OsStr],
    rust_log: &str,
) -> (Child, SocketAddr, Option<SocketAddr>) {
    start_gateway_full(dir, extra, rust_log, None)
}

/// Like `start_gateway`, in the cgroup directory `cgroup` from its first
/// instruction on (so everything it allocates is charged there).
pub fn start_gateway_in(
    dir: &Path,
    extra: &[&std::ffi::OsStr],
    rust_log: &str,
    cgroup: Option<&Path>,
) -> (Child, SocketAddr) {
    let (child, coap, _) = start_gateway_full(dir, extra, rust_log, cgroup);
    (child, coap)
}

fn start_gateway_full(
    dir: &Path,
    extra: &[&std::ffi::OsStr],
    rust_log: &str,
    cgroup: Option<&Path>,
) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"));
    if let Some(cg) = cgroup {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let procs = std::ffi::CString::new(cg.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        // SAFETY: between fork and exec only async-signal-safe calls
        // (open, write, close, getpid) on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut buf = [0u8; 12];
                let mut pid = libc::getpid() as u32;
                let mut i = buf.len();
                loop {
                    i -= 1;
                    buf[i] = b'0' + (pid % 10) as u8;
                    pid /= 10;
                    if pid == 0 {
                        break;
                    }
                }
                let r = libc::write(fd, buf[i..].as_ptr() as *const libc::c_void, buf.len() - i);
                libc::close(fd);
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .arg("serve")
        .arg("--config")
        .arg(dir.join("gw.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        // Off unless `extra` names ports (the last flag wins).
        .args(["--bootstrap-port", "0", "--bootstrap-dtls-port", "0"])
        .args(extra)
        .env("RUST_LOG", rust_log)
        .env_remove("RUNTIME_DIRECTORY")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gateway");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut dtls = None;
    let addr: SocketAddr = loop {
        let line = lines.next().expect("gateway log").unwrap();
        if let Some(rest) = line.split("CoAP over DTLS on udp ").nth(1) {
            dtls = rest.split(' ').next().and_then(|a| a.parse().ok());
        }
        if let Some(rest) = line.split("listening on CoAP udp ").nth(1) {
            break rest.split([' ', ';']).next().unwrap().parse().unwrap();
        }
    };
    // Keep reading so the gateway never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr, dtls)
}

pub fn register_msg(mid: u16, ep: &str) -> Vec<u8> {
    // CON POST /rd?ep=..&lt=86400&lwm2m=1.1, Content-Format 40, typical object list.
    let mut m = vec![0x42, 0x02];
    m.extend_from_slice(&mid.to_be_bytes());
    m.extend_from_slice(&mid.to_be_bytes()); // 2-byte token
    m.extend_from_slice(&[0xb2, b'r', b'd']); // Uri-Path (11) "rd"
    m.push(0x11);
    m.push(40); // Content-Format (12) = 40
    let query = |m: &mut Vec<u8>, delta: u8, q: &[u8]| {
        if q.len() < 13 {
            m.push((delta << 4) | q.len() as u8);
        } else {
            m.push((delta << 4) | 13);
            m.push(q.len() as u8 - 13);
        }
        m.extend_from_slice(q);
    };
    query(&mut m, 3, format!("ep={ep}").as_bytes()); // Uri-Query (15)
    query(&mut m, 0, b"lt=86400");
    query(&mut m, 0, b"lwm2m=1.1");
    m.push(0xff);
    m.extend_from_slice(b"</>;rt=\"oma.lwm2m\";ct=11542,</1/0>,</3/0>,</4/0>,</5/0>,</3303/0>");
    m
}

/// Registers `count` endpoints named `{prefix}{i}` with `window` in flight; returns elapsed time.
pub fn load(server: SocketAddr, prefix: &str, count: usize, window: usize) -> Duration {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    load_from(&sock, server, prefix, count, window)
}

/// Like `load`, from `sock` (which then stands for all those endpoints).
pub fn load_from(
    sock: &UdpSocket,
    server: SocketAddr,
    prefix: &str,
    count: usize,
    window: usize,
) -> Duration {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut mid: u16 = fastrand::u16(..);
    let mut inflight: HashMap<u16, (Instant, Vec<u8>)> = HashMap::new();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    while done < count {
        while inflight.len() < window && next < count {
            mid = mid.wrapping_add(1);
            let msg = register_msg(mid, &format!("{prefix}{next}"));
            sock.send_to(&msg, server).unwrap();
            inflight.insert(mid, (Instant::now(), msg));
            next += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n >= 4 => {
                let m = u16::from_be_bytes([buf[2], buf[3]]);
                if buf[1] == 0x41 && inflight.remove(&m).is_some() {
                    done += 1;
                } else if buf[1] != 0x41 {
                    panic!("unexpected response code {:#x}", buf[1]);
                }
            }
            _ => {
                // Retransmit whatever waited too long (same message id: answered from the cache).
                let now = Instant::now();
                for (sent, msg) in inflight.values_mut() {
                    if now.duration_since(*sent) > Duration::from_secs(2) {
                        sock.send_to(msg, server).unwrap();
                        *sent = now;
                    }
                }
            }
        }
    }
    start.elapsed()
}

/// A DTLS client session with a PSK, handshaken over a blocking connected
/// socket (TLS_PSK_WITH_AES_128_CCM_8); None if the server refused it.
pub fn psk_handshake(
    sock: &UdpSocket,
    identity: &str,
    key_hex: &str,
    epoch: Instant,
) -> Option<lwm2m_gw::dtls::mbed::Session> {
    use lwm2m_gw::dtls::mbed::{Session, Step};
    use lwm2m_gw::dtls::Keys;
    let suites = lwm2m_gw::dtls::Settings::default().suites;
    let rng = lwm2m_gw::dtls::identity::rng().ok()?;
    let key = lwm2m_gw::lwm2m::node::unhex(key_hex)?;
    let cfg = lwm2m_gw::dtls::identity::psk_client_config(&suites[..1], identity, &key, rng, None)
        .ok()?;
    let mut s = Session::client(&cfg).ok()?;
    let ms = || epoch.elapsed().as_millis() as u64;
    s.start(ms(), &Keys::default());
    let mut buf = [0u8; 2048];
    loop {
        for d in s.take_transmits().collect::<Vec<_>>() {
            let _ = sock.send(&d);
        }
        if s.is_open() {
            return Some(s);
        }
        let step = match sock.recv(&mut buf) {
            Ok(n) => s.handle(ms(), &Keys::default(), &buf[..n], &mut Vec::new()),
            Err(_) => s.handle_timeout(ms() + 60_000, &Keys::default()),
        };
        if let Step::Closed(why) = step {
            eprintln!("handshake failed: {why}");
            return None;
        }
    }
}

/// Observes /3303/0 on devices `PREFIX0` to `PREFIX<devices-1>`, `window`
/// requests in flight; panics on any answer but CONTENT.
pub fn observe_all(sock: &Path, prefix: &str, devices: usize, window: usize) {
    use std::io::Write;
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let (mut sent, mut line, mut buf) = (0, String::new(), String::new());
    for done in 0..devices {
        buf.clear();
        while sent < devices && sent - done < window {
            buf.push_str(&format!(
                "{{\"id\":{sent},\"op\":\"rpc\",\"endpoint\":\"{prefix}{sent}\",\"method\":\"Observe\",\"params\":{{\"id\":\"/3303/0\"}}}}\n"
            ));
            sent += 1;
        }
        w.write_all(buf.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"CONTENT\""), "observe failed: {line}");
    }
}
