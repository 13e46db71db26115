//! The workspace's binaries, for scenarios that run them as real processes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The path of a workspace binary (`chima`, `faseng`), built in the same profile as the test
/// (first use builds it; cargo makes that a no-op when it is up to date).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps/, binaries (bench) in target/<profile>/.
    let mut profile_dir = exe.parent().expect("target/<profile>").to_path_buf();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    let path = profile_dir.join(name);
    if !built.iter().any(|b| b == name) {
        let release = profile_dir.file_name().is_some_and(|p| p == "release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", name, "--bin", name]);
        if name == "faseng" {
            // The crash points of the fault-injection tests (inert unless FAILPOINTS names one).
            cargo.args(["--features", "faseng/failpoints"]);
        }
        if release {
            cargo.arg("--release");
        }
        // The variables cargo sets for this test process (CARGO_MANIFEST_DIR, CARGO_PKG_*, …)
        // are inputs of build scripts that declare them (ring's): passed on, they made this
        // build and the next `cargo test` rebuild ring and everything above it, each time.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_")
                && !matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
            {
                cargo.env_remove(key.as_ref());
            }
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_owned());
    }
    assert!(path.exists(), "{} does not exist", path.display());
    path
}
