//! Desk tickets on SQLite: `faseng_tickets`, one row per ticket, with what a redemption
//! must match as columns (so matching and removing is one statement).

use super::*;

#[async_trait]
impl Tickets for SqliteStore {
    async fn issue_ticket(&self, t: &DeskTicket) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO faseng_tickets (id, app, environment, sha, expires_at, ticket) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.app)
        .bind(&t.environment)
        .bind(&t.sha)
        .bind(instant(t.expires_at))
        .bind(to_json(t)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn redeem_ticket(
        &self,
        id: &str,
        app: &str,
        environment: &str,
        sha: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeskTicket>> {
        let row = sqlx::query(
            "DELETE FROM faseng_tickets WHERE id = ? AND app = ? AND environment = ? \
             AND sha = ? AND expires_at > ? RETURNING ticket",
        )
        .bind(id)
        .bind(app)
        .bind(environment)
        .bind(sha)
        .bind(instant(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| from_json(r.get::<&str, _>(0))).transpose()
    }
}
