//! Reconciling with GitHub (issue #13), over real `faseng` processes, a real redis-server or
//! SQLite file and the fake GitHub: deployments whose webhook never came are deployed once,
//! old ones never; webhook and reconciler racing run a deployment once; processes sharing a
//! store reconcile one at a time; unchanged lists cost a 304; a rate limit is waited out.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use deploy_core::{Apps, GithubAuth, GithubClients, Secret};
use e2e::fake_github::{self, FakeGithub, RateLimit};
use e2e::fake_slack::{self, FakeSlack};
use e2e::git_repo::GitRepo;
use e2e::redis_server::RedisServer;
use faseng::intake::Intake;
use faseng::metrics::Metrics;
use faseng::queue::{QueueTiming, QueueUrl};
use faseng::reconcile::{OctocrabReader, PassReport, ReconcileSettings, Reconciler};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const SECRET: &str = "It's a Secret to Everybody";
const REPO: &str = "oursky/trelhub";
const ROOM: &str = "C024BE91L";
/// Bound for anything that should take a few seconds on an idle machine.
const WAIT: Duration = Duration::from_secs(60);
/// What faseng logs for each deployment it finds by reconciling.
const FOUND: &str = "was found by reconciling with GitHub: its webhook never arrived";
/// What the holder of the reconcile lease logs when it takes it.
const TOOK_LEASE: &str = "it took the reconcile lease";
/// What faseng logs (at debug) after each pass.
const PASS_DONE: &str = "reconcile pass done";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Redis,
    Sqlite,
}

/// One faseng process.
struct Proc {
    child: Option<Child>,
    /// `Some` for `faseng serve`: its base URL.
    url: Option<String>,
    log: PathBuf,
}

/// Fakes, a repository, a queue backend and any number of real faseng processes.
struct World {
    gh: FakeGithub,
    slack: FakeSlack,
    _repo: GitRepo,
    dir: tempfile::TempDir,
    _redis: Option<RedisServer>,
    queue_url: String,
    procs: Vec<Proc>,
    http: reqwest::Client,
}

impl World {
    async fn start(backend: Backend) -> Option<Self> {
        let redis = match backend {
            Backend::Redis => Some(RedisServer::start()?),
            Backend::Sqlite => None,
        };
        let dir = e2e::dirs::scenario_dir();
        e2e::dirs::open_scratch(&dir.path().join("scratch"));
        let script = format!(
            "echo $DEPLOY_ID >> {}/runs",
            dir.path().join("scratch").display()
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
        let apps = json!({"trelhub": {"provider": "shell", "repository": REPO,
                                      "environments": ["edge", "staging", "production"]}});
        std::fs::write(dir.path().join("app.json"), apps.to_string()).unwrap();
        Some(Self {
            gh,
            slack,
            _repo: repo,
            dir,
            _redis: redis,
            queue_url,
            procs: Vec::new(),
            http: reqwest::Client::new(),
        })
    }

    /// A faseng command listening on `port`, linking logs to `url`.
    fn command(
        &self,
        args: &[&str],
        port: u16,
        url: &str,
        env: &[(&str, &str)],
    ) -> (Command, PathBuf) {
        let n = self.procs.len();
        let path = self.dir.path().join(format!("faseng-{n}.log"));
        let log = std::fs::File::create(&path).unwrap();
        let mut cmd = Command::new(e2e::bins::binary("faseng"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env(
                "RUST_LOG",
                "info,apalis=warn,sqlx=warn,faseng::reconcile=debug",
            )
            .env("FASENG_BIND", format!("127.0.0.1:{port}"))
            .env("FASENG_PUBLIC_URL", url)
            .env("FASENG_QUEUE_URL", &self.queue_url)
            .env("FASENG_WORKDIR", self.dir.path().join(format!("work-{n}")))
            .env("FASENG_APPS_JSON", self.dir.path().join("app.json"))
            .env("DEPLOY_CONFIG_DIR", self.dir.path().join("deploy-config"))
            .env("FASENG_HEARTBEAT", "1")
            .env("FASENG_SHUTDOWN_TIMEOUT", "30")
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("GITHUB_TOKEN", fake_github::TOKEN)
            .env("GITHUB_API_URL", self.gh.url())
            .env("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN)
            .env("SLACK_API_URL", self.slack.api_url())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        (cmd, path)
    }

    /// Starts `faseng serve` (with its worker) with `env` on top, and waits for `/healthz`.
    async fn serve(&mut self, env: &[(&str, &str)]) -> usize {
        let port = e2e::net::free_port("127.0.0.1");
        let url = format!("http://127.0.0.1:{port}");
        let (mut cmd, log) = self.command(&["serve"], port, &url, env);
        let mut child = cmd.spawn().expect("faseng serve starts");
        e2e::net::wait_healthy(&self.http, &url, &mut child, WAIT, || self.logs()).await;
        self.procs.push(Proc {
            child: Some(child),
            url: Some(url),
            log,
        });
        self.procs.len() - 1
    }

    /// Starts a `faseng worker` with `env` on top, linking logs to the first serve process.
    fn worker(&mut self, env: &[(&str, &str)]) -> usize {
        let url = self
            .procs
            .iter()
            .find_map(|p| p.url.clone())
            .expect("a serve process first");
        let (mut cmd, log) = self.command(&["worker"], 0, &url, env);
        let child = cmd.spawn().expect("faseng worker starts");
        self.procs.push(Proc {
            child: Some(child),
            url: None,
            log,
        });
        self.procs.len() - 1
    }

    /// SIGTERM, and waits for the process to exit.
    async fn stop(&mut self, n: usize) {
        let Some(mut child) = self.procs[n].child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("faseng stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}\n{}", self.logs());
    }

    /// `kill -9`.
    async fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.procs[n].child.take() {
            child.kill().await.unwrap();
        }
    }

    fn log(&self, n: usize) -> String {
        std::fs::read_to_string(&self.procs[n].log).unwrap_or_default()
    }

    fn logs(&self) -> String {
        (0..=self.procs.len())
            .filter_map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("faseng-{n}.log")))
                    .ok()
                    .map(|l| format!("--- faseng-{n}.log ---\n{l}"))
            })
            .collect()
    }

    /// The body chima would send to create a deployment to `env`, with a seeded chat message.
    fn deployment_body(&self, env: &str) -> Value {
        let ts = self.slack.post_as_bot(ROOM, "joyz asked for a deploy");
        let payload = json!({"name": "trelhub", "robotName": "chima", "hosts": "",
            "notify": {"adapter": "slack", "room": ROOM, "room_name": "deployment",
                       "user": "U2147483697", "user_name": "joyz", "message_ts": ts}});
        json!({"ref": "main", "environment": env, "task": "deploy", "auto_merge": false,
               "required_contexts": [], "payload": payload})
    }

    /// Creates a deployment whose webhook never goes out; returns it.
    async fn missed(&self, env: &str) -> Value {
        self.gh
            .create_deployment_without_webhook(REPO, self.deployment_body(env))
            .await
    }

    /// The ids the deploy script recorded, one line per run.
    fn runs(&self) -> Vec<u64> {
        std::fs::read_to_string(self.dir.path().join("scratch/runs"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().expect("a deployment id"))
            .collect()
    }

    fn states(&self, id: u64) -> Vec<String> {
        self.gh
            .statuses(id)
            .iter()
            .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn wait_final(&self, id: u64) -> Value {
        let logs = || self.logs();
        let status = tokio::time::timeout(
            WAIT,
            self.gh
                .wait_until(WAIT, &format!("a final status for {id}"), |gh| {
                    gh.statuses(id).into_iter().find(|s| {
                        matches!(s["state"].as_str(), Some("success" | "failure" | "error"))
                    })
                }),
        )
        .await;
        status.unwrap_or_else(|_| panic!("no final status for #{id}\n{}", logs()))
    }

    /// Each of `ids` ran exactly once and has exactly one final status: `success`.
    async fn assert_each_ran_once(&self, ids: &[u64]) {
        for id in ids {
            assert_eq!(
                self.wait_final(*id).await["state"],
                "success",
                "#{id}\n{}",
                self.logs()
            );
        }
        let runs = self.runs();
        for id in ids {
            assert_eq!(
                runs.iter().filter(|r| *r == id).count(),
                1,
                "#{id} ran {runs:?}\n{}",
                self.logs()
            );
            let states = self.states(*id);
            let finals = states
                .iter()
                .filter(|s| matches!(s.as_str(), "success" | "failure" | "error"))
                .count();
            assert_eq!(finals, 1, "#{id}: {states:?}");
            assert_eq!(states.first().map(String::as_str), Some("queued"), "#{id}");
        }
    }

    /// `faseng_reconciled_total` of serve process `n`.
    async fn reconciled_total(&self, n: usize) -> u64 {
        let url = self.procs[n].url.as_ref().expect("a serve process");
        let text = self
            .http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("faseng_reconciled_total "))
            .unwrap_or_else(|| panic!("no faseng_reconciled_total in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until the fake has answered `since + n` deployments lists in all.
    async fn wait_lists(&self, since: usize, n: usize) {
        let want = since + n;
        let answered = tokio::time::timeout(
            WAIT,
            self.gh
                .wait_until(WAIT, &format!("{want} deployments lists"), |gh| {
                    (gh.list_answers(REPO).len() >= want).then_some(())
                }),
        )
        .await;
        assert!(answered.is_ok(), "fewer than {want} lists\n{}", self.logs());
    }

    /// Waits until process `n`'s log contains `needle`.
    async fn wait_log(&self, n: usize, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.log(n).contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "faseng-{n} never logged {needle:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A reconciler in this test process, over its own connection to the store.
    async fn reconciler(&self) -> Reconciler {
        let url = QueueUrl::parse(&self.queue_url).unwrap();
        let (queue, store) = faseng::queue::open(&url, QueueTiming::default())
            .await
            .unwrap();
        let apps = Arc::new(
            Apps::load(&self.dir.path().join("app.json")).expect("the scenario's app.json"),
        );
        let (targets, _) = faseng::reconcile::targets(&apps, true);
        let clients = Arc::new(GithubClients::new(
            self.gh.url(),
            Some(GithubAuth::Token(Secret::new(fake_github::TOKEN))),
        ));
        Reconciler::new(
            targets,
            Arc::new(OctocrabReader::new(clients)),
            store.clone(),
            Arc::new(Intake::new(store, queue, apps)),
            Arc::new(Metrics::default()),
            deploy_core::clock::system(),
            ReconcileSettings::default(),
        )
    }

    /// Waits until the store records deployment `id`'s run as finished (a process killed
    /// between posting the final status and recording it would leave an orphan behind).
    async fn wait_recorded_final(&self, id: u64) {
        let url = QueueUrl::parse(&self.queue_url).unwrap();
        let (_, store) = faseng::queue::open(&url, QueueTiming::default())
            .await
            .unwrap();
        let key = format!("{REPO}/{id}");
        let deadline = tokio::time::Instant::now() + WAIT;
        while !store
            .get_run(&key)
            .await
            .unwrap()
            .is_some_and(|r| r.state.is_final())
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "#{id} never recorded as finished\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Posts a signed delivery to serve process `n`; its HTTP status.
    async fn send(&self, n: usize, headers: &[(String, String)], body: Vec<u8>) -> u16 {
        let url = self.procs[n].url.as_ref().expect("a serve process");
        let mut req = self.http.post(format!("{url}/webhooks/github"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(body).send().await.unwrap().status().as_u16()
    }
}

fn id_of(d: &Value) -> u64 {
    d["id"].as_u64().unwrap()
}

/// Deployments created while no webhook was delivered are deployed, once each, by a faseng
/// started afterwards (its start-up pass) and by a running one (a later pass).
async fn missed_deployments_are_deployed_once(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    // The hook exists but nothing is delivered (GitHub gave up, or faseng was down).
    w.gh.set_webhook("http://127.0.0.1:9/webhooks/github", SECRET);
    w.gh.drop_deliveries(true);
    let mut ids = Vec::new();
    for env in ["edge", "staging", "production"] {
        let d = w.gh.create_deployment(REPO, w.deployment_body(env)).await;
        ids.push(id_of(&d));
    }

    // Started afterwards with an hour between passes: only its start-up pass can find them.
    let first = w.serve(&[("FASENG_RECONCILE_SECS", "3600")]).await;
    w.assert_each_ran_once(&ids).await;
    assert_eq!(w.reconciled_total(first).await, 3);
    let log = w.log(first);
    for id in &ids {
        assert!(
            log.contains(&format!("deployment {id} of {REPO}")) && log.contains(FOUND),
            "#{id} is not named in the log as found by reconciling:\n{log}"
        );
    }
    assert!(w.gh.deliveries().is_empty(), "no webhook was delivered");
    // A graceful stop gives the lease up, so the next process reconciles at once.
    w.stop(first).await;

    let second = w.serve(&[("FASENG_RECONCILE_SECS", "1")]).await;
    let seen = w.gh.list_answers(REPO).len();
    w.wait_lists(seen, 1).await;
    // Created after a pass of the running process: a later pass finds it.
    let late = id_of(
        &w.gh
            .create_deployment(REPO, w.deployment_body("edge"))
            .await,
    );
    ids.push(late);
    w.assert_each_ran_once(&ids).await;
    assert_eq!(
        w.reconciled_total(second).await,
        1,
        "the first three are known to the store: not taken again\n{}",
        w.logs()
    );
    assert_eq!(w.runs().len(), 4, "{:?}", w.runs());
}

/// A first start never picks up deployments from before the window or with statuses (say,
/// from a previous deployer); a new one in the same repository it does.
async fn old_deployments_are_never_picked_up(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    let now = chrono::Utc::now();
    let old = id_of(&w.missed("edge").await);
    w.gh.set_created_at(old, now - chrono::Duration::hours(2));
    let outside = id_of(&w.missed("staging").await);
    w.gh.set_created_at(outside, now - chrono::Duration::minutes(45));
    let done = id_of(&w.missed("edge").await);
    w.gh.add_status(done, "success", "Deployed by heaven");
    let started = id_of(&w.missed("production").await);
    w.gh.add_status(started, "in_progress", "Deploying with heaven");

    let faseng = w
        .serve(&[
            ("FASENG_RECONCILE_SECS", "1"),
            ("FASENG_RECONCILE_WINDOW", "30m"),
        ])
        .await;
    // A 304 means a pass found the list as the one before it, which therefore ended.
    w.gh.wait_until(WAIT, "a second pass (304)", |gh| {
        (gh.counters(REPO).list_not_modified >= 1).then_some(())
    })
    .await;
    assert!(w.gh.statuses(old).is_empty(), "{}", w.logs());
    assert!(w.gh.statuses(outside).is_empty(), "{}", w.logs());
    assert_eq!(w.states(done), ["success"]);
    assert_eq!(w.states(started), ["in_progress"]);
    assert!(w.runs().is_empty());
    assert_eq!(w.reconciled_total(faseng).await, 0);
    assert!(!w.log(faseng).contains(FOUND), "{}", w.logs());

    let new = id_of(&w.missed("edge").await);
    w.assert_each_ran_once(&[new]).await;
    assert_eq!(w.reconciled_total(faseng).await, 1);
    assert_eq!(w.runs(), [new]);
}

/// Webhook and reconciler racing for one deployment: one run, one final status, and exactly
/// one of them queued it.
async fn a_webhook_racing_the_reconciler_deploys_once(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    let faseng = w.serve(&[("FASENG_RECONCILE_SECS", "0")]).await;
    let reconciler = w.reconciler().await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let d = w.missed("edge").await;
        let id = id_of(&d);
        let (headers, body) = w.gh.deployment_webhook(REPO, &d, SECRET);
        let (code, report): (u16, PassReport) =
            tokio::join!(w.send(faseng, &headers, body.to_vec()), reconciler.pass());
        let found = report.found == [format!("{REPO}/{id}")];
        assert!(
            report.found.len() <= 1 && (code == 202 || code == 200),
            "#{id}: {code}, {report:?}"
        );
        assert!(
            (code == 202) != found,
            "#{id}: exactly one of webhook ({code}) and reconciler ({report:?}) queues it"
        );
        ids.push(id);
    }
    w.assert_each_ran_once(&ids).await;
    assert_eq!(w.runs().len(), ids.len());
}

/// Two processes on one store: one reconciles at a time (the lease), another takes over when
/// it dies, and a deployment still runs once even when several reconcile at once.
async fn processes_sharing_a_store_reconcile_one_at_a_time(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    let every = [("FASENG_RECONCILE_SECS", "1")];
    let serve = w.serve(&every).await;
    let worker = w.worker(&every);
    w.wait_log(worker, "reconciling with GitHub every").await;
    let seen = w.gh.list_answers(REPO).len();
    w.wait_lists(seen, 3).await;
    let holders: Vec<usize> = [serve, worker]
        .into_iter()
        .filter(|n| w.log(*n).contains(TOOK_LEASE))
        .collect();
    assert_eq!(holders.len(), 1, "one holder:\n{}", w.logs());
    let (holder, other) = if holders[0] == serve {
        (serve, worker)
    } else {
        (worker, serve)
    };
    assert!(
        w.log(holder).matches(PASS_DONE).count() >= 2,
        "{}",
        w.logs()
    );
    assert_eq!(
        w.log(other).matches(PASS_DONE).count(),
        0,
        "only the holder reconciles:\n{}",
        w.logs()
    );

    let first = id_of(&w.missed("edge").await);
    w.assert_each_ran_once(&[first]).await;

    // The holder dies without giving the lease up: it lapses, the other takes over.
    w.wait_recorded_final(first).await;
    w.kill(holder).await;
    let second = id_of(&w.missed("staging").await);
    w.assert_each_ran_once(&[first, second]).await;
    assert!(w.log(other).contains(TOOK_LEASE), "{}", w.logs());
    assert!(w.log(other).contains(FOUND), "{}", w.logs());

    // Several reconcilers at once (two here, without the lease, and the running one): the
    // store's dedup still lets one of them queue it.
    let (a, b) = (w.reconciler().await, w.reconciler().await);
    let third = id_of(&w.missed("production").await);
    let (ra, rb) = tokio::join!(a.pass(), b.pass());
    assert!(ra.found.len() + rb.found.len() <= 1, "{ra:?} {rb:?}");
    w.assert_each_ran_once(&[first, second, third]).await;
    assert_eq!(w.runs().len(), 3, "{:?}", w.runs());
}

/// The second pass over an unchanged repository sends `If-None-Match` and gets a 304; so
/// does the repository object once it was read.
async fn an_unchanged_repository_costs_a_304(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    w.serve(&[("FASENG_RECONCILE_SECS", "1")]).await;
    w.wait_lists(0, 3).await;
    let answers = w.gh.list_answers(REPO);
    assert_eq!(answers[0].if_none_match, None, "{answers:?}");
    assert_eq!(answers[0].status, 200);
    for pair in answers.windows(2) {
        assert_eq!(
            pair[1].if_none_match, pair[0].etag,
            "each list is asked for with the ETag of the one before: {answers:?}"
        );
        assert_eq!(pair[1].status, 304, "{answers:?}");
    }

    // Two missed deployments, one pass after the other: the list changes each time, the
    // repository object does not.
    let first = id_of(&w.missed("edge").await);
    w.assert_each_ran_once(&[first]).await;
    let second = id_of(&w.missed("edge").await);
    w.assert_each_ran_once(&[first, second]).await;
    let c = w.gh.counters(REPO);
    assert_eq!(c.repo_not_modified, 1, "{c:?}");
    let repo_gets: Vec<_> =
        w.gh.requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path == format!("/repos/{REPO}"))
            .collect();
    assert_eq!(repo_gets.len(), 2);
    assert!(repo_gets[0].if_none_match.is_none() && repo_gets[1].if_none_match.is_some());
}

/// A rate-limited list (429 with `Retry-After`, or 403 with the limit spent) is waited out
/// as GitHub asks, not reported as a failure, and the missed deployment is deployed after.
async fn a_rate_limited_list_is_waited_out(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    let faseng = w.serve(&[("FASENG_RECONCILE_SECS", "1")]).await;
    w.wait_lists(0, 1).await;
    let limits = [
        RateLimit::RetryAfter(Duration::from_secs(3)),
        RateLimit::Exhausted {
            reset_in: Duration::from_secs(4),
        },
    ];
    let mut ids = Vec::new();
    for (i, limit) in limits.into_iter().enumerate() {
        w.gh.rate_limit_next_list(limit);
        ids.push(id_of(&w.missed("edge").await));
        w.assert_each_ran_once(&ids).await;
        let answers = w.gh.list_answers(REPO);
        let limited: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.status, 403 | 429))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(limited.len(), i + 1, "{answers:?}");
        let at = limited[i];
        let next = answers.get(at + 1).expect("a list after the limited one");
        let waited = next.at - answers[at].at;
        // 3 s as told; 4 s to a reset rounded to whole seconds: at least 3 s.
        assert!(
            waited >= Duration::from_millis(2900),
            "the next list came {waited:?} after the rate-limited one\n{}",
            w.logs()
        );
    }
    let log = w.log(faseng);
    assert_eq!(
        log.matches("GitHub's rate limit: reconciling pauses")
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("could not reconcile"), "{log}");
    assert_eq!(w.reconciled_total(faseng).await, 2);
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Redis).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
    };
}

both_backends!(
    missed_deployments_are_deployed_once,
    old_deployments_are_never_picked_up,
    a_webhook_racing_the_reconciler_deploys_once,
    processes_sharing_a_store_reconcile_one_at_a_time,
    an_unchanged_repository_costs_a_304,
    a_rate_limited_list_is_waited_out,
);
