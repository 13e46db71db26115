//! The runs going on in this process: what keeps a run alive past its queue handler, lets a
//! job the queue hands out again drop out or wait, and lets a stop wait for the runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Deployer;
use super::line::WaitingGuard;

/// The runs going on in this process, shared by every deployer the process builds (a worker
/// restarted after a backend error gets a new deployer, but its predecessor's runs go on).
///
/// A run is executed on its own task, so it outlives the queue's handler future: apalis drops
/// the in-flight handler futures when it restarts a worker after a backend error (a Redis
/// restart, a busy SQLite), and a dropped run would be left with no final status. Graceful
/// shutdown waits for the live runs to finish.
///
/// A job for a run that is live here (the queue handing it out again, e.g. recovered from the
/// restarted worker's in-flight list) drops out at once only when that run has started: a
/// started run always ends with a final status. Before its start the live attempt may still
/// fail (the store is down) with no handler left to try again, so the repeated job waits for
/// the attempt to end and then takes over.
#[derive(Debug, Default)]
pub struct LiveRuns {
    runs: Mutex<HashMap<String, LivePhase>>,
    changed: tokio::sync::Notify,
}

/// How far a live run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LivePhase {
    /// Claimed; its start marker is not written yet (it may still end with an error).
    Starting,
    /// Its start marker is written: it will end with a final status.
    Started,
}

impl LiveRuns {
    /// Marks `key` live; the phase of the run already live under it otherwise.
    fn claim(&self, key: &str) -> Option<LivePhase> {
        let mut runs = self.lock();
        if let Some(phase) = runs.get(key) {
            return Some(*phase);
        }
        runs.insert(key.to_owned(), LivePhase::Starting);
        None
    }

    pub(super) fn mark_started(&self, key: &str) {
        if let Some(phase) = self.lock().get_mut(key) {
            *phase = LivePhase::Started;
        }
        self.changed.notify_waiters();
    }

    fn release(&self, key: &str) {
        self.lock().remove(key);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LivePhase>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many runs are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no run is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until no run is live.
    pub async fn wait_idle(&self) {
        loop {
            let changed = self.changed.notified();
            if self.is_empty() {
                return;
            }
            changed.await;
        }
    }
}

/// Releases a live run when its task ends, however it ends.
pub(super) struct LiveGuard {
    live: Arc<LiveRuns>,
    key: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.release(&self.key);
    }
}

impl Deployer {
    /// Marks the run `key` live in this process for as long as the returned guard lives;
    /// `None` when the job is to drop out because the run is going on here and has started.
    /// While a live attempt has not started, waits for it to start or end.
    pub(super) async fn claim_live(&self, key: String, span: &tracing::Span) -> Option<LiveGuard> {
        let mut waited = false;
        loop {
            let changed = self.live.changed.notified();
            match self.live.claim(&key) {
                None => break,
                Some(LivePhase::Started) => {
                    span.in_scope(|| {
                        tracing::info!(
                            "the run is going on in this process; dropping the repeated job"
                        );
                    });
                    self.metrics.duplicate_job();
                    return None;
                }
                Some(LivePhase::Starting) => {
                    if !waited {
                        span.in_scope(|| {
                            tracing::info!("the run is about to start in this process; waiting to see whether it does");
                        });
                        waited = true;
                    }
                    // This slot waits too (on a run that may be waiting for its line).
                    let _waiting = WaitingGuard::new(&self.waiting);
                    changed.await;
                }
            }
        }
        Some(LiveGuard {
            live: self.live.clone(),
            key,
        })
    }
}
