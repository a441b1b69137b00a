//! Northbound: the MQTT bridge to the cloud platform (ThingsBoard's gateway
//! API) with a sled-backed store-and-forward queue.
//!
//! The gateway loop appends uplink messages to the queue and wakes the
//! bridge thread. That thread (rumqttc on a small tokio runtime of its own)
//! flushes the queue to disk, publishes in order with QoS 1 and a bounded
//! window, and removes a message only when the broker acknowledges it.
//! After a broker outage or a restart it starts again from the oldest
//! message still queued. What the platform sends down comes back to the
//! gateway loop as `Downlink`s.

pub mod queue;
pub mod thingsboard;

use crate::store::Store;
pub use queue::{QueueStats, UplinkQueue};
use rumqttc::{Outgoing, QoS};
use smol::channel::{Receiver, Sender};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
pub use thingsboard::Downlink;

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// User name (a ThingsBoard gateway's access token goes here).
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Keep-alive.
    pub keepalive: Duration,
    /// QoS of uplink messages: 0 or 1.
    pub qos: u8,
    /// Messages published and not yet acknowledged.
    pub window: usize,
    /// TLS, for `mqtts://`.
    pub tls: Option<TlsSettings>,
    /// MQTT 5 rather than 3.1.1.
    pub v5: bool,
}

/// TLS to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificates (PEM) the broker's certificate must chain to; none:
    /// the system's trust store.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key (PEM), for brokers that ask for one.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

/// Splits `mqtt://host:port` (port 1883 by default) or `mqtts://host:port`
/// (TLS, port 8883 by default); the flag says TLS.
pub fn parse_url(url: &str) -> Result<(String, u16, bool), SettingsError> {
    let bad = |m: &str| SettingsError(format!("mqtt url {url:?}: {m}"));
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => (rest, false),
        Some(("mqtts" | "ssl", rest)) => (rest, true),
        Some((scheme, _)) => return Err(bad(&format!("unknown scheme {scheme:?}"))),
        None => (url, false),
    };
    let default_port = if tls { 8883 } else { 1883 };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
        ),
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad("no host"));
    }
    Ok((host.to_string(), port, tls))
}

/// Bridge state for `stats`.
#[derive(Default)]
pub struct Status {
    connected: AtomicBool,
    connects: AtomicU64,
    published: AtomicU64,
    bad_downlink: AtomicU64,
}

impl Status {
    /// True while the broker connection is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// As JSON.
    pub fn to_json(&self, q: QueueStats) -> serde_json::Value {
        serde_json::json!({
            "connected": self.connected(),
            "connects": self.connects.load(Ordering::Relaxed),
            "published": self.published.load(Ordering::Relaxed),
            "badDownlink": self.bad_downlink.load(Ordering::Relaxed),
            "queuedMessages": q.messages,
            "queuedBytes": q.bytes,
            "dropped": q.dropped,
            "appended": q.appended,
            "acked": q.acked,
        })
    }
}

/// The running bridge, as the gateway loop sees it.
pub struct Northbound {
    queue: Arc<UplinkQueue>,
    wake: Sender<()>,
    /// Closed when the bridge thread ends.
    ended: Receiver<()>,
    /// What the platform sends down.
    pub downlink: Receiver<Downlink>,
    /// Connection state and counters.
    pub status: Arc<Status>,
}

impl Northbound {
    /// Opens the queue and starts the bridge thread.
    pub fn start(
        settings: MqttSettings,
        store: &Store,
        max_queue_bytes: u64,
    ) -> Result<Northbound, crate::store::StoreError> {
        let queue = Arc::new(UplinkQueue::open(store.uplink_tree()?, max_queue_bytes)?);
        let left = queue.stats();
        if left.messages > 0 {
            log::info!(
                "uplink queue holds {} messages ({} bytes) from before; they go first",
                left.messages,
                left.bytes
            );
        }
        let (wake, wake_rx) = smol::channel::bounded(1);
        let (ended_tx, ended) = smol::channel::bounded::<()>(1);
        let (down_tx, downlink) = smol::channel::bounded(1024);
        let status = Arc::new(Status::default());
        let bridge = Bridge {
            settings,
            queue: queue.clone(),
            store: store.clone(),
            wake: wake_rx,
            down: down_tx,
            status: status.clone(),
        };
        std::thread::Builder::new()
            .name("northbound".into())
            .spawn(move || {
                bridge.run();
                drop(ended_tx);
            })
            .map_err(|e| crate::store::StoreError::Io("northbound thread".into(), e))?;
        Ok(Northbound {
            queue,
            wake,
            ended,
            downlink,
            status,
        })
    }

    /// Queues a message for the broker; it is durable at the bridge's next
    /// flush, before it is published.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        if let Err(e) = self.queue.append(topic, payload) {
            log::error!("uplink message to {topic} not queued: {e}");
            return;
        }
        let _ = self.wake.try_send(());
    }

    /// Queue counters.
    pub fn queue_stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// Ends the bridge: what the broker has in flight gets up to a second
    /// for its acknowledgement, then the session ends with a DISCONNECT.
    /// Whatever is not acknowledged stays queued for the next start.
    /// Waits at most `limit`; false when the bridge did not end by then.
    pub async fn close(self, limit: std::time::Duration) -> bool {
        self.wake.close();
        let ended = self.ended.clone();
        smol::future::or(async { ended.recv().await.is_err() }, async {
            smol::Timer::after(limit).await;
            false
        })
        .await
    }
}

/// How long a closing bridge waits for acknowledgements in flight.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

struct Bridge {
    settings: MqttSettings,
    queue: Arc<UplinkQueue>,
    store: Store,
    wake: Receiver<()>,
    down: Sender<Downlink>,
    status: Arc<Status>,
}

/// Topics the gateway takes from the platform.
const SUBSCRIBE: [&str; 3] = [
    thingsboard::RPC,
    thingsboard::ATTRIBUTES,
    thingsboard::ATTRIBUTES_RESPONSE,
];

impl Bridge {
    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                log::error!("northbound: cannot start its runtime: {e}; no uplink");
                return;
            }
        };
        rt.block_on(self.serve());
    }

    fn transport(&self) -> Option<rumqttc::Transport> {
        self.settings.tls.as_ref().map(|tls| match &tls.ca {
            Some(ca) => rumqttc::Transport::tls(ca.clone(), tls.client_auth.clone(), None),
            None => rumqttc::Transport::tls_with_default_config(),
        })
    }

    /// A fresh MQTT session in the configured protocol version.
    fn session(&self) -> Box<dyn SessionIo> {
        let s = &self.settings;
        let keepalive = s.keepalive.max(Duration::from_secs(5));
        let window = s.window.clamp(1, u16::MAX as usize) as u16;
        let cap = s.window.max(1) + 8;
        if s.v5 {
            let mut o = rumqttc::v5::MqttOptions::new(&s.client_id, &s.host, s.port);
            o.set_keep_alive(keepalive);
            o.set_clean_start(true);
            o.set_outgoing_inflight_upper_limit(window);
            o.set_max_packet_size(Some(1 << 20));
            if let Some(u) = &s.username {
                o.set_credentials(u, s.password.clone().unwrap_or_default());
            }
            if let Some(t) = self.transport() {
                o.set_transport(t);
            }
            let (c, el) = rumqttc::v5::AsyncClient::new(o, cap);
            Box::new(V5(c, el))
        } else {
            let mut o = rumqttc::MqttOptions::new(&s.client_id, &s.host, s.port);
            o.set_keep_alive(keepalive);
            o.set_clean_session(true);
            o.set_inflight(window);
            o.set_max_packet_size(1 << 20, 1 << 20);
            if let Some(u) = &s.username {
                o.set_credentials(u, s.password.clone().unwrap_or_default());
            }
            if let Some(t) = self.transport() {
                o.set_transport(t);
            }
            let (c, el) = rumqttc::AsyncClient::new(o, cap);
            Box::new(V4(c, el))
        }
    }

    async fn serve(self) {
        let mut backoff = Duration::from_millis(500);
        let mut failures = 0u64;
        while !self.wake.is_closed() {
            if self.connection(failures).await {
                backoff = Duration::from_millis(500);
                failures = 0;
            } else {
                failures += 1;
            }
            self.status.connected.store(false, Ordering::Relaxed);
            if self.wake.is_closed() {
                // The gateway stops: no back-off to sit out.
                break;
            }
            // The back-off, cut short only when the gateway stops: a
            // message queued meanwhile waits for the next connection.
            let until = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    r = self.wake.recv() => if r.is_err() {
                        return;
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One broker connection, from connect to failure. A fresh client each
    /// time: what the broker did not acknowledge is published again from
    /// the queue, in order. Returns whether it got connected at all.
    async fn connection(&self, failures: u64) -> bool {
        let s = &self.settings;
        let mut session = self.session();
        // Queue positions handed to the client, waiting for their packet id.
        let mut unassigned: VecDeque<u64> = VecDeque::new();
        let mut by_pkid: HashMap<u16, u64> = HashMap::new();
        let mut cursor = 0u64;
        let mut connected = false;
        loop {
            if connected {
                if let Err(e) = self.fill(&*session, &mut cursor, &mut unassigned, by_pkid.len()) {
                    log::error!("northbound: uplink queue: {e}");
                }
            }
            tokio::select! {
                ev = session.poll() => match ev {
                    Ok(Ev::ConnAck) => {
                        connected = true;
                        self.status.connected.store(true, Ordering::Relaxed);
                        let n = self.status.connects.fetch_add(1, Ordering::Relaxed) + 1;
                        log::info!(
                            "northbound: connected to {}:{} (MQTT {}, connection {n}); {} messages queued",
                            s.host,
                            s.port,
                            if s.v5 { "5" } else { "3.1.1" },
                            self.queue.stats().messages
                        );
                        for t in SUBSCRIBE {
                            session.subscribe(t);
                        }
                    }
                    Ok(Ev::Published(pkid)) => self.published(pkid, &mut unassigned, &mut by_pkid),
                    Ok(Ev::Acked(pkid)) => self.acked(pkid, &unassigned, &mut by_pkid),
                    Ok(Ev::Refused(pkid, why)) => {
                        // MQTT 5: the broker took the message but refused
                        // it (a quota, say). It stays queued; a new session
                        // after the back-off publishes it again.
                        log::warn!(
                            "northbound: broker refused a message ({why}); {} messages queued, retrying later",
                            self.queue.stats().messages
                        );
                        by_pkid.remove(&pkid);
                        return connected;
                    }
                    Ok(Ev::Message(topic, payload)) => self.downlink(&topic, &payload),
                    Ok(Ev::Other | Ev::Disconnected) => {}
                    Err(e) => {
                        if connected {
                            log::warn!(
                                "northbound: connection to {}:{} lost ({e}); {} messages queued",
                                s.host,
                                s.port,
                                self.queue.stats().messages
                            );
                        } else if (failures + 1).is_power_of_two() {
                            log::warn!(
                                "northbound: cannot connect to {}:{} ({} attempts): {e}",
                                s.host,
                                s.port,
                                failures + 1
                            );
                        }
                        return connected;
                    }
                },
                r = self.wake.recv() => {
                    if r.is_err() {
                        // The gateway stops.
                        if connected {
                            self.close(&mut *session, &mut unassigned, &mut by_pkid).await;
                        }
                        return connected;
                    }
                }
            }
        }
    }

    /// A publish went out with `pkid`.
    fn published(
        &self,
        pkid: u16,
        unassigned: &mut VecDeque<u64>,
        by_pkid: &mut HashMap<u16, u64>,
    ) {
        if let Some(seq) = unassigned.pop_front() {
            if self.settings.qos == 0 {
                let _ = self.queue.remove(seq);
            } else {
                by_pkid.insert(pkid, seq);
            }
            self.status.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The broker acknowledged `pkid`: its message leaves the queue.
    fn acked(&self, pkid: u16, unassigned: &VecDeque<u64>, by_pkid: &mut HashMap<u16, u64>) {
        if let Some(seq) = by_pkid.remove(&pkid) {
            if let Err(e) = self.queue.remove(seq) {
                log::error!("northbound: uplink queue: {e}");
            }
        }
        if by_pkid.is_empty() && unassigned.is_empty() {
            // Caught up: make the removals durable, so a restart does not
            // publish them again.
            if let Err(e) = self.store.flush() {
                log::error!("northbound: uplink queue: {e}");
            }
        }
    }

    /// The gateway stops: acknowledgements in flight get `CLOSE_WAIT`,
    /// then a DISCONNECT ends the session, so the broker neither waits for
    /// a keep-alive to run out nor sends a will.
    async fn close(
        &self,
        session: &mut dyn SessionIo,
        unassigned: &mut VecDeque<u64>,
        by_pkid: &mut HashMap<u16, u64>,
    ) {
        let until = tokio::time::Instant::now() + CLOSE_WAIT;
        while !(unassigned.is_empty() && by_pkid.is_empty()) {
            match tokio::time::timeout_at(until, session.poll()).await {
                Ok(Ok(Ev::Published(pkid))) => self.published(pkid, unassigned, by_pkid),
                Ok(Ok(Ev::Acked(pkid))) => self.acked(pkid, unassigned, by_pkid),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        session.disconnect();
        let until = tokio::time::Instant::now() + CLOSE_WAIT;
        let sent = loop {
            match tokio::time::timeout_at(until, session.poll()).await {
                Ok(Ok(Ev::Disconnected)) => break true,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break false,
            }
        };
        let left = self.queue.stats().messages;
        if sent {
            log::info!("northbound: disconnected; {left} messages stay queued for the next start");
        } else {
            log::warn!(
                "northbound: no DISCONNECT sent; {left} messages stay queued for the next start"
            );
        }
    }

    /// Hands queued messages to the client up to the window. They are
    /// flushed to disk first: nothing is published that a power cut could
    /// take back from the queue.
    fn fill(
        &self,
        session: &dyn SessionIo,
        cursor: &mut u64,
        unassigned: &mut VecDeque<u64>,
        acked_pending: usize,
    ) -> Result<(), crate::store::StoreError> {
        let room = self
            .settings
            .window
            .saturating_sub(unassigned.len() + acked_pending);
        if room == 0 {
            return Ok(());
        }
        let batch = self.queue.after(*cursor, room)?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        self.queue.make_durable(last.seq, &self.store)?;
        let qos1 = self.settings.qos != 0;
        for m in batch {
            if !session.publish(m.topic, qos1, m.payload) {
                break;
            }
            unassigned.push_back(m.seq);
            *cursor = m.seq;
        }
        Ok(())
    }

    fn downlink(&self, topic: &str, payload: &[u8]) {
        match thingsboard::parse(topic, payload) {
            Ok(None) => {}
            Ok(Some(d)) => {
                if self.down.try_send(d).is_err() {
                    log::warn!("northbound: gateway busy; downlink on {topic} dropped");
                }
            }
            Err(e) => {
                self.status.bad_downlink.fetch_add(1, Ordering::Relaxed);
                log::warn!("northbound: ignored: {}", e.0);
            }
        }
    }
}

/// What the bridge needs of an MQTT session, in either protocol version.
enum Ev {
    ConnAck,
    /// A publish went out with this packet id.
    Published(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
    /// The broker refused this packet id (MQTT 5 reason code), with why.
    Refused(u16, String),
    /// A message from the platform.
    Message(String, Vec<u8>),
    /// The DISCONNECT asked for went out.
    Disconnected,
    Other,
}

/// One MQTT session: client and event loop of rumqttc's 3.1.1 or 5 API.
trait SessionIo {
    /// Hands a message to the client; false when its queue is full.
    fn publish(&self, topic: String, qos1: bool, payload: Vec<u8>) -> bool;
    /// Subscribes with QoS 1.
    fn subscribe(&self, topic: &str);
    /// Asks for a DISCONNECT; `poll` says when it went out.
    fn disconnect(&self);
    /// The next event; an error ends the session.
    fn poll(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Ev, String>> + '_>>;
}

struct V4(rumqttc::AsyncClient, rumqttc::EventLoop);

impl SessionIo for V4 {
    fn publish(&self, topic: String, qos1: bool, payload: Vec<u8>) -> bool {
        let qos = if qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.0.try_publish(topic, qos, false, payload).is_ok()
    }

    fn subscribe(&self, topic: &str) {
        let _ = self.0.try_subscribe(topic, QoS::AtLeastOnce);
    }

    fn disconnect(&self) {
        let _ = self.0.try_disconnect();
    }

    fn poll(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Ev, String>> + '_>> {
        use rumqttc::{Event, Packet};
        Box::pin(async move {
            Ok(match self.1.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Published(pkid),
                Event::Incoming(Packet::PubAck(a)) => Ev::Acked(a.pkid),
                Event::Incoming(Packet::Publish(p)) => Ev::Message(p.topic, p.payload.to_vec()),
                Event::Outgoing(Outgoing::Disconnect) => Ev::Disconnected,
                _ => Ev::Other,
            })
        })
    }
}

struct V5(rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop);

impl SessionIo for V5 {
    fn publish(&self, topic: String, qos1: bool, payload: Vec<u8>) -> bool {
        use rumqttc::v5::mqttbytes::QoS;
        let qos = if qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.0.try_publish(topic, qos, false, payload).is_ok()
    }

    fn subscribe(&self, topic: &str) {
        let _ = self
            .0
            .try_subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
    }

    fn disconnect(&self) {
        let _ = self.0.try_disconnect();
    }

    fn poll(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Ev, String>> + '_>> {
        use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
        use rumqttc::v5::Event;
        Box::pin(async move {
            Ok(match self.1.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Published(pkid),
                Event::Incoming(Packet::PubAck(a)) => match a.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                        Ev::Acked(a.pkid)
                    }
                    other => Ev::Refused(a.pkid, format!("{other:?}")),
                },
                Event::Incoming(Packet::Publish(p)) => Ev::Message(
                    String::from_utf8_lossy(&p.topic).into_owned(),
                    p.payload.to_vec(),
                ),
                Event::Outgoing(Outgoing::Disconnect) => Ev::Disconnected,
                _ => Ev::Other,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_parse_or_say_why_not() {
        let ok = |u: &str| parse_url(u).unwrap();
        assert_eq!(
            ok("mqtt://127.0.0.1:1884"),
            ("127.0.0.1".into(), 1884, false)
        );
        assert_eq!(
            ok("mqtt://broker.local"),
            ("broker.local".into(), 1883, false)
        );
        assert_eq!(
            ok("tb.example.com:1883"),
            ("tb.example.com".into(), 1883, false)
        );
        assert_eq!(ok("mqtt://[::1]:1883"), ("::1".into(), 1883, false));
        assert_eq!(
            ok("mqtts://tb.example.com"),
            ("tb.example.com".into(), 8883, true)
        );
        assert!(parse_url("http://x").unwrap_err().0.contains("scheme"));
        assert!(parse_url("mqtt://x:notaport").is_err());
        assert!(parse_url("mqtt://:1883").is_err());
    }
}
