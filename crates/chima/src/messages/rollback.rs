//! What `rollback` says: which commit (and deployment) an environment goes back to and from,
//! why nothing was done, the lock it leaves, and what the automatic rollback tells a failed
//! deployment's thread.

use chrono::{DateTime, Utc};
use deploy_core::chat::{Message, Tone};
use deploy_core::{AppConfig, AppName, EnvName};
use deploy_store::EnvLock;

use super::clip;
use crate::chat::Reply;
use crate::forge::DeploymentInfo;

/// What a rollback goes back to, and from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    /// The commit the environment has now (its newest deployment's).
    pub from: String,
    /// The commit deployed.
    pub to: String,
    /// How `to` was chosen.
    pub via: Via,
}

/// How a rollback's commit was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The commit of this earlier deployment.
    Deployment(u64),
    /// The commit this ref points at.
    Ref(String),
    /// A commit approved in a release request.
    Commit,
}

impl RollbackPlan {
    /// The payload's mark.
    pub fn mark(&self) -> deploy_core::Rollback {
        deploy_core::Rollback {
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

fn say(tone: Tone) -> Message {
    Message::new(tone)
}

/// `app in env`, quoted.
fn place(m: Message, app: &str, env: &str) -> Message {
    m.quoted(app).text(" in ").quoted(env)
}

/// `to abc1234 (deployment #12) from def5678`.
fn to_and_from(m: Message, plan: &RollbackPlan) -> Message {
    let m = m.text(" to ").code(short(&plan.to));
    let m = match &plan.via {
        Via::Deployment(id) => m.text(format!(" (deployment #{id})")),
        Via::Ref(r) => m.text(" (").quoted(r.as_str()).text(")"),
        Via::Commit => m,
    };
    m.text(" from ").code(short(&plan.from))
}

/// The reason of the lock a rollback leaves.
pub fn lock_reason(from: &str) -> String {
    format!(
        "rolled back from {}: fix before deploying again",
        short(from)
    )
}

/// The live message while the rollback's deployment is being made.
pub fn requested(user: &str, app: &AppName, env: &EnvName, plan: &RollbackPlan) -> Reply {
    let m = say(Tone::Progress).quoted(user).text(" is rolling back ");
    let m = to_and_from(place(m, app.as_str(), env.as_str()), plan);
    Reply::new(m.text(": creating the deployment…"))
}

/// The rollback's deployment exists; a deployer will pick it up and edit this message.
pub fn created(app: &AppName, info: &DeploymentInfo, user: &str, plan: &RollbackPlan) -> Reply {
    let m = say(Tone::Progress).text(format!("Rollback #{} of ", info.id));
    let m = to_and_from(place(m, app.as_str(), info.environment.as_str()), plan);
    Reply::new(
        m.text(" for ")
            .quoted(user)
            .text(": created, waiting for a deployer. ")
            .link(info.url.as_str(), info.url.as_str()),
    )
}

/// Into a protected environment, a rollback is a release request like any deploy.
pub fn needs_request(app: &AppName, env: &EnvName, plan: &RollbackPlan) -> Reply {
    let m = place(
        say(Tone::Info).text("Rolling back "),
        app.as_str(),
        env.as_str(),
    );
    Reply::new(
        to_and_from(m, plan)
            .text(": ")
            .quoted(env.as_str())
            .text(" is protected, so this opens a release request for that commit."),
    )
}

/// After the rollback's deployment was made, the environment is locked for its requester.
pub fn locked(
    app: &AppConfig,
    env: &EnvName,
    lock: &EnvLock,
    now: DateTime<Utc>,
    bot: &str,
) -> Reply {
    let until = super::desk::lock_until(lock, now, app, "they unlock it");
    let m = place(say(Tone::Lock), app.name.as_str(), env.as_str())
        .text(" is now locked by ")
        .quoted(lock.shown_name())
        .text(": ")
        .quoted(lock.reason.as_str())
        .text(format!(
            ", until {until}. Deploy the fix, then release it with "
        ))
        .code(format!("{bot} unlock {} in {env}", app.name))
        .text(".");
    Reply::new(m)
}

/// The lock after a rollback could not be taken: someone else took the environment meanwhile.
pub fn lock_held_by_other(app: &AppName, env: &EnvName, holder: &EnvLock) -> Reply {
    Reply::new(
        place(say(Tone::Warning), app.as_str(), env.as_str())
            .text(" was not locked after the rollback: ")
            .quoted(holder.shown_name())
            .text(" holds it (")
            .quoted(holder.reason.as_str())
            .text(")."),
    )
}

/// The desk refused the rollback (someone else's lock, a freeze).
pub fn refused(
    app: &AppConfig,
    env: &EnvName,
    blocked: &deploy_core::desk::Blocked,
    now: DateTime<Utc>,
) -> Reply {
    let m = blocked.message(&app.name, env, now, app.tz());
    Reply::new(
        Message {
            tone: Tone::Error,
            ..m
        }
        .text(" Nothing was rolled back; ask again once it is free (or ask its holder)."),
    )
}

/// Nothing has been deployed there yet.
pub fn nothing_deployed(app: &AppName, env: &EnvName) -> Reply {
    Reply::new(
        say(Tone::Info)
            .text("Nothing has been deployed to ")
            .quoted(env.as_str())
            .text(" of ")
            .quoted(app.as_str())
            .text(" yet, so there is nothing to roll back. Nothing was done."),
    )
}

/// No earlier successful deployment with another commit.
pub fn no_earlier(app: &AppName, env: &EnvName, current: &str, bot: &str) -> Reply {
    Reply::new(
        say(Tone::Info)
            .text("There is no earlier successful deployment of ")
            .quoted(app.as_str())
            .text(" in ")
            .quoted(env.as_str())
            .text(" with a commit other than ")
            .code(short(current))
            .text(", so there is nothing to roll back to. Nothing was done. To deploy a commit of your choice, say ")
            .code(format!("{bot} rollback {app} in {env} to <ref>"))
            .text("."),
    )
}

/// `to #id` names no deployment of the app.
pub fn no_such_deployment(app: &AppName, env: &EnvName, id: u64, bot: &str) -> Reply {
    Reply::new(
        say(Tone::Error)
            .text(format!("There is no deployment #{id} of "))
            .quoted(app.as_str())
            .text(" (")
            .code(format!("{bot} deploys {app} in {env}"))
            .text(" lists the recent ones). Nothing was done."),
    )
}

/// `to #id` names a deployment of another environment.
pub fn deployment_elsewhere(app: &AppName, env: &EnvName, id: u64, its_env: &str) -> Reply {
    Reply::new(
        say(Tone::Error)
            .text(format!("Deployment #{id} of "))
            .quoted(app.as_str())
            .text(" was to ")
            .quoted(its_env)
            .text(", not ")
            .quoted(env.as_str())
            .text(": only a deployment that succeeded in ")
            .quoted(env.as_str())
            .text(" can be rolled back to there. Nothing was done."),
    )
}

/// `to #id` names a deployment that did not succeed (or is no deploy).
pub fn deployment_not_good(app: &AppName, env: &EnvName, id: u64, what: &str) -> Reply {
    Reply::new(
        say(Tone::Error)
            .text(format!("Deployment #{id} of "))
            .quoted(app.as_str())
            .text(" in ")
            .quoted(env.as_str())
            .text(format!(
                " {what}: only a deployment that succeeded there can be rolled back to. Nothing was done."
            )),
    )
}

/// `to <ref>` names no ref of the repository.
pub fn ref_not_found(app: &AppConfig, git_ref: &str) -> Reply {
    let m = say(Tone::Error)
        .text("There is no ref ")
        .code(clip(git_ref))
        .text(" in ")
        .quoted(app.repository.to_string())
        .text(" to roll back to. Nothing was done.");
    let m = if !git_ref.is_empty() && git_ref.bytes().all(|b| b.is_ascii_digit()) {
        m.text(format!(" For deployment {git_ref}, write "))
            .code(format!("#{git_ref}"))
            .text(".")
    } else {
        m
    };
    Reply::new(m)
}

/// The environment already has that commit.
pub fn already_there(app: &AppName, env: &EnvName, sha: &str) -> Reply {
    Reply::new(
        place(say(Tone::Info), app.as_str(), env.as_str())
            .text(" is already at ")
            .code(short(sha))
            .text(": nothing to roll back. Nothing was done."),
    )
}

/// A deployment of that commit is already waiting or running there.
pub fn under_way(app: &AppName, env: &EnvName, sha: &str, id: u64) -> Reply {
    Reply::new(
        say(Tone::Info)
            .text("A deployment of ")
            .code(short(sha))
            .text(" to ")
            .quoted(env.as_str())
            .text(" of ")
            .quoted(app.as_str())
            .text(format!(" (#{id}) is already under way. Nothing was done.")),
    )
}

/// The automatic rollback of a failed deployment starts (said in its thread).
pub fn automatic(app: &AppName, env: &EnvName, failed: u64, plan: &RollbackPlan) -> Reply {
    let m = say(Tone::Warning)
        .text(format!("Deployment #{failed} of "))
        .quoted(app.as_str())
        .text(" failed, and ")
        .quoted(env.as_str())
        .text(" rolls back on failure: rolling back");
    Reply::new(to_and_from(m, plan).text("."))
}

/// A failed deployment that cannot be rolled back automatically (said in its thread).
pub fn automatic_impossible(app: &AppName, env: &EnvName, failed: u64) -> Reply {
    Reply::new(
        say(Tone::Warning)
            .text(format!("Deployment #{failed} of "))
            .quoted(app.as_str())
            .text(" failed, and ")
            .quoted(env.as_str())
            .text(" rolls back on failure, but there is no earlier successful deployment there with another commit to go back to. Nothing was done."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppName {
        AppName::parse("demo").unwrap()
    }

    fn env() -> EnvName {
        EnvName::parse("staging").unwrap()
    }

    fn plan(via: Via) -> RollbackPlan {
        RollbackPlan {
            from: "def5678".to_owned() + &"0".repeat(33),
            to: "abc1234".to_owned() + &"0".repeat(33),
            via,
        }
    }

    fn config() -> AppConfig {
        deploy_core::Apps::from_json(
            r#"{"demo": {"provider": "shell", "repository": "oursky/demo",
                "environments": ["staging", "production"]}}"#,
        )
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .clone()
    }

    #[test]
    fn rollback_texts_say_to_and_from() {
        assert_eq!(
            requested("joyz", &app(), &env(), &plan(Via::Deployment(12))).text(),
            "joyz is rolling back demo in staging to `abc1234` (deployment #12) from `def5678`: creating the deployment…"
        );
        assert_eq!(
            requested("joyz", &app(), &env(), &plan(Via::Ref("v1.2.0".into()))).text(),
            "joyz is rolling back demo in staging to `abc1234` (v1.2.0) from `def5678`: creating the deployment…"
        );
        let info = DeploymentInfo {
            id: 15,
            git_ref: plan(Via::Commit).to,
            sha: plan(Via::Commit).to,
            environment: "staging".into(),
            task: "deploy".into(),
            creator: "joyz".into(),
            created_at: Utc::now(),
            state: None,
            url: "https://x/15".into(),
        };
        assert_eq!(
            created(&app(), &info, "joyz", &plan(Via::Deployment(12))).text(),
            "Rollback #15 of demo in staging to `abc1234` (deployment #12) from `def5678` for joyz: created, waiting for a deployer. https://x/15"
        );
        assert_eq!(
            needs_request(&app(), &EnvName::production(), &plan(Via::Commit)).text(),
            "Rolling back demo in production to `abc1234` from `def5678`: production is protected, so this opens a release request for that commit."
        );
        assert_eq!(
            lock_reason(&plan(Via::Commit).from),
            "rolled back from def5678: fix before deploying again"
        );
        assert_eq!(
            automatic(&app(), &env(), 14, &plan(Via::Deployment(12))).text(),
            "Deployment #14 of demo failed, and staging rolls back on failure: rolling back to `abc1234` (deployment #12) from `def5678`."
        );
    }

    #[test]
    fn refusals_say_why_and_that_nothing_was_done() {
        let sha = plan(Via::Commit).to;
        for (reply, want) in [
            (
                nothing_deployed(&app(), &env()),
                "Nothing has been deployed to staging of demo yet, so there is nothing to roll back. Nothing was done.",
            ),
            (
                no_earlier(&app(), &env(), &sha, "chima"),
                "There is no earlier successful deployment of demo in staging with a commit other than `abc1234`, so there is nothing to roll back to. Nothing was done. To deploy a commit of your choice, say `chima rollback demo in staging to <ref>`.",
            ),
            (
                no_such_deployment(&app(), &env(), 99, "chima"),
                "There is no deployment #99 of demo (`chima deploys demo in staging` lists the recent ones). Nothing was done.",
            ),
            (
                deployment_elsewhere(&app(), &env(), 7, "production"),
                "Deployment #7 of demo was to production, not staging: only a deployment that succeeded in staging can be rolled back to there. Nothing was done.",
            ),
            (
                deployment_not_good(&app(), &env(), 7, "ended in failure"),
                "Deployment #7 of demo in staging ended in failure: only a deployment that succeeded there can be rolled back to. Nothing was done.",
            ),
            (
                ref_not_found(&config(), "v9"),
                "There is no ref `v9` in oursky/demo to roll back to. Nothing was done.",
            ),
            (
                ref_not_found(&config(), "12"),
                "There is no ref `12` in oursky/demo to roll back to. Nothing was done. For deployment 12, write `#12`.",
            ),
            (
                already_there(&app(), &env(), &sha),
                "demo in staging is already at `abc1234`: nothing to roll back. Nothing was done.",
            ),
            (
                under_way(&app(), &env(), &sha, 15),
                "A deployment of `abc1234` to staging of demo (#15) is already under way. Nothing was done.",
            ),
            (
                automatic_impossible(&app(), &env(), 14),
                "Deployment #14 of demo failed, and staging rolls back on failure, but there is no earlier successful deployment there with another commit to go back to. Nothing was done.",
            ),
        ] {
            assert_eq!(reply.text(), want);
        }
    }

    #[test]
    fn a_refusal_names_what_stands_in_the_way() {
        let now = Utc::now();
        let blocked = deploy_core::desk::Blocked::Locked {
            holder_name: "alice".into(),
            reason: "migrating".into(),
            since: now,
            until: None,
        };
        let text = refused(&config(), &env(), &blocked, now).text();
        assert!(
            text.contains("alice") && text.contains("migrating"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Nothing was rolled back; ask again once it is free (or ask its holder)."
            ),
            "{text}"
        );
        assert!(refused(&config(), &env(), &blocked, now).actions.is_empty());
    }

    #[test]
    fn the_lock_names_its_holder_reason_and_how_to_release_it() {
        let now = Utc::now();
        let lock = EnvLock {
            user: "U1".into(),
            user_name: "joyz".into(),
            reason: lock_reason(&plan(Via::Commit).from),
            at: now,
            expires_at: Some(now + chrono::Duration::hours(4)),
            thread: None,
            reminded_at: None,
            branch: None,
        };
        let text = locked(&config(), &env(), &lock, now, "chima").text();
        assert!(
            text.starts_with("demo in staging is now locked by joyz: rolled back from def5678: fix before deploying again, until "),
            "{text}"
        );
        assert!(
            text.ends_with("Deploy the fix, then release it with `chima unlock demo in staging`."),
            "{text}"
        );
        assert_eq!(
            lock_held_by_other(&app(), &env(), &lock).text(),
            "demo in staging was not locked after the rollback: joyz holds it (rolled back from def5678: fix before deploying again)."
        );
    }

    #[test]
    fn refs_and_names_are_quoted_safely() {
        for value in deploy_core::chat::MARKUP_INJECTIONS {
            let p = plan(Via::Ref((*value).to_owned()));
            let reply = requested(value, &app(), &env(), &p);
            let shown = deploy_core::chat::slack::mrkdwn(&reply.message);
            assert!(!shown.contains(['<', '>']), "{shown}");
            assert!(
                shown.contains(&deploy_core::chat::escape_mrkdwn(value)),
                "{shown}"
            );
            let shown = deploy_core::chat::slack::mrkdwn(&ref_not_found(&config(), value).message);
            assert!(!shown.contains(['<', '>']), "{shown}");
        }
    }
}
