//! The queue backends a stateful scenario runs on, and the one macro that runs a scenario on
//! both.

use std::path::Path;

use crate::redis_server::RedisServer;

/// Which queue backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A real redis-server.
    Redis,
    /// A SQLite file.
    Sqlite,
}

/// A running queue backend: a redis-server the scenario owns, or a SQLite file in its
/// directory.
pub struct Queue {
    /// Which backend.
    pub backend: Backend,
    /// The redis-server (`None` on SQLite).
    pub redis: Option<RedisServer>,
    /// `FASENG_QUEUE_URL`: `redis://…` or `sqlite://<dir>/faseng.db`.
    pub url: String,
}

impl Queue {
    /// Starts `backend` with its SQLite file (if any) in `dir`; `None` (with a printed reason)
    /// when Redis is wanted but not installed.
    pub fn start(backend: Backend, dir: &Path) -> Option<Self> {
        let redis = match backend {
            Backend::Redis => Some(RedisServer::start()?),
            Backend::Sqlite => None,
        };
        let url = match &redis {
            Some(r) => r.url(),
            None => format!("sqlite://{}", dir.join("faseng.db").display()),
        };
        Some(Self {
            backend,
            redis,
            url,
        })
    }

    /// The queue URL as faseng's configuration takes it.
    pub fn queue_url(&self) -> faseng::queue::QueueUrl {
        faseng::queue::QueueUrl::parse(&self.url).expect("a valid queue URL")
    }
}

/// Runs each named scenario (an `async fn(Backend)`) on both backends, as
/// `redis::<name>` and `sqlite::<name>`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::backend::Backend::Redis).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::backend::Backend::Sqlite).await;
                }
            )*
        }
    };
}
