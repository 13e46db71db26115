//! Every text chima says, as small constructor functions. Each is covered by a test below.
//!
//! Each builds a neutral [`Message`] (deploy-core's chat model): our own words as text, every
//! value a user or a repository controls as a quoted value or code, links as links. The
//! transports render it (Slack: mrkdwn and Block Kit; the shell: plain text) and escape every
//! quoted value for the chat it goes to.

pub mod desk;
pub mod requests;
pub mod rollback;
pub mod stats;

use chrono::{DateTime, Utc};
use deploy_core::chat::{Message, Tone};
use deploy_core::{AppConfig, AppName, EnvName};
use deploy_store::EnvLock;

use crate::chat::{Action, ActionKind, Reply};
use crate::forge::{CheckInfo, CiReport, CiVerdict, DeploymentFilter, DeploymentInfo, ForgeError};
use crate::grammar::{
    COMMANDS, CommandSpec, MAX_COMMANDS_PER_MESSAGE, MAX_LINE_BYTES, ParseError, Problem,
};

/// The most characters of a typed value shown back (the rest is cut).
pub const SHOWN_VALUE_CHARS: usize = 120;

/// A typed value as shown back in code: at most [`SHOWN_VALUE_CHARS`] characters. The
/// renderers neutralise backticks, newlines and invisible characters in it.
pub fn clip(s: &str) -> String {
    s.chars().take(SHOWN_VALUE_CHARS).collect()
}

fn say(tone: Tone) -> Message {
    Message::new(tone)
}

fn with_usage(message: Message, spec: &CommandSpec, bot: &str) -> Message {
    message
        .text("Usage: ")
        .code(format!("{bot} {}", spec.usage))
}

fn with_problem(m: Message, problem: &Problem) -> Message {
    match problem {
        Problem::MissingApp => m.text("which app? Name one"),
        Problem::BadApp(app, e) => m
            .code(clip(app))
            .text(format!(" is not an app name: it {e}")),
        Problem::BadRef(r, e) => m
            .code(clip(r))
            .text(format!(" is not a valid git ref: it {e}")),
        Problem::BadEnv(env, e) => m
            .code(clip(env))
            .text(format!(" is not an environment name: it {e}")),
        Problem::MissingEnv(keyword) => {
            m.code(clip(keyword)).text(" needs an environment after it")
        }
        Problem::BadHosts(h) => m
            .code(clip(h))
            .text(" is not a host list (letters, digits, '-', '_', '.', ',' and ':')"),
        Problem::BadTask(t) => m
            .code(clip(t))
            .text(" is not a task; use `deploy`, `deploy!` or `deploy:<task>`"),
        Problem::MissingId => m.text("which deployment? Give its number"),
        Problem::MissingReason => m.text("a reason is needed after `:`"),
        Problem::MissingRequest => m.text("which request? Give its number, like #3"),
        Problem::BadRequest(word) => m
            .code(clip(word))
            .text(" is not a request number; write it like #3"),
        Problem::ReasonTooLong(chars) => m.text(format!(
            "the reason is {chars} characters long; keep it under {}",
            crate::grammar::MAX_REASON_CHARS + 1
        )),
        Problem::MissingDuration(keyword) => m
            .code(*keyword)
            .text(" needs a duration after it, like 30m, 4h or 1d"),
        Problem::BadDuration(word, _) => m
            .code(clip(word))
            .text(" is not a duration: write it like 90s, 30m, 4h, 1d or 1h30m"),
        Problem::BadId(id) => m.code(clip(id)).text(" is not a deployment number"),
        Problem::PeriodTooLong(period) => m.code(clip(period)).text(format!(
            " is too long: statistics cover at most {}",
            crate::grammar::MAX_STATS_PERIOD
        )),
        Problem::MissingTarget(keyword) => m
            .code(clip(keyword))
            .text(" needs a ref or a deployment after it, like `v1.2.0` or `#12`"),
        Problem::Unexpected {
            word,
            suggestion: Some(s),
        } => m
            .text("I didn't expect ")
            .code(clip(word))
            .text(" there. Did you mean ")
            .code(*s)
            .text("?"),
        Problem::Unexpected {
            word,
            suggestion: None,
        } => m.text("I didn't expect ").code(clip(word)).text(" there"),
    }
}

/// The answer to a line addressed to chima that it could not understand.
pub fn not_understood(error: &ParseError, bot: &str) -> Reply {
    Reply::new(match error {
        ParseError::Empty => say(Tone::Info).text(format!(
            "Hi! I'm {bot}, I deploy things. Say `{bot} help` to see what I can do."
        )),
        ParseError::TooLong { len } => say(Tone::Error).text(format!(
            "That command is {len} bytes long; I read at most {MAX_LINE_BYTES}. Nothing was done."
        )),
        ParseError::UnknownCommand {
            word,
            suggestion: Some(spec),
        } => with_usage(
            say(Tone::Error)
                .text("I don't know the command ")
                .code(clip(word))
                .text(". Did you mean ")
                .code(spec.name)
                .text("? "),
            spec,
            bot,
        ),
        ParseError::UnknownCommand {
            word,
            suggestion: None,
        } => say(Tone::Error)
            .text("I don't know the command ")
            .code(clip(word))
            .text(format!(". Say `{bot} help` to see what I can do.")),
        ParseError::BadArguments { spec, problem } => {
            let m =
                say(Tone::Error).text(format!("I couldn't read that `{}` command: ", spec.name));
            with_usage(with_problem(m, problem).text(". "), spec, bot)
        }
    })
}

/// A web action that did not finish in time (stored as its reply).
pub fn web_action_too_slow(secs: u64) -> String {
    format!(
        "This took longer than {secs} s and was given up; what was done so far is above. Check the deployments and the audit before trying again."
    )
}

/// A message with more command lines than chima takes at once.
pub fn too_many_commands(count: usize) -> Reply {
    Reply::new(say(Tone::Error).text(format!(
        "That message has {count} commands for me; I take at most {MAX_COMMANDS_PER_MESSAGE} at a time. Nothing was done."
    )))
}

/// Every command, from the grammar's own table.
pub fn help(bot: &str) -> Reply {
    let mut m = say(Tone::Info).text(format!(
        "Here is what I can do (say `{bot} help <command>` for details):"
    ));
    for spec in COMMANDS {
        m = m
            .text("\n• ")
            .code(format!("{bot} {}", spec.usage))
            .text(format!(" — {}", spec.summary));
    }
    Reply::new(m).only_to_asker()
}

/// Details of one command.
pub fn help_for(spec: &CommandSpec, bot: &str) -> Reply {
    let mut m = say(Tone::Info)
        .code(format!("{bot} {}", spec.usage))
        .text(format!(" — {}", spec.summary));
    if !spec.aliases.is_empty() {
        m = m.text("\nAlso: ");
        for (i, alias) in spec.aliases.iter().enumerate() {
            if i > 0 {
                m = m.text(", ");
            }
            m = m.code(*alias);
        }
    }
    m = m.text("\nExamples:");
    for example in spec.examples {
        m = m.text("\n• ").code(format!("{bot} {example}"));
    }
    Reply::new(m).only_to_asker()
}

/// Help for a topic that is no command.
pub fn help_unknown_topic(topic: &str, bot: &str) -> Reply {
    let mut m = say(Tone::Error)
        .text("There is no command ")
        .code(clip(topic))
        .text(". Commands: ");
    for (i, spec) in COMMANDS.iter().enumerate() {
        if i > 0 {
            m = m.text(", ");
        }
        m = m.code(spec.name);
    }
    Reply::new(m.text(format!(". Say `{bot} help` for the list."))).only_to_asker()
}

/// Which chima answers.
pub fn version(bot: &str, forge: &str) -> Reply {
    Reply::new(say(Tone::Info).text(format!(
        "{bot} {} (chima, deployments via {forge})",
        env!("CARGO_PKG_VERSION")
    )))
}

/// Names joined with ", ", each quoted.
fn quoted_list<'a>(mut m: Message, names: impl IntoIterator<Item = &'a str>, sep: &str) -> Message {
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            m = m.text(sep.to_owned());
        }
        m = m.quoted(name);
    }
    m
}

/// The app is not in app.json.
pub fn unknown_app(app: &AppName, known: &[&AppName]) -> Reply {
    let mut m = say(Tone::Error)
        .quoted(app.as_str())
        .text("? Never heard of it.");
    if let Some(close) = known
        .iter()
        .map(|k| (k, strsim::damerau_levenshtein(app.as_str(), k.as_str())))
        .filter(|(_, d)| *d <= 2)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
    {
        m = m.text(" Did you mean ").code(close.as_str()).text("?");
    }
    m = m.text(" Apps I know: ");
    m = if known.is_empty() {
        m.text("none (app.json is empty)")
    } else {
        quoted_list(m, known.iter().map(|k| k.as_str()), ", ")
    };
    Reply::new(m.text("."))
}

/// The app has no such environment.
pub fn unknown_environment(app: &AppConfig, env: &EnvName) -> Reply {
    let m = say(Tone::Error)
        .quoted(app.name.as_str())
        .text(" doesn't seem to have a ")
        .quoted(env.as_str())
        .text(" environment. It has: ");
    let m = quoted_list(m, app.environments.iter().map(EnvName::as_str), ", ");
    Reply::new(m.text("."))
}

fn room_names(app: &AppConfig) -> Vec<String> {
    app.allowed_rooms
        .iter()
        .flatten()
        .map(|r| format!("#{}", r.trim_start_matches('#')))
        .collect()
}

/// The app may not be deployed from this room.
pub fn room_not_allowed(app: &AppConfig, room: &str) -> Reply {
    let rooms = room_names(app);
    let m = say(Tone::Error)
        .quoted(app.name.as_str())
        .text(" is not allowed to be deployed from ")
        .quoted(room)
        .text(". Deploy it from ");
    let m = quoted_list(m, rooms.iter().map(String::as_str), " or ");
    Reply::new(m.text("."))
}

/// Said when a one-time code was typed: chima does not check them.
pub fn otp_ignored() -> String {
    "(The one-time code was not used: chima authorises by room and by its GitHub token.)".to_owned()
}

/// The live message while chima asks GitHub for the deployment.
pub fn deploy_requested(
    user: &str,
    app: &AppName,
    git_ref: &str,
    env: &EnvName,
    task: &str,
) -> Reply {
    let m = say(Tone::Progress).quoted(user);
    let m = if task == "deploy" {
        m.text(" is deploying ")
    } else {
        m.text(" is running ").quoted(task).text(" for ")
    };
    Reply::new(
        m.quoted(format!("{app}/{git_ref}"))
            .text(" to ")
            .quoted(env.as_str())
            .text(": creating the deployment…"),
    )
}

/// 201: the deployment exists; a deployer will pick it up and edit this message.
pub fn deployment_created(
    app: &AppName,
    info: &DeploymentInfo,
    user: &str,
    note: Option<&str>,
) -> Reply {
    let mut m = say(Tone::Progress)
        .text(format!("Deployment #{} of ", info.id))
        .quoted(app.as_str())
        .text(" ")
        .quoted(format!("{}@{}", info.git_ref, info.short_sha()))
        .text(" to ")
        .quoted(info.environment.as_str())
        .text(" for ")
        .quoted(user)
        .text(": created, waiting for a deployer. ")
        .link(info.url.as_str(), info.url.as_str());
    if let Some(note) = note {
        m = m.text(format!(" {note}"));
    }
    Reply::new(m)
}

/// 202: GitHub merged the default branch into the ref instead of deploying.
pub fn auto_merged(app: &AppName, git_ref: &str, github_message: &str) -> Reply {
    Reply::new(
        say(Tone::Info)
            .text("GitHub merged the default branch into ")
            .code(clip(git_ref))
            .text(" first (")
            .quoted(format!("{github_message:?}"))
            .text("), so no deployment of ")
            .quoted(app.as_str())
            .text(" was made yet. Wait for CI on the merge commit, then deploy again."),
    )
}

/// 409: required contexts are not green. Offers "Deploy anyway" to the asker.
pub fn checks_failed(
    app: &AppName,
    contexts: &[(String, String)],
    forced_command: &str,
    user_id: &str,
) -> Reply {
    let list: Vec<String> = contexts.iter().map(|(c, s)| format!("{c} ({s})")).collect();
    let m = say(Tone::Error)
        .text("Unmet required commit status contexts for ")
        .quoted(app.as_str())
        .text(": ");
    let m = quoted_list(m, list.iter().map(String::as_str), ", ")
        .text(". Nothing was deployed. Fix them, or deploy anyway with ")
        .code(forced_command)
        .text(".");
    Reply::new(m).with_action(Action {
        kind: ActionKind::DeployAnyway,
        label: "Deploy anyway".to_owned(),
        command: forced_command.to_owned(),
        only_user: Some(user_id.to_owned()),
    })
}

/// 409: the default branch does not merge into the ref.
pub fn merge_conflict(app: &AppName, git_ref: &str, github_message: &str) -> Reply {
    Reply::new(
        say(Tone::Error)
            .text("GitHub could not merge the default branch into ")
            .code(clip(git_ref))
            .text(" for ")
            .quoted(app.as_str())
            .text(": ")
            .quoted(github_message)
            .text(" Nothing was deployed. Merge it yourself, or deploy without merging using `deploy!`."),
    )
}

/// 422: usually the ref does not exist.
pub fn unprocessable(app: &AppConfig, git_ref: &str, github_message: &str) -> Reply {
    let m = say(Tone::Error);
    Reply::new(if github_message.starts_with("No ref found") {
        m.text("There is no ")
            .code(clip(git_ref))
            .text(" in ")
            .quoted(app.repository.to_string())
            .text(" (")
            .quoted(format!("{github_message:?}"))
            .text("). Nothing was deployed.")
    } else {
        m.text("GitHub refused the deployment of ")
            .quoted(app.name.as_str())
            .text(" to ")
            .quoted(app.repository.to_string())
            .text(": ")
            .quoted(github_message)
            .text(". Nothing was deployed.")
    })
}

/// A GitHub failure while doing `action` ("create deployments", "read deployments", …).
pub fn forge_failed(app: &AppConfig, action: &str, error: &ForgeError) -> Reply {
    let token = if app.github_token.is_some() {
        "the app's github_token in app.json"
    } else {
        "GITHUB_TOKEN"
    };
    let unable = || {
        say(Tone::Error)
            .text(format!("Unable to {action} for "))
            .quoted(app.repository.to_string())
            .text(": ")
    };
    Reply::new(match error {
        ForgeError::BadCredentials => unable().text(format!(
            "GitHub rejected the token (401 Bad credentials). Check {token}."
        )),
        ForgeError::Forbidden { message } => unable()
            .text("GitHub answered 403 (")
            .quoted(message)
            .text("). The token needs the `repo_deployment` scope (classic token) or \"Deployments: read and write\" on this repository (fine-grained token or GitHub App)."),
        ForgeError::NotFound => unable().text(format!(
            "GitHub answered 404. The repository does not exist or {token} cannot see it; check the token's scopes (`repo` for a private repository)."
        )),
        ForgeError::Unreachable(detail) => unable()
            .text("I could not reach GitHub (")
            .quoted(detail)
            .text("). Nothing was changed; try again in a moment."),
        ForgeError::Unexpected { status, message } => unable()
            .text(format!("GitHub answered {status} ("))
            .quoted(message)
            .text("). Nothing was changed."),
        ForgeError::Unsupported(what) => say(Tone::Error).text(what.clone()),
    })
}

/// "5 min ago", "3 h ago", "2 days ago".
pub fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => {
            let days = secs / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
    }
}

/// The `deploys` list.
pub fn recent_deployments(
    app: &AppName,
    filter: &DeploymentFilter,
    list: &[DeploymentInfo],
    now: DateTime<Utc>,
) -> Reply {
    let scope = |mut m: Message| {
        if let Some(r) = &filter.git_ref {
            m = m.text(" of ").code(clip(r.as_str()));
        }
        if let Some(e) = &filter.environment {
            m = m.text(" in ").quoted(e.as_str());
        }
        m
    };
    if list.is_empty() {
        let m = say(Tone::Info)
            .text("No deployments of ")
            .quoted(app.as_str());
        return Reply::new(scope(m).text(" yet."));
    }
    let m = say(Tone::Info)
        .text("Recent deployments of ")
        .quoted(app.as_str());
    let mut m = scope(m).text(":");
    for d in list {
        m = m
            .text(format!("\n• #{} ", d.id))
            .quoted(format!("{}@{}", d.git_ref, d.short_sha()))
            .text(" to ")
            .quoted(d.environment.as_str());
        if d.task != "deploy" {
            m = m.text(" (").quoted(d.task.as_str()).text(")");
        }
        m = m
            .text(" by ")
            .quoted(d.creator.as_str())
            .text(format!(", {} — ", age(d.created_at, now)))
            .quoted(d.state.as_deref().unwrap_or("no status yet"));
    }
    Reply::new(m)
}

/// The `where can I deploy` answer.
pub fn environments(
    app: &AppConfig,
    current: &[(EnvName, Option<DeploymentInfo>)],
    locks: &Locks,
    now: DateTime<Utc>,
) -> Reply {
    let mut m = say(Tone::Info)
        .quoted(app.name.as_str())
        .text(" can be deployed to:");
    for (env, deployed) in current {
        m = m.text("\n• ").quoted(env.as_str());
        if *env == app.default_environment {
            m = m.text(" (default)");
        }
        m = m.text(" — ");
        m = match deployed {
            Some(d) => m
                .quoted(format!("{}@{}", d.git_ref, d.short_sha()))
                .text(format!(" (#{}, by ", d.id))
                .quoted(d.creator.as_str())
                .text(format!(", {})", age(d.created_at, now))),
            None => m.text("nothing deployed yet"),
        };
        if let Locks::Read(locks) = locks
            && let Some((_, lock)) = locks.iter().find(|(e, _)| e == env)
        {
            m = lock_held(m.text(" — "), lock, now);
        }
    }
    if let Locks::Unreadable(why) = locks {
        m = m.text("\nLocks could not be read: ").quoted(why);
    }
    if app.allowed_rooms.is_some() {
        let rooms = room_names(app);
        m = quoted_list(m.text("\nFrom: "), rooms.iter().map(String::as_str), ", ");
    }
    Reply::new(m)
}

/// What the `where can I deploy` answer knows of locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locks {
    /// No store to read them from (nothing is said).
    Unknown,
    /// The live locks, by environment.
    Read(Vec<(EnvName, EnvLock)>),
    /// The store did not answer (why).
    Unreadable(String),
}

/// `m` and a held lock, as one phrase: who, why, since and until when.
pub fn lock_held(m: Message, lock: &EnvLock, now: DateTime<Utc>) -> Message {
    let m = m
        .text("locked by ")
        .quoted(lock.shown_name())
        .text(format!(" since {}", age(lock.since(), now)));
    let m = match lock.expires_at {
        Some(end) => m.text(format!(", until {}", end.format("%Y-%m-%d %H:%M UTC"))),
        None => m,
    };
    m.text(": ").code(clip(&lock.reason))
}

fn check_line(m: Message, c: &CheckInfo) -> Message {
    let m = m
        .quoted(c.name.as_str())
        .text(" (")
        .quoted(c.state.as_str())
        .text(")");
    match &c.url {
        Some(url) if !url.is_empty() => m.text(" ").link(url.as_str(), url.as_str()),
        _ => m,
    }
}

fn check_list<'a>(
    mut m: Message,
    label: &str,
    checks: impl Iterator<Item = &'a CheckInfo>,
) -> Message {
    for (i, c) in checks.enumerate() {
        m = m.text(if i == 0 {
            format!("\n{label}: ")
        } else {
            "; ".to_owned()
        });
        m = check_line(m, c);
    }
    m
}

/// The `ci` answer: one verdict, then what failed and what still runs.
pub fn ci_report(app: &AppName, git_ref: &str, report: &CiReport) -> Reply {
    let short = report.sha.get(..7).unwrap_or(&report.sha);
    let subject = |m: Message| m.quoted(format!("{app}/{git_ref} ({short})"));
    let m = match report.verdict() {
        CiVerdict::Green => subject(say(Tone::Success).text("CI is green for "))
            .text(format!(": {} checks passed.", report.checks.len())),
        CiVerdict::Red => subject(say(Tone::Error).text("CI is red for ")).text("."),
        CiVerdict::Pending => {
            subject(say(Tone::Progress).text("CI is still running for ")).text(".")
        }
        CiVerdict::NoCi => subject(say(Tone::Info))
            .text(" has no CI configured: no commit statuses and no check runs."),
    };
    let m = check_list(m, "Failing", report.failing());
    Reply::new(check_list(m, "Pending", report.pending()))
}

/// A button pressed by someone other than the user it is for.
pub fn button_not_yours(owner: &str) -> Reply {
    Reply::new(
        say(Tone::Error)
            .text("Only ")
            .quoted(owner)
            .text(" can press this button: it repeats their command. Type the command yourself if you want it."),
    )
    .only_to_asker()
}

/// What a button message says once its button was pressed: the command it ran, who pressed
/// it and what it said.
pub fn button_pressed(command: &str, presser: &str, label: &str) -> Reply {
    Reply::new(
        say(Tone::Info)
            .code(clip(command))
            .text("\n")
            .quoted(presser)
            .text(" pressed \"")
            .quoted(label)
            .text("\"."),
    )
}

/// A button from an older chima whose value no longer reads.
pub fn button_outdated() -> Reply {
    Reply::new(
        say(Tone::Error).text(
            "That button is from an older chima and no longer works; type the command instead.",
        ),
    )
    .only_to_asker()
}

/// The watchdog: no deployer has picked a deployment up.
pub fn nobody_picked_up(app: &AppConfig, id: u64, waited_secs: u64, hooks_url: &str) -> Reply {
    Reply::new(
        say(Tone::Error)
            .text(format!("No deployer has picked up deployment #{id} of "))
            .quoted(app.name.as_str())
            .text(format!(" after {waited_secs} s: GitHub has no status for it. Check that "))
            .quoted(app.repository.to_string())
            .text(" has a webhook sending `deployment` events to faseng (`/webhooks/github`), that its secret matches GITHUB_WEBHOOK_SECRET, and that faseng is running: ")
            .link(hooks_url, hooks_url),
    )
}

/// Lines shown by `log` at most (the end of the log).
pub const LOG_LINES: usize = 200;

/// A deployment's log (the last [`LOG_LINES`] lines).
pub fn log(id: u64, lines: &[String]) -> Reply {
    if lines.is_empty() {
        return Reply::new(say(Tone::Info).text(format!("Deployment #{id} has no log yet.")));
    }
    let skipped = lines.len().saturating_sub(LOG_LINES);
    let mut head = format!("Log of deployment #{id}");
    if skipped > 0 {
        head.push_str(&format!(
            " (last {LOG_LINES} lines; {skipped} earlier lines not shown)"
        ));
    }
    head.push_str(":\n");
    Reply::new(
        say(Tone::Info)
            .text(head)
            .code_block(lines[skipped..].join("\n")),
    )
}

/// A log that could not be read.
pub fn log_unreadable(id: u64, error: &str) -> Reply {
    Reply::new(
        say(Tone::Error)
            .text(format!("I could not read the log of deployment #{id}: "))
            .quoted(error),
    )
}

/// What the forge cannot do here, said as it is (local mode has no CI).
pub fn unsupported(what: &str) -> Reply {
    Reply::new(say(Tone::Info).text(what.to_owned()))
}

/// `as <user>` in the shell.
pub fn speaking_as(user: &str) -> Reply {
    Reply::new(
        say(Tone::Info)
            .text("Now speaking as ")
            .quoted(user)
            .text(" (for the lines that follow)."),
    )
}

/// Local mode has no CI to ask.
pub fn no_ci_in_local_mode() -> String {
    "There is no CI in local mode: deployments are recorded on this machine, not on GitHub."
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::parse;
    use chrono::TimeZone;
    use deploy_core::{Apps, GitRef};

    const BOT: &str = "chima";

    /// A typed value as the shell shows it in code.
    fn code(s: &str) -> String {
        Reply::new(Message::new(Tone::Info).code(clip(s))).text()
    }

    fn apps() -> Apps {
        Apps::from_json(
            r#"{"project-x": {"provider": "fabric", "repository": "oursky/project-x",
                 "environments": ["live", "edge"], "allowed_rooms": ["deployment"],
                 "default_environment": "edge"},
               "trelhub": {"provider": "shell", "repository": "oursky/trelhub", "github_token": "t"}}"#,
        )
        .unwrap()
    }

    fn app(name: &str) -> AppConfig {
        apps().get(&AppName::parse(name).unwrap()).unwrap().clone()
    }

    #[test]
    fn code_spans_show_invisible_and_direction_characters_as_escapes() {
        assert_eq!(code("a`b\nc"), "`a'b c`");
        assert_eq!(code("evil\u{202e}gnp.exe"), "`evil\\u{202e}gnp.exe`");
        assert_eq!(code("a\u{200d}b"), "`a\\u{200d}b`");
        assert_eq!(code("café"), "`café`");
    }

    #[test]
    fn too_many_commands_says_nothing_was_done() {
        let r = too_many_commands(11);
        assert_eq!(r.tone(), Tone::Error);
        assert_eq!(
            r.text(),
            "That message has 11 commands for me; I take at most 10 at a time. Nothing was done."
        );
    }

    fn info(id: u64, state: Option<&str>) -> DeploymentInfo {
        DeploymentInfo {
            id,
            git_ref: "feature".into(),
            sha: "abc1234def".into(),
            environment: "edge".into(),
            task: "deploy".into(),
            creator: "joyz".into(),
            created_at: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
            state: state.map(str::to_owned),
            url: "https://github.com/oursky/project-x/deployments".into(),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 5, 0).unwrap()
    }

    fn not_understood_text(line: &str) -> String {
        not_understood(&parse(line).unwrap_err(), BOT).text()
    }

    #[test]
    fn code_spans_cannot_be_broken() {
        assert_eq!(code("a`b\nc"), "`a'b c`");
        assert_eq!(code(&"x".repeat(500)).len(), 122);
    }

    #[test]
    fn empty_command_greets() {
        assert_eq!(
            not_understood_text(""),
            "Hi! I'm chima, I deploy things. Say `chima help` to see what I can do."
        );
    }

    #[test]
    fn too_long_commands() {
        assert_eq!(
            not_understood_text(&"a".repeat(2000)),
            "That command is 2000 bytes long; I read at most 1000. Nothing was done."
        );
    }

    #[test]
    fn unknown_command_with_suggestion() {
        assert_eq!(
            not_understood_text("deplyo x"),
            "I don't know the command `deplyo`. Did you mean `deploy`? Usage: `chima deploy[!][:task] <app>[/<ref>] [to <env>[/<hosts>]] [when free]`"
        );
    }

    #[test]
    fn unknown_command_without_suggestion() {
        assert_eq!(
            not_understood_text("sandwich please"),
            "I don't know the command `sandwich`. Say `chima help` to see what I can do."
        );
    }

    #[test]
    fn bad_arguments_name_the_problem_and_usage() {
        let usage =
            "Usage: `chima deploy[!][:task] <app>[/<ref>] [to <env>[/<hosts>]] [when free]`";
        for (line, problem) in [
            ("deploy", "which app? Name one"),
            (
                "deploy x/a..b",
                "`a..b` is not a valid git ref: it contains '..'",
            ),
            (
                "deploy $(id)",
                "`$(id)` is not an app name: it may only contain a-z, 0-9, '-', '_' and '.', and must start with a letter or digit",
            ),
            (
                "deploy x to `id`",
                "`'id'` is not an environment name: it may only contain a-z, 0-9, '-', '_' and '.', and must start with a letter or digit",
            ),
            ("deploy x to", "`to` needs an environment after it"),
            (
                "deploy x to edge/;",
                "`;` is not a host list (letters, digits, '-', '_', '.', ',' and ':')",
            ),
            (
                "deploy:? x",
                "`deploy:?` is not a task; use `deploy`, `deploy!` or `deploy:<task>`",
            ),
            (
                "deploy x tos edge",
                "I didn't expect `tos` there. Did you mean `to`?",
            ),
            (
                "deploy x to edge burgers",
                "I didn't expect `burgers` there",
            ),
        ] {
            assert_eq!(
                not_understood_text(line),
                format!("I couldn't read that `deploy` command: {problem}. {usage}"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_slow_web_action_says_what_to_check() {
        assert_eq!(
            web_action_too_slow(90),
            "This took longer than 90 s and was given up; what was done so far is above. Check the deployments and the audit before trying again."
        );
    }

    #[test]
    fn rollback_and_stats_problems_are_explained() {
        assert_eq!(
            not_understood_text("rollback demo in staging to"),
            "I couldn't read that `rollback` command: `to` needs a ref or a deployment after it, like `v1.2.0` or `#12`. Usage: `chima rollback <app> in <env> [to <ref>|#<deployment>]`"
        );
        assert_eq!(
            not_understood_text("rollback demo in staging to #x"),
            "I couldn't read that `rollback` command: `#x` is not a deployment number. Usage: `chima rollback <app> in <env> [to <ref>|#<deployment>]`"
        );
        assert_eq!(
            not_understood_text("stats demo for 400d"),
            "I couldn't read that `stats` command: `400d` is too long: statistics cover at most 365d. Usage: `chima stats <app> [in <env>] [for <period>]`"
        );
        assert_eq!(
            not_understood_text("stats demo for ever"),
            "I couldn't read that `stats` command: `ever` is not a duration: write it like 90s, 30m, 4h, 1d or 1h30m. Usage: `chima stats <app> [in <env>] [for <period>]`"
        );
    }

    #[test]
    fn help_lists_every_command_from_the_table() {
        let reply = help(BOT);
        assert_eq!(reply.visibility, crate::chat::Visibility::OnlyAsker);
        for spec in COMMANDS {
            assert!(
                reply.text().contains(&format!("`chima {}`", spec.usage)),
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn help_for_one_command() {
        let spec = crate::grammar::spec("ci").unwrap();
        assert_eq!(
            help_for(spec, BOT).text(),
            format!(
                "`chima ci <app>[/<ref>]` — {}\nAlso: `status`\nExamples:\n• `chima ci project-x/feature`\n• `chima status trelhub`",
                spec.summary
            )
        );
    }

    #[test]
    fn help_for_unknown_topic() {
        assert_eq!(
            help_unknown_topic("dance", BOT).text(),
            "There is no command `dance`. Commands: `deploy`, `deploys`, `where`, `ci`, `log`, `rollback`, `stats`, `lock`, `unlock`, `locks`, `cancel`, `queue`, `freeze`, `unfreeze`, `freezes`, `audit`, `approve`, `reject`, `claim`, `recheck`, `requests`, `help`, `version`. Say `chima help` for the list."
        );
    }

    #[test]
    fn version_names_the_forge() {
        assert_eq!(
            version(BOT, "GitHub").text(),
            format!(
                "chima {} (chima, deployments via GitHub)",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn unknown_app_suggests_and_lists() {
        let apps = apps();
        let known: Vec<&AppName> = apps.names().collect();
        assert_eq!(
            unknown_app(&AppName::parse("project-y").unwrap(), &known).text(),
            "project-y? Never heard of it. Did you mean `project-x`? Apps I know: project-x, trelhub."
        );
        assert_eq!(
            unknown_app(&AppName::parse("zzz").unwrap(), &[]).text(),
            "zzz? Never heard of it. Apps I know: none (app.json is empty)."
        );
    }

    #[test]
    fn unknown_environment_lists_the_real_ones() {
        assert_eq!(
            unknown_environment(&app("project-x"), &EnvName::parse("staging").unwrap()).text(),
            "project-x doesn't seem to have a staging environment. It has: live, edge."
        );
    }

    #[test]
    fn room_not_allowed_names_the_allowed_rooms() {
        assert_eq!(
            room_not_allowed(&app("project-x"), "#random").text(),
            "project-x is not allowed to be deployed from #random. Deploy it from #deployment."
        );
    }

    #[test]
    fn otp_note() {
        assert!(otp_ignored().contains("one-time code was not used"));
    }

    #[test]
    fn live_message_while_asking_github() {
        let app_name = AppName::parse("project-x").unwrap();
        let edge = EnvName::parse("edge").unwrap();
        assert_eq!(
            deploy_requested("joyz", &app_name, "feature/login", &edge, "deploy").text(),
            "joyz is deploying project-x/feature/login to edge: creating the deployment…"
        );
        assert_eq!(
            deploy_requested("joyz", &app_name, "main", &edge, "deploy:migrate").text(),
            "joyz is running deploy:migrate for project-x/main to edge: creating the deployment…"
        );
    }

    #[test]
    fn created_deployment_message() {
        let reply = deployment_created(
            &AppName::parse("project-x").unwrap(),
            &info(1001, None),
            "joyz",
            None,
        );
        assert_eq!(
            reply.text(),
            "Deployment #1001 of project-x feature@abc1234 to edge for joyz: created, waiting for a deployer. https://github.com/oursky/project-x/deployments"
        );
        assert_eq!(reply.tone(), Tone::Progress);
    }

    #[test]
    fn auto_merged_message() {
        assert_eq!(
            auto_merged(
                &AppName::parse("x").unwrap(),
                "topic",
                "Auto-merged main into topic on deployment."
            )
            .text(),
            "GitHub merged the default branch into `topic` first (\"Auto-merged main into topic on deployment.\"), so no deployment of x was made yet. Wait for CI on the merge commit, then deploy again."
        );
    }

    #[test]
    fn checks_failed_offers_deploy_anyway_to_the_asker() {
        let reply = checks_failed(
            &AppName::parse("project-x").unwrap(),
            &[
                ("ci/travis".into(), "failure".into()),
                ("lint".into(), "missing".into()),
            ],
            "chima deploy! project-x/feature to edge",
            "U1",
        );
        assert_eq!(
            reply.text(),
            "Unmet required commit status contexts for project-x: ci/travis (failure), lint (missing). Nothing was deployed. Fix them, or deploy anyway with `chima deploy! project-x/feature to edge`."
        );
        assert_eq!(reply.actions[0].kind, ActionKind::DeployAnyway);
        assert_eq!(reply.actions[0].only_user.as_deref(), Some("U1"));
    }

    #[test]
    fn merge_conflict_message() {
        assert_eq!(
            merge_conflict(
                &AppName::parse("x").unwrap(),
                "topic",
                "Conflict merging main into topic."
            )
            .text(),
            "GitHub could not merge the default branch into `topic` for x: Conflict merging main into topic. Nothing was deployed. Merge it yourself, or deploy without merging using `deploy!`."
        );
    }

    #[test]
    fn unknown_ref_and_other_422s() {
        assert_eq!(
            unprocessable(&app("project-x"), "nope", "No ref found for: nope").text(),
            "There is no `nope` in oursky/project-x (\"No ref found for: nope\"). Nothing was deployed."
        );
        assert_eq!(
            unprocessable(&app("project-x"), "x", "Validation Failed").text(),
            "GitHub refused the deployment of project-x to oursky/project-x: Validation Failed. Nothing was deployed."
        );
    }

    #[test]
    fn github_failures_say_which_credential_and_scope() {
        let x = app("project-x");
        let t = app("trelhub");
        let action = "create deployments";
        assert_eq!(
            forge_failed(&x, action, &ForgeError::BadCredentials).text(),
            "Unable to create deployments for oursky/project-x: GitHub rejected the token (401 Bad credentials). Check GITHUB_TOKEN."
        );
        assert_eq!(
            forge_failed(&t, action, &ForgeError::BadCredentials).text(),
            "Unable to create deployments for oursky/trelhub: GitHub rejected the token (401 Bad credentials). Check the app's github_token in app.json."
        );
        assert_eq!(
            forge_failed(
                &x,
                action,
                &ForgeError::Forbidden {
                    message: "Resource not accessible".into()
                }
            )
            .text(),
            "Unable to create deployments for oursky/project-x: GitHub answered 403 (Resource not accessible). The token needs the `repo_deployment` scope (classic token) or \"Deployments: read and write\" on this repository (fine-grained token or GitHub App)."
        );
        assert_eq!(
            forge_failed(&x, action, &ForgeError::NotFound).text(),
            "Unable to create deployments for oursky/project-x: GitHub answered 404. The repository does not exist or GITHUB_TOKEN cannot see it; check the token's scopes (`repo` for a private repository)."
        );
        assert_eq!(
            forge_failed(
                &x,
                action,
                &ForgeError::Unreachable("connection refused".into())
            )
            .text(),
            "Unable to create deployments for oursky/project-x: I could not reach GitHub (connection refused). Nothing was changed; try again in a moment."
        );
        assert_eq!(
            forge_failed(
                &x,
                action,
                &ForgeError::Unexpected {
                    status: 500,
                    message: "boom".into()
                }
            )
            .text(),
            "Unable to create deployments for oursky/project-x: GitHub answered 500 (boom). Nothing was changed."
        );
        assert_eq!(
            forge_failed(&x, action, &ForgeError::Unsupported("no".into())).text(),
            "no"
        );
    }

    #[test]
    fn ages() {
        let now = now();
        assert_eq!(age(now, now), "just now");
        assert_eq!(age(now - chrono::Duration::minutes(5), now), "5 min ago");
        assert_eq!(age(now - chrono::Duration::hours(3), now), "3 h ago");
        assert_eq!(age(now - chrono::Duration::days(1), now), "1 day ago");
        assert_eq!(age(now - chrono::Duration::days(9), now), "9 days ago");
        assert_eq!(age(now + chrono::Duration::minutes(1), now), "just now");
    }

    #[test]
    fn recent_deployments_list() {
        let x = AppName::parse("project-x").unwrap();
        let filter = DeploymentFilter {
            environment: Some(EnvName::parse("edge").unwrap()),
            ..DeploymentFilter::default()
        };
        let mut migrate = info(1002, None);
        migrate.task = "deploy:migrate".into();
        assert_eq!(
            recent_deployments(&x, &filter, &[migrate, info(1001, Some("success"))], now()).text(),
            "Recent deployments of project-x in edge:\n• #1002 feature@abc1234 to edge (deploy:migrate) by joyz, 5 min ago — no status yet\n• #1001 feature@abc1234 to edge by joyz, 5 min ago — success"
        );
        let by_ref = DeploymentFilter {
            git_ref: Some(GitRef::parse("main").unwrap()),
            ..DeploymentFilter::default()
        };
        assert_eq!(
            recent_deployments(&x, &by_ref, &[], now()).text(),
            "No deployments of project-x of `main` yet."
        );
    }

    #[test]
    fn where_can_i_deploy_answer() {
        let x = app("project-x");
        let current = vec![
            (EnvName::parse("live").unwrap(), None),
            (
                EnvName::parse("edge").unwrap(),
                Some(info(1001, Some("success"))),
            ),
        ];
        assert_eq!(
            environments(&x, &current, &Locks::Unknown, now()).text(),
            "project-x can be deployed to:\n• live — nothing deployed yet\n• edge (default) — feature@abc1234 (#1001, by joyz, 5 min ago)\nFrom: #deployment"
        );
        let lock = EnvLock {
            user: "U0ALICE".into(),
            user_name: "alice".into(),
            reason: "testing the migration".into(),
            at: now() - chrono::Duration::minutes(5),
            expires_at: Some("2026-12-24T18:00:00Z".parse().unwrap()),
            thread: None,
            reminded_at: None,
            branch: None,
        };
        let locked = Locks::Read(vec![(EnvName::parse("live").unwrap(), lock)]);
        assert_eq!(
            environments(&x, &current, &locked, now()).text(),
            "project-x can be deployed to:\n• live — nothing deployed yet — locked by alice since 5 min ago, until 2026-12-24 18:00 UTC: `testing the migration`\n• edge (default) — feature@abc1234 (#1001, by joyz, 5 min ago)\nFrom: #deployment"
        );
        let unreadable = Locks::Unreadable("connection refused".into());
        assert!(
            environments(&x, &current, &unreadable, now())
                .text()
                .ends_with("Locks could not be read: connection refused\nFrom: #deployment")
        );
    }

    fn check(name: &str, state: &str, url: Option<&str>) -> CheckInfo {
        CheckInfo {
            name: name.into(),
            state: state.into(),
            url: url.map(str::to_owned),
        }
    }

    #[test]
    fn ci_answers() {
        let x = AppName::parse("project-x").unwrap();
        let report = |checks| CiReport {
            sha: "abc1234def".into(),
            checks,
        };
        assert_eq!(
            ci_report(
                &x,
                "feature",
                &report(vec![
                    check("build", "failure", Some("https://ci/1")),
                    check("lint", "pending", None),
                    check("unit", "success", None),
                ])
            )
            .text(),
            "CI is red for project-x/feature (abc1234).\nFailing: build (failure) https://ci/1\nPending: lint (pending)"
        );
        assert_eq!(
            ci_report(
                &x,
                "main",
                &report(vec![check("lint", "in_progress", None)])
            )
            .text(),
            "CI is still running for project-x/main (abc1234).\nPending: lint (in_progress)"
        );
        assert_eq!(
            ci_report(
                &x,
                "main",
                &report(vec![
                    check("a", "success", None),
                    check("b", "neutral", None)
                ])
            )
            .text(),
            "CI is green for project-x/main (abc1234): 2 checks passed."
        );
        assert_eq!(
            ci_report(&x, "main", &report(vec![])).text(),
            "project-x/main (abc1234) has no CI configured: no commit statuses and no check runs."
        );
    }

    #[test]
    fn buttons_for_someone_else() {
        let reply = button_not_yours("joyz");
        assert_eq!(
            reply.text(),
            "Only joyz can press this button: it repeats their command. Type the command yourself if you want it."
        );
        assert_eq!(reply.visibility, crate::chat::Visibility::OnlyAsker);
        assert_eq!(
            button_pressed("chima deploy! x", "joyz", "Deploy anyway").text(),
            "`chima deploy! x`\njoyz pressed \"Deploy anyway\"."
        );
    }

    #[test]
    fn watchdog_says_what_to_check() {
        assert_eq!(
            nobody_picked_up(
                &app("project-x"),
                1001,
                60,
                "https://github.com/oursky/project-x/settings/hooks"
            )
            .text(),
            "No deployer has picked up deployment #1001 of project-x after 60 s: GitHub has no status for it. Check that oursky/project-x has a webhook sending `deployment` events to faseng (`/webhooks/github`), that its secret matches GITHUB_WEBHOOK_SECRET, and that faseng is running: https://github.com/oursky/project-x/settings/hooks"
        );
    }

    #[test]
    fn logs_show_their_end() {
        assert_eq!(log(3, &[]).text(), "Deployment #3 has no log yet.");
        assert_eq!(
            log(3, &["==> shell: script/deploy".into(), "done".into()]).text(),
            "Log of deployment #3:\n    ==> shell: script/deploy\n    done"
        );
        let many: Vec<String> = (0..250).map(|i| format!("line {i}")).collect();
        let text = log(4, &many).text();
        assert!(text.starts_with(
            "Log of deployment #4 (last 200 lines; 50 earlier lines not shown):\n    line 50\n"
        ));
        assert!(text.ends_with("    line 249"));
        let slack = deploy_core::chat::slack::mrkdwn(&log(3, &["a <!here>".into()]).message);
        assert_eq!(slack, "Log of deployment #3:\n```\na &lt;!here&gt;\n```");
    }

    #[test]
    fn bad_log_ids() {
        assert_eq!(
            not_understood_text("log x"),
            "I couldn't read that `log` command: `x` is not a deployment number. Usage: `chima log <id>`"
        );
    }

    #[test]
    fn local_mode_has_no_ci() {
        assert!(no_ci_in_local_mode().starts_with("There is no CI in local mode"));
    }
}
