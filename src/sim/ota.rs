//! The simulator's objects 5 and 9: a package taken block by block and
//! hashed as it comes (never held whole), checked against the checksum
//! trailer a test package may carry, then installed; and failures on
//! demand, each with the result code a real device reports.
//!
//! A simulated package may start with a line `SIMPKG version=V` (the
//! version the device runs after the update) and end with `\nSHA256:` and
//! 64 hex digits of everything before it (checked; a mismatch is an
//! integrity failure).

use super::{refuse, Refusal, SimDevice};
use crate::coap::{opt, BlockOpt, Code, Message, MsgType, Token};
use crate::lwm2m::node::{Resource, Value};
use crate::lwm2m::Path;
use crate::ota::images::Sha256;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A failure the simulator can be told to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtaFailure {
    /// Not enough storage (firmware result 2, software 50).
    Storage,
    /// Out of memory during the download (3, 51).
    Memory,
    /// The package's integrity check fails (5, 53).
    Integrity,
    /// Unsupported package type (6, 54).
    Unsupported,
    /// The connection is lost half way (4, 52).
    Connection,
    /// The update or install itself fails (8, 58).
    Install,
}

impl OtaFailure {
    /// `storage`, `memory`, `integrity`, `unsupported`, `connection` or `install`.
    pub fn parse(s: &str) -> Option<OtaFailure> {
        Some(match s {
            "storage" => OtaFailure::Storage,
            "memory" => OtaFailure::Memory,
            "integrity" => OtaFailure::Integrity,
            "unsupported" => OtaFailure::Unsupported,
            "connection" => OtaFailure::Connection,
            "install" => OtaFailure::Install,
            _ => return None,
        })
    }

    fn result(self, software: bool) -> i64 {
        match (self, software) {
            (OtaFailure::Storage, false) => 2,
            (OtaFailure::Memory, false) => 3,
            (OtaFailure::Connection, false) => 4,
            (OtaFailure::Integrity, false) => 5,
            (OtaFailure::Unsupported, false) => 6,
            (OtaFailure::Install, false) => 8,
            (OtaFailure::Storage, true) => 50,
            (OtaFailure::Memory, true) => 51,
            (OtaFailure::Connection, true) => 52,
            (OtaFailure::Integrity, true) => 53,
            (OtaFailure::Unsupported, true) => 54,
            (OtaFailure::Install, true) => 58,
        }
    }
}

/// How the simulated objects 5 and 9 behave.
#[derive(Debug, Clone)]
pub struct OtaSimConfig {
    /// A failure to show.
    pub fail: Option<OtaFailure>,
    /// Largest block taken; a larger one is answered with this size.
    pub max_block: usize,
    /// Received packages are written here as `<endpoint>-fw.bin` / `-sw.bin`.
    pub dir: Option<PathBuf>,
    /// How long an update takes before the device reboots.
    pub update_time: Duration,
}

impl Default for OtaSimConfig {
    fn default() -> Self {
        OtaSimConfig {
            fail: None,
            max_block: 1024,
            dir: None,
            update_time: Duration::from_millis(200),
        }
    }
}

/// A package coming in.
#[derive(Default)]
struct Download {
    received: u64,
    sha: Sha256,
    /// The first bytes, for the version line.
    head: Vec<u8>,
    /// The last 72 bytes, held back: they may be the checksum trailer.
    tail: Vec<u8>,
    file: Option<std::fs::File>,
}

/// The state of objects 5 and 9 beyond their resources.
#[derive(Default)]
pub(super) struct OtaObjects {
    fw: Option<Download>,
    sw: Option<Download>,
    /// Version each downloaded package carries.
    fw_version: Option<String>,
    sw_version: Option<String>,
    /// The firmware update ends (the device reboots) at.
    reboot_at: Option<Instant>,
    /// A pull in progress: the request in flight, the URL's path, the
    /// next block, and whether it is software.
    fetch: Option<Fetching>,
}

struct Fetching {
    request: crate::coap::RequestId,
    path: String,
    num: u32,
    software: bool,
}

impl Download {
    /// Takes the next bytes: hashed and written, all but the last 72.
    fn feed(&mut self, take: &[u8]) {
        self.received += take.len() as u64;
        if self.head.len() < 128 {
            let n = (128 - self.head.len()).min(take.len());
            self.head.extend_from_slice(&take[..n]);
        }
        self.tail.extend_from_slice(take);
        if self.tail.len() > TRAILER {
            let cut = self.tail.len() - TRAILER;
            self.sha.update(&self.tail[..cut]);
            if let Some(f) = &mut self.file {
                let _ = f.write_all(&self.tail[..cut]);
            }
            self.tail.drain(..cut);
        }
    }
}

const TRAILER: usize = 72;

impl OtaObjects {
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.reboot_at
    }
}

impl SimDevice {
    fn set(&mut self, obj: u16, res: u16, v: Value) {
        if let Some(inst) = self.objects.get_mut(&obj).and_then(|o| o.get_mut(&0)) {
            inst.insert(res, Resource::Single(v));
        }
    }

    fn get_int(&self, obj: u16, res: u16) -> i64 {
        match self
            .objects
            .get(&obj)
            .and_then(|o| o.get(&0))
            .and_then(|i| i.get(&res))
        {
            Some(Resource::Single(Value::Integer(i))) => *i,
            _ => 0,
        }
    }

    /// Sets state and result resources and notifies their observers.
    fn ota_state(&mut self, now: Instant, software: bool, state: i64, result: i64) {
        let (o, s, r) = if software { (9, 7, 9) } else { (5, 3, 5) };
        self.set(o, s, Value::Integer(state));
        self.set(o, r, Value::Integer(result));
        let paths = [
            Path::parse(&format!("/{o}/0/{s}")).expect("valid"),
            Path::parse(&format!("/{o}/0/{r}")).expect("valid"),
        ];
        self.notify_paths(now, &paths);
    }

    /// A new download; false when the device is told to refuse it.
    fn start_download(&mut self, now: Instant, software: bool) -> bool {
        if let Some(f @ (OtaFailure::Storage | OtaFailure::Memory | OtaFailure::Unsupported)) =
            self.cfg.ota.fail
        {
            self.ota_state(now, software, 0, f.result(software));
            return false;
        }
        let file = self.cfg.ota.dir.as_ref().and_then(|d| {
            let name = format!(
                "{}-{}.bin",
                self.cfg.endpoint,
                if software { "sw" } else { "fw" }
            );
            std::fs::File::create(d.join(name)).ok()
        });
        let d = Download {
            file,
            ..Download::default()
        };
        if software {
            self.ota.sw = Some(d);
        } else {
            self.ota.fw = Some(d);
        }
        self.ota_state(now, software, 1, if software { 1 } else { 0 });
        true
    }

    /// A write of the package URI (/5/0/1 or /9/0/3): an empty one resets
    /// the object, a URL of the gateway's starts a pull.
    pub(super) fn package_uri(
        &mut self,
        now: Instant,
        p: &Path,
        msg: &Message,
    ) -> Result<Message, Refusal> {
        let ok = self.write(p, msg, true)?;
        let software = p.object == 9;
        let uri = match self
            .objects
            .get(&p.object)
            .and_then(|o| o.get(&0))
            .and_then(|i| i.get(&p.resource.unwrap_or(0)))
        {
            Some(Resource::Single(Value::String(s))) => s.clone(),
            _ => String::new(),
        };
        self.ota.fetch = None;
        if uri.is_empty() {
            if software {
                self.ota.sw = None;
            } else {
                self.ota.fw = None;
            }
            self.ota_state(now, software, 0, 0);
            return Ok(ok);
        }
        // Only the gateway it talks to: the URL must name that address.
        let rest = uri
            .strip_prefix("coaps://")
            .or_else(|| uri.strip_prefix("coap://"));
        let target = rest.and_then(|r| r.split_once('/'));
        let reachable = target.and_then(|(hp, _)| hp.parse::<std::net::SocketAddr>().ok())
            == Some(self.cfg.server);
        let Some((_, path)) = target.filter(|_| reachable) else {
            self.ota_state(now, software, 0, if software { 56 } else { 7 });
            return Ok(ok);
        };
        if !self.start_download(now, software) {
            return Ok(ok);
        }
        self.fetch_block(now, path.to_string(), 0, software);
        Ok(ok)
    }

    fn fetch_block(&mut self, now: Instant, path: String, num: u32, software: bool) {
        let mut m = Message::new(MsgType::Con, Code::GET, 0, Token::EMPTY);
        m.set_uri_path(&path);
        let szx = BlockOpt::szx_for(self.cfg.ota.max_block);
        m.set_option(opt::BLOCK2, BlockOpt::new(num, false, szx).encode());
        self.wake(now);
        match self.engine.request(now, self.cfg.server, m) {
            Ok(request) => {
                self.ota.fetch = Some(Fetching {
                    request,
                    path,
                    num,
                    software,
                })
            }
            Err(_) => self.ota_state(now, software, 0, if software { 52 } else { 4 }),
        }
    }

    /// The answer to a pull's block request, if it is one; true when taken.
    pub(super) fn package_fetched(
        &mut self,
        now: Instant,
        id: crate::coap::RequestId,
        answer: Result<&Message, ()>,
    ) -> bool {
        let Some(f) = self.ota.fetch.take_if(|f| f.request == id) else {
            return false;
        };
        let software = f.software;
        let lost = if software { 52 } else { 4 };
        let msg = match answer {
            Ok(m) if m.code == Code::CONTENT => m,
            Ok(m) if m.code == Code::NOT_FOUND || m.code == Code::FORBIDDEN => {
                self.ota_state(now, software, 0, if software { 56 } else { 7 });
                return true;
            }
            _ => {
                self.ota_state(now, software, 0, lost);
                return true;
            }
        };
        let more = matches!(msg.block2(), Some(Ok(b)) if b.more);
        let dl = if software {
            &mut self.ota.sw
        } else {
            &mut self.ota.fw
        };
        let Some(dl) = dl.as_mut() else {
            return true;
        };
        dl.feed(&msg.payload);
        if more {
            self.fetch_block(now, f.path, f.num + 1, software);
        } else {
            self.package_done(now, software);
        }
        true
    }

    /// One block of a package (PUT /5/0/0 or /9/0/2 with Block1).
    pub(super) fn package_block(
        &mut self,
        now: Instant,
        p: &Path,
        msg: &Message,
    ) -> Result<Message, Refusal> {
        let software = p.object == 9;
        let b1 = match msg.block1() {
            Some(Ok(b)) => b,
            Some(Err(())) => return refuse(Code::BAD_OPTION, "invalid Block1"),
            // A whole package in one request.
            None => BlockOpt::new(0, false, 6),
        };
        let size = b1.size();
        let offset = b1.num as u64 * size as u64;
        let fail = self.cfg.ota.fail;
        if b1.num == 0 && !self.start_download(now, software) {
            return refuse(Code::INTERNAL_SERVER_ERROR, "the package cannot be taken");
        }
        let dl = if software {
            &mut self.ota.sw
        } else {
            &mut self.ota.fw
        };
        let Some(dl) = dl.as_mut() else {
            return refuse(Code::REQUEST_ENTITY_INCOMPLETE, "no download started");
        };
        if offset != dl.received {
            return refuse(
                Code::REQUEST_ENTITY_INCOMPLETE,
                format!("block at {offset}, {} bytes received", dl.received),
            );
        }
        if fail == Some(OtaFailure::Connection) && b1.num >= 2 {
            if software {
                self.ota.sw = None;
            } else {
                self.ota.fw = None;
            }
            self.ota_state(now, software, 0, OtaFailure::Connection.result(software));
            return refuse(Code::REQUEST_ENTITY_INCOMPLETE, "connection lost");
        }
        let max = self.cfg.ota.max_block;
        let (take, smaller) = if size > max {
            (&msg.payload[..max.min(msg.payload.len())], true)
        } else {
            (&msg.payload[..], false)
        };
        if b1.more && !smaller && take.len() != size {
            return refuse(Code::BAD_REQUEST, "block shorter than its size");
        }
        dl.feed(take);
        let more = b1.more || smaller;
        let mut ack = Message::new(
            MsgType::Ack,
            if more { Code::CONTINUE } else { Code::CHANGED },
            0,
            Token::EMPTY,
        );
        let echo = if smaller {
            let szx = BlockOpt::szx_for(max);
            BlockOpt::new((offset / max as u64) as u32, true, szx)
        } else {
            BlockOpt::new(b1.num, b1.more, b1.szx)
        };
        ack.set_option(opt::BLOCK1, echo.encode());
        if !more {
            self.package_done(now, software);
        }
        Ok(ack)
    }

    fn package_done(&mut self, now: Instant, software: bool) {
        let dl = if software {
            self.ota.sw.take()
        } else {
            self.ota.fw.take()
        };
        let Some(mut dl) = dl else { return };
        if let Some(f) = &mut dl.file {
            let _ = f.write_all(&dl.tail);
            let _ = f.sync_all();
        }
        let checked = match dl.tail.strip_prefix(b"\nSHA256:") {
            Some(hex) if dl.tail.len() == TRAILER => {
                let want = String::from_utf8_lossy(hex).to_ascii_lowercase();
                std::mem::take(&mut dl.sha).hex() == want
            }
            _ => true,
        };
        let first_line = dl.head.split(|b| *b == b'\n').next().unwrap_or(&[]);
        let version = std::str::from_utf8(first_line)
            .ok()
            .and_then(|l| l.strip_prefix("SIMPKG version="))
            .map(|v| v.trim().to_string());
        let fail = self.cfg.ota.fail;
        if !checked || fail == Some(OtaFailure::Integrity) {
            log::info!("ep={} package integrity check failed", self.cfg.endpoint);
            self.ota_state(now, software, 0, OtaFailure::Integrity.result(software));
            return;
        }
        log::info!(
            "ep={} {} package of {} bytes downloaded{}",
            self.cfg.endpoint,
            if software { "software" } else { "firmware" },
            dl.received,
            version
                .as_deref()
                .map_or(String::new(), |v| format!(", version {v}"))
        );
        if software {
            self.ota.sw_version = version;
            // Downloaded and verified: Delivered.
            self.ota_state(now, true, 3, 3);
        } else {
            self.ota.fw_version = version;
            self.ota_state(now, false, 2, 0);
        }
    }

    /// Execute on /5/0/2 (Update), /9/0/4 (Install), /9/0/10 (Activate).
    pub(super) fn package_execute(&mut self, now: Instant, p: &Path) -> Result<(), Refusal> {
        let fail = self.cfg.ota.fail;
        match (p.object, p.resource) {
            (5, Some(2)) => {
                if self.get_int(5, 3) != 2 {
                    return refuse(Code::METHOD_NOT_ALLOWED, "no firmware downloaded");
                }
                self.ota_state(now, false, 3, 0);
                self.ota.reboot_at = Some(now + self.cfg.ota.update_time);
            }
            (9, Some(4)) => {
                if self.get_int(9, 7) != 3 {
                    return refuse(Code::METHOD_NOT_ALLOWED, "no package delivered");
                }
                if fail == Some(OtaFailure::Install) {
                    self.ota_state(now, true, 3, OtaFailure::Install.result(true));
                    return Ok(());
                }
                let v = self
                    .ota
                    .sw_version
                    .take()
                    .unwrap_or_else(|| "installed".into());
                self.set(9, 1, Value::String(v));
                self.notify_paths(now, &[Path::parse("/9/0/1").expect("valid")]);
                self.ota_state(now, true, 4, 2);
            }
            (9, Some(10)) => {
                if self.get_int(9, 7) != 4 {
                    return refuse(Code::METHOD_NOT_ALLOWED, "nothing installed");
                }
                self.set(9, 12, Value::Boolean(true));
            }
            _ => {}
        }
        Ok(())
    }

    /// The firmware update's end: the device runs the new version, or
    /// fails, and (like a device that rebooted) registers anew.
    pub(super) fn ota_timeout(&mut self, now: Instant) {
        if self.ota.reboot_at.is_none_or(|t| t > now) {
            return;
        }
        self.ota.reboot_at = None;
        if self.cfg.ota.fail == Some(OtaFailure::Install) {
            self.ota_state(now, false, 0, OtaFailure::Install.result(false));
            return;
        }
        let v = self
            .ota
            .fw_version
            .take()
            .unwrap_or_else(|| "updated".into());
        log::info!("ep={} rebooted into firmware {v}", self.cfg.endpoint);
        self.set(3, 3, Value::String(v));
        self.set(5, 3, Value::Integer(0));
        self.set(5, 5, Value::Integer(1));
        self.register(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_the_result_codes_of_both_objects() {
        let f = OtaFailure::parse("integrity").unwrap();
        assert_eq!((f.result(false), f.result(true)), (5, 53));
        assert!(OtaFailure::parse("nope").is_none());
    }
}
