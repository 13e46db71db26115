//! `bench drain`: 1,000 deployments over 100 apps × 3 environments, a no-op shell provider,
//! W = 1, 2, 4 real `faseng worker` processes on one Redis, `faseng serve --no-worker` for
//! intake, statuses to the fake GitHub.
//!
//! Per W: (1) backlog — all 1,000 webhooks are accepted first, then the workers start; the
//! time to drain, the utilisation and the largest number of simultaneous runs in any one
//! app+environment (from the start/end lines the deploy script appends) are measured;
//! (2) steady rate — 100 more deployments, each to an idle environment, at half the
//! backlog throughput; pickup = webhook accepted (202) → `in_progress` received by GitHub.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use e2e::bench::{median, ms, round, summarize, table};
use e2e::fake_github::{FakeGithub, TOKEN};
use e2e::git_repo::GitRepo;
use e2e::redis_server::RedisServer;
use serde_json::{Value, json};

const SECRET: &str = "bench-drain-secret";
const APPS: usize = 100;
const ENVS: [&str; 3] = ["edge", "staging", "production"];
const DEPLOYMENTS: usize = 1_000;
const STEADY: usize = 100;
/// Webhooks sent at once while filling the backlog (consecutive ones go to different apps,
/// so each waiting line still gets its deployments in order).
const ENQUEUE_AT_ONCE: usize = 10;
const WORKERS: [usize; 3] = [1, 2, 4];
const TIMEOUT: Duration = Duration::from_secs(240);

fn repo_name(app: usize) -> String {
    format!("bench/app-{app:03}")
}

struct Rig {
    _redis: RedisServer,
    redis_url: String,
    gh: FakeGithub,
    dir: tempfile::TempDir,
    _repo: GitRepo,
    stamps: PathBuf,
    serve: Child,
    webhook_url: String,
    http: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

fn faseng(rig_dir: &Path, redis_url: &str, gh_url: &str, log: &str) -> anyhow::Result<Command> {
    let mut c = Command::new(e2e::bins::binary("faseng"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env(
            "RUST_LOG",
            std::env::var("DRAIN_WORKER_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .env("FASENG_QUEUE_URL", redis_url)
        .env("FASENG_WORKDIR", rig_dir.join("work"))
        .env("FASENG_APPS_JSON", rig_dir.join("app.json"))
        .env("DEPLOY_CONFIG_DIR", rig_dir.join("deploy-config"))
        .env("GITHUB_API_URL", gh_url)
        .env("GITHUB_TOKEN", TOKEN)
        .env("FASENG_HEARTBEAT", "2")
        // Webhooks are posted by hand and must each get their 202.
        .env("FASENG_RECONCILE_SECS", "0")
        .stdin(Stdio::null());
    // faseng logs to stdout.
    let file = std::fs::File::create(rig_dir.join(log))?;
    c.stdout(file.try_clone()?).stderr(file);
    Ok(c)
}

async fn rig() -> anyhow::Result<Rig> {
    let redis =
        RedisServer::start().context("redis-server is needed (apt install redis-server)")?;
    let redis_url = redis.url();
    let gh = FakeGithub::start().await;
    // DRAIN_TRACE keeps the directory (logs, clones) for inspection.
    let dir = tempfile::Builder::new()
        .disable_cleanup(std::env::var_os("DRAIN_TRACE").is_some())
        .tempdir()?;
    // Others may pass through the rig directory (as root, faseng runs the script as an
    // unprivileged user) and write the stamps.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    let stamps = dir.path().join("stamps");
    e2e::dirs::open_scratch(&stamps);
    // The no-op provider: a start and an end line, with wall-clock times, per app+env.
    let script = format!(
        "f=\"{}/$DEPLOY_APP.$DEPLOY_ENV\"\n\
         echo \"start $(date +%s.%N) $DEPLOY_ID\" >> \"$f\"\n\
         echo \"end $(date +%s.%N) $DEPLOY_ID\" >> \"$f\"",
        stamps.display()
    );
    let (repo, sha) = GitRepo::with_deploy_script(&script);
    let mut apps = serde_json::Map::new();
    for app in 0..APPS {
        let name = repo_name(app);
        gh.add_repo(&name, "main");
        gh.set_branch(&name, "main", &sha);
        gh.set_clone_url(&name, &repo.url());
        apps.insert(
            format!("app-{app:03}"),
            json!({"provider": "shell", "repository": name, "environments": ENVS}),
        );
    }
    std::fs::write(dir.path().join("app.json"), Value::Object(apps).to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let serve = faseng(dir.path(), &redis_url, gh.url(), "serve.log")?
        .args(["serve", "--no-worker"])
        .env("FASENG_BIND", format!("127.0.0.1:{port}"))
        .env("GITHUB_WEBHOOK_SECRET", SECRET)
        .spawn()
        .context("starting faseng serve")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "faseng serve did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Rig {
        _redis: redis,
        redis_url,
        gh,
        dir,
        _repo: repo,
        stamps,
        serve,
        webhook_url: format!("{base}/webhooks/github"),
        http,
    })
}

impl Rig {
    /// Creates a deployment on the fake GitHub and returns its id and signed webhook.
    async fn deployment(
        &self,
        app: usize,
        env: &str,
    ) -> (u64, Vec<(String, String)>, axum::body::Bytes) {
        let name = repo_name(app);
        let payload = json!({"name": format!("app-{app:03}"), "robotName": "chima", "hosts": ""});
        let d = self
            .gh
            .create_deployment(
                &name,
                json!({"ref": "main", "environment": env, "task": "deploy", "auto_merge": false,
                       "required_contexts": [], "payload": payload}),
            )
            .await;
        let id = d["id"].as_u64().unwrap_or_default();
        let (headers, body) = self.gh.deployment_webhook(&name, &d, SECRET);
        (id, headers, body)
    }

    /// Posts a webhook; returns when it was answered 202.
    async fn post(
        &self,
        headers: &[(String, String)],
        body: axum::body::Bytes,
    ) -> anyhow::Result<Instant> {
        let mut req = self.http.post(&self.webhook_url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let status = req.body(body).send().await?.status();
        anyhow::ensure!(status == 202, "webhook answered {status}");
        Ok(Instant::now())
    }

    fn spawn_workers(&self, n: usize) -> anyhow::Result<Vec<Child>> {
        (0..n)
            .map(|i| {
                faseng(
                    self.dir.path(),
                    &self.redis_url,
                    self.gh.url(),
                    &format!("worker-{i}.log"),
                )?
                .arg("worker")
                .env("FASENG_CONCURRENCY", "1")
                .spawn()
                .context("starting faseng worker")
            })
            .collect()
    }

    /// `(in_progress, final)` times and final state per deployment, from the fake's log.
    fn runs(&self) -> HashMap<u64, RunTimes> {
        let mut out: HashMap<u64, RunTimes> = HashMap::new();
        for r in self.gh.requests() {
            if r.method != "POST" || !r.path.ends_with("/statuses") {
                continue;
            }
            let Some(id) = r
                .path
                .rsplit('/')
                .nth(1)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let entry = out.entry(id).or_default();
            match r.body["state"].as_str().unwrap_or_default() {
                "in_progress" => entry.in_progress = entry.in_progress.or(Some(r.received_at)),
                "queued" => {}
                state => {
                    entry.finished = Some(r.received_at);
                    entry.state = state.to_owned();
                }
            }
        }
        out
    }

    /// Waits until every id has a final status; returns the run times.
    async fn wait_all_final(&self, ids: &[u64]) -> anyhow::Result<HashMap<u64, RunTimes>> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let runs = self.runs();
            let done = ids
                .iter()
                .filter(|id| runs.get(id).is_some_and(|r| r.finished.is_some()))
                .count();
            if done == ids.len() {
                return Ok(runs);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {done} of {} deployments finished within {TIMEOUT:?} (logs in {})",
                ids.len(),
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The largest number of simultaneous runs seen in one app+environment, from the
    /// script's start/end lines; also how many runs the lines show.
    fn max_env_overlap(&self) -> anyhow::Result<(usize, usize)> {
        let mut worst = 0;
        let mut runs = 0;
        for entry in std::fs::read_dir(&self.stamps)? {
            let text = std::fs::read_to_string(entry?.path())?;
            let mut events: Vec<(f64, i32)> = Vec::new();
            for line in text.lines() {
                let mut parts = line.split_whitespace();
                let (Some(kind), Some(at)) = (parts.next(), parts.next()) else {
                    anyhow::bail!("bad stamp line {line:?}");
                };
                let at: f64 = at.parse().with_context(|| format!("stamp {line:?}"))?;
                events.push((at, if kind == "start" { 1 } else { -1 }));
                runs += usize::from(kind == "start");
            }
            // Ends before starts at the same instant.
            events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut now = 0i32;
            for (_, d) in events {
                now += d;
                worst = worst.max(now.max(0) as usize);
            }
        }
        Ok((worst, runs))
    }

    fn clear_stamps(&self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(&self.stamps)? {
            std::fs::remove_file(entry?.path())?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
struct RunTimes {
    in_progress: Option<Instant>,
    finished: Option<Instant>,
    state: String,
}

fn stop(children: Vec<Child>) {
    for mut c in children {
        // SIGTERM first (a graceful stop), then make sure.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(c.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

struct Figures {
    workers: usize,
    total_s: f64,
    per_s: f64,
    utilisation: f64,
    run_ms_p50: f64,
    overlap: usize,
    pickup_p50: f64,
    pickup_p99: f64,
    steady_rate: f64,
}

async fn one(rig: &Rig, workers: usize) -> anyhow::Result<Figures> {
    rig.clear_stamps()?;
    // (1) Backlog: every webhook accepted first, in order app 0..99 × env, ten times.
    let mut ids = Vec::with_capacity(DEPLOYMENTS);
    for chunk in (0..DEPLOYMENTS).collect::<Vec<_>>().chunks(ENQUEUE_AT_ONCE) {
        let mut webhooks = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let (id, headers, body) = rig
                .deployment(i % APPS, ENVS[(i / APPS) % ENVS.len()])
                .await;
            ids.push(id);
            webhooks.push((headers, body));
        }
        futures::future::try_join_all(
            webhooks
                .into_iter()
                .map(|(h, b)| async move { rig.post(&h, b).await }),
        )
        .await?;
    }
    let started = Instant::now();
    let children = rig.spawn_workers(workers)?;
    let result = async {
        let runs = rig.wait_all_final(&ids).await?;
        let last = ids
            .iter()
            .filter_map(|id| runs[id].finished)
            .max()
            .context("a final status")?;
        let total_s = (last - started).as_secs_f64();
        let failed: Vec<String> = ids
            .iter()
            .filter(|id| runs[*id].state != "success")
            .map(|id| format!("{id}: {}", runs[id].state))
            .collect();
        anyhow::ensure!(failed.is_empty(), "runs did not succeed: {failed:?}");
        let busy: Vec<f64> = ids
            .iter()
            .filter_map(|id| {
                let r = &runs[id];
                Some(ms(r.finished?.duration_since(r.in_progress?)))
            })
            .collect();
        let utilisation = busy.iter().sum::<f64>() / 1000.0 / (workers as f64 * total_s);
        let (overlap, stamped) = rig.max_env_overlap()?;
        anyhow::ensure!(
            stamped == DEPLOYMENTS,
            "the script stamped {stamped} runs, not {DEPLOYMENTS}"
        );

        // (2) Steady rate, each deployment to an environment with nothing running.
        let per_s = DEPLOYMENTS as f64 / total_s;
        let rate = (per_s / 2.0).clamp(1.0, 200.0);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut accepted = Vec::with_capacity(STEADY);
        for i in 0..STEADY {
            ticker.tick().await;
            let (id, headers, body) = rig
                .deployment(i % APPS, ENVS[(i / APPS) % ENVS.len()])
                .await;
            accepted.push((id, rig.post(&headers, body).await?));
        }
        let steady_ids: Vec<u64> = accepted.iter().map(|a| a.0).collect();
        let runs = rig.wait_all_final(&steady_ids).await?;
        let pickup: Vec<f64> = accepted
            .iter()
            .filter_map(|(id, at)| Some(ms(runs[id].in_progress?.saturating_duration_since(*at))))
            .collect();
        if std::env::var_os("DRAIN_TRACE").is_some() {
            trace_steady(rig, &accepted, &runs);
        }
        let pickup = summarize(&pickup);
        Ok(Figures {
            workers,
            total_s,
            per_s,
            utilisation,
            run_ms_p50: median(&busy),
            overlap,
            pickup_p50: pickup.p50,
            pickup_p99: pickup.p99,
            steady_rate: rate,
        })
    }
    .await;
    stop(children);
    result
}

/// Prints the slowest steady pickups with their status timeline (ms from the first accept).
fn trace_steady(rig: &Rig, accepted: &[(u64, Instant)], runs: &HashMap<u64, RunTimes>) {
    let t0 = accepted[0].1;
    let off = |t: Instant| ms(t.saturating_duration_since(t0));
    let mut queued: HashMap<u64, Instant> = HashMap::new();
    for r in rig.gh.requests() {
        if r.method == "POST"
            && r.path.ends_with("/statuses")
            && r.body["state"] == "queued"
            && let Some(id) = r.path.rsplit('/').nth(1).and_then(|s| s.parse().ok())
        {
            queued.entry(id).or_insert(r.received_at);
        }
    }
    for (i, (id, at)) in accepted.iter().enumerate() {
        let r = &runs[id];
        println!(
            "steady {i:3} id {id}: accepted {:8.1} queued {:8.1} in_progress {:8.1} final {:8.1} pickup {:7.1}",
            off(*at),
            queued.get(id).map_or(-1.0, |t| off(*t)),
            r.in_progress.map_or(-1.0, off),
            r.finished.map_or(-1.0, off),
            r.in_progress
                .map_or(-1.0, |t| ms(t.saturating_duration_since(*at))),
        );
    }
    println!("rig dir: {}", rig.dir.path().display());
}

/// Runs the benchmark and returns its JSON report.
pub async fn bench_drain() -> anyhow::Result<Value> {
    let rig = rig().await?;
    let mut all = Vec::new();
    // DRAIN_WORKERS=1,2 runs only those worker counts.
    let workers: Vec<usize> = match std::env::var("DRAIN_WORKERS") {
        Ok(v) => v.split(',').filter_map(|w| w.trim().parse().ok()).collect(),
        Err(_) => WORKERS.to_vec(),
    };
    for w in workers {
        let f = one(&rig, w).await?;
        println!(
            "W={w}: drained {DEPLOYMENTS} in {:.2} s ({:.0}/s), utilisation {:.0} %, run p50 {:.1} ms, max same-env overlap {}, pickup p50 {:.1} ms p99 {:.1} ms at {:.0}/s",
            f.total_s,
            f.per_s,
            f.utilisation * 100.0,
            f.run_ms_p50,
            f.overlap,
            f.pickup_p50,
            f.pickup_p99,
            f.steady_rate
        );
        all.push(f);
    }
    let rows: Vec<(String, String, &str)> = all
        .iter()
        .flat_map(|f| {
            [
                (
                    format!("W={}: 1,000 queued deployments drained", f.workers),
                    format!("{:.2} s ({:.0}/s)", f.total_s, f.per_s),
                    "grows with W",
                ),
                (
                    format!("W={}: worker utilisation (run time / W × total)", f.workers),
                    format!(
                        "{:.0} % (run p50 {:.1} ms, in_progress → success)",
                        f.utilisation * 100.0,
                        f.run_ms_p50
                    ),
                    "",
                ),
                (
                    format!("W={}: most simultaneous runs in one app+env", f.workers),
                    f.overlap.to_string(),
                    "1",
                ),
                (
                    format!(
                        "W={}: pickup (202 → in_progress) at {:.0}/s, p50 / p99",
                        f.workers, f.steady_rate
                    ),
                    format!("{:.1} ms / {:.1} ms", f.pickup_p50, f.pickup_p99),
                    "p99 ≤ 200 ms",
                ),
            ]
        })
        .collect();
    let rows: Vec<(&str, String, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.clone(), *c))
        .collect();
    println!(
        "\n{}",
        table(
            &format!(
                "drain ({DEPLOYMENTS} deployments, {APPS} apps × {} envs, no-op shell provider, one shared local repository, Redis, `faseng worker` with FASENG_CONCURRENCY=1)",
                ENVS.len()
            ),
            &rows
        )
    );
    Ok(Value::Array(
        all.iter()
            .map(|f| {
                json!({
                    "workers": f.workers, "total_s": round(f.total_s), "per_s": round(f.per_s),
                    "pickup_ms_p50": round(f.pickup_p50), "pickup_ms_p99": round(f.pickup_p99),
                    "pickup_rate_per_s": round(f.steady_rate),
                    "utilisation": round(f.utilisation), "run_ms_p50": round(f.run_ms_p50),
                    "max_env_overlap": f.overlap,
                })
            })
            .collect(),
    ))
}
