//! A deploy script that prints one 300 MB line without a newline, deployed by a real
//! `faseng serve`: faseng reads the output in bounded pieces, so its peak resident memory
//! (`VmHWM`) stays under 256 MB; the log stops at its cap with a visible marker, and the run
//! goes on to its real end (`success`).

use std::process::Stdio;
use std::time::Duration;

use e2e::fake_github::FakeGithub;
use e2e::git_repo::GitRepo;
use e2e::procs::ProcessEnv;
use serde_json::json;

const REPO: &str = "oursky/trelhub";
const WEBHOOK_SECRET: &str = "huge-output-webhook-secret";
/// Bytes of the one line the script prints.
const LINE_BYTES: u64 = 300_000_000;
/// faseng's peak resident memory must stay below this.
const RSS_LIMIT_KIB: u64 = 256 * 1024;
/// Generous: 300 MB go through a pipe into a debug build.
const RUN_WAIT: Duration = Duration::from_secs(600);

/// A value (in KiB) from `/proc/<pid>/status`, e.g. `VmHWM`.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The `/log` address of a deployment's log page (kept query included).
fn log_text_url(log_url: &str) -> String {
    match log_url.split_once('?') {
        Some((page, query)) => format!("{page}/log?{query}"),
        None => format!("{log_url}/log"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mb_line_without_a_newline_keeps_faseng_under_256_mb_and_the_run_succeeds() {
    let _alone = super::alone().await;
    let dir = tempfile::tempdir().unwrap();
    let script = format!("head -c {LINE_BYTES} /dev/zero | tr '\\0' a\necho\necho after the flood");
    let (repo, sha) = GitRepo::with_deploy_script(&script);
    let gh = FakeGithub::start().await;
    gh.add_repo(REPO, "main");
    gh.set_branch(REPO, "main", &sha);
    gh.set_clone_url(REPO, &repo.url());
    let apps = dir.path().join("app.json");
    let app = json!({"trelhub": {"provider": "shell", "repository": REPO,
                                 "environments": ["edge"], "clone_url": repo.url()}});
    std::fs::write(&apps, app.to_string()).unwrap();

    let port = e2e::net::free_port("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    gh.set_webhook(&format!("{url}/webhooks/github"), WEBHOOK_SECRET);
    let faseng_log = dir.path().join("faseng.log");
    let log_file = std::fs::File::create(&faseng_log).unwrap();
    let mut env = ProcessEnv::faseng(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("faseng.db").display()),
        &apps,
        &gh,
        WEBHOOK_SECRET,
    );
    env.bind(port).set("RUST_LOG", "warn");
    let mut faseng = env
        .command(e2e::bins::binary("faseng"))
        .arg("serve")
        .stdout(Stdio::from(log_file.try_clone().unwrap()))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("faseng starts");
    let pid = faseng.id().unwrap();
    let context = || std::fs::read_to_string(&faseng_log).unwrap_or_default();
    let http = reqwest::Client::new();
    e2e::net::wait_healthy(&http, &url, &mut faseng, Duration::from_secs(60), context).await;

    // No `config` in the payload: faseng deploys the app from its own app.json.
    let d = gh
        .create_deployment(
            REPO,
            json!({"ref": "main", "environment": "edge", "task": "deploy", "auto_merge": false,
                   "required_contexts": [], "payload": {"name": "trelhub"}}),
        )
        .await;
    let id = d["id"].as_u64().unwrap();
    let done = gh
        .wait_until(RUN_WAIT, &format!("a final status for {id}"), |gh| {
            gh.statuses(id)
                .into_iter()
                .find(|s| matches!(s["state"].as_str(), Some("success" | "failure" | "error")))
        })
        .await;

    let peak_kib = proc_status_kib(pid, "VmHWM");
    println!(
        "faseng peak RSS (VmHWM) after a {LINE_BYTES}-byte line: {} MiB ({peak_kib} KiB)",
        peak_kib / 1024
    );
    assert_eq!(done["state"], "success", "{done}\n{}", context());
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "faseng's peak RSS was {peak_kib} KiB, over {RSS_LIMIT_KIB} KiB"
    );

    let log_url = gh
        .statuses(id)
        .into_iter()
        .find_map(|s| {
            s["log_url"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
        })
        .expect("a status with the log link");
    let response = http.get(log_text_url(&log_url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let log = response.text().await.unwrap();
    assert!(log.contains("==> log truncated"), "no truncation marker");
    assert!(
        (log.len() as u64) < LINE_BYTES / 10,
        "the log kept {} bytes",
        log.len()
    );
}
