//! The release desk as faseng sees it (DESIGN § "Desk rules"): who is deploying, decided
//! once at intake and kept with the job. A desk ticket (`payload.desk_ticket`, written by
//! chima into the shared store) names the person and what chat let through; without one that
//! redeems, the deployment is its GitHub creator's. `payload.notify` says only where to talk,
//! never who. Whether a deploy may go ahead is the store's one rule, [`crate::store::gate`],
//! asked by the deployer at run start.

use chrono::{DateTime, Utc};
use deploy_core::event::clean_user_name;
use deploy_core::{Apps, Notify, RepoName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::DeployJob;
use crate::store::{Allowance, ChatThread, DeskTicket, Store};

/// Who is deploying a deployment, and what chat said let it through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// A stable id: the desk ticket's user (a chat user id), else the deployment's GitHub
    /// creator login. What locks, unfreezes and the audit are keyed by.
    pub user: String,
    /// As shown (`DEPLOY_USER`, chat, statuses); never compared.
    pub user_name: String,
    /// What chat said let it through (the person's lock, an unfreeze, a request).
    #[serde(default)]
    pub allowed_by: Vec<Allowance>,
    /// Whether a desk ticket vouched for it: chima made it (and audited it).
    #[serde(default)]
    pub ticketed: bool,
}

impl Identity {
    /// A deployment made outside chat: its GitHub creator.
    pub fn creator(login: &str) -> Self {
        Self {
            user: login.to_owned(),
            user_name: login.to_owned(),
            allowed_by: Vec::new(),
            ticketed: false,
        }
    }

    /// The person a redeemed ticket names.
    pub fn from_ticket(ticket: &DeskTicket) -> Self {
        let name = clean_user_name(&ticket.user_name);
        Self {
            user: ticket.user.clone(),
            user_name: if name.is_empty() {
                clean_user_name(&ticket.user)
            } else {
                name
            },
            allowed_by: ticket.allowed_by.clone(),
            ticketed: true,
        }
    }
}

/// The audit's `adapter` for what faseng records of a deployment made outside chat (CI,
/// `gh api`, a copied payload): it came through GitHub.
pub const OUTSIDE_CHAT: &str = "github";

/// An environment as the desk names it (`Edge` is `edge`); as sent when it is no name.
pub fn environment_name(environment: &str) -> String {
    deploy_core::EnvName::parse(environment)
        .map_or_else(|_| environment.to_owned(), |e| e.to_string())
}

/// The longest ticket id faseng looks up (chima's are 32 hex digits).
pub const MAX_TICKET_ID: usize = 64;

/// `payload.desk_ticket`, when it is something a ticket id could be (ASCII letters, digits,
/// `-` and `_`, at most [`MAX_TICKET_ID`]): anything else is never looked up.
pub fn ticket_id(payload: &Value) -> Option<&str> {
    payload
        .get("desk_ticket")
        .and_then(Value::as_str)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_TICKET_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A ticket id as it may be logged: its first four characters (a ticket is a bearer
/// permission until it is used, so it is never logged whole).
pub fn ticket_hint(id: &str) -> String {
    let head: String = id.chars().take(4).collect();
    format!("{head}…")
}

/// Decides who deploys `job` (at `now`) and keeps it in the job: the person of its desk
/// ticket when the ticket redeems (it is for the job's app, environment and sha, unused and
/// unexpired; redeeming uses it up), else the creator. Returns the redeemed ticket, to be
/// given back if the intake then fails. `Err` only when the store cannot be asked.
pub async fn decide_identity(
    store: &dyn Store,
    apps: &Apps,
    job: &mut DeployJob,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DeskTicket>> {
    let ticket = match ticket_id(&job.payload) {
        Some(id) => {
            let redeemed = redeem(store, apps, job, id, now).await?;
            if redeemed.is_none() {
                tracing::warn!(
                    key = %job.key(),
                    ticket = %ticket_hint(id),
                    "the deployment's desk ticket does not redeem (used, expired, or for another app, environment or commit): it is treated as made outside chat, by its GitHub creator"
                );
            }
            redeemed
        }
        None if job.payload.get("desk_ticket").is_some_and(|t| !t.is_null()) => {
            tracing::warn!(key = %job.key(), "the deployment's desk ticket is malformed: it is treated as made outside chat, by its GitHub creator");
            None
        }
        None => None,
    };
    job.identity = Some(match &ticket {
        Some(t) => Identity::from_ticket(t),
        None => Identity::creator(&job.creator),
    });
    Ok(ticket)
}

async fn redeem(
    store: &dyn Store,
    apps: &Apps,
    job: &DeployJob,
    id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DeskTicket>> {
    let Ok(repo) = RepoName::parse(&job.repo) else {
        return Ok(None);
    };
    let Ok(app) = crate::resolve::app_for(apps, &repo, job.payload_name()) else {
        return Ok(None);
    };
    let Ok(env) = crate::resolve::environment_of(app, &job.environment) else {
        return Ok(None);
    };
    store
        .redeem_ticket(id, app.name.as_str(), env.as_str(), &job.sha, now)
        .await
}

/// Where a lock taken from a deployment talks (reminders, expiry): the chat message of its
/// payload, by room and thread. Only where, never who.
pub fn thread_of(notify: &Notify) -> ChatThread {
    ChatThread {
        adapter: notify.adapter.clone(),
        room: notify.room.clone(),
        room_name: notify.room_name.clone(),
        thread: notify
            .thread_ts
            .clone()
            .or_else(|| notify.message_ts.clone()),
    }
}

/// Whether `git_ref` names the default branch (`main` or `refs/heads/main`).
pub fn is_default_branch(git_ref: &str, default_branch: &str) -> bool {
    !default_branch.is_empty()
        && (git_ref == default_branch
            || git_ref.strip_prefix("refs/heads/") == Some(default_branch))
}

/// A deployment's description when chima made it up (`deploy:lock on edge from chima`):
/// not a reason someone gave.
pub fn is_generated_description(job: &DeployJob) -> bool {
    let robot = job
        .payload
        .get("robotName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    !robot.is_empty()
        && job.description.trim() == format!("{} on {} from {robot}", job.task, job.environment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use crate::store::prelude::*;
    use serde_json::json;

    fn apps() -> Apps {
        Apps::from_json(
            r#"{"trelhub": {"provider": "shell", "repository": "oursky/trelhub",
                            "environments": ["edge", "staging"]}}"#,
        )
        .unwrap()
    }

    fn job(payload: Value) -> DeployJob {
        let mut job = DeployJob::sample("d", "oursky/trelhub", "trelhub/edge");
        job.payload = payload;
        job
    }

    fn ticket(id: &str, env: &str, sha: &str, now: DateTime<Utc>) -> DeskTicket {
        DeskTicket {
            id: id.into(),
            app: "trelhub".into(),
            environment: env.into(),
            sha: sha.into(),
            user: "U0ALICE".into(),
            user_name: "alice".into(),
            allowed_by: vec![Allowance::Lock],
            at: now,
            expires_at: now + chrono::Duration::hours(1),
        }
    }

    #[test]
    fn only_plausible_ticket_ids_are_looked_up() {
        for (payload, want) in [
            (json!({"desk_ticket": "8f2c0d"}), Some("8f2c0d")),
            (json!({"desk_ticket": "t-8f2c_x"}), Some("t-8f2c_x")),
            (json!({"desk_ticket": ""}), None),
            (json!({"desk_ticket": "a b"}), None),
            (json!({"desk_ticket": "../x"}), None),
            (json!({"desk_ticket": "a".repeat(MAX_TICKET_ID + 1)}), None),
            (json!({"desk_ticket": 7}), None),
            (json!({}), None),
        ] {
            assert_eq!(ticket_id(&payload), want, "{payload}");
        }
        assert_eq!(ticket_hint("8f2c0d9e"), "8f2c…");
    }

    #[tokio::test]
    async fn a_ticket_names_the_deployer_once_and_otherwise_the_creator_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("d.db"), "q")
            .await
            .unwrap();
        let apps = apps();
        let now = Utc::now();
        let sha = "a".repeat(40);
        store
            .issue_ticket(&ticket("t1", "edge", &sha, now))
            .await
            .unwrap();
        store
            .issue_ticket(&ticket("t2", "staging", &sha, now))
            .await
            .unwrap();

        // notify.user claims someone else: it decides nothing.
        let payload = json!({"desk_ticket": "t1", "notify": {"adapter": "slack", "room": "C1",
                             "user": "U0MALLORY", "user_name": "mallory"}});
        let mut first = job(payload.clone());
        let redeemed = decide_identity(&store, &apps, &mut first, now)
            .await
            .unwrap();
        assert_eq!(redeemed.map(|t| t.id), Some("t1".to_owned()));
        assert_eq!(
            first.identity(),
            Identity {
                user: "U0ALICE".into(),
                user_name: "alice".into(),
                allowed_by: vec![Allowance::Lock],
                ticketed: true,
            }
        );

        // The same ticket again (a copied payload): used up, so the creator deploys.
        let mut copy = job(payload);
        assert!(
            decide_identity(&store, &apps, &mut copy, now)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(copy.identity(), Identity::creator("joyz"));

        // A ticket for another environment does not redeem, and stays unused.
        let mut elsewhere = job(json!({"desk_ticket": "t2"}));
        decide_identity(&store, &apps, &mut elsewhere, now)
            .await
            .unwrap();
        assert!(!elsewhere.identity().ticketed);
        assert!(
            store
                .redeem_ticket("t2", "trelhub", "staging", &sha, now)
                .await
                .unwrap()
                .is_some()
        );

        // No ticket: the creator.
        let mut plain = job(json!({}));
        decide_identity(&store, &apps, &mut plain, now)
            .await
            .unwrap();
        assert_eq!(plain.identity(), Identity::creator("joyz"));
    }

    #[test]
    fn the_default_branch_and_made_up_descriptions_are_recognised() {
        assert!(is_default_branch("main", "main"));
        assert!(is_default_branch("refs/heads/main", "main"));
        assert!(!is_default_branch("feature/main", "main"));
        assert!(!is_default_branch("main", ""));

        let mut lock = job(json!({"robotName": "chima"}));
        lock.task = deploy_core::Task::Lock;
        lock.description = "deploy:lock on edge from chima".into();
        assert!(is_generated_description(&lock));
        lock.description = "db migration".into();
        assert!(!is_generated_description(&lock));
        lock.payload = json!({});
        lock.description = "deploy:lock on edge from chima".into();
        assert!(!is_generated_description(&lock));
    }

    #[test]
    fn a_thread_is_where_the_payload_talks() {
        let notify: Notify = serde_json::from_value(json!({"adapter": "slack", "room": "C1",
            "room_name": "deployment", "user": "U0X", "message_ts": "1.2", "thread_ts": "1.1"}))
        .unwrap();
        assert_eq!(
            thread_of(&notify),
            ChatThread {
                adapter: "slack".into(),
                room: "C1".into(),
                room_name: "deployment".into(),
                thread: Some("1.1".into()),
            }
        );
    }
}
