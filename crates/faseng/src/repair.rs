//! No wedged line: a run at the head of its line that nobody is taking forward is queued
//! again. That is a run that never started and has sat at the head for longer than
//! [`RepairSettings::after`] (its job was lost: faseng died between accepting the webhook and
//! queueing the job), or a run whose worker's lease lapsed that long ago without anyone
//! taking it over (its job is gone too). The job queued again does the normal thing: the
//! first runs, the second is taken over and reported `error` (never re-run). A job queued
//! again while the original still sits in the queue is harmless: the start marker lets one
//! of them run and the other drops out. One process of a store repairs at a time (a duty
//! lease); if two did, the start marker would still let each run happen once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deploy_core::Clock;

use crate::job::DeployJob;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::Store;

/// The store duty lease of the process that repairs lines.
const DUTY: &str = "line-repair";

/// When a line head counts as wedged.
#[derive(Debug, Clone, Copy)]
pub struct RepairSettings {
    /// How long a head may go without a job or a live lease (`FASENG_REPAIR_AFTER`).
    pub after: Duration,
}

impl Default for RepairSettings {
    fn default() -> Self {
        Self {
            after: Duration::from_secs(120),
        }
    }
}

impl RepairSettings {
    /// How often lines are looked at: a quarter of the bound, between 1 s and 30 s.
    pub fn every(&self) -> Duration {
        (self.after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Runs whose job was queued again.
    pub requeued: Vec<String>,
    /// Finished or unknown runs removed from the head of their line.
    pub cleared: Vec<String>,
}

/// Looks after the lines of one store.
pub struct LineRepair {
    store: Arc<dyn Store>,
    queue: Queue,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    settings: RepairSettings,
    /// Unstarted heads, and since when this process has seen them at the head.
    seen: HashMap<String, (String, DateTime<Utc>)>,
}

impl std::fmt::Debug for LineRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineRepair")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LineRepair {
    /// Repairs the lines of `store`, queueing jobs on `queue`.
    pub fn new(
        store: Arc<dyn Store>,
        queue: Queue,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        settings: RepairSettings,
    ) -> Self {
        Self {
            store,
            queue,
            clock,
            metrics,
            settings,
            seen: HashMap::new(),
        }
    }

    /// Runs a pass every [`RepairSettings::every`] while this process holds the store's
    /// `line-repair` duty lease (one process of a store repairs at a time; the lease lapses
    /// when it stops), until `shutdown` resolves.
    pub async fn run(mut self, holder: &str, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let every = self.settings.every();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut holding = false;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            match self
                .store
                .acquire_duty(DUTY, holder, self.clock.now(), every * 3)
                .await
            {
                Ok(true) => {
                    if !holding {
                        tracing::info!("this process looks after the waiting lines now");
                        // What another process saw at the heads is not known here.
                        self.seen.clear();
                    }
                    holding = true;
                }
                Ok(false) => {
                    holding = false;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not take the line-repair lease");
                    continue;
                }
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %format!("{e:#}"), "could not look after the waiting lines");
            }
        }
        if holding && let Err(e) = self.store.release_duty(DUTY, holder).await {
            tracing::warn!(error = %format!("{e:#}"), "could not give up the line-repair lease; another process takes it when it lapses");
        }
    }

    /// Looks at every line's head once.
    pub async fn pass(&mut self) -> anyhow::Result<Pass> {
        let now = self.clock.now();
        let after = chrono::Duration::from_std(self.settings.after)
            .unwrap_or(chrono::Duration::seconds(120));
        let heads = self.store.line_heads().await?;
        self.seen
            .retain(|line, (head, _)| heads.iter().any(|(l, h)| l == line && h == head));
        let mut pass = Pass::default();
        for (line, head) in heads {
            let record = self.store.get_run(&head).await?;
            if record.as_ref().is_none_or(|r| r.state.is_final()) {
                // Its worker finished it but died before leaving the line (or it is gone).
                self.store.line_leave(&line, &head).await?;
                self.seen.remove(&line);
                pass.cleared.push(head);
                continue;
            }
            let wedged_since = match self.store.started(&head).await? {
                Some(stored) => stored.marker.lease_until.unwrap_or(stored.marker.at),
                None => {
                    let (_, since) = self
                        .seen
                        .entry(line.clone())
                        .or_insert_with(|| (head.clone(), now));
                    *since
                }
            };
            if now - wedged_since < after {
                continue;
            }
            match self.store.job(&head).await? {
                Some(json) => {
                    let job: DeployJob = serde_json::from_str(&json)?;
                    self.queue.push(job).await?;
                    tracing::warn!(
                        run = %head,
                        %line,
                        since = %wedged_since,
                        "the run at the head of its line had no job and no live worker; queued it again"
                    );
                    self.metrics.requeued_head();
                    // Give the new job the whole bound before looking again.
                    self.seen.insert(line, (head.clone(), now));
                    pass.requeued.push(head);
                }
                None => {
                    tracing::warn!(run = %head, %line, "the run at the head of its line has no job kept to queue again (accepted by an older faseng)");
                }
            }
        }
        Ok(pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{self, QueueTiming, QueueUrl};
    use crate::store::StartMarker;
    use deploy_core::ManualClock;

    async fn world(dir: &std::path::Path) -> (LineRepair, Arc<dyn Store>, ManualClock) {
        let (queue, store) =
            queue::open(&QueueUrl::Sqlite(dir.join("r.db")), QueueTiming::default())
                .await
                .unwrap();
        let clock = ManualClock::new(Utc::now());
        let repair = LineRepair::new(
            store.clone(),
            queue,
            Arc::new(clock.clone()),
            Arc::new(Metrics::default()),
            RepairSettings {
                after: Duration::from_secs(60),
            },
        );
        (repair, store, clock)
    }

    fn job(id: u64) -> DeployJob {
        DeployJob {
            deployment_id: id,
            ..DeployJob::sample(&format!("d-{id}"), "o/r", "r/edge")
        }
    }

    #[tokio::test]
    async fn a_head_that_never_started_is_queued_again_after_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (mut repair, store, clock) = world(dir.path()).await;
        let (first, second) = (job(1), job(2));
        store
            .accept_runs(&[first.accept_item(), second.accept_item()])
            .await
            .unwrap();
        assert_eq!(repair.pass().await.unwrap(), Pass::default());
        clock.advance(chrono::Duration::seconds(59));
        assert_eq!(repair.pass().await.unwrap(), Pass::default());
        clock.advance(chrono::Duration::seconds(1));
        let pass = repair.pass().await.unwrap();
        assert_eq!(pass.requeued, [first.key()], "only the head");
        assert_eq!(store.queue_depth().await.unwrap(), 1);
        assert_eq!(
            repair.pass().await.unwrap(),
            Pass::default(),
            "the new job gets the whole bound"
        );
    }

    #[tokio::test]
    async fn a_started_head_whose_lease_lapsed_long_ago_is_queued_again_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut repair, store, clock) = world(dir.path()).await;
        let j = job(1);
        store.accept_runs(&[j.accept_item()]).await.unwrap();
        let marker = StartMarker::sample("w", clock.now());
        store.mark_started(j.key().as_str(), &marker).await.unwrap();
        clock.advance(chrono::Duration::seconds(100));
        assert_eq!(
            repair.pass().await.unwrap(),
            Pass::default(),
            "the lease (60 s) lapsed only 40 s ago"
        );
        clock.advance(chrono::Duration::seconds(20));
        assert_eq!(repair.pass().await.unwrap().requeued, [j.key()]);
    }

    #[tokio::test]
    async fn a_finished_head_is_cleared_from_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let (mut repair, store, _clock) = world(dir.path()).await;
        let (first, second) = (job(1), job(2));
        store
            .accept_runs(&[first.accept_item(), second.accept_item()])
            .await
            .unwrap();
        let mut done = first.initial_record();
        done.state = crate::store::RunState::Success;
        store.put_run(&done).await.unwrap();
        let pass = repair.pass().await.unwrap();
        assert_eq!(pass.cleared, [first.key()]);
        assert_eq!(
            store.line(first.line.as_str()).await.unwrap(),
            [second.key()]
        );
    }
}
