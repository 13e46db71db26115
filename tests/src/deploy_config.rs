//! The shipped `deploy-config/` examples, adapted for a test: copied into a temporary
//! directory with the stage pointed at the test sshd, as a project's own stage file would be.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sshd::Sshd;

/// The shipped deploy-config directory of `app` in this repository.
pub fn shipped(app: &str) -> PathBuf {
    crate::bins::workspace_root()
        .join("deploy-config")
        .join(app)
}

/// Copies a directory tree (files only, modes kept).
pub fn copy_tree(src: &Path, dst: &Path) {
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::create_dir_all(dst).unwrap();
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Writes the shipped modmod-web capistrano config into `into`, with its `edge` stage
/// pointed at `sshd`, `repo_url` and `deploy_to`, keeping `keep` releases. Returns `into`.
pub fn modmod_web_on(
    into: &Path,
    sshd: &Sshd,
    repo_url: &str,
    deploy_to: &Path,
    keep: u32,
) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    copy_tree(&shipped("modmod-web"), into);
    std::fs::write(
        into.join("config/deploy/edge.rb"),
        format!(
            "server {host:?}, port: {port}, user: {user:?}, roles: %w[app web]\n\
             set :repo_url, {repo_url:?}\n\
             set :deploy_to, {deploy_to:?}\n\
             set :keep_releases, {keep}\n",
            host = sshd.host(),
            port = sshd.port(),
            user = sshd.user(),
            deploy_to = deploy_to.display().to_string(),
        ),
    )
    .unwrap();
    into.to_path_buf()
}

/// A bare clone of the repository at `source` in `dest`; returns its `file://` URL (what
/// capistrano's `repo_url` points at: the server side mirrors from it).
pub fn bare_clone(source: &Path, dest: &Path) -> String {
    let out = Command::new("git")
        .args(["clone", "--quiet", "--bare"])
        .arg(source)
        .arg(dest)
        .output()
        .expect("running git clone --bare");
    assert!(
        out.status.success(),
        "git clone --bare: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("file://{}", dest.display())
}
