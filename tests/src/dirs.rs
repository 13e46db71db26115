//! Scenario directories a provider can use. When the tests run as root (as CI does), faseng
//! runs providers as an unprivileged user: that user must be able to pass through the
//! scenario's directory to its run directory, and to write the scratch files a test script
//! leaves as evidence.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// A temporary directory others may pass through (0711) but not list.
pub fn scenario_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the scenario directory");
    dir
}

/// Creates `path` as a directory every user may write (a test script's evidence drop).
pub fn open_scratch(path: &Path) {
    std::fs::create_dir_all(path).expect("create the scratch directory");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .expect("chmod the scratch directory");
}

/// A shell line that starts a background process holding an exclusive `flock` on
/// `$SCRATCH/<name>.lock` (and touching `<name>.held` once it has it) for 300 s: how a test
/// script leaves a process behind whose end the test can see from outside any PID namespace
/// the script runs in.
pub fn lingering_child(name: &str) -> String {
    format!("(flock -x 9; touch $SCRATCH/{name}.held; sleep 300) 9> $SCRATCH/{name}.lock &")
}

/// Waits until nothing holds the lock of [`lingering_child`] `name` in `scratch` (the
/// process holding it is gone); panics after `timeout`.
pub async fn wait_released(scratch: &Path, name: &str, timeout: std::time::Duration) {
    use nix::fcntl::{Flock, FlockArg};
    let path = scratch.join(format!("{name}.lock"));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let file = std::fs::File::open(&path).expect("the lock file exists");
        if Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}'s process still holds its lock after {timeout:?}"
        );
        // Polls: a lock held by another process has no event to wait on.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `n` random bytes as hex (for secrets and markers a test must recognise).
pub fn random_hex(n: usize) -> String {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
