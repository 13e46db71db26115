//! Delivery dedup and intake on SQLite.

use super::*;

#[async_trait]
impl Deliveries for SqliteStore {
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
}
