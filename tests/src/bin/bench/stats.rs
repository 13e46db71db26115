//! `bench stats`: a store holding 100,000 finished runs (10 apps × 3 environments, a year of
//! history, mixed tasks and states, refusals, rollbacks) on Redis and on SQLite; then
//! `env_stats` and `daily_stats` for one app over the default 30 days and over the whole
//! year, each measured 25 times after 2 warm-up calls (median and p90). Both backends'
//! answers are checked against the reference computation over the same records first.
//!
//! `BENCH_STATS_KEEP=<file>` keeps a copy of the filled SQLite database.
//!
//! The runs are written the way faseng writes them: on Redis through `put_run` (its script
//! keeps the statistics' sorted sets), on SQLite as rows of the runs table in large
//! transactions (its triggers keep the history table the statistics read).

use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use e2e::bench::{ms, round, table};
use e2e::redis_server::RedisServer;
use faseng::store::prelude::*;
use faseng::store::{
    RedisStore, RollbackMark, RunRecord, RunState, SqliteStore, StatsQuery, Store, compute_daily,
    compute_env_stats,
};
use futures::StreamExt as _;
use serde_json::{Value, json};

const RUNS: usize = 100_000;
const APPS: usize = 10;
const ENVS: [&str; 3] = ["edge", "staging", "production"];
/// The app the queries are about.
const APP: &str = "app-0";
const WARM_UP: usize = 2;
const SAMPLES: usize = 25;
const TARGET_MS: f64 = 50.0;

/// "Now" for the bench: the year of history ends here.
fn now() -> DateTime<Utc> {
    "2026-12-01T00:00:00Z".parse().expect("a time")
}

/// SplitMix64: the same history on every run of the bench.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The year of history: received times spread over the year, in order; per app and
/// environment a sha deployed after another, some failures and errors, refusals that never
/// started, lock tasks, and rollbacks (after most failures, and now and then after a
/// success) from the sha deployed before.
fn history() -> Vec<RunRecord> {
    let mut rng = Rng(2026);
    let year_ms = 365 * 86_400_000u64;
    let start = now() - chrono::Duration::days(365);
    let mut at: Vec<u64> = (0..RUNS).map(|_| rng.below(year_ms)).collect();
    at.sort_unstable();
    let mut last: std::collections::HashMap<(usize, usize), (String, bool)> = Default::default();
    at.into_iter()
        .enumerate()
        .map(|(i, at)| {
            let app = rng.below(APPS as u64) as usize;
            let env = rng.below(ENVS.len() as u64) as usize;
            let received = start + chrono::Duration::milliseconds(at as i64);
            let sha = format!("{:040x}", rng.next());
            let (task, state, refused) = match rng.below(100) {
                0..=2 => ("deploy:lock", RunState::Success, false),
                3..=5 => ("deploy:unlock", RunState::Success, false),
                6..=8 => ("deploy:migrate", RunState::Success, false),
                9..=15 => ("deploy", RunState::Failure, false),
                16..=17 => ("deploy", RunState::Error, false),
                18..=19 => ("deploy", RunState::Error, true),
                _ => ("deploy", RunState::Success, false),
            };
            let previous = last.get(&(app, env)).cloned();
            let rollback = previous.and_then(|(from, failed)| {
                (failed && rng.below(100) < 60 || rng.below(100) < 2).then(|| RollbackMark {
                    from,
                    to: sha.clone(),
                })
            });
            let started_at = (!refused)
                .then(|| received + chrono::Duration::milliseconds(rng.below(5_000) as i64));
            let finished_at = started_at
                .map(|s| s + chrono::Duration::milliseconds(30_000 + rng.below(900_000) as i64));
            if task == "deploy" && !refused {
                last.insert((app, env), (sha.clone(), state != RunState::Success));
            }
            let repo = format!("bench/app-{app}");
            RunRecord {
                key: RunRecord::key_for(&repo, i as u64),
                repo,
                deployment_id: i as u64,
                app: format!("app-{app}"),
                environment: ENVS[env].to_owned(),
                task: task.to_owned(),
                git_ref: "main".into(),
                sha,
                creator: "bench".into(),
                state,
                description: String::new(),
                received_at: received,
                started_at,
                finished_at,
                chat_ts: None,
                rollback,
                stages: Vec::new(),
            }
        })
        .collect()
}

/// On Redis: every run through `put_run`, 64 at a time.
async fn fill_redis(store: &RedisStore, runs: &[RunRecord]) -> anyhow::Result<()> {
    let mut writes = futures::stream::iter(runs)
        .map(|run| store.put_run(run))
        .buffer_unordered(64);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(())
}

/// On SQLite: rows of the runs table, 5,000 per transaction (the triggers keep the history).
async fn fill_sqlite(store: &SqliteStore, runs: &[RunRecord]) -> anyhow::Result<()> {
    for chunk in runs.chunks(5_000) {
        let mut tx = store.pool().begin().await?;
        for run in chunk {
            sqlx::query("INSERT INTO faseng_runs (key, record) VALUES (?, ?)")
                .bind(&run.key)
                .bind(serde_json::to_string(run)?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Median and p90 (nearest rank) of `samples`, in ms.
fn median_p90(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let rank = |num: usize, den: usize| samples[(samples.len() * num).div_ceil(den).max(1) - 1];
    (rank(1, 2), rank(9, 10))
}

/// The four queries: env_stats and daily_stats, over 30 days and over the year.
fn queries() -> [(&'static str, StatsQuery); 2] {
    let q = |days: i64| StatsQuery {
        app: APP.into(),
        environment: None,
        since: now() - chrono::Duration::days(days),
        until: now(),
    };
    [("30 days", q(30)), ("a year", q(365))]
}

/// Times every query on `store`: `(what, median ms, p90 ms)`.
async fn measure(store: &dyn Store) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let mut out = Vec::new();
    for (period, q) in queries() {
        for daily in [false, true] {
            let mut samples = Vec::with_capacity(SAMPLES);
            for i in 0..WARM_UP + SAMPLES {
                let started = Instant::now();
                if daily {
                    std::hint::black_box(store.daily_stats(&q).await?);
                } else {
                    std::hint::black_box(store.env_stats(&q).await?);
                }
                if i >= WARM_UP {
                    samples.push(ms(started.elapsed()));
                }
            }
            let (median, p90) = median_p90(&mut samples);
            let what = if daily { "daily_stats" } else { "env_stats" };
            out.push((format!("{what}, {period}"), median, p90));
        }
    }
    Ok(out)
}

/// Both answers of `store` are the reference computation's over `runs`.
async fn check(store: &dyn Store, runs: &[RunRecord], backend: &str) -> anyhow::Result<()> {
    for (period, q) in queries() {
        anyhow::ensure!(
            store.env_stats(&q).await? == compute_env_stats(runs, &q),
            "{backend}: env_stats over {period} differ from the reference"
        );
        anyhow::ensure!(
            store.daily_stats(&q).await? == compute_daily(runs, &q),
            "{backend}: daily_stats over {period} differ from the reference"
        );
    }
    Ok(())
}

pub async fn bench_stats() -> anyhow::Result<Value> {
    let runs = history();
    let in_app = |days: i64| {
        let since = now() - chrono::Duration::days(days);
        runs.iter()
            .filter(|r| r.app == APP && r.received_at >= since)
            .count()
    };
    let counted = compute_env_stats(&runs, &queries()[1].1)
        .iter()
        .map(|s| s.deploys)
        .sum::<u64>();
    let (app_30d, app_year) = (in_app(30), in_app(365));

    let redis =
        RedisServer::start().context("redis-server is needed (apt install redis-server)")?;
    let conn = faseng::store::redis_connect(&redis.url()).await?;
    let on_redis = RedisStore::new(conn, "bench");
    let started = Instant::now();
    fill_redis(&on_redis, &runs).await?;
    let redis_fill = started.elapsed().as_secs_f64();
    check(&on_redis, &runs, "redis").await?;
    let redis_times = measure(&on_redis).await?;

    let dir = tempfile::tempdir()?;
    let on_sqlite = SqliteStore::open(&dir.path().join("stats.db"), "bench").await?;
    let started = Instant::now();
    fill_sqlite(&on_sqlite, &runs).await?;
    let sqlite_fill = started.elapsed().as_secs_f64();
    // BENCH_STATS_KEEP=<file> keeps a copy of the filled database (to look at query plans).
    if let Some(keep) = std::env::var_os("BENCH_STATS_KEEP") {
        let keep = keep.to_str().context("BENCH_STATS_KEEP is not UTF-8")?;
        sqlx::query("VACUUM INTO ?")
            .bind(keep)
            .execute(on_sqlite.pool())
            .await?;
    }
    check(&on_sqlite, &runs, "sqlite").await?;
    let sqlite_times = measure(&on_sqlite).await?;

    let mut rows = Vec::new();
    let mut report = serde_json::Map::new();
    for (backend, times, fill) in [
        ("Redis", &redis_times, redis_fill),
        ("SQLite", &sqlite_times, sqlite_fill),
    ] {
        let mut figures = serde_json::Map::new();
        for (what, median, p90) in times {
            rows.push((
                format!("{backend}: {what}"),
                format!("{:.2} ms (p90 {:.2} ms)", median, p90),
            ));
            figures.insert(
                what.clone(),
                json!({"median_ms": round(*median), "p90_ms": round(*p90)}),
            );
        }
        figures.insert("fill_s".into(), json!(round(fill)));
        report.insert(backend.to_lowercase(), Value::Object(figures));
    }
    let target = format!("≤ {TARGET_MS:.0} ms (median)");
    let table_rows: Vec<(&str, String, &str)> = rows
        .iter()
        .map(|(what, value)| (what.as_str(), value.clone(), target.as_str()))
        .collect();
    println!(
        "\n{}",
        table(
            &format!(
                "stats ({RUNS} runs over a year, {APPS} apps × {} environments; {APP}: {app_year} runs in the year, {app_30d} in the last 30 days; {SAMPLES} calls each, medians)",
                ENVS.len()
            ),
            &table_rows
        )
    );
    println!(
        "(filled Redis in {redis_fill:.1} s through put_run, SQLite in {sqlite_fill:.1} s; {counted} counted deploys of {APP} in the year)"
    );
    let worst = redis_times
        .iter()
        .chain(&sqlite_times)
        .map(|(_, median, _)| *median)
        .fold(0.0, f64::max);
    report.insert("runs".into(), json!(RUNS));
    report.insert("apps".into(), json!(APPS));
    report.insert("environments".into(), json!(ENVS));
    report.insert(
        "app".into(),
        json!({"name": APP, "runs_year": app_year, "runs_30d": app_30d, "counted_year": counted}),
    );
    report.insert("samples".into(), json!(SAMPLES));
    report.insert("target_median_ms".into(), json!(TARGET_MS));
    report.insert("worst_median_ms".into(), json!(round(worst)));
    report.insert("met".into(), json!(worst <= TARGET_MS));
    Ok(Value::Object(report))
}
