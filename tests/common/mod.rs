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
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts the binary with `config` (TOML) in `dir`, on an OS-chosen port.
    pub fn start(dir: &Path, config: &str) -> Gateway {
        let cfg = dir.join("gw.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--coap-port", "0"])
            .env("RUST_LOG", "info,sled=warn")
            .env_remove("RUNTIME_DIRECTORY")
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
        Gateway {
            child,
            addr: bound,
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
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.log_contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Locks the log even after a failed assertion poisoned it.
pub fn lock(log: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
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
