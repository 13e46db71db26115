//! The fabric provider for real: Fabric (`fab`) runs the shipped example fabfile against a
//! real sshd on 127.0.0.1, authenticating with the deploy key faseng hands it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::direct::{
    Job, Ran, SshWorld, assert_live, copy_tree, current, deploy_through_webhook, env_with_sshd,
    shipped,
};
use e2e::sshd::Sshd;
use faseng::providers::{ProviderConfig, SshKeySource};
use serde_json::json;

fn app() -> serde_json::Value {
    json!({"provider": "fabric", "repository": "oursky/project-x", "environments": ["edge", "live"]})
}

/// The shipped project-x deploy-config, with fabric.yaml pointing edge at the test sshd.
fn overlay(dir: &Path, sshd: &Sshd, deploy_path: &Path) -> PathBuf {
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

/// Deploys `first` with the example fabfile pointed at `deploy_path`, with the deploy key
/// `key` and `known_hosts`.
async fn deploy_example(
    w: &SshWorld,
    deploy_path: &Path,
    key: String,
    known_hosts: Option<String>,
) -> Ran {
    let o = overlay(w.d.dir.path(), &w.sshd, deploy_path);
    let settings = w.key_settings(key, known_hosts);
    w.deploy_first(&app(), &o, &settings, Duration::from_secs(120))
        .await
}

/// Every file under `dir` (recursively) whose text contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
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
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let (d, first, second) = (&w.d, &w.first, &w.second);
    let srv = w.path("srv");
    let o = overlay(d.dir.path(), &w.sshd, &srv);
    let key = w.sshd.client_key_text();
    let settings = w.good_settings();
    let ran = w
        .deploy_first(&app(), &o, &settings, Duration::from_secs(120))
        .await;
    ran.assert_success();
    assert_live(&srv, first, "one\n");
    assert_ne!(first, second);
    ran.assert_logged(&[
        &format!("deploy --environment edge --ref main --sha {first}"),
        "==> fabric: fab -S ",
        "==> ssh: deploy key SHA256:",
        "from DEPLOY_SSH_KNOWN_HOSTS",
    ]);
    // The key that authenticated is the deploy key faseng was given.
    assert!(w.sshd.accepted_deploy_key(), "{}", w.sshd.log());
    // No key text in the log, and none left on disk after the run.
    let key_line = key.lines().nth(1).unwrap();
    assert!(!ran.log.contains(key_line), "{}", ran.log);
    d.assert_no_ssh_leftovers();
    assert!(
        files_containing(d.dir.path(), key_line).is_empty(),
        "{:?}",
        files_containing(d.dir.path(), key_line)
    );
    assert_eq!(
        ran.progress.first().map(String::as_str),
        Some("*prepare …* → deploy")
    );
    assert_eq!(ran.last_progress(), Some("prepare ✓ → deploy ✓"));

    // A second deploy (of the newer commit) moves current; keep_releases: 2 prunes.
    let ran = w
        .deploy(&app(), second, &o, &settings, Duration::from_secs(120))
        .await;
    ran.assert_success();
    assert_eq!(current(&srv, "VERSION"), "two\n");
    assert_eq!(std::fs::read_dir(srv.join("releases")).unwrap().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_remote_command_is_a_failure_with_the_remote_error_in_the_log() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    // The deploy path lies under a regular file: the remote mkdir fails.
    let blocker = w.path("blocker");
    std::fs::write(&blocker, "").unwrap();
    let ran = deploy_example(
        &w,
        &blocker.join("srv"),
        w.sshd.client_key_text(),
        Some(w.sshd.known_hosts_line()),
    )
    .await;
    let why = ran.failure();
    assert!(why.starts_with("Failed"), "{why}");
    ran.assert_logged(&["Not a directory", "==> fabric: exited with status 1"]);
    assert_eq!(ran.last_progress(), Some("prepare ✓ → deploy ✗"));
    w.d.assert_no_ssh_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_accept_fails_with_authentication_failed() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let srv = w.path("srv");
    let ran = deploy_example(
        &w,
        &srv,
        w.sshd.stranger_key_text(),
        Some(w.sshd.known_hosts_line()),
    )
    .await;
    ran.assert_failure("authentication failed");
    ran.assert_logged(&[
        "Authentication failed",
        "==> ssh: ssh authentication failed",
    ]);
    assert!(!srv.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_host_key_differs_from_the_known_hosts_is_refused() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let srv = w.path("srv");
    let ran = deploy_example(
        &w,
        &srv,
        w.sshd.client_key_text(),
        Some(w.sshd.wrong_known_hosts_line()),
    )
    .await;
    ran.assert_failure("host key verification failed");
    ran.assert_logged(&["BadHostKeyException"]);
    assert!(!srv.exists());
    assert!(
        !w.sshd.accepted_deploy_key(),
        "it logged in despite the wrong host key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_known_hosts_new_hosts_are_accepted_remembered_and_logged() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let ran = deploy_example(&w, &w.path("srv"), w.sshd.client_key_text(), None).await;
    ran.assert_success();
    ran.assert_logged(&["DEPLOY_SSH_KNOWN_HOSTS is not set: accept-new"]);
    let remembered = std::fs::read_to_string(w.d.state.join("ssh/known_hosts")).unwrap();
    assert!(
        remembered.contains(&w.sshd.known_hosts_line()),
        "{remembered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_is_copied_into_the_run_not_shown_to_the_provider() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let d = &w.d;
    let o = overlay(d.dir.path(), &w.sshd, &w.path("srv"));
    let key_file = w.path("deploy_key");
    std::fs::copy(w.sshd.client_key_path(), &key_file).unwrap();
    let settings = d.settings_without_github(ProviderConfig {
        ssh_key: Some(SshKeySource::File(key_file.clone())),
        ssh_known_hosts: Some(w.sshd.known_hosts_line()),
        ..ProviderConfig::default()
    });
    let checkout = w.checkout(&w.first, &o);
    let app = app();
    let job = Job::deploy(
        &app,
        &w.first,
        &checkout,
        &settings,
        Duration::from_secs(120),
    );
    let ran = d.run(job).await;
    ran.assert_success();
    ran.assert_logged(&[
        &format!("from DEPLOY_SSH_KEY_FILE {}", key_file.display()),
        "/id_deploy",
    ]);
    assert!(
        !ran.log.contains(&format!("-i {}", key_file.display())),
        "the provider was given the operator's own key file:\n{}",
        ran.log
    );
    assert!(key_file.exists(), "the operator's key file was removed");
    assert!(w.sshd.accepted_deploy_key());

    // A path that does not exist is an error before fab starts.
    let settings = d.settings_without_github(ProviderConfig {
        ssh_key: Some(SshKeySource::File(w.path("missing"))),
        ..ProviderConfig::default()
    });
    let ran = d
        .run(Job {
            settings: &settings,
            timeout: Duration::from_secs(60),
            ..job
        })
        .await;
    let why = ran.error();
    assert!(
        why.contains("DEPLOY_SSH_KEY_FILE") && why.contains("cannot be read"),
        "{why}"
    );
    assert!(ran.pgids.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_text_that_is_no_private_key_is_an_error_before_fab_starts() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let o = overlay(w.d.dir.path(), &w.sshd, &w.path("srv"));
    let settings = w.key_settings(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA public-not-private".into(),
        None,
    );
    let checkout = w.checkout(&w.first, &o);
    let app = app();
    let job = Job::deploy(
        &app,
        &w.first,
        &checkout,
        &settings,
        Duration::from_secs(60),
    );
    let ran = w.d.run(job).await;
    ran.assert_error("DEPLOY_SSH_KEY does not hold a private key");
    assert!(!ran.log.contains("==> fabric: fab"), "{}", ran.log);
    assert!(ran.pgids.is_empty());

    // A deployment task that is no Fabric task name is refused before fab starts, too.
    let ran =
        w.d.run(Job {
            task: "deploy:--list",
            ..job
        })
        .await;
    ran.assert_error("not a Fabric task name");
    assert!(ran.pgids.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_kills_fab_and_every_child_it_started() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let sshd = &w.sshd;
    let pids = w.path("pids");
    let o = w.path("overlay-hang");
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
    let ran = w
        .deploy_first(&app, &o, &w.good_settings(), Duration::from_secs(4))
        .await;
    w.assert_hang_stopped(&ran, 4, &pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fabric_deployment_goes_webhook_to_queue_to_worker_with_statuses_and_chat() {
    let Some((sshd, env)) = env_with_sshd("fabric").await else {
        return;
    };
    let srv = env.dir.path().join("srv");
    let o = overlay(env.dir.path(), &sshd, &srv);
    // The harness deploys app "trelhub": its deploy-config is the project-x example.
    copy_tree(&o, &env.dir.path().join("deploy-config/trelhub"));
    let run = deploy_through_webhook(&env, "success").await;
    assert_eq!(current(&srv, "REVISION").trim(), env.sha);
    run.chat_showed("is done", "prepare ✓ → *deploy …*").await;
    let log = run.log().await;
    assert!(log.contains("==> fabric: fab -S"), "{log}");
    assert!(log.contains(&format!("--sha {}", env.sha)), "{log}");
    assert!(
        !log.contains(sshd.client_key_text().lines().nth(1).unwrap()),
        "{log}"
    );
    assert!(sshd.accepted_deploy_key());
}
