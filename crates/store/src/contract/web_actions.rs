//! Web actions: submitted, claimed once, finished by their holder; a lapsed claim ends Failed.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{Store, WebAction, WebActionState};

fn t0() -> DateTime<Utc> {
    "2026-12-06T10:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

const LEASE: Duration = Duration::from_secs(60);

/// Submitting, claiming oldest first, finishing by the holder only, a lapsed claim failed
/// and never handed out again, retention of finished actions.
pub async fn web_actions(store: &dyn Store) {
    assert_eq!(
        store
            .claim_web_action("chima-a", at(0), LEASE)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.web_action(1).await.unwrap(), None);
    let rollback = "rollback demo in staging to #12";
    let first = store
        .submit_web_action("github:octocat", "octocat", rollback, at(0))
        .await
        .unwrap();
    let second = store
        .submit_web_action("local:bob", "bob", "unlock demo in staging", at(1))
        .await
        .unwrap();
    assert!(second > first, "numbered in submission order");
    let pending = WebAction {
        id: first,
        user_id: "github:octocat".into(),
        user_name: "octocat".into(),
        command: rollback.into(),
        state: WebActionState::Pending,
        submitted_at: at(0),
        claimed_by: None,
        claimed_until: None,
        reply: None,
        run_key: None,
    };
    assert_eq!(
        store.web_action(first).await.unwrap(),
        Some(pending.clone())
    );

    // Oldest first, each to one holder.
    let a = store
        .claim_web_action("chima-a", at(2), LEASE)
        .await
        .unwrap();
    let running = WebAction {
        state: WebActionState::Running,
        claimed_by: Some("chima-a".into()),
        claimed_until: Some(at(62)),
        ..pending.clone()
    };
    assert_eq!(a, Some(running.clone()));
    assert_eq!(
        store.web_action(first).await.unwrap(),
        Some(running.clone())
    );
    let b = store
        .claim_web_action("chima-b", at(3), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.id, b.claimed_until), (second, Some(at(63))));
    assert_eq!(
        store
            .claim_web_action("chima-c", at(4), LEASE)
            .await
            .unwrap(),
        None
    );

    // Only the holder finishes, once.
    assert!(
        !store
            .finish_web_action(first, "chima-b", true, "done", None)
            .await
            .unwrap(),
        "not the holder"
    );
    assert_eq!(
        store.web_action(first).await.unwrap(),
        Some(running.clone())
    );
    let reply = "Rolling back demo in staging to 1234567 (#12) \u{2014} by octocat";
    assert!(
        store
            .finish_web_action(first, "chima-a", true, reply, Some("o/r/13"))
            .await
            .unwrap()
    );
    let done = WebAction {
        state: WebActionState::Done,
        reply: Some(reply.into()),
        run_key: Some("o/r/13".into()),
        ..running
    };
    assert_eq!(store.web_action(first).await.unwrap(), Some(done.clone()));
    assert!(
        !store
            .finish_web_action(first, "chima-a", false, "again", None)
            .await
            .unwrap(),
        "a finished action stays as it ended"
    );
    assert_eq!(store.web_action(first).await.unwrap(), Some(done));

    // chima-b stops answering: at the end of its claim the action is failed, not handed out
    // again, and chima-b can no longer finish it.
    let third = store
        .submit_web_action(
            "local:bob",
            "bob",
            "unlock! demo in staging: from the dashboard",
            at(10),
        )
        .await
        .unwrap();
    let c = store
        .claim_web_action("chima-c", at(63), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.id, third, "the lapsed action is not handed out again");
    let lapsed = store.web_action(second).await.unwrap().unwrap();
    assert_eq!(lapsed.state, WebActionState::Failed);
    assert_eq!(
        lapsed.reply.as_deref(),
        Some(crate::messages::WEB_ACTION_STOPPED)
    );
    assert_eq!(
        lapsed.claimed_by.as_deref(),
        Some("chima-b"),
        "who held it stays"
    );
    assert!(
        !store
            .finish_web_action(second, "chima-b", true, "done late", None)
            .await
            .unwrap()
    );
    assert_eq!(store.web_action(second).await.unwrap(), Some(lapsed));
    // A holder past its claim that nobody has noticed yet still finishes it (it was done once).
    assert!(
        store
            .finish_web_action(third, "chima-c", false, "demo is locked by alice", None)
            .await
            .unwrap()
    );
    let failed = store.web_action(third).await.unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.reply.as_deref(), failed.run_key),
        (
            WebActionState::Failed,
            Some("demo is locked by alice"),
            None
        )
    );
    assert_eq!(
        store
            .claim_web_action("chima-c", at(200), LEASE)
            .await
            .unwrap(),
        None
    );

    // Retention: finished actions submitted before the cutoff go; pending and running stay.
    let running = store
        .submit_web_action("local:bob", "bob", "unlock demo in edge", at(20))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_web_action("chima-a", at(300), LEASE)
            .await
            .unwrap()
            .map(|a| a.id),
        Some(running)
    );
    let waiting = store
        .submit_web_action("local:bob", "bob", "unlock demo in production", at(21))
        .await
        .unwrap();
    let late = store
        .submit_web_action("local:bob", "bob", "unlock demo in qa", at(40))
        .await
        .unwrap();
    let swept = store.sweep(at(30)).await.unwrap();
    assert_eq!(swept.web_actions, 3, "{swept:?}");
    for gone in [first, second, third] {
        assert_eq!(store.web_action(gone).await.unwrap(), None);
    }
    for kept in [running, waiting, late] {
        assert!(store.web_action(kept).await.unwrap().is_some());
    }
    assert_eq!(store.sweep(at(30)).await.unwrap().web_actions, 0);
    let next = store
        .submit_web_action("local:bob", "bob", "unlock demo in edge", at(41))
        .await
        .unwrap();
    assert!(next > late, "ids are not reused after a sweep");
    assert_eq!(
        store
            .claim_web_action("chima-a", at(301), LEASE)
            .await
            .unwrap()
            .map(|a| a.id),
        Some(waiting)
    );
}

/// Claims as `chima-{i}` at `now` until none is left; the ids handed out.
async fn claim_all(s: &dyn Store, i: usize, now: DateTime<Utc>) -> Vec<u64> {
    let holder = format!("chima-{i}");
    let mut got = Vec::new();
    while let Some(action) = s.claim_web_action(&holder, now, LEASE).await.unwrap() {
        assert_eq!(action.claimed_by.as_deref(), Some(holder.as_str()));
        got.push(action.id);
    }
    got
}

/// Claims by 8 claimers on two connections at once: every pending action is handed out
/// exactly once; once their claims lapse, they end Failed and none is handed out again.
pub async fn web_action_races(a: &dyn Store, b: &dyn Store) {
    let mut submitted = BTreeSet::new();
    for i in 0..40 {
        let id = a
            .submit_web_action("local:bob", "bob", &format!("unlock app{i} in edge"), at(i))
            .await
            .unwrap();
        submitted.insert(id);
    }
    let claimed = super::desk::race(a, b, |s, i| claim_all(s, i, at(100))).await;
    let all: Vec<u64> = claimed.iter().flatten().copied().collect();
    assert_eq!(
        all.len(),
        submitted.len(),
        "each handed out once: {claimed:?}"
    );
    assert_eq!(all.iter().copied().collect::<BTreeSet<_>>(), submitted);

    // Ten more, claimed after the first forty's claims lapsed: only the ten are handed out.
    let mut fresh = BTreeSet::new();
    for i in 0..10 {
        fresh.insert(
            b.submit_web_action(
                "local:bob",
                "bob",
                &format!("unlock late{i} in edge"),
                at(120),
            )
            .await
            .unwrap(),
        );
    }
    let claimed = super::desk::race(a, b, |s, i| claim_all(s, i, at(200))).await;
    let all: Vec<u64> = claimed.iter().flatten().copied().collect();
    assert_eq!(all.len(), fresh.len(), "{claimed:?}");
    assert_eq!(all.into_iter().collect::<BTreeSet<_>>(), fresh);
    for id in submitted {
        let action = a.web_action(id).await.unwrap().unwrap();
        assert_eq!(action.state, WebActionState::Failed, "{action:?}");
    }
}
