//! Loopback plumbing shared by the harnesses: free ports and waiting for a spawned server.

use std::time::Duration;

/// A port on `host` that nothing listens on right now.
pub fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `{url}/healthz` answers 2xx. Panics when `child` exits first or `timeout`
/// passes, with `context()` (e.g. the server's log) in the message.
pub async fn wait_healthy(
    http: &reqwest::Client,
    url: &str,
    child: &mut tokio::process::Child,
    timeout: Duration,
    context: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{url} exited before it was healthy: {status}\n{}",
                context()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never became healthy\n{}",
            context()
        );
        // Polls: a starting process has no event to wait on.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The body of a GET of `url` (whatever its status).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}
