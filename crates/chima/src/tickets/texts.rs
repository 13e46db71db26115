//! What chima writes on tickets and says about them.

use super::{MAX_TICKETS, Outcome, Release, TicketAction, TicketReport};
use crate::forge::ForgeError;

/// `text` with the characters that GitHub markdown or Jira markup act on escaped, so a name
/// never becomes a mention, a link or formatting.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\`*{}[]()#!|<>@~".contains(c) {
            out.push('\\');
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// The comment a released ticket gets: `released to live in deployment #42 by alice`.
pub fn released(release: &Release) -> String {
    format!(
        "released to {} in deployment #{} by {}",
        escape(&release.environment),
        release.deployment_id,
        escape(&release.by)
    )
}

/// One action, e.g. `label #12 released:live`.
pub fn action(action: &TicketAction) -> String {
    match action {
        TicketAction::IssueComment { issue, .. } => format!("comment on #{issue}"),
        TicketAction::IssueLabel { issue, label } => format!("label #{issue} {label}"),
        TicketAction::JiraTransition { key, transition } => {
            format!("move {key} to {transition}")
        }
        TicketAction::JiraComment { key, .. } => format!("comment on {key}"),
    }
}

pub(crate) fn needs_github() -> String {
    "Finding tickets needs GitHub: local mode has no pull requests.".to_owned()
}

pub(crate) fn lookup_failed(err: &ForgeError) -> String {
    format!("could not read the released pull requests ({err})")
}

pub(crate) fn no_jira() -> String {
    "Jira is not set up: set JIRA_URL, JIRA_USER and JIRA_TOKEN".to_owned()
}

/// What an outcome of `action` says after the ticket's name.
fn done(action: &TicketAction, outcome: &Outcome) -> String {
    match (action, outcome) {
        (TicketAction::IssueComment { .. } | TicketAction::JiraComment { .. }, Outcome::Done) => {
            "commented".to_owned()
        }
        (TicketAction::IssueLabel { label, .. }, Outcome::Done) => format!("labelled {label}"),
        (TicketAction::JiraTransition { transition, .. }, Outcome::Done) => {
            format!("moved to {transition}")
        }
        (TicketAction::JiraTransition { transition, .. }, Outcome::Already) => {
            format!("already {transition}")
        }
        (_, Outcome::Already) => "nothing to do".to_owned(),
        (action, Outcome::Failed(f)) => {
            let what = match action {
                TicketAction::IssueComment { .. } | TicketAction::JiraComment { .. } => {
                    "comment".to_owned()
                }
                TicketAction::IssueLabel { label, .. } => format!("label {label}"),
                TicketAction::JiraTransition { transition, .. } => {
                    format!("move to {transition}")
                }
            };
            let later = if f.temporary { "; will retry" } else { "" };
            format!("could not {what} ({}{later})", f.reason)
        }
    }
}

/// The report, one line per ticket in the order they were updated.
pub fn report_lines(report: &TicketReport) -> Vec<String> {
    if let Some(f) = &report.lookup {
        let later = if f.temporary { "; will retry" } else { "" };
        return vec![format!("Tickets not updated: {}{later}", f.reason)];
    }
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for r in &report.results {
        let ticket = r.action.ticket();
        let said = done(&r.action, &r.outcome);
        match lines.iter_mut().find(|(t, _)| *t == ticket) {
            Some((_, parts)) => parts.push(said),
            None => lines.push((ticket, vec![said])),
        }
    }
    let mut out: Vec<String> = lines
        .into_iter()
        .map(|(ticket, parts)| format!("{ticket}: {}", parts.join(", ")))
        .collect();
    if report.left_out > 0 {
        out.push(format!(
            "{} more left alone (at most {MAX_TICKETS} GitHub issues and {MAX_TICKETS} Jira issues per release)",
            report.left_out
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{ActionResult, Failure};
    use super::*;

    #[test]
    fn the_released_comment_names_where_which_deployment_and_who() {
        let release = Release {
            sha: "a".repeat(40),
            environment: "live".to_owned(),
            deployment_id: 42,
            by: "alice".to_owned(),
        };
        assert_eq!(
            released(&release),
            "released to live in deployment #42 by alice"
        );
        let sneaky = Release {
            by: "@org/everyone [x](http://evil)".to_owned(),
            ..release
        };
        assert_eq!(
            released(&sneaky),
            "released to live in deployment #42 by \\@org/everyone \\[x\\]\\(http://evil\\)"
        );
    }

    #[test]
    fn report_lines_group_by_ticket() {
        let failed = |reason: &str, temporary| {
            Outcome::Failed(Failure {
                reason: reason.to_owned(),
                temporary,
            })
        };
        let r = |action, outcome| ActionResult { action, outcome };
        let report = TicketReport {
            lookup: None,
            results: vec![
                r(
                    TicketAction::IssueComment {
                        issue: 12,
                        body: "b".into(),
                    },
                    Outcome::Done,
                ),
                r(
                    TicketAction::IssueLabel {
                        issue: 12,
                        label: "released:live".into(),
                    },
                    failed("GitHub answered 500: boom", true),
                ),
                r(
                    TicketAction::JiraTransition {
                        key: "PROJ-7".into(),
                        transition: "Released".into(),
                    },
                    Outcome::Already,
                ),
                r(
                    TicketAction::JiraComment {
                        key: "PROJ-7".into(),
                        body: "b".into(),
                    },
                    failed("Jira answered 403: no", false),
                ),
            ],
            left_out: 3,
        };
        assert_eq!(
            report.lines(),
            [
                "#12: commented, could not label released:live (GitHub answered 500: boom; will retry)",
                "PROJ-7: already Released, could not comment (Jira answered 403: no)",
                "3 more left alone (at most 25 GitHub issues and 25 Jira issues per release)",
            ]
        );
        let lookup = TicketReport {
            lookup: Some(Failure {
                reason: "could not read the released pull requests (GitHub is unreachable: x)"
                    .into(),
                temporary: true,
            }),
            ..TicketReport::default()
        };
        assert_eq!(
            lookup.lines(),
            [
                "Tickets not updated: could not read the released pull requests (GitHub is unreachable: x); will retry"
            ]
        );
        assert_eq!(
            action(&TicketAction::JiraTransition {
                key: "PROJ-1".into(),
                transition: "Released".into()
            }),
            "move PROJ-1 to Released"
        );
    }
}
