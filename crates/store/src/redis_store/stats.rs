//! Statistics on Redis.

use super::*;
use crate::stats::{DayPoint, EnvStats, Stats, StatsQuery, compute_daily, compute_env_stats};

#[async_trait]
impl Stats for RedisStore {
    async fn env_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<EnvStats>> {
        let runs = crate::stats::read_runs(self, q).await?;
        Ok(compute_env_stats(&runs, q))
    }

    async fn daily_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<(String, Vec<DayPoint>)>> {
        let runs = crate::stats::read_runs(self, q).await?;
        Ok(compute_daily(&runs, q))
    }
}
