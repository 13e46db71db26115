//! Locks with an expiry, judged against the caller's clock.

use chrono::{DateTime, Utc};

use crate::{ChatThread, EnvLock, Store};

/// Expiry, takeover and the list of locks, on a time moved by hand.
pub async fn lock_expiry(store: &dyn Store) {
    let t0: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
    let at = |mins: i64| t0 + chrono::Duration::minutes(mins);
    let lock = |user: &str, reason: &str, since: i64, mins: Option<i64>| EnvLock {
        user: user.into(),
        user_name: user.to_lowercase(),
        reason: reason.into(),
        at: at(since),
        expires_at: mins.map(|m| at(since + m)),
        thread: None,
        reminded_at: None,
        branch: None,
    };
    let alice = lock("U0ALICE", "testing", 0, Some(60));
    assert_eq!(
        store
            .acquire_lock("demo/staging", &alice, at(0))
            .await
            .unwrap(),
        alice
    );
    assert_eq!(
        store.env_lock("demo/staging").await.unwrap().as_ref(),
        Some(&alice),
        "holder, reason, since and expiry are kept"
    );
    assert_eq!(
        store.lock_at("demo/staging", at(59)).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.lock_at("demo/staging", at(60)).await.unwrap(),
        None,
        "a lock is over at its expiry"
    );
    let bob = lock("U0BOB", "hotfix", 30, Some(30));
    assert_eq!(
        store
            .acquire_lock("demo/staging", &bob, at(30))
            .await
            .unwrap(),
        alice,
        "a live lock of someone else is not taken"
    );
    let alice_longer = lock("U0ALICE", "testing more", 0, Some(120));
    assert_eq!(
        store
            .acquire_lock("demo/staging", &alice_longer, at(30))
            .await
            .unwrap(),
        alice_longer,
        "the holder extends"
    );
    let bob = lock("U0BOB", "hotfix", 121, Some(30));
    assert_eq!(
        store
            .acquire_lock("demo/staging", &bob, at(121))
            .await
            .unwrap(),
        bob,
        "an expired lock is replaced"
    );
    let carol = lock("U0CAROL", "release", 125, None);
    assert_eq!(
        store.take_over_lock("demo/staging", &carol).await.unwrap(),
        Some(bob.clone()),
        "a takeover answers whom it took the lock from"
    );
    assert_eq!(
        store.lock_at("demo/staging", at(10_000)).await.unwrap(),
        Some(carol.clone()),
        "a lock without an expiry is held until unlocked"
    );
    assert_eq!(store.take_over_lock("demo/edge", &bob).await.unwrap(), None);
    let old = lock("U0OLD", "old", 0, Some(1));
    assert_eq!(
        store.acquire_lock("web/edge", &old, at(0)).await.unwrap(),
        old
    );
    assert_eq!(
        store.locks().await.unwrap(),
        [
            ("demo/edge".to_owned(), bob.clone()),
            ("demo/staging".to_owned(), carol.clone()),
            ("web/edge".to_owned(), old.clone()),
        ],
        "every lock, expired ones too, by line"
    );
    assert!(old.expired(at(1)) && !old.expired(at(0)));
    assert_eq!(
        store.clear_env_lock("web/edge", "U0OLD").await.unwrap(),
        Some(old)
    );
    store.clear_env_lock("demo/edge", "U0BOB").await.unwrap();
    assert_eq!(
        store.locks().await.unwrap(),
        [("demo/staging".to_owned(), carol)],
        "a cleared lock leaves the list"
    );
}

/// Fenced updates and releases (a reminder, an extension, expiry) and the chat thread a
/// lock remembers.
pub async fn lock_fences(store: &dyn Store) {
    let t0: DateTime<Utc> = "2026-12-06T10:00:00.123456789Z".parse().unwrap();
    let at = |mins: i64| t0 + chrono::Duration::minutes(mins);
    let line = "fence/staging";
    let thread = ChatThread {
        adapter: "slack".into(),
        room: "C0RELEASE".into(),
        room_name: "#release".into(),
        thread: Some("1765015200.000100".into()),
    };
    let alice = EnvLock {
        user: "U0ALICE".into(),
        user_name: "alice".into(),
        reason: "testing".into(),
        at: at(0),
        expires_at: Some(at(60)),
        thread: Some(thread.clone()),
        reminded_at: None,
        branch: None,
    };
    assert_eq!(
        store.acquire_lock(line, &alice, at(0)).await.unwrap(),
        alice
    );
    assert_eq!(
        store.env_lock(line).await.unwrap().as_ref(),
        Some(&alice),
        "the thread is kept, to the nanosecond of its time"
    );

    // Reminded, then extended: each only while it is still that lock.
    let reminded = EnvLock {
        reminded_at: Some(at(30)),
        ..alice.clone()
    };
    assert!(
        !store
            .update_lock_if(line, "U0BOB", at(0), &reminded)
            .await
            .unwrap(),
        "another holder's lock is not touched"
    );
    assert!(
        !store
            .update_lock_if(line, "U0ALICE", at(1), &reminded)
            .await
            .unwrap(),
        "a lock held since another time is another lock"
    );
    assert!(
        !store
            .update_lock_if("fence/none", "U0ALICE", at(0), &reminded)
            .await
            .unwrap(),
        "no lock, nothing to update"
    );
    assert_eq!(store.env_lock("fence/none").await.unwrap(), None);
    assert_eq!(store.env_lock(line).await.unwrap().as_ref(), Some(&alice));
    assert!(
        store
            .update_lock_if(line, "U0ALICE", at(0), &reminded)
            .await
            .unwrap()
    );
    assert_eq!(
        store.env_lock(line).await.unwrap().as_ref(),
        Some(&reminded)
    );
    let extended = EnvLock {
        expires_at: Some(at(120)),
        ..reminded.clone()
    };
    assert!(
        store
            .update_lock_if(line, "U0ALICE", at(0), &extended)
            .await
            .unwrap()
    );
    assert_eq!(
        store.lock_at(line, at(90)).await.unwrap().as_ref(),
        Some(&extended)
    );

    // Expiry takes only a lock that has run out, whatever was seen before.
    assert_eq!(
        store.expire_lock(line, at(90)).await.unwrap(),
        None,
        "an extended lock is not expired on its old expiry"
    );
    assert_eq!(store.expire_lock("fence/none", at(90)).await.unwrap(), None);
    assert_eq!(
        store.expire_lock(line, at(120)).await.unwrap(),
        Some(extended.clone())
    );
    assert_eq!(
        store.expire_lock(line, at(121)).await.unwrap(),
        None,
        "once"
    );
    assert_eq!(store.env_lock(line).await.unwrap(), None);
    assert!(
        store.locks().await.unwrap().iter().all(|(l, _)| l != line),
        "an expired lock leaves the list"
    );
    let forever = EnvLock {
        expires_at: None,
        ..alice.clone()
    };
    store.acquire_lock(line, &forever, at(0)).await.unwrap();
    assert_eq!(
        store.expire_lock(line, at(1_000_000)).await.unwrap(),
        None,
        "a lock without an expiry never runs out"
    );

    // A fenced release: only that holder's lock since then, and only once.
    assert_eq!(
        store.release_lock_if(line, "U0BOB", at(0)).await.unwrap(),
        None
    );
    assert_eq!(
        store.release_lock_if(line, "U0ALICE", at(5)).await.unwrap(),
        None
    );
    assert_eq!(
        store.release_lock_if(line, "U0ALICE", at(0)).await.unwrap(),
        Some(forever)
    );
    assert_eq!(
        store.release_lock_if(line, "U0ALICE", at(0)).await.unwrap(),
        None
    );
    assert!(store.locks().await.unwrap().iter().all(|(l, _)| l != line));
    assert!(
        !store
            .update_lock_if(line, "U0ALICE", at(0), &extended)
            .await
            .unwrap(),
        "a released lock is not brought back by an update"
    );
    assert_eq!(store.env_lock(line).await.unwrap(), None);
}

/// A sticky branch lock keeps its mark through the store, an extension and the list, and a
/// lock taken by hand over it (the holder re-locking) drops the mark.
pub async fn branch_locks(store: &dyn Store) {
    let t0: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
    let at = |mins: i64| t0 + chrono::Duration::minutes(mins);
    let line = "branchy/edge";
    let branch = EnvLock {
        user: "U0ALICE".into(),
        user_name: "alice".into(),
        reason: "feature/x is on edge".into(),
        at: at(0),
        expires_at: Some(at(240)),
        thread: None,
        reminded_at: None,
        branch: Some("feature/x".into()),
    };
    assert_eq!(
        store.acquire_lock(line, &branch, at(0)).await.unwrap(),
        branch
    );
    assert_eq!(
        store.lock_at(line, at(1)).await.unwrap().as_ref(),
        Some(&branch)
    );
    let moved = EnvLock {
        reason: "feature/y is on edge".into(),
        expires_at: Some(at(300)),
        branch: Some("feature/y".into()),
        ..branch.clone()
    };
    assert!(
        store
            .update_lock_if(line, "U0ALICE", at(0), &moved)
            .await
            .unwrap()
    );
    assert!(
        store
            .locks()
            .await
            .unwrap()
            .contains(&(line.to_owned(), moved.clone())),
        "the list shows the mark"
    );
    let by_hand = EnvLock {
        reason: "testing".into(),
        branch: None,
        ..moved.clone()
    };
    assert_eq!(
        store.acquire_lock(line, &by_hand, at(2)).await.unwrap(),
        by_hand
    );
    assert_eq!(store.env_lock(line).await.unwrap().unwrap().branch, None);
    assert_eq!(
        store.release_lock_if(line, "U0ALICE", at(0)).await.unwrap(),
        Some(by_hand)
    );
}
