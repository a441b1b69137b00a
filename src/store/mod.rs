//! Durable state in sled: typed trees, postcard values, versioned keys.
//!
//! Every key starts with a schema byte and every value with a format byte,
//! so a newer binary can read an older store and skip what it does not know.
//! sled writes in the background every `flush_every_ms`; callers that
//! promise durability call `flush` (the server groups one flush per batch).

use crate::credentials::Credential;
use crate::profile::Profile;
use crate::server::{ObservationRecord, QueuedRecord, Registration};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

const KEY_V1: u8 = 1;
const VALUE_V1: u8 = 1;
/// Values kept as JSON (profiles, since they grow fields).
const VALUE_JSON: u8 = 2;
const REGISTRATIONS: &str = "registrations";
const OBSERVATIONS: &str = "observations";
const QUEUED: &str = "queued";
const PROFILES: &str = "profiles";
const CREDENTIALS: &str = "credentials";
const UPLINK: &str = "uplink";
const BOOTSTRAP: &str = "bootstrap";
const BOOTSTRAP_STATE: &str = "bootstrap-state";
const OTA_IMAGES: &str = "ota-images";
const OTA_UPDATES: &str = "ota-updates";

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding the sled database (`<dir>/db`).
    pub dir: PathBuf,
    /// sled page cache in bytes.
    pub cache_bytes: u64,
    /// Background flush interval.
    pub flush_every_ms: u64,
}

/// Store errors.
#[derive(Debug)]
pub enum StoreError {
    /// Another process holds the database.
    Locked(PathBuf),
    /// The directory cannot be created or read.
    Io(PathBuf, std::io::Error),
    /// sled failed.
    Sled(sled::Error),
    /// A value could not be encoded.
    Encode(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked(p) => write!(
                f,
                "{} is in use by another process (is another lwm2m-gw running?)",
                p.display()
            ),
            StoreError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StoreError::Sled(e) => write!(f, "store: {e}"),
            StoreError::Encode(e) => write!(f, "store: cannot encode value: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

/// What happened when the store was opened.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Where a corrupt database was moved before starting clean.
    pub moved_aside: Option<PathBuf>,
    /// Why it was found corrupt.
    pub reason: Option<String>,
    /// Every moved-aside copy in the store's directory, this start's
    /// among them: kept for recovery until an operator removes them.
    pub corrupt_copies: Vec<PathBuf>,
}

/// Stored observations, decoded one at a time.
pub type ObservationRecords =
    Box<dyn Iterator<Item = Result<ObservationRecord, StoreError>> + Send>;

/// The gateway's store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    regs: sled::Tree,
    observations: sled::Tree,
    queued: sled::Tree,
    profiles: sled::Tree,
    credentials: sled::Tree,
    bootstrap: sled::Tree,
    bootstrap_state: sled::Tree,
    ota_images: sled::Tree,
    ota_updates: sled::Tree,
}

impl Store {
    /// Opens or creates the store. A database that sled reports as corrupt
    /// (or that makes it panic) is moved aside and a clean one is created.
    pub fn open(cfg: &StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| StoreError::Io(cfg.dir.clone(), e))?;
        let path = cfg.dir.join("db");
        let mut report = OpenReport {
            corrupt_copies: corrupt_copies(&cfg.dir),
            ..OpenReport::default()
        };
        let why = match open_and_check(cfg, &path) {
            Ok(store) => return Ok((store, report)),
            Err(Failure::Locked) => return Err(StoreError::Locked(path)),
            Err(Failure::Other(e)) => return Err(e),
            Err(Failure::Corrupt(why)) => why,
        };
        let aside = cfg.dir.join(format!("db.corrupt-{}", unix_secs()));
        std::fs::rename(&path, &aside).map_err(|e| StoreError::Io(path.clone(), e))?;
        log::error!(
            "STORE CORRUPT: {} could not be read ({why}); moved it to {} and started with an empty store. \
             Registrations are rebuilt as devices re-register; keep the moved copy for recovery.",
            path.display(),
            aside.display()
        );
        report.corrupt_copies.push(aside.clone());
        report.moved_aside = Some(aside);
        report.reason = Some(why);
        match open_and_check(cfg, &path) {
            Ok(store) => Ok((store, report)),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Locked) => Err(StoreError::Locked(path)),
            Err(Failure::Corrupt(why)) => Err(StoreError::Sled(sled::Error::Unsupported(why))),
        }
    }

    /// Writes a registration (durable after the next flush).
    pub fn put_registration(&self, reg: &Registration) -> Result<(), StoreError> {
        let mut value = vec![VALUE_V1];
        value.extend(postcard::to_stdvec(reg).map_err(|e| StoreError::Encode(e.to_string()))?);
        self.regs.insert(reg_key(&reg.endpoint), value)?;
        Ok(())
    }

    /// Removes an endpoint's registration.
    pub fn remove_registration(&self, endpoint: &str) -> Result<(), StoreError> {
        self.regs.remove(reg_key(endpoint))?;
        Ok(())
    }

    /// Every stored registration. Entries this binary cannot decode are
    /// logged and left in place (a newer binary may have written them).
    pub fn registrations(&self) -> Result<Vec<Registration>, StoreError> {
        self.registration_records().collect()
    }

    /// Every stored registration, decoded as it is taken, so a restore
    /// never holds them all twice.
    pub fn registration_records(
        &self,
    ) -> impl Iterator<Item = Result<Registration, StoreError>> + Send + 'static {
        self.regs.scan_prefix([KEY_V1]).filter_map(|item| {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let ep = || String::from_utf8_lossy(&k[1..]).into_owned();
            match v.split_first() {
                Some((&VALUE_V1, body)) => match postcard::from_bytes::<Registration>(body) {
                    Ok(r) => Some(Ok(r)),
                    Err(e) => {
                        log::warn!(
                            "ep={} stored registration does not decode ({e}); skipped",
                            ep()
                        );
                        None
                    }
                },
                _ => {
                    log::warn!(
                        "ep={} stored registration has an unknown format; skipped",
                        ep()
                    );
                    None
                }
            }
        })
    }

    /// Writes an observation (durable after the next flush).
    pub fn put_observation(&self, o: &ObservationRecord) -> Result<(), StoreError> {
        let key = device_key(&o.endpoint, &o.token);
        self.observations.insert(key, encode(o)?)?;
        Ok(())
    }

    /// Removes one observation.
    pub fn remove_observation(&self, endpoint: &str, token: &[u8]) -> Result<(), StoreError> {
        self.observations.remove(device_key(endpoint, token))?;
        Ok(())
    }

    /// Removes every observation of a device.
    pub fn remove_observations(&self, endpoint: &str) -> Result<(), StoreError> {
        remove_prefix(&self.observations, &device_key(endpoint, &[]))
    }

    /// Every stored observation.
    pub fn observations(&self) -> Result<Vec<ObservationRecord>, StoreError> {
        read_all(&self.observations, "observation")
    }

    /// Every observation, decoded as it is taken: for a restore in steps.
    pub fn observation_records(&self) -> ObservationRecords {
        Box::new(decoded(&self.observations, "observation"))
    }

    /// Writes a request held for a sleeping device.
    pub fn put_queued(&self, q: &QueuedRecord) -> Result<(), StoreError> {
        let key = device_key(&q.endpoint, &q.seq.to_be_bytes());
        self.queued.insert(key, encode(q)?)?;
        Ok(())
    }

    /// Removes a held request.
    pub fn remove_queued(&self, endpoint: &str, seq: u64) -> Result<(), StoreError> {
        self.queued
            .remove(device_key(endpoint, &seq.to_be_bytes()))?;
        Ok(())
    }

    /// Every held request, per device in order of arrival.
    pub fn queued(&self) -> Result<Vec<QueuedRecord>, StoreError> {
        read_all(&self.queued, "queued request")
    }

    /// Writes a profile.
    pub fn put_profile(&self, p: &Profile) -> Result<(), StoreError> {
        // JSON describes itself: a field added later decodes from this.
        let mut value = vec![VALUE_JSON];
        value.extend(serde_json::to_vec(p).map_err(|e| StoreError::Encode(e.to_string()))?);
        self.profiles.insert(reg_key(&p.name), value)?;
        Ok(())
    }

    /// Removes a profile.
    pub fn remove_profile(&self, name: &str) -> Result<(), StoreError> {
        self.profiles.remove(reg_key(name))?;
        Ok(())
    }

    /// Every stored profile.
    pub fn profiles(&self) -> Result<Vec<Profile>, StoreError> {
        let mut out = Vec::new();
        for item in self.profiles.scan_prefix([KEY_V1]) {
            let (_, v) = item?;
            let p = match v.split_first() {
                Some((&VALUE_JSON, body)) => {
                    serde_json::from_slice::<Profile>(body).map_err(|e| e.to_string())
                }
                Some((&VALUE_V1, body)) => {
                    postcard::from_bytes::<crate::profile::stored::ProfileV1>(body)
                        .map(Profile::from)
                        .map_err(|e| e.to_string())
                }
                _ => Err("unknown format".into()),
            };
            match p {
                Ok(p) => out.push(p),
                Err(e) => log::warn!("stored profile does not decode ({e}); skipped"),
            }
        }
        Ok(out)
    }

    /// Writes an endpoint's credential.
    pub fn put_credential(&self, c: &Credential) -> Result<(), StoreError> {
        self.credentials.insert(reg_key(&c.endpoint), encode(c)?)?;
        Ok(())
    }

    /// Removes an endpoint's credential.
    pub fn remove_credential(&self, endpoint: &str) -> Result<(), StoreError> {
        self.credentials.remove(reg_key(endpoint))?;
        Ok(())
    }

    /// Every stored credential.
    pub fn credentials(&self) -> Result<Vec<Credential>, StoreError> {
        read_all(&self.credentials, "credential")
    }

    /// Writes a bootstrap entry.
    pub fn put_bootstrap_entry(&self, e: &crate::bootstrap::Entry) -> Result<(), StoreError> {
        self.bootstrap.insert(reg_key(&e.endpoint), encode(e)?)?;
        Ok(())
    }

    /// Removes a bootstrap entry and its record.
    pub fn remove_bootstrap_entry(&self, endpoint: &str) -> Result<(), StoreError> {
        self.bootstrap.remove(reg_key(endpoint))?;
        self.bootstrap_state.remove(reg_key(endpoint))?;
        Ok(())
    }

    /// Every bootstrap entry.
    pub fn bootstrap_entries(&self) -> Result<Vec<crate::bootstrap::Entry>, StoreError> {
        read_all(&self.bootstrap, "bootstrap entry")
    }

    /// Writes a device's bootstrap record.
    pub fn put_bootstrap_state(&self, st: &crate::bootstrap::State) -> Result<(), StoreError> {
        self.bootstrap_state
            .insert(reg_key(&st.endpoint), encode(st)?)?;
        Ok(())
    }

    /// Every bootstrap record.
    pub fn bootstrap_states(&self) -> Result<Vec<crate::bootstrap::State>, StoreError> {
        read_all(&self.bootstrap_state, "bootstrap record")
    }

    /// Writes an OTA image's metadata (its file is already in place).
    pub fn put_ota_image(&self, img: &crate::ota::Image) -> Result<(), StoreError> {
        self.ota_images.insert(reg_key(&img.id), encode(img)?)?;
        Ok(())
    }

    /// Removes an OTA image's metadata.
    pub fn remove_ota_image(&self, id: &str) -> Result<(), StoreError> {
        self.ota_images.remove(reg_key(id))?;
        Ok(())
    }

    /// Every OTA image.
    pub fn ota_images(&self) -> Result<Vec<crate::ota::Image>, StoreError> {
        read_all(&self.ota_images, "OTA image")
    }

    /// Writes a device's update record.
    pub fn put_ota_update(&self, r: &crate::ota::Record) -> Result<(), StoreError> {
        self.ota_updates.insert(reg_key(&r.endpoint), encode(r)?)?;
        Ok(())
    }

    /// Every update record.
    pub fn ota_updates(&self) -> Result<Vec<crate::ota::Record>, StoreError> {
        read_all(&self.ota_updates, "OTA update")
    }

    /// The tree of the northbound store-and-forward queue (its owner,
    /// `northbound::UplinkQueue`, keeps its own key and value format).
    pub fn uplink_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(UPLINK)?)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    /// The database's files' size in bytes, for `stats`.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// A key under a device: schema byte, endpoint length, endpoint, suffix.
/// The length keeps one endpoint's prefix from matching a longer name.
fn device_key(endpoint: &str, suffix: &[u8]) -> Vec<u8> {
    let ep = endpoint.as_bytes();
    let len = ep.len().min(u16::MAX as usize) as u16;
    let mut k = Vec::with_capacity(3 + ep.len() + suffix.len());
    k.push(KEY_V1);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&ep[..len as usize]);
    k.extend_from_slice(suffix);
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    let mut value = vec![VALUE_V1];
    value.extend(postcard::to_stdvec(v).map_err(|e| StoreError::Encode(e.to_string()))?);
    Ok(value)
}

fn remove_prefix(tree: &sled::Tree, prefix: &[u8]) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix(prefix).keys() {
        batch.remove(item?);
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// Every value of a tree in key order; entries that do not decode are
/// logged and left for a newer binary.
fn read_all<T: DeserializeOwned>(tree: &sled::Tree, what: &str) -> Result<Vec<T>, StoreError> {
    decoded(tree, what).collect()
}

/// The values of a tree in key order, decoded one at a time so a large
/// tree is never held twice (raw and decoded) in memory; entries that do
/// not decode are logged, skipped and left for a newer binary.
fn decoded<'a, T: DeserializeOwned>(
    tree: &sled::Tree,
    what: &'a str,
) -> impl Iterator<Item = Result<T, StoreError>> + Send + 'a {
    tree.scan_prefix([KEY_V1]).filter_map(move |item| {
        let (_, v) = match item {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        match v.split_first() {
            Some((&VALUE_V1, body)) => match postcard::from_bytes::<T>(body) {
                Ok(x) => Some(Ok(x)),
                Err(e) => {
                    log::warn!("stored {what} does not decode ({e}); skipped");
                    None
                }
            },
            _ => {
                log::warn!("stored {what} has an unknown format; skipped");
                None
            }
        }
    })
}

fn reg_key(endpoint: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + endpoint.len());
    k.push(KEY_V1);
    k.extend_from_slice(endpoint.as_bytes());
    k
}

/// Opens the database and reads every entry once: sled may open a damaged
/// file without complaint and fail (or panic) only when a page is read.
fn open_and_check(cfg: &StoreConfig, path: &Path) -> Result<Store, Failure> {
    let db = open_db(cfg, path)?;
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Store, sled::Error> {
            let regs = db.open_tree(REGISTRATIONS)?;
            let observations = db.open_tree(OBSERVATIONS)?;
            let queued = db.open_tree(QUEUED)?;
            let profiles = db.open_tree(PROFILES)?;
            let credentials = db.open_tree(CREDENTIALS)?;
            let bootstrap = db.open_tree(BOOTSTRAP)?;
            let bootstrap_state = db.open_tree(BOOTSTRAP_STATE)?;
            let ota_images = db.open_tree(OTA_IMAGES)?;
            let ota_updates = db.open_tree(OTA_UPDATES)?;
            for name in db.tree_names() {
                for item in db.open_tree(name)?.iter() {
                    item?;
                }
            }
            Ok(Store {
                db: db.clone(),
                regs,
                observations,
                queued,
                profiles,
                credentials,
                bootstrap,
                bootstrap_state,
                ota_images,
                ota_updates,
            })
        },
    ));
    match checked {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(Failure::Corrupt(format!("reading it failed: {e}"))),
        Err(_) => Err(Failure::Corrupt("sled panicked while reading it".into())),
    }
}

enum Failure {
    Locked,
    Corrupt(String),
    Other(StoreError),
}

fn open_db(cfg: &StoreConfig, path: &Path) -> Result<sled::Db, Failure> {
    let conf = sled::Config::new()
        .path(path)
        .cache_capacity(cfg.cache_bytes)
        .flush_every_ms(Some(cfg.flush_every_ms.max(1)));
    // sled 0.34 can panic on some damaged files instead of returning an error.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conf.open()));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(e)))
            if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
        {
            Err(Failure::Locked)
        }
        Ok(Err(
            e @ (sled::Error::Corruption { .. }
            | sled::Error::ReportableBug(_)
            | sled::Error::Unsupported(_)),
        )) => Err(Failure::Corrupt(e.to_string())),
        Ok(Err(sled::Error::Io(e)))
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Err(Failure::Corrupt(e.to_string()))
        }
        Ok(Err(e)) => Err(Failure::Other(StoreError::Sled(e))),
        Err(_) => Err(Failure::Corrupt("sled panicked while opening".into())),
    }
}

/// The `db.corrupt-*` directories beside the database, oldest first.
fn corrupt_copies(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("db.corrupt-"))
        })
        .collect();
    v.sort();
    v
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::Version;

    fn cfg(name: &str) -> StoreConfig {
        let dir =
            std::env::temp_dir().join(format!("lwm2m-gw-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StoreConfig {
            dir,
            cache_bytes: 1 << 20,
            flush_every_ms: 500,
        }
    }

    /// Opens a store this process just closed. sled's background flusher
    /// can hold the file lock a moment after the last handle is dropped,
    /// which a test on a loaded machine meets (a new process does not).
    fn reopen(c: &StoreConfig) -> (Store, OpenReport) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(c) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < end => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => return r.unwrap(),
            }
        }
    }

    fn reg(ep: &str) -> Registration {
        Registration {
            id: crate::server::RegId(7),
            endpoint: ep.into(),
            lifetime: 60,
            lwm2m_version: Version::new(1, 1),
            binding: Default::default(),
            queue_mode: false,
            sms: None,
            endpoint_type: None,
            alternate_root: None,
            objects: vec![],
            content_formats: vec![11542],
            peer: "127.0.0.1:1".parse().unwrap(),
            registered_at_ms: 1,
            updated_at_ms: 2,
        }
    }

    #[test]
    fn registrations_survive_reopen() {
        let c = cfg("reopen");
        {
            let (s, rep) = Store::open(&c).unwrap();
            assert!(rep.moved_aside.is_none());
            s.put_registration(&reg("a")).unwrap();
            s.put_registration(&reg("b")).unwrap();
            s.remove_registration("a").unwrap();
            s.flush().unwrap();
        }
        let (s, _) = reopen(&c);
        assert_eq!(s.registrations().unwrap(), vec![reg("b")]);
    }

    #[test]
    fn undecodable_entries_are_skipped_not_deleted() {
        let c = cfg("garbage");
        let (s, _) = Store::open(&c).unwrap();
        s.put_registration(&reg("ok")).unwrap();
        s.regs.insert(reg_key("future"), vec![99, 1, 2]).unwrap();
        s.regs
            .insert(reg_key("broken"), vec![VALUE_V1, 0xff])
            .unwrap();
        assert_eq!(s.registrations().unwrap(), vec![reg("ok")]);
        assert!(s.regs.get(reg_key("future")).unwrap().is_some());
    }

    fn damaged_store(name: &str, damage: impl Fn(&Path)) {
        let c = cfg(name);
        {
            let (s, _) = Store::open(&c).unwrap();
            for i in 0..200 {
                s.put_registration(&reg(&format!("ep{i}"))).unwrap();
            }
            s.flush().unwrap();
        }
        // sled's background threads finish with the files shortly after the last handle goes.
        std::thread::sleep(std::time::Duration::from_millis(300));
        damage(&c.dir.join("db"));
        let (s, rep) = reopen(&c);
        if let Some(aside) = rep.moved_aside {
            assert!(aside.exists());
            assert!(s.registrations().unwrap().is_empty());
        } else {
            // sled recovered by itself: whatever it kept must still decode.
            assert!(s.registrations().unwrap().len() <= 200);
        }
        s.put_registration(&reg("new")).unwrap();
        s.flush().unwrap();
    }

    #[test]
    fn garbage_database_is_moved_aside_and_store_starts_clean() {
        let c = cfg("garbage-all");
        {
            let (s, _) = Store::open(&c).unwrap();
            s.put_registration(&reg("a")).unwrap();
            s.flush().unwrap();
        }
        for e in std::fs::read_dir(c.dir.join("db")).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::write(&p, vec![0xa5u8; 4096]).unwrap();
            }
        }
        let (s, rep) = reopen(&c);
        let aside = rep.moved_aside.expect("moved aside");
        assert!(aside.exists());
        assert!(rep.reason.is_some());
        assert_eq!(rep.corrupt_copies, vec![aside.clone()]);
        assert!(s.registrations().unwrap().is_empty());
        s.put_registration(&reg("b")).unwrap();
        s.flush().unwrap();
        drop(s);
        // The next start opens the clean store and still tells of the copy.
        let (s, rep) = reopen(&c);
        assert!(rep.moved_aside.is_none() && rep.reason.is_none());
        assert_eq!(rep.corrupt_copies, vec![aside]);
        assert_eq!(s.registrations().unwrap().len(), 1);
    }

    #[test]
    fn truncated_or_scribbled_data_file_never_stops_the_start() {
        damaged_store("truncated", |db| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(db.join("db"))
                .unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 3).unwrap();
        });
        damaged_store("scribbled", |db| {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(db.join("db"))
                .unwrap();
            f.seek(SeekFrom::Start(100)).unwrap();
            f.write_all(&[0x5a; 2000]).unwrap();
        });
    }

    #[test]
    fn observations_and_queued_requests_survive_reopen_per_device() {
        let c = cfg("obsq");
        {
            let (s, _) = Store::open(&c).unwrap();
            for (ep, tk) in [("a", 1u8), ("a", 2), ("ab", 3)] {
                s.put_observation(&ObservationRecord {
                    endpoint: ep.into(),
                    reg_id: 1,
                    peer: "127.0.0.1:9".parse().unwrap(),
                    token: vec![tk; 8],
                    paths: vec!["/3/0/9".into()],
                    composite: false,
                    format: 112,
                    request: vec![0x40, 1, 0, 0],
                })
                .unwrap();
            }
            for seq in [3u64, 1, 300] {
                s.put_queued(&QueuedRecord {
                    endpoint: "a".into(),
                    seq,
                    method: "Read".into(),
                    params: "{}".into(),
                    queued_ms: 1,
                    expires_ms: 2,
                })
                .unwrap();
            }
            s.remove_observation("a", &[1; 8]).unwrap();
            s.remove_queued("a", 3).unwrap();
            s.flush().unwrap();
        }
        let (s, _) = reopen(&c);
        let obs = s.observations().unwrap();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].token, vec![2; 8]);
        let seqs: Vec<u64> = s.queued().unwrap().iter().map(|q| q.seq).collect();
        assert_eq!(seqs, [1, 300], "in order of arrival");
        // Removing device "a" leaves "ab" alone.
        s.remove_observations("a").unwrap();
        let left: Vec<String> = s
            .observations()
            .unwrap()
            .into_iter()
            .map(|o| o.endpoint)
            .collect();
        assert_eq!(left, ["ab"]);
        let _ = std::fs::remove_dir_all(&c.dir);
    }

    #[test]
    fn profiles_stored_by_the_first_format_still_load_and_new_ones_keep_every_field() {
        let c = cfg("profile-versions");
        let (store, _) = Store::open(&c).unwrap();
        let old = Profile::from_toml(
            "name = \"meters\"\nobjects = [3, 5]\n[resources.\"/3/0/9\"]\ntelemetry = true\n[ota]\nstrategy = \"pull\"\n[bootstrap]\nlifetime = 60\n",
        )
        .unwrap();
        // What a gateway of the first format wrote: postcard, version 1.
        let mut v1 = vec![VALUE_V1];
        v1.extend(postcard::to_stdvec(&crate::profile::stored::ProfileV1::of(&old)).unwrap());
        store.profiles.insert(reg_key("meters"), v1).unwrap();
        let new = Profile::from_toml(
            "name = \"valves\"\n[ota]\nfw_strategy = \"auto\"\nsw_strategy = \"pull\"\nblock_size = 256\nsw_activate = true\n",
        )
        .unwrap();
        store.put_profile(&new).unwrap();
        let got = store.profiles().unwrap();
        assert_eq!(got, vec![old, new]);
        assert_eq!(
            got[0].ota.as_ref().unwrap().strategy_for(false),
            Some("pull")
        );
        assert_eq!(got[1].ota.as_ref().unwrap().block_size, Some(256));
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}
