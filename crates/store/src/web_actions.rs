//! Web actions: what a signed-in dashboard user asks chima to do (a chat command line),
//! carried out by chima with the chat's own handler, once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a web action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebActionState {
    /// Submitted, waiting for chima.
    Pending,
    /// chima is carrying it out.
    Running,
    /// chima carried it out (its reply says how it went).
    Done,
    /// It could not be carried out, or chima stopped while doing it.
    Failed,
}

impl WebActionState {
    /// How an action chima carried out ended: `Done` when it went well, else `Failed`.
    pub fn ended(ok: bool) -> Self {
        if ok { Self::Done } else { Self::Failed }
    }

    /// The state's name (`pending`, `running`, `done`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            WebActionState::Pending => "pending",
            WebActionState::Running => "running",
            WebActionState::Done => "done",
            WebActionState::Failed => "failed",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Pending, Self::Running, Self::Done, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// True for `done` and `failed`.
    pub fn is_final(self) -> bool {
        matches!(self, WebActionState::Done | WebActionState::Failed)
    }
}

/// One web action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebAction {
    /// Its number (increasing in submission order).
    pub id: u64,
    /// Who asked: `github:<login>` or `local:<user>`; what it is done and audited as.
    pub user_id: String,
    /// Who asked, as shown.
    pub user_name: String,
    /// The chat command line, e.g. `rollback demo in staging to #12`.
    pub command: String,
    /// Where it is.
    pub state: WebActionState,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// The chima process carrying it out.
    pub claimed_by: Option<String>,
    /// Until when that process holds it.
    pub claimed_until: Option<DateTime<Utc>>,
    /// chima's answer, as plain text.
    pub reply: Option<String>,
    /// `owner/repo/id` of a deployment it created.
    pub run_key: Option<String>,
}

/// Web actions, numbered by the store.
#[async_trait]
pub trait WebActions: Send + Sync + 'static {
    /// Keeps a new pending action and returns its id.
    async fn submit_web_action(
        &self,
        user_id: &str,
        user_name: &str,
        command: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<u64>;

    /// The oldest pending action, now Running for `holder` until `at + lease`. A Running action whose
    /// claim lapsed is NOT handed out again: it is ended Failed (with [`crate::messages::WEB_ACTION_STOPPED`]) —
    /// an action is never carried out twice. Atomic: of claimers racing, each action goes to one.
    async fn claim_web_action(
        &self,
        holder: &str,
        at: DateTime<Utc>,
        lease: std::time::Duration,
    ) -> anyhow::Result<Option<WebAction>>;

    /// Ends a Running action held by `holder`; false when it was not (lapsed and failed meanwhile).
    async fn finish_web_action(
        &self,
        id: u64,
        holder: &str,
        ok: bool,
        reply: &str,
        run_key: Option<&str>,
    ) -> anyhow::Result<bool>;

    /// Action `id`, if there is one.
    async fn web_action(&self, id: u64) -> anyhow::Result<Option<WebAction>>;
}

/// `at + lease`, as the claim's end.
pub(crate) fn claim_end(
    at: DateTime<Utc>,
    lease: std::time::Duration,
) -> anyhow::Result<DateTime<Utc>> {
    use anyhow::Context as _;
    let lease = chrono::Duration::from_std(lease).context("a web action's lease")?;
    at.checked_add_signed(lease)
        .context("a web action's lease ends out of range")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_snake_case_and_named_alike() {
        for s in [
            WebActionState::Pending,
            WebActionState::Running,
            WebActionState::Done,
            WebActionState::Failed,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(WebActionState::parse(s.as_str()), Some(s));
        }
        assert_eq!(WebActionState::parse("Running"), None);
    }
}
