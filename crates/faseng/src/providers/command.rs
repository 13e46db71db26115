//! Running a provider's command: argv only (never a shell string), a cleared environment,
//! its own process group, stdout and stderr streamed line by line into the run log (a line
//! longer than [`LINE_MAX_BYTES`] in pieces), and a timeout that kills the whole group
//! (children of children included).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::checkout::RunDir;
use crate::messages;
use crate::process::{CommandSpec, Exit, KILL_GRACE, SUPERVISOR_SLACK, signal_group};
use crate::runlog::{LINE_MAX_BYTES, LineSplitter, RunLog};
use crate::sandbox::Isolation;

/// The environment every provider command gets before its own variables: faseng's `PATH`
/// and locale, and the run's private `HOME` and `TMPDIR`, with `USER` / `LOGNAME` naming the
/// user it runs as. Nothing else is inherited, so faseng's tokens never reach a deploy script.
pub fn provider_env(run: &RunDir, isolation: &Isolation) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ["PATH", "LANG", "LC_ALL"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    let user = isolation
        .provider_user()
        .map(|u| u.name.clone())
        .or_else(|| std::env::var("USER").ok());
    env.push(("HOME".into(), run.home.display().to_string()));
    env.push(("TMPDIR".into(), run.tmp.display().to_string()));
    if let Some(user) = user {
        env.push(("USER".into(), user.clone()));
        env.push(("LOGNAME".into(), user));
    }
    env
}

/// Bytes read from a command's output at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Copies `r` into `log` line by line, a line longer than [`LINE_MAX_BYTES`] in pieces: the
/// memory it takes is bounded whatever the command prints.
fn pipe_to_log<R: AsyncRead + Unpin + Send + 'static>(
    mut r: R,
    log: RunLog,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = LineSplitter::new(LINE_MAX_BYTES);
        let mut chunk = vec![0; READ_CHUNK];
        let to_log = |line: &[u8]| log.line(&String::from_utf8_lossy(line));
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => lines.push(&chunk[..n], to_log),
            }
        }
        lines.finish(to_log);
    })
}

/// Takes a command's extra paths back for faseng when the command is over.
struct TakeBack<'a> {
    isolation: &'a Isolation,
    paths: &'a [PathBuf],
}

impl Drop for TakeBack<'_> {
    fn drop(&mut self) {
        for path in self.paths {
            if let Err(e) = self.isolation.take_back(path) {
                tracing::warn!(error = %e, path = %path.display(), "could not take a directory back from the provider user");
            }
        }
    }
}

/// How long a command may take: what is left of its run's time, and the run's whole timeout
/// (which the log names when the command is stopped: the run's, not the remainder).
#[derive(Debug, Clone, Copy)]
pub struct TimeLimit {
    /// Time left before the run's deadline.
    pub left: Duration,
    /// The run's whole timeout.
    pub of_run: Duration,
}

impl TimeLimit {
    /// A command that has its run's whole time.
    pub fn whole(timeout: Duration) -> Self {
        Self {
            left: timeout,
            of_run: timeout,
        }
    }
}

/// Runs `spec` for the run in `run_root`, isolated as `isolation` says, streaming its
/// output into `log`; `on_spawn` receives the process group id.
pub async fn run_logged(
    spec: &CommandSpec,
    isolation: &Isolation,
    run_root: &Path,
    log: &RunLog,
    limit: TimeLimit,
    on_spawn: impl FnOnce(i32),
) -> std::io::Result<Exit> {
    let timeout = limit.left;
    // One pipe for stdout and stderr, so the log keeps the order the command wrote in.
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let write_err = write_end.try_clone()?;
    // What only this command may see (its SSH directory) is the provider user's while it runs.
    for path in &spec.visible {
        isolation.hand_over(path)?;
    }
    let _take_back = TakeBack {
        isolation,
        paths: &spec.visible,
    };
    let mut cmd = isolation.command(
        spec,
        run_root,
        &spec.visible,
        Some(timeout + SUPERVISOR_SLACK),
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_err))
        .process_group(0);
    let spawned = cmd.spawn();
    // Our copies of the write end must go, or the reader never sees end-of-file.
    drop(cmd);
    let mut child = spawned?;
    let pgid = child.id().map(|p| p as i32).unwrap_or_default();
    on_spawn(pgid);
    let reader = pipe_to_log(
        tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?,
        log.clone(),
    );

    let exit = tokio::select! {
        status = child.wait() => {
            let status = status?;
            use std::os::unix::process::ExitStatusExt as _;
            match (status.code(), status.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                (None, None) => Exit::Code(-1),
            }
        }
        () = tokio::time::sleep(timeout) => {
            let secs = limit.of_run.as_secs_f64().round() as u64;
            log.line(&messages::timeout_log_line(secs));
            signal_group(pgid, Signal::SIGTERM);
            if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
                log.line("==> the process group ignored SIGTERM; sending SIGKILL");
            }
            signal_group(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
            Exit::TimedOut { secs }
        }
    };
    // Whatever the command left behind in its group goes too: a deploy does not leave
    // processes running under faseng.
    if signal_group(pgid, Signal::SIGKILL) && !matches!(exit, Exit::TimedOut { .. }) {
        log.line("==> stopped processes the command left running in its process group");
    }
    // Output still buffered in the pipe is read; a process that escaped the group and holds
    // the pipe open does not hold the run.
    let abort = reader.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .is_err()
    {
        abort.abort();
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runlog::{LOG_CAP_BYTES, Redactor, TAIL_LINE_MAX_BYTES};
    use crate::store::{SqliteStore, Store};

    async fn log() -> (
        RunLog,
        crate::runlog::RunLogWriter,
        Arc<dyn Store>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("p.db"), "q")
                .await
                .unwrap(),
        );
        let (l, w) = RunLog::start(store.clone(), "k".into(), Redactor::default());
        (l, w, store, dir)
    }

    fn sh(script: &str, cwd: &std::path::Path) -> CommandSpec {
        CommandSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: cwd.to_owned(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("SECRET_FROM_TEST".into(), "visible".into()),
            ],
            visible: Vec::new(),
        }
    }

    fn shared() -> Isolation {
        Isolation::shared("a test of process handling")
    }

    #[tokio::test]
    async fn output_and_exit_codes_are_captured_and_the_environment_is_only_what_was_given() {
        let (log, w, store, dir) = log().await;
        let mut pg = 0;
        let exit = run_logged(
            &sh(
                "echo out; echo err >&2; echo out2; echo err2 >&2; env | sort; exit 3",
                dir.path(),
            ),
            &shared(),
            dir.path(),
            &log,
            TimeLimit::whole(Duration::from_secs(10)),
            |p| pg = p,
        )
        .await
        .unwrap();
        assert_eq!(exit, Exit::Code(3));
        assert!(pg > 0);
        w.finish(log).await;
        let text = store.read_log("k", 0).await.unwrap().join("\n");
        let order: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(_, t)| t))
            .take(4)
            .collect();
        assert_eq!(order, ["out", "err", "out2", "err2"], "{text}");
        assert!(text.contains("SECRET_FROM_TEST=visible"));
        assert!(
            !text.contains("CARGO"),
            "the parent's environment leaked: {text}"
        );
    }

    #[tokio::test]
    async fn the_timeout_kills_the_whole_group() {
        let (log, w, store, dir) = log().await;
        let pids = dir.path().join("pids");
        let script = format!(
            "sleep 300 & echo $! > {p}; (sleep 300 & echo $! >> {p}; wait) & echo started; wait",
            p = pids.display()
        );
        let exit = run_logged(
            &sh(&script, dir.path()),
            &shared(),
            dir.path(),
            &log,
            TimeLimit::whole(Duration::from_millis(700)),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(exit, Exit::TimedOut { secs: 1 });
        w.finish(log).await;
        let text = store.read_log("k", 0).await.unwrap().join("\n");
        assert!(text.contains("timed out after 1 s"), "{text}");
        for pid in std::fs::read_to_string(&pids).unwrap().split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while is_alive(pid) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!is_alive(pid), "pid {pid} survived the timeout");
        }
    }

    #[tokio::test]
    async fn a_huge_line_without_a_newline_is_logged_in_pieces_up_to_the_cap_and_the_run_goes_on() {
        let (log, w, store, dir) = log().await;
        let script = "head -c 20000000 /dev/zero | tr '\\0' a; echo; echo after the flood; exit 4";
        let exit = run_logged(
            &sh(script, dir.path()),
            &shared(),
            dir.path(),
            &log,
            TimeLimit::whole(Duration::from_secs(60)),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(exit, Exit::Code(4));
        assert!(log.truncated());
        assert_eq!(log.last_output_line().as_deref(), Some("after the flood"));
        assert!(log.tail().iter().all(|l| l.len() <= TAIL_LINE_MAX_BYTES));
        w.finish(log).await;
        let lines = store.read_log("k", 0).await.unwrap();
        let stamp = "00:00:00.000 ".len();
        assert!(lines.iter().all(|l| l.len() <= LINE_MAX_BYTES + stamp));
        let stored: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(stored <= LOG_CAP_BYTES + 200, "{stored} bytes stored");
        let marker = lines.last().unwrap();
        assert!(marker.contains("log truncated"), "{marker}");
        assert!(lines.len() > 10, "cut into pieces, not one line");
    }

    /// A process is alive when it exists and is not a zombie.
    fn is_alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }
}
