//! A real `faseng serve` under 1,000 clients that open a connection and trickle header bytes
//! without ever finishing: a correctly signed `deployment` webhook (GitHub's own sample) still
//! gets its 202 within 5 s, and the header-read timeout closes every slow connection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use deploy_core::server::Limits;
use e2e::procs::ProcessEnv;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SECRET: &str = "It's a Secret to Everybody";
const SLOW_CLIENTS: usize = 1000;
/// Each slow client sends one more header byte this often.
const TRICKLE: Duration = Duration::from_secs(1);
/// The webhook's bound.
const WEBHOOK_WITHIN: Duration = Duration::from_secs(5);
/// Generous bound for anything that should happen in well under a second.
const WAIT: Duration = Duration::from_secs(30);

/// An app.json whose one app deploys the sample's repository.
fn write_app_json(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("app.json");
    let apps = serde_json::json!({"hello-world": {
        "provider": "shell", "repository": "Codertocat/Hello-World",
        "environments": ["production"]}});
    std::fs::write(&path, apps.to_string()).unwrap();
    path
}

/// Starts `faseng serve --no-worker` on a free loopback port and waits until it is healthy.
async fn start_faseng(
    dir: &Path,
    github_api: &str,
    http: &reqwest::Client,
) -> (tokio::process::Child, SocketAddr) {
    let app_json = write_app_json(dir);
    let addr: SocketAddr = format!("127.0.0.1:{}", e2e::net::free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let gh_api = github_api.to_owned();
    let mut env = ProcessEnv::base(dir);
    env.set("RUST_LOG", "info,apalis=warn,sqlx=warn")
        .set("FASENG_BIND", addr.to_string())
        .set("FASENG_NO_WORKER", "true")
        .set(
            "FASENG_QUEUE_URL",
            format!("sqlite://{}", dir.join("faseng.db").display()),
        )
        .set("FASENG_WORKDIR", dir.join("work"))
        .set("FASENG_APPS_JSON", &app_json)
        .set("GITHUB_WEBHOOK_SECRET", SECRET)
        .set("GITHUB_API_URL", gh_api)
        .set("GITHUB_TOKEN", e2e::fake_github::TOKEN);
    let log = std::fs::File::create(dir.join("faseng.log")).unwrap();
    let mut child = env
        .command(e2e::bins::binary("faseng"))
        .arg("serve")
        .current_dir(dir)
        .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .expect("faseng serve starts");
    let url = format!("http://{addr}");
    e2e::net::wait_healthy(http, &url, &mut child, WAIT, || faseng_log(dir)).await;
    (child, addr)
}

fn faseng_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("faseng.log")).unwrap_or_default()
}

/// Opens a connection, sends the start of a request, says so on `ready`, then sends one
/// more header byte every [`TRICKLE`] and never ends the headers. Returns how long after
/// connecting the server closed the connection.
async fn slow_client(addr: SocketAddr, ready: tokio::sync::mpsc::Sender<()>) -> Duration {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("a slow client connects");
    let connected = Instant::now();
    stream
        .write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: faseng\r\nX-Slow: ")
        .await
        .expect("the first header bytes are sent");
    ready.send(()).await.unwrap();
    let mut trickle = tokio::time::interval_at(connected + TRICKLE, TRICKLE);
    let mut answer = [0u8; 512];
    loop {
        tokio::select! {
            read = stream.read(&mut answer) => match read {
                Ok(0) | Err(_) => return connected.elapsed(),
                Ok(_) => {}
            },
            _ = trickle.tick() => {
                if stream.write_all(b"x").await.is_err() {
                    return connected.elapsed();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_gets_its_202_within_5_s_while_1000_clients_trickle_headers() {
    let _alone = super::alone().await;
    let open_files = deploy_core::server::raise_open_files_limit().expect("raising RLIMIT_NOFILE");
    assert!(
        open_files > (SLOW_CLIENTS + 256) as u64,
        "the open-files hard limit ({open_files}) is too low for {SLOW_CLIENTS} clients"
    );
    let dir = tempfile::tempdir().unwrap();
    let gh = e2e::fake_github::FakeGithub::start().await;
    let http = reqwest::Client::new();
    let (_faseng, addr) = start_faseng(dir.path(), gh.url(), &http).await;
    let header_timeout = Limits::default().header_read_timeout;

    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(SLOW_CLIENTS);
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(slow_client(addr, ready_tx.clone())))
        .collect();
    drop(ready_tx);
    for n in 0..SLOW_CLIENTS {
        tokio::time::timeout(WAIT, ready.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} slow clients connected"))
            .expect("a slow client failed to connect");
    }

    let body = e2e::fixtures::text("github/webhooks/deployment/payload.json").into_bytes();
    let sent = Instant::now();
    let response = http
        .post(format!("http://{addr}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "deployment")
        .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header(
            "x-hub-signature-256",
            faseng::webhook::sign(SECRET.as_bytes(), &body),
        )
        .body(body)
        .timeout(WAIT)
        .send()
        .await
        .expect("the webhook is answered");
    let latency = sent.elapsed();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let still_open = slow.iter().filter(|c| !c.is_finished()).count();
    println!(
        "webhook answered {status} in {:.1} ms with {still_open} of {SLOW_CLIENTS} slow clients connected",
        latency.as_secs_f64() * 1000.0
    );
    assert_eq!(status, 202, "{text}\n{}", faseng_log(dir.path()));
    assert!(text.starts_with("queued "), "{text}");
    assert!(
        latency < WEBHOOK_WITHIN,
        "the webhook took {latency:?} under {SLOW_CLIENTS} slow clients"
    );
    assert_eq!(
        still_open, SLOW_CLIENTS,
        "slow clients were dropped before the webhook was answered"
    );

    let mut held = Vec::with_capacity(SLOW_CLIENTS);
    for client in slow {
        let open_for = tokio::time::timeout(header_timeout + WAIT, client)
            .await
            .expect("the header timeout closes every slow connection")
            .unwrap();
        held.push(open_for);
    }
    let (shortest, longest) = (
        held.iter().min().copied().unwrap(),
        held.iter().max().copied().unwrap(),
    );
    println!(
        "the {header_timeout:?} header timeout closed all {SLOW_CLIENTS} slow connections after {:.1}–{:.1} s",
        shortest.as_secs_f64(),
        longest.as_secs_f64()
    );
    // The server's clock starts at accept, just around the client's; a second of slack.
    assert!(
        shortest + Duration::from_secs(1) >= header_timeout,
        "a slow connection was closed after {shortest:?}, before the header timeout"
    );
    assert_eq!(
        http.get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
