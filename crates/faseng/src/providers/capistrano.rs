//! The capistrano provider: Capistrano 3, `cap <env> <task>` in the checkout with
//! `BRANCH=<ref>` and `REVISION=<sha>` in the environment (argv only). The task must match
//! `deploy(:[a-z_]+)*`; anything else is refused before cap starts.
//!
//! net-ssh reads `~/.ssh/config`, so cap runs with `HOME` set to the run's private SSH
//! directory, whose `.ssh/config` names the deploy key and the known hosts with
//! `StrictHostKeyChecking` set explicitly (without it net-ssh skips host-key checks for
//! 127.0.0.1 on a port other than 22). The project's deploy.rb names neither.

use std::ffi::OsString;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deploy_core::Task;

use super::settings::ProviderSettings;
use super::shell::deploy_env;
use super::ssh::SshRun;
use super::stages::{find_program, ssh_aware_report};
use super::{Plan, Provider, RunContext, RunResult};
use crate::outcome::RunOutcome;
use crate::process::CommandSpec;
use crate::runlog::RunLog;

/// Runs a Capistrano task.
#[derive(Debug)]
pub struct CapistranoProvider {
    settings: Arc<ProviderSettings>,
    ssh: Mutex<Option<SshRun>>,
}

impl CapistranoProvider {
    /// A capistrano provider for one run.
    pub fn new(settings: Arc<ProviderSettings>) -> Self {
        Self {
            settings,
            ssh: Mutex::new(None),
        }
    }
}

/// True when `task` reads `deploy(:[a-z_]+)*`.
pub fn valid_task(task: &Task) -> bool {
    match task {
        Task::Deploy | Task::Lock | Task::Unlock => true,
        Task::DeployWith(word) => word
            .as_str()
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == ':'),
        Task::Other(_) => false,
    }
}

/// Ruby loaded before cap (through `RUBYOPT`): unbuffered output, so the log is live and
/// nothing is lost when a timeout kills the process group; and, in cap itself, no repeat of
/// the last 20 lines of `log/capistrano.log` after a failure (Capistrano's formatter does
/// that; every line is in faseng's log already, and the repeat buries the error itself).
const CAP_RUBYOPT_RB: &str = r#"$stdout.sync = true
$stderr.sync = true
if File.basename($PROGRAM_NAME) == "cap"
  begin
    require "airbrussh/capistrano/tasks"
    class Airbrussh::Capistrano::Tasks
      def deploy_failed; end
    end
  rescue LoadError
  end
end
"#;

#[async_trait]
impl Provider for CapistranoProvider {
    fn name(&self) -> &'static str {
        "capistrano"
    }

    async fn prepare(&self, ctx: &RunContext<'_>, log: &RunLog) -> Result<Plan, String> {
        if !valid_task(ctx.task) {
            return Err(format!(
                "task {:?} is not a Capistrano deploy task (deploy or deploy:<name>, lower-case)",
                ctx.task.to_string()
            ));
        }
        if !["Capfile", "capfile", "Capfile.rb", "capfile.rb"]
            .iter()
            .any(|f| ctx.checkout.join(f).is_file())
        {
            return Err(format!(
                "no Capfile in the repository or in deploy-config/{}/",
                ctx.app.name
            ));
        }
        let stage_file = format!("config/deploy/{}.rb", ctx.env);
        if !ctx.checkout.join(&stage_file).is_file() {
            return Err(format!(
                "{stage_file} is missing: Capistrano has no stage {}",
                ctx.env
            ));
        }
        let mut env = deploy_env(ctx);
        find_program("cap", &env).ok_or_else(|| {
            "cap is not installed on this deployer (apt-get install capistrano)".to_owned()
        })?;
        let ssh = SshRun::create(&self.settings, ctx.isolation, log).await?;
        let sync = ssh.home().join("faseng_cap.rb");
        std::fs::write(&sync, CAP_RUBYOPT_RB)
            .map_err(|e| format!("cannot write {}: {e}", sync.display()))?;
        env.retain(|(k, _)| k != "HOME");
        env.extend(ssh.env());
        env.extend([
            ("HOME".to_owned(), ssh.home().display().to_string()),
            ("REVISION".to_owned(), ctx.sha.as_str().to_owned()),
            ("RUBYOPT".to_owned(), format!("-r{}", sync.display())),
        ]);
        log.header(
            "prepare",
            &format!(
                "cap {} {} for {} (REVISION={}, BRANCH={})",
                ctx.env,
                ctx.task,
                ctx.app.name,
                ctx.sha.short(),
                ctx.git_ref
            ),
        );
        let visible = vec![ssh.dir().to_owned()];
        *self.ssh.lock().expect("ssh lock") = Some(ssh);
        Ok(Plan {
            commands: vec![CommandSpec {
                program: "cap".into(),
                args: vec![
                    OsString::from(ctx.env.as_str()),
                    OsString::from(ctx.task.to_string()),
                ],
                cwd: ctx.checkout.to_owned(),
                env,
                visible,
            }],
        })
    }

    fn report(&self, _ctx: &RunContext<'_>, result: &RunResult, log: &RunLog) -> RunOutcome {
        if let Some(mut ssh) = self.ssh.lock().expect("ssh lock").take() {
            ssh.remove();
        }
        ssh_aware_report(self.name(), result, log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deploy_tasks_are_accepted() {
        let valid_task = |s: &str| s.parse::<Task>().is_ok_and(|t| valid_task(&t));
        for ok in [
            "deploy",
            "deploy:migrate",
            "deploy:db:seed",
            "deploy:clean_up",
        ] {
            assert!(valid_task(ok), "{ok}");
        }
        for bad in [
            "",
            "deploy:",
            "deploy::x",
            "deployx",
            "deploy:Migrate",
            "deploy:m-x",
            "rollback",
            "deploy:x y",
            "deploy;ls",
            "-T",
            "deploy:1",
        ] {
            assert!(!valid_task(bad), "{bad}");
        }
    }
}
