//! Release requests: a deploy into a protected environment waits here, as request `#N`, for
//! its checks, approvals and (when needed) an admin's claim. Numbered by their own sequence;
//! changed only by compare-and-set on their version, so two people acting at once never
//! overwrite each other.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ChatThread;

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for checks, approvals or a claim.
    Open,
    /// Approved (and claimed, when an admin is needed): may deploy.
    Approved,
    /// Its deployment has been made and is running.
    Deploying,
    /// Its deployment succeeded.
    Succeeded,
    /// Its deployment failed (or could not run).
    Failed,
    /// An approver or admin rejected it.
    Rejected,
    /// Its requester or an admin withdrew it.
    Cancelled,
    /// It ran out before it deployed.
    Expired,
}

impl RequestState {
    /// Every state.
    pub const ALL: [RequestState; 8] = [
        RequestState::Open,
        RequestState::Approved,
        RequestState::Deploying,
        RequestState::Succeeded,
        RequestState::Failed,
        RequestState::Rejected,
        RequestState::Cancelled,
        RequestState::Expired,
    ];

    /// Still in play (open, approved or deploying); the rest are over.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RequestState::Open | RequestState::Approved | RequestState::Deploying
        )
    }

    /// The state's name as stored (`succeeded`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Open => "open",
            RequestState::Approved => "approved",
            RequestState::Deploying => "deploying",
            RequestState::Succeeded => "succeeded",
            RequestState::Failed => "failed",
            RequestState::Rejected => "rejected",
            RequestState::Cancelled => "cancelled",
            RequestState::Expired => "expired",
        }
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Green.
    Pass,
    /// Red: blocks the deploy unless overridden.
    Fail,
    /// Not decided yet.
    Pending,
    /// Not run (a check that needs GitHub, in local mode).
    Skipped,
}

impl CheckState {
    /// The state's name as stored (`pass`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pass => "pass",
            CheckState::Fail => "fail",
            CheckState::Pending => "pending",
            CheckState::Skipped => "skipped",
        }
    }
}

/// One check's latest result on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which check (`ci`, `review`, `rollback_notes`, `not_locked`).
    pub kind: String,
    /// Its outcome.
    pub state: CheckState,
    /// What it found, in a line.
    #[serde(default)]
    pub summary: String,
    /// The evidence (the CI run, the pull request).
    #[serde(default)]
    pub url: Option<String>,
    /// When it was evaluated.
    pub at: DateTime<Utc>,
}

/// One approval of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approver's stable id (chat user id).
    pub user: String,
    /// The approver as shown (never compared).
    #[serde(default)]
    pub user_name: String,
    /// When they approved.
    pub at: DateTime<Utc>,
    /// With `approve!`: the reason red checks were waived.
    #[serde(default)]
    pub overriding: Option<String>,
}

/// A request being opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRequest {
    /// The app.
    pub app: String,
    /// The protected environment.
    pub environment: String,
    /// The ref asked for.
    pub git_ref: String,
    /// The commit it resolved to: what is checked, approved and deployed.
    pub sha: String,
    /// The requester's stable id (chat user id): never counts as an approver.
    pub requester: String,
    /// The requester as shown (never compared).
    #[serde(default)]
    pub requester_name: String,
    /// Where it was asked (its thread: every step is said there).
    pub chat: ChatThread,
    /// When it was opened (the caller's clock).
    pub opened_at: DateTime<Utc>,
    /// When it runs out if not deployed by then.
    pub expires_at: DateTime<Utc>,
}

/// A release request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// `#N`: its own sequence, from 1.
    pub id: u64,
    /// The app.
    pub app: String,
    /// The protected environment.
    pub environment: String,
    /// The ref asked for.
    pub git_ref: String,
    /// The commit it is for: what is checked, approved and deployed.
    pub sha: String,
    /// The requester's stable id (chat user id).
    pub requester: String,
    /// The requester as shown (never compared).
    #[serde(default)]
    pub requester_name: String,
    /// Where it was asked.
    pub chat: ChatThread,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// When it runs out if not deployed by then.
    pub expires_at: DateTime<Utc>,
    /// Where it is in its life.
    pub state: RequestState,
    /// The latest result of each check.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// The approvals for the current sha.
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// The admin who claimed it: (user id, name as shown).
    #[serde(default)]
    pub claimed_by: Option<(String, String)>,
    /// Who rejected it and why: (user id, name as shown, reason).
    #[serde(default)]
    pub rejection: Option<(String, String, String)>,
    /// The GitHub deployment made for it.
    #[serde(default)]
    pub deployment_id: Option<u64>,
    /// Whether the trackers have been updated after its release.
    #[serde(default)]
    pub tickets_done: bool,
    /// Ticket updates that failed for a reason that may pass, kept to be tried again (as
    /// the tracker code serialises them); empty with `tickets_done` false means the whole
    /// update is tried again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tickets_pending: Vec<serde_json::Value>,
    /// Set when the request is for a rollback (`rollback … in <protected env>`): its deployment
    /// is marked as one, and the environment is locked for the requester after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::RollbackMark>,
    /// When it was last written (the caller's clock); retention counts from it once it is over.
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write; [`Requests::update_request`] compares it.
    pub version: u64,
}

impl ReleaseRequest {
    /// Request `r` as first stored, under `id`: open, nothing checked or approved, version 1.
    pub(crate) fn opened(id: u64, r: &NewRequest) -> Self {
        let NewRequest {
            app,
            environment,
            git_ref,
            sha,
            requester,
            requester_name,
            chat,
            opened_at,
            expires_at,
        } = r.clone();
        Self {
            id,
            app,
            environment,
            git_ref,
            sha,
            requester,
            requester_name,
            chat,
            opened_at,
            expires_at,
            state: RequestState::Open,
            checks: Vec::new(),
            approvals: Vec::new(),
            claimed_by: None,
            rejection: None,
            deployment_id: None,
            tickets_done: false,
            tickets_pending: Vec::new(),
            rollback: None,
            updated_at: opened_at,
            version: 1,
        }
    }

    /// Whether its time has run out at `now` (the caller's clock).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }

    /// `r` as the next version: what [`Requests::update_request`] stores when it wins.
    pub(crate) fn next_version(&self) -> Self {
        Self {
            version: self.version + 1,
            ..self.clone()
        }
    }
}

/// Release requests, by id.
#[async_trait]
pub trait Requests: Send + Sync + 'static {
    /// Opens a request: the next id of the requests' own sequence (from 1), state open,
    /// version 1, `updated_at` its opening time. Always a new request (asking again for the
    /// same ref is the caller's [`Requests::open_request_for`] then an update).
    async fn open_request(&self, r: &NewRequest) -> anyhow::Result<ReleaseRequest>;

    /// Request `id`, if there is one.
    async fn request(&self, id: u64) -> anyhow::Result<Option<ReleaseRequest>>;

    /// The open ([`RequestState::is_open`]) request for app+environment+ref, if any (the
    /// oldest, should two have been opened at once).
    async fn open_request_for(
        &self,
        app: &str,
        environment: &str,
        git_ref: &str,
    ) -> anyhow::Result<Option<ReleaseRequest>>;

    /// Requests by id (oldest first): only `app`'s when given, only open ones when
    /// `open_only` (the queue of release requests).
    async fn requests(
        &self,
        app: Option<&str>,
        open_only: bool,
    ) -> anyhow::Result<Vec<ReleaseRequest>>;

    /// Compare-and-set: writes `r` under `r.id` with version `r.version + 1`, and returns
    /// what it wrote, only if the stored request's version is still `r.version`; `None` when
    /// someone else changed it first (or it is gone): read it again and decide again.
    async fn update_request(&self, r: &ReleaseRequest) -> anyhow::Result<Option<ReleaseRequest>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_snake_case_and_open_while_in_play() {
        for state in RequestState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<RequestState>(&json).unwrap(), state);
        }
        let open: Vec<_> = RequestState::ALL
            .into_iter()
            .filter(|s| s.is_open())
            .collect();
        assert_eq!(
            open,
            [
                RequestState::Open,
                RequestState::Approved,
                RequestState::Deploying
            ]
        );
        for state in [
            CheckState::Pass,
            CheckState::Fail,
            CheckState::Pending,
            CheckState::Skipped,
        ] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
    }
}
