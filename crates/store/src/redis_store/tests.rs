//! What the contract cannot see on Redis: old data indexed, apalis's records swept,
//! the durability check.

use super::*;

#[tokio::test]
async fn what_only_redis_keeps_holds() {
    let Some(server) = crate::contract::RedisServer::start() else {
        return;
    };
    let conn = connect(&server.url()).await.unwrap();
    let store = RedisStore::new(conn.clone(), "q");
    crate::contract::retention(&store).await;

    // A line written before the member set existed is indexed on its first join.
    let _: i64 = conn
        .clone()
        .rpush(k("line", "old/edge"), &["x", "y"])
        .await
        .unwrap();
    store.line_join("old/edge", "x").await.unwrap();
    assert_eq!(store.line("old/edge").await.unwrap(), ["x", "y"]);
    store.line_join("old/edge", "z").await.unwrap();
    store.line_leave("old/edge", "y").await.unwrap();
    store.line_join("old/edge", "x").await.unwrap();
    assert_eq!(store.line("old/edge").await.unwrap(), ["x", "z"]);

    retention_details(&store, conn.clone()).await;
    written_before_history(&store, conn.clone()).await;
    durability(conn).await;
}

/// Runs and locks written before the history and lock indexes existed (by an older
/// faseng) are found: indexed once, on first use.
async fn written_before_history(store: &RedisStore, mut conn: ConnectionManager) {
    let old = RunRecord {
        app: "legacy".into(),
        ..crate::contract::run("legacy/h/1")
    };
    // A lock as the older faseng wrote it: no expiry.
    let old_lock = r#"{"user":"U0OLD","user_name":"old","reason":"r","at":"2026-01-01T00:00:00Z"}"#;
    let _: () = redis::pipe()
        .del(HISTORY_INDEXED)
        .ignore()
        .del("faseng:locks_indexed")
        .ignore()
        .set(k("run", &old.key), serde_json::to_string(&old).unwrap())
        .ignore()
        .set(k("lock", "legacy/edge"), old_lock)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let legacy = RunQuery {
        app: Some("legacy".into()),
        ..RunQuery::default()
    };
    assert_eq!(store.history(&legacy).await.unwrap().items, [old]);
    let locks = store.locks().await.unwrap();
    let (_, lock) = locks
        .iter()
        .find(|(line, _)| line == "legacy/edge")
        .expect("the old lock is listed");
    assert_eq!((lock.user.as_str(), lock.expires_at), ("U0OLD", None));
}

/// The start-up check reads Redis's persistence settings, and says when it cannot.
async fn durability(mut conn: ConnectionManager) {
    let warning = durability_warning(&conn).await.unwrap();
    assert!(
        warning
            .as_ref()
            .is_some_and(|w| w.contains("appendonly no")),
        "this test server runs without an append-only file: {warning:?}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("always")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(durability_warning(&conn).await.unwrap(), None);
    // A Redis that refuses CONFIG (as managed services do).
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-config")
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused = durability_warning(&conn).await.unwrap_err();
    assert!(
        format!("{refused:#}")
            .to_lowercase()
            .contains("no permissions"),
        "{refused:#}"
    );
}

/// What the contract cannot see: status histories and apalis's records go, and keys
/// written before retention kept its indexes are indexed and counted once.
async fn retention_details(store: &RedisStore, mut conn: ConnectionManager) {
    let histories: Vec<String> = redis::cmd("KEYS")
        .arg("faseng:status_events:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        histories,
        ["faseng:status_events:s/old/4"],
        "only the running run's history is left"
    );

    let now = Utc::now();
    let day = chrono::Duration::days(1);
    let cfg = apalis_redis::Config::default().queue("q");
    let (data, meta) = (cfg.job_data_hash(), cfg.job_meta_hash());
    let job = |id: &str, status: &str, done_at: Option<i64>| {
        let mut pipe = redis::pipe();
        pipe.hset(&data, id, "{}").ignore();
        pipe.hset(format!("{meta}:{id}"), "status", status).ignore();
        if let Some(at) = done_at {
            pipe.hset(format!("{meta}:{id}"), "done_at", at).ignore();
        }
        pipe
    };
    let old = (now - day * 2).timestamp();
    for pipe in [
        job("old-done", "Done", Some(old)),
        job("new-done", "Done", Some(now.timestamp())),
        job("old-dead", "Killed", Some(old)),
        job("waiting", "Pending", None),
    ] {
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
    let _: () = redis::pipe()
        .sadd(cfg.done_jobs_set(), &["old-done", "new-done", "vacuumed"])
        .ignore()
        .sadd(cfg.dead_jobs_set(), "old-dead")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let swept = store.sweep(now - day).await.unwrap();
    assert_eq!(swept.jobs, 2, "{swept:?}");
    let mut done: Vec<String> = conn.smembers(cfg.done_jobs_set()).await.unwrap();
    done.sort();
    assert_eq!(
        done,
        ["new-done"],
        "the vacuumed id leaves the done set too"
    );
    let dead: Vec<String> = conn.smembers(cfg.dead_jobs_set()).await.unwrap();
    assert!(dead.is_empty());
    let mut left: Vec<String> = conn.hkeys(&data).await.unwrap();
    left.sort();
    assert_eq!(left, ["new-done", "waiting"]);
    let gone: bool = conn.exists(format!("{meta}:old-done")).await.unwrap();
    assert!(!gone);

    // Keys from before the indexes: found, counted, swept.
    let before = store.size().await.unwrap();
    let legacy = RunRecord {
        state: crate::RunState::Failure,
        received_at: now - day * 3,
        finished_at: Some(now - day * 3),
        ..crate::contract::run("legacy/r/1")
    };
    let _: () = redis::pipe()
        .del(INDEXED)
        .ignore()
        .set(
            k("run", &legacy.key),
            serde_json::to_string(&legacy).unwrap(),
        )
        .ignore()
        .rpush(k("log", &legacy.key), &["one", "two"])
        .ignore()
        .rpush(k("status_events", "legacy/r/2"), "{}")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.size().await.unwrap(), before, "not indexed yet");
    let swept = store.sweep(now - day).await.unwrap();
    assert_eq!((swept.runs, swept.log_bytes), (1, 8), "{swept:?}");
    assert_eq!(
        swept.status_histories, 0,
        "an unindexed history counts from now"
    );
    assert_eq!(store.size().await.unwrap(), before);
    assert_eq!(store.sweep(now + day).await.unwrap().status_histories, 1);
}

/// Runs written before the statistics' sets existed (by an older faseng) are put into them
/// on the first statistics query; a rewrite then replaces a run's member.
#[tokio::test]
async fn runs_written_before_the_statistics_are_counted() {
    use crate::{RunState, Stats as _, StatsQuery, compute_env_stats};
    let Some(server) = crate::contract::RedisServer::start() else {
        return;
    };
    let mut conn = connect(&server.url()).await.unwrap();
    let store = RedisStore::new(conn.clone(), "q");
    let t0: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
    let old = |id: u64, state: RunState| {
        let at = t0 + chrono::Duration::minutes(id as i64);
        RunRecord {
            app: "legacy".into(),
            deployment_id: id,
            state,
            received_at: at,
            started_at: Some(at),
            finished_at: Some(at + chrono::Duration::seconds(id as i64 * 10)),
            ..crate::contract::run(&RunRecord::key_for("o/r", id))
        }
    };
    let runs = vec![old(1, RunState::Success), old(2, RunState::Failure)];
    let mut pipe = redis::pipe();
    for r in &runs {
        pipe.set(k("run", &r.key), serde_json::to_string(r).unwrap())
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let q = StatsQuery {
        app: "legacy".into(),
        environment: None,
        since: t0,
        until: t0 + chrono::Duration::days(1),
    };
    let stats = store.env_stats(&q).await.unwrap();
    assert_eq!(stats, compute_env_stats(&runs, &q));
    assert_eq!(stats[0].deploys, 2);
    let indexed: bool = conn.exists(stats::STATS_INDEXED).await.unwrap();
    assert!(indexed);
    // A rewrite replaces the run's member rather than adding one.
    let fixed = RunRecord {
        state: RunState::Success,
        ..runs[1].clone()
    };
    store.put_run(&fixed).await.unwrap();
    let stats = store.env_stats(&q).await.unwrap();
    assert_eq!((stats[0].deploys, stats[0].successes), (2, 2));
    // A run that no longer counts (a record rewritten as queued) leaves the set.
    let requeued = RunRecord {
        state: RunState::Queued,
        ..fixed
    };
    store.put_run(&requeued).await.unwrap();
    assert_eq!(store.env_stats(&q).await.unwrap()[0].deploys, 1);
    let members: u64 = conn.zcard("faseng:stats:6:legacy:edge").await.unwrap();
    assert_eq!(members, 1);
}
