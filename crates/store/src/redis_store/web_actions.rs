//! Web actions on Redis: `faseng:web_actions` (hash: id → the action's JSON), numbered by
//! `faseng:web_actions:seq`, indexed by `…:pending` (sorted set, score = id: the oldest
//! first), `…:running` (score = claim end, ms: lapsed claims first) and `…:by_submit`
//! (score = submit time, ms: for retention). Every change is one script.

use super::*;
use crate::web_actions::claim_end;

const ACTIONS: &str = "faseng:web_actions";
const SEQ: &str = "faseng:web_actions:seq";
const PENDING: &str = "faseng:web_actions:pending";
const RUNNING: &str = "faseng:web_actions:running";
/// Every action by when it was submitted (retention sweeps the finished ones).
pub(super) const BY_SUBMIT: &str = "faseng:web_actions:by_submit";

/// KEYS: actions, seq, pending, by_submit. ARGV: user id, user name, command, submitted
/// (text), submitted (ms). Returns the new id.
const SUBMIT: &str = r"
local id = redis.call('INCR', KEYS[2])
local action = {id = id, user_id = ARGV[1], user_name = ARGV[2], command = ARGV[3],
  state = 'pending', submitted_at = ARGV[4]}
redis.call('HSET', KEYS[1], id, cjson.encode(action))
redis.call('ZADD', KEYS[3], id, id)
redis.call('ZADD', KEYS[4], ARGV[5], id)
return id";

/// KEYS: actions, pending, running. ARGV: now (ms), claim end (ms), holder, claim end
/// (text), the reply of a lapsed action. Fails every lapsed claim, then hands out the
/// oldest pending action (its JSON, or nil).
const CLAIM: &str = r"
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])) do
  redis.call('ZREM', KEYS[3], id)
  local text = redis.call('HGET', KEYS[1], id)
  if text then
    local a = cjson.decode(text)
    if a['state'] == 'running' then
      a['state'] = 'failed'
      a['reply'] = ARGV[5]
      redis.call('HSET', KEYS[1], id, cjson.encode(a))
    end
  end
end
while true do
  local next = redis.call('ZPOPMIN', KEYS[2])
  if #next == 0 then return false end
  local id = next[1]
  local text = redis.call('HGET', KEYS[1], id)
  if text then
    local a = cjson.decode(text)
    a['state'] = 'running'
    a['claimed_by'] = ARGV[3]
    a['claimed_until'] = ARGV[4]
    text = cjson.encode(a)
    redis.call('HSET', KEYS[1], id, text)
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    return text
  end
end";

/// KEYS: actions, running. ARGV: id, holder, final state, reply, run key (`''` = none).
/// Ends the action when it is running for that holder; returns 1 then, else 0.
const FINISH: &str = r"
local text = redis.call('HGET', KEYS[1], ARGV[1])
if not text then return 0 end
local a = cjson.decode(text)
if a['state'] ~= 'running' or a['claimed_by'] ~= ARGV[2] then return 0 end
a['state'] = ARGV[3]
a['reply'] = ARGV[4]
if ARGV[5] ~= '' then a['run_key'] = ARGV[5] end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(a))
redis.call('ZREM', KEYS[2], ARGV[1])
return 1";

/// KEYS: actions, by_submit. ARGV: the cutoff (ms), the offset and count of the page.
/// Deletes the finished actions submitted before the cutoff; returns the page's size,
/// actions deleted and kept.
pub(super) const SWEEP: &str = r"
local page = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', ARGV[2], ARGV[3])
local deleted, kept = 0, 0
for _, id in ipairs(page) do
  local text = redis.call('HGET', KEYS[1], id)
  local state = text and cjson.decode(text)['state']
  if text and state ~= 'done' and state ~= 'failed' then
    kept = kept + 1
  else
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    if text then deleted = deleted + 1 end
  end
end
return {#page, deleted, kept}";

struct Scripts {
    submit: redis::Script,
    claim: redis::Script,
    finish: redis::Script,
    sweep: redis::Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let script = |body: &str| redis::Script::new(&format!("#!lua\n{body}"));
        Scripts {
            submit: script(SUBMIT),
            claim: script(CLAIM),
            finish: script(FINISH),
            sweep: script(SWEEP),
        }
    })
}

#[async_trait]
impl WebActions for RedisStore {
    async fn submit_web_action(
        &self,
        user_id: &str,
        user_name: &str,
        command: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<u64> {
        Ok(scripts()
            .submit
            .key(ACTIONS)
            .key(SEQ)
            .key(PENDING)
            .key(BY_SUBMIT)
            .arg(user_id)
            .arg(user_name)
            .arg(command)
            .arg(instant(at))
            .arg(at.timestamp_millis())
            .invoke_async(&mut self.conn())
            .await?)
    }

    async fn claim_web_action(
        &self,
        holder: &str,
        at: DateTime<Utc>,
        lease: Duration,
    ) -> anyhow::Result<Option<WebAction>> {
        let until = claim_end(at, lease)?;
        let text: Option<String> = scripts()
            .claim
            .key(ACTIONS)
            .key(PENDING)
            .key(RUNNING)
            .arg(at.timestamp_millis())
            .arg(until.timestamp_millis())
            .arg(holder)
            .arg(instant(until))
            .arg(crate::messages::WEB_ACTION_STOPPED)
            .invoke_async(&mut self.conn())
            .await?;
        text.as_deref().map(from_json).transpose()
    }

    async fn finish_web_action(
        &self,
        id: u64,
        holder: &str,
        ok: bool,
        reply: &str,
        run_key: Option<&str>,
    ) -> anyhow::Result<bool> {
        let state = WebActionState::ended(ok);
        let done: i64 = scripts()
            .finish
            .key(ACTIONS)
            .key(RUNNING)
            .arg(id)
            .arg(holder)
            .arg(state.as_str())
            .arg(reply)
            .arg(run_key.unwrap_or(""))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    async fn web_action(&self, id: u64) -> anyhow::Result<Option<WebAction>> {
        let text: Option<String> = self.conn().hget(ACTIONS, id).await?;
        text.as_deref().map(from_json).transpose()
    }
}

impl RedisStore {
    /// Deletes the finished web actions submitted before `cutoff`; returns how many.
    pub(super) async fn sweep_web_actions(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
        let mut swept = 0;
        let mut offset = 0usize;
        loop {
            let (page, deleted, kept): (usize, u64, usize) = scripts()
                .sweep
                .key(ACTIONS)
                .key(BY_SUBMIT)
                .arg(cutoff.timestamp_millis())
                .arg(offset)
                .arg(SWEEP_BATCH)
                .invoke_async(&mut self.conn())
                .await?;
            swept += deleted;
            offset += kept;
            if page < SWEEP_BATCH {
                return Ok(swept);
            }
        }
    }
}
