//! What handlers know about the chat they answer in, and how they answer: a [`ChatContext`]
//! in, [`Reply`] values (deploy-core's neutral chat message) out through an [`Outbox`]. Transports (Slack, the shell) implement
//! the outbox; handlers never see a transport.

use async_trait::async_trait;
pub use deploy_core::chat::Tone;
use deploy_core::chat::{Message, plain};
use deploy_store::ChatThread;

/// The adapter and room of actions from the dashboard.
pub const DASHBOARD: &str = "dashboard";

/// Who said a command, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatContext {
    /// Chat adapter name, as put into `payload.notify.adapter` (`slack`, `shell`).
    pub adapter: String,
    /// Channel id.
    pub room_id: String,
    /// Channel name, without `#` (empty for a DM).
    pub room_name: String,
    /// User id.
    pub user_id: String,
    /// User name.
    pub user_name: String,
    /// The id (`ts`) of the message that carried the command, if any.
    pub message_id: Option<String>,
    /// The thread the command was typed in, if any.
    pub thread_id: Option<String>,
    /// True for a direct message with the bot.
    pub direct: bool,
}

impl ChatContext {
    /// A context for the terminal adapter.
    pub fn shell(room: &str, user: &str) -> Self {
        Self {
            adapter: "shell".to_owned(),
            room_id: room.to_owned(),
            room_name: room.to_owned(),
            user_id: user.to_owned(),
            user_name: user.to_owned(),
            message_id: None,
            thread_id: None,
            direct: false,
        }
    }

    /// A signed-in dashboard user's action (a web action), in the pseudo-room `dashboard`: no
    /// chat to answer in (the reply is stored with the action), no app's `allowed_rooms` to
    /// pass (the dashboard checked who may act), no chat message for faseng to edit.
    pub fn dashboard(user_id: &str, user_name: &str) -> Self {
        Self {
            adapter: DASHBOARD.to_owned(),
            room_id: DASHBOARD.to_owned(),
            room_name: DASHBOARD.to_owned(),
            user_id: user_id.to_owned(),
            user_name: user_name.to_owned(),
            message_id: None,
            thread_id: None,
            direct: false,
        }
    }

    /// True for a dashboard user's action ([`ChatContext::dashboard`]).
    pub fn is_dashboard(&self) -> bool {
        self.adapter == DASHBOARD
    }

    /// Where this command was said, as the store keeps it: the room, and the thread that
    /// follow-ups (reminders, hand-offs, expiry) go to — the command's thread, else a new
    /// thread under the command's message.
    pub fn chat_thread(&self) -> ChatThread {
        ChatThread {
            adapter: self.adapter.clone(),
            room: self.room_id.clone(),
            room_name: self.room_name.clone(),
            thread: self.thread_id.clone().or_else(|| self.message_id.clone()),
        }
    }

    /// `user` speaking in `thread` (a request handed off from the line, a pressed reminder).
    pub fn in_thread(thread: &ChatThread, user_id: &str, user_name: &str) -> Self {
        Self {
            adapter: thread.adapter.clone(),
            room_id: thread.room.clone(),
            room_name: thread.room_name.clone(),
            user_id: user_id.to_owned(),
            user_name: user_name.to_owned(),
            message_id: None,
            thread_id: thread.thread.clone(),
            direct: false,
        }
    }

    /// How the room is shown in replies: `#name`, or "a direct message".
    pub fn room_label(&self) -> String {
        if self.direct {
            "a direct message".to_owned()
        } else if self.room_name.is_empty() {
            self.room_id.clone()
        } else {
            format!("#{}", self.room_name)
        }
    }
}

/// Who sees a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Everyone in the room (the room is the audit trail).
    Room,
    /// Only the user who asked (help).
    OnlyAsker,
}

/// What a button does when pressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// Re-run the refused deploy with `deploy!`.
    DeployAnyway,
    /// Deploy the repository's default branch to the same environment.
    DeployDefaultBranch,
    /// Join the line behind the lock or freeze that refused a deploy.
    DeployWhenFree,
    /// Extend a lock (its reminder).
    ExtendLock,
    /// Release a lock (its reminder).
    Unlock,
    /// Approve a release request.
    Approve,
    /// Reject a release request.
    Reject,
    /// Claim a release request (a release admin).
    Claim,
    /// Roll back (faseng's button on a finished deploy's message).
    Rollback,
}

impl ActionKind {
    /// The stable id transports use for this action.
    pub fn id(&self) -> &'static str {
        match self {
            ActionKind::DeployAnyway => "deploy-anyway",
            ActionKind::DeployDefaultBranch => "deploy-default-branch",
            ActionKind::DeployWhenFree => "deploy-when-free",
            ActionKind::ExtendLock => "extend-lock",
            ActionKind::Unlock => "unlock",
            ActionKind::Approve => "approve-request",
            ActionKind::Reject => "reject-request",
            ActionKind::Claim => "claim-request",
            ActionKind::Rollback => deploy_core::chat::ROLLBACK_ACTION_ID,
        }
    }

    /// What a message says the pressed button did.
    pub fn label(&self) -> &'static str {
        match self {
            ActionKind::DeployAnyway => "Deploy anyway",
            ActionKind::DeployDefaultBranch => "Deploy default branch",
            ActionKind::DeployWhenFree => "Deploy when free",
            ActionKind::ExtendLock => "Extend",
            ActionKind::Unlock => "Unlock",
            ActionKind::Approve => "Approve",
            ActionKind::Reject => "Reject",
            ActionKind::Claim => "Claim",
            ActionKind::Rollback => "Roll back",
        }
    }

    /// The action with this id.
    pub fn from_id(id: &str) -> Option<Self> {
        match id {
            "deploy-anyway" => Some(ActionKind::DeployAnyway),
            "deploy-default-branch" => Some(ActionKind::DeployDefaultBranch),
            "deploy-when-free" => Some(ActionKind::DeployWhenFree),
            "extend-lock" => Some(ActionKind::ExtendLock),
            "unlock" => Some(ActionKind::Unlock),
            "approve-request" => Some(ActionKind::Approve),
            "reject-request" => Some(ActionKind::Reject),
            "claim-request" => Some(ActionKind::Claim),
            deploy_core::chat::ROLLBACK_ACTION_ID => Some(ActionKind::Rollback),
            _ => None,
        }
    }
}

/// A button under a reply; pressing it runs `command` as if typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// What it does.
    pub kind: ActionKind,
    /// Button text.
    pub label: String,
    /// The command line it runs.
    pub command: String,
    /// When set, only this user may press it.
    pub only_user: Option<String>,
}

/// One answer to the chat: a neutral [`Message`] each transport renders, who sees it, and
/// buttons that run a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What it says.
    pub message: Message,
    /// Who sees it.
    pub visibility: Visibility,
    /// Buttons.
    pub actions: Vec<Action>,
}

impl Reply {
    /// A reply saying `message`, visible to the room, without buttons.
    pub fn new(message: Message) -> Self {
        Self {
            message,
            visibility: Visibility::Room,
            actions: Vec::new(),
        }
    }

    /// How it should look.
    pub fn tone(&self) -> Tone {
        self.message.tone
    }

    /// Its text as plain text, without the tone's marker (tests and logs).
    pub fn text(&self) -> String {
        plain::render(&Message {
            tone: Tone::Info,
            ..self.message.clone()
        })
    }

    /// Shown only to the asker.
    pub fn only_to_asker(mut self) -> Self {
        self.visibility = Visibility::OnlyAsker;
        self
    }

    /// Adds a button.
    pub fn with_action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }
}

/// A posted message, to edit later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    /// Channel id.
    pub channel: String,
    /// Message id (`ts`).
    pub id: String,
}

/// Where handlers put their replies.
#[async_trait]
pub trait Outbox: Send {
    /// Posts a reply in the command's room/thread; returns the message for later edits when
    /// the transport can edit.
    async fn post(&mut self, reply: Reply) -> Option<MessageRef>;
    /// Replaces a posted message.
    async fn edit(&mut self, message: &MessageRef, reply: Reply);
}

/// How the bot speaks when no command is being answered (a reminder, an expired lock, a
/// hand-off from the line, the old holder of a lock taken over): into a thread it kept, and
/// directly to a person. Each transport has one.
#[async_trait]
pub trait Poster: Send + Sync {
    /// An outbox posting into `thread`, on behalf of `user_id` (who may see what only the
    /// asker sees).
    fn outbox(&self, thread: &ChatThread, user_id: &str) -> Box<dyn Outbox>;

    /// Tells `user_id` directly (a DM); said nowhere when the transport has no such thing.
    async fn direct(&self, user_id: &str, reply: Reply);

    /// The user groups `user_id` belongs to (their handles, without `@`); none where the
    /// chat has no groups.
    async fn groups_of(&self, _user_id: &str) -> Vec<String> {
        Vec::new()
    }
}

/// A poster that keeps what it was given, for tests: `(where, reply)` in order, where is the
/// thread's room and thread, or `dm:<user>`.
#[derive(Debug, Clone, Default)]
pub struct RecordingPoster {
    said: std::sync::Arc<std::sync::Mutex<Vec<(String, Reply)>>>,
}

impl RecordingPoster {
    /// Everything said so far, as `(where, text)`.
    pub fn said(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(w, r)| (w.clone(), r.text()))
            .collect()
    }

    /// Everything said so far, with the replies.
    pub fn replies(&self) -> Vec<(String, Reply)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Reply)>> {
        self.said.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct RecordingThread {
    place: String,
    said: std::sync::Arc<std::sync::Mutex<Vec<(String, Reply)>>>,
}

#[async_trait]
impl Outbox for RecordingThread {
    async fn post(&mut self, reply: Reply) -> Option<MessageRef> {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        said.push((self.place.clone(), reply));
        Some(MessageRef {
            channel: self.place.clone(),
            id: (said.len() - 1).to_string(),
        })
    }

    async fn edit(&mut self, message: &MessageRef, reply: Reply) {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(i) = message.id.parse::<usize>()
            && i < said.len()
        {
            said[i].1 = reply;
        }
    }
}

#[async_trait]
impl Poster for RecordingPoster {
    fn outbox(&self, thread: &ChatThread, _user_id: &str) -> Box<dyn Outbox> {
        let place = match &thread.thread {
            Some(t) => format!("{}/{t}", thread.room),
            None => thread.room.clone(),
        };
        Box::new(RecordingThread {
            place,
            said: self.said.clone(),
        })
    }

    async fn direct(&self, user_id: &str, reply: Reply) {
        self.lock().push((format!("dm:{user_id}"), reply));
    }
}

/// An outbox that keeps replies in memory, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct RecordingOutbox {
    /// Messages as they stand now, in posting order.
    pub messages: Vec<Reply>,
    /// How many times each message was edited.
    pub edits: Vec<usize>,
}

#[async_trait]
impl Outbox for RecordingOutbox {
    async fn post(&mut self, reply: Reply) -> Option<MessageRef> {
        self.messages.push(reply);
        self.edits.push(0);
        Some(MessageRef {
            channel: "recording".to_owned(),
            id: (self.messages.len() - 1).to_string(),
        })
    }

    async fn edit(&mut self, message: &MessageRef, reply: Reply) {
        if let Ok(i) = message.id.parse::<usize>()
            && i < self.messages.len()
        {
            self.messages[i] = reply;
            self.edits[i] += 1;
        }
    }
}
