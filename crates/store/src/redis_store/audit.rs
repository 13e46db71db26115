//! The audit on Redis: each entry under `faseng:audit:{id}`, its id in `faseng:audit` and
//! `faseng:audit_of:{app}` (sorted sets scored by the id).

use super::*;

/// The ids of every entry.
const AUDIT: &str = "faseng:audit";

/// KEYS: the sequence, the index, the app's index. ARGV: the entry. Returns its id.
const APPEND: &str = r"
local id = redis.call('INCR', KEYS[1])
redis.call('SET', 'faseng:audit:' .. id, ARGV[1])
redis.call('ZADD', KEYS[2], id, id)
redis.call('ZADD', KEYS[3], id, id)
return id";

#[async_trait]
impl Audit for RedisStore {
    async fn audit_append(&self, entry: &AuditEntry) -> anyhow::Result<u64> {
        Ok(redis::Script::new(APPEND)
            .key("faseng:audit_seq")
            .key(AUDIT)
            .key(k("audit_of", &entry.app))
            .arg(serde_json::to_string(entry)?)
            .invoke_async(&mut self.conn())
            .await?)
    }

    async fn audit(&self, query: &AuditQuery) -> anyhow::Result<Page<AuditRecord>> {
        let index = query
            .app
            .as_ref()
            .map_or_else(|| AUDIT.to_owned(), |app| k("audit_of", app));
        let before = query.before_id();
        let max = if before == u64::MAX {
            "+inf".to_owned()
        } else {
            format!("({before}")
        };
        let size = query.page_size();
        let mut found = Vec::new();
        let mut offset = 0usize;
        while found.len() <= size {
            let ids: Vec<u64> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg("-inf")
                .arg("LIMIT")
                .arg(offset)
                .arg(SWEEP_BATCH)
                .query_async(&mut self.conn())
                .await?;
            if ids.is_empty() {
                break;
            }
            offset += ids.len();
            let last_page = ids.len() < SWEEP_BATCH;
            let texts: Vec<Option<String>> = redis::cmd("MGET")
                .arg(
                    ids.iter()
                        .map(|id| format!("faseng:audit:{id}"))
                        .collect::<Vec<_>>(),
                )
                .query_async(&mut self.conn())
                .await?;
            for (id, text) in ids.iter().zip(texts) {
                let Some(text) = text else { continue };
                let entry: AuditEntry = from_json(&text)?;
                if query.matches(&entry) {
                    found.push(AuditRecord { id: *id, entry });
                }
            }
            if last_page {
                break;
            }
        }
        Ok(crate::audit::page_of(found, size))
    }
}
