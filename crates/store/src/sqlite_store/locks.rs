//! Environment locks on SQLite.

use super::*;

#[async_trait]
impl Locks for SqliteStore {
    async fn env_lock(&self, line: &str) -> anyhow::Result<Option<EnvLock>> {
        let row = sqlx::query("SELECT lock FROM faseng_locks WHERE line = ?")
            .bind(line)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_json(r.get::<&str, _>(0))).transpose()
    }

    async fn set_env_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<EnvLock> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(held) = held_lock(&mut tx, line).await?
            && held.user != lock.user
        {
            return Ok(held);
        }
        write_lock(&mut tx, line, lock).await?;
        tx.commit().await?;
        Ok(lock.clone())
    }

    async fn clear_env_lock(&self, line: &str, holder: &str) -> anyhow::Result<Option<EnvLock>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let held = held_lock(&mut tx, line).await?;
        if held.as_ref().is_some_and(|l| l.user == holder) {
            sqlx::query("DELETE FROM faseng_locks WHERE line = ?")
                .bind(line)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn acquire_lock(
        &self,
        line: &str,
        lock: &EnvLock,
        now: DateTime<Utc>,
    ) -> anyhow::Result<EnvLock> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(held) = held_lock(&mut tx, line).await?
            && held.user != lock.user
            && !held.expired(now)
        {
            return Ok(held);
        }
        write_lock(&mut tx, line, lock).await?;
        tx.commit().await?;
        Ok(lock.clone())
    }

    async fn take_over_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<Option<EnvLock>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let held = held_lock(&mut tx, line).await?;
        write_lock(&mut tx, line, lock).await?;
        tx.commit().await?;
        Ok(held)
    }

    async fn locks(&self) -> anyhow::Result<Vec<(String, EnvLock)>> {
        let rows = sqlx::query("SELECT line, lock FROM faseng_locks ORDER BY line")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.get(0), from_json(r.get::<&str, _>(1))?)))
            .collect()
    }

    async fn update_lock_if(
        &self,
        line: &str,
        holder: &str,
        since: DateTime<Utc>,
        new: &EnvLock,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let held = held_lock(&mut tx, line).await?;
        if !held.is_some_and(|l| l.user == holder && l.at == since) {
            return Ok(false);
        }
        write_lock(&mut tx, line, new).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn release_lock_if(
        &self,
        line: &str,
        holder: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Option<EnvLock>> {
        self.delete_lock_when(line, |l| l.user == holder && l.at == since)
            .await
    }

    async fn expire_lock(&self, line: &str, now: DateTime<Utc>) -> anyhow::Result<Option<EnvLock>> {
        self.delete_lock_when(line, |l| l.expired(now)).await
    }
}

impl SqliteStore {
    /// Removes the lock on `line` when `when` holds for it, in one transaction; returns it
    /// when it did.
    async fn delete_lock_when(
        &self,
        line: &str,
        when: impl FnOnce(&EnvLock) -> bool + Send,
    ) -> anyhow::Result<Option<EnvLock>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(held) = held_lock(&mut tx, line).await?.filter(when) else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM faseng_locks WHERE line = ?")
            .bind(line)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(held))
    }
}

/// The lock on `line`, read inside a write transaction.
async fn held_lock(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    line: &str,
) -> anyhow::Result<Option<EnvLock>> {
    let row = sqlx::query("SELECT lock FROM faseng_locks WHERE line = ?")
        .bind(line)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| from_json(r.get::<&str, _>(0))).transpose()
}

/// Writes `lock` on `line` (whatever was there), inside a write transaction.
async fn write_lock(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    line: &str,
    lock: &EnvLock,
) -> anyhow::Result<()> {
    sqlx::query("INSERT OR REPLACE INTO faseng_locks (line, lock) VALUES (?, ?)")
        .bind(line)
        .bind(to_json(lock)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
