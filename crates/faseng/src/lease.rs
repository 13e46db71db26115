//! Run leases: which worker holds a running deploy. The holder renews its lease every third
//! of [`LeaseSettings::lease`] and checks it before it spawns anything; a worker that finds
//! its lease taken stops its provider and reports nothing. A worker that finds a run's lease
//! lapsed may take the run over to report it (see `Deployer::recover`). Worker identity
//! names the holder: `FASENG_WORKER_ID`, by default host name + boot id + pid, never the
//! host name alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deploy_core::Clock;
use tracing::Instrument as _;

use crate::process::proc_stat;
use crate::store::{StartMarker, Store};

/// Who this process is, as a lease holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerIdentity {
    /// The holder name written into start markers (`FASENG_WORKER_ID`).
    pub id: String,
    /// This machine's host name.
    pub host: String,
    /// This machine's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// This process.
    pub pid: u32,
    /// This process's start time in clock ticks since boot (a pid is reused, this is not).
    pub pid_start: Option<u64>,
}

impl WorkerIdentity {
    /// This process's identity; `explicit` is `FASENG_WORKER_ID` when set.
    pub fn detect(explicit: Option<&str>) -> Self {
        let host = read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into());
        let boot_id = read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let pid = std::process::id();
        // Processes are told apart by pid; the faseng instances one process may build (tests,
        // chima's local mode) by a number after the first.
        static INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let instance = INSTANCES.fetch_add(1, Ordering::SeqCst);
        let id = match explicit.map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) => id.to_owned(),
            None if instance == 0 => default_id(&host, &boot_id, pid),
            None => format!("{}#{}", default_id(&host, &boot_id, pid), instance + 1),
        };
        Self {
            id,
            host,
            boot_id,
            pid,
            pid_start: proc_stat(&pid.to_string()).map(|(_, ticks)| ticks),
        }
    }

    /// True when `marker` was written by a process of this machine (same host name and
    /// boot): its processes are visible here.
    pub fn same_machine(&self, marker: &StartMarker) -> bool {
        !marker.boot_id.is_empty() && marker.boot_id == self.boot_id && marker.host == self.host
    }

    /// True when the process that wrote `marker` runs on this machine and is gone (not
    /// merely stopped: a stopped process may go on).
    pub fn starter_is_dead(&self, marker: &StartMarker) -> bool {
        if !self.same_machine(marker) {
            return false;
        }
        let (Some(pid), Some(start)) = (marker.pid, marker.pid_start) else {
            return false;
        };
        !matches!(proc_stat(&pid.to_string()), Some((state, t)) if t == start && state != 'Z')
    }
}

/// The default worker id: host name, the start of the boot id, pid.
fn default_id(host: &str, boot_id: &str, pid: u32) -> String {
    let boot: String = boot_id.chars().filter(|c| *c != '-').take(12).collect();
    format!("{host}:{boot}:{pid}")
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// How long leases run.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// A lease's length (`FASENG_LEASE_SECS`); renewed every third of it.
    pub lease: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
        }
    }
}

impl LeaseSettings {
    /// How often a holder renews.
    pub fn renew_every(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(100))
    }

    /// The lease's end if renewed at `now`.
    pub fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30))
    }
}

/// Keeps one run's lease while the run goes on: renews it, records the provider's process
/// group, and says when it was lost.
#[derive(Debug)]
pub struct LeaseKeeper {
    state: Arc<KeeperState>,
    renewer: tokio::task::JoinHandle<()>,
}

struct KeeperState {
    store: Arc<dyn Store>,
    key: String,
    clock: Arc<dyn Clock>,
    settings: LeaseSettings,
    marker: tokio::sync::Mutex<StartMarker>,
    lost: AtomicBool,
    lost_notify: tokio::sync::Notify,
    pgid: std::sync::Mutex<Option<i32>>,
}

impl std::fmt::Debug for KeeperState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeeperState")
            .field("key", &self.key)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

impl KeeperState {
    /// Renews the lease (and writes whatever else changed in the marker); `false` once lost.
    async fn renew(&self) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        let mut marker = self.marker.lock().await;
        let now = self.clock.now();
        let mut next = marker.clone();
        next.lease_until = Some(self.settings.until(now));
        next.renewed_at = Some(now);
        match self.store.update_started(&self.key, &next).await {
            Ok(true) => {
                *marker = next;
                true
            }
            Ok(false) => {
                self.mark_lost();
                false
            }
            Err(e) => {
                // The store is down: keep going. Whoever might take the run over waits for
                // the provider's deadline, and the result is written only if the lease holds.
                tracing::warn!(error = %format!("{e:#}"), "could not renew the run's lease");
                true
            }
        }
    }

    fn mark_lost(&self) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                run = %self.key,
                "another worker holds this run's lease now: stopping it here and reporting nothing"
            );
        }
        self.lost_notify.notify_waiters();
    }
}

impl LeaseKeeper {
    /// Starts keeping the lease of `marker` (already written for `key`).
    pub fn start(
        store: Arc<dyn Store>,
        key: &str,
        marker: StartMarker,
        clock: Arc<dyn Clock>,
        settings: LeaseSettings,
    ) -> Self {
        let state = Arc::new(KeeperState {
            store,
            key: key.to_owned(),
            clock,
            settings,
            pgid: std::sync::Mutex::new(marker.pgid),
            marker: tokio::sync::Mutex::new(marker),
            lost: AtomicBool::new(false),
            lost_notify: tokio::sync::Notify::new(),
        });
        let renewer = tokio::spawn({
            let state = state.clone();
            async move {
                let mut tick = tokio::time::interval(settings.renew_every());
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if !state.renew().await {
                        return;
                    }
                }
            }
            .in_current_span()
        });
        Self { state, renewer }
    }

    /// The holder (this worker's id).
    pub async fn holder(&self) -> String {
        self.state.marker.lock().await.worker.clone()
    }

    /// True once another worker holds the run.
    pub fn is_lost(&self) -> bool {
        self.state.lost.load(Ordering::SeqCst)
    }

    /// Resolves once the lease is lost (never, while it is held).
    pub async fn lost(&self) {
        loop {
            let notified = self.state.lost_notify.notified();
            if self.is_lost() {
                return;
            }
            notified.await;
        }
    }

    /// Renews the lease now and says whether it is still held: asked before anything is
    /// spawned, so a worker that was stopped and lost its run starts nothing more.
    pub async fn confirm(&self) -> bool {
        self.state.renew().await
    }

    /// A handle that renews and checks the lease from a task of its own.
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch(self.state.clone())
    }

    /// Records the provider's process group in the marker (for whoever takes the run over).
    pub async fn set_pgid(&self, pgid: i32) {
        self.pgid_recorder().record(pgid).await;
    }

    /// A handle that records process groups from a task of its own.
    pub fn pgid_recorder(&self) -> PgidRecorder {
        PgidRecorder(self.state.clone())
    }

    /// The provider's process group, once spawned.
    pub fn pgid(&self) -> Option<i32> {
        *self.state.pgid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops renewing (the run's result is written; the lease may lapse).
    pub fn stop(self) {
        self.renewer.abort();
    }
}

/// Renews and checks a run's lease from a task of its own (see [`LeaseKeeper::watch`]).
#[derive(Debug, Clone)]
pub struct LeaseWatch(Arc<KeeperState>);

impl LeaseWatch {
    /// Renews the lease now and says whether it is still held (what may write for the run).
    pub async fn confirm(&self) -> bool {
        self.0.renew().await
    }
}

/// Records a run's provider process group in its marker (see [`LeaseKeeper::pgid_recorder`]).
#[derive(Debug, Clone)]
pub struct PgidRecorder(Arc<KeeperState>);

impl PgidRecorder {
    /// Notes `pgid` here and in the stored marker.
    pub async fn record(&self, pgid: i32) {
        *self.0.pgid.lock().unwrap_or_else(|p| p.into_inner()) = Some(pgid);
        self.0.marker.lock().await.pgid = Some(pgid);
        self.0.renew().await;
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use deploy_core::ManualClock;

    #[test]
    fn the_default_id_names_host_boot_and_pid() {
        assert_eq!(
            default_id("web-1", "6f1c8a2e-0d4b-4a5e-9a77-1f2e3d4c5b6a", 42),
            "web-1:6f1c8a2e0d4b:42"
        );
        let me = WorkerIdentity::detect(None);
        let other = WorkerIdentity::detect(None);
        let pid = format!(":{}", std::process::id());
        assert!(me.id.contains(&pid) && other.id.contains(&pid), "{me:?}");
        assert_ne!(
            me.id, other.id,
            "two instances in one process are two holders"
        );
        assert_eq!(WorkerIdentity::detect(Some(" w-7 ")).id, "w-7");
    }

    #[test]
    fn a_starter_is_dead_only_when_its_process_is_gone_from_this_machine() {
        let me = WorkerIdentity::detect(None);
        let mut marker = StartMarker::sample("w", Utc::now());
        marker.host = me.host.clone();
        marker.boot_id = me.boot_id.clone();
        marker.pid = Some(me.pid);
        marker.pid_start = me.pid_start;
        assert!(me.same_machine(&marker));
        assert!(!me.starter_is_dead(&marker), "this process lives");
        marker.pid_start = me.pid_start.map(|t| t + 1);
        assert!(me.starter_is_dead(&marker), "same pid, another process");
        marker.boot_id = "another boot".into();
        assert!(!me.same_machine(&marker));
        assert!(
            !me.starter_is_dead(&marker),
            "another machine's process cannot be seen"
        );
    }

    #[tokio::test]
    async fn a_keeper_renews_until_another_worker_takes_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("l.db"), "q")
                .await
                .unwrap(),
        );
        let start = Utc::now();
        let clock = ManualClock::new(start);
        let marker = StartMarker::sample("w1", start);
        assert!(store.mark_started("k", &marker).await.unwrap().is_none());
        let settings = LeaseSettings {
            lease: Duration::from_secs(30),
        };
        let keeper = LeaseKeeper::start(
            store.clone(),
            "k",
            marker,
            Arc::new(clock.clone()),
            settings,
        );
        clock.advance(chrono::Duration::seconds(20));
        assert!(keeper.confirm().await);
        let read = store.started("k").await.unwrap().unwrap();
        assert_eq!(
            read.marker.lease_until,
            Some(start + chrono::Duration::seconds(50))
        );
        keeper.set_pgid(4242).await;
        let read = store.started("k").await.unwrap().unwrap();
        assert_eq!(read.marker.pgid, Some(4242));

        let taker = StartMarker {
            worker: "w2".into(),
            ..read.marker.clone()
        };
        assert!(store.take_over_started("k", &read, &taker).await.unwrap());
        assert!(!keeper.confirm().await, "the lease is lost");
        assert!(keeper.is_lost());
        tokio::time::timeout(Duration::from_secs(5), keeper.lost())
            .await
            .expect("lost() resolves once lost");
        assert_eq!(
            store.started("k").await.unwrap().unwrap().marker.worker,
            "w2",
            "the old holder writes nothing more"
        );
    }
}
