//! Accepting a deployment: dedup by delivery id (and by deployment), a place in the
//! waiting line in arrival order, and the durable enqueue — all before the 202. If any
//! step fails, the earlier ones are undone and the caller answers 503 so GitHub redelivers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use chrono::Utc;
use deploy_core::{Apps, RunKey};
use tokio::sync::{mpsc, oneshot};

use crate::job::DeployJob;
use crate::queue::Queue;
use crate::store::{AcceptItem, Accepted, RunState, Store};
use deploy_core::event::DeploymentEvent;

/// A known deployment that has not started this long after arrival is enqueued again when
/// GitHub redelivers it.
pub const RECOVER_AFTER_SECS: i64 = 60;

/// The result of accepting a deployment webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Durably queued under this run key.
    Accepted {
        /// `owner/repo/id`.
        key: RunKey,
    },
    /// Seen before (same delivery, or same deployment): nothing done.
    Duplicate,
    /// Unusable (e.g. repository name): nothing done.
    Refused(String),
}

/// How many deliveries one store round trip and one queue push carry at most.
pub const MAX_BATCH: usize = 256;

/// Runs whose intake failed after the store may have recorded them (a failed job push whose
/// undo may have failed too, or a store call whose answer was lost): a redelivery of such a
/// run is enqueued again at once instead of being taken for a duplicate of an acknowledged
/// delivery.
type Unconfirmed = Arc<Mutex<HashSet<RunKey>>>;

/// One delivery waiting for the batcher.
struct Pending {
    delivery_id: String,
    job: DeployJob,
    reply: oneshot::Sender<anyhow::Result<IntakeOutcome>>,
}

/// Accepts deployments into the store and the queue.
///
/// Concurrent deliveries are batched: a single task takes every delivery that arrived
/// while it was busy with the previous batch, in arrival order, and accepts them with one
/// store round trip (dedup, record, line) and one queue push, so under load the Redis
/// round trips per delivery fall well below one, and with one delivery at a time nothing
/// waits. Each caller still gets its answer only after its job is durably queued.
pub struct Intake {
    store: Arc<dyn Store>,
    queue: Queue,
    apps: Arc<Apps>,
    batcher: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// An intake over a store and a queue, putting each deployment in the line of the
    /// operator's app it resolves to (the batcher task starts on first use, on the caller's
    /// tokio runtime, and ends when the intake is dropped).
    pub fn new(store: Arc<dyn Store>, queue: Queue, apps: Arc<Apps>) -> Self {
        Self {
            store,
            queue,
            apps,
            batcher: OnceLock::new(),
        }
    }

    /// Accepts one deployment webhook. `Err` means the queue or store is unreachable and
    /// nothing is left half-done.
    pub async fn accept(
        &self,
        delivery_id: &str,
        ev: &DeploymentEvent,
    ) -> anyhow::Result<IntakeOutcome> {
        let job = match DeployJob::from_event(delivery_id, ev, &self.apps) {
            Ok(j) => j,
            Err(why) => {
                return Ok(IntakeOutcome::Refused(
                    crate::messages::unusable_repository(&why),
                ));
            }
        };
        let batcher = self.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_batcher(
                self.store.clone(),
                self.queue.clone(),
                Unconfirmed::default(),
                rx,
            ));
            tx
        });
        let (reply, answer) = oneshot::channel();
        batcher
            .send(Pending {
                delivery_id: delivery_id.to_owned(),
                job,
                reply,
            })
            .map_err(|_| anyhow::anyhow!("the intake batcher has stopped"))?;
        answer
            .await
            .context("the intake batcher dropped a delivery")?
    }
}

async fn run_batcher(
    store: Arc<dyn Store>,
    queue: Queue,
    unconfirmed: Unconfirmed,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        accept_batch(&*store, &queue, &unconfirmed, std::mem::take(&mut batch)).await;
    }
}

/// What happens to one delivery of a batch once the store has answered.
enum Plan {
    /// Push the job; `created` = its record and line place are new (undo them on failure).
    Push { created: bool, fresh_delivery: bool },
    /// Answer with this now.
    Done(anyhow::Result<IntakeOutcome>),
}

async fn accept_batch(
    store: &dyn Store,
    queue: &Queue,
    unconfirmed: &Mutex<HashSet<RunKey>>,
    batch: Vec<Pending>,
) {
    let items: Vec<AcceptItem> = batch.iter().map(|p| p.job.accept_item()).collect();
    let accepted = match store.accept_runs(&items).await {
        Ok(a) => a,
        Err(e) => {
            // The store may have done it all and lost only its answer (Redis killed
            // mid-reply): a redelivery will find the delivery seen and the run queued, and
            // must enqueue it rather than take it for an acknowledged duplicate.
            let why = format!("{e:#}");
            unconfirmed
                .lock()
                .unwrap()
                .extend(batch.iter().map(|p| p.job.key()));
            for p in batch {
                let _ = p.reply.send(Err(anyhow::anyhow!("{why}")));
            }
            return;
        }
    };
    crate::crash_point!("intake-after-accept");
    let mut plans = Vec::with_capacity(batch.len());
    for (p, a) in batch.iter().zip(accepted) {
        plans.push(plan(store, unconfirmed, p, a).await);
    }
    let to_push: Vec<DeployJob> = batch
        .iter()
        .zip(&plans)
        .filter(|(_, plan)| matches!(plan, Plan::Push { .. }))
        .map(|(p, _)| p.job.clone())
        .collect();
    let pushed = if to_push.is_empty() {
        Ok(())
    } else {
        queue.push_all(to_push).await
    };
    if pushed.is_ok() {
        crate::crash_point!("intake-after-push");
    }
    let failure = pushed.as_ref().err().map(|e| format!("{e:#}"));
    for (p, plan) in batch.into_iter().zip(plans) {
        let answer = match plan {
            Plan::Done(answer) => answer,
            Plan::Push { created, .. } if failure.is_some() => {
                let key = p.job.key();
                // Until a push of this run succeeds, a redelivery must enqueue it again
                // even if the undo below fails and leaves the delivery marked as seen.
                unconfirmed.lock().unwrap().insert(key.clone());
                if created {
                    let _ = store.line_leave(p.job.line.as_str(), key.as_str()).await;
                    let _ = store.delete_run(key.as_str()).await;
                }
                let _ = store.release_delivery(&p.delivery_id).await;
                Err(anyhow::anyhow!(
                    "{}",
                    failure.as_deref().unwrap_or_default()
                ))
            }
            Plan::Push { fresh_delivery, .. } => {
                let key = p.job.key();
                unconfirmed.lock().unwrap().remove(&key);
                if !fresh_delivery {
                    tracing::warn!(%key, delivery_id = %p.delivery_id, "a delivery seen before has no run: an earlier intake died; accepting it now");
                }
                tracing::info!(%key, line = %p.job.line, delivery_id = %p.delivery_id, "deployment queued");
                Ok(IntakeOutcome::Accepted { key })
            }
        };
        let _ = p.reply.send(answer);
    }
}

/// Decides what to do with one delivery after the store accepted (or knew) it.
async fn plan(
    store: &dyn Store,
    unconfirmed: &Mutex<HashSet<RunKey>>,
    p: &Pending,
    a: Accepted,
) -> Plan {
    if a.created {
        return Plan::Push {
            created: true,
            fresh_delivery: a.fresh_delivery,
        };
    }
    // Known deployment. Enqueue again when its last push failed in this process, or when
    // it has sat unstarted for a while (an earlier intake may have died between recording
    // and enqueueing); a second job for one run is harmless: the start marker lets exactly
    // one of them run.
    let key = p.job.key();
    let push_failed = unconfirmed.lock().unwrap().contains(&key);
    let existing = match store.get_run(key.as_str()).await {
        Ok(r) => r,
        Err(e) => return Plan::Done(Err(e)),
    };
    let stale = existing.is_some_and(|r| {
        r.state == RunState::Queued
            && (push_failed
                || Utc::now() - r.received_at > chrono::Duration::seconds(RECOVER_AFTER_SECS))
    });
    if !stale {
        return Plan::Done(Ok(IntakeOutcome::Duplicate));
    }
    tracing::warn!(%key, delivery_id = %p.delivery_id, "re-enqueueing a deployment that never started");
    if let Err(e) = store.line_join(p.job.line.as_str(), key.as_str()).await {
        let _ = store.release_delivery(&p.delivery_id).await;
        return Plan::Done(Err(e));
    }
    Plan::Push {
        created: false,
        fresh_delivery: a.fresh_delivery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{self, QueueTiming, QueueUrl};
    use crate::store::SqliteStore;
    use crate::store::flaky::{FailOnce, FlakyStore};
    use crate::store::prelude::*;

    /// The store recorded the delivery and the run but its answer was lost, so the delivery
    /// was answered 503: GitHub's redelivery must be queued, not called a duplicate.
    #[tokio::test]
    async fn a_redelivery_after_a_lost_store_answer_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.db");
        let (queue, plain) = queue::open(&QueueUrl::Sqlite(path.clone()), QueueTiming::default())
            .await
            .unwrap();
        let store = FlakyStore::new(
            SqliteStore::open(&path, crate::job::QUEUE_NAME)
                .await
                .unwrap(),
            FailOnce::AcceptRunsAnswer,
        );
        let unconfirmed = Mutex::new(HashSet::new());
        let send = |delivery_id: &str| {
            let (reply, answer) = oneshot::channel();
            let p = Pending {
                reply,
                ..pending(delivery_id)
            };
            (vec![p], answer)
        };

        let (batch, answer) = send("d-1");
        accept_batch(&store, &queue, &unconfirmed, batch).await;
        assert!(
            answer.await.unwrap().is_err(),
            "the first delivery gets a 503"
        );
        assert_eq!(plain.queue_depth().await.unwrap(), 0);

        let (batch, answer) = send("d-1");
        accept_batch(&store, &queue, &unconfirmed, batch).await;
        assert_eq!(
            answer.await.unwrap().unwrap(),
            IntakeOutcome::Accepted {
                key: RunKey::new(&deploy_core::RepoName::parse("oursky/trelhub").unwrap(), 7)
            }
        );
        assert_eq!(plain.queue_depth().await.unwrap(), 1, "the job is queued");
    }

    fn pending(delivery_id: &str) -> Pending {
        let job = DeployJob::sample(delivery_id, "oursky/trelhub", "trelhub/edge");
        Pending {
            delivery_id: delivery_id.into(),
            job,
            reply: oneshot::channel().0,
        }
    }

    /// The store still holds the delivery and the run of an intake whose push and undo both
    /// failed: a redelivery is a duplicate only if the push is not known to have failed.
    #[tokio::test]
    async fn a_redelivery_after_a_failed_push_is_enqueued_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("i.db"), "q")
            .await
            .unwrap();
        let first = pending("d-1");
        let item = first.job.accept_item();
        assert!(
            store
                .accept_runs(std::slice::from_ref(&item))
                .await
                .unwrap()[0]
                .created
        );
        let again = store.accept_runs(&[item]).await.unwrap().remove(0);
        assert!(!again.fresh_delivery && !again.created);

        let unconfirmed = Mutex::new(HashSet::new());
        let known = plan(&store, &unconfirmed, &first, again).await;
        assert!(
            matches!(known, Plan::Done(Ok(IntakeOutcome::Duplicate))),
            "an acknowledged delivery sent again is a duplicate"
        );
        unconfirmed.lock().unwrap().insert(first.job.key());
        let known = plan(&store, &unconfirmed, &first, again).await;
        assert!(
            matches!(known, Plan::Push { created: false, .. }),
            "a delivery whose push failed is pushed again"
        );
    }
}
