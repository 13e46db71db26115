//! The poster over a real SQLite store, a fake sink and a fake chat service, with a manual
//! clock: backoff and `Retry-After` are checked by moving the clock, never by sleeping.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::TimeZone as _;
use deploy_core::{Clock, ManualClock, Notify};

use super::*;
use deploy_core::chat::{Message, Tone};

use crate::notify::{ChatNotifier, ChatRateLimited, ChatRefused};
use crate::reporter::{Report, Reporter};
use crate::store::prelude::*;
use crate::store::{RunRecord, RunState, SqliteStore, StartMarker};

/// What the fake GitHub does with the next status post.
#[derive(Debug, Clone)]
enum Answer {
    /// Recorded, but the answer is lost (500).
    RecordedThenLost,
    /// 403 with `Retry-After`.
    RateLimited(Duration),
    /// 422.
    Rejected,
}

#[derive(Default)]
struct FakeGithub {
    script: Mutex<VecDeque<Answer>>,
    /// While true, every call answers 500 (nothing recorded).
    down: std::sync::atomic::AtomicBool,
    recorded: Mutex<Vec<(u64, String, String)>>,
    posts: std::sync::atomic::AtomicU32,
    lists: std::sync::atomic::AtomicU32,
}

impl FakeGithub {
    fn answer(&self, a: Answer) {
        self.script.lock().unwrap().push_back(a);
    }
    fn states(&self, id: u64) -> Vec<String> {
        self.recorded
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _, _)| *d == id)
            .map(|(_, s, _)| s.clone())
            .collect()
    }
    fn posts(&self) -> u32 {
        self.posts.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn lists(&self) -> u32 {
        self.lists.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl DeploymentStatusSink for FakeGithub {
    async fn post(&self, target: &StatusTarget, u: &StatusUpdate) -> Result<(), PostError> {
        self.posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PostError::Temporary("HTTP 500".into()));
        }
        let record = || {
            self.recorded.lock().unwrap().push((
                target.deployment_id,
                u.state.to_owned(),
                u.description.clone(),
            ));
        };
        let next = self.script.lock().unwrap().pop_front();
        match next {
            None => {
                record();
                Ok(())
            }
            Some(Answer::RecordedThenLost) => {
                record();
                Err(PostError::Temporary("connection reset".into()))
            }
            Some(Answer::RateLimited(wait)) => Err(PostError::RateLimited {
                wait,
                message: "secondary rate limit".into(),
            }),
            Some(Answer::Rejected) => Err(PostError::Rejected {
                status: 422,
                message: "no".into(),
            }),
        }
    }

    async fn list(&self, target: &StatusTarget) -> Result<Vec<String>, PostError> {
        self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PostError::Temporary("HTTP 500".into()));
        }
        Ok(self.states(target.deployment_id))
    }
}

/// How the fake chat service answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ChatMode {
    Up,
    Down,
    RateLimited,
    Refusing,
}

struct FakeChat {
    mode: Mutex<ChatMode>,
    calls: Mutex<Vec<String>>,
    next_ts: std::sync::atomic::AtomicU32,
}

impl Default for FakeChat {
    fn default() -> Self {
        Self {
            mode: Mutex::new(ChatMode::Up),
            calls: Mutex::default(),
            next_ts: std::sync::atomic::AtomicU32::new(1),
        }
    }
}

impl FakeChat {
    fn set(&self, mode: ChatMode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn answer(&self) -> anyhow::Result<()> {
        match *self.mode.lock().unwrap() {
            ChatMode::Up => Ok(()),
            ChatMode::Down => anyhow::bail!("slack chat.update answered 500"),
            ChatMode::RateLimited => Err(ChatRateLimited {
                wait: Duration::from_secs(90),
                message: "slack chat.update answered 429".into(),
            }
            .into()),
            ChatMode::Refusing => Err(ChatRefused("channel_not_found".into()).into()),
        }
    }
}

#[async_trait]
impl ChatNotifier for FakeChat {
    fn handles(&self, notify: &Notify) -> bool {
        notify.adapter == "slack"
    }
    async fn upsert(&self, _: &Notify, ts: Option<&str>, text: &str) -> anyhow::Result<String> {
        self.answer()?;
        let ts = match ts {
            Some(ts) => {
                self.calls
                    .lock()
                    .unwrap()
                    .push(format!("update {ts}: {text}"));
                ts.to_owned()
            }
            None => {
                let n = self
                    .next_ts
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let ts = format!("1700.{n:04}");
                self.calls
                    .lock()
                    .unwrap()
                    .push(format!("post {ts}: {text}"));
                ts
            }
        };
        Ok(ts)
    }
    async fn reply(&self, _: &Notify, ts: &str, text: &str) -> anyhow::Result<()> {
        self.answer()?;
        self.calls
            .lock()
            .unwrap()
            .push(format!("reply {ts}: {text}"));
        Ok(())
    }
    async fn room_name(&self, _: &Notify) -> anyhow::Result<String> {
        Ok("deployment".into())
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    clock: ManualClock,
    gh: Arc<FakeGithub>,
    chat: Arc<FakeChat>,
    metrics: Arc<Metrics>,
    outbox: Outbox,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("faseng.db"), "test")
                .await
                .unwrap(),
        );
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap());
        let chat = Arc::new(FakeChat::default());
        let outbox = Outbox::new(store.clone(), chat.clone(), Arc::new(clock.clone()));
        Self {
            _dir: dir,
            store,
            clock,
            gh: Arc::default(),
            chat,
            metrics: Arc::default(),
            outbox,
        }
    }

    fn poster(&self, holder: &str) -> Poster {
        let settings = PosterSettings {
            retry: RetryPolicy {
                first_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
            },
            ..PosterSettings::default()
        };
        Poster::new(
            &self.outbox,
            self.gh.clone(),
            self.metrics.clone(),
            settings,
            holder,
        )
    }

    fn reporter(&self, id: u64, notify: Option<Notify>) -> Reporter {
        let target = StatusTarget {
            repo: RepoName::parse("o/r").unwrap(),
            deployment_id: id,
        };
        let ts = notify.as_ref().and_then(|n| n.message_ts.clone());
        Reporter::start(&self.outbox, target, notify, ts)
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(chrono::Duration::seconds(secs));
    }

    async fn depth(&self) -> u64 {
        self.store.outbox_depth().await.unwrap()
    }

    fn metrics(&self) -> String {
        self.metrics.render(None)
    }
}

fn notify(message_ts: Option<&str>) -> Notify {
    Notify {
        adapter: "slack".into(),
        room: "C1".into(),
        message_ts: message_ts.map(str::to_owned),
        ..Notify::default()
    }
}

fn report(state: Option<RunState>, chat: Option<&str>, reply: Option<&str>) -> Report {
    Report {
        status: state.map(|s| StatusUpdate::new(s, format!("{} now", s.as_str()))),
        // The fake chat renders plain text, so an info message of our own words is `text`.
        chat: chat.map(|t| Message::new(Tone::Info).text(t)),
        chat_reply: reply.map(|t| Message::new(Tone::Info).text(t)),
    }
}

fn record(id: u64, state: RunState) -> RunRecord {
    let mut r = crate::store::contract::run(
        deploy_core::RunKey::new(&deploy_core::RepoName::parse("o/r").unwrap(), id).as_str(),
    );
    r.deployment_id = id;
    r.state = state;
    r
}

/// Reports a whole run: queued (twice, as a run waiting behind another does), in progress,
/// then `last` with `text`.
async fn whole_run(w: &World, id: u64, notify: Option<Notify>, last: RunState) {
    let r = w.reporter(id, notify);
    r.send(report(
        Some(RunState::Queued),
        Some("waiting behind #1"),
        None,
    ));
    r.send(report(Some(RunState::Queued), Some("next"), None));
    r.send(report(Some(RunState::InProgress), Some("deploying"), None));
    assert!(
        r.finish_run(
            &record(id, last),
            report(Some(last), Some("done"), Some("the log's tail"))
        )
        .await
        .unwrap()
    );
}

#[tokio::test]
async fn statuses_go_out_in_order_once_each_and_a_second_queued_goes_to_chat_only() {
    let w = World::new().await;
    whole_run(&w, 7, Some(notify(Some("1.1"))), RunState::Success).await;
    let poster = w.poster("p1");
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.states(7), ["queued", "in_progress", "success"]);
    let descriptions: Vec<String> =
        w.gh.recorded
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, d)| d.clone())
            .collect();
    assert_eq!(
        descriptions[0], "queued now",
        "the first queued is the one written"
    );
    // The chat message shows each step in turn (none is behind), then the reply.
    assert_eq!(
        w.chat.calls(),
        [
            "update 1.1: waiting behind #1",
            "update 1.1: next",
            "update 1.1: deploying",
            "update 1.1: done",
            "reply 1.1: the log's tail"
        ]
    );
    assert_eq!(w.gh.lists(), 0, "nothing was in doubt");
    assert_eq!(w.depth().await, 0);
    assert_eq!(poster.run_once().await.unwrap(), 0, "nothing is left");
    assert!(w.metrics().contains("faseng_outbox_depth 0"));
    // The record was written with the last reports.
    assert_eq!(
        w.store.get_run("o/r/7").await.unwrap().unwrap().state,
        RunState::Success
    );
}

#[tokio::test]
async fn a_failing_status_holds_the_ones_behind_it_and_backs_off_with_jitter() {
    let w = World::new().await;
    w.gh.down.store(true, std::sync::atomic::Ordering::SeqCst);
    whole_run(&w, 8, None, RunState::Failure).await;
    let poster = w.poster("p1");
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.posts(), 1, "the ones behind the first wait for it");
    assert!(w.metrics().contains("faseng_status_posts_failed_total 1"));
    // Not due again before the backoff (1 s, jittered: between 0.5 and 1 s).
    assert_eq!(poster.run_once().await.unwrap(), 0);
    w.advance(1);
    poster.run_once().await.unwrap();
    // Its outcome is unknown (a 500): GitHub's list is asked first, and fails too.
    assert_eq!((w.gh.posts(), w.gh.lists()), (1, 1));
    // The second delay is up to 2 s: at 1 s it may or may not be due, at 2 s it is.
    w.advance(2);
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.lists(), 2);
    assert!(w.gh.states(8).is_empty());

    w.gh.down.store(false, std::sync::atomic::Ordering::SeqCst);
    w.advance(4);
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.states(8), ["queued", "in_progress", "failure"]);
    assert_eq!(w.depth().await, 0);
}

#[tokio::test]
async fn a_status_github_recorded_whose_answer_was_lost_is_not_posted_again() {
    let w = World::new().await;
    w.gh.answer(Answer::RecordedThenLost);
    whole_run(&w, 9, None, RunState::Success).await;
    let poster = w.poster("p1");
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.states(9), ["queued"]);
    w.advance(1);
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.lists(), 1, "checked before posting again");
    assert_eq!(w.gh.states(9), ["queued", "in_progress", "success"]);
    assert_eq!(w.gh.posts(), 3, "the queued status was not posted twice");
}

#[tokio::test]
async fn a_secondary_rate_limit_is_waited_out_not_dropped() {
    let w = World::new().await;
    w.gh.answer(Answer::RateLimited(Duration::from_secs(120)));
    whole_run(&w, 10, None, RunState::Success).await;
    let poster = w.poster("p1");
    poster.run_once().await.unwrap();
    assert!(w.gh.states(10).is_empty());
    // Far past the backoff, still before Retry-After.
    w.advance(119);
    assert_eq!(poster.run_once().await.unwrap(), 0);
    assert_eq!(w.gh.posts(), 1);
    w.advance(1);
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.states(10), ["queued", "in_progress", "success"]);
    assert_eq!(
        w.gh.lists(),
        0,
        "a rate limited post was not recorded: no check"
    );
}

#[tokio::test]
async fn a_rejected_status_is_dropped_and_the_next_goes_out() {
    let w = World::new().await;
    w.gh.answer(Answer::Rejected);
    whole_run(&w, 11, None, RunState::Error).await;
    w.poster("p1").run_once().await.unwrap();
    assert_eq!(w.gh.states(11), ["in_progress", "error"]);
    assert_eq!(w.depth().await, 0);
    assert!(w.metrics().contains("faseng_status_posts_failed_total 1"));
}

#[tokio::test]
async fn a_lane_taken_over_from_a_dead_claim_is_checked_before_it_is_sent() {
    let w = World::new().await;
    whole_run(&w, 12, None, RunState::Success).await;
    // A process claims the lane, posts the first status, and dies before recording it.
    let lane = LaneKey::new("o/r/12", Lane::Status);
    let now = w.clock.now();
    let claimed = w
        .store
        .outbox_claim(&lane, "dead", now, now + chrono::Duration::seconds(30), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.entries.len(), 3);
    w.gh.post(
        &StatusTarget {
            repo: RepoName::parse("o/r").unwrap(),
            deployment_id: 12,
        },
        &StatusUpdate::new(RunState::Queued, "queued now".into()),
    )
    .await
    .unwrap();
    let poster = w.poster("p2");
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.posts(), 1, "the lane is held until the claim lapses");
    w.advance(30);
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.lists(), 1);
    assert_eq!(w.gh.states(12), ["queued", "in_progress", "success"]);
}

#[tokio::test]
async fn entries_undelivered_after_a_day_are_abandoned_and_counted() {
    let w = World::new().await;
    w.gh.down.store(true, std::sync::atomic::Ordering::SeqCst);
    w.chat.set(ChatMode::Down);
    whole_run(&w, 13, Some(notify(Some("1.1"))), RunState::Success).await;
    let poster = w.poster("p1");
    poster.run_once().await.unwrap();
    assert!(w.depth().await > 0);
    w.advance(23 * 3600);
    poster.run_once().await.unwrap();
    assert!(w.depth().await > 0, "kept trying for 24 hours");
    w.advance(3600);
    poster.run_once().await.unwrap();
    assert_eq!(w.depth().await, 0);
    assert!(w.gh.states(13).is_empty());
    // Three statuses and the chat text (the older ones were replaced) and the reply.
    assert!(
        w.metrics().contains("faseng_outbox_abandoned_total 5"),
        "{}",
        w.metrics()
    );
}

#[tokio::test]
async fn chat_edits_in_turn_catches_up_to_the_latest_and_keeps_its_own_message() {
    let w = World::new().await;
    // No message_ts: faseng posts its own message.
    let r = w.reporter(14, Some(notify(None)));
    r.send(report(None, Some("queued"), None));
    r.send(report(None, Some("deploying"), Some("first")));
    r.send(report(None, None, Some("second")));
    r.finish(Duration::from_secs(5)).await;
    w.poster("p1").run_once().await.unwrap();
    assert_eq!(
        w.chat.calls(),
        [
            "post 1700.0001: queued",
            "update 1700.0001: deploying",
            "reply 1700.0001: first",
            "reply 1700.0001: second"
        ]
    );
    // After a restart: a new reporter (which knows no ts) and a new poster edit that
    // message; texts that waited more than a few seconds give way to the latest.
    let r = w.reporter(14, Some(notify(None)));
    r.send(report(None, Some("stage 2 of 3"), None));
    assert!(
        r.finish_run(
            &record(14, RunState::Success),
            report(None, Some("done"), None)
        )
        .await
        .unwrap()
    );
    w.advance(6);
    w.poster("p2").run_once().await.unwrap();
    assert_eq!(w.chat.calls().len(), 5, "{:?}", w.chat.calls());
    assert_eq!(w.chat.calls().last().unwrap(), "update 1700.0001: done");
}

#[tokio::test]
async fn a_chat_outage_never_delays_statuses_and_the_message_catches_up() {
    let w = World::new().await;
    w.chat.set(ChatMode::Down);
    whole_run(&w, 15, Some(notify(Some("1.1"))), RunState::Success).await;
    let poster = w.poster("p1");
    poster.run_once().await.unwrap();
    assert_eq!(w.gh.states(15), ["queued", "in_progress", "success"]);
    assert!(w.chat.calls().is_empty());
    assert!(w.metrics().contains("faseng_chat_posts_failed_total 1"));
    // Slack rate limits next: its Retry-After (90 s) is honoured.
    w.chat.set(ChatMode::RateLimited);
    w.advance(1);
    poster.run_once().await.unwrap();
    w.chat.set(ChatMode::Up);
    w.advance(60);
    poster.run_once().await.unwrap();
    assert!(w.chat.calls().is_empty(), "before Retry-After");
    w.advance(30);
    poster.run_once().await.unwrap();
    assert_eq!(
        w.chat.calls(),
        ["update 1.1: done", "reply 1.1: the log's tail"]
    );
}

#[tokio::test]
async fn a_refused_chat_update_is_dropped() {
    let w = World::new().await;
    w.chat.set(ChatMode::Refusing);
    let r = w.reporter(16, Some(notify(Some("1.1"))));
    r.send(report(None, Some("deploying"), None));
    r.finish(Duration::from_secs(5)).await;
    w.poster("p1").run_once().await.unwrap();
    assert_eq!(w.depth().await, 0);
}

#[tokio::test]
async fn a_fenced_out_run_writes_nothing_more() {
    let w = World::new().await;
    let marker = |worker: &str| StartMarker::sample(worker, Utc::now());
    w.store.mark_started("o/r/17", &marker("w1")).await.unwrap();
    let r = w.reporter(17, None);
    r.set_fence("w1");
    assert_eq!(r.fence().as_deref(), Some("w1"));
    r.send(report(Some(RunState::InProgress), None, None));
    r.flush().await;
    // Another worker takes the run over.
    let stored = w.store.started("o/r/17").await.unwrap().unwrap();
    assert!(
        w.store
            .take_over_started("o/r/17", &stored, &marker("w2"))
            .await
            .unwrap()
    );
    let written = r
        .finish_run(
            &record(17, RunState::Success),
            report(Some(RunState::Success), None, None),
        )
        .await
        .unwrap();
    assert!(!written);
    assert_eq!(w.store.get_run("o/r/17").await.unwrap(), None);
    w.poster("p1").run_once().await.unwrap();
    assert_eq!(w.gh.states(17), ["in_progress"]);
}

#[tokio::test]
async fn the_background_poster_is_woken_by_writes_and_finishes_on_stop() {
    let w = World::new().await;
    let poster = Arc::new(Poster::new(
        &w.outbox,
        w.gh.clone(),
        w.metrics.clone(),
        PosterSettings {
            // No scan during the test: only the wake-up can send.
            scan_every: Duration::from_secs(3600),
            ..PosterSettings::default()
        },
        "p1",
    ));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(poster.run(stopped));
    let r = w.reporter(18, None);
    r.send(report(Some(RunState::Queued), None, None));
    tokio::time::timeout(Duration::from_secs(10), async {
        while w.gh.states(18).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the write woke the poster");
    assert!(
        r.finish_run(
            &record(18, RunState::Success),
            report(Some(RunState::Success), None, None)
        )
        .await
        .unwrap()
    );
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(w.gh.states(18), ["queued", "success"]);
}
