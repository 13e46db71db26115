//! What chima says about release requests: the request with its checks and buttons, each
//! step for the room, and each step for the requester (in the request's thread and directly).

use chrono::{DateTime, Utc};
use deploy_core::AppName;
use deploy_core::chat::{Message, Tone};
use deploy_core::desk::when;
use deploy_core::protect::{Approver, Protection};
use deploy_store::{CheckState, ReleaseRequest, RequestState};

use super::clip;
use crate::chat::{Action, ActionKind, Reply};

fn say(tone: Tone) -> Message {
    Message::new(tone)
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// `#N (app ref@sha to env)`.
fn subject(m: Message, r: &ReleaseRequest) -> Message {
    m.text(format!("#{} (", r.id))
        .quoted(r.app.as_str())
        .text(" ")
        .quoted(format!("{}@{}", r.git_ref, short(&r.sha)))
        .text(" to ")
        .quoted(r.environment.as_str())
        .text(")")
}

fn state_word(state: RequestState) -> &'static str {
    match state {
        RequestState::Open => "open",
        RequestState::Approved => "approved",
        RequestState::Deploying => "deploying",
        RequestState::Succeeded => "released",
        RequestState::Failed => "failed",
        RequestState::Rejected => "rejected",
        RequestState::Cancelled => "cancelled",
        RequestState::Expired => "expired",
    }
}

fn check_mark(state: CheckState) -> &'static str {
    match state {
        CheckState::Pass => "✔ pass",
        CheckState::Fail => "✖ fail",
        CheckState::Pending => "… pending",
        CheckState::Skipped => "– skipped",
    }
}

/// One line per check, with its evidence.
fn with_checks(mut m: Message, r: &ReleaseRequest) -> Message {
    if r.checks.is_empty() {
        return m.text("\nChecks: none configured.");
    }
    m = m.text("\nChecks:");
    for c in &r.checks {
        m = m
            .text(format!("\n• {} {} — ", c.kind, check_mark(c.state)))
            .quoted(clip(&c.summary));
        if let Some(url) = &c.url {
            m = m.text(" ").link(url.as_str(), url.as_str());
        }
    }
    m
}

fn people(list: &[Approver]) -> String {
    list.iter()
        .map(|a| match a {
            Approver::Id(id) => id.clone(),
            Approver::Name(n) => n.clone(),
            Approver::Group(g) => format!("@{g}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn with_approvals(m: Message, r: &ReleaseRequest, p: &Protection) -> Message {
    let have: Vec<&str> = r.approvals.iter().map(|a| a.user_name.as_str()).collect();
    let m = m.text(format!("\nApprovals: {}/{}", have.len(), p.approvals));
    let m = if have.is_empty() {
        m
    } else {
        m.text(" (").quoted(have.join(", ")).text(")")
    };
    let m = m
        .text(" from ")
        .quoted(people(&p.approvers))
        .text(" (never the requester)");
    if p.needs_admin {
        let m = m.text("; a release admin (").quoted(people(&p.admins)).text(") claims it");
        match &r.claimed_by {
            Some((_, name)) => m.text(": claimed by ").quoted(name.as_str()),
            None => m,
        }
    } else {
        m
    }
}

fn buttons(reply: Reply, r: &ReleaseRequest, p: &Protection, bot: &str) -> Reply {
    let mut reply = reply
        .with_action(Action {
            kind: ActionKind::Approve,
            label: format!("Approve #{}", r.id),
            command: format!("{bot} approve #{}", r.id),
            only_user: None,
        })
        .with_action(Action {
            kind: ActionKind::Reject,
            label: format!("Reject #{}", r.id),
            command: format!("{bot} reject #{}: rejected with the button", r.id),
            only_user: None,
        });
    if p.needs_admin {
        reply = reply.with_action(Action {
            kind: ActionKind::Claim,
            label: format!("Claim #{}", r.id),
            command: format!("{bot} claim #{}", r.id),
            only_user: None,
        });
    }
    reply
}

/// A new request, posted in the room with its buttons.
pub fn opened(r: &ReleaseRequest, p: &Protection, bot: &str) -> Reply {
    let m = subject(say(Tone::Waiting).text("Release request "), r)
        .text(" opened by ")
        .quoted(r.requester_name.as_str())
        .text(format!(
            ": {} is protected, so nothing is deployed until the request is approved.",
            r.environment
        ));
    let m = with_approvals(with_checks(m, r), r, p).text(format!(
        "\nApprove with `{bot} approve #{0}` (red checks: `{bot} approve! #{0}: <reason>`), reject with `{bot} reject #{0}: <reason>`.",
        r.id
    ));
    buttons(Reply::new(m), r, p, bot)
}

/// The open request for the same ref moved to its new sha.
pub fn moved(r: &ReleaseRequest, p: &Protection, bot: &str) -> Reply {
    let m = subject(say(Tone::Waiting).text("Release request "), r)
        .text(" moved to the ref's new commit ")
        .quoted(short(&r.sha))
        .text(": its approvals were reset.");
    buttons(Reply::new(with_approvals(with_checks(m, r), r, p)), r, p, bot)
}

/// Told to the requester when their request opened.
pub fn opened_note(r: &ReleaseRequest, p: &Protection) -> Reply {
    let m = subject(say(Tone::Waiting).text("Your release request "), r)
        .text(" is open; you will be told each step here.");
    Reply::new(with_approvals(with_checks(m, r), r, p))
}

/// Asked again for the same commit.
pub fn already_open(r: &ReleaseRequest, p: &Protection) -> Reply {
    let m = subject(say(Tone::Info).text("Release request "), r)
        .text(format!(" is already {} for this commit.", state_word(r.state)));
    Reply::new(with_approvals(with_checks(m, r), r, p))
}

/// No such request.
pub fn not_found(id: u64) -> Reply {
    Reply::new(say(Tone::Error).text(format!(
        "There is no release request #{id}. Say `requests` to see the open ones."
    )))
}

/// The request's app is no longer in app.json.
pub fn app_gone(r: &ReleaseRequest) -> Reply {
    Reply::new(
        subject(say(Tone::Error).text("Release request "), r)
            .text(" is for an app or environment app.json no longer has. Nothing was done."),
    )
}

/// The environment is no longer protected.
pub fn no_longer_protected(r: &ReleaseRequest) -> Reply {
    Reply::new(
        subject(say(Tone::Info).text("Release request "), r)
            .text(" is for an environment that is no longer protected: deploy it directly. Nothing was done."),
    )
}

/// A request that is no longer open (or already deploying).
pub fn closed(r: &ReleaseRequest) -> Reply {
    Reply::new(
        subject(say(Tone::Info).text("Release request "), r)
            .text(format!(" is {}. Nothing was done.", state_word(r.state))),
    )
}

/// The requester tried to approve their own request.
pub fn self_approval(r: &ReleaseRequest) -> Reply {
    Reply::new(
        subject(say(Tone::Error).text("You asked for release request "), r)
            .text(": someone else must approve it. Nothing was done."),
    )
}

/// Someone not on the approvers list.
pub fn not_an_approver(r: &ReleaseRequest, p: &Protection) -> Reply {
    Reply::new(
        subject(say(Tone::Error).text("Only approvers may decide release request "), r)
            .text(": ")
            .quoted(people(&p.approvers))
            .text(". Nothing was done."),
    )
}

/// The same approver again.
pub fn already_approved(r: &ReleaseRequest) -> Reply {
    Reply::new(
        subject(say(Tone::Info).text("You already approved release request "), r)
            .text(". Nothing was done."),
    )
}

fn waiting_for(m: Message, waiting: &[String]) -> Message {
    if waiting.is_empty() {
        m.text(" Deploying now.")
    } else {
        m.text(format!(" Still waiting for {}.", waiting.join(", ")))
    }
}

/// An approval (or an override), said in the room.
pub fn approved(
    r: &ReleaseRequest,
    by: &str,
    overriding: Option<&str>,
    waiting: &[String],
) -> Reply {
    let m = say(Tone::Success).quoted(by);
    let m = match overriding {
        Some(reason) => subject(m.text(" approved release request "), r)
            .text(" and waived its red checks: ")
            .quoted(reason)
            .text("."),
        None => subject(m.text(" approved release request "), r).text("."),
    };
    Reply::new(waiting_for(m, waiting))
}

/// An approval, told to the requester.
pub fn approved_note(
    r: &ReleaseRequest,
    by: &str,
    overriding: Option<&str>,
    waiting: &[String],
) -> Reply {
    let m = subject(say(Tone::Success).text("Your release request "), r)
        .text(" was approved by ")
        .quoted(by);
    let m = match overriding {
        Some(reason) => m.text(", red checks waived: ").quoted(reason).text("."),
        None => m.text("."),
    };
    Reply::new(waiting_for(m, waiting))
}

/// A rejection, in the room and to the requester.
pub fn rejected(r: &ReleaseRequest, by: &str, reason: &str) -> Reply {
    Reply::new(
        subject(say(Tone::Error).text("Release request "), r)
            .text(" was rejected by ")
            .quoted(by)
            .text(": ")
            .quoted(reason)
            .text(". Nothing will be deployed."),
    )
}

/// Only an admin may claim.
pub fn not_admin(r: &ReleaseRequest, p: &Protection) -> Reply {
    Reply::new(
        subject(say(Tone::Error).text("Only a release admin may claim release request "), r)
            .text(": ")
            .quoted(people(&p.admins))
            .text(". Nothing was done."),
    )
}

/// An admin claimed the request.
pub fn claimed(r: &ReleaseRequest, p: &Protection) -> Reply {
    let (_, by) = r.claimed_by.clone().unwrap_or_default();
    let m = subject(say(Tone::Info).quoted(by).text(" claimed release request "), r).text(".");
    let waiting = crate::handlers::request_missing(r, p);
    Reply::new(waiting_for(m, &waiting))
}

/// An admin claimed the request, told to the requester.
pub fn claimed_note(r: &ReleaseRequest, by: &str) -> Reply {
    Reply::new(
        subject(say(Tone::Info).text("Your release request "), r)
            .text(" was claimed by release admin ")
            .quoted(by)
            .text("."),
    )
}

/// Only the requester or an admin may do that.
pub fn not_requester_or_admin(r: &ReleaseRequest, what: &str) -> Reply {
    Reply::new(
        subject(
            say(Tone::Error).text(format!(
                "Only the requester or a release admin may {what} release request "
            )),
            r,
        )
        .text(". Nothing was done."),
    )
}

/// `deploy #N` before the request is complete.
pub fn not_ready(r: &ReleaseRequest, waiting: &[String]) -> Reply {
    Reply::new(
        subject(say(Tone::Error).text("Release request "), r)
            .text(format!(
                " cannot deploy yet: it waits for {}. Nothing was done.",
                waiting.join(", ")
            )),
    )
}

/// A request withdrawn.
pub fn cancelled(r: &ReleaseRequest, by: &str) -> Reply {
    Reply::new(
        subject(say(Tone::Info).text("Release request "), r)
            .text(" was cancelled by ")
            .quoted(by)
            .text("."),
    )
}

/// The checks after `recheck`.
pub fn checks(r: &ReleaseRequest, p: &Protection) -> Reply {
    let m = subject(say(Tone::Info).text("Checks of release request "), r).text(" evaluated again.");
    Reply::new(with_approvals(with_checks(m, r), r, p))
}

/// The checks, told to the requester.
pub fn checks_note(r: &ReleaseRequest) -> Reply {
    let m = subject(say(Tone::Info).text("The checks of your release request "), r)
        .text(" were evaluated again.");
    Reply::new(with_checks(m, r))
}

/// Said in the request's thread as its deployment is created.
pub fn releasing(r: &ReleaseRequest) -> Reply {
    Reply::new(
        subject(say(Tone::Started).text("Release request "), r)
            .text(" is complete: deploying exactly ")
            .quoted(short(&r.sha))
            .text(" for ")
            .quoted(r.requester_name.as_str())
            .text("."),
    )
}

/// Told to the requester directly when the deployment exists.
pub fn deploying_note(r: &ReleaseRequest, deployment: u64) -> Reply {
    Reply::new(
        subject(say(Tone::Started).text("Your release request "), r)
            .text(format!(" is deploying as deployment #{deployment}.")),
    )
}

/// The deployment of a request finished.
pub fn finished(r: &ReleaseRequest, state: &str, log_url: Option<&str>) -> Reply {
    let (tone, word) = match state {
        "success" => (Tone::Success, "released"),
        "failure" => (Tone::Failure, "failed"),
        _ => (Tone::Error, "could not be deployed"),
    };
    let m = subject(say(tone).text("Release request "), r).text(format!(
        " {word} (deployment #{}: {state}).",
        r.deployment_id.unwrap_or_default()
    ));
    Reply::new(match log_url {
        Some(url) => m.text(" Log: ").link(url, url),
        None => m,
    })
}

/// A request that ran out.
pub fn expired(r: &ReleaseRequest) -> Reply {
    Reply::new(
        subject(say(Tone::Warning).text("Release request "), r)
            .text(" ran out before it was complete (the environment's `ttl`). Nothing was deployed; ask again to open a new one."),
    )
}

/// Ticket updates after a release, told in the request's thread.
pub fn tickets_updated(r: &ReleaseRequest, done: &[String], failed: &[String]) -> Reply {
    let m = subject(say(Tone::Info).text("Tickets of release request "), r).text(":");
    let m = if done.is_empty() {
        m
    } else {
        m.text(" updated ").quoted(done.join(", ")).text(".")
    };
    Reply::new(if failed.is_empty() {
        m
    } else {
        m.text(" Not reached (tried again later): ")
            .quoted(failed.join("; "))
            .text(".")
    })
}

/// `requests [<app>]`.
pub fn list(app: Option<&AppName>, open: &[ReleaseRequest], now: DateTime<Utc>) -> Reply {
    if open.is_empty() {
        let m = say(Tone::Info).text("No open release requests");
        let m = match app {
            Some(a) => m.text(" for ").quoted(a.as_str()),
            None => m,
        };
        return Reply::new(m.text("."));
    }
    let mut m = say(Tone::Info).text("Open release requests, in order:");
    for r in open {
        let red = r
            .checks
            .iter()
            .filter(|c| matches!(c.state, CheckState::Fail | CheckState::Pending))
            .count();
        m = subject(m.text("\n• "), r)
            .text(format!(" — {}, by ", state_word(r.state)))
            .quoted(r.requester_name.as_str())
            .text(format!(
                ", {} approval{}, {red} red check{}, expires {}",
                r.approvals.len(),
                if r.approvals.len() == 1 { "" } else { "s" },
                if red == 1 { "" } else { "s" },
                when(r.expires_at, now, deploy_core::desk::Tz::UTC)
            ));
    }
    Reply::new(m)
}
