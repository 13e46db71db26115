//! The Redis store: plain keys under `faseng:` next to apalis's queue keys, for any number
//! of workers on any number of machines.

mod audit;
mod deliveries;
mod desk_line;
mod duties;
mod freezes;
mod lines;
mod locks;
mod logs;
mod outbox;
mod requests;
mod retention;
mod runs;
mod stats;
#[cfg(test)]
mod tests;
mod tickets;
mod web_actions;

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::*;

/// Every run key, scored by when it was received (a finished run is re-scored by when it
/// finished once a sweep has seen it): what retention walks, and `ZCARD` is the run count.
pub(super) const RUNS_BY_TIME: &str = "faseng:runs_by_time";
/// Every key with a status history, scored by its newest event (`ZADD GT`, Redis 6.2+ as
/// apalis needs anyway).
pub(super) const STATUS_BY_TIME: &str = "faseng:status_by_time";
/// The bytes of each run's log (hash: run key → bytes).
pub(super) const LOG_SIZES: &str = "faseng:log_sizes";
/// The bytes of all logs.
pub(super) const LOG_BYTES: &str = "faseng:log_bytes";
/// Set once the keys written before the indexes above existed have been indexed.
pub(super) const INDEXED: &str = "faseng:retention_indexed";

/// Every run key, scored by when it was received (milliseconds, never re-scored): the
/// history, newest first. `faseng:history:{app}` is the same for one app.
pub(super) const HISTORY: &str = "faseng:history";
/// Set once the runs written before the history index existed have been indexed.
pub(super) const HISTORY_INDEXED: &str = "faseng:history_indexed";

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
/// `faseng:lines` (for [`crate::Lines::line_heads`]). Defines `join(list, set, key, name)`, 1 = joined.
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

/// Keeping the history index (see [`HISTORY`]): defines `index_history(key, record, ms)`
/// and `unindex_history(key, record)`; the app is read from the record.
pub(super) const HISTORY_FN: &str = r"
local function app_of(record)
  local ok, r = pcall(cjson.decode, record or '')
  if ok and type(r) == 'table' and type(r['app']) == 'string' then return r['app'] end
  return nil
end
local function index_history(key, record, ms)
  redis.call('ZADD', 'faseng:history', 'NX', ms, key)
  local app = app_of(record)
  if app then redis.call('ZADD', 'faseng:history:' .. app, 'NX', ms, key) end
end
local function unindex_history(key, record)
  redis.call('ZREM', 'faseng:history', key)
  local app = app_of(record)
  if app then redis.call('ZREM', 'faseng:history:' .. app, key) end
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
/// ARGV[4n+2+i] item i's receive time, ARGV[5n+2+i] the same in milliseconds. Returns `fresh_delivery, created` per item. The
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
    index_history(ARGV[4*i+3], ARGV[4*i+2], ARGV[5*n+2+i])
  end
  out[2*i+1] = fresh and 1 or 0
  out[2*i+2] = created and 1 or 0
end
return out";

/// KEYS: the link key's key. ARGV: a fresh key, kept when none is stored. Returns the stored key.
const LINK_KEY: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])";

/// A time as an index score: seconds since the epoch, to the millisecond.
pub(super) fn score(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!(
        "#!lua\n{JOIN_FN}\n{HISTORY_FN}\n{}\n{body}",
        stats::STATS_FN
    ))
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
    sweep_ended: redis::Script,
    sweep_line_requests: redis::Script,
    create_run: redis::Script,
    put_run: redis::Script,
    delete_run: redis::Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        join: script(LINE_JOIN),
        leave: script(LINE_LEAVE),
        accept: script(ACCEPT_BATCH),
        link_key: script(LINK_KEY),
        delete_runs: script(retention::DELETE_RUNS),
        sweep_status: script(retention::SWEEP_STATUS),
        sweep_jobs: script(retention::SWEEP_JOBS),
        count_log: script(retention::COUNT_LOG),
        sweep_ended: script(retention::SWEEP_ENDED),
        sweep_line_requests: desk_line::desk_script(retention::SWEEP_LINE_REQUESTS),
        create_run: script(runs::CREATE_RUN),
        put_run: script(runs::PUT_RUN),
        delete_run: script(runs::DELETE_RUN),
    })
}

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

use crate::from_json;

#[async_trait]
impl Meta for RedisStore {
    async fn ping(&self) -> anyhow::Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
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
}

/// Adds a run to the history indexes (a run already there keeps its place).
fn index_history(pipe: &mut redis::Pipeline, run: &RunRecord) {
    let ms = run.received_ms();
    pipe.cmd("ZADD")
        .arg(HISTORY)
        .arg("NX")
        .arg(ms)
        .arg(&run.key)
        .ignore();
    pipe.cmd("ZADD")
        .arg(k("history", &run.app))
        .arg("NX")
        .arg(ms)
        .arg(&run.key)
        .ignore();
}
