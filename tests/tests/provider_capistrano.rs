//! The capistrano provider for real: `cap <env> deploy` runs the shipped modmod-web Capfile
//! and deploy.rb against a real sshd on 127.0.0.1 and a `file://` bare repository.

#[path = "faseng_harness/mod.rs"]
mod harness;
mod provider_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use deploy_core::Secret;
use e2e::deploy_config;
use e2e::git_repo::GitRepo;
use e2e::sshd::Sshd;
use faseng::providers::{Outcome, ProviderConfig, SshKeySource};
use provider_support::{Direct, copy_tree, group_members, wait_dead};
use serde_json::json;

fn app() -> serde_json::Value {
    json!({"provider": "capistrano", "repository": "oursky/modmod-web",
           "environments": ["edge", "staging", "production"]})
}

fn key_config(key: String, known_hosts: Option<String>) -> ProviderConfig {
    ProviderConfig {
        ssh_key: Some(SshKeySource::Text(Secret::new(key))),
        ssh_known_hosts: known_hosts,
        ..ProviderConfig::default()
    }
}

/// The shipped modmod-web deploy-config with the edge stage pointed at the test sshd, the
/// repository and a deploy directory (what a project's own edge.rb would say).
fn overlay(dir: &Path, sshd: &Sshd, repo_url: &str, deploy_to: &Path, keep: u32) -> PathBuf {
    deploy_config::modmod_web_on(
        &dir.join("overlay-modmod-web"),
        sshd,
        repo_url,
        deploy_to,
        keep,
    )
}

/// A repository whose `main` moved on after the commit we deploy, and a bare clone of it.
fn repo(dir: &Path) -> (GitRepo, String, String, String) {
    let repo = GitRepo::new();
    repo.write("VERSION", "one\n");
    let first = repo.commit("one");
    repo.write("VERSION", "two\n");
    let second = repo.commit("two");
    let url = deploy_config::bare_clone(repo.path(), &dir.join("modmod-web.git"));
    (repo, first, second, url)
}

fn releases(deploy_to: &Path) -> Vec<String> {
    let mut r: Vec<String> = std::fs::read_dir(deploy_to.join("releases"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    r.sort();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_edge_deploy_puts_current_at_the_requested_sha_and_rotates_releases() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, second, url) = repo(d.dir.path());
    let srv = d.dir.path().join("srv");
    let o = overlay(d.dir.path(), &sshd, &url, &srv, 1);
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
            Duration::from_secs(180),
            vec![],
        )
        .await;
    assert_eq!(ran.outcome, Outcome::Success, "{}", ran.log);
    // main is at `second`; the deployment asked for `first`, and `first` is what is live.
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
    let r1 = releases(&srv);
    assert_eq!(r1.len(), 1, "{r1:?}");
    assert!(
        r1[0].len() == 14 && r1[0].bytes().all(|b| b.is_ascii_digit()),
        "{r1:?}"
    );
    assert_eq!(
        std::fs::read_link(srv.join("current")).unwrap(),
        srv.join("releases").join(&r1[0])
    );
    assert!(
        ran.log.contains("==> capistrano: cap edge deploy"),
        "{}",
        ran.log
    );
    assert!(
        ran.log.contains(&format!("REVISION={}", &first[..7])),
        "{}",
        ran.log
    );
    assert!(sshd.accepted_deploy_key(), "{}", sshd.log());
    assert!(!ran.log.contains(key.lines().nth(1).unwrap()));
    assert!(d.leftover_ssh_runs().is_empty());

    // A second deploy (keep_releases 1) rotates: a new release, the old one pruned.
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
            Duration::from_secs(180),
            vec![],
        )
        .await;
    assert_eq!(ran.outcome, Outcome::Success, "{}", ran.log);
    let r2 = releases(&srv);
    assert_eq!(r2.len(), 1, "{r2:?}");
    assert_ne!(r2, r1);
    assert_eq!(
        std::fs::read_to_string(srv.join("current/REVISION"))
            .unwrap()
            .trim(),
        second
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_host_key_differs_from_the_known_hosts_is_refused_by_net_ssh() {
    // 127.0.0.1 on a port other than 22 is where net-ssh skips host-key checks by default;
    // 127.0.0.2 is an ordinary address. Both must be refused.
    for address in ["127.0.0.1", "127.0.0.2"] {
        let Some(sshd) = Sshd::start_on(address) else {
            return;
        };
        let d = Direct::new().await;
        let (repo, first, _, url) = repo(d.dir.path());
        let srv = d.dir.path().join("srv");
        let o = overlay(d.dir.path(), &sshd, &url, &srv, 3);
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
            panic!(
                "{address}: expected a failure, got {:?}\n{}",
                ran.outcome, ran.log
            )
        };
        assert!(
            why.contains("host key verification failed"),
            "{address}: {why}\n{}",
            ran.log
        );
        assert!(ran.log.contains("HostKeyMismatch"), "{}", ran.log);
        assert!(
            !sshd.accepted_deploy_key(),
            "{address}: net-ssh logged in despite the wrong host key"
        );
        assert!(!srv.join("releases").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_known_hosts_net_ssh_accepts_new_hosts_and_remembers_them() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _, url) = repo(d.dir.path());
    let o = overlay(d.dir.path(), &sshd, &url, &d.dir.path().join("srv"), 3);
    std::fs::create_dir_all(o.join("lib/capistrano/tasks")).unwrap();
    std::fs::write(
        o.join("lib/capistrano/tasks/ping.rake"),
        "namespace :deploy do\n  task :ping do\n    on roles(:all) do\n      execute :true\n    end\n  end\nend\n",
    )
    .unwrap();
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
            "deploy:ping",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(60),
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
    let host_key = sshd.known_hosts_line();
    let key_part = host_key.split_whitespace().nth(2).unwrap();
    assert!(
        remembered.contains(&sshd.known_hosts_name()) && remembered.contains(key_part),
        "{remembered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_accept_fails_with_authentication_failed() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _, url) = repo(d.dir.path());
    let srv = d.dir.path().join("srv");
    let o = overlay(d.dir.path(), &sshd, &url, &srv, 3);
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
    assert!(why.contains("authentication failed"), "{why}\n{}", ran.log);
    assert!(ran.log.contains("Authentication failed"), "{}", ran.log);
    assert!(!srv.join("releases").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_stages_cap_cannot_run_are_errors_before_it_starts() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _, url) = repo(d.dir.path());
    let o = overlay(d.dir.path(), &sshd, &url, &d.dir.path().join("srv"), 3);
    let settings = d.settings(
        key_config(sshd.client_key_text(), None),
        "http://127.0.0.1:9",
        None,
    );
    let checkout = d.checkout(&repo, &first, Some(&o));
    for task in ["rollback", "deploy:Migrate", "deploy:x;ls", "deploy:"] {
        let ran = d
            .run(
                &app(),
                "edge",
                task,
                "main",
                &first,
                &checkout,
                &settings,
                Duration::from_secs(60),
                vec![],
            )
            .await;
        assert!(
            matches!(&ran.outcome, Outcome::Error(w) if w.contains("is not a Capistrano deploy task")),
            "{task}: {:?}",
            ran.outcome
        );
        assert!(ran.pgids.is_empty(), "cap started for {task}");
    }
    let mut qa = app();
    qa["environments"] = json!(["qa"]);
    let ran = d
        .run(
            &qa,
            "qa",
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
        matches!(&ran.outcome, Outcome::Error(w) if w.contains("config/deploy/qa.rb is missing")),
        "{:?}",
        ran.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_kills_cap_and_every_child_it_started() {
    let Some(sshd) = Sshd::start() else { return };
    let d = Direct::new().await;
    let (repo, first, _, url) = repo(d.dir.path());
    let pids = d.dir.path().join("pids");
    let o = overlay(d.dir.path(), &sshd, &url, &d.dir.path().join("srv"), 3);
    std::fs::create_dir_all(o.join("lib/capistrano/tasks")).unwrap();
    std::fs::write(
        o.join("lib/capistrano/tasks/hang.rake"),
        format!(
            "namespace :deploy do\n  task :hang do\n    \
             ssh = Process.spawn(\"ssh\", \"-F\", ENV.fetch(\"DEPLOY_SSH_CONFIG\"), \"-p\", \"{port}\", \"{user}@{host}\", \"sleep\", \"60\")\n    \
             rb = Process.spawn(\"ruby\", \"-e\", \"sleep 300\")\n    \
             File.open({pids:?}, \"a\") {{ |f| f.puts Process.pid, ssh, rb }}\n    \
             puts \"hanging\"\n    sleep 300\n  end\nend\n",
            port = sshd.port(),
            user = sshd.user(),
            host = sshd.host(),
            pids = pids.display().to_string()
        ),
    )
    .unwrap();
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
            "deploy:hang",
            "main",
            &first,
            &checkout,
            &settings,
            Duration::from_secs(6),
            vec![],
        )
        .await;
    assert_eq!(
        ran.outcome,
        Outcome::Failure("Timed out after 6 s".into()),
        "{}",
        ran.log
    );
    assert!(ran.log.contains("timed out after 6 s"), "{}", ran.log);
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
async fn a_capistrano_deployment_goes_webhook_to_queue_to_worker_with_statuses_and_chat() {
    let Some(sshd) = Sshd::start() else { return };
    let opts = harness::Options {
        providers: key_config(sshd.client_key_text(), Some(sshd.known_hosts_line())),
        ..harness::Options::default()
    };
    let Some(env) = harness::Env::start(harness::Backend::Sqlite, opts).await else {
        return;
    };
    // main moves on after the deployment's commit: the deploy must still be of that commit.
    env.repo.write("VERSION", "later\n");
    let later = env.repo.commit("later");
    assert_ne!(later, env.sha);
    let srv = env.dir.path().join("srv");
    let o = overlay(env.dir.path(), &sshd, &env.repo.url(), &srv, 3);
    copy_tree(&o, &env.dir.path().join("deploy-config/trelhub"));
    let (id, ts) = env
        .deploy("edge", "deploy", "joyz", json!({"provider": "capistrano"}))
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
    assert!(log.contains("==> capistrano: cap edge deploy"), "{log}");
    assert!(sshd.accepted_deploy_key());
}
