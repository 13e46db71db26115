//! The heroku provider against a fake Platform API (headers and bodies checked against the
//! build schema fixture, output streamed) and the fake GitHub's tarball redirect.

use std::time::Duration;

use deploy_core::Secret;
use e2e::direct::Outcome;
use e2e::direct::{Direct, Job, Ran, deploy_through_webhook};
use e2e::fake_github::{self, FakeGithub};
use e2e::fake_heroku::{self, BuildPlan, BuildResult, FakeHeroku};
use e2e::git_repo::GitRepo;
use e2e::harness::{Backend, Env, Options, REPO as REPO_TRELHUB};
use faseng::providers::ProviderConfig;
use serde_json::json;

const REPO: &str = "oursky/project-x";

fn app() -> serde_json::Value {
    json!({"provider": "heroku", "repository": REPO, "environments": ["edge", "staging"],
           "heroku_edge_name": "project-x-edge", "heroku_name": "project-x"})
}

/// The fakes and a checked-out commit that every direct heroku test starts from.
struct World {
    gh: FakeGithub,
    heroku: FakeHeroku,
    d: Direct,
    sha: String,
    checkout: std::path::PathBuf,
    _repo: GitRepo,
}

/// Fake GitHub (with the repository) and Heroku (with no app yet), and a checked-out commit.
async fn world() -> World {
    let gh = FakeGithub::start().await;
    gh.add_repo(REPO, "main");
    let heroku = FakeHeroku::start().await;
    let d = Direct::new().await;
    let repo = GitRepo::new();
    repo.write("Procfile", "web: bundle exec puma\n");
    let sha = repo.commit("app");
    let checkout = d.checkout(&repo, &sha, None);
    World {
        gh,
        heroku,
        d,
        sha,
        checkout,
        _repo: repo,
    }
}

impl World {
    /// Runs `deploy` of the commit to `env` with the Heroku API key `key`.
    async fn run(
        &self,
        app: &serde_json::Value,
        env: &str,
        key: Option<&str>,
        timeout: Duration,
    ) -> Ran {
        let settings = self.d.settings(
            ProviderConfig {
                heroku_api_key: key.map(Secret::new),
                heroku_api_url: self.heroku.url().to_owned(),
                ..ProviderConfig::default()
            },
            self.gh.url(),
        );
        let token = Secret::new(fake_github::TOKEN);
        // No redaction of the Heroku key here: it must never be printed at all.
        let job = Job::deploy(app, &self.sha, &self.checkout, &settings, timeout);
        self.d
            .run(Job {
                env,
                github_token: Some(&token),
                ..job
            })
            .await
    }

    /// Deploys the commit to `env` with the right key and a minute's timeout.
    async fn deploy(&self, env: &str) -> Ran {
        self.run(
            &app(),
            env,
            Some(fake_heroku::API_KEY),
            Duration::from_secs(60),
        )
        .await
    }

    /// Asserts neither key nor token was printed (nor redacted) and the fake Heroku saw
    /// nothing amiss.
    fn no_key_anywhere(&self, ran: &Ran) {
        assert!(!ran.log.contains(fake_heroku::API_KEY), "{}", ran.log);
        assert!(
            !ran.log.contains("***"),
            "something secret was printed and redacted:\n{}",
            ran.log
        );
        assert!(!ran.log.contains(fake_github::TOKEN), "{}", ran.log);
        assert!(
            self.heroku.problems().is_empty(),
            "{:?}",
            self.heroku.problems()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_of_the_sha_succeeds_with_its_output_streamed_into_the_log() {
    let w = world().await;
    w.heroku.add_app("project-x-edge", BuildPlan::default());
    w.heroku.add_app("project-x", BuildPlan::default());
    let ran = w.deploy("edge").await;
    ran.assert_success();
    w.no_key_anywhere(&ran);

    // GitHub was asked for the tarball link with the token; the redirect was not followed.
    let tarball: Vec<_> =
        w.gh.requests()
            .into_iter()
            .filter(|r| r.path.contains("/tarball/"))
            .collect();
    assert_eq!(tarball.len(), 1, "{tarball:?}");
    assert_eq!(tarball[0].path, format!("/repos/{REPO}/tarball/{}", w.sha));
    assert_eq!(
        tarball[0].authorization.as_deref(),
        Some(format!("Bearer {}", fake_github::TOKEN).as_str())
    );

    let builds = w.heroku.builds();
    assert_eq!(builds.len(), 1);
    let post = &w.heroku.requests()[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, "/apps/project-x-edge/builds");
    assert_eq!(
        post.authorization.as_deref(),
        Some(format!("Bearer {}", fake_heroku::API_KEY).as_str())
    );
    assert_eq!(
        post.body["source_blob"]["url"],
        format!(
            "https://codeload.github.com/{REPO}/legacy.tar.gz/{}?token=fake-signed",
            w.sha
        )
    );
    assert_eq!(post.body["source_blob"]["version"], w.sha.as_str());
    assert!(
        w.heroku
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.starts_with("/apps/project-x-edge/builds/"))
    );

    // The output streamed, in order, between the build's header lines.
    let pos = |needle: &str| {
        ran.log
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{}", ran.log))
    };
    assert!(pos("==> heroku: POST ") < pos("-----> Building on the Heroku-22 stack"));
    assert!(pos("-----> Building on the Heroku-22 stack") < pos("Released v7"));
    assert!(pos("Released v7") < pos("succeeded"));
    assert!(
        !ran.log.contains("token=fake-signed"),
        "the signed link was logged:\n{}",
        ran.log
    );

    // Without heroku_staging_name, staging deploys to heroku_name.
    let ran = w.deploy("staging").await;
    ran.assert_success();
    assert!(
        w.heroku
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path == "/apps/project-x/builds")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_output_stream_is_resumed_where_it_stopped() {
    let w = world().await;
    w.heroku.add_app("project-x-edge", BuildPlan::default());
    w.heroku.cut_next_stream_after(2);
    let ran = w.deploy("edge").await;
    ran.assert_success();
    ran.assert_logged(&[
        "build output stream interrupted",
        "resuming the build output at byte",
    ]);
    // Every line exactly once, in order.
    let lines: Vec<&str> = ran
        .log
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, t)| t))
        .filter(|t| !t.starts_with("==>"))
        .collect();
    let expected: Vec<String> = BuildPlan::default().lines;
    assert_eq!(
        lines,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "{}",
        ran.log
    );
    let streams: Vec<_> = w
        .heroku
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/streams/"))
        .collect();
    assert_eq!(streams.len(), 2, "{streams:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_is_a_failure_naming_heroku_and_its_last_line() {
    let w = world().await;
    w.heroku.add_app(
        "project-x-edge",
        BuildPlan {
            lines: vec![
                "-----> Ruby app detected".into(),
                " !     Push rejected, failed to compile Ruby app.".into(),
            ],
            result: BuildResult::Failed,
        },
    );
    let ran = w.deploy("edge").await;
    assert_eq!(
        ran.outcome,
        Outcome::Failure(
            "Failed: Heroku build failed: ! Push rejected, failed to compile Ruby app.".into()
        ),
        "{}",
        ran.log
    );
    assert!(ran.log.contains("-----> Ruby app detected"), "{}", ran.log);
    w.no_key_anywhere(&ran);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_is_an_error_that_says_so() {
    let w = world().await;
    w.heroku.add_app("project-x-edge", BuildPlan::default());
    let ran = w
        .run(
            &app(),
            "edge",
            Some("hrku-not-the-right-key"),
            Duration::from_secs(60),
        )
        .await;
    ran.assert_error("Heroku rejected HEROKU_API_KEY (401 Unauthorized)");
    assert!(!ran.log.contains("hrku-not-the-right-key"), "{}", ran.log);
    assert!(w.heroku.builds().is_empty());

    // No key at all: an error before anything is asked of Heroku.
    let before = w.heroku.requests().len();
    let ran = w.run(&app(), "edge", None, Duration::from_secs(60)).await;
    ran.assert_error("HEROKU_API_KEY is not set");
    assert_eq!(w.heroku.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_forbidden_app_is_an_error_that_names_it() {
    let w = world().await;
    let ran = w.deploy("edge").await;
    ran.assert_error("Heroku app project-x-edge not found (404)");
    w.no_key_anywhere(&ran);

    w.heroku.add_app("project-x-edge", BuildPlan::default());
    w.heroku.forbid("project-x-edge");
    let ran = w.deploy("edge").await;
    ran.assert_error("may not build project-x-edge (403 Forbidden)");

    // Heroku refusing the build itself (422) is an error with Heroku's reason.
    w.heroku.add_app("project-x", BuildPlan::default());
    w.heroku
        .refuse_builds("project-x", "source_blob.url could not be downloaded.");
    let ran = w.deploy("staging").await;
    ran.assert_error(
        "Heroku refused the build for project-x (422): source_blob.url could not be downloaded.",
    );

    // An app.json without a Heroku app for the environment never reaches Heroku.
    let before = w.heroku.requests().len();
    let bare = json!({"provider": "heroku", "repository": REPO, "environments": ["edge"]});
    let ran = w
        .run(
            &bare,
            "edge",
            Some(fake_heroku::API_KEY),
            Duration::from_secs(60),
        )
        .await;
    ran.assert_error("neither heroku_edge_name nor heroku_name");
    assert_eq!(w.heroku.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_cancels_the_build_and_is_a_failure() {
    let w = world().await;
    w.heroku.add_app(
        "project-x-edge",
        BuildPlan {
            lines: vec!["-----> still compiling".into()],
            result: BuildResult::Never,
        },
    );
    let ran = w
        .run(
            &app(),
            "edge",
            Some(fake_heroku::API_KEY),
            Duration::from_secs(3),
        )
        .await;
    ran.assert_timed_out(3);
    ran.assert_logged(&["timed out after 3 s"]);
    let id = w.heroku.builds()[0]["id"].as_str().unwrap().to_owned();
    assert!(w.heroku.cancelled(&id), "{:?}", w.heroku.requests());
    assert!(
        ran.log.contains(&format!("cancelled build {id}")),
        "{}",
        ran.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heroku_deployment_goes_webhook_to_queue_to_worker_with_statuses_and_chat() {
    let opts = Options {
        app: json!({"provider": "heroku", "heroku_edge_name": "trelhub-edge"}),
        heroku: true,
        ..Options::default()
    };
    let env = Env::start(Backend::Sqlite, opts)
        .await
        .expect("sqlite needs nothing");
    let heroku = env.heroku.as_ref().unwrap();
    heroku.add_app("trelhub-edge", BuildPlan::default());
    let run = deploy_through_webhook(&env, "success").await;
    assert_eq!(
        heroku.builds()[0]["source_blob"]["version"],
        env.sha.as_str()
    );
    assert!(heroku.problems().is_empty(), "{:?}", heroku.problems());
    run.chat_says("is done").await;
    let log = run.log().await;
    assert!(log.contains("Released v7"), "{log}");
    assert!(!log.contains(fake_heroku::API_KEY), "{log}");
}

/// With a GitHub App (no token), the tarball is asked for with the App's installation token,
/// which faseng mints for the repository: a private repository deploys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_github_app_the_tarball_is_asked_for_with_an_installation_token() {
    let opts = Options {
        app: json!({"provider": "heroku", "heroku_edge_name": "trelhub-edge"}),
        github_app_key: Some(fake_github::app_private_key()),
        heroku: true,
        ..Options::default()
    };
    let env = Env::start(Backend::Sqlite, opts)
        .await
        .expect("sqlite needs nothing");
    let heroku = env.heroku.as_ref().unwrap();
    heroku.add_app("trelhub-edge", BuildPlan::default());
    env.gh
        .require_token(REPO_TRELHUB, fake_github::INSTALLATION_TOKEN);
    let run = deploy_through_webhook(&env, "success").await;
    assert_eq!(
        heroku.builds()[0]["source_blob"]["version"],
        env.sha.as_str()
    );
    let tarball = env
        .gh
        .requests()
        .into_iter()
        .find(|r| r.path.contains("/tarball/"))
        .expect("the tarball was asked for");
    assert_eq!(
        tarball.authorization.as_deref(),
        Some(format!("Bearer {}", fake_github::INSTALLATION_TOKEN).as_str())
    );
    run.chat_says("is done").await;
}
