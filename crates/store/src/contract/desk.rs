//! The release desk's shared state: the line of requests, freezes and unfreezes, tickets.

use chrono::{DateTime, Utc};

use crate::{
    Allowance, ChatThread, DeskTicket, EnvLock, Freeze, LineRequest, NewFreeze, NewLineRequest,
    Store, UnfreezeGrant,
};

/// 10:00 on a Sunday in December 2026: the desk tests' time zero.
fn t0() -> DateTime<Utc> {
    "2026-12-06T10:00:00Z".parse().unwrap()
}

/// `mins` minutes after [`t0`].
fn at(mins: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::minutes(mins)
}

/// A Slack thread in `#release`.
pub fn thread(ts: &str) -> ChatThread {
    ChatThread {
        adapter: "slack".into(),
        room: "C0RELEASE".into(),
        room_name: "#release".into(),
        thread: Some(ts.into()),
    }
}

/// `user` asking at minute `mins` to deploy `git_ref` to `line` when free, for an hour.
pub fn line_request(line: &str, user: &str, git_ref: &str, mins: i64) -> NewLineRequest {
    let app = line.split('/').next().unwrap_or(line);
    let env = line.split('/').nth(1).unwrap_or("");
    NewLineRequest {
        line: line.into(),
        user: user.into(),
        user_name: user.to_lowercase(),
        git_ref: git_ref.into(),
        command: format!("deploy {app}/{git_ref} to {env}"),
        chat: thread(&format!("1765015200.{mins:06}")),
        at: at(mins),
        expires_at: at(mins + 60),
    }
}

/// The line of requests: arrival order, one request per user and line, positions,
/// cancels and the one-winner take.
pub async fn desk_line(store: &dyn Store) {
    let line = "demo/staging";
    assert!(store.line_requests(line).await.unwrap().is_empty());
    assert_eq!(store.leave_line(line, "U0ALICE").await.unwrap(), None);
    assert_eq!(store.take_line_request(line, 1).await.unwrap(), None);

    let alice = NewLineRequest {
        expires_at: at(10),
        ..line_request(line, "U0ALICE", "main", 0)
    };
    let (a, place) = store.join_line(&alice).await.unwrap();
    assert_eq!(place, 1);
    assert_eq!(a, LineRequest::new(a.id, alice.clone()), "kept as asked");
    // Whatever a name holds survives the trip (quotes, slashes, other scripts).
    let bob = NewLineRequest {
        user_name: "Bøb \"the\" builder / ops 🚀".into(),
        ..line_request(line, "U0BOB", "feature/x", 1)
    };
    let (b, place) = store.join_line(&bob).await.unwrap();
    assert_eq!((b.user_name.as_str(), place), (bob.user_name.as_str(), 2));
    let (c, place) = store
        .join_line(&line_request(line, "U0CAROL", "v1.2", 2))
        .await
        .unwrap();
    assert_eq!(place, 3);
    assert!(a.id < b.id && b.id < c.id, "ids grow: {a:?} {b:?} {c:?}");
    assert_eq!(
        store.line_requests(line).await.unwrap(),
        [a.clone(), b.clone(), c.clone()],
        "arrival order"
    );

    // Asking again keeps the place and first arrival, and takes the rest.
    let bob_again = NewLineRequest {
        git_ref: "feature/y".into(),
        command: "deploy demo/feature/y to staging".into(),
        chat: thread("1765015999.000001"),
        at: at(5),
        expires_at: at(65),
        ..bob.clone()
    };
    let (b2, place) = store.join_line(&bob_again).await.unwrap();
    assert_eq!(place, 2);
    assert_eq!(
        b2,
        LineRequest {
            at: bob.at,
            ..LineRequest::new(b.id, bob_again.clone())
        }
    );
    assert_eq!(
        store.line_requests(line).await.unwrap(),
        [a.clone(), b2.clone(), c.clone()]
    );

    // A request that has run out (alice's, at 10) is not ahead of anyone.
    let (d, place) = store
        .join_line(&line_request(line, "U0DAVE", "main", 11))
        .await
        .unwrap();
    assert_eq!(place, 3, "behind bob and carol only");
    let (_, place) = store.join_line(&bob_again).await.unwrap();
    assert_eq!(place, 2, "positions are counted at the joiner's time");
    let (_, place) = store
        .join_line(&NewLineRequest {
            at: at(11),
            ..bob_again.clone()
        })
        .await
        .unwrap();
    assert_eq!(place, 1);
    assert_eq!(
        store.line_requests(line).await.unwrap().len(),
        4,
        "a request that ran out stays until taken"
    );

    // Lines are separate; the ones with requests are listed.
    let (e, place) = store
        .join_line(&line_request("demo/production", "U0ALICE", "main", 12))
        .await
        .unwrap();
    assert_eq!(place, 1);
    assert!(e.id > d.id);
    assert_eq!(
        store.waiting_lines().await.unwrap(),
        ["demo/production", "demo/staging"]
    );
    assert_eq!(
        store.take_line_request(line, e.id).await.unwrap(),
        None,
        "an id from another line"
    );

    // Cancel: the user's own request, once.
    assert_eq!(store.leave_line(line, "U0CAROL").await.unwrap(), Some(c));
    assert_eq!(store.leave_line(line, "U0CAROL").await.unwrap(), None);
    assert_eq!(store.leave_line(line, "U0NOBODY").await.unwrap(), None);
    // Taken (hand-off, expiry): as it is when taken, once.
    assert_eq!(
        store.take_line_request(line, b.id).await.unwrap(),
        Some(b2.clone())
    );
    assert_eq!(store.take_line_request(line, b.id).await.unwrap(), None);
    assert_eq!(store.take_line_request(line, a.id).await.unwrap(), Some(a));
    assert_eq!(
        store.line_requests(line).await.unwrap(),
        std::slice::from_ref(&d)
    );
    // Back in line after leaving: a new request, at the end.
    let (b3, place) = store.join_line(&bob).await.unwrap();
    assert!(b3.id > e.id && place == 2, "{b3:?} at {place}");
    assert_eq!(b3.at, bob.at);
    assert_eq!(store.leave_line(line, "U0DAVE").await.unwrap(), Some(d));
    assert_eq!(store.leave_line(line, "U0BOB").await.unwrap(), Some(b3));
    assert!(store.line_requests(line).await.unwrap().is_empty());
    assert_eq!(
        store.waiting_lines().await.unwrap(),
        ["demo/production"],
        "an empty line is not waiting"
    );
    store
        .leave_line("demo/production", "U0ALICE")
        .await
        .unwrap();
    assert!(store.waiting_lines().await.unwrap().is_empty());
}

/// Freezes made in chat (listed while not ended, by start) and unfreeze grants (one per
/// user, app and environment; over at their end).
pub async fn freezes(store: &dyn Store) {
    assert!(store.freezes(at(0)).await.unwrap().is_empty());
    let freeze = |app: Option<&str>, env: Option<&str>, from: i64, until: i64| NewFreeze {
        app: app.map(Into::into),
        environment: env.map(Into::into),
        from: at(from),
        until: at(until),
        reason: format!("freeze from {from}"),
        by: "U0ALICE".into(),
        by_name: "alice".into(),
        chat: Some(thread("1765015200.000001")),
    };
    let everything = freeze(None, None, 0, 60);
    let live = NewFreeze {
        chat: None,
        ..freeze(Some("demo"), Some("live"), 30, 90)
    };
    let ended = freeze(Some("web"), None, -120, -60);
    let coming = freeze(Some("demo"), Some("staging"), 120, 180);
    let also_at_30 = freeze(None, Some("live"), 30, 45);
    let mut kept = Vec::new();
    for f in [&everything, &live, &ended, &coming, &also_at_30] {
        let made = store.add_freeze(f).await.unwrap();
        assert_eq!(made, Freeze::new(made.id, f.clone()), "kept as made");
        kept.push(made);
    }
    assert!(kept.windows(2).all(|w| w[0].id < w[1].id), "ids grow");
    let [everything, live, _ended, coming, also_at_30] = <[Freeze; 5]>::try_from(kept).unwrap();
    assert_eq!(
        store.freezes(at(0)).await.unwrap(),
        [
            everything.clone(),
            live.clone(),
            also_at_30.clone(),
            coming.clone()
        ],
        "in force and coming, by start; the ended one is not listed"
    );
    assert_eq!(
        store.freezes(at(60)).await.unwrap(),
        [live.clone(), coming.clone()],
        "a freeze is over at its end"
    );
    // To the nanosecond, whatever the backend indexes by.
    let brief = NewFreeze {
        until: at(200) + chrono::Duration::microseconds(500),
        ..freeze(Some("api"), None, 199, 0)
    };
    let brief = store.add_freeze(&brief).await.unwrap();
    let ends = |now| async move {
        store
            .freezes(now)
            .await
            .unwrap()
            .iter()
            .any(|f| f.id == brief.id)
    };
    assert!(ends(at(200) + chrono::Duration::microseconds(499)).await);
    assert!(!ends(at(200) + chrono::Duration::microseconds(500)).await);
    assert_eq!(store.freezes(at(181)).await.unwrap().len(), 1);

    // Unfreezes: one per user, app and environment.
    let grant = |app: &str, env: &str, user: &str, until: i64| UnfreezeGrant {
        app: app.into(),
        environment: env.into(),
        user: user.into(),
        user_name: user.to_lowercase(),
        reason: "hotfix".into(),
        at: at(0),
        until: at(until),
    };
    assert_eq!(
        store
            .unfreeze_of("demo", "live", "U0ALICE", at(0))
            .await
            .unwrap(),
        None
    );
    let alice = grant("demo", "live", "U0ALICE", 30);
    store.grant_unfreeze(&alice).await.unwrap();
    let of = |app: &'static str, env: &'static str, user: &'static str, mins: i64| async move {
        store.unfreeze_of(app, env, user, at(mins)).await.unwrap()
    };
    assert_eq!(of("demo", "live", "U0ALICE", 29).await, Some(alice.clone()));
    assert_eq!(
        of("demo", "live", "U0ALICE", 30).await,
        None,
        "over at its end"
    );
    assert_eq!(of("demo", "live", "U0BOB", 0).await, None, "for one person");
    assert_eq!(of("demo", "staging", "U0ALICE", 0).await, None);
    assert_eq!(of("web", "live", "U0ALICE", 0).await, None);
    let alice_again = UnfreezeGrant {
        reason: "second hotfix".into(),
        at: at(40),
        ..grant("demo", "live", "U0ALICE", 70)
    };
    store.grant_unfreeze(&alice_again).await.unwrap();
    assert_eq!(
        of("demo", "live", "U0ALICE", 69).await,
        Some(alice_again.clone()),
        "a new grant replaces the old"
    );
    let bob = grant("demo", "live", "U0BOB", 50);
    let carol = grant("api", "live", "U0CAROL", 60);
    let dave = grant("api", "edge", "U0DAVE", 10);
    for g in [&bob, &carol, &dave] {
        store.grant_unfreeze(g).await.unwrap();
    }
    assert_eq!(
        store.unfreezes(at(45)).await.unwrap(),
        [carol.clone(), alice_again.clone(), bob.clone()],
        "by app, environment and user; ended ones left out"
    );
    assert_eq!(store.unfreezes(at(60)).await.unwrap(), [alice_again]);
    assert!(store.unfreezes(at(70)).await.unwrap().is_empty());
}

/// A ticket for `user` to deploy `sha` of `app` to `environment`, issued at minute `mins`
/// for ten minutes.
pub fn ticket(app: &str, environment: &str, sha: &str, user: &str, mins: i64) -> DeskTicket {
    DeskTicket {
        id: DeskTicket::new_id().unwrap(),
        app: app.into(),
        environment: environment.into(),
        sha: sha.into(),
        user: user.into(),
        user_name: user.to_lowercase(),
        allowed_by: vec![Allowance::Lock, Allowance::Request(7)],
        at: at(mins),
        expires_at: at(mins + 10),
    }
}

/// Desk tickets: redeemed once, only for their app, environment and sha, only before
/// they run out; a ticket that does not match stays unused.
pub async fn tickets(store: &dyn Store) {
    let sha = "a".repeat(40);
    let t = DeskTicket {
        expires_at: at(10) + chrono::Duration::microseconds(500),
        ..ticket("demo", "live", &sha, "U0ALICE", 0)
    };
    store.issue_ticket(&t).await.unwrap();
    let redeem = |id: String, app: &'static str, env: &'static str, sha: String, now| async move {
        store.redeem_ticket(&id, app, env, &sha, now).await.unwrap()
    };
    let other_sha = "b".repeat(40);
    for (id, app, env, sha, why) in [
        (t.id.clone(), "web", "live", sha.clone(), "another app"),
        (
            t.id.clone(),
            "demo",
            "staging",
            sha.clone(),
            "another environment",
        ),
        (
            t.id.clone(),
            "demo",
            "live",
            other_sha.clone(),
            "another sha",
        ),
        (
            format!("{}0", t.id),
            "demo",
            "live",
            sha.clone(),
            "another id",
        ),
        (String::new(), "demo", "live", sha.clone(), "no id"),
    ] {
        assert_eq!(redeem(id, app, env, sha, at(1)).await, None, "{why}");
    }
    assert_eq!(
        redeem(t.id.clone(), "demo", "live", sha.clone(), t.expires_at).await,
        None,
        "a ticket is over at its expiry, to the nanosecond"
    );
    assert_eq!(
        redeem(
            t.id.clone(),
            "demo",
            "live",
            sha.clone(),
            t.expires_at - chrono::Duration::nanoseconds(1)
        )
        .await,
        Some(t.clone()),
        "what did not match left it unused; redeemed as issued"
    );
    assert_eq!(
        redeem(t.id.clone(), "demo", "live", sha.clone(), at(1)).await,
        None,
        "single use"
    );

    // Issuing again under the same id replaces the ticket.
    let first = ticket("demo", "live", &sha, "U0ALICE", 20);
    store.issue_ticket(&first).await.unwrap();
    let second = DeskTicket {
        sha: other_sha.clone(),
        allowed_by: vec![Allowance::Unfreeze],
        ..first.clone()
    };
    store.issue_ticket(&second).await.unwrap();
    assert_eq!(
        redeem(first.id.clone(), "demo", "live", sha.clone(), at(21)).await,
        None
    );
    assert_eq!(
        redeem(first.id.clone(), "demo", "live", other_sha, at(21)).await,
        Some(second)
    );
}

/// Retention of the desk's records: what ended or ran out (a release request: was over and
/// last changed) before the cutoff goes, the rest stays. `cutoff` is later than anything
/// else the store holds ends.
pub async fn desk_retention(store: &dyn Store, cutoff: DateTime<Utc>) {
    let min = chrono::Duration::minutes(1);
    let (before, after) = (cutoff - min, cutoff + min);
    let freeze = |until| NewFreeze {
        app: Some("demo".into()),
        environment: None,
        from: cutoff - min * 60,
        until,
        reason: "retention".into(),
        by: "U0ALICE".into(),
        by_name: "alice".into(),
        chat: None,
    };
    store.add_freeze(&freeze(before)).await.unwrap();
    let kept_freeze = store.add_freeze(&freeze(after)).await.unwrap();
    let grant = |user: &str, until| UnfreezeGrant {
        app: "demo".into(),
        environment: "live".into(),
        user: user.into(),
        user_name: user.to_lowercase(),
        reason: "retention".into(),
        at: cutoff - min * 60,
        until,
    };
    store
        .grant_unfreeze(&grant("U0ALICE", before))
        .await
        .unwrap();
    let kept_grant = grant("U0BOB", after);
    store.grant_unfreeze(&kept_grant).await.unwrap();
    let sha = "c".repeat(40);
    let old_ticket = DeskTicket {
        expires_at: before,
        ..ticket("demo", "live", &sha, "U0ALICE", 0)
    };
    let kept_ticket = DeskTicket {
        expires_at: after,
        ..ticket("demo", "live", &sha, "U0ALICE", 0)
    };
    for t in [&old_ticket, &kept_ticket] {
        store.issue_ticket(t).await.unwrap();
    }
    let request = |line: &str, user: &str, expires_at| NewLineRequest {
        at: cutoff - min * 60,
        expires_at,
        ..line_request(line, user, "main", 0)
    };
    store
        .join_line(&request("sweep/staging", "U0ALICE", before))
        .await
        .unwrap();
    let (kept_request, _) = store
        .join_line(&request("sweep/staging", "U0BOB", after))
        .await
        .unwrap();
    store
        .join_line(&request("sweep/live", "U0ALICE", before))
        .await
        .unwrap();

    let (kept_requests, old_request) = super::requests::requests_for_retention(store, cutoff).await;

    let swept = store.sweep(cutoff).await.unwrap();
    assert_eq!(
        (
            swept.freezes,
            swept.unfreezes,
            swept.tickets,
            swept.line_requests,
            swept.requests
        ),
        (1, 1, 1, 2, 1),
        "{swept:?}"
    );
    assert_eq!(store.request(old_request.id).await.unwrap(), None);
    assert_eq!(
        store.requests(Some("sweep"), false).await.unwrap(),
        kept_requests,
        "open ones stay however old, and those changed since"
    );
    // Asked about a time before they ended, the deleted ones are not there any more.
    let earlier = cutoff - min * 2;
    assert_eq!(store.freezes(earlier).await.unwrap(), [kept_freeze]);
    assert_eq!(store.unfreezes(earlier).await.unwrap(), [kept_grant]);
    assert_eq!(
        store
            .redeem_ticket(&old_ticket.id, "demo", "live", &sha, earlier)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.line_requests("sweep/staging").await.unwrap(),
        [kept_request]
    );
    assert!(
        !store
            .waiting_lines()
            .await
            .unwrap()
            .contains(&"sweep/live".to_owned()),
        "a line whose requests all went is not waiting"
    );
    let again = store.sweep(cutoff).await.unwrap();
    assert_eq!(
        (
            again.freezes,
            again.unfreezes,
            again.tickets,
            again.line_requests,
            again.requests
        ),
        (0, 0, 0, 0, 0),
        "{again:?}"
    );
    assert_eq!(
        store
            .redeem_ticket(&kept_ticket.id, "demo", "live", &sha, earlier)
            .await
            .unwrap(),
        Some(kept_ticket)
    );
}

/// `call` eight times at once, alternately on `a` and `b` (two processes sharing a store).
pub(super) async fn race<'s, T, F, Fut>(a: &'s dyn Store, b: &'s dyn Store, call: F) -> Vec<T>
where
    F: Fn(&'s dyn Store, usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let on = |i: usize| call(if i.is_multiple_of(2) { a } else { b }, i);
    let (r0, r1, r2, r3, r4, r5, r6, r7) =
        tokio::join!(on(0), on(1), on(2), on(3), on(4), on(5), on(6), on(7));
    vec![r0, r1, r2, r3, r4, r5, r6, r7]
}

/// How many of `results` won (are `Some`).
pub(super) fn winners<T>(results: Vec<anyhow::Result<Option<T>>>) -> usize {
    results
        .into_iter()
        .map(|r| r.unwrap())
        .filter(Option::is_some)
        .count()
}

/// What two processes race on has exactly one winner: taking a request from the line,
/// redeeming a ticket, releasing or expiring a lock; and joins at once keep one request per
/// user and distinct places.
pub async fn desk_races(a: &dyn Store, b: &dyn Store) {
    let sha = "d".repeat(40);
    let t = ticket("race", "live", &sha, "U0ALICE", 0);
    a.issue_ticket(&t).await.unwrap();
    let redeemed = race(a, b, |s, _| {
        s.redeem_ticket(&t.id, "race", "live", &sha, at(1))
    })
    .await;
    assert_eq!(winners(redeemed), 1, "a ticket is redeemed once");

    let line = "race/staging";
    let (r, _) = a
        .join_line(&line_request(line, "U0ALICE", "main", 0))
        .await
        .unwrap();
    let taken = race(a, b, |s, _| s.take_line_request(line, r.id)).await;
    assert_eq!(winners(taken), 1, "a request is handed off once");
    let (r, _) = a
        .join_line(&line_request(line, "U0ALICE", "main", 0))
        .await
        .unwrap();
    let taken = race(a, b, |s, i| async move {
        if i.is_multiple_of(2) {
            s.take_line_request(line, r.id).await
        } else {
            s.leave_line(line, "U0ALICE").await
        }
    })
    .await;
    assert_eq!(winners(taken), 1, "taken or cancelled, once");

    // Eight users join at once: eight requests, eight places.
    let users: Vec<String> = (0..8).map(|i| format!("U0RACER{i}")).collect();
    let joined = race(a, b, |s, i| {
        let r = line_request(line, &users[i], "main", 1);
        async move { s.join_line(&r).await.unwrap() }
    })
    .await;
    let mut places: Vec<usize> = joined.iter().map(|(_, place)| *place).collect();
    places.sort();
    assert_eq!(places, (1..=8).collect::<Vec<_>>());
    let order: Vec<String> = a
        .line_requests(line)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.user)
        .collect();
    let mut by_place = joined.clone();
    by_place.sort_by_key(|(_, place)| *place);
    assert_eq!(
        order,
        by_place
            .into_iter()
            .map(|(r, _)| r.user)
            .collect::<Vec<_>>(),
        "the places said are the line's order"
    );
    // One user joining eight times at once: one request.
    let again = race(a, b, |s, i| {
        let r = NewLineRequest {
            git_ref: format!("v{i}"),
            ..line_request(line, "U0TWICE", "main", 2)
        };
        async move { s.join_line(&r).await.unwrap() }
    })
    .await;
    assert!(
        again
            .iter()
            .all(|(r, place)| r.id == again[0].0.id && *place == 9)
    );
    assert_eq!(a.line_requests(line).await.unwrap().len(), 9);

    let lock = EnvLock {
        user: "U0ALICE".into(),
        user_name: "alice".into(),
        reason: "race".into(),
        at: at(0),
        expires_at: Some(at(60)),
        thread: Some(thread("1765015200.000009")),
        reminded_at: None,
        branch: None,
    };
    a.acquire_lock(line, &lock, at(0)).await.unwrap();
    let released = race(a, b, |s, _| s.release_lock_if(line, "U0ALICE", at(0))).await;
    assert_eq!(winners(released), 1, "a lock is released once");
    a.acquire_lock(line, &lock, at(0)).await.unwrap();
    let expired = race(a, b, |s, _| s.expire_lock(line, at(60))).await;
    assert_eq!(winners(expired), 1, "a lock expires once");
    assert_eq!(b.env_lock(line).await.unwrap(), None);
}
