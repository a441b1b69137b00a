//! The store-and-forward queue: uplink messages in sled, in order, bounded
//! in bytes with the oldest dropped first.

use crate::store::StoreError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const VALUE_V1: u8 = 1;

/// One stored uplink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Position in the queue.
    pub seq: u64,
    /// MQTT topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Counters of the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting (published or not, not yet acknowledged).
    pub messages: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// Messages appended since start.
    pub appended: u64,
    /// Messages acknowledged by the broker since start.
    pub acked: u64,
}

/// The uplink queue. Appends come from the gateway loop, reads and
/// removals from the MQTT thread.
pub struct UplinkQueue {
    tree: sled::Tree,
    max_bytes: u64,
    next_seq: AtomicU64,
    bytes: AtomicU64,
    messages: AtomicU64,
    dropped: AtomicU64,
    appended: AtomicU64,
    acked: AtomicU64,
    /// Every message up to this position is on disk.
    durable: AtomicU64,
    /// Serialises appends with the oldest-first trimming.
    trim: Mutex<()>,
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn encode(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 2 + topic.len() + payload.len());
    v.push(VALUE_V1);
    v.extend_from_slice(&(topic.len().min(u16::MAX as usize) as u16).to_be_bytes());
    v.extend_from_slice(&topic.as_bytes()[..topic.len().min(u16::MAX as usize)]);
    v.extend_from_slice(payload);
    v
}

fn decode(seq: u64, v: &[u8]) -> Option<Stored> {
    let (&VALUE_V1, rest) = v.split_first()? else {
        return None;
    };
    let n = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let topic = std::str::from_utf8(rest.get(2..2 + n)?).ok()?.to_string();
    Some(Stored {
        seq,
        topic,
        payload: rest[2 + n..].to_vec(),
    })
}

impl UplinkQueue {
    /// Opens the queue on `tree`, counting what a previous run left.
    pub fn open(tree: sled::Tree, max_bytes: u64) -> Result<UplinkQueue, StoreError> {
        let (mut bytes, mut messages, mut last) = (0u64, 0u64, 0u64);
        for item in tree.iter() {
            let (k, v) = item?;
            bytes += v.len() as u64;
            messages += 1;
            if let Ok(b) = <[u8; 8]>::try_from(&k[..]) {
                last = u64::from_be_bytes(b);
            }
        }
        Ok(UplinkQueue {
            tree,
            max_bytes: max_bytes.max(1024),
            next_seq: AtomicU64::new(last + 1),
            bytes: AtomicU64::new(bytes),
            messages: AtomicU64::new(messages),
            dropped: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            durable: AtomicU64::new(last),
            trim: Mutex::new(()),
        })
    }

    /// Appends a message (durable at the next flush); when the queue is
    /// over its size the oldest messages go, counted and logged.
    pub fn append(&self, topic: &str, payload: &[u8]) -> Result<u64, StoreError> {
        let _g = self.trim.lock().unwrap_or_else(|e| e.into_inner());
        let v = encode(topic, payload);
        let size = v.len() as u64;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.tree.insert(key(seq), v)?;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.appended.fetch_add(1, Ordering::Relaxed);
        while self.bytes.load(Ordering::Relaxed) > self.max_bytes {
            let Some((k, old)) = self.tree.pop_min()? else {
                break;
            };
            self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
            self.messages.fetch_sub(1, Ordering::Relaxed);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!(
                    "uplink queue over {} bytes: oldest message dropped ({n} so far; seq {})",
                    self.max_bytes,
                    <[u8; 8]>::try_from(&k[..]).map_or(0, u64::from_be_bytes)
                );
            }
        }
        Ok(seq)
    }

    /// Up to `max` messages after `after`, oldest first.
    pub fn after(&self, after: u64, max: usize) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::with_capacity(max.min(1024));
        for item in self.tree.range(key(after.saturating_add(1))..).take(max) {
            let (k, v) = item?;
            let seq = <[u8; 8]>::try_from(&k[..]).map_or(0, u64::from_be_bytes);
            match decode(seq, &v) {
                Some(s) => out.push(s),
                None => {
                    log::warn!("uplink message {seq} does not decode; dropped");
                    self.remove(seq)?;
                }
            }
        }
        Ok(out)
    }

    /// Removes an acknowledged message.
    pub fn remove(&self, seq: u64) -> Result<(), StoreError> {
        if let Some(old) = self.tree.remove(key(seq))? {
            self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
            self.messages.fetch_sub(1, Ordering::Relaxed);
            self.acked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Makes sure every message up to `seq` is on disk, flushing `store`
    /// only when one of them may not be yet (a replay after an outage
    /// reads messages that are).
    pub fn make_durable(&self, seq: u64, store: &crate::store::Store) -> Result<(), StoreError> {
        if seq <= self.durable.load(Ordering::Acquire) {
            return Ok(());
        }
        // Everything appended before the flush starts is covered by it.
        let upto = self.next_seq.load(Ordering::Acquire).saturating_sub(1);
        store.flush()?;
        self.durable.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            appended: self.appended.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str) -> (sled::Db, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("lwm2m-gw-uplink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (sled::Config::new().path(&dir).open().unwrap(), dir)
    }

    #[test]
    fn messages_come_back_in_order_and_survive_reopen() {
        let (db, dir) = tree("order");
        let q = UplinkQueue::open(db.open_tree("u").unwrap(), 1 << 20).unwrap();
        for i in 0..5u8 {
            q.append("t/x", &[i]).unwrap();
        }
        let all = q.after(0, 10).unwrap();
        assert_eq!(
            all.iter().map(|s| s.payload[0]).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        q.remove(all[0].seq).unwrap();
        assert_eq!(q.after(all[2].seq, 10).unwrap().len(), 2);
        drop(q);
        let q = UplinkQueue::open(db.open_tree("u").unwrap(), 1 << 20).unwrap();
        assert_eq!(q.stats().messages, 4);
        let seq = q.append("t/y", b"new").unwrap();
        assert!(
            seq > all[4].seq,
            "sequence numbers keep growing after reopen"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts() {
        let (db, dir) = tree("bound");
        let q = UplinkQueue::open(db.open_tree("u").unwrap(), 2048).unwrap();
        for i in 0..100u32 {
            q.append("t", &i.to_be_bytes().repeat(25)).unwrap();
        }
        let s = q.stats();
        assert!(s.bytes <= 2048, "{s:?}");
        assert_eq!(s.dropped + s.messages, 100);
        let first = q.after(0, 1).unwrap();
        assert_eq!(
            first[0].payload[..4],
            (s.dropped as u32).to_be_bytes(),
            "the oldest went first"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(dir);
    }
}
