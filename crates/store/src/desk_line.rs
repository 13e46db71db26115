//! The desk line: chat requests (`deploy demo to staging when free`) waiting for an
//! environment to be free, one line per app+environment, in arrival order. Not faseng's run
//! line ([`crate::Lines`]): these have not become deployments yet.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ChatThread;

/// A request joining a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLineRequest {
    /// The line (`app/environment`).
    pub line: String,
    /// The requester's stable id (chat user id): at most one request per user and line.
    pub user: String,
    /// The requester as shown (never compared).
    #[serde(default)]
    pub user_name: String,
    /// The ref to deploy.
    pub git_ref: String,
    /// The command to run when released, without `when free`.
    pub command: String,
    /// Where it was asked (the hand-off and expiry are said there).
    pub chat: ChatThread,
    /// When it joined (the caller's clock).
    pub at: DateTime<Utc>,
    /// When it runs out if still waiting.
    pub expires_at: DateTime<Utc>,
}

/// A request in a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRequest {
    /// Assigned by the store, increasing: the line's order.
    pub id: u64,
    /// The line (`app/environment`).
    pub line: String,
    /// The requester's stable id (chat user id).
    pub user: String,
    /// The requester as shown (never compared).
    #[serde(default)]
    pub user_name: String,
    /// The ref to deploy.
    pub git_ref: String,
    /// The command to run when released, without `when free`.
    pub command: String,
    /// Where it was (last) asked.
    pub chat: ChatThread,
    /// When it first joined.
    pub at: DateTime<Utc>,
    /// When it runs out if still waiting.
    pub expires_at: DateTime<Utc>,
}

impl LineRequest {
    /// Request `r` as the store keeps it, under `id`.
    pub(crate) fn new(id: u64, r: NewLineRequest) -> Self {
        let NewLineRequest {
            line,
            user,
            user_name,
            git_ref,
            command,
            chat,
            at,
            expires_at,
        } = r;
        Self {
            id,
            line,
            user,
            user_name,
            git_ref,
            command,
            chat,
            at,
            expires_at,
        }
    }

    /// Whether it has run out at `now` (the caller's clock).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

/// The 1-based place of request `id` in `line` (in arrival order) among those not run out
/// at `now` (the request itself always counts).
pub(crate) fn position(line: &[LineRequest], id: u64, now: DateTime<Utc>) -> usize {
    1 + line.iter().filter(|r| r.id < id && !r.expired(now)).count()
}

/// Requests waiting for an environment to be free, keyed by line (`app/environment`).
#[async_trait]
pub trait DeskLine: Send + Sync + 'static {
    /// Joins the line. A user has at most one request per line: joining again keeps its
    /// place (id) and first arrival time and takes the rest (ref, command, expiry, thread)
    /// from `r`. Returns the request and its 1-based position among the requests not run
    /// out at `r.at`.
    async fn join_line(&self, r: &NewLineRequest) -> anyhow::Result<(LineRequest, usize)>;

    /// The line's requests in arrival order, run-out ones included.
    async fn line_requests(&self, line: &str) -> anyhow::Result<Vec<LineRequest>>;

    /// The lines with at least one request, sorted.
    async fn waiting_lines(&self) -> anyhow::Result<Vec<String>>;

    /// Removes the user's request from the line (a cancel); returns it.
    async fn leave_line(&self, line: &str, user: &str) -> anyhow::Result<Option<LineRequest>>;

    /// Removes request `id` if it is still in the line; returns it, as it was when removed,
    /// to the one caller that removed it (hand-off and expiry race between processes).
    async fn take_line_request(&self, line: &str, id: u64) -> anyhow::Result<Option<LineRequest>>;
}
