//! Processes on this machine: the one command shape faseng runs ([`CommandSpec`], argv only,
//! never a shell string, with a complete environment), how a command ended, and process
//! groups (signalled, stopped, checked alive through `/proc`). Running a provider's command
//! with its output in the run log is [`crate::providers::command`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a timed-out group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How much later than faseng's own timer a command's supervisor stops it: faseng stops it
/// first (and says so in the log) unless faseng is stopped or dead.
pub const SUPERVISOR_SLACK: Duration = Duration::from_secs(2);

/// One command to run.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// The executable (absolute, or found on the given `PATH`).
    pub program: PathBuf,
    /// Arguments, each one argv element.
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The complete environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Paths outside the run directory the command needs to see (its SSH directory), when
    /// it runs in a sandbox.
    pub visible: Vec<PathBuf>,
}

impl CommandSpec {
    /// The command line for the log header (arguments are shown as given).
    pub fn display(&self) -> String {
        std::iter::once(self.program.to_string_lossy().into_owned())
            .chain(self.args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (not by us).
    Signal(i32),
    /// Killed by us after the timeout.
    TimedOut {
        /// The timeout in seconds.
        secs: u64,
    },
}

impl Exit {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// The environment faseng's own helper commands (git, ssh-keygen) get: `PATH`, `HOME`,
/// `LANG`, `TMPDIR`, `USER` from faseng's environment and nothing else. Provider commands get
/// [`crate::providers::command::provider_env`] instead.
pub fn base_env() -> Vec<(String, String)> {
    [
        "PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
    .collect()
}

/// Sends `sig` to process group `pgid`; true when it was delivered.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

/// True while process group `pgid` has a member that is not a zombie.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killpg(Pid::from_raw(pgid), None).is_ok();
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // After the command name: state, ppid, pgrp.
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next());
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some('Z')
    })
}

/// Kills process group `pgid` and waits (up to 10 s) until none of it is left; true when
/// it is gone.
pub async fn stop_group(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        signal_group(pgid, Signal::SIGKILL);
        if !group_alive(pgid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(pgid, "the process group is still there 10 s after SIGKILL");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when the environment of process `pid` holds `entry` (`NAME=value`), as
/// `/proc/<pid>/environ` says; false when it cannot be read.
pub fn environ_has(pid: i32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()))
        .unwrap_or(false)
}

/// A process's state letter (`Z` for a zombie) and start time, from `/proc/<pid>/stat`.
pub(crate) fn proc_stat(pid: &str) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}
