//! Unit tests of the deployer over a store that fails on cue.

use super::recovery::is_duplicate;
use super::*;
use crate::notify::NoChat;
use crate::status::NullStatusSink;
use crate::store::flaky::{FailOnce, FlakyStore};
use crate::store::prelude::*;
use crate::store::{SqliteStore, StartMarker};

/// A shared deployer over a [`FlakyStore`], and a shell deployment of `o/r` to edge with
/// no clone URL (so a run that gets going ends at once with "could not run").
async fn flaky_world(
    dir: &std::path::Path,
    fail: FailOnce,
) -> (Arc<Deployer>, Arc<FlakyStore>, DeployJob) {
    let inner = SqliteStore::open(&dir.join("faseng.db"), "test")
        .await
        .unwrap();
    let store = Arc::new(FlakyStore::new(inner, fail));
    let deployer = deployer_over(
        store.clone(),
        dir,
        serde_json::json!({}),
        deploy_core::clock::system(),
    );
    let job = DeployJob::sample("d-1", "o/r", "r/edge");
    (deployer, store, job)
}

/// A shared deployer over `store` for the app `r` (a shell deployment of `o/r` to edge with
/// `extra` merged into its app.json entry, and no clone URL: a run that gets past the desk
/// ends at once with "could not run"), telling time by `clock`.
fn deployer_over(
    store: Arc<dyn Store>,
    dir: &std::path::Path,
    extra: serde_json::Value,
    clock: Arc<dyn Clock>,
) -> Arc<Deployer> {
    let workdir = dir.join("work");
    let mut app =
        serde_json::json!({"provider": "shell", "repository": "o/r", "environments": ["edge"]});
    app.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    Deployer::new(
        store,
        Arc::new(NullStatusSink),
        Arc::new(NoChat),
        Checkouts::new(&workdir),
        Arc::new(Apps::from_json(&serde_json::json!({ "r": app }).to_string()).unwrap()),
        Arc::new(Metrics::default()),
        DeployerSettings {
            log_links: crate::links::LogLinks::new(
                "http://faseng.test",
                crate::links::LinkKey::new(&"k".repeat(32)).unwrap(),
            ),
            deploy_config_dir: dir.join("deploy-config"),
            default_timeout: Duration::from_secs(60),
            worker_name: "test-worker".into(),
            status_retry: RetryPolicy::default(),
            line_poll: Duration::from_millis(50),
            slots: 32,
            report_drain: Duration::from_secs(5),
            secrets: Vec::new(),
            providers: providers::ProviderSettings::new(
                Default::default(),
                "http://github.test",
                workdir.clone(),
            ),
            isolation: Arc::new(Isolation::shared("a unit test")),
            github: Arc::new(GithubClients::new("http://github.test", None)),
            base_dir: dir.to_owned(),
            identity: Arc::new(WorkerIdentity::detect(Some("test-worker"))),
            leases: LeaseSettings::default(),
            clock,
        },
    )
    .into_shared()
}

#[tokio::test]
async fn a_repeated_job_waits_for_a_live_attempt_that_has_not_started_and_takes_over_when_it_fails()
{
    let dir = tempfile::tempdir().unwrap();
    let (deployer, store, job) = flaky_world(dir.path(), FailOnce::EnvLockAfterRelease).await;
    let reached = store.reached.notified();
    let first = tokio::spawn({
        let (deployer, job) = (deployer.clone(), job.clone());
        async move { deployer.process(job, Some("q-1".into())).await }
    });
    reached.await;

    // The queue hands the job out again (recovered from a restarted worker) while the
    // first attempt is live and not started: it must not drop out.
    let mut again = Box::pin(deployer.process(job.clone(), Some("q-1".into())));
    assert!(
        futures::poll!(&mut again).is_pending(),
        "the repeated job dropped out while the live attempt could still fail"
    );
    // The first attempt fails (the store went away) and nobody is left to retry it.
    store.release.notify_one();
    assert!(first.await.unwrap().is_err());
    again.await.unwrap();

    let run = store.get_run(job.key().as_str()).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Error, "{run:?}");
    assert!(run.description.contains("clone_url"), "{run:?}");
    assert!(deployer.live_runs().is_empty());
}

#[tokio::test]
async fn a_start_marker_whose_answer_was_lost_is_taken_for_our_own() {
    let dir = tempfile::tempdir().unwrap();
    let (deployer, store, job) = flaky_world(dir.path(), FailOnce::MarkStartedAnswer).await;
    deployer
        .process(job.clone(), Some("q-1".into()))
        .await
        .unwrap();
    let run = store.get_run(job.key().as_str()).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Error, "{run:?}");
    assert!(
        run.description.contains("clone_url"),
        "the run went on as started, not as an orphan: {run:?}"
    );
    assert!(run.started_at.is_some(), "{run:?}");
}

#[test]
fn a_run_started_by_another_job_is_a_duplicate_and_by_the_same_job_an_orphan() {
    let m = |job: Option<&str>| StartMarker {
        job: job.map(str::to_owned),
        ..StartMarker::sample("w", Utc::now())
    };
    assert!(is_duplicate(Some(&m(Some("a"))), Some("b")));
    assert!(!is_duplicate(Some(&m(Some("a"))), Some("a")));
    assert!(!is_duplicate(Some(&m(None)), Some("a")));
    assert!(!is_duplicate(Some(&m(Some("a"))), None));
    assert!(!is_duplicate(None, Some("a")));
}

#[test]
fn eta_is_the_median_of_recent_runs_times_the_runs_ahead() {
    assert_eq!(eta_secs(&[], 2), None);
    assert_eq!(eta_secs(&[10.0], 0), None);
    assert_eq!(eta_secs(&[10.0, 30.0, 20.0], 1), Some(20.0));
    assert_eq!(eta_secs(&[10.0, 20.0, 30.0, 1000.0], 2), Some(50.0));
    assert_eq!(eta_secs(&[f64::NAN, 60.0], 3), Some(180.0));
}

/// The desk on a clock moved by hand: a `deploy:lock` runs for the app's `lock_ttl` from the
/// clock's now, refuses others until then and nobody after; a freeze window refuses until
/// its end. A run the desk lets through ends "could not run" (no clone URL), one it refuses
/// with the desk's words.
#[tokio::test]
async fn locks_and_freezes_are_judged_on_the_deployers_clock() {
    use deploy_core::ManualClock;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("faseng.db"), "test")
            .await
            .unwrap(),
    );
    let t0: chrono::DateTime<Utc> = "2026-12-04T09:00:00Z".parse().unwrap();
    let clock = ManualClock::new(t0);
    let freeze = serde_json::json!({"lock_ttl": "2h", "freeze": [{"from": "2026-12-05T00:00:00Z",
        "until": "2026-12-05T12:00:00Z", "reason": "release day"}]});
    let deployer = deployer_over(store.clone(), dir.path(), freeze, Arc::new(clock.clone()));
    let mut n = 0;
    let mut run = |task: Task, who: &str| {
        n += 1;
        let mut job = DeployJob::sample(&format!("d-{n}"), "o/r", "r/edge");
        job.deployment_id = n;
        job.task = task;
        job.identity = Some(crate::desk::Identity::creator(who));
        let (deployer, store) = (deployer.clone(), store.clone());
        async move {
            deployer.process(job.clone(), None).await.unwrap();
            store.get_run(job.key().as_str()).await.unwrap().unwrap()
        }
    };

    let locked = run(Task::Lock, "alice").await;
    assert_eq!(locked.state, RunState::Success, "{locked:?}");
    let lock = store.lock_at("r/edge", t0).await.unwrap().unwrap();
    assert_eq!(
        (lock.user.as_str(), lock.at, lock.expires_at),
        ("alice", t0, Some(t0 + chrono::Duration::hours(2)))
    );
    clock.advance(chrono::Duration::minutes(119));
    let refused = run(Task::Deploy, "bob").await;
    assert_eq!(
        (refused.state, refused.description.as_str()),
        (
            RunState::Error,
            "⚿ r in edge is locked by alice: locked with deploy:lock, until 11:00 UTC (in 1 min)."
        )
    );
    let holder = run(Task::Deploy, "alice").await;
    assert!(holder.description.contains("clone_url"), "{holder:?}");
    clock.advance(chrono::Duration::minutes(1));
    let after = run(Task::Deploy, "bob").await;
    assert!(
        after.description.contains("clone_url"),
        "an expired lock refused: {after:?}"
    );

    clock.set("2026-12-05T11:59:00Z".parse().unwrap());
    let frozen = run(Task::Deploy, "bob").await;
    assert_eq!(
        frozen.description,
        "⚠ r in edge is frozen: release day, until 12:00 UTC (in 1 min)."
    );
    clock.advance(chrono::Duration::minutes(1));
    let thawed = run(Task::Deploy, "bob").await;
    assert!(thawed.description.contains("clone_url"), "{thawed:?}");
}
