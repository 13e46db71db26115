//! Waiting lines and recent durations on SQLite.

use super::*;

#[async_trait]
impl Lines for SqliteStore {
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
}
