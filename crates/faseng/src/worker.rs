//! The worker: the apalis runtime that hands queued jobs to a [`Deployer`], from start to
//! shutdown. It owns the job handler (and its retries while a run has not started), the poll
//! strategy, the restart loop (a worker that stops on its own is started again under a new
//! name) and the graceful stop: no new jobs, the apalis worker dropped, the runs still going
//! on in this process waited for.
//!
//! apalis traps handled here: the handler never returns a retryable error once a run may have
//! started (Redis ignores `max_attempts`; the queue pushes every job with `max_attempts(1)`);
//! each process and each restart gets a unique worker name; the worker polls on a short
//! interval with a timer that is always armed (apalis' `poll_with_interval` can leave none
//! after an empty fetch); apalis's `shutdown_timeout` is not used (its timer starts when the
//! monitor is built).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::*;
use tokio::sync::watch;

use crate::deployer::{Deployer, LiveRuns};
use crate::job::DeployJob;
use crate::queue::{Queue, QueueTiming};

/// How long a stopping worker lets the queue library wind down on its own before dropping it.
///
/// While it drains its in-flight jobs, apalis stops polling its backend, and a fetch it had
/// started stays frozen mid-transaction: on SQLite that transaction holds the database's
/// write lock, so the very runs being drained could not write their logs and results (each
/// write failing only after the busy timeout) and their final statuses came tens of seconds
/// late. The runs do not need apalis (they live on their own tasks, see [`LiveRuns`]): after
/// this grace the worker future is dropped, which rolls the frozen transaction back, and the
/// runs are waited for on their own. Their queue jobs are not acknowledged; when the queue
/// hands them out again they drop out (finished, or started and still live in this process;
/// see [`LiveRuns`]).
const STOP_GRACE: Duration = Duration::from_millis(500);

/// How often a job whose run has not started is tried when the store fails (~2 minutes).
const PRE_START_ATTEMPTS: u32 = 12;

/// What a worker needs to know besides its queue and deployer.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Worker name prefix (each start gets a unique name under it).
    pub prefix: String,
    /// Jobs one worker runs at once (waiting ones included).
    pub concurrency: usize,
    /// Queue timing (the poll interval is the worker's).
    pub timing: QueueTiming,
    /// How long a stop waits for running jobs.
    pub shutdown_timeout: Duration,
}

/// Runs a worker on `queue` until `shutdown` turns true; restarts it (new name, backoff) when
/// it stops on its own. `deployer` builds the deployer of each start from its worker name;
/// every deployer shares `live`, whose runs a stop waits for (up to the shutdown timeout).
pub async fn run(
    queue: &Queue,
    live: &LiveRuns,
    settings: &WorkerSettings,
    deployer: impl Fn(&str) -> anyhow::Result<Arc<Deployer>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let name = unique_worker_name(&settings.prefix);
        let deployer = deployer(&name)?;
        tracing::info!(worker = %name, "worker starting");
        let mut rx = shutdown.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let worker = run_apalis(queue, deployer, &name, settings, stop);
        // Boxed so it can be dropped before the drain below: a stopping apalis worker
        // stops polling its backend, and on SQLite a fetch or heartbeat it froze between
        // statements keeps the database's write lock for as long as it lives.
        let mut worker = Box::pin(worker);
        let mut rx = shutdown.clone();
        let result = tokio::select! {
            result = &mut worker => result,
            () = async {
                let _ = rx.wait_for(|s| *s).await;
                tokio::time::sleep(STOP_GRACE).await;
            } => {
                // apalis is still draining: drop it (see STOP_GRACE); the runs it handed
                // out go on on their own tasks and are waited for below.
                tracing::info!(worker = %name, "stopped taking jobs");
                Ok(())
            }
        };
        drop(worker);
        if *shutdown.borrow() {
            drain(live, settings.shutdown_timeout).await;
            tracing::info!(worker = %name, "worker stopped");
            return result;
        }
        tracing::error!(worker = %name, error = ?result.err(), "worker stopped on its own; restarting in {backoff:?}");
        let mut rx = shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = rx.wait_for(|s| *s) => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Waits (up to `timeout`) for runs still going on in this process: the queue's worker has
/// stopped, but a run it handed out lives on its own task and must still post its final
/// status and chat message.
async fn drain(live: &LiveRuns, timeout: Duration) {
    if live.is_empty() {
        return;
    }
    tracing::info!(
        runs = live.len(),
        "waiting for running deployments to finish"
    );
    if tokio::time::timeout(timeout, live.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!(
            runs = live.len(),
            "deployments still running after {timeout:?}; exiting (another worker will report them)"
        );
    }
}

/// The job handler: one job to a final status through the deployer.
async fn handle(
    job: DeployJob,
    task_id: TaskId,
    deployer: Data<Arc<Deployer>>,
) -> Result<(), BoxDynError> {
    let queue_job = Some(task_id.to_string());
    // `process` fails only before a run started (the store was unreachable), so trying
    // again here is safe; the start marker keeps a run from ever happening twice. apalis
    // itself never retries (Redis would ignore max_attempts).
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=PRE_START_ATTEMPTS {
        match deployer.process(job.clone(), queue_job.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < PRE_START_ATTEMPTS => {
                tracing::warn!(error = %format!("{e:#}"), attempt, "job could not start; trying again in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), deployment = job.deployment_id, "job could not start; giving up");
                return Err(AbortError::new(e.into_boxed_dyn_error()).into());
            }
        }
    }
    Ok(())
}

/// A worker name unique to this process (apalis refuses a name that is still heartbeating).
pub fn unique_worker_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{}-{nanos:x}", host.trim(), std::process::id())
}

/// Wakes the worker every `interval` and always leaves a timer armed.
///
/// apalis' own `poll_with_interval` replaces a timer that fired with a new one it does not
/// poll; when that same poll ends in an empty fetch, nothing wakes the worker until the next
/// heartbeat (seen in `bench drain`: a single worker that went idle picked up the next job
/// only when its heartbeat came due, 1–2 s later; with the default heartbeat it would be up
/// to 10 s). Here a timer that fired is re-armed and polled at once, so a waker is
/// always registered.
struct ArmedInterval {
    interval: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl ArmedInterval {
    fn new(interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        Self {
            interval,
            sleep: Box::pin(tokio::time::sleep(interval)),
        }
    }
}

impl PollStrategy for ArmedInterval {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _snapshot: &PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        let mut fired = false;
        while self.sleep.as_mut().poll(cx).is_ready() {
            fired = true;
            let next = tokio::time::Instant::now() + self.interval;
            self.sleep.as_mut().reset(next);
        }
        if fired {
            std::task::Poll::Ready(Some(()))
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Runs one apalis worker until `shutdown` resolves, then waits up to the shutdown timeout
/// (counted from the signal) for running jobs. Returns `Err` when the worker stopped on its
/// own (backend failure after a few in-place restarts): [`run`] restarts it.
///
/// apalis's own `shutdown_timeout` is not used: its timer starts when the monitor is built,
/// so a process that has run longer than the timeout would not wait at all.
async fn run_apalis(
    queue: &Queue,
    deployer: Arc<Deployer>,
    name: &str,
    settings: &WorkerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let name = name.to_owned();
    let (concurrency, timing, shutdown_timeout) = (
        settings.concurrency,
        settings.timing,
        settings.shutdown_timeout,
    );
    macro_rules! monitor {
        ($storage:expr) => {{
            let storage = $storage.clone();
            let deployer = deployer.clone();
            Monitor::new()
                .register(move |restarts| {
                    // A restarted worker gets a new name: apalis refuses one still heartbeating.
                    let name = if restarts == 0 { name.clone() } else { format!("{name}-r{restarts}") };
                    WorkerBuilder::new(name.as_str())
                        .backend(storage.clone().poll_with_strategy(ArmedInterval::new(timing.poll_interval)))
                        .catch_panic()
                        .concurrency(concurrency)
                        .data(deployer.clone())
                        .build(handle)
                })
                .should_restart(|w, e| {
                    tracing::error!(worker = %w.name(), error = %e, restarts = w.restarts(), "worker failed");
                    w.restarts() < 3
                })
        }};
    }
    let monitor = match queue {
        Queue::Redis { storage } => monitor!(storage),
        Queue::Sqlite { storage } => monitor!(storage),
    };
    let ctx = monitor.context();
    let run = monitor.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => {
            result.context("the worker stopped")?;
            anyhow::bail!("the worker stopped without being asked to")
        }
        () = shutdown => {}
    }
    tracing::info!("stopping: no new jobs; waiting up to {shutdown_timeout:?} for running ones");
    let _ = ctx.shutdown();
    match tokio::time::timeout(shutdown_timeout, run).await {
        Ok(result) => result.context("the worker stopped"),
        Err(_) => {
            tracing::warn!(
                "deployments still running after {shutdown_timeout:?}; exiting (another worker will report them)"
            );
            Ok(())
        }
    }
}
