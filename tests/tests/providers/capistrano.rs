//! The capistrano provider for real: `cap <env> deploy` runs the shipped modmod-web Capfile
//! and deploy.rb against a real sshd on 127.0.0.1 and a `file://` bare repository.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::deploy_config;
use e2e::direct::{
    Job, SshWorld, assert_live, copy_tree, current, deploy_through_webhook, env_with_sshd,
};
use e2e::sshd::Sshd;
use serde_json::json;

fn app() -> serde_json::Value {
    json!({"provider": "capistrano", "repository": "oursky/modmod-web",
           "environments": ["edge", "staging", "production"]})
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

/// The world's repository as a bare clone cap can fetch from; returns its `file://` URL.
fn bare(w: &SshWorld) -> String {
    deploy_config::bare_clone(w.repo.path(), &w.path("modmod-web.git"))
}

/// The modmod-web overlay for `w`'s sshd and bare repository, deploying to `deploy_to` and
/// keeping `keep` releases.
fn world_overlay(w: &SshWorld, deploy_to: &Path, keep: u32) -> PathBuf {
    overlay(w.d.dir.path(), &w.sshd, &bare(w), deploy_to, keep)
}

/// Adds `lib/capistrano/tasks/<name>.rake` to the overlay `o`.
fn rake_task(o: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(o.join("lib/capistrano/tasks")).unwrap();
    std::fs::write(o.join(format!("lib/capistrano/tasks/{name}.rake")), text).unwrap();
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
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let (first, second) = (&w.first, &w.second);
    let srv = w.path("srv");
    let o = world_overlay(&w, &srv, 1);
    let key = w.sshd.client_key_text();
    let settings = w.good_settings();
    let ran = w
        .deploy_first(&app(), &o, &settings, Duration::from_secs(180))
        .await;
    ran.assert_success();
    // main is at `second`; the deployment asked for `first`, and `first` is what is live.
    assert_live(&srv, first, "one\n");
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
    ran.assert_logged(&[
        "==> capistrano: cap edge deploy",
        &format!("REVISION={}", &first[..7]),
    ]);
    assert!(w.sshd.accepted_deploy_key(), "{}", w.sshd.log());
    assert!(!ran.log.contains(key.lines().nth(1).unwrap()));
    w.d.assert_no_ssh_leftovers();

    // A second deploy (keep_releases 1) rotates: a new release, the old one pruned.
    let ran = w
        .deploy(&app(), second, &o, &settings, Duration::from_secs(180))
        .await;
    ran.assert_success();
    let r2 = releases(&srv);
    assert_eq!(r2.len(), 1, "{r2:?}");
    assert_ne!(r2, r1);
    assert_eq!(current(&srv, "REVISION").trim(), second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_host_key_differs_from_the_known_hosts_is_refused_by_net_ssh() {
    // 127.0.0.1 on a port other than 22 is where net-ssh skips host-key checks by default;
    // 127.0.0.2 is an ordinary address. Both must be refused.
    for address in ["127.0.0.1", "127.0.0.2"] {
        let Some(w) = SshWorld::start_on(address).await else {
            return;
        };
        let srv = w.path("srv");
        let o = world_overlay(&w, &srv, 3);
        let settings = w.key_settings(
            w.sshd.client_key_text(),
            Some(w.sshd.wrong_known_hosts_line()),
        );
        let ran = w
            .deploy_first(&app(), &o, &settings, Duration::from_secs(120))
            .await;
        let why = ran.failure();
        assert!(
            why.contains("host key verification failed"),
            "{address}: {why}\n{}",
            ran.log
        );
        ran.assert_logged(&["HostKeyMismatch"]);
        assert!(
            !w.sshd.accepted_deploy_key(),
            "{address}: net-ssh logged in despite the wrong host key"
        );
        assert!(!srv.join("releases").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_known_hosts_net_ssh_accepts_new_hosts_and_remembers_them() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let o = world_overlay(&w, &w.path("srv"), 3);
    rake_task(
        &o,
        "ping",
        "namespace :deploy do\n  task :ping do\n    on roles(:all) do\n      execute :true\n    end\n  end\nend\n",
    );
    let settings = w.key_settings(w.sshd.client_key_text(), None);
    let ran = w
        .run_first(
            &app(),
            "deploy:ping",
            &o,
            &settings,
            Duration::from_secs(60),
        )
        .await;
    ran.assert_success();
    ran.assert_logged(&["DEPLOY_SSH_KNOWN_HOSTS is not set: accept-new"]);
    let remembered = std::fs::read_to_string(w.d.state.join("ssh/known_hosts")).unwrap();
    let host_key = w.sshd.known_hosts_line();
    let key_part = host_key.split_whitespace().nth(2).unwrap();
    assert!(
        remembered.contains(&w.sshd.known_hosts_name()) && remembered.contains(key_part),
        "{remembered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_accept_fails_with_authentication_failed() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let srv = w.path("srv");
    let o = world_overlay(&w, &srv, 3);
    let settings = w.key_settings(w.sshd.stranger_key_text(), Some(w.sshd.known_hosts_line()));
    let ran = w
        .deploy_first(&app(), &o, &settings, Duration::from_secs(120))
        .await;
    ran.assert_failure("authentication failed");
    ran.assert_logged(&["Authentication failed"]);
    assert!(!srv.join("releases").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_stages_cap_cannot_run_are_errors_before_it_starts() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let o = world_overlay(&w, &w.path("srv"), 3);
    let settings = w.key_settings(w.sshd.client_key_text(), None);
    let checkout = w.checkout(&w.first, &o);
    let app = app();
    let job = Job::deploy(
        &app,
        &w.first,
        &checkout,
        &settings,
        Duration::from_secs(60),
    );
    for task in ["rollback", "deploy:Migrate", "deploy:x;ls", "deploy:"] {
        let ran = w.d.run(Job { task, ..job }).await;
        let why = ran.error();
        assert!(
            why.contains("is not a Capistrano deploy task"),
            "{task}: {why}"
        );
        assert!(ran.pgids.is_empty(), "cap started for {task}");
    }
    let mut qa = app.clone();
    qa["environments"] = json!(["qa"]);
    let ran =
        w.d.run(Job {
            app: &qa,
            env: "qa",
            ..job
        })
        .await;
    ran.assert_error("config/deploy/qa.rb is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_kills_cap_and_every_child_it_started() {
    let Some(w) = SshWorld::start().await else {
        return;
    };
    let sshd = &w.sshd;
    let pids = w.path("pids");
    let o = world_overlay(&w, &w.path("srv"), 3);
    rake_task(
        &o,
        "hang",
        &format!(
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
    );
    let settings = w.good_settings();
    let ran = w
        .run_first(&app(), "deploy:hang", &o, &settings, Duration::from_secs(6))
        .await;
    w.assert_hang_stopped(&ran, 6, &pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capistrano_deployment_goes_webhook_to_queue_to_worker_with_statuses_and_chat() {
    let Some((sshd, env)) = env_with_sshd("capistrano").await else {
        return;
    };
    // main moves on after the deployment's commit: the deploy must still be of that commit.
    env.repo.write("VERSION", "later\n");
    let later = env.repo.commit("later");
    assert_ne!(later, env.sha);
    let srv = env.dir.path().join("srv");
    let o = overlay(env.dir.path(), &sshd, &env.repo.url(), &srv, 3);
    copy_tree(&o, &env.dir.path().join("deploy-config/trelhub"));
    let run = deploy_through_webhook(&env, "success").await;
    assert_eq!(current(&srv, "REVISION").trim(), env.sha);
    run.chat_showed("is done", "prepare ✓ → *deploy …*").await;
    let log = run.log().await;
    assert!(log.contains("==> capistrano: cap edge deploy"), "{log}");
    assert!(sshd.accepted_deploy_key());
}
