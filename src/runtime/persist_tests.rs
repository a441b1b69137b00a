//! A restart's heap against the running gateway's, through the real
//! store: the regression test of the restore path's memory.

use super::*;
use crate::coap::{opt, Code, Message, MsgType, Token};
use crate::heap_count;
use crate::server::ServerConfig;
use crate::store::StoreConfig;
use std::net::SocketAddr;
use std::sync::Arc;

const UNIX: u64 = 1_700_000_000_000;
const PATHS: [&str; 2] = ["/3/0/9", "/3303/0/5700"];

fn register(i: usize) -> Vec<u8> {
    let mut m = Message::new(
        MsgType::Con,
        Code::POST,
        i as u16,
        Token::new(&(i as u32).to_be_bytes()).unwrap(),
    );
    m.set_uri_path("rd");
    m.set_uint_option(opt::CONTENT_FORMAT, 40);
    for q in [
        format!("ep=heap-{i}"),
        "lt=86400".into(),
        "lwm2m=1.1".into(),
    ] {
        m.add_option(opt::URI_QUERY, q.into_bytes());
    }
    m.payload = b"</>;rt=\"oma.lwm2m\";ct=11542,</1/0>,</3/0>,</4/0>,</5/0>,</3303/0>".to_vec();
    m.encode()
}

fn peer(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))
}

/// Answers every Observe the server sent: 2.05, Observe 1, a number.
fn answer_observes(server: &mut Server, now: Instant) -> usize {
    let mut answered = 0;
    while let Some(t) = server.poll_transmit() {
        let req = Message::decode(&t.bytes).unwrap();
        if req.code != Code::GET {
            continue;
        }
        let mut a = Message::new(MsgType::Ack, Code::CONTENT, req.mid, req.token);
        a.set_uint_option(opt::OBSERVE, 1);
        a.set_uint_option(opt::CONTENT_FORMAT, 0);
        a.payload = b"21".to_vec();
        server.handle_datagram(now, UNIX, t.peer, &a.encode());
        answered += 1;
    }
    answered
}

fn new_server(models: &Arc<ModelLibrary>) -> Server {
    let mut server = Server::new(ServerConfig::default(), 9);
    server.set_models(models.clone());
    server.set_allow_unknown(true);
    server
}

#[test]
fn a_restart_takes_no_more_heap_than_running_with_the_same_devices() {
    const N: usize = 3000;
    let dir = std::env::temp_dir().join(format!("lwm2m-gw-heap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = StoreConfig {
        dir: dir.clone(),
        cache_bytes: 1 << 20,
        flush_every_ms: 500,
    };
    let base = heap_count::live();
    let models = Arc::new(ModelLibrary::embedded());
    let now = Instant::now();

    // Running: N devices register, each observed on two paths.
    let (store, _) = Store::open(&cfg).unwrap();
    let mut server = new_server(&models);
    let empty = heap_count::live();
    for i in 0..N {
        server.handle_datagram(now, UNIX, peer(i), &register(i));
    }
    while server.poll_transmit().is_some() {}
    persist_all(&mut server, &store, &models);
    let mut handle = 0;
    for i in 0..N {
        for path in PATHS {
            handle += 1;
            let params = serde_json::json!({ "id": path });
            server.command(now, handle, &format!("heap-{i}"), "Observe", &params);
        }
        answer_observes(&mut server, now);
    }
    persist_all(&mut server, &store, &models);
    while server.poll_answer().is_some() {}
    while server.poll_report().is_some() {}
    assert_eq!(server.observation_count(), 2 * N);
    // Settled: message ids and cached answers of the registration burst
    // are forgotten (EXCHANGE_LIFETIME), as in a gateway that ran a while.
    server.handle_timeout(now + Duration::from_secs(300));
    while server.poll_transmit().is_some() {}
    store.flush().unwrap();
    let live = heap_count::live() - empty;

    // Killed: nothing of the running gateway is freed by a shutdown path.
    drop(server);
    drop(store);

    // Restarted on the same store, up to the last restored observation.
    // sled's flusher may hold the lock a moment after the drop.
    let mut tries = 0;
    let store = loop {
        tries += 1;
        match Store::open(&cfg) {
            Err(crate::store::StoreError::Locked(_)) if tries < 250 => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => break r.unwrap().0,
        }
    };
    let mut server = new_server(&models);
    // Measured from the same point as the running side: models, an open
    // store and an empty server (the store's reading check included).
    let empty_again = heap_count::live();
    heap_count::reset_peak();
    let r = restore(&mut server, &store, now, UNIX).unwrap();
    let mut obs = ObservationRestore::start(&mut server, &store, now);
    while !obs.step(&mut server, &store, now, RESTORE_STEP) {}
    assert_eq!((r.kept, obs.observed), (N, 2 * N));
    let after = heap_count::live() - empty_again;
    let peak = heap_count::peak() - empty_again;
    println!(
        "heap at {N} devices x 2 observations, above an empty gateway's {} KiB: running {} KiB, restarted {} KiB ({:.2}x), peak during the restore {} KiB ({:.2}x)",
        (empty - base) / 1024,
        live / 1024,
        after / 1024,
        after as f64 / live as f64,
        peak / 1024,
        peak as f64 / live as f64
    );
    assert!(
        after as f64 <= 1.2 * live as f64,
        "restarted heap {after} B against {live} B running"
    );
    assert!(
        peak as f64 <= 1.3 * live as f64,
        "peak heap during the restore {peak} B against {live} B running"
    );
    drop(server);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes what the server has to persist on another thread, so that the
/// running side's figure is the server's own state and not sled's write
/// buffers (the heap is counted per thread): the restart must then fit in
/// what the server alone held.
fn persist_all(server: &mut Server, store: &Store, models: &ModelLibrary) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let (events, _) = write(server, store, models);
            assert!(events
                .iter()
                .all(|e| matches!(e, ServerEvent::Registered { .. })));
        });
    });
}
