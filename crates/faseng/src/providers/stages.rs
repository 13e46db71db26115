//! The stages of a run — prepare → before → deploy → after — around any [`Provider`]:
//! app.json `before_deploy` / `after_deploy` scripts (same rules as the shell provider's
//! `deploy_script`) run as named stages, each under a `==> before: script/x` header, all
//! within the run's one timeout. A failing stage stops the run with `failure` naming it.
//! Progress is reported after every change so the chat message can show it.

use std::path::{Path, PathBuf};

use deploy_core::AppConfig;
use deploy_core::chat::Message;

use super::shell::{deploy_env, resolve_script};
use super::ssh::explain_failure;
use super::{Provider, RunContext, RunResult};
use crate::outcome::{RunError, RunFailure, RunOutcome};
use crate::process::{CommandSpec, Exit};
use crate::runlog::RunLog;

/// A stage of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The provider checks its inputs and builds what to run; scripts are resolved.
    Prepare,
    /// app.json `before_deploy` scripts.
    Before,
    /// The provider runs.
    Deploy,
    /// app.json `after_deploy` scripts.
    After,
}

impl Stage {
    /// The stage's name in logs and chat.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Before => "before",
            Stage::Deploy => "deploy",
            Stage::After => "after",
        }
    }
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageState {
    /// Not started.
    Pending,
    /// Running now.
    Running,
    /// Finished well.
    Done,
    /// Failed; the run stopped here.
    Failed,
}

/// The stages of one run and where each is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    stages: Vec<(Stage, StageState)>,
}

impl Progress {
    /// The stages an app's run has: before / after only when app.json lists scripts.
    pub fn for_app(app: &AppConfig) -> Self {
        let mut stages = vec![Stage::Prepare];
        if !app.before_deploy.is_empty() {
            stages.push(Stage::Before);
        }
        stages.push(Stage::Deploy);
        if !app.after_deploy.is_empty() {
            stages.push(Stage::After);
        }
        Self {
            stages: stages
                .into_iter()
                .map(|s| (s, StageState::Pending))
                .collect(),
        }
    }

    /// Sets where a stage is (a stage the run does not have is left out).
    pub fn set(&mut self, stage: Stage, state: StageState) {
        if let Some(entry) = self.stages.iter_mut().find(|(s, _)| *s == stage) {
            entry.1 = state;
        }
    }

    /// The state of a stage (`None` when the run does not have it).
    pub fn state(&self, stage: Stage) -> Option<StageState> {
        self.stages.iter().find(|(s, _)| *s == stage).map(|e| e.1)
    }

    /// The stages in order, with where each is.
    pub fn stages(&self) -> impl Iterator<Item = (Stage, StageState)> + '_ {
        self.stages.iter().copied()
    }

    /// One line for chat: `prepare ✓ → before ✓ → *deploy …* → after`.
    pub fn line(&self) -> String {
        self.stages
            .iter()
            .map(|(s, state)| match state {
                StageState::Pending => s.as_str().to_owned(),
                StageState::Running => format!("*{} …*", s.as_str()),
                StageState::Done => format!("{} ✓", s.as_str()),
                StageState::Failed => format!("{} ✗", s.as_str()),
            })
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

/// Chat message while a run is in progress: the running message (from
/// [`messages::chat_running`]) and the stage line (stage names only).
pub fn chat_running_with_stages(running: &Message, progress: &Progress) -> Message {
    running.clone().text(format!("\n{}", progress.line()))
}

/// Finds `name` on the `PATH` of `env` (what the command will run with).
pub fn find_program(name: &str, env: &[(String, String)]) -> Option<PathBuf> {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())?;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The outcome of a provider's commands, as the trait's default `report` states it.
pub fn plain_report(name: &str, result: &RunResult, log: &RunLog) -> RunOutcome {
    let last_line = log.last_output_line();
    match result {
        RunResult::Exited(Exit::Code(0)) => RunOutcome::Success,
        RunResult::Exited(Exit::Code(c)) => {
            log.header(name, &format!("exited with status {c}"));
            RunOutcome::Failed(RunFailure::Exited {
                code: *c,
                last_line,
            })
        }
        RunResult::Exited(Exit::Signal(s)) => {
            log.header(name, &format!("killed by signal {s}"));
            RunOutcome::Failed(RunFailure::Killed { signal: *s })
        }
        RunResult::Exited(Exit::TimedOut { secs }) => {
            RunOutcome::Failed(RunFailure::TimedOut { secs: *secs })
        }
        RunResult::SpawnFailed(why) => {
            log.header(name, why);
            RunOutcome::Error(RunError::CouldNotRun(why.clone()))
        }
    }
}

/// [`plain_report`], but an SSH failure in the output (rejected key, host key mismatch) is
/// named in the log and the status instead of the tool's last line.
pub fn ssh_aware_report(name: &str, result: &RunResult, log: &RunLog) -> RunOutcome {
    if let RunResult::Exited(Exit::Code(c)) = result
        && *c != 0
        && let Some(why) = explain_failure(&log.tail())
    {
        log.header(name, &format!("exited with status {c}"));
        log.header("ssh", &why);
        return RunOutcome::Failed(RunFailure::Explained(why));
    }
    plain_report(name, result, log)
}

/// Runs the scripts of a before / after stage; `Err` is the run's outcome.
async fn run_scripts(
    stage: Stage,
    scripts: &[(String, PathBuf)],
    ctx: &RunContext<'_>,
    log: &RunLog,
    on_spawn: &(dyn Fn(i32) + Send + Sync),
) -> Result<(), RunOutcome> {
    for (name, path) in scripts {
        let cmd = CommandSpec {
            program: path.clone(),
            args: Vec::new(),
            cwd: ctx.checkout.to_owned(),
            env: deploy_env(ctx),
            visible: Vec::new(),
        };
        log.header(stage.as_str(), name);
        match ctx.run_command(&cmd, log, on_spawn).await {
            Ok(Exit::Code(0)) => {}
            Ok(Exit::TimedOut { .. }) => {
                return Err(RunOutcome::Failed(RunFailure::TimedOut {
                    secs: ctx.timeout.as_secs(),
                }));
            }
            Ok(Exit::Code(c)) => {
                log.header(stage.as_str(), &format!("{name} exited with status {c}"));
                return Err(RunOutcome::Failed(RunFailure::Stage {
                    stage,
                    script: name.clone(),
                    failure: Box::new(RunFailure::Exited {
                        code: c,
                        last_line: log.last_output_line(),
                    }),
                }));
            }
            Ok(Exit::Signal(s)) => {
                log.header(stage.as_str(), &format!("{name} killed by signal {s}"));
                return Err(RunOutcome::Failed(RunFailure::Stage {
                    stage,
                    script: name.clone(),
                    failure: Box::new(RunFailure::Killed { signal: s }),
                }));
            }
            Err(e) => {
                let why = format!("could not start {name}: {e}");
                log.header(stage.as_str(), &why);
                return Err(RunOutcome::Error(RunError::CouldNotRun(why)));
            }
        }
    }
    Ok(())
}

/// Runs prepare → before → deploy → after; `on_progress` gets every change.
pub async fn run(
    provider: &dyn Provider,
    ctx: &RunContext<'_>,
    log: &RunLog,
    on_spawn: &(dyn Fn(i32) + Send + Sync),
    on_progress: &(dyn Fn(&Progress) + Send + Sync),
) -> RunOutcome {
    let mut progress = Progress::for_app(ctx.app);
    let step = |stage: Stage, state: StageState, progress: &mut Progress| {
        progress.set(stage, state);
        on_progress(progress);
    };

    step(Stage::Prepare, StageState::Running, &mut progress);
    let resolve = |list: &[deploy_core::ScriptPath], field: &str| {
        list.iter()
            .map(|s| {
                resolve_script(ctx.checkout, s.as_str())
                    .map(|p| (s.as_str().to_owned(), p))
                    .map_err(|e| format!("{field}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let scripts = resolve(&ctx.app.before_deploy, "before_deploy")
        .and_then(|b| resolve(&ctx.app.after_deploy, "after_deploy").map(|a| (b, a)));
    let prepared = match scripts {
        Ok(s) => provider.prepare(ctx, log).await.map(|plan| (s, plan)),
        Err(e) => Err(e),
    };
    let ((before, after), plan) = match prepared {
        Ok(p) => p,
        Err(why) => {
            log.header(provider.name(), &why);
            step(Stage::Prepare, StageState::Failed, &mut progress);
            return RunOutcome::Error(RunError::CouldNotRun(why));
        }
    };
    step(Stage::Prepare, StageState::Done, &mut progress);

    if !before.is_empty() {
        step(Stage::Before, StageState::Running, &mut progress);
        if let Err(outcome) = run_scripts(Stage::Before, &before, ctx, log, on_spawn).await {
            step(Stage::Before, StageState::Failed, &mut progress);
            // Per-run material the provider holds (an SSH directory) goes when it is dropped.
            return outcome;
        }
        step(Stage::Before, StageState::Done, &mut progress);
    }

    step(Stage::Deploy, StageState::Running, &mut progress);
    let result = provider.run(ctx, plan, log, on_spawn).await;
    let outcome = match provider.report(ctx, &result, log) {
        RunOutcome::Failed(_) if matches!(result, RunResult::Exited(Exit::TimedOut { .. })) => {
            RunOutcome::Failed(RunFailure::TimedOut {
                secs: ctx.timeout.as_secs(),
            })
        }
        other => other,
    };
    if outcome != RunOutcome::Success {
        step(Stage::Deploy, StageState::Failed, &mut progress);
        return outcome;
    }
    step(Stage::Deploy, StageState::Done, &mut progress);

    if !after.is_empty() {
        step(Stage::After, StageState::Running, &mut progress);
        if let Err(outcome) = run_scripts(Stage::After, &after, ctx, log, on_spawn).await {
            step(Stage::After, StageState::Failed, &mut progress);
            return outcome;
        }
        step(Stage::After, StageState::Done, &mut progress);
    }
    RunOutcome::Success
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::chat::Tone;

    fn app(extra: serde_json::Value) -> AppConfig {
        let mut v = serde_json::json!({"provider": "shell", "repository": "o/r"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        AppConfig::from_value("a", &v).unwrap()
    }

    #[test]
    fn the_stage_line_shows_each_stage_and_where_it_is() {
        let mut p = Progress::for_app(&app(serde_json::json!({
            "before_deploy": ["script/a"], "after_deploy": ["script/b"]})));
        assert_eq!(p.line(), "prepare → before → deploy → after");
        p.set(Stage::Prepare, StageState::Done);
        p.set(Stage::Before, StageState::Done);
        p.set(Stage::Deploy, StageState::Running);
        assert_eq!(p.line(), "prepare ✓ → before ✓ → *deploy …* → after");
        p.set(Stage::Deploy, StageState::Failed);
        assert_eq!(p.line(), "prepare ✓ → before ✓ → deploy ✗ → after");
        assert_eq!(
            deploy_core::chat::slack::mrkdwn(&chat_running_with_stages(
                &Message::new(Tone::Started).text("x"),
                &p
            )),
            ":rocket: x\nprepare ✓ → before ✓ → deploy ✗ → after"
        );
        let plain = Progress::for_app(&app(serde_json::json!({})));
        assert_eq!(plain.line(), "prepare → deploy");
        assert_eq!(plain.state(Stage::After), None);
    }

    #[test]
    fn stage_failures_name_the_stage_and_script() {
        let stage_failed = |stage, script: &str, detail: &str| {
            crate::messages::run_failure(&RunFailure::Stage {
                stage,
                script: script.to_owned(),
                failure: Box::new(RunFailure::Exited {
                    code: 1,
                    last_line: Some(detail.to_owned()),
                }),
            })
        };
        assert_eq!(
            stage_failed(Stage::Before, "script/migrate", "db down"),
            "Failed in the before stage: script/migrate: db down"
        );
        assert_eq!(
            crate::messages::run_failure(&RunFailure::Stage {
                stage: Stage::After,
                script: "s".to_owned(),
                failure: Box::new(RunFailure::Killed { signal: 9 }),
            }),
            "Failed in the after stage: s: killed by signal 9"
        );
        assert!(
            stage_failed(Stage::After, "s", &"x".repeat(300))
                .chars()
                .count()
                <= 140
        );
    }

    #[test]
    fn programs_are_found_on_the_given_path_only() {
        let env = vec![("PATH".to_owned(), "/nonexistent:/bin:/usr/bin".to_owned())];
        assert!(find_program("sh", &env).is_some());
        assert!(find_program("no-such-program-here", &env).is_none());
        assert!(find_program("sh", &[]).is_none());
    }
}
