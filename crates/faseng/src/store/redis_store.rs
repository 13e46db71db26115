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
    RunRecord, Settle, StartMarker, Store, StoredMarker,
};

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
/// name, the job. Returns `fresh_delivery, created` per item. The `#!lua` line makes Redis 7
/// refuse the whole script up front when it is out of memory, rather than fail half-way
/// through a batch.
const ACCEPT_BATCH: &str = r"
local out = {}
local n = #KEYS / 5
for i = 0, n - 1 do
  local fresh = redis.call('SET', KEYS[5*i+1], '1', 'NX', 'EX', ARGV[1])
  local created = redis.call('SET', KEYS[5*i+2], ARGV[4*i+2], 'NX')
  if created then
    join(KEYS[5*i+3], KEYS[5*i+4], ARGV[4*i+3], ARGV[4*i+4])
    redis.call('SET', KEYS[5*i+5], ARGV[4*i+5])
  end
  out[2*i+1] = fresh and 1 or 0
  out[2*i+2] = created and 1 or 0
end
return out";

/// KEYS: the link key's key. ARGV: a fresh key, kept when none is stored. Returns the stored key.
const LINK_KEY: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("#!lua\n{JOIN_FN}\n{body}"))
}

/// The compiled scripts (hashing a script's text on every call is needless work).
struct Scripts {
    join: redis::Script,
    leave: redis::Script,
    accept: redis::Script,
    link_key: redis::Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        join: script(LINE_JOIN),
        leave: script(LINE_LEAVE),
        accept: script(ACCEPT_BATCH),
        link_key: script(LINK_KEY),
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
        let set: bool = self
            .conn()
            .set_nx(k("run", &run.key), serde_json::to_string(run)?)
            .await?;
        Ok(set)
    }

    async fn put_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        let _: () = self
            .conn()
            .set(k("run", &run.key), serde_json::to_string(run)?)
            .await?;
        Ok(())
    }

    async fn get_run(&self, key: &str) -> anyhow::Result<Option<RunRecord>> {
        let v: Option<String> = self.conn().get(k("run", key)).await?;
        v.as_deref().map(from_json).transpose()
    }

    async fn delete_run(&self, key: &str) -> anyhow::Result<()> {
        let _: i64 = self.conn().del(k("run", key)).await?;
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
        let _: i64 = self.conn().rpush(k("log", key), lines).await?;
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
        let _: i64 = self.conn().rpush(k("status_events", key), entry).await?;
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
    }
}
