//! The audit on SQLite: `faseng_audit`, one row per entry.

use super::*;

#[async_trait]
impl Audit for SqliteStore {
    async fn audit_append(&self, entry: &AuditEntry) -> anyhow::Result<u64> {
        let id: i64 = sqlx::query(
            "INSERT INTO faseng_audit (app, environment, at_ms, entry) VALUES (?, ?, ?, ?) \
             RETURNING id",
        )
        .bind(&entry.app)
        .bind(&entry.environment)
        .bind(entry.at.timestamp_millis())
        .bind(to_json(entry)?)
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok(id.max(0) as u64)
    }

    async fn audit(&self, query: &AuditQuery) -> anyhow::Result<Page<AuditRecord>> {
        let size = query.page_size();
        let before = i64::try_from(query.before_id()).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT id, entry FROM faseng_audit WHERE id < ?1 \
             AND (?2 IS NULL OR app = ?2) AND (?3 IS NULL OR environment = ?3) \
             AND (?4 IS NULL OR at_ms >= ?4) ORDER BY id DESC LIMIT ?5",
        )
        .bind(before)
        .bind(&query.app)
        .bind(&query.environment)
        .bind(query.since.map(|s| s.timestamp_millis()))
        .bind(size as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        let found = rows
            .iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.get::<i64, _>(0).max(0) as u64,
                    entry: from_json(r.get::<&str, _>(1))?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(crate::audit::page_of(found, size))
    }
}
