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
