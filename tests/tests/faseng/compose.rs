//! docker-compose.yml is checked by a real Compose parser (`docker-compose config`), since no
//! Docker engine runs here.

use std::process::Command;

fn compose(args: &[&str], dir: &std::path::Path) -> Option<std::process::Output> {
    match Command::new("docker-compose")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("skipped: docker-compose is not installed ({e}); ./tests/run installs it");
            None
        }
    }
}

#[test]
fn the_compose_file_is_valid_and_wires_redis_chima_faseng_and_two_workers() {
    let root = e2e::bins::workspace_root();
    let Some(out) = compose(&["--env-file", ".env.example", "config"], &root) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docker-compose config failed: {stderr}"
    );
    let config = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--appendonly",
        "always",
        "redis-cli",
        "condition: service_healthy",
        "replicas: 2",
        "FASENG_QUEUE_URL: redis://redis:6379/0",
        "FASENG_APPS_JSON: /app/app.json",
        "FASENG_PROVIDER_USER: faseng-run",
        "user: root",
        "GITHUB_WEBHOOK_SECRET: replace-with-a-long-random-string",
        // Each worker replica serves /healthz and /metrics, and is health-checked on it.
        "FASENG_WORKER_BIND: 0.0.0.0:9091",
        "/dev/tcp/127.0.0.1/9091",
        "FASENG_RETENTION_DAYS: '90'",
        "LOG_FORMAT: text",
    ] {
        assert!(
            config.contains(needle),
            "{needle:?} missing from:\n{config}"
        );
    }
    let services = compose(
        &["--env-file", ".env.example", "config", "--services"],
        &root,
    )
    .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&services.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(names, ["chima", "faseng", "redis", "worker"]);
}

#[test]
fn a_broken_compose_file_is_refused_by_the_same_parser() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "version: \"3.8\"\nservices:\n  redis:\n    image: redis\n    healthcheck: yes-please\n",
    )
    .unwrap();
    let Some(out) = compose(&["config", "-q"], dir.path()) else {
        return;
    };
    assert!(
        !out.status.success(),
        "an invalid healthcheck must be refused"
    );
}
