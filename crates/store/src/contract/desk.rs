//! The release desk's shared state: the line of requests, freezes and unfreezes, tickets.

use chrono::{DateTime, Utc};

use crate::{ChatThread, LineRequest, NewLineRequest, Store};

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
