//! The outbox on SQLite (see [`super::outbox`]): entries, lanes (sequence counter, lease,
//! schedule, attempts, last error, doubt, and `due_at` while the lane has entries), and per
//! deployment the states written and the chat message faseng posted. Every call is one
//! `BEGIN IMMEDIATE` transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::Outbox;
use sqlx::Row as _;
use sqlx::sqlite::SqlitePool;

use crate::outbox::{
    ClaimedLane, LaneKey, OUTBOX_META_TTL, OutboxEntry, Settle, StoredEntry, millis,
};
use crate::{RunRecord, RunState};

/// The outbox's tables.
pub(super) const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS faseng_outbox (run TEXT NOT NULL, lane TEXT NOT NULL, seq INTEGER NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (run, lane, seq));
CREATE TABLE IF NOT EXISTS faseng_outbox_lanes (run TEXT NOT NULL, lane TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0, holder TEXT, lease_until INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, doubt INTEGER NOT NULL DEFAULT 0, due_at INTEGER, touched_at INTEGER NOT NULL, PRIMARY KEY (run, lane));
CREATE INDEX IF NOT EXISTS faseng_outbox_lanes_due ON faseng_outbox_lanes(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS faseng_outbox_lanes_idle ON faseng_outbox_lanes(touched_at) WHERE due_at IS NULL;
CREATE TABLE IF NOT EXISTS faseng_outbox_runs (run TEXT PRIMARY KEY, chat_ts TEXT, final TEXT, touched_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS faseng_outbox_runs_touched ON faseng_outbox_runs(touched_at);
CREATE TABLE IF NOT EXISTS faseng_outbox_states (run TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (run, state));
";

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// `outbox_push`, and `finish_run` when `record` is given.
pub(super) async fn push(
    pool: &SqlitePool,
    run: &str,
    fence: Option<&str>,
    record: Option<&RunRecord>,
    entries: &[OutboxEntry],
) -> anyhow::Result<bool> {
    if record.is_none() && entries.is_empty() {
        return Ok(true);
    }
    let now = millis(OutboxEntry::batch_time(entries));
    let record = record.map(serde_json::to_string).transpose()?;
    let jsons = entries
        .iter()
        .map(OutboxEntry::to_json)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tx: Tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if let Some(fence) = fence {
        let worker: Option<Option<String>> = sqlx::query_scalar(
            "SELECT json_extract(marker, '$.worker') FROM faseng_started WHERE key = ?",
        )
        .bind(run)
        .fetch_optional(&mut *tx)
        .await?;
        if worker.flatten().as_deref() != Some(fence) {
            return Ok(false);
        }
    }
    if let Some(record) = &record {
        // An upsert: INSERT OR REPLACE would delete without firing the run count's trigger.
        sqlx::query(
            "INSERT INTO faseng_runs (key, record) VALUES (?, ?) \
             ON CONFLICT(key) DO UPDATE SET record = excluded.record",
        )
        .bind(run)
        .bind(record)
        .execute(&mut *tx)
        .await?;
    }
    forget_idle(&mut tx, now).await?;
    if !entries.is_empty() {
        sqlx::query(
            "INSERT INTO faseng_outbox_runs (run, touched_at) VALUES (?1, ?2) \
             ON CONFLICT(run) DO UPDATE SET touched_at = max(touched_at, ?2)",
        )
        .bind(run)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for (entry, json) in entries.iter().zip(&jsons) {
        if let Some(state) = entry.item.state()
            && !first_of_its_state(&mut tx, run, state).await?
        {
            continue;
        }
        let lane = entry.item.lane().as_str();
        sqlx::query(
            "INSERT INTO faseng_outbox_lanes (run, lane, touched_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(run, lane) DO UPDATE SET touched_at = max(touched_at, ?3)",
        )
        .bind(run)
        .bind(lane)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // A lane with nothing waiting is due at once (one with entries keeps its schedule:
        // a new entry waits behind the ones before it).
        sqlx::query(
            "UPDATE faseng_outbox_lanes SET next_at = ?3, due_at = ?3, attempts = 0, doubt = 0 \
             WHERE run = ?1 AND lane = ?2 \
             AND NOT EXISTS (SELECT 1 FROM faseng_outbox WHERE run = ?1 AND lane = ?2)",
        )
        .bind(run)
        .bind(lane)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let seq: i64 = sqlx::query_scalar(
            "UPDATE faseng_outbox_lanes SET seq = seq + 1 WHERE run = ? AND lane = ? RETURNING seq",
        )
        .bind(run)
        .bind(lane)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO faseng_outbox (run, lane, seq, entry) VALUES (?, ?, ?, ?)")
            .bind(run)
            .bind(lane)
            .bind(seq)
            .bind(json)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Records that `state` is written for `run`; `false` when it was already, or when it is a
/// final state and another final state was.
async fn first_of_its_state(tx: &mut Tx, run: &str, state: RunState) -> anyhow::Result<bool> {
    if state.is_final() {
        let final_state: Option<Option<String>> =
            sqlx::query_scalar("SELECT final FROM faseng_outbox_runs WHERE run = ?")
                .bind(run)
                .fetch_optional(&mut **tx)
                .await?;
        if final_state.flatten().is_some() {
            return Ok(false);
        }
    }
    let fresh =
        sqlx::query("INSERT OR IGNORE INTO faseng_outbox_states (run, state) VALUES (?, ?)")
            .bind(run)
            .bind(state.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected()
            == 1;
    if fresh && state.is_final() {
        sqlx::query("UPDATE faseng_outbox_runs SET final = ? WHERE run = ?")
            .bind(state.as_str())
            .bind(run)
            .execute(&mut **tx)
            .await?;
    }
    Ok(fresh)
}

/// Forgets the bookkeeping of deployments untouched for [`OUTBOX_META_TTL`] (the outbox
/// bounds itself).
async fn forget_idle(tx: &mut Tx, now: i64) -> anyhow::Result<()> {
    let before = now - OUTBOX_META_TTL.as_millis() as i64;
    sqlx::query(
        "DELETE FROM faseng_outbox_states WHERE run IN \
         (SELECT run FROM faseng_outbox_runs WHERE touched_at < ?)",
    )
    .bind(before)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM faseng_outbox_runs WHERE touched_at < ?")
        .bind(before)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM faseng_outbox_lanes WHERE due_at IS NULL AND touched_at < ?")
        .bind(before)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `outbox_due`.
pub(super) async fn due(
    pool: &SqlitePool,
    now: DateTime<Utc>,
    limit: usize,
) -> anyhow::Result<Vec<LaneKey>> {
    let rows = sqlx::query(
        "SELECT run, lane FROM faseng_outbox_lanes WHERE due_at IS NOT NULL AND due_at <= ? \
         ORDER BY due_at LIMIT ?",
    )
    .bind(millis(now))
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let lane = crate::Lane::parse(r.get::<&str, _>(1))?;
            Some(LaneKey::new(r.get::<&str, _>(0), lane))
        })
        .collect())
}

/// `outbox_claim`.
pub(super) async fn claim(
    pool: &SqlitePool,
    lane: &LaneKey,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> anyhow::Result<Option<ClaimedLane>> {
    let (now, until) = (millis(now), millis(until));
    let name = lane.lane.as_str();
    let mut tx: Tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let row = sqlx::query(
        "SELECT holder, lease_until, next_at, attempts, doubt FROM faseng_outbox_lanes \
         WHERE run = ? AND lane = ?",
    )
    .bind(&lane.run)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let empty = ClaimedLane {
        entries: Vec::new(),
        attempts: 0,
        doubt: false,
        chat_ts: None,
        taken_over: false,
    };
    let Some(row) = row else {
        return Ok(Some(empty));
    };
    let current: Option<String> = row.get(0);
    let mine = current.as_deref() == Some(holder);
    let lease_until: i64 = row.get(1);
    let next_at: i64 = row.get(2);
    if current.is_some() && !mine && lease_until > now {
        return Ok(None);
    }
    if !mine && next_at > now {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT seq, entry FROM faseng_outbox WHERE run = ? AND lane = ? ORDER BY seq LIMIT ?",
    )
    .bind(&lane.run)
    .bind(name)
    .bind(limit.max(1) as i64)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        sqlx::query(
            "UPDATE faseng_outbox_lanes SET holder = NULL, lease_until = 0, due_at = NULL \
             WHERE run = ? AND lane = ?",
        )
        .bind(&lane.run)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Some(empty));
    }
    let taken_over = current.is_some() && !mine;
    let doubt = taken_over || row.get::<i64, _>(4) == 1;
    sqlx::query(
        "UPDATE faseng_outbox_lanes SET holder = ?, lease_until = ?, due_at = ?, doubt = ? \
         WHERE run = ? AND lane = ?",
    )
    .bind(holder)
    .bind(until)
    .bind(until)
    .bind(i64::from(doubt))
    .bind(&lane.run)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    let chat_ts: Option<Option<String>> =
        sqlx::query_scalar("SELECT chat_ts FROM faseng_outbox_runs WHERE run = ?")
            .bind(&lane.run)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    let mut entries = Vec::with_capacity(rows.len());
    for r in &rows {
        entries.push(StoredEntry {
            seq: u64::try_from(r.get::<i64, _>(0))?,
            entry: serde_json::from_str(r.get::<&str, _>(1))?,
        });
    }
    Ok(Some(ClaimedLane {
        entries,
        attempts: u32::try_from(row.get::<i64, _>(3)).unwrap_or(u32::MAX),
        doubt,
        chat_ts: chat_ts.flatten(),
        taken_over,
    }))
}

/// `outbox_settle`.
pub(super) async fn settle(
    pool: &SqlitePool,
    lane: &LaneKey,
    holder: &str,
    settle: &Settle,
) -> anyhow::Result<Option<u64>> {
    let name = lane.lane.as_str();
    let mut tx: Tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let current: Option<Option<String>> =
        sqlx::query_scalar("SELECT holder FROM faseng_outbox_lanes WHERE run = ? AND lane = ?")
            .bind(&lane.run)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    if current.flatten().as_deref() != Some(holder) {
        return Ok(None);
    }
    if let Some(upto) = settle.done_upto {
        sqlx::query("DELETE FROM faseng_outbox WHERE run = ? AND lane = ? AND seq <= ?")
            .bind(&lane.run)
            .bind(name)
            .bind(i64::try_from(upto)?)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(ts) = &settle.chat_ts {
        sqlx::query(
            "INSERT INTO faseng_outbox_runs (run, chat_ts, touched_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(run) DO UPDATE SET chat_ts = ?2",
        )
        .bind(&lane.run)
        .bind(ts)
        .bind(millis(Utc::now()))
        .execute(&mut *tx)
        .await?;
    }
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM faseng_outbox WHERE run = ? AND lane = ?")
            .bind(&lane.run)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    match settle.retry.as_ref().filter(|_| left > 0) {
        Some(r) => {
            sqlx::query(
                "UPDATE faseng_outbox_lanes SET holder = NULL, lease_until = 0, next_at = ?1, \
                 due_at = ?1, attempts = ?2, error = ?3, doubt = ?4 WHERE run = ?5 AND lane = ?6",
            )
            .bind(millis(r.at))
            .bind(i64::from(r.attempts))
            .bind(&r.error)
            .bind(i64::from(r.doubt))
            .bind(&lane.run)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE faseng_outbox_lanes SET holder = NULL, lease_until = 0, next_at = 0, \
                 due_at = CASE WHEN ?1 > 0 THEN 0 ELSE NULL END, attempts = 0, error = NULL, \
                 doubt = 0 WHERE run = ?2 AND lane = ?3",
            )
            .bind(left)
            .bind(&lane.run)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Some(u64::try_from(left)?))
}

/// `outbox_depth`.
pub(super) async fn depth(pool: &SqlitePool) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM faseng_outbox")
        .fetch_one(pool)
        .await?;
    Ok(n.max(0) as u64)
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn outbox_push(
        &self,
        run: &str,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        push(&self.pool, run, fence, None, entries).await
    }

    async fn finish_run(
        &self,
        record: &RunRecord,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        push(&self.pool, &record.key, fence, Some(record), entries).await
    }

    async fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<LaneKey>> {
        due(&self.pool, now, limit).await
    }

    async fn outbox_claim(
        &self,
        lane: &LaneKey,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Option<ClaimedLane>> {
        claim(&self.pool, lane, holder, now, until, limit).await
    }

    async fn outbox_settle(
        &self,
        lane: &LaneKey,
        holder: &str,
        settle: &Settle,
    ) -> anyhow::Result<Option<u64>> {
        self::settle(&self.pool, lane, holder, settle).await
    }

    async fn outbox_depth(&self) -> anyhow::Result<u64> {
        depth(&self.pool).await
    }
}
