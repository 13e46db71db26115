//! Real `faseng` and `chima` processes: the one environment list they start from, and a
//! handle on a running process whose output goes to files.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::fake_github::{self, FakeGithub};
use crate::fake_slack::{self, FakeSlack};

/// How long a process gets to become healthy or to exit.
pub const PROCESS_WAIT: Duration = Duration::from_secs(60);

/// The environment of a real process: nothing is inherited but `PATH`.
#[derive(Debug, Clone, Default)]
pub struct ProcessEnv {
    vars: BTreeMap<String, OsString>,
}

impl ProcessEnv {
    /// `PATH` (inherited) and `HOME`.
    pub fn base(home: impl AsRef<OsStr>) -> Self {
        let mut env = Self::default();
        env.set("PATH", std::env::var("PATH").unwrap_or_default())
            .set("HOME", home);
        env
    }

    /// The one list every real faseng of a scenario in `dir` starts from: its queue, the
    /// operator's `apps_json`, work and deploy-config directories under `dir`, one-second
    /// heartbeats, the fake GitHub with `webhook_secret`, and reconciling off (scenarios
    /// deliver webhooks by hand; reconciling has its own, which turn it back on).
    pub fn faseng(
        dir: &Path,
        queue_url: &str,
        apps_json: &Path,
        gh: &FakeGithub,
        webhook_secret: &str,
    ) -> Self {
        let mut env = Self::base(dir);
        env.set("RUST_LOG", "info,apalis=warn,sqlx=warn")
            .set("FASENG_QUEUE_URL", queue_url)
            .set("FASENG_WORKDIR", dir.join("work"))
            .set("FASENG_APPS_JSON", apps_json)
            .set("DEPLOY_CONFIG_DIR", dir.join("deploy-config"))
            .set("FASENG_HEARTBEAT", "1")
            .set("FASENG_SHUTDOWN_TIMEOUT", "30")
            .set("FASENG_RECONCILE_SECS", "0")
            .set("GITHUB_WEBHOOK_SECRET", webhook_secret)
            .set("GITHUB_TOKEN", fake_github::TOKEN)
            .set("GITHUB_API_URL", gh.url());
        env
    }

    /// `chima serve` of a scenario in `dir` on `port` with the operator's `apps_json`,
    /// against the fakes (Slack's signing secret or app token is the caller's to add), with
    /// a store of its own under `dir` (a caller sharing faseng's sets `FASENG_QUEUE_URL`).
    pub fn chima_serve(
        dir: &Path,
        apps_json: &Path,
        port: u16,
        gh: &FakeGithub,
        slack: &FakeSlack,
    ) -> Self {
        let mut env = Self::base(dir);
        env.set("CHIMA_APPS_JSON", apps_json)
            .set(
                "FASENG_QUEUE_URL",
                format!("sqlite://{}", dir.join("chima-store.db").display()),
            )
            .set("CHIMA_BIND", format!("127.0.0.1:{port}"))
            .set("GITHUB_TOKEN", fake_github::TOKEN)
            .set("GITHUB_API_URL", gh.url())
            .slack(slack);
        env
    }

    /// The fake Slack's API and bot token.
    pub fn slack(&mut self, slack: &FakeSlack) -> &mut Self {
        self.set("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN)
            .set("SLACK_API_URL", slack.api_url())
    }

    /// `FASENG_BIND` on loopback `port`, and the public URL that goes with it.
    pub fn bind(&mut self, port: u16) -> &mut Self {
        self.set("FASENG_BIND", format!("127.0.0.1:{port}"))
            .set("FASENG_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
    }

    /// Sets (or replaces) one variable.
    pub fn set(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.vars.insert(key.to_owned(), value.as_ref().to_owned());
        self
    }

    /// Removes one variable.
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.vars.remove(key);
        self
    }

    /// A command for `exe` with exactly this environment, no stdin, killed on drop.
    pub fn command(&self, exe: impl AsRef<OsStr>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.env_clear()
            .envs(&self.vars)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// [`ProcessEnv::command`] as a blocking `std` command (not killed on drop).
    pub fn std_command(&self, exe: impl AsRef<OsStr>) -> std::process::Command {
        let mut cmd = std::process::Command::new(exe);
        cmd.env_clear().envs(&self.vars).stdin(Stdio::null());
        cmd
    }
}

/// A running process whose stdout and stderr go to files (the same file, or two).
pub struct Proc {
    /// The process (`None` once killed or stopped).
    pub child: Option<tokio::process::Child>,
    /// Where its stdout goes.
    pub out: PathBuf,
    /// Where its stderr goes.
    pub err: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr both written to `log`.
    pub fn spawn_logged(mut cmd: tokio::process::Command, log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
        Self {
            child: Some(child),
            out: log.to_owned(),
            err: log.to_owned(),
        }
    }

    /// Spawns `cmd` with stdout and stderr in `dir/<name>.stdout` and `dir/<name>.stderr`.
    pub fn spawn(mut cmd: tokio::process::Command, dir: &Path, name: &str) -> Self {
        let out = dir.join(format!("{name}.stdout"));
        let err = dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
        Self {
            child: Some(child),
            out,
            err,
        }
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        output_of(&self.out, &self.err)
    }

    /// Its pid (panics once it was killed or stopped).
    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("running");
        child.id().expect("running") as i32
    }

    /// Waits until `{url}/healthz` answers 2xx (panics with the output if it exits first).
    pub async fn wait_healthy(&mut self, url: &str) {
        let (out, err) = (self.out.clone(), self.err.clone());
        let http = reqwest::Client::new();
        let child = self.child.as_mut().expect("running");
        crate::net::wait_healthy(&http, url, child, PROCESS_WAIT, move || {
            output_of(&out, &err)
        })
        .await;
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
    }

    /// Waits for the process to exit; its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        match tokio::time::timeout(PROCESS_WAIT, child.wait()).await {
            Ok(status) => status.unwrap().code(),
            Err(_) => panic!("still running after {PROCESS_WAIT:?}\n{}", self.output()),
        }
    }

    /// SIGTERM (a graceful stop); waits for the process to exit and asserts it exited 0.
    pub async fn terminate(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.sigterm();
        let mut child = self.child.take().expect("running");
        let status = tokio::time::timeout(PROCESS_WAIT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("did not stop on SIGTERM\n{}", self.output()))
            .unwrap();
        assert!(status.success(), "{status}\n{}", self.output());
    }

    /// `kill -9`, and waits for it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Every line the process wrote, each parsed as one JSON object with a timestamp and a
    /// level (the test fails on the first that is not).
    pub fn json_lines(&self) -> Vec<Value> {
        let mut files = vec![&self.out];
        if self.err != self.out {
            files.push(&self.err);
        }
        let mut lines = Vec::new();
        for file in files {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("not a JSON line ({e}): {line:?}\n{}", self.output())
                });
                assert!(v.is_object(), "{line}");
                assert!(
                    v["timestamp"].is_string() && v["level"].is_string(),
                    "{line}"
                );
                lines.push(v);
            }
        }
        assert!(!lines.is_empty(), "it wrote nothing");
        lines
    }
}

fn output_of(out: &Path, err: &Path) -> String {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    if out == err {
        read(out)
    } else {
        format!("stdout:\n{}\nstderr:\n{}", read(out), read(err))
    }
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// What a process run to its end with piped input produced.
pub struct Output {
    /// Its exit code.
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Runs `cmd` with `input` on its stdin to its end.
pub async fn run_with_input(mut cmd: tokio::process::Command, input: &str) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
