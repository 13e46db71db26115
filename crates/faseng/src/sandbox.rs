//! Keeping provider processes away from faseng. A deploy script (and `fab`, `cap`, the
//! before / after stages, anything they start) runs the repository's code: it gets its run
//! directory (checkout, private `HOME` and `TMPDIR`) and its environment variables, and
//! nothing of faseng's — not its tokens, not its store, not other apps' clones.
//!
//! * As root, faseng runs providers as an unprivileged user (`FASENG_PROVIDER_USER`, default
//!   `nobody`): another uid cannot read faseng's `/proc/<pid>/environ` or memory, cannot
//!   ptrace it, and cannot open its 0600 / 0700 files. The run directory is handed to that
//!   user; everything else under the work directory stays faseng's.
//! * Wherever bubblewrap can make one (as root on top of the user switch, or as an ordinary
//!   user on its own), each provider command runs in a sandbox with its own PID namespace
//!   and `/proc` (faseng's processes are not visible), with faseng's directories and secret
//!   files covered (an empty tmpfs or `/dev/null`) and only the run directory mounted back.
//! * Where neither is possible, providers share faseng's user; faseng says so at start, on
//!   `/healthz` and in README.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;

use crate::process::CommandSpec;

/// The unprivileged user providers run as when faseng runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUser {
    /// Login name.
    pub name: String,
    /// User id (never 0).
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl ProviderUser {
    /// Looks `name` up in the user database; root is refused.
    pub fn lookup(name: &str) -> anyhow::Result<Self> {
        let user = nix::unistd::User::from_name(name)
            .with_context(|| format!("looking up the provider user {name:?}"))?
            .with_context(|| {
                format!(
                    "FASENG_PROVIDER_USER {name:?} does not exist on this machine (create it: useradd --system {name})"
                )
            })?;
        anyhow::ensure!(
            !user.uid.is_root(),
            "FASENG_PROVIDER_USER {name:?} is root: providers must run as an unprivileged user"
        );
        Ok(Self {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

/// How provider processes are kept from faseng; built once at start.
#[derive(Debug, Clone)]
pub struct Isolation {
    user: Option<ProviderUser>,
    bwrap: Option<PathBuf>,
    hidden: Vec<PathBuf>,
    shared_because: Option<String>,
}

/// What [`Isolation::detect`] needs to know.
#[derive(Debug, Clone, Default)]
pub struct IsolationSettings {
    /// `FASENG_PROVIDER_USER` (used when faseng runs as root; default `nobody`).
    pub provider_user: Option<String>,
    /// faseng's own paths a provider must never see: the work directory, the store, the
    /// app.json, deploy-config and secret files (those that do not exist are skipped).
    pub hidden: Vec<PathBuf>,
}

/// The user providers run as when none is configured.
pub const DEFAULT_PROVIDER_USER: &str = "nobody";

impl Isolation {
    /// Providers share faseng's user and see what it sees: for local mode, which holds no
    /// secrets, and for tests of other parts.
    pub fn shared(why: &str) -> Self {
        Self {
            user: None,
            bwrap: None,
            hidden: Vec::new(),
            shared_because: Some(why.to_owned()),
        }
    }

    /// The strongest isolation this machine allows: the provider user when faseng runs as
    /// root, and a bubblewrap sandbox wherever one can be made (probed by running one).
    pub fn detect(settings: &IsolationSettings) -> anyhow::Result<Self> {
        let user = if nix::unistd::geteuid().is_root() {
            let name = settings
                .provider_user
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| {
                    tracing::warn!(
                        "FASENG_PROVIDER_USER is not set: providers run as {DEFAULT_PROVIDER_USER}; a dedicated user is better (other services' processes may run as {DEFAULT_PROVIDER_USER} too)"
                    );
                    DEFAULT_PROVIDER_USER
                });
            Some(ProviderUser::lookup(name)?)
        } else {
            None
        };
        let bwrap = find_bwrap().and_then(|path| match probe_bwrap(&path, user.as_ref()) {
            Ok(()) => Some(path),
            Err(why) => {
                tracing::warn!(%why, "bubblewrap cannot make a sandbox here");
                None
            }
        });
        let shared_because = match (&user, &bwrap) {
            (None, None) => Some(if find_bwrap().is_some() {
                "bubblewrap cannot create a sandbox on this machine".to_owned()
            } else {
                "bubblewrap (bwrap) is not installed".to_owned()
            }),
            _ => None,
        };
        Ok(Self {
            user,
            bwrap,
            hidden: settings.hidden.clone(),
            shared_because,
        })
    }

    /// One line for the banner and `/healthz`.
    pub fn describe(&self) -> String {
        match (&self.user, &self.bwrap, &self.shared_because) {
            (Some(u), Some(_), _) => format!(
                "providers run as {} (uid {}) in a bubblewrap sandbox",
                u.name, u.uid
            ),
            (Some(u), None, _) => format!("providers run as {} (uid {})", u.name, u.uid),
            (None, Some(_), _) => "providers run in a bubblewrap sandbox".to_owned(),
            (None, None, why) => format!(
                "providers share faseng's user ({})",
                why.as_deref().unwrap_or("no isolation configured")
            ),
        }
    }

    /// True when providers run as faseng's own user, unsandboxed.
    pub fn is_shared(&self) -> bool {
        self.user.is_none() && self.bwrap.is_none()
    }

    /// The user providers run as, when it is not faseng's.
    pub fn provider_user(&self) -> Option<&ProviderUser> {
        self.user.as_ref()
    }

    /// Makes `work` ready for runs: faseng's own 0700, with a `runs/` directory the provider
    /// user can pass through but not list. Fails, naming the directory, when the provider
    /// user could not reach its run directories.
    pub fn prepare_workdir(&self, work: &Path) -> anyhow::Result<()> {
        create_private_dir(work)?;
        let runs = work.join("runs");
        create_private_dir(&runs)?;
        if self.user.is_none() {
            return Ok(());
        }
        // The provider user passes through the work directory to its own run directory;
        // nothing in it can be listed, and the clone cache stays 0700.
        for dir in [work, runs.as_path()] {
            set_mode(dir, 0o711)?;
        }
        let mut ancestor = work.parent();
        while let Some(dir) = ancestor {
            let meta =
                std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
            anyhow::ensure!(
                meta.mode() & 0o001 != 0,
                "the provider user cannot reach FASENG_WORKDIR {}: {} is mode {:o}; give others search permission on it (chmod o+x) or choose another work directory",
                work.display(),
                dir.display(),
                meta.mode() & 0o7777
            );
            ancestor = dir.parent();
        }
        Ok(())
    }

    /// Hands a run directory (and everything in it) to the provider user.
    pub fn hand_over(&self, dir: &Path) -> std::io::Result<()> {
        match &self.user {
            Some(u) => chown_tree(dir, u.uid, u.gid),
            None => Ok(()),
        }
    }

    /// Takes a directory handed over with [`Isolation::hand_over`] back for faseng.
    pub fn take_back(&self, dir: &Path) -> std::io::Result<()> {
        match &self.user {
            Some(_) => chown_tree(
                dir,
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            None => Ok(()),
        }
    }

    /// The command that runs `spec` for a run whose directory is `run_root`, isolated as
    /// configured; `visible` are further paths the command needs (e.g. its SSH directory,
    /// when that is outside the run directory). With `supervise`, the command runs under a
    /// supervisor process (coreutils `timeout`) that stops its whole process group after that
    /// long, with SIGTERM then SIGKILL after [`crate::process::KILL_GRACE`]: the deadline
    /// holds even when faseng itself is stopped or dead.
    pub fn command(
        &self,
        spec: &CommandSpec,
        run_root: &Path,
        visible: &[PathBuf],
        supervise: Option<Duration>,
    ) -> tokio::process::Command {
        let (program, mut args): (OsString, Vec<OsString>) = match &self.bwrap {
            Some(bwrap) => (
                bwrap.clone().into(),
                self.bwrap_args(spec, run_root, visible),
            ),
            None => (spec.program.clone().into(), spec.args.clone()),
        };
        let mut cmd = match (supervise, supervisor()) {
            (Some(limit), Some(timeout)) => {
                let mut cmd = tokio::process::Command::new(timeout);
                cmd.args(supervisor_args(limit));
                args.insert(0, program);
                cmd
            }
            _ => tokio::process::Command::new(program),
        };
        cmd.args(args)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(u) = &self.user {
            cmd.uid(u.uid).gid(u.gid);
        }
        cmd
    }

    fn bwrap_args(
        &self,
        spec: &CommandSpec,
        run_root: &Path,
        visible: &[PathBuf],
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = SANDBOX.map(OsString::from).to_vec();
        let mut hidden: Vec<&PathBuf> = self.hidden.iter().collect();
        // Parents first, so a covered directory never hides a later cover inside it.
        hidden.sort_by_key(|p| p.components().count());
        for path in hidden {
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {
                    args.push("--tmpfs".into());
                    args.push(path.into());
                }
                Ok(_) => {
                    args.push("--ro-bind".into());
                    args.push("/dev/null".into());
                    args.push(path.into());
                }
                Err(_) => {}
            }
        }
        for path in std::iter::once(&run_root.to_path_buf()).chain(visible) {
            args.push("--bind".into());
            args.push(path.into());
            args.push(path.into());
        }
        args.push("--chdir".into());
        args.push(spec.cwd.clone().into());
        args.push("--".into());
        args.push(spec.program.clone().into());
        args.extend(spec.args.iter().cloned());
        args
    }
}

/// The sandbox every provider command gets before its covers and binds: its own PID
/// namespace with its own `/proc` (faseng's processes are not visible), its own IPC, a fresh
/// `/dev`, and the rest of the file system as it is.
const SANDBOX: [&str; 9] = [
    "--unshare-pid",
    "--unshare-ipc",
    "--bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
];

/// coreutils `timeout`, the per-command supervisor, when this machine has it.
fn supervisor() -> Option<&'static Path> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let found = ["/usr/bin/timeout", "/bin/timeout"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file());
            if found.is_none() {
                tracing::warn!(
                    "coreutils timeout is not installed: a provider outlives its deadline when faseng is stopped"
                );
            }
            found
        })
        .as_deref()
}

/// `timeout`'s arguments before the command: stop the group after `limit` (whole seconds,
/// rounded up), SIGKILL after the grace.
fn supervisor_args(limit: Duration) -> Vec<OsString> {
    let secs = limit.as_secs() + u64::from(limit.subsec_nanos() > 0);
    vec![
        format!("--kill-after={}s", crate::process::KILL_GRACE.as_secs()).into(),
        "--signal=TERM".into(),
        "--".into(),
        format!("{}s", secs.max(1)).into(),
    ]
}

fn find_bwrap() -> Option<PathBuf> {
    ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Runs a trivial command in a sandbox (as `user`), as a provider would be run.
fn probe_bwrap(bwrap: &Path, user: Option<&ProviderUser>) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(SANDBOX)
        .args(["--tmpfs", "/tmp", "--", "/bin/sh", "-c", "exit 0"])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(u) = user {
        cmd.uid(u.uid).gid(u.gid);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start bwrap: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read as _;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("bwrap {status}: {}", err.trim()));
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("bwrap did not finish within 10 s".to_owned());
            }
            Err(e) => return Err(format!("waiting for bwrap: {e}")),
        }
    }
}

/// Creates `dir` (and its parents) 0700 when missing.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// `chown -R` without following symlinks (a link in a checkout is changed, not its target).
fn chown_tree(root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(root)?.is_dir() {
        for entry in std::fs::read_dir(root)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> CommandSpec {
        CommandSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "true".into()],
            cwd: dir.to_owned(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            visible: Vec::new(),
        }
    }

    #[test]
    fn the_sandbox_covers_faseng_paths_parents_first_and_mounts_the_run_back() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("state/work");
        let run = work.join("runs/r1");
        std::fs::create_dir_all(&run).unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "t").unwrap();
        let isolation = Isolation {
            user: None,
            bwrap: Some("/usr/bin/bwrap".into()),
            hidden: vec![
                work.clone(),
                dir.path().join("state"),
                secret.clone(),
                dir.path().join("missing"),
            ],
            shared_because: None,
        };
        let args: Vec<String> = isolation
            .bwrap_args(&spec(&run), &run, &[])
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let at = |needle: &[&str]| {
            args.windows(needle.len())
                .position(|w| w == needle)
                .unwrap_or_else(|| panic!("{needle:?} not in {args:?}"))
        };
        let state = dir.path().join("state").display().to_string();
        let work = work.display().to_string();
        let run = run.display().to_string();
        assert!(at(&["--tmpfs", &state]) < at(&["--tmpfs", &work]));
        assert!(at(&["--tmpfs", &work]) < at(&["--bind", &run, &run]));
        at(&["--ro-bind", "/dev/null", &secret.display().to_string()]);
        at(&["--unshare-pid"]);
        at(&["--proc", "/proc"]);
        assert!(!args.iter().any(|a| a.contains("missing")), "{args:?}");
        assert_eq!(
            &args[args.len() - 4..],
            ["--", "/bin/sh", "-c", "true"],
            "the command comes last, as argv"
        );
    }

    #[test]
    fn descriptions_say_who_providers_run_as() {
        assert_eq!(
            Isolation::shared("local mode").describe(),
            "providers share faseng's user (local mode)"
        );
        let user = ProviderUser {
            name: "faseng-run".into(),
            uid: 10002,
            gid: 10002,
        };
        let isolation = Isolation {
            user: Some(user),
            bwrap: None,
            hidden: Vec::new(),
            shared_because: None,
        };
        assert_eq!(
            isolation.describe(),
            "providers run as faseng-run (uid 10002)"
        );
        assert!(!isolation.is_shared());
    }

    #[test]
    fn root_is_never_the_provider_user() {
        let err = ProviderUser::lookup("root").unwrap_err().to_string();
        assert!(err.contains("unprivileged"), "{err}");
        assert!(
            ProviderUser::lookup("no-such-user-here")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert_eq!(ProviderUser::lookup("nobody").unwrap().name, "nobody");
    }

    #[test]
    fn a_work_directory_the_provider_user_cannot_reach_is_refused_at_start() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: a provider user exists only when faseng runs as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let isolation = Isolation {
            user: Some(ProviderUser::lookup("nobody").unwrap()),
            bwrap: None,
            hidden: Vec::new(),
            shared_because: None,
        };
        let work = dir.path().join("state/work");
        let err = isolation.prepare_workdir(&work).unwrap_err().to_string();
        assert!(err.contains("cannot reach FASENG_WORKDIR"), "{err}");
        assert!(err.contains("mode 700"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(
            dir.path().join("state"),
            std::fs::Permissions::from_mode(0o711),
        )
        .unwrap();
        isolation.prepare_workdir(&work).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&work), 0o711);
        assert_eq!(mode(&work.join("runs")), 0o711);
    }

    #[test]
    fn a_tree_is_handed_over_without_following_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: handing a tree to another user needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("checkout/sub")).unwrap();
        std::fs::write(run.join("checkout/sub/f"), "y").unwrap();
        std::os::unix::fs::symlink(&outside, run.join("checkout/link")).unwrap();
        chown_tree(&run, 65534, 65534).unwrap();
        for p in [
            "checkout",
            "checkout/sub",
            "checkout/sub/f",
            "checkout/link",
        ] {
            let m = std::fs::symlink_metadata(run.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{p}");
        }
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
    }
}
