//! chima's bot in process against the fake GitHub: say a line in a room, read the replies.

use chima::Bot;
use std::sync::Arc;

use chima::chat::{ChatContext, RecordingOutbox, RecordingPoster, Reply};
use deploy_core::{Apps, GithubAuth, ManualClock, Secret};
use serde_json::Value;

use crate::fake_github::{Check, FakeGithub, TOKEN};

/// chima's bot in process, against a fake GitHub.
pub struct Chat {
    /// The fake GitHub, with the example repositories.
    pub gh: FakeGithub,
    /// The bot.
    pub bot: Bot,
    /// What the bot said unprompted (reminders, hand-offs, the old holder told), with the
    /// release desk ([`Chat::with_desk`]).
    pub poster: RecordingPoster,
}

/// The shipped app.json (the examples).
pub fn example_apps() -> Apps {
    Apps::load(&crate::bins::workspace_root().join("app.json")).expect("the shipped app.json loads")
}

/// A chat context in room `name` with `user` (a name; its id is `U0` + the name in capitals)
/// speaking, in a thread of its own message `ts`.
pub fn person_in(name: &str, user: &str, ts: &str) -> ChatContext {
    let mut ctx = room(name);
    ctx.user_id = format!("U0{}", user.to_uppercase());
    ctx.user_name = user.to_owned();
    ctx.message_id = Some(ts.to_owned());
    ctx
}

/// A chat context in room `name` (`deployment`, `random` or another), joyz speaking.
pub fn room(name: &str) -> ChatContext {
    let id = match name {
        "deployment" => "C024BE91L",
        "random" => "C0RANDOM01",
        _ => "C0OTHER001",
    };
    ChatContext {
        adapter: "slack".into(),
        room_id: id.into(),
        room_name: name.into(),
        user_id: "U2147483697".into(),
        user_name: "joyz".into(),
        message_id: Some("1355517523.000001".into()),
        thread_id: None,
        direct: false,
    }
}

impl Chat {
    /// The examples against a new fake GitHub.
    pub async fn new() -> Self {
        Self::with(FakeGithub::start().await, example_apps()).await
    }

    /// `apps` against `gh`.
    pub async fn with(gh: FakeGithub, apps: Apps) -> Self {
        Self::with_token(gh, apps, TOKEN).await
    }

    /// The example repositories on `gh`, and a bot that calls it with `token`.
    pub async fn with_token(gh: FakeGithub, apps: Apps, token: &str) -> Self {
        for repo in ["oursky/project-x", "oursky/modmod-web", "oursky/trelhub"] {
            gh.add_repo(repo, "main");
        }
        let bot = chima::cli::github_bot(
            apps,
            gh.url(),
            GithubAuth::Token(Secret::new(token)),
            "chima",
        );
        Self {
            gh,
            bot,
            poster: RecordingPoster::default(),
        }
    }

    /// The bot with the release desk on the store at `store_url` (shared with faseng),
    /// telling time by `clock`, speaking unprompted into [`Chat::poster`].
    pub async fn with_desk(mut self, store_url: &str, clock: ManualClock) -> Self {
        let store = chima::store::StoreHandle::open(store_url)
            .await
            .expect("the desk's store opens");
        self.bot = self.bot.with_store(store).with_clock(Arc::new(clock));
        self.bot.set_poster(Arc::new(self.poster.clone()));
        self
    }

    /// One step of the desk's clockwork (after moving the clock).
    pub async fn tick(&self) -> chima::desk::tick::TickReport {
        self.bot
            .desk_tick(&self.poster)
            .await
            .expect("the desk's tick")
    }

    /// Says a line in a room; returns the replies as they finally stand.
    pub async fn say_in(&self, ctx: &ChatContext, line: &str) -> Vec<Reply> {
        self.handle(ctx, line, false).await
    }

    /// Says a line in a direct message to the bot (no need to address it).
    pub async fn say_direct(&self, ctx: &ChatContext, line: &str) -> Vec<Reply> {
        self.handle(ctx, line, true).await
    }

    /// Handles one line; the replies as they finally stand.
    pub async fn handle(&self, ctx: &ChatContext, line: &str, direct: bool) -> Vec<Reply> {
        let mut outbox = RecordingOutbox::default();
        self.bot
            .handle_message(line, direct, ctx, &mut outbox)
            .await;
        outbox.messages
    }

    /// Says a line in room `room_name`; the replies' texts.
    pub async fn say(&self, room_name: &str, line: &str) -> Vec<String> {
        self.say_in(&room(room_name), line)
            .await
            .into_iter()
            .map(|r| r.text())
            .collect()
    }

    /// Says a line in a room; returns the one reply, failing if there is not exactly one.
    pub async fn reply(&self, room_name: &str, line: &str) -> String {
        one(self.say(room_name, line).await)
    }

    /// The deployments of `repo` on the fake.
    pub fn deployments(&self, repo: &str) -> Vec<Value> {
        self.gh.deployments(repo)
    }

    /// A passing commit status on the commit `git_ref` points at.
    pub fn green(&self, repo: &str, git_ref: &str, context: &str) {
        self.gh
            .add_check(repo, git_ref, check(context, "success", false));
    }

    /// A failing commit status on the commit `git_ref` points at.
    pub fn red(&self, repo: &str, git_ref: &str, context: &str) {
        self.gh
            .add_check(repo, git_ref, check(context, "failure", false));
    }

    /// The body of the last POST the bot sent to GitHub.
    pub fn last_post_body(&self) -> Value {
        self.gh
            .requests()
            .into_iter()
            .rfind(|r| r.method == "POST")
            .expect("a POST to GitHub")
            .body
    }
}

/// A commit status (or check run) `name` in `state`.
pub fn check(name: &str, state: &str, check_run: bool) -> Check {
    Check {
        name: name.into(),
        state: state.into(),
        url: format!("https://ci.example.com/{name}"),
        check_run,
    }
}

/// The one reply of `replies`; fails if there is not exactly one.
pub fn one(replies: Vec<String>) -> String {
    assert_eq!(
        replies.len(),
        1,
        "expected exactly one reply, got {replies:#?}"
    );
    replies.into_iter().next().unwrap()
}
