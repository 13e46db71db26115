//! Each role's contract on a real redis-server and a real SQLite file.

use crate::{RedisStore, SqliteStore};

/// A fresh Redis store on its own server; `None` (the test is skipped, and says so) when
/// redis-server is not installed.
async fn on_redis() -> Option<(super::RedisServer, RedisStore)> {
    let server = super::RedisServer::start()?;
    let conn = crate::redis_connect(&server.url()).await.unwrap();
    Some((server, RedisStore::new(conn, "q")))
}

/// A fresh SQLite store in its own file.
async fn on_sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db"), "q")
        .await
        .unwrap();
    (dir, store)
}

/// One test per role and backend.
macro_rules! contract_tests {
    ($($role:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test]
                async fn $role() {
                    let Some((_server, store)) = super::on_redis().await else { return };
                    crate::contract::$role(&store).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $role() {
                    let (_dir, store) = super::on_sqlite().await;
                    crate::contract::$role(&store).await;
                }
            )*
        }
    };
}

contract_tests!(
    meta,
    deliveries,
    runs,
    lines,
    locks,
    logs,
    outbox,
    duties,
    retention,
    audit,
    desk_line,
    freezes,
    tickets,
    requests,
    stats,
    web_actions,
);

/// Two processes on one store: what they race on has one winner.
mod races {
    use crate::{RedisStore, SqliteStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        let Some((server, a)) = super::on_redis().await else {
            return;
        };
        let b = RedisStore::new(crate::redis_connect(&server.url()).await.unwrap(), "q");
        crate::contract::desk_races(&a, &b).await;
        crate::contract::request_races(&a, &b).await;
        crate::contract::web_action_races(&a, &b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let (dir, a) = super::on_sqlite().await;
        let b = SqliteStore::open(&dir.path().join("store.db"), "q")
            .await
            .unwrap();
        crate::contract::desk_races(&a, &b).await;
        crate::contract::request_races(&a, &b).await;
        crate::contract::web_action_races(&a, &b).await;
    }
}
