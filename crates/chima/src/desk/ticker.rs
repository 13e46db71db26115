//! The desk's clockwork on a timer, for `chima serve`: every `every`, one step
//! ([`Bot::desk_tick`]), and about once a second the dashboard's web actions
//! ([`Bot::web_actions_step`]), by whichever chima holds the store's `chima-desk` duty, so
//! several chimas on one store remind once, hand off once and carry out each action once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::chat::Poster;
use crate::handlers::Bot;

/// The duty one chima per store holds to run the clockwork.
pub const DUTY: &str = "chima-desk";

/// Runs the clockwork every `every` (0: the desk's steps are off; web actions still run) until
/// `stop` resolves. `holder` names this process.
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
    let mut desk_timer = tokio::time::interval(every.max(Duration::from_secs(1)));
    desk_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut web_timer = tokio::time::interval(crate::web_actions::EVERY);
    web_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease = every.max(crate::web_actions::EVERY).saturating_mul(3);
    tokio::pin!(stop);
    loop {
        let desk_step = tokio::select! {
            _ = &mut stop => break,
            _ = desk_timer.tick(), if !every.is_zero() => true,
            _ = web_timer.tick() => false,
        };
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
        if !desk_step {
            match bot.web_actions_step(&holder).await {
                Ok(report) if !report.done.is_empty() => {
                    tracing::info!(actions = ?report.done, "web actions carried out");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "web actions could not be read")
                }
            }
            continue;
        }
        match bot.desk_tick(poster.as_ref()).await {
            Ok(report) if report != Default::default() => tracing::info!(
                expired = report.expired,
                reminded = report.reminded,
                handed_off = report.handed_off,
                line_expired = report.line_expired,
                rolled_back = report.rolled_back,
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
