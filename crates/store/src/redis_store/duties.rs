//! Duty leases on Redis.

use super::*;

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

#[async_trait]
impl Duties for RedisStore {
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
