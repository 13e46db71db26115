//! Release requests on Redis: `faseng:requests` (hash: id → the request's JSON),
//! `faseng:requests_open` (sorted set of the open ones' ids, by id), `faseng:requests_done`
//! (sorted set of the others' ids, by when they last changed, for retention) and
//! `faseng:request_seq` (the numbering). Every call is one script or command, so a
//! compare-and-set and the indexes it moves are one atomic step.

use super::*;

/// The requests.
pub(super) const REQUESTS: &str = "faseng:requests";
/// The open requests' ids, by id.
pub(super) const REQUESTS_OPEN: &str = "faseng:requests_open";
/// The other requests' ids, by when they last changed.
pub(super) const REQUESTS_DONE: &str = "faseng:requests_done";
/// The last id handed out.
const REQUEST_SEQ: &str = "faseng:request_seq";

/// KEYS: the requests, the open index, the sequence. ARGV: the request's JSON without its
/// id (an object). Stores it under the next id, as open; returns the id.
const OPEN: &str = r#"
local id = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], id, '{"id":' .. id .. ',' .. string.sub(ARGV[1], 2))
redis.call('ZADD', KEYS[2], id, id)
return id"#;

/// KEYS: the requests, the open index. ARGV: app, environment, ref. Returns the JSON of the
/// oldest open request for them, if any.
const OPEN_FOR: &str = r"
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local text = redis.call('HGET', KEYS[1], id)
  if text then
    local ok, r = pcall(cjson.decode, text)
    if ok and type(r) == 'table' and r['app'] == ARGV[1] and r['environment'] == ARGV[2]
      and r['git_ref'] == ARGV[3] then
      return text
    end
  end
end
return false";

/// KEYS: the requests, the open index. Returns the open requests' JSON, by id.
const OPEN_ALL: &str = r"
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local text = redis.call('HGET', KEYS[1], id)
  if text then out[#out + 1] = text end
end
return out";

/// KEYS: the requests, the open index, the done index. ARGV: the id, the version expected,
/// the new JSON, 1 when it is open (else 0), when it changed (a score). Writes it only when
/// the stored version is the one expected; returns 1 when it did.
const UPDATE: &str = r"
local text = redis.call('HGET', KEYS[1], ARGV[1])
if not text then return 0 end
local ok, r = pcall(cjson.decode, text)
if not ok or type(r) ~= 'table' or tonumber(r['version']) ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
end
return 1";

/// The compiled scripts.
struct RequestScripts {
    open: redis::Script,
    open_for: redis::Script,
    open_all: redis::Script,
    update: redis::Script,
}

fn request_scripts() -> &'static RequestScripts {
    static SCRIPTS: std::sync::OnceLock<RequestScripts> = std::sync::OnceLock::new();
    let compile = |body: &str| redis::Script::new(&format!("#!lua\n{body}"));
    SCRIPTS.get_or_init(|| RequestScripts {
        open: compile(OPEN),
        open_for: compile(OPEN_FOR),
        open_all: compile(OPEN_ALL),
        update: compile(UPDATE),
    })
}

#[async_trait]
impl Requests for RedisStore {
    async fn open_request(&self, r: &NewRequest) -> anyhow::Result<ReleaseRequest> {
        let mut body = serde_json::to_value(ReleaseRequest::opened(0, r))?;
        body.as_object_mut()
            .and_then(|fields| fields.remove("id"))
            .context("a request without its id")?;
        let id: u64 = request_scripts()
            .open
            .key(REQUESTS)
            .key(REQUESTS_OPEN)
            .key(REQUEST_SEQ)
            .arg(body.to_string())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(ReleaseRequest::opened(id, r))
    }

    async fn request(&self, id: u64) -> anyhow::Result<Option<ReleaseRequest>> {
        let text: Option<String> = self.conn().hget(REQUESTS, id).await?;
        text.as_deref().map(from_json).transpose()
    }

    async fn open_request_for(
        &self,
        app: &str,
        environment: &str,
        git_ref: &str,
    ) -> anyhow::Result<Option<ReleaseRequest>> {
        let text: Option<String> = request_scripts()
            .open_for
            .key(REQUESTS)
            .key(REQUESTS_OPEN)
            .arg(app)
            .arg(environment)
            .arg(git_ref)
            .invoke_async(&mut self.conn())
            .await?;
        text.as_deref().map(from_json).transpose()
    }

    async fn requests(
        &self,
        app: Option<&str>,
        open_only: bool,
    ) -> anyhow::Result<Vec<ReleaseRequest>> {
        let texts: Vec<String> = if open_only {
            request_scripts()
                .open_all
                .key(REQUESTS)
                .key(REQUESTS_OPEN)
                .invoke_async(&mut self.conn())
                .await?
        } else {
            self.conn().hvals(REQUESTS).await?
        };
        let mut found = texts
            .iter()
            .map(|t| from_json::<ReleaseRequest>(t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        found.retain(|r| app.is_none_or(|a| r.app == a) && (!open_only || r.state.is_open()));
        found.sort_by_key(|r| r.id);
        Ok(found)
    }

    async fn update_request(&self, r: &ReleaseRequest) -> anyhow::Result<Option<ReleaseRequest>> {
        let next = r.next_version();
        let written: u8 = request_scripts()
            .update
            .key(REQUESTS)
            .key(REQUESTS_OPEN)
            .key(REQUESTS_DONE)
            .arg(r.id)
            .arg(r.version)
            .arg(serde_json::to_string(&next)?)
            .arg(u8::from(next.state.is_open()))
            .arg(score(next.updated_at))
            .invoke_async(&mut self.conn())
            .await?;
        Ok((written == 1).then_some(next))
    }
}
