//! Running one provider directly (no queue): a real checkout of a real git repository with
//! `deploy-config/<app>/` overlaid, the provider's stages run with faseng's own code, and the
//! log read back from a real SQLite store. Also: process checks for timeout scenarios.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_core::{AppConfig, CommitSha, EnvName, GitRef};
use e2e::git_repo::GitRepo;
use faseng::providers::stages::{self, Progress};
use faseng::providers::{self, Outcome, ProviderConfig, ProviderSettings, RunContext};
use faseng::runlog::{Redactor, RunLog};
use faseng::store::{SqliteStore, Store};
use serde_json::Value;

#[allow(unused_imports)] // not every provider test copies deploy-config
pub use e2e::deploy_config::{copy_tree, shipped};

/// What a direct run produced.
pub struct Ran {
    /// The outcome.
    pub outcome: Outcome,
    /// The log as stored (timestamped lines joined by newlines).
    pub log: String,
    /// Every stage line reported, in order.
    pub progress: Vec<String>,
    /// Process groups started.
    pub pgids: Vec<i32>,
}

/// One deploy target for direct runs.
pub struct Direct {
    /// Scratch directory (checkouts, store, state).
    pub dir: tempfile::TempDir,
    /// faseng's work directory for provider state.
    pub state: PathBuf,
    store: Arc<dyn Store>,
    runs: std::sync::atomic::AtomicU32,
}

impl Direct {
    /// A fresh scratch area with a SQLite store.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("logs.db"), "q")
                .await
                .unwrap(),
        );
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        Self {
            state,
            dir,
            store,
            runs: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Provider settings over this scratch area.
    pub fn settings(
        &self,
        config: ProviderConfig,
        github_api: &str,
        token: Option<&str>,
    ) -> Arc<ProviderSettings> {
        ProviderSettings::new(
            config,
            github_api,
            token.map(deploy_core::Secret::new),
            self.state.clone(),
        )
    }

    /// Checks out `sha` of `repo` and overlays `overlay` (if any), as faseng does.
    pub fn checkout(&self, repo: &GitRepo, sha: &str, overlay: Option<&Path>) -> PathBuf {
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = self.dir.path().join(format!("checkout-{n}"));
        let out = std::process::Command::new("git")
            .args(["clone", "--quiet", "--no-checkout"])
            .arg(repo.path())
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&path)
            .args(["checkout", "--quiet", "--detach", sha])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(o) = overlay {
            faseng::checkout::overlay(o, &path).unwrap();
        }
        path
    }

    /// Runs the app's provider through faseng's stage runner.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        app: &Value,
        env: &str,
        task: &str,
        git_ref: &str,
        sha: &str,
        checkout: &Path,
        settings: &Arc<ProviderSettings>,
        timeout: Duration,
        secrets: Vec<String>,
    ) -> Ran {
        let app = AppConfig::from_value("app", app).expect("valid app config");
        let env = EnvName::parse(env).unwrap();
        let git_ref = GitRef::parse(git_ref).unwrap();
        let sha = CommitSha::parse(sha).unwrap();
        let provider = providers::for_kind(app.provider, settings).expect("provider exists");
        let key = format!(
            "o/r/{}",
            self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let redactor = Redactor::new(secrets.into_iter().chain(settings.config.secrets()));
        let (log, writer) = RunLog::start(self.store.clone(), key.clone(), redactor);
        let ctx = RunContext {
            app: &app,
            env: &env,
            git_ref: &git_ref,
            sha: &sha,
            task,
            deployment_id: 4242,
            user: "joyz",
            checkout,
            timeout,
        };
        let pgids = Arc::new(Mutex::new(Vec::new()));
        let progress = Arc::new(Mutex::new(Vec::new()));
        let on_spawn = {
            let pgids = pgids.clone();
            move |pg: i32| pgids.lock().unwrap().push(pg)
        };
        let on_progress = {
            let progress = progress.clone();
            move |p: &Progress| progress.lock().unwrap().push(p.line())
        };
        let outcome = stages::run(provider.as_ref(), &ctx, &log, &on_spawn, &on_progress).await;
        drop(provider);
        writer.finish(log).await;
        let log = self.store.read_log(&key, 0).await.unwrap().join("\n");
        let progress = progress.lock().unwrap().clone();
        let pgids = pgids.lock().unwrap().clone();
        Ran {
            outcome,
            log,
            progress,
            pgids,
        }
    }

    /// The per-run SSH directories left under the state directory (should be none).
    pub fn leftover_ssh_runs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state.join("ssh"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("run-"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// True when a process exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The command name of a process (`/proc/<pid>/comm`), if it exists.
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Live processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // state ppid pgrp …
        if rest.len() > 2 && rest[0] != "Z" && rest[2].parse::<i32>().ok() == Some(pgid) {
            out.push((pid, comm(pid).unwrap_or_default()));
        }
    }
    out
}

/// Waits (polling, bounded) until none of `pids` is alive; returns the survivors.
pub async fn wait_dead(pids: &[i32], timeout: Duration) -> Vec<(i32, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let alive: Vec<(i32, String)> = pids
            .iter()
            .filter(|p| is_alive(**p))
            .map(|p| (*p, comm(*p).unwrap_or_default()))
            .collect();
        if alive.is_empty() || tokio::time::Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (polling, bounded) until a file exists with at least `lines` lines; returns them.
pub async fn wait_lines(path: &Path, lines: usize, timeout: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got: Vec<String> = std::fs::read_to_string(path)
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        if got.len() >= lines {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {lines} line(s) in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
