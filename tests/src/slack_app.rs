//! chima's Slack app in process: signed Events API, slash command and interaction requests
//! in, the fake Slack's messages out.

use std::sync::Arc;
use std::time::Duration;

use chima::slack::app::{SlackApp, SlackSettings, WatchdogReport};
use chima::slack::web::SlackWeb;
use deploy_core::{Apps, GithubAuth, Secret};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::fake_github::{FakeGithub, TOKEN};
use crate::fake_slack::{BOT_TOKEN, BOT_USER, FakeSlack, Message, now_secs};

/// The signing secret chima verifies requests with.
pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// How long a reply may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// The room deploys are allowed in.
pub const DEPLOYMENT: &str = "C024BE91L";
/// A room they are not.
pub const RANDOM: &str = "C0RANDOM01";
/// joyz's user id.
pub const JOYZ: &str = "U2147483697";
/// bob's user id.
pub const BOB: &str = "U0BOB00001";

/// chima's Slack app in process (HTTP endpoints on a loopback port) against the fake GitHub
/// and Slack, with the shipped app.json.
pub struct SlackHarness {
    /// The fake GitHub.
    pub gh: FakeGithub,
    /// The fake Slack.
    pub slack: FakeSlack,
    /// chima's base URL.
    pub url: String,
    /// A client for it.
    pub http: reqwest::Client,
    /// The Slack app.
    pub app: Arc<SlackApp>,
    /// Its Slack Web API client.
    pub web: Arc<SlackWeb>,
    /// What its watchdog reports.
    pub watchdog: mpsc::UnboundedReceiver<WatchdogReport>,
    /// The next message ts handed out.
    pub next_ts: std::sync::atomic::AtomicU64,
    /// The bot behind the app.
    pub bot: Arc<chima::Bot>,
    /// How the bot speaks unprompted (reminders, hand-offs), through the fake Slack.
    pub poster: Arc<chima::slack::poster::SlackPoster>,
}

/// The release desk a harness runs with: the store's URL and the clock it tells time by.
pub struct DeskSetup {
    /// `FASENG_QUEUE_URL`.
    pub store_url: String,
    /// The clock the scenario moves.
    pub clock: deploy_core::ManualClock,
}

/// The Slack signature of `body` sent at `timestamp`, with [`SECRET`].
pub fn sign(timestamp: u64, body: &str) -> String {
    crate::fake_slack::sign_request(SECRET, timestamp, body)
}

impl SlackHarness {
    /// chima with a watchdog of `watchdog`, started.
    pub async fn start(watchdog: Duration) -> Self {
        Self::start_with(watchdog, None).await
    }

    /// chima with a watchdog of `watchdog` and, when given, the release desk, started.
    pub async fn start_with(watchdog: Duration, desk: Option<DeskSetup>) -> Self {
        let gh = FakeGithub::start().await;
        for repo in ["oursky/project-x", "oursky/modmod-web", "oursky/trelhub"] {
            gh.add_repo(repo, "main");
        }
        let slack = FakeSlack::start().await;
        let apps = Apps::load(&crate::bins::workspace_root().join("app.json")).unwrap();
        let mut bot = chima::cli::github_bot(
            apps,
            gh.url(),
            GithubAuth::Token(Secret::new(TOKEN)),
            "chima",
        );
        if let Some(desk) = desk {
            let store = chima::store::StoreHandle::open(&desk.store_url)
                .await
                .expect("the desk's store opens");
            bot = bot.with_store(store).with_clock(Arc::new(desk.clock));
        }
        let bot = Arc::new(bot);
        let web = Arc::new(SlackWeb::new(slack.api_url(), BOT_TOKEN).unwrap());
        let poster = Arc::new(chima::slack::poster::SlackPoster::new(web.clone()));
        bot.set_poster(poster.clone());
        let bot_user = web.bot_user_id().await.unwrap();
        assert_eq!(bot_user, BOT_USER);
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Arc::new(
            SlackApp::new(
                bot.clone(),
                web.clone(),
                &bot_user,
                SlackSettings { watchdog },
            )
            .with_watchdog_reports(tx),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = chima::slack::http::router(app.clone(), SECRET);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            gh,
            slack,
            url,
            http: reqwest::Client::new(),
            app,
            web,
            watchdog: rx,
            next_ts: 100.into(),
            bot,
            poster,
        }
    }

    /// One step of the release desk's clockwork, as `chima serve`'s ticker takes it.
    pub async fn tick(&self) -> chima::desk::tick::TickReport {
        self.bot
            .desk_tick(self.poster.as_ref())
            .await
            .expect("the desk's tick")
    }

    /// A new message ts.
    pub fn ts(&self) -> String {
        let n = self
            .next_ts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        format!("1355517523.{n:06}")
    }

    /// Posts a signed request to `path`; the HTTP status.
    pub async fn send(
        &self,
        path: &str,
        body: String,
        content_type: &str,
        timestamp: u64,
        extra: &[(&str, &str)],
    ) -> u16 {
        let url = format!("{}{path}", self.url);
        post_signed(
            &self.http,
            &url,
            SECRET,
            content_type,
            body,
            timestamp,
            extra,
        )
        .await
    }

    /// An Events API callback built from Slack's AppMentionPayload sample.
    pub fn event(
        &self,
        kind: &str,
        channel: &str,
        user: &str,
        text: &str,
        ts: &str,
        event_id: &str,
    ) -> Value {
        let mut payload =
            crate::fixtures::json("slack/shape-samples/events/AppMentionPayload.json");
        payload["type"] = json!("event_callback");
        payload["event_id"] = json!(event_id);
        let event = &mut payload["event"];
        event["type"] = json!(kind);
        event["channel"] = json!(channel);
        event["user"] = json!(user);
        event["text"] = json!(text);
        event["ts"] = json!(ts);
        event["thread_ts"] = json!("");
        event["channel_type"] = json!(if channel.starts_with('D') {
            "im"
        } else {
            "channel"
        });
        payload
    }

    /// Says `text` in a channel as a mention; returns the message's ts.
    pub async fn mention(&self, channel: &str, user: &str, command: &str) -> String {
        let ts = self.ts();
        let text = format!("<@{BOT_USER}> {command}");
        let body = self
            .event("app_mention", channel, user, &text, &ts, &format!("Ev{ts}"))
            .to_string();
        assert_eq!(
            self.send("/slack/events", body, "application/json", now_secs(), &[])
                .await,
            200
        );
        ts
    }

    /// Sends the slash command `/chima text`; the HTTP status.
    pub async fn slash(&self, channel: &str, channel_name: &str, user: &str, text: &str) -> u16 {
        let body = slash_command_body(channel, channel_name, user, text);
        self.send(
            "/slack/commands",
            body,
            "application/x-www-form-urlencoded",
            now_secs(),
            &[],
        )
        .await
    }

    /// Presses `message`'s first button as `user`; the HTTP status.
    pub async fn press(&self, user: &str, message: &Message) -> u16 {
        let mut payload = crate::fixtures::json(
            "slack/shape-samples/app-backend/interactive-components/BlockActionPayload.json",
        );
        let button = message.blocks[1]["elements"][0].clone();
        payload["type"] = json!("block_actions");
        payload["user"] = json!({"id": user, "username": "someone", "team_id": "T1"});
        payload["container"] = json!({"type": "message", "message_ts": message.ts, "channel_id": message.channel, "is_ephemeral": false});
        payload["channel"] = json!({"id": message.channel, "name": "deployment"});
        payload["message"]["ts"] = json!(message.ts);
        payload["message"]["thread_ts"] = json!(message.thread_ts);
        payload["actions"] = json!([{"type": "button", "action_id": button["action_id"], "block_id": "b",
                                     "text": button["text"], "value": button["value"], "action_ts": "1"}]);
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        self.send(
            "/slack/interactions",
            body,
            "application/x-www-form-urlencoded",
            now_secs(),
            &[],
        )
        .await
    }

    /// Waits for the bot's reply in a thread to contain `needle`.
    pub async fn reply_in_thread(&self, channel: &str, thread: &str, needle: &str) -> Message {
        self.slack
            .wait_for_reply(channel, thread, needle, WAIT)
            .await
    }

    /// Sends a harmless command and waits for its answer: everything sent before it has been
    /// handled by then (requests are acknowledged in order).
    pub async fn settle(&self) {
        let ts = self.mention(RANDOM, JOYZ, "version").await;
        self.reply_in_thread(RANDOM, &ts, "chima 0.").await;
    }
}

/// POSTs `body` to `url` as Slack would, signed with `secret` at `timestamp`, with `extra`
/// headers; the HTTP status.
pub async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    content_type: &str,
    body: String,
    timestamp: u64,
    extra: &[(&str, &str)],
) -> u16 {
    let mut request = http
        .post(url)
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header(
            "x-slack-signature",
            crate::fake_slack::sign_request(secret, timestamp, &body),
        );
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    request.body(body).send().await.unwrap().status().as_u16()
}

/// The form body of the slash command `/chima text` said by `user` in `channel`.
pub fn slash_command_body(channel: &str, channel_name: &str, user: &str, text: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "x"),
        ("team_id", "T1"),
        ("channel_id", channel),
        ("channel_name", channel_name),
        ("user_id", user),
        ("user_name", "joyz"),
        ("command", "/chima"),
        ("text", text),
        ("response_url", "https://hooks.slack.com/commands/1/2"),
        ("trigger_id", "t"),
    ])
    .unwrap()
}
