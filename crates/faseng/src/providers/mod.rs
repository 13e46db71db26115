//! Providers: the tools that deploy. Each implements [`Provider`] — prepare (check inputs,
//! build argv), run (each command's output in the log under a `==> name: command` header),
//! report (turn what happened into an [`RunOutcome`]). Adding one means one file here plus a
//! line in [`for_kind`].

mod capistrano;
pub mod command;
mod fabric;
mod heroku;
pub mod settings;
mod shell;
pub mod ssh;
pub mod stages;

pub use capistrano::CapistranoProvider;
pub use fabric::FabricProvider;
pub use heroku::HerokuProvider;
pub use settings::{ProviderConfig, ProviderSettings, SshKeySource};
pub use shell::ShellProvider;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{AppConfig, CommitSha, EnvName, GitRef, Secret, Task};

use crate::checkout::RunDir;
use crate::lease::LeaseKeeper;
use crate::outcome::RunOutcome;
use crate::process::{CommandSpec, Exit};
use crate::runlog::RunLog;
use crate::sandbox::Isolation;
use command::run_logged;

/// Everything a provider may use about one run; every field is already validated.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// The app's config.
    pub app: &'a AppConfig,
    /// Target environment.
    pub env: &'a EnvName,
    /// The ref asked for.
    pub git_ref: &'a GitRef,
    /// The exact commit.
    pub sha: &'a CommitSha,
    /// `deploy`, `deploy:migrate`, …
    pub task: &'a Task,
    /// The GitHub deployment id.
    pub deployment_id: u64,
    /// Who asked.
    pub user: &'a str,
    /// The run's checkout (inside [`RunContext::run`]).
    pub checkout: &'a Path,
    /// The run's private directory (checkout, `HOME`, `TMPDIR`).
    pub run: &'a RunDir,
    /// How provider commands are kept from faseng.
    pub isolation: &'a Isolation,
    /// How long the whole run may take (the app's timeout, for texts).
    pub timeout: Duration,
    /// When the run must be over: checkout, stages and provider share one timeout.
    pub deadline: tokio::time::Instant,
    /// The token for the app's GitHub (tarball links), when faseng has one.
    pub github_token: Option<&'a Secret>,
    /// The run's lease: checked before anything is spawned (a worker that lost its run
    /// starts nothing more). `None` in tests of providers alone.
    pub lease: Option<&'a LeaseKeeper>,
}

impl RunContext<'_> {
    /// Runs one command of the run, isolated as faseng is configured, within what is left
    /// of the run's time.
    pub async fn run_command(
        &self,
        cmd: &CommandSpec,
        log: &RunLog,
        on_spawn: &(dyn Fn(i32) + Send + Sync),
    ) -> std::io::Result<Exit> {
        self.confirm_lease().await?;
        run_logged(
            cmd,
            self.isolation,
            &self.run.root,
            log,
            command::TimeLimit {
                left: self.remaining(),
                of_run: self.timeout,
            },
            on_spawn,
        )
        .await
    }

    /// Fails when the run's lease is no longer this worker's (checked before anything is
    /// spawned or started elsewhere).
    pub async fn confirm_lease(&self) -> std::io::Result<()> {
        match self.lease {
            Some(lease) if !lease.confirm().await => Err(std::io::Error::other(
                "this worker no longer holds the run's lease",
            )),
            _ => Ok(()),
        }
    }

    /// The time left before the deadline (at least 1 ms, so a command past it is stopped at
    /// once rather than never started).
    pub fn remaining(&self) -> Duration {
        let r = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        if r.is_zero() {
            Duration::from_millis(1)
        } else {
            r
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Commands, run in order; the first that fails stops the run.
    pub commands: Vec<CommandSpec>,
}

/// What happened when the plan ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    /// Every command ran; the last exit (the first failing one, if any).
    Exited(Exit),
    /// A command could not be started.
    SpawnFailed(String),
}

/// A deploy tool.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The name used in app.json and log headers.
    fn name(&self) -> &'static str;

    /// Checks inputs and builds what to run; `Err(description)` means it cannot run.
    async fn prepare(&self, ctx: &RunContext<'_>, log: &RunLog) -> Result<Plan, String>;

    /// Runs the plan. The default runs each command with a header line, in its own process
    /// group, under the run's timeout; `on_spawn` gets each process group id.
    async fn run(
        &self,
        ctx: &RunContext<'_>,
        plan: Plan,
        log: &RunLog,
        on_spawn: &(dyn Fn(i32) + Send + Sync),
    ) -> RunResult {
        let mut last = RunResult::Exited(Exit::Code(0));
        for cmd in &plan.commands {
            log.header(self.name(), &cmd.display());
            match ctx.run_command(cmd, log, on_spawn).await {
                Ok(Exit::TimedOut { .. }) => {
                    last = RunResult::Exited(Exit::TimedOut {
                        secs: ctx.timeout.as_secs(),
                    });
                    break;
                }
                Ok(exit) => {
                    last = RunResult::Exited(exit);
                    if !exit.success() {
                        break;
                    }
                }
                Err(e) => {
                    last = RunResult::SpawnFailed(format!(
                        "could not start {}: {e}",
                        cmd.program.display()
                    ));
                    break;
                }
            }
        }
        last
    }

    /// Turns the result into an outcome (writing the verdict to the log).
    fn report(&self, _ctx: &RunContext<'_>, result: &RunResult, log: &RunLog) -> RunOutcome {
        stages::plain_report(self.name(), result, log)
    }
}

/// The provider for an app.json `provider` value (a fresh one per run: providers may hold
/// per-run material such as an SSH directory until they report).
pub fn for_kind(
    kind: deploy_core::Provider,
    settings: &std::sync::Arc<ProviderSettings>,
) -> Option<Box<dyn Provider>> {
    match kind {
        deploy_core::Provider::Shell => Some(Box::new(ShellProvider)),
        deploy_core::Provider::Fabric => Some(Box::new(FabricProvider::new(settings.clone()))),
        deploy_core::Provider::Capistrano => {
            Some(Box::new(CapistranoProvider::new(settings.clone())))
        }
        deploy_core::Provider::Heroku => Some(Box::new(HerokuProvider::new(settings.clone()))),
    }
}
