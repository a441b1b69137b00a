//! The I/O shell: builds each part from its settings, then runs one event
//! loop that moves datagrams, requests and time into the sans-IO server and
//! its outputs to the sockets, the store and the subscribers.
//!
//! Who owns what: [`Gateway`] owns the server core, the store, and one thin
//! shell per transport ([`udp`], [`dtls`], [`control`], [`mqtt`]). A shell
//! moves bytes and holds no protocol logic. Each turn of the loop: read what
//! woke it, feed the server, write the server's changes to the store and
//! flush once ([`persist`]), send, then hand reports and answers out
//! ([`fanout`], the shells). Nothing but `main.rs` and the binaries uses
//! this module; it uses everything below it.

mod bootstrap;
mod console;
mod control;
mod dtls;
mod error;
mod fanout;
mod inbox;
mod mqtt;
mod ota;
mod persist;
mod stats;
mod stop;
mod udp;

pub use error::RunError;
pub use stop::Signals;

use crate::config::Settings;
use crate::control::socket::CtlRequest;
use crate::dtls::Keys;
use crate::lwm2m::ModelLibrary;
use crate::northbound::Downlink;
use crate::server::command::Answer;
use crate::server::{Report, Server, ServerEvent};
use crate::store::Store;
use fanout::Fanout;
use serde_json::Value as Json;
use smol::channel::Receiver;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The clock values are stamped with; kept here for the simulator and tests.
pub use crate::clock::unix_ms;

/// A started gateway: store open, models loaded, sockets bound.
pub struct Gateway {
    server: Server,
    store: Store,
    models: Arc<ModelLibrary>,
    udp: udp::Socket,
    dtls: Option<dtls::Shell>,
    control: control::Shell,
    mqtt: Option<mqtt::Shell>,
    fanout: Fanout,
    max_datagram: usize,
    data_dir: PathBuf,
    /// What opening the store found, for `stats`.
    store_health: Json,
    next_handle: u64,
    /// Stored observations still to take back, a step each turn.
    restoring: Option<persist::ObservationRestore>,
    /// The bootstrap server, when one of its ports is on.
    bootstrap: Option<bootstrap::Shell>,
    /// Firmware and software updates.
    ota: ota::Shell,
    /// The web console, when `http.enabled` or `http.listen` is set.
    console: Option<console::Console>,
    /// SIGTERM and SIGINT, when the binary took them (`stop_on`).
    signals: Option<Signals>,
}

impl Gateway {
    /// Binds the sockets, opens the store, loads the models and profiles,
    /// restores registrations, and starts the northbound bridge. Takes a
    /// [`Config`](crate::config::Config), resolved here, or [`Settings`].
    pub fn start<S>(cfg: S) -> Result<Gateway, RunError>
    where
        S: TryInto<Settings>,
        RunError: From<S::Error>,
    {
        let cfg: Settings = cfg.try_into()?;
        // Sockets first: a port in use fails before anything is read, and
        // datagrams that arrive while the store loads wait in the kernel.
        let udp = udp::Socket::bind(&cfg.coap, udp::Frames::Coap, "udp")?;
        let dtls_socket = match &cfg.dtls {
            Some(d) => Some(udp::Socket::bind(&d.listen, udp::Frames::Dtls, "dtls udp")?),
            None => None,
        };
        let bs_sockets = match &cfg.bootstrap {
            Some(b) => Some(bootstrap::Shell::bind(b)?),
            None => None,
        };
        stats::mark_start();
        let mut control = control::Shell::new(&cfg.control);
        // The store before the control socket: its lock is what tells a
        // second gateway on the same data directory, in the clearer words.
        let (store, report) = Store::open(&cfg.store)?;
        let store_health = store_health(&report);
        // Bound before the start-up line: whoever waits for that line may
        // use the socket at once.
        control.bind()?;
        let mut mqtt = match cfg.mqtt {
            Some(m) => Some(mqtt::Shell::start(m, &store)?),
            None => None,
        };
        if let (Some(m), Some(_)) = (&mut mqtt, &report.moved_aside) {
            // The platform hears of it even where nobody reads the log;
            // the uplink queue moved aside with the rest, so this is the
            // first message of the new one.
            m.gateway_attributes(&serde_json::json!({
                "storeCorruptAt": crate::clock::unix_ms(),
                "storeMovedAside": store_health["movedAside"],
                "storeCorruptReason": store_health["reason"],
            }));
        }
        let models = Arc::new(ModelLibrary::load(&cfg.models.system, &cfg.models.site));
        let mut server = Server::new(cfg.server, crate::clock::random_seed());
        server.set_models(models.clone());
        // Profile files first; imported ones (in the store) win on a name.
        for p in crate::profile::load_dir(&cfg.models.profiles) {
            let name = p.name.clone();
            if let Err(e) = server.set_profile(p) {
                log::error!(
                    "profile {name:?} in {} skipped: {e}",
                    cfg.models.profiles.display()
                );
            }
        }
        server.set_allow_unknown(cfg.allow_unknown_endpoints);
        if cfg.allow_unknown_endpoints {
            log::warn!(
                "endpoints without a credential are admitted over plain CoAP with the default profile \
                 (registration.allow_unknown_endpoints = true); production configs set it to false"
            );
        }
        let r = persist::restore(&mut server, &store, Instant::now(), crate::clock::unix_ms())?;
        let restoring = persist::ObservationRestore::start(&mut server, &store, Instant::now());
        let dtls = match (&cfg.dtls, dtls_socket) {
            (Some(d), Some(socket)) => {
                let keys = Keys::from_credentials(server.credentials());
                Some(dtls::Shell::start(d, socket, keys, "CoAP")?)
            }
            _ => {
                log::info!("DTLS: off (dtls.enabled = false)");
                None
            }
        };
        let bootstrap = match (&cfg.bootstrap, bs_sockets) {
            (Some(b), Some(sockets)) => Some(bootstrap::Shell::start(
                b,
                sockets,
                &store,
                models.clone(),
                udp.local_addr().port(),
                dtls.as_ref()
                    .map(|d| (d.socket().local_addr().port(), d.server_identity())),
            )?),
            _ => {
                log::info!("bootstrap server: off (bootstrap.port and dtls_port are 0)");
                None
            }
        };
        log::info!(
            "lwm2m-gw {} listening on CoAP udp {}{}; data {}; {} object models; {} registrations restored ({} expired while stopped)",
            env!("CARGO_PKG_VERSION"),
            udp.local_addr(),
            if udp.dual_stack() { " (IPv4 and IPv6)" } else { "" },
            cfg.data_dir.display(),
            models.len(),
            r.kept,
            r.dropped,
        );
        log::info!(
            "{} queued requests restored; {} profiles, {} device credentials; observations follow",
            r.held,
            server.profiles().len(),
            r.provisioned
        );
        if mqtt.is_none() {
            log::info!("northbound: off (no mqtt.url)");
        }
        let mut ota = ota::Shell::start(&cfg.ota, &store, Instant::now())?;
        ota.set_pull_bases(
            &cfg.ota.host,
            udp.local_addr().port(),
            dtls.as_ref().map(|d| d.socket().local_addr().port()),
        );
        // Last: its requests wait in the control channel until the loop runs.
        let console = match cfg.http {
            Some(h) => Some(console::Console::start(h, control.sender())?),
            None => None,
        };
        Ok(Gateway {
            console,
            server,
            store,
            models,
            udp,
            dtls,
            control,
            mqtt,
            fanout: Fanout::default(),
            max_datagram: cfg.coap.max_datagram,
            data_dir: cfg.data_dir,
            store_health,
            next_handle: 0,
            restoring: Some(restoring),
            bootstrap,
            ota,
            signals: None,
        })
    }

    /// The bound CoAP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr()
    }

    /// The web console's address, when it is on.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(console::Console::local_addr)
    }

    /// The bound DTLS address, when DTLS is on.
    pub fn dtls_addr(&self) -> Option<SocketAddr> {
        self.dtls.as_ref().map(|s| s.socket().local_addr())
    }

    /// The bootstrap server's plain and DTLS addresses, when on.
    pub fn bootstrap_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.bootstrap
            .as_ref()
            .map_or((None, None), |b| (b.udp_addr(), b.dtls_addr()))
    }

    /// The state directory in use.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// A bounded stream of registry events. A subscriber that falls behind
    /// loses events (counted and logged), it never stalls the gateway.
    pub fn subscribe(&mut self, capacity: usize) -> Receiver<ServerEvent> {
        self.fanout.subscribe(capacity)
    }

    /// A bounded stream of decoded reports (observations and Send), for
    /// the northbound side; a subscriber that falls behind loses reports.
    pub fn subscribe_reports(&mut self, capacity: usize) -> Receiver<Arc<Report>> {
        self.fanout.subscribe_reports(capacity)
    }

    /// Stops cleanly on these signals: see [`Signals`].
    pub fn stop_on(mut self, signals: Signals) -> Gateway {
        self.signals = Some(signals);
        self
    }

    /// Serves until a socket error, or until a stop signal: then it stops
    /// reading datagrams, finishes the turn, flushes the store, closes the
    /// MQTT session and returns.
    pub async fn run(mut self) -> Result<(), RunError> {
        let max = self.max_datagram;
        let mut buf = vec![0u8; max + 1];
        self.control.serve();
        let ctl_rx = self.control.requests();
        enum Wake {
            Io,
            Control(CtlRequest),
            Downlink(Downlink),
            Added(ota::Added),
            Stop(&'static str),
        }
        let signals = self.signals.take();
        let mut stopping: Option<(&'static str, Instant)> = None;
        let added_rx = self.ota.added();
        let down_rx = self.mqtt.as_ref().map(|m| m.downlink());
        let mut crash_point = CrashPoint::from_env();
        // Sockets are bound and the store is open: tell systemd, and ping
        // its watchdog from this loop, so a loop that hangs gets restarted.
        let notifier = crate::notify::Notifier::from_env();
        let ping_every = notifier.as_ref().and_then(|n| n.ping_every());
        let mut next_ping = ping_every.map(|d| Instant::now() + d);
        if let Some(n) = &notifier {
            n.ready(&format!(
                "serving CoAP on {}, {} registrations",
                self.udp.local_addr(),
                self.server.registry().len()
            ));
            if next_ping.is_some() {
                n.watchdog();
            }
        }
        loop {
            // While observations are restored, the loop only looks at what
            // is ready and comes straight back for the next step.
            let restore_step = self.restoring.as_ref().map(|_| Instant::now());
            let deadline = [
                self.server.poll_timeout(),
                next_ping,
                self.dtls.as_ref().and_then(|s| s.poll_timeout()),
                self.bootstrap.as_ref().and_then(|b| b.poll_timeout()),
                self.ota.poll_timeout(),
                restore_step,
            ]
            .into_iter()
            .flatten()
            .min();
            let plain = &self.udp;
            let secure = self.dtls.as_ref().map(|s| s.socket());
            let bs = self.bootstrap.as_ref();
            let io = async {
                let readable = smol::future::or(plain.readable(), async {
                    match secure {
                        Some(d) => d.readable().await,
                        None => std::future::pending().await,
                    }
                });
                let readable = smol::future::or(readable, async {
                    match bs {
                        Some(b) => b.readable().await,
                        None => std::future::pending().await,
                    }
                });
                match deadline {
                    Some(d) => {
                        smol::future::or(readable, async {
                            smol::Timer::at(d).await;
                        })
                        .await
                    }
                    None => readable.await,
                }
                Wake::Io
            };
            let ctl = async {
                match ctl_rx.recv().await {
                    Ok(r) => Wake::Control(r),
                    Err(_) => std::future::pending().await,
                }
            };
            let down = async {
                match &down_rx {
                    Some(rx) => match rx.recv().await {
                        Ok(d) => Wake::Downlink(d),
                        Err(_) => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            };
            let added = async {
                match added_rx.recv().await {
                    Ok(a) => Wake::Added(a),
                    Err(_) => std::future::pending().await,
                }
            };
            let stop = async {
                match &signals {
                    Some(s) => Wake::Stop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            let wake = smol::future::or(
                stop,
                smol::future::or(io, smol::future::or(ctl, smol::future::or(down, added))),
            )
            .await;
            let now = Instant::now();
            if let (Some(at), Some(every), Some(n)) = (next_ping, ping_every, &notifier) {
                if now >= at {
                    n.watchdog();
                    next_ping = Some(now + every);
                }
            }
            match wake {
                Wake::Control(r) => self.control_request(now, r),
                Wake::Downlink(d) => self.downlink(now, d),
                Wake::Added((handle, reserved, r)) => {
                    let answer = self.ota.finish_add(reserved, r);
                    self.deliver(handle, answer);
                }
                Wake::Io => {}
                Wake::Stop(sig) => {
                    log::info!(
                        "{sig}: stopping (no more datagrams read; finishing this turn, flushing the store, closing MQTT)"
                    );
                    if let Some(n) = &notifier {
                        if let Err(e) = n.send("STOPPING=1") {
                            log::warn!("systemd notification failed: {e}");
                        }
                    }
                    stopping = Some((sig, now));
                }
            }
            if let Some(rx) = &down_rx {
                for _ in 0..udp::BATCH {
                    match rx.try_recv() {
                        Ok(d) => self.downlink(now, d),
                        Err(_) => break,
                    }
                }
            }
            for _ in 0..udp::BATCH {
                match ctl_rx.try_recv() {
                    Ok(r) => self.control_request(now, r),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if stopping.is_none() {
                self.udp.receive(&mut self.server, now, &mut buf, max);
                if let Some(d) = &mut self.dtls {
                    d.receive(&mut self.server, now, &mut buf);
                }
            }
            if let Some(r) = &mut self.restoring {
                if r.step(&mut self.server, &self.store, now, persist::RESTORE_STEP) {
                    self.restoring = None;
                }
            }
            if let Some(b) = self.bootstrap.as_mut().filter(|_| stopping.is_none()) {
                b.receive(now, &mut buf, max);
            }
            self.server.handle_timeout(now);
            self.ota.send(now, &mut self.server);
            let acknowledged = self.persist_and_publish().await?;
            self.send_all().await;
            self.bootstrap_turn().await?;
            if acknowledged {
                crash_point.after_acknowledgement();
            }
            self.answers().await?;
            if let Some(m) = &mut self.mqtt {
                m.flush_batch();
            }
            if let (Some((sig, since)), Some(s)) = (stopping, &signals) {
                return self.shut_down(sig, since, s.bound()).await;
            }
        }
    }

    /// The end of a stop: the turn is finished; everything stored is
    /// flushed, then the MQTT session is closed with what time is left.
    async fn shut_down(
        mut self,
        sig: &str,
        since: Instant,
        bound: std::time::Duration,
    ) -> Result<(), RunError> {
        let store = self.store.clone();
        if let Err(e) = smol::unblock(move || store.flush()).await {
            return Err(stopped_by_store(&self.data_dir, e));
        }
        if let Some(m) = self.mqtt.take() {
            // Half of what is left: the rest is for the process's own end.
            let left = bound.saturating_sub(since.elapsed()) / 2;
            m.close(left).await;
        }
        log::info!(
            "{sig}: stopped in {} ms; {} registrations kept",
            since.elapsed().as_millis(),
            self.server.registry().len()
        );
        Ok(())
    }

    /// A control-socket request, through the one command path.
    fn control_request(&mut self, now: Instant, r: CtlRequest) {
        self.with_parts(false, |parts, control, _| control.handle(parts, now, r));
    }

    /// A message from the platform, through the same command path.
    fn downlink(&mut self, now: Instant, d: Downlink) {
        self.with_parts(true, |parts, _, mqtt| {
            if let Some(m) = mqtt {
                m.handle(parts, now, d);
            }
        });
    }

    /// Runs `f` with the gateway split into the command path's view of it
    /// and the two shells that run commands. The bridge is either in the
    /// view (for `stats`) or handed out to run a platform command
    /// (`for_bridge`); the platform never asks for `stats`.
    fn with_parts<R>(
        &mut self,
        for_bridge: bool,
        f: impl FnOnce(&mut Parts<'_>, &mut control::Shell, Option<&mut mqtt::Shell>) -> R,
    ) -> R {
        let Gateway {
            server,
            store,
            dtls,
            mqtt,
            udp,
            control,
            next_handle,
            bootstrap,
            ota,
            store_health,
            ..
        } = self;
        let (view, bridge) = match mqtt {
            Some(m) if for_bridge => (None, Some(m)),
            Some(m) => (Some(&*m), None),
            None => (None, None),
        };
        let mut parts = Parts {
            server,
            store,
            dtls: dtls.as_mut(),
            mqtt: view,
            udp: &*udp,
            store_health,
            watchers: control.watchers(),
            next_handle,
            bootstrap: bootstrap.as_mut(),
            ota,
        };
        f(&mut parts, control, bridge)
    }

    /// Hands the devices' answers out: the update machine's to it (its
    /// next block goes out in this same turn), the rest to whoever sent
    /// the command. Update records are stored, flushed when one entered
    /// another phase, and sent northbound.
    async fn answers(&mut self) -> Result<(), RunError> {
        // A few rounds: an answer given at once (a device not registered)
        // makes the machine act again.
        for _ in 0..4 {
            let mut any = false;
            let now = Instant::now();
            while let Some((handle, answer)) = self.server.poll_answer() {
                any = true;
                if crate::ota::Ota::owns(handle) {
                    self.ota
                        .core_mut()
                        .on_answer(now, crate::clock::unix_ms(), handle, &answer);
                } else {
                    self.deliver(handle, answer);
                }
            }
            self.ota.send(now, &mut self.server);
            if !any {
                break;
            }
        }
        if self.ota.persist(&self.store) {
            let store = self.store.clone();
            if let Err(e) = smol::unblock(move || store.flush()).await {
                return Err(stopped_by_store(&self.data_dir, e));
            }
        }
        let changed = self.ota.take_changed();
        if let Some(m) = &mut self.mqtt {
            for rec in &changed {
                m.ota(rec);
            }
        }
        self.send_all().await;
        Ok(())
    }

    /// Hands a device's answer to whoever sent the command.
    fn deliver(&mut self, handle: u64, answer: Answer) {
        let answer = match &mut self.mqtt {
            Some(m) => match m.answer(&mut self.server, handle, answer) {
                Ok(()) => return,
                Err(a) => a,
            },
            None => answer,
        };
        match self.control.answer(handle, answer) {
            Ok(Some((ep, line))) => match &mut self.mqtt {
                Some(m) => m.transport_log(&mut self.server, &ep, line),
                None => {
                    self.server
                        .log_transport(&ep, crate::clock::unix_ms(), &line);
                }
            },
            Ok(None) => {}
            Err(a) => log::debug!("answer {} for handle {handle} has no caller", a.result),
        }
    }

    /// Hands decoded reports to the northbound batch, subscribers and
    /// watching control clients.
    fn publish_reports(&mut self) {
        let now = Instant::now();
        while let Some(report) = self.server.poll_report() {
            if self.ota.core().record(&report.endpoint).is_some() {
                let vals: Vec<_> = report
                    .readings
                    .iter()
                    .map(|r| (r.path, r.value.clone()))
                    .collect();
                self.ota.core_mut().on_values(
                    now,
                    crate::clock::unix_ms(),
                    &report.endpoint,
                    &vals,
                );
            }
            if let Some(m) = &mut self.mqtt {
                m.report(&self.server, &report);
            }
            self.fanout.report(&report);
            self.control.watch(&report);
        }
        self.fanout.prune_reports();
        if let Some(m) = &mut self.mqtt {
            m.flush_batch();
        }
    }

    /// Writes registry changes and queues this turn's events and reports
    /// for the platform, then flushes once for the whole batch, so that no
    /// answer or acknowledgement goes out for state, or for a value, that
    /// a power cut could lose; then hands the events to subscribers.
    ///
    /// A flush that fails stops the gateway before this turn's answers
    /// leave: sled keeps a write error (a full disk) for good, and every
    /// answer after it would promise state that is not on disk. systemd
    /// starts it again; with space back it opens the last stored state.
    async fn persist_and_publish(&mut self) -> Result<bool, RunError> {
        let (events, written) = persist::write(&mut self.server, &self.store, &self.models);
        let now = Instant::now();
        for ev in &events {
            if let ServerEvent::Registered { reg, .. } | ServerEvent::Updated(reg) = ev {
                self.ota.core_mut().device_seen(now, &reg.endpoint);
            }
        }
        match &mut self.mqtt {
            Some(m) => m.events(&mut self.server, &events, &mut self.next_handle),
            None => {
                let ms = crate::clock::unix_ms();
                for ev in &events {
                    let line = crate::server::transport_log::event_line(ev);
                    self.server
                        .log_transport(&ev.registration().endpoint, ms, &line);
                }
            }
        }
        self.publish_reports();
        // A Send's 2.04 and a confirmable notification's ACK promise the
        // value is kept: it is in the uplink queue now, and must be on disk
        // before they leave. Other reports are made durable by the bridge
        // before it publishes them.
        let acknowledged = self.server.acknowledged_values() && self.mqtt.is_some();
        if !written && !acknowledged {
            return Ok(false);
        }
        let store = self.store.clone();
        if let Err(e) = smol::unblock(move || store.flush()).await {
            return Err(stopped_by_store(&self.data_dir, e));
        }
        self.fanout.events(events);
        Ok(acknowledged)
    }

    /// Stores what the bootstrap server changed this turn, with the
    /// accounts it hands out, flushes, and only then sends its datagrams:
    /// a device is never told of an account a power cut could lose.
    async fn bootstrap_turn(&mut self) -> Result<(), RunError> {
        let Some(b) = &mut self.bootstrap else {
            return Ok(());
        };
        let handed_out = b.persist(&self.store, &mut self.server);
        if let Some(d) = &mut self.dtls {
            if handed_out.rebuild {
                d.set_keys(Keys::from_credentials(self.server.credentials()));
            } else {
                for c in &handed_out.credentials {
                    d.add_key(c);
                }
            }
        }
        if handed_out.flush {
            let store = self.store.clone();
            if let Err(e) = smol::unblock(move || store.flush()).await {
                return Err(stopped_by_store(&self.data_dir, e));
            }
        }
        b.send_all().await;
        Ok(())
    }

    /// Sends what the server has to send, over DTLS where the peer has a
    /// session, then what the DTLS layer has to send.
    async fn send_all(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.server.poll_transmit() {
            let t = match &mut self.dtls {
                Some(d) => match d.route(&self.server, now, t) {
                    Some(t) => t,
                    None => continue,
                },
                None => t,
            };
            self.udp.send_to(t.peer, &t.bytes).await;
        }
        if let Some(d) = &mut self.dtls {
            d.send_all().await;
        }
    }
}

/// The gateway as the command path sees it: the server and store, and
/// what the transports add to `stats` and need to hear of credentials.
struct Parts<'a> {
    server: &'a mut Server,
    store: &'a Store,
    dtls: Option<&'a mut dtls::Shell>,
    mqtt: Option<&'a mqtt::Shell>,
    udp: &'a udp::Socket,
    store_health: &'a Json,
    watchers: usize,
    next_handle: &'a mut u64,
    bootstrap: Option<&'a mut bootstrap::Shell>,
    ota: &'a mut ota::Shell,
}

impl crate::control::Backend for Parts<'_> {
    fn server(&self) -> &Server {
        self.server
    }

    fn server_mut(&mut self) -> &mut Server {
        self.server
    }

    fn store(&self) -> &Store {
        self.store
    }

    fn new_handle(&mut self) -> u64 {
        *self.next_handle += 1;
        *self.next_handle
    }

    fn stats(&self) -> Json {
        let mut j = stats::json(
            self.server,
            self.watchers,
            self.mqtt.map_or(Json::Null, |m| m.stats_json()),
            self.dtls
                .as_ref()
                .map_or(Json::Null, |d| d.stats_json(self.udp.plain_dropped)),
        );
        // What the receive threads dropped as no frame at all is counted
        // with the malformed and garbage datagrams the loop saw.
        let add = |v: &mut Json, n: u64| *v = Json::from(v.as_u64().unwrap_or(0) + n);
        add(&mut j["malformedDatagrams"], self.udp.junk());
        let mut udp = serde_json::json!({ "coap": self.udp.stats_json() });
        if let Some(d) = &self.dtls {
            add(&mut j["dtls"]["garbage"], d.socket().junk());
            udp["dtls"] = d.socket().stats_json();
        }
        if let Some(b) = &self.bootstrap {
            for (name, s) in b.sockets() {
                udp[name] = s.stats_json();
            }
        }
        j["udp"] = udp;
        let mut store = self.store_health.clone();
        store["bytes"] = self.store.size_on_disk().into();
        j["store"] = store;
        let o = self.ota.core();
        j["ota"] = serde_json::json!({
            "images": o.images().len(),
            "imageBytes": o.image_bytes(),
            "running": o.running(),
            "updates": o.records().count(),
        });
        j["bootstrap"] = self.bootstrap.as_ref().map_or(Json::Null, |b| {
            let c = b.core();
            serde_json::json!({
                "entries": c.entries().len(),
                "running": c.running(),
                "refused": c.refused,
                "dtls": b.dtls_stats(),
            })
        });
        j
    }

    fn credentials_changed(&mut self) {
        if let Some(d) = &mut self.dtls {
            d.set_keys(Keys::from_credentials(self.server.credentials()));
        }
    }

    fn bootstrap(&mut self) -> Option<&mut crate::bootstrap::Bootstrap> {
        self.bootstrap.as_mut().map(|b| b.core_mut())
    }

    fn bootstrap_entries_changed(&mut self) {
        if let Some(b) = &mut self.bootstrap {
            b.entries_changed();
        }
    }

    fn ota(&mut self) -> Option<&mut crate::ota::Ota> {
        Some(self.ota.core_mut())
    }

    fn ota_add(
        &mut self,
        handle: u64,
        file: PathBuf,
        kind: crate::ota::Kind,
        title: String,
        version: String,
    ) {
        self.ota.add(handle, file, kind, title, version);
    }
}

/// A test hook for the durability tests: with `LWM2M_GW_CRASH_AFTER_ACKS=N`
/// the process aborts (as a power cut or `kill -9` would end it) right after
/// the Nth turn whose acknowledgements of values left, the worst moment for
/// a value the device now counts as delivered. Unset, it does nothing.
struct CrashPoint(Option<u64>);

impl CrashPoint {
    fn from_env() -> CrashPoint {
        let n = std::env::var("LWM2M_GW_CRASH_AFTER_ACKS")
            .ok()
            .and_then(|v| v.parse().ok());
        if let Some(n) = n {
            log::warn!("LWM2M_GW_CRASH_AFTER_ACKS={n}: this gateway aborts on purpose (a test)");
        }
        CrashPoint(n)
    }

    fn after_acknowledgement(&mut self) {
        if let Some(n) = &mut self.0 {
            *n = n.saturating_sub(1);
            if *n == 0 {
                std::process::abort();
            }
        }
    }
}

/// What `stats` says of the store's start: the copy moved aside at this
/// start and why, and every such copy still in the data directory.
fn store_health(r: &crate::store::OpenReport) -> Json {
    let path = |p: &std::path::PathBuf| Json::from(p.display().to_string());
    serde_json::json!({
        "movedAside": r.moved_aside.as_ref().map_or(Json::Null, path),
        "reason": r.reason.clone(),
        "corruptCopies": r.corrupt_copies.iter().map(path).collect::<Vec<_>>(),
    })
}

/// The error the gateway stops with when the store cannot be flushed,
/// logged loudly first.
fn stopped_by_store(data_dir: &std::path::Path, e: crate::store::StoreError) -> RunError {
    log::error!(
        "STORE WRITE FAILED ({e}) under {}: stopping before any answer promises what is not on disk; \
         free space there, the gateway opens the last stored state when it starts again",
        data_dir.display()
    );
    RunError::Store(e)
}
