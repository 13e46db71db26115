//! Running faseng and chima at scale, on the real binaries: `LOG_FORMAT=json` makes every
//! line they write one JSON object; `faseng worker` answers `/healthz` (does the store
//! answer?) and `/metrics` on `FASENG_WORKER_BIND`; faseng warns when Redis may lose what it
//! acknowledged; `chima serve` stops on SIGTERM without dropping a command under way, over
//! HTTP and in Socket Mode, and exits 0.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::fake_github::{FakeGithub, TOKEN};
use e2e::fake_slack::{APP_TOKEN, FakeSlack};
use e2e::procs::{Proc, ProcessEnv};
use e2e::redis_server::RedisServer;
use e2e::slack_app::{post_signed, slash_command_body};

const WAIT: Duration = Duration::from_secs(30);
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const RANDOM: &str = "C0RANDOM01";
const JOYZ: &str = "U2147483697";

/// A command for the workspace binary `binary` in `dir` (also its `HOME`), logging JSON.
fn base_command(binary: &str, dir: &Path) -> tokio::process::Command {
    let mut env = ProcessEnv::base(dir);
    env.set("LOG_FORMAT", "json");
    let mut cmd = env.command(e2e::bins::binary(binary));
    cmd.current_dir(dir);
    cmd
}

fn app_json(dir: &Path) -> PathBuf {
    let path = dir.join("app.json");
    std::fs::write(
        &path,
        r#"{"trelhub": {"provider": "shell", "repository": "oursky/trelhub", "environments": ["edge"]}}"#,
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_worker_serves_health_and_metrics_logs_json_and_warns_about_a_volatile_redis() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    // As a Redis without an append-only file runs: a crash loses what it acknowledged.
    redis.cli(&["CONFIG", "SET", "appendonly", "no"]);
    let dir = e2e::dirs::scenario_dir();
    let port = e2e::net::free_port("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = base_command("faseng", dir.path());
    cmd.arg("worker")
        .env("RUST_LOG", "info,apalis=warn,sqlx=warn")
        .env("FASENG_QUEUE_URL", redis.url())
        .env("FASENG_WORKER_BIND", format!("127.0.0.1:{port}"))
        .env("FASENG_APPS_JSON", app_json(dir.path()))
        .env("FASENG_WORKDIR", dir.path().join("work"))
        .env("FASENG_HEARTBEAT", "1")
        .env("GITHUB_TOKEN", TOKEN);
    let mut worker = Proc::spawn(cmd, dir.path(), "worker");
    let http = reqwest::Client::new();
    worker.wait_healthy(&url).await;

    let metrics = e2e::net::get_text(&http, &format!("{url}/metrics")).await;
    for needle in [
        "faseng_store_runs 0\n",
        "faseng_store_log_bytes 0\n",
        "faseng_queue_depth 0\n",
        "faseng_runs_total{outcome=\"success\"} 0\n",
    ] {
        assert!(metrics.contains(needle), "{needle:?} missing:\n{metrics}");
    }

    // /healthz says whether the store answers.
    redis.stop();
    let deadline = tokio::time::Instant::now() + WAIT;
    let down = loop {
        let r = http.get(format!("{url}/healthz")).send().await.unwrap();
        if r.status() == 503 {
            break r.text().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still healthy with Redis down"
        );
        // Polls: the process's health has no event to wait on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(down.contains("queue unreachable"), "{down}");
    redis.restart();
    worker.wait_healthy(&url).await;

    worker.sigterm();
    assert_eq!(worker.exit_code().await, Some(0), "{}", worker.output());
    let lines = worker.json_lines();
    let warning = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("Redis has appendonly no"))
        })
        .unwrap_or_else(|| panic!("no persistence warning:\n{}", worker.output()));
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("loses every webhook faseng acknowledged"),
        "{warning}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "worker /healthz and /metrics"),
        "{}",
        worker.output()
    );
}

#[tokio::test]
async fn a_refused_start_is_reported_as_json_too() {
    let dir = e2e::dirs::scenario_dir();
    let broken = dir.path().join("app.json");
    std::fs::write(&broken, r#"{"trelhub": {"provider": "ansible"}}"#).unwrap();
    let mut cmd = base_command("faseng", dir.path());
    cmd.args(["serve", "--no-worker"])
        .env("FASENG_APPS_JSON", &broken)
        .env("GITHUB_WEBHOOK_SECRET", "s3cret-s3cret")
        .env(
            "FASENG_QUEUE_URL",
            format!("sqlite://{}", dir.path().join("f.db").display()),
        );
    let mut faseng = Proc::spawn(cmd, dir.path(), "faseng");
    assert_eq!(faseng.exit_code().await, Some(2), "{}", faseng.output());
    let lines = faseng.json_lines();
    let refusal = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("{}", faseng.output()));
    let text = refusal["message"].as_str().unwrap();
    assert!(text.contains("unknown provider \"ansible\""), "{text}");
    assert!(text.contains("nothing was started"), "{text}");

    // A bad flag value too: clap's message, as JSON.
    let mut cmd = base_command("chima", dir.path());
    cmd.args(["serve"]).env("CHIMA_WATCHDOG_SECS", "soon");
    let mut chima = Proc::spawn(cmd, dir.path(), "chima");
    assert_eq!(chima.exit_code().await, Some(2), "{}", chima.output());
    let lines = chima.json_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR"
                && l["message"].as_str().is_some_and(|m| m.contains("soon"))),
        "{}",
        chima.output()
    );
}

/// `chima serve` against the fakes, with JSON logs.
async fn chima_serve(
    dir: &Path,
    gh: &FakeGithub,
    slack: &FakeSlack,
    socket_mode: bool,
) -> (Proc, String) {
    let port = e2e::net::free_port("127.0.0.1");
    let apps = e2e::bins::workspace_root().join("app.json");
    let mut env = ProcessEnv::chima_serve(dir, &apps, port, gh, slack);
    env.set("LOG_FORMAT", "json").set("RUST_LOG", "info");
    let mut cmd = env.command(e2e::bins::binary("chima"));
    cmd.arg("serve").current_dir(dir);
    if socket_mode {
        cmd.env("SLACK_APP_TOKEN", APP_TOKEN);
    } else {
        cmd.env("SLACK_SIGNING_SECRET", SIGNING_SECRET);
    }
    let mut chima = Proc::spawn(cmd, dir, "chima");
    let url = format!("http://127.0.0.1:{port}");
    chima.wait_healthy(&url).await;
    (chima, url)
}

#[tokio::test]
async fn chima_stops_on_sigterm_after_answering_the_command_under_way() {
    let gh = FakeGithub::start().await;
    let slack = FakeSlack::start().await;
    let dir = e2e::dirs::scenario_dir();
    let (mut chima, url) = chima_serve(dir.path(), &gh, &slack, false).await;

    // Slack makes chima wait 3 s on its first call for the command: it is under way.
    slack.rate_limit_next(1, 3);
    let calls_before = slack.calls().len();
    let body = slash_command_body(RANDOM, "random", JOYZ, "");
    let status = post_signed(
        &reqwest::Client::new(),
        &format!("{url}/slack/commands"),
        SIGNING_SECRET,
        "application/x-www-form-urlencoded",
        body,
        e2e::fake_slack::now_secs(),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    slack
        .wait_until(WAIT, "chima's first (rate-limited) call", |s| {
            (s.calls().len() > calls_before).then_some(())
        })
        .await;

    chima.sigterm();
    // It stops taking connections at once...
    let addr = url.trim_start_matches("http://").to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        // Polls: whether a process still listens has no event to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !slack
            .messages()
            .iter()
            .any(|m| m.text.contains("Hi! I'm chima")),
        "the answer came before the stop: the test proved nothing"
    );
    // ...and exits 0 once the command under way is answered.
    assert_eq!(chima.exit_code().await, Some(0), "{}", chima.output());
    assert!(
        slack
            .messages()
            .iter()
            .any(|m| m.channel == RANDOM && m.text.contains("Hi! I'm chima")),
        "the command under way was dropped:\n{}",
        chima.output()
    );
    let lines = chima.json_lines();
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("ready: Slack Events API"))),
        "the banner is a JSON line too:\n{}",
        chima.output()
    );
    assert!(lines.iter().any(|l| l["message"] == "chima stopped"));
}

#[tokio::test]
async fn chima_in_socket_mode_stops_on_sigterm() {
    let gh = FakeGithub::start().await;
    let slack = FakeSlack::start().await;
    let dir = e2e::dirs::scenario_dir();
    let (mut chima, _url) = chima_serve(dir.path(), &gh, &slack, true).await;
    slack.wait_for_call("apps.connections.open", WAIT).await;
    chima.sigterm();
    assert_eq!(chima.exit_code().await, Some(0), "{}", chima.output());
    let lines = chima.json_lines();
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("ready: Slack Socket Mode"))),
        "{}",
        chima.output()
    );
    assert!(lines.iter().any(|l| l["message"] == "chima stopped"));
}
