//! `rollback <app> in <env> [to <ref>|#<id>]`: deploys an earlier commit again, as an ordinary
//! deployment of that sha (the desk, protection and desk tickets apply as to any deploy),
//! marked `payload.rollback = {from, to}`; afterwards the environment is locked for whoever
//! rolled back (unless the app sets `lock_after_rollback: false`).
//!
//! What an environment has, and had, is read from the run history in the store shared with
//! faseng: the environment's *current* commit is its newest deploy that started; the default
//! target is the newest earlier deploy there that succeeded with another commit.

use deploy_core::{AppConfig, EnvName, GitRef};
use deploy_store::stats::counted_task;
use deploy_store::{AuditAction, EnvLock, RunQuery, RunRecord, RunState};

use crate::chat::{ChatContext, Outbox};
use crate::desk::{Desk, Record, line_of};
use crate::grammar::{DeployCommand, RollbackCommand, RollbackTarget};
use crate::messages::desk as say_desk;
use crate::messages::rollback::{self as say, RollbackPlan, Via};

use super::{Bot, DeployHow, DeployResult};

/// How many of an environment's newest runs a rollback looks through.
pub const HISTORY_LOOKBACK: usize = 1000;

/// Why a rollback cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRollback {
    /// No deploy has started there.
    NothingDeployed,
    /// No earlier successful deploy with a commit other than the current one.
    NoEarlier {
        /// The current commit.
        current: String,
    },
    /// `to #id`: no such deployment of the app.
    NoSuchDeployment(u64),
    /// `to #id`: a deployment to another environment.
    Elsewhere {
        /// The deployment.
        id: u64,
        /// Its environment.
        env: String,
    },
    /// `to #id`: a deployment that did not succeed, or is no deploy.
    NotGood {
        /// The deployment.
        id: u64,
        /// What it is instead (`ended in failure`, `is a deploy:lock`).
        what: String,
    },
    /// The environment already has the commit.
    AlreadyThere(String),
    /// A deploy of the commit is waiting or running there.
    UnderWay {
        /// The commit.
        sha: String,
        /// The deployment.
        id: u64,
    },
}

fn is_deploy(run: &RunRecord) -> bool {
    counted_task(&run.task)
}

/// The environment's current deploy: its newest that started. `runs` are newest first.
pub fn current(runs: &[RunRecord]) -> Option<&RunRecord> {
    runs.iter().find(|r| is_deploy(r) && r.started_at.is_some())
}

/// The newest deploy older than `current` that succeeded with another commit.
pub fn previous_good<'a>(runs: &'a [RunRecord], current: &RunRecord) -> Option<&'a RunRecord> {
    let older = runs
        .iter()
        .position(|r| r.key == current.key)
        .map_or(runs, |i| &runs[i + 1..]);
    older.iter().find(|r| {
        is_deploy(r) && r.state == RunState::Success && !r.sha.eq_ignore_ascii_case(&current.sha)
    })
}

/// Whether `run` (deployment `id`, when found) may be rolled back to in `env`.
pub fn good_target(run: Option<&RunRecord>, id: u64, env: &str) -> Result<(), NoRollback> {
    let Some(run) = run else {
        return Err(NoRollback::NoSuchDeployment(id));
    };
    if run.environment != env {
        return Err(NoRollback::Elsewhere {
            id,
            env: run.environment.clone(),
        });
    }
    if !is_deploy(run) {
        return Err(NoRollback::NotGood {
            id,
            what: format!("is a {}, not a deploy", run.task),
        });
    }
    match run.state {
        RunState::Success => Ok(()),
        RunState::Queued => Err(NoRollback::NotGood {
            id,
            what: "has not run yet".to_owned(),
        }),
        RunState::InProgress => Err(NoRollback::NotGood {
            id,
            what: "is still running".to_owned(),
        }),
        state => Err(NoRollback::NotGood {
            id,
            what: format!("ended in {}", state.as_str()),
        }),
    }
}

/// Whether going to `to` from `from` does anything: not when the environment has it, nor
/// while a deploy of it waits or runs there.
pub fn worth_it(runs: &[RunRecord], from: &str, to: &str) -> Result<(), NoRollback> {
    if let Some(pending) = runs
        .iter()
        .find(|r| is_deploy(r) && !r.state.is_final() && r.sha.eq_ignore_ascii_case(to))
    {
        return Err(NoRollback::UnderWay {
            sha: to.to_owned(),
            id: pending.deployment_id,
        });
    }
    if from.eq_ignore_ascii_case(to) {
        return Err(NoRollback::AlreadyThere(to.to_owned()));
    }
    Ok(())
}

impl Bot {
    /// Handles a rollback command; the deployment it made, if any.
    pub async fn rollback(
        &self,
        command: &RollbackCommand,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> Vec<DeployResult> {
        let app = match self.app(&command.app) {
            Ok(app) => app,
            Err(reply) => {
                outbox.post(reply).await;
                return Vec::new();
            }
        };
        let env = command.env.clone();
        if !app.has_environment(&env) {
            outbox
                .post(crate::messages::unknown_environment(app, &env))
                .await;
            return Vec::new();
        }
        if let Err(reply) = self.check_room(app, ctx) {
            outbox.post(reply).await;
            return Vec::new();
        }
        let Some(desk) = self.desk() else {
            outbox.post(say_desk::no_store()).await;
            return Vec::new();
        };
        let plan = match self.plan_rollback(&desk, app, &env, &command.target).await {
            Ok(Ok(plan)) => plan,
            Ok(Err(reply)) => {
                outbox.post(reply).await;
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the run history");
                outbox.post(say_desk::store_failed(&format!("{e:#}"))).await;
                return Vec::new();
            }
        };
        vec![self.roll_back(app, &env, plan, ctx, outbox).await]
    }

    /// Deploys `plan` (as an ordinary deploy of its commit, marked a rollback).
    pub(crate) async fn roll_back(
        &self,
        app: &AppConfig,
        env: &EnvName,
        plan: RollbackPlan,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> DeployResult {
        let Ok(sha) = GitRef::parse(&plan.to) else {
            // A sha from the store that is no ref: say so rather than deploy something else.
            outbox.post(say::ref_not_found(app, &plan.to)).await;
            return DeployResult::Refused;
        };
        if app.protection(env).is_some() {
            outbox.post(say::needs_request(&app.name, env, &plan)).await;
        }
        let command = DeployCommand {
            task: deploy_core::Task::Deploy,
            force: false,
            app: app.name.clone(),
            git_ref: Some(sha),
            env: Some(env.clone()),
            hosts: None,
            otp: None,
            when_free: false,
        };
        let how = DeployHow {
            release: None,
            rollback: Some(plan),
        };
        Box::pin(self.deploy_as(&command, ctx, outbox, how)).await
    }

    /// The rollback `target` names in `env`, or the reply saying why there is none. `Err`: the
    /// store or the forge could not be read.
    pub(crate) async fn plan_rollback(
        &self,
        desk: &Desk,
        app: &AppConfig,
        env: &EnvName,
        target: &RollbackTarget,
    ) -> anyhow::Result<Result<RollbackPlan, crate::chat::Reply>> {
        let runs = env_history(desk, app, env).await?;
        let refused = |why: NoRollback| Ok(Err(self.no_rollback(app, env, why)));
        let Some(now) = current(&runs) else {
            return refused(NoRollback::NothingDeployed);
        };
        let from = now.sha.to_ascii_lowercase();
        let (to, via) = match target {
            RollbackTarget::Previous => match previous_good(&runs, now) {
                Some(good) => (good.sha.clone(), Via::Deployment(good.deployment_id)),
                None => return refused(NoRollback::NoEarlier { current: from }),
            },
            RollbackTarget::Deployment(id) => {
                let run = find_deployment(desk, app, *id).await?;
                if let Err(why) = good_target(run.as_ref(), *id, env.as_str()) {
                    return refused(why);
                }
                let run = run.expect("a good target exists");
                (run.sha, Via::Deployment(*id))
            }
            RollbackTarget::Ref(git_ref) => match self.forge().resolve_sha(app, git_ref).await {
                Ok(Some(sha)) => (sha, Via::Ref(git_ref.to_string())),
                Ok(None) => return Ok(Err(say::ref_not_found(app, git_ref.as_str()))),
                Err(e) => {
                    return Ok(Err(crate::messages::forge_failed(app, "read the ref", &e)));
                }
            },
        };
        let to = to.to_ascii_lowercase();
        if let Err(why) = worth_it(&runs, &from, &to) {
            return refused(why);
        }
        if let Some(id) = self.made_not_finished(app, env, &to).await {
            return refused(NoRollback::UnderWay { sha: to, id });
        }
        Ok(Ok(RollbackPlan { from, to, via }))
    }

    /// A deployment of `sha` to `env` the forge has that has not finished (faseng may not
    /// have recorded it yet: a Roll back button pressed twice). A forge that cannot be read
    /// stops nothing.
    async fn made_not_finished(&self, app: &AppConfig, env: &EnvName, sha: &str) -> Option<u64> {
        let filter = crate::forge::DeploymentFilter {
            git_ref: None,
            environment: Some(env.clone()),
            limit: 10,
        };
        match self.forge().deployments(app, &filter).await {
            Ok(recent) => recent
                .into_iter()
                .find(|d| {
                    d.sha.eq_ignore_ascii_case(sha)
                        && !matches!(
                            d.state.as_deref(),
                            Some("success" | "failure" | "error" | "inactive")
                        )
                })
                .map(|d| d.id),
            Err(e) => {
                tracing::warn!(error = %e, "could not list recent deployments before a rollback");
                None
            }
        }
    }

    fn no_rollback(&self, app: &AppConfig, env: &EnvName, why: NoRollback) -> crate::chat::Reply {
        let name = &app.name;
        match why {
            NoRollback::NothingDeployed => say::nothing_deployed(name, env),
            NoRollback::NoEarlier { current } => say::no_earlier(name, env, &current, self.name()),
            NoRollback::NoSuchDeployment(id) => say::no_such_deployment(name, env, id, self.name()),
            NoRollback::Elsewhere { id, env: other } => {
                say::deployment_elsewhere(name, env, id, &other)
            }
            NoRollback::NotGood { id, what } => say::deployment_not_good(name, env, id, &what),
            NoRollback::AlreadyThere(sha) => say::already_there(name, env, &sha),
            NoRollback::UnderWay { sha, id } => say::under_way(name, env, &sha, id),
        }
    }

    /// After a rollback's deployment was made: the environment is locked for its requester
    /// (unless the app turned that off), said in the command's thread, and audited.
    pub(super) async fn lock_after_rollback(
        &self,
        app: &AppConfig,
        env: &EnvName,
        plan: &RollbackPlan,
        deployment: u64,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) {
        let Some(desk) = self.desk() else {
            return;
        };
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                AuditAction::Rollback,
                app.name.as_str(),
                Some(&ctx.chat_thread()),
            )
            .env(env.as_str())
            .git(&plan.to, Some(&plan.to))
            .detail(format!(
                "deployment #{deployment}: from {} to {}",
                short(&plan.from),
                short(&plan.to)
            )),
        )
        .await;
        if !app.lock_after_rollback() {
            return;
        }
        let now = desk.now();
        let reason = say::lock_reason(&plan.from);
        let wanted = EnvLock {
            user: ctx.user_id.clone(),
            user_name: ctx.user_name.clone(),
            reason: reason.clone(),
            at: now,
            expires_at: Some(now + app.lock_ttl().as_chrono()),
            // Reminders and the expiry go to the rollback's thread (none from the dashboard).
            thread: (!ctx.is_dashboard()).then(|| ctx.chat_thread()),
            reminded_at: None,
            branch: None,
        };
        let line = line_of(&app.name, env);
        let holder = match desk.store().acquire_lock(line.as_str(), &wanted, now).await {
            Ok(holder) => holder,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not lock after the rollback");
                outbox.post(say_desk::store_failed(&format!("{e:#}"))).await;
                return;
            }
        };
        if holder.user != ctx.user_id {
            outbox
                .post(say::lock_held_by_other(&app.name, env, &holder))
                .await;
            return;
        }
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                AuditAction::Lock,
                app.name.as_str(),
                Some(&ctx.chat_thread()),
            )
            .env(env.as_str())
            .detail(format!(
                "for {}: {reason} (after rollback #{deployment})",
                app.lock_ttl()
            )),
        )
        .await;
        outbox
            .post(say::locked(app, env, &holder, now, self.name()))
            .await;
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// The environment's runs, newest first (at most [`HISTORY_LOOKBACK`]).
pub async fn env_history(
    desk: &Desk,
    app: &AppConfig,
    env: &EnvName,
) -> anyhow::Result<Vec<RunRecord>> {
    history(desk, app, Some(env)).await
}

async fn history(
    desk: &Desk,
    app: &AppConfig,
    env: Option<&EnvName>,
) -> anyhow::Result<Vec<RunRecord>> {
    let mut query = RunQuery {
        app: Some(app.name.to_string()),
        environment: env.map(ToString::to_string),
        limit: deploy_store::page::PAGE_MAX,
        ..RunQuery::default()
    };
    let mut runs = Vec::new();
    loop {
        let page = desk.store().history(&query).await?;
        runs.extend(page.items);
        match page.next {
            Some(next) if runs.len() < HISTORY_LOOKBACK => query.cursor = Some(next),
            _ => break,
        }
    }
    runs.truncate(HISTORY_LOOKBACK);
    Ok(runs)
}

/// Deployment `id` of `app`, in any environment.
async fn find_deployment(
    desk: &Desk,
    app: &AppConfig,
    id: u64,
) -> anyhow::Result<Option<RunRecord>> {
    let key = RunRecord::key_for(&app.repository.to_string(), id);
    if let Some(run) = desk.store().get_run(&key).await?
        && run.app == app.name.as_str()
    {
        return Ok(Some(run));
    }
    Ok(history(desk, app, None)
        .await?
        .into_iter()
        .find(|r| r.deployment_id == id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};

    fn t(min: i64) -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(min)
    }

    /// Deployment `id` of `sha` (one letter, repeated) in staging, received at minute `id`.
    fn run(id: u64, sha: char, state: RunState) -> RunRecord {
        let started = !matches!(state, RunState::Queued);
        RunRecord {
            key: format!("oursky/demo/{id}"),
            repo: "oursky/demo".into(),
            deployment_id: id,
            app: "demo".into(),
            environment: "staging".into(),
            task: "deploy".into(),
            git_ref: "main".into(),
            sha: sha.to_string().repeat(40),
            creator: "chima".into(),
            state,
            description: String::new(),
            received_at: t(id as i64),
            started_at: started.then(|| t(id as i64)),
            finished_at: state.is_final().then(|| t(id as i64 + 1)),
            chat_ts: None,
            rollback: None,
            stages: Vec::new(),
        }
    }

    /// Newest first, as the history lists them.
    fn newest_first(mut runs: Vec<RunRecord>) -> Vec<RunRecord> {
        runs.reverse();
        runs
    }

    #[test]
    fn the_default_target_is_the_newest_earlier_success_with_another_commit() {
        use RunState::*;
        let runs = newest_first(vec![
            run(1, 'a', Success),
            run(2, 'b', Success),
            run(3, 'c', Failure),
            run(4, 'c', Success),
            run(5, 'c', Failure),
        ]);
        let now = current(&runs).unwrap();
        assert_eq!(now.deployment_id, 5);
        assert_eq!(previous_good(&runs, now).unwrap().deployment_id, 2);

        // A run that never started (refused by a lock, queued) changed nothing there.
        let mut refused = run(6, 'd', Error);
        refused.started_at = None;
        let runs = newest_first(vec![
            run(1, 'a', Success),
            run(2, 'b', Success),
            refused,
            run(7, 'e', Queued),
        ]);
        let now = current(&runs).unwrap();
        assert_eq!(now.deployment_id, 2);
        assert_eq!(previous_good(&runs, now).unwrap().deployment_id, 1);

        // Lock tasks are no deploys.
        let mut lock = run(3, 'z', Success);
        lock.task = "deploy:lock".into();
        let runs = newest_first(vec![run(1, 'a', Success), run(2, 'b', Success), lock]);
        assert_eq!(current(&runs).unwrap().deployment_id, 2);
    }

    #[test]
    fn nothing_to_go_back_to() {
        use RunState::*;
        assert!(current(&[]).is_none());
        let runs = newest_first(vec![run(1, 'a', Success), run(2, 'a', Success)]);
        let now = current(&runs).unwrap();
        assert!(previous_good(&runs, now).is_none(), "the same commit only");
        let runs = newest_first(vec![run(1, 'a', Failure), run(2, 'b', Success)]);
        assert!(previous_good(&runs, current(&runs).unwrap()).is_none());
    }

    #[test]
    fn a_named_deployment_must_have_succeeded_there() {
        use RunState::*;
        assert_eq!(
            good_target(Some(&run(3, 'a', Success)), 3, "staging"),
            Ok(())
        );
        assert_eq!(
            good_target(None, 9, "staging"),
            Err(NoRollback::NoSuchDeployment(9))
        );
        assert_eq!(
            good_target(Some(&run(3, 'a', Success)), 3, "production"),
            Err(NoRollback::Elsewhere {
                id: 3,
                env: "staging".into()
            })
        );
        for (state, what) in [
            (Failure, "ended in failure"),
            (Error, "ended in error"),
            (InProgress, "is still running"),
            (Queued, "has not run yet"),
        ] {
            assert_eq!(
                good_target(Some(&run(3, 'a', state)), 3, "staging"),
                Err(NoRollback::NotGood {
                    id: 3,
                    what: what.into()
                })
            );
        }
        let mut lock = run(3, 'a', Success);
        lock.task = "deploy:lock".into();
        assert_eq!(
            good_target(Some(&lock), 3, "staging"),
            Err(NoRollback::NotGood {
                id: 3,
                what: "is a deploy:lock, not a deploy".into()
            })
        );
    }

    #[test]
    fn a_rollback_to_what_is_there_or_on_its_way_does_nothing() {
        use RunState::*;
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let runs = newest_first(vec![run(1, 'a', Success), run(2, 'b', Success)]);
        assert_eq!(worth_it(&runs, &b, &a), Ok(()));
        assert_eq!(
            worth_it(&runs, &b, &b),
            Err(NoRollback::AlreadyThere(b.clone()))
        );
        let runs = newest_first(vec![
            run(1, 'a', Success),
            run(2, 'b', Success),
            run(3, 'a', Queued),
        ]);
        assert_eq!(
            worth_it(&runs, &b, &a),
            Err(NoRollback::UnderWay { sha: a, id: 3 })
        );
    }
}
