//! The dashboard through its router, on a real SQLite file and a real redis-server, with a
//! test layer standing in for sign-in (it inserts a fixed [`Viewer`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use deploy_core::{Apps, ManualClock, Secret};
use tower::ServiceExt as _;

use super::{Viewer, router};
use crate::intake::Intake;
use crate::links::LinkKey;
use crate::metrics::Metrics;
use crate::queue::{self, QueueUrl};
use crate::store::contract::RedisServer;
use crate::store::{ChatThread, EnvLock, NewLineRequest, RunRecord, RunState};
use crate::stream_slots::StreamSlots;
use crate::web::WebState;

mod actions;
mod pages;
mod run;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Backend {
    Sqlite,
    Redis,
}

/// "Now" in every test.
pub(super) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
        .unwrap()
        .to_utc()
}

pub(super) const APPS: &str = r#"{
  "demo": {
    "provider": "shell",
    "repository": "o/r",
    "environments": ["staging", "production"],
    "default_environment": "staging",
    "freeze": [{"from": "2026-03-10T00:00:00Z", "until": "2026-03-11T00:00:00Z",
                "reason": "<i>release week</i>", "environments": ["production"]}]
  },
  "other": { "provider": "shell", "repository": "o/other", "environments": ["edge"] }
}"#;

/// A dashboard over a fresh store, its clock at [`now`].
pub(super) struct Fixture {
    pub state: WebState,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    _redis: Option<RedisServer>,
}

impl Fixture {
    /// `None` (the test is skipped, and says so) when redis-server is not installed.
    pub async fn new(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (redis, url) = match backend {
            Backend::Sqlite => (None, QueueUrl::Sqlite(dir.path().join("faseng.db"))),
            Backend::Redis => {
                let server = RedisServer::start()?;
                let url = QueueUrl::parse(&server.url()).unwrap();
                (Some(server), url)
            }
        };
        let (queue, store) = queue::open(&url, Default::default()).await.unwrap();
        let apps = Arc::new(Apps::from_json(APPS).unwrap());
        let clock = Arc::new(ManualClock::new(now()));
        let state = WebState {
            secret: Secret::new("webhook secret"),
            intake: Arc::new(Intake::new(store.clone(), queue, apps.clone())),
            store,
            metrics: Arc::new(Metrics::default()),
            isolation: "a unit test".into(),
            link_key: LinkKey::new(&"link key ".repeat(4)).unwrap(),
            streams: StreamSlots::new(4, 8),
            apps,
            clock: clock.clone(),
            github_web_url: url::Url::parse("https://ghe.example.com/").unwrap(),
            gate: Arc::new(crate::web::auth::Gate::off()),
        };
        Some(Self {
            state,
            clock,
            _dir: dir,
            _redis: redis,
        })
    }

    /// The response to `request`, signed in as [`viewer`].
    pub async fn send(&self, mut request: Request<Body>) -> Response {
        let client: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(client));
        router()
            .layer(axum::Extension(viewer()))
            .with_state(self.state.clone())
            .oneshot(request)
            .await
            .unwrap()
    }

    /// A GET's status and body.
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        let status = response.status();
        (status, body(response).await)
    }

    /// A form POST's response.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// Stores `run` with a log.
    pub async fn add_run(&self, run: &RunRecord, log: &[&str]) {
        let store = &self.state.store;
        assert!(store.create_run(run).await.unwrap());
        if !log.is_empty() {
            let lines: Vec<String> = log.iter().map(|l| (*l).to_owned()).collect();
            store.append_log(&run.key, &lines).await.unwrap();
        }
    }

    /// Locks `app/env` for `user`.
    pub async fn lock(&self, line: &str, user: &str, reason: &str) {
        let lock = EnvLock {
            user: user.into(),
            user_name: user.trim_start_matches("github:").into(),
            reason: reason.into(),
            at: now() - Duration::minutes(30),
            expires_at: Some(now() + Duration::hours(2)),
            thread: None,
            reminded_at: None,
            branch: None,
        };
        self.state.store.set_env_lock(line, &lock).await.unwrap();
    }

    /// Puts `user` in the desk line of `line`.
    pub async fn join_line(&self, line: &str, user: &str, git_ref: &str) {
        self.state
            .store
            .join_line(&NewLineRequest {
                line: line.into(),
                user: user.into(),
                user_name: user.into(),
                git_ref: git_ref.into(),
                command: format!("deploy demo/{git_ref} to staging"),
                chat: ChatThread {
                    adapter: "shell".into(),
                    room: "shell".into(),
                    room_name: "shell".into(),
                    thread: None,
                },
                at: now() - Duration::minutes(5),
                expires_at: now() + Duration::hours(1),
            })
            .await
            .unwrap();
    }
}

/// The viewer the test layer signs in.
pub(super) fn viewer() -> Viewer {
    Viewer {
        id: "github:octocat".into(),
        name: "octocat".into(),
        csrf: "csrf-0123456789".into(),
    }
}

pub(super) async fn body(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Run `o/r/<id>` of demo: `state` in `env` at `sha` (a hex digit repeated), received
/// `minutes_ago` before [`now`], taking a minute.
pub(super) fn run(id: u64, env: &str, state: RunState, sha: char, minutes_ago: i64) -> RunRecord {
    let mut r = crate::store::contract::run(&format!("o/r/{id}"));
    r.deployment_id = id;
    r.app = "demo".into();
    r.environment = env.into();
    r.state = state;
    r.sha = sha.to_string().repeat(40);
    r.git_ref = "main".into();
    r.creator = "alice".into();
    r.received_at = now() - Duration::minutes(minutes_ago);
    if state != RunState::Queued {
        r.started_at = Some(r.received_at + Duration::seconds(5));
    }
    if state.is_final() {
        r.finished_at = Some(r.received_at + Duration::seconds(65));
    }
    r
}

/// Runs each named test (an `async fn(Backend)`) on SQLite and on Redis.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::super::Backend::Sqlite).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::super::Backend::Redis).await
                }
            )*
        }
    };
}
pub(super) use on_both_backends;
