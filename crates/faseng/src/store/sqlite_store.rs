//! The SQLite store: tables next to apalis's own in the same database file (WAL,
//! `synchronous = NORMAL`), for one machine.

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
    RunRecord, Settle, StartMarker, Store, StoredMarker,
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
";

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
    /// Opens (creating if needed) the database: runs apalis's migrations on a throwaway pool
    /// (its `setup` turns durability off), then opens the real pool with WAL and
    /// `synchronous = NORMAL`, and creates faseng's tables.
    pub async fn open(path: &Path, queue: &str) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10));
        {
            let setup_pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(base.clone())
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            apalis_sqlite::SqliteStorage::setup(&setup_pool)
                .await
                .context("running the queue migrations")?;
            setup_pool.close().await;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(
                base.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
            )
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .context("creating faseng tables")?;
        sqlx::raw_sql(super::sqlite_outbox::SCHEMA)
            .execute(&pool)
            .await
            .context("creating the outbox tables")?;
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
        sqlx::query("INSERT OR REPLACE INTO faseng_runs (key, record) VALUES (?, ?)")
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
        assert_eq!(sync, 1, "synchronous must be NORMAL, not OFF");
    }
}
