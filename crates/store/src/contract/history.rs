//! The history of runs: newest first, filtered, paged.

use chrono::{DateTime, Utc};

use crate::{RunQuery, RunRecord, RunState, Store};

/// The history: queries by app, environment, ref and time, paging with a cursor, every
/// writer indexing (part of the runs contract; expects no other run records).
pub async fn history(store: &dyn Store) {
    let t0: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
    let made = |id: u64, app: &str, env: &str, git_ref: &str, mins: i64| RunRecord {
        deployment_id: id,
        app: app.into(),
        environment: env.into(),
        git_ref: git_ref.into(),
        received_at: t0 + chrono::Duration::minutes(mins),
        ..super::run(&RunRecord::key_for("h/r", id))
    };
    // Written every way a run is written: created, overwritten, accepted, finished.
    let runs = [
        made(1, "demo", "staging", "main", 0),
        made(2, "demo", "production", "main", 1),
        made(3, "demo", "staging", "feature/x", 2),
        made(4, "web", "staging", "main", 3),
        made(5, "demo", "staging", "main", 4),
        // The same minute as 5: ordered by key, newest first.
        made(6, "demo", "staging", "main", 4),
    ];
    assert!(store.create_run(&runs[0]).await.unwrap());
    store.put_run(&runs[1]).await.unwrap();
    let item = crate::AcceptItem {
        delivery_id: "h-3".into(),
        run: runs[2].clone(),
        line: "demo/staging".into(),
        job: "{}".into(),
    };
    assert!(store.accept_runs(&[item]).await.unwrap()[0].created);
    assert!(store.finish_run(&runs[3], None, &[]).await.unwrap());
    assert!(store.create_run(&runs[4]).await.unwrap());
    assert!(store.create_run(&runs[5]).await.unwrap());
    let keys = |runs: &[RunRecord]| runs.iter().map(|r| r.deployment_id).collect::<Vec<_>>();

    let all = store.history(&RunQuery::default()).await.unwrap();
    assert_eq!(keys(&all.items), [6, 5, 4, 3, 2, 1], "newest first");
    assert_eq!(all.next, None);
    let query = |f: &dyn Fn(&mut RunQuery)| {
        let mut q = RunQuery::default();
        f(&mut q);
        q
    };
    let demo = query(&|q| q.app = Some("demo".into()));
    assert_eq!(
        keys(&store.history(&demo).await.unwrap().items),
        [6, 5, 3, 2, 1]
    );
    let staging = query(&|q| {
        q.app = Some("demo".into());
        q.environment = Some("staging".into());
    });
    assert_eq!(
        keys(&store.history(&staging).await.unwrap().items),
        [6, 5, 3, 1]
    );
    let main_everywhere = query(&|q| {
        q.environment = Some("staging".into());
        q.git_ref = Some("main".into());
    });
    assert_eq!(
        keys(&store.history(&main_everywhere).await.unwrap().items),
        [6, 5, 4, 1]
    );
    let window = query(&|q| {
        q.since = Some(t0 + chrono::Duration::minutes(1));
        q.until = Some(t0 + chrono::Duration::minutes(4));
    });
    assert_eq!(
        keys(&store.history(&window).await.unwrap().items),
        [4, 3, 2],
        "since is inclusive, until exclusive"
    );

    // Pages of two, each going on from the last one's cursor, through the tie at minute 4.
    let mut paged = query(&|q| {
        q.app = Some("demo".into());
        q.limit = 2;
    });
    let mut seen = Vec::new();
    loop {
        let page = store.history(&paged).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(keys(&page.items));
        match page.next {
            Some(next) => paged.cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, [6, 5, 3, 2, 1]);
    let cursor = crate::Cursor::parse(paged.cursor.as_ref().unwrap().as_str());
    assert_eq!(
        cursor, paged.cursor,
        "a cursor survives a round trip as text"
    );
    assert_eq!(crate::Cursor::parse("nonsense"), None);

    // An update keeps a run's place; a deleted run leaves the history.
    let done = RunRecord {
        state: RunState::Success,
        finished_at: Some(t0 + chrono::Duration::minutes(30)),
        ..runs[0].clone()
    };
    store.put_run(&done).await.unwrap();
    store.delete_run(&runs[4].key).await.unwrap();
    let all = store.history(&RunQuery::default()).await.unwrap();
    assert_eq!(keys(&all.items), [6, 4, 3, 2, 1]);
    assert_eq!(all.items.last(), Some(&done));
    assert!(
        store
            .history(&query(&|q| q.app = Some("nope".into())))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
