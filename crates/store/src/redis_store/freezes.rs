//! Freezes and unfreeze grants on Redis: `faseng:freezes` (hash: id → the freeze's JSON)
//! and `faseng:unfreezes` (hash: `[app, environment, user]` → the grant's JSON), each with
//! an index by end (`…_by_end`, sorted sets) that reads and retention walk.

use super::*;
use crate::freezes::{sorted_freezes, sorted_grants};

/// The freezes.
pub(super) const FREEZES: &str = "faseng:freezes";
/// The freezes by end.
pub(super) const FREEZES_BY_END: &str = "faseng:freezes_by_end";
/// The unfreeze grants.
pub(super) const UNFREEZES: &str = "faseng:unfreezes";
/// The unfreeze grants by end.
pub(super) const UNFREEZES_BY_END: &str = "faseng:unfreezes_by_end";

/// KEYS: the sequence, the freezes, the index. ARGV: the freeze, its end's score. Returns
/// its id.
const ADD_FREEZE: &str = r"
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], id)
return id";

/// KEYS: an index by end, the hash it indexes. ARGV: the lowest end's score. Returns the
/// members ending at or after it and their records, flat.
const ENDING_FROM: &str = r"
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local out = {}
for _, member in ipairs(members) do
  local record = redis.call('HGET', KEYS[2], member)
  if record then
    out[#out + 1] = member
    out[#out + 1] = record
  end
end
return out";

/// The compiled scripts.
struct FreezeScripts {
    add: redis::Script,
    ending_from: redis::Script,
}

fn freeze_scripts() -> &'static FreezeScripts {
    static SCRIPTS: std::sync::OnceLock<FreezeScripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| FreezeScripts {
        add: redis::Script::new(&format!("#!lua\n{ADD_FREEZE}")),
        ending_from: redis::Script::new(ENDING_FROM),
    })
}

/// The grants' field: the app, environment and user, as JSON.
fn grant_field(app: &str, environment: &str, user: &str) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&[app, environment, user])?)
}

impl RedisStore {
    /// The `(member, record)` pairs of `hash` whose end in `index` is not before `now`'s
    /// millisecond (the caller checks the exact end).
    async fn ending_from(
        &self,
        index: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let flat: Vec<String> = freeze_scripts()
            .ending_from
            .key(index)
            .key(hash)
            .arg(score(now))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect())
    }
}

#[async_trait]
impl Freezes for RedisStore {
    async fn add_freeze(&self, f: &NewFreeze) -> anyhow::Result<Freeze> {
        let id: u64 = freeze_scripts()
            .add
            .key("faseng:freeze_seq")
            .key(FREEZES)
            .key(FREEZES_BY_END)
            .arg(serde_json::to_string(f)?)
            .arg(score(f.until))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Freeze::new(id, f.clone()))
    }

    async fn freezes(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Freeze>> {
        let mut found = Vec::new();
        for (id, record) in self.ending_from(FREEZES_BY_END, FREEZES, now).await? {
            let id: u64 = id
                .parse()
                .with_context(|| format!("a freeze's id {id:?}"))?;
            let freeze = Freeze::new(id, from_json(&record)?);
            if freeze.until > now {
                found.push(freeze);
            }
        }
        Ok(sorted_freezes(found))
    }

    async fn grant_unfreeze(&self, g: &UnfreezeGrant) -> anyhow::Result<()> {
        let field = grant_field(&g.app, &g.environment, &g.user)?;
        let _: () = redis::pipe()
            .atomic()
            .hset(UNFREEZES, &field, serde_json::to_string(g)?)
            .ignore()
            .zadd(UNFREEZES_BY_END, &field, score(g.until))
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn unfreeze_of(
        &self,
        app: &str,
        environment: &str,
        user: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<UnfreezeGrant>> {
        let record: Option<String> = self
            .conn()
            .hget(UNFREEZES, grant_field(app, environment, user)?)
            .await?;
        Ok(record
            .as_deref()
            .map(from_json::<UnfreezeGrant>)
            .transpose()?
            .filter(|g| g.until > now))
    }

    async fn unfreezes(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<UnfreezeGrant>> {
        let mut found = Vec::new();
        for (_, record) in self.ending_from(UNFREEZES_BY_END, UNFREEZES, now).await? {
            let grant: UnfreezeGrant = from_json(&record)?;
            if grant.until > now {
                found.push(grant);
            }
        }
        Ok(sorted_grants(found))
    }
}
