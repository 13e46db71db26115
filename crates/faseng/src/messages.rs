//! Every user-facing text faseng produces: GitHub status descriptions, chat texts and the
//! answers of its log pages. Small constructors, each tested; status descriptions are plain
//! text cut to GitHub's 140 characters; chat texts are neutral [`Message`]s in which every
//! value a user or repository controls is quoted (each platform's renderer escapes it).

pub mod dashboard;

use std::fmt::Write as _;

use deploy_core::chat::{Message, Tone};

use crate::outcome::{RunError, RunFailure};

/// GitHub's limit for a deployment status `description`.
pub const DESCRIPTION_MAX: usize = 140;

/// Cuts `s` to at most `max` characters (never inside a character), marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A status description, single-line and within GitHub's limit.
pub fn description(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&one_line, DESCRIPTION_MAX)
}

/// Whole minutes for an ETA, at least 1.
pub fn eta_minutes(secs: f64) -> u64 {
    ((secs / 60.0).ceil() as u64).max(1)
}

/// Human duration: `42s`, `3m 05s`, `1h 02m`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `queued`: nothing ahead.
pub fn queued() -> String {
    "Queued".to_owned()
}

/// `queued` behind others: `waiting behind #N` names the run directly ahead.
pub fn waiting(ahead_id: u64, ahead_count: usize, eta_secs: Option<f64>) -> String {
    let mut s = format!("Waiting behind #{ahead_id}");
    if ahead_count > 1 {
        let _ = write!(s, " ({ahead_count} ahead)");
    }
    if let Some(eta) = eta_secs {
        let _ = write!(s, ", about {} min", eta_minutes(eta));
    }
    description(&s)
}

/// `in_progress`.
pub fn running(provider: &str) -> String {
    description(&format!("Deploying with {provider}"))
}

/// `success`.
pub fn succeeded(secs: f64) -> String {
    description(&format!("Deployed in {}", duration(secs)))
}

/// `failure`: the provider ran and failed; `last_line` is the log's last line.
pub fn failed(last_line: Option<&str>) -> String {
    match last_line.map(str::trim).filter(|l| !l.is_empty()) {
        Some(line) => description(&format!("Failed: {line}")),
        None => description("Failed"),
    }
}

/// `failure` by timeout.
pub fn timed_out(secs: u64) -> String {
    description(&format!("Timed out after {secs} s"))
}

/// The log line written when the timeout kills the process group.
pub fn timeout_log_line(secs: u64) -> String {
    format!("==> timed out after {secs} s: killing the process group")
}

/// `error`: a job that had started came back after its worker died.
/// `error`: the worker running the deploy stopped answering (at `at`, when known); the run
/// was taken over to be reported, never re-run.
pub fn worker_stopped(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    match at {
        Some(at) => description(&format!(
            "Error: the worker running this deploy stopped answering at {} UTC; the provider may have partly run",
            at.format("%H:%M:%S")
        )),
        None => description(
            "Error: the worker running this deploy stopped answering; the provider may have partly run",
        ),
    }
}

/// `success` of `deploy:lock`: Heaven's text, and until when (`18:09 UTC (in 4 h)`, see
/// [`deploy_core::desk::when`]).
pub fn lock_taken(app: &str, env: &str, user: &str, until: &str) -> String {
    description(&format!("{app} locked on {env} by {user} until {until}"))
}

/// The reason of a `deploy:lock` whose deployment gives none.
pub fn deploy_lock_reason() -> String {
    "locked with deploy:lock".to_owned()
}

/// A deployment into a protected environment without an approved release request for its
/// commit: the chat message (its plain rendering is the status description).
pub fn unapproved(app: &str, env: &str, request: Option<u64>) -> Message {
    let m = Message::new(Tone::Error)
        .quoted(app)
        .text(" in ")
        .quoted(env)
        .text(" is protected: it is deployed only through an approved release request");
    match request {
        Some(n) => m.text(format!(
            ", and request #{n} is not approved for this commit and environment."
        )),
        None => m
            .text(" (in chat: ")
            .code(format!("deploy {app} to {env}"))
            .text(" opens one)."),
    }
}

/// The reason of a sticky branch lock: `feature/x is on edge`.
pub fn branch_lock_reason(git_ref: &str, env: &str) -> String {
    format!("{git_ref} is on {env}")
}

/// The audit's detail for a deployment: `deployment #42 (deploy)`.
pub fn audit_deploy(id: u64, task: &str) -> String {
    format!("deployment #{id} ({task})")
}

/// The audit's detail for a lock faseng took or released for a deployment: the lock's
/// reason and where it came from (`testing (deploy:lock, deployment #42)`).
pub fn audit_lock(reason: &str, how: &str, id: u64) -> String {
    format!("{reason} ({how}, deployment #{id})")
}

/// `success` of `deploy:unlock`.
pub fn lock_released(app: &str, env: &str, previous: Option<&str>) -> String {
    match previous {
        Some(user) => description(&format!("{app} unlocked on {env} (was locked by {user})")),
        None => description(&format!("{app} was not locked on {env}")),
    }
}

/// `error` of `deploy:unlock` by someone other than the holder.
pub fn unlock_refused(app: &str, env: &str, holder: &str) -> String {
    description(&format!(
        "{app} is locked on {env} by {holder}; only they can unlock it"
    ))
}

/// `error`: a field of the webhook that may never reach a process.
pub fn invalid_input(what: &str, value: &str, why: &str) -> String {
    let shown: String = value.chars().filter(|c| !c.is_control()).take(40).collect();
    description(&format!("Error: {what} {shown:?} is not valid: {why}"))
}

/// `error`: no app of the operator's app.json deploys the repository.
pub fn no_app_for_repository(repo: &str) -> String {
    description(&format!("no app in faseng's app.json deploys {repo}"))
}

/// `error`: `payload.name` names an app that deploys another repository.
pub fn app_of_another_repository(app: &str, its_repo: &str, repo: &str) -> String {
    description(&format!(
        "payload.name is {app}, an app of {its_repo}, but this deployment is of {repo}: nothing was run"
    ))
}

/// `error`: several apps deploy the repository and the payload names none of them.
pub fn several_apps_deploy(repo: &str, apps: &[String]) -> String {
    description(&format!(
        "several apps deploy {repo} ({}): the deployment's payload.name must name one",
        apps.join(", ")
    ))
}

/// `error`: the environment is not one the app lists.
pub fn environment_not_listed(app: &str, environment: &str, listed: &[String]) -> String {
    let shown: String = environment
        .chars()
        .filter(|c| !c.is_control())
        .take(40)
        .collect();
    description(&format!(
        "{app} has no environment {shown:?} in faseng's app.json ({}): nothing was run",
        listed.join(", ")
    ))
}

/// `error`: provider not available in this faseng.
pub fn unsupported_provider(provider: &str) -> String {
    description(&format!(
        "Error: the {provider} provider is not available in this faseng"
    ))
}

/// `error`: anything else that stopped the run before the provider could run.
pub fn could_not_run(why: &str) -> String {
    description(&format!("Error: {why}"))
}

/// The status description of a failed run.
pub fn run_failure(failure: &RunFailure) -> String {
    match failure {
        RunFailure::TimedOut { secs } => timed_out(*secs),
        RunFailure::Stage {
            stage,
            script,
            failure,
        } => stage_failed(stage.as_str(), script, &failure_detail(failure)),
        other => failed(Some(&failure_detail(other))),
    }
}

/// What a failure says after `Failed: `.
fn failure_detail(failure: &RunFailure) -> String {
    match failure {
        RunFailure::Exited { code, last_line } => last_line
            .clone()
            .unwrap_or_else(|| format!("exit status {code}")),
        RunFailure::Killed { signal } => format!("killed by signal {signal}"),
        RunFailure::TimedOut { secs } => format!("timed out after {secs} s"),
        RunFailure::Explained(why) => why.clone(),
        RunFailure::HerokuBuild { last_line } => match last_line {
            Some(l) => format!("Heroku build failed: {l}"),
            None => "Heroku build failed".to_owned(),
        },
        RunFailure::Stage { failure, .. } => failure_detail(failure),
    }
}

/// `failure` of a before / after stage.
pub fn stage_failed(stage: &str, script: &str, detail: &str) -> String {
    description(&format!("Failed in the {stage} stage: {script}: {detail}"))
}

/// The status description of a run that could not run.
pub fn run_error(error: &RunError) -> String {
    match error {
        RunError::Refused(refusal) => refusal.description(),
        RunError::InvalidInput { what, value, why } => invalid_input(what, value, why),
        RunError::Blocked { text, .. } => description(text),
        RunError::UnlockRefused { app, env, holder } => unlock_refused(app, env, holder),
        RunError::UnsupportedProvider(provider) => unsupported_provider(provider),
        RunError::CheckoutFailed(why) => could_not_run(&format!("checkout failed: {why}")),
        RunError::WorkerStopped { at } => worker_stopped(*at),
        RunError::CouldNotRun(why) => could_not_run(why),
    }
}

/// The answer to a webhook whose repository name faseng cannot use (nothing was queued).
pub fn unusable_repository(why: &deploy_core::RepoNameError) -> String {
    format!("unusable repository: {why}")
}

/// What a chat message says about one deployment. The values are as received; the chat
/// constructors quote every one of them, so each platform's renderer escapes them.
#[derive(Debug, Clone)]
pub struct ChatSubject<'a> {
    /// App name.
    pub app: &'a str,
    /// Ref.
    pub git_ref: &'a str,
    /// Short sha.
    pub sha: &'a str,
    /// Environment.
    pub env: &'a str,
    /// Who asked.
    pub user: &'a str,
    /// Deployment id.
    pub id: u64,
    /// For a rollback, the commit it rolls back from (the run's own sha is the one it goes to).
    pub rollback_from: Option<&'a str>,
}

fn short(sha: &str) -> String {
    sha.chars().take(7).collect()
}

impl ChatSubject<'_> {
    /// `message` followed by `Rolling back app in env to sha (from sha) for user (#id)` (`verb`
    /// is "Rolling back" or "Rolled back").
    fn rollback_head(&self, message: Message, verb: &str, from: &str) -> Message {
        message
            .text(format!("{verb} "))
            .quoted(self.app)
            .text(" in ")
            .quoted(self.env)
            .text(" to ")
            .quoted(short(self.sha))
            .text(" (from ")
            .quoted(short(from))
            .text(") for ")
            .quoted(self.user)
            .text(format!(" (#{})", self.id))
    }

    /// `message` followed by `app/ref (sha) to env (#id)`.
    fn head(&self, message: Message) -> Message {
        message
            .quoted(self.app)
            .text("/")
            .quoted(self.git_ref)
            .text(" (")
            .quoted(short(self.sha))
            .text(") to ")
            .quoted(self.env)
            .text(format!(" (#{})", self.id))
    }
}

/// Chat: queued, with the waiting-line position when not first.
pub fn chat_queued(s: &ChatSubject<'_>, waiting_text: Option<&str>) -> Message {
    if let Some(from) = s.rollback_from {
        return s
            .rollback_head(Message::new(Tone::Waiting), "Rolling back", from)
            .text(": ")
            .text(waiting_text.unwrap_or("queued"));
    }
    let m = Message::new(Tone::Waiting)
        .quoted(s.user)
        .text(" wants to deploy ");
    s.head(m).text(": ").text(waiting_text.unwrap_or("queued"))
}

/// Chat: running, with the log link.
pub fn chat_running(s: &ChatSubject<'_>, log_url: &str) -> Message {
    if let Some(from) = s.rollback_from {
        return s
            .rollback_head(Message::new(Tone::Started), "Rolling back", from)
            .text(" — ")
            .link(log_url, "log");
    }
    let m = Message::new(Tone::Started)
        .quoted(s.user)
        .text(" is deploying ");
    s.head(m).text(" — ").link(log_url, "log")
}

/// Chat: success, with the duration.
pub fn chat_succeeded(s: &ChatSubject<'_>, secs: f64, log_url: &str) -> Message {
    if let Some(from) = s.rollback_from {
        return s
            .rollback_head(Message::new(Tone::Success), "Rolled back", from)
            .text(format!(" in {} — ", duration(secs)))
            .link(log_url, "log");
    }
    let m = Message::new(Tone::Success)
        .quoted(s.user)
        .text("'s deployment of ");
    s.head(m)
        .text(format!(" is done in {} — ", duration(secs)))
        .link(log_url, "log")
}

/// Chat: failure, with the reason (it may quote the provider's output).
pub fn chat_failed(s: &ChatSubject<'_>, reason: &str, log_url: &str) -> Message {
    if let Some(from) = s.rollback_from {
        return s
            .rollback_head(Message::new(Tone::Failure), "Rolling back", from)
            .text(" failed: ")
            .quoted(reason)
            .text(" — ")
            .link(log_url, "log");
    }
    let m = Message::new(Tone::Failure)
        .quoted(s.user)
        .text("'s deployment of ");
    s.head(m)
        .text(" failed: ")
        .quoted(reason)
        .text(" — ")
        .link(log_url, "log")
}

/// Chat: error (could not run), with the reason (it may quote the bad input).
pub fn chat_error(s: &ChatSubject<'_>, reason: &str) -> Message {
    if let Some(from) = s.rollback_from {
        return s
            .rollback_head(Message::new(Tone::Warning), "Rolling back", from)
            .text(" has errors: ")
            .quoted(reason);
    }
    let m = Message::new(Tone::Warning)
        .quoted(s.user)
        .text("'s deployment of ");
    s.head(m).text(" has errors: ").quoted(reason)
}

/// Chat: refused by the release desk (someone else's lock, a freeze), with the desk's own
/// words (the same chima refuses with).
pub fn chat_refused(s: &ChatSubject<'_>, why: &Message) -> Message {
    let mut m = match s.rollback_from {
        Some(from) => s
            .rollback_head(Message::new(why.tone), "Rolling back", from)
            .text(" was refused: "),
        None => {
            let m = Message::new(why.tone)
                .quoted(s.user)
                .text("'s deployment of ");
            s.head(m).text(" was refused: ")
        }
    };
    m.parts.extend(why.parts.iter().cloned());
    m
}

/// The label of the button under a finished deploy's message that rolls its environment back.
pub const ROLLBACK_BUTTON: &str = "Roll back";

/// The command the "Roll back" button runs: back to deployment `id` (chima's grammar).
pub fn rollback_command(app: &str, env: &str, id: u64) -> String {
    format!("rollback {app} in {env} to #{id}")
}

/// Chat: a lock/unlock result (it names the holder and quotes the reason).
pub fn chat_lock(text: &str) -> Message {
    Message::new(Tone::Lock).quoted(text)
}

/// Characters of log output quoted into a failure reply at most, counted as Slack is sent
/// them (escaped, one newline each), so that with its first line and the code fences the reply
/// fits in one Block Kit section ([`SECTION_TEXT_MAX`]) and shows whole, fences closed.
///
/// [`SECTION_TEXT_MAX`]: deploy_core::chat::slack::SECTION_TEXT_MAX
pub const CHAT_TAIL_MAX_CHARS: usize = 2900;

/// Characters `c` takes once escaped for Slack (`&amp;`, `&lt;`, `&gt;`).
fn escaped_width(c: char) -> usize {
    match c {
        '&' => 5,
        '<' | '>' => 4,
        _ => 1,
    }
}

/// `line`'s start that takes at most `max` characters once escaped, with `…` when cut.
fn fit_escaped(line: &str, max: usize) -> String {
    let line = line.trim();
    let mut out = String::new();
    let mut used = 0;
    for c in line.chars() {
        if used + escaped_width(c) > max.saturating_sub(1) {
            out.push('…');
            return out;
        }
        used += escaped_width(c);
        out.push(c);
    }
    out
}

/// Chat thread reply on failure: the last log lines in a code block, the newest ones that
/// fit in [`CHAT_TAIL_MAX_CHARS`] (the newest one cut when it alone is longer).
pub fn chat_log_tail(lines: &[String]) -> Message {
    let mut budget = CHAT_TAIL_MAX_CHARS;
    let mut shown: Vec<String> = Vec::new();
    for line in lines.iter().rev() {
        let len = line.chars().map(escaped_width).sum::<usize>() + 1;
        if len <= budget {
            budget -= len;
            shown.push(line.clone());
        } else {
            if shown.is_empty() {
                shown.push(fit_escaped(line, CHAT_TAIL_MAX_CHARS));
            }
            break;
        }
    }
    shown.reverse();
    Message::new(Tone::Info)
        .text(format!("Last {} log lines:\n", shown.len()))
        .code_block(shown.join("\n"))
}

/// Web: the answer to a log link that is unknown, lacks its secret or carries a wrong one
/// (the same for all three, so a link reveals nothing about which deployments exist).
pub fn no_such_deployment() -> &'static str {
    "no such deployment"
}

/// Web: a client already has `limit` live log streams open.
pub fn too_many_streams_from_client(limit: usize) -> String {
    format!("too many live logs open from your address (at most {limit}); close one and retry")
}

/// Web: faseng already serves `limit` live log streams.
pub fn too_many_streams(limit: usize) -> String {
    format!("too many live logs open on this server (at most {limit}); retry in a minute")
}

/// Dashboard: its routes and the start banner when no OAuth app is configured.
pub fn dashboard_off() -> &'static str {
    "the dashboard is off: set GITHUB_OAUTH_CLIENT_ID, GITHUB_OAUTH_CLIENT_SECRET and \
     FASENG_GITHUB_ORG to turn it on (GitHub sign-in; see the README)"
}

/// Dashboard, local mode: a request from another machine.
pub fn dashboard_local_only() -> &'static str {
    "the dashboard of local mode answers only on this machine (loopback)"
}

/// Dashboard: a page asked for without signing in (the sign-in page says it, nothing else).
pub fn sign_in_needed(members: &str) -> String {
    format!("This dashboard is for members of {members} on GitHub. Sign in to see it.")
}

/// Dashboard: an action (POST) without a session.
pub fn action_needs_session() -> &'static str {
    "sign in first: only a signed-in member may do this (nothing was done)"
}

/// Dashboard: a form whose `csrf` field is missing or not this session's.
pub fn form_out_of_date() -> &'static str {
    "this form is out of date (its security token does not match your session): reload the \
     page and try again (nothing was done)"
}

/// Dashboard: a POST whose `Origin` / `Sec-Fetch-Site` is not this site.
pub fn cross_site_refused() -> &'static str {
    "refused: this request did not come from the dashboard's own pages (nothing was done)"
}

/// Sign-in: the callback without a matching sign-in under way.
pub fn sign_in_expired() -> &'static str {
    "This sign-in was not started here, or took longer than 10 minutes. Sign in again."
}

/// Sign-in: the user declined (or GitHub sent them back with an error).
pub fn sign_in_declined(error: &str, description: Option<&str>) -> String {
    match description {
        Some(d) => format!("GitHub did not sign you in ({error}: {d})."),
        None => format!("GitHub did not sign you in ({error})."),
    }
}

/// Sign-in: GitHub would not exchange the code for a token.
pub fn code_refused(error: &str, description: Option<&str>) -> String {
    match description {
        Some(d) => format!("GitHub did not accept this sign-in ({error}: {d}). Sign in again."),
        None => format!("GitHub did not accept this sign-in ({error}). Sign in again."),
    }
}

/// Sign-in: `GET /user` refused the new token.
pub fn github_refused_user(status: u16) -> String {
    format!("GitHub would not say who you are (HTTP {status}). Sign in again.")
}

/// Sign-in: the organization hides its memberships from the OAuth app.
pub fn membership_hidden(members: &str) -> String {
    format!(
        "GitHub would not tell faseng whether you are a member of {members} (HTTP 403): the \
         organization may restrict OAuth apps, and an owner can approve this one in its settings."
    )
}

/// Sign-in: a GitHub user who is not an active member.
pub fn not_a_member(login: &str, members: &str) -> String {
    format!(
        "{login} is not an active member of {members} on GitHub, and this dashboard is for its \
         members only. Ask an owner to add you, or sign in as someone else."
    )
}

/// Sign-in: GitHub answered with a server error.
pub fn github_failed(status: u16) -> String {
    format!("GitHub answered HTTP {status} while signing you in. Try again in a minute.")
}

/// Sign-in: GitHub's answer was not what its API documents.
pub fn github_answer_unreadable(status: u16) -> String {
    format!(
        "GitHub's answer (HTTP {status}) could not be read while signing you in. Try again in a minute."
    )
}

/// Sign-in: GitHub could not be reached.
pub fn github_unreachable() -> &'static str {
    "GitHub could not be reached while signing you in. Try again in a minute."
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::chat::{escape_mrkdwn, mrkdwn_link};
    use rendered::{
        chat_error, chat_failed, chat_lock, chat_log_tail, chat_queued, chat_running,
        chat_succeeded,
    };

    /// The chat texts as the Slack notifier renders them.
    mod rendered {
        use super::super::{self as m, ChatSubject};
        use deploy_core::chat::slack::mrkdwn;

        pub fn chat_queued(s: &ChatSubject<'_>, waiting: Option<&str>) -> String {
            mrkdwn(&m::chat_queued(s, waiting))
        }
        pub fn chat_running(s: &ChatSubject<'_>, log_url: &str) -> String {
            mrkdwn(&m::chat_running(s, log_url))
        }
        pub fn chat_succeeded(s: &ChatSubject<'_>, secs: f64, log_url: &str) -> String {
            mrkdwn(&m::chat_succeeded(s, secs, log_url))
        }
        pub fn chat_failed(s: &ChatSubject<'_>, reason: &str, log_url: &str) -> String {
            mrkdwn(&m::chat_failed(s, reason, log_url))
        }
        pub fn chat_error(s: &ChatSubject<'_>, reason: &str) -> String {
            mrkdwn(&m::chat_error(s, reason))
        }
        pub fn chat_lock(text: &str) -> String {
            mrkdwn(&m::chat_lock(text))
        }
        pub fn chat_log_tail(lines: &[String]) -> String {
            mrkdwn(&m::chat_log_tail(lines))
        }
    }

    #[test]
    fn chat_texts_read_plainly_in_a_terminal() {
        use deploy_core::chat::plain::render;
        let s = subject();
        assert_eq!(
            render(&super::chat_running(&s, "http://l")),
            "▶ joyz is deploying project-x/main (0123456) to production (#42) — log (http://l)"
        );
        assert_eq!(
            render(&super::chat_log_tail(&["a".into(), "b".into()])),
            "Last 2 log lines:\n    a\n    b"
        );
    }

    #[test]
    fn broadcasts_and_newlines_in_quoted_values_ping_nobody_and_stay_on_one_line() {
        let s = ChatSubject {
            user: "@here",
            ..subject()
        };
        assert!(chat_error(&s, "bad\nref @channel").ends_with("has errors: bad ref ＠channel"));
        assert!(chat_queued(&s, None).starts_with(":hourglass: ＠here wants"));
    }

    fn subject() -> ChatSubject<'static> {
        ChatSubject {
            app: "project-x",
            git_ref: "main",
            sha: "0123456789abcdef",
            env: "production",
            user: "joyz",
            id: 42,
            rollback_from: None,
        }
    }

    #[test]
    fn a_rollback_says_so_in_every_text() {
        use deploy_core::chat::plain::render;
        let s = ChatSubject {
            git_ref: "abc1234def",
            sha: "abc1234def",
            env: "staging",
            app: "demo",
            rollback_from: Some("def5678abc"),
            ..subject()
        };
        let why = Message::new(Tone::Lock).text("demo in staging is locked by alice");
        for (text, want) in [
            (
                render(&super::chat_queued(&s, None)),
                "… Rolling back demo in staging to abc1234 (from def5678) for joyz (#42): queued",
            ),
            (
                render(&super::chat_running(&s, "http://l")),
                "▶ Rolling back demo in staging to abc1234 (from def5678) for joyz (#42) — log (http://l)",
            ),
            (
                render(&super::chat_succeeded(&s, 5.0, "http://l")),
                "✔ Rolled back demo in staging to abc1234 (from def5678) for joyz (#42) in 5s — log (http://l)",
            ),
            (
                render(&super::chat_failed(&s, "exit 1", "http://l")),
                "✖ Rolling back demo in staging to abc1234 (from def5678) for joyz (#42) failed: exit 1 — log (http://l)",
            ),
            (
                render(&super::chat_error(&s, "no checkout")),
                "⚠ Rolling back demo in staging to abc1234 (from def5678) for joyz (#42) has errors: no checkout",
            ),
            (
                render(&super::chat_refused(&s, &why)),
                "⚿ Rolling back demo in staging to abc1234 (from def5678) for joyz (#42) was refused: demo in staging is locked by alice",
            ),
        ] {
            assert_eq!(text, want);
        }
        assert_eq!(
            rollback_command("demo", "staging", 12),
            "rollback demo in staging to #12"
        );
    }

    #[test]
    fn truncation_is_safe_on_multibyte_text_and_respects_the_limit() {
        let long = "é".repeat(500);
        let d = description(&long);
        assert_eq!(d.chars().count(), DESCRIPTION_MAX);
        assert!(d.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(description("a\n  b\tc"), "a b c");
    }

    #[test]
    fn durations_and_etas_read_well() {
        assert_eq!(duration(5.4), "5s");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(duration(3720.0), "1h 02m");
        assert_eq!(eta_minutes(1.0), 1);
        assert_eq!(eta_minutes(61.0), 2);
    }

    #[test]
    fn queue_texts_name_the_run_ahead_and_the_eta() {
        assert_eq!(queued(), "Queued");
        assert_eq!(waiting(7, 1, Some(100.0)), "Waiting behind #7, about 2 min");
        assert_eq!(waiting(7, 3, None), "Waiting behind #7 (3 ahead)");
    }

    #[test]
    fn final_texts() {
        assert_eq!(running("shell"), "Deploying with shell");
        assert_eq!(succeeded(12.0), "Deployed in 12s");
        assert_eq!(failed(Some("  boom ")), "Failed: boom");
        assert_eq!(failed(None), "Failed");
        assert_eq!(timed_out(5), "Timed out after 5 s");
        assert!(timeout_log_line(5).contains("timed out after 5 s"));
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-06T12:03:41.5Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            worker_stopped(Some(at)),
            "Error: the worker running this deploy stopped answering at 12:03:41 UTC; the provider may have partly run"
        );
        assert!(
            worker_stopped(None)
                .starts_with("Error: the worker running this deploy stopped answering;")
        );
        assert!(failed(Some(&"x".repeat(300))).chars().count() <= DESCRIPTION_MAX);
    }

    #[test]
    fn lock_texts_follow_heaven() {
        assert_eq!(
            lock_taken("a", "e", "u", "18:09 UTC (in 4 h)"),
            "a locked on e by u until 18:09 UTC (in 4 h)"
        );
        assert_eq!(deploy_lock_reason(), "locked with deploy:lock");
        assert_eq!(
            branch_lock_reason("feature/x", "edge"),
            "feature/x is on edge"
        );
        assert_eq!(audit_deploy(42, "deploy"), "deployment #42 (deploy)");
        assert_eq!(
            audit_lock("testing", "deploy:lock", 42),
            "testing (deploy:lock, deployment #42)"
        );
        assert_eq!(
            lock_released("a", "e", Some("u")),
            "a unlocked on e (was locked by u)"
        );
        assert_eq!(lock_released("a", "e", None), "a was not locked on e");
        assert_eq!(
            unlock_refused("a", "e", "alice"),
            "a is locked on e by alice; only they can unlock it"
        );
    }

    #[test]
    fn error_texts_quote_the_bad_input_without_control_characters() {
        let t = invalid_input("ref", "x;\nrm -rf", "contains whitespace");
        assert!(t.starts_with("Error: ref \"x;rm -rf\""), "{t}");
        assert_eq!(
            environment_not_listed("a", "st\naging", &["edge".into(), "live".into()]),
            "a has no environment \"staging\" in faseng's app.json (edge, live): nothing was run"
        );
        assert!(unsupported_provider("heroku").contains("heroku provider"));
        assert_eq!(could_not_run("checkout failed"), "Error: checkout failed");
    }

    #[test]
    fn chat_texts_carry_who_what_where_and_links() {
        let s = subject();
        assert_eq!(
            chat_queued(&s, None),
            ":hourglass: joyz wants to deploy project-x/main (0123456) to production (#42): queued"
        );
        assert!(chat_queued(&s, Some("Waiting behind #7")).ends_with("Waiting behind #7"));
        assert!(chat_running(&s, "http://l").contains("<http://l|log>"));
        assert!(chat_succeeded(&s, 65.0, "http://l").contains("done in 1m 05s"));
        assert!(chat_failed(&s, "exit 1", "http://l").contains("failed: exit 1"));
        assert!(chat_error(&s, "bad ref").contains("has errors: bad ref"));
        assert_eq!(chat_lock("a locked"), ":lock: a locked");
        let now = chrono::Utc::now();
        let blocked = deploy_core::desk::Blocked::Frozen {
            reason: "<!channel> weekend".into(),
            until: now + chrono::Duration::hours(2),
            by: None,
        };
        let (app, env) = (
            deploy_core::AppName::parse("project-x").unwrap(),
            deploy_core::EnvName::parse("production").unwrap(),
        );
        let why = blocked.message(&app, &env, now, deploy_core::desk::Tz::UTC);
        let refused = deploy_core::chat::slack::mrkdwn(&super::chat_refused(&s, &why));
        assert!(
            refused.starts_with(
                ":warning: joyz's deployment of project-x/main (0123456) to production (#42) was refused: project-x in production is frozen: &lt;!channel&gt; weekend, until "
            ),
            "{refused}"
        );
        assert_eq!(
            run_error(&RunError::Blocked {
                text: blocked.plain(&app, &env, now, deploy_core::desk::Tz::UTC),
                message: why,
            }),
            description(&blocked.plain(&app, &env, now, deploy_core::desk::Tz::UTC))
        );
        let tail = chat_log_tail(&["a".into(), "```b".into()]);
        assert_eq!(tail, "Last 2 log lines:\n```\na\n'''b\n```");
    }

    /// `text` without faseng's own link to `log_url`, which must be there exactly once.
    fn without_log_link(text: &str, log_url: &str) -> String {
        let link = mrkdwn_link(log_url, "log");
        assert_eq!(text.matches(&link).count(), 1, "{text}");
        text.replace(&link, "")
    }

    /// Asserts that `text` shows `value` escaped and has no markup of its own left.
    fn assert_quoted_safely(text: &str, value: &str) {
        assert!(!text.contains(['<', '>']), "{value}: {text}");
        assert!(text.contains(&escape_mrkdwn(value)), "{value}: {text}");
    }

    #[test]
    fn every_chat_text_escapes_every_quoted_value() {
        let log_url = "https://faseng.example/deployments/o/r/42?key=a&b";
        for value in deploy_core::chat::MARKUP_INJECTIONS {
            let s = ChatSubject {
                app: value,
                git_ref: value,
                sha: "0123456789abcdef",
                env: value,
                user: value,
                id: 42,
                rollback_from: None,
            };
            assert_quoted_safely(&chat_queued(&s, None), value);
            let rollback = ChatSubject {
                rollback_from: Some(value),
                ..s.clone()
            };
            assert_quoted_safely(&chat_queued(&rollback, None), value);
            assert_quoted_safely(
                &without_log_link(&chat_failed(&rollback, value, log_url), log_url),
                value,
            );
            assert_quoted_safely(&chat_queued(&s, Some(value)), value);
            for text in [
                chat_running(&s, log_url),
                chat_succeeded(&s, 3.0, log_url),
                chat_failed(&s, value, log_url),
            ] {
                assert_quoted_safely(&without_log_link(&text, log_url), value);
            }
            assert_quoted_safely(&chat_error(&s, value), value);
            assert_quoted_safely(&chat_lock(value), value);
            assert_quoted_safely(&chat_log_tail(&[(*value).to_owned()]), value);
        }
    }

    #[test]
    fn the_log_link_stays_one_link_whatever_its_url_holds() {
        let s = subject();
        let text = chat_running(&s, "https://x/a|<!channel>&b");
        assert!(
            text.ends_with("<https://x/a%7C&lt;!channel&gt;&amp;b|log>"),
            "{text}"
        );
    }

    #[test]
    fn the_failure_tail_keeps_the_newest_lines_that_fit() {
        let long = "x".repeat(CHAT_TAIL_MAX_CHARS);
        let lines = vec!["old".to_owned(), long.clone(), "new".to_owned()];
        let tail = chat_log_tail(&lines);
        assert!(tail.starts_with("Last 1 log lines:"), "{}", &tail[..40]);
        assert!(tail.contains("\nnew\n") && !tail.contains('x'), "{tail}");
        let tail = chat_log_tail(&[long.clone() + "y"]);
        assert!(tail.starts_with("Last 1 log lines:"));
        assert!(tail.chars().count() < CHAT_TAIL_MAX_CHARS + 40);
        assert!(tail.contains('…') && !tail.contains('y'));
        let within: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        assert!(chat_log_tail(&within).starts_with("Last 20 log lines:"));
    }

    #[test]
    fn the_failure_tail_fits_one_block_kit_section_whole() {
        use deploy_core::chat::slack::{SECTION_TEXT_MAX, blocks};
        let many: Vec<String> = (0..5000).map(|i| format!("line {i}")).collect();
        let hostile: Vec<String> = (0..500).map(|_| "<&>".repeat(20)).collect();
        for lines in [
            many,
            hostile,
            vec!["<".repeat(5000)],
            vec!["x".repeat(5000)],
            vec!["a".into(), "&".repeat(CHAT_TAIL_MAX_CHARS)],
        ] {
            let message = super::chat_log_tail(&lines);
            let section = blocks(&message)[0]["text"]["text"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(section.chars().count() <= SECTION_TEXT_MAX);
            assert!(section.ends_with("\n```"), "cut: {section}");
            assert_eq!(section, deploy_core::chat::slack::mrkdwn(&message));
            assert!(!section.starts_with("Last 0 "));
        }
    }

    #[test]
    fn web_texts_say_what_is_wrong_without_naming_the_deployment() {
        assert_eq!(no_such_deployment(), "no such deployment");
        assert_eq!(
            too_many_streams_from_client(8),
            "too many live logs open from your address (at most 8); close one and retry"
        );
        assert_eq!(
            too_many_streams(256),
            "too many live logs open on this server (at most 256); retry in a minute"
        );
    }
}
