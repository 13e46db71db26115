//! The fabric provider: Fabric 2+/3, `fab -S <ssh config> [-i <key>] <task> --environment
//! <env> --ref <ref> --sha <sha>` in the checkout (argv only). A deployment task
//! `deploy:<x>` is the Fabric task `deploy.<x>`; app.json `fabric_task` overrides it.

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

/// Runs a Fabric task.
#[derive(Debug)]
pub struct FabricProvider {
    settings: Arc<ProviderSettings>,
    ssh: Mutex<Option<SshRun>>,
}

impl FabricProvider {
    /// A fabric provider for one run.
    pub fn new(settings: Arc<ProviderSettings>) -> Self {
        Self {
            settings,
            ssh: Mutex::new(None),
        }
    }
}

/// True for a Fabric task name: dot-separated identifiers (`deploy`, `deploy.migrate`,
/// `db.load-fixtures`).
pub fn valid_task(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// The Fabric task for a run: app.json `fabric_task`, else the deployment task with `:`
/// turned into Fabric's namespace separator `.`.
pub fn task_for(fabric_task: Option<&str>, deployment_task: &Task) -> Result<String, String> {
    let (name, origin) = match fabric_task {
        Some(t) => (t.trim().to_owned(), "app.json fabric_task"),
        None => (
            deployment_task.to_string().replace(':', "."),
            "deployment task",
        ),
    };
    if valid_task(&name) {
        Ok(name)
    } else {
        Err(format!(
            "{origin} {name:?} is not a Fabric task name (letters, digits, '_', '-', namespaces separated by '.')"
        ))
    }
}

#[async_trait]
impl Provider for FabricProvider {
    fn name(&self) -> &'static str {
        "fabric"
    }

    async fn prepare(&self, ctx: &RunContext<'_>, log: &RunLog) -> Result<Plan, String> {
        let task = task_for(ctx.app.fabric_task.as_deref(), ctx.task)?;
        if !ctx.checkout.join("fabfile.py").is_file()
            && !ctx.checkout.join("fabfile/__init__.py").is_file()
        {
            return Err(format!(
                "no fabfile.py in the repository or in deploy-config/{}/",
                ctx.app.name
            ));
        }
        let mut env = deploy_env(ctx);
        find_program("fab", &env).ok_or_else(|| {
            "fab is not installed on this deployer (apt-get install fabric, or pip install fabric)"
                .to_owned()
        })?;
        let ssh = SshRun::create(&self.settings, ctx.isolation, log).await?;
        env.extend(ssh.env());
        env.push(("PYTHONUNBUFFERED".into(), "1".into()));
        env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        let mut args: Vec<OsString> = vec!["-S".into(), ssh.config_file().into()];
        if let Some(key) = ssh.key_file() {
            args.push("-i".into());
            args.push(key.into());
        }
        args.extend(
            [
                task.as_str(),
                "--environment",
                ctx.env.as_str(),
                "--ref",
                ctx.git_ref.as_str(),
                "--sha",
                ctx.sha.as_str(),
            ]
            .map(OsString::from),
        );
        log.header(
            "prepare",
            &format!("Fabric task {task} for {} on {}", ctx.app.name, ctx.env),
        );
        let visible = vec![ssh.dir().to_owned()];
        *self.ssh.lock().expect("ssh lock") = Some(ssh);
        Ok(Plan {
            commands: vec![CommandSpec {
                program: "fab".into(),
                args,
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

    fn t(s: &str) -> Task {
        s.parse().unwrap()
    }

    #[test]
    fn tasks_map_to_fabric_names_and_bad_names_are_refused() {
        assert_eq!(task_for(None, &t("deploy")).unwrap(), "deploy");
        assert_eq!(
            task_for(None, &t("deploy:migrate")).unwrap(),
            "deploy.migrate"
        );
        assert_eq!(
            task_for(Some("ship"), &t("deploy:migrate")).unwrap(),
            "ship"
        );
        assert_eq!(
            task_for(Some("db.load-fixtures"), &t("deploy")).unwrap(),
            "db.load-fixtures"
        );
        for bad in ["", "-x", "deploy;rm", "deploy --help", "a..b", "deploy:"] {
            assert!(task_for(Some(bad), &t("deploy")).is_err(), "{bad:?}");
        }
        assert!(task_for(None, &t("deploy:--list")).is_err());
        assert!(
            task_for(Some("x y"), &t("deploy"))
                .unwrap_err()
                .contains("app.json fabric_task")
        );
    }
}
