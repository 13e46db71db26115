//! Run records, start markers and status histories on SQLite.

use super::*;

#[async_trait]
impl Runs for SqliteStore {
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
        row.map(|r| StoredMarker::from_raw(r.get(0))).transpose()
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

    async fn history(&self, query: &RunQuery) -> anyhow::Result<Page<RunRecord>> {
        let size = query.page_size();
        let after = query.after();
        let rows = sqlx::query(
            "SELECT h.at_ms, r.record FROM faseng_run_history h JOIN faseng_runs r ON r.key = h.key \
             WHERE (?1 IS NULL OR h.app = ?1) AND (?2 IS NULL OR h.environment = ?2) \
             AND (?3 IS NULL OR h.git_ref = ?3) AND (?4 IS NULL OR h.at_ms >= ?4) \
             AND (?5 IS NULL OR h.at_ms < ?5) \
             AND (?6 IS NULL OR h.at_ms < ?6 OR (h.at_ms = ?6 AND h.key < ?7)) \
             ORDER BY h.at_ms DESC, h.key DESC LIMIT ?8",
        )
        .bind(&query.app)
        .bind(&query.environment)
        .bind(&query.git_ref)
        .bind(query.since.map(|s| s.timestamp_millis()))
        .bind(query.until.map(|u| u.timestamp_millis()))
        .bind(after.map(|(ms, _)| ms))
        .bind(after.map_or("", |(_, key)| key))
        .bind(size as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        let found = rows
            .iter()
            .map(|row| Ok((row.get::<i64, _>(0), from_json(row.get::<&str, _>(1))?)))
            .collect::<anyhow::Result<Vec<(i64, RunRecord)>>>()?;
        Ok(crate::runs::page_of(found, size))
    }
}
