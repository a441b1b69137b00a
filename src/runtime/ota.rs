//! The OTA shell: the update machine's blocks read from the image files
//! and handed to the server, its commands run, its records stored and
//! flushed, its states sent northbound, and image files copied in on a
//! worker thread so the loop never waits on a large file.

use super::error::RunError;
use crate::config::OtaSettings;
use crate::ota::images::{read_block, ImageStore};
use crate::ota::{Action, Image, Kind, Ota, OtaError, OtaEvent, Record};
use crate::server::command::Answer;
use crate::server::Server;
use crate::store::Store;
use smol::channel::{Receiver, Sender};
use std::collections::HashMap;
use std::fs::File;
use std::time::Instant;

/// An image add that finished on the worker thread: the command's
/// handle, the bytes it had reserved, and the image or why not.
pub type Added = (u64, u64, Result<Image, OtaError>);

/// The OTA machine and its files.
pub struct Shell {
    core: Ota,
    images: ImageStore,
    /// Images being sent, kept open while an update reads them.
    open: HashMap<String, File>,
    done_tx: Sender<Added>,
    done_rx: Receiver<Added>,
    /// Bytes promised to adds still copying.
    reserved: u64,
    /// Records changed since the last store write, by endpoint.
    dirty: Vec<Record>,
}

impl Shell {
    /// Opens the image directory and puts back the stored images and
    /// updates; an image whose file is gone is dropped with a log line.
    pub fn start(cfg: &OtaSettings, store: &Store, now: Instant) -> Result<Shell, RunError> {
        let images = ImageStore::open(&cfg.dir, cfg.max_store_bytes)
            .map_err(|e| RunError::Config(format!("OTA image store: {e}")))?;
        let mut core = Ota::new(cfg.core.clone(), now);
        core.set_token_source(Box::new(|| {
            let mut b = [0u8; 16];
            if !crate::clock::random_bytes(&mut b) {
                let mut rng = fastrand::Rng::with_seed(crate::clock::random_seed());
                rng.fill(&mut b);
            }
            b.iter().map(|x| format!("{x:02x}")).collect()
        }));
        for img in store.ota_images()? {
            match images.open_image(&img) {
                Ok(_) => core.restore_image(img),
                Err(e) => {
                    log::error!(
                        "OTA image {} ({} {}) dropped: {e}",
                        img.id,
                        img.title,
                        img.version
                    );
                    let _ = store.remove_ota_image(&img.id);
                }
            }
        }
        let mut running = 0;
        for rec in store.ota_updates()? {
            running += usize::from(!rec.phase.is_final());
            core.restore(rec, now);
        }
        log::info!(
            "OTA: {} images ({} bytes of {}), {running} updates to go on",
            core.images().len(),
            core.image_bytes(),
            cfg.max_store_bytes
        );
        let (done_tx, done_rx) = smol::channel::bounded(16);
        Ok(Shell {
            core,
            images,
            open: HashMap::new(),
            done_tx,
            done_rx,
            reserved: 0,
            dirty: Vec::new(),
        })
    }

    /// The bases of pull URLs, once the ports are bound.
    pub fn set_pull_bases(&mut self, host: &str, plain: u16, secure: Option<u16>) {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        self.core.set_pull_bases(
            Some(format!("coap://{host}:{plain}")),
            secure.map(|p| format!("coaps://{host}:{p}")),
        );
    }

    /// The machine, for the command path.
    pub fn core(&self) -> &Ota {
        &self.core
    }

    /// The machine, to change.
    pub fn core_mut(&mut self) -> &mut Ota {
        &mut self.core
    }

    /// Adds finishing on the worker thread.
    pub fn added(&self) -> Receiver<Added> {
        self.done_rx.clone()
    }

    /// Copies `file` into the store on a worker thread; the answer comes
    /// to [`Shell::finish_add`] with `handle`.
    pub fn add(
        &mut self,
        handle: u64,
        file: std::path::PathBuf,
        kind: Kind,
        title: String,
        version: String,
    ) {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let used = self.core.image_bytes() + self.reserved;
        self.reserved += size;
        let images = self.images.clone();
        let tx = self.done_tx.clone();
        smol::spawn(async move {
            let r = smol::unblock(move || {
                images.add(&file, kind, &title, &version, used, crate::clock::unix_ms())
            })
            .await;
            let _ = tx.send((handle, size, r)).await;
        })
        .detach();
    }

    /// An add finished: the image joins the machine; the command's answer.
    pub fn finish_add(&mut self, reserved: u64, r: Result<Image, OtaError>) -> Answer {
        self.reserved = self.reserved.saturating_sub(reserved);
        // Same bytes under other names are refused; the file (the same
        // bytes) stays for the image that has it.
        match r.and_then(|img| self.core.add_image(img)) {
            Ok(img) => Answer::ok("CREATED", Some(img.to_json())),
            Err(e) => e.answer(),
        }
    }

    /// When the machine is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Runs the machine's timers when due, and hands what it has to send
    /// to the server. A block whose bytes cannot be read ends its update.
    pub fn send(&mut self, now: Instant, server: &mut Server) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now, crate::clock::unix_ms());
        }
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Block {
                    handle,
                    endpoint,
                    path,
                    image,
                    offset,
                    len,
                    block,
                    size,
                } => match self.read(&image, offset, len) {
                    Ok(bytes) => server.block_write(
                        now,
                        handle,
                        &endpoint,
                        &path,
                        block,
                        (block.num == 0).then_some(size),
                        bytes,
                    ),
                    Err(e) => {
                        log::error!("ep={endpoint} OTA image {image} unreadable: {e}");
                        self.core
                            .abort(&endpoint, format!("the image file could not be read: {e}"));
                    }
                },
                Action::Command {
                    handle,
                    endpoint,
                    method,
                    params,
                } => server.command(now, handle, &endpoint, method, &params),
                Action::Serve {
                    token,
                    endpoint,
                    image,
                    size,
                    secure,
                } => server.serve_package(
                    token,
                    crate::server::packages::Package {
                        endpoint,
                        image,
                        size,
                        secure,
                    },
                ),
                Action::Unserve { token } => server.unserve_package(&token),
            }
        }
        // Blocks devices fetch from their pull URLs.
        while let Some(f) = server.poll_fetch() {
            let r = self.read(&f.image, f.offset, f.len);
            let (ep, end) = (f.endpoint.clone(), f.offset + f.len as u64);
            // Progress is the device's own fetching, not anyone's with the URL.
            let own = server
                .registry()
                .get(&ep)
                .is_some_and(|reg| reg.peer == f.peer);
            let ok = r.is_ok();
            server.answer_fetch(now, f, r);
            if ok && own {
                self.core.on_fetched(now, crate::clock::unix_ms(), &ep, end);
            }
        }
    }

    fn read(&mut self, image: &str, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        if !self.open.contains_key(image) {
            let img = self.core.resolve(image).map_err(|e| e.to_string())?.clone();
            let f = self.images.open_image(&img).map_err(|e| e.to_string())?;
            self.open.insert(image.to_string(), f);
        }
        read_block(&self.open[image], offset, len).map_err(|e| e.to_string())
    }

    /// Stores what changed; true when a phase changed and the store must
    /// be flushed before the turn's datagrams leave. Files of removed
    /// images go, and files no update reads any more are closed.
    pub fn persist(&mut self, store: &Store) -> bool {
        let mut flush = false;
        while let Some(ev) = self.core.poll_event() {
            let r = match ev {
                OtaEvent::Changed { record, durable } => {
                    flush |= durable;
                    let r = store.put_ota_update(&record);
                    self.dirty.push(*record);
                    r
                }
                OtaEvent::ImageAdded(img) => {
                    flush = true;
                    store.put_ota_image(&img)
                }
                OtaEvent::ImageRemoved(id) => {
                    flush = true;
                    self.open.remove(&id);
                    if let Err(e) = self.images.remove(&id) {
                        log::error!("OTA image {id}: {e}");
                    }
                    store.remove_ota_image(&id)
                }
            };
            if let Err(e) = r {
                log::error!("OTA: could not store a change: {e}");
            }
        }
        if self.open.len() > 8 {
            let core = &self.core;
            self.open.retain(|id, _| core.uses_image(id));
        }
        flush
    }

    /// Records changed since the last call, for the platform.
    pub fn take_changed(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.dirty)
    }
}
