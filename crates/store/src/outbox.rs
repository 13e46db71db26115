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

use async_trait::async_trait;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deploy_core::Notify;
use serde::{Deserialize, Serialize};

use crate::{RunRecord, RunState};

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

/// The outbox of statuses and chat edits still to send (see the module).
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Appends `entries` to their lanes of run `run`, in order,
    /// atomically. A status whose state was already written for the run is left out, as is
    /// a final state when one was written. With `fence: Some(worker)` nothing is written
    /// unless the run's start marker names that worker: `false` = fenced out.
    async fn outbox_push(
        &self,
        run: &str,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool>;

    /// Writes a run's final record and its last outbox entries (as [`Outbox::outbox_push`])
    /// at once, when the fence holds; `false` = fenced out, nothing written.
    async fn finish_run(
        &self,
        record: &RunRecord,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool>;

    /// Up to `limit` lanes with entries that are due at `now` (not held, not waiting for a
    /// retry), most overdue first.
    async fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<LaneKey>>;

    /// Claims a lane for `holder` until `until` (a holder renews its own claim this way) and
    /// returns up to `limit` of its entries, in order; `None` when another holder's claim is
    /// live or the lane waits for a retry. A claim that lapsed is taken over, in doubt.
    async fn outbox_claim(
        &self,
        lane: &LaneKey,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Option<ClaimedLane>>;

    /// Releases a claimed lane, deleting what is done, keeping the chat ts and rescheduling
    /// (see [`Settle`]); the number of entries left, or `None` when `holder` no longer held it.
    async fn outbox_settle(
        &self,
        lane: &LaneKey,
        holder: &str,
        settle: &Settle,
    ) -> anyhow::Result<Option<u64>>;

    /// Entries waiting in the outbox, all lanes (cheap: `/metrics` reads it).
    async fn outbox_depth(&self) -> anyhow::Result<u64>;
}
