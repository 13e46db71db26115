//! Web actions on SQLite: `faseng_web_actions`, one row per action, its times as
//! [`crate::instant`] text (so a claim compares them in SQL); a claim is one transaction.

use super::*;
use crate::web_actions::claim_end;

/// The table and its indexes.
pub(super) const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS faseng_web_actions (id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id TEXT NOT NULL, user_name TEXT NOT NULL, command TEXT NOT NULL, state TEXT NOT NULL,
  submitted_at TEXT NOT NULL, claimed_by TEXT, claimed_until TEXT, reply TEXT, run_key TEXT);
CREATE INDEX IF NOT EXISTS faseng_web_actions_state ON faseng_web_actions(state, id);
CREATE INDEX IF NOT EXISTS faseng_web_actions_submitted ON faseng_web_actions(submitted_at);
";

fn time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("reading a stored time {text:?}"))?
        .with_timezone(&Utc))
}

fn action(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<WebAction> {
    let state: String = row.get("state");
    Ok(WebAction {
        id: row.get::<i64, _>("id") as u64,
        user_id: row.get("user_id"),
        user_name: row.get("user_name"),
        command: row.get("command"),
        state: WebActionState::parse(&state)
            .with_context(|| format!("a web action in state {state:?}"))?,
        submitted_at: time(row.get("submitted_at"))?,
        claimed_by: row.get("claimed_by"),
        claimed_until: row
            .get::<Option<&str>, _>("claimed_until")
            .map(time)
            .transpose()?,
        reply: row.get("reply"),
        run_key: row.get("run_key"),
    })
}

#[async_trait]
impl WebActions for SqliteStore {
    async fn submit_web_action(
        &self,
        user_id: &str,
        user_name: &str,
        command: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<u64> {
        let id: i64 = sqlx::query(
            "INSERT INTO faseng_web_actions (user_id, user_name, command, state, submitted_at) \
             VALUES (?, ?, ?, 'pending', ?) RETURNING id",
        )
        .bind(user_id)
        .bind(user_name)
        .bind(command)
        .bind(instant(at))
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok(id as u64)
    }

    async fn claim_web_action(
        &self,
        holder: &str,
        at: DateTime<Utc>,
        lease: Duration,
    ) -> anyhow::Result<Option<WebAction>> {
        let until = claim_end(at, lease)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE faseng_web_actions SET state = 'failed', reply = ? \
             WHERE state = 'running' AND claimed_until <= ?",
        )
        .bind(crate::messages::WEB_ACTION_STOPPED)
        .bind(instant(at))
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "UPDATE faseng_web_actions SET state = 'running', claimed_by = ?, claimed_until = ? \
             WHERE id = (SELECT id FROM faseng_web_actions WHERE state = 'pending' ORDER BY id LIMIT 1) \
             RETURNING *",
        )
        .bind(holder)
        .bind(instant(until))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(action).transpose()
    }

    async fn finish_web_action(
        &self,
        id: u64,
        holder: &str,
        ok: bool,
        reply: &str,
        run_key: Option<&str>,
    ) -> anyhow::Result<bool> {
        let state = WebActionState::ended(ok);
        let r = sqlx::query(
            "UPDATE faseng_web_actions SET state = ?, reply = ?, run_key = ? \
             WHERE id = ? AND state = 'running' AND claimed_by = ?",
        )
        .bind(state.as_str())
        .bind(reply)
        .bind(run_key)
        .bind(id as i64)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn web_action(&self, id: u64) -> anyhow::Result<Option<WebAction>> {
        let row = sqlx::query("SELECT * FROM faseng_web_actions WHERE id = ?")
            .bind(id as i64)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(action).transpose()
    }
}
