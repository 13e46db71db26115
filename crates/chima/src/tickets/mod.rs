//! Tickets after a release: the GitHub issues that the released pull requests refer to get a
//! comment and a label, and the Jira issues named in their titles, branches and commits are
//! moved by a transition and commented on.
//!
//! [`update_tickets`] finds the tickets and applies every [`TicketAction`], reporting each one's
//! outcome; nothing here fails the release. The caller keeps the actions that failed for a
//! reason that may pass ([`TicketReport::to_retry`]) and later hands them to [`apply`] again,
//! so a retry never repeats what already worked.

use deploy_core::{AppConfig, EnvName, TicketSettings};
use serde::{Deserialize, Serialize};

use crate::forge::{Forge, ForgeError, PullInfo};

mod jira;
mod refs;
pub mod texts;

pub use jira::{JiraClient, JiraConfigError, JiraError, Moved};
pub use refs::{is_jira_key, issue_refs, jira_keys};

/// At most this many GitHub issues, and this many Jira issues, are updated for one release
/// (a description listing hundreds of references is not a reason to write to hundreds).
pub const MAX_TICKETS: usize = 25;

/// What to update after a release into one environment (the app's `tickets` settings,
/// resolved for that environment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketPlan {
    /// Comment on the GitHub issues the released pull requests refer to.
    pub github_issues: bool,
    /// The label those issues get (e.g. `released:live`); none adds no label.
    pub label: Option<String>,
    /// Move and comment on Jira issues.
    pub jira: Option<JiraPlan>,
}

impl TicketPlan {
    /// The plan for a release to `env` under the app's `tickets` settings (the label's
    /// `{env}` filled in).
    pub fn for_release(settings: &TicketSettings, env: &EnvName) -> Self {
        Self {
            github_issues: settings.github_issues,
            label: settings.label_for(env),
            jira: settings.jira.as_ref().map(|j| JiraPlan {
                project: j.project.clone(),
                transition: j.transition.clone(),
            }),
        }
    }
}

/// Which Jira issues to move, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JiraPlan {
    /// The project key (`PROJ`): only its keys are picked up.
    pub project: String,
    /// The transition's name, e.g. `Released`.
    pub transition: String,
}

/// The release the tickets are told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The commit released.
    pub sha: String,
    /// Where to.
    pub environment: String,
    /// The deployment's id.
    pub deployment_id: u64,
    /// Who released it (a chat handle).
    pub by: String,
}

/// One update of one ticket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum TicketAction {
    /// Comment on a GitHub issue.
    IssueComment {
        /// The issue's number.
        issue: u64,
        /// The comment.
        body: String,
    },
    /// Add a label to a GitHub issue.
    IssueLabel {
        /// The issue's number.
        issue: u64,
        /// The label.
        label: String,
    },
    /// Move a Jira issue by a transition's name.
    JiraTransition {
        /// The issue's key.
        key: String,
        /// The transition's name.
        transition: String,
    },
    /// Comment on a Jira issue.
    JiraComment {
        /// The issue's key.
        key: String,
        /// The comment.
        body: String,
    },
}

impl TicketAction {
    /// The ticket it updates: `#12` or `PROJ-7`.
    pub fn ticket(&self) -> String {
        match self {
            TicketAction::IssueComment { issue, .. } | TicketAction::IssueLabel { issue, .. } => {
                format!("#{issue}")
            }
            TicketAction::JiraTransition { key, .. } | TicketAction::JiraComment { key, .. } => {
                key.clone()
            }
        }
    }
}

impl std::fmt::Display for TicketAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&texts::action(self))
    }
}

/// Why an update failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// For people.
    pub reason: String,
    /// True when trying again later may work.
    pub temporary: bool,
}

/// How one action went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Done,
    /// Nothing to do: the Jira issue already was in that status.
    Already,
    /// Failed.
    Failed(Failure),
}

/// One action and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// What was tried.
    pub action: TicketAction,
    /// How it went.
    pub outcome: Outcome,
}

/// What a release did to its tickets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketReport {
    /// Finding the tickets failed (nothing was updated); a temporary failure is worth
    /// running [`update_tickets`] again for.
    pub lookup: Option<Failure>,
    /// Each action, in order.
    pub results: Vec<ActionResult>,
    /// Tickets found beyond [`MAX_TICKETS`], left alone.
    pub left_out: usize,
}

impl TicketReport {
    /// The actions worth trying again (failed for a reason that may pass).
    pub fn to_retry(&self) -> Vec<TicketAction> {
        self.results
            .iter()
            .filter(|r| matches!(&r.outcome, Outcome::Failed(f) if f.temporary))
            .map(|r| r.action.clone())
            .collect()
    }

    /// True when everything was found and every action worked.
    pub fn is_complete(&self) -> bool {
        self.lookup.is_none()
            && self
                .results
                .iter()
                .all(|r| !matches!(r.outcome, Outcome::Failed(_)))
    }

    /// One line per ticket for the request's thread, e.g. `#12: commented, labelled
    /// released:live` or `PROJ-7: could not move to Released (Jira answered 503: …)`.
    pub fn lines(&self) -> Vec<String> {
        texts::report_lines(self)
    }
}

fn forge_failure(err: &ForgeError) -> Failure {
    let temporary = matches!(
        err,
        ForgeError::Unreachable(_)
            | ForgeError::Unexpected {
                status: 429 | 500..,
                ..
            }
    );
    Failure {
        reason: err.to_string(),
        temporary,
    }
}

fn lookup_failure(err: &ForgeError) -> Failure {
    match err {
        ForgeError::Unsupported(_) => Failure {
            reason: texts::needs_github(),
            temporary: false,
        },
        other => Failure {
            reason: texts::lookup_failed(other),
            temporary: forge_failure(other).temporary,
        },
    }
}

/// The released pull requests: merged or still open (one closed unmerged released nothing).
fn released(pulls: Vec<PullInfo>) -> Vec<PullInfo> {
    pulls
        .into_iter()
        .filter(|p| p.merged || p.state == "open")
        .collect()
}

/// Finds the tickets of `release` (through the pull requests associated with its sha) and
/// the actions `plan` asks for, oldest pull request first. `Err` when the forge could not
/// answer; the count is of tickets left out beyond [`MAX_TICKETS`].
pub async fn plan_actions(
    forge: &dyn Forge,
    app: &AppConfig,
    release: &Release,
    plan: &TicketPlan,
) -> Result<(Vec<TicketAction>, usize), Failure> {
    if !plan.github_issues && plan.jira.is_none() {
        return Ok((Vec::new(), 0));
    }
    let mut pulls = released(
        forge
            .pulls_for_commit(app, &release.sha)
            .await
            .map_err(|e| lookup_failure(&e))?,
    );
    pulls.sort_by_key(|p| p.number);
    let mut issues: Vec<u64> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for pull in &pulls {
        if plan.github_issues {
            let text = format!("{}\n\n{}", pull.title, pull.body);
            for n in issue_refs(&text) {
                if n != pull.number && !issues.contains(&n) {
                    issues.push(n);
                }
            }
        }
        if let Some(jira) = &plan.jira {
            let messages = forge
                .pull_commits(app, pull.number)
                .await
                .map_err(|e| lookup_failure(&e))?;
            let texts = [pull.title.as_str(), pull.head_ref.as_str()]
                .into_iter()
                .chain(messages.iter().map(String::as_str));
            for key in jira_keys(texts, &jira.project) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }
    let left_out =
        issues.len().saturating_sub(MAX_TICKETS) + keys.len().saturating_sub(MAX_TICKETS);
    let body = texts::released(release);
    let mut actions = Vec::new();
    for issue in issues.into_iter().take(MAX_TICKETS) {
        actions.push(TicketAction::IssueComment {
            issue,
            body: body.clone(),
        });
        if let Some(label) = &plan.label {
            actions.push(TicketAction::IssueLabel {
                issue,
                label: label.clone(),
            });
        }
    }
    if let Some(jira) = &plan.jira {
        for key in keys.into_iter().take(MAX_TICKETS) {
            actions.push(TicketAction::JiraTransition {
                key: key.clone(),
                transition: jira.transition.clone(),
            });
            actions.push(TicketAction::JiraComment {
                key,
                body: body.clone(),
            });
        }
    }
    Ok((actions, left_out))
}

/// Applies `actions` one after another, each failure recorded and the rest still tried.
/// Jira actions without a `jira` client fail (for good) saying what to set.
pub async fn apply(
    forge: &dyn Forge,
    jira: Option<&JiraClient>,
    app: &AppConfig,
    actions: &[TicketAction],
) -> Vec<ActionResult> {
    let mut results = Vec::with_capacity(actions.len());
    for action in actions {
        let outcome = match action {
            TicketAction::IssueComment { issue, body } => {
                match forge.comment_on_issue(app, *issue, body).await {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(forge_failure(&e)),
                }
            }
            TicketAction::IssueLabel { issue, label } => {
                match forge.add_label(app, *issue, label).await {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(forge_failure(&e)),
                }
            }
            TicketAction::JiraTransition { key, transition } => match jira {
                None => Outcome::Failed(no_jira()),
                Some(client) => match client.transition(key, transition).await {
                    Ok(Moved::Done) => Outcome::Done,
                    Ok(Moved::Already) => Outcome::Already,
                    Err(e) => Outcome::Failed(jira_failure(&e)),
                },
            },
            TicketAction::JiraComment { key, body } => match jira {
                None => Outcome::Failed(no_jira()),
                Some(client) => match client.comment(key, body).await {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(jira_failure(&e)),
                },
            },
        };
        if let Outcome::Failed(f) = &outcome {
            tracing::warn!(ticket = %action.ticket(), reason = %f.reason, "ticket update failed");
        }
        results.push(ActionResult {
            action: action.clone(),
            outcome,
        });
    }
    results
}

fn no_jira() -> Failure {
    Failure {
        reason: texts::no_jira(),
        temporary: false,
    }
}

fn jira_failure(err: &JiraError) -> Failure {
    Failure {
        reason: err.to_string(),
        temporary: err.is_temporary(),
    }
}

/// Updates the tickets of a successful release as `plan` says: finds them, applies every
/// action, and reports each outcome. Never fails: a tracker that cannot be reached is in the
/// report, for the thread and for a later retry.
pub async fn update_tickets(
    forge: &dyn Forge,
    jira: Option<&JiraClient>,
    app: &AppConfig,
    release: &Release,
    plan: &TicketPlan,
) -> TicketReport {
    match plan_actions(forge, app, release, plan).await {
        Ok((actions, left_out)) => TicketReport {
            lookup: None,
            results: apply(forge, jira, app, &actions).await,
            left_out,
        },
        Err(failure) => {
            tracing::warn!(reason = %failure.reason, "finding a release's tickets failed");
            TicketReport {
                lookup: Some(failure),
                results: Vec::new(),
                left_out: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests;
