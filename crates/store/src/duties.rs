//! Duty leases: which process does a periodic job when several share one store.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Duty leases.
#[async_trait]
pub trait Duties: Send + Sync + 'static {
    /// Takes the duty lease `name` (a periodic job that one process of the store does at a
    /// time) for `holder` until `now + ttl`, atomically: when it is free, has expired (its end
    /// is not after `now`) or is `holder`'s already (renewed). `false` while another holder's
    /// lease runs. Time is the caller's (its clock), never the store's.
    async fn acquire_duty(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<bool>;

    /// Ends `holder`'s lease of duty `name` so another process may take it at once (a stopping
    /// process); nothing happens when someone else holds it.
    async fn release_duty(&self, name: &str, holder: &str) -> anyhow::Result<()>;
}
