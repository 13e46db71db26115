//! Command handlers: a parsed command and a chat context in, replies out. Independent of the
//! chat transport and of where deployments live.

mod desk;
mod gate;
mod requests;
pub(crate) mod rollback;
mod stats;

pub use requests::missing as request_missing;

use std::sync::{Arc, OnceLock};

use deploy_core::{
    AppConfig, AppName, Apps, Clock, DeploymentPayload, EnvName, GitRef, NewDeployment, Notify,
};
use futures::future::join_all;

use crate::chat::{Action, ActionKind, ChatContext, MessageRef, Outbox, Poster, Reply};
use crate::desk::{Desk, Record};
use crate::forge::{CreateOutcome, DeploymentFilter, Forge};
use crate::grammar::{self, Addressing, Command, DeployCommand, ParseError};
use crate::messages;
use deploy_store::AuditAction;

/// The bot: app.json, the forge, its name, the store it shares with faseng (the release
/// desk), the clock the desk tells time by, and how it speaks unprompted.
pub struct Bot {
    apps: Apps,
    forge: Arc<dyn Forge>,
    name: String,
    store: Option<crate::store::StoreHandle>,
    clock: Arc<dyn Clock>,
    poster: OnceLock<Arc<dyn Poster>>,
    jira: Option<crate::tickets::JiraClient>,
}

/// How a deploy is made beyond what its command says.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeployHow {
    /// The approved release request it carries out (exactly its commit).
    pub release: Option<u64>,
    /// The rollback it is: its mark goes into the payload, the texts say "rollback", and
    /// the environment is locked for the requester afterwards.
    pub rollback: Option<crate::messages::rollback::RollbackPlan>,
}

/// What happened to a deploy command, for transports that follow up (buttons, watchdog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployResult {
    /// Refused before GitHub was asked, or GitHub refused.
    Refused,
    /// A deployment exists.
    Created {
        /// Deployment id.
        id: u64,
        /// The app.
        app: AppName,
        /// The live message faseng will edit, if the transport could post one.
        message: Option<MessageRef>,
    },
}

impl Bot {
    /// A bot over these apps and this forge, answering to `name`.
    pub fn new(apps: Apps, forge: Arc<dyn Forge>, name: &str) -> Self {
        Self {
            apps,
            forge,
            name: name.to_owned(),
            store: None,
            clock: deploy_core::clock::system(),
            poster: OnceLock::new(),
            jira: None,
        }
    }

    /// The bot moving Jira tickets after releases through `jira`.
    pub fn with_jira(mut self, jira: Option<crate::tickets::JiraClient>) -> Self {
        self.jira = jira;
        self
    }

    /// The Jira client, when configured.
    pub fn jira(&self) -> Option<&crate::tickets::JiraClient> {
        self.jira.as_ref()
    }

    /// The bot telling time by `clock` (tests move it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How the bot speaks when no command is being answered (set once by the transport).
    pub fn set_poster(&self, poster: Arc<dyn Poster>) {
        let _ = self.poster.set(poster);
    }

    /// The poster, once the transport set one.
    pub fn poster(&self) -> Option<Arc<dyn Poster>> {
        self.poster.get().cloned()
    }

    /// The release desk, when the bot has a store.
    pub fn desk(&self) -> Option<Desk> {
        self.store
            .as_ref()
            .map(|s| Desk::new(s.store().clone(), self.clock.clone()))
    }

    /// The bot reading locks, lines and history from the store it shares with faseng.
    pub fn with_store(mut self, store: crate::store::StoreHandle) -> Self {
        self.store = Some(store);
        self
    }

    /// The store shared with faseng, when there is one.
    pub fn store(&self) -> Option<&crate::store::StoreHandle> {
        self.store.as_ref()
    }

    /// The name that addresses the bot.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The apps it knows.
    pub fn apps(&self) -> &Apps {
        &self.apps
    }

    /// The forge it deploys through.
    pub fn forge(&self) -> &Arc<dyn Forge> {
        &self.forge
    }

    /// Handles every command line in a chat message that is meant for the bot. Lines not
    /// addressed to it are ignored; every addressed line gets at least one reply. A message
    /// with more than [`grammar::MAX_COMMANDS_PER_MESSAGE`] command lines gets one refusal and
    /// nothing else is done.
    pub async fn handle_message(
        &self,
        text: &str,
        implicit: bool,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> Vec<DeployResult> {
        let addressing = Addressing {
            bot_name: &self.name,
            implicit,
        };
        let lines = grammar::addressed_lines(text, &addressing);
        if lines.len() > grammar::MAX_COMMANDS_PER_MESSAGE {
            outbox.post(messages::too_many_commands(lines.len())).await;
            return Vec::new();
        }
        let mut results = Vec::new();
        for line in lines {
            results.extend(self.handle_line(&line, ctx, outbox).await);
        }
        results
    }

    /// Parses and handles one command line (already stripped of the bot's address).
    pub async fn handle_line(
        &self,
        line: &str,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> Vec<DeployResult> {
        self.handle(grammar::parse(line), ctx, outbox).await
    }

    /// Handles a parsed command (or the reason it could not be parsed).
    pub async fn handle(
        &self,
        command: Result<Command, ParseError>,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> Vec<DeployResult> {
        let command = match command {
            Ok(c) => c,
            Err(e) => {
                outbox.post(messages::not_understood(&e, &self.name)).await;
                return Vec::new();
            }
        };
        match command {
            Command::Desk(command) => self.desk_command(command, ctx, outbox).await,
            Command::Request(command) => self.request_command(command, ctx, outbox).await,
            Command::Rollback(command) => self.rollback(&command, ctx, outbox).await,
            Command::Stats(command) => {
                outbox.post(self.stats(&command).await).await;
                Vec::new()
            }
            Command::Deploy(deploy) => vec![self.deploy(&deploy, ctx, outbox).await],
            Command::Deploys { app, git_ref, env } => {
                let reply = self.deploys(&app, git_ref, env).await;
                outbox.post(reply).await;
                Vec::new()
            }
            Command::WhereCanIDeploy { app } => {
                outbox.post(self.where_can_i_deploy(&app).await).await;
                Vec::new()
            }
            Command::Ci { app, git_ref } => {
                outbox.post(self.ci(&app, git_ref).await).await;
                Vec::new()
            }
            Command::Help { topic } => {
                let reply = match topic {
                    None => messages::help(&self.name),
                    Some(t) => match grammar::spec(&t) {
                        Some(spec) => messages::help_for(spec, &self.name),
                        None => messages::help_unknown_topic(&t, &self.name),
                    },
                };
                outbox.post(reply).await;
                Vec::new()
            }
            Command::Log { id } => {
                let reply = match self.forge.log(id).await {
                    Ok(lines) => messages::log(id, &lines),
                    Err(crate::forge::ForgeError::Unsupported(what)) => {
                        messages::unsupported(&what)
                    }
                    Err(e) => messages::log_unreadable(id, &e.to_string()),
                };
                outbox.post(reply).await;
                Vec::new()
            }
            Command::Version => {
                outbox
                    .post(messages::version(&self.name, &self.forge.describe()))
                    .await;
                Vec::new()
            }
        }
    }

    fn app(&self, name: &AppName) -> Result<&AppConfig, Reply> {
        self.apps.get(name).ok_or_else(|| {
            let known: Vec<&AppName> = self.apps.names().collect();
            messages::unknown_app(name, &known)
        })
    }

    /// Checks app, environment and room, in hubot-deploy's order; the first failure is the
    /// reply.
    pub fn check_deploy(
        &self,
        command: &DeployCommand,
        ctx: &ChatContext,
    ) -> Result<(&AppConfig, EnvName), Reply> {
        let app = self.app(&command.app)?;
        let env = command
            .env
            .clone()
            .unwrap_or_else(|| app.default_environment.clone());
        if !app.has_environment(&env) {
            return Err(messages::unknown_environment(app, &env));
        }
        self.check_room(app, ctx)?;
        Ok((app, env))
    }

    /// Whether `app` may be deployed (locked, frozen) from the command's room.
    pub(crate) fn check_room(&self, app: &AppConfig, ctx: &ChatContext) -> Result<(), Reply> {
        // The dashboard decided who may act (signed-in members); it is no chat room.
        let room_ok = if ctx.is_dashboard() {
            true
        } else if ctx.direct {
            app.allowed_rooms.is_none()
        } else {
            app.allows_room(&ctx.room_id, &ctx.room_name)
        };
        if room_ok {
            Ok(())
        } else {
            Err(messages::room_not_allowed(app, &ctx.room_label()))
        }
    }

    /// Runs a deploy command end to end: checks, the live message, the GitHub request, and
    /// one clear outcome in that same message.
    pub async fn deploy(
        &self,
        command: &DeployCommand,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> DeployResult {
        self.deploy_as(command, ctx, outbox, DeployHow::default())
            .await
    }

    /// A deploy command, or the deployment of an approved release request (`how.release`),
    /// or a rollback (`how.rollback`): into a protected environment, a command (or a
    /// rollback) opens a request instead.
    pub(crate) async fn deploy_as(
        &self,
        command: &DeployCommand,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
        how: DeployHow,
    ) -> DeployResult {
        let release = how.release;
        let rollback = how.rollback;
        let (app, env) = match self.check_deploy(command, ctx) {
            Ok(ok) => ok,
            Err(reply) => {
                outbox.post(reply).await;
                return DeployResult::Refused;
            }
        };
        let git_ref = match &command.git_ref {
            Some(r) => r.clone(),
            None => match self.forge.default_branch(app).await {
                Ok(branch) => branch,
                Err(e) => {
                    outbox
                        .post(messages::forge_failed(app, "read the default branch", &e))
                        .await;
                    return DeployResult::Refused;
                }
            },
        };
        let lock_task = matches!(
            command.task,
            deploy_core::Task::Lock | deploy_core::Task::Unlock
        );
        if release.is_none()
            && !lock_task
            && let Some(protection) = app.protection(&env)
        {
            if let Err(e) = self
                .open_request(
                    app,
                    &env,
                    &git_ref,
                    protection,
                    ctx,
                    outbox,
                    rollback.as_ref(),
                )
                .await
            {
                tracing::warn!(error = %format!("{e:#}"), "could not open a release request");
                outbox
                    .post(messages::desk::store_failed(&format!("{e:#}")))
                    .await;
            }
            return DeployResult::Refused;
        }
        let ticket = match self
            .pass_desk(
                app,
                &env,
                &git_ref,
                command,
                ctx,
                release,
                rollback.is_some(),
            )
            .await
        {
            Ok(ticket) => ticket,
            Err(reply) => {
                outbox.post(reply).await;
                return DeployResult::Refused;
            }
        };
        let task = command.task.to_string();
        let asked = match &rollback {
            Some(plan) => messages::rollback::requested(&ctx.user_name, &app.name, &env, plan),
            None => {
                messages::deploy_requested(&ctx.user_name, &app.name, git_ref.as_str(), &env, &task)
            }
        };
        let live = outbox.post(asked).await;
        let mut request = self.new_deployment(app, &env, &git_ref, command, ctx, live.as_ref());
        request.payload.desk_ticket = ticket;
        request.payload.request = release;
        request.payload.rollback = rollback.as_ref().map(|p| p.mark());
        if release.is_some() || rollback.is_some() {
            // Exactly the approved (or earlier) commit: nothing merged into it on the way.
            request.auto_merge = false;
        }
        let outcome = self.forge.create_deployment(app, &request).await;
        let (reply, result) = match outcome {
            Ok(CreateOutcome::Created(info)) => {
                let note = command.otp.as_ref().map(|_| messages::otp_ignored());
                let mut reply = match &rollback {
                    Some(plan) => {
                        messages::rollback::created(&app.name, &info, &ctx.user_name, plan)
                    }
                    None => messages::deployment_created(
                        &app.name,
                        &info,
                        &ctx.user_name,
                        note.as_deref(),
                    ),
                };
                if command.git_ref.is_some() && task == "deploy" && rollback.is_none() {
                    reply = self
                        .offer_default_branch(reply, app, &env, &info.git_ref)
                        .await;
                }
                if let Some(desk) = self.desk() {
                    desk.record(
                        Record::new(
                            (&ctx.user_id, &ctx.user_name),
                            AuditAction::Deploy,
                            app.name.as_str(),
                            Some(&ctx.chat_thread()),
                        )
                        .env(env.as_str())
                        .git(&info.git_ref, Some(&info.sha))
                        .detail(format!("deployment #{} ({task})", info.id)),
                    )
                    .await;
                }
                let result = DeployResult::Created {
                    id: info.id,
                    app: app.name.clone(),
                    message: live.clone(),
                };
                (reply, result)
            }
            Ok(CreateOutcome::AutoMerged { message }) => (
                messages::auto_merged(&app.name, git_ref.as_str(), &message),
                DeployResult::Refused,
            ),
            Ok(CreateOutcome::ChecksFailed { contexts }) => {
                let forced = self.forced_command(command, git_ref.as_str(), &env);
                (
                    messages::checks_failed(&app.name, &contexts, &forced, &ctx.user_id),
                    DeployResult::Refused,
                )
            }
            Ok(CreateOutcome::MergeConflict { message }) => (
                messages::merge_conflict(&app.name, git_ref.as_str(), &message),
                DeployResult::Refused,
            ),
            Ok(CreateOutcome::Unprocessable { message }) => (
                messages::unprocessable(app, git_ref.as_str(), &message),
                DeployResult::Refused,
            ),
            Err(e) => (
                messages::forge_failed(app, "create deployments", &e),
                DeployResult::Refused,
            ),
        };
        match &live {
            Some(message) => outbox.edit(message, reply).await,
            None => {
                outbox.post(reply).await;
            }
        }
        if let (Some(plan), DeployResult::Created { id, .. }) = (&rollback, &result) {
            self.lock_after_rollback(app, &env, plan, *id, ctx, outbox)
                .await;
        }
        result
    }

    /// After deploying a branch other than the default one, offer to put the default back.
    async fn offer_default_branch(
        &self,
        reply: Reply,
        app: &AppConfig,
        env: &EnvName,
        deployed_ref: &str,
    ) -> Reply {
        match self.forge.default_branch(app).await {
            Ok(default) if default.as_str() != deployed_ref => reply.with_action(Action {
                kind: ActionKind::DeployDefaultBranch,
                label: format!("Deploy {default}"),
                command: format!("{} deploy {}/{default} to {env}", self.name, app.name),
                only_user: None,
            }),
            _ => reply,
        }
    }

    fn forced_command(&self, command: &DeployCommand, git_ref: &str, env: &EnvName) -> String {
        let task = command.task.to_string();
        let head = match task.strip_prefix("deploy") {
            Some(rest) => format!("deploy!{rest}"),
            None => format!("{task}!"),
        };
        format!("{} {head} {}/{git_ref} to {env}", self.name, command.app)
    }

    /// The request body for `POST /repos/{owner}/{repo}/deployments`.
    pub fn new_deployment(
        &self,
        app: &AppConfig,
        env: &EnvName,
        git_ref: &GitRef,
        command: &DeployCommand,
        ctx: &ChatContext,
        live: Option<&MessageRef>,
    ) -> NewDeployment {
        NewDeployment {
            git_ref: git_ref.clone(),
            description: format!("{} on {env} from {}", command.task, self.name),
            task: command.task.clone(),
            environment: env.clone(),
            auto_merge: !command.force && app.auto_merge,
            required_contexts: if command.force {
                Some(Vec::new())
            } else {
                app.required_contexts.clone()
            },
            production_environment: env.as_str() == "production",
            payload: DeploymentPayload {
                name: app.name.to_string(),
                robot_name: self.name.clone(),
                hosts: command.hosts.clone().unwrap_or_default(),
                // From the dashboard there is no chat message to keep up to date.
                notify: (!ctx.is_dashboard()).then(|| Notify {
                    adapter: ctx.adapter.clone(),
                    room: live.map_or_else(|| ctx.room_id.clone(), |m| m.channel.clone()),
                    room_name: ctx.room_name.clone(),
                    user: ctx.user_id.clone(),
                    user_name: ctx.user_name.clone(),
                    message_ts: live.map(|m| m.id.clone()),
                    thread_ts: ctx.thread_id.clone().or_else(|| ctx.message_id.clone()),
                }),
                config: app.payload_config(),
                desk_ticket: None,
                request: None,
                rollback: None,
                extra: Default::default(),
            },
        }
    }

    async fn deploys(&self, app: &AppName, git_ref: Option<GitRef>, env: Option<EnvName>) -> Reply {
        let app = match self.app(app) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        if let Some(env) = &env
            && !app.has_environment(env)
        {
            return messages::unknown_environment(app, env);
        }
        let filter = DeploymentFilter {
            git_ref,
            environment: env,
            limit: 10,
        };
        match self.forge.deployments(app, &filter).await {
            Ok(list) => messages::recent_deployments(&app.name, &filter, &list, chrono::Utc::now()),
            Err(e) => messages::forge_failed(app, "read deployments", &e),
        }
    }

    async fn where_can_i_deploy(&self, app: &AppName) -> Reply {
        let app = match self.app(app) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let lookups = app
            .environments
            .iter()
            .map(|env| self.forge.current_deployment(app, env));
        let mut current = Vec::new();
        for (env, found) in app.environments.iter().zip(join_all(lookups).await) {
            match found {
                Ok(d) => current.push((env.clone(), d)),
                Err(e) => return messages::forge_failed(app, "read deployments", &e),
            }
        }
        let now = chrono::Utc::now();
        let locks = match &self.store {
            None => messages::Locks::Unknown,
            Some(store) => match store.locks_of(&app.name, &app.environments, now).await {
                Ok(locks) => messages::Locks::Read(locks),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), store = store.describe(), "could not read locks");
                    messages::Locks::Unreadable(format!("{e:#}"))
                }
            },
        };
        messages::environments(app, &current, &locks, now)
    }

    async fn ci(&self, app: &AppName, git_ref: Option<GitRef>) -> Reply {
        let app = match self.app(app) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let git_ref = match git_ref {
            Some(r) => r,
            None => match self.forge.default_branch(app).await {
                Ok(b) => b,
                Err(e) => return messages::forge_failed(app, "read the default branch", &e),
            },
        };
        match self.forge.ci_report(app, &git_ref).await {
            Ok(report) => messages::ci_report(&app.name, git_ref.as_str(), &report),
            Err(crate::forge::ForgeError::Unsupported(what)) => messages::unsupported(&what),
            Err(e) => messages::forge_failed(app, "read commit statuses", &e),
        }
    }
}
