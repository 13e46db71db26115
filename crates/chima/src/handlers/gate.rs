//! The release desk on a deploy's way: refused (someone else's lock, a freeze), joined to
//! the line (`when free`), or let through with a desk ticket that tells faseng who asked and
//! what allowed it.

use deploy_core::{AppConfig, EnvName, GitRef};
use deploy_store::{Allowance, AuditAction, NewLineRequest};

use crate::chat::{ChatContext, Reply};
use crate::desk::{Desk, Gate, Record};
use crate::grammar::DeployCommand;
use crate::messages;

use super::Bot;

impl Bot {
    /// The release desk's word on a deploy: refused (a lock, a freeze: the reply), joined
    /// to the line (`when free`: the reply says where), or let through with the id of the
    /// desk ticket that tells faseng who asked and what allowed it (`None` without a store).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pass_desk(
        &self,
        app: &AppConfig,
        env: &EnvName,
        git_ref: &GitRef,
        command: &DeployCommand,
        ctx: &ChatContext,
        release: Option<u64>,
        rollback: bool,
    ) -> Result<Option<String>, Reply> {
        let Some(desk) = self.desk() else {
            return Ok(None);
        };
        let failed = |e: anyhow::Error| {
            tracing::warn!(error = %format!("{e:#}"), "release desk unreadable");
            messages::desk::store_failed(&format!("{e:#}"))
        };
        let mut allowed = match command.task {
            // Heaven's lock tasks act on the locks themselves; faseng decides them.
            deploy_core::Task::Lock | deploy_core::Task::Unlock => Vec::new(),
            _ => match desk.gate(app, env, &ctx.user_id).await.map_err(failed)? {
                Gate::Free => Vec::new(),
                Gate::Allowed(allowed) => allowed,
                Gate::Blocked(blocked) if command.when_free => {
                    return Err(self
                        .join_line(&desk, app, env, git_ref, command, ctx, &blocked)
                        .await
                        .unwrap_or_else(failed));
                }
                Gate::Blocked(blocked) if rollback => {
                    return Err(messages::rollback::refused(app, env, &blocked, desk.now()));
                }
                Gate::Blocked(blocked) => {
                    return Err(messages::desk::deploy_refused(
                        app,
                        env,
                        git_ref,
                        &blocked,
                        desk.now(),
                        &self.when_free_command(command, git_ref, env),
                        &ctx.user_id,
                    ));
                }
            },
        };
        if let Some(request) = release {
            allowed.push(Allowance::Request(request));
        }
        let sha = match self.forge.resolve_sha(app, git_ref).await {
            Ok(Some(sha)) => sha,
            // No such ref: the deployment request gets the forge's own answer for it.
            Ok(None) => return Ok(None),
            // Nothing but the ticket needs the sha: a deploy nothing stands in the way of
            // goes ahead without one (faseng then names its GitHub creator); one that needs
            // the desk's word cannot.
            Err(e) if allowed.is_empty() => {
                tracing::warn!(error = %e, "could not read the ref's commit; deploying without a desk ticket");
                return Ok(None);
            }
            Err(e) => return Err(messages::forge_failed(app, "read the ref", &e)),
        };
        desk.issue_ticket(
            &app.name,
            env,
            &sha,
            (&ctx.user_id, &ctx.user_name),
            allowed,
        )
        .await
        .map(Some)
        .map_err(failed)
    }

    /// `deploy … when free`: joins the line behind what blocks it.
    #[allow(clippy::too_many_arguments)]
    async fn join_line(
        &self,
        desk: &Desk,
        app: &AppConfig,
        env: &EnvName,
        git_ref: &GitRef,
        command: &DeployCommand,
        ctx: &ChatContext,
        blocked: &deploy_core::desk::Blocked,
    ) -> anyhow::Result<Reply> {
        let now = desk.now();
        let line = crate::desk::line_of(&app.name, env);
        let (request, position) = desk
            .store()
            .join_line(&NewLineRequest {
                line: line.to_string(),
                user: ctx.user_id.clone(),
                user_name: ctx.user_name.clone(),
                git_ref: git_ref.to_string(),
                command: self.deploy_line(command, git_ref, env),
                chat: ctx.chat_thread(),
                at: now,
                expires_at: now + app.lock_ttl().as_chrono(),
            })
            .await?;
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                AuditAction::LineJoin,
                app.name.as_str(),
                Some(&ctx.chat_thread()),
            )
            .env(env.as_str())
            .git(git_ref.as_str(), None)
            .detail(format!("position {position}")),
        )
        .await;
        Ok(messages::desk::joined_line(
            app, env, &request, position, blocked, now, &self.name,
        ))
    }

    /// The deploy command a request in line runs when released (`when free` left out).
    fn deploy_line(&self, command: &DeployCommand, git_ref: &GitRef, env: &EnvName) -> String {
        let bang = if command.force { "!" } else { "" };
        let task = command.task.to_string();
        let head = match task.strip_prefix("deploy") {
            Some(rest) => format!("deploy{bang}{rest}"),
            None => format!("{task}{bang}"),
        };
        let hosts = command
            .hosts
            .as_ref()
            .map(|h| format!("/{h}"))
            .unwrap_or_default();
        format!("{head} {}/{git_ref} to {env}{hosts}", command.app)
    }

    /// The command that joins the line, as a button runs it.
    fn when_free_command(
        &self,
        command: &DeployCommand,
        git_ref: &GitRef,
        env: &EnvName,
    ) -> String {
        format!(
            "{} {} when free",
            self.name,
            self.deploy_line(command, git_ref, env)
        )
    }
}
