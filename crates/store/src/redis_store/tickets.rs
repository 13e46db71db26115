//! Desk tickets on Redis: `faseng:tickets` (hash: id → the ticket's JSON),
//! `faseng:ticket_ends` (hash: id → its expiry as [`crate::instant`] text, which a script
//! can compare) and `faseng:tickets_by_end` (sorted set: id → expiry, for retention).

use super::*;

/// The tickets.
pub(super) const TICKETS: &str = "faseng:tickets";
/// Their expiries, as text that sorts as the time does.
pub(super) const TICKET_ENDS: &str = "faseng:ticket_ends";
/// Their ids by expiry.
pub(super) const TICKETS_BY_END: &str = "faseng:tickets_by_end";

/// KEYS: the tickets, their ends, the index. ARGV: the id, app, environment, sha, now.
/// Removes and returns the ticket when it matches and has not run out.
const REDEEM: &str = r"
local text = redis.call('HGET', KEYS[1], ARGV[1])
if not text then return false end
local ok, t = pcall(cjson.decode, text)
if not ok or type(t) ~= 'table' then return false end
if t['app'] ~= ARGV[2] or t['environment'] ~= ARGV[3] or t['sha'] ~= ARGV[4] then return false end
local ends = redis.call('HGET', KEYS[2], ARGV[1])
if not ends or ends <= ARGV[5] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return text";

fn redeem_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(&format!("#!lua\n{REDEEM}")))
}

#[async_trait]
impl Tickets for RedisStore {
    async fn issue_ticket(&self, t: &DeskTicket) -> anyhow::Result<()> {
        let _: () = redis::pipe()
            .atomic()
            .hset(TICKETS, &t.id, serde_json::to_string(t)?)
            .ignore()
            .hset(TICKET_ENDS, &t.id, instant(t.expires_at))
            .ignore()
            .zadd(TICKETS_BY_END, &t.id, score(t.expires_at))
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn redeem_ticket(
        &self,
        id: &str,
        app: &str,
        environment: &str,
        sha: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeskTicket>> {
        let text: Option<String> = redeem_script()
            .key(TICKETS)
            .key(TICKET_ENDS)
            .key(TICKETS_BY_END)
            .arg(id)
            .arg(app)
            .arg(environment)
            .arg(sha)
            .arg(instant(now))
            .invoke_async(&mut self.conn())
            .await?;
        text.as_deref().map(from_json).transpose()
    }
}
