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
