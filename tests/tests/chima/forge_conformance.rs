//! One conformance suite for "where deployments live", run against both implementations:
//! GitHub (chima's GithubForge + faseng's GithubStatusSink, against the fake GitHub) and local
//! mode (LocalForge + LocalDeployments, on SQLite and a real git repository).

use std::sync::Arc;

use chima::forge::{CreateOutcome, DeploymentFilter, Forge};
use chima::github::GithubForge;
use chima::local::{LocalDeployments, LocalForge};
use deploy_core::{
    AppConfig, DeploymentPayload, GithubAuth, GithubClients, NewDeployment, RepoName, Secret, Task,
};
use e2e::fake_github::{FakeGithub, TOKEN};
use e2e::git_repo::GitRepo;
use faseng::status::{DeploymentStatusSink, GithubStatusSink, StatusTarget, StatusUpdate};
use faseng::store::RunState;
use serde_json::json;

fn app(clone_url: &str) -> AppConfig {
    AppConfig::from_value(
        "demo",
        &json!({"provider": "shell", "repository": "oursky/demo",
                "environments": ["staging", "production"], "clone_url": clone_url}),
    )
    .unwrap()
}

fn request(git_ref: &str, environment: &str) -> NewDeployment {
    NewDeployment {
        git_ref: git_ref.parse().unwrap(),
        task: Task::Deploy,
        environment: environment.parse().unwrap(),
        auto_merge: false,
        required_contexts: Some(vec![]),
        description: format!("deploy on {environment} from chima"),
        production_environment: environment == "production",
        payload: DeploymentPayload {
            name: "demo".into(),
            robot_name: "chima".into(),
            hosts: String::new(),
            notify: None,
            config: json!({"provider": "shell"}),
            desk_ticket: None,
            request: None,
            rollback: None,
            extra: Default::default(),
        },
    }
}

async fn post(sink: &dyn DeploymentStatusSink, id: u64, state: RunState) {
    let target = StatusTarget {
        repo: RepoName::parse("oursky/demo").unwrap(),
        deployment_id: id,
    };
    sink.post(&target, &StatusUpdate::new(state, format!("{state:?}")))
        .await
        .unwrap();
}

/// The suite: both implementations must behave alike.
async fn conformance(
    forge: &dyn Forge,
    sink: &dyn DeploymentStatusSink,
    app: &AppConfig,
    feature_sha: &str,
) {
    assert_eq!(forge.default_branch(app).await.unwrap().as_str(), "main");

    let created = match forge
        .create_deployment(app, &request("feature", "staging"))
        .await
        .unwrap()
    {
        CreateOutcome::Created(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(created.git_ref, "feature");
    assert_eq!(created.sha, feature_sha);
    assert_eq!(created.environment, "staging");
    assert!(!forge.has_statuses(app, created.id).await.unwrap());

    let staging = DeploymentFilter {
        environment: Some("staging".parse().unwrap()),
        limit: 10,
        ..DeploymentFilter::default()
    };
    let listed = forge.deployments(app, &staging).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id, listed[0].state.as_deref()),
        (created.id, None)
    );

    let target = StatusTarget {
        repo: RepoName::parse("oursky/demo").unwrap(),
        deployment_id: created.id,
    };
    assert!(sink.list(&target).await.unwrap().is_empty());
    post(sink, created.id, RunState::Queued).await;
    assert!(forge.has_statuses(app, created.id).await.unwrap());
    // What the outbox checks before posting a status whose earlier answer was lost.
    assert_eq!(sink.list(&target).await.unwrap(), ["queued"]);
    assert!(sink.has_state(&target, "queued").await.unwrap());
    assert!(!sink.has_state(&target, "success").await.unwrap());
    assert_eq!(
        forge.deployments(app, &staging).await.unwrap()[0]
            .state
            .as_deref(),
        Some("queued")
    );
    assert_eq!(
        forge
            .current_deployment(app, &"staging".parse().unwrap())
            .await
            .unwrap(),
        None
    );

    post(sink, created.id, RunState::Success).await;
    let current = forge
        .current_deployment(app, &"staging".parse().unwrap())
        .await
        .unwrap()
        .expect("deployed");
    assert_eq!(
        (current.id, current.state.as_deref()),
        (created.id, Some("success"))
    );
    assert_eq!(
        forge
            .current_deployment(app, &"production".parse().unwrap())
            .await
            .unwrap(),
        None
    );

    let second = match forge
        .create_deployment(app, &request("main", "production"))
        .await
        .unwrap()
    {
        CreateOutcome::Created(info) => info,
        other => panic!("{other:?}"),
    };
    let by_ref = DeploymentFilter {
        git_ref: Some("main".parse().unwrap()),
        limit: 10,
        ..DeploymentFilter::default()
    };
    let mains = forge.deployments(app, &by_ref).await.unwrap();
    assert_eq!(mains.iter().map(|d| d.id).collect::<Vec<_>>(), [second.id]);
    let all = forge
        .deployments(
            app,
            &DeploymentFilter {
                limit: 10,
                ..DeploymentFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|d| d.id).collect::<Vec<_>>(),
        [second.id, created.id],
        "newest first"
    );

    match forge
        .create_deployment(app, &request("no-such-branch", "staging"))
        .await
        .unwrap()
    {
        CreateOutcome::Unprocessable { message } => {
            assert_eq!(message, "No ref found for: no-such-branch")
        }
        other => panic!("{other:?}"),
    }
}

fn repository() -> (GitRepo, String, String) {
    let repo = GitRepo::new();
    repo.write("README.md", "demo\n");
    let main = repo.commit("first");
    repo.git(&["checkout", "--quiet", "-b", "feature"]);
    repo.write("feature.txt", "feature\n");
    let feature = repo.commit("feature");
    repo.git(&["checkout", "--quiet", "main"]);
    (repo, main, feature)
}

#[tokio::test]
async fn github_conforms() {
    let (_repo, main, feature) = repository();
    let gh = FakeGithub::start().await;
    gh.add_repo("oursky/demo", "main");
    gh.set_branch("oursky/demo", "main", &main);
    gh.set_branch("oursky/demo", "feature", &feature);
    let clients = Arc::new(GithubClients::new(
        gh.url(),
        Some(GithubAuth::Token(Secret::new(TOKEN))),
    ));
    let forge = GithubForge::new(clients.clone());
    let sink = GithubStatusSink::new(clients);
    conformance(&forge, &sink, &app("/unused"), &feature).await;
}

#[tokio::test]
async fn local_mode_conforms() {
    let (repo, _main, feature) = repository();
    let state = tempfile::tempdir().unwrap();
    let store = LocalDeployments::open(&state.path().join("local.db"))
        .await
        .unwrap();
    let settings = faseng::local::LocalSettings {
        queue_url: format!("sqlite://{}", state.path().join("faseng.db").display()),
        workdir: state.path().join("work"),
        deploy_config_dir: state.path().join("deploy-config"),
        deployment_timeout: std::time::Duration::from_secs(900),
        apps: Default::default(),
    };
    let faseng = faseng::local::LocalFaseng::queue_only(settings, "http://127.0.0.1:9")
        .await
        .unwrap();
    let forge = LocalForge::new(store.clone(), Arc::new(faseng), state.path());
    conformance(
        &forge,
        &store,
        &app(repo.path().to_str().unwrap()),
        &feature,
    )
    .await;
}
