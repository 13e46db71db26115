//! Release requests: numbering, lookups, the compare-and-set, and one winner when several
//! processes change one request at once.

use chrono::{DateTime, Utc};

use super::desk::{line_request, race, thread};
use crate::{
    Approval, CheckResult, CheckState, NewFreeze, NewRequest, ReleaseRequest, RequestState, Store,
};

/// `mins` minutes after 10:00 on Sunday 6 December 2026.
fn at(mins: i64) -> DateTime<Utc> {
    "2026-12-06T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::minutes(mins)
}

/// `user` asking at minute `mins` to release `git_ref` (at sha `sha_char` × 40) of `app` to
/// `environment`, for four hours.
pub fn new_request(
    app: &str,
    environment: &str,
    git_ref: &str,
    sha_char: char,
    user: &str,
    mins: i64,
) -> NewRequest {
    NewRequest {
        app: app.into(),
        environment: environment.into(),
        git_ref: git_ref.into(),
        sha: sha_char.to_string().repeat(40),
        requester: user.into(),
        requester_name: user.to_lowercase(),
        chat: thread(&format!("1765015200.{mins:06}")),
        opened_at: at(mins),
        expires_at: at(mins + 240),
    }
}

/// Opening, numbering, reading back every field, the compare-and-set, the open request for
/// a ref, and the listing filters.
pub async fn requests(store: &dyn Store) {
    assert_eq!(store.request(1).await.unwrap(), None);
    assert!(store.requests(None, false).await.unwrap().is_empty());
    assert_eq!(
        store
            .open_request_for("demo", "production", "main")
            .await
            .unwrap(),
        None
    );
    // Other records' numbering is not the requests'.
    store
        .add_freeze(&NewFreeze {
            app: Some("demo".into()),
            environment: None,
            from: at(0),
            until: at(60),
            reason: "numbering".into(),
            by: "U0ALICE".into(),
            by_name: "alice".into(),
            chat: None,
        })
        .await
        .unwrap();
    store
        .join_line(&line_request("demo/staging", "U0ALICE", "main", 0))
        .await
        .unwrap();

    let asked = NewRequest {
        requester_name: "Ålice \"the\" releaser / ops 🚀".into(),
        ..new_request("demo", "production", "main", 'a', "U0ALICE", 0)
    };
    let first = store.open_request(&asked).await.unwrap();
    assert_eq!(first.id, 1, "requests are numbered from 1");
    assert_eq!(
        first,
        ReleaseRequest {
            id: 1,
            app: asked.app.clone(),
            environment: asked.environment.clone(),
            git_ref: asked.git_ref.clone(),
            sha: asked.sha.clone(),
            requester: asked.requester.clone(),
            requester_name: asked.requester_name.clone(),
            chat: asked.chat.clone(),
            opened_at: asked.opened_at,
            expires_at: asked.expires_at,
            state: RequestState::Open,
            checks: vec![],
            approvals: vec![],
            claimed_by: None,
            rejection: None,
            deployment_id: None,
            tickets_done: false,
            tickets_pending: Vec::new(),
            rollback: None,
            updated_at: asked.opened_at,
            version: 1,
        },
        "opened as asked, open, version 1"
    );
    assert_eq!(store.request(1).await.unwrap(), Some(first.clone()));
    let feature = store
        .open_request(&new_request(
            "demo",
            "production",
            "feature/x",
            'b',
            "U0BOB",
            1,
        ))
        .await
        .unwrap();
    let web = store
        .open_request(&new_request("web", "live", "main", 'c', "U0CAROL", 2))
        .await
        .unwrap();
    assert_eq!((feature.id, web.id), (2, 3));

    // The open request for app+environment+ref.
    let open_for = |app: &'static str, env: &'static str, git_ref: &'static str| async move {
        store
            .open_request_for(app, env, git_ref)
            .await
            .unwrap()
            .map(|r| r.id)
    };
    assert_eq!(open_for("demo", "production", "main").await, Some(1));
    assert_eq!(open_for("demo", "production", "feature/x").await, Some(2));
    assert_eq!(open_for("web", "live", "main").await, Some(3));
    assert_eq!(open_for("demo", "staging", "main").await, None);
    assert_eq!(open_for("demo", "production", "Main").await, None);
    assert_eq!(open_for("web", "production", "main").await, None);

    // Compare-and-set: every field written and read back; a stale version loses.
    let changed = ReleaseRequest {
        sha: "d".repeat(40),
        state: RequestState::Approved,
        checks: vec![
            CheckResult {
                kind: "ci".into(),
                state: CheckState::Pass,
                summary: "3 of 3 green".into(),
                url: Some("https://github.com/oursky/chima/commit/ddd/checks".into()),
                at: at(3),
            },
            CheckResult {
                kind: "review".into(),
                state: CheckState::Skipped,
                summary: "local mode".into(),
                url: None,
                at: at(3),
            },
        ],
        approvals: vec![Approval {
            user: "U0BOB".into(),
            user_name: "bob".into(),
            at: at(4),
            overriding: Some("CI is flaky: \"known\" issue".into()),
        }],
        claimed_by: Some(("U0OPS".into(), "ops".into())),
        rejection: Some(("U0X".into(), "x".into(), "not yet".into())),
        // Beyond what a double holds exactly: the store must not round it.
        deployment_id: Some(9_007_199_254_740_993),
        tickets_done: true,
        rollback: Some(crate::RollbackMark {
            from: "e".repeat(40),
            to: "d".repeat(40),
        }),
        updated_at: at(4),
        ..first.clone()
    };
    let written = store.update_request(&changed).await.unwrap();
    let v2 = ReleaseRequest {
        version: 2,
        ..changed.clone()
    };
    assert_eq!(written, Some(v2.clone()), "written as version 2");
    assert_eq!(store.request(1).await.unwrap(), Some(v2.clone()));
    let stale = ReleaseRequest {
        state: RequestState::Rejected,
        ..first.clone()
    };
    assert_eq!(
        store.update_request(&stale).await.unwrap(),
        None,
        "written over since it was read"
    );
    assert_eq!(store.request(1).await.unwrap(), Some(v2.clone()));
    let ahead = ReleaseRequest {
        version: 7,
        ..v2.clone()
    };
    assert_eq!(store.update_request(&ahead).await.unwrap(), None);
    let missing = ReleaseRequest {
        id: 99,
        ..v2.clone()
    };
    assert_eq!(
        store.update_request(&missing).await.unwrap(),
        None,
        "no such request"
    );
    assert_eq!(store.request(99).await.unwrap(), None);

    // Approved and deploying are still open; the rest are over.
    let mut current = v2;
    for (state, open) in [
        (RequestState::Approved, true),
        (RequestState::Deploying, true),
        (RequestState::Open, true),
        (RequestState::Succeeded, false),
    ] {
        current = store
            .update_request(&ReleaseRequest {
                state,
                ..current.clone()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            open_for("demo", "production", "main").await.is_some(),
            open,
            "{state:?}"
        );
        assert_eq!(
            store
                .requests(None, true)
                .await
                .unwrap()
                .iter()
                .any(|r| r.id == 1),
            open,
            "{state:?}"
        );
    }
    assert_eq!(current.version, 6);
    let rejected = store
        .update_request(&ReleaseRequest {
            state: RequestState::Rejected,
            rejection: Some(("U0LEAD".into(), "lead".into(), "wrong branch".into())),
            ..feature.clone()
        })
        .await
        .unwrap()
        .unwrap();

    // Asking again for a ref whose request is over: a new request; of two open for one
    // ref, the oldest is the one.
    let again = store
        .open_request(&new_request(
            "demo",
            "production",
            "main",
            'e',
            "U0ALICE",
            10,
        ))
        .await
        .unwrap();
    let twice = store
        .open_request(&new_request(
            "demo",
            "production",
            "main",
            'e',
            "U0DAVE",
            11,
        ))
        .await
        .unwrap();
    assert_eq!((again.id, twice.id), (4, 5));
    assert_eq!(open_for("demo", "production", "main").await, Some(4));
    assert_eq!(open_for("demo", "production", "feature/x").await, None);

    // Listing: by id, by app, open only.
    let ids = |app: Option<&'static str>, open_only| async move {
        store
            .requests(app, open_only)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(None, false).await, [1, 2, 3, 4, 5]);
    assert_eq!(ids(None, true).await, [3, 4, 5]);
    assert_eq!(ids(Some("demo"), false).await, [1, 2, 4, 5]);
    assert_eq!(ids(Some("demo"), true).await, [4, 5]);
    assert_eq!(ids(Some("web"), true).await, [3]);
    assert!(ids(Some("nope"), false).await.is_empty());
    let listed = store.requests(Some("demo"), false).await.unwrap();
    assert_eq!(listed, [current, rejected, again, twice], "as stored");
    assert_eq!(store.requests(Some("web"), false).await.unwrap(), [web]);
}

/// Release requests for retention at `cutoff` (later than any other request's last
/// change): one over and last changed before it (returned second, to be swept), one open
/// however old and one over but changed since (returned first, to be kept).
pub async fn requests_for_retention(
    store: &dyn Store,
    cutoff: DateTime<Utc>,
) -> (Vec<ReleaseRequest>, ReleaseRequest) {
    let min = chrono::Duration::minutes(1);
    let long_ago = NewRequest {
        opened_at: cutoff - min * 600,
        expires_at: cutoff - min * 360,
        ..new_request("sweep", "live", "main", 'f', "U0ALICE", 0)
    };
    let finish = |r: ReleaseRequest, state, updated_at| async move {
        store
            .update_request(&ReleaseRequest {
                state,
                updated_at,
                ..r
            })
            .await
            .unwrap()
            .unwrap()
    };
    let still_open = store.open_request(&long_ago).await.unwrap();
    let old = store.open_request(&long_ago).await.unwrap();
    let old = finish(old, RequestState::Expired, cutoff - min).await;
    let recent = store.open_request(&long_ago).await.unwrap();
    let recent = finish(recent, RequestState::Succeeded, cutoff + min).await;
    (vec![still_open, recent], old)
}

/// Two processes changing requests at once: concurrent opens get distinct ids, and of eight
/// updates from one version exactly one is written (the one that says so).
pub async fn request_races(a: &dyn Store, b: &dyn Store) {
    let opened = race(a, b, |s, i| async move {
        let r = new_request("race", "live", &format!("v{i}"), 'a', "U0ALICE", i as i64);
        s.open_request(&r).await.unwrap()
    })
    .await;
    let mut ids: Vec<u64> = opened.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(
        ids,
        (1..=8).collect::<Vec<_>>(),
        "distinct ids, none skipped"
    );
    for r in &opened {
        assert_eq!(a.request(r.id).await.unwrap().as_ref(), Some(r));
    }

    let id = opened[0].id;
    for round in 0..2 {
        let read = a.request(id).await.unwrap().unwrap();
        let results = race(a, b, |s, i| {
            let mine = ReleaseRequest {
                state: RequestState::Approved,
                approvals: vec![Approval {
                    user: format!("U0APPROVER{i}"),
                    user_name: format!("approver{i}"),
                    at: at(round),
                    overriding: None,
                }],
                ..read.clone()
            };
            async move { s.update_request(&mine).await }
        })
        .await;
        let won: Vec<ReleaseRequest> = results.into_iter().filter_map(|r| r.unwrap()).collect();
        assert_eq!(won.len(), 1, "round {round}: one of eight wins");
        let stored = b.request(id).await.unwrap().unwrap();
        assert_eq!(stored, won[0], "what the winner was told is what is stored");
        assert_eq!(stored.version, 2 + round as u64);
    }
}
