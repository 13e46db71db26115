//! What the contract cannot see on SQLite: pragmas, apalis's jobs swept, the index used.

use super::*;

#[tokio::test]
async fn what_only_sqlite_keeps_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("sub/f.db"), "q")
        .await
        .unwrap();
    crate::contract::retention(&store).await;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(sync, 2, "synchronous must be FULL");
    written_before_history(&dir.path().join("sub/f.db")).await;

    // What the contract cannot see: status histories and apalis's finished jobs.
    let runs: Vec<String> = sqlx::query("SELECT DISTINCT run FROM faseng_status_events")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(runs, ["s/old/4"], "only the running run's history is left");
    let now = Utc::now();
    let old = (now - chrono::Duration::days(2)).timestamp();
    for (id, status, attempts, done_at) in [
        ("old-done", "Done", 1, Some(old)),
        ("new-done", "Done", 1, Some(now.timestamp())),
        ("old-killed", "Killed", 1, Some(old)),
        ("old-failed-final", "Failed", 25, Some(old)),
        ("old-failed-retrying", "Failed", 1, Some(old)),
        ("waiting", "Pending", 0, None),
    ] {
        sqlx::query(
            "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, done_at) \
             VALUES (x'7b7d', ?, 'q', ?, ?, 25, ?)",
        )
        .bind(id)
        .bind(status)
        .bind(attempts)
        .bind(done_at)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let swept = store.sweep(now - chrono::Duration::days(1)).await.unwrap();
    assert_eq!(swept.jobs, 3, "{swept:?}");
    let left: Vec<String> = sqlx::query("SELECT id FROM Jobs ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["new-done", "old-failed-retrying", "waiting"]);

    // The sweep walks the runs by time through the index, not the whole table.
    let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {}",
        super::retention::SWEEP_PAGE
    )))
    .bind("2026-01-01T00:00:00Z")
    .bind("")
    .bind("")
    .bind(10)
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(3))
    .collect();
    assert!(
        plan.iter()
            .any(|step| step.contains("faseng_runs_received")),
        "{plan:?}"
    );
}

/// A database from before the history existed (its table and triggers missing, a run in
/// it) gets them at open, with the run in the history.
async fn written_before_history(path: &std::path::Path) {
    let store = SqliteStore::open(path, "q").await.unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER faseng_runs_history_insert; DROP TRIGGER faseng_runs_history_update; \
         DROP TRIGGER faseng_runs_history_delete; DROP TABLE faseng_run_history;",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let old = RunRecord {
        app: "legacy".into(),
        ..crate::contract::run("legacy/h/1")
    };
    assert!(store.create_run(&old).await.unwrap());
    drop(store);
    let store = SqliteStore::open(path, "q").await.unwrap();
    let legacy = RunQuery {
        app: Some("legacy".into()),
        ..RunQuery::default()
    };
    assert_eq!(store.history(&legacy).await.unwrap().items, [old]);
}

/// A stats-ready run: deploy `id` of `demo` in staging, received `mins` minutes after 10:00,
/// ended in `state` after 30 seconds.
fn counted_run(id: u64, mins: i64, state: crate::RunState) -> RunRecord {
    let at: DateTime<Utc> = "2026-12-06T10:00:00.123456789Z".parse().unwrap();
    let received = at + chrono::Duration::minutes(mins);
    RunRecord {
        app: "demo".into(),
        deployment_id: id,
        state,
        received_at: received,
        started_at: Some(received),
        finished_at: Some(received + chrono::Duration::milliseconds(30_500)),
        ..crate::contract::run(&RunRecord::key_for("o/r", id))
    }
}

/// A database whose history table has the shape from before the statistics (written by
/// the older triggers) is migrated at open: the table made anew and filled from the
/// records, the statistics read from it, the new triggers keeping it.
#[tokio::test]
async fn a_history_of_the_older_shape_is_migrated() {
    use crate::{RunState, Stats as _, StatsQuery, compute_env_stats};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let store = SqliteStore::open(&path, "q").await.unwrap();
    let first = counted_run(1, 0, RunState::Success);
    assert!(store.create_run(&first).await.unwrap());
    // Back to the older shape and its triggers, as the last release made them.
    sqlx::raw_sql(
        "DROP TRIGGER faseng_runs_history_insert; DROP TRIGGER faseng_runs_history_update;
         DROP TRIGGER faseng_runs_history_delete; DROP TABLE faseng_run_history;
         CREATE TABLE faseng_run_history (key TEXT PRIMARY KEY, app TEXT NOT NULL,
           environment TEXT NOT NULL, git_ref TEXT NOT NULL, at_ms INTEGER NOT NULL);
         CREATE INDEX faseng_run_history_at ON faseng_run_history(at_ms, key);
         CREATE INDEX faseng_run_history_app ON faseng_run_history(app, at_ms, key);
         INSERT INTO faseng_run_history (key, app, environment, git_ref, at_ms)
           SELECT key, json_extract(record, '$.app'), json_extract(record, '$.environment'),
             json_extract(record, '$.git_ref'),
             CAST(round(unixepoch(json_extract(record, '$.received_at'), 'subsec') * 1000) AS INTEGER)
           FROM faseng_runs;
         CREATE TRIGGER faseng_runs_history_insert AFTER INSERT ON faseng_runs
           BEGIN DELETE FROM faseng_run_history WHERE key = new.key;
           INSERT INTO faseng_run_history (key, app, environment, git_ref, at_ms) VALUES
             (new.key, json_extract(new.record, '$.app'), json_extract(new.record, '$.environment'),
              json_extract(new.record, '$.git_ref'),
              CAST(round(unixepoch(json_extract(new.record, '$.received_at'), 'subsec') * 1000) AS INTEGER));
           END;",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let second = counted_run(2, 5, RunState::Failure);
    assert!(store.create_run(&second).await.unwrap());
    drop(store);

    let store = SqliteStore::open(&path, "q").await.unwrap();
    let q = StatsQuery {
        app: "demo".into(),
        environment: None,
        since: "2026-12-06T00:00:00Z".parse().unwrap(),
        until: "2026-12-07T00:00:00Z".parse().unwrap(),
    };
    let runs = vec![first, second];
    let stats = store.env_stats(&q).await.unwrap();
    assert_eq!(stats, compute_env_stats(&runs, &q));
    assert_eq!((stats[0].deploys, stats[0].failures), (2, 1));
    assert_eq!(stats[0].median_secs, Some(30.5), "to the millisecond");
    let mut third = counted_run(3, 10, RunState::Success);
    third.rollback = Some(crate::RollbackMark {
        from: third.sha.clone(),
        to: "b".repeat(40),
    });
    store.put_run(&third).await.unwrap();
    let runs = [runs, vec![third]].concat();
    assert_eq!(
        store.env_stats(&q).await.unwrap(),
        compute_env_stats(&runs, &q)
    );
    assert_eq!(
        store
            .history(&RunQuery::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    // Opening again keeps the table as it is.
    drop(store);
    let store = SqliteStore::open(&path, "q").await.unwrap();
    assert_eq!(store.env_stats(&q).await.unwrap()[0].deploys, 3);

    // The statistics read the counted rows of one app through their index.
    let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {}",
        super::stats::ENV_STATS
    )))
    .bind("demo")
    .bind(None::<String>)
    .bind(0)
    .bind(i64::MAX)
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(3))
    .collect();
    assert!(
        plan.iter()
            .any(|step| step.contains("COVERING INDEX faseng_run_history_counted")),
        "{plan:?}"
    );
}
