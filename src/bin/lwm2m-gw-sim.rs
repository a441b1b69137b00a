//! `lwm2m-gw-sim`: many simulated LwM2M devices in one process.

use lwm2m_gw::lwm2m::{ContentFormat, ModelLibrary};
use lwm2m_gw::runtime::unix_ms;
use lwm2m_gw::sim::{RegState, SimConfig, SimDevice};
use smol::Async;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

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
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

async fn run_device(
    mut dev: SimDevice,
    sock: Async<UdpSocket>,
    report: smol::channel::Sender<(String, Result<(), String>)>,
) {
    dev.register(Instant::now());
    let mut buf = vec![0u8; 2048];
    let mut reported = false;
    loop {
        while let Some(t) = dev.poll_transmit() {
            if let Err(e) = sock.send_to(&t.bytes, t.peer).await {
                log::warn!("ep={} send: {e}", dev.endpoint());
            }
        }
        if !reported {
            let r = match dev.state() {
                RegState::Registered(_) => Some(Ok(())),
                RegState::Failed(e) => Some(Err(e.clone())),
                _ => None,
            };
            if let Some(r) = r {
                reported = true;
                let _ = report.send((dev.endpoint().to_string(), r)).await;
            }
        }
        let deadline = dev.poll_timeout();
        let got = smol::future::or(async { sock.recv_from(&mut buf).await.ok() }, async {
            match deadline {
                Some(d) => smol::Timer::at(d).await,
                None => std::future::pending().await,
            };
            None
        })
        .await;
        let now = Instant::now();
        match got {
            Some((n, peer)) => {
                dev.handle_datagram(now, unix_ms(), peer, &buf[..n]);
                // Take what else is waiting before answering.
                while let Ok((n, peer)) = sock.get_ref().recv_from(&mut buf) {
                    dev.handle_datagram(now, unix_ms(), peer, &buf[..n]);
                }
            }
            None => dev.handle_timeout(now),
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
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
    for i in 0..o.count {
        let name = format!("{}{i}", o.prefix);
        let format = o.formats[i % o.formats.len()];
        let mut cfg = SimConfig::new(&name, o.server, format);
        cfg.lifetime = o.lifetime;
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
        ex.spawn(run_device(dev, sock, tx.clone())).detach();
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
        o.server,
        started.elapsed().as_millis()
    );
    if failed > 0 && ok == 0 {
        return ExitCode::FAILURE;
    }
    loop {
        std::thread::park();
    }
}
