//! Per-run scratch directories (`run-<pid>-<random>`) that a dead process's successor can
//! tell from a live one's.
//!
//! Several faseng processes may share one work directory: on one machine, or in containers
//! with their own pid namespaces over one volume (compose's worker replicas), where a pid in
//! a directory's name means nothing to the reader, or names another process. So the pid is
//! only for people: a live run holds an exclusive `flock` on its directory for as long as
//! the directory is in use. The kernel drops the lock when the holder dies (however it dies)
//! and every process on the machine sees it, whatever its pid namespace. [`prune`] removes
//! only directories it can lock itself, holding the lock while it removes them, and leaves
//! alone a run directory some process still works in (its current directory is inside):
//! a provider's supervisor outlives a worker that died, until the run's deadline, and is
//! stopped by it, not by this.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock that marks a run directory as in use; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct DirLease {
    _lock: Flock<File>,
}

/// The prefix of every run directory's name.
pub const PREFIX: &str = "run-";

/// Makes a fresh run directory under `parent` with `make` (which creates the directory at
/// the path it is given, with the mode it wants) and takes its lease. A directory removed
/// by a concurrent [`prune`] before its lease was taken is made again under another name.
pub fn create(
    parent: &Path,
    make: impl Fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<(PathBuf, DirLease)> {
    loop {
        let name = format!("{PREFIX}{}-{}", std::process::id(), random_hex(8)?);
        let path = parent.join(name);
        make(&path)?;
        let Some(lease) = try_lease(&path)? else {
            continue;
        };
        // A pruner that locked and removed it between `make` and our lock: the path is gone
        // (or, in theory, is another directory now).
        match (std::fs::symlink_metadata(&path), lease._lock.metadata()) {
            (Ok(now), Ok(held)) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok((path, lease));
            }
            _ => continue,
        }
    }
}

/// A leased run directory removed when dropped (then its lease released).
#[derive(Debug)]
pub struct OwnedDir {
    path: PathBuf,
    lease: Option<DirLease>,
}

impl OwnedDir {
    /// [`create`], removed on drop.
    pub fn create(
        parent: &Path,
        make: impl Fn(&Path) -> std::io::Result<()>,
    ) -> std::io::Result<Self> {
        let (path, lease) = create(parent, make)?;
        Ok(Self {
            path,
            lease: Some(lease),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove a run directory");
        }
        self.lease.take();
    }
}

/// Takes the lease of the directory at `path` if no one holds it; `Ok(None)` when someone
/// does, or the directory is gone.
fn try_lease(path: &Path) -> std::io::Result<Option<DirLease>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
    {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(DirLease { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// `O_DIRECTORY | O_NOFOLLOW`: a run directory is opened as itself, never through a link.
fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW).bits()
}

/// Removes the run directories under `parent` that no live process holds (left by a process
/// that died, or by one from before leases) and none works in; returns their names. Each is
/// locked while it is removed, so a process making a directory at the same moment makes
/// another.
pub fn prune(parent: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        match try_lease(&path) {
            Ok(Some(_lease)) if worked_in(&path) => {
                tracing::info!(dir = %path.display(), "a run directory left by a dead process is still in use (its provider runs until its deadline); kept");
            }
            Ok(Some(_lease)) => match std::fs::remove_dir_all(&path) {
                Ok(()) => removed.push(name.to_owned()),
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "could not remove a run directory left by a dead process");
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "could not check a run directory");
            }
        }
    }
    removed
}

/// True when some process this one can see has its current directory in `dir` (or below).
fn worked_in(dir: &Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        p.file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
    })
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkdir(p: &Path) -> std::io::Result<()> {
        std::fs::create_dir(p)
    }

    #[test]
    fn only_directories_no_live_process_holds_are_pruned() {
        let root = tempfile::tempdir().unwrap();
        let (mine, lease) = create(root.path(), mkdir).unwrap();
        let name = mine.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("run-{}-", std::process::id())));
        // One left by a dead process (no lease), even one named with a live pid (ours: a pid
        // from another namespace may well be one here).
        let dead = root.path().join(format!("run-{}-dead", std::process::id()));
        std::fs::create_dir_all(dead.join("checkout/.git")).unwrap();
        let other = root.path().join("known_hosts");
        std::fs::write(&other, "").unwrap();
        let removed = prune(root.path());
        assert_eq!(removed, [format!("run-{}-dead", std::process::id())]);
        assert!(mine.exists() && other.exists() && !dead.exists());
        drop(lease);
        assert_eq!(prune(root.path()), [name.to_owned()]);
        assert!(!mine.exists());
    }

    #[test]
    fn a_directory_a_process_still_works_in_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let orphan = root.path().join("run-4242-orphan");
        std::fs::create_dir_all(orphan.join("checkout")).unwrap();
        // A provider left running by a worker that died (no lease), working in its checkout.
        let mut provider = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(orphan.join("checkout"))
            .spawn()
            .unwrap();
        assert!(prune(root.path()).is_empty());
        assert!(orphan.exists());
        provider.kill().unwrap();
        provider.wait().unwrap();
        assert_eq!(prune(root.path()), ["run-4242-orphan"]);
    }

    #[test]
    fn a_lease_is_held_across_processes() {
        // Another process (any pid namespace) sees the lock: flock is per open file, checked
        // here with the flock(1) tool when installed.
        let root = tempfile::tempdir().unwrap();
        let (mine, _lease) = create(root.path(), mkdir).unwrap();
        let out = match std::process::Command::new("flock")
            .args(["--nonblock", "--conflict-exit-code", "7"])
            .arg(&mine)
            .arg("true")
            .status()
        {
            Ok(out) => out,
            Err(e) => {
                eprintln!("SKIPPED: flock(1) is not installed ({e})");
                return;
            }
        };
        assert_eq!(out.code(), Some(7), "another process must find it locked");
    }
}
