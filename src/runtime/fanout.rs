//! Fan-out of registry events and decoded reports to in-process
//! subscribers, through bounded channels that never stall the gateway.

use crate::server::{Report, ServerEvent};
use smol::channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;

/// Bounded subscriber lists, each with the count of what it lost.
#[derive(Default)]
pub struct Fanout {
    events: Vec<(Sender<ServerEvent>, u64)>,
    reports: Vec<(Sender<Arc<Report>>, u64)>,
}

impl Fanout {
    /// A new event stream of `capacity`.
    pub fn subscribe(&mut self, capacity: usize) -> Receiver<ServerEvent> {
        let (tx, rx) = smol::channel::bounded(capacity.max(1));
        self.events.push((tx, 0));
        rx
    }

    /// A new report stream of `capacity`.
    pub fn subscribe_reports(&mut self, capacity: usize) -> Receiver<Arc<Report>> {
        let (tx, rx) = smol::channel::bounded(capacity.max(1));
        self.reports.push((tx, 0));
        rx
    }

    /// Hands events to every event subscriber; a full one loses them.
    pub fn events(&mut self, events: Vec<ServerEvent>) {
        for ev in events {
            for (tx, dropped) in &mut self.events {
                if let Err(TrySendError::Full(_)) = tx.try_send(ev.clone()) {
                    *dropped += 1;
                    if dropped.is_power_of_two() {
                        log::warn!("event subscriber is behind: {dropped} events dropped so far");
                    }
                }
            }
        }
        self.events.retain(|(tx, _)| !tx.is_closed());
    }

    /// Hands a report to every report subscriber; a full one loses it.
    pub fn report(&mut self, report: &Arc<Report>) {
        for (tx, dropped) in &mut self.reports {
            if let Err(TrySendError::Full(_)) = tx.try_send(report.clone()) {
                *dropped += 1;
                if dropped.is_power_of_two() {
                    log::warn!("report subscriber is behind: {dropped} reports dropped so far");
                }
            }
        }
    }

    /// Forgets report subscribers that went away.
    pub fn prune_reports(&mut self) {
        self.reports.retain(|(tx, _)| !tx.is_closed());
    }
}
