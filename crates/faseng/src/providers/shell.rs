//! The shell provider: runs the app's `deploy_script` (default `script/deploy`) from the
//! checkout, with Heaven's environment variables.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use async_trait::async_trait;

use super::command::provider_env;
use super::{Plan, Provider, RunContext};
use crate::process::CommandSpec;
use crate::runlog::RunLog;

/// Runs a script from the repository.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellProvider;

/// Resolves `script` inside `checkout`: it must stay inside (no symlink escape), be a file,
/// and be executable.
pub fn resolve_script(checkout: &Path, script: &str) -> Result<std::path::PathBuf, String> {
    let root = checkout
        .canonicalize()
        .map_err(|e| format!("checkout not readable: {e}"))?;
    let full = root.join(script);
    let real = full
        .canonicalize()
        .map_err(|_| format!("{script} does not exist in the repository"))?;
    if !real.starts_with(&root) {
        return Err(format!("{script} points outside the repository"));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("{script}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{script} is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{script} is not executable (chmod +x it)"));
    }
    Ok(real)
}

/// The environment a deploy script gets (Heaven-compatible), after the run's own `PATH`,
/// `HOME`, `TMPDIR`, … ([`provider_env`]).
pub fn deploy_env(ctx: &RunContext<'_>) -> Vec<(String, String)> {
    let mut env = provider_env(ctx.run, ctx.isolation);
    env.extend(
        [
            ("DEPLOY_ENV", ctx.env.as_str().to_owned()),
            ("DEPLOY_REF", ctx.git_ref.as_str().to_owned()),
            ("DEPLOY_SHA", ctx.sha.as_str().to_owned()),
            ("DEPLOY_TASK", ctx.task.to_string()),
            ("DEPLOY_APP", ctx.app.name.as_str().to_owned()),
            ("DEPLOY_ID", ctx.deployment_id.to_string()),
            ("DEPLOY_USER", ctx.user.to_owned()),
            ("BRANCH", ctx.git_ref.as_str().to_owned()),
            ("SHA", ctx.sha.as_str().to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

#[async_trait]
impl Provider for ShellProvider {
    fn name(&self) -> &'static str {
        "shell"
    }

    async fn prepare(&self, ctx: &RunContext<'_>, log: &RunLog) -> Result<Plan, String> {
        let script = ctx.app.deploy_script.as_str();
        let program = resolve_script(ctx.checkout, script)?;
        log.header(
            "prepare",
            &format!("{script} for {} on {}", ctx.app.name, ctx.env),
        );
        Ok(Plan {
            commands: vec![CommandSpec {
                program,
                args: Vec::new(),
                cwd: ctx.checkout.to_owned(),
                env: deploy_env(ctx),
                visible: Vec::new(),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_must_stay_inside_and_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("script")).unwrap();
        let ok = root.join("script/deploy");
        std::fs::write(&ok, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(resolve_script(&root, "script/deploy").is_ok());

        std::fs::write(root.join("script/plain"), "x").unwrap();
        assert!(
            resolve_script(&root, "script/plain")
                .unwrap_err()
                .contains("not executable")
        );
        assert!(
            resolve_script(&root, "script/missing")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(
            resolve_script(&root, "script")
                .unwrap_err()
                .contains("not a file")
        );

        let outside = dir.path().join("evil");
        std::fs::write(&outside, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("script/escape")).unwrap();
        assert!(
            resolve_script(&root, "script/escape")
                .unwrap_err()
                .contains("outside")
        );
    }
}
