//! SSH material for one fabric or capistrano run: a private per-run directory (0700) under
//! `<state_dir>/ssh/` holding a copy of the deploy key (0600; from `DEPLOY_SSH_KEY` or
//! `DEPLOY_SSH_KEY_FILE`, which the provider itself never sees), the known hosts and a
//! generated ssh config that names both, with `StrictHostKeyChecking` set explicitly. The
//! directory belongs to the user the provider runs as and is visible only to the deploy
//! command (not to before / after stages, and covered in a sandbox otherwise); it is removed
//! when the run ends (and, for directories left by a worker that died, by the next run).
//! With accept-new, host keys the run learnt are merged back into faseng's own list.
//!
//! The tools read it without the project naming anything: `fab -S <config> -i <key>`;
//! Capistrano's net-ssh reads `~/.ssh/config`, so `cap` runs with `HOME` set to the run
//! directory; OpenSSH gets `GIT_SSH_COMMAND` / `DEPLOY_SSH_CONFIG` (`ssh -F`).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::settings::{ProviderSettings, SshKeySource};
use crate::process::base_env;
use crate::runlog::RunLog;
use crate::sandbox::Isolation;

/// One run's SSH directory; removed on drop.
#[derive(Debug)]
pub struct SshRun {
    dir: Option<crate::rundir::OwnedDir>,
    home: PathBuf,
    config_file: PathBuf,
    key_file: Option<PathBuf>,
    known_hosts_file: PathBuf,
    strict: bool,
    /// With accept-new: faseng's shared known_hosts, to merge what the run learnt into.
    learn_into: Option<PathBuf>,
}

/// Characters allowed in paths written into the generated ssh config (no quoting needed by
/// OpenSSH, paramiko or net-ssh, no `%` tokens).
fn config_safe(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@".contains(c))
    })
}

/// Normalizes key text from an environment variable: `\n` written as two characters (a
/// common way to put a key in one line) becomes a newline, and the text ends with one
/// (OpenSSH's parser needs it).
pub fn normalize_key_text(text: &str) -> String {
    let t = text.trim();
    let t = if !t.contains('\n') && t.contains("\\n") {
        t.replace("\\n", "\n")
    } else {
        t.replace("\r\n", "\n")
    };
    format!("{}\n", t.trim())
}

/// Checks that key text looks like one PEM / OpenSSH private key block.
pub fn check_key_text(text: &str) -> Result<(), String> {
    let t = text.trim();
    let begin = t.starts_with("-----BEGIN ")
        && t.lines()
            .next()
            .is_some_and(|l| l.ends_with("PRIVATE KEY-----"));
    let end = t
        .lines()
        .last()
        .is_some_and(|l| l.starts_with("-----END ") && l.ends_with("PRIVATE KEY-----"));
    if begin && end && t.lines().count() > 2 {
        Ok(())
    } else {
        Err("DEPLOY_SSH_KEY does not hold a private key (expected one \"-----BEGIN … PRIVATE KEY-----\" block)".to_owned())
    }
}

/// Directories `run-<pid>-*` no live process holds were left by a worker that died mid-run:
/// they may hold key text, so they go (see [`crate::rundir`]).
fn remove_stale_runs(root: &Path) {
    crate::rundir::prune(root);
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// `SHA256:… (ED25519)` of a private key, via `ssh-keygen -l`; `Ok(None)` when ssh-keygen
/// is not installed, `Err` when it cannot read the key.
async fn fingerprint(key: &Path) -> Result<Option<String>, String> {
    let mut cmd = tokio::process::Command::new("ssh-keygen");
    cmd.arg("-l")
        .arg("-f")
        .arg(key)
        .env_clear()
        .envs(base_env())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
        Err(_) => return Err("ssh-keygen did not answer within 10 s".to_owned()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Ok(Err(e)) => return Err(format!("ssh-keygen: {e}")),
        Ok(Ok(out)) => out,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    if out.status.success() && words.len() >= 2 {
        Ok(Some(format!(
            "{} {}",
            words[1],
            words.last().unwrap_or(&"")
        )))
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let why = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("unreadable key")
            .trim()
            .to_owned();
        Err(why)
    }
}

impl SshRun {
    /// Creates the run directory and writes key, known hosts and config, for the user
    /// providers run as; logs which key and which host-key policy are used (never the key).
    /// `Err` is a reason the run cannot start.
    pub async fn create(
        settings: &ProviderSettings,
        isolation: &Isolation,
        log: &RunLog,
    ) -> Result<Self, String> {
        let root = settings.state_dir.join("ssh");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        if isolation.provider_user().is_some() {
            // The provider user passes through to its own run directory; it cannot list the
            // others or read faseng's known_hosts.
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| format!("cannot set the mode of {}: {e}", root.display()))?;
        }
        let root = root
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", root.display()))?;
        if !config_safe(&root) {
            return Err(format!(
                "the work directory {} has characters an ssh config cannot hold; use a plain path for FASENG_WORKDIR",
                root.display()
            ));
        }
        remove_stale_runs(&root);
        let dir = crate::rundir::OwnedDir::create(&root, |dir| {
            std::fs::DirBuilder::new().mode(0o700).create(dir)
        })
        .map_err(|e| format!("cannot create a private SSH directory: {e}"))?;
        let home = dir.path().to_owned();
        let dot_ssh = home.join(".ssh");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dot_ssh)
            .map_err(|e| format!("cannot create {}: {e}", dot_ssh.display()))?;

        let key_file = match &settings.config.ssh_key {
            None => {
                log.header(
                    "ssh",
                    "no DEPLOY_SSH_KEY or DEPLOY_SSH_KEY_FILE: ssh uses its default keys",
                );
                None
            }
            Some(SshKeySource::Text(text)) => {
                check_key_text(text.expose())?;
                let path = dot_ssh.join("id_deploy");
                write_private(&path, &normalize_key_text(text.expose()))
                    .map_err(|e| format!("cannot write the deploy key: {e}"))?;
                match fingerprint(&path).await {
                    Ok(Some(fp)) => {
                        log.header("ssh", &format!("deploy key {fp} from DEPLOY_SSH_KEY"))
                    }
                    Ok(None) => log.header("ssh", "deploy key from DEPLOY_SSH_KEY"),
                    Err(why) => {
                        return Err(format!("DEPLOY_SSH_KEY is not a usable private key: {why}"));
                    }
                }
                Some(path)
            }
            Some(SshKeySource::File(path)) => {
                // Copied into the run directory: the provider user may not read the
                // operator's file, and a sandbox covers it.
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("DEPLOY_SSH_KEY_FILE {} cannot be read: {e}", path.display())
                })?;
                let copy = dot_ssh.join("id_deploy");
                write_private(&copy, &normalize_key_text(&text))
                    .map_err(|e| format!("cannot write the deploy key: {e}"))?;
                match fingerprint(&copy).await {
                    Ok(Some(fp)) => log.header(
                        "ssh",
                        &format!(
                            "deploy key {fp} from DEPLOY_SSH_KEY_FILE {}",
                            path.display()
                        ),
                    ),
                    Ok(None) => log.header(
                        "ssh",
                        &format!("deploy key from DEPLOY_SSH_KEY_FILE {}", path.display()),
                    ),
                    Err(why) => {
                        return Err(format!(
                            "DEPLOY_SSH_KEY_FILE {} is not a usable private key: {why}",
                            path.display()
                        ));
                    }
                }
                Some(copy)
            }
        };

        let mut learn_into = None;
        let (known_hosts_file, strict) = match &settings.config.ssh_known_hosts {
            Some(lines) => {
                let path = dot_ssh.join("known_hosts");
                write_private(&path, &format!("{}\n", lines.trim()))
                    .map_err(|e| format!("cannot write the known hosts: {e}"))?;
                let n = lines
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .count();
                log.header(
                    "ssh",
                    &format!("host keys from DEPLOY_SSH_KNOWN_HOSTS ({n} line(s)); unknown or changed keys are refused"),
                );
                (path, true)
            }
            None => {
                let shared = root.join("known_hosts");
                let known = std::fs::read_to_string(&shared).unwrap_or_default();
                let path = dot_ssh.join("known_hosts");
                write_private(&path, &known)
                    .map_err(|e| format!("cannot write the known hosts: {e}"))?;
                log.header(
                    "ssh",
                    &format!(
                        "DEPLOY_SSH_KNOWN_HOSTS is not set: accept-new (new host keys are accepted and remembered in {}; a changed key is refused)",
                        shared.display()
                    ),
                );
                learn_into = Some(shared);
                (path, false)
            }
        };

        let config_file = dot_ssh.join("config");
        let mut config =
            String::from("# Generated by faseng for one run; removed when it ends.\nHost *\n");
        if let Some(k) = &key_file {
            config.push_str(&format!(
                "  IdentityFile {}\n  IdentitiesOnly yes\n",
                k.display()
            ));
        }
        config.push_str(&format!(
            "  UserKnownHostsFile {}\n  StrictHostKeyChecking {}\n  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n  BatchMode yes\n  ConnectTimeout 30\n",
            known_hosts_file.display(),
            if strict { "yes" } else { "accept-new" }
        ));
        write_private(&config_file, &config)
            .map_err(|e| format!("cannot write the ssh config: {e}"))?;
        Ok(Self {
            dir: Some(dir),
            home,
            config_file,
            key_file,
            known_hosts_file,
            strict,
            learn_into,
        })
    }

    /// The directory the deploy command must see (it lives under faseng's work directory).
    pub fn dir(&self) -> &Path {
        &self.home
    }

    /// The run directory: used as `HOME` for tools that read `~/.ssh/config` (net-ssh).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The generated ssh config.
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// The deploy key, if one is configured.
    pub fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }

    /// The environment every SSH-using command of the run gets: `DEPLOY_SSH_CONFIG`,
    /// `DEPLOY_SSH_KEY_FILE`, `DEPLOY_SSH_KNOWN_HOSTS_FILE`,
    /// `DEPLOY_SSH_STRICT_HOST_KEY_CHECKING` (`yes` / `accept-new`) and `GIT_SSH_COMMAND`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "DEPLOY_SSH_CONFIG".to_owned(),
                self.config_file.display().to_string(),
            ),
            (
                "DEPLOY_SSH_KNOWN_HOSTS_FILE".to_owned(),
                self.known_hosts_file.display().to_string(),
            ),
            (
                "DEPLOY_SSH_STRICT_HOST_KEY_CHECKING".to_owned(),
                if self.strict { "yes" } else { "accept-new" }.to_owned(),
            ),
            // The path is ours and holds no character a shell would interpret (config_safe).
            (
                "GIT_SSH_COMMAND".to_owned(),
                format!("ssh -F {}", self.config_file.display()),
            ),
        ];
        if let Some(k) = &self.key_file {
            env.push(("DEPLOY_SSH_KEY_FILE".to_owned(), k.display().to_string()));
        }
        env
    }

    /// Removes the directory now (the key text with it), first merging host keys the run
    /// learnt (accept-new) into faseng's own list.
    pub fn remove(&mut self) {
        if let Some(d) = self.dir.take() {
            if let Some(shared) = &self.learn_into
                && let Err(e) = learn_hosts(&self.known_hosts_file, shared)
            {
                tracing::warn!(error = %e, "could not remember the host keys this run accepted");
            }
            drop(d);
        }
    }
}

impl Drop for SshRun {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Appends to `shared` the lines of `learnt` it does not have yet.
fn learn_hosts(learnt: &Path, shared: &Path) -> std::io::Result<()> {
    let new = std::fs::read_to_string(learnt)?;
    let known = std::fs::read_to_string(shared).unwrap_or_default();
    let mut have: std::collections::HashSet<&str> = known.lines().collect();
    let mut add = String::new();
    for line in new.lines().map(str::trim) {
        if !line.is_empty() && have.insert(line) {
            add.push_str(line);
            add.push('\n');
        }
    }
    if add.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(shared)?;
    f.write_all(add.as_bytes())
}

/// What an SSH failure in a tool's output means, for the log and the status: `None` when the
/// lines show none.
pub fn explain_failure(lines: &[String]) -> Option<String> {
    let has = |needles: &[&str]| {
        lines.iter().rev().find(|l| {
            let l = l.to_ascii_lowercase();
            needles.iter().any(|n| l.contains(n))
        })
    };
    if has(&[
        "authentication failed",
        "authenticationfailed",
        "permission denied (publickey",
    ])
    .is_some()
    {
        return Some(
            "ssh authentication failed: the server did not accept the deploy key (DEPLOY_SSH_KEY / DEPLOY_SSH_KEY_FILE)".to_owned(),
        );
    }
    if has(&[
        "hostkeymismatch",
        "hostkeyunknown",
        "host key verification failed",
        "badhostkeyexception",
        "host key for server",
        "not found in known_hosts",
        "does not match for \"",
        "is unknown for \"",
    ])
    .is_some()
    {
        return Some(
            "ssh host key verification failed: the server's key is not the one in DEPLOY_SSH_KNOWN_HOSTS".to_owned(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_is_normalized_and_checked() {
        let one_line =
            "-----BEGIN OPENSSH PRIVATE KEY-----\\nAAAA\\n-----END OPENSSH PRIVATE KEY-----";
        let t = normalize_key_text(one_line);
        assert_eq!(
            t,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
        );
        assert!(check_key_text(&t).is_ok());
        assert!(
            check_key_text("ssh-ed25519 AAAA user@host")
                .unwrap_err()
                .contains("does not hold a private key")
        );
        assert!(
            check_key_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
        );
    }

    #[test]
    fn paths_with_shell_or_config_characters_are_refused() {
        assert!(config_safe(Path::new("/var/lib/faseng/work/ssh/run-1-abc")));
        assert!(!config_safe(Path::new("/tmp/with space")));
        assert!(!config_safe(Path::new("/tmp/%d")));
        assert!(!config_safe(Path::new("/tmp/a'b")));
    }

    #[test]
    fn failures_are_explained() {
        let auth = vec![
            "paramiko.ssh_exception.AuthenticationException: Authentication failed.".to_owned(),
        ];
        assert!(
            explain_failure(&auth)
                .unwrap()
                .contains("authentication failed")
        );
        let net_ssh = vec![
            "Net::SSH::AuthenticationFailed: Authentication failed for user root@127.0.0.1"
                .to_owned(),
        ];
        assert!(
            explain_failure(&net_ssh)
                .unwrap()
                .contains("authentication failed")
        );
        let mismatch = vec!["Net::SSH::HostKeyMismatch: fingerprint SHA256:x does not match for \"[127.0.0.1]:2222\"".to_owned()];
        assert!(explain_failure(&mismatch).unwrap().contains("host key"));
        assert_eq!(
            explain_failure(&["mkdir: cannot create directory".to_owned()]),
            None
        );
    }

    #[test]
    fn stale_run_directories_of_dead_processes_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let mine =
            crate::rundir::OwnedDir::create(root.path(), |d| std::fs::create_dir(d)).unwrap();
        let dead = root.path().join("run-999999999-abc");
        let other = root.path().join("known_hosts");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(&other, "").unwrap();
        remove_stale_runs(root.path());
        assert!(mine.path().exists() && other.exists());
        assert!(!dead.exists());
        let path = mine.path().to_owned();
        drop(mine);
        assert!(!path.exists(), "removed when the run is done");
    }
}
