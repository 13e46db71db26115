//! faseng under load: a thousand slow clients, a 300 MB log line. Each test here takes
//! [`alone`], so they never run beside each other in this binary (they ran in binaries of
//! their own before, and measure time and memory).

mod http_limits;
mod huge_output;

/// Held for the whole of a test that must not share the machine with the other tests here.
async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}
