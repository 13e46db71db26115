//! The desk line on Redis. Per line: `faseng:desk_line:{line}` (sorted set: user → request
//! id, the order), `faseng:desk_requests:{line}` (hash: user → the request's JSON, with its
//! first arrival time) and `faseng:desk_line_expiry:{line}` (sorted set: user → expiry, for
//! retention); `faseng:desk_lines` names the lines with requests, `faseng:desk_line_seq`
//! numbers them.

use super::*;
use crate::desk_line::position;

/// The lines with at least one request.
pub(super) const DESK_LINES: &str = "faseng:desk_lines";

/// Defines `desk_remove(line, user)`: takes the user's request out of the line; returns
/// `{id, request}`, or nothing when there is none.
const DESK_REMOVE_FN: &str = r"
local function desk_remove(line, user)
  local order = 'faseng:desk_line:' .. line
  local requests = 'faseng:desk_requests:' .. line
  local id = redis.call('ZSCORE', order, user)
  if not id then return nil end
  local request = redis.call('HGET', requests, user) or ''
  redis.call('ZREM', order, user)
  redis.call('HDEL', requests, user)
  redis.call('ZREM', 'faseng:desk_line_expiry:' .. line, user)
  if redis.call('ZCARD', order) == 0 then redis.call('SREM', 'faseng:desk_lines', line) end
  return {id, request}
end
";

/// KEYS: the line's order, requests, expiry; the sequence. ARGV: the user, the request's
/// JSON without `at` (an object), its arrival time (JSON), its expiry score, the line.
/// A user already in line keeps the id and first arrival time. Returns the request's id and
/// every `id, request` of the line in order.
const JOIN: &str = r#"
local id = redis.call('ZSCORE', KEYS[1], ARGV[1])
local at = ARGV[3]
if id then
  local ok, old = pcall(cjson.decode, redis.call('HGET', KEYS[2], ARGV[1]) or '')
  if ok and type(old) == 'table' and type(old['at']) == 'string' then at = cjson.encode(old['at']) end
else
  id = redis.call('INCR', KEYS[4])
  redis.call('ZADD', KEYS[1], id, ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], '{"at":' .. at .. ',' .. string.sub(ARGV[2], 2))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('SADD', 'faseng:desk_lines', ARGV[5])
return {tostring(id), line_of(KEYS[1], KEYS[2])}"#;

/// Defines `line_of(order, requests)`: every `id, request` of a line, in order.
const LINE_OF_FN: &str = r"
local function line_of(order, requests)
  local out = {}
  local members = redis.call('ZRANGE', order, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    out[#out + 1] = members[i + 1]
    out[#out + 1] = redis.call('HGET', requests, members[i]) or ''
  end
  return out
end
";

/// KEYS: the line's order, requests. Returns every `id, request` of the line, in order.
const LINE: &str = "return line_of(KEYS[1], KEYS[2])";

/// ARGV: the line, the user. Returns `{id, request}` when it removed one.
const LEAVE: &str = "return desk_remove(ARGV[1], ARGV[2])";

/// KEYS: the line's order. ARGV: the line, the id. Returns `{id, request}` when it removed
/// the request with that id.
const TAKE: &str = r"
local users = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])
if #users == 0 then return nil end
return desk_remove(ARGV[1], users[1])";

/// A script with the desk line's functions (`#!lua`: Redis refuses it up front when out of
/// memory rather than fail half-way).
pub(super) fn desk_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("#!lua\n{DESK_REMOVE_FN}\n{LINE_OF_FN}\n{body}"))
}

/// The compiled scripts.
struct DeskScripts {
    join: redis::Script,
    line: redis::Script,
    leave: redis::Script,
    take: redis::Script,
}

fn desk_scripts() -> &'static DeskScripts {
    static SCRIPTS: std::sync::OnceLock<DeskScripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| DeskScripts {
        join: desk_script(JOIN),
        line: desk_script(LINE),
        leave: desk_script(LEAVE),
        take: desk_script(TAKE),
    })
}

/// A request from a script's `id, request` pair.
fn read_request(id: &str, request: &str) -> anyhow::Result<LineRequest> {
    let id: f64 = id
        .parse()
        .with_context(|| format!("a line request's id {id:?}"))?;
    Ok(LineRequest::new(id as u64, from_json(request)?))
}

/// The requests of a line from a script's flat `id, request, …` list.
fn read_line(flat: &[String]) -> anyhow::Result<Vec<LineRequest>> {
    flat.chunks_exact(2)
        .map(|pair| read_request(&pair[0], &pair[1]))
        .collect()
}

/// A removed request from a script's answer.
fn read_removed(removed: Option<Vec<String>>) -> anyhow::Result<Option<LineRequest>> {
    match removed.as_deref() {
        Some([id, request]) => Ok(Some(read_request(id, request)?)),
        _ => Ok(None),
    }
}

#[async_trait]
impl DeskLine for RedisStore {
    async fn join_line(&self, r: &NewLineRequest) -> anyhow::Result<(LineRequest, usize)> {
        let mut body = serde_json::to_value(r)?;
        let at = body
            .as_object_mut()
            .and_then(|fields| fields.remove("at"))
            .context("a line request without its time")?;
        let (id, line): (String, Vec<String>) = desk_scripts()
            .join
            .key(k("desk_line", &r.line))
            .key(k("desk_requests", &r.line))
            .key(k("desk_line_expiry", &r.line))
            .key("faseng:desk_line_seq")
            .arg(&r.user)
            .arg(body.to_string())
            .arg(at.to_string())
            .arg(score(r.expires_at))
            .arg(&r.line)
            .invoke_async(&mut self.conn())
            .await?;
        let line = read_line(&line)?;
        let id = id.parse::<f64>().context("a line request's id")? as u64;
        let request = line
            .iter()
            .find(|q| q.id == id)
            .cloned()
            .context("the request joined is not in its line")?;
        Ok((request, position(&line, id, r.at)))
    }

    async fn line_requests(&self, line: &str) -> anyhow::Result<Vec<LineRequest>> {
        let flat: Vec<String> = desk_scripts()
            .line
            .key(k("desk_line", line))
            .key(k("desk_requests", line))
            .invoke_async(&mut self.conn())
            .await?;
        read_line(&flat)
    }

    async fn waiting_lines(&self) -> anyhow::Result<Vec<String>> {
        let mut lines: Vec<String> = self.conn().smembers(DESK_LINES).await?;
        lines.sort();
        Ok(lines)
    }

    async fn leave_line(&self, line: &str, user: &str) -> anyhow::Result<Option<LineRequest>> {
        read_removed(
            desk_scripts()
                .leave
                .arg(line)
                .arg(user)
                .invoke_async(&mut self.conn())
                .await?,
        )
    }

    async fn take_line_request(&self, line: &str, id: u64) -> anyhow::Result<Option<LineRequest>> {
        read_removed(
            desk_scripts()
                .take
                .key(k("desk_line", line))
                .arg(line)
                .arg(id)
                .invoke_async(&mut self.conn())
                .await?,
        )
    }
}
