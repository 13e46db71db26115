//! Run records, start markers and status histories on Redis.

use super::*;

/// KEYS: the marker. ARGV: the new marker, its holder. Replaces it when that worker holds it.
const UPDATE_STARTED: &str = r"
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, marker = pcall(cjson.decode, held)
if not ok or marker['worker'] ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1";

/// KEYS: the marker. ARGV: the marker as read, the new marker. Compare-and-set.
const TAKE_OVER_STARTED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1";

/// KEYS: the record, the runs-by-time index. ARGV: the run key. Deletes the record and
/// takes the run out of the indexes.
pub(super) const DELETE_RUN: &str = r"
local record = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
unindex_history(ARGV[1], record)
unindex_stats(ARGV[1])
return 1";

/// KEYS: the record, the runs-by-time index. ARGV: the record, the run key, its score in
/// the runs index (s), its received ms, then the five `stats_args`. Creates the record and
/// indexes it when there is none; returns 1 then, else 0.
pub(super) const CREATE_RUN: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[2])
index_history(ARGV[2], ARGV[1], ARGV[4])
index_stats(ARGV[2], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return 1";

/// As [`CREATE_RUN`], overwriting the record (a run keeps its place in the time indexes).
pub(super) const PUT_RUN: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[2])
index_history(ARGV[2], ARGV[1], ARGV[4])
index_stats(ARGV[2], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return 1";

/// Writes `run` with `script` ([`CREATE_RUN`] or [`PUT_RUN`]).
async fn write_run(
    store: &RedisStore,
    script: &redis::Script,
    run: &RunRecord,
) -> anyhow::Result<bool> {
    let written: i64 = script
        .key(k("run", &run.key))
        .key(RUNS_BY_TIME)
        .arg(serde_json::to_string(run)?)
        .arg(&run.key)
        .arg(score(run.received_at))
        .arg(run.received_ms())
        .arg(&super::stats::stats_args(run)[..])
        .invoke_async(&mut store.conn())
        .await?;
    Ok(written == 1)
}

#[async_trait]
impl Runs for RedisStore {
    async fn create_run(&self, run: &RunRecord) -> anyhow::Result<bool> {
        write_run(self, &scripts().create_run, run).await
    }

    async fn put_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        write_run(self, &scripts().put_run, run).await?;
        Ok(())
    }

    async fn get_run(&self, key: &str) -> anyhow::Result<Option<RunRecord>> {
        let v: Option<String> = self.conn().get(k("run", key)).await?;
        v.as_deref().map(from_json).transpose()
    }

    async fn delete_run(&self, key: &str) -> anyhow::Result<()> {
        let _: i64 = scripts()
            .delete_run
            .key(k("run", key))
            .key(RUNS_BY_TIME)
            .arg(key)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn mark_started(
        &self,
        key: &str,
        marker: &StartMarker,
    ) -> anyhow::Result<Option<StartMarker>> {
        let json = serde_json::to_string(marker)?;
        let set: bool = self.conn().set_nx(k("started", key), &json).await?;
        if set {
            return Ok(None);
        }
        let v: Option<String> = self.conn().get(k("started", key)).await?;
        Ok(Some(from_json(v.as_deref().unwrap_or(&json))?))
    }

    async fn update_started(&self, key: &str, marker: &StartMarker) -> anyhow::Result<bool> {
        let updated: i64 = redis::Script::new(UPDATE_STARTED)
            .key(k("started", key))
            .arg(serde_json::to_string(marker)?)
            .arg(&marker.worker)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(updated == 1)
    }

    async fn started(&self, key: &str) -> anyhow::Result<Option<StoredMarker>> {
        let v: Option<String> = self.conn().get(k("started", key)).await?;
        v.map(StoredMarker::from_raw).transpose()
    }

    async fn take_over_started(
        &self,
        key: &str,
        expected: &StoredMarker,
        new: &StartMarker,
    ) -> anyhow::Result<bool> {
        let taken: i64 = redis::Script::new(TAKE_OVER_STARTED)
            .key(k("started", key))
            .arg(&expected.raw)
            .arg(serde_json::to_string(new)?)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(taken == 1)
    }

    async fn note_provider_stopped(&self, key: &str, started_by: &str) -> anyhow::Result<()> {
        let _: () = self
            .conn()
            .set(k("provider_stopped", key), started_by)
            .await?;
        Ok(())
    }

    async fn provider_stopped(&self, key: &str, started_by: &str) -> anyhow::Result<bool> {
        let v: Option<String> = self.conn().get(k("provider_stopped", key)).await?;
        Ok(v.as_deref() == Some(started_by))
    }

    async fn job(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.conn().get(k("job", key)).await?)
    }

    async fn record_status_event(
        &self,
        key: &str,
        state: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let entry = serde_json::json!({"state": state, "at": at}).to_string();
        let _: () = redis::pipe()
            .atomic()
            .rpush(k("status_events", key), entry)
            .ignore()
            .cmd("ZADD")
            .arg(STATUS_BY_TIME)
            .arg("GT")
            .arg(score(at))
            .arg(key)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn history(&self, query: &RunQuery) -> anyhow::Result<Page<RunRecord>> {
        self.index_history_once()
            .await
            .context("indexing runs written before the history")?;
        let index = query
            .app
            .as_ref()
            .map_or_else(|| HISTORY.to_owned(), |app| k("history", app));
        let max = match (query.after(), query.until) {
            (Some((ms, _)), _) => ms.to_string(),
            (None, Some(until)) => format!("({}", until.timestamp_millis()),
            (None, None) => "+inf".to_owned(),
        };
        let min = query
            .since
            .map_or_else(|| "-inf".to_owned(), |s| s.timestamp_millis().to_string());
        let size = query.page_size();
        let mut found: Vec<(i64, RunRecord)> = Vec::new();
        let mut offset = 0usize;
        while found.len() <= size {
            let page: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg(&min)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(offset)
                .arg(SWEEP_BATCH)
                .query_async(&mut self.conn())
                .await?;
            offset += page.len();
            let last_page = page.len() < SWEEP_BATCH;
            let page: Vec<(String, i64)> = page
                .into_iter()
                .map(|(key, ms)| (key, ms as i64))
                .filter(|(key, ms)| query.past_cursor(*ms, key))
                .filter(|(_, ms)| query.until.is_none_or(|u| *ms < u.timestamp_millis()))
                .collect();
            if !page.is_empty() {
                let records: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(
                        page.iter()
                            .map(|(key, _)| k("run", key))
                            .collect::<Vec<_>>(),
                    )
                    .query_async(&mut self.conn())
                    .await?;
                for ((_, ms), text) in page.iter().zip(records) {
                    let Some(text) = text else { continue };
                    let run: RunRecord = from_json(&text)?;
                    if query.matches_names(&run) {
                        found.push((*ms, run));
                    }
                }
            }
            if last_page {
                break;
            }
        }
        Ok(crate::runs::page_of(found, size))
    }
}

impl RedisStore {
    /// Once per store: adds the runs written before the history index existed to it
    /// (idempotent; several processes may do it at once).
    async fn index_history_once(&self) -> anyhow::Result<()> {
        let done: bool = self.conn().exists(HISTORY_INDEXED).await?;
        if done {
            return Ok(());
        }
        let runs = self.scan_keys("faseng:run:*").await?;
        for chunk in runs.chunks(SWEEP_BATCH) {
            let records: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut self.conn())
                .await?;
            let mut pipe = redis::pipe();
            for text in records.iter().flatten() {
                if let Ok(run) = from_json::<RunRecord>(text) {
                    index_history(&mut pipe, &run);
                }
            }
            let _: () = pipe.query_async(&mut self.conn()).await?;
        }
        let _: () = self.conn().set(HISTORY_INDEXED, 1).await?;
        Ok(())
    }
}
