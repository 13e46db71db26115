//! The audit: an append-only log of release actions (who did what, when, to which app and
//! environment, from which room), listed newest first.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::page::{Cursor, PAGE_MAX, Page};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A deployment was requested.
    Deploy,
    /// An environment was locked.
    Lock,
    /// Its holder unlocked it.
    Unlock,
    /// Someone else took the lock.
    Takeover,
    /// A lock ran out.
    LockExpired,
    /// Its holder extended a lock.
    Extend,
    /// A request joined the line behind a lock.
    LineJoin,
    /// A request in line was cancelled.
    LineCancel,
    /// A request in line ran out before its turn.
    LineExpired,
    /// The first request in line was deployed when the lock was released.
    HandOff,
    /// A freeze began.
    Freeze,
    /// A freeze was lifted for someone.
    Unfreeze,
    /// A release request was opened (or moved to a new sha).
    Request,
    /// A request's check gave a result.
    Check,
    /// A request was approved.
    Approve,
    /// A request was approved over red checks (`approve!`).
    Override,
    /// A request was rejected.
    Reject,
    /// A release admin claimed a request.
    Claim,
    /// A request was withdrawn.
    RequestCancel,
    /// A request ran out before it deployed.
    RequestExpired,
    /// The deployment for a request was made.
    Release,
    /// A request's deployment finished (succeeded or failed).
    Result,
    /// A tracker was updated after a release (or could not be).
    TicketUpdate,
    /// A rollback deployment was requested (`rollback`, its button, or automatically).
    Rollback,
    /// chima took up a failed deployment in an environment with `rollback_on_failure` (once per
    /// deployment; its detail names the deployment, `deployment #<id> …`).
    AutoRollback,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 25] = [
        AuditAction::Deploy,
        AuditAction::Lock,
        AuditAction::Unlock,
        AuditAction::Takeover,
        AuditAction::LockExpired,
        AuditAction::Extend,
        AuditAction::LineJoin,
        AuditAction::LineCancel,
        AuditAction::LineExpired,
        AuditAction::HandOff,
        AuditAction::Freeze,
        AuditAction::Unfreeze,
        AuditAction::Request,
        AuditAction::Check,
        AuditAction::Approve,
        AuditAction::Override,
        AuditAction::Reject,
        AuditAction::Claim,
        AuditAction::RequestCancel,
        AuditAction::RequestExpired,
        AuditAction::Release,
        AuditAction::Result,
        AuditAction::TicketUpdate,
        AuditAction::Rollback,
        AuditAction::AutoRollback,
    ];

    /// The action's name as stored (`lock_expired`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Deploy => "deploy",
            AuditAction::Lock => "lock",
            AuditAction::Unlock => "unlock",
            AuditAction::Takeover => "takeover",
            AuditAction::LockExpired => "lock_expired",
            AuditAction::Extend => "extend",
            AuditAction::LineJoin => "line_join",
            AuditAction::LineCancel => "line_cancel",
            AuditAction::LineExpired => "line_expired",
            AuditAction::HandOff => "hand_off",
            AuditAction::Freeze => "freeze",
            AuditAction::Unfreeze => "unfreeze",
            AuditAction::Request => "request",
            AuditAction::Check => "check",
            AuditAction::Approve => "approve",
            AuditAction::Override => "override",
            AuditAction::Reject => "reject",
            AuditAction::Claim => "claim",
            AuditAction::RequestCancel => "request_cancel",
            AuditAction::RequestExpired => "request_expired",
            AuditAction::Release => "release",
            AuditAction::Result => "result",
            AuditAction::TicketUpdate => "ticket_update",
            AuditAction::Rollback => "rollback",
            AuditAction::AutoRollback => "auto_rollback",
        }
    }
}

/// One release action; stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it was done (the caller's clock).
    pub at: DateTime<Utc>,
    /// Who did it: a stable id (chat user id, else GitHub login; `faseng` for the deployer).
    pub actor: String,
    /// Who did it, as shown (never compared).
    #[serde(default)]
    pub actor_name: String,
    /// What was done.
    pub action: AuditAction,
    /// The app.
    pub app: String,
    /// The environment, when the action has one.
    #[serde(default)]
    pub environment: Option<String>,
    /// The ref, when the action has one.
    #[serde(default)]
    pub git_ref: Option<String>,
    /// The commit, when known.
    #[serde(default)]
    pub sha: Option<String>,
    /// The chat room it was done from.
    #[serde(default)]
    pub room: Option<String>,
    /// The chat adapter (`slack`, `shell`, …) it was done through.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Free text: the reason, the duration, the deployment id.
    #[serde(default)]
    pub detail: String,
}

/// An entry as stored, with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its sequence number: later entries have larger ones.
    pub id: u64,
    /// The entry.
    pub entry: AuditEntry,
}

/// Which entries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this app's.
    pub app: Option<String>,
    /// Only this environment's.
    pub environment: Option<String>,
    /// Only those done at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many (1 to [`PAGE_MAX`]; 0 means the most).
    pub limit: usize,
    /// Where to go on from (a previous page's [`Page::next`]).
    pub cursor: Option<Cursor>,
}

impl AuditQuery {
    /// Whether `entry` is one the query lists (its app, environment and time).
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.app.as_ref().is_none_or(|a| *a == entry.app)
            && self
                .environment
                .as_ref()
                .is_none_or(|e| entry.environment.as_ref() == Some(e))
            && self.since.is_none_or(|s| entry.at >= s)
    }

    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> usize {
        page_size(self.limit)
    }

    /// The sequence number the page starts below (`u64::MAX` for the newest).
    pub(crate) fn before_id(&self) -> u64 {
        self.cursor
            .as_ref()
            .and_then(Cursor::position)
            .map_or(u64::MAX, |(id, _)| id.max(0) as u64)
    }
}

/// A requested page size within bounds: 0 means the most.
pub(crate) fn page_size(limit: usize) -> usize {
    if limit == 0 {
        PAGE_MAX
    } else {
        limit.min(PAGE_MAX)
    }
}

/// The append-only log of release actions.
#[async_trait]
pub trait Audit: Send + Sync + 'static {
    /// Appends an entry; its sequence number.
    async fn audit_append(&self, entry: &AuditEntry) -> anyhow::Result<u64>;

    /// Entries matching `query`, newest first (by sequence number), a page at a time.
    async fn audit(&self, query: &AuditQuery) -> anyhow::Result<Page<AuditRecord>>;
}

/// The first `size` of `found` (newest first), with a cursor when there were more.
pub(crate) fn page_of(mut found: Vec<AuditRecord>, size: usize) -> Page<AuditRecord> {
    let next = (found.len() > size).then(|| Cursor::after(found[size - 1].id as i64, ""));
    found.truncate(size);
    Page { items: found, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_stored_by_their_snake_case_names() {
        for action in AuditAction::ALL {
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{}\"", action.as_str()));
            assert_eq!(serde_json::from_str::<AuditAction>(&json).unwrap(), action);
        }
        let names: std::collections::HashSet<_> =
            AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), AuditAction::ALL.len(), "names are distinct");
        assert_eq!(AuditAction::Extend.as_str(), "extend");
        assert_eq!(AuditAction::LineExpired.as_str(), "line_expired");
        assert_eq!(AuditAction::RequestExpired.as_str(), "request_expired");
        assert_eq!(AuditAction::TicketUpdate.as_str(), "ticket_update");
    }
}
