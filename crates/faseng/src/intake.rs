//! Accepting a deployment: who deploys it (its desk ticket, else its GitHub creator: see
//! [`crate::desk`]), dedup by delivery id (and by deployment), a place in the waiting line in
//! arrival order, and the durable enqueue — all before the 202. If any step fails, the
//! earlier ones are undone (a redeemed ticket is given back) and the caller answers 503 so
//! GitHub redelivers. A deployment made outside chat is written to the desk's audit.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use chrono::Utc;
use deploy_core::{Apps, Clock, RunKey};
use tokio::sync::{mpsc, oneshot};

use crate::job::DeployJob;
use crate::queue::Queue;
use crate::store::{AcceptItem, Accepted, AuditAction, AuditEntry, DeskTicket, RunState, Store};
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
    /// The desk ticket redeemed for it: given back when the delivery is answered with an
    /// error, so GitHub's redelivery finds it.
    ticket: Option<DeskTicket>,
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
    clock: Arc<dyn Clock>,
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
            clock: deploy_core::clock::system(),
            batcher: OnceLock::new(),
        }
    }

    /// Tells time (tickets' expiry, the audit) by `clock` instead of the system's.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Accepts one deployment webhook. `Err` means the queue or store is unreachable and
    /// nothing is left half-done.
    pub async fn accept(
        &self,
        delivery_id: &str,
        ev: &DeploymentEvent,
    ) -> anyhow::Result<IntakeOutcome> {
        let mut job = match DeployJob::from_event(delivery_id, ev, &self.apps) {
            Ok(j) => j,
            Err(why) => {
                return Ok(IntakeOutcome::Refused(
                    crate::messages::unusable_repository(&why),
                ));
            }
        };
        let ticket =
            crate::desk::decide_identity(&*self.store, &self.apps, &mut job, self.clock.now())
                .await
                .context("redeeming the deployment's desk ticket")?;
        let batcher = self.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_batcher(
                self.store.clone(),
                self.queue.clone(),
                self.clock.clone(),
                Unconfirmed::default(),
                rx,
            ));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            delivery_id: delivery_id.to_owned(),
            job,
            ticket,
            reply,
        };
        if let Err(mpsc::error::SendError(p)) = batcher.send(pending) {
            give_back(&*self.store, &p).await;
            anyhow::bail!("the intake batcher has stopped");
        }
        answer
            .await
            .context("the intake batcher dropped a delivery")?
    }
}

async fn run_batcher(
    store: Arc<dyn Store>,
    queue: Queue,
    clock: Arc<dyn Clock>,
    unconfirmed: Unconfirmed,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let made_outside_chat =
            accept_batch(&*store, &queue, &unconfirmed, std::mem::take(&mut batch)).await;
        audit_deploys(&*store, clock.now(), &made_outside_chat).await;
    }
}

/// Gives a redeemed desk ticket back (the delivery it was redeemed for was answered with an
/// error; its redelivery redeems it again).
async fn give_back(store: &dyn Store, p: &Pending) {
    let Some(ticket) = &p.ticket else { return };
    if let Err(e) = store.issue_ticket(ticket).await {
        tracing::warn!(key = %p.job.key(), ticket = %crate::desk::ticket_hint(&ticket.id), error = %format!("{e:#}"), "could not give the desk ticket back: a redelivery is attributed to the deployment's GitHub creator");
    }
}

/// Appends `deploy` to the desk's audit for each newly accepted deployment made outside
/// chat (chima audits its own, the ones with a ticket). A store failure is logged: the
/// deployment is queued either way.
async fn audit_deploys(store: &dyn Store, now: chrono::DateTime<Utc>, jobs: &[DeployJob]) {
    let entries: Vec<AuditEntry> = jobs
        .iter()
        .map(|job| {
            let who = job.identity();
            AuditEntry {
                at: now,
                actor: who.user,
                actor_name: who.user_name,
                action: AuditAction::Deploy,
                app: job.app().to_owned(),
                environment: Some(crate::desk::environment_name(&job.environment)),
                git_ref: Some(job.git_ref.clone()),
                sha: Some(job.sha.clone()),
                room: None,
                adapter: Some(crate::desk::OUTSIDE_CHAT.to_owned()),
                detail: crate::messages::audit_deploy(job.deployment_id, &job.task.to_string()),
            }
        })
        .collect();
    let appends = entries.iter().map(|e| store.audit_append(e));
    for (result, job) in futures::future::join_all(appends).await.iter().zip(jobs) {
        if let Err(e) = result {
            tracing::warn!(key = %job.key(), error = %format!("{e:#}"), "could not write the deployment to the audit");
        }
    }
}

/// What happens to one delivery of a batch once the store has answered.
enum Plan {
    /// Push the job; `created` = its record and line place are new (undo them on failure).
    /// `kept`: the job the store kept for a known run (its identity was decided when it
    /// was first accepted), pushed instead of the one built for this delivery.
    Push {
        created: bool,
        fresh_delivery: bool,
        kept: Option<Box<DeployJob>>,
    },
    /// Answer with this now.
    Done(anyhow::Result<IntakeOutcome>),
}

/// Accepts a batch and answers each delivery; returns the jobs newly accepted that were made
/// outside chat (to audit).
async fn accept_batch(
    store: &dyn Store,
    queue: &Queue,
    unconfirmed: &Mutex<HashSet<RunKey>>,
    batch: Vec<Pending>,
) -> Vec<DeployJob> {
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
                give_back(store, &p).await;
                let _ = p.reply.send(Err(anyhow::anyhow!("{why}")));
            }
            return Vec::new();
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
        .filter_map(|(p, plan)| match plan {
            Plan::Push { kept, .. } => Some(kept.as_deref().unwrap_or(&p.job).clone()),
            Plan::Done(_) => None,
        })
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
    let mut made_outside_chat = Vec::new();
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
            Plan::Push {
                fresh_delivery,
                created,
                ..
            } => {
                let key = p.job.key();
                unconfirmed.lock().unwrap().remove(&key);
                if created && !p.job.app().is_empty() && !p.job.identity().ticketed {
                    made_outside_chat.push(p.job.clone());
                }
                if !fresh_delivery {
                    tracing::warn!(%key, delivery_id = %p.delivery_id, "a delivery seen before has no run: an earlier intake died; accepting it now");
                }
                tracing::info!(%key, line = %p.job.line, delivery_id = %p.delivery_id, "deployment queued");
                Ok(IntakeOutcome::Accepted { key })
            }
        };
        if answer.is_err() {
            give_back(store, &p).await;
        }
        let _ = p.reply.send(answer);
    }
    made_outside_chat
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
            kept: None,
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
    // The job kept when the run was first accepted carries the identity decided then (its
    // desk ticket is used up by now).
    let kept = match store.job(key.as_str()).await {
        Ok(Some(json)) => serde_json::from_str::<DeployJob>(&json).ok().map(Box::new),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(%key, error = %format!("{e:#}"), "could not read the job kept for the run; queueing this delivery's");
            None
        }
    };
    Plan::Push {
        created: false,
        fresh_delivery: a.fresh_delivery,
        kept,
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
            ticket: None,
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

    fn alices_ticket(job: &DeployJob) -> DeskTicket {
        let now = Utc::now();
        DeskTicket {
            id: "t-alice".into(),
            app: "trelhub".into(),
            environment: "edge".into(),
            sha: job.sha.clone(),
            user: "U0ALICE".into(),
            user_name: "alice".into(),
            allowed_by: Vec::new(),
            at: now,
            expires_at: now + chrono::Duration::hours(1),
        }
    }

    /// A delivery answered 503 gives its redeemed desk ticket back, so GitHub's redelivery
    /// is attributed to the same person.
    #[tokio::test]
    async fn a_failed_delivery_gives_its_desk_ticket_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.db");
        let (queue, _) = queue::open(&QueueUrl::Sqlite(path.clone()), QueueTiming::default())
            .await
            .unwrap();
        let store = FlakyStore::new(
            SqliteStore::open(&path, crate::job::QUEUE_NAME)
                .await
                .unwrap(),
            FailOnce::AcceptRunsAnswer,
        );
        let mut p = pending("d-1");
        let ticket = alices_ticket(&p.job);
        store.issue_ticket(&ticket).await.unwrap();
        let redeemed = store
            .redeem_ticket("t-alice", "trelhub", "edge", &p.job.sha, Utc::now())
            .await
            .unwrap();
        p.ticket = redeemed;
        let (reply, answer) = oneshot::channel();
        p.reply = reply;
        let unconfirmed = Mutex::new(HashSet::new());
        accept_batch(&store, &queue, &unconfirmed, vec![p]).await;
        assert!(answer.await.unwrap().is_err());
        assert_eq!(
            store
                .redeem_ticket("t-alice", "trelhub", "edge", &ticket.sha, Utc::now())
                .await
                .unwrap(),
            Some(ticket),
            "the ticket is back"
        );
    }

    /// A run accepted before but never queued is queued again with the job kept when it
    /// was first accepted: who deploys it was decided then (its ticket is used up now).
    #[tokio::test]
    async fn a_run_queued_again_keeps_the_deployer_decided_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("i.db"), "q")
            .await
            .unwrap();
        let mut first = pending("d-1");
        first.job.identity = Some(crate::desk::Identity::from_ticket(&alices_ticket(
            &first.job,
        )));
        store.accept_runs(&[first.job.accept_item()]).await.unwrap();
        let mut redelivered = pending("d-2");
        redelivered.job.identity = Some(crate::desk::Identity::creator("chima-bot"));
        let again = store
            .accept_runs(&[redelivered.job.accept_item()])
            .await
            .unwrap()
            .remove(0);
        let unconfirmed = Mutex::new(HashSet::from([first.job.key()]));
        match plan(&store, &unconfirmed, &redelivered, again).await {
            Plan::Push {
                kept: Some(job), ..
            } => assert_eq!(job.identity().user, "U0ALICE"),
            _ => panic!("the kept job is not queued again"),
        }
    }
}
