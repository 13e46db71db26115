//! The outbox: what faseng must still post (deployment statuses, chat edits and replies),
//! written to the store before it is sent, so a restart or an outage of GitHub or the chat
//! service loses nothing.
//!
//! Each deployment has two independent lanes, statuses and chat, so a chat outage never
//! delays a GitHub status. Entries are appended in order; a poster claims a lane (a lease
//! with an expiry, so two processes never send one lane at once and a dead process's claim
//! lapses), sends its entries in order, and settles: delivered entries are deleted, and on a
//! temporary failure the lane is rescheduled. A status for a state already written for the
//! deployment is never written again, and only one final state is ever written.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deploy_core::Notify;
use serde::{Deserialize, Serialize};

use super::RunState;

/// How long an entry is tried before it is abandoned (logged and deleted).
pub const OUTBOX_GIVE_UP: Duration = Duration::from_secs(24 * 3600);

/// How long a deployment's outbox bookkeeping (states written, the chat message faseng
/// posted) is kept after its last write.
pub const OUTBOX_META_TTL: Duration = Duration::from_secs(8 * 24 * 3600);

/// One of a deployment's two lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// GitHub deployment statuses.
    Status,
    /// Chat message edits and thread replies.
    Chat,
}

impl Lane {
    /// The lane's name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Status => "status",
            Lane::Chat => "chat",
        }
    }

    /// The lane named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "status" => Some(Lane::Status),
            "chat" => Some(Lane::Chat),
            _ => None,
        }
    }
}

/// One lane of one deployment (by run key, `owner/repo/id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneKey {
    /// The run key.
    pub run: String,
    /// Which lane.
    pub lane: Lane,
}

impl LaneKey {
    /// The lane `lane` of run `run`.
    pub fn new(run: &str, lane: Lane) -> Self {
        Self {
            run: run.to_owned(),
            lane,
        }
    }

    /// `lane:run`, as indexes in the store name it.
    pub fn member(&self) -> String {
        format!("{}:{}", self.lane.as_str(), self.run)
    }

    /// The lane a [`LaneKey::member`] string names.
    pub fn from_member(s: &str) -> Option<Self> {
        let (lane, run) = s.split_once(':')?;
        Some(Self::new(run, Lane::parse(lane)?))
    }
}

/// Something to post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxItem {
    /// A deployment status.
    Status {
        /// `owner/repo`.
        repo: String,
        /// The GitHub deployment id.
        deployment_id: u64,
        /// The state.
        state: RunState,
        /// The description.
        description: String,
        /// The log page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_url: Option<String>,
        /// The app's `<env>_url`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment_url: Option<String>,
    },
    /// New text for the deployment's chat message (the latest text wins).
    ChatText {
        /// Where the message is.
        notify: Notify,
        /// The message as its writer knew it (the payload's, or one faseng posted); `None`:
        /// post a new message unless the outbox knows one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<String>,
        /// The text.
        text: String,
    },
    /// A reply in the chat message's thread (delivered in order, once).
    ChatReply {
        /// Where the message is.
        notify: Notify,
        /// The message as its writer knew it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<String>,
        /// The text.
        text: String,
    },
}

impl OutboxItem {
    /// The lane the item goes in.
    pub fn lane(&self) -> Lane {
        match self {
            OutboxItem::Status { .. } => Lane::Status,
            OutboxItem::ChatText { .. } | OutboxItem::ChatReply { .. } => Lane::Chat,
        }
    }

    /// The status state, for a status.
    pub fn state(&self) -> Option<RunState> {
        match self {
            OutboxItem::Status { state, .. } => Some(*state),
            _ => None,
        }
    }
}

/// One entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// When it was written (it is abandoned [`OUTBOX_GIVE_UP`] later).
    pub written_at: DateTime<Utc>,
    /// What to post.
    pub item: OutboxItem,
}

impl OutboxEntry {
    /// The JSON kept in the store.
    pub(crate) fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    /// The status state's name (`""` for chat), for the store's dedup.
    pub(crate) fn state_name(&self) -> &'static str {
        self.item.state().map_or("", RunState::as_str)
    }

    /// The time scheduling uses for a batch of entries: the newest `written_at`.
    pub(crate) fn batch_time(entries: &[OutboxEntry]) -> DateTime<Utc> {
        entries
            .iter()
            .map(|e| e.written_at)
            .max()
            .unwrap_or_else(Utc::now)
    }
}

/// An entry in its lane, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its place in the lane (increasing).
    pub seq: u64,
    /// The entry.
    pub entry: OutboxEntry,
}

/// A lane a poster holds, with what it has to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedLane {
    /// The entries, in order (at most the limit asked for).
    pub entries: Vec<StoredEntry>,
    /// Failed attempts in a row so far.
    pub attempts: u32,
    /// The first entry's delivery outcome is unknown (an earlier attempt timed out or got a
    /// 5xx, or the lane was taken over from a claim that lapsed): check before sending it.
    pub doubt: bool,
    /// The chat message faseng posted itself for this deployment, if any.
    pub chat_ts: Option<String>,
    /// The lane was taken over from another holder whose lease lapsed.
    pub taken_over: bool,
}

/// A rescheduled lane: the next attempt and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRetry {
    /// Not before this.
    pub at: DateTime<Utc>,
    /// Failed attempts in a row, this one included.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// The first remaining entry's outcome is unknown.
    pub doubt: bool,
}

/// What a poster did with the lane it held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settle {
    /// Entries up to this sequence number are done (delivered, refused or abandoned):
    /// they are deleted.
    pub done_upto: Option<u64>,
    /// The chat message faseng posted itself, to edit from now on.
    pub chat_ts: Option<String>,
    /// `None`: the lane is free for its next entries at once; `Some`: retry later.
    pub retry: Option<SettleRetry>,
}

/// Milliseconds since the epoch, as the stores keep times.
pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[cfg(any(test, feature = "testing"))]
pub mod contract {
    //! The outbox part of the store contract, run against both stores.
    use super::super::{RunRecord, StartMarker, Store};
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    pub(crate) fn status(run_id: u64, state: RunState, secs: i64) -> OutboxEntry {
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

    pub(crate) fn chat(text: &str, secs: i64) -> OutboxEntry {
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

    pub(crate) async fn exercise(store: &dyn Store) {
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
        let mut record = super::super::contract::run(run);
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
        let mut r = super::super::contract::run(other);
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
}
