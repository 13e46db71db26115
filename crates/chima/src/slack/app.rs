//! Handling Slack's domain events: build the chat context, run the bot, follow up (buttons,
//! the watchdog). Shared by the Events API server and Socket Mode.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deploy_core::AppName;
use tokio::sync::mpsc;

use crate::chat::{ActionKind, ChatContext, MessageRef, Outbox};
use crate::handlers::{Bot, DeployResult};
use crate::messages;
use crate::slack::events::{ButtonPress, Inbound, IncomingCommand, IncomingMessage, decode_markup};
use crate::slack::web::{ButtonValue, SlackOutbox, SlackWeb};

/// How long event ids are remembered to drop Slack's retries.
const SEEN_TTL: Duration = Duration::from_secs(3600);

/// What the watchdog decided about one deployment (for tests and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogReport {
    /// Deployment id.
    pub deployment_id: u64,
    /// True when it warned that nobody picked the deployment up.
    pub warned: bool,
}

/// Event ids taken in the last hour, oldest first, to drop Slack's retries.
#[derive(Default)]
struct SeenEvents {
    ids: HashSet<String>,
    order: VecDeque<(String, Instant)>,
}

impl SeenEvents {
    /// Records `id`; false when it was already there.
    fn insert(&mut self, id: &str, now: Instant) -> bool {
        while let Some((old, at)) = self.order.front() {
            if now.duration_since(*at) < SEEN_TTL {
                break;
            }
            self.ids.remove(old);
            self.order.pop_front();
        }
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back((id.to_owned(), now));
        true
    }
}

/// Settings of the Slack adapter.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// How long after creation a deployment must have a status before chima warns.
    pub watchdog: Duration,
}

/// The Slack adapter: the bot, the Web API, and what it remembers.
pub struct SlackApp {
    bot: Arc<Bot>,
    web: Arc<SlackWeb>,
    bot_user_id: String,
    settings: SlackSettings,
    seen: Mutex<SeenEvents>,
    watchdog_reports: Option<mpsc::UnboundedSender<WatchdogReport>>,
    /// The events acknowledged and still being handled (waited for at shutdown).
    in_flight: tokio_util::task::TaskTracker,
}

impl SlackApp {
    /// An adapter for `bot` talking to Slack through `web` as `bot_user_id`.
    pub fn new(
        bot: Arc<Bot>,
        web: Arc<SlackWeb>,
        bot_user_id: &str,
        settings: SlackSettings,
    ) -> Self {
        Self {
            bot,
            web,
            bot_user_id: bot_user_id.to_owned(),
            settings,
            seen: Mutex::new(SeenEvents::default()),
            watchdog_reports: None,
            in_flight: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Sends every watchdog decision to `reports` (tests wait on it instead of sleeping).
    pub fn with_watchdog_reports(mut self, reports: mpsc::UnboundedSender<WatchdogReport>) -> Self {
        self.watchdog_reports = Some(reports);
        self
    }

    /// The bot's Slack user id.
    pub fn bot_user_id(&self) -> &str {
        &self.bot_user_id
    }

    /// True the first time an event id is seen (within an hour): Slack retries are dropped.
    pub fn first_delivery(&self, event_id: &str) -> bool {
        self.seen
            .lock()
            .expect("seen lock")
            .insert(event_id, Instant::now())
    }

    /// Handles an acknowledged event on a task of its own, counted in flight until done.
    pub fn dispatch(self: &Arc<Self>, inbound: Inbound) {
        self.in_flight.spawn(self.clone().handle(inbound));
    }

    /// At shutdown: waits (at most `within`) for the events being handled to be answered;
    /// returns how many were still going when it gave up (0: all done). Watchdogs, which
    /// only warn minutes later, are not waited for.
    pub async fn drain(&self, within: Duration) -> usize {
        self.in_flight.close();
        if !self.in_flight.is_empty() {
            tracing::info!(
                events = self.in_flight.len(),
                "waiting for the commands being handled"
            );
        }
        let _ = tokio::time::timeout(within, self.in_flight.wait()).await;
        self.in_flight.len()
    }

    /// Runs the work for an acknowledged event. Never panics on Slack failures.
    pub async fn handle(self: Arc<Self>, inbound: Inbound) {
        match inbound {
            Inbound::Message(m) => self.on_message(m).await,
            Inbound::Command(c) => self.on_command(c).await,
            Inbound::ButtonPress(p) => self.on_button(p).await,
            Inbound::UrlVerification { .. } => {}
            Inbound::Ignored(why) => tracing::debug!(why, "ignored Slack event"),
        }
    }

    async fn context(&self, channel: &str, user: &str, user_name: Option<&str>) -> ChatContext {
        let (info, name) = futures::join!(self.web.channel(channel), async {
            match user_name {
                Some(n) => Ok(n.to_owned()),
                None => self.web.user_name(user).await,
            }
        });
        let info = info.unwrap_or_else(|e| {
            tracing::warn!(%e, channel, "channel name unknown; matching allowed_rooms by id only");
            crate::slack::web::ChannelInfo {
                name: String::new(),
                direct: channel.starts_with('D'),
            }
        });
        ChatContext {
            adapter: "slack".to_owned(),
            room_id: channel.to_owned(),
            room_name: info.name,
            user_id: user.to_owned(),
            user_name: name.unwrap_or_else(|_| user.to_owned()),
            message_id: None,
            thread_id: None,
            direct: info.direct,
        }
    }

    async fn on_message(self: Arc<Self>, m: IncomingMessage) {
        let mut ctx = self.context(&m.channel, &m.user, None).await;
        ctx.direct |= m.direct;
        ctx.message_id = Some(m.ts.clone());
        ctx.thread_id = m.thread_ts.clone();
        // In channels every answer goes to the command's thread; in a DM only when threaded.
        let reply_thread = if ctx.direct {
            m.thread_ts.clone()
        } else {
            Some(m.thread_ts.clone().unwrap_or_else(|| m.ts.clone()))
        };
        let text = decode_markup(&m.text, &self.bot_user_id, self.bot.name());
        let mut outbox =
            SlackOutbox::new(self.web.clone(), &m.channel, reply_thread.clone(), &m.user);
        let results = self
            .bot
            .handle_message(&text, ctx.direct, &ctx, &mut outbox)
            .await;
        self.follow_up(results, &m.channel, reply_thread);
    }

    async fn on_command(self: Arc<Self>, c: IncomingCommand) {
        let mut ctx = self
            .context(&c.channel_id, &c.user_id, c.user_name.as_deref())
            .await;
        if c.channel_name.as_deref() == Some("directmessage") {
            ctx.direct = true;
        }
        let text = decode_markup(&c.text, &self.bot_user_id, self.bot.name());
        let mut outbox = SlackOutbox::new(self.web.clone(), &c.channel_id, None, &c.user_id);
        let results = if text.trim().is_empty() {
            self.bot
                .handle_line("", &ctx, &mut outbox)
                .await
                .into_iter()
                .collect()
        } else {
            self.bot
                .handle_message(&text, true, &ctx, &mut outbox)
                .await
        };
        self.follow_up(results, &c.channel_id, None);
    }

    async fn on_button(self: Arc<Self>, press: ButtonPress) {
        let Some(kind) = ActionKind::from_id(&press.action_id) else {
            tracing::debug!(action = press.action_id, "unknown button");
            return;
        };
        let thread = Some(
            press
                .thread_ts
                .clone()
                .unwrap_or_else(|| press.message_ts.clone()),
        );
        let mut outbox = SlackOutbox::new(
            self.web.clone(),
            &press.channel,
            thread.clone(),
            &press.user,
        );
        let Ok(value) = serde_json::from_str::<ButtonValue>(&press.value) else {
            outbox.post(messages::button_outdated()).await;
            return;
        };
        let mut ctx = self.context(&press.channel, &press.user, None).await;
        if let Some(owner) = &value.only_user
            && owner != &press.user
        {
            let owner_name = self
                .web
                .user_name(owner)
                .await
                .unwrap_or_else(|_| owner.clone());
            outbox.post(messages::button_not_yours(&owner_name)).await;
            return;
        }
        // A button repeats a command once: its message then says who pressed it. A release
        // request's Approve, Reject and Claim are for several people and stay; "Roll back" sits
        // on faseng's message of a finished deploy, which keeps saying how that deploy went
        // (the rollback answers in its thread, and refuses a second rollback to the same commit).
        if !matches!(
            kind,
            ActionKind::Approve | ActionKind::Reject | ActionKind::Claim | ActionKind::Rollback
        ) {
            let pressed = messages::button_pressed(&value.command, &ctx.user_name, kind.label());
            outbox
                .edit(
                    &MessageRef {
                        channel: press.channel.clone(),
                        id: press.message_ts.clone(),
                    },
                    pressed,
                )
                .await;
        }
        ctx.message_id = Some(press.message_ts.clone());
        ctx.thread_id = thread.clone();
        // The same checks as a typed command: room, app, environment, ref.
        let results = self
            .bot
            .handle_message(&value.command, true, &ctx, &mut outbox)
            .await;
        self.follow_up(results, &press.channel, thread);
    }

    fn follow_up(
        self: Arc<Self>,
        results: Vec<DeployResult>,
        channel: &str,
        thread: Option<String>,
    ) {
        for result in results {
            if let DeployResult::Created { id, app, message } = result {
                let me = self.clone();
                let thread = thread
                    .clone()
                    .or_else(|| message.as_ref().map(|m| m.id.clone()));
                let channel = channel.to_owned();
                tokio::spawn(async move { me.watchdog(app, id, channel, thread).await });
            }
        }
    }

    async fn watchdog(
        self: Arc<Self>,
        app: AppName,
        id: u64,
        channel: String,
        thread: Option<String>,
    ) {
        tokio::time::sleep(self.settings.watchdog).await;
        let Some(config) = self.bot.apps().get(&app) else {
            return;
        };
        let warned = match self.bot.forge().has_statuses(config, id).await {
            Ok(true) => false,
            Ok(false) => {
                let reply = messages::nobody_picked_up(
                    config,
                    id,
                    self.settings.watchdog.as_secs(),
                    &self.bot.forge().hooks_settings_url(config),
                );
                let _ = self.web.post(&channel, thread.as_deref(), &reply).await;
                true
            }
            Err(e) => {
                tracing::warn!(%e, deployment = id, "watchdog could not read deployment statuses");
                false
            }
        };
        if let Some(reports) = &self.watchdog_reports {
            let _ = reports.send(WatchdogReport {
                deployment_id: id,
                warned,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_remembered_for_an_hour() {
        let mut seen = SeenEvents::default();
        let start = Instant::now();
        assert!(seen.insert("Ev1", start));
        assert!(!seen.insert("Ev1", start + Duration::from_secs(60)));
        assert!(seen.insert("Ev2", start + Duration::from_secs(60)));
        assert!(seen.insert("Ev1", start + SEEN_TTL + Duration::from_secs(1)));
        assert_eq!(seen.ids.len(), 2);
    }
}
