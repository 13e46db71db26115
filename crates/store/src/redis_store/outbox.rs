//! The outbox on Redis (see [`super::outbox`]). Per lane: a sorted set of entries
//! (`faseng:outbox:{lane}:{run}:entries`, score = sequence number, member = `seq\njson`) and
//! a hash of its state (`…:lane`: seq counter, holder, lease expiry, next attempt,
//! attempts, last error, doubt). Per deployment: a hash of the states written and the chat
//! message faseng posted (`faseng:outbox:run:{run}`, expiring [`OUTBOX_META_TTL`] after its
//! last write). One sorted set indexes the lanes with entries by when they are due
//! (`faseng:outbox:due`), and a counter keeps the number of entries for `/metrics`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::RedisStore;
use crate::Outbox;
use anyhow::Context as _;
use redis::aio::ConnectionManager;

use crate::RunRecord;
use crate::outbox::{
    ClaimedLane, Lane, LaneKey, OUTBOX_META_TTL, OutboxEntry, Settle, StoredEntry, millis,
};

const DUE: &str = "faseng:outbox:due";
const DEPTH: &str = "faseng:outbox:depth";

fn entries_key(lane: &LaneKey) -> String {
    format!("faseng:outbox:{}:{}:entries", lane.lane.as_str(), lane.run)
}

fn lane_key(lane: &LaneKey) -> String {
    format!("faseng:outbox:{}:{}:lane", lane.lane.as_str(), lane.run)
}

fn meta_key(run: &str) -> String {
    format!("faseng:outbox:run:{run}")
}

/// Appends entries (and, for `finish_run`, writes the run record) when the fence holds.
/// KEYS: started marker, run meta, status entries, status lane, chat entries, chat lane,
/// due index, depth counter, run record, runs index. ARGV: fence (`''` = none), now (ms),
/// meta TTL (s), status member, chat member, run record (`''` = none), its score in the runs
/// index (retention finds it there), run key, the five `stats_args` of the record (`''`
/// without one), then (lane, state, json) per entry.
/// Returns 1 when written, 0 when fenced out.
const PUSH: &str = r"
local fence = ARGV[1]
if fence ~= '' then
  local m = redis.call('GET', KEYS[1])
  if not m then return 0 end
  local ok, v = pcall(cjson.decode, m)
  if not ok or type(v) ~= 'table' or v['worker'] ~= fence then return 0 end
end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[9], ARGV[6])
  redis.call('ZADD', KEYS[10], 'NX', ARGV[7], ARGV[8])
  index_history(ARGV[8], ARGV[6], math.floor(tonumber(ARGV[7]) * 1000 + 0.5))
  index_stats(ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13])
end
local finals = {success = true, failure = true, error = true}
local meta = false
for i = 14, #ARGV, 3 do
  local lane, state, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local keep = true
  if lane == 'status' then
    if redis.call('HEXISTS', KEYS[2], 's:' .. state) == 1 then
      keep = false
    elseif finals[state] and redis.call('HEXISTS', KEYS[2], 'final') == 1 then
      keep = false
    else
      redis.call('HSET', KEYS[2], 's:' .. state, '1')
      if finals[state] then redis.call('HSET', KEYS[2], 'final', state) end
      meta = true
    end
  end
  if keep then
    local e, s, member = KEYS[5], KEYS[6], ARGV[5]
    if lane == 'status' then e, s, member = KEYS[3], KEYS[4], ARGV[4] end
    if redis.call('ZCARD', e) == 0 then
      redis.call('HSET', s, 'next', ARGV[2], 'attempts', '0', 'doubt', '0')
      redis.call('ZADD', KEYS[7], ARGV[2], member)
    end
    local seq = redis.call('HINCRBY', s, 'seq', 1)
    redis.call('ZADD', e, seq, seq .. '\n' .. json)
    redis.call('PERSIST', s)
    redis.call('INCR', KEYS[8])
  end
end
if meta then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return 1";

/// KEYS: entries, lane, due index, run meta. ARGV: holder, now (ms), lease expiry (ms),
/// member, limit. Returns nil when the lane is held by another or not due; else attempts,
/// doubt, taken over, chat ts, then the entries.
const CLAIM: &str = r"
local now = tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[2], 'holder', 'until', 'next', 'attempts', 'doubt')
local holder = h[1]
local mine = holder == ARGV[1]
if holder and not mine and tonumber(h[2] or '0') > now then return nil end
if not mine and tonumber(h[3] or '0') > now then return nil end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('HDEL', KEYS[2], 'holder', 'until')
  return {0, 0, 0, ''}
end
local taken = 0
local doubt = tonumber(h[5] or '0')
if holder and not mine then
  taken = 1
  doubt = 1
end
redis.call('HSET', KEYS[2], 'holder', ARGV[1], 'until', ARGV[3], 'doubt', doubt)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
local out = {tonumber(h[4] or '0'), doubt, taken, redis.call('HGET', KEYS[4], 'ts') or ''}
local entries = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[5]) - 1)
for i = 1, #entries do out[#out + 1] = entries[i] end
return out";

/// KEYS: entries, lane, due index, run meta, depth counter. ARGV: holder, done up to (`''` =
/// none), chat ts (`''` = none), retry (`1`/`0`), next attempt (ms), attempts, error,
/// doubt, member, TTL (s). Returns the entries left, or -1 when the holder lost the lease.
const SETTLE: &str = r"
if redis.call('HGET', KEYS[2], 'holder') ~= ARGV[1] then return -1 end
if ARGV[2] ~= '' then
  local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
  if removed > 0 then redis.call('DECRBY', KEYS[5], removed) end
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[4], 'ts', ARGV[3])
  redis.call('EXPIRE', KEYS[4], ARGV[10])
end
redis.call('HDEL', KEYS[2], 'holder', 'until')
local left = redis.call('ZCARD', KEYS[1])
if ARGV[4] == '1' and left > 0 then
  redis.call('HSET', KEYS[2], 'next', ARGV[5], 'attempts', ARGV[6], 'error', ARGV[7], 'doubt', ARGV[8])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[9])
else
  redis.call('HSET', KEYS[2], 'next', '0', 'attempts', '0', 'doubt', '0')
  redis.call('HDEL', KEYS[2], 'error')
  if left > 0 then
    redis.call('ZADD', KEYS[3], '0', ARGV[9])
  else
    redis.call('ZREM', KEYS[3], ARGV[9])
  end
end
if left == 0 then redis.call('EXPIRE', KEYS[2], ARGV[10]) end
return left";

struct Scripts {
    push: redis::Script,
    claim: redis::Script,
    settle: redis::Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        push: redis::Script::new(&format!(
            "#!lua\n{}\n{}\n{PUSH}",
            super::HISTORY_FN,
            super::stats::STATS_FN
        )),
        claim: redis::Script::new(&format!("#!lua\n{CLAIM}")),
        settle: redis::Script::new(&format!("#!lua\n{SETTLE}")),
    })
}

/// `outbox_push`, and `finish_run` when `record` is given.
pub(super) async fn push(
    mut conn: ConnectionManager,
    run: &str,
    fence: Option<&str>,
    record: Option<&RunRecord>,
    entries: &[OutboxEntry],
) -> anyhow::Result<bool> {
    if record.is_none() && entries.is_empty() {
        return Ok(true);
    }
    let status = LaneKey::new(run, Lane::Status);
    let chat = LaneKey::new(run, Lane::Chat);
    let mut invocation = scripts().push.prepare_invoke();
    invocation
        .key(format!("faseng:started:{run}"))
        .key(meta_key(run))
        .key(entries_key(&status))
        .key(lane_key(&status))
        .key(entries_key(&chat))
        .key(lane_key(&chat))
        .key(DUE)
        .key(DEPTH)
        .key(format!("faseng:run:{run}"))
        .key(super::RUNS_BY_TIME)
        .arg(fence.unwrap_or(""))
        .arg(millis(OutboxEntry::batch_time(entries)))
        .arg(OUTBOX_META_TTL.as_secs())
        .arg(status.member())
        .arg(chat.member())
        .arg(match record {
            Some(r) => serde_json::to_string(r)?,
            None => String::new(),
        })
        .arg(record.map_or(0.0, |r| super::score(r.received_at)))
        .arg(run)
        .arg(&record.map(super::stats::stats_args).unwrap_or_default()[..]);
    for e in entries {
        invocation
            .arg(e.item.lane().as_str())
            .arg(e.state_name())
            .arg(e.to_json()?);
    }
    let written: i64 = invocation.invoke_async(&mut conn).await?;
    Ok(written == 1)
}

/// `outbox_due`.
pub(super) async fn due(
    mut conn: ConnectionManager,
    now: chrono::DateTime<chrono::Utc>,
    limit: usize,
) -> anyhow::Result<Vec<LaneKey>> {
    let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(DUE)
        .arg("-inf")
        .arg(millis(now))
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(&mut conn)
        .await?;
    Ok(members
        .iter()
        .filter_map(|m| LaneKey::from_member(m))
        .collect())
}

fn int(v: &redis::Value) -> anyhow::Result<i64> {
    redis::from_redis_value_ref(v).context("reading a claimed lane")
}

/// `outbox_claim`.
pub(super) async fn claim(
    mut conn: ConnectionManager,
    lane: &LaneKey,
    holder: &str,
    now: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
    limit: usize,
) -> anyhow::Result<Option<ClaimedLane>> {
    let reply: Option<Vec<redis::Value>> = scripts()
        .claim
        .key(entries_key(lane))
        .key(lane_key(lane))
        .key(DUE)
        .key(meta_key(&lane.run))
        .arg(holder)
        .arg(millis(now))
        .arg(millis(until))
        .arg(lane.member())
        .arg(limit.max(1))
        .invoke_async(&mut conn)
        .await?;
    let Some(reply) = reply else {
        return Ok(None);
    };
    anyhow::ensure!(reply.len() >= 4, "the claim script answered {reply:?}");
    let ts: String = redis::from_redis_value_ref(&reply[3]).context("reading a claimed lane")?;
    let mut entries = Vec::with_capacity(reply.len() - 4);
    for v in &reply[4..] {
        let member: String = redis::from_redis_value_ref(v).context("reading an entry")?;
        let (seq, json) = member
            .split_once('\n')
            .context("an outbox entry without its sequence number")?;
        entries.push(StoredEntry {
            seq: seq.parse().context("an outbox entry's sequence number")?,
            entry: serde_json::from_str(json).context("reading an outbox entry")?,
        });
    }
    Ok(Some(ClaimedLane {
        entries,
        attempts: u32::try_from(int(&reply[0])?).unwrap_or(u32::MAX),
        doubt: int(&reply[1])? == 1,
        taken_over: int(&reply[2])? == 1,
        chat_ts: Some(ts).filter(|t| !t.is_empty()),
    }))
}

/// `outbox_settle`.
pub(super) async fn settle(
    mut conn: ConnectionManager,
    lane: &LaneKey,
    holder: &str,
    settle: &Settle,
) -> anyhow::Result<Option<u64>> {
    let retry = settle.retry.as_ref();
    let left: i64 = scripts()
        .settle
        .key(entries_key(lane))
        .key(lane_key(lane))
        .key(DUE)
        .key(meta_key(&lane.run))
        .key(DEPTH)
        .arg(holder)
        .arg(settle.done_upto.map(|s| s.to_string()).unwrap_or_default())
        .arg(settle.chat_ts.as_deref().unwrap_or(""))
        .arg(if retry.is_some() { "1" } else { "0" })
        .arg(retry.map_or(0, |r| millis(r.at)))
        .arg(retry.map_or(0, |r| r.attempts))
        .arg(retry.map_or("", |r| r.error.as_str()))
        .arg(if retry.is_some_and(|r| r.doubt) {
            "1"
        } else {
            "0"
        })
        .arg(lane.member())
        .arg(OUTBOX_META_TTL.as_secs())
        .invoke_async(&mut conn)
        .await?;
    Ok(u64::try_from(left).ok())
}

/// `outbox_depth`.
pub(super) async fn depth(mut conn: ConnectionManager) -> anyhow::Result<u64> {
    let n: Option<i64> = redis::cmd("GET").arg(DEPTH).query_async(&mut conn).await?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// The states the push script takes for final are the final run states.
#[async_trait]
impl Outbox for RedisStore {
    async fn outbox_push(
        &self,
        run: &str,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        push(self.conn(), run, fence, None, entries).await
    }

    async fn finish_run(
        &self,
        record: &RunRecord,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        push(self.conn(), &record.key, fence, Some(record), entries).await
    }

    async fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<LaneKey>> {
        due(self.conn(), now, limit).await
    }

    async fn outbox_claim(
        &self,
        lane: &LaneKey,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Option<ClaimedLane>> {
        claim(self.conn(), lane, holder, now, until, limit).await
    }

    async fn outbox_settle(
        &self,
        lane: &LaneKey,
        holder: &str,
        settle: &Settle,
    ) -> anyhow::Result<Option<u64>> {
        self::settle(self.conn(), lane, holder, settle).await
    }

    async fn outbox_depth(&self) -> anyhow::Result<u64> {
        depth(self.conn()).await
    }
}

#[cfg(test)]
#[test]
fn the_scripts_final_states_are_the_final_run_states() {
    use super::RunState;
    for s in [
        RunState::Queued,
        RunState::InProgress,
        RunState::Success,
        RunState::Failure,
        RunState::Error,
    ] {
        let listed = PUSH.contains(&format!("{} = true", s.as_str()));
        assert_eq!(listed, s.is_final(), "{s:?}");
    }
}
