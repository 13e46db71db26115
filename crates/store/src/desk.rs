//! What the release desk's records share: the chat thread something was asked from.

use serde::{Deserialize, Serialize};

/// Where in chat something was asked (a lock taken, a request made), so that what follows
/// (reminders, expiry, hand-off) is said in the same place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatThread {
    /// The chat adapter (`slack`, `shell`, …).
    pub adapter: String,
    /// The room's id (a Slack channel id).
    pub room: String,
    /// The room as shown (`#releases`; never compared).
    #[serde(default)]
    pub room_name: String,
    /// The thread within the room (a Slack `thread_ts`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}
