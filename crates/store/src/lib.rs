//! The durable store shared by faseng and chima: what apalis does not keep for us, on Redis
//! or SQLite, split by role, one trait each:
//!
//! * [`Deliveries`]: webhook dedup and intake,
//! * [`Runs`]: run records, start markers (leases), kept jobs, status histories, and the
//!   history of runs by app, environment, ref and time,
//! * [`Lines`]: the per-app+environment waiting lines and recent durations for the ETA,
//! * [`Locks`]: environment locks (holder, reason, since, expiry),
//! * [`Logs`]: run logs (so any `faseng serve` can show any run's log),
//! * [`Outbox`]: statuses and chat edits still to be sent,
//! * [`Duties`]: leases of periodic jobs (which process reconciles when several share a store),
//! * [`Retention`]: deleting what is past its time, and the gauges,
//! * [`Audit`]: the append-only log of release actions,
//! * [`DeskLine`]: chat requests waiting for an environment to be free,
//! * [`Freezes`]: freezes made in chat, and unfreezes granted,
//! * [`Tickets`]: single-use desk tickets, how faseng learns what chat allowed,
//! * [`Requests`]: release requests for protected environments (`#N`, compare-and-set),
//! * [`Stats`]: delivery statistics per app and environment, computed in the store,
//! * [`WebActions`]: what dashboard users ask chima to do, each claimed once,
//! * [`Meta`]: reachability, queue depth, the key log links are signed with.
//!
//! [`Store`] is their sum: every backend is all of them. [`RedisStore`] and [`SqliteStore`]
//! keep one file per role; the contract tests (module `contract`, with the `testing` feature) hold for both.

#![warn(missing_docs)]

pub mod audit;
#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod deliveries;
pub mod desk;
pub mod desk_line;
pub mod duties;
#[cfg(any(test, feature = "testing"))]
pub mod flaky;
pub mod freezes;
pub mod gate;
pub mod lines;
pub mod locks;
pub mod logs;
pub mod messages;
mod open;
pub mod outbox;
pub mod page;
mod redis_store;
pub mod requests;
pub mod retention;
mod retry;
pub mod runs;
mod sqlite_store;
pub mod stats;
pub mod tickets;
pub mod web_actions;

pub use audit::{Audit, AuditAction, AuditEntry, AuditQuery, AuditRecord};
pub use deliveries::{AcceptItem, Accepted, DELIVERY_TTL, Deliveries};
pub use desk::ChatThread;
pub use desk_line::{DeskLine, LineRequest, NewLineRequest};
pub use duties::Duties;
pub use freezes::{Freeze, Freezes, NewFreeze, UnfreezeGrant};
pub use gate::{Gate, freeze_blocked, freeze_in_force, gate, lock_blocked};
pub use lines::{DURATIONS_KEPT, Lines, eta_secs};
pub use locks::{EnvLock, Locks};
pub use logs::{Logs, log_line_bytes};
pub use open::{DEFAULT_QUEUE, StoreUrl};
pub use outbox::{
    ClaimedLane, Lane, LaneKey, Outbox, OutboxEntry, OutboxItem, Settle, SettleRetry, StoredEntry,
};
pub use page::{Cursor, Page};
pub use redis_store::{
    RedisStore, connect as redis_connect, warn_if_not_durable as warn_redis_durability,
};
pub use requests::{
    Approval, CheckResult, CheckState, NewRequest, ReleaseRequest, RequestState, Requests,
};
pub(crate) use retention::SWEEP_BATCH;
pub use retention::{Retention, StoreSize, Swept, expired};
pub use retry::retry;
pub use runs::{
    RollbackMark, RunQuery, RunRecord, RunState, Runs, StageRecord, StageRecordState, StartMarker,
    StoredMarker,
};
pub use sqlite_store::{SqliteStore, database_files};
pub use stats::{
    DayPoint, EnvStats, Figures, Stats, StatsQuery, compute_daily, compute_env_stats, figures,
};
pub use tickets::{Allowance, DeskTicket, Tickets};
pub use web_actions::{WebAction, WebActionState, WebActions};

use async_trait::async_trait;

/// Store-wide facts that belong to no one role.
#[async_trait]
pub trait Meta: Send + Sync + 'static {
    /// Cheap reachability check (`/healthz`).
    async fn ping(&self) -> anyhow::Result<()>;

    /// Jobs waiting in the apalis queue (for `/metrics`).
    async fn queue_depth(&self) -> anyhow::Result<u64>;

    /// The key log links are signed with: stores `fresh` when there is none yet and returns
    /// the stored one, atomically (every process that races here gets the same key).
    async fn link_key(&self, fresh: &str) -> anyhow::Result<String>;
}

/// Everything faseng and chima need from the durable store: the sum of the roles. Every
/// method is one round trip and safe to call from any number of processes at once.
pub trait Store:
    Meta
    + Deliveries
    + Runs
    + Lines
    + Locks
    + Logs
    + Outbox
    + Duties
    + Retention
    + Audit
    + DeskLine
    + Freezes
    + Tickets
    + Requests
    + Stats
    + WebActions
{
}

impl<T> Store for T where
    T: Meta
        + Deliveries
        + Runs
        + Lines
        + Locks
        + Logs
        + Outbox
        + Duties
        + Retention
        + Audit
        + DeskLine
        + Freezes
        + Tickets
        + Requests
        + Stats
        + WebActions
{
}

/// Every role trait (unnamed, so nothing clashes), for code that calls store methods on a concrete store
/// (`use deploy_store::prelude::*;`); through `dyn Store` they need no import.
pub mod prelude {
    pub use crate::{
        Audit as _, Deliveries as _, DeskLine as _, Duties as _, Freezes as _, Lines as _,
        Locks as _, Logs as _, Meta as _, Outbox as _, Requests as _, Retention as _, Runs as _,
        Stats as _, Tickets as _, WebActions as _,
    };
}

/// Parses a record the store wrote.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> anyhow::Result<T> {
    use anyhow::Context as _;
    serde_json::from_str(s).context("reading a stored record")
}

/// A time as text that sorts as the time does (RFC 3339 in UTC to the nanosecond, fixed
/// width): what the backends compare times by where they cannot parse them.
pub(crate) fn instant(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
