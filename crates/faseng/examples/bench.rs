//! faseng's benchmark (not a test): run with
//! `cargo run --release -p faseng --example bench [-- REQUESTS CONCURRENCY RUNS]`.
//!
//! 1. Intake: signed `deployment` webhooks → 202 with the job durably in Redis (and SQLite),
//!    against a bare axum handler that only checks the HMAC, in the same run, with the same
//!    client and bodies.
//! 2. Latency: webhook in → provider process started, with a warm clone, sequential runs.
//!
//! Needs `redis-server` and `git` on PATH; statuses go to a null sink (no GitHub).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use deploy_core::Secret;
use faseng::queue::{QueueTiming, QueueUrl};
use faseng::status::NullStatusSink;
use faseng::webhook::{sign, verify_signature};
use faseng::{Application, Config, Services};
use serde_json::json;

const SECRET: &str = "bench-secret";

fn body(id: u64, sha: &str, clone_url: &str, env: &str) -> Vec<u8> {
    let payload = json!({"name": "bench", "robotName": "chima", "hosts": "",
        "config": {"provider": "shell", "repository": "oursky/bench", "environments": [env]}});
    serde_json::to_vec(&json!({
        "action": "created",
        "deployment": {"id": id, "sha": sha, "ref": "main", "task": "deploy", "environment": env,
                       "description": null, "creator": {"login": "bench"}, "payload": payload,
                       "url": format!("https://api.github.com/repos/oursky/bench/deployments/{id}"),
                       "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"},
        "repository": {"full_name": "oursky/bench", "name": "bench", "clone_url": clone_url,
                       "owner": {"login": "oursky"}, "private": false, "default_branch": "main"},
        "sender": {"login": "bench"}
    }))
    .unwrap()
}

async fn blast(url: &str, bodies: Vec<Vec<u8>>, concurrency: usize, first_id: u64) -> (f64, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, bodies, next, url) =
            (client.clone(), bodies.clone(), next.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut bad = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(b) = bodies.get(i) else { break };
                let r = client
                    .post(&url)
                    .header("x-github-event", "deployment")
                    .header(
                        "x-github-delivery",
                        format!("bench-{}", first_id + i as u64),
                    )
                    .header("x-hub-signature-256", sign(SECRET.as_bytes(), b))
                    .header("content-type", "application/json")
                    .body(b.clone())
                    .send()
                    .await;
                if !r.is_ok_and(|r| r.status() == StatusCode::ACCEPTED) {
                    bad += 1;
                }
            }
            bad
        }));
    }
    let mut bad = 0;
    for t in tasks {
        bad += t.await.unwrap();
    }
    (bodies.len() as f64 / start.elapsed().as_secs_f64(), bad)
}

async fn bare_hmac_server() -> String {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/webhooks/github", axum::routing::post(handler));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn config(queue: QueueUrl, dir: &std::path::Path) -> Config {
    let mut c = Config::new(queue);
    c.webhook_secret = Some(Secret::new(SECRET));
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.workdir = dir.join("work");
    c.deploy_config_dir = dir.join("deploy-config");
    c.github_api_url = "http://127.0.0.1:9".into();
    c.timing = QueueTiming {
        poll_interval: Duration::from_millis(20),
        ..QueueTiming::default()
    };
    c
}

async fn start(c: Config, with_worker: bool) -> (String, tokio::sync::oneshot::Sender<()>) {
    let services = Services::connect(c)
        .await
        .unwrap()
        .with_sink(Arc::new(NullStatusSink));
    let app = Application::build_with(services, with_worker)
        .await
        .unwrap();
    let url = format!("http://{}/webhooks/github", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    (url, tx)
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let requests = *args.first().unwrap_or(&20_000) as usize;
    let concurrency = *args.get(1).unwrap_or(&64) as usize;
    let runs = *args.get(2).unwrap_or(&30) as usize;
    let dir = tempfile::tempdir().unwrap();

    let redis_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &redis_port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let redis_url = format!("redis://127.0.0.1:{redis_port}");

    // A repository whose script records when it started.
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("script")).unwrap();
    let stamps = dir.path().join("stamps");
    std::fs::write(
        repo.join("script/deploy"),
        format!(
            "#!/bin/sh\necho \"$DEPLOY_ID $(date +%s.%N)\" >> {}\n",
            stamps.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        repo.join("script/deploy"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(
        &repo,
        &["-c", "user.email=b@b", "-c", "user.name=b", "add", "-A"],
    );
    git(
        &repo,
        &[
            "-c",
            "user.email=b@b",
            "-c",
            "user.name=b",
            "commit",
            "-q",
            "-m",
            "x",
        ],
    );
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let clone_url = format!("file://{}", repo.display());

    println!(
        "# faseng bench: {requests} webhooks, concurrency {concurrency}, {runs} latency runs, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let bodies: Vec<Vec<u8>> = (0..requests as u64)
        .map(|i| body(1_000_000 + i, &sha, &clone_url, "intake"))
        .collect();
    println!("body size: {} bytes", bodies[0].len());

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only != "latency" {
        let bare = bare_hmac_server().await;
        let (bare_rps, bad) = blast(&bare, bodies.clone(), concurrency, 0).await;
        println!("bare axum + HMAC only:           {bare_rps:>8.0} req/s ({bad} non-202)");

        let (url, stop_redis) = start(
            config(QueueUrl::Redis(redis_url.clone()), dir.path()),
            false,
        )
        .await;
        let (rps, bad) = blast(&url, bodies.clone(), concurrency, 0).await;
        println!(
            "faseng serve --no-worker, Redis: {rps:>8.0} req/s ({bad} non-202), {:.0}% of bare",
            100.0 * rps / bare_rps
        );
        let _ = stop_redis.send(());

        let sqlite_bodies: Vec<Vec<u8>> = bodies.iter().take(requests / 4).cloned().collect();
        let (url, stop_sqlite) = start(
            config(QueueUrl::Sqlite(dir.path().join("bench.db")), dir.path()),
            false,
        )
        .await;
        let (rps, bad) = blast(&url, sqlite_bodies, concurrency, 0).await;
        println!(
            "faseng serve --no-worker, SQLite:{rps:>8.0} req/s ({bad} non-202) [{} requests]",
            requests / 4
        );
        let _ = stop_sqlite.send(());
    }
    if only == "intake" {
        let _ = redis.kill();
        let _ = redis.wait();
        return;
    }

    for (name, queue) in [
        ("Redis", QueueUrl::Redis(redis_url.clone())),
        ("SQLite", QueueUrl::Sqlite(dir.path().join("latency.db"))),
    ] {
        let _ = std::fs::remove_file(&stamps);
        let mut c = config(queue, dir.path());
        c.worker_prefix = format!("bench-{name}");
        let (url, stop) = start(c, true).await;
        let client = reqwest::Client::new();
        let mut latencies = Vec::new();
        for i in 0..=runs as u64 {
            let id = 5_000_000 + i + if name == "Redis" { 0 } else { 100_000 };
            // A fresh environment each time: nothing waits in a line, the clone stays warm.
            let b = body(id, &sha, &clone_url, &format!("latency{i}"));
            let sent = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let r = client
                .post(&url)
                .header("x-github-event", "deployment")
                .header("x-github-delivery", format!("lat-{id}"))
                .header("x-hub-signature-256", sign(SECRET.as_bytes(), &b))
                .body(b)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let started = loop {
                let text = std::fs::read_to_string(&stamps).unwrap_or_default();
                if let Some(line) = text.lines().find(|l| l.starts_with(&format!("{id} "))) {
                    break line
                        .split_whitespace()
                        .nth(1)
                        .unwrap()
                        .parse::<f64>()
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            // The first run fills the clone cache; the rest are warm.
            if i > 0 {
                latencies.push((started - sent) * 1000.0);
            }
        }
        let mut l = latencies.clone();
        let med = median(&mut l);
        let p90 = l[(l.len() * 9 / 10).min(l.len() - 1)];
        println!(
            "webhook -> provider started ({name}, warm clone): median {med:.1} ms, p90 {p90:.1} ms, max {:.1} ms",
            l[l.len() - 1]
        );
        let _ = stop.send(());
    }
    let _ = redis.kill();
    let _ = redis.wait();
}
