//! The server's state to and from the store: restored once at start,
//! written back each turn of the loop before any answer leaves.

use crate::lwm2m::ModelLibrary;
use crate::server::{Persist, Server, ServerEvent};
use crate::store::{Store, StoreError};
use std::collections::BTreeSet;
use std::time::Instant;

/// What a start found in the store.
#[derive(Debug, Default)]
pub struct Restored {
    /// Registrations taken back.
    pub kept: usize,
    /// Registrations whose lifetime ran out while the gateway was stopped.
    pub dropped: usize,
    /// Observations taken back.
    pub observed: usize,
    /// Requests held for sleeping devices, taken back.
    pub held: usize,
    /// Observations and held requests of registrations that are gone.
    pub stale: usize,
    /// Device credentials.
    pub provisioned: usize,
}

/// Loads profiles, credentials, registrations, observations and held
/// requests from the store into the server; what no longer fits is
/// deleted (and flushed) so the next start does not meet it again.
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
    for reg in store.registrations()? {
        let ep = reg.endpoint.clone();
        if server.restore(now, unix_ms, reg) {
            r.kept += 1;
        } else {
            r.dropped += 1;
            store.remove_registration(&ep)?;
        }
    }
    for rec in store.observations()? {
        if server.restore_observation(&rec) {
            r.observed += 1;
        } else {
            r.stale += 1;
            store.remove_observation(&rec.endpoint, &rec.token)?;
        }
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
