//! The command path against a real server core and a store in a temporary
//! directory, without sockets.

use super::*;
use crate::lwm2m::ModelLibrary;
use crate::server::ServerConfig;
use crate::store::StoreConfig;
use std::sync::Arc;

struct Gw {
    server: Server,
    store: Store,
    dir: std::path::PathBuf,
    handles: u64,
    key_refreshes: u32,
}

impl Gw {
    fn new(name: &str) -> Gw {
        let dir =
            std::env::temp_dir().join(format!("lwm2m-gw-dispatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = Store::open(&StoreConfig {
            dir: dir.clone(),
            cache_bytes: 1 << 20,
            flush_every_ms: 500,
        })
        .unwrap();
        let mut server = Server::new(ServerConfig::default(), 7);
        server.set_models(Arc::new(ModelLibrary::embedded()));
        Gw {
            server,
            store,
            dir,
            handles: 0,
            key_refreshes: 0,
        }
    }

    fn run(&mut self, line: Json) -> Outcome {
        let req = Request::parse(&line).unwrap();
        execute(self, Instant::now(), req)
    }

    fn done(&mut self, line: Json) -> Answer {
        match self.run(line) {
            Outcome::Done(a) => a,
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Backend for Gw {
    fn server(&self) -> &Server {
        &self.server
    }
    fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn new_handle(&mut self) -> u64 {
        self.handles += 1;
        self.handles
    }
    fn stats(&self) -> Json {
        json!({"registrations": self.server.registry().len()})
    }
    fn credentials_changed(&mut self) {
        self.key_refreshes += 1;
    }
}

fn psk(ep: &str, identity: &str) -> Json {
    json!({"endpoint": ep, "profile": "default",
           "security": {"Psk": {"identity": identity, "key": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]}}})
}

#[test]
fn a_device_command_is_started_and_its_answer_comes_from_the_server() {
    let mut gw = Gw::new("command");
    let line =
        json!({"op": "rpc", "endpoint": "nobody", "method": "Read", "params": {"id": "/3/0/9"}});
    assert_eq!(gw.run(line), Outcome::Started(1));
    let (handle, answer) = gw
        .server
        .poll_answer()
        .expect("an answer for an unknown device");
    assert_eq!(handle, 1);
    assert!(!answer.is_success(), "{answer:?}");
}

#[test]
fn an_import_with_one_bad_device_stores_none_and_keeps_the_keys_in_step() {
    let mut gw = Gw::new("import");
    let bad = json!({"op": "device-import", "credentials": [psk("good", "id-1"), psk("", "id-2")]});
    let a = gw.done(bad);
    assert_eq!(a.result, "BAD_REQUEST", "{a:?}");
    assert!(gw.server.credentials().is_empty());
    assert!(gw.store.credentials().unwrap().is_empty());
    let ok = json!({"op": "device-import", "credentials": [psk("a", "id-a"), psk("b", "id-b")]});
    assert_eq!(gw.done(ok).value, Some(json!(2)));
    assert_eq!(gw.store.credentials().unwrap().len(), 2);
    let a = gw.done(json!({"op": "device-rm", "endpoint": "a"}));
    assert_eq!(a.result, "DELETED");
    assert_eq!(gw.store.credentials().unwrap().len(), 1);
    // Every provisioning request, refused or not, tells the DTLS side.
    assert_eq!(gw.key_refreshes, 3);
}

#[test]
fn listings_stats_and_watch_take_the_same_path() {
    let mut gw = Gw::new("listings");
    let a = gw.done(json!({"op": "devices"}));
    assert_eq!(a.value, Some(json!([])));
    let a = gw.done(json!({"op": "stats"}));
    assert_eq!(a.value, Some(json!({"registrations": 0})));
    let a = gw.done(json!({"op": "device", "endpoint": "ghost"}));
    assert_eq!(a.result, "DEVICE_NOT_REGISTERED");
    let a = gw.done(json!({"op": "profile", "name": "nope"}));
    assert_eq!(a.result, "NOT_FOUND");
    assert_eq!(
        gw.run(json!({"op": "watch", "endpoint": "x"})),
        Outcome::Watch(Some("x".into()))
    );
}
