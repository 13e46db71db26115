//! Duty leases on SQLite.

use super::*;

#[async_trait]
impl Duties for SqliteStore {
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
