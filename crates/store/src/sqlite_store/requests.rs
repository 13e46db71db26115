//! Release requests on SQLite: `faseng_requests`, one row per request (the row id is its
//! number; AUTOINCREMENT never hands one out twice), with what lookups, the compare-and-set
//! and retention select by as columns.

use super::*;

/// The columns a request's row keeps beside its JSON.
struct Columns {
    open: bool,
    version: i64,
    updated_at: String,
    record: String,
}

fn columns(r: &ReleaseRequest) -> anyhow::Result<Columns> {
    Ok(Columns {
        open: r.state.is_open(),
        version: i64::try_from(r.version).context("a request's version out of range")?,
        updated_at: instant(r.updated_at),
        record: to_json(r)?,
    })
}

/// The requests of rows whose first column is the record.
fn read_all(rows: &[sqlx::sqlite::SqliteRow]) -> anyhow::Result<Vec<ReleaseRequest>> {
    rows.iter()
        .map(|r| from_json(r.get::<&str, _>(0)))
        .collect()
}

#[async_trait]
impl Requests for SqliteStore {
    async fn open_request(&self, r: &NewRequest) -> anyhow::Result<ReleaseRequest> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let id: i64 = sqlx::query(
            "INSERT INTO faseng_requests (app, environment, git_ref, open, version, updated_at, request) \
             VALUES (?, ?, ?, 1, 1, ?, '') RETURNING id",
        )
        .bind(&r.app)
        .bind(&r.environment)
        .bind(&r.git_ref)
        .bind(instant(r.opened_at))
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        let opened = ReleaseRequest::opened(id.max(0) as u64, r);
        sqlx::query("UPDATE faseng_requests SET request = ? WHERE id = ?")
            .bind(to_json(&opened)?)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(opened)
    }

    async fn request(&self, id: u64) -> anyhow::Result<Option<ReleaseRequest>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT request FROM faseng_requests WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_json(r.get::<&str, _>(0))).transpose()
    }

    async fn open_request_for(
        &self,
        app: &str,
        environment: &str,
        git_ref: &str,
    ) -> anyhow::Result<Option<ReleaseRequest>> {
        let row = sqlx::query(
            "SELECT request FROM faseng_requests \
             WHERE open = 1 AND app = ? AND environment = ? AND git_ref = ? ORDER BY id LIMIT 1",
        )
        .bind(app)
        .bind(environment)
        .bind(git_ref)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| from_json(r.get::<&str, _>(0))).transpose()
    }

    async fn requests(
        &self,
        app: Option<&str>,
        open_only: bool,
    ) -> anyhow::Result<Vec<ReleaseRequest>> {
        let rows = sqlx::query(
            "SELECT request FROM faseng_requests \
             WHERE (?1 IS NULL OR app = ?1) AND (?2 = 0 OR open = 1) ORDER BY id",
        )
        .bind(app)
        .bind(open_only)
        .fetch_all(&self.pool)
        .await?;
        read_all(&rows)
    }

    async fn update_request(&self, r: &ReleaseRequest) -> anyhow::Result<Option<ReleaseRequest>> {
        let (Ok(id), Ok(expected)) = (i64::try_from(r.id), i64::try_from(r.version)) else {
            return Ok(None);
        };
        let next = r.next_version();
        let c = columns(&next)?;
        let written = sqlx::query(
            "UPDATE faseng_requests SET app = ?, environment = ?, git_ref = ?, open = ?, \
             version = ?, updated_at = ?, request = ? WHERE id = ? AND version = ?",
        )
        .bind(&next.app)
        .bind(&next.environment)
        .bind(&next.git_ref)
        .bind(c.open)
        .bind(c.version)
        .bind(&c.updated_at)
        .bind(&c.record)
        .bind(id)
        .bind(expected)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((written == 1).then_some(next))
    }
}
