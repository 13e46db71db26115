//! Delivery dedup and intake on Redis.

use super::*;

#[async_trait]
impl Deliveries for RedisStore {
    async fn accept_runs(&self, items: &[AcceptItem]) -> anyhow::Result<Vec<Accepted>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = scripts().accept.prepare_invoke();
        invocation.arg(DELIVERY_TTL.as_secs());
        for item in items {
            invocation
                .key(k("delivery", &item.delivery_id))
                .key(k("run", &item.run.key))
                .key(k("line", &item.line))
                .key(k("line_members", &item.line))
                .key(k("job", &item.run.key))
                .arg(serde_json::to_string(&item.run)?)
                .arg(&item.run.key)
                .arg(&item.line)
                .arg(&item.job);
        }
        invocation.key(RUNS_BY_TIME);
        for item in items {
            invocation.arg(score(item.run.received_at));
        }
        for item in items {
            invocation.arg(item.run.received_ms());
        }
        let flags: Vec<i64> = invocation.invoke_async(&mut self.conn()).await?;
        anyhow::ensure!(
            flags.len() == 2 * items.len(),
            "the accept script answered {} values for {} deliveries",
            flags.len(),
            items.len()
        );
        let accepted: Vec<Accepted> = flags
            .chunks(2)
            .map(|f| Accepted {
                fresh_delivery: f[0] == 1,
                created: f[1] == 1,
            })
            .collect();
        let mut created = Vec::new();
        for (item, a) in items.iter().zip(&accepted) {
            if a.created && crate::stats::counted_run(&item.run) {
                created.push((&item.run, serde_json::to_string(&item.run)?));
            }
        }
        if !created.is_empty() {
            self.index_created(&created).await?;
        }
        Ok(accepted)
    }

    async fn release_delivery(&self, delivery_id: &str) -> anyhow::Result<()> {
        let _: i64 = self.conn().del(k("delivery", delivery_id)).await?;
        Ok(())
    }
}
