//! Checkout: one cached bare clone per repository under the work directory, a fetch when
//! the wanted commit is missing, and a detached worktree per run at the exact sha (so runs
//! for two environments of one repository never trample each other). Every git call is
//! argv; a token for https is passed through the environment (`GIT_CONFIG_*`), never
//! written to disk, a command line or the log.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use deploy_core::{CommitSha, RepoName, Secret};
use nix::fcntl::{Flock, FlockArg};
use tokio::process::Command;

use crate::process::base_env;
use crate::runlog::RunLog;

/// Clones and worktrees under one work directory.
#[derive(Debug, Clone)]
pub struct Checkouts {
    workdir: PathBuf,
    token: Option<Secret>,
    token_host: Option<String>,
}

/// A run's private checkout; remove it with [`Checkouts::remove`].
#[derive(Debug)]
pub struct Worktree {
    /// The checkout directory.
    pub path: PathBuf,
    mirror: PathBuf,
}

/// The host a GitHub token may be sent to for an API URL: `api.github.com` → `github.com`,
/// GitHub Enterprise `https://ghe/api/v3` → `ghe`.
pub fn token_host_for_api(api_url: &str) -> Option<String> {
    let rest = api_url.split_once("://")?.1;
    let host = rest.split(['/', '?']).next()?.to_ascii_lowercase();
    Some(if host == "api.github.com" {
        "github.com".to_owned()
    } else {
        host
    })
}

/// Refuses clone URLs git could treat as options or as a remote helper (`ext::…`).
pub fn check_clone_url(url: &str) -> anyhow::Result<()> {
    let ok_scheme = ["https://", "http://", "file://", "ssh://"]
        .iter()
        .any(|p| url.starts_with(p))
        || url.starts_with('/');
    if !ok_scheme || url.contains("::") || url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        anyhow::bail!("clone URL {url:?} is not https://, ssh://, file:// or an absolute path");
    }
    Ok(())
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?.split(':').next()?;
    Some(host.to_ascii_lowercase())
}

impl Checkouts {
    /// Checkouts under `workdir`; `token` is sent only to `token_host` over https. A relative
    /// `workdir` is taken from the current directory now: git runs in other directories.
    pub fn new(workdir: &Path, token: Option<Secret>, token_host: Option<String>) -> Self {
        Self {
            workdir: std::path::absolute(workdir).unwrap_or_else(|_| workdir.to_owned()),
            token,
            token_host,
        }
    }

    fn git(&self, url_for_auth: Option<&str>) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .envs(base_env())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .arg("-c")
            .arg("protocol.ext.allow=never")
            .stdin(std::process::Stdio::null());
        let send_token = url_for_auth
            .and_then(url_host)
            .is_some_and(|h| Some(h) == self.token_host);
        if let (true, Some(token)) = (send_token, &self.token) {
            let basic = base64_encode(format!("x-access-token:{}", token.expose()).as_bytes());
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        cmd
    }

    async fn run_git(&self, mut cmd: Command, what: &str) -> anyhow::Result<String> {
        let out = cmd
            .output()
            .await
            .with_context(|| format!("starting git for {what}"))?;
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

    async fn has_commit(&self, mirror: &Path, sha: &CommitSha) -> bool {
        let mut cmd = self.git(None);
        cmd.arg("-C")
            .arg(mirror)
            .args(["cat-file", "-e"])
            .arg(format!("{sha}^{{commit}}"));
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.status().await.is_ok_and(|s| s.success())
    }

    /// Fetches (if needed) and checks out `sha` of `url` into a fresh worktree for `run`.
    pub async fn prepare(
        &self,
        repo: &RepoName,
        url: &str,
        sha: &CommitSha,
        run: &str,
        log: &RunLog,
    ) -> anyhow::Result<Worktree> {
        check_clone_url(url)?;
        let mirror = self
            .workdir
            .join("repos")
            .join(repo.owner())
            .join(format!("{}.git", repo.name()));
        std::fs::create_dir_all(mirror.parent().expect("has parent"))
            .context("creating the clone cache")?;
        let lock = lock_cache(&mirror).await?;

        if !mirror.join("HEAD").exists() {
            log.header("git", &format!("init cache for {repo}"));
            let mut cmd = self.git(None);
            cmd.args(["init", "--bare", "--quiet"]).arg(&mirror);
            self.run_git(cmd, "git init").await?;
        }
        if self.has_commit(&mirror, sha).await {
            log.header("git", &format!("{} is already in the cache", sha.short()));
        } else {
            log.header("git", &format!("fetch {}", redact_url(url)));
            let mut cmd = self.git(Some(url));
            cmd.arg("-C")
                .arg(&mirror)
                .args(["fetch", "--quiet", "--no-tags", "--force", "--"])
                .arg(url)
                .arg("+refs/heads/*:refs/remotes/origin/*");
            self.run_git(cmd, "git fetch").await?;
            if !self.has_commit(&mirror, sha).await {
                let mut cmd = self.git(Some(url));
                cmd.arg("-C")
                    .arg(&mirror)
                    .args(["fetch", "--quiet", "--no-tags", "--"])
                    .arg(url)
                    .arg(sha.as_str());
                if let Err(e) = self.run_git(cmd, "git fetch of the sha").await {
                    tracing::debug!(error = %e, "fetch by sha failed");
                }
            }
            if !self.has_commit(&mirror, sha).await {
                anyhow::bail!("commit {} is not in {}", sha.short(), redact_url(url));
            }
        }

        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let safe_run: String = run
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = self
            .workdir
            .join("runs")
            .join(format!("{safe_run}-{stamp}"));
        std::fs::create_dir_all(self.workdir.join("runs"))
            .context("creating the runs directory")?;
        log.header("git", &format!("worktree at {}", sha.short()));
        let mut cmd = self.git(None);
        cmd.arg("-C")
            .arg(&mirror)
            .args(["worktree", "add", "--quiet", "--detach"])
            .arg(&path)
            .arg(sha.as_str());
        self.run_git(cmd, "git worktree add").await?;
        drop(lock);
        Ok(Worktree { path, mirror })
    }

    /// Removes a run's worktree, holding the cache lock: git deletes `worktrees/` with the
    /// last worktree, which would race with another run's `worktree add`.
    pub async fn remove(&self, wt: Worktree) {
        let lock = lock_cache(&wt.mirror).await;
        if let Err(e) = &lock {
            tracing::warn!(error = %e, "removing a worktree without the cache lock");
        }
        let mut cmd = self.git(None);
        cmd.arg("-C")
            .arg(&wt.mirror)
            .args(["worktree", "remove", "--force"])
            .arg(&wt.path);
        if let Err(e) = self.run_git(cmd, "git worktree remove").await {
            tracing::debug!(error = %e, "worktree remove failed; deleting the directory");
            let _ = std::fs::remove_dir_all(&wt.path);
            let mut cmd = self.git(None);
            cmd.arg("-C").arg(&wt.mirror).args(["worktree", "prune"]);
            let _ = self.run_git(cmd, "git worktree prune").await;
        }
        drop(lock);
    }
}

/// Takes the exclusive lock of one clone cache (a `flock` beside it, shared by every faseng
/// process on this host) for git commands that change its worktree list.
async fn lock_cache(mirror: &Path) -> anyhow::Result<Flock<std::fs::File>> {
    let lock_path = mirror.with_extension("lock");
    tokio::task::spawn_blocking(move || -> anyhow::Result<Flock<std::fs::File>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking the clone cache: {e}"))
    })
    .await?
}

/// `https://user:pass@host/x` → `https://***@host/x`.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host))
                if !rest.split('/').next().unwrap_or("").is_empty()
                    && rest.find('@') < rest.find('/') =>
            {
                format!("{scheme}://***@{host}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
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
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(
            base64_encode(b"x-access-token:abc"),
            "eC1hY2Nlc3MtdG9rZW46YWJj"
        );
    }

    #[test]
    fn clone_urls_are_checked_and_tokens_go_only_to_the_github_host() {
        for ok in [
            "https://github.com/o/r.git",
            "file:///tmp/r",
            "/tmp/r",
            "ssh://git@h/o/r",
        ] {
            check_clone_url(ok).unwrap();
        }
        for bad in [
            "-uhttps://x",
            "ext::sh -c touch% /tmp/pwned",
            "relative/path",
            "https://h/x y",
            "fd::3",
        ] {
            assert!(check_clone_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            token_host_for_api("https://api.github.com").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            token_host_for_api("https://ghe.corp/api/v3").as_deref(),
            Some("ghe.corp")
        );
        assert_eq!(
            url_host("https://u@GitHub.com:443/o/r").as_deref(),
            Some("github.com")
        );
        assert_eq!(url_host("file:///x"), None);
        assert_eq!(redact_url("https://u:p@h/x"), "https://***@h/x");
        assert_eq!(redact_url("https://h/x@y"), "https://h/x@y");
    }

    #[test]
    fn overlay_copies_files_over_the_checkout() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("config/deploy")).unwrap();
        std::fs::write(src.path().join("config/deploy/edge.rb"), "new").unwrap();
        std::fs::write(src.path().join("deploy.sh"), "x").unwrap();
        std::fs::create_dir_all(dst.path().join("config/deploy")).unwrap();
        std::fs::write(dst.path().join("config/deploy/edge.rb"), "old").unwrap();
        assert_eq!(overlay(src.path(), dst.path()).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(dst.path().join("config/deploy/edge.rb")).unwrap(),
            "new"
        );
    }
}
