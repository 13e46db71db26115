//! Run logs on SQLite.

use super::*;

#[async_trait]
impl Logs for SqliteStore {
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
}
