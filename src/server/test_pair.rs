//! A server and a simulated device wired together in memory on a virtual
//! clock, for the server's tests.

use super::*;
use crate::lwm2m::ContentFormat;
use crate::sim::{RegState, SimConfig, SimDevice};

pub(super) const GW: &str = "[::1]:5683";
pub(super) const DEV: &str = "[::1]:40000";
pub(super) const UNIX: u64 = 1_700_000_000_000;

pub(super) struct Pair {
    pub(super) gw: Server,
    pub(super) dev: SimDevice,
    pub(super) t: Instant,
    pub(super) next: u64,
    /// Gateway datagrams seen by the device, decoded.
    pub(super) to_device: Vec<Message>,
    /// Where the device speaks from.
    pub(super) dev_addr: SocketAddr,
    /// Drop everything the gateway sends (a device gone silent).
    pub(super) mute: bool,
}

impl Pair {
    pub(super) fn new(format: ContentFormat, queue: bool) -> Pair {
        Pair::with(format, queue, |_| {})
    }

    /// Like `new`, with `setup` run on the server before the device registers.
    pub(super) fn with(
        format: ContentFormat,
        queue: bool,
        setup: impl FnOnce(&mut Server),
    ) -> Pair {
        Pair::with_device(format, queue, setup, |_| {})
    }

    /// Like `with`, also adjusting the simulated device.
    pub(super) fn with_device(
        format: ContentFormat,
        queue: bool,
        setup: impl FnOnce(&mut Server),
        device: impl FnOnce(&mut SimConfig),
    ) -> Pair {
        let models = Arc::new(ModelLibrary::embedded());
        let cfg = ServerConfig {
            queue: QueueConfig {
                awake_window: Duration::from_secs(5),
                ..QueueConfig::default()
            },
            ..ServerConfig::default()
        };
        let mut gw = Server::new(cfg, 5);
        gw.set_models(models.clone());
        setup(&mut gw);
        let mut cfg = SimConfig::new("dev1", GW.parse().unwrap(), format);
        cfg.queue_mode = queue;
        cfg.awake = Duration::from_secs(3);
        cfg.update_every = Some(Duration::from_secs(60));
        device(&mut cfg);
        let dev = SimDevice::new(cfg, models, 77).expect("sim fits the models");
        let mut p = Pair {
            gw,
            dev,
            t: Instant::now(),
            next: 0,
            to_device: Vec::new(),
            dev_addr: DEV.parse().unwrap(),
            mute: false,
        };
        p.dev.register(p.t);
        p.pump();
        assert!(
            matches!(p.dev.state(), RegState::Registered(_)),
            "{:?}",
            p.dev.state()
        );
        p
    }

    pub(super) fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.dev.poll_transmit() {
                self.gw
                    .handle_datagram(self.t, UNIX, self.dev_addr, &t.bytes);
                moved = true;
            }
            while let Some(t) = self.gw.poll_transmit() {
                moved = true;
                if self.mute {
                    continue;
                }
                self.to_device.push(Message::decode(&t.bytes).unwrap());
                self.dev
                    .handle_datagram(self.t, UNIX, GW.parse().unwrap(), &t.bytes);
            }
            if !moved {
                break;
            }
        }
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.t += d;
        self.gw.handle_timeout(self.t);
        self.dev.handle_timeout(self.t);
        self.pump();
    }

    pub(super) fn start(&mut self, method: &str, params: serde_json::Value) -> u64 {
        self.next += 1;
        self.gw.command(self.t, self.next, "dev1", method, &params);
        self.pump();
        self.next
    }

    pub(super) fn answer(&mut self, h: u64) -> serde_json::Value {
        for _ in 0..400 {
            self.pump();
            if let Some((got, a)) = self.gw.poll_answer() {
                assert_eq!(got, h);
                return a.to_json();
            }
            self.advance(Duration::from_millis(500));
        }
        panic!("no answer");
    }

    pub(super) fn rpc(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let h = self.start(method, params);
        self.answer(h)
    }

    pub(super) fn reports(&mut self) -> Vec<Report> {
        std::iter::from_fn(|| self.gw.poll_report())
            .map(|r| (*r).clone())
            .collect()
    }
}
