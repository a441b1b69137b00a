//! Shared helpers for end-to-end tests: a gateway process on loopback and a
//! minimal CoAP client built on the project's codec.
#![allow(dead_code)]

use lwm2m_gw::coap::{opt, Code, Message, MsgType, Token};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "lwm2m-gw-e2e-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `lwm2m-gw serve`, killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// The DTLS address, unless the config turned DTLS off.
    pub dtls: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts the binary with `config` (TOML) in `dir`, on an OS-chosen port.
    pub fn start(dir: &Path, config: &str) -> Gateway {
        Gateway::start_on(dir, config, 0)
    }

    /// Starts the binary on CoAP port `port` (0: OS-chosen).
    pub fn start_on(dir: &Path, config: &str, port: u16) -> Gateway {
        Gateway::start_with_env(dir, config, port, &[])
    }

    /// Like `start_on`, with extra environment variables for the gateway.
    pub fn start_with_env(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> Gateway {
        let cfg = dir.join("gw.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--coap-port", &port.to_string()])
            .args(["--dtls-port", "0"])
            // The bootstrap ports are fixed by default: off unless the
            // test configures them (on free ports).
            .args(if config.contains("[bootstrap]") {
                &[][..]
            } else {
                &["--bootstrap-port", "0", "--bootstrap-dtls-port", "0"][..]
            })
            .env("RUST_LOG", "info,sled=warn")
            .env_remove("RUNTIME_DIRECTORY")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Record the line before signalling, so a test that checks the
                // log right after start sees the start-up line.
                let addr = line
                    .split("listening on CoAP udp ")
                    .nth(1)
                    .map(|rest| rest.split([' ', ';']).next().unwrap_or("").to_string());
                lock(&sink).push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        let bound: SocketAddr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start: {:?}", lock(&log));
            }
        };
        // Logged before the CoAP line, so it is in by now.
        let dtls = lock(&log).iter().find_map(|l| {
            l.split("CoAP over DTLS on udp ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
        });
        Gateway {
            child,
            addr: bound,
            dtls,
            data_dir: dir.join("data"),
            log,
        }
    }

    /// The control socket (the default one, in the data directory).
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }

    /// A control-socket client.
    pub fn control(&self) -> lwm2m_gw::control::socket::Client {
        lwm2m_gw::control::socket::Client::connect(&self.control_socket(), Duration::from_secs(60))
            .expect("control socket")
    }

    /// Runs `lwm2m-gw ARGS --control-socket <this gateway's>`.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
            .args(args)
            .arg("--control-socket")
            .arg(self.control_socket())
            .output()
            .unwrap()
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended (by itself: a crash point, an abort).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends `signal` (SIGTERM, SIGINT) and waits up to `limit` for the
    /// process to end: its exit status and how long it took, or None
    /// when it still runs.
    pub fn signal(
        &mut self,
        signal: libc::c_int,
        limit: Duration,
    ) -> Option<(std::process::ExitStatus, Duration)> {
        let t0 = Instant::now();
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        while t0.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some((s, t0.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        lock(&self.log).iter().any(|l| l.contains(needle))
    }

    /// Waits up to `limit` for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log_contains(needle))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms for up to `limit`; whether it came true.
pub fn wait_until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Locks the log even after a failed assertion poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The log lines so far.
pub fn log_lines(gw: &Gateway) -> Vec<String> {
    lock(&gw.log).clone()
}

/// Loopback config for tests; `extra` is appended.
pub fn config(bind: &str, extra: &str) -> String {
    format!("[coap]\nbind = \"{bind}\"\n{extra}\n")
}

/// A confirmable-request client over one UDP socket.
pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    mid: u16,
}

impl Client {
    pub fn new(server: SocketAddr) -> Client {
        let local = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let sock = UdpSocket::bind(local).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client {
            sock,
            server,
            mid: fastrand::u16(..),
        }
    }

    /// Sends a CON request and returns the piggybacked response.
    pub fn request(&mut self, code: Code, path: &str, query: &[&str], payload: &[u8]) -> Message {
        self.mid = self.mid.wrapping_add(1);
        let mut m = Message::new(
            MsgType::Con,
            code,
            self.mid,
            Token::from_u64(fastrand::u64(..)),
        );
        m.set_uri_path(path);
        for q in query {
            m.add_option(opt::URI_QUERY, q.as_bytes().to_vec());
        }
        if !payload.is_empty() {
            m.set_uint_option(opt::CONTENT_FORMAT, 40);
            m.payload = payload.to_vec();
        }
        self.sock.send_to(&m.encode(), self.server).unwrap();
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) = self.sock.recv_from(&mut buf).expect("response within 5 s");
            let r = Message::decode(&buf[..n]).expect("decodable response");
            if r.mid == self.mid && r.mtype == MsgType::Ack {
                return r;
            }
        }
    }

    pub fn register(&mut self, ep: &str, extra: &[&str], payload: &[u8]) -> Message {
        let ep = format!("ep={ep}");
        let mut q = vec![ep.as_str()];
        q.extend_from_slice(extra);
        self.request(Code::POST, "rd", &q, payload)
    }
}

/// The Python that has aiocoap: `.venv/bin/python` made by scripts/setup.sh, else python3.
pub fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// What a finished process printed, stdout then stderr.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Path of a tool the setup script installs, with a clear failure if missing.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/setup.sh (it installs the test peers)");
}

/// Simulated devices (`lwm2m-gw-sim`), killed on drop.
pub struct Sim {
    child: Child,
}

impl Sim {
    /// Starts `count` devices against `gw` and waits until all registered.
    pub fn start(gw: SocketAddr, count: usize, prefix: &str, formats: &str) -> Sim {
        Sim::start_with(gw, count, prefix, formats, &[])
    }

    /// Like `start`, with more `lwm2m-gw-sim` options.
    pub fn start_with(
        gw: SocketAddr,
        count: usize,
        prefix: &str,
        formats: &str,
        extra: &[&str],
    ) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw-sim"))
            .arg("--server")
            .arg(SocketAddr::new([127, 0, 0, 1].into(), gw.port()).to_string())
            .args([
                "--count",
                &count.to_string(),
                "--prefix",
                prefix,
                "--format",
                formats,
            ])
            .args(["--threads", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("simulator starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains(&format!("{count}/{count} devices registered")),
            "simulator: {line}"
        );
        Sim { child }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A control-socket `rpc` request.
pub fn rpc(
    c: &mut lwm2m_gw::control::socket::Client,
    ep: &str,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let req = serde_json::json!({"op": "rpc", "endpoint": ep, "method": method, "params": params});
    let serde_json::Value::Object(m) = req else {
        unreachable!()
    };
    c.call(m).expect("control answer")
}

/// A port that was free a moment ago, for a gateway that must come back
/// on the same address after a restart.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A control connection streaming decoded reports (`op: watch`).
pub struct Watch(lwm2m_gw::control::socket::Client);

impl Watch {
    pub fn start(gw: &Gateway, endpoint: Option<&str>) -> Watch {
        let mut c = gw.control();
        let mut req = serde_json::Map::new();
        req.insert("op".into(), "watch".into());
        if let Some(ep) = endpoint {
            req.insert("endpoint".into(), ep.into());
        }
        let a = c.call(req).expect("watch answer");
        assert_eq!(a["result"], "CONTENT", "{a}");
        c.set_timeout(Some(Duration::from_millis(100))).unwrap();
        Watch(c)
    }

    /// Every report that arrives within `d`.
    pub fn collect(&mut self, d: Duration) -> Vec<serde_json::Value> {
        let end = Instant::now() + d;
        let mut out = Vec::new();
        while Instant::now() < end {
            if let Ok(r) = self.0.next_line() {
                out.push(r);
            }
        }
        out
    }

    /// The next report, waiting up to `d`.
    pub fn next(&mut self, d: Duration) -> Option<serde_json::Value> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(r) = self.0.next_line() {
                return Some(r);
            }
        }
        None
    }
}

enum LiveCmd {
    Notify(bool),
    Served(std::sync::mpsc::Sender<(std::collections::BTreeMap<&'static str, u64>, usize)>),
}

/// A simulated device (the library's `SimDevice`) on a real UDP socket in
/// a thread of the test, so the test decides when it notifies.
pub struct LiveDevice {
    cmds: std::sync::mpsc::Sender<LiveCmd>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl LiveDevice {
    pub fn start(
        gw: SocketAddr,
        endpoint: &str,
        format: lwm2m_gw::lwm2m::ContentFormat,
    ) -> LiveDevice {
        use lwm2m_gw::sim::{RegState, SimConfig, SimDevice};
        let models = Arc::new(lwm2m_gw::lwm2m::ModelLibrary::embedded());
        let cfg = SimConfig::new(endpoint, gw, format);
        let mut dev = SimDevice::new(cfg, models, fastrand::u64(..)).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let (reg_tx, reg_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            dev.register(Instant::now());
            let mut told = false;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                while let Some(t) = dev.poll_transmit() {
                    let _ = sock.send_to(&t.bytes, t.peer);
                }
                if !told && matches!(dev.state(), RegState::Registered(_)) {
                    told = true;
                    let _ = reg_tx.send(());
                }
                // One command per turn, so notifications keep the test's pace.
                if let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        LiveCmd::Notify(con) => {
                            dev.notify(Instant::now(), lwm2m_gw::runtime::unix_ms(), con);
                        }
                        LiveCmd::Served(back) => {
                            let _ = back.send((dev.served.clone(), dev.observers()));
                        }
                    }
                }
                while let Some(t) = dev.poll_transmit() {
                    let _ = sock.send_to(&t.bytes, t.peer);
                }
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    dev.handle_datagram(
                        Instant::now(),
                        lwm2m_gw::runtime::unix_ms(),
                        peer,
                        &buf[..n],
                    );
                }
                if dev.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                    dev.handle_timeout(Instant::now());
                }
            }
        });
        reg_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("live device registered");
        LiveDevice { cmds: tx, stop }
    }

    /// Sends a notification with fresh values to every observer.
    pub fn notify(&self, confirmable: bool) {
        self.cmds.send(LiveCmd::Notify(confirmable)).unwrap();
    }

    /// Requests served by kind, and observers held.
    pub fn served(&self) -> (std::collections::BTreeMap<&'static str, u64>, usize) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.cmds.send(LiveCmd::Served(tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    }
}

impl Drop for LiveDevice {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A mosquitto broker on a loopback port, with persistence in its own
/// directory (so a subscriber's session outlives a broker restart).
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    /// mosquitto's log, for reading after a failure (it is buffered).
    pub log: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Broker::start_with(dir, "")
    }

    /// With more mosquitto configuration (another listener, say).
    pub fn start_with(dir: &Path, extra: &str) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("mosquitto");
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.join("mosquitto.log");
        // Run as root, mosquitto drops to its own user, which cannot write
        // the test's directory; keep root there.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root\n"
        } else {
            ""
        };
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\nlistener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nlog_dest file {}\nlog_type all\n{user}{extra}\n",
                data.display(),
                log.display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            child: None,
            port,
            conf,
            log,
        };
        b.restart();
        b
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker and waits until it listens.
    pub fn restart(&mut self) {
        let child = Command::new(tool_or("mosquitto", "/usr/sbin/mosquitto"))
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (scripts/setup.sh --test installs it)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker cleanly (it saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Publishes one message with `mosquitto_pub`.
    pub fn publish(&self, topic: &str, payload: &str) {
        let ok = Command::new(tool("mosquitto_pub"))
            .args([
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                payload,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mosquitto_pub to {topic}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tool_or(name: &str, fallback: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(fallback)
}

/// `mosquitto_sub` with a persistent QoS 1 session on `v1/gateway/#`: it
/// gets what was published while it reconnected after a broker restart.
pub struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Subscriber {
    pub fn start(broker: &Broker, id: &str) -> Subscriber {
        Subscriber::start_with(broker, id, &[])
    }

    /// Also subscribed to the `extra` topic filters.
    pub fn start_with(broker: &Broker, id: &str, extra: &[&str]) -> Subscriber {
        let mut child = Command::new(tool("mosquitto_sub"))
            .args([
                "-p",
                &broker.port.to_string(),
                "-c",
                "-i",
                id,
                "-q",
                "1",
                "-v",
            ])
            .args(["-t", "v1/gateway/#"])
            .args(extra.iter().flat_map(|t| ["-t", t]))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub starts");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((topic, body)) = line.split_once(' ') {
                    let j = serde_json::from_str(body)
                        .unwrap_or(serde_json::Value::String(body.into()));
                    lock(&sink).push((topic.to_string(), j));
                }
            }
        });
        // Subscribed once a probe comes through (the broker's log and the
        // client's own output are buffered, so neither tells in time).
        let sub = Subscriber { child, lines };
        let probe = format!("v1/gateway/probe/{id}");
        let ready = wait_until(Duration::from_secs(10), || {
            broker.publish(&probe, "{}");
            !sub.on(&probe).is_empty()
        });
        assert!(ready, "subscriber {id} did not subscribe");
        sub
    }

    /// Every message on `topic` so far.
    pub fn on(&self, topic: &str) -> Vec<serde_json::Value> {
        lock(&self.lines)
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, j)| j.clone())
            .collect()
    }

    /// Waits until `pred` holds for the messages on `topic`.
    pub fn wait(
        &self,
        topic: &str,
        limit: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let end = Instant::now() + limit;
        loop {
            let got = self.on(topic);
            if pred(&got) || Instant::now() > end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SHA-256 of `b`, lower-case hex.
pub fn sha256_hex(b: &[u8]) -> String {
    let mut s = lwm2m_gw::ota::images::Sha256::new();
    s.update(b);
    s.hex()
}

/// A simulated OTA package: the version line, `len` pseudo-random bytes, and
/// the checksum trailer the simulator checks (`good` false: a wrong one).
pub fn package(dir: &Path, name: &str, version: &str, len: usize, good: bool) -> PathBuf {
    let mut b = format!("SIMPKG version={version}\n").into_bytes();
    let mut x = 0x9e37_79b9u32 ^ len as u32;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b.push(x as u8);
    }
    let mut sum = sha256_hex(&b);
    if !good {
        sum = sum.replace('a', "b").replace('1', "2");
    }
    b.extend_from_slice(format!("\nSHA256:{sum}").as_bytes());
    let p = dir.join(name);
    std::fs::write(&p, &b).unwrap();
    p
}

/// Adds the profile `name` (TOML `toml`; it may exist already) and a
/// NoSec credential for `ep` with it, through the control socket.
pub fn provision(gw: &Gateway, ep: &str, name: &str, toml: &str) {
    let mut c = gw.control();
    let mut req = serde_json::Map::new();
    req.insert("op".into(), "profile-put".into());
    req.insert("toml".into(), toml.into());
    let a = c.call(req).unwrap();
    assert!(a["result"] == "CREATED" || a["result"] == "CHANGED", "{a}");
    let cred = serde_json::json!({"endpoint": ep, "profile": name, "security": "NoSec"});
    let serde_json::Value::Object(req) =
        serde_json::json!({"op": "device-add", "credential": cred})
    else {
        unreachable!()
    };
    let a = c.call(req).unwrap();
    assert_eq!(a["result"], "CHANGED", "{a}");
}
