//! `bench intake`: signed `deployment` webhooks from K keep-alive connections for T seconds
//! into faseng's real HTTP app (no worker) on Redis and on SQLite, against a bare axum
//! handler that only checks the HMAC, in the same run, with the same client and bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use deploy_core::Secret;
use e2e::bench::{median, ms, round, summarize, table};
use e2e::redis_server::RedisServer;
use faseng::queue::QueueUrl;
use faseng::status::NullStatusSink;
use faseng::webhook::{sign, verify_signature};
use faseng::{Application, Config, Services};
use serde_json::{Value, json};

const SECRET: &str = "bench-webhook-secret";

/// Knobs, from the environment (`BENCH_INTAKE_CONNECTIONS`, `_SECONDS`, `_ROUNDS`).
#[derive(Debug, Clone, Copy)]
struct Load {
    connections: usize,
    duration: Duration,
    rounds: usize,
}

impl Load {
    fn from_env() -> anyhow::Result<Self> {
        let get = |name: &str, default: u64| -> anyhow::Result<u64> {
            std::env::var(name)
                .ok()
                .map(|v| v.parse().with_context(|| format!("{name}={v:?}")))
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        Ok(Self {
            connections: get("BENCH_INTAKE_CONNECTIONS", 64)? as usize,
            duration: Duration::from_secs(get("BENCH_INTAKE_SECONDS", 3)?),
            rounds: get("BENCH_INTAKE_ROUNDS", 3)? as usize,
        })
    }
}

/// The upstream sample `deployment` webhook with a distinct deployment id per request: the
/// serialized fixture split around the id, so building a body is two copies.
struct Bodies {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl Bodies {
    /// From the fixture, unmodified but for the deployment id.
    fn new() -> anyhow::Result<Self> {
        const MARK: u64 = 987_654_321_012_345;
        let mut event = e2e::fixtures::json("github/webhooks/deployment/payload.json");
        event["deployment"]["id"] = json!(MARK);
        let text = serde_json::to_string(&event)?;
        let mark = MARK.to_string();
        let at = text
            .find(&mark)
            .context("the id in the serialized fixture")?;
        anyhow::ensure!(
            text[at + mark.len()..].find(&mark).is_none(),
            "the id marker must be unique"
        );
        Ok(Self {
            prefix: text.as_bytes()[..at].to_vec(),
            suffix: text.as_bytes()[at + mark.len()..].to_vec(),
        })
    }

    /// The body for deployment `id`.
    fn body(&self, id: u64) -> Bytes {
        let id = id.to_string();
        let mut b = Vec::with_capacity(self.prefix.len() + id.len() + self.suffix.len());
        b.extend_from_slice(&self.prefix);
        b.extend_from_slice(id.as_bytes());
        b.extend_from_slice(&self.suffix);
        Bytes::from(b)
    }
}

/// Sends one signed `deployment` webhook; returns the status.
async fn post_webhook(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    delivery: &str,
    body: Bytes,
) -> anyhow::Result<u16> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/bench")
        .header("x-github-event", "deployment")
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "424242")
        .header("x-hub-signature-256", sign(secret.as_bytes(), &body))
        .body(body)
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// What one round of load produced.
struct RoundResult {
    accepted: u64,
    refused: u64,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

impl RoundResult {
    fn per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// K connections (one client each, so one keep-alive connection each), each sending the
/// next webhook as soon as the previous one is answered, for `load.duration`.
async fn drive(
    url: &str,
    bodies: &Arc<Bodies>,
    load: Load,
    next_id: &Arc<AtomicU64>,
) -> anyhow::Result<RoundResult> {
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (url, bodies, next_id) = (url.to_owned(), bodies.clone(), next_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = 0u64;
            while Instant::now() < deadline {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let body = bodies.body(id);
                let sent = Instant::now();
                let status =
                    post_webhook(&client, &url, SECRET, &format!("bench-{id}"), body).await?;
                if status == 202 {
                    latencies.push(ms(sent.elapsed()));
                } else {
                    refused += 1;
                }
            }
            anyhow::Ok((latencies, refused))
        }));
    }
    let mut result = RoundResult {
        accepted: 0,
        refused: 0,
        elapsed: Duration::ZERO,
        latencies_ms: Vec::new(),
    };
    for t in tasks {
        let (latencies, refused) = t.await??;
        result.accepted += latencies.len() as u64;
        result.refused += refused;
        result.latencies_ms.extend(latencies);
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

/// The ceiling: axum, the same body limit, a constant-time HMAC check, 202.
async fn bare_hmac_server() -> anyhow::Result<String> {
    async fn handler(headers: HeaderMap, body: Bytes) -> StatusCode {
        let sig = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok());
        if verify_signature(SECRET.as_bytes(), &body, sig) {
            StatusCode::ACCEPTED
        } else {
            StatusCode::UNAUTHORIZED
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks/github", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/webhooks/github", axum::routing::post(handler))
        .layer(axum::extract::DefaultBodyLimit::max(
            faseng::webhook::MAX_BODY_BYTES,
        ));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// A running in-process `faseng serve --no-worker`.
struct Faseng {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Faseng {
    async fn start(queue: QueueUrl, dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut c = Config::new(queue);
        c.webhook_secret = Some(Secret::new(SECRET));
        c.bind = "127.0.0.1:0".parse()?;
        c.workdir = dir.join("work");
        c.deploy_config_dir = dir.join("deploy-config");
        c.github_api_url = "http://127.0.0.1:9".into();
        // The app the upstream sample's repository belongs to (its runs are never taken).
        c.apps = Arc::new(deploy_core::Apps::from_json(
            r#"{"hello-world": {"provider": "shell", "repository": "Codertocat/Hello-World"}}"#,
        )?);
        let services = Services::connect(c)
            .await?
            .with_sink(Arc::new(NullStatusSink));
        let app = Application::build_with(services, false).await?;
        let url = format!("http://{}/webhooks/github", app.local_addr());
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Ok(Self { url, stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("faseng task")?
    }
}

/// `INFO commandstats` over a raw connection: `(command, calls, microseconds)` per command.
fn redis_command_stats(port: u16) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let text = redis_command(port, &["INFO", "commandstats"])?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, fields) = rest.split_once(':')?;
            let field = |key: &str| -> Option<u64> {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key))?
                    .parse()
                    .ok()
            };
            Some((name.to_owned(), field("calls=")?, field("usec=")?))
        })
        .collect())
}

/// One command over RESP; returns the reply's text (simple or bulk string).
fn redis_command(port: u16, args: &[&str]) -> anyhow::Result<String> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).context("redis")?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first)?;
    if let Some(len) = first.strip_prefix('$') {
        let len: usize = len.trim().parse()?;
        let mut buf = vec![0; len + 2];
        r.read_exact(&mut buf)?;
        buf.truncate(len);
        return Ok(String::from_utf8(buf)?);
    }
    anyhow::ensure!(!first.starts_with('-'), "redis: {}", first.trim());
    Ok(first.trim().trim_start_matches('+').to_owned())
}

/// Redis commands per accepted webhook in the last round, by command, and the server's
/// own time per accepted webhook in µs (INFO and CONFIG, which the benchmark itself sends,
/// are left out; EVALSHA's time includes the commands its script runs).
struct RedisCost {
    commands: f64,
    round_trips: f64,
    server_us: f64,
    detail: String,
}

fn redis_cost(port: u16, accepted: u64) -> anyhow::Result<RedisCost> {
    let stats: Vec<(String, u64, u64)> = redis_command_stats(port)?
        .into_iter()
        .filter(|(n, _, _)| !n.starts_with("info") && !n.starts_with("config"))
        .collect();
    let per = |x: u64| x as f64 / accepted.max(1) as f64;
    let calls: u64 = stats.iter().map(|s| s.1).sum();
    // Commands a client sends itself (the rest run inside scripts or MULTI).
    let sent: u64 = stats
        .iter()
        .filter(|(n, _, _)| ["evalsha", "eval", "exec", "ping"].contains(&n.as_str()))
        .map(|s| s.1)
        .sum();
    let script_usec: u64 = stats
        .iter()
        .filter(|(n, _, _)| n == "evalsha" || n == "eval" || n == "exec")
        .map(|s| s.2)
        .sum();
    let detail = stats
        .iter()
        .map(|(n, c, _)| format!("{n} {:.2}", per(*c)))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(RedisCost {
        commands: per(calls),
        round_trips: per(sent),
        server_us: per(script_usec),
        detail,
    })
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (in ticks of
/// 1/100 s, Linux's fixed `USER_HZ` for `/proc`).
fn process_cpu_s() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let mut fields = stat
        .rsplit_once(')')
        .context("/proc/self/stat")?
        .1
        .split_whitespace();
    // Fields 14 and 15 (utime, stime); the split starts at field 3.
    let utime: u64 = fields.nth(11).context("utime")?.parse()?;
    let stime: u64 = fields.next().context("stime")?.parse()?;
    Ok((utime + stime) as f64 / 100.0)
}

/// CPU seconds (user + system) redis-server has used (`INFO cpu`).
fn redis_cpu_s(port: u16) -> anyhow::Result<f64> {
    let text = redis_command(port, &["INFO", "cpu"])?;
    let field = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("INFO cpu has no {name}"))?
            .trim()
            .parse()
            .with_context(|| format!("INFO cpu {name}"))
    };
    Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// CPU spent per accepted webhook during one round, in µs: by this process (the load
/// client and the server under test share it) and by redis-server.
#[derive(Debug, Clone, Copy)]
struct CpuCost {
    process_us: f64,
    redis_us: f64,
}

/// Runs `round` and charges the CPU it used to its accepted webhooks.
async fn with_cpu<F>(redis_port: u16, round: F) -> anyhow::Result<(RoundResult, CpuCost)>
where
    F: std::future::Future<Output = anyhow::Result<RoundResult>>,
{
    let (p0, r0) = (process_cpu_s()?, redis_cpu_s(redis_port)?);
    let result = round.await?;
    let (p1, r1) = (process_cpu_s()?, redis_cpu_s(redis_port)?);
    let per = |s: f64| s * 1e6 / result.accepted.max(1) as f64;
    let cost = CpuCost {
        process_us: per(p1 - p0),
        redis_us: per(r1 - r0),
    };
    Ok((result, cost))
}

/// Figures of one target over the rounds (medians).
struct Figures {
    per_s: f64,
    p50: f64,
    p99: f64,
    refused: u64,
}

fn figures(rounds: &[RoundResult]) -> Figures {
    let per_s: Vec<f64> = rounds.iter().map(RoundResult::per_s).collect();
    let p50: Vec<f64> = rounds
        .iter()
        .map(|r| summarize(&r.latencies_ms).p50)
        .collect();
    let p99: Vec<f64> = rounds
        .iter()
        .map(|r| summarize(&r.latencies_ms).p99)
        .collect();
    Figures {
        per_s: median(&per_s),
        p50: median(&p50),
        p99: median(&p99),
        refused: rounds.iter().map(|r| r.refused).sum(),
    }
}

/// Runs the benchmark and returns its JSON report.
pub async fn bench_intake() -> anyhow::Result<Value> {
    let load = Load::from_env()?;
    let dir = tempfile::tempdir()?;
    let redis =
        RedisServer::start().context("redis-server is needed (apt install redis-server)")?;
    // Durable by default, as docker-compose.yml runs it (every acknowledged webhook survives
    // a Redis crash); `BENCH_INTAKE_APPENDFSYNC=everysec` shows what that durability costs.
    let appendfsync =
        std::env::var("BENCH_INTAKE_APPENDFSYNC").unwrap_or_else(|_| "always".to_owned());
    redis_command(
        redis.port(),
        &["CONFIG", "SET", "appendfsync", &appendfsync],
    )
    .context("BENCH_INTAKE_APPENDFSYNC must be always, everysec or no")?;
    let bodies = Arc::new(Bodies::new()?);
    let body_len = bodies.body(1).len();
    let next_id = Arc::new(AtomicU64::new(1_000_000));

    let bare = bare_hmac_server().await?;
    let on_redis = Faseng::start(QueueUrl::Redis(redis.url()), dir.path()).await?;
    let on_sqlite =
        Faseng::start(QueueUrl::Sqlite(dir.path().join("intake.db")), dir.path()).await?;

    // Warm-up: connections, scripts, the SQLite schema.
    let warm = Load {
        duration: Duration::from_millis(300),
        ..load
    };
    for url in [&bare, &on_redis.url, &on_sqlite.url] {
        drive(url, &bodies, warm, &next_id).await?;
    }

    let (mut ceiling, mut redis_rounds, mut sqlite_rounds) = (Vec::new(), Vec::new(), Vec::new());
    let mut redis_costs = Vec::new();
    let (mut ceiling_cpu, mut redis_cpu) = (Vec::new(), Vec::new());
    for round_no in 1..=load.rounds {
        let (c, c_cpu) = with_cpu(redis.port(), drive(&bare, &bodies, load, &next_id)).await?;
        redis_command(redis.port(), &["CONFIG", "RESETSTAT"])?;
        let (r, r_cpu) =
            with_cpu(redis.port(), drive(&on_redis.url, &bodies, load, &next_id)).await?;
        let cost = redis_cost(redis.port(), r.accepted)?;
        let s = drive(&on_sqlite.url, &bodies, load, &next_id).await?;
        println!(
            "round {round_no}: ceiling {:.0}/s ({:.0} µs CPU each), Redis {:.0}/s ({:.0} µs CPU in this process + {:.0} µs in redis-server each; {:.2} round trips, {:.1} µs of Redis command time), SQLite {:.0}/s",
            c.per_s(),
            c_cpu.process_us,
            r.per_s(),
            r_cpu.process_us,
            r_cpu.redis_us,
            cost.round_trips,
            cost.server_us,
            s.per_s()
        );
        ceiling_cpu.push(c_cpu);
        redis_cpu.push(r_cpu);
        redis_costs.push(cost);
        ceiling.push(c);
        redis_rounds.push(r);
        sqlite_rounds.push(s);
    }
    on_redis.stop().await?;
    on_sqlite.stop().await?;

    let c = figures(&ceiling);
    let r = figures(&redis_rounds);
    let s = figures(&sqlite_rounds);
    let trips = median(
        &redis_costs
            .iter()
            .map(|c| c.round_trips)
            .collect::<Vec<_>>(),
    );
    let server_us = median(&redis_costs.iter().map(|c| c.server_us).collect::<Vec<_>>());
    let last = redis_costs.last().context("at least one round")?;
    let ceiling_cpu_us = median(&ceiling_cpu.iter().map(|c| c.process_us).collect::<Vec<_>>());
    let faseng_cpu_us = median(&redis_cpu.iter().map(|c| c.process_us).collect::<Vec<_>>());
    let redis_server_cpu_us = median(&redis_cpu.iter().map(|c| c.redis_us).collect::<Vec<_>>());
    let ratio = r.per_s / c.per_s;
    let sqlite_ratio = s.per_s / c.per_s;
    anyhow::ensure!(
        c.refused + r.refused + s.refused == 0,
        "some webhooks were not answered 202 (ceiling {}, Redis {}, SQLite {})",
        c.refused,
        r.refused,
        s.refused
    );
    println!(
        "\n{}",
        table(
            &format!(
                "intake ({} connections × {} s × {} rounds, medians; signed sample `deployment` webhook of {body_len} bytes; Redis appendfsync {appendfsync})",
                load.connections,
                load.duration.as_secs(),
                load.rounds
            ),
            &[
                (
                    "bare axum + constant-time HMAC → 202 (ceiling)",
                    format!(
                        "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
                        c.per_s, c.p50, c.p99
                    ),
                    ""
                ),
                (
                    "signed webhook → 202, job durably in Redis",
                    format!("{:.0}/s", r.per_s),
                    "≥ 3,000/s"
                ),
                (
                    "the same, latency p50 / p99",
                    format!("{:.2} ms / {:.2} ms", r.p50, r.p99),
                    ""
                ),
                (
                    "Redis / ceiling",
                    format!("{:.0} %", ratio * 100.0),
                    "≥ 50 %"
                ),
                (
                    "CPU per webhook: load client + bare server (ceiling)",
                    format!("{ceiling_cpu_us:.0} µs"),
                    ""
                ),
                (
                    "CPU per webhook: load client + faseng, + redis-server",
                    format!("{faseng_cpu_us:.0} µs + {redis_server_cpu_us:.0} µs"),
                    ""
                ),
                (
                    "Redis round trips per accepted webhook",
                    format!("{trips:.2}"),
                    ""
                ),
                (
                    "Redis server time per accepted webhook",
                    format!("{server_us:.1} µs"),
                    ""
                ),
                (
                    "Redis commands per accepted webhook (last round)",
                    format!("{:.2} ({})", last.commands, last.detail),
                    ""
                ),
                (
                    "signed webhook → 202, job durably in SQLite",
                    format!(
                        "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms; {:.0} % of ceiling)",
                        s.per_s,
                        s.p50,
                        s.p99,
                        sqlite_ratio * 100.0
                    ),
                    ""
                ),
            ]
        )
    );
    Ok(json!({
        "connections": load.connections, "redis_appendfsync": appendfsync, "seconds_per_round": load.duration.as_secs(),
        "rounds": load.rounds, "body_bytes": body_len,
        "accepted_per_s": round(r.per_s), "p50_ms": round(r.p50), "p99_ms": round(r.p99),
        "ceiling_per_s": round(c.per_s), "ceiling_p50_ms": round(c.p50), "ceiling_p99_ms": round(c.p99),
        "ratio": round(ratio),
        "redis_round_trips_per_webhook": round(trips), "redis_server_us_per_webhook": round(server_us),
        "redis_commands_per_webhook": round(last.commands),
        "cpu_us_per_webhook": {
            "ceiling_process": round(ceiling_cpu_us),
            "redis_process": round(faseng_cpu_us),
            "redis_server": round(redis_server_cpu_us),
        },
        "sqlite": {
            "accepted_per_s": round(s.per_s), "p50_ms": round(s.p50), "p99_ms": round(s.p99),
            "ratio": round(sqlite_ratio),
        },
    }))
}
