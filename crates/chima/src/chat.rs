//! What handlers know about the chat they answer in, and how they answer: a [`ChatContext`]
//! in, [`Reply`] values (deploy-core's neutral chat message) out through an [`Outbox`]. Transports (Slack, the shell) implement
//! the outbox; handlers never see a transport.

use async_trait::async_trait;
pub use deploy_core::chat::Tone;
use deploy_core::chat::{Message, plain};

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
}

impl ActionKind {
    /// The stable id transports use for this action.
    pub fn id(&self) -> &'static str {
        match self {
            ActionKind::DeployAnyway => "deploy-anyway",
            ActionKind::DeployDefaultBranch => "deploy-default-branch",
        }
    }

    /// The action with this id.
    pub fn from_id(id: &str) -> Option<Self> {
        match id {
            "deploy-anyway" => Some(ActionKind::DeployAnyway),
            "deploy-default-branch" => Some(ActionKind::DeployDefaultBranch),
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
