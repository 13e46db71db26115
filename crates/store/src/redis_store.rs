//! The Redis store: plain keys under `faseng:` next to apalis's queue keys, for any number
//! of workers on any number of machines.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    AcceptItem, Accepted, ClaimedLane, DELIVERY_TTL, DURATIONS_KEPT, EnvLock, LaneKey, OutboxEntry,
    RunRecord, SWEEP_BATCH, Settle, StartMarker, Store, StoreSize, StoredMarker, Swept, expired,
    log_line_bytes,
};

/// Every run key, scored by when it was received (a finished run is re-scored by when it
/// finished once a sweep has seen it): what retention walks, and `ZCARD` is the run count.
pub(super) const RUNS_BY_TIME: &str = "faseng:runs_by_time";
/// Every key with a status history, scored by its newest event (`ZADD GT`, Redis 6.2+ as
/// apalis needs anyway).
const STATUS_BY_TIME: &str = "faseng:status_by_time";
/// The bytes of each run's log (hash: run key → bytes).
const LOG_SIZES: &str = "faseng:log_sizes";
/// The bytes of all logs.
const LOG_BYTES: &str = "faseng:log_bytes";
/// Set once the keys written before the indexes above existed have been indexed.
const INDEXED: &str = "faseng:retention_indexed";

/// The Redis-backed [`Store`].
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    queue: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Opens a Redis connection manager with timeouts long enough for a loaded server
/// (redis-rs's default 500 ms response timeout kills apalis workers under load) and short
/// enough that an unreachable server is noticed.
pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("invalid redis URL")?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(1);
    client
        .get_connection_manager_with_config(config)
        .await
        .context("connecting to redis")
}

/// Says at start whether Redis keeps what it acknowledged (`CONFIG GET appendonly` and
/// `appendfsync`): a warning naming what a crash could lose when it does not, or that it
/// could not be checked.
pub async fn warn_if_not_durable(conn: &ConnectionManager) {
    match durability_warning(conn).await {
        Ok(None) => tracing::debug!("Redis persistence: appendonly yes, appendfsync always"),
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Err(e) => tracing::warn!(
            "{}",
            crate::messages::redis_durability_unknown(&format!("{e:#}"))
        ),
    }
}

/// The warning [`warn_if_not_durable`] logs, if any.
async fn durability_warning(conn: &ConnectionManager) -> anyhow::Result<Option<String>> {
    let mut conn = conn.clone();
    let mut get = async |name: &str| -> anyhow::Result<String> {
        let pairs: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut conn)
            .await?;
        pairs
            .get(name)
            .cloned()
            .with_context(|| format!("no {name} in the answer"))
    };
    let appendonly = get("appendonly").await?;
    let appendfsync = get("appendfsync").await?;
    Ok(crate::messages::redis_durability_warning(
        &appendonly,
        &appendfsync,
    ))
}

/// Joining a waiting line: the line is a list (arrival order) with a companion set of its
/// members (`faseng:line_members:{line}`), so "already in the line?" is O(1) however long the
/// line is (LPOS over the list made every intake O(line length)). A line written before the
/// set existed is indexed once, on its first join. Every line that has runs is named in
/// `faseng:lines` (for [`Store::line_heads`]). Defines `join(list, set, key, name)`, 1 = joined.
const JOIN_FN: &str = r"
local function join(list, set, key, name)
  redis.call('SADD', 'faseng:lines', name)
  if redis.call('SISMEMBER', set, key) == 1 then return 0 end
  if redis.call('SCARD', set) == 0 and redis.call('LLEN', list) > 0 then
    local members = redis.call('LRANGE', list, 0, -1)
    for i = 1, #members, 1000 do
      redis.call('SADD', set, unpack(members, i, math.min(i + 999, #members)))
    end
    if redis.call('SISMEMBER', set, key) == 1 then return 0 end
  end
  redis.call('SADD', set, key)
  redis.call('RPUSH', list, key)
  return 1
end
";

/// KEYS: line list, member set. ARGV: run key, line name.
const LINE_JOIN: &str = "return join(KEYS[1], KEYS[2], ARGV[1], ARGV[2])";

/// KEYS: line list, member set. ARGV: run key, line name.
const LINE_LEAVE: &str = r"
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('SREM', 'faseng:lines', ARGV[2]) end
return 1";

/// Intake for a batch of deliveries in one atomic script, in arrival order. Per item i
/// (0-based): KEYS[5i+1..5i+5] = delivery, run, line list, line member set, job;
/// ARGV[1] = the delivery TTL, ARGV[4i+2..4i+5] = the run record, the run key, the line
/// name, the job; after the items, the last KEYS is the runs-by-time index and
/// ARGV[4n+2+i] item i's receive time. Returns `fresh_delivery, created` per item. The
/// `#!lua` line makes Redis 7 refuse the whole script up front when it is out of memory,
/// rather than fail half-way through a batch.
const ACCEPT_BATCH: &str = r"
local out = {}
local n = (#KEYS - 1) / 5
local by_time = KEYS[#KEYS]
for i = 0, n - 1 do
  local fresh = redis.call('SET', KEYS[5*i+1], '1', 'NX', 'EX', ARGV[1])
  local created = redis.call('SET', KEYS[5*i+2], ARGV[4*i+2], 'NX')
  if created then
    join(KEYS[5*i+3], KEYS[5*i+4], ARGV[4*i+3], ARGV[4*i+4])
    redis.call('SET', KEYS[5*i+5], ARGV[4*i+5])
    redis.call('ZADD', by_time, 'NX', ARGV[4*n+2+i], ARGV[4*i+3])
  end
  out[2*i+1] = fresh and 1 or 0
  out[2*i+2] = created and 1 or 0
end
return out";

/// KEYS: the link key's key. ARGV: a fresh key, kept when none is stored. Returns the stored key.
const LINK_KEY: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])";

/// Deletes finished runs a sweep chose. KEYS[1..4]: runs index, status index, log sizes,
/// log bytes; then per run i (0-based) KEYS[6i+5..6i+10]: record, start marker, log, status
/// history, kept queue job, provider-stopped note. ARGV[2i+1], ARGV[2i+2]: the run key and
/// its record as the sweep read it: a run
/// written since is left alone, a run already gone leaves the index. Returns runs deleted,
/// their log bytes, and runs left alone.
const DELETE_RUNS: &str = r"
local runs, bytes, changed = 0, 0, 0
for i = 0, (#KEYS - 4) / 6 - 1 do
  local key, seen = ARGV[2*i+1], ARGV[2*i+2]
  local record = redis.call('GET', KEYS[6*i+5])
  if not record then
    redis.call('ZREM', KEYS[1], key)
  elseif record ~= seen then
    changed = changed + 1
  else
    local size = tonumber(redis.call('HGET', KEYS[3], key) or '0') or 0
    redis.call('DEL', KEYS[6*i+5], KEYS[6*i+6], KEYS[6*i+7], KEYS[6*i+8], KEYS[6*i+9], KEYS[6*i+10])
    redis.call('ZREM', KEYS[1], key)
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
const SWEEP_STATUS: &str = r"
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
const SWEEP_JOBS: &str = r"
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

/// Counts a log written before its size was tracked. KEYS: the log, log sizes, log bytes.
/// ARGV: the run key.
const COUNT_LOG: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local n = 0
for _, line in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do n = n + #line + 1 end
redis.call('HSET', KEYS[2], ARGV[1], n)
redis.call('INCRBY', KEYS[3], n)
return n";

/// A time as an index score: seconds since the epoch, to the millisecond.
pub(super) fn score(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("#!lua\n{JOIN_FN}\n{body}"))
}

/// The compiled scripts (hashing a script's text on every call is needless work).
struct Scripts {
    join: redis::Script,
    leave: redis::Script,
    accept: redis::Script,
    link_key: redis::Script,
    delete_runs: redis::Script,
    sweep_status: redis::Script,
    sweep_jobs: redis::Script,
    count_log: redis::Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        join: script(LINE_JOIN),
        leave: script(LINE_LEAVE),
        accept: script(ACCEPT_BATCH),
        link_key: script(LINK_KEY),
        delete_runs: script(DELETE_RUNS),
        sweep_status: script(SWEEP_STATUS),
        sweep_jobs: script(SWEEP_JOBS),
        count_log: script(COUNT_LOG),
    })
}

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

/// KEYS: the duty's hash (`holder`, `until` in ms). ARGV: holder, now (ms), new end (ms).
/// Returns 1 when `holder` holds the duty after the call.
const ACQUIRE_DUTY: &str = r"
local held = redis.call('HMGET', KEYS[1], 'holder', 'until')
if held[1] and held[1] ~= ARGV[1] and tonumber(held[2]) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'until', ARGV[3])
return 1";

/// KEYS: the duty's hash. ARGV: holder. Deletes it when `holder` holds it.
const RELEASE_DUTY: &str = r"
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";

/// The duty lease scripts.
fn duty_scripts() -> &'static (redis::Script, redis::Script) {
    static SCRIPTS: std::sync::OnceLock<(redis::Script, redis::Script)> =
        std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        (
            redis::Script::new(ACQUIRE_DUTY),
            redis::Script::new(RELEASE_DUTY),
        )
    })
}

const SET_LOCK: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lock = pcall(cjson.decode, held)
  if ok and lock['user'] ~= ARGV[2] then return held end
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]";

const CLEAR_LOCK: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lock = pcall(cjson.decode, held)
  if ok and lock['user'] == ARGV[1] then redis.call('DEL', KEYS[1]) end
end
return held";

impl RedisStore {
    /// A store over an existing connection; `queue` is the apalis queue name (for depth).
    pub fn new(conn: ConnectionManager, queue: &str) -> Self {
        Self {
            conn,
            queue: queue.to_owned(),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

fn k(kind: &str, id: &str) -> String {
    format!("faseng:{kind}:{id}")
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> anyhow::Result<T> {
    serde_json::from_str(s).context("reading a stored record")
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> anyhow::Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn accept_runs(&self, items: &[AcceptItem]) -> anyhow::Result<Vec<Accepted>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = scripts().accept.prepare_invoke();
        invocation.arg(DELIVERY_TTL.as_secs());
        for item in items {
            invocation
                .key(k("delivery", &item.delivery_id))
                .key(k("run", &item.run.key))
                .key(k("line", &item.line))
                .key(k("line_members", &item.line))
                .key(k("job", &item.run.key))
                .arg(serde_json::to_string(&item.run)?)
                .arg(&item.run.key)
                .arg(&item.line)
                .arg(&item.job);
        }
        invocation.key(RUNS_BY_TIME);
        for item in items {
            invocation.arg(score(item.run.received_at));
        }
        let flags: Vec<i64> = invocation.invoke_async(&mut self.conn()).await?;
        anyhow::ensure!(
            flags.len() == 2 * items.len(),
            "the accept script answered {} values for {} deliveries",
            flags.len(),
            items.len()
        );
        Ok(flags
            .chunks(2)
            .map(|f| Accepted {
                fresh_delivery: f[0] == 1,
                created: f[1] == 1,
            })
            .collect())
    }

    async fn release_delivery(&self, delivery_id: &str) -> anyhow::Result<()> {
        let _: i64 = self.conn().del(k("delivery", delivery_id)).await?;
        Ok(())
    }

    async fn create_run(&self, run: &RunRecord) -> anyhow::Result<bool> {
        let (set,): (bool,) = redis::pipe()
            .atomic()
            .set_nx(k("run", &run.key), serde_json::to_string(run)?)
            .add_command(index_run(run))
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(set)
    }

    async fn put_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        let _: () = redis::pipe()
            .atomic()
            .set(k("run", &run.key), serde_json::to_string(run)?)
            .ignore()
            .add_command(index_run(run))
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn get_run(&self, key: &str) -> anyhow::Result<Option<RunRecord>> {
        let v: Option<String> = self.conn().get(k("run", key)).await?;
        v.as_deref().map(from_json).transpose()
    }

    async fn delete_run(&self, key: &str) -> anyhow::Result<()> {
        let _: () = redis::pipe()
            .atomic()
            .del(k("run", key))
            .ignore()
            .zrem(RUNS_BY_TIME, key)
            .ignore()
            .query_async(&mut self.conn())
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
        v.map(|raw| {
            Ok(StoredMarker {
                marker: from_json(&raw)?,
                raw,
            })
        })
        .transpose()
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

    async fn line_heads(&self) -> anyhow::Result<Vec<(String, String)>> {
        let lines: Vec<String> = self.conn().smembers("faseng:lines").await?;
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for line in &lines {
            pipe.lindex(k("line", line), 0);
        }
        let heads: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await?;
        Ok(lines
            .into_iter()
            .zip(heads)
            .filter_map(|(line, head)| head.map(|h| (line, h)))
            .collect())
    }

    async fn line_join(&self, line: &str, key: &str) -> anyhow::Result<()> {
        let _: i64 = scripts()
            .join
            .key(k("line", line))
            .key(k("line_members", line))
            .arg(key)
            .arg(line)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn line_leave(&self, line: &str, key: &str) -> anyhow::Result<()> {
        let _: i64 = scripts()
            .leave
            .key(k("line", line))
            .key(k("line_members", line))
            .arg(key)
            .arg(line)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn line(&self, line: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.conn().lrange(k("line", line), 0, -1).await?)
    }

    async fn env_lock(&self, line: &str) -> anyhow::Result<Option<EnvLock>> {
        let v: Option<String> = self.conn().get(k("lock", line)).await?;
        v.as_deref().map(from_json).transpose()
    }

    async fn set_env_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<EnvLock> {
        let held: String = redis::Script::new(SET_LOCK)
            .key(k("lock", line))
            .arg(serde_json::to_string(lock)?)
            .arg(&lock.user)
            .invoke_async(&mut self.conn())
            .await?;
        from_json(&held)
    }

    async fn clear_env_lock(&self, line: &str, holder: &str) -> anyhow::Result<Option<EnvLock>> {
        let v: Option<String> = redis::Script::new(CLEAR_LOCK)
            .key(k("lock", line))
            .arg(holder)
            .invoke_async(&mut self.conn())
            .await?;
        v.as_deref().map(from_json).transpose()
    }

    async fn push_duration(&self, line: &str, secs: f64) -> anyhow::Result<()> {
        let key = k("durations", line);
        let _: () = redis::pipe()
            .atomic()
            .lpush(&key, secs)
            .ignore()
            .ltrim(&key, 0, DURATIONS_KEPT as isize - 1)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn durations(&self, line: &str) -> anyhow::Result<Vec<f64>> {
        Ok(self
            .conn()
            .lrange(k("durations", line), 0, DURATIONS_KEPT as isize - 1)
            .await?)
    }

    async fn append_log(&self, key: &str, lines: &[String]) -> anyhow::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let bytes: u64 = lines.iter().map(|l| log_line_bytes(l)).sum();
        let _: () = redis::pipe()
            .atomic()
            .rpush(k("log", key), lines)
            .ignore()
            .hincr(LOG_SIZES, key, bytes)
            .ignore()
            .incr(LOG_BYTES, bytes)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn read_log(&self, key: &str, from: usize) -> anyhow::Result<Vec<String>> {
        Ok(self.conn().lrange(k("log", key), from as isize, -1).await?)
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

    async fn queue_depth(&self) -> anyhow::Result<u64> {
        let cfg = apalis_redis::Config::default().queue(&self.queue);
        let n: u64 = self.conn().llen(cfg.active_jobs_list()).await?;
        Ok(n)
    }

    async fn link_key(&self, fresh: &str) -> anyhow::Result<String> {
        Ok(scripts()
            .link_key
            .key("faseng:link_key")
            .arg(fresh)
            .invoke_async(&mut self.conn())
            .await?)
    }

    async fn outbox_push(
        &self,
        run: &str,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        super::redis_outbox::push(self.conn(), run, fence, None, entries).await
    }

    async fn finish_run(
        &self,
        record: &RunRecord,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        super::redis_outbox::push(self.conn(), &record.key, fence, Some(record), entries).await
    }

    async fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<LaneKey>> {
        super::redis_outbox::due(self.conn(), now, limit).await
    }

    async fn outbox_claim(
        &self,
        lane: &LaneKey,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Option<ClaimedLane>> {
        super::redis_outbox::claim(self.conn(), lane, holder, now, until, limit).await
    }

    async fn outbox_settle(
        &self,
        lane: &LaneKey,
        holder: &str,
        settle: &Settle,
    ) -> anyhow::Result<Option<u64>> {
        super::redis_outbox::settle(self.conn(), lane, holder, settle).await
    }

    async fn outbox_depth(&self) -> anyhow::Result<u64> {
        super::redis_outbox::depth(self.conn()).await
    }

    async fn acquire_duty(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<bool> {
        let until = now + chrono::Duration::from_std(ttl).context("a duty lease's length")?;
        let held: i64 = duty_scripts()
            .0
            .key(k("duty", name))
            .arg(holder)
            .arg(now.timestamp_millis())
            .arg(until.timestamp_millis())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(held == 1)
    }

    async fn release_duty(&self, name: &str, holder: &str) -> anyhow::Result<()> {
        let _: i64 = duty_scripts()
            .1
            .key(k("duty", name))
            .arg(holder)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

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

/// `ZADD NX` of a run into the runs-by-time index (a run already there keeps its score).
fn index_run(run: &RunRecord) -> redis::Cmd {
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(RUNS_BY_TIME)
        .arg("NX")
        .arg(score(run.received_at))
        .arg(&run.key);
    cmd
}

impl RedisStore {
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
    async fn scan_keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway redis-server on a free port (its data directory lives as long as it
    /// does); `None` (with the reason printed) when the binary is not installed.
    struct Server(
        std::process::Child,
        u16,
        #[allow(dead_code)] tempfile::TempDir,
    );

    impl Server {
        fn start() -> Option<Self> {
            if !std::path::Path::new("/usr/bin/redis-server").exists() {
                eprintln!("SKIPPED: /usr/bin/redis-server is not installed");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new("/usr/bin/redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(Self(child, port, dir))
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn the_store_contract_holds_on_redis() {
        let Some(server) = Server::start() else {
            return;
        };
        let conn = connect(&format!("redis://127.0.0.1:{}", server.1))
            .await
            .unwrap();
        let store = RedisStore::new(conn.clone(), "q");
        super::super::contract::exercise(&store).await;

        // A line written before the member set existed is indexed on its first join.
        let _: i64 = conn
            .clone()
            .rpush(k("line", "old/edge"), &["x", "y"])
            .await
            .unwrap();
        store.line_join("old/edge", "x").await.unwrap();
        assert_eq!(store.line("old/edge").await.unwrap(), ["x", "y"]);
        store.line_join("old/edge", "z").await.unwrap();
        store.line_leave("old/edge", "y").await.unwrap();
        store.line_join("old/edge", "x").await.unwrap();
        assert_eq!(store.line("old/edge").await.unwrap(), ["x", "z"]);

        retention_details(&store, conn.clone()).await;
        durability(conn).await;
    }

    /// The start-up check reads Redis's persistence settings, and says when it cannot.
    async fn durability(mut conn: ConnectionManager) {
        let warning = durability_warning(&conn).await.unwrap();
        assert!(
            warning
                .as_ref()
                .is_some_and(|w| w.contains("appendonly no")),
            "this test server runs without an append-only file: {warning:?}"
        );
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendonly")
            .arg("yes")
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg("always")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(durability_warning(&conn).await.unwrap(), None);
        // A Redis that refuses CONFIG (as managed services do).
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg("-config")
            .query_async(&mut conn)
            .await
            .unwrap();
        let refused = durability_warning(&conn).await.unwrap_err();
        assert!(
            format!("{refused:#}")
                .to_lowercase()
                .contains("no permissions"),
            "{refused:#}"
        );
    }

    /// What the contract cannot see: status histories and apalis's records go, and keys
    /// written before retention kept its indexes are indexed and counted once.
    async fn retention_details(store: &RedisStore, mut conn: ConnectionManager) {
        let histories: Vec<String> = redis::cmd("KEYS")
            .arg("faseng:status_events:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            histories,
            ["faseng:status_events:s/old/4"],
            "only the running run's history is left"
        );

        let now = Utc::now();
        let day = chrono::Duration::days(1);
        let cfg = apalis_redis::Config::default().queue("q");
        let (data, meta) = (cfg.job_data_hash(), cfg.job_meta_hash());
        let job = |id: &str, status: &str, done_at: Option<i64>| {
            let mut pipe = redis::pipe();
            pipe.hset(&data, id, "{}").ignore();
            pipe.hset(format!("{meta}:{id}"), "status", status).ignore();
            if let Some(at) = done_at {
                pipe.hset(format!("{meta}:{id}"), "done_at", at).ignore();
            }
            pipe
        };
        let old = (now - day * 2).timestamp();
        for pipe in [
            job("old-done", "Done", Some(old)),
            job("new-done", "Done", Some(now.timestamp())),
            job("old-dead", "Killed", Some(old)),
            job("waiting", "Pending", None),
        ] {
            let _: () = pipe.query_async(&mut conn).await.unwrap();
        }
        let _: () = redis::pipe()
            .sadd(cfg.done_jobs_set(), &["old-done", "new-done", "vacuumed"])
            .ignore()
            .sadd(cfg.dead_jobs_set(), "old-dead")
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        let swept = store.sweep(now - day).await.unwrap();
        assert_eq!(swept.jobs, 2, "{swept:?}");
        let mut done: Vec<String> = conn.smembers(cfg.done_jobs_set()).await.unwrap();
        done.sort();
        assert_eq!(
            done,
            ["new-done"],
            "the vacuumed id leaves the done set too"
        );
        let dead: Vec<String> = conn.smembers(cfg.dead_jobs_set()).await.unwrap();
        assert!(dead.is_empty());
        let mut left: Vec<String> = conn.hkeys(&data).await.unwrap();
        left.sort();
        assert_eq!(left, ["new-done", "waiting"]);
        let gone: bool = conn.exists(format!("{meta}:old-done")).await.unwrap();
        assert!(!gone);

        // Keys from before the indexes: found, counted, swept.
        let before = store.size().await.unwrap();
        let legacy = RunRecord {
            state: super::super::RunState::Failure,
            received_at: now - day * 3,
            finished_at: Some(now - day * 3),
            ..super::super::contract::run("legacy/r/1")
        };
        let _: () = redis::pipe()
            .del(INDEXED)
            .ignore()
            .set(
                k("run", &legacy.key),
                serde_json::to_string(&legacy).unwrap(),
            )
            .ignore()
            .rpush(k("log", &legacy.key), &["one", "two"])
            .ignore()
            .rpush(k("status_events", "legacy/r/2"), "{}")
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(store.size().await.unwrap(), before, "not indexed yet");
        let swept = store.sweep(now - day).await.unwrap();
        assert_eq!((swept.runs, swept.log_bytes), (1, 8), "{swept:?}");
        assert_eq!(
            swept.status_histories, 0,
            "an unindexed history counts from now"
        );
        assert_eq!(store.size().await.unwrap(), before);
        assert_eq!(store.sweep(now + day).await.unwrap().status_histories, 1);
    }
}
