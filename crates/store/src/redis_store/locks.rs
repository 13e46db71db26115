//! Environment locks on Redis.

use super::*;

const SET_LOCK: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lock = pcall(cjson.decode, held)
  if ok and lock['user'] ~= ARGV[2] then return held end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', 'faseng:locks', ARGV[3])
return ARGV[1]";

const CLEAR_LOCK: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lock = pcall(cjson.decode, held)
  if ok and lock['user'] == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('SREM', 'faseng:locks', ARGV[2])
  end
end
return held";

/// KEYS: the lock. ARGV: the lock as read (`''`: none), the new lock, the line. Sets it
/// when it is still as read; 1 when it did.
const SWAP_LOCK: &str = r"
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', 'faseng:locks', ARGV[3])
return 1";

/// KEYS: the lock. ARGV: the holder, since when (as the lock's JSON has it), the new lock.
/// Sets it when it is still that holder's since then; 1 when it did.
const UPDATE_LOCK_IF: &str = r"
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, lock = pcall(cjson.decode, held)
if not ok or lock['user'] ~= ARGV[1] or lock['at'] ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
return 1";

/// KEYS: the lock. ARGV: the holder, since when (as the lock's JSON has it), the line.
/// Removes it when it is still that holder's since then; returns it when it did.
const RELEASE_LOCK_IF: &str = r"
local held = redis.call('GET', KEYS[1])
if not held then return false end
local ok, lock = pcall(cjson.decode, held)
if not ok or lock['user'] ~= ARGV[1] or lock['at'] ~= ARGV[2] then return false end
redis.call('DEL', KEYS[1])
redis.call('SREM', 'faseng:locks', ARGV[3])
return held";

/// KEYS: the lock. ARGV: the lock as read, the line. Removes it when it is still as read;
/// 1 when it did.
const DELETE_LOCK_IF_SAME: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', 'faseng:locks', ARGV[2])
return 1";

/// Every line with a lock (kept by the scripts above; see [`RedisStore::index_locks_once`]).
const LOCKS: &str = "faseng:locks";
/// Set once the locks written before [`LOCKS`] existed are in it.
const LOCKS_INDEXED: &str = "faseng:locks_indexed";

#[async_trait]
impl Locks for RedisStore {
    async fn env_lock(&self, line: &str) -> anyhow::Result<Option<EnvLock>> {
        let v: Option<String> = self.conn().get(k("lock", line)).await?;
        v.as_deref().map(from_json).transpose()
    }

    async fn set_env_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<EnvLock> {
        let held: String = redis::Script::new(SET_LOCK)
            .key(k("lock", line))
            .arg(serde_json::to_string(lock)?)
            .arg(&lock.user)
            .arg(line)
            .invoke_async(&mut self.conn())
            .await?;
        from_json(&held)
    }

    async fn clear_env_lock(&self, line: &str, holder: &str) -> anyhow::Result<Option<EnvLock>> {
        let v: Option<String> = redis::Script::new(CLEAR_LOCK)
            .key(k("lock", line))
            .arg(holder)
            .arg(line)
            .invoke_async(&mut self.conn())
            .await?;
        v.as_deref().map(from_json).transpose()
    }

    async fn acquire_lock(
        &self,
        line: &str,
        lock: &EnvLock,
        now: DateTime<Utc>,
    ) -> anyhow::Result<EnvLock> {
        let new = serde_json::to_string(lock)?;
        // Read, decide, compare-and-set; again when the lock changed in between.
        loop {
            let held: Option<String> = self.conn().get(k("lock", line)).await?;
            if let Some(text) = &held {
                let current: EnvLock = from_json(text)?;
                if current.user != lock.user && !current.expired(now) {
                    return Ok(current);
                }
            }
            if self.swap_lock(line, held.as_deref(), &new).await? {
                return Ok(lock.clone());
            }
        }
    }

    async fn take_over_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<Option<EnvLock>> {
        let new = serde_json::to_string(lock)?;
        loop {
            let held: Option<String> = self.conn().get(k("lock", line)).await?;
            if self.swap_lock(line, held.as_deref(), &new).await? {
                return held.as_deref().map(from_json).transpose();
            }
        }
    }

    async fn locks(&self) -> anyhow::Result<Vec<(String, EnvLock)>> {
        self.index_locks_once().await?;
        let mut lines: Vec<String> = self.conn().smembers(LOCKS).await?;
        lines.sort();
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let held: Vec<Option<String>> = redis::cmd("MGET")
            .arg(lines.iter().map(|l| k("lock", l)).collect::<Vec<_>>())
            .query_async(&mut self.conn())
            .await?;
        lines
            .into_iter()
            .zip(held)
            .filter_map(|(line, text)| Some((line, text?)))
            .map(|(line, text)| Ok((line, from_json(&text)?)))
            .collect()
    }

    async fn update_lock_if(
        &self,
        line: &str,
        holder: &str,
        since: DateTime<Utc>,
        new: &EnvLock,
    ) -> anyhow::Result<bool> {
        let updated: i64 = redis::Script::new(UPDATE_LOCK_IF)
            .key(k("lock", line))
            .arg(holder)
            .arg(json_time(since)?)
            .arg(serde_json::to_string(new)?)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(updated == 1)
    }

    async fn release_lock_if(
        &self,
        line: &str,
        holder: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Option<EnvLock>> {
        let held: Option<String> = redis::Script::new(RELEASE_LOCK_IF)
            .key(k("lock", line))
            .arg(holder)
            .arg(json_time(since)?)
            .arg(line)
            .invoke_async(&mut self.conn())
            .await?;
        held.as_deref().map(from_json).transpose()
    }

    async fn expire_lock(&self, line: &str, now: DateTime<Utc>) -> anyhow::Result<Option<EnvLock>> {
        // Read, decide, delete if unchanged; again when the lock changed in between.
        loop {
            let Some(text): Option<String> = self.conn().get(k("lock", line)).await? else {
                return Ok(None);
            };
            let held: EnvLock = from_json(&text)?;
            if !held.expired(now) {
                return Ok(None);
            }
            let deleted: i64 = redis::Script::new(DELETE_LOCK_IF_SAME)
                .key(k("lock", line))
                .arg(&text)
                .arg(line)
                .invoke_async(&mut self.conn())
                .await?;
            if deleted == 1 {
                return Ok(Some(held));
            }
        }
    }
}

/// A time as a lock's JSON has it (how `at` is compared inside a script).
fn json_time(at: DateTime<Utc>) -> anyhow::Result<String> {
    match serde_json::to_value(at)? {
        serde_json::Value::String(text) => Ok(text),
        other => anyhow::bail!("a time serialized as {other}"),
    }
}

impl RedisStore {
    /// Sets the lock on `line` to `new` when it is still `held`; whether it did.
    async fn swap_lock(&self, line: &str, held: Option<&str>, new: &str) -> anyhow::Result<bool> {
        let swapped: i64 = redis::Script::new(SWAP_LOCK)
            .key(k("lock", line))
            .arg(held.unwrap_or(""))
            .arg(new)
            .arg(line)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(swapped == 1)
    }

    /// Once per store: names the locks written before [`LOCKS`] existed in it.
    async fn index_locks_once(&self) -> anyhow::Result<()> {
        let done: bool = self.conn().exists(LOCKS_INDEXED).await?;
        if done {
            return Ok(());
        }
        let lines: Vec<String> = self
            .scan_keys("faseng:lock:*")
            .await?
            .iter()
            .map(|key| key["faseng:lock:".len()..].to_owned())
            .collect();
        if !lines.is_empty() {
            let _: () = self.conn().sadd(LOCKS, lines).await?;
        }
        let _: () = self.conn().set(LOCKS_INDEXED, 1).await?;
        Ok(())
    }
}
