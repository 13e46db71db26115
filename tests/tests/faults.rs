//! The fault suite (issue #7): what faseng does when the parts around it fail, over real
//! processes (`faseng serve`, `faseng worker`, `redis-server`, SQLite files, git, shell
//! scripts) and fake GitHub / Slack servers. Every case, and where it lives:
//!
//! * (a) `kill -9` of a worker mid-run → `error`, lock freed, next deployment runs:
//!   `faseng_worker_crash::redis_kill_9_of_a_worker_process`,
//!   `faseng_worker_crash::sqlite_kill_9_of_a_worker_process`.
//! * (b) Redis killed and restarted while webhooks flow → every delivery answered 2xx is
//!   deployed exactly once with exactly one final status (503s are redelivered):
//!   `faults::redis_restarted_while_webhooks_flow_every_acknowledged_delivery_deploys_once`
//!   (two lost-delivery causes found by it are fixed and unit-tested in faseng: a
//!   redelivery after a failed push was taken for a duplicate (`faseng::intake`), and a job
//!   recovered from a restarted worker dropped out while the first attempt, which then
//!   failed with no handler left to retry it, was still live (`faseng::deployer::LiveRuns`));
//!   one delivery: `faseng_scenarios::redis_down_means_503_and_no_lost_delivery`.
//! * (c) faseng restarted with queued jobs → each runs once after the restart, in arrival
//!   order: `faults::queued_jobs_survive_a_faseng_restart_with_sqlite` and `…_with_redis`
//!   (several jobs, two environments); one job through chima:
//!   `scenarios::{sqlite,redis}::a_queued_deployment_survives_a_faseng_restart`.
//! * (d) GitHub answering 500 to status posts → the run completes anyway and its statuses
//!   arrive once GitHub recovers, in order, once each:
//!   `faults::github_failing_status_posts_does_not_hold_the_run`; in process:
//!   `faseng_scenarios::{redis,sqlite}::failed_status_posts_are_retried_without_holding_the_run`.
//! * (e) Slack down → the deployment is unaffected and its chat message is caught up when
//!   Slack answers again: `faults::slack_down_leaves_the_deploy_alone_and_the_message_catches_up`.
//! * (g) faseng killed between the steps of taking a webhook (store accepted → job queued →
//!   202 answered) → once it is back, the deployment runs exactly once and its environment
//!   is not blocked (a head whose job was lost is queued again by the line repair):
//!   `faults::{sqlite,redis}_killed_after_{the_store_accepted_a_webhook,a_webhook_was_queued,answering_a_webhook}`
//!   (crash points from faseng's `failpoints` feature).
//! * (h) a worker frozen (SIGSTOP) past its lease on another host → another worker takes the
//!   run over, waits for the provider's deadline, reports one `error`; no two runs of the
//!   environment overlap, and the woken worker reports nothing:
//!   `faseng_worker_crash::{redis,sqlite}_a_worker_frozen_past_its_lease_loses_its_run_without_overlap`.
//! * (f) SIGTERM lets a running deployment finish and report:
//!   `faseng_worker_crash::sigterm_lets_a_running_deployment_finish` (ignored for a while: it
//!   stalled about 1 run in 13 under load on SQLite; it passed 55 runs in a row under load
//!   after the fixes of issue 7's last session, and its failure message prints the worker log).
//! * (g) Issue #13, the outbox: GitHub answers 500 to statuses while deploys finish and
//!   faseng is restarted twice (SIGTERM, then `kill -9`); once it recovers every deployment
//!   shows every status exactly once, in order:
//!   `faults::{sqlite,redis}_github_down_while_deploys_finish_and_faseng_restarts_twice`;
//!   a secondary rate limit (403 with `Retry-After`) is waited out, not dropped:
//!   `faults::{sqlite,redis}_a_secondary_rate_limit_is_waited_out`; a status GitHub recorded
//!   whose answer was lost is not posted twice:
//!   `faults::{sqlite,redis}_a_status_whose_answer_was_lost_is_not_posted_twice`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use e2e::fake_github::{self, FakeGithub};
use e2e::fake_slack::{self, FakeSlack};
use e2e::git_repo::GitRepo;
use e2e::redis_server::RedisServer;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const SECRET: &str = "It's a Secret to Everybody";
const REPO: &str = "oursky/trelhub";
const ROOM: &str = "C024BE91L";
/// Bound for anything that should take well under a second on an idle machine.
const WAIT: Duration = Duration::from_secs(60);
/// faseng's Redis queue name (apalis keys live under it).
const QUEUE: &str = "faseng:deployments";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Redis,
    Sqlite,
}

/// A signed `deployment` delivery, ready to (re)send as GitHub would.
#[derive(Clone)]
struct Hook {
    id: u64,
    env: String,
    ts: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Fakes, a repository, a queue backend and any number of real faseng processes.
struct World {
    gh: FakeGithub,
    slack: FakeSlack,
    _repo: GitRepo,
    dir: tempfile::TempDir,
    redis: Option<RedisServer>,
    queue_url: String,
    port: u16,
    procs: Vec<Option<Child>>,
    http: reqwest::Client,
}

impl World {
    /// `script` is the body of `script/deploy`; `$SCRATCH` names a directory it may write.
    async fn start(backend: Backend, script: &str) -> Option<Self> {
        let redis = match backend {
            Backend::Redis => Some(RedisServer::start()?),
            Backend::Sqlite => None,
        };
        let dir = e2e::dirs::scenario_dir();
        e2e::dirs::open_scratch(&dir.path().join("scratch"));
        let script = script.replace(
            "$SCRATCH",
            &dir.path().join("scratch").display().to_string(),
        );
        let (repo, sha) = GitRepo::with_deploy_script(&script);
        let gh = FakeGithub::start().await;
        gh.add_repo(REPO, "main");
        gh.set_branch(REPO, "main", &sha);
        gh.set_clone_url(REPO, &repo.url());
        let slack = FakeSlack::start().await;
        let queue_url = match &redis {
            Some(r) => r.url(),
            None => format!("sqlite://{}", dir.path().join("faseng.db").display()),
        };
        Some(Self {
            gh,
            slack,
            _repo: repo,
            dir,
            redis,
            queue_url,
            port: e2e::net::free_port("127.0.0.1"),
            procs: Vec::new(),
            http: reqwest::Client::new(),
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The operator's app.json (written on first use): trelhub, a shell app of [`REPO`].
    fn apps_json(&self) -> PathBuf {
        let path = self.dir.path().join("app.json");
        if !path.exists() {
            let apps = json!({"trelhub": {"provider": "shell", "repository": REPO,
                                          "environments": ["edge", "staging", "production"]}});
            std::fs::write(&path, apps.to_string()).unwrap();
        }
        path
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join("scratch").join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let n = self.procs.len();
        let log = std::fs::File::create(self.dir.path().join(format!("faseng-{n}.log"))).unwrap();
        let mut cmd = Command::new(e2e::bins::binary("faseng"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("RUST_LOG", "info,apalis=warn,sqlx=warn")
            .env("FASENG_BIND", format!("127.0.0.1:{}", self.port))
            .env("FASENG_PUBLIC_URL", self.url())
            .env("FASENG_QUEUE_URL", &self.queue_url)
            .env("FASENG_WORKDIR", self.dir.path().join("work"))
            .env("FASENG_APPS_JSON", self.apps_json())
            .env("DEPLOY_CONFIG_DIR", self.dir.path().join("deploy-config"))
            .env("FASENG_HEARTBEAT", "1")
            .env("FASENG_SHUTDOWN_TIMEOUT", "30")
            // Reports back off up to 2 s (not a minute), so a recovery is seen at once.
            .env("FASENG_REPORT_RETRY_MAX", "2s")
            // A killed process's claim on reports lapses in 4 s, not 30.
            .env("FASENG_REPORT_LEASE", "4s")
            // Deliveries are sent by hand, answers counted; reconciling is in `reconcile.rs`.
            .env("FASENG_RECONCILE_SECS", "0")
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("GITHUB_TOKEN", fake_github::TOKEN)
            .env("GITHUB_API_URL", self.gh.url())
            .env("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN)
            .env("SLACK_API_URL", self.slack.api_url())
            .stdin(Stdio::null())
            // faseng logs to stdout; panics and clap go to stderr.
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        cmd
    }

    /// Starts `faseng serve` (with or without its worker) and waits for `/healthz`.
    async fn serve(&mut self, with_worker: bool) -> usize {
        self.serve_with(with_worker, &[]).await
    }

    /// [`World::serve`] with more environment.
    async fn serve_with(&mut self, with_worker: bool, extra: &[(&str, &str)]) -> usize {
        let mut args = vec!["serve"];
        if !with_worker {
            args.push("--no-worker");
        }
        let mut child = self
            .command(&args)
            .envs(extra.iter().copied())
            .spawn()
            .expect("faseng serve starts");
        e2e::net::wait_healthy(&self.http, &self.url(), &mut child, WAIT, || self.logs()).await;
        self.procs.push(Some(child));
        self.procs.len() - 1
    }

    /// Starts a `faseng worker` process.
    fn worker(&mut self) -> usize {
        let child = self
            .command(&["worker"])
            .spawn()
            .expect("faseng worker starts");
        self.procs.push(Some(child));
        self.procs.len() - 1
    }

    /// `kill -9` of one process.
    async fn kill(&mut self, n: usize) {
        if let Some(mut c) = self.procs[n].take() {
            c.kill().await.unwrap();
        }
    }

    /// SIGTERM to one process (a graceful stop), waiting for it to exit.
    async fn terminate(&mut self, n: usize) {
        if let Some(mut c) = self.procs[n].take() {
            let pid = nix::unistd::Pid::from_raw(c.id().expect("running") as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            let status = tokio::time::timeout(WAIT, c.wait())
                .await
                .unwrap_or_else(|_| panic!("faseng-{n} did not stop on SIGTERM\n{}", self.logs()))
                .unwrap();
            assert!(status.success(), "faseng-{n}: {status}\n{}", self.logs());
        }
    }

    /// Every faseng process's log, for failure messages.
    fn logs(&self) -> String {
        (0..=self.procs.len())
            .filter_map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("faseng-{n}.log")))
                    .ok()
                    .map(|l| format!("--- faseng-{n}.log ---\n{l}"))
            })
            .collect()
    }

    /// A deployment on the fake GitHub (no webhook fired) with a seeded chat message, and
    /// its signed delivery.
    async fn hook(&self, env: &str) -> Hook {
        let ts = self.slack.post_as_bot(ROOM, "joyz asked for a deploy");
        let payload = json!({"name": "trelhub", "robotName": "chima", "hosts": "",
            "notify": {"adapter": "slack", "room": ROOM, "room_name": "deployment",
                       "user": "U2147483697", "user_name": "joyz", "message_ts": ts},
            "config": {"provider": "shell", "repository": REPO,
                       "environments": ["edge", "staging", "production"]}});
        let d = self
            .gh
            .create_deployment(
                REPO,
                json!({"ref": "main", "environment": env, "task": "deploy", "auto_merge": false,
                       "required_contexts": [], "payload": payload}),
            )
            .await;
        let (headers, body) = self.gh.deployment_webhook(REPO, &d, SECRET);
        Hook {
            id: d["id"].as_u64().unwrap(),
            env: env.to_owned(),
            ts,
            headers,
            body: body.to_vec(),
        }
    }

    /// Sends a delivery; the HTTP status, or 0 when faseng could not be reached.
    async fn send(&self, hook: &Hook) -> u16 {
        let mut req = self.http.post(format!("{}/webhooks/github", self.url()));
        for (k, v) in &hook.headers {
            req = req.header(k, v);
        }
        match req
            .timeout(Duration::from_secs(30))
            .body(hook.body.clone())
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Sends a delivery again until it is answered 2xx, as GitHub's redelivery would.
    async fn send_until_acknowledged(&self, hook: &Hook) -> Vec<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut codes = Vec::new();
        loop {
            let code = self.send(hook).await;
            codes.push(code);
            if (200..300).contains(&code) {
                return codes;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "delivery for #{} never acknowledged: {codes:?}\n{}",
                hook.id,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn states(&self, id: u64) -> Vec<String> {
        self.gh
            .statuses(id)
            .iter()
            .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn wait_final(&self, id: u64) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self
                .gh
                .statuses(id)
                .into_iter()
                .find(|s| matches!(s["state"].as_str(), Some("success" | "failure" | "error")))
            {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no final status for #{id} (statuses {:?})\n{}",
                self.states(id),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The deployment ids the deploy script recorded in `$SCRATCH/runs`, one line per run.
    fn runs(&self) -> Vec<u64> {
        std::fs::read_to_string(self.scratch("runs"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().expect("a deployment id"))
            .collect()
    }
}

/// Where faseng dies in the middle of taking a webhook.
#[derive(Debug, Clone, Copy)]
enum CrashAfter {
    /// The store has the run (and its place in line); no job is queued; no answer.
    Accept,
    /// The job is queued too; no answer.
    Push,
    /// Answered 202, killed before any worker took the job.
    Answer,
}

/// faseng is killed between the steps of taking a webhook (store → queue → 202) and comes
/// back; GitHub does not redeliver on its own. The deployment runs exactly once, with one
/// final status, and its environment is not left blocked: the next deployment there runs.
async fn a_crash_between_intake_steps_loses_nothing(backend: Backend, crash: CrashAfter) {
    let Some(mut w) = World::start(
        backend,
        "echo $DEPLOY_ID >> $SCRATCH/runs\necho deployed $DEPLOY_ID",
    )
    .await
    else {
        return;
    };
    let hook = w.hook("edge").await;
    let failpoint = match crash {
        CrashAfter::Accept => Some("intake-after-accept=return"),
        CrashAfter::Push => Some("intake-after-push=return"),
        CrashAfter::Answer => None,
    };
    let n = match failpoint {
        Some(fp) => w.serve_with(false, &[("FAILPOINTS", fp)]).await,
        None => w.serve(false).await,
    };
    let code = w.send(&hook).await;
    let mut dead = w.procs[n].take().expect("faseng runs");
    match crash {
        CrashAfter::Answer => {
            assert_eq!(code, 202, "{}", w.logs());
            dead.kill().await.unwrap();
        }
        _ => {
            assert_eq!(
                code,
                0,
                "faseng answered before its crash point\n{}",
                w.logs()
            );
            let status = tokio::time::timeout(WAIT, dead.wait())
                .await
                .unwrap()
                .unwrap();
            assert!(!status.success(), "{status:?}");
        }
    }
    assert!(w.runs().is_empty());

    w.serve_with(true, &[("FASENG_REPAIR_AFTER", "2s")]).await;
    let next = w.hook("edge").await;
    assert_eq!(w.send(&next).await, 202, "{}", w.logs());
    w.wait_final(hook.id).await;
    w.wait_final(next.id).await;
    assert_each_ran_once_with_one_final_status(&w, &[hook.id, next.id]);
    assert_eq!(
        w.runs(),
        [hook.id, next.id],
        "the first deployment ran first"
    );
    // A late redelivery of the first webhook changes nothing.
    let again = w.send(&hook).await;
    assert!((200..300).contains(&again), "{again}");
    assert_each_ran_once_with_one_final_status(&w, &[hook.id, next.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_killed_after_the_store_accepted_a_webhook() {
    a_crash_between_intake_steps_loses_nothing(Backend::Sqlite, CrashAfter::Accept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_after_the_store_accepted_a_webhook() {
    a_crash_between_intake_steps_loses_nothing(Backend::Redis, CrashAfter::Accept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_killed_after_a_webhook_was_queued() {
    a_crash_between_intake_steps_loses_nothing(Backend::Sqlite, CrashAfter::Push).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_after_a_webhook_was_queued() {
    a_crash_between_intake_steps_loses_nothing(Backend::Redis, CrashAfter::Push).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_killed_after_answering_a_webhook() {
    a_crash_between_intake_steps_loses_nothing(Backend::Sqlite, CrashAfter::Answer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_after_answering_a_webhook() {
    a_crash_between_intake_steps_loses_nothing(Backend::Redis, CrashAfter::Answer).await;
}

/// Waits (polling, bounded) until `f` returns `Some`.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each deployment ran exactly once (the script's own record) and has exactly one final
/// status, which is its last one, after exactly one `in_progress`.
fn assert_each_ran_once_with_one_final_status(w: &World, ids: &[u64]) {
    let runs = w.runs();
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for id in &runs {
        *counts.entry(*id).or_default() += 1;
    }
    for id in ids {
        assert_eq!(
            counts.get(id).copied().unwrap_or(0),
            1,
            "#{id} ran {} times (runs: {runs:?})\n{}",
            counts.get(id).copied().unwrap_or(0),
            w.logs()
        );
        let states = w.states(*id);
        let finals = states
            .iter()
            .filter(|s| matches!(s.as_str(), "success" | "failure" | "error"))
            .count();
        assert_eq!(finals, 1, "#{id}: {states:?}\n{}", w.logs());
        assert_eq!(
            states.last().map(String::as_str),
            Some("success"),
            "#{id}: {states:?}\n{}",
            w.logs()
        );
        assert_eq!(
            states.iter().filter(|s| *s == "in_progress").count(),
            1,
            "#{id}: {states:?}"
        );
        assert_eq!(states.first().map(String::as_str), Some("queued"), "#{id}");
    }
    assert_eq!(runs.len(), ids.len(), "runs nobody asked for: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_while_webhooks_flow_every_acknowledged_delivery_deploys_once() {
    let script = "echo $DEPLOY_ID >> $SCRATCH/runs\nsleep 0.1";
    let Some(mut w) = World::start(Backend::Redis, script).await else {
        return;
    };
    w.serve(true).await;
    w.worker();
    let envs = ["edge", "staging", "production"];
    let mut hooks = Vec::new();
    for i in 0..30 {
        hooks.push(w.hook(envs[i % envs.len()]).await);
    }
    let mut codes: HashMap<u64, Vec<u16>> = HashMap::new();

    // Batch 1, Redis up: all accepted, concurrently.
    let first = futures::future::join_all(hooks[..10].iter().map(|h| w.send(h))).await;
    for (h, code) in hooks[..10].iter().zip(&first) {
        assert_eq!(*code, 202, "#{} with Redis up\n{}", h.id, w.logs());
        codes.entry(h.id).or_default().push(*code);
    }

    // Batch 2 goes out while Redis is killed (runs of batch 1 are still going on): the
    // first three race the kill, the other seven are sent once Redis is gone.
    let redis = w.redis.take().unwrap();
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let kill = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        redis.stop();
        let _ = killed_tx.send(());
        redis
    });
    let mut killed = Some(killed_rx);
    let mut batch2 = Vec::new();
    for (i, h) in hooks[10..20].iter().enumerate() {
        if i == 3
            && let Some(rx) = killed.take()
        {
            rx.await.unwrap();
        }
        batch2.push((h.id, w.send(h).await));
    }
    let redis = kill.await.unwrap();
    let refused = batch2[3..].iter().filter(|(_, c)| *c == 503).count();
    assert_eq!(
        refused,
        7,
        "deliveries sent while Redis was down must be answered 503: {batch2:?}\n{}",
        w.logs()
    );
    for (id, code) in &batch2 {
        codes.entry(*id).or_default().push(*code);
    }

    // Batch 3 goes out, concurrently, while Redis comes back with its append-only file.
    let restart = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        redis.restart();
        redis
    });
    let batch3 = futures::future::join_all(
        hooks[20..]
            .iter()
            .map(|h| async { (h.id, w.send(h).await) }),
    )
    .await;
    w.redis = Some(restart.await.unwrap());
    for (id, code) in &batch3 {
        codes.entry(*id).or_default().push(*code);
    }

    // GitHub redelivers what was not acknowledged, until it is.
    for h in &hooks {
        let acked = codes[&h.id].iter().any(|c| (200..300).contains(c));
        if !acked {
            let again = w.send_until_acknowledged(h).await;
            codes.get_mut(&h.id).unwrap().extend(again);
        }
    }

    let ids: Vec<u64> = hooks.iter().map(|h| h.id).collect();
    for id in &ids {
        let s = w.wait_final(*id).await;
        assert_eq!(s["state"], "success", "#{id}: {s}\n{}", w.logs());
    }
    // Nothing is left in the queue: no job waits, none is held by a worker (a job of a
    // worker lost in the outage has been recovered and dropped out).
    let redis = w.redis.as_ref().unwrap();
    wait_for("the queue to settle", || {
        let active: u64 = redis
            .cli(&["LLEN", &format!("{QUEUE}:active")])
            .parse()
            .unwrap_or(u64::MAX);
        let held: u64 = redis
            .cli(&["--scan", "--pattern", &format!("{QUEUE}:inflight*")])
            .lines()
            .map(|k| redis.cli(&["SCARD", k]).parse::<u64>().unwrap_or(u64::MAX))
            .sum();
        (active == 0 && held == 0).then_some(())
    })
    .await;
    assert_each_ran_once_with_one_final_status(&w, &ids);
    eprintln!("delivery answers: {codes:?}");
}

async fn queued_jobs_survive_a_faseng_restart(backend: Backend) {
    let Some(mut w) = World::start(backend, "echo $DEPLOY_ID >> $SCRATCH/runs").await else {
        return;
    };
    let intake = w.serve(false).await;
    let mut hooks = Vec::new();
    for env in ["edge", "staging", "edge", "staging", "edge", "staging"] {
        let h = w.hook(env).await;
        assert_eq!(w.send(&h).await, 202, "#{}\n{}", h.id, w.logs());
        hooks.push(h);
    }
    assert!(w.runs().is_empty(), "no worker yet");
    w.kill(intake).await;
    w.serve(true).await;
    let ids: Vec<u64> = hooks.iter().map(|h| h.id).collect();
    for id in &ids {
        let s = w.wait_final(*id).await;
        assert_eq!(s["state"], "success", "#{id}: {s}\n{}", w.logs());
    }
    assert_each_ran_once_with_one_final_status(&w, &ids);
    // Each environment ran its deployments in arrival order.
    let runs = w.runs();
    for env in ["edge", "staging"] {
        let arrived: Vec<u64> = hooks
            .iter()
            .filter(|h| h.env == env)
            .map(|h| h.id)
            .collect();
        let ran: Vec<u64> = runs
            .iter()
            .copied()
            .filter(|id| arrived.contains(id))
            .collect();
        assert_eq!(ran, arrived, "{env} ran out of arrival order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_jobs_survive_a_faseng_restart_with_sqlite() {
    queued_jobs_survive_a_faseng_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_jobs_survive_a_faseng_restart_with_redis() {
    queued_jobs_survive_a_faseng_restart(Backend::Redis).await;
}

/// Waits until a faseng process has logged `needle`.
async fn wait_for_logged(w: &World, needle: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !w.logs().contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "faseng never logged {needle:?}\n{}",
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the plain-text log of deployment `id` contains `needle`.
async fn wait_for_log(w: &World, id: u64, needle: &str) -> String {
    let queue_url = faseng::queue::QueueUrl::parse(&w.queue_url).unwrap();
    let url = format!(
        "{}/log",
        e2e::log_links::page(&queue_url, &w.url(), REPO, id).await
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = w.http.get(&url).send().await
            && r.status().is_success()
            && let Ok(text) = r.text().await
            && text.contains(needle)
        {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log of #{id} never said {needle:?}\n{}",
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_failing_status_posts_does_not_hold_the_run() {
    let Some(mut w) = World::start(Backend::Sqlite, "echo $DEPLOY_ID >> $SCRATCH/runs").await
    else {
        return;
    };
    w.serve(true).await;
    w.gh.fail_status_posts(u32::MAX);
    let first = w.hook("edge").await;
    let second = w.hook("edge").await;
    assert_eq!(w.send(&first).await, 202);
    assert_eq!(w.send(&second).await, 202);
    // Both runs finish, one after the other in their environment, while GitHub answers 500
    // to every status post.
    for h in [&first, &second] {
        wait_for_log(&w, h.id, "==> faseng: success").await;
    }
    assert_eq!(w.runs(), [first.id, second.id]);
    assert!(
        w.gh.statuses(first.id).is_empty() && w.gh.statuses(second.id).is_empty(),
        "GitHub recorded a status during its outage"
    );
    let refused =
        w.gh.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/statuses"))
            .count();
    assert!(refused >= 2, "faseng did not try to post during the outage");
    // GitHub recovers: every status arrives, in order, once.
    w.gh.fail_status_posts(0);
    for h in [&first, &second] {
        w.wait_final(h.id).await;
    }
    assert_eq!(w.states(first.id), ["queued", "in_progress", "success"]);
    assert_eq!(
        w.states(second.id),
        ["queued", "in_progress", "success"],
        "one status per state: that it is next goes to chat only"
    );
    assert!(
        w.gh.statuses(second.id)[0]["description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Waiting behind #{}", first.id)),
        "{:?}",
        w.gh.statuses(second.id)
    );
    assert_each_ran_once_with_one_final_status(&w, &[first.id, second.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_down_leaves_the_deploy_alone_and_the_message_catches_up() {
    let Some(mut w) = World::start(Backend::Sqlite, "echo $DEPLOY_ID >> $SCRATCH/runs").await
    else {
        return;
    };
    w.serve(true).await;
    w.slack.fail_with(Some(500));
    let h = w.hook("edge").await;
    assert_eq!(w.send(&h).await, 202);
    let s = w.wait_final(h.id).await;
    assert_eq!(s["state"], "success", "{s}\n{}", w.logs());
    assert_eq!(w.states(h.id), ["queued", "in_progress", "success"]);
    assert_each_ran_once_with_one_final_status(&w, &[h.id]);
    // faseng tried Slack during the outage, said so, and the message is untouched.
    w.slack
        .wait_until(WAIT, "a chat.update during the outage", |s| {
            s.calls()
                .iter()
                .any(|c| c.method == "chat.update")
                .then_some(())
        })
        .await;
    wait_for_logged(
        &w,
        "chat update failed; will catch up when the chat service answers",
    )
    .await;
    let msg = w.slack.message(ROOM, &h.ts).unwrap();
    assert_eq!(msg.text, "joyz asked for a deploy");
    assert!(msg.history.is_empty(), "{:?}", msg.history);

    // Slack answers again: the same message is brought to the final state.
    w.slack.fail_with(None);
    let msg = w.slack.wait_for_text(ROOM, &h.ts, "is done in", WAIT).await;
    assert!(msg.text.contains("trelhub/main"), "{}", msg.text);
    assert!(
        w.slack.messages().len() == 1 && w.slack.calls().iter().all(|c| c.method == "chat.update"),
        "a new message was posted instead of editing the deploy's own"
    );
    wait_for_logged(&w, "chat message caught up after the chat service failed").await;
}

/// Waits until GitHub has received more than `n` status posts.
async fn wait_for_status_posts(w: &World, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while w.gh.status_posts().len() <= n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no status post after the first {n}\n{}",
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts each deployment shows exactly `queued`, `in_progress`, `success`, in that order.
fn assert_every_status_once_in_order(w: &World, ids: &[u64]) {
    for id in ids {
        assert_eq!(
            w.states(*id),
            ["queued", "in_progress", "success"],
            "#{id}\n{}",
            w.logs()
        );
    }
}

async fn github_down_while_deploys_finish_and_faseng_restarts_twice(backend: Backend) {
    let Some(mut w) = World::start(backend, "echo $DEPLOY_ID >> $SCRATCH/runs").await else {
        return;
    };
    let first = w.serve(true).await;
    w.gh.fail_status_posts(u32::MAX);
    let hooks = [
        w.hook("edge").await,
        w.hook("edge").await,
        w.hook("staging").await,
    ];
    for h in &hooks {
        assert_eq!(w.send(h).await, 202, "#{}\n{}", h.id, w.logs());
    }
    // Every run finishes while GitHub answers 500 to every status post.
    for h in &hooks {
        wait_for_log(&w, h.id, "==> faseng: success").await;
    }
    let ids: Vec<u64> = hooks.iter().map(|h| h.id).collect();
    assert!(ids.iter().all(|id| w.gh.statuses(*id).is_empty()));

    // Restart 1: a graceful stop; the next process takes the outbox over.
    w.terminate(first).await;
    let tried = w.gh.status_posts().len();
    let second = w.serve(true).await;
    wait_for_status_posts(&w, tried).await;
    // Restart 2: kill -9, right after a post (its claim on that lane is likely still
    // held: it lapses, and the next process checks what was delivered before going on).
    let tried = w.gh.status_posts().len();
    wait_for_status_posts(&w, tried).await;
    w.kill(second).await;
    let tried = w.gh.status_posts().len();
    w.serve(true).await;
    wait_for_status_posts(&w, tried).await;
    assert!(ids.iter().all(|id| w.gh.statuses(*id).is_empty()));

    // GitHub recovers.
    w.gh.fail_status_posts(0);
    for id in &ids {
        let s = w.wait_final(*id).await;
        assert_eq!(s["state"], "success", "#{id}: {s}\n{}", w.logs());
    }
    assert_every_status_once_in_order(&w, &ids);
    assert!(
        w.gh.statuses(ids[1])[0]["description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Waiting behind #{}", ids[0])),
        "{:?}",
        w.gh.statuses(ids[1])
    );
    assert_each_ran_once_with_one_final_status(&w, &ids);
    // Nothing is left to send, and the failures were counted.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = w
            .http
            .get(format!("{}/metrics", w.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("faseng_status_posts_failed_total"),
            "{metrics}"
        );
        if metrics.contains("faseng_outbox_depth 0\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never emptied:\n{metrics}\n{}",
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_github_down_while_deploys_finish_and_faseng_restarts_twice() {
    github_down_while_deploys_finish_and_faseng_restarts_twice(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_github_down_while_deploys_finish_and_faseng_restarts_twice() {
    github_down_while_deploys_finish_and_faseng_restarts_twice(Backend::Redis).await;
}

async fn a_secondary_rate_limit_is_waited_out(backend: Backend) {
    let Some(mut w) = World::start(backend, "echo $DEPLOY_ID >> $SCRATCH/runs").await else {
        return;
    };
    w.serve(true).await;
    // Longer than the retry cap (2 s): only honouring Retry-After waits this long.
    w.gh.rate_limit_status_posts(1, 4);
    let h = w.hook("edge").await;
    assert_eq!(w.send(&h).await, 202);
    let s = w.wait_final(h.id).await;
    assert_eq!(s["state"], "success", "{s}\n{}", w.logs());
    assert_every_status_once_in_order(&w, &[h.id]);
    let posts = w.gh.status_posts();
    let waited = posts[1].received_at - posts[0].received_at;
    assert!(
        waited >= Duration::from_secs(4),
        "posted again {waited:?} after a Retry-After of 4 s\n{}",
        w.logs()
    );
    assert_eq!(posts.len(), 4, "one refused, three recorded");
    // A rate limited post was not recorded: nothing to check before posting it again.
    let lists =
        w.gh.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/statuses"))
            .count();
    assert_eq!(lists, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_secondary_rate_limit_is_waited_out() {
    a_secondary_rate_limit_is_waited_out(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_a_secondary_rate_limit_is_waited_out() {
    a_secondary_rate_limit_is_waited_out(Backend::Redis).await;
}

async fn a_status_whose_answer_was_lost_is_not_posted_twice(backend: Backend) {
    let Some(mut w) = World::start(backend, "echo $DEPLOY_ID >> $SCRATCH/runs").await else {
        return;
    };
    w.serve(true).await;
    w.gh.lose_status_answers(1);
    let h = w.hook("edge").await;
    assert_eq!(w.send(&h).await, 202);
    let s = w.wait_final(h.id).await;
    assert_eq!(s["state"], "success", "{s}\n{}", w.logs());
    assert_every_status_once_in_order(&w, &[h.id]);
    assert_eq!(
        w.gh.status_posts().len(),
        3,
        "the queued status GitHub recorded was posted again"
    );
    let lists =
        w.gh.requests()
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path.ends_with(&format!("/deployments/{}/statuses", h.id))
            })
            .count();
    assert_eq!(lists, 1, "checked once, before going on");
    wait_for_logged(
        &w,
        "GitHub recorded this status although its answer was lost",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_status_whose_answer_was_lost_is_not_posted_twice() {
    a_status_whose_answer_was_lost_is_not_posted_twice(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_a_status_whose_answer_was_lost_is_not_posted_twice() {
    a_status_whose_answer_was_lost_is_not_posted_twice(Backend::Redis).await;
}
