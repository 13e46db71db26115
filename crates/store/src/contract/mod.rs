//! The behaviour every store keeps, one suite per role, run against both backends.

mod audit;
mod desk;
mod history;
mod locks;
pub mod outbox;
mod requests;
mod server;
pub mod stats;
#[cfg(test)]
mod tests;
mod web_actions;

pub use audit::audit;
pub use desk::{
    desk_line, desk_races, desk_retention, freezes, line_request, thread, ticket, tickets,
};
pub use history::history;
pub use locks::{branch_locks, lock_expiry, lock_fences};
pub use outbox::outbox;
pub use requests::{new_request, request_races, requests};
pub use server::RedisServer;
pub use stats::stats;
pub use web_actions::{web_action_races, web_actions};

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::*;

/// A queued run record of app `app` in `edge` under `key` (tests).
pub fn run(key: &str) -> RunRecord {
    RunRecord {
        key: key.into(),
        repo: "o/r".into(),
        deployment_id: 1,
        app: "app".into(),
        environment: "edge".into(),
        task: "deploy".into(),
        git_ref: "main".into(),
        sha: "a".repeat(40),
        creator: "alice".into(),
        state: RunState::Queued,
        description: String::new(),
        received_at: Utc::now(),
        started_at: None,
        finished_at: None,
        chat_ts: None,
        rollback: None,
        stages: Vec::new(),
    }
}

/// Store-wide facts: reachability, the queue depth, the link key.
pub async fn meta(store: &dyn Store) {
    store.ping().await.unwrap();
    store.queue_depth().await.unwrap();
    // The first key offered is kept; later offers get it back.
    assert_eq!(store.link_key("first key").await.unwrap(), "first key");
    assert_eq!(store.link_key("second key").await.unwrap(), "first key");
}

/// Run records, start markers (leases and takeovers), provider-stopped notes, status events,
/// and the history of runs.
pub async fn runs(store: &dyn Store) {
    let r = run("o/r/1");
    assert!(store.create_run(&r).await.unwrap());
    assert!(!store.create_run(&r).await.unwrap());
    let mut r2 = r.clone();
    r2.state = RunState::Success;
    store.put_run(&r2).await.unwrap();
    assert_eq!(store.get_run("o/r/1").await.unwrap(), Some(r2));
    store.delete_run("o/r/1").await.unwrap();
    assert_eq!(store.get_run("o/r/1").await.unwrap(), None);

    let m = StartMarker::sample("w", Utc::now());
    assert_eq!(store.mark_started("o/r/1", &m).await.unwrap(), None);
    let again = store.mark_started("o/r/1", &m).await.unwrap();
    assert_eq!(again.as_ref().map(|m| m.worker.as_str()), Some("w"));
    let m2 = StartMarker {
        pgid: Some(42),
        ..m.clone()
    };
    assert!(store.update_started("o/r/1", &m2).await.unwrap());
    assert_eq!(
        store
            .mark_started("o/r/1", &m2)
            .await
            .unwrap()
            .unwrap()
            .pgid,
        Some(42)
    );
    assert!(store.started("o/r/404").await.unwrap().is_none());
    assert!(
        !store.update_started("o/r/404", &m2).await.unwrap(),
        "no marker, no lease to renew"
    );

    // Leases: only the holder renews; a takeover is a compare-and-set on what was read.
    let read = store.started("o/r/1").await.unwrap().unwrap();
    assert_eq!(read.marker, m2);
    let other = StartMarker {
        worker: "w2".into(),
        ..m2.clone()
    };
    assert!(
        !store.update_started("o/r/1", &other).await.unwrap(),
        "another worker cannot renew the holder's lease"
    );
    let renewed = StartMarker {
        lease_until: Some(m2.at + chrono::Duration::seconds(90)),
        ..m2.clone()
    };
    assert!(store.update_started("o/r/1", &renewed).await.unwrap());
    assert!(
        !store
            .take_over_started("o/r/1", &read, &other)
            .await
            .unwrap(),
        "the marker was renewed after it was read"
    );
    let read = store.started("o/r/1").await.unwrap().unwrap();
    assert_eq!(read.marker, renewed);
    assert!(
        store
            .take_over_started("o/r/1", &read, &other)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_over_started("o/r/1", &read, &other)
            .await
            .unwrap(),
        "a takeover happens once"
    );
    assert_eq!(store.started("o/r/1").await.unwrap().unwrap().marker, other);
    assert!(
        !store.update_started("o/r/1", &renewed).await.unwrap(),
        "the old holder has lost its lease"
    );
    assert!(!store.provider_stopped("o/r/1", "w").await.unwrap());
    store.note_provider_stopped("o/r/1", "w").await.unwrap();
    assert!(store.provider_stopped("o/r/1", "w").await.unwrap());
    assert!(!store.provider_stopped("o/r/1", "w2").await.unwrap());
    assert!(!store.provider_stopped("o/r/2", "w").await.unwrap());

    store
        .record_status_event("o/r/1", "success", Utc::now())
        .await
        .unwrap();
    history(store).await;
}

/// Intake: delivery dedup, run creation, the line joined, the kept job, a released delivery.
pub async fn deliveries(store: &dyn Store) {
    // A batch behaves as its items one after the other: dedup by delivery and by run
    // within the batch, and the line in arrival order.
    let item = |delivery: &str, key: &str| AcceptItem {
        delivery_id: delivery.into(),
        run: run(key),
        line: "app/batch".into(),
        job: format!("{{\"job\": \"{key}\"}}"),
    };
    let out = store
        .accept_runs(&[
            item("b1", "o/r/10"),
            item("b1", "o/r/11"),
            item("b2", "o/r/10"),
            item("b3", "o/r/12"),
        ])
        .await
        .unwrap();
    let acc = |fresh_delivery, created| Accepted {
        fresh_delivery,
        created,
    };
    assert_eq!(
        out,
        [
            acc(true, true),
            acc(false, true),
            acc(true, false),
            acc(true, true)
        ]
    );
    assert_eq!(
        store.line("app/batch").await.unwrap(),
        ["o/r/10", "o/r/11", "o/r/12"]
    );
    assert!(store.accept_runs(&[]).await.unwrap().is_empty());
    assert_eq!(
        store.job("o/r/11").await.unwrap().as_deref(),
        Some(r#"{"job": "o/r/11"}"#),
        "the job of a created run is kept"
    );
    assert_eq!(store.job("o/r/99").await.unwrap(), None);
    // A released delivery is new again (the undo of an intake whose push failed).
    assert_eq!(
        store.accept_runs(&[item("b3", "o/r/13")]).await.unwrap(),
        [acc(false, true)]
    );
    store.release_delivery("b3").await.unwrap();
    assert_eq!(
        store.accept_runs(&[item("b3", "o/r/14")]).await.unwrap(),
        [acc(true, true)]
    );
}

/// Waiting lines and recent durations.
pub async fn lines(store: &dyn Store) {
    store.line_join("app/batch", "o/r/10").await.unwrap();
    store.line_join("app/edge", "a").await.unwrap();
    store.line_join("app/edge", "b").await.unwrap();
    store.line_join("app/edge", "a").await.unwrap();
    store.line_join("app/other", "c").await.unwrap();
    assert_eq!(store.line("app/edge").await.unwrap(), ["a", "b"]);
    store.line_leave("app/edge", "a").await.unwrap();
    store.line_join("app/edge", "a").await.unwrap();
    assert_eq!(store.line("app/edge").await.unwrap(), ["b", "a"]);
    assert_eq!(store.line("app/other").await.unwrap(), ["c"]);
    let mut heads = store.line_heads().await.unwrap();
    heads.sort();
    assert_eq!(
        heads,
        [
            ("app/batch".to_owned(), "o/r/10".to_owned()),
            ("app/edge".to_owned(), "b".to_owned()),
            ("app/other".to_owned(), "c".to_owned())
        ]
    );
    store.line_leave("app/other", "c").await.unwrap();
    assert!(
        store
            .line_heads()
            .await
            .unwrap()
            .iter()
            .all(|(line, _)| line != "app/other"),
        "an empty line has no head"
    );
    store.line_join("app/other", "c").await.unwrap();

    for i in 0..12 {
        store.push_duration("app/edge", f64::from(i)).await.unwrap();
    }
    let d = store.durations("app/edge").await.unwrap();
    assert_eq!(d.len(), DURATIONS_KEPT);
    assert_eq!(d[0], 11.0);
}

/// Environment locks: only the holder re-locks and clears, keyed by user id.
pub async fn locks(store: &dyn Store) {
    assert_eq!(store.env_lock("app/edge").await.unwrap(), None);
    let alice = EnvLock {
        user: "U0ALICE".into(),
        user_name: "alice".into(),
        reason: "testing".into(),
        at: Utc::now(),
        expires_at: None,
        thread: None,
        reminded_at: None,
        branch: None,
    };
    assert_eq!(store.set_env_lock("app/edge", &alice).await.unwrap(), alice);
    let alice_again = EnvLock {
        reason: "still testing".into(),
        ..alice.clone()
    };
    assert_eq!(
        store.set_env_lock("app/edge", &alice_again).await.unwrap(),
        alice_again,
        "the holder re-locks"
    );
    // Another user with the same display name is another user.
    let other_alice = EnvLock {
        user: "U0OTHER".into(),
        ..alice.clone()
    };
    assert_eq!(
        store.set_env_lock("app/edge", &other_alice).await.unwrap(),
        alice_again
    );
    assert_eq!(
        store.clear_env_lock("app/edge", "U0OTHER").await.unwrap(),
        Some(alice_again.clone())
    );
    assert_eq!(
        store.env_lock("app/edge").await.unwrap(),
        Some(alice_again.clone()),
        "only the holder clears the lock"
    );
    assert_eq!(
        store.clear_env_lock("app/edge", "U0ALICE").await.unwrap(),
        Some(alice_again)
    );
    assert_eq!(store.env_lock("app/edge").await.unwrap(), None);
    assert_eq!(
        store.clear_env_lock("app/edge", "U0ALICE").await.unwrap(),
        None
    );

    lock_expiry(store).await;
    lock_fences(store).await;
    branch_locks(store).await;
}

/// Run logs.
pub async fn logs(store: &dyn Store) {
    store
        .append_log("o/r/1", &["one".into(), "two".into()])
        .await
        .unwrap();
    store.append_log("o/r/1", &["three".into()]).await.unwrap();
    assert_eq!(
        store.read_log("o/r/1", 0).await.unwrap(),
        ["one", "two", "three"]
    );
    assert_eq!(store.read_log("o/r/1", 2).await.unwrap(), ["three"]);
    assert!(store.read_log("o/r/9", 0).await.unwrap().is_empty());
}

/// Retention: what a sweep deletes and what it keeps, the gauges' counts, idempotence.
pub async fn retention(store: &dyn Store) {
    // A history whose run is gone (swept only once retention has passed for it too).
    store
        .record_status_event("o/r/1", "success", Utc::now())
        .await
        .unwrap();

    let now = Utc::now();
    let day = chrono::Duration::days(1);
    let cutoff = now - day;
    let at = |state: RunState, received: DateTime<Utc>, finished: Option<DateTime<Utc>>| {
        move |key: &str| RunRecord {
            state,
            received_at: received,
            started_at: finished.map(|_| received),
            finished_at: finished,
            ..run(key)
        }
    };
    let before = store.size().await.unwrap();
    let old_done = at(RunState::Success, now - day * 3, Some(now - day * 3))("s/old/1");
    let old_failed = at(RunState::Failure, now - day * 3, Some(now - day * 2))("s/old/2");
    let old_queued = at(RunState::Queued, now - day * 3, None)("s/old/3");
    let old_running = at(RunState::InProgress, now - day * 3, None)("s/old/4");
    let fresh_done = at(RunState::Error, now, Some(now))("s/new/5");
    // Received long ago, finished within retention: kept until it is old itself.
    let late_done = at(RunState::Success, now - day * 3, Some(now - day / 2))("s/late/6");
    for r in [&old_done, &old_failed, &old_queued, &fresh_done, &late_done] {
        assert!(store.create_run(r).await.unwrap());
    }
    // A record first written by an overwrite is counted and swept like any other.
    store.put_run(&old_running).await.unwrap();
    // One accepted at intake (with its kept queue job), finished long ago.
    let accepted = at(RunState::Success, now - day * 3, Some(now - day * 3))("s/acc/9");
    let item = AcceptItem {
        delivery_id: "s-delivery-9".into(),
        run: RunRecord {
            state: RunState::Queued,
            finished_at: None,
            ..accepted.clone()
        },
        line: "app/sweep".into(),
        job: "{\"job\": 9}".into(),
    };
    assert!(store.accept_runs(&[item]).await.unwrap()[0].created);
    store.line_leave("app/sweep", &accepted.key).await.unwrap();
    store.put_run(&accepted).await.unwrap();
    store
        .note_provider_stopped(&old_done.key, "w")
        .await
        .unwrap();
    let marker = StartMarker::sample("w", now);
    for r in [&old_done, &old_failed, &old_running] {
        store.mark_started(&r.key, &marker).await.unwrap();
        store
            .record_status_event(&r.key, "success", r.received_at)
            .await
            .unwrap();
    }
    let lines: Vec<String> = vec!["héllo".into(), String::new(), "x".repeat(100)];
    let bytes: u64 = lines.iter().map(|l| log_line_bytes(l)).sum();
    assert_eq!(
        bytes,
        (6 + 1) + 1 + (100 + 1),
        "bytes, not characters, and a newline each"
    );
    for r in [&old_done, &old_queued, &fresh_done] {
        store.append_log(&r.key, &lines).await.unwrap();
    }
    // Histories of deployments faseng never ran: one old, one recent.
    store
        .record_status_event("s/none/7", "success", now - day * 2)
        .await
        .unwrap();
    store
        .record_status_event("s/none/8", "success", now)
        .await
        .unwrap();
    let size = store.size().await.unwrap();
    assert_eq!(size.runs, before.runs + 7);
    assert_eq!(size.log_bytes, before.log_bytes + 3 * bytes);

    let swept = store.sweep(cutoff).await.unwrap();
    assert_eq!(swept.runs, 3, "{swept:?}");
    assert_eq!(
        store.job(&accepted.key).await.unwrap(),
        None,
        "the kept job goes"
    );
    assert!(
        !store.provider_stopped(&old_done.key, "w").await.unwrap(),
        "the provider-stopped note goes"
    );
    assert_eq!(swept.log_bytes, bytes, "{swept:?}");
    assert_eq!(swept.status_histories, 1, "{swept:?}");
    for gone in [&old_done, &old_failed, &accepted] {
        assert_eq!(store.get_run(&gone.key).await.unwrap(), None);
        assert!(store.read_log(&gone.key, 0).await.unwrap().is_empty());
        assert_eq!(
            store.mark_started(&gone.key, &marker).await.unwrap(),
            None,
            "the start marker goes with the run"
        );
    }
    for kept in [&old_queued, &old_running, &fresh_done, &late_done] {
        assert_eq!(store.get_run(&kept.key).await.unwrap().as_ref(), Some(kept));
    }
    // The history goes with the runs.
    let history: Vec<String> = store
        .history(&RunQuery::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.key)
        .collect();
    for gone in [&old_done, &old_failed, &accepted] {
        assert!(!history.contains(&gone.key), "{} in {history:?}", gone.key);
    }
    for kept in [&old_queued, &old_running, &fresh_done, &late_done] {
        assert!(
            history.contains(&kept.key),
            "{} not in {history:?}",
            kept.key
        );
    }
    assert_eq!(store.read_log(&old_queued.key, 0).await.unwrap(), lines);
    let size = store.size().await.unwrap();
    // The two markers written by the probe above belong to no run; the gauges count runs.
    assert_eq!(size.runs, before.runs + 4);
    assert_eq!(size.log_bytes, before.log_bytes + 2 * bytes);

    // Again: nothing more to delete (several processes may sweep at once).
    let again = store.sweep(cutoff).await.unwrap();
    assert_eq!(again.runs + again.status_histories, 0, "{again:?}");
    assert_eq!(store.size().await.unwrap(), size);

    // Once retention has passed for them too, the rest of the finished runs go; the
    // queued and running ones stay.
    let swept = store.sweep(now + day).await.unwrap();
    assert_eq!(swept.runs, 2, "{swept:?}");
    assert_eq!(swept.log_bytes, bytes, "{swept:?}");
    // s/none/8, and o/r/1's (its run was deleted above).
    assert_eq!(swept.status_histories, 2, "{swept:?}");
    assert!(store.get_run(&old_queued.key).await.unwrap().is_some());
    assert!(store.get_run(&old_running.key).await.unwrap().is_some());
    // A deleted run's record, log and count: an intake rollback keeps the gauge right.
    store.delete_run(&old_queued.key).await.unwrap();
    assert_eq!(
        store.size().await.unwrap().runs,
        before.runs + 1,
        "deleting a run uncounts it"
    );

    // The release desk's records: placed after everything above, swept in a later round.
    desk_retention(store, now + day * 10).await;
    assert_eq!(store.size().await.unwrap().runs, before.runs + 1);
}

/// Duty leases, on a time moved by hand.
pub async fn duties(store: &dyn Store) {
    let t0 = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
    let ttl = Duration::from_secs(90);
    let duty = "reconcile";
    assert!(store.acquire_duty(duty, "a", at(0), ttl).await.unwrap());
    assert!(
        !store.acquire_duty(duty, "b", at(10), ttl).await.unwrap(),
        "a running lease is not taken"
    );
    assert!(
        store.acquire_duty(duty, "a", at(60), ttl).await.unwrap(),
        "the holder renews"
    );
    assert!(
        !store.acquire_duty(duty, "b", at(100), ttl).await.unwrap(),
        "a renewed lease runs from its renewal"
    );
    assert!(
        store
            .acquire_duty("other", "b", at(100), ttl)
            .await
            .unwrap(),
        "duties are independent"
    );
    assert!(
        store.acquire_duty(duty, "b", at(150), ttl).await.unwrap(),
        "a lease not renewed lapses at its end"
    );
    assert!(!store.acquire_duty(duty, "a", at(151), ttl).await.unwrap());
    store.release_duty(duty, "a").await.unwrap();
    assert!(
        !store.acquire_duty(duty, "a", at(152), ttl).await.unwrap(),
        "only the holder releases"
    );
    store.release_duty(duty, "b").await.unwrap();
    assert!(
        store.acquire_duty(duty, "a", at(152), ttl).await.unwrap(),
        "a released lease is free at once"
    );
    store.release_duty("never-taken", "a").await.unwrap();
}
