//! Retention on Redis: sweeping finished runs, orphan status histories and apalis's
//! finished jobs, and the gauges' counts.

use super::*;

/// Deletes finished runs a sweep chose. KEYS[1..4]: runs index, status index, log sizes,
/// log bytes; then per run i (0-based) KEYS[6i+5..6i+10]: record, start marker, log, status
/// history, kept queue job, provider-stopped note. ARGV[2i+1], ARGV[2i+2]: the run key and
/// its record as the sweep read it: a run
/// written since is left alone, a run already gone leaves the index. Returns runs deleted,
/// their log bytes, and runs left alone.
pub(super) const DELETE_RUNS: &str = r"
local runs, bytes, changed = 0, 0, 0
for i = 0, (#KEYS - 4) / 6 - 1 do
  local key, seen = ARGV[2*i+1], ARGV[2*i+2]
  local record = redis.call('GET', KEYS[6*i+5])
  if not record then
    redis.call('ZREM', KEYS[1], key)
    unindex_history(key, seen)
    unindex_stats(key)
  elseif record ~= seen then
    changed = changed + 1
  else
    local size = tonumber(redis.call('HGET', KEYS[3], key) or '0') or 0
    redis.call('DEL', KEYS[6*i+5], KEYS[6*i+6], KEYS[6*i+7], KEYS[6*i+8], KEYS[6*i+9], KEYS[6*i+10])
    redis.call('ZREM', KEYS[1], key)
    unindex_history(key, record)
    unindex_stats(key)
    redis.call('ZREM', KEYS[2], key)
    redis.call('HDEL', KEYS[3], key)
    if size > 0 then redis.call('DECRBY', KEYS[4], size) end
    runs = runs + 1
    bytes = bytes + size
  end
end
return {runs, bytes, changed}";

/// Deletes status histories whose newest event is before a cutoff and that belong to no run
/// (a run's history goes with the run). KEYS[1]: the status index. ARGV: the cutoff score,
/// the offset and count of the page. Returns the page's size, histories deleted and kept.
pub(super) const SWEEP_STATUS: &str = r"
local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', ARGV[2], ARGV[3])
local deleted, kept = 0, 0
for _, key in ipairs(page) do
  if redis.call('EXISTS', 'faseng:run:' .. key) == 1 then
    kept = kept + 1
  else
    redis.call('DEL', 'faseng:status_events:' .. key)
    redis.call('ZREM', KEYS[1], key)
    deleted = deleted + 1
  end
end
return {#page, deleted, kept}";

/// Deletes apalis jobs finished before a cutoff (apalis's own vacuum never takes their ids
/// out of its done set). KEYS[1]: the done or dead set, KEYS[2]: the job data hash,
/// KEYS[3]: the job meta prefix. ARGV[1]: the cutoff (seconds), ARGV[2..]: ids from the
/// set. An id whose data and meta are already gone leaves the set. Returns jobs deleted.
pub(super) const SWEEP_JOBS: &str = r"
local cutoff = tonumber(ARGV[1])
local final = { Done = true, Failed = true, Killed = true }
local deleted = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local meta = KEYS[3] .. ':' .. id
  local status = redis.call('HGET', meta, 'status')
  local done_at = tonumber(redis.call('HGET', meta, 'done_at') or '')
  if not status then
    if redis.call('HEXISTS', KEYS[2], id) == 0 then redis.call('SREM', KEYS[1], id) end
  elseif final[status] and done_at and done_at < cutoff then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3] .. ':result', id)
    redis.call('DEL', meta)
    redis.call('SREM', KEYS[1], id)
    deleted = deleted + 1
  end
end
return deleted";

/// Deletes what ended before a cutoff from an index by end and the hashes it indexes (a
/// batch at a time). KEYS[1]: the index, KEYS[2..]: the hashes. ARGV: the cutoff score, the
/// batch size. Returns how many it deleted.
pub(super) const SWEEP_ENDED: &str = r"
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(ended) do
  for i = 2, #KEYS do redis.call('HDEL', KEYS[i], member) end
  redis.call('ZREM', KEYS[1], member)
end
return #ended";

/// Deletes the requests in line that ran out before a cutoff. ARGV: the cutoff score.
/// Returns how many it deleted.
pub(super) const SWEEP_LINE_REQUESTS: &str = r"
local deleted = 0
for _, line in ipairs(redis.call('SMEMBERS', 'faseng:desk_lines')) do
  local ended = redis.call('ZRANGEBYSCORE', 'faseng:desk_line_expiry:' .. line, '-inf', '(' .. ARGV[1])
  for _, user in ipairs(ended) do
    if desk_remove(line, user) then deleted = deleted + 1 end
  end
end
return deleted";

/// Counts a log written before its size was tracked. KEYS: the log, log sizes, log bytes.
/// ARGV: the run key.
pub(super) const COUNT_LOG: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local n = 0
for _, line in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do n = n + #line + 1 end
redis.call('HSET', KEYS[2], ARGV[1], n)
redis.call('INCRBY', KEYS[3], n)
return n";

#[async_trait]
impl Retention for RedisStore {
    async fn sweep(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Swept> {
        self.index_existing()
            .await
            .context("indexing runs and logs written before retention")?;
        let mut swept = Swept::default();
        self.sweep_runs(cutoff, &mut swept).await?;
        let mut offset = 0usize;
        loop {
            let (page, deleted, kept): (usize, u64, usize) = scripts()
                .sweep_status
                .key(STATUS_BY_TIME)
                .arg(score(cutoff))
                .arg(offset)
                .arg(SWEEP_BATCH)
                .invoke_async(&mut self.conn())
                .await?;
            swept.status_histories += deleted;
            offset += kept;
            if page < SWEEP_BATCH {
                break;
            }
        }
        let cfg = apalis_redis::Config::default().queue(&self.queue);
        for set in [cfg.done_jobs_set(), cfg.dead_jobs_set()] {
            swept.jobs += self
                .sweep_jobs(&set, &cfg, cutoff.timestamp())
                .await
                .with_context(|| format!("sweeping the queue's {set}"))?;
        }
        self.sweep_desk(cutoff, &mut swept)
            .await
            .context("sweeping the release desk")?;
        Ok(swept)
    }

    async fn size(&self) -> anyhow::Result<StoreSize> {
        let (runs, log_bytes): (u64, Option<i64>) = redis::pipe()
            .zcard(RUNS_BY_TIME)
            .get(LOG_BYTES)
            .query_async(&mut self.conn())
            .await?;
        Ok(StoreSize {
            runs,
            log_bytes: log_bytes.unwrap_or(0).max(0) as u64,
        })
    }
}

impl RedisStore {
    /// Deletes the desk's freezes and grants that ended, tickets and requests in line that
    /// ran out, and release requests over and last changed, before `cutoff`.
    async fn sweep_desk(&self, cutoff: DateTime<Utc>, swept: &mut Swept) -> anyhow::Result<()> {
        use super::freezes::{FREEZES, FREEZES_BY_END, UNFREEZES, UNFREEZES_BY_END};
        use super::requests::{REQUESTS, REQUESTS_DONE};
        use super::tickets::{TICKET_ENDS, TICKETS, TICKETS_BY_END};
        for (index, hashes, count) in [
            (FREEZES_BY_END, &[FREEZES][..], &mut swept.freezes),
            (UNFREEZES_BY_END, &[UNFREEZES][..], &mut swept.unfreezes),
            (
                TICKETS_BY_END,
                &[TICKETS, TICKET_ENDS][..],
                &mut swept.tickets,
            ),
            (REQUESTS_DONE, &[REQUESTS][..], &mut swept.requests),
        ] {
            loop {
                let mut sweep = scripts().sweep_ended.prepare_invoke();
                sweep.key(index);
                for hash in hashes {
                    sweep.key(*hash);
                }
                let n: u64 = sweep
                    .arg(score(cutoff))
                    .arg(SWEEP_BATCH)
                    .invoke_async(&mut self.conn())
                    .await?;
                *count += n;
                if n < SWEEP_BATCH as u64 {
                    break;
                }
            }
        }
        let n: u64 = scripts()
            .sweep_line_requests
            .arg(score(cutoff))
            .invoke_async(&mut self.conn())
            .await?;
        swept.line_requests += n;
        swept.web_actions += self.sweep_web_actions(cutoff).await?;
        Ok(())
    }

    /// Walks the runs index up to `cutoff` a page at a time: expired runs are deleted, runs
    /// finished since are re-scored by their finish time (so later sweeps skip them until
    /// then), and unfinished ones are stepped over.
    async fn sweep_runs(&self, cutoff: DateTime<Utc>, swept: &mut Swept) -> anyhow::Result<()> {
        let mut offset = 0usize;
        loop {
            let page: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(RUNS_BY_TIME)
                .arg("-inf")
                .arg(format!("({}", score(cutoff)))
                .arg("LIMIT")
                .arg(offset)
                .arg(SWEEP_BATCH)
                .query_async(&mut self.conn())
                .await?;
            if page.is_empty() {
                return Ok(());
            }
            let records: Vec<Option<String>> = redis::cmd("MGET")
                .arg(page.iter().map(|key| k("run", key)).collect::<Vec<_>>())
                .query_async(&mut self.conn())
                .await?;
            let mut delete = scripts().delete_runs.prepare_invoke();
            delete
                .key(RUNS_BY_TIME)
                .key(STATUS_BY_TIME)
                .key(LOG_SIZES)
                .key(LOG_BYTES);
            let mut deleting = 0usize;
            let mut rescore = redis::pipe();
            let mut rescoring = 0usize;
            for (key, text) in page.iter().zip(&records) {
                let record = text.as_deref().map(from_json::<RunRecord>);
                match record {
                    Some(Ok(run)) if !expired(&run, cutoff) => {
                        if run.state.is_final() {
                            let finished = run.finished_at.unwrap_or(run.received_at);
                            rescore
                                .cmd("ZADD")
                                .arg(RUNS_BY_TIME)
                                .arg("XX")
                                .arg(score(finished))
                                .arg(key)
                                .ignore();
                            rescoring += 1;
                        } else {
                            offset += 1;
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(run = %key, error = %format!("{e:#}"), "retention: an unreadable run record is kept");
                        offset += 1;
                        continue;
                    }
                    // Expired, or gone already (the script takes it out of the index).
                    Some(Ok(_)) | None => {}
                }
                delete
                    .key(k("run", key))
                    .key(k("started", key))
                    .key(k("log", key))
                    .key(k("status_events", key))
                    .key(k("job", key))
                    .key(k("provider_stopped", key))
                    .arg(key)
                    .arg(text.as_deref().unwrap_or(""));
                deleting += 1;
            }
            if rescoring > 0 {
                let _: () = rescore.query_async(&mut self.conn()).await?;
            }
            if deleting > 0 {
                let (runs, bytes, changed): (u64, u64, usize) =
                    delete.invoke_async(&mut self.conn()).await?;
                swept.runs += runs;
                swept.log_bytes += bytes;
                offset += changed;
            }
            if page.len() < SWEEP_BATCH {
                return Ok(());
            }
        }
    }

    /// Deletes the jobs of one apalis done/dead set finished before `cutoff` (seconds).
    async fn sweep_jobs(
        &self,
        set: &str,
        cfg: &apalis_redis::Config,
        cutoff: i64,
    ) -> anyhow::Result<u64> {
        let mut deleted = 0;
        let mut cursor = 0u64;
        loop {
            let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(set)
                .arg(cursor)
                .arg("COUNT")
                .arg(SWEEP_BATCH)
                .query_async(&mut self.conn())
                .await?;
            if !ids.is_empty() {
                let n: u64 = scripts()
                    .sweep_jobs
                    .key(set)
                    .key(cfg.job_data_hash())
                    .key(cfg.job_meta_hash())
                    .arg(cutoff)
                    .arg(ids)
                    .invoke_async(&mut self.conn())
                    .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Once per store: indexes runs and status histories, and counts logs, written before
    /// retention kept its indexes (idempotent; several processes may do it at once).
    async fn index_existing(&self) -> anyhow::Result<()> {
        let done: bool = self.conn().exists(INDEXED).await?;
        if done {
            return Ok(());
        }
        let now = score(Utc::now());
        let runs = self.scan_keys("faseng:run:*").await?;
        for chunk in runs.chunks(SWEEP_BATCH) {
            let records: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut self.conn())
                .await?;
            let mut pipe = redis::pipe();
            for (key, text) in chunk.iter().zip(records) {
                let at = text
                    .as_deref()
                    .and_then(|t| from_json::<RunRecord>(t).ok())
                    .map_or(now, |r| score(r.received_at));
                pipe.cmd("ZADD")
                    .arg(RUNS_BY_TIME)
                    .arg("NX")
                    .arg(at)
                    .arg(&key["faseng:run:".len()..])
                    .ignore();
            }
            let _: () = pipe.query_async(&mut self.conn()).await?;
        }
        for log in self.scan_keys("faseng:log:*").await? {
            let _: i64 = scripts()
                .count_log
                .key(&log)
                .key(LOG_SIZES)
                .key(LOG_BYTES)
                .arg(&log["faseng:log:".len()..])
                .invoke_async(&mut self.conn())
                .await?;
        }
        let histories = self.scan_keys("faseng:status_events:*").await?;
        for chunk in histories.chunks(SWEEP_BATCH) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("ZADD")
                    .arg(STATUS_BY_TIME)
                    .arg("NX")
                    .arg(now)
                    .arg(&key["faseng:status_events:".len()..])
                    .ignore();
            }
            let _: () = pipe.query_async(&mut self.conn()).await?;
        }
        let _: () = self.conn().set(INDEXED, 1).await?;
        Ok(())
    }

    /// Every key matching `pattern` (SCAN, a page at a time).
    pub(super) async fn scan_keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn())
                .await?;
            keys.extend(page);
            if next == 0 {
                keys.sort();
                keys.dedup();
                return Ok(keys);
            }
            cursor = next;
        }
    }
}
