//! The desk's clockwork on a timer, for `chima serve`: every `every`, one step
//! ([`Bot::desk_tick`]) by whichever chima holds the store's `chima-desk` duty, so several
//! chimas on one store remind once and hand off once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::chat::Poster;
use crate::handlers::Bot;

/// The duty one chima per store holds to run the clockwork.
pub const DUTY: &str = "chima-desk";

/// Runs the clockwork every `every` until `stop` resolves. `holder` names this process.
pub async fn run(
    bot: Arc<Bot>,
    poster: Arc<dyn Poster>,
    every: Duration,
    holder: String,
    stop: impl Future<Output = ()>,
) {
    let Some(desk) = bot.desk() else {
        return;
    };
    let mut timer = tokio::time::interval(every.max(Duration::from_secs(1)));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = timer.tick() => {}
        }
        let lease = every.saturating_mul(3);
        match desk
            .store()
            .acquire_duty(DUTY, &holder, desk.now(), lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not take the desk duty");
                continue;
            }
        }
        match bot.desk_tick(poster.as_ref()).await {
            Ok(report) if report != Default::default() => tracing::info!(
                expired = report.expired,
                reminded = report.reminded,
                handed_off = report.handed_off,
                line_expired = report.line_expired,
                "release desk"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "the release desk's tick failed"),
        }
    }
    if let Err(e) = desk.store().release_duty(DUTY, &holder).await {
        tracing::debug!(error = %format!("{e:#}"), "could not release the desk duty");
    }
}
