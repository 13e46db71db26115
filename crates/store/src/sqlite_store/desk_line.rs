//! The desk line on SQLite: `faseng_desk_line`, one row per request (the row id is the
//! request's id; the record keeps its first arrival time).

use super::*;
use crate::desk_line::position;

#[async_trait]
impl DeskLine for SqliteStore {
    async fn join_line(&self, r: &NewLineRequest) -> anyhow::Result<(LineRequest, usize)> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let old =
            sqlx::query("SELECT id, request FROM faseng_desk_line WHERE line = ? AND user = ?")
                .bind(&r.line)
                .bind(&r.user)
                .fetch_optional(&mut *tx)
                .await?;
        let request = match old {
            Some(row) => {
                let id: i64 = row.get(0);
                let first: NewLineRequest = from_json(row.get::<&str, _>(1))?;
                let kept = NewLineRequest {
                    at: first.at,
                    ..r.clone()
                };
                sqlx::query("UPDATE faseng_desk_line SET expires_at = ?, request = ? WHERE id = ?")
                    .bind(instant(kept.expires_at))
                    .bind(to_json(&kept)?)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                LineRequest::new(id.max(0) as u64, kept)
            }
            None => {
                let id: i64 = sqlx::query(
                    "INSERT INTO faseng_desk_line (line, user, expires_at, request) \
                     VALUES (?, ?, ?, ?) RETURNING id",
                )
                .bind(&r.line)
                .bind(&r.user)
                .bind(instant(r.expires_at))
                .bind(to_json(r)?)
                .fetch_one(&mut *tx)
                .await?
                .get(0);
                LineRequest::new(id.max(0) as u64, r.clone())
            }
        };
        let line = requests_of(&mut tx, &r.line).await?;
        tx.commit().await?;
        let place = position(&line, request.id, r.at);
        Ok((request, place))
    }

    async fn line_requests(&self, line: &str) -> anyhow::Result<Vec<LineRequest>> {
        let mut conn = self.pool.acquire().await?;
        requests_of(&mut conn, line).await
    }

    async fn waiting_lines(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT line FROM faseng_desk_line ORDER BY line")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn leave_line(&self, line: &str, user: &str) -> anyhow::Result<Option<LineRequest>> {
        let row = sqlx::query(
            "DELETE FROM faseng_desk_line WHERE line = ? AND user = ? RETURNING id, request",
        )
        .bind(line)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| read_request(&r)).transpose()
    }

    async fn take_line_request(&self, line: &str, id: u64) -> anyhow::Result<Option<LineRequest>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "DELETE FROM faseng_desk_line WHERE line = ? AND id = ? RETURNING id, request",
        )
        .bind(line)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| read_request(&r)).transpose()
    }
}

/// A request from its row (`id`, `request`).
pub(super) fn read_request(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<LineRequest> {
    Ok(LineRequest::new(
        row.get::<i64, _>(0).max(0) as u64,
        from_json(row.get::<&str, _>(1))?,
    ))
}

/// The requests in `line`, in arrival order.
async fn requests_of(
    conn: &mut sqlx::SqliteConnection,
    line: &str,
) -> anyhow::Result<Vec<LineRequest>> {
    let rows = sqlx::query("SELECT id, request FROM faseng_desk_line WHERE line = ? ORDER BY id")
        .bind(line)
        .fetch_all(conn)
        .await?;
    rows.iter().map(read_request).collect()
}
