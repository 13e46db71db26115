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
    let workdir = dir.join("work");
    let deployer = Deployer::new(
        store.clone(),
        Arc::new(NullStatusSink),
        Arc::new(NoChat),
        Checkouts::new(&workdir),
        Arc::new(
            Apps::from_json(
                r#"{"r": {"provider": "shell", "repository": "o/r", "environments": ["edge"]}}"#,
            )
            .unwrap(),
        ),
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
            clock: deploy_core::clock::system(),
        },
    )
    .into_shared();
    let job = DeployJob::sample("d-1", "o/r", "r/edge");
    (deployer, store, job)
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
