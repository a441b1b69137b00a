//! The sans-IO update machine: every device's update, the transfer slots,
//! the blocks and commands to send, the answers and values that move an
//! update on, and the stall timer that retries it.

mod catalogue;
mod drive;
mod values;

use super::update::{Phase, Record, Strategy};
use super::{firmware_result, software_result, Image, Kind, OtaError};
use crate::coap::BlockOpt;
use crate::lwm2m::node::Value;
use crate::lwm2m::Path;
use crate::server::command::Answer;
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Handles of the machine's requests have this bit set, so the runtime can
/// route their answers here and not to a control client.
pub const OTA_HANDLE: u64 = 1 << 62;

/// Limits and timers.
#[derive(Debug, Clone)]
pub struct OtaConfig {
    /// Transfers running at once; the rest wait QUEUED.
    pub max_concurrent: usize,
    /// An update that does not move for this long is retried.
    pub stall_timeout: Duration,
    /// Retries before an update fails.
    pub retries: u32,
    /// Longest pause between two reads of the device's state while it
    /// checks or installs a package (the first is 1 s, then doubling).
    pub poll_interval: Duration,
    /// A device that reports success but another version than the image's
    /// fails the update (else: UPDATED, the mismatch reported).
    pub require_version: bool,
    /// Where devices pull from: `coap://HOST:PORT`, and over DTLS
    /// `coaps://HOST:PORT`; none: no pull that way.
    pub pull_plain: Option<String>,
    /// The DTLS base.
    pub pull_secure: Option<String>,
}

impl Default for OtaConfig {
    fn default() -> Self {
        OtaConfig {
            max_concurrent: 4,
            stall_timeout: Duration::from_secs(60),
            retries: 3,
            poll_interval: Duration::from_secs(10),
            require_version: false,
            pull_plain: None,
            pull_secure: None,
        }
    }
}

/// How one update is to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartOptions {
    /// Block size, 16..=1024, a power of two.
    pub block_size: u32,
    /// Software: Activate after Install.
    pub activate: bool,
    /// Push or pull; none: what the device's /5/0/9 allows, push first.
    pub strategy: Option<Strategy>,
    /// The device talks DTLS (its pull URL is coaps).
    pub secure: bool,
    /// Fail when the device reports success but another version; none:
    /// `OtaConfig::require_version`.
    pub require_version: Option<bool>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            block_size: 1024,
            activate: false,
            strategy: Some(Strategy::Push),
            secure: false,
            require_version: None,
        }
    }
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// One block of an image: `len` bytes at `offset` of image `image`,
    /// written to `path` with Block1 `block` (Size1 `size` on block 0).
    Block {
        /// Answer handle.
        handle: u64,
        /// The device.
        endpoint: String,
        /// `/5/0/0` or `/9/0/2`.
        path: Path,
        /// Image id.
        image: String,
        /// Where the block starts in the image.
        offset: u64,
        /// Its length.
        len: usize,
        /// The Block1 option.
        block: BlockOpt,
        /// The image's size.
        size: u64,
    },
    /// Serve image `image` under `/fw/<token>` to `endpoint` (only over
    /// DTLS when `secure`), until [`Action::Unserve`].
    Serve {
        /// The URL's secret part.
        token: String,
        /// The device it is for.
        endpoint: String,
        /// Image id.
        image: String,
        /// Its size.
        size: u64,
        /// DTLS only.
        secure: bool,
    },
    /// Stop serving a token (4.04 from now on).
    Unserve {
        /// The token.
        token: String,
    },
    /// A command of the command language (Read, Execute, Observe, Write).
    Command {
        /// Answer handle.
        handle: u64,
        /// The device.
        endpoint: String,
        /// Method name.
        method: &'static str,
        /// Its parameters.
        params: Json,
    },
}

/// What to store and report.
#[derive(Debug, Clone, PartialEq)]
pub enum OtaEvent {
    /// An update changed; `durable` when it entered another phase (flush
    /// it), not for progress within one.
    Changed {
        /// The record.
        record: Box<Record>,
        /// Flush before going on.
        durable: bool,
    },
    /// An image joined the store (its file is already on disk).
    ImageAdded(Image),
    /// An image left the store: its record and file go.
    ImageRemoved(String),
}

/// What a request of the machine was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Block {
        offset: u64,
        len: usize,
        szx: u8,
    },
    /// /5/0 before the strategy is chosen (8: protocols, 9: delivery).
    ReadDelivery,
    /// The package URI written (pull).
    WriteUri,
    ReadState,
    ReadVersion,
    Execute(Exec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    Update,
    Install,
    Activate,
}

/// A device's update with what is in flight.
struct Update {
    rec: Record,
    /// The request it waits on.
    waiting: Option<(u64, Want)>,
    /// Act again at (a pause before the next read, a retry).
    next_at: Option<Instant>,
    /// Gone or asleep: act when it is next heard.
    idle: bool,
    /// Retried when nothing moved by then.
    deadline: Option<Instant>,
    poll_every: Duration,
    activated: bool,
    /// Observations asked (state, result, version).
    observing: bool,
    last_percent: u32,
    /// The device's delivery method and protocols were read (firmware;
    /// software has no such resources).
    delivery_checked: bool,
    /// Firmware: the package version the device last reported (/5/0/7).
    pkg_version: Option<String>,
}

/// The OTA machine of every device.
pub struct Ota {
    cfg: OtaConfig,
    /// The images in the store, by id.
    images: BTreeMap<String, Image>,
    updates: BTreeMap<String, Update>,
    /// Requests in flight: handle to device, and the resource an
    /// observation was asked of.
    handles: HashMap<u64, (String, Option<Path>)>,
    next_handle: u64,
    actions: VecDeque<Action>,
    events: VecDeque<OtaEvent>,
    unix_ms: u64,
    /// The time of the input being handled.
    clock: Instant,
    /// Fresh secrets for pull URLs.
    tokens: TokenSource,
}

/// Makes the secret part of a pull URL (the OS random source in the shell).
pub type TokenSource = Box<dyn FnMut() -> String + Send>;

impl Ota {
    /// A machine with no updates.
    pub fn new(cfg: OtaConfig, now: Instant) -> Ota {
        Ota {
            cfg,
            images: BTreeMap::new(),
            updates: BTreeMap::new(),
            handles: HashMap::new(),
            next_handle: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            unix_ms: 0,
            clock: now,
            tokens: {
                let mut rng = fastrand::Rng::with_seed(0x5eed);
                Box::new(move || format!("{:032x}", rng.u128(..)))
            },
        }
    }

    /// Where secrets for pull URLs come from.
    pub fn set_token_source(&mut self, t: TokenSource) {
        self.tokens = t;
    }

    /// Where devices pull from (`coap://HOST:PORT`, `coaps://HOST:PORT`).
    pub fn set_pull_bases(&mut self, plain: Option<String>, secure: Option<String>) {
        self.cfg.pull_plain = plain;
        self.cfg.pull_secure = secure;
    }

    /// Whether `handle` is one of the machine's.
    pub fn owns(handle: u64) -> bool {
        handle & OTA_HANDLE != 0
    }

    /// Starts updating `endpoint` with `image`: QUEUED until a slot is free.
    pub fn start(
        &mut self,
        now: Instant,
        unix_ms: u64,
        endpoint: &str,
        image: Image,
        opts: StartOptions,
    ) -> Result<Record, OtaError> {
        self.unix_ms = unix_ms;
        self.clock = now;
        let b = opts.block_size;
        if !(16..=1024).contains(&b) || !b.is_power_of_two() {
            return Err(OtaError::BadInput(format!(
                "block size {b}: give 16, 32, 64, 128, 256, 512 or 1024"
            )));
        }
        if let Some(u) = self.updates.get(endpoint) {
            if !u.rec.phase.is_final() {
                return Err(OtaError::Busy(format!(
                    "{endpoint} is being updated ({}, {}); cancel that first",
                    u.rec.phase.name(),
                    u.rec.image.version
                )));
            }
            // Versions are compared whole: 1.1.1 is not 1.1.10.
            if u.rec.phase == Phase::Updated
                && u.rec.image.kind == image.kind
                && u.rec.current_version.as_deref() == Some(image.version.as_str())
            {
                return Err(OtaError::Busy(format!(
                    "{endpoint} already runs {} {}",
                    image.kind.name(),
                    image.version
                )));
            }
        }
        let rec = Record {
            endpoint: endpoint.to_string(),
            image,
            strategy: opts.strategy.unwrap_or(Strategy::Push),
            phase: Phase::Queued,
            step: "waiting for a free transfer slot".into(),
            block_size: b,
            acked: 0,
            blocks_sent: 0,
            retries: 0,
            error: None,
            last_answer: None,
            device_state: None,
            device_result: None,
            current_version: None,
            started_ms: unix_ms,
            progress_ms: unix_ms,
            finished_ms: None,
            activate: opts.activate,
            auto_strategy: opts.strategy.is_none(),
            secure: opts.secure,
            token: None,
            url: None,
            require_version: opts.require_version.unwrap_or(self.cfg.require_version),
            version_mismatch: None,
        };
        log::info!(
            "ep={endpoint} {} update to {} {} queued ({} bytes, {b}-byte blocks)",
            rec.image.kind.name(),
            rec.image.title,
            rec.image.version,
            rec.image.size
        );
        self.updates
            .insert(endpoint.to_string(), Update::new(rec.clone()));
        self.changed(endpoint, true);
        self.promote(now);
        Ok(self.updates[endpoint].rec.clone())
    }

    /// Puts back a stored update at start. One that was running resumes
    /// from what the device had acknowledged; the restart is one retry.
    pub fn restore(&mut self, mut rec: Record, now: Instant) {
        self.clock = now;
        if !rec.phase.is_final() && rec.phase != Phase::Queued {
            rec.retries += 1;
            rec.step = "resuming after a gateway restart".into();
        }
        let ep = rec.endpoint.clone();
        let mut u = Update::new(rec);
        if !u.rec.phase.is_final() && u.rec.phase != Phase::Queued {
            // A device fetching its pull URL goes on by itself: the URL is
            // written again only if it stalls.
            let fetching = u.rec.strategy == Strategy::Pull && u.rec.phase == Phase::Downloading;
            u.next_at = (!fetching).then_some(now);
            u.deadline = Some(now + self.cfg.stall_timeout);
        }
        // A pull URL stays valid across a restart until its update ends.
        if let (false, Some(token)) = (u.rec.phase.is_final(), &u.rec.token) {
            self.actions.push_back(Action::Serve {
                token: token.clone(),
                endpoint: ep.clone(),
                image: u.rec.image.id.clone(),
                size: u.rec.image.size,
                secure: u.rec.secure,
            });
        }
        self.updates.insert(ep.clone(), u);
        if self.updates[&ep].rec.retries > self.cfg.retries {
            self.fail(
                &ep,
                "the gateway restarted too often during the update".into(),
            );
        }
    }

    /// Ends a running update: FAILED, "cancelled". A firmware device is
    /// told to drop the package (an empty Package URI resets object 5).
    pub fn cancel(&mut self, endpoint: &str) -> Result<Record, OtaError> {
        let u = self
            .updates
            .get(endpoint)
            .ok_or_else(|| OtaError::NotFound(format!("no update of {endpoint}")))?;
        if u.rec.phase.is_final() {
            return Err(OtaError::NotFound(format!(
                "the update of {endpoint} has ended ({})",
                u.rec.phase.name()
            )));
        }
        let started = u.rec.phase != Phase::Queued;
        let kind = u.rec.image.kind;
        self.fail(endpoint, "cancelled by the operator".into());
        if started && kind == Kind::Firmware {
            let handle = self.handle(endpoint);
            self.actions.push_back(Action::Command {
                handle,
                endpoint: endpoint.to_string(),
                method: "WriteReplace",
                params: json!({"id": "/5/0/1", "value": ""}),
            });
        }
        Ok(self.updates[endpoint].rec.clone())
    }

    /// Records a platform request that cannot start (no such image, a
    /// checksum that is not the image's) as a FAILED update, so the
    /// platform sees why.
    #[allow(clippy::too_many_arguments)]
    pub fn refuse(
        &mut self,
        now: Instant,
        unix_ms: u64,
        endpoint: &str,
        kind: Kind,
        title: &str,
        version: &str,
        why: &str,
    ) {
        self.unix_ms = unix_ms;
        self.clock = now;
        let image = Image {
            id: String::new(),
            kind,
            title: title.to_string(),
            version: version.to_string(),
            size: 0,
            added_ms: 0,
        };
        let mut rec = Record {
            endpoint: endpoint.to_string(),
            image,
            strategy: Strategy::Push,
            phase: Phase::Failed,
            step: "ended".into(),
            block_size: 1024,
            acked: 0,
            blocks_sent: 0,
            retries: 0,
            error: Some(why.to_string()),
            last_answer: None,
            device_state: None,
            device_result: None,
            current_version: None,
            started_ms: unix_ms,
            progress_ms: unix_ms,
            finished_ms: Some(unix_ms),
            activate: false,
            auto_strategy: false,
            secure: false,
            token: None,
            url: None,
            require_version: self.cfg.require_version,
            version_mismatch: None,
        };
        if let Some(old) = self.updates.get(endpoint) {
            rec.current_version = old.rec.current_version.clone();
        }
        log::warn!(
            "ep={endpoint} {} {title} {version} not started: {why}",
            kind.name()
        );
        self.updates.insert(endpoint.to_string(), Update::new(rec));
        self.changed(endpoint, true);
    }

    /// Ends a running update for a reason of the gateway's own (its image
    /// file cannot be read).
    pub fn abort(&mut self, endpoint: &str, why: String) {
        if self
            .updates
            .get(endpoint)
            .is_some_and(|u| !u.rec.phase.is_final())
        {
            self.fail(endpoint, why);
        }
    }

    /// Forgets a device's ended update.
    pub fn forget(&mut self, endpoint: &str) -> bool {
        match self.updates.get(endpoint) {
            Some(u) if u.rec.phase.is_final() => self.updates.remove(endpoint).is_some(),
            _ => false,
        }
    }

    /// One device's update.
    pub fn record(&self, endpoint: &str) -> Option<&Record> {
        self.updates.get(endpoint).map(|u| &u.rec)
    }

    /// Every update, by endpoint.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.updates.values().map(|u| &u.rec)
    }

    /// Transfers running (not queued, not ended).
    pub fn running(&self) -> usize {
        self.updates.values().filter(|u| u.is_active()).count()
    }

    /// The device registered or spoke (an Update, a queue-mode wake-up):
    /// an update that waited for it goes on, and one waiting on the
    /// device's verdict asks at once (it may have just rebooted).
    pub fn device_seen(&mut self, now: Instant, endpoint: &str) {
        self.clock = now;
        let stall = self.cfg.stall_timeout;
        let Some(u) = self.updates.get_mut(endpoint) else {
            return;
        };
        if !u.is_active() {
            return;
        }
        if u.idle {
            u.idle = false;
            u.next_at = Some(now);
            u.deadline = Some(now + stall);
            // Its observations went with its old registration.
            u.observing = false;
        } else if matches!(u.rec.phase, Phase::Downloaded | Phase::Updating) && u.waiting.is_none()
        {
            u.next_at = Some(now);
            u.observing = false;
        }
        self.drive(now, endpoint);
    }

    /// A command's answer, for a handle the machine owns.
    pub fn on_answer(&mut self, now: Instant, unix_ms: u64, handle: u64, a: &Answer) {
        self.unix_ms = unix_ms;
        self.clock = now;
        let Some((ep, observed)) = self.handles.get(&handle).cloned() else {
            return;
        };
        // A queued command answers twice: QUEUED, then the device's answer.
        if a.result == "QUEUED" {
            return;
        }
        self.handles.remove(&handle);
        let Some(u) = self.updates.get_mut(&ep) else {
            return;
        };
        let want = match u.waiting {
            Some((h, w)) if h == handle => w,
            // An observation's first value, or an answer to a request
            // given up on: values are still news.
            _ => {
                if let (true, Some(v), Some(p)) = (a.is_success(), &a.value, observed) {
                    let key = if Some(p) == self.version_path(&ep) {
                        self.version_resource(&ep)
                    } else {
                        p.resource.unwrap_or(0)
                    };
                    self.on_value_map(now, &ep, BTreeMap::from([(key, v.clone())]));
                    self.drive(now, &ep);
                }
                return;
            }
        };
        u.waiting = None;
        u.rec.last_answer = Some(match &a.error {
            Some(e) => format!("{} ({e})", a.result),
            None => a.result.to_string(),
        });
        match want {
            Want::Block { offset, len, szx } => self.block_answered(now, &ep, offset, len, szx, a),
            Want::ReadDelivery if a.is_success() => {
                let v = a.value.clone().unwrap_or(Json::Null);
                self.choose_strategy(now, &ep, &v);
            }
            Want::WriteUri if a.is_success() => {
                let stall = self.cfg.stall_timeout;
                if let Some(u) = self.updates.get_mut(&ep) {
                    u.deadline = Some(now + stall);
                    u.rec.progress_ms = self.unix_ms;
                }
                if self
                    .updates
                    .get(&ep)
                    .is_some_and(|u| u.rec.phase == Phase::Initiated)
                {
                    self.set_phase(
                        &ep,
                        Phase::Downloading,
                        "waiting for the device to fetch the package",
                    );
                }
            }
            Want::ReadState | Want::ReadVersion if a.is_success() => {
                let v = a.value.clone().unwrap_or(Json::Null);
                let vals = if want == Want::ReadVersion {
                    let r = self.version_resource(&ep);
                    let mut m = BTreeMap::new();
                    m.insert(r, v);
                    m
                } else {
                    values_of(&v)
                };
                if let Some(u) = self.updates.get_mut(&ep) {
                    u.poll_every = (u.poll_every * 2).min(self.cfg.poll_interval);
                    u.next_at = Some(now + u.poll_every);
                }
                self.on_value_map(now, &ep, vals);
            }
            Want::Execute(e) if a.is_success() || a.result == "TIMEOUT" => {
                // An Update may reboot the device before it answers.
                self.executed(now, &ep, e);
            }
            _ => self.request_failed(now, &ep, want, a),
        }
        self.drive(now, &ep);
    }

    /// The device fetched a block of its pull URL, ending at byte `end`.
    pub fn on_fetched(&mut self, now: Instant, unix_ms: u64, endpoint: &str, end: u64) {
        self.unix_ms = unix_ms;
        self.clock = now;
        let stall = self.cfg.stall_timeout;
        let Some(u) = self.updates.get_mut(endpoint) else {
            return;
        };
        if !matches!(u.rec.phase, Phase::Initiated | Phase::Downloading) {
            return;
        }
        u.rec.acked = u.rec.acked.max(end);
        u.rec.blocks_sent += 1;
        u.rec.progress_ms = unix_ms;
        u.deadline = Some(now + stall);
        let size = u.rec.image.size;
        if end >= size {
            u.poll_every = Duration::from_secs(1);
            u.next_at = Some(now);
            // The URI write may still be in flight: its answer is stale now.
            u.waiting = None;
            self.set_phase(
                endpoint,
                Phase::Downloaded,
                "the device fetched every block; reading its state",
            );
            self.drive(now, endpoint);
        } else if u.rec.phase == Phase::Initiated {
            self.set_phase(
                endpoint,
                Phase::Downloading,
                "the device fetches the package",
            );
        } else if u.rec.percent() != u.last_percent {
            u.rec.step = format!("the device fetched {end} of {size} bytes");
            self.changed(endpoint, false);
        }
    }

    /// Values a device reported on its own (notifications, a Send).
    pub fn on_values(
        &mut self,
        now: Instant,
        unix_ms: u64,
        endpoint: &str,
        vals: &[(Path, Value)],
    ) {
        self.unix_ms = unix_ms;
        self.clock = now;
        let Some(u) = self.updates.get(endpoint) else {
            return;
        };
        let obj = u.rec.image.kind.object();
        let version = self.version_path(endpoint);
        let mut m = BTreeMap::new();
        for (p, v) in vals {
            if p.object == obj && p.instance == Some(0) {
                if let Some(r) = p.resource {
                    m.insert(r, v.to_json());
                }
            } else if version == Some(*p) {
                m.insert(self.version_resource(endpoint), v.to_json());
            }
        }
        if !m.is_empty() {
            self.on_value_map(now, endpoint, m);
            self.drive(now, endpoint);
        }
    }

    /// Runs the stall timers and pauses up to `now`.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        self.unix_ms = unix_ms;
        self.clock = now;
        let due: Vec<String> = self
            .updates
            .iter()
            .filter(|(_, u)| {
                u.is_active()
                    && (u.deadline.is_some_and(|d| d <= now) || u.next_at.is_some_and(|t| t <= now))
            })
            .map(|(ep, _)| ep.clone())
            .collect();
        for ep in due {
            let stalled = self.updates[&ep].deadline.is_some_and(|d| d <= now);
            if stalled {
                let u = self.updates.get_mut(&ep).expect("listed");
                let step = u.rec.step.clone();
                u.waiting = None;
                u.next_at = Some(now);
                u.deadline = Some(now + self.cfg.stall_timeout);
                let secs = self.cfg.stall_timeout.as_secs();
                log::warn!("ep={ep} update stalled for {secs} s during {step}; retrying");
                self.retry(&ep, format!("no progress for {secs} s during {step}"));
            }
            self.drive(now, &ep);
        }
    }

    /// When [`Ota::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.updates
            .values()
            .filter(|u| u.is_active())
            .flat_map(|u| [u.deadline, u.next_at.filter(|_| u.waiting.is_none())])
            .flatten()
            .min()
    }

    /// Next thing to send.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next record to store.
    pub fn poll_event(&mut self) -> Option<OtaEvent> {
        self.events.pop_front()
    }

    // ---- inside ----

    fn handle(&mut self, endpoint: &str) -> u64 {
        self.next_handle += 1;
        let h = OTA_HANDLE | self.next_handle;
        self.handles.insert(h, (endpoint.to_string(), None));
        h
    }

    fn changed(&mut self, endpoint: &str, durable: bool) {
        if let Some(u) = self.updates.get_mut(endpoint) {
            u.last_percent = u.rec.percent();
            self.events.push_back(OtaEvent::Changed {
                record: Box::new(u.rec.clone()),
                durable,
            });
        }
    }

    fn set_phase(&mut self, endpoint: &str, phase: Phase, step: &str) {
        let unix = self.unix_ms;
        if let Some(u) = self.updates.get_mut(endpoint) {
            if u.rec.phase != phase {
                log::info!(
                    "ep={endpoint} {} update {} -> {} ({step})",
                    u.rec.image.kind.name(),
                    u.rec.phase.name(),
                    phase.name()
                );
            }
            u.rec.phase = phase;
            u.rec.step = step.to_string();
            u.rec.progress_ms = unix;
            if phase.is_final() {
                u.rec.finished_ms = Some(unix);
                u.waiting = None;
                u.next_at = None;
                u.deadline = None;
                u.idle = false;
                if let Some(token) = u.rec.token.take() {
                    u.rec.url = None;
                    self.actions.push_back(Action::Unserve { token });
                }
            }
        }
        self.changed(endpoint, true);
        if phase.is_final() {
            self.promote_later();
        }
    }

    fn fail(&mut self, endpoint: &str, why: String) {
        if let Some(u) = self.updates.get_mut(endpoint) {
            log::warn!(
                "ep={endpoint} {} update to {} failed: {why}",
                u.rec.image.kind.name(),
                u.rec.image.version
            );
            u.rec.error = Some(why);
        }
        self.set_phase(endpoint, Phase::Failed, "ended");
        self.handles.retain(|_, (ep, _)| ep != endpoint);
    }

    /// One retry more, or the end with `why` when they are used up.
    fn retry(&mut self, endpoint: &str, why: String) -> bool {
        let max = self.cfg.retries;
        let Some(u) = self.updates.get_mut(endpoint) else {
            return false;
        };
        u.rec.retries += 1;
        if u.rec.retries > max {
            self.fail(endpoint, format!("{why}; {max} retries used"));
            return false;
        }
        self.changed(endpoint, false);
        true
    }
}

/// Where /3/0/3 is filed among object 5's resources: an id object 5 does
/// not use.
const VERSION_KEY: u16 = u16::MAX;

impl Update {
    fn new(rec: Record) -> Update {
        // Software has no delivery resources; past the start, the
        // strategy was chosen already.
        let delivery_checked = rec.image.kind == Kind::Software
            || !matches!(rec.phase, Phase::Queued | Phase::Initiated)
            || rec.acked > 0;
        Update {
            last_percent: rec.percent(),
            rec,
            waiting: None,
            next_at: None,
            idle: false,
            deadline: None,
            poll_every: Duration::from_secs(1),
            activated: false,
            observing: false,
            delivery_checked,
            pkg_version: None,
        }
    }

    fn is_active(&self) -> bool {
        !self.rec.phase.is_final() && self.rec.phase != Phase::Queued
    }
}

/// Resource values of a Read or Observe answer: an instance's map, or one
/// resource's value (filed under the key the caller names).
fn values_of(v: &Json) -> BTreeMap<u16, Json> {
    match v {
        Json::Object(m) => m
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.clone())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn describe(a: &Answer) -> String {
    match &a.error {
        Some(e) => format!("{} ({e})", a.result),
        None => a.result.to_string(),
    }
}
