//! A real local git repository for a test: commits, branches and an executable
//! `script/deploy`, cloneable through `file://`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A repository in a temporary directory (removed on drop).
pub struct GitRepo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl GitRepo {
    /// An empty repository on branch `main`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        std::fs::create_dir_all(&path).unwrap();
        let repo = Self { _dir: dir, path };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.email", "test@example.com"]);
        repo.git(&["config", "user.name", "Test"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    /// A repository whose first commit on `main` has `script/deploy` with this body
    /// (a `#!/bin/sh` line is prepended); returns it and the commit sha.
    pub fn with_deploy_script(body: &str) -> (Self, String) {
        let repo = Self::new();
        repo.write_executable("script/deploy", &format!("#!/bin/sh\n{body}\n"));
        let sha = repo.commit("add deploy script");
        (repo, sha)
    }

    /// Runs git in the repository, returning stdout; panics on failure.
    pub fn git(&self, args: &[&str]) -> String {
        git_at(&self.path, args)
    }

    /// The working directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `file://` URL to clone from.
    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// Writes a file (creating directories).
    pub fn write(&self, relative: &str, content: &str) {
        let p = self.path.join(relative);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }

    /// Writes an executable file.
    pub fn write_executable(&self, relative: &str, content: &str) {
        self.write(relative, content);
        std::fs::set_permissions(
            self.path.join(relative),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    /// Commits everything; returns the new sha.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    /// The sha of HEAD.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Creates (or moves) a branch at HEAD and checks it out.
    pub fn branch(&self, name: &str) {
        self.git(&["checkout", "--quiet", "-B", name]);
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs git in `dir` (any repository, or where one is made), returning stdout; panics on
/// failure.
pub fn git_at(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
