//! Freezes and unfreeze grants on SQLite: `faseng_freezes` (the row id is the freeze's id)
//! and `faseng_unfreezes` (one row per app, environment and user).

use super::*;
use crate::freezes::{sorted_freezes, sorted_grants};

#[async_trait]
impl Freezes for SqliteStore {
    async fn add_freeze(&self, f: &NewFreeze) -> anyhow::Result<Freeze> {
        let id: i64 =
            sqlx::query("INSERT INTO faseng_freezes (until_at, freeze) VALUES (?, ?) RETURNING id")
                .bind(instant(f.until))
                .bind(to_json(f)?)
                .fetch_one(&self.pool)
                .await?
                .get(0);
        Ok(Freeze::new(id.max(0) as u64, f.clone()))
    }

    async fn freezes(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Freeze>> {
        let rows = sqlx::query("SELECT id, freeze FROM faseng_freezes WHERE until_at > ?")
            .bind(instant(now))
            .fetch_all(&self.pool)
            .await?;
        let found = rows
            .iter()
            .map(|r| {
                Ok(Freeze::new(
                    r.get::<i64, _>(0).max(0) as u64,
                    from_json(r.get::<&str, _>(1))?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(sorted_freezes(found))
    }

    async fn grant_unfreeze(&self, g: &UnfreezeGrant) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO faseng_unfreezes (app, environment, user, until_at, grant_record) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&g.app)
        .bind(&g.environment)
        .bind(&g.user)
        .bind(instant(g.until))
        .bind(to_json(g)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unfreeze_of(
        &self,
        app: &str,
        environment: &str,
        user: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<UnfreezeGrant>> {
        let row = sqlx::query(
            "SELECT grant_record FROM faseng_unfreezes \
             WHERE app = ? AND environment = ? AND user = ? AND until_at > ?",
        )
        .bind(app)
        .bind(environment)
        .bind(user)
        .bind(instant(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| from_json(r.get::<&str, _>(0))).transpose()
    }

    async fn unfreezes(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<UnfreezeGrant>> {
        let rows = sqlx::query("SELECT grant_record FROM faseng_unfreezes WHERE until_at > ?")
            .bind(instant(now))
            .fetch_all(&self.pool)
            .await?;
        let found = rows
            .iter()
            .map(|r| from_json(r.get::<&str, _>(0)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(sorted_grants(found))
    }
}
