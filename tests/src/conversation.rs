//! The release desk as a conversation in `#deployment`: people by name speak to chima's bot
//! in process (against the fake GitHub), with the store on a chosen backend and a clock the
//! scenario moves by hand; what the bot said unprompted and the audit are read back.

use chrono::{DateTime, Utc};
use deploy_core::{Apps, ManualClock};
use faseng::store::{AuditAction, AuditQuery, StoreUrl};
use serde_json::Value;

use crate::backend::{Backend, Queue};
use crate::chat::{Chat, person_in};
use crate::fake_github::FakeGithub;

/// When every conversation starts: Monday 7 December 2026, 09:00 UTC.
pub const START: &str = "2026-12-07T09:00:00Z";

/// A time written in RFC 3339.
pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 time")
}

/// A conversation: the bot, the clock, the store's URL (and what keeps them alive).
pub struct Conversation {
    /// The bot against the fake GitHub (with the example repositories).
    pub chat: Chat,
    /// The clock the desk tells time by.
    pub clock: ManualClock,
    /// The store's URL (`FASENG_QUEUE_URL`).
    pub url: String,
    _queue: Queue,
    _dir: tempfile::TempDir,
}

impl Conversation {
    /// A conversation about `apps` with the desk on `backend`; `None` (with a printed reason)
    /// when the backend's server is not installed.
    pub async fn start(backend: Backend, apps: Apps) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::start(backend, dir.path())?;
        let clock = ManualClock::new(at(START));
        let chat = Chat::with(FakeGithub::start().await, apps)
            .await
            .with_desk(&queue.url, clock.clone())
            .await;
        Some(Self {
            chat,
            clock,
            url: queue.url.clone(),
            _queue: queue,
            _dir: dir,
        })
    }

    /// `who` says `line` to chima (in a thread of its own); the replies' texts.
    pub async fn says(&self, who: &str, line: &str) -> Vec<String> {
        let ts = format!("1765000000.{:06}", line.len() + who.len());
        self.chat
            .say_in(&person_in("deployment", who, &ts), &format!("chima {line}"))
            .await
            .into_iter()
            .map(|r| r.text())
            .collect()
    }

    /// `who` says `line`; its one reply (fails unless there is exactly one).
    pub async fn say(&self, who: &str, line: &str) -> String {
        let replies = self.says(who, line).await;
        assert_eq!(replies.len(), 1, "{who}: {line}: {replies:#?}");
        replies.into_iter().next().unwrap()
    }

    /// The deployments of `repo` on the fake GitHub.
    pub fn deployments(&self, repo: &str) -> Vec<Value> {
        self.chat.deployments(repo)
    }

    /// What the bot said unprompted so far: `(where, text)`.
    pub fn said(&self) -> Vec<(String, String)> {
        self.chat.poster.said()
    }

    /// `app`'s audit, oldest first: what and by whom (as shown).
    pub async fn audit(&self, app: &str) -> Vec<(AuditAction, String)> {
        let store = StoreUrl::parse(&self.url).unwrap().open().await.unwrap();
        let page = store
            .audit(&AuditQuery {
                app: Some(app.into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        page.items
            .into_iter()
            .rev()
            .map(|r| (r.entry.action, r.entry.actor_name))
            .collect()
    }
}
