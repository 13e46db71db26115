//! `kill -9` of a real `faseng worker` process in the middle of a run: the run is reported
//! `error` (never re-run), what it left running is stopped, and the environment's line
//! moves on to the next deployment — on both queue backends. And SIGTERM: a running
//! deployment finishes and reports before the worker exits. (The whole fault suite is
//! listed at the top of `faults.rs`.)

use std::process::{Child, Command, Stdio};

use e2e::harness::{Backend, Env, Options, ROOM, WAIT, scratch, wait_for};

/// The log file of worker `n` of a scenario.
fn worker_log(env: &Env, n: usize) -> std::path::PathBuf {
    env.dir.path().join(format!("worker-{n}.log"))
}

/// Starts `faseng worker` number `n`, logging into [`worker_log`] (at info; `WORKER_RUST_LOG`
/// overrides the filter, e.g. `info,faseng=debug,sqlx=debug` to chase a stall).
fn spawn_worker(env: &Env, n: usize) -> Child {
    spawn_worker_with(env, n, &[], None)
}

/// [`spawn_worker`] with more environment, and optionally on a host of its own: a UTS
/// namespace with host name `host` (`unshare -u`, as root), so the worker looks like
/// another machine's.
fn spawn_worker_with(env: &Env, n: usize, extra: &[(&str, String)], host: Option<&str>) -> Child {
    let log = std::fs::File::create(worker_log(env, n)).unwrap();
    let faseng = e2e::bins::binary("faseng");
    let mut vars = env.faseng_env(&env.write_apps_json());
    vars.set("HOME", std::env::var("HOME").unwrap_or_default())
        .set(
            "RUST_LOG",
            std::env::var("WORKER_RUST_LOG")
                .unwrap_or_else(|_| "info,apalis=warn,sqlx=warn".into()),
        )
        .set("FASENG_PUBLIC_URL", &env.url);
    for (k, v) in extra {
        vars.set(k, v);
    }
    let mut cmd = match host {
        Some(host) => {
            let mut c = vars.std_command("unshare");
            c.args([
                "-u",
                "sh",
                "-c",
                "hostname \"$1\" && shift && exec \"$@\"",
                "sh",
            ])
            .arg(host)
            .arg(&faseng);
            c
        }
        None => vars.std_command(&faseng),
    };
    cmd.arg("worker")
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
    let said = s["description"].as_str().unwrap();
    assert!(
        said.starts_with("Error: the worker running this deploy stopped answering at ")
            && said.ends_with(" UTC; the provider may have partly run"),
        "{s}"
    );
    assert_eq!(env.states(id), ["queued", "in_progress", "error"]);
    env.slack
        .wait_for_text(ROOM, &ts, "stopped answering", WAIT)
        .await;
    // The orphan's leftover process is stopped.
    e2e::dirs::wait_released(&scratch(env.dir.path(), ""), &format!("child-{id}"), WAIT).await;

    assert_eq!(env.wait_final(next_id).await["state"], "success");
    let (_, log) = env.get(&format!("{}/log", env.log_url(next_id))).await;
    assert!(log.contains("finished"), "{log}");
    let (_, log) = env.get(&format!("{}/log", env.log_url(id))).await;
    assert!(log.contains("stopped answering"), "{log}");
    assert!(log.contains("this deployment was not re-run"), "{log}");
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
    let what = format!("success for #{id}");
    let success = env.gh.wait_until(WAIT, &what, |gh| {
        let states = e2e::world::states(gh, id);
        (states.last().map(String::as_str) == Some("success")).then_some(())
    });
    if tokio::time::timeout(WAIT, success).await.is_err() {
        panic!(
            "no success for #{id} (statuses {:?}); worker log:\n{}",
            env.states(id),
            log()
        );
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

/// A worker frozen (SIGSTOP) mid-run for longer than its lease: another worker, on another
/// host, takes the run over, waits until the frozen worker's provider is certainly stopped
/// (its supervisor stops it at the deadline), reports the run `error` once, and only then
/// lets the next deployment of the environment run. When the frozen worker wakes, it finds
/// its lease gone, stops, and reports nothing.
async fn a_frozen_worker_loses_its_run_without_overlap(backend: Backend) {
    // Every run holds the environment's lock file while it runs: a run that cannot take it
    // overlaps another and says so.
    let script = "exec 9> $SCRATCH/edge.lock\n\
                  if ! flock -n 9; then touch $SCRATCH/overlap; echo OVERLAP; exit 1; fi\n\
                  echo $DEPLOY_ID >> $SCRATCH/ran\n\
                  if [ -e $SCRATCH/slow-$DEPLOY_ID ]; then\n\
                    trap 'touch $SCRATCH/stopped-$DEPLOY_ID; exit 143' TERM\n\
                    touch $SCRATCH/started-$DEPLOY_ID\n\
                    while :; do sleep 0.1; done\n\
                  fi\n\
                  echo deployed";
    let opts = Options {
        script: script.into(),
        with_worker: false,
        app: serde_json::json!({"timeout": 6}),
        ..Options::default()
    };
    let Some(env) = Env::start(backend, opts).await else {
        return;
    };
    let lease = [("FASENG_LEASE_SECS", "2".to_owned())];
    let other_host = nix::unistd::geteuid().is_root().then_some("faseng-host-a");
    let worker_a = spawn_worker_with(
        &env,
        0,
        &[lease[0].clone(), ("FASENG_WORKER_ID", "worker-a".into())],
        other_host,
    );

    let (d, headers, body) = env.deployment_and_webhook("edge", "deploy", "joyz").await;
    let id = d["id"].as_u64().unwrap();
    std::fs::write(scratch(env.dir.path(), &format!("slow-{id}")), "").unwrap();
    assert_eq!(env.post_webhook(&headers, body).await, 202);
    let started = scratch(env.dir.path(), &format!("started-{id}"));
    wait_for("the first run to start", WAIT, || {
        started.exists().then_some(())
    })
    .await;
    env.gh.wait_for_status(id, "in_progress", WAIT).await;
    nix_kill(worker_a.id() as i32, "STOP");

    let (next, next_headers, next_body) =
        env.deployment_and_webhook("edge", "deploy", "joyz").await;
    let next_id = next["id"].as_u64().unwrap();
    assert_eq!(env.post_webhook(&next_headers, next_body).await, 202);
    let worker_b = spawn_worker_with(
        &env,
        1,
        &[lease[0].clone(), ("FASENG_WORKER_ID", "worker-b".into())],
        None,
    );

    let s = env.wait_final(id).await;
    assert_eq!(s["state"], "error", "{s}");
    let said = s["description"].as_str().unwrap();
    assert!(said.contains("stopped answering at"), "{s}");
    assert!(
        scratch(env.dir.path(), &format!("stopped-{id}")).exists(),
        "the frozen worker's provider was still running when the run was reported"
    );
    assert_eq!(env.wait_final(next_id).await["state"], "success");

    nix_kill(worker_a.id() as i32, "CONT");
    let log_a = || std::fs::read_to_string(worker_log(&env, 0)).unwrap_or_default();
    wait_for("the woken worker to notice it lost the run", WAIT, || {
        log_a()
            .contains("another worker holds this run's lease now")
            .then_some(())
    })
    .await;
    // Whatever the woken worker still had queued has gone out by now or never will.
    env.gh.wait_for_status(next_id, "success", WAIT).await;
    assert_eq!(
        env.states(id),
        ["queued", "in_progress", "error"],
        "exactly one final status, and it is the taker's; the woken worker's log:\n{}",
        log_a()
    );
    assert!(
        !scratch(env.dir.path(), "overlap").exists(),
        "two runs of edge overlapped"
    );
    let ran = std::fs::read_to_string(scratch(env.dir.path(), "ran")).unwrap();
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        [id.to_string(), next_id.to_string()],
        "each deployment ran once"
    );
    let (_, log) = env.get(&format!("{}/log", env.log_url(id))).await;
    assert!(log.contains("stopped answering"), "{log}");

    for mut w in [worker_a, worker_b] {
        let _ = w.kill();
        let _ = w.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_a_worker_frozen_past_its_lease_loses_its_run_without_overlap() {
    a_frozen_worker_loses_its_run_without_overlap(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_worker_frozen_past_its_lease_loses_its_run_without_overlap() {
    a_frozen_worker_loses_its_run_without_overlap(Backend::Sqlite).await;
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
