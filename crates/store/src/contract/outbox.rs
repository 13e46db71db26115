//! The outbox part of the store contract, run against both stores.

use chrono::{DateTime, Utc};
use deploy_core::Notify;

use crate::outbox::*;
use crate::{RunRecord, RunState, StartMarker, Store};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

/// A status entry of deployment `run_id`, written `secs` after the test epoch.
pub fn status(run_id: u64, state: RunState, secs: i64) -> OutboxEntry {
    OutboxEntry {
        written_at: at(secs),
        item: OutboxItem::Status {
            repo: "o/r".into(),
            deployment_id: run_id,
            state,
            description: format!("{} {}", state.as_str(), secs),
            log_url: None,
            environment_url: None,
        },
    }
}

/// A chat text entry, written `secs` after the test epoch.
pub fn chat(text: &str, secs: i64) -> OutboxEntry {
    OutboxEntry {
        written_at: at(secs),
        item: OutboxItem::ChatText {
            notify: Notify {
                adapter: "slack".into(),
                room: "C1".into(),
                ..Notify::default()
            },
            ts: None,
            text: text.into(),
        },
    }
}

fn states(c: &ClaimedLane) -> Vec<RunState> {
    c.entries
        .iter()
        .filter_map(|e| e.entry.item.state())
        .collect()
}

/// The outbox: order, dedup of states, claims, settling, fencing.
pub async fn outbox(store: &dyn Store) {
    let run = "o/r/500";
    let status_lane = LaneKey::new(run, Lane::Status);
    let chat_lane = LaneKey::new(run, Lane::Chat);
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
    assert!(store.outbox_due(at(0), 10).await.unwrap().is_empty());

    // Appended in order; a state already written is dropped, as is a second final.
    assert!(
        store
            .outbox_push(
                run,
                None,
                &[
                    status(500, RunState::Queued, 1),
                    chat("queued", 1),
                    status(500, RunState::Queued, 2),
                    chat("waiting", 2),
                ],
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .outbox_push(run, None, &[status(500, RunState::InProgress, 3)])
            .await
            .unwrap()
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 4);
    let mut due = store.outbox_due(at(3), 10).await.unwrap();
    due.sort();
    assert_eq!(due, [status_lane.clone(), chat_lane.clone()]);
    assert!(store.outbox_due(at(0), 10).await.unwrap().is_empty());

    // A claim is exclusive until it lapses.
    let claimed = store
        .outbox_claim(&status_lane, "p1", at(3), at(33), 10)
        .await
        .unwrap()
        .expect("due and free");
    assert_eq!(states(&claimed), [RunState::Queued, RunState::InProgress]);
    assert_eq!(claimed.entries[0].entry, status(500, RunState::Queued, 1));
    assert!(claimed.entries[0].seq < claimed.entries[1].seq);
    assert_eq!((claimed.attempts, claimed.doubt), (0, false));
    assert!(!claimed.taken_over);
    assert!(
        store
            .outbox_claim(&status_lane, "p2", at(4), at(34), 10)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.outbox_due(at(4), 10).await.unwrap(),
        std::slice::from_ref(&chat_lane),
        "a held lane is not due"
    );
    // The holder renews its own claim; a limit bounds what it gets.
    let renewed = store
        .outbox_claim(&status_lane, "p1", at(5), at(35), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states(&renewed), [RunState::Queued]);

    // The first is delivered, the second fails: rescheduled, with its doubt.
    let first = claimed.entries[0].seq;
    let retry = SettleRetry {
        at: at(60),
        attempts: 1,
        error: "HTTP 500".into(),
        doubt: true,
    };
    let left = store
        .outbox_settle(
            &status_lane,
            "p1",
            &Settle {
                done_upto: Some(first),
                chat_ts: None,
                retry: Some(retry),
            },
        )
        .await
        .unwrap();
    assert_eq!(left, Some(1));
    assert_eq!(store.outbox_depth().await.unwrap(), 3);
    assert!(
        store
            .outbox_claim(&status_lane, "p2", at(59), at(89), 10)
            .await
            .unwrap()
            .is_none(),
        "not due before its next attempt"
    );
    assert!(
        !store
            .outbox_due(at(59), 10)
            .await
            .unwrap()
            .contains(&status_lane)
    );
    assert!(
        store
            .outbox_due(at(60), 10)
            .await
            .unwrap()
            .contains(&status_lane)
    );
    // A new entry behind a failing one waits for it (the lane keeps its schedule).
    store
        .outbox_push(run, None, &[status(500, RunState::Success, 61)])
        .await
        .unwrap();
    assert!(
        store
            .outbox_push(run, None, &[status(500, RunState::Error, 62)])
            .await
            .unwrap(),
        "a second final state is dropped, not refused"
    );
    let again = store
        .outbox_claim(&status_lane, "p2", at(61), at(91), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states(&again), [RunState::InProgress, RunState::Success]);
    assert_eq!((again.attempts, again.doubt), (1, true));

    // p2 dies while sending; its claim lapses and p3 takes the lane over, in doubt.
    assert!(
        store
            .outbox_claim(&status_lane, "p3", at(90), at(120), 10)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .outbox_due(at(91), 10)
            .await
            .unwrap()
            .contains(&status_lane)
    );
    let taken = store
        .outbox_claim(&status_lane, "p3", at(91), at(121), 10)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.taken_over && taken.doubt);
    assert_eq!(states(&taken), [RunState::InProgress, RunState::Success]);
    // The dead holder's late settle is refused.
    assert_eq!(
        store
            .outbox_settle(&status_lane, "p2", &Settle::default())
            .await
            .unwrap(),
        None
    );
    let last = taken.entries[1].seq;
    assert_eq!(
        store
            .outbox_settle(
                &status_lane,
                "p3",
                &Settle {
                    done_upto: Some(last),
                    ..Settle::default()
                }
            )
            .await
            .unwrap(),
        Some(0)
    );
    assert!(
        !store
            .outbox_due(at(200), 10)
            .await
            .unwrap()
            .contains(&status_lane)
    );
    // Written once means written: a delivered state is not queued again.
    store
        .outbox_push(
            run,
            None,
            &[
                status(500, RunState::Success, 201),
                status(500, RunState::Queued, 201),
            ],
        )
        .await
        .unwrap();
    assert!(
        !store
            .outbox_due(at(201), 10)
            .await
            .unwrap()
            .contains(&status_lane)
    );

    // Chat: the ts faseng posted is kept for later claims (after a restart too).
    let c = store
        .outbox_claim(&chat_lane, "p1", at(300), at(330), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.entries.len(), 2);
    assert_eq!(c.chat_ts, None);
    assert_eq!(
        store
            .outbox_settle(
                &chat_lane,
                "p1",
                &Settle {
                    done_upto: Some(c.entries[1].seq),
                    chat_ts: Some("1700.01".into()),
                    retry: None,
                }
            )
            .await
            .unwrap(),
        Some(0)
    );
    store
        .outbox_push(run, None, &[chat("done", 301)])
        .await
        .unwrap();
    let c = store
        .outbox_claim(&chat_lane, "p4", at(301), at(331), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.chat_ts.as_deref(), Some("1700.01"));
    assert_eq!(c.entries.len(), 1);
    // Entries written while the lane is held are due once it is released.
    store
        .outbox_push(run, None, &[chat("later", 302)])
        .await
        .unwrap();
    assert_eq!(
        store
            .outbox_settle(
                &chat_lane,
                "p4",
                &Settle {
                    done_upto: Some(c.entries[0].seq),
                    ..Settle::default()
                }
            )
            .await
            .unwrap(),
        Some(1)
    );
    assert!(
        store
            .outbox_due(at(302), 10)
            .await
            .unwrap()
            .contains(&chat_lane)
    );
    let c = store
        .outbox_claim(&chat_lane, "p4", at(302), at(332), 10)
        .await
        .unwrap()
        .unwrap();
    store
        .outbox_settle(
            &chat_lane,
            "p4",
            &Settle {
                done_upto: Some(c.entries[0].seq),
                ..Settle::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
    // An empty lane claims as nothing to do.
    if let Some(c) = store
        .outbox_claim(&chat_lane, "p4", at(400), at(430), 10)
        .await
        .unwrap()
    {
        assert!(c.entries.is_empty());
    }

    fenced(store).await;
}

/// `Some(holder)` writes only while the run's start marker names that worker.
async fn fenced(store: &dyn Store) {
    let run = "o/r/501";
    let lane = LaneKey::new(run, Lane::Status);
    let mut record = super::run(run);
    record.deployment_id = 501;
    store.create_run(&record).await.unwrap();
    // No start marker yet: a fenced write is refused, an unfenced one is not.
    assert!(
        !store
            .outbox_push(run, Some("w1"), &[status(501, RunState::Queued, 1)])
            .await
            .unwrap()
    );
    assert!(store.outbox_due(at(1), 10).await.unwrap().is_empty());
    let marker = StartMarker::sample("w1", Utc::now());
    store.mark_started(run, &marker).await.unwrap();
    assert!(
        store
            .outbox_push(run, Some("w1"), &[status(501, RunState::InProgress, 2)])
            .await
            .unwrap()
    );
    assert!(
        !store
            .outbox_push(run, Some("w2"), &[status(501, RunState::Queued, 3)])
            .await
            .unwrap()
    );
    let finished = RunRecord {
        state: RunState::Success,
        ..record.clone()
    };
    // Fenced out: neither the record nor its entries are written.
    assert!(
        !store
            .finish_run(
                &finished,
                Some("w2"),
                &[status(501, RunState::Success, 4), chat("done", 4)]
            )
            .await
            .unwrap()
    );
    assert_eq!(store.get_run(run).await.unwrap(), Some(record.clone()));
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
    // The fence holds: both are written, at once.
    assert!(
        store
            .finish_run(
                &finished,
                Some("w1"),
                &[status(501, RunState::Success, 4), chat("done", 4)]
            )
            .await
            .unwrap()
    );
    assert_eq!(store.get_run(run).await.unwrap(), Some(finished.clone()));
    assert_eq!(store.outbox_depth().await.unwrap(), 3);
    let c = store
        .outbox_claim(&lane, "p1", at(5), at(35), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states(&c), [RunState::InProgress, RunState::Success]);
    // Unfenced (a run that never started): written whatever the marker says.
    let other = "o/r/502";
    let mut r = super::run(other);
    r.state = RunState::Error;
    assert!(
        store
            .finish_run(&r, None, &[status(502, RunState::Error, 6)])
            .await
            .unwrap()
    );
    assert_eq!(store.get_run(other).await.unwrap(), Some(r));
    store
        .outbox_settle(
            &lane,
            "p1",
            &Settle {
                done_upto: Some(c.entries[1].seq),
                ..Settle::default()
            },
        )
        .await
        .unwrap();
    let lane = LaneKey::new(other, Lane::Status);
    let c = store
        .outbox_claim(&lane, "p1", at(7), at(37), 10)
        .await
        .unwrap()
        .unwrap();
    store
        .outbox_settle(
            &lane,
            "p1",
            &Settle {
                done_upto: Some(c.entries[0].seq),
                ..Settle::default()
            },
        )
        .await
        .unwrap();
    let chat_lane = LaneKey::new(run, Lane::Chat);
    let c = store
        .outbox_claim(&chat_lane, "p1", at(8), at(38), 10)
        .await
        .unwrap()
        .unwrap();
    store
        .outbox_settle(
            &chat_lane,
            "p1",
            &Settle {
                done_upto: Some(c.entries[0].seq),
                ..Settle::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
}
