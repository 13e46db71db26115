//! A bounded store, end to end on both backends: with a short `FASENG_RETENTION_DAYS` and
//! the clock moved by hand (never slept for), rounds of real deploys are swept away after
//! each round — runs, logs, status history and the queue library's own job records — while
//! a run still in progress is kept; Redis's memory and SQLite's row counts and pages stop
//! growing across rounds. Run directories left by dead processes go at start; a live run's
//! does not, even when another faseng process starts beside it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use deploy_core::ManualClock;
use e2e::harness::{Backend, Env, Options, REPO, SECRET, WAIT, scratch, wait_for};
use faseng::job::QUEUE_NAME;
use faseng::queue::QueueUrl;
use faseng::retention::Retention;
use faseng::store::{RunRecord, Store};
use serde_json::json;

/// Deployments per round, and rounds.
const PER_ROUND: usize = 4;
const ROUNDS: usize = 6;

/// Each edge deploy writes 400 lines of about 100 bytes (~40 KB of log); the production
/// deploy waits until the test lets it finish.
const SCRIPT: &str = r#"
if [ "$DEPLOY_ENV" = production ]; then
  while [ ! -e "$SCRATCH/go" ]; do sleep 0.05; done
fi
i=0
while [ $i -lt 400 ]; do
  echo "line $i of deployment $DEPLOY_ID: padding so the log weighs what a real one does ......"
  i=$((i + 1))
done
"#;

/// What one backend shows of its size, for comparing rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footprint {
    /// Redis `used_memory`, or SQLite's page count.
    bytes_or_pages: u64,
    /// Rows / keys per kind: runs, logs, status histories, start markers, the queue library's
    /// jobs, faseng's kept queue jobs.
    counts: [u64; 6],
}

async fn footprint(env: &Env) -> Footprint {
    match &env.queue_url {
        QueueUrl::Redis(_) => {
            let redis = env.queue.redis.as_ref().unwrap();
            let info = redis.cli(&["INFO", "memory"]);
            let used = info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let count = |pattern: &str| {
                redis
                    .cli(&["EVAL", "return #redis.call('KEYS', ARGV[1])", "0", pattern])
                    .parse()
                    .unwrap()
            };
            let data_hash = format!("{QUEUE_NAME}:data");
            Footprint {
                bytes_or_pages: used,
                counts: [
                    count("faseng:run:*"),
                    count("faseng:log:*"),
                    count("faseng:status_events:*"),
                    count("faseng:started:*"),
                    redis.cli(&["HLEN", &data_hash]).parse().unwrap(),
                    count("faseng:job:*"),
                ],
            }
        }
        QueueUrl::Sqlite(path) => {
            let db = sqlite(path).await;
            let one = |sql: &'static str| {
                let db = db.clone();
                async move {
                    sqlx::query_scalar::<_, i64>(sql)
                        .fetch_one(&db)
                        .await
                        .unwrap() as u64
                }
            };
            let f = Footprint {
                bytes_or_pages: one("PRAGMA page_count").await,
                counts: [
                    one("SELECT COUNT(*) FROM faseng_runs").await,
                    one("SELECT COUNT(*) FROM faseng_logs").await,
                    one("SELECT COUNT(*) FROM faseng_status_events").await,
                    one("SELECT COUNT(*) FROM faseng_started").await,
                    one("SELECT COUNT(*) FROM Jobs").await,
                    one("SELECT COUNT(*) FROM faseng_jobs").await,
                ],
            };
            db.close().await;
            f
        }
    }
}

async fn sqlite(path: &Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

/// Waits until the store holds `key` in a final state (its record is written after the
/// final status and chat edit are out).
/// Polls: the store is read over its own connection, with no event to wait on.
async fn wait_recorded_final(store: &dyn Store, key: &str) {
    e2e::wait::poll_async(
        &format!("{key} to be recorded as finished"),
        WAIT,
        || async {
            let run = store.get_run(key).await.unwrap();
            run.is_some_and(|r| r.state.is_final()).then_some(())
        },
        String::new,
    )
    .await;
}

/// Waits until the queue library has recorded `n` jobs as done. Polls: the queue's tables
/// and keys are apalis's, with no event to wait on.
async fn wait_jobs_done(env: &Env, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done = match &env.queue_url {
            QueueUrl::Redis(_) => env
                .queue
                .redis
                .as_ref()
                .unwrap()
                .cli(&["SCARD", &format!("{QUEUE_NAME}:done")])
                .parse::<u64>()
                .unwrap(),
            QueueUrl::Sqlite(path) => {
                let db = sqlite(path).await;
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE status = 'Done'")
                    .fetch_one(&db)
                    .await
                    .unwrap();
                db.close().await;
                n as u64
            }
        };
        if done >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {n} queue jobs done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the queue holds no job waiting or being run (polling, as above).
async fn wait_queue_idle(env: &Env) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let busy: u64 = match &env.queue_url {
            QueueUrl::Redis(_) => env.queue.redis
                .as_ref()
                .unwrap()
                .cli(&[
                    "EVAL",
                    "local n = redis.call('LLEN', KEYS[1]) \
                     for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('SCARD', k) end \
                     return n",
                    "1",
                    &format!("{QUEUE_NAME}:active"),
                    &format!("{QUEUE_NAME}:inflight:*"),
                ])
                .parse()
                .unwrap(),
            QueueUrl::Sqlite(path) => {
                let db = sqlite(path).await;
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM Jobs WHERE status IN ('Pending', 'Queued', 'Running')",
                )
                .fetch_one(&db)
                .await
                .unwrap();
                db.close().await;
                n as u64
            }
        };
        if busy == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{busy} queue jobs still waiting or running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the `deployment_status` webhook GitHub sends for a status of deployment `id`.
async fn status_webhook(env: &Env, id: u64, n: usize) {
    let mut event = e2e::fixtures::json("github/webhooks/deployment_status/payload.json");
    event["repository"]["full_name"] = json!(REPO);
    event["deployment"]["id"] = json!(id);
    event["deployment_status"]["state"] = json!("success");
    let (headers, body) = e2e::fake_github::signed_delivery(
        "deployment_status",
        &format!("status-{id}-{n}"),
        &event,
        SECRET,
    );
    assert_eq!(env.post_webhook(&headers, body.to_vec()).await, 202);
}

/// A number from `/metrics`.
async fn metric(env: &Env, name: &str) -> u64 {
    let (_, text) = env.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap()
}

fn run_dirs(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.dir.path().join("work/runs"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn old_runs_go_and_the_store_stops_growing(backend: Backend) {
    // The harness's faseng takes webhooks and serves /metrics; the worker and the sweeps are
    // another faseng, on a clock the test moves, keeping runs one day.
    let opts = Options {
        script: SCRIPT.into(),
        with_worker: false,
        ..Options::default()
    };
    let Some(env) = Env::start(backend, opts).await else {
        return;
    };
    // Left by a faseng that died mid-run: removed when a worker starts.
    let stale = env.dir.path().join("work/runs/run-4242-deadbeef");
    std::fs::create_dir_all(stale.join("checkout/.git")).unwrap();

    let clock = ManualClock::new(Utc::now());
    let mut config = env.config(Duration::from_secs(600));
    config.clock = Arc::new(clock.clone());
    config.retention = Retention::days(1);
    let app = faseng::Application::build(config.clone(), true)
        .await
        .expect("the worker's faseng builds");
    let services = app.services();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    assert!(
        !stale.exists(),
        "a dead process's run directory is pruned at start"
    );
    let store = services.store.clone();

    // A run in progress the whole time: never swept, and its directory never pruned.
    let (busy, _) = env.deploy("production", "deploy", "joyz").await;
    env.gh.wait_for_status(busy, "in_progress", WAIT).await;
    let busy_key = RunRecord::key_for(REPO, busy);
    // (in_progress is posted before the checkout: wait for its directory.)
    let live_dirs = wait_for("the running deploy's directory", WAIT, || {
        Some(run_dirs(&env)).filter(|d| !d.is_empty())
    })
    .await;
    assert_eq!(live_dirs.len(), 1, "{live_dirs:?}");
    // Another faseng process starting beside it prunes only what no live process holds.
    let other = faseng::Application::build(config.clone(), true)
        .await
        .unwrap();
    other.services().prepare_for_runs().unwrap();
    assert_eq!(run_dirs(&env), live_dirs, "a live run's directory is kept");
    drop(other);

    let mut after_sweep = Vec::new();
    let mut freed_per_round = Vec::new();
    for round in 0..ROUNDS {
        let mut ids = Vec::new();
        for _ in 0..PER_ROUND {
            ids.push(env.deploy("edge", "deploy", "joyz").await.0);
        }
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(env.wait_final(*id).await["state"], "success");
            wait_recorded_final(store.as_ref(), &RunRecord::key_for(REPO, *id)).await;
            status_webhook(&env, *id, n).await;
        }
        // (Earlier rounds' done jobs were swept with them.)
        wait_jobs_done(&env, PER_ROUND as u64).await;
        let logs: Vec<String> = futures::future::join_all(ids.iter().map(|id| env.log(*id))).await;
        assert!(logs.iter().all(|l| l.contains("line 399 of deployment")));

        // Within retention nothing goes. (Runs are stamped with the system's time; the
        // sweeps' clock is set relative to it.)
        clock.set(Utc::now());
        let kept = services.sweep_now().await.unwrap().unwrap();
        assert_eq!(kept.runs, 0, "{kept:?}");
        assert_eq!(
            metric(&env, "faseng_store_runs").await,
            1 + PER_ROUND as u64
        );
        let full = footprint(&env).await;

        // Two days on, the round's runs are past retention.
        clock.advance(chrono::Duration::days(2));
        let swept = services.sweep_now().await.unwrap().unwrap();
        assert_eq!(swept.runs, PER_ROUND as u64, "round {round}: {swept:?}");
        assert_eq!(swept.jobs, PER_ROUND as u64, "round {round}: {swept:?}");
        let log_bytes: u64 = logs.iter().map(|l| l.len() as u64).sum();
        assert_eq!(
            swept.log_bytes, log_bytes,
            "the gauge counts what /log serves"
        );
        for id in &ids {
            let key = RunRecord::key_for(REPO, *id);
            assert_eq!(store.get_run(&key).await.unwrap(), None);
            assert!(store.read_log(&key, 0).await.unwrap().is_empty());
            let (status, _) = env.get(&format!("{}/log", env.log_url(*id))).await;
            assert_eq!(
                status, 404,
                "a swept run's log link answers like an unknown one"
            );
        }
        let busy_run = store.get_run(&busy_key).await.unwrap().unwrap();
        assert_eq!(
            busy_run.state.as_str(),
            "in_progress",
            "never swept while running"
        );
        assert_eq!(metric(&env, "faseng_store_runs").await, 1);
        assert_eq!(
            metric(&env, "faseng_store_log_bytes").await,
            store.size().await.unwrap().log_bytes
        );
        let after = footprint(&env).await;
        // Rows and keys back to the floor: the running run's record, marker and log (its
        // log has its first lines), no status history, and of the queue's jobs at most the
        // running one's. (On a loaded machine a worker heartbeat can come late enough for
        // the queue to hand the running job out again; the worker drops the copy as its own
        // live run and the queue records it done, so a sweep may take it.)
        assert_eq!(
            after.counts[..4],
            [1, after.counts[1], 0, 1],
            "round {round}: {after:?}"
        );
        assert!(after.counts[4] <= 1, "round {round}: {after:?}");
        assert_eq!(
            after.counts[5], 1,
            "the queue job kept for the running run alone"
        );
        if let QueueUrl::Redis(_) = env.queue_url {
            assert_eq!(after.counts[1], 1, "only the running run's log key");
        }
        freed_per_round.push(full.bytes_or_pages.saturating_sub(after.bytes_or_pages));
        after_sweep.push(after);
    }

    // Stops growing. Redis: a round adds PER_ROUND logs of ~40 KB and their records; what
    // the sweep cannot delete is the PER_ROUND delivery ids kept for dedup (8 days on
    // Redis's own clock, which the test cannot move: ~100 bytes each) and the rehash of
    // Redis's hash tables as they grow past a power of two (a few KB at these sizes). So
    // over the last rounds the memory after a sweep may grow by far less than a round
    // adds: a quarter of one round is the bound, four rounds later. SQLite: freed pages are
    // reused, so the file stops growing (the delivery rows fit in a page or two).
    let early = after_sweep[1];
    let late = after_sweep[ROUNDS - 1];
    // (The first sweep also loads its scripts and builds the indexes: not a round's data.)
    let round_bytes = *freed_per_round[1..].iter().min().unwrap();
    eprintln!(
        "{backend:?}: after each sweep {:?}; one round freed {freed_per_round:?}",
        after_sweep
            .iter()
            .map(|f| f.bytes_or_pages)
            .collect::<Vec<_>>()
    );
    match backend {
        Backend::Redis => {
            assert!(
                round_bytes > 4 * 40_000 * 9 / 10,
                "a round's logs are freed: {round_bytes}"
            );
            assert!(
                late.bytes_or_pages <= early.bytes_or_pages + round_bytes / 4,
                "used_memory grew from {} to {} over {} rounds (a round frees {round_bytes})",
                early.bytes_or_pages,
                late.bytes_or_pages,
                ROUNDS - 2
            );
        }
        Backend::Sqlite => {
            // A round's logs alone take about 40 pages (4 runs × 400 lines), so a store that
            // kept them would grow by that much each round; an index's B-tree split can take a
            // few pages at once (seen: 134 pages for five sweeps, then 137).
            assert!(
                late.bytes_or_pages <= early.bytes_or_pages + 8,
                "the database grew from {} to {} pages",
                early.bytes_or_pages,
                late.bytes_or_pages
            );
        }
    }

    // The running run finishes; once retention has passed it, it goes too.
    std::fs::write(scratch(env.dir.path(), "go"), "").unwrap();
    assert_eq!(env.wait_final(busy).await["state"], "success");
    wait_recorded_final(store.as_ref(), &busy_key).await;
    wait_queue_idle(&env).await;
    clock.set(Utc::now());
    assert_eq!(services.sweep_now().await.unwrap().unwrap().runs, 0);
    clock.advance(chrono::Duration::days(2));
    let swept = services.sweep_now().await.unwrap().unwrap();
    assert_eq!(swept.runs, 1, "{swept:?}");
    assert_eq!(metric(&env, "faseng_store_runs").await, 0);
    assert_eq!(metric(&env, "faseng_store_log_bytes").await, 0);
    assert_eq!(footprint(&env).await.counts, [0, 0, 0, 0, 0, 0]);

    let _ = stop.send(());
    let _ = tokio::time::timeout(WAIT, running).await;
}

e2e::both_backends!(old_runs_go_and_the_store_stops_growing);
