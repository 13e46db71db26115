//! The SQLite store: tables next to apalis's own in the same database file (WAL,
//! `synchronous = FULL`: a delivery acknowledged with 202 survives a power cut), for one
//! machine.

mod audit;
mod deliveries;
mod desk_line;
mod duties;
mod freezes;
mod lines;
mod locks;
mod logs;
mod outbox;
mod requests;
mod retention;
mod runs;
mod stats;
#[cfg(test)]
mod tests;
mod tickets;
mod web_actions;

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

use crate::*;

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

/// Milliseconds since the epoch of a time as run records hold it (RFC 3339 in UTC with a
/// `Z` and up to nine fractional digits), truncated as `DateTime::timestamp_millis` does;
/// `NULL` for `NULL`.
macro_rules! ms_of {
    ($t:literal) => {
        concat!(
            "(unixepoch(substr(",
            $t,
            ", 1, 19)) * 1000 + CASE WHEN substr(",
            $t,
            ", 20, 1) = '.' THEN CAST(substr(rtrim(substr(",
            $t,
            ", 21), 'Z') || '00', 1, 3) AS INTEGER) ELSE 0 END)"
        )
    };
}

/// The history row of each `(key, record)` of `$source`: what history queries select by,
/// and what the statistics need (`counted` as [`crate::stats::counted`] has it, times in ms).
macro_rules! history_rows {
    ($source:literal) => {
        concat!(
            "SELECT key, app, environment, git_ref, ", ms_of!("received"), ", task, state, sha, ",
            ms_of!("started"), ", ", ms_of!("finished"), ", rollback_from, ",
            "IFNULL((task = 'deploy' OR (substr(task, 1, 7) = 'deploy:' \
               AND task NOT IN ('deploy:lock', 'deploy:unlock'))) \
             AND state IN ('success', 'failure', 'error') AND started IS NOT NULL, 0) \
             FROM (SELECT key, json_extract(record, '$.app') AS app, \
               json_extract(record, '$.environment') AS environment, \
               json_extract(record, '$.git_ref') AS git_ref, \
               json_extract(record, '$.received_at') AS received, \
               json_extract(record, '$.task') AS task, json_extract(record, '$.state') AS state, \
               json_extract(record, '$.sha') AS sha, \
               json_extract(record, '$.started_at') AS started, \
               json_extract(record, '$.finished_at') AS finished, \
               json_extract(record, '$.rollback.from') AS rollback_from FROM ", $source, ")"
        )
    };
}

/// The columns [`history_rows`] fills, in its order.
macro_rules! history_columns {
    () => {
        "faseng_run_history (key, app, environment, git_ref, at_ms, task, state, sha, \
         started_ms, finished_ms, rollback_from, counted)"
    };
}

/// The history of runs: one row per run record with what history queries and the
/// statistics select by, kept by triggers whoever writes the record. And the audit
/// (append-only).
const HISTORY_SCHEMA: &str = concat!(
    "CREATE TABLE IF NOT EXISTS faseng_run_history (key TEXT PRIMARY KEY, app TEXT NOT NULL,
  environment TEXT NOT NULL, git_ref TEXT NOT NULL, at_ms INTEGER NOT NULL, task TEXT,
  state TEXT, sha TEXT, started_ms INTEGER, finished_ms INTEGER, rollback_from TEXT,
  counted INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS faseng_run_history_at ON faseng_run_history(at_ms, key);
CREATE INDEX IF NOT EXISTS faseng_run_history_app ON faseng_run_history(app, at_ms, key);
DROP INDEX IF EXISTS faseng_run_history_stats;
CREATE INDEX IF NOT EXISTS faseng_run_history_counted ON faseng_run_history(app, environment,
  at_ms, key, state, started_ms, finished_ms, sha, rollback_from, counted) WHERE counted = 1;
CREATE TRIGGER IF NOT EXISTS faseng_runs_history_insert AFTER INSERT ON faseng_runs
  BEGIN DELETE FROM faseng_run_history WHERE key = new.key;
  INSERT INTO ",
    history_columns!(),
    " ",
    history_rows!("(SELECT new.key AS key, new.record AS record)"),
    ";
  END;
CREATE TRIGGER IF NOT EXISTS faseng_runs_history_update AFTER UPDATE ON faseng_runs
  BEGIN DELETE FROM faseng_run_history WHERE key = new.key;
  INSERT INTO ",
    history_columns!(),
    " ",
    history_rows!("(SELECT new.key AS key, new.record AS record)"),
    ";
  END;
CREATE TRIGGER IF NOT EXISTS faseng_runs_history_delete AFTER DELETE ON faseng_runs
  BEGIN DELETE FROM faseng_run_history WHERE key = old.key; END;
"
);

/// Fills a history table just made from the run records there are.
const HISTORY_FILL: &str = concat!(
    "INSERT OR IGNORE INTO ",
    history_columns!(),
    " ",
    history_rows!("faseng_runs"),
    ";"
);

/// Takes away a history table of an older shape (without what the statistics need) and its
/// triggers: [`HISTORY_SCHEMA`] makes it anew, and [`HISTORY_FILL`] fills it.
const HISTORY_DROP_OLD: &str = "DROP TRIGGER IF EXISTS faseng_runs_history_insert;
DROP TRIGGER IF EXISTS faseng_runs_history_update;
DROP TRIGGER IF EXISTS faseng_runs_history_delete;
DROP TABLE IF EXISTS faseng_run_history;";

/// The audit (append-only).
const AUDIT_SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS faseng_audit (id INTEGER PRIMARY KEY AUTOINCREMENT,
  app TEXT NOT NULL, environment TEXT, at_ms INTEGER NOT NULL, entry TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS faseng_audit_app ON faseng_audit(app, environment, id);
";

/// The release desk: requests in line, freezes made in chat, unfreeze grants, tickets,
/// release requests.
/// Times compared in SQL are kept as [`crate::instant`] text.
const DESK_SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS faseng_desk_line (id INTEGER PRIMARY KEY AUTOINCREMENT,
  line TEXT NOT NULL, user TEXT NOT NULL, expires_at TEXT NOT NULL, request TEXT NOT NULL,
  UNIQUE(line, user));
CREATE INDEX IF NOT EXISTS faseng_desk_line_order ON faseng_desk_line(line, id);
CREATE INDEX IF NOT EXISTS faseng_desk_line_expires ON faseng_desk_line(expires_at);
CREATE TABLE IF NOT EXISTS faseng_freezes (id INTEGER PRIMARY KEY AUTOINCREMENT,
  until_at TEXT NOT NULL, freeze TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS faseng_freezes_until ON faseng_freezes(until_at);
CREATE TABLE IF NOT EXISTS faseng_unfreezes (app TEXT NOT NULL, environment TEXT NOT NULL,
  user TEXT NOT NULL, until_at TEXT NOT NULL, grant_record TEXT NOT NULL,
  PRIMARY KEY(app, environment, user));
CREATE INDEX IF NOT EXISTS faseng_unfreezes_until ON faseng_unfreezes(until_at);
CREATE TABLE IF NOT EXISTS faseng_tickets (id TEXT PRIMARY KEY, app TEXT NOT NULL,
  environment TEXT NOT NULL, sha TEXT NOT NULL, expires_at TEXT NOT NULL, ticket TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS faseng_tickets_expires ON faseng_tickets(expires_at);
CREATE TABLE IF NOT EXISTS faseng_requests (id INTEGER PRIMARY KEY AUTOINCREMENT,
  app TEXT NOT NULL, environment TEXT NOT NULL, git_ref TEXT NOT NULL, open INTEGER NOT NULL,
  version INTEGER NOT NULL, updated_at TEXT NOT NULL, request TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS faseng_requests_open ON faseng_requests(open, app, environment, git_ref, id);
CREATE INDEX IF NOT EXISTS faseng_requests_app ON faseng_requests(app, id);
CREATE INDEX IF NOT EXISTS faseng_requests_done ON faseng_requests(open, updated_at);
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
        sqlx::raw_sql(outbox::SCHEMA)
            .execute(&mut *tx)
            .await
            .context("creating the outbox tables")?;
        // The history: made (and filled) when missing or of an older shape.
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('faseng_run_history')")
                .fetch_all(&mut *tx)
                .await?;
        let current = columns.iter().any(|c| c == "counted");
        if !columns.is_empty() && !current {
            sqlx::raw_sql(HISTORY_DROP_OLD)
                .execute(&mut *tx)
                .await
                .context("taking away the history's older shape")?;
        }
        sqlx::raw_sql(HISTORY_SCHEMA)
            .execute(&mut *tx)
            .await
            .context("creating the history table")?;
        if !current {
            sqlx::raw_sql(HISTORY_FILL)
                .execute(&mut *tx)
                .await
                .context("filling the history table")?;
        }
        sqlx::raw_sql(AUDIT_SCHEMA)
            .execute(&mut *tx)
            .await
            .context("creating the audit table")?;
        sqlx::raw_sql(DESK_SCHEMA)
            .execute(&mut *tx)
            .await
            .context("creating the release desk's tables")?;
        sqlx::raw_sql(web_actions::SCHEMA)
            .execute(&mut *tx)
            .await
            .context("creating the web actions table")?;
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

use crate::from_json;

#[async_trait]
impl Meta for SqliteStore {
    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
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
}
