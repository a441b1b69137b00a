//! The server's state to and from the store: restored once at start,
//! written back each turn of the loop before any answer leaves.

use crate::lwm2m::ModelLibrary;
use crate::server::{Persist, Server, ServerEvent};
use crate::store::{ObservationRecords, Store, StoreError};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// What a start found in the store.
#[derive(Debug, Default)]
pub struct Restored {
    /// Registrations taken back.
    pub kept: usize,
    /// Registrations whose lifetime ran out while the gateway was stopped.
    pub dropped: usize,
    /// Requests held for sleeping devices, taken back.
    pub held: usize,
    /// Held requests of registrations that are gone.
    pub stale: usize,
    /// Device credentials.
    pub provisioned: usize,
}

/// Loads profiles, credentials, registrations and held requests from the
/// store into the server; what no longer fits is deleted (and flushed) so
/// the next start does not meet it again. Observations come back later,
/// in steps from the loop ([`ObservationRestore`]), so that a gateway with
/// hundreds of thousands of them answers within a second of its start.
pub fn restore(
    server: &mut Server,
    store: &Store,
    now: Instant,
    unix_ms: u64,
) -> Result<Restored, StoreError> {
    let mut r = Restored::default();
    for p in store.profiles()? {
        let name = p.name.clone();
        if let Err(e) = server.set_profile(p) {
            log::error!("stored profile {name:?} no longer fits the models: {e}");
        }
    }
    let credentials = store.credentials()?;
    r.provisioned = credentials.len();
    for c in credentials {
        server.restore_credential(c);
    }
    // Streamed: each registration is decoded and handed over in turn.
    let mut expired = Vec::new();
    for reg in store.registration_records() {
        let reg = reg?;
        let ep = reg.endpoint.clone();
        if server.restore(now, unix_ms, reg) {
            r.kept += 1;
        } else {
            expired.push(ep);
        }
    }
    r.dropped = expired.len();
    for ep in expired {
        store.remove_registration(&ep)?;
    }
    for rec in store.queued()? {
        if server.registry().get(&rec.endpoint).is_some() && server.restore_queued(now, &rec) {
            r.held += 1;
        } else {
            log::info!(
                "ep={} queued {} #{} dropped: the device is no longer registered",
                rec.endpoint,
                rec.method,
                rec.seq
            );
            store.remove_queued(&rec.endpoint, rec.seq)?;
            r.stale += 1;
        }
    }
    if r.dropped + r.stale > 0 {
        store.flush()?;
    }
    Ok(r)
}

/// Observations to take back from the store, a step at a time, between
/// the loop's turns; meanwhile the server holds notifications it cannot
/// place yet instead of resetting them.
pub struct ObservationRestore {
    records: ObservationRecords,
    started: Instant,
    /// Observations taken back so far.
    pub observed: usize,
    /// Observations of registrations that are gone, deleted from the store.
    pub stale: usize,
}

/// Time spent taking observations back per turn of the loop: short, so
/// that a turn's batch of datagrams is read faster than a busy site's
/// devices fill the socket buffer.
pub const RESTORE_STEP: Duration = Duration::from_millis(2);

impl ObservationRestore {
    /// Starts taking back the stored observations.
    pub fn start(server: &mut Server, store: &Store, now: Instant) -> ObservationRestore {
        server.begin_restore();
        ObservationRestore {
            records: store.observation_records(),
            started: now,
            observed: 0,
            stale: 0,
        }
    }

    /// Takes back observations for about `budget`; true once every one has
    /// been read, when the server has been told and the deletions flushed.
    pub fn step(
        &mut self,
        server: &mut Server,
        store: &Store,
        now: Instant,
        budget: Duration,
    ) -> bool {
        let end = Instant::now() + budget;
        for n in 0.. {
            // The clock is read every 64 records: about 0.2 ms of work.
            if n % 64 == 63 && Instant::now() >= end {
                break;
            }
            let rec = match self.records.next() {
                Some(Ok(rec)) => rec,
                Some(Err(e)) => {
                    log::error!("stored observations could not be read further: {e}");
                    return self.finish(server, store, now);
                }
                None => return self.finish(server, store, now),
            };
            if server.restore_observation(&rec) {
                self.observed += 1;
            } else {
                self.stale += 1;
                if let Err(e) = store.remove_observation(&rec.endpoint, &rec.token) {
                    log::error!("ep={} stale observation not deleted: {e}", rec.endpoint);
                }
            }
        }
        false
    }

    fn finish(&mut self, server: &mut Server, store: &Store, now: Instant) -> bool {
        self.records = Box::new(std::iter::empty());
        server.end_restore(now);
        if self.stale > 0 {
            if let Err(e) = store.flush() {
                log::error!("store flush failed: {e}");
            }
        }
        log::info!(
            "{} observations restored in {} ms ({} of gone registrations deleted)",
            self.observed,
            now.duration_since(self.started).as_millis(),
            self.stale
        );
        true
    }
}

/// Writes the registry changes and the observation and queue records the
/// server produced this turn; gives back the events, and whether anything
/// was written (and so must be flushed before answers go out).
pub fn write(
    server: &mut Server,
    store: &Store,
    models: &ModelLibrary,
) -> (Vec<ServerEvent>, bool) {
    let mut events = Vec::new();
    while let Some(ev) = server.poll_event() {
        let result = match &ev {
            ServerEvent::Registered { reg, .. } | ServerEvent::Updated(reg) => {
                store.put_registration(reg)
            }
            ServerEvent::Deregistered(reg) | ServerEvent::Expired(reg) => {
                store.remove_registration(&reg.endpoint)
            }
        };
        if let Err(e) = result {
            log::error!(
                "ep={} could not store registration change: {e}",
                ev.registration().endpoint
            );
        }
        if let ServerEvent::Registered { reg, .. } = &ev {
            let unknown: BTreeSet<u16> = reg
                .objects
                .iter()
                .map(|o| o.object)
                .filter(|id| models.get(*id, None).is_none())
                .collect();
            if !unknown.is_empty() {
                let unknown: Vec<u16> = unknown.into_iter().collect();
                log::info!(
                    "ep={} announces objects with no model in the library: {unknown:?}",
                    reg.endpoint
                );
            }
        }
        events.push(ev);
    }
    let mut persisted = 0;
    while let Some(p) = server.poll_persist() {
        persisted += 1;
        let result = match &p {
            Persist::Observation(o) => store.put_observation(o),
            Persist::ObservationGone { endpoint, token } => {
                store.remove_observation(endpoint, token.as_bytes())
            }
            Persist::ObservationsGone(endpoint) => store.remove_observations(endpoint),
            Persist::Queued(q) => store.put_queued(q),
            Persist::QueuedGone { endpoint, seq } => store.remove_queued(endpoint, *seq),
        };
        if let Err(e) = result {
            log::error!("could not store {p:?}: {e}");
        }
    }
    let written = !events.is_empty() || persisted > 0;
    (events, written)
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
