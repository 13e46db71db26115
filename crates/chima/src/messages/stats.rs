//! What `stats` says: per environment, the store's figures for the period (printed by
//! [`deploy_store::figures`], as the dashboard prints them) and their change against the
//! period before.

use deploy_core::chat::{Message, Tone};
use deploy_core::{AppName, EnvName, Span};
use deploy_store::Figures;

use crate::chat::Reply;

/// One environment's figures, with the change against the previous period after each.
fn row(m: Message, environment: &str, f: &Figures) -> Message {
    let change = |name: &str| {
        f.change
            .iter()
            .find(|(n, _)| n == name)
            .map_or("–", |(_, c)| c.as_str())
            .to_owned()
    };
    let deploys = if f.deploys == "1" {
        "deploy"
    } else {
        "deploys"
    };
    m.text("\n• ")
        .quoted(environment)
        .text(format!(
            " — {} {deploys} ({}), success rate {} ({}), median {} ({}), p90 {} ({}), {} per day ({}), change-failure rate {} ({}), time to restore {} ({})",
            f.deploys,
            change("deploys"),
            f.success_rate,
            change("success rate"),
            f.median,
            change("median"),
            f.p90,
            change("p90"),
            f.per_day,
            change("per day"),
            f.change_failure_rate,
            change("change failure rate"),
            f.time_to_restore,
            change("time to restore"),
        ))
}

/// The figures of every environment that had deploys in the period.
pub fn report(app: &AppName, period: Span, rows: &[(String, Figures)]) -> Reply {
    let mut m = Message::new(Tone::Info)
        .text("Deliveries of ")
        .quoted(app.as_str())
        .text(format!(
            " over the last {period} (in brackets: the change against the {period} before):"
        ));
    for (environment, figures) in rows {
        m = row(m, environment, figures);
    }
    Reply::new(m)
}

/// No deploy in the period.
pub fn no_runs(app: &AppName, env: Option<&EnvName>, period: Span) -> Reply {
    let m = Message::new(Tone::Info)
        .text("No deploys of ")
        .quoted(app.as_str());
    let m = match env {
        Some(env) => m.text(" to ").quoted(env.as_str()),
        None => m,
    };
    Reply::new(m.text(format!(" in the last {period}, so there are no figures.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            deploys: "12".into(),
            success_rate: "92%".into(),
            median: "1m 12s".into(),
            p90: "2m 5s".into(),
            per_day: "0.4".into(),
            change_failure_rate: "8%".into(),
            time_to_restore: "12m 3s".into(),
            change: deploy_store::stats::FIGURE_NAMES
                .iter()
                .zip(["+20%", "+5 pts", "\u{2212}3%", "new", "+20%", "±0 pts", "–"])
                .map(|(n, c)| ((*n).to_owned(), c.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn the_report_lists_each_environment_with_its_changes() {
        let app = AppName::parse("demo").unwrap();
        let period: Span = "30d".parse().unwrap();
        assert_eq!(
            report(&app, period, &[("staging".into(), figures())]).text(),
            "Deliveries of demo over the last 30d (in brackets: the change against the 30d before):\n• staging — 12 deploys (+20%), success rate 92% (+5 pts), median 1m 12s (\u{2212}3%), p90 2m 5s (new), 0.4 per day (+20%), change-failure rate 8% (±0 pts), time to restore 12m 3s (–)"
        );
        let one = Figures {
            deploys: "1".into(),
            ..figures()
        };
        assert!(
            report(&app, period, &[("<!here>".into(), one)])
                .text()
                .contains("• <!here> — 1 deploy (")
        );
    }

    #[test]
    fn no_runs_says_so() {
        let app = AppName::parse("demo").unwrap();
        let period: Span = "7d".parse().unwrap();
        assert_eq!(
            no_runs(&app, None, period).text(),
            "No deploys of demo in the last 7d, so there are no figures."
        );
        assert_eq!(
            no_runs(&app, Some(&EnvName::production()), period).text(),
            "No deploys of demo to production in the last 7d, so there are no figures."
        );
    }
}
