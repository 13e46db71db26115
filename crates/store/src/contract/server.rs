//! A real redis-server for tests.

use std::time::Duration;

/// A throwaway redis-server on a free port (its data directory lives as long as it
/// does); `None` (with the reason printed) when the binary is not installed.
pub struct RedisServer(std::process::Child, u16, tempfile::TempDir);

impl RedisServer {
    /// Starts one.
    pub fn start() -> Option<Self> {
        if !std::path::Path::new("/usr/bin/redis-server").exists() {
            eprintln!("SKIPPED: /usr/bin/redis-server is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("/usr/bin/redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self(child, port, dir))
    }

    /// Its URL (`redis://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.1)
    }

    /// Where it keeps its files.
    pub fn dir(&self) -> &std::path::Path {
        self.2.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
