//! Retention on SQLite: sweeping finished runs, orphan status histories and apalis's
//! finished jobs, and the gauges' counts.

use super::*;

/// A page of runs received before a cutoff (?1), after the (time, key) last seen (?2, ?3),
/// in the order of `faseng_runs_received` (the expression is spelt as the index has it).
pub(super) const SWEEP_PAGE: &str = "SELECT json_extract(record, '$.received_at') AS at, key, record \
     FROM faseng_runs WHERE json_extract(record, '$.received_at') < ?1 \
     AND (json_extract(record, '$.received_at'), key) > (?2, ?3) \
     ORDER BY json_extract(record, '$.received_at'), key LIMIT ?4";

/// A time as the runs index compares it (RFC 3339 as the records hold it, to the second:
/// a record within the same second compares before it, and is then checked exactly).
fn index_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[async_trait]
impl Retention for SqliteStore {
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
        self.sweep_desk(cutoff, &mut swept).await?;
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

/// What ran out or ended before a cutoff (?) on the desk, and where `Swept` counts it.
const DESK_SWEEPS: [&str; 6] = [
    "DELETE FROM faseng_freezes WHERE until_at < ?",
    "DELETE FROM faseng_unfreezes WHERE until_at < ?",
    "DELETE FROM faseng_tickets WHERE expires_at < ?",
    "DELETE FROM faseng_desk_line WHERE expires_at < ?",
    "DELETE FROM faseng_requests WHERE open = 0 AND updated_at < ?",
    "DELETE FROM faseng_web_actions WHERE state IN ('done', 'failed') AND submitted_at < ?",
];

/// How many log bytes one sweep transaction deletes at most (it holds the write lock).
const SWEEP_TX_BYTES: u64 = 16 << 20;

impl SqliteStore {
    /// Deletes the desk's freezes and grants that ended, tickets and requests in line that
    /// ran out, release requests over and last changed, and web actions finished and
    /// submitted, before `cutoff`.
    async fn sweep_desk(&self, cutoff: DateTime<Utc>, swept: &mut Swept) -> anyhow::Result<()> {
        let cutoff = instant(cutoff);
        let mut counts = [0u64; DESK_SWEEPS.len()];
        for (sql, count) in DESK_SWEEPS.iter().zip(&mut counts) {
            *count = sqlx::query(*sql)
                .bind(&cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        let [
            freezes,
            unfreezes,
            tickets,
            line_requests,
            requests,
            web_actions,
        ] = counts;
        swept.freezes += freezes;
        swept.unfreezes += unfreezes;
        swept.tickets += tickets;
        swept.line_requests += line_requests;
        swept.requests += requests;
        swept.web_actions += web_actions;
        Ok(())
    }

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
