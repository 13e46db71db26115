//! The one place a scenario's world is built: the fake GitHub, Slack (and Heroku), a real git
//! repository whose `script/deploy` the scenario writes, a scratch directory, a queue
//! backend, and on top of them faseng (in process: [`crate::harness`]; as real processes:
//! [`World::faseng_env`] and [`Procs`]) and chima ([`World::chima_serve`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::backend::{Backend, Queue};
use crate::fake_github::FakeGithub;
use crate::fake_heroku::FakeHeroku;
use crate::fake_slack::FakeSlack;
use crate::git_repo::GitRepo;
use crate::procs::{PROCESS_WAIT, Proc, ProcessEnv};

/// The webhook secret every scenario uses.
pub const SECRET: &str = "It's a Secret to Everybody";
/// The repository deployed.
pub const REPO: &str = "oursky/trelhub";
/// The chat channel of the seeded message.
pub const ROOM: &str = "C024BE91L";
/// The chat user id of joyz, who asks for most deploys.
pub const JOYZ: &str = "U2147483697";

/// Fakes, a repository, a scratch directory and a queue backend.
pub struct World {
    /// Real faseng processes started on this world (first, so they are killed first).
    pub procs: Procs,
    /// The fake GitHub, with [`REPO`] whose `main` is [`World::sha`].
    pub gh: FakeGithub,
    /// The fake Slack.
    pub slack: FakeSlack,
    /// The fake Heroku Platform API, when asked for ([`WorldBuilder::heroku`]).
    pub heroku: Option<FakeHeroku>,
    /// The repository deployed.
    pub repo: GitRepo,
    /// Its one commit.
    pub sha: String,
    /// The scenario's directory (`scratch/` in it is writable by every user).
    pub dir: tempfile::TempDir,
    /// The queue backend.
    pub queue: Queue,
    /// A client for what they serve.
    pub http: reqwest::Client,
}

/// What [`World::build`] makes.
#[derive(Debug, Clone)]
pub struct WorldBuilder {
    backend: Backend,
    script: String,
    shell_app: bool,
    heroku: bool,
}

impl World {
    /// A world on `backend` whose deploy script echoes its environment.
    pub fn build(backend: Backend) -> WorldBuilder {
        WorldBuilder {
            backend,
            script: "env | sort\necho deployed $DEPLOY_ENV".into(),
            shell_app: false,
            heroku: false,
        }
    }

    /// A file in the scratch directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        scratch(self.dir.path(), name)
    }

    /// The operator's app.json in the scenario directory (see [`WorldBuilder::shell_app`]).
    pub fn apps_json(&self) -> PathBuf {
        self.dir.path().join("app.json")
    }

    /// Writes `apps` as the operator's app.json in the scenario directory; its path.
    pub fn write_apps(&self, apps: &Value) -> PathBuf {
        let path = self.dir.path().join("app.json");
        std::fs::write(&path, apps.to_string()).unwrap();
        path
    }

    /// The environment of a real faseng against this world (see [`ProcessEnv::faseng`]),
    /// with the fake Slack and the operator's app.json at `apps_json`.
    pub fn faseng_env(&self, apps_json: &Path) -> ProcessEnv {
        let mut env = ProcessEnv::faseng(
            self.dir.path(),
            &self.queue.url,
            apps_json,
            &self.gh,
            SECRET,
        );
        env.slack(&self.slack);
        env
    }

    /// Starts `chima serve` against this world's fakes on a free port, verifying Slack's
    /// requests with `signing_secret`; waits until it is healthy and returns it with its URL.
    pub async fn chima_serve(&self, apps_json: &Path, signing_secret: &str) -> (Proc, String) {
        let port = crate::net::free_port("127.0.0.1");
        let mut env =
            ProcessEnv::chima_serve(self.dir.path(), apps_json, port, &self.gh, &self.slack);
        env.set("SLACK_SIGNING_SECRET", signing_secret)
            .set("FASENG_QUEUE_URL", &self.queue.url);
        let mut cmd = env.command(crate::bins::binary("chima"));
        cmd.arg("serve");
        let mut proc = Proc::spawn_logged(cmd, &self.dir.path().join("chima.log"));
        let url = format!("http://127.0.0.1:{port}");
        proc.wait_healthy(&url).await;
        (proc, url)
    }

    /// The body chima would send to create a `task` deployment of `main` to `env` for joyz,
    /// with a seeded chat message (its `ts` is the second value) and `config` in its payload
    /// (when not null).
    pub fn deployment_body(&self, env: &str, task: &str, config: &Value) -> (Value, String) {
        let ts = self.slack.post_as_bot(ROOM, "joyz asked for a deploy");
        let mut payload = json!({"name": "trelhub", "robotName": "chima", "hosts": "",
            "notify": {"adapter": "slack", "room": ROOM, "room_name": "deployment",
                       "user": JOYZ, "user_name": "joyz", "message_ts": ts}});
        if !config.is_null() {
            payload["config"] = config.clone();
        }
        let body = json!({"ref": "main", "environment": env, "task": task, "auto_merge": false,
                          "required_contexts": [], "payload": payload});
        (body, ts)
    }

    /// The states posted for a deployment, in order.
    pub fn states(&self, id: u64) -> Vec<String> {
        states(&self.gh, id)
    }

    /// How many final statuses (success, failure or error) deployment `id` has.
    pub fn final_count(&self, id: u64) -> usize {
        self.states(id)
            .iter()
            .filter(|s| matches!(s.as_str(), "success" | "failure" | "error"))
            .count()
    }

    /// Waits for a final status (success, failure or error) of deployment `id` and returns
    /// it; on a timeout the panic shows `context()` (e.g. the processes' logs).
    pub async fn wait_final_or(
        &self,
        id: u64,
        timeout: Duration,
        context: impl Fn() -> String,
    ) -> Value {
        wait_final(&self.gh, id, timeout, context).await
    }

    /// The deployment ids the deploy script recorded in `$SCRATCH/<file>`, one line a run.
    pub fn recorded_ids(&self, file: &str) -> Vec<u64> {
        std::fs::read_to_string(self.scratch(file))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().expect("a deployment id"))
            .collect()
    }
}

impl WorldBuilder {
    /// The body of `script/deploy` (`#!/bin/sh` is prepended; `$SCRATCH` names the scratch
    /// directory).
    pub fn script(mut self, script: &str) -> Self {
        self.script = script.to_owned();
        self
    }

    /// Writes the operator's app.json of the process scenarios at [`World::apps_json`]:
    /// trelhub, a shell app of [`REPO`] with edge, staging and production.
    pub fn shell_app(mut self) -> Self {
        self.shell_app = true;
        self
    }

    /// Starts a fake Heroku too.
    pub fn heroku(mut self) -> Self {
        self.heroku = true;
        self
    }

    /// Starts everything; `None` (with a printed reason) when Redis is wanted but absent.
    pub async fn start(self) -> Option<World> {
        let dir = crate::dirs::scenario_dir();
        let queue = Queue::start(self.backend, dir.path())?;
        crate::dirs::open_scratch(&dir.path().join("scratch"));
        let script = self.script.replace(
            "$SCRATCH",
            &dir.path().join("scratch").display().to_string(),
        );
        let (repo, sha) = GitRepo::with_deploy_script(&script);
        let gh = FakeGithub::start().await;
        gh.add_repo(REPO, "main");
        gh.set_branch(REPO, "main", &sha);
        gh.set_clone_url(REPO, &repo.url());
        let slack = FakeSlack::start().await;
        let heroku = match self.heroku {
            true => Some(FakeHeroku::start().await),
            false => None,
        };
        let world = World {
            gh,
            slack,
            heroku,
            repo,
            sha,
            procs: Procs::new(dir.path(), "faseng"),
            dir,
            queue,
            http: reqwest::Client::new(),
        };
        if self.shell_app {
            let apps = json!({"trelhub": {"provider": "shell", "repository": REPO,
                                          "environments": ["edge", "staging", "production"]}});
            world.write_apps(&apps);
        }
        Some(world)
    }
}

/// A file in the scratch directory of the scenario in `dir`.
pub fn scratch(dir: &Path, name: &str) -> PathBuf {
    dir.join("scratch").join(name)
}

/// The states posted for deployment `id`, in order.
pub fn states(gh: &FakeGithub, id: u64) -> Vec<String> {
    gh.statuses(id)
        .iter()
        .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits (on the fake's events) for a final status (success, failure or error) of deployment
/// `id` and returns it; on a timeout the panic shows the states posted and `context()`.
pub async fn wait_final(
    gh: &FakeGithub,
    id: u64,
    timeout: Duration,
    context: impl Fn() -> String,
) -> Value {
    let found = tokio::time::timeout(
        timeout,
        gh.wait_until(timeout, &format!("a final status for {id}"), |gh| {
            gh.statuses(id)
                .into_iter()
                .find(|s| matches!(s["state"].as_str(), Some("success" | "failure" | "error")))
        }),
    )
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no final status for #{id} (statuses {:?})\n{}",
            states(gh, id),
            context()
        )
    })
}

/// Real faseng processes of one scenario, each logging into `<dir>/<prefix>-<n>.log`.
pub struct Procs {
    dir: PathBuf,
    prefix: String,
    procs: Vec<Proc>,
}

impl Procs {
    /// No process yet; logs go to `dir`.
    pub fn new(dir: &Path, prefix: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            prefix: prefix.to_owned(),
            procs: Vec::new(),
        }
    }

    /// How many were started.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// True when none was started.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{}-{n}.log", self.prefix))
    }

    /// Spawns `cmd`, logging into [`Procs::next_log`]; its number.
    pub fn spawn(&mut self, cmd: tokio::process::Command) -> usize {
        let proc = Proc::spawn_logged(cmd, &self.log_path(self.procs.len()));
        self.procs.push(proc);
        self.procs.len() - 1
    }

    /// Spawns `cmd` and waits until `{url}/healthz` answers; its number.
    pub async fn spawn_healthy(&mut self, cmd: tokio::process::Command, url: &str) -> usize {
        let n = self.spawn(cmd);
        let http = reqwest::Client::new();
        let child = self.procs[n].child.as_mut().expect("running");
        let (dir, prefix) = (self.dir.clone(), self.prefix.clone());
        crate::net::wait_healthy(&http, url, child, PROCESS_WAIT, move || {
            all_logs(&dir, &prefix)
        })
        .await;
        n
    }

    /// Process `n`, to signal or wait for.
    pub fn get_mut(&mut self, n: usize) -> &mut Proc {
        &mut self.procs[n]
    }

    /// `kill -9` of process `n`.
    pub async fn kill(&mut self, n: usize) {
        self.procs[n].kill().await;
    }

    /// SIGTERM to process `n`; waits for it to exit 0.
    pub async fn terminate(&mut self, n: usize) {
        self.procs[n].terminate().await;
    }

    /// Process `n`'s log so far.
    pub fn log(&self, n: usize) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        all_logs(&self.dir, &self.prefix)
    }

    /// Waits until process `n`'s log contains `needle`. Polls: the log is a file the process
    /// writes, with nothing to wait on.
    pub async fn wait_log(&self, n: usize, needle: &str, timeout: Duration) {
        let path = self.log_path(n);
        crate::wait::poll(
            &format!("{}-{n} to log {needle:?}", self.prefix),
            timeout,
            || {
                std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .contains(needle)
                    .then_some(())
            },
            || self.logs(),
        )
        .await;
    }
}

fn all_logs(dir: &Path, prefix: &str) -> String {
    let mut out = String::new();
    for n in 0.. {
        let Ok(log) = std::fs::read_to_string(dir.join(format!("{prefix}-{n}.log"))) else {
            break;
        };
        out.push_str(&format!("--- {prefix}-{n}.log ---\n{log}"));
    }
    out
}

/// Lets a scenario's own world type (a struct with a `world: World` field) be used as the
/// [`World`] it wraps: `w.gh`, `w.procs.kill(n)`, `w.states(id)`.
#[macro_export]
macro_rules! wraps_world {
    ($wrapper:ty) => {
        impl ::std::ops::Deref for $wrapper {
            type Target = $crate::world::World;

            fn deref(&self) -> &$crate::world::World {
                &self.world
            }
        }

        impl ::std::ops::DerefMut for $wrapper {
            fn deref_mut(&mut self) -> &mut $crate::world::World {
                &mut self.world
            }
        }
    };
}
