//! Deliveries: webhook dedup and intake (a delivery, its run and its place in line at once).

use std::time::Duration;

use async_trait::async_trait;

use crate::RunRecord;

/// How long delivery ids are remembered for dedup (GitHub redelivers for up to a few days).
pub const DELIVERY_TTL: Duration = Duration::from_secs(8 * 24 * 3600);

/// What [`Deliveries::accept_runs`] did with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The delivery id had not been seen.
    pub fresh_delivery: bool,
    /// The run record was created (and the run joined its line).
    pub created: bool,
}

/// One delivery to accept, for [`Deliveries::accept_runs`].
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptItem {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// The run record to create.
    pub run: RunRecord,
    /// The waiting line the run joins when its record is new.
    pub line: String,
    /// The queue job (JSON), kept so a run whose job was lost can be queued again.
    pub job: String,
}

/// Webhook deliveries: dedup and intake.
#[async_trait]
pub trait Deliveries: Send + Sync + 'static {
    /// Intake: for each delivery, in order, as if one after the other (a later item sees an
    /// earlier one's delivery and run), remembers the delivery, creates the run record, and
    /// when the record is new puts the run at the end of its line; atomically and in one
    /// round trip (Redis: one script; SQLite: one transaction). All of it happens or
    /// none; after an `Err` either may be the case (the answer can be lost on the way back).
    async fn accept_runs(&self, items: &[AcceptItem]) -> anyhow::Result<Vec<Accepted>>;

    /// Forgets a delivery id (the enqueue after claiming it failed; GitHub will redeliver).
    async fn release_delivery(&self, delivery_id: &str) -> anyhow::Result<()>;
}
