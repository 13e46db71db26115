//! Retrying a store call through a short outage.

use std::time::Duration;

/// Runs a store call until it succeeds, with backoff (100 ms doubling up to 5 s), for up to
/// `retry_for`; the last error when it never did (logged, as are the first failure and a
/// recovery). `what` completes "could not …" in the logs and the error.
pub async fn retry<T, F, Fut>(what: &str, retry_for: Duration, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut delay = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        match call().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(failures, "could {what} after the store came back");
                }
                return Ok(value);
            }
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %format!("{e:#}"), "could not {what}; trying again");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not {what}; giving up after {retry_for:?}");
                return Err(e.context(format!("could not {what}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_is_retried_until_it_succeeds_or_time_runs_out() {
        let mut calls = 0;
        let value = retry("read", Duration::from_secs(60), || {
            calls += 1;
            let n = calls;
            async move {
                anyhow::ensure!(n >= 2, "down");
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 2);

        let mut calls = 0;
        let err = retry("write", Duration::from_millis(150), || {
            calls += 1;
            async { anyhow::bail!("still down") as anyhow::Result<()> }
        })
        .await
        .unwrap_err();
        assert_eq!(format!("{err:#}"), "could not write: still down");
        assert_eq!(calls, 2, "tried again once, then gave up at the deadline");
    }
}
