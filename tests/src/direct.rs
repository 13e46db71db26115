//! Providers run directly, and through faseng.
//!
//! Running one provider directly (no queue): a real checkout of a real git repository with
//! `deploy-config/<app>/` overlaid, the provider's stages run with faseng's own code, and the
//! log read back from a real SQLite store. Also: the same deployment end to end through the
//! webhook, and process checks for timeout scenarios.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fake_slack::Message;
use crate::git_repo::{GitRepo, git_at};
use crate::harness::{Backend, Env, Options, ROOM, WAIT};
use crate::sshd::Sshd;
use deploy_core::{AppConfig, CommitSha, EnvName, GitRef, Secret};
use faseng::checkout::RunDir;
use faseng::providers::stages::{self, Progress};
use faseng::providers::{self, ProviderConfig, ProviderSettings, RunContext, SshKeySource};
use faseng::runlog::{Redactor, RunLog};
use faseng::sandbox::Isolation;
use faseng::store::{SqliteStore, Store};
use serde_json::Value;

pub use crate::deploy_config::{copy_tree, shipped};
pub use crate::wait::{comm, group_members, is_alive, wait_dead, wait_lines};

/// The GitHub API URL for providers that never call GitHub (nothing listens there).
pub const NO_GITHUB: &str = "http://127.0.0.1:9";

/// A repository whose `main` moved on after the commit deployed: `VERSION` is `one` at the
/// first commit and `two` at the second. Returns the repository and both shas.
pub fn two_commits() -> (GitRepo, String, String) {
    let repo = GitRepo::new();
    repo.write("VERSION", "one\n");
    let first = repo.commit("one");
    repo.write("VERSION", "two\n");
    let second = repo.commit("two");
    (repo, first, second)
}

/// Provider settings with the deploy key given as text, and `known_hosts` (`None`: accept
/// new hosts).
pub fn key_config(key: String, known_hosts: Option<String>) -> ProviderConfig {
    ProviderConfig {
        ssh_key: Some(SshKeySource::Text(Secret::new(key))),
        ssh_known_hosts: known_hosts,
        ..ProviderConfig::default()
    }
}

/// A file of the live release under `deploy_to` (`current/<file>`).
pub fn current(deploy_to: &Path, file: &str) -> String {
    std::fs::read_to_string(deploy_to.join("current").join(file)).unwrap()
}

/// Asserts the live release under `deploy_to` is `sha` with `VERSION` saying `version`.
pub fn assert_live(deploy_to: &Path, sha: &str, version: &str) {
    assert_eq!(current(deploy_to, "REVISION").trim(), sha);
    assert_eq!(current(deploy_to, "VERSION"), version);
}

/// The pids a test script appended to `path`, one a line.
pub fn recorded_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// A run's outcome as GitHub states it: the state with faseng's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `success`.
    Success,
    /// `failure`, with its description.
    Failure(String),
    /// `error`, with its description.
    Error(String),
}

impl From<faseng::outcome::RunOutcome> for Outcome {
    fn from(outcome: faseng::outcome::RunOutcome) -> Self {
        use faseng::outcome::RunOutcome;
        match outcome {
            RunOutcome::Success => Outcome::Success,
            RunOutcome::Failed(f) => Outcome::Failure(faseng::messages::run_failure(&f)),
            RunOutcome::Error(e) => Outcome::Error(faseng::messages::run_error(&e)),
        }
    }
}

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

impl Ran {
    /// The failure's text; panics, showing the log, on any other outcome.
    pub fn failure(&self) -> &str {
        match &self.outcome {
            Outcome::Failure(why) => why,
            other => panic!("expected a failure, got {other:?}\n{}", self.log),
        }
    }

    /// The error's text; panics, showing the log, on any other outcome.
    pub fn error(&self) -> &str {
        match &self.outcome {
            Outcome::Error(why) => why,
            other => panic!("expected an error, got {other:?}\n{}", self.log),
        }
    }

    /// Asserts the run is a failure whose text contains `needle`.
    pub fn assert_failure(&self, needle: &str) {
        let why = self.failure();
        assert!(
            why.contains(needle),
            "{needle:?} missing from {why:?}\n{}",
            self.log
        );
    }

    /// Asserts the run is an error whose text contains `needle`.
    pub fn assert_error(&self, needle: &str) {
        let why = self.error();
        assert!(
            why.contains(needle),
            "{needle:?} missing from {why:?}\n{}",
            self.log
        );
    }

    /// Asserts the run succeeded, showing the log if not.
    pub fn assert_success(&self) {
        assert_eq!(self.outcome, Outcome::Success, "{}", self.log);
    }

    /// Asserts the run is the failure faseng reports for a run timed out after `secs` s.
    pub fn assert_timed_out(&self, secs: u64) {
        assert_eq!(
            self.outcome,
            Outcome::Failure(format!("Timed out after {secs} s")),
            "{}",
            self.log
        );
    }

    /// Asserts the log contains every one of `needles`.
    pub fn assert_logged(&self, needles: &[&str]) {
        for needle in needles {
            assert!(
                self.log.contains(needle),
                "{needle:?} missing:\n{}",
                self.log
            );
        }
    }

    /// The last stage line reported.
    pub fn last_progress(&self) -> Option<&str> {
        self.progress.last().map(String::as_str)
    }

    /// Asserts that the `count` pids a test script recorded in `pids_file` and every process
    /// group the run started are gone (within 5 s).
    pub async fn assert_nothing_left_running(&self, pids_file: &Path, count: usize) {
        let recorded = recorded_pids(pids_file);
        assert_eq!(recorded.len(), count, "{recorded:?}");
        let survivors = wait_dead(&recorded, Duration::from_secs(5)).await;
        assert!(survivors.is_empty(), "left running: {survivors:?}");
        for pg in &self.pgids {
            assert!(
                group_members(*pg).is_empty(),
                "group {pg}: {:?}",
                group_members(*pg)
            );
        }
    }
}

/// What one direct run deploys where: the arguments of [`Direct::run`] (the ref is always
/// `main`). Copy it with `Job { task: …, ..job }` for a variation.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    /// The app config (`.deploy.json` / hubot-deploy `apps.json` entry).
    pub app: &'a Value,
    /// The environment.
    pub env: &'a str,
    /// The deployment task.
    pub task: &'a str,
    /// The commit deployed (checked out at `checkout`).
    pub sha: &'a str,
    /// The checkout to run in.
    pub checkout: &'a Path,
    /// faseng's provider settings.
    pub settings: &'a Arc<ProviderSettings>,
    /// The run timeout.
    pub timeout: Duration,
    /// The token for the app's GitHub (tarball links), if the run has one.
    pub github_token: Option<&'a Secret>,
}

impl<'a> Job<'a> {
    /// `deploy` of `sha` to edge.
    pub fn deploy(
        app: &'a Value,
        sha: &'a str,
        checkout: &'a Path,
        settings: &'a Arc<ProviderSettings>,
        timeout: Duration,
    ) -> Self {
        Self {
            app,
            env: "edge",
            task: "deploy",
            sha,
            checkout,
            settings,
            timeout,
            github_token: None,
        }
    }
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
    pub fn settings(&self, config: ProviderConfig, github_api: &str) -> Arc<ProviderSettings> {
        ProviderSettings::new(config, github_api, self.state.clone())
    }

    /// Provider settings from `config`, with no GitHub API behind them.
    pub fn settings_without_github(&self, config: ProviderConfig) -> Arc<ProviderSettings> {
        self.settings(config, NO_GITHUB)
    }

    /// Checks out `sha` of `repo` and overlays `overlay` (if any), as faseng does.
    pub fn checkout(&self, repo: &GitRepo, sha: &str, overlay: Option<&Path>) -> PathBuf {
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = self.dir.path().join(format!("checkout-{n}"));
        let (source, dest) = (
            repo.path().display().to_string(),
            path.display().to_string(),
        );
        git_at(
            self.dir.path(),
            &["clone", "--quiet", "--no-checkout", &source, &dest],
        );
        git_at(&path, &["checkout", "--quiet", "--detach", sha]);
        if let Some(o) = overlay {
            faseng::checkout::overlay(o, &path).unwrap();
        }
        path
    }

    /// Runs the job's provider through faseng's stage runner.
    pub async fn run(&self, job: Job<'_>) -> Ran {
        let Job {
            app,
            env,
            task,
            sha,
            checkout,
            settings,
            timeout,
            github_token,
        } = job;
        let app = AppConfig::from_value("app", app).expect("valid app config");
        let env = EnvName::parse(env).unwrap();
        let git_ref = GitRef::parse("main").unwrap();
        let sha = CommitSha::parse(sha).unwrap();
        let provider = providers::for_kind(app.provider, settings).expect("provider exists");
        let key = format!(
            "o/r/{}",
            self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let redactor = Redactor::new(settings.config.secrets());
        let (log, writer) = RunLog::start(self.store.clone(), key.clone(), redactor);
        let root = self.dir.path().join(format!(
            "run-{}",
            self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let run = RunDir {
            lease: None,
            checkout: checkout.to_owned(),
            home: root.join("home"),
            tmp: root.join("tmp"),
            root,
        };
        std::fs::create_dir_all(&run.home).unwrap();
        std::fs::create_dir_all(&run.tmp).unwrap();
        let isolation = Isolation::shared("a direct provider test");
        let task: deploy_core::Task = task.parse().expect("a valid task");
        let ctx = RunContext {
            app: &app,
            env: &env,
            git_ref: &git_ref,
            sha: &sha,
            task: &task,
            deployment_id: 4242,
            user: "joyz",
            checkout,
            run: &run,
            isolation: &isolation,
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            github_token,
            lease: None,
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
            outcome: outcome.into(),
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

    /// Asserts no per-run SSH directory was left under the state directory.
    pub fn assert_no_ssh_leftovers(&self) {
        let left = self.leftover_ssh_runs();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// A real sshd, a scratch area and [`two_commits`]: where the fabric and capistrano tests
/// start.
pub struct SshWorld {
    /// The sshd the deploy logs in to.
    pub sshd: Sshd,
    /// The scratch area and store.
    pub d: Direct,
    /// The repository deployed.
    pub repo: GitRepo,
    /// The commit deployed first (`VERSION` one).
    pub first: String,
    /// `main`'s head (`VERSION` two).
    pub second: String,
}

impl SshWorld {
    /// With an sshd on 127.0.0.1; `None` when no sshd can run here (the test is skipped).
    pub async fn start() -> Option<Self> {
        Self::start_on("127.0.0.1").await
    }

    /// With an sshd on `address`; `None` when no sshd can run here.
    pub async fn start_on(address: &str) -> Option<Self> {
        let sshd = Sshd::start_on(address)?;
        let d = Direct::new().await;
        let (repo, first, second) = two_commits();
        Some(Self {
            sshd,
            d,
            repo,
            first,
            second,
        })
    }

    /// A path in the scratch area.
    pub fn path(&self, name: &str) -> PathBuf {
        self.d.dir.path().join(name)
    }

    /// Settings with `key` as the deploy key and `known_hosts` (`None`: accept new hosts).
    pub fn key_settings(&self, key: String, known_hosts: Option<String>) -> Arc<ProviderSettings> {
        self.d.settings_without_github(key_config(key, known_hosts))
    }

    /// Settings the sshd accepts: its client key and its own known-hosts line.
    pub fn good_settings(&self) -> Arc<ProviderSettings> {
        self.key_settings(
            self.sshd.client_key_text(),
            Some(self.sshd.known_hosts_line()),
        )
    }

    /// Checks out `sha` with `overlay` on top.
    pub fn checkout(&self, sha: &str, overlay: &Path) -> PathBuf {
        self.d.checkout(&self.repo, sha, Some(overlay))
    }

    /// Asserts `ran` is a hanging task (it prints `hanging` and records its own pid and its
    /// two children's in `pids_file`) that the `secs` s timeout stopped, leaving no process
    /// and no per-run SSH directory behind.
    pub async fn assert_hang_stopped(&self, ran: &Ran, secs: u64, pids_file: &Path) {
        ran.assert_timed_out(secs);
        ran.assert_logged(&[&format!("timed out after {secs} s"), "hanging"]);
        ran.assert_nothing_left_running(pids_file, 3).await;
        self.d.assert_no_ssh_leftovers();
    }

    /// Checks out `sha` with `overlay` and deploys it to edge with `settings`.
    pub async fn deploy(
        &self,
        app: &Value,
        sha: &str,
        overlay: &Path,
        settings: &Arc<ProviderSettings>,
        timeout: Duration,
    ) -> Ran {
        let checkout = self.checkout(sha, overlay);
        self.d
            .run(Job::deploy(app, sha, &checkout, settings, timeout))
            .await
    }

    /// Checks out `first` with `overlay` and deploys it to edge with `settings`.
    pub async fn deploy_first(
        &self,
        app: &Value,
        overlay: &Path,
        settings: &Arc<ProviderSettings>,
        timeout: Duration,
    ) -> Ran {
        self.run_first(app, "deploy", overlay, settings, timeout)
            .await
    }

    /// Checks out `first` with `overlay` and runs `task` on edge with `settings`.
    pub async fn run_first(
        &self,
        app: &Value,
        task: &str,
        overlay: &Path,
        settings: &Arc<ProviderSettings>,
        timeout: Duration,
    ) -> Ran {
        let checkout = self.checkout(&self.first, overlay);
        let job = Job::deploy(app, &self.first, &checkout, settings, timeout);
        self.d.run(Job { task, ..job }).await
    }
}

/// A real sshd and faseng with the deploy key it accepts and its known-hosts line, its app
/// deployed by `provider`; `None` when either cannot start here (the test is skipped).
pub async fn env_with_sshd(provider: &str) -> Option<(Sshd, Env)> {
    let sshd = Sshd::start()?;
    let providers = key_config(sshd.client_key_text(), Some(sshd.known_hosts_line()));
    let env = env_with_providers(providers, serde_json::json!({"provider": provider})).await?;
    Some((sshd, env))
}

/// faseng with a worker on a SQLite queue and these provider settings, `app` merged into
/// the operator's app entry; `None` when the harness cannot start (the test is skipped).
pub async fn env_with_providers(providers: ProviderConfig, app: Value) -> Option<Env> {
    let opts = Options {
        providers,
        app,
        ..Options::default()
    };
    Env::start(Backend::Sqlite, opts).await
}

/// A deployment made on the fake GitHub, carried by its webhook through faseng's queue and
/// worker to a final status.
pub struct Webhooked<'a> {
    env: &'a Env,
    /// The deployment's id.
    pub id: u64,
    /// Its chat message's `ts`.
    pub ts: String,
    /// The final status.
    pub done: Value,
}

/// Creates a `deploy` to edge for joyz, waits for the final status and asserts it is
/// `state`, posted after queued and in_progress.
pub async fn deploy_through_webhook<'a>(env: &'a Env, state: &str) -> Webhooked<'a> {
    let (id, ts) = env.deploy("edge", "deploy", "joyz").await;
    let done = env.wait_final(id).await;
    assert_eq!(done["state"], state, "{done}");
    assert_eq!(env.states(id), ["queued", "in_progress", state]);
    Webhooked { env, id, ts, done }
}

impl Webhooked<'_> {
    /// Waits until the chat message says `text`; returns it.
    pub async fn chat_says(&self, text: &str) -> Message {
        self.env
            .slack
            .wait_for_text(ROOM, &self.ts, text, WAIT)
            .await
    }

    /// Waits until the chat message says `text`, and asserts `line` was shown on the way.
    pub async fn chat_showed(&self, text: &str, line: &str) {
        let msg = self.chat_says(text).await;
        assert!(
            msg.history.iter().any(|h| h.contains(line)),
            "{line:?} never shown: {:?}",
            msg.history
        );
    }

    /// The run log faseng serves at the in_progress status's `log_url`.
    pub async fn log(&self) -> String {
        let log_url = self.env.gh.statuses(self.id)[1]["log_url"]
            .as_str()
            .unwrap()
            .to_owned();
        self.env.get(&format!("{log_url}/log")).await.1
    }
}
