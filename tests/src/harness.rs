//! faseng in process on a [`World`]: a fake GitHub and Slack, a real git repository, a real
//! queue backend (redis-server or a SQLite file) and faseng's `Application` itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deploy_core::{GithubAuth, Secret};
use faseng::Config;
use faseng::queue::{QueueTiming, QueueUrl};
use faseng::reporter::RetryPolicy;
use faseng::store::{Allowance, DeskTicket, Store};
use serde_json::{Value, json};

pub use crate::backend::Backend;
pub use crate::wait::{is_alive, wait_for};
pub use crate::world::{REPO, ROOM, SECRET, World, scratch};
use crate::{fake_github, fake_slack};

/// Generous bound for anything that should happen in well under a second.
pub const WAIT: Duration = Duration::from_secs(30);

/// One running faseng with its world (reached through `Deref`: `env.gh`, `env.dir`, …).
pub struct Env {
    world: World,
    /// faseng's base URL.
    pub url: String,
    /// The queue faseng runs on.
    pub queue_url: QueueUrl,
    /// Which backend that is.
    pub backend: Backend,
    /// faseng's provider settings.
    pub providers: faseng::providers::ProviderConfig,
    /// The operator's app.json faseng runs with (trelhub, deploying [`REPO`]).
    pub apps_json: Value,
    /// The GitHub App key faseng authenticates with, if not the token.
    pub github_app_key: Option<String>,
    store: tokio::sync::OnceCell<Arc<dyn Store>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

crate::wraps_world!(Env);

/// Options for [`Env::start`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The `script/deploy` body (`#!/bin/sh` is prepended).
    pub script: String,
    /// Run a worker inside the app.
    pub with_worker: bool,
    /// `DEPLOYMENT_TIMEOUT`.
    pub timeout: Duration,
    /// Provider settings (SSH key, known hosts, Heroku API).
    pub providers: faseng::providers::ProviderConfig,
    /// Keys merged into the trelhub entry of the operator's app.json (see [`trelhub_app`]).
    pub app: Value,
    /// Further apps of the operator's app.json, by name.
    pub other_apps: Value,
    /// faseng authenticates as a GitHub App with this private key (PEM) instead of a token.
    pub github_app_key: Option<String>,
    /// A fake Heroku (`env.heroku`) that faseng's provider settings point at.
    pub heroku: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            script: "env | sort\necho deployed $DEPLOY_ENV".into(),
            with_worker: true,
            timeout: Duration::from_secs(60),
            providers: faseng::providers::ProviderConfig::default(),
            app: json!({}),
            other_apps: json!({}),
            github_app_key: None,
            heroku: false,
        }
    }
}

/// The operator's entry for trelhub (a shell app deploying [`REPO`] to edge, staging and
/// production) with `extra` merged in.
pub fn trelhub_app(extra: &Value) -> Value {
    let mut app = json!({"provider": "shell", "repository": REPO,
                         "environments": ["edge", "staging", "production"],
                         "edge_url": "https://edge.trelhub.example"});
    if let (Some(a), Some(extra)) = (app.as_object_mut(), extra.as_object()) {
        a.extend(extra.clone());
    }
    app
}

impl Env {
    /// Starts everything; `None` (with a printed reason) when Redis is wanted but absent.
    pub async fn start(backend: Backend, opts: Options) -> Option<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let mut build = World::build(backend).script(&opts.script);
        if opts.heroku {
            build = build.heroku();
        }
        let world = build.start().await?;
        let providers = match &world.heroku {
            Some(heroku) => heroku.provider_config(opts.providers.clone()),
            None => opts.providers.clone(),
        };
        let queue_url = world.queue.queue_url();
        let mut env = Self {
            world,
            url: String::new(),
            queue_url,
            backend,
            providers,
            github_app_key: opts.github_app_key.clone(),
            apps_json: {
                let mut apps = json!({"trelhub": trelhub_app(&opts.app)});
                if let (Some(a), Some(other)) = (apps.as_object_mut(), opts.other_apps.as_object())
                {
                    a.extend(other.clone());
                }
                apps
            },
            store: tokio::sync::OnceCell::new(),
            stop: None,
            task: None,
        };
        env.launch(opts.with_worker, opts.timeout).await;
        Some(env)
    }

    /// faseng's configuration for this environment.
    pub fn config(&self, timeout: Duration) -> Config {
        let mut c = Config::new(self.queue_url.clone());
        c.webhook_secret = Some(Secret::new(SECRET));
        c.bind = "127.0.0.1:0".parse().unwrap();
        c.workdir = self.dir.path().join("work");
        c.deploy_config_dir = self.dir.path().join("deploy-config");
        c.deployment_timeout = timeout;
        c.github_api_url = self.gh.url().to_owned();
        c.github_auth = Some(match &self.github_app_key {
            Some(key) => GithubAuth::App {
                app_id: 7,
                private_key: Secret::new(key.clone()),
            },
            None => GithubAuth::Token(Secret::new(fake_github::TOKEN)),
        });
        c.slack_token = Some(Secret::new(fake_slack::BOT_TOKEN));
        c.slack_api_url = self.slack.api_url().to_owned();
        c.timing = QueueTiming {
            poll_interval: Duration::from_millis(20),
            heartbeat: Duration::from_secs(1),
            missed_heartbeats: 2,
        };
        c.shutdown_timeout = Duration::from_secs(5);
        // Scenarios deliver webhooks by hand (some edited); a reconcile pass could take a
        // deployment first. Reconciling has its own scenarios (`reconcile.rs`).
        c.reconcile.every = Duration::ZERO;
        c.providers = self.providers.clone();
        c.apps = std::sync::Arc::new(
            deploy_core::Apps::from_json(&self.apps_json.to_string()).expect("a valid app.json"),
        );
        c.status_retry = RetryPolicy {
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
        };
        c
    }

    async fn launch(&mut self, with_worker: bool, timeout: Duration) {
        let app = faseng::Application::build(self.config(timeout), with_worker)
            .await
            .expect("faseng builds");
        self.url = format!("http://{}", app.local_addr());
        self.gh
            .set_webhook(&format!("{}/webhooks/github", self.url), SECRET);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(app.run(async move {
            let _ = rx.await;
        })));
    }

    /// Stops faseng (graceful shutdown) and waits for it.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, t).await;
        }
    }

    /// Writes the operator's app.json into the scenario directory (for faseng processes
    /// started from it); returns its path.
    pub fn write_apps_json(&self) -> PathBuf {
        self.world.write_apps(&self.apps_json)
    }

    /// The payload chima would send (hubot-deploy compatible), with a seeded chat message.
    /// Its `config` is the operator's entry, as chima sends it: informational, never obeyed.
    pub fn payload(&self, user: &str) -> (Value, String) {
        let ts = self
            .slack
            .post_as_bot(ROOM, &format!("{user} asked for a deploy"));
        let payload = json!({"name": "trelhub", "robotName": "chima", "hosts": "",
            "notify": {"adapter": "slack", "room": ROOM, "room_name": "deployment",
                       "user": user_id(user), "user_name": user, "message_ts": ts},
            "config": self.apps_json["trelhub"]});
        (payload, ts)
    }

    /// The store faseng runs on (the one chima shares), opened once: what a test sets the
    /// desk up through (locks, freezes, tickets) and reads it back from.
    pub async fn store(&self) -> Arc<dyn Store> {
        self.store
            .get_or_init(|| async {
                faseng::queue::open(&self.queue_url, QueueTiming::default())
                    .await
                    .expect("the store opens")
                    .1
            })
            .await
            .clone()
    }

    /// Issues a desk ticket, as chima does for every deployment it creates: `user` (a test
    /// user, by [`user_id`]) deploys `sha` of trelhub to `env`, let through by `allowed_by`.
    /// Returns its id, for `payload.desk_ticket`.
    pub async fn ticket(
        &self,
        env: &str,
        user: &str,
        sha: &str,
        allowed_by: Vec<Allowance>,
    ) -> String {
        let now = chrono::Utc::now();
        let ticket = DeskTicket {
            id: DeskTicket::new_id().expect("randomness"),
            app: "trelhub".into(),
            environment: env.into(),
            sha: sha.into(),
            user: user_id(user),
            user_name: user.into(),
            allowed_by,
            at: now,
            expires_at: now + chrono::Duration::hours(1),
        };
        self.store()
            .await
            .issue_ticket(&ticket)
            .await
            .expect("the store takes the ticket");
        ticket.id
    }

    /// The payload chima would send for `user`'s deploy of `git_ref` to `env`, desk ticket
    /// included; and the chat message ts.
    pub async fn ticketed_payload(&self, env: &str, user: &str, git_ref: &str) -> (Value, String) {
        let (mut payload, ts) = self.payload(user);
        let sha = self.gh.branch_sha(REPO, git_ref);
        payload["desk_ticket"] = json!(self.ticket(env, user, &sha, Vec::new()).await);
        (payload, ts)
    }

    /// Creates a deployment of `main` on the fake GitHub as chima would for `user` (with a
    /// desk ticket), which fires the webhook; returns its id and the chat message ts.
    pub async fn deploy(&self, env: &str, task: &str, user: &str) -> (u64, String) {
        self.deploy_ref(env, task, user, "main").await
    }

    /// [`Env::deploy`] of `git_ref` (a branch of the fake).
    pub async fn deploy_ref(
        &self,
        env: &str,
        task: &str,
        user: &str,
        git_ref: &str,
    ) -> (u64, String) {
        let (payload, ts) = self.ticketed_payload(env, user, git_ref).await;
        let id = self.create(env, task, git_ref, payload).await;
        (id, ts)
    }

    /// Creates a deployment of `main` with `payload` as given (the webhook fires); returns its
    /// id.
    pub async fn deploy_payload(&self, env: &str, task: &str, payload: Value) -> u64 {
        self.create(env, task, "main", payload).await
    }

    /// Creates a deployment of `git_ref` with `payload` as given; returns its id.
    pub async fn create_ref(&self, env: &str, task: &str, git_ref: &str, payload: Value) -> u64 {
        self.create(env, task, git_ref, payload).await
    }

    async fn create(&self, env: &str, task: &str, git_ref: &str, payload: Value) -> u64 {
        let d = self
            .gh
            .create_deployment(REPO, json!({"ref": git_ref, "environment": env, "task": task, "auto_merge": false,
                                             "required_contexts": [], "description": format!("{task} on {env}"),
                                             "payload": payload}))
            .await;
        d["id"].as_u64().unwrap()
    }

    /// Creates a deployment on the fake as [`Env::deploy`] does, without its webhook
    /// reaching faseng; returns the deployment and the signed webhook to send by hand.
    pub async fn deployment_and_webhook(
        &self,
        env: &str,
        task: &str,
        user: &str,
    ) -> (Value, Vec<(String, String)>, Vec<u8>) {
        let (payload, _) = self.ticketed_payload(env, user, "main").await;
        self.gh.set_webhook("http://127.0.0.1:9/unused", SECRET);
        let d = self
            .gh
            .create_deployment(
                REPO,
                json!({"ref": "main", "environment": env, "task": task, "auto_merge": false,
                                             "required_contexts": [], "payload": payload}),
            )
            .await;
        self.gh
            .set_webhook(&format!("{}/webhooks/github", self.url), SECRET);
        let (headers, body) = self.gh.deployment_webhook(REPO, &d, SECRET);
        (d, headers, body.to_vec())
    }

    /// Posts a webhook to faseng; returns the HTTP status.
    pub async fn post_webhook(&self, headers: &[(String, String)], body: Vec<u8>) -> u16 {
        let mut req = self.http.post(format!("{}/webhooks/github", self.url));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(body).send().await.unwrap().status().as_u16()
    }

    /// GETs a path of faseng; returns status and body.
    pub async fn get(&self, path_or_url: &str) -> (u16, String) {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.url)
        };
        let r = self.http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The `log_url` of deployment `id`'s `in_progress` status.
    pub fn log_url(&self, id: u64) -> String {
        let statuses = self.gh.statuses(id);
        let running = statuses.iter().find(|s| s["state"] == "in_progress");
        running.and_then(|s| s["log_url"].as_str()).map_or_else(
            || panic!("no in_progress status with a log_url for #{id}: {statuses:?}"),
            str::to_owned,
        )
    }

    /// The log faseng serves for deployment `id`, through the link its statuses carry.
    pub async fn log(&self, id: u64) -> String {
        let url = self.log_url(id);
        let (status, body) = self.get(&format!("{url}/log")).await;
        assert_eq!(status, 200, "{url}/log: {body}");
        body
    }

    /// Waits until `/metrics` contains `needle`. Polls: faseng's counters signal nothing.
    pub async fn wait_for_metric(&self, needle: &str) {
        crate::wait::poll_async(
            &format!("{needle:?} in /metrics"),
            WAIT,
            || async { Some(self.get("/metrics").await.1).filter(|m| m.contains(needle)) },
            String::new,
        )
        .await;
    }

    /// Waits for a final status (success, failure or error) and returns it.
    pub async fn wait_final(&self, id: u64) -> Value {
        self.world.wait_final_or(id, WAIT, String::new).await
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The chat user id of a test user: stable per name (`joyz` → `U0JOYZ`), so two users
/// never share one.
pub fn user_id(name: &str) -> String {
    format!("U0{}", name.to_ascii_uppercase())
}
