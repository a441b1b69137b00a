//! The image files: `<data_dir>/ota/<sha256>`, added whole or not at all
//! (a temporary file, fsync, rename, fsync of the directory), read a block
//! at a time. Their metadata lives in the store with the updates.

use super::{Image, Kind, OtaError};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// SHA-256 fed piece by piece.
pub struct Sha256(mbedtls::hash::Md);

impl Sha256 {
    /// A fresh digest.
    pub fn new() -> Sha256 {
        Sha256(mbedtls::hash::Md::new(mbedtls::hash::Type::Sha256).expect("SHA-256 is built in"))
    }

    /// Adds bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b).expect("SHA-256 takes any input");
    }

    /// The digest, lower-case hex.
    pub fn hex(self) -> String {
        let mut out = [0u8; 32];
        self.0.finish(&mut out).expect("32 bytes fit");
        out.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

/// The directory of image files, bounded in bytes.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl ImageStore {
    /// Opens (and makes) the directory; temporary files a crash left are
    /// removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<ImageStore, OtaError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| OtaError::Store(format!("{}: {e}", dir.display())))?;
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    log::warn!(
                        "OTA: removing {} (an image add cut short)",
                        e.path().display()
                    );
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(ImageStore {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// The bound, bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where image `id` lives.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Copies `src` in, hashing it on the way; `used` bytes are already
    /// taken. The image is whole on disk, under its SHA-256, before this
    /// returns; on any error nothing of it stays.
    pub fn add(
        &self,
        src: &Path,
        kind: Kind,
        title: &str,
        version: &str,
        used: u64,
        unix_ms: u64,
    ) -> Result<Image, OtaError> {
        if title.trim().is_empty() || version.trim().is_empty() {
            return Err(OtaError::BadInput(
                "an image needs a --title and a --version".into(),
            ));
        }
        let io = |e: std::io::Error| OtaError::Store(format!("{}: {e}", src.display()));
        let mut input = File::open(src).map_err(io)?;
        let len = input.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(OtaError::BadInput(format!("{} is empty", src.display())));
        }
        if used.saturating_add(len) > self.max_bytes {
            return Err(OtaError::Busy(format!(
                "{} ({len} bytes) does not fit: the image store holds {used} of {} bytes \
                 (ota.max_store_bytes); remove an image first",
                src.display(),
                self.max_bytes
            )));
        }
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            crate::clock::random_seed()
        ));
        let result = (|| {
            let out_err = |e: std::io::Error| OtaError::Store(format!("{}: {e}", tmp.display()));
            let mut out = File::create(&tmp).map_err(out_err)?;
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = input.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(out_err)?;
                total += n as u64;
            }
            if total != len {
                return Err(OtaError::Store(format!(
                    "{} changed while it was read",
                    src.display()
                )));
            }
            out.sync_all().map_err(out_err)?;
            let id = sha.hex();
            let dest = self.path(&id);
            std::fs::rename(&tmp, &dest).map_err(out_err)?;
            // The rename itself must survive a power cut.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(Image {
                id,
                kind,
                title: title.trim().to_string(),
                version: version.trim().to_string(),
                size: total,
                added_ms: unix_ms,
            })
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Opens an image to read blocks from.
    pub fn open_image(&self, image: &Image) -> Result<File, OtaError> {
        let p = self.path(&image.id);
        let f = File::open(&p).map_err(|e| OtaError::Store(format!("{}: {e}", p.display())))?;
        let len = f
            .metadata()
            .map_err(|e| OtaError::Store(format!("{}: {e}", p.display())))?
            .len();
        if len != image.size {
            return Err(OtaError::Store(format!(
                "{} has {len} bytes, not {}",
                p.display(),
                image.size
            )));
        }
        Ok(f)
    }

    /// Deletes an image file.
    pub fn remove(&self, id: &str) -> Result<(), OtaError> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(OtaError::Store(format!("{}: {e}", self.path(id).display()))),
        }
    }
}

/// `len` bytes at `offset` of an open image.
pub fn read_block(f: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "lwm2m-gw-images-{name}-{}-{}",
            std::process::id(),
            crate::clock::random_seed()
        ))
    }

    #[test]
    fn an_added_image_is_named_by_its_sha256_and_read_back_exactly() {
        let d = dir("add");
        let store = ImageStore::open(&d.join("ota"), 1 << 20).unwrap();
        let src = d.join("fw.bin");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &bytes).unwrap();
        let img = store
            .add(&src, Kind::Firmware, "fw", "1.2.3", 0, 5)
            .unwrap();
        let mut sha = Sha256::new();
        sha.update(&bytes);
        assert_eq!(img.id, sha.hex());
        assert_eq!(img.size, 100_000);
        let f = store.open_image(&img).unwrap();
        assert_eq!(read_block(&f, 1024, 1024).unwrap(), bytes[1024..2048]);
        assert_eq!(read_block(&f, 99_990, 10).unwrap(), bytes[99_990..]);
        // Nothing but the image is left behind.
        let names: Vec<_> = std::fs::read_dir(d.join("ota"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![img.id.clone()]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn an_image_past_the_bound_is_refused_and_leaves_nothing() {
        let d = dir("bound");
        let store = ImageStore::open(&d.join("ota"), 1000).unwrap();
        let src = d.join("big.bin");
        std::fs::write(&src, vec![1u8; 600]).unwrap();
        let e = store
            .add(&src, Kind::Software, "app", "2", 500, 0)
            .unwrap_err();
        assert!(e.to_string().contains("ota.max_store_bytes"), "{e}");
        assert_eq!(std::fs::read_dir(d.join("ota")).unwrap().count(), 0);
        let e = store
            .add(&src, Kind::Software, "app", " ", 0, 0)
            .unwrap_err();
        assert!(e.to_string().contains("--version"), "{e}");
        // A temporary file from a crash goes at the next open.
        std::fs::write(d.join("ota/.tmp-1-2"), b"half").unwrap();
        ImageStore::open(&d.join("ota"), 1000).unwrap();
        assert_eq!(std::fs::read_dir(d.join("ota")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(d);
    }
}
