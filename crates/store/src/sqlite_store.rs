//! The SQLite store: tables next to apalis's own in the same database file (WAL,
//! `synchronous = FULL`: a delivery acknowledged with 202 survives a power cut), for one
//! machine.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{
    AcceptItem, Accepted, ClaimedLane, DELIVERY_TTL, DURATIONS_KEPT, EnvLock, LaneKey, OutboxEntry,
    RunRecord, SWEEP_BATCH, Settle, StartMarker, Store, StoreSize, StoredMarker, Swept, expired,
    log_line_bytes,
};

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS faseng_deliveries (id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS faseng_deliveries_seen_at ON faseng_deliveries(seen_at);
CREATE TABLE IF NOT EXISTS faseng_runs (key TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faseng_started (key TEXT PRIMARY KEY, marker TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faseng_line (seq INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL, run TEXT NOT NULL, UNIQUE(line, run));
CREATE TABLE IF NOT EXISTS faseng_locks (line TEXT PRIMARY KEY, lock TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faseng_durations (seq INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL, secs REAL NOT NULL);
CREATE INDEX IF NOT EXISTS faseng_durations_line ON faseng_durations(line, seq);
CREATE TABLE IF NOT EXISTS faseng_logs (run TEXT NOT NULL, n INTEGER NOT NULL, text TEXT NOT NULL, PRIMARY KEY(run, n));
CREATE TABLE IF NOT EXISTS faseng_status_events (run TEXT NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faseng_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faseng_jobs (key TEXT PRIMARY KEY, job TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faseng_provider_stopped (key TEXT PRIMARY KEY, started_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faseng_duties (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS faseng_runs_received ON faseng_runs(json_extract(record, '$.received_at'));
CREATE INDEX IF NOT EXISTS faseng_status_events_run ON faseng_status_events(run, at);
CREATE TABLE IF NOT EXISTS faseng_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO faseng_counters (name, value) SELECT 'runs', COUNT(*) FROM faseng_runs;
INSERT OR IGNORE INTO faseng_counters (name, value)
  SELECT 'log_bytes', COALESCE(SUM(length(CAST(text AS BLOB)) + 1), 0) FROM faseng_logs;
CREATE TRIGGER IF NOT EXISTS faseng_runs_counted AFTER INSERT ON faseng_runs
  BEGIN UPDATE faseng_counters SET value = value + 1 WHERE name = 'runs'; END;
CREATE TRIGGER IF NOT EXISTS faseng_runs_uncounted AFTER DELETE ON faseng_runs
  BEGIN UPDATE faseng_counters SET value = value - 1 WHERE name = 'runs'; END;
";

/// A page of runs received before a cutoff (?1), after the (time, key) last seen (?2, ?3),
/// in the order of `faseng_runs_received` (the expression is spelt as the index has it).
const SWEEP_PAGE: &str = "SELECT json_extract(record, '$.received_at') AS at, key, record \
     FROM faseng_runs WHERE json_extract(record, '$.received_at') < ?1 \
     AND (json_extract(record, '$.received_at'), key) > (?2, ?3) \
     ORDER BY json_extract(record, '$.received_at'), key LIMIT ?4";

/// A time as the runs index compares it (RFC 3339 as the records hold it, to the second:
/// a record within the same second compares before it, and is then checked exactly).
fn index_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    queue: String,
}

/// The files of the database at `path` (the file, its WAL and shared-memory index).
pub fn database_files(path: &Path) -> [std::path::PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// Makes the database files faseng's alone (0600): other apps' logs and faseng's state are
/// in them.
fn make_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for file in database_files(path) {
        if file.exists()
            && let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(error = %e, file = %file.display(), "could not make the store private");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database with WAL and `synchronous = FULL` (a commit
    /// is on disk before it returns, so an acknowledged delivery survives a power cut; apalis's
    /// own `setup` would turn syncing off, so its migrations are run here instead), runs
    /// apalis's migrations and creates faseng's tables.
    pub async fn open(path: &Path, queue: &str) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(
                base.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        apalis_sqlite::SqliteStorage::migrations()
            .run(&pool)
            .await
            .context("running the queue migrations")?;
        // One transaction: the counters start from the rows there are, and their triggers
        // exist from then on (two processes opening at once cannot count a row twice).
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *tx)
            .await
            .context("creating faseng tables")?;
        sqlx::raw_sql(super::sqlite_outbox::SCHEMA)
            .execute(&mut *tx)
            .await
            .context("creating the outbox tables")?;
        tx.commit().await.context("creating faseng tables")?;
        make_private(path);
        Ok(Self {
            pool,
            queue: queue.to_owned(),
        })
    }

    /// The pool, shared with the apalis queue.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(v)?)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> anyhow::Result<T> {
    serde_json::from_str(s).context("reading a stored record")
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn accept_runs(&self, items: &[AcceptItem]) -> anyhow::Result<Vec<Accepted>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let records = items
            .iter()
            .map(|i| to_json(&i.run))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let now = Utc::now().timestamp();
        // One write transaction for the batch (BEGIN IMMEDIATE: no upgrade deadlock with
        // another writer); dropping it unfinished rolls everything back.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM faseng_deliveries WHERE seen_at < ?")
            .bind(now - DELIVERY_TTL.as_secs() as i64)
            .execute(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for (item, record) in items.iter().zip(&records) {
            let fresh_delivery =
                sqlx::query("INSERT OR IGNORE INTO faseng_deliveries (id, seen_at) VALUES (?, ?)")
                    .bind(&item.delivery_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            let created =
                sqlx::query("INSERT OR IGNORE INTO faseng_runs (key, record) VALUES (?, ?)")
                    .bind(&item.run.key)
                    .bind(record)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            if created {
                sqlx::query("INSERT OR IGNORE INTO faseng_line (line, run) VALUES (?, ?)")
                    .bind(&item.line)
                    .bind(&item.run.key)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT OR REPLACE INTO faseng_jobs (key, job) VALUES (?, ?)")
                    .bind(&item.run.key)
                    .bind(&item.job)
                    .execute(&mut *tx)
                    .await?;
            }
            out.push(Accepted {
                fresh_delivery,
                created,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn release_delivery(&self, delivery_id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM faseng_deliveries WHERE id = ?")
            .bind(delivery_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_run(&self, run: &RunRecord) -> anyhow::Result<bool> {
        let r = sqlx::query("INSERT OR IGNORE INTO faseng_runs (key, record) VALUES (?, ?)")
            .bind(&run.key)
            .bind(to_json(run)?)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn put_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        // An upsert, not INSERT OR REPLACE: a replace deletes without firing the delete
        // trigger, and the run count would drift.
        sqlx::query(
            "INSERT INTO faseng_runs (key, record) VALUES (?, ?) \
             ON CONFLICT(key) DO UPDATE SET record = excluded.record",
        )
        .bind(&run.key)
        .bind(to_json(run)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_run(&self, key: &str) -> anyhow::Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT record FROM faseng_runs WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_json(r.get::<&str, _>(0))).transpose()
    }

    async fn delete_run(&self, key: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM faseng_runs WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn mark_started(
        &self,
        key: &str,
        marker: &StartMarker,
    ) -> anyhow::Result<Option<StartMarker>> {
        let r = sqlx::query("INSERT OR IGNORE INTO faseng_started (key, marker) VALUES (?, ?)")
            .bind(key)
            .bind(to_json(marker)?)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT marker FROM faseng_started WHERE key = ?")
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(from_json(row.get::<&str, _>(0))?))
    }

    async fn update_started(&self, key: &str, marker: &StartMarker) -> anyhow::Result<bool> {
        let r = sqlx::query(
            "UPDATE faseng_started SET marker = ? WHERE key = ? AND json_extract(marker, '$.worker') = ?",
        )
        .bind(to_json(marker)?)
        .bind(key)
        .bind(&marker.worker)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn started(&self, key: &str) -> anyhow::Result<Option<StoredMarker>> {
        let row = sqlx::query("SELECT marker FROM faseng_started WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let raw: String = r.get(0);
            Ok(StoredMarker {
                marker: from_json(&raw)?,
                raw,
            })
        })
        .transpose()
    }

    async fn take_over_started(
        &self,
        key: &str,
        expected: &StoredMarker,
        new: &StartMarker,
    ) -> anyhow::Result<bool> {
        let r = sqlx::query("UPDATE faseng_started SET marker = ? WHERE key = ? AND marker = ?")
            .bind(to_json(new)?)
            .bind(key)
            .bind(&expected.raw)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn note_provider_stopped(&self, key: &str, started_by: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO faseng_provider_stopped (key, started_by) VALUES (?, ?)",
        )
        .bind(key)
        .bind(started_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn provider_stopped(&self, key: &str, started_by: &str) -> anyhow::Result<bool> {
        let row =
            sqlx::query("SELECT 1 FROM faseng_provider_stopped WHERE key = ? AND started_by = ?")
                .bind(key)
                .bind(started_by)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    async fn job(&self, key: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT job FROM faseng_jobs WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn line_heads(&self) -> anyhow::Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT l.line, l.run FROM faseng_line l \
             JOIN (SELECT line, MIN(seq) AS seq FROM faseng_line GROUP BY line) h \
             ON l.line = h.line AND l.seq = h.seq",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn line_join(&self, line: &str, key: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT OR IGNORE INTO faseng_line (line, run) VALUES (?, ?)")
            .bind(line)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn line_leave(&self, line: &str, key: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM faseng_line WHERE line = ? AND run = ?")
            .bind(line)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn line(&self, line: &str) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT run FROM faseng_line WHERE line = ? ORDER BY seq")
            .bind(line)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    async fn env_lock(&self, line: &str) -> anyhow::Result<Option<EnvLock>> {
        let row = sqlx::query("SELECT lock FROM faseng_locks WHERE line = ?")
            .bind(line)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_json(r.get::<&str, _>(0))).transpose()
    }

    async fn set_env_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<EnvLock> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT lock FROM faseng_locks WHERE line = ?")
            .bind(line)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            let held: EnvLock = from_json(row.get::<&str, _>(0))?;
            if held.user != lock.user {
                return Ok(held);
            }
        }
        sqlx::query("INSERT OR REPLACE INTO faseng_locks (line, lock) VALUES (?, ?)")
            .bind(line)
            .bind(to_json(lock)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(lock.clone())
    }

    async fn clear_env_lock(&self, line: &str, holder: &str) -> anyhow::Result<Option<EnvLock>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT lock FROM faseng_locks WHERE line = ?")
            .bind(line)
            .fetch_optional(&mut *tx)
            .await?;
        let held: Option<EnvLock> = row.map(|r| from_json(r.get::<&str, _>(0))).transpose()?;
        if held.as_ref().is_some_and(|l| l.user == holder) {
            sqlx::query("DELETE FROM faseng_locks WHERE line = ?")
                .bind(line)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn push_duration(&self, line: &str, secs: f64) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO faseng_durations (line, secs) VALUES (?, ?)")
            .bind(line)
            .bind(secs)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM faseng_durations WHERE line = ?1 AND seq NOT IN \
             (SELECT seq FROM faseng_durations WHERE line = ?1 ORDER BY seq DESC LIMIT ?2)",
        )
        .bind(line)
        .bind(DURATIONS_KEPT as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn durations(&self, line: &str) -> anyhow::Result<Vec<f64>> {
        let rows = sqlx::query(
            "SELECT secs FROM faseng_durations WHERE line = ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(line)
        .bind(DURATIONS_KEPT as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<f64, _>(0)).collect())
    }

    async fn append_log(&self, key: &str, lines: &[String]) -> anyhow::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let next: i64 =
            sqlx::query("SELECT COALESCE(MAX(n) + 1, 0) FROM faseng_logs WHERE run = ?")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?
                .get(0);
        for (i, line) in lines.iter().enumerate() {
            sqlx::query("INSERT INTO faseng_logs (run, n, text) VALUES (?, ?, ?)")
                .bind(key)
                .bind(next + i as i64)
                .bind(line)
                .execute(&mut *tx)
                .await?;
        }
        let bytes: u64 = lines.iter().map(|l| log_line_bytes(l)).sum();
        sqlx::query("UPDATE faseng_counters SET value = value + ? WHERE name = 'log_bytes'")
            .bind(bytes as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn read_log(&self, key: &str, from: usize) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT text FROM faseng_logs WHERE run = ? AND n >= ? ORDER BY n")
            .bind(key)
            .bind(from as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    async fn record_status_event(
        &self,
        key: &str,
        state: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO faseng_status_events (run, state, at) VALUES (?, ?, ?)")
            .bind(key)
            .bind(state)
            .bind(at.to_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn queue_depth(&self) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM Jobs WHERE job_type = ? AND status IN ('Pending', 'Queued', 'Running')")
            .bind(&self.queue)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(n.max(0) as u64)
    }

    async fn link_key(&self, fresh: &str) -> anyhow::Result<String> {
        sqlx::query("INSERT OR IGNORE INTO faseng_meta (name, value) VALUES ('link_key', ?)")
            .bind(fresh)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query("SELECT value FROM faseng_meta WHERE name = 'link_key'")
                .fetch_one(&self.pool)
                .await?
                .get(0),
        )
    }

    async fn outbox_push(
        &self,
        run: &str,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        super::sqlite_outbox::push(&self.pool, run, fence, None, entries).await
    }

    async fn finish_run(
        &self,
        record: &RunRecord,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        super::sqlite_outbox::push(&self.pool, &record.key, fence, Some(record), entries).await
    }

    async fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<LaneKey>> {
        super::sqlite_outbox::due(&self.pool, now, limit).await
    }

    async fn outbox_claim(
        &self,
        lane: &LaneKey,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Option<ClaimedLane>> {
        super::sqlite_outbox::claim(&self.pool, lane, holder, now, until, limit).await
    }

    async fn outbox_settle(
        &self,
        lane: &LaneKey,
        holder: &str,
        settle: &Settle,
    ) -> anyhow::Result<Option<u64>> {
        super::sqlite_outbox::settle(&self.pool, lane, holder, settle).await
    }

    async fn outbox_depth(&self) -> anyhow::Result<u64> {
        super::sqlite_outbox::depth(&self.pool).await
    }

    async fn acquire_duty(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<bool> {
        let until = now + chrono::Duration::from_std(ttl).context("a duty lease's length")?;
        // One statement: insert, or take over when the lease is ours or has run out.
        let r = sqlx::query(
            "INSERT INTO faseng_duties (name, holder, until_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
             WHERE faseng_duties.holder = excluded.holder OR faseng_duties.until_ms <= ?4",
        )
        .bind(name)
        .bind(holder)
        .bind(until.timestamp_millis())
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn release_duty(&self, name: &str, holder: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM faseng_duties WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sweep(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Swept> {
        let mut swept = Swept::default();
        // Runs received before the cutoff, a page at a time in index order.
        let mut after: Option<(String, String)> = None;
        loop {
            let page = sqlx::query(SWEEP_PAGE)
                .bind(index_time(cutoff))
                .bind(after.as_ref().map_or("", |a| a.0.as_str()))
                .bind(after.as_ref().map_or("", |a| a.1.as_str()))
                .bind(SWEEP_BATCH as i64)
                .fetch_all(&self.pool)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.get::<String, _>(0), last.get::<String, _>(1)));
            let expired_runs: Vec<(String, String)> = page
                .iter()
                .filter_map(|row| {
                    let (key, text) = (row.get::<String, _>(1), row.get::<String, _>(2));
                    match from_json::<RunRecord>(&text) {
                        Ok(run) => expired(&run, cutoff).then_some((key, text)),
                        Err(e) => {
                            tracing::warn!(run = %key, error = %format!("{e:#}"), "retention: an unreadable run record is kept");
                            None
                        }
                    }
                })
                .collect();
            self.delete_runs(&expired_runs, &mut swept).await?;
            if page.len() < SWEEP_BATCH {
                break;
            }
        }
        // Histories of deployments with no run, whose newest event is older than the cutoff.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let orphans = sqlx::query(
            "DELETE FROM faseng_status_events WHERE run IN ( \
               SELECT run FROM faseng_status_events \
               WHERE NOT EXISTS (SELECT 1 FROM faseng_runs WHERE key = run) \
               GROUP BY run HAVING MAX(at) < ?) RETURNING run",
        )
        .bind(cutoff.to_rfc3339())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut runs: Vec<String> = orphans.iter().map(|r| r.get(0)).collect();
        runs.sort();
        runs.dedup();
        swept.status_histories += runs.len() as u64;
        // apalis's finished jobs (a failed job with attempts left may still run again).
        loop {
            let n = sqlx::query(
                "DELETE FROM Jobs WHERE rowid IN (SELECT rowid FROM Jobs \
                 WHERE job_type = ? AND done_at IS NOT NULL AND done_at < ? \
                 AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts)) \
                 LIMIT ?)",
            )
            .bind(&self.queue)
            .bind(cutoff.timestamp())
            .bind(SWEEP_BATCH as i64 * 5)
            .execute(&self.pool)
            .await?
            .rows_affected();
            swept.jobs += n;
            if n < SWEEP_BATCH as u64 * 5 {
                break;
            }
        }
        Ok(swept)
    }

    async fn size(&self) -> anyhow::Result<StoreSize> {
        let rows = sqlx::query("SELECT name, value FROM faseng_counters")
            .fetch_all(&self.pool)
            .await?;
        let mut size = StoreSize::default();
        for row in rows {
            let value = row.get::<i64, _>(1).max(0) as u64;
            match row.get::<&str, _>(0) {
                "runs" => size.runs = value,
                "log_bytes" => size.log_bytes = value,
                _ => {}
            }
        }
        Ok(size)
    }
}

/// How many log bytes one sweep transaction deletes at most (it holds the write lock).
const SWEEP_TX_BYTES: u64 = 16 << 20;

impl SqliteStore {
    /// Deletes runs a sweep chose, each only if its record is still as read, a few
    /// transactions' worth at a time.
    async fn delete_runs(
        &self,
        runs: &[(String, String)],
        swept: &mut Swept,
    ) -> anyhow::Result<()> {
        let mut pending = runs.iter().peekable();
        while pending.peek().is_some() {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut bytes_in_tx = 0u64;
            while bytes_in_tx < SWEEP_TX_BYTES
                && let Some((key, seen)) = pending.next()
            {
                let deleted = sqlx::query("DELETE FROM faseng_runs WHERE key = ? AND record = ?")
                    .bind(key)
                    .bind(seen)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    continue;
                }
                let bytes: i64 = sqlx::query(
                    "SELECT COALESCE(SUM(length(CAST(text AS BLOB)) + 1), 0) FROM faseng_logs WHERE run = ?",
                )
                .bind(key)
                .fetch_one(&mut *tx)
                .await?
                .get(0);
                for table in [
                    "DELETE FROM faseng_logs WHERE run = ?",
                    "DELETE FROM faseng_started WHERE key = ?",
                    "DELETE FROM faseng_status_events WHERE run = ?",
                    "DELETE FROM faseng_jobs WHERE key = ?",
                    "DELETE FROM faseng_provider_stopped WHERE key = ?",
                ] {
                    sqlx::query(table).bind(key).execute(&mut *tx).await?;
                }
                sqlx::query(
                    "UPDATE faseng_counters SET value = value - ? WHERE name = 'log_bytes'",
                )
                .bind(bytes)
                .execute(&mut *tx)
                .await?;
                swept.runs += 1;
                swept.log_bytes += bytes.max(0) as u64;
                bytes_in_tx += bytes.max(0) as u64;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_contract_holds_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("sub/f.db"), "q")
            .await
            .unwrap();
        super::super::contract::exercise(&store).await;
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
            "EXPLAIN QUERY PLAN {SWEEP_PAGE}"
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
}
