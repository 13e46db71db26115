//! Accepting a deployment: dedup by delivery id (and by deployment), a place in the
//! waiting line in arrival order, and the durable enqueue — all before the 202. If any
//! step fails, the earlier ones are undone and the caller answers 503 so GitHub redelivers.

use std::sync::Arc;

use crate::job::DeployJob;
use crate::queue::Queue;
use chrono::Utc;

use crate::store::{Accepted, RunState, Store};
use crate::webhook::DeploymentEvent;

/// A known deployment that has not started this long after arrival is enqueued again when
/// GitHub redelivers it.
pub const RECOVER_AFTER_SECS: i64 = 60;

/// The result of accepting a deployment webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Durably queued under this run key.
    Accepted {
        /// `owner/repo/id`.
        key: String,
    },
    /// Seen before (same delivery, or same deployment): nothing done.
    Duplicate,
    /// Unusable (e.g. repository name): nothing done.
    Refused(String),
}

/// Accepts deployments into the store and the queue.
pub struct Intake {
    store: Arc<dyn Store>,
    queue: Queue,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// An intake over a store and a queue.
    pub fn new(store: Arc<dyn Store>, queue: Queue) -> Self {
        Self { store, queue }
    }

    /// Accepts one deployment webhook. `Err` means the queue or store is unreachable and
    /// nothing is left half-done.
    pub async fn accept(
        &self,
        delivery_id: &str,
        ev: &DeploymentEvent,
    ) -> anyhow::Result<IntakeOutcome> {
        let job = match DeployJob::from_event(delivery_id, ev) {
            Ok(j) => j,
            Err(why) => {
                return Ok(IntakeOutcome::Refused(format!(
                    "unusable repository: {why}"
                )));
            }
        };
        let key = job.key();
        let Accepted {
            fresh_delivery,
            created,
        } = self
            .store
            .accept_run(delivery_id, &job.initial_record(), &job.line)
            .await?;
        if !created {
            // Known deployment. Enqueue again only when it has sat unstarted for a while (an
            // earlier intake may have died between recording and enqueueing); a second job
            // for one run is harmless: the start marker lets exactly one of them run.
            let existing = self.store.get_run(&key).await?;
            let stale = existing.is_some_and(|r| {
                r.state == RunState::Queued
                    && Utc::now() - r.received_at > chrono::Duration::seconds(RECOVER_AFTER_SECS)
            });
            if !stale {
                return Ok(IntakeOutcome::Duplicate);
            }
            tracing::warn!(%key, %delivery_id, "re-enqueueing a deployment that never started");
        } else if !fresh_delivery {
            tracing::warn!(%key, %delivery_id, "a delivery seen before has no run: an earlier intake died; accepting it now");
        }
        let enqueued = async {
            if !created {
                self.store.line_join(&job.line, &key).await?;
            }
            self.queue.push(job.clone()).await
        }
        .await;
        if let Err(e) = enqueued {
            if created {
                let _ = self.store.line_leave(&job.line, &key).await;
                let _ = self.store.delete_run(&key).await;
            }
            let _ = self.store.release_delivery(delivery_id).await;
            return Err(e);
        }
        tracing::info!(%key, line = %job.line, %delivery_id, "deployment queued");
        Ok(IntakeOutcome::Accepted { key })
    }
}
