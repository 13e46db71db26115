//! Waiting on what is outside our control: files a process writes, processes themselves,
//! stores read over their own connection. These poll (every 20 ms, bounded) because nothing
//! can signal them; whatever the fakes record is waited on through their own events instead
//! (`FakeGithub::wait_until`, `FakeSlack::wait_until`, `FakeHeroku::wait_until`).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// How often a poll looks again.
const EVERY: Duration = Duration::from_millis(20);

/// Polls `f` until it returns `Some`; panics after `timeout` naming `what`, with
/// `context()` (e.g. logs).
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    poll_async(what, timeout, || std::future::ready(f()), context).await
}

/// [`poll`] of an async check (a store read, an HTTP GET of something with no events).
pub async fn poll_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> F,
    context: impl Fn() -> String,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// [`poll`] without context.
pub async fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(what, timeout, f, String::new).await
}

/// True when a process exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
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

/// The command name of a process (`/proc/<pid>/comm`), if it exists.
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Live processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // state ppid pgrp …
        if rest.len() > 2 && rest[0] != "Z" && rest[2].parse::<i32>().ok() == Some(pgid) {
            out.push((pid, comm(pid).unwrap_or_default()));
        }
    }
    out
}

/// Waits (polling `/proc`, bounded) until none of `pids` is alive; returns the survivors.
pub async fn wait_dead(pids: &[i32], timeout: Duration) -> Vec<(i32, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let alive: Vec<(i32, String)> = pids
            .iter()
            .filter(|p| is_alive(**p))
            .map(|p| (*p, comm(*p).unwrap_or_default()))
            .collect();
        if alive.is_empty() || tokio::time::Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Waits (polling the file, bounded) until it exists with at least `lines` lines; returns
/// them.
pub async fn wait_lines(path: &Path, lines: usize, timeout: Duration) -> Vec<String> {
    poll(
        &format!("{lines} line(s) in {}", path.display()),
        timeout,
        || {
            let got: Vec<String> = std::fs::read_to_string(path)
                .map(|s| s.lines().map(str::to_owned).collect())
                .unwrap_or_default();
            (got.len() >= lines).then_some(got)
        },
        String::new,
    )
    .await
}

/// Waits until `check` returns something, looking again each time `changes` says a fake's
/// state changed (no polling), or panics after `timeout` naming `what`.
pub async fn on_change<T>(
    changes: &tokio::sync::watch::Sender<u64>,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let mut changes = changes.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        changes.borrow_and_update();
        if let Some(value) = check() {
            return value;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}
