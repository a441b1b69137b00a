//! `lwm2m-gw-sim`: many simulated LwM2M devices in one process.

use lwm2m_gw::clock::unix_ms;
use lwm2m_gw::dtls::identity::psk_client_config;
use lwm2m_gw::dtls::mbed::{Session, Step};
use lwm2m_gw::dtls::Keys;
use lwm2m_gw::lwm2m::{ContentFormat, ModelLibrary};
use lwm2m_gw::sim::{BootstrapProgress, RegState, SimConfig, SimDevice};
use smol::Async;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
lwm2m-gw-sim: simulated LwM2M devices (objects 1, 3, 4, 5, 6, 9, 3303)

Usage: lwm2m-gw-sim [OPTIONS]

  --server ADDR      gateway CoAP address (default 127.0.0.1:5685)
  --count N          devices to run (default 1)
  --prefix NAME      endpoint names are NAME0, NAME1, ... (default sim-)
  --format F[,F..]   content formats announced first, round robin over the
                     devices: tlv, senml-json, senml-cbor, lwm2m-cbor, json
                     (default senml-cbor)
  --lifetime S       registration lifetime in seconds (default 300)
  --bind IP          local address (default 127.0.0.1)
  --threads N        worker threads (default: the number of cores)
  --notify-ms MS     every MS milliseconds, notify every observer with fresh
                     values (default: never)
  --con              notifications are confirmable (default non-confirmable)
  --queue            register in queue mode: listen only for --awake-ms after
                     each message sent
  --awake-ms MS      queue mode listening window (default 2000)
  --update-ms MS     Update interval (default three quarters of the lifetime)
  --psk HEX          talk CoAP over DTLS with a pre-shared key: each device's
                     PSK identity is its endpoint name, the key is HEX;
                     --server is then the gateway's DTLS address (with
                     --bootstrap: the bootstrap server's key instead)
  --dtls-min V       with --psk: the oldest version the DTLS client offers,
                     ssl3, tls1.0, tls1.1 or tls1.2 (default tls1.2); Mbed
                     TLS writes it into its first ClientHello's record
                     version (ssl3: 254.0), as many devices' stacks do
  --bootstrap ADDR   bootstrap first from the bootstrap server at ADDR, then
                     register where the account it hands out says (over
                     DTLS with the generated key for a PSK account)
  --bootstrap-pack   ask GET /bspack first (LwM2M 1.2), classic on 4.04
  --lwm2m VERSION    LwM2M version to speak: 1.0 (TLV only), 1.1, 1.2
  --object-version O=V[,O=V..]
                     announce object O as version V (`</O>;ver=V`); the
                     others are announced without ver (version 1.0)
  --ota-fail KIND    objects 5 and 9 fail the way a device does: storage,
                     memory, integrity, unsupported, connection or install
  --ota-max-block N  largest package block taken; larger ones are answered
                     with this size (RFC 7959), default 1024
  --ota-dir DIR      write each received package to DIR/EP-fw.bin (-sw.bin)
  --ota-update-ms MS how long a firmware update takes before the device
                     reboots into it and registers anew (default 200)

Prints one line when every device has registered, then serves until killed.
";

struct Opts {
    server: SocketAddr,
    count: usize,
    prefix: String,
    formats: Vec<ContentFormat>,
    lifetime: u32,
    bind: IpAddr,
    threads: usize,
    notify: Option<Duration>,
    con: bool,
    queue: bool,
    awake: Duration,
    update: Option<Duration>,
    psk: Option<Vec<u8>>,
    dtls_min: Option<mbedtls::ssl::Version>,
    bootstrap: Option<SocketAddr>,
    bootstrap_pack: bool,
    lwm2m: Option<lwm2m_gw::lwm2m::Version>,
    object_versions: Vec<(u16, lwm2m_gw::lwm2m::Version)>,
    ota: lwm2m_gw::sim::OtaSimConfig,
}

fn parse() -> Result<Opts, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Opts {
        server: SocketAddr::from(([127, 0, 0, 1], 5685)),
        count: 1,
        prefix: "sim-".into(),
        formats: vec![ContentFormat::SenmlCbor],
        lifetime: 300,
        bind: IpAddr::from([127, 0, 0, 1]),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        notify: None,
        con: false,
        queue: false,
        awake: Duration::from_secs(2),
        update: None,
        psk: None,
        dtls_min: None,
        bootstrap: None,
        bootstrap_pack: false,
        lwm2m: None,
        object_versions: Vec::new(),
        ota: lwm2m_gw::sim::OtaSimConfig::default(),
    };
    let ms = |p: &mut lexopt::Parser| -> Result<Duration, lexopt::Error> {
        Ok(Duration::from_millis(p.value()?.parse::<u64>()?.max(1)))
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("server") => o.server = p.value()?.parse()?,
            Long("count") => o.count = p.value()?.parse()?,
            Long("prefix") => o.prefix = p.value()?.string()?,
            Long("format") => {
                o.formats = p
                    .value()?
                    .string()?
                    .split(',')
                    .map(|f| {
                        ContentFormat::from_name(f)
                            .filter(|c| c.is_structured())
                            .ok_or(format!("unknown or single-value format {f:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            Long("lifetime") => o.lifetime = p.value()?.parse()?,
            Long("bind") => o.bind = p.value()?.parse()?,
            Long("threads") => o.threads = p.value()?.parse::<usize>()?.max(1),
            Long("notify-ms") => o.notify = Some(ms(&mut p)?),
            Long("con") => o.con = true,
            Long("queue") => o.queue = true,
            Long("awake-ms") => o.awake = ms(&mut p)?,
            Long("update-ms") => o.update = Some(ms(&mut p)?),
            Long("psk") => {
                let hex = p.value()?.string()?;
                o.psk = Some(
                    lwm2m_gw::lwm2m::node::unhex(&hex)
                        .filter(|k| !k.is_empty())
                        .ok_or(format!("--psk {hex:?} is not hex"))?,
                )
            }
            Long("dtls-min") => {
                use mbedtls::ssl::Version;
                let v = p.value()?.string()?;
                o.dtls_min = Some(match v.as_str() {
                    "ssl3" => Version::Ssl3,
                    "tls1.0" => Version::Tls1_0,
                    "tls1.1" => Version::Tls1_1,
                    "tls1.2" => Version::Tls1_2,
                    _ => {
                        return Err(format!(
                            "--dtls-min {v:?}: give ssl3, tls1.0, tls1.1 or tls1.2"
                        )
                        .into())
                    }
                })
            }
            Long("bootstrap") => o.bootstrap = Some(p.value()?.parse()?),
            Long("bootstrap-pack") => o.bootstrap_pack = true,
            Long("lwm2m") => {
                let v = p.value()?.string()?;
                o.lwm2m = Some(
                    lwm2m_gw::lwm2m::Version::parse(&v)
                        .ok_or(format!("--lwm2m {v:?}: give 1.0, 1.1 or 1.2"))?,
                )
            }
            Long("object-version") => {
                let list = p.value()?.string()?;
                for item in list.split(',') {
                    let parsed = item.split_once('=').and_then(|(o, v)| {
                        Some((o.trim().parse().ok()?, lwm2m_gw::lwm2m::Version::parse(v)?))
                    });
                    o.object_versions.push(parsed.ok_or(format!(
                        "--object-version {item:?}: give OBJECT=MAJOR.MINOR"
                    ))?);
                }
            }
            Long("ota-fail") => {
                let v = p.value()?.string()?;
                o.ota.fail = Some(lwm2m_gw::sim::OtaFailure::parse(&v).ok_or(format!(
                    "--ota-fail {v:?}: give storage, memory, integrity, unsupported, connection or install"
                ))?)
            }
            Long("ota-max-block") => {
                let n: usize = p.value()?.parse()?;
                if !(16..=1024).contains(&n) || !n.is_power_of_two() {
                    return Err(
                        format!("--ota-max-block {n}: a power of two from 16 to 1024").into(),
                    );
                }
                o.ota.max_block = n;
            }
            Long("ota-dir") => o.ota.dir = Some(p.value()?.into()),
            Long("ota-update-ms") => o.ota.update_time = ms(&mut p)?,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

/// One device and its socket, shared by its own task (requests, timers)
/// and its thread's notifier.
struct Device {
    dev: Mutex<SimDevice>,
    /// The DTLS session, with `--psk`; locked after `dev`, never before.
    tls: Mutex<Option<Session>>,
    sock: Async<UdpSocket>,
    /// Where DTLS records go: the LwM2M server, or the bootstrap server
    /// while bootstrapping.
    server: Mutex<SocketAddr>,
    /// `--bootstrap` and `--bootstrap-pack`.
    bootstrap: Option<(SocketAddr, bool)>,
    /// With `--bootstrap`, the `--psk` key for the bootstrap server.
    bootstrap_psk: Option<Vec<u8>>,
    /// `--dtls-min`.
    dtls_min: Option<mbedtls::ssl::Version>,
    epoch: Instant,
}

/// A DTLS client session with one pre-shared key.
fn psk_session(
    identity: &str,
    key: &[u8],
    lowest: Option<mbedtls::ssl::Version>,
) -> Result<Session, lwm2m_gw::dtls::DtlsError> {
    let suites: Vec<_> = lwm2m_gw::dtls::Settings::default().suites;
    lwm2m_gw::dtls::identity::rng()
        .and_then(|rng| psk_client_config(&suites, identity, key, rng, lowest))
        .and_then(|c| Session::client(&c))
}

impl Device {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimDevice> {
        self.dev.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tls(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.tls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Sends what the device has queued without waiting: a datagram that
    /// does not fit the socket buffer is dropped, as on a radio.
    fn flush(&self, dev: &mut SimDevice) {
        let mut tls = self.tls();
        while let Some(t) = dev.poll_transmit() {
            match tls.as_mut() {
                Some(s) => {
                    if let Err(e) = s.write(self.ms(), &t.bytes) {
                        log::debug!("ep={} dtls write: {e}", dev.endpoint());
                    }
                }
                None => self.send(dev.endpoint(), &t.bytes, t.peer),
            }
        }
        if let Some(s) = tls.as_mut() {
            self.send_records(dev.endpoint(), s);
        }
    }

    fn send(&self, ep: &str, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.sock.get_ref().send_to(bytes, to) {
            log::debug!("ep={ep} send: {e}");
        }
    }

    fn send_records(&self, ep: &str, s: &mut Session) {
        let out: Vec<Vec<u8>> = s.take_transmits().collect();
        let to = *self.server.lock().unwrap_or_else(|e| e.into_inner());
        for d in out {
            self.send(ep, &d, to);
        }
    }

    /// One datagram from the network: decrypted first with `--psk`.
    fn receive(&self, dev: &mut SimDevice, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let mut tls = self.tls();
        match tls.as_mut() {
            Some(s) => {
                let mut plain = Vec::new();
                let step = s.handle(self.ms(), &Keys::default(), bytes, &mut plain);
                if let Step::Closed(why) = step {
                    log::warn!("ep={} DTLS session ended: {why}", dev.endpoint());
                }
                self.send_records(dev.endpoint(), s);
                drop(tls);
                for p in plain {
                    dev.handle_datagram(now, unix_ms(), peer, &p);
                }
            }
            None => dev.handle_datagram(now, unix_ms(), peer, bytes),
        }
    }

    /// A new DTLS session for the bootstrap server, with `--psk`.
    fn bootstrap_session(&self) -> Option<Session> {
        let key = self.bootstrap_psk.as_ref()?;
        let name = self.lock().endpoint().to_string();
        match psk_session(&name, key, self.dtls_min) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("ep={name} bootstrap DTLS session: {e}");
                None
            }
        }
    }

    /// With `--psk`: the DTLS handshake, before the device registers.
    async fn handshake(&self) -> Result<(), String> {
        let ep = self.lock().endpoint().to_string();
        if self.tls().is_none() {
            return Ok(());
        }
        {
            let mut tls = self.tls();
            let s = tls.as_mut().expect("checked");
            s.start(self.ms(), &Keys::default());
            self.send_records(&ep, s);
        }
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = {
                let tls = self.tls();
                let s = tls.as_ref().expect("checked");
                if s.is_open() {
                    return Ok(());
                }
                s.poll_timeout()
                    .map(|ms| self.epoch + Duration::from_millis(ms))
            };
            let got = smol::future::or(async { self.sock.recv_from(&mut buf).await.ok() }, async {
                match deadline {
                    Some(t) => smol::Timer::at(t).await,
                    None => smol::Timer::after(Duration::from_secs(5)).await,
                };
                None
            })
            .await;
            let mut tls = self.tls();
            let s = tls.as_mut().expect("checked");
            let step = match got {
                Some((n, _)) => s.handle(self.ms(), &Keys::default(), &buf[..n], &mut Vec::new()),
                None => s.handle_timeout(self.ms(), &Keys::default()),
            };
            self.send_records(&ep, s);
            if let Step::Closed(why) = step {
                return Err(format!("DTLS handshake failed: {why}"));
            }
        }
    }
}

/// Bootstraps, then takes the account: the server to register with and,
/// for a PSK account, a new DTLS session with the generated key.
async fn bootstrap(d: &Device, bs: SocketAddr, pack: bool) -> Result<(), String> {
    d.handshake().await?;
    d.lock().bootstrap(Instant::now(), bs, pack);
    let mut buf = vec![0u8; 2048];
    let account = loop {
        let deadline = {
            let mut dev = d.lock();
            d.flush(&mut dev);
            match dev.bootstrap_progress() {
                Some(BootstrapProgress::Done(a)) => break a.clone(),
                Some(BootstrapProgress::Failed(e)) => return Err(format!("bootstrap: {e}")),
                _ => {}
            }
            dev.poll_timeout()
        };
        pump(d, &mut buf, deadline).await;
    };
    let addr = account.addr().ok_or(format!(
        "bootstrap: server URI {:?} is no IP address",
        account.uri
    ))?;
    *d.server.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    d.lock().use_account(&account);
    let session = match account.mode {
        0 => {
            let identity = String::from_utf8_lossy(&account.identity).into_owned();
            let s = psk_session(&identity, &account.key, d.dtls_min).map_err(|e| e.to_string())?;
            Some(s)
        }
        3 => None,
        m => return Err(format!("bootstrap: security mode {m} is not simulated")),
    };
    *d.tls() = session;
    Ok(())
}

/// Waits for one datagram (and takes what else is queued) or the deadline.
async fn pump(d: &Device, buf: &mut [u8], deadline: Option<Instant>) {
    let got = smol::future::or(async { d.sock.recv_from(buf).await.ok() }, async {
        match deadline {
            Some(t) => smol::Timer::at(t).await,
            None => std::future::pending().await,
        };
        None
    })
    .await;
    let now = Instant::now();
    let mut dev = d.lock();
    match got {
        Some((n, peer)) => {
            d.receive(&mut dev, now, peer, &buf[..n]);
            // Take what else is waiting before answering.
            while let Ok((n, peer)) = d.sock.get_ref().recv_from(buf) {
                d.receive(&mut dev, now, peer, &buf[..n]);
            }
        }
        None => dev.handle_timeout(now),
    }
}

async fn run_device(d: Arc<Device>, report: smol::channel::Sender<(String, Result<(), String>)>) {
    if let Some((bs, pack)) = d.bootstrap {
        if let Err(e) = bootstrap(&d, bs, pack).await {
            let ep = d.lock().endpoint().to_string();
            let _ = report.send((ep, Err(e))).await;
            return;
        }
    }
    if let Err(e) = d.handshake().await {
        let ep = d.lock().endpoint().to_string();
        let _ = report.send((ep, Err(e))).await;
        return;
    }
    d.lock().register(Instant::now());
    let mut buf = vec![0u8; 2048];
    let mut reported = false;
    loop {
        let (deadline, state) = {
            let mut dev = d.lock();
            d.flush(&mut dev);
            (dev.poll_timeout(), dev.state().clone())
        };
        if !reported {
            let r = match state {
                RegState::Registered(_) => Some(Ok(())),
                RegState::Failed(e) => Some(Err(e)),
                _ => None,
            };
            if let Some(r) = r {
                reported = true;
                let ep = d.lock().endpoint().to_string();
                let _ = report.send((ep, r)).await;
            }
        }
        pump(&d, &mut buf, deadline).await;
        let again = d.lock().take_rebootstrap();
        if let (true, Some((bs, pack))) = (again, d.bootstrap) {
            // Bootstrap-Request Trigger: a new account, then register anew.
            let ep = {
                let mut dev = d.lock();
                // The Execute's answer leaves over the old session first.
                d.flush(&mut dev);
                dev.endpoint().to_string()
            };
            *d.server.lock().unwrap_or_else(|e| e.into_inner()) = bs;
            *d.tls() = d.bootstrap_session();
            let r = match bootstrap(&d, bs, pack).await {
                Ok(()) => d.handshake().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    log::info!("ep={ep} bootstrapped again on the server's trigger");
                    d.lock().register(Instant::now());
                }
                Err(e) => log::warn!("ep={ep} bootstrap on trigger failed: {e}"),
            }
        }
    }
}

/// Notifies the observers of a share of the devices, spread evenly over
/// the interval: one timer per thread, not one per device, so the
/// simulator can offer far more notifications than the gateway takes.
async fn notifier(devices: Vec<Arc<Device>>, every: Duration, con: bool) {
    if devices.is_empty() {
        return;
    }
    let tick = Duration::from_millis(5).min(every);
    let per_tick = devices.len() as f64 * tick.as_secs_f64() / every.as_secs_f64();
    let (mut cursor, mut owed) = (0usize, 0.0f64);
    let mut at = Instant::now();
    loop {
        at += tick;
        smol::Timer::at(at).await;
        let now = Instant::now();
        if now > at + every {
            // Far behind (a stalled machine): skip rather than burst.
            at = now;
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let d = &devices[cursor];
            cursor = (cursor + 1) % devices.len();
            let mut dev = d.lock();
            if dev.observers() > 0 {
                dev.notify(now, unix_ms(), con);
                d.flush(&mut dev);
            }
        }
    }
}

fn main() -> ExitCode {
    lwm2m_gw::logging::init("warn");
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lwm2m-gw-sim: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let models = Arc::new(ModelLibrary::embedded());
    let ex = Arc::new(smol::Executor::new());
    for _ in 0..o.threads {
        let ex = ex.clone();
        std::thread::spawn(move || smol::block_on(ex.run(std::future::pending::<()>())));
    }
    let (tx, rx) = smol::channel::bounded(1024);
    let started = Instant::now();
    let mut shares: Vec<Vec<Arc<Device>>> = vec![Vec::new(); o.threads];
    for i in 0..o.count {
        let name = format!("{}{i}", o.prefix);
        let format = o.formats[i % o.formats.len()];
        let mut cfg = SimConfig::new(&name, o.server, format);
        cfg.lifetime = o.lifetime;
        cfg.queue_mode = o.queue;
        cfg.awake = o.awake;
        cfg.update_every = o.update;
        cfg.ota = o.ota.clone();
        cfg.object_versions = o.object_versions.clone();
        if let Some(v) = o.lwm2m {
            cfg.lwm2m_version = v;
        }
        let dev = match SimDevice::new(cfg, models.clone(), fastrand::u64(..)) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("lwm2m-gw-sim: the simulated objects do not fit the models: {e}");
                return ExitCode::FAILURE;
            }
        };
        let sock = match UdpSocket::bind(SocketAddr::new(o.bind, 0)).and_then(Async::new) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("lwm2m-gw-sim: cannot open socket {i}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let tls = match &o.psk {
            Some(key) => match psk_session(&name, key, o.dtls_min) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("lwm2m-gw-sim: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let d = Arc::new(Device {
            dev: Mutex::new(dev),
            tls: Mutex::new(tls),
            sock,
            server: Mutex::new(o.bootstrap.unwrap_or(o.server)),
            bootstrap: o.bootstrap.map(|b| (b, o.bootstrap_pack)),
            bootstrap_psk: o.psk.clone(),
            dtls_min: o.dtls_min,
            epoch: started,
        });
        shares[i % o.threads].push(d.clone());
        ex.spawn(run_device(d, tx.clone())).detach();
    }
    if let Some(every) = o.notify {
        for share in shares {
            ex.spawn(notifier(share, every, o.con)).detach();
        }
    }
    drop(tx);
    let (mut ok, mut failed) = (0, 0);
    smol::block_on(async {
        while ok + failed < o.count {
            match rx.recv().await {
                Ok((_, Ok(()))) => ok += 1,
                Ok((ep, Err(e))) => {
                    failed += 1;
                    eprintln!("lwm2m-gw-sim: ep={ep} registration failed: {e}");
                }
                Err(_) => break,
            }
        }
    });
    println!(
        "lwm2m-gw-sim: {ok}/{} devices registered with {} in {} ms",
        o.count,
        o.bootstrap.map_or(o.server.to_string(), |b| format!(
            "the server the bootstrap server {b} named"
        )),
        started.elapsed().as_millis()
    );
    if failed > 0 && ok == 0 {
        return ExitCode::FAILURE;
    }
    loop {
        std::thread::park();
    }
}
