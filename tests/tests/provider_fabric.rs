//! The fabric provider for real: Fabric (`fab`) runs the shipped example fabfile against a
//! real sshd on 127.0.0.1, authenticating with the deploy key faseng hands it.

#[path = "faseng_harness/mod.rs"]
mod harness;
mod provider_support;

use std::path::Path;
use std::time::Duration;

use deploy_core::Secret;
use e2e::git_repo::GitRepo;
use e2e::sshd::Sshd;
use faseng::providers::{Outcome, ProviderConfig, SshKeySource};
use provider_support::{Direct, copy_tree, group_members, shipped, wait_dead};
use serde_json::json;

fn app() -> serde_json::Value {
    json!({"provider": "fabric", "repository": "oursky/project-x", "environments": ["edge", "live"]})
}

/// The shipped project-x deploy-config, with fabric.yaml pointing edge at the test sshd.
fn overlay(dir: &Path, sshd: &Sshd, deploy_path: &Path) -> std::path::PathBuf {
    let o = dir.join("overlay-project-x");
    std::fs::create_dir_all(&o).unwrap();
    copy_tree(&shipped("project-x"), &o);
    std::fs::write(
        o.join("fabric.yaml"),
        format!(
            "deploy:\n  keep_releases: 2\n  environments:\n    edge:\n      hosts: [\"{}@{}:{}\"]\n      path: {}\n",
            sshd.user(),
            sshd.host(),
            sshd.port(),
            deploy_path.display()
        ),
    )
    .unwrap();
    o
}

fn key_config(key: String, known_hosts: Option<String>) -> ProviderConfig {
    ProviderConfig {
        ssh_key: Some(SshKeySource::Text(Secret::new(key))),
        ssh_known_hosts: known_hosts,
        ..ProviderConfig::default()
    }
}

/// A repository whose `main` moved on after the commit we deploy.
fn repo() -> (GitRepo, String, String) {
    let repo = GitRepo::new();
    repo.write("VERSION", "one\n");
    let first = repo.commit("one");
    repo.write("VERSION", "two\n");
    let second = repo.commit("two");
    (repo, first, second)
}

/// Every file under `dir` (recursively) whose text contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            found.extend(files_containing(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            found.push(p);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_fabfile_deploys_the_sha_over_ssh_with_the_deploy_key() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, second) = repo();
    let srv = d.dir.path().join("srv");
    let o = overlay(d.dir.path(), &sshd, &srv);
    let key = sshd.client_key_text();
    let settings = d.settings(
        key_config(key.clone(), Some(sshd.known_hosts_line())),
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(120),
            vec![],
        )
        .await;
    assert_eq!(ran.outcome, Outcome::Success, "{}", ran.log);
    assert_eq!(
        std::fs::read_to_string(srv.join("current/REVISION"))
            .unwrap()
            .trim(),
        first
    );
    assert_eq!(
        std::fs::read_to_string(srv.join("current/VERSION")).unwrap(),
        "one\n"
    );
    assert_ne!(first, second);
    assert!(
        ran.log.contains(&format!(
            "deploy --environment edge --ref main --sha {first}"
        )),
        "{}",
        ran.log
    );
    assert!(ran.log.contains("==> fabric: fab -S "), "{}", ran.log);
    assert!(
        ran.log.contains("==> ssh: deploy key SHA256:"),
        "{}",
        ran.log
    );
    assert!(
        ran.log.contains("from DEPLOY_SSH_KNOWN_HOSTS"),
        "{}",
        ran.log
    );
    // The key that authenticated is the deploy key faseng was given.
    assert!(sshd.accepted_deploy_key(), "{}", sshd.log());
    // No key text in the log, and none left on disk after the run.
    let key_line = key.lines().nth(1).unwrap();
    assert!(!ran.log.contains(key_line), "{}", ran.log);
    assert!(
        d.leftover_ssh_runs().is_empty(),
        "{:?}",
        d.leftover_ssh_runs()
    );
    assert!(
        files_containing(d.dir.path(), key_line).is_empty(),
        "{:?}",
        files_containing(d.dir.path(), key_line)
    );
    assert_eq!(
        ran.progress.first().map(String::as_str),
        Some("*prepare …* → deploy")
    );
    assert_eq!(
        ran.progress.last().map(String::as_str),
        Some("prepare ✓ → deploy ✓")
    );

    // A second deploy (of the newer commit) moves current; keep_releases: 2 prunes.
    let checkout = d.checkout(&repo, &second, Some(&o));
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &second,
            &checkout,
            &settings,
            Duration::from_secs(120),
            vec![],
        )
        .await;
    assert_eq!(ran.outcome, Outcome::Success, "{}", ran.log);
    assert_eq!(
        std::fs::read_to_string(srv.join("current/VERSION")).unwrap(),
        "two\n"
    );
    assert_eq!(std::fs::read_dir(srv.join("releases")).unwrap().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_remote_command_is_a_failure_with_the_remote_error_in_the_log() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _) = repo();
    // The deploy path lies under a regular file: the remote mkdir fails.
    let blocker = d.dir.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let o = overlay(d.dir.path(), &sshd, &blocker.join("srv"));
    let settings = d.settings(
        key_config(sshd.client_key_text(), Some(sshd.known_hosts_line())),
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(120),
            vec![],
        )
        .await;
    let Outcome::Failure(why) = &ran.outcome else {
        panic!("expected a failure, got {:?}\n{}", ran.outcome, ran.log)
    };
    assert!(why.starts_with("Failed"), "{why}");
    assert!(ran.log.contains("Not a directory"), "{}", ran.log);
    assert!(
        ran.log.contains("==> fabric: exited with status 1"),
        "{}",
        ran.log
    );
    assert_eq!(
        ran.progress.last().map(String::as_str),
        Some("prepare ✓ → deploy ✗")
    );
    assert!(d.leftover_ssh_runs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_accept_fails_with_authentication_failed() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _) = repo();
    let srv = d.dir.path().join("srv");
    let o = overlay(d.dir.path(), &sshd, &srv);
    let settings = d.settings(
        key_config(sshd.stranger_key_text(), Some(sshd.known_hosts_line())),
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(120),
            vec![],
        )
        .await;
    let Outcome::Failure(why) = &ran.outcome else {
        panic!("expected a failure, got {:?}\n{}", ran.outcome, ran.log)
    };
    assert!(why.contains("authentication failed"), "{why}");
    assert!(ran.log.contains("Authentication failed"), "{}", ran.log);
    assert!(
        ran.log.contains("==> ssh: ssh authentication failed"),
        "{}",
        ran.log
    );
    assert!(!srv.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_host_key_differs_from_the_known_hosts_is_refused() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _) = repo();
    let srv = d.dir.path().join("srv");
    let o = overlay(d.dir.path(), &sshd, &srv);
    let settings = d.settings(
        key_config(sshd.client_key_text(), Some(sshd.wrong_known_hosts_line())),
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(120),
            vec![],
        )
        .await;
    let Outcome::Failure(why) = &ran.outcome else {
        panic!("expected a failure, got {:?}\n{}", ran.outcome, ran.log)
    };
    assert!(
        why.contains("host key verification failed"),
        "{why}\n{}",
        ran.log
    );
    assert!(ran.log.contains("BadHostKeyException"), "{}", ran.log);
    assert!(!srv.exists());
    assert!(
        !sshd.accepted_deploy_key(),
        "it logged in despite the wrong host key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_known_hosts_new_hosts_are_accepted_remembered_and_logged() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _) = repo();
    let srv = d.dir.path().join("srv");
    let o = overlay(d.dir.path(), &sshd, &srv);
    let settings = d.settings(
        key_config(sshd.client_key_text(), None),
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(120),
            vec![],
        )
        .await;
    assert_eq!(ran.outcome, Outcome::Success, "{}", ran.log);
    assert!(
        ran.log
            .contains("DEPLOY_SSH_KNOWN_HOSTS is not set: accept-new"),
        "{}",
        ran.log
    );
    let remembered = std::fs::read_to_string(d.state.join("ssh/known_hosts")).unwrap();
    assert!(
        remembered.contains(&sshd.known_hosts_line()),
        "{remembered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_is_used_in_place() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _) = repo();
    let srv = d.dir.path().join("srv");
    let o = overlay(d.dir.path(), &sshd, &srv);
    let key_file = d.dir.path().join("deploy_key");
    std::fs::copy(sshd.client_key_path(), &key_file).unwrap();
    let settings = d.settings(
        ProviderConfig {
            ssh_key: Some(SshKeySource::File(key_file.clone())),
            ssh_known_hosts: Some(sshd.known_hosts_line()),
            ..ProviderConfig::default()
        },
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(120),
            vec![],
        )
        .await;
    assert_eq!(ran.outcome, Outcome::Success, "{}", ran.log);
    assert!(
        ran.log
            .contains(&format!("from DEPLOY_SSH_KEY_FILE {}", key_file.display())),
        "{}",
        ran.log
    );
    assert!(
        ran.log.contains(&format!("-i {}", key_file.display())),
        "{}",
        ran.log
    );
    assert!(key_file.exists(), "the operator's key file was removed");
    assert!(sshd.accepted_deploy_key());

    // A path that does not exist is an error before fab starts.
    let settings = d.settings(
        ProviderConfig {
            ssh_key: Some(SshKeySource::File(d.dir.path().join("missing"))),
            ..ProviderConfig::default()
        },
        "http://127.0.0.1:9",
        None,
    );
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(60),
            vec![],
        )
        .await;
    assert!(
        matches!(&ran.outcome, Outcome::Error(w) if w.contains("DEPLOY_SSH_KEY_FILE") && w.contains("cannot be read")),
        "{:?}",
        ran.outcome
    );
    assert!(ran.pgids.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_text_that_is_no_private_key_is_an_error_before_fab_starts() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _) = repo();
    let o = overlay(d.dir.path(), &sshd, &d.dir.path().join("srv"));
    let settings = d.settings(
        key_config(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA public-not-private".into(),
            None,
        ),
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(60),
            vec![],
        )
        .await;
    let Outcome::Error(why) = &ran.outcome else {
        panic!("expected an error, got {:?}\n{}", ran.outcome, ran.log)
    };
    assert!(
        why.contains("DEPLOY_SSH_KEY does not hold a private key"),
        "{why}"
    );
    assert!(!ran.log.contains("==> fabric: fab"), "{}", ran.log);
    assert!(ran.pgids.is_empty());

    // A deployment task that is no Fabric task name is refused before fab starts, too.
    let ran = d
        .run(
            &app(),
            "edge",
            "deploy:--list",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(60),
            vec![],
        )
        .await;
    assert!(
        matches!(&ran.outcome, Outcome::Error(w) if w.contains("not a Fabric task name")),
        "{:?}",
        ran.outcome
    );
    assert!(ran.pgids.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_kills_fab_and_every_child_it_started() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _) = repo();
    let pids = d.dir.path().join("pids");
    let o = d.dir.path().join("overlay-hang");
    std::fs::create_dir_all(&o).unwrap();
    // A task that starts an ssh child (with faseng's generated config) and a python child,
    // records the pids, then hangs.
    std::fs::write(
        o.join("fabfile.py"),
        format!(
            r#"import os, subprocess, sys, time
from fabric import task

@task
def hang(c, environment, ref, sha):
    ssh = subprocess.Popen(["ssh", "-F", os.environ["DEPLOY_SSH_CONFIG"], "-p", "{port}", "{user}@{host}", "sleep", "60"])
    py = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    with open("{pids}", "a") as f:
        f.write("%d\n%d\n%d\n" % (os.getpid(), ssh.pid, py.pid))
    print("hanging", flush=True)
    time.sleep(300)
"#,
            port = sshd.port(),
            user = sshd.user(),
            host = sshd.host(),
            pids = pids.display()
        ),
    )
    .unwrap();
    let mut app = app();
    app["fabric_task"] = json!("hang");
    let settings = d.settings(
        key_config(sshd.client_key_text(), Some(sshd.known_hosts_line())),
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    let ran = d
        .run(
            &app,
            "edge",
            "deploy",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(4),
            vec![],
        )
        .await;
    assert_eq!(
        ran.outcome,
        Outcome::Failure("Timed out after 4 s".into()),
        "{}",
        ran.log
    );
    assert!(ran.log.contains("timed out after 4 s"), "{}", ran.log);
    assert!(ran.log.contains("hanging"), "{}", ran.log);
    let recorded: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(recorded.len(), 3);
    let survivors = wait_dead(&recorded, Duration::from_secs(5)).await;
    assert!(survivors.is_empty(), "left running: {survivors:?}");
    for pg in &ran.pgids {
        assert!(
            group_members(*pg).is_empty(),
            "group {pg}: {:?}",
            group_members(*pg)
        );
    }
    assert!(d.leftover_ssh_runs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fabric_deployment_goes_webhook_to_queue_to_worker_with_statuses_and_chat() {
    let Some(sshd) = Sshd::start() else { return };
    let opts = harness::Options {
        providers: key_config(sshd.client_key_text(), Some(sshd.known_hosts_line())),
        ..harness::Options::default()
    };
    let Some(env) = harness::Env::start(harness::Backend::Sqlite, opts).await else {
        return;
    };
    let srv = env.dir.path().join("srv");
    let o = overlay(env.dir.path(), &sshd, &srv);
    // The harness deploys app "trelhub": its deploy-config is the project-x example.
    copy_tree(&o, &env.dir.path().join("deploy-config/trelhub"));
    let (id, ts) = env
        .deploy("edge", "deploy", "joyz", json!({"provider": "fabric"}))
        .await;
    let done = env.wait_final(id).await;
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(env.states(id), ["queued", "in_progress", "success"]);
    assert_eq!(
        std::fs::read_to_string(srv.join("current/REVISION"))
            .unwrap()
            .trim(),
        env.sha
    );
    let msg = env
        .slack
        .wait_for_text(harness::ROOM, &ts, "is done", harness::WAIT)
        .await;
    assert!(
        msg.history
            .iter()
            .any(|h| h.contains("prepare ✓ → *deploy …*")),
        "{:?}",
        msg.history
    );
    let log_url = env.gh.statuses(id)[1]["log_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, log) = env.get(&format!("{log_url}/log")).await;
    assert!(log.contains("==> fabric: fab -S"), "{log}");
    assert!(log.contains(&format!("--sha {}", env.sha)), "{log}");
    assert!(
        !log.contains(sshd.client_key_text().lines().nth(1).unwrap()),
        "{log}"
    );
    assert!(sshd.accepted_deploy_key());
}
