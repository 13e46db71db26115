//! Reconciling with GitHub (issue #13), over real `faseng` processes, a real redis-server or
//! SQLite file and the fake GitHub: deployments whose webhook never came are deployed once,
//! old ones never; webhook and reconciler racing run a deployment once; processes sharing a
//! store reconcile one at a time; unchanged lists cost a 304; a rate limit is waited out.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::{Apps, GithubAuth, GithubClients, Secret};
use e2e::backend::Backend;
use e2e::fake_github::{self, RateLimit};
use e2e::world::{REPO, SECRET};
use faseng::intake::Intake;
use faseng::metrics::Metrics;
use faseng::queue::QueueTiming;
use faseng::reconcile::{OctocrabReader, PassReport, ReconcileSettings, Reconciler};
use serde_json::Value;

/// Bound for anything that should take a few seconds on an idle machine.
const WAIT: Duration = Duration::from_secs(60);
/// What faseng logs for each deployment it finds by reconciling.
const FOUND: &str = "was found by reconciling with GitHub: its webhook never arrived";
/// What the holder of the reconcile lease logs when it takes it.
const TOOK_LEASE: &str = "it took the reconcile lease";
/// What faseng logs (at debug) after each pass.
const PASS_DONE: &str = "reconcile pass done";

/// A [`e2e::world::World`] and any number of real faseng processes, each on a port and in
/// a work directory of its own.
struct World {
    world: e2e::world::World,
    /// For each process: `Some(base URL)` for `faseng serve`.
    urls: Vec<Option<String>>,
}

e2e::wraps_world!(World);

impl World {
    async fn start(backend: Backend) -> Option<Self> {
        let world = e2e::world::World::build(backend)
            .script("echo $DEPLOY_ID >> $SCRATCH/runs")
            .shell_app()
            .start()
            .await?;
        Some(Self {
            world,
            urls: Vec::new(),
        })
    }

    /// A faseng command listening on `port`, linking logs to `url`, reconciling (at debug
    /// level), with `env` on top.
    fn command(
        &self,
        args: &[&str],
        port: u16,
        url: &str,
        extra: &[(&str, &str)],
    ) -> tokio::process::Command {
        let n = self.procs.len();
        let mut env = self.faseng_env(&self.apps_json());
        env.set(
            "RUST_LOG",
            "info,apalis=warn,sqlx=warn,faseng::reconcile=debug",
        )
        .unset("FASENG_RECONCILE_SECS")
        .set("FASENG_BIND", format!("127.0.0.1:{port}"))
        .set("FASENG_PUBLIC_URL", url)
        .set("FASENG_WORKDIR", self.dir.path().join(format!("work-{n}")));
        for (k, v) in extra {
            env.set(k, v);
        }
        let mut cmd = env.command(e2e::bins::binary("faseng"));
        cmd.args(args);
        cmd
    }

    /// Starts `faseng serve` (with its worker) with `env` on top, and waits for `/healthz`.
    async fn serve(&mut self, env: &[(&str, &str)]) -> usize {
        let port = e2e::net::free_port("127.0.0.1");
        let url = format!("http://127.0.0.1:{port}");
        let cmd = self.command(&["serve"], port, &url, env);
        let n = self.procs.spawn_healthy(cmd, &url).await;
        self.urls.push(Some(url));
        n
    }

    /// Starts a `faseng worker` with `env` on top, linking logs to the first serve process.
    fn worker(&mut self, env: &[(&str, &str)]) -> usize {
        let url = self
            .urls
            .iter()
            .find_map(Clone::clone)
            .expect("a serve process first");
        let cmd = self.command(&["worker"], 0, &url, env);
        let n = self.procs.spawn(cmd);
        self.urls.push(None);
        n
    }

    /// SIGTERM, and waits for the process to exit.
    async fn stop(&mut self, n: usize) {
        self.procs.terminate(n).await;
    }

    /// `kill -9`.
    async fn kill(&mut self, n: usize) {
        self.procs.kill(n).await;
    }

    fn log(&self, n: usize) -> String {
        self.procs.log(n)
    }

    fn logs(&self) -> String {
        self.procs.logs()
    }

    /// Creates a deployment whose webhook never goes out; returns it.
    async fn missed(&self, env: &str) -> Value {
        self.gh
            .create_deployment_without_webhook(REPO, self.deployment_body(env))
            .await
    }

    /// The ids the deploy script recorded, one line per run.
    fn runs(&self) -> Vec<u64> {
        self.recorded_ids("runs")
    }

    async fn wait_final(&self, id: u64) -> Value {
        self.wait_final_or(id, WAIT, || self.logs()).await
    }

    /// The body chima would send to create a deployment to `env`, with a seeded chat message.
    fn deployment_body(&self, env: &str) -> Value {
        self.world.deployment_body(env, "deploy", &Value::Null).0
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
            let finals = self.final_count(*id);
            assert_eq!(finals, 1, "#{id}: {states:?}");
            assert_eq!(states.first().map(String::as_str), Some("queued"), "#{id}");
        }
    }

    /// `faseng_reconciled_total` of serve process `n`.
    async fn reconciled_total(&self, n: usize) -> u64 {
        let url = self.urls[n].as_ref().expect("a serve process");
        let text = e2e::net::get_text(&self.http, &format!("{url}/metrics")).await;
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
        self.procs.wait_log(n, needle, WAIT).await;
    }

    /// A reconciler in this test process, over its own connection to the store.
    async fn reconciler(&self) -> Reconciler {
        let url = self.queue.queue_url();
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
        let url = self.queue.queue_url();
        let (_, store) = faseng::queue::open(&url, QueueTiming::default())
            .await
            .unwrap();
        let key = format!("{REPO}/{id}");
        // Polls: the store is read over its own connection, with no event to wait on.
        e2e::wait::poll_async(
            &format!("#{id} to be recorded as finished"),
            WAIT,
            || async {
                let run = store.get_run(&key).await.unwrap();
                run.is_some_and(|r| r.state.is_final()).then_some(())
            },
            || self.logs(),
        )
        .await;
    }

    /// Posts a signed delivery to serve process `n`; its HTTP status.
    async fn send(&self, n: usize, headers: &[(String, String)], body: Vec<u8>) -> u16 {
        let url = self.urls[n].as_ref().expect("a serve process");
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

e2e::both_backends!(
    missed_deployments_are_deployed_once,
    old_deployments_are_never_picked_up,
    a_webhook_racing_the_reconciler_deploys_once,
    processes_sharing_a_store_reconcile_one_at_a_time,
    an_unchanged_repository_costs_a_304,
    a_rate_limited_list_is_waited_out,
);
