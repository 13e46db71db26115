//! Checkout: one cached bare clone per repository under the work directory (faseng's own,
//! 0700), a fetch when the wanted commit is missing, and for each run a private directory
//! holding a standalone shallow repository at the exact sha (so runs never share files, and a
//! run handed to the provider user can use git without reaching the cache).
//!
//! Every git call is argv, runs under the run's deadline (killed with its process group when
//! it passes; git's own low-speed limit stops a stalled transfer sooner) and never holds the
//! cache lock past it. A token is sent only to the GitHub origin it belongs to — clone URLs are
//! parsed with a URL parser, never split by hand — through the environment (`GIT_CONFIG_*`),
//! never on disk, a command line or in the log.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use deploy_core::{CommitSha, RepoName, Secret};
use nix::fcntl::{Flock, FlockArg};
use tokio::process::Command;
use tokio::time::Instant;
use url::Url;

use crate::process::base_env;
use crate::runlog::RunLog;
use crate::sandbox::create_private_dir;

/// Where a run's code is cloned from: the operator's `clone_url`, else the webhook's
/// `repository.clone_url`; parsed, never split by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneSource {
    /// A repository on this machine (an absolute path, a `file://` URL, or a path relative
    /// to faseng's working directory).
    Local(PathBuf),
    /// `https://`, `http://` or `ssh://`.
    Remote(Url),
}

impl CloneSource {
    /// Parses a clone URL; relative paths are taken from `base`, and refused without one
    /// (only the operator's app.json may name one). Anything git could take for an option, a
    /// remote helper (`ext::`) or an scp-like address is refused.
    pub fn parse(text: &str, base: Option<&Path>) -> anyhow::Result<Self> {
        let refuse = || {
            anyhow::anyhow!(
                "clone URL {text:?} is not https://, ssh://, file:// or a path on this machine"
            )
        };
        if text.is_empty()
            || text.starts_with('-')
            || text.contains("::")
            || text.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(refuse());
        }
        if text.contains("://") {
            let url = Url::parse(text).map_err(|_| refuse())?;
            return match url.scheme() {
                "file" => url
                    .to_file_path()
                    .map(CloneSource::Local)
                    .map_err(|()| refuse()),
                "https" | "http" | "ssh" if url.host_str().is_some_and(|h| !h.is_empty()) => {
                    Ok(CloneSource::Remote(url))
                }
                _ => Err(refuse()),
            };
        }
        let before_slash = text.split('/').next().unwrap_or_default();
        if before_slash.contains(':') {
            // `git@host:owner/repo`: git's scp-like syntax, which it parses its own way.
            return Err(refuse());
        }
        match base {
            Some(base) => Ok(CloneSource::Local(std::path::absolute(base.join(text))?)),
            None if text.starts_with('/') => Ok(CloneSource::Local(PathBuf::from(text))),
            None => Err(refuse()),
        }
    }

    /// The argument git gets: the path, or the URL as the parser serialised it (so git and
    /// faseng agree on the host).
    fn git_arg(&self) -> OsString {
        match self {
            CloneSource::Local(p) => p.clone().into_os_string(),
            CloneSource::Remote(u) => u.as_str().into(),
        }
    }

    /// For logs: a URL without its user name or password.
    pub fn shown(&self) -> String {
        match self {
            CloneSource::Local(p) => p.display().to_string(),
            CloneSource::Remote(u) => {
                let mut u = u.clone();
                if !u.username().is_empty() || u.password().is_some() {
                    let _ = u.set_username("***");
                    let _ = u.set_password(None);
                }
                u.to_string()
            }
        }
    }
}

/// A token and the one origin (scheme, host, port) it may be sent to: the web origin of
/// the app's GitHub.
#[derive(Debug, Clone, Default)]
pub struct GitCredentials {
    token: Option<Secret>,
    origin: Option<url::Origin>,
}

/// The web origin of a GitHub API base: `https://api.github.com` → `https://github.com`,
/// GitHub Enterprise `https://ghe/api/v3` → `https://ghe`. Over https, or the scheme the API
/// base itself uses (a local fake in tests).
pub fn github_origin(api_url: &str) -> Option<url::Origin> {
    let mut url = Url::parse(api_url.trim()).ok()?;
    if url.host_str() == Some("api.github.com") {
        url.set_host(Some("github.com")).ok()?;
    }
    match url.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin),
        url::Origin::Opaque(_) => None,
    }
}

impl GitCredentials {
    /// `token` for the GitHub behind `api_url`.
    pub fn new(api_url: &str, token: Option<Secret>) -> Self {
        Self {
            origin: github_origin(api_url),
            token,
        }
    }

    /// No credentials.
    pub fn none() -> Self {
        Self::default()
    }

    /// The token to send for `source`: only when its origin is exactly the GitHub origin
    /// and it carries no credentials of its own.
    pub fn token_for(&self, source: &CloneSource) -> Option<&Secret> {
        let CloneSource::Remote(url) = source else {
            return None;
        };
        let own_credentials = !url.username().is_empty() || url.password().is_some();
        let same_origin = self.origin.as_ref() == Some(&url.origin());
        (same_origin && !own_credentials)
            .then_some(self.token.as_ref())
            .flatten()
    }
}

/// One run's private directory (`<work>/runs/run-<pid>-<random>`): the checkout, a private
/// `HOME` and `TMPDIR`. Handed to the provider user; removed with [`Checkouts::remove`].
#[derive(Debug)]
pub struct RunDir {
    /// Marks the directory as in use by this process until it is removed (see
    /// [`crate::rundir`]); `None` for one made by hand.
    pub lease: Option<crate::rundir::DirLease>,
    /// The directory itself.
    pub root: PathBuf,
    /// The repository at the run's sha.
    pub checkout: PathBuf,
    /// The provider's `HOME`.
    pub home: PathBuf,
    /// The provider's `TMPDIR`.
    pub tmp: PathBuf,
}

/// Clones and run directories under one work directory.
#[derive(Debug, Clone)]
pub struct Checkouts {
    workdir: PathBuf,
}

/// How long a stalled transfer may stay below git's low-speed limit before git stops it.
const GIT_LOW_SPEED_SECS: u64 = 60;

impl Checkouts {
    /// Checkouts under `workdir`. A relative `workdir` is taken from the current directory
    /// now: git runs in other directories.
    pub fn new(workdir: &Path) -> Self {
        Self {
            workdir: std::path::absolute(workdir).unwrap_or_else(|_| workdir.to_owned()),
        }
    }

    /// The work directory (absolute).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    fn git(&self, token: Option<&Secret>) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .envs(base_env())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["-c", "protocol.ext.allow=never"])
            .args(["-c", "http.lowSpeedLimit=1000"])
            .arg("-c")
            .arg(format!("http.lowSpeedTime={GIT_LOW_SPEED_SECS}"))
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(token) = token {
            let basic = base64_encode(format!("x-access-token:{}", token.expose()).as_bytes());
            // The header goes to every request of this command: a redirect must not take it
            // to another host.
            cmd.args(["-c", "http.followRedirects=false"])
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        cmd
    }

    /// Runs git until `deadline`; past it the command's process group is killed.
    async fn run_git(
        &self,
        mut cmd: Command,
        what: &str,
        deadline: Instant,
    ) -> anyhow::Result<String> {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting git for {what}"))?;
        let pgid = child.id().map(|p| p as i32);
        let out = match tokio::time::timeout_at(deadline, child.wait_with_output()).await {
            Ok(out) => out.with_context(|| format!("running {what}"))?,
            Err(_) => {
                if let Some(pgid) = pgid {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                anyhow::bail!("{what} did not finish within the run's timeout: stopped");
            }
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            anyhow::bail!("{what} failed: {last}")
        }
    }

    async fn has_commit(&self, repo: &Path, sha: &CommitSha, deadline: Instant) -> bool {
        let mut cmd = self.git(None);
        cmd.arg("-C")
            .arg(repo)
            .args(["cat-file", "-e"])
            .arg(format!("{sha}^{{commit}}"));
        self.run_git(cmd, "git cat-file", deadline).await.is_ok()
    }

    /// Fetches `sha` of `source` into the cache (if needed) and checks it out into a fresh run
    /// directory, all before `deadline`.
    pub async fn prepare(
        &self,
        repo: &RepoName,
        source: &CloneSource,
        credentials: &GitCredentials,
        sha: &CommitSha,
        log: &RunLog,
        deadline: Instant,
    ) -> anyhow::Result<RunDir> {
        let repos = self.workdir.join("repos");
        create_private_dir(&repos)?;
        let mirror = repos
            .join(repo.owner())
            .join(format!("{}.git", repo.name()));
        create_private_dir(mirror.parent().expect("has parent"))?;
        {
            let _lock = lock_cache(&mirror, deadline).await?;
            self.fill_cache(repo, &mirror, source, credentials, sha, log, deadline)
                .await?;
        }

        let run = self.new_run_dir()?;
        log.header("git", &format!("checkout of {}", sha.short()));
        let mut cmd = self.git(None);
        cmd.args(["init", "--quiet"]).arg(&run.checkout);
        self.run_git(cmd, "git init", deadline).await?;
        let mirror_url = Url::from_file_path(&mirror)
            .map_err(|()| anyhow::anyhow!("the cache path {} is not absolute", mirror.display()))?;
        let mut cmd = self.git(None);
        cmd.arg("-C")
            .arg(&run.checkout)
            .args(["fetch", "--quiet", "--no-tags", "--depth=1", "--"])
            .arg(mirror_url.as_str())
            .arg(sha.as_str());
        self.run_git(cmd, "git fetch from the cache", deadline)
            .await?;
        let mut cmd = self.git(None);
        cmd.arg("-C")
            .arg(&run.checkout)
            .args(["checkout", "--quiet", "--detach"])
            .arg(sha.as_str());
        self.run_git(cmd, "git checkout", deadline).await?;
        Ok(run)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fill_cache(
        &self,
        repo: &RepoName,
        mirror: &Path,
        source: &CloneSource,
        credentials: &GitCredentials,
        sha: &CommitSha,
        log: &RunLog,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        if !mirror.join("HEAD").exists() {
            log.header("git", &format!("init cache for {repo}"));
            let mut cmd = self.git(None);
            cmd.args(["init", "--bare", "--quiet"]).arg(mirror);
            self.run_git(cmd, "git init", deadline).await?;
        }
        if self.has_commit(mirror, sha, deadline).await {
            log.header("git", &format!("{} is already in the cache", sha.short()));
            return Ok(());
        }
        let token = credentials.token_for(source);
        let what = format!("git fetch of {}", source.shown());
        log.header("git", &format!("fetch {}", source.shown()));
        let mut cmd = self.git(token);
        cmd.arg("-C")
            .arg(mirror)
            .args(["fetch", "--quiet", "--no-tags", "--force", "--"])
            .arg(source.git_arg())
            .arg("+refs/heads/*:refs/remotes/origin/*");
        self.run_git(cmd, &what, deadline).await?;
        if !self.has_commit(mirror, sha, deadline).await {
            let mut cmd = self.git(token);
            cmd.arg("-C")
                .arg(mirror)
                .args(["fetch", "--quiet", "--no-tags", "--"])
                .arg(source.git_arg())
                .arg(sha.as_str());
            if let Err(e) = self
                .run_git(cmd, &format!("{what} (by sha)"), deadline)
                .await
            {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                tracing::debug!(error = %e, "fetch by sha failed");
            }
        }
        anyhow::ensure!(
            self.has_commit(mirror, sha, deadline).await,
            "commit {} is not in {}",
            sha.short(),
            source.shown()
        );
        Ok(())
    }

    /// A fresh run directory; those left by processes that are gone are removed first.
    fn new_run_dir(&self) -> anyhow::Result<RunDir> {
        let runs = self.workdir.join("runs");
        create_private_dir(&runs)?;
        prune_runs(&self.workdir);
        let (root, lease) = crate::rundir::create(&runs, |dir| {
            create_private_dir(dir).map_err(std::io::Error::other)
        })
        .with_context(|| format!("creating a run directory in {}", runs.display()))?;
        let run = RunDir {
            lease: Some(lease),
            checkout: root.join("checkout"),
            home: root.join("home"),
            tmp: root.join("tmp"),
            root,
        };
        create_private_dir(&run.home)?;
        create_private_dir(&run.tmp)?;
        Ok(run)
    }

    /// Removes a run's directory (then lets its lease go).
    pub async fn remove(&self, run: RunDir) {
        let (root, lease) = (run.root, run.lease);
        let result = tokio::task::spawn_blocking(move || {
            let removed = std::fs::remove_dir_all(&root);
            drop(lease);
            removed
        })
        .await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "could not remove a run directory");
        }
    }
}

/// Removes the run directories under `workdir` (checkouts in `runs/`, SSH directories in
/// `ssh/`) that no live process holds: left by a process that died mid-run. Returns how many.
pub fn prune_runs(workdir: &Path) -> usize {
    let mut removed = 0;
    for dir in [workdir.join("runs"), workdir.join("ssh")] {
        let gone = crate::rundir::prune(&dir);
        if !gone.is_empty() {
            tracing::info!(dir = %dir.display(), removed = ?gone, "removed run directories left by dead processes");
        }
        removed += gone.len();
    }
    removed
}

/// Takes the exclusive lock of one clone cache (a `flock` beside it, shared by every faseng
/// process on this host), giving up at `deadline`.
async fn lock_cache(mirror: &Path, deadline: Instant) -> anyhow::Result<Flock<std::fs::File>> {
    let lock_path = mirror.with_extension("lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the clone cache stayed locked by another run until the run's timeout"
                );
                file = f;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((_, e)) => anyhow::bail!("locking the clone cache: {e}"),
        }
    }
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Copies `src` over `dst` (files in `src` win); symlinks in `src` are skipped.
pub fn overlay(src: &Path, dst: &Path) -> std::io::Result<usize> {
    let mut copied = 0;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let target = dst.join(entry.file_name());
        if ty.is_dir() {
            if target.is_symlink() {
                std::fs::remove_file(&target)?;
            }
            std::fs::create_dir_all(&target)?;
            copied += overlay(&entry.path(), &target)?;
        } else if ty.is_file() {
            if target.is_symlink() || target.is_dir() {
                let _ = std::fs::remove_file(&target);
                let _ = std::fs::remove_dir_all(&target);
            }
            std::fs::copy(entry.path(), &target)?;
            copied += 1;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests;
