//! The benchmark program: `cargo run --release -p e2e --bin bench -- <chima|slack|intake|drain|stats|all>`.
//! Prints a markdown table per benchmark and writes `target/bench/<what>.json`.
//! Everything runs on loopback against the fake GitHub / Slack servers of the test harness.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chima::chat::RecordingOutbox;
use chima::grammar::{self, Command};
use chima::slack::app::{SlackApp, SlackSettings};
use chima::slack::web::SlackWeb;
use deploy_core::{Apps, GithubAuth, Secret};
use e2e::bench::{Summary, ms, round, rss_mb, summarize, table, us, write_report};
use e2e::fake_github::{FakeGithub, TOKEN};
use e2e::fake_slack::{BOT_TOKEN, BOT_USER, FakeSlack};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

mod drain;
mod intake;
mod stats;

const COMMANDS_FOR_RSS: usize = 10_000;

fn apps() -> Apps {
    Apps::load(&e2e::bins::workspace_root().join("app.json")).expect("app.json loads")
}

async fn fake_github() -> FakeGithub {
    let gh = FakeGithub::start().await;
    for repo in ["oursky/project-x", "oursky/modmod-web", "oursky/trelhub"] {
        gh.add_repo(repo, "main");
    }
    gh
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".to_owned());
    let known = ["chima", "slack", "intake", "drain", "stats"];
    let selected: Vec<&str> = match what.as_str() {
        "all" => known.to_vec(),
        w if known.contains(&w) => vec![w],
        other => anyhow::bail!("unknown benchmark {other:?}; use one of {known:?} or all"),
    };
    println!(
        "machine: {} cores, {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_total()
    );
    for name in selected {
        let report = match name {
            "chima" => bench_chima().await?,
            "slack" => bench_slack().await?,
            "intake" => intake::bench_intake().await?,
            "drain" => drain::bench_drain().await?,
            "stats" => stats::bench_stats().await?,
            _ => unreachable!(),
        };
        let path = write_report(name, &report)?;
        println!("(written to {})\n", path.display());
    }
    Ok(())
}

fn memory_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or_else(
            || "? memory".to_owned(),
            |kb| format!("{:.1} GiB memory", kb / 1024.0 / 1024.0),
        )
}

/// Start-to-ready of `chima shell`: spawn until the "ready" banner.
async fn ready_time(gh: &FakeGithub) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(e2e::bins::binary("chima"))
        .arg("shell")
        .current_dir(e2e::bins::workspace_root())
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", gh.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    while let Some(line) = lines.next_line().await? {
        if line.contains("ready") {
            let elapsed = started.elapsed();
            child.kill().await.ok();
            return Ok(elapsed);
        }
    }
    anyhow::bail!("chima shell exited before it was ready")
}

/// Resident memory of `chima shell` after it answered `n` commands.
async fn rss_after_commands(gh: &FakeGithub, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut child = tokio::process::Command::new(e2e::bins::binary("chima"))
        .arg("shell")
        .current_dir(e2e::bins::workspace_root())
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", gh.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id().context("pid")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut blocks = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.is_empty() {
                blocks += 1;
                if blocks == n {
                    break;
                }
            }
        }
        blocks
    });
    let mix = [
        "chima deploy trelhub to edge",
        "chima deploys trelhub in edge",
        "chima deplyo trelhub",
        "chima deploy project-x to staging",
        "chima deploy trelhub/a..b",
        "chima help deploy",
    ];
    let input: String = (0..n)
        .map(|i| format!("{}\n", mix[i % mix.len()]))
        .collect();
    stdin.write_all(input.as_bytes()).await?;
    let blocks = reader.await?;
    anyhow::ensure!(blocks == n, "only {blocks} of {n} commands answered");
    let memory = rss_mb(pid).context("reading /proc")?;
    drop(stdin);
    child.wait().await?;
    Ok(memory)
}

async fn bench_chima() -> anyhow::Result<Value> {
    let gh = fake_github().await;
    e2e::bins::binary("chima");

    let mut ready = Vec::new();
    for _ in 0..20 {
        ready.push(ms(ready_time(&gh).await?));
    }
    let ready = summarize(&ready);

    let (rss, peak) = rss_after_commands(&gh, COMMANDS_FOR_RSS).await?;

    // Parse + validate + build the request body, no network.
    let bot = chima::cli::github_bot(
        apps(),
        gh.url(),
        GithubAuth::Token(Secret::new(TOKEN)),
        "chima",
    );
    let ctx = e2e::fake_slack::deployment_room_context();
    let lines = [
        "deploy project-x/feature/login to edge",
        "deploy! trelhub/main to pandawork",
        "deploy:migrate modmod-web/v1.2.3 to staging/web1,web2",
    ];
    let mut process = Vec::with_capacity(30_000);
    for i in 0..30_000 {
        let line = lines[i % lines.len()];
        let started = Instant::now();
        let Ok(Command::Deploy(command)) = grammar::parse(line) else {
            anyhow::bail!("{line} does not parse")
        };
        let (app, env) = bot
            .check_deploy(&command, &ctx)
            .map_err(|r| anyhow::anyhow!(r.text()))?;
        let git_ref = command
            .git_ref
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{line} names no ref"))?;
        let request = bot.new_deployment(app, &env, &git_ref, &command, &ctx, None);
        let body = serde_json::to_vec(&request)?;
        std::hint::black_box(body);
        process.push(us(started.elapsed()));
    }
    let process = summarize(&process);

    // Command in → deployment created on the fake GitHub (connection kept alive), against a
    // bare POST of the same body from a plain client in the same run.
    let mut request = Vec::new();
    for _ in 0..50 {
        bot.handle_line(
            "deploy trelhub/main to edge",
            &ctx,
            &mut RecordingOutbox::default(),
        )
        .await;
    }
    for _ in 0..500 {
        let started = Instant::now();
        bot.handle_line(
            "deploy trelhub/main to edge",
            &ctx,
            &mut RecordingOutbox::default(),
        )
        .await;
        request.push(ms(started.elapsed()));
    }
    let request = summarize(&request);
    let client = reqwest::Client::new();
    let body = json!({"ref": "main", "task": "deploy", "environment": "edge", "auto_merge": true,
                      "description": "deploy on edge from chima", "production_environment": false,
                      "payload": {"name": "trelhub"}});
    let mut bare = Vec::new();
    for i in 0..550 {
        let started = Instant::now();
        let r = client
            .post(format!("{}/repos/oursky/trelhub/deployments", gh.url()))
            .bearer_auth(TOKEN)
            .header("user-agent", "bench")
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "bare POST answered {}", r.status());
        if i >= 50 {
            bare.push(ms(started.elapsed()));
        }
    }
    let bare = summarize(&bare);

    println!(
        "{}",
        table(
            "chima (hubot-deploy: ~300 ms start, ~71 MB, 0.5–2 ms own time per command)",
            &[
                (
                    "start to ready (`chima shell`), median of 20",
                    format!("{:.1} ms (p99 {:.1})", ready.p50, ready.p99),
                    "≤ 50 ms"
                ),
                (
                    "resident memory after 10,000 commands",
                    format!("{rss:.1} MB (peak {peak:.1})"),
                    "≤ 15 MB"
                ),
                (
                    "parse + validate + build request, median",
                    format!("{:.2} µs (p99 {:.2})", process.p50, process.p99),
                    "≤ 50 µs"
                ),
                (
                    "command → deployment created (fake GitHub), median",
                    format!("{:.2} ms", request.p50),
                    ""
                ),
                (
                    "command → deployment created, p99",
                    format!("{:.2} ms", request.p99),
                    ""
                ),
                (
                    "bare POST of the same body (baseline), median",
                    format!("{:.2} ms", bare.p50),
                    ""
                ),
                (
                    "chima / bare, median",
                    format!("{:.2}×", request.p50 / bare.p50),
                    ""
                ),
            ]
        )
    );
    Ok(json!({
        "ready_ms": round(ready.p50), "ready_ms_p99": round(ready.p99),
        "rss_mb": round(rss), "rss_peak_mb": round(peak), "commands": COMMANDS_FOR_RSS,
        "process_us_median": round(process.p50), "process_us_p99": round(process.p99),
        "request_ms_median": round(request.p50), "request_ms_p99": round(request.p99),
        "bare_request_ms_median": round(bare.p50), "request_ratio_to_bare": round(request.p50 / bare.p50),
    }))
}

const SIGNING_SECRET: &str = "bench-signing-secret";

fn sign(timestamp: u64, body: &str) -> String {
    e2e::fake_slack::sign_request(SIGNING_SECRET, timestamp, body)
}

fn mention(i: usize, command: &str) -> String {
    json!({"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": format!("EvBench{i}"),
           "event_time": 1_700_000_000,
           "event": {"type": "app_mention", "user": "U2147483697", "channel": "C0RANDOM01",
                     "channel_type": "channel", "text": format!("<@{BOT_USER}> {command}"),
                     "ts": format!("1700000000.{i:06}")}})
    .to_string()
}

struct SlackRig {
    gh: FakeGithub,
    _slack: FakeSlack,
    url: String,
}

async fn slack_rig() -> anyhow::Result<SlackRig> {
    let gh = fake_github().await;
    let slack = FakeSlack::start().await;
    let bot = Arc::new(chima::cli::github_bot(
        apps(),
        gh.url(),
        GithubAuth::Token(Secret::new(TOKEN)),
        "chima",
    ));
    let web = Arc::new(SlackWeb::new(slack.api_url(), BOT_TOKEN)?);
    let app = Arc::new(SlackApp::new(
        bot,
        web,
        BOT_USER,
        SlackSettings {
            watchdog: Duration::from_secs(3600),
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/slack/events", listener.local_addr()?);
    let router = chima::slack::http::router(app, SIGNING_SECRET);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(SlackRig {
        gh,
        _slack: slack,
        url,
    })
}

async fn send_event(client: &reqwest::Client, url: &str, body: String) -> anyhow::Result<Duration> {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let signature = sign(ts, &body);
    let started = Instant::now();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(r.status() == 200, "ack was {}", r.status());
    Ok(elapsed)
}

/// Sends events at `rate` per second for `seconds`; returns each ack latency.
async fn fixed_rate(
    rig: &SlackRig,
    rate: u64,
    seconds: u64,
    first_id: usize,
) -> anyhow::Result<Vec<f64>> {
    let client = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for i in 0..(rate * seconds) as usize {
        ticker.tick().await;
        let client = client.clone();
        let url = rig.url.clone();
        let body = mention(first_id + i, "deploy trelhub to edge");
        tasks.push(tokio::spawn(async move {
            send_event(&client, &url, body).await
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.push(ms(t.await??));
    }
    Ok(latencies)
}

async fn bench_slack() -> anyhow::Result<Value> {
    let rig = slack_rig().await?;
    // Warm up: caches (channel, user, default branch) and connections.
    fixed_rate(&rig, 50, 1, 0).await?;
    let at_200 = summarize(&fixed_rate(&rig, 200, 10, 1_000).await?);

    // The highest rate whose acks stay within 5 ms at p99.
    let mut sustained: Option<(u64, Summary)> = None;
    let mut next_id = 10_000;
    for rate in [400, 800, 1_600, 3_200] {
        let s = summarize(&fixed_rate(&rig, rate, 3, next_id).await?);
        next_id += (rate * 3) as usize;
        if s.p99 <= 5.0 {
            sustained = Some((rate, s));
        } else {
            break;
        }
    }

    // Event in → GitHub request out, one at a time, warm caches.
    let client = reqwest::Client::new();
    let mut to_github = Vec::new();
    for i in 0..200 {
        let before = rig.gh.deployments("oursky/trelhub").len();
        let started = Instant::now();
        send_event(
            &client,
            &rig.url,
            mention(100_000 + i, "deploy trelhub to edge"),
        )
        .await?;
        rig.gh
            .wait_for_deployments("oursky/trelhub", before + 1, Duration::from_secs(10))
            .await;
        let posted = rig
            .gh
            .requests()
            .into_iter()
            .rfind(|r| r.method == "POST" && r.path == "/repos/oursky/trelhub/deployments")
            .context("a POST")?;
        to_github.push(ms(posted.received_at.duration_since(started)));
    }
    let to_github = summarize(&to_github);
    let (max_rate, at_max) = sustained.map_or((200, at_200), |(r, s)| (r, s));
    println!(
        "{}",
        table(
            "slack (Events API over HTTP, fake Slack and GitHub in the same process)",
            &[
                (
                    "ack latency at 200 events/s, p50",
                    format!("{:.2} ms", at_200.p50),
                    ""
                ),
                (
                    "ack latency at 200 events/s, p99",
                    format!("{:.2} ms", at_200.p99),
                    "≤ 5 ms"
                ),
                (
                    "highest tried rate with ack p99 ≤ 5 ms",
                    format!("{max_rate}/s (p99 {:.2} ms)", at_max.p99),
                    ""
                ),
                (
                    "event in → GitHub request out, median",
                    format!("{:.2} ms (p99 {:.2})", to_github.p50, to_github.p99),
                    "≤ 3 ms"
                ),
            ]
        )
    );
    Ok(json!({
        "ack_ms_p50": round(at_200.p50), "ack_ms_p99": round(at_200.p99), "rate_per_s": 200,
        "max_events_per_s": max_rate, "ack_ms_p99_at_max": round(at_max.p99),
        "event_to_github_ms_median": round(to_github.p50), "event_to_github_ms_p99": round(to_github.p99),
    }))
}
