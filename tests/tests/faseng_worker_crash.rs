//! `kill -9` of a real `faseng worker` process in the middle of a run: the run is reported
//! `error` (never re-run), what it left running is stopped, and the environment's line
//! moves on to the next deployment — on both queue backends. And SIGTERM: a running
//! deployment finishes and reports before the worker exits. (The whole fault suite is
//! listed at the top of `faults.rs`.)

#[path = "faseng_harness/mod.rs"]
mod harness;

use std::process::{Child, Command, Stdio};

use harness::{Backend, Env, Options, ROOM, WAIT, scratch, wait_for};

/// The log file of worker `n` of a scenario.
fn worker_log(env: &Env, n: usize) -> std::path::PathBuf {
    env.dir.path().join(format!("worker-{n}.log"))
}

/// Starts `faseng worker` number `n`, logging into [`worker_log`] (at info; `WORKER_RUST_LOG`
/// overrides the filter, e.g. `info,faseng=debug,sqlx=debug` to chase a stall).
fn spawn_worker(env: &Env, n: usize) -> Child {
    let log = std::fs::File::create(worker_log(env, n)).unwrap();
    let queue = match &env.queue_url {
        faseng::queue::QueueUrl::Redis(u) => u.clone(),
        faseng::queue::QueueUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
    };
    Command::new(e2e::bins::binary("faseng"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env(
            "RUST_LOG",
            std::env::var("WORKER_RUST_LOG")
                .unwrap_or_else(|_| "info,apalis=warn,sqlx=warn".into()),
        )
        .env("FASENG_QUEUE_URL", queue)
        // The scenarios deliver webhooks by hand; reconciling is tested in `reconcile.rs`.
        .env("FASENG_RECONCILE_SECS", "0")
        .env("FASENG_WORKDIR", env.dir.path().join("work"))
        .env("FASENG_APPS_JSON", env.write_apps_json())
        .env("DEPLOY_CONFIG_DIR", env.dir.path().join("deploy-config"))
        .env("FASENG_PUBLIC_URL", &env.url)
        .env("FASENG_HEARTBEAT", "1")
        .env("GITHUB_API_URL", env.gh.url())
        .env("GITHUB_TOKEN", e2e::fake_github::TOKEN)
        .env("SLACK_BOT_TOKEN", e2e::fake_slack::BOT_TOKEN)
        .env("SLACK_API_URL", env.slack.api_url())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("faseng worker starts")
}

async fn a_killed_worker_is_reported_and_the_line_moves_on(backend: Backend) {
    let script = format!(
        "echo $$ >> $SCRATCH/leader-$DEPLOY_ID\n\
         if [ -e $SCRATCH/hang-$DEPLOY_ID ]; then {}\n\
         while [ ! -e $SCRATCH/child-$DEPLOY_ID.held ]; do sleep 0.05; done; fi\n\
         touch $SCRATCH/started-$DEPLOY_ID\n\
         wait\n\
         echo finished",
        e2e::dirs::lingering_child("child-$DEPLOY_ID")
    );
    let opts = Options {
        script,
        with_worker: false,
        ..Options::default()
    };
    let Some(env) = Env::start(backend, opts).await else {
        return;
    };
    let mut first_worker = spawn_worker(&env, 0);

    let (d, headers, body) = env.deployment_and_webhook("edge", "deploy", "joyz").await;
    let id = d["id"].as_u64().unwrap();
    std::fs::write(scratch(env.dir.path(), &format!("hang-{id}")), "").unwrap();
    let ts = d["payload"]["notify"]["message_ts"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(env.post_webhook(&headers, body).await, 202);
    let started = scratch(env.dir.path(), &format!("started-{id}"));
    wait_for("the first run to start", WAIT, || {
        started.exists().then_some(())
    })
    .await;
    env.gh.wait_for_status(id, "in_progress", WAIT).await;

    // A second deployment to the same environment waits behind the first.
    let (next, next_headers, next_body) =
        env.deployment_and_webhook("edge", "deploy", "joyz").await;
    let next_id = next["id"].as_u64().unwrap();
    assert_eq!(env.post_webhook(&next_headers, next_body).await, 202);
    let waiting = env.gh.wait_for_status(next_id, "queued", WAIT).await;
    assert_eq!(waiting["description"], format!("Waiting behind #{id}"));

    first_worker.kill().expect("kill -9");
    first_worker.wait().unwrap();
    let mut second_worker = spawn_worker(&env, 1);

    let s = env.wait_final(id).await;
    assert_eq!(s["state"], "error", "{s}");
    assert_eq!(
        s["description"],
        "Error: the deployer stopped during the run"
    );
    assert_eq!(env.states(id), ["queued", "in_progress", "error"]);
    env.slack
        .wait_for_text(ROOM, &ts, "the deployer stopped during the run", WAIT)
        .await;
    // The orphan's leftover process is stopped.
    e2e::dirs::wait_released(&scratch(env.dir.path(), ""), &format!("child-{id}"), WAIT).await;

    assert_eq!(env.wait_final(next_id).await["state"], "success");
    let (_, log) = env.get(&format!("{}/log", env.log_url(next_id))).await;
    assert!(log.contains("finished"), "{log}");
    let (_, log) = env.get(&format!("{}/log", env.log_url(id))).await;
    assert!(log.contains("the deployer stopped during the run"), "{log}");
    let leader = std::fs::read_to_string(scratch(env.dir.path(), &format!("leader-{id}"))).unwrap();
    assert_eq!(
        leader.lines().count(),
        1,
        "the orphaned deployment ran again"
    );

    second_worker.kill().unwrap();
    second_worker.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_kill_9_of_a_worker_process() {
    a_killed_worker_is_reported_and_the_line_moves_on(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_kill_9_of_a_worker_process() {
    a_killed_worker_is_reported_and_the_line_moves_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_a_running_deployment_finish() {
    let script = "touch $SCRATCH/started\n\
                  i=0; while [ ! -e $SCRATCH/go ]; do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.05; done\n\
                  echo finished";
    let opts = Options {
        script: script.into(),
        with_worker: false,
        ..Options::default()
    };
    let Some(env) = Env::start(Backend::Sqlite, opts).await else {
        return;
    };
    let mut worker = spawn_worker(&env, 0);
    let (id, _) = env.deploy("edge", "deploy", "joyz").await;
    let started = scratch(env.dir.path(), "started");
    wait_for("the run to start", WAIT, || started.exists().then_some(())).await;
    nix_kill(worker.id() as i32, "TERM");
    std::fs::write(scratch(env.dir.path(), "go"), "").unwrap();
    let log = || std::fs::read_to_string(worker_log(&env, 0)).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.states(id).last().map(String::as_str) != Some("success") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no success for #{id} (statuses {:?}); worker log:\n{}",
            env.states(id),
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(env.states(id), ["queued", "in_progress", "success"]);
    let status = tokio::task::spawn_blocking(move || worker.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}; worker log:\n{}", log());
    assert!(
        log().contains("worker stopped"),
        "the worker did not stop gracefully:\n{}",
        log()
    );
}

fn nix_kill(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
