//! `stats <app> [in <env>] [for <period>]`: delivery statistics per environment, computed in
//! the store shared with faseng (the dashboard shows the same figures).

use deploy_store::{EnvStats, StatsQuery, figures};

use crate::chat::Reply;
use crate::grammar::StatsCommand;
use crate::messages::{desk as say_desk, stats as say};

use super::Bot;

impl Bot {
    /// The answer to a stats command: per environment with deploys in the period (up to the
    /// desk clock's now), the figures and their change against the period before.
    pub async fn stats(&self, command: &StatsCommand) -> Reply {
        let app = match self.app(&command.app) {
            Ok(app) => app,
            Err(reply) => return reply,
        };
        if let Some(env) = &command.env
            && !app.has_environment(env)
        {
            return crate::messages::unknown_environment(app, env);
        }
        let Some(desk) = self.desk() else {
            return say_desk::no_store();
        };
        let until = desk.now();
        let query = StatsQuery {
            app: app.name.to_string(),
            environment: command.env.as_ref().map(ToString::to_string),
            since: until - command.period.as_chrono(),
            until,
        };
        let read = async {
            let current = desk.store().env_stats(&query).await?;
            let previous = desk.store().env_stats(&query.previous()).await?;
            anyhow::Ok((current, previous))
        };
        let (current, previous): (Vec<EnvStats>, Vec<EnvStats>) = match read.await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the statistics");
                return say_desk::store_failed(&format!("{e:#}"));
            }
        };
        if current.is_empty() {
            return say::no_runs(&app.name, command.env.as_ref(), command.period);
        }
        let rows: Vec<_> = current
            .iter()
            .map(|now| {
                let before = previous.iter().find(|p| p.environment == now.environment);
                (now.environment.clone(), figures(now, before, &query))
            })
            .collect();
        say::report(&app.name, command.period, &rows)
    }
}
