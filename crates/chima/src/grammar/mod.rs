//! The command grammar: which lines are for chima, and what they mean. No I/O, no async.
//!
//! `deploy[!][:task] <app>[/<ref>] [to|in|on <env>[/<hosts>]] [<otp>]` and friends, hubot-deploy
//! compatible. Help and "did you mean" are generated from [`COMMANDS`], so they cannot drift
//! from what the parser accepts.

mod commands;
mod desk;
mod requests;
mod rollback;

pub use commands::{COMMANDS, CommandSpec};

pub use desk::{DeskCommand, FreezeScope, MAX_REASON_CHARS};
pub use requests::RequestCommand;
pub use rollback::{
    DEFAULT_STATS_PERIOD, MAX_STATS_PERIOD, RollbackCommand, RollbackTarget, StatsCommand,
};

use deploy_core::{AppName, EnvName, GitRef, NameError, RefError, SpanError};

/// Longest line chima will read; longer lines are refused before any parsing.
pub const MAX_LINE_BYTES: usize = 1000;

/// Most command lines chima takes from one chat message; a message with more is refused
/// whole, so a pasted log or a flood of `deploy` lines cannot start a flood of deployments.
pub const MAX_COMMANDS_PER_MESSAGE: usize = 10;

/// Looks a command up by its name or an alias.
pub fn spec(word: &str) -> Option<&'static CommandSpec> {
    let word = word.to_ascii_lowercase();
    COMMANDS
        .iter()
        .find(|c| c.name == word || c.aliases.contains(&word.as_str()))
}

fn spec_named(name: &str) -> &'static CommandSpec {
    spec(name).expect("command is in the table")
}

pub use deploy_core::Task;

/// A parsed `deploy` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployCommand {
    /// `deploy`, `deploy:migrate`, …
    pub task: Task,
    /// `deploy!`: skip auto-merge and required contexts.
    pub force: bool,
    /// The app, as typed (lower-cased).
    pub app: AppName,
    /// The ref, when given.
    pub git_ref: Option<GitRef>,
    /// The environment, when given (aliases expanded).
    pub env: Option<EnvName>,
    /// Host filter (`to production/host1,host2`), when given.
    pub hosts: Option<String>,
    /// A trailing one-time code (hubot-deploy compatibility), when given.
    pub otp: Option<String>,
    /// `when free`: wait in line behind a lock or freeze instead of being refused.
    pub when_free: bool,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a deployment.
    Deploy(DeployCommand),
    /// List recent deployments.
    Deploys {
        /// The app.
        app: AppName,
        /// Only this ref.
        git_ref: Option<GitRef>,
        /// Only this environment.
        env: Option<EnvName>,
    },
    /// List environments and what is deployed there.
    WhereCanIDeploy {
        /// The app.
        app: AppName,
    },
    /// Is CI green for a ref?
    Ci {
        /// The app.
        app: AppName,
        /// The ref (default branch when absent).
        git_ref: Option<GitRef>,
    },
    /// Help, for everything or one command.
    Help {
        /// The command asked about.
        topic: Option<String>,
    },
    /// Which chima is this.
    Version,
    /// Show a deployment's log.
    Log {
        /// Deployment id.
        id: u64,
    },
    /// A release-desk command (locks, the line, freezes, the audit).
    Desk(DeskCommand),
    /// A release-request command (approve, reject, claim, …).
    Request(RequestCommand),
    /// Deploy an earlier commit again.
    Rollback(RollbackCommand),
    /// Delivery statistics.
    Stats(StatsCommand),
}

/// What exactly was wrong with a command's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The app name is missing.
    MissingApp,
    /// The app name is not a valid name.
    BadApp(String, NameError),
    /// The ref is not a valid git ref.
    BadRef(String, RefError),
    /// The environment is not a valid name.
    BadEnv(String, NameError),
    /// `to` / `in` / `on` without an environment after it.
    MissingEnv(String),
    /// The host filter has characters other than letters, digits, `-_.,:`.
    BadHosts(String),
    /// The task is not `deploy` or `deploy:<word>`.
    BadTask(String),
    /// A deployment id is missing.
    MissingId,
    /// A deployment id is not a number.
    BadId(String),
    /// A request command without its `#<number>`.
    MissingRequest,
    /// A request number that does not read (`3` without `#`, `#x`).
    BadRequest(String),
    /// A command that needs a reason after `:` got none.
    MissingReason,
    /// A reason longer than [`MAX_REASON_CHARS`] (its length).
    ReasonTooLong(usize),
    /// `for` / `since` without a duration after it.
    MissingDuration(&'static str),
    /// A duration that does not read.
    BadDuration(String, SpanError),
    /// A period longer than [`MAX_STATS_PERIOD`] (as typed).
    PeriodTooLong(String),
    /// `to` without a ref or `#<deployment>` after it.
    MissingTarget(String),
    /// A word that does not belong, with a close keyword when there is one.
    Unexpected {
        /// The word.
        word: String,
        /// A keyword it resembles (`tos` → `to`).
        suggestion: Option<&'static str>,
    },
}

/// Why a line addressed to chima was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Only the bot's name, nothing after it.
    Empty,
    /// The line is longer than [`MAX_LINE_BYTES`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The first word is no command.
    UnknownCommand {
        /// The word.
        word: String,
        /// The closest command, if any is close.
        suggestion: Option<&'static CommandSpec>,
    },
    /// A known command with arguments it does not take.
    BadArguments {
        /// The command.
        spec: &'static CommandSpec,
        /// What was wrong.
        problem: Problem,
    },
}

/// How to recognise lines meant for chima.
#[derive(Debug, Clone)]
pub struct Addressing<'a> {
    /// The word that addresses the bot (`CHIMA_NAME`).
    pub bot_name: &'a str,
    /// Every line is for chima (slash command, DM, shell).
    pub implicit: bool,
}

/// The command lines in a chat message that are meant for chima, with the address removed.
/// Lines inside ``` code blocks and quoted lines (`>`) are skipped.
pub fn addressed_lines(text: &str, addressing: &Addressing<'_>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_code_block = false;
    for line in text.lines() {
        let trimmed = line.trim();
        let fences = trimmed.matches("```").count();
        if in_code_block || fences > 0 {
            if fences % 2 == 1 {
                in_code_block = !in_code_block;
            }
            continue;
        }
        if trimmed.starts_with('>') || trimmed.starts_with('`') {
            continue;
        }
        match strip_address(trimmed, addressing) {
            Some(rest) => lines.push(rest.trim().to_owned()),
            None if addressing.implicit && !trimmed.is_empty() => lines.push(trimmed.to_owned()),
            None => {}
        }
    }
    lines
}

/// The rest of `line` after the bot's address, or `None` when the line does not address it.
fn strip_address<'l>(line: &'l str, addressing: &Addressing<'_>) -> Option<&'l str> {
    let name = addressing.bot_name;
    let body = line.strip_prefix('@').unwrap_or(line);
    let head = body.get(..name.len())?;
    if !head.eq_ignore_ascii_case(name) {
        return None;
    }
    after_separator(&body[name.len()..])
}

fn after_separator(rest: &str) -> Option<&str> {
    let rest = rest
        .strip_prefix(':')
        .or_else(|| rest.strip_prefix(','))
        .unwrap_or(rest);
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some(rest)
}

/// Parses one command line (without the bot's address).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(ParseError::TooLong { len: line.len() });
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&first, rest)) = words.split_first() else {
        return Err(ParseError::Empty);
    };
    let lower = first.to_ascii_lowercase();
    let after_first = line.trim_start()[first.len()..].trim_start();
    if requests::is_request_command(&lower, rest.first().copied()) {
        return requests::parse(&lower, after_first).map(Command::Request);
    }
    if lower.starts_with("deploy") && lower != "deploys" {
        return parse_deploy(first, rest);
    }
    if let Some(desk) = desk::parse(&lower, after_first) {
        return desk.map(Command::Desk);
    }
    match spec(&lower).map(|s| s.name) {
        Some("rollback") => rollback::parse_rollback(after_first).map(Command::Rollback),
        Some("stats") => rollback::parse_stats(after_first).map(Command::Stats),
        Some("deploys") => parse_deploys(rest),
        Some("where") => parse_where(rest),
        Some("ci") => parse_ci(rest),
        Some("help") => parse_help(rest),
        Some("log") => parse_log(rest),
        Some("version") => no_more(spec_named("version"), rest).map(|()| Command::Version),
        _ => Err(ParseError::UnknownCommand {
            suggestion: closest_command(&lower),
            word: first.to_owned(),
        }),
    }
}

fn bad(spec: &'static CommandSpec, problem: Problem) -> ParseError {
    ParseError::BadArguments { spec, problem }
}

fn closest_command(word: &str) -> Option<&'static CommandSpec> {
    let word = word.trim_end_matches(['!', '?', '.', ':']);
    COMMANDS
        .iter()
        .flat_map(|c| {
            std::iter::once(c.name)
                .chain(c.aliases.iter().copied())
                .map(move |n| (c, n))
        })
        .map(|(c, n)| (c, strsim::damerau_levenshtein(word, n)))
        .filter(|(c, d)| *d <= 2.min(c.name.len() / 2).max(1))
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| c)
}

fn closest_keyword(word: &str, keywords: &[&'static str]) -> Option<&'static str> {
    let lower = word.to_ascii_lowercase();
    keywords
        .iter()
        .copied()
        .find(|k| strsim::damerau_levenshtein(&lower, k) <= 1)
}

fn no_more(spec: &'static CommandSpec, rest: &[&str]) -> Result<(), ParseError> {
    match rest.first() {
        None => Ok(()),
        Some(word) => Err(bad(
            spec,
            Problem::Unexpected {
                word: (*word).to_owned(),
                suggestion: None,
            },
        )),
    }
}

fn parse_app_and_ref(
    spec: &'static CommandSpec,
    word: Option<&&str>,
) -> Result<(AppName, Option<GitRef>), ParseError> {
    let Some(word) = word else {
        return Err(bad(spec, Problem::MissingApp));
    };
    let word = word.trim_end_matches('?');
    let (app, git_ref) = match word.split_once('/') {
        Some((app, git_ref)) => (app, Some(git_ref)),
        None => (word, None),
    };
    let app = AppName::parse(app).map_err(|e| bad(spec, Problem::BadApp(app.to_owned(), e)))?;
    let git_ref = git_ref
        .map(|r| {
            // git allows `$(id)` or `a;b` as branch names; in chat they are a mistake or an
            // attack, so they are refused here rather than sent to GitHub.
            GitRef::parse(r)
                .and_then(|parsed| match parsed.shell_metacharacter() {
                    Some(c) => Err(RefError::ShellMetacharacter(c)),
                    None => Ok(parsed),
                })
                .map_err(|e| bad(spec, Problem::BadRef(r.to_owned(), e)))
        })
        .transpose()?;
    Ok((app, git_ref))
}

const ENV_KEYWORDS: &[&str] = &["to", "in", "on"];

fn parse_env_word(
    spec: &'static CommandSpec,
    word: &str,
) -> Result<(EnvName, Option<String>), ParseError> {
    let (env, hosts) = match word.split_once('/') {
        Some((env, hosts)) => (env, Some(hosts)),
        None => (word, None),
    };
    let env = EnvName::parse_with_aliases(env)
        .map_err(|e| bad(spec, Problem::BadEnv(env.to_owned(), e)))?;
    let hosts = hosts
        .map(|h| {
            let ok = !h.is_empty()
                && h.len() <= 255
                && !h.starts_with(['-', '.', ','])
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.,:".contains(c));
            if ok {
                Ok(h.to_owned())
            } else {
                Err(bad(spec, Problem::BadHosts(h.to_owned())))
            }
        })
        .transpose()?;
    Ok((env, hosts))
}

fn is_otp(word: &str) -> bool {
    let yubikey = (32..=64).contains(&word.len())
        && word
            .chars()
            .all(|c| "cbdefghijklnrtuv".contains(c.to_ascii_lowercase()));
    let totp = word.len() == 6 && word.bytes().all(|b| b.is_ascii_digit());
    yubikey || totp
}

fn parse_deploy(first: &str, rest: &[&str]) -> Result<Command, ParseError> {
    let spec = spec_named("deploy");
    let lower = first.to_ascii_lowercase();
    // `deploy!`, `deploy!:migrate` and hubot-deploy's `deploy:migrate!` are all forced.
    let bangs = lower.matches('!').count();
    let force = bangs > 0;
    if bangs > 1 || (force && !(lower.ends_with('!') || lower.starts_with("deploy!"))) {
        return Err(bad(spec, Problem::BadTask(first.to_owned())));
    }
    let task_word = lower.replace('!', "");
    let Some(task) = Task::parse_command(&task_word) else {
        if task_word.starts_with("deploy:") || task_word == "deploy" {
            return Err(bad(spec, Problem::BadTask(first.to_owned())));
        }
        return Err(ParseError::UnknownCommand {
            word: first.to_owned(),
            suggestion: Some(spec),
        });
    };
    let (app, git_ref) = parse_app_and_ref(spec, rest.first())?;
    let mut cursor = 1;
    let mut env = None;
    let mut hosts = None;
    if let Some(word) = rest.get(cursor)
        && ENV_KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
    {
        let Some(env_word) = rest.get(cursor + 1) else {
            return Err(bad(spec, Problem::MissingEnv((*word).to_owned())));
        };
        let (e, h) = parse_env_word(spec, env_word)?;
        env = Some(e);
        hosts = h;
        cursor += 2;
    }
    let mut otp = None;
    if let Some(word) = rest.get(cursor)
        && is_otp(word)
    {
        otp = Some((*word).to_owned());
        cursor += 1;
    }
    let mut when_free = false;
    if let (Some(when), Some(free)) = (rest.get(cursor), rest.get(cursor + 1))
        && when.eq_ignore_ascii_case("when")
        && free
            .trim_end_matches(['.', '!'])
            .eq_ignore_ascii_case("free")
    {
        when_free = true;
        cursor += 2;
    }
    if let Some(word) = rest.get(cursor) {
        let suggestion = if env.is_none() {
            closest_keyword(word, ENV_KEYWORDS)
        } else {
            None
        };
        return Err(bad(
            spec,
            Problem::Unexpected {
                word: (*word).to_owned(),
                suggestion,
            },
        ));
    }
    Ok(Command::Deploy(DeployCommand {
        task,
        force,
        app,
        git_ref,
        env,
        hosts,
        otp,
        when_free,
    }))
}

fn parse_deploys(rest: &[&str]) -> Result<Command, ParseError> {
    let spec = spec_named("deploys");
    let (app, git_ref) = parse_app_and_ref(spec, rest.first())?;
    let mut env = None;
    let mut cursor = 1;
    if let Some(word) = rest.get(1) {
        if !ENV_KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            return Err(bad(
                spec,
                Problem::Unexpected {
                    word: (*word).to_owned(),
                    suggestion: closest_keyword(word, ENV_KEYWORDS),
                },
            ));
        }
        let Some(env_word) = rest.get(2) else {
            return Err(bad(spec, Problem::MissingEnv((*word).to_owned())));
        };
        let env_word = env_word.trim_end_matches('?');
        env = Some(
            EnvName::parse_with_aliases(env_word)
                .map_err(|e| bad(spec, Problem::BadEnv(env_word.to_owned(), e)))?,
        );
        cursor = 3;
    }
    no_more(spec, &rest[cursor.min(rest.len())..])?;
    Ok(Command::Deploys { app, git_ref, env })
}

fn parse_where(rest: &[&str]) -> Result<Command, ParseError> {
    let spec = spec_named("where");
    let expected = ["can", "i", "deploy"];
    for (i, keyword) in expected.iter().enumerate() {
        match rest.get(i) {
            Some(word) if word.eq_ignore_ascii_case(keyword) => {}
            Some(word) => {
                return Err(bad(
                    spec,
                    Problem::Unexpected {
                        word: (*word).to_owned(),
                        suggestion: Some(keyword),
                    },
                ));
            }
            None => return Err(bad(spec, Problem::MissingApp)),
        }
    }
    let (app, git_ref) = parse_app_and_ref(spec, rest.get(3))?;
    if let Some(r) = git_ref {
        return Err(bad(
            spec,
            Problem::Unexpected {
                word: format!("/{r}"),
                suggestion: None,
            },
        ));
    }
    no_more(spec, &rest[4.min(rest.len())..])?;
    Ok(Command::WhereCanIDeploy { app })
}

fn parse_ci(rest: &[&str]) -> Result<Command, ParseError> {
    let spec = spec_named("ci");
    let (app, git_ref) = parse_app_and_ref(spec, rest.first())?;
    no_more(spec, &rest[1.min(rest.len())..])?;
    Ok(Command::Ci { app, git_ref })
}

fn parse_log(rest: &[&str]) -> Result<Command, ParseError> {
    let spec = spec_named("log");
    let Some(word) = rest.first() else {
        return Err(bad(spec, Problem::MissingId));
    };
    let id = word
        .trim_start_matches('#')
        .parse::<u64>()
        .map_err(|_| bad(spec, Problem::BadId((*word).to_owned())))?;
    no_more(spec, &rest[1..])?;
    Ok(Command::Log { id })
}

fn parse_help(rest: &[&str]) -> Result<Command, ParseError> {
    let spec = spec_named("help");
    let topic = rest.first().map(|w| w.to_ascii_lowercase());
    no_more(spec, &rest[1.min(rest.len())..])?;
    Ok(Command::Help { topic })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(line: &str) -> DeployCommand {
        match parse(line) {
            Ok(Command::Deploy(d)) => d,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn problem(line: &str) -> Problem {
        match parse(line) {
            Err(ParseError::BadArguments { problem, .. }) => problem,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn app(s: &str) -> AppName {
        AppName::parse(s).unwrap()
    }

    #[test]
    fn task_words_never_start_with_a_dash() {
        for bad in ["deploy:--upload-pack", "deploy:-x", "deploy:migrate:-f"] {
            assert_eq!(Task::parse_command(bad), None, "{bad}");
            assert!(
                matches!(problem(&format!("{bad} trelhub")), Problem::BadTask(_)),
                "{bad}"
            );
        }
        assert!(Task::parse_command("deploy:db-migrate_2").is_some());
    }

    #[test]
    fn refs_with_shell_metacharacters_are_refused_in_chat() {
        for (line, r, c) in [
            ("deploy x/$(id) to edge", "$(id)", '$'),
            ("deploy x/`id`", "`id`", '`'),
            ("deploy x/main;id", "main;id", ';'),
            ("deploy x/a|b", "a|b", '|'),
            ("deploys x/a&&b", "a&&b", '&'),
            ("ci x/<script>", "<script>", '<'),
        ] {
            assert_eq!(
                problem(line),
                Problem::BadRef(r.to_owned(), RefError::ShellMetacharacter(c)),
                "{line}"
            );
        }
    }

    fn env(s: &str) -> Option<EnvName> {
        Some(EnvName::parse(s).unwrap())
    }

    fn git_ref(s: &str) -> Option<GitRef> {
        Some(GitRef::parse(s).unwrap())
    }

    #[test]
    fn deploy_app_alone() {
        assert_eq!(
            deploy("deploy project-x"),
            DeployCommand {
                task: Task::Deploy,
                force: false,
                app: app("project-x"),
                git_ref: None,
                env: None,
                hosts: None,
                otp: None,
                when_free: false,
            }
        );
    }

    #[test]
    fn deploy_ref_may_contain_slashes() {
        let d = deploy("deploy project-x/feature/login to edge");
        assert_eq!(d.app, app("project-x"));
        assert_eq!(d.git_ref, git_ref("feature/login"));
        assert_eq!(d.env, env("edge"));
        let h = deploy("deploy hubot/atmos/branch");
        assert_eq!((h.app, h.git_ref), (app("hubot"), git_ref("atmos/branch")));
    }

    #[test]
    fn deploy_environment_keywords_to_in_on() {
        for kw in ["to", "in", "on", "TO"] {
            assert_eq!(
                deploy(&format!("deploy trelhub {kw} pandawork")).env,
                env("pandawork")
            );
        }
    }

    #[test]
    fn deploy_environment_aliases() {
        assert_eq!(deploy("deploy x to prod").env, env("production"));
        assert_eq!(deploy("deploy x to stg").env, env("staging"));
    }

    #[test]
    fn deploy_is_case_insensitive_but_refs_keep_case() {
        let d = deploy("DEPLOY Project-X/Feature/Login TO Edge");
        assert_eq!(d.app, app("project-x"));
        assert_eq!(d.env, env("edge"));
        assert_eq!(d.git_ref, git_ref("Feature/Login"));
    }

    #[test]
    fn deploy_force_and_tasks() {
        let forced = deploy("deploy! trelhub to edge");
        assert!(forced.force);
        assert_eq!(forced.task, Task::Deploy);
        let task = deploy("deploy:migrate modmod-web to staging");
        assert_eq!(task.task.to_string(), "deploy:migrate");
        assert!(!task.force);
        assert!(deploy("deploy:migrate! modmod-web").force);
        assert!(deploy("deploy!:migrate modmod-web").force);
        assert_eq!(
            deploy("deploy:lock x to production").task.to_string(),
            "deploy:lock"
        );
    }

    #[test]
    fn deploy_hosts_after_environment() {
        let d = deploy("deploy x to production/fe1,fe2");
        assert_eq!(d.env, env("production"));
        assert_eq!(d.hosts.as_deref(), Some("fe1,fe2"));
        assert_eq!(
            problem("deploy x to production/$(id)"),
            Problem::BadHosts("$(id)".into())
        );
    }

    #[test]
    fn deploy_trailing_one_time_codes() {
        assert_eq!(
            deploy("deploy x to production 123456").otp.as_deref(),
            Some("123456")
        );
        let yubikey = "ccccccdefghijklnrtuvcbdefghijklnrtuv";
        assert_eq!(
            deploy(&format!("deploy x {yubikey}")).otp.as_deref(),
            Some(yubikey)
        );
    }

    #[test]
    fn deploy_trailing_junk_is_no_match() {
        assert_eq!(
            problem("deploy x to production/fe burgers"),
            Problem::Unexpected {
                word: "burgers".into(),
                suggestion: None
            }
        );
    }

    #[test]
    fn deploy_misspelt_keyword_is_no_match_but_suggested() {
        assert_eq!(
            problem("deploy x tos production"),
            Problem::Unexpected {
                word: "tos".into(),
                suggestion: Some("to")
            }
        );
    }

    #[test]
    fn deploy_keyword_without_environment() {
        assert_eq!(problem("deploy x to"), Problem::MissingEnv("to".into()));
    }

    #[test]
    fn deploy_without_app() {
        assert_eq!(problem("deploy"), Problem::MissingApp);
        assert_eq!(problem("deploy!"), Problem::MissingApp);
    }

    #[test]
    fn deploy_bad_tasks() {
        assert_eq!(
            problem("deploy:$(id) x"),
            Problem::BadTask("deploy:$(id)".into())
        );
        assert_eq!(problem("deploy: x"), Problem::BadTask("deploy:".into()));
        assert_eq!(problem("deploy!! x"), Problem::BadTask("deploy!!".into()));
    }

    #[test]
    fn hostile_refs_are_refused_by_the_grammar() {
        for (line, bad_ref, reason) in [
            (
                "deploy x/--upload-pack=x",
                "--upload-pack=x",
                RefError::LeadingDash,
            ),
            ("deploy x/a..b", "a..b", RefError::DoubleDot),
            ("deploy x/x.lock", "x.lock", RefError::LockComponent),
            ("deploy x/a@{b", "a@{b", RefError::AtBrace),
            ("deploy x/a;b~1", "a;b~1", RefError::ForbiddenChar('~')),
            ("deploy x/feature/", "feature/", RefError::EmptyComponent),
            (
                "deploy x/dev/.branch",
                "dev/.branch",
                RefError::DotComponent,
            ),
        ] {
            assert_eq!(
                problem(line),
                Problem::BadRef(bad_ref.into(), reason),
                "{line}"
            );
        }
    }

    #[test]
    fn shell_metacharacters_never_become_a_valid_command() {
        // The whitespace in `; rm -rf /` splits it into words that are not part of the grammar.
        assert!(parse("deploy x/; rm -rf /").is_err());
        assert!(matches!(
            problem("deploy $(id)"),
            Problem::BadApp(a, NameError::BadCharacters) if a == "$(id)"
        ));
        assert!(matches!(problem("deploy x to `id`"), Problem::BadEnv(..)));
    }

    #[test]
    fn unicode_is_handled() {
        assert_eq!(
            deploy("deploy x/feature/café").git_ref,
            git_ref("feature/café")
        );
        assert!(matches!(problem("deploy prøject"), Problem::BadApp(..)));
        assert!(matches!(problem("deploy x to édge"), Problem::BadEnv(..)));
        assert!(matches!(
            parse("déployer x"),
            Err(ParseError::UnknownCommand { .. })
        ));
        assert!(matches!(
            problem("deploy x/rtl\u{202e}"),
            Problem::BadRef(_, RefError::Invisible)
        ));
    }

    #[test]
    fn empty_input() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("   \t "), Err(ParseError::Empty));
    }

    #[test]
    fn a_10kb_line_is_refused_before_parsing() {
        let line = format!("deploy x/{}", "a".repeat(10_000));
        let started = std::time::Instant::now();
        assert_eq!(parse(&line), Err(ParseError::TooLong { len: line.len() }));
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
    }

    #[test]
    fn deploys_command() {
        assert_eq!(
            parse("deploys project-x/main in edge"),
            Ok(Command::Deploys {
                app: app("project-x"),
                git_ref: git_ref("main"),
                env: env("edge")
            })
        );
        assert_eq!(
            parse("deploys project-x"),
            Ok(Command::Deploys {
                app: app("project-x"),
                git_ref: None,
                env: None
            })
        );
        assert_eq!(problem("deploys x in"), Problem::MissingEnv("in".into()));
        assert_eq!(
            problem("deploys x im edge"),
            Problem::Unexpected {
                word: "im".into(),
                suggestion: Some("in")
            }
        );
    }

    #[test]
    fn where_can_i_deploy() {
        for line in [
            "where can I deploy modmod-web",
            "Where Can i Deploy modmod-web?",
        ] {
            assert_eq!(
                parse(line),
                Ok(Command::WhereCanIDeploy {
                    app: app("modmod-web")
                })
            );
        }
        assert_eq!(problem("where can I deploy"), Problem::MissingApp);
        assert_eq!(
            problem("where could I deploy x"),
            Problem::Unexpected {
                word: "could".into(),
                suggestion: Some("can")
            }
        );
    }

    #[test]
    fn ci_and_its_status_alias() {
        let expected = Ok(Command::Ci {
            app: app("project-x"),
            git_ref: git_ref("feature"),
        });
        assert_eq!(parse("ci project-x/feature"), expected);
        assert_eq!(parse("status project-x/feature"), expected);
        assert_eq!(
            parse("ci trelhub"),
            Ok(Command::Ci {
                app: app("trelhub"),
                git_ref: None
            })
        );
        assert!(matches!(problem("ci x y"), Problem::Unexpected { .. }));
    }

    #[test]
    fn log_takes_one_deployment_id() {
        assert_eq!(parse("log 3"), Ok(Command::Log { id: 3 }));
        assert_eq!(parse("log #42"), Ok(Command::Log { id: 42 }));
        assert_eq!(problem("log"), Problem::MissingId);
        assert_eq!(problem("log x"), Problem::BadId("x".into()));
        assert!(matches!(problem("log 1 2"), Problem::Unexpected { .. }));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse("help"), Ok(Command::Help { topic: None }));
        assert_eq!(
            parse("help Deploy"),
            Ok(Command::Help {
                topic: Some("deploy".into())
            })
        );
        assert_eq!(parse("version"), Ok(Command::Version));
        assert!(matches!(problem("version 2"), Problem::Unexpected { .. }));
    }

    #[test]
    fn unknown_commands_get_the_closest_suggestion() {
        let suggest = |line: &str| match parse(line) {
            Err(ParseError::UnknownCommand { suggestion, .. }) => suggestion.map(|s| s.name),
            other => panic!("{other:?}"),
        };
        assert_eq!(suggest("deplyo x"), Some("deploy"));
        assert_eq!(suggest("depoly x"), Some("deploy"));
        assert_eq!(suggest("deployz x"), Some("deploy"));
        assert_eq!(suggest("hlep"), Some("help"));
        assert_eq!(suggest("statsu x"), Some("ci"));
        assert_eq!(suggest("versoin"), Some("version"));
        assert_eq!(suggest("wher can I deploy x"), Some("where"));
        assert_eq!(suggest("make me a sandwich"), None);
    }

    fn addressing(implicit: bool) -> Addressing<'static> {
        Addressing {
            bot_name: "chima",
            implicit,
        }
    }

    #[test]
    fn lines_addressed_by_name() {
        let a = addressing(false);
        for line in [
            "chima deploy x",
            "Chima deploy x",
            "@chima deploy x",
            "chima: deploy x",
            "chima, deploy x",
            "  chima   deploy x  ",
        ] {
            assert_eq!(addressed_lines(line, &a), vec!["deploy x"], "{line:?}");
        }
    }

    #[test]
    fn lines_not_addressed_are_ignored() {
        let a = addressing(false);
        for line in [
            "deploy x",
            "chimaera deploy x",
            "hey chima deploy x",
            "<@UOTHER> deploy x",
            "",
        ] {
            assert!(addressed_lines(line, &a).is_empty(), "{line:?}");
        }
    }

    #[test]
    fn just_the_name_is_addressed_with_nothing_to_do() {
        assert_eq!(addressed_lines("chima", &addressing(false)), vec![""]);
        assert_eq!(parse(""), Err(ParseError::Empty));
    }

    #[test]
    fn implicit_channels_take_every_line() {
        let a = addressing(true);
        assert_eq!(addressed_lines("deploy x", &a), vec!["deploy x"]);
        assert_eq!(addressed_lines("chima deploy x", &a), vec!["deploy x"]);
        assert_eq!(addressed_lines("\n\n", &a), Vec::<String>::new());
    }

    #[test]
    fn code_blocks_and_quotes_are_ignored() {
        let a = addressing(false);
        let text = "```\nchima deploy x to production\n```\n> chima deploy y\n`chima deploy w`\nchima deploy v";
        assert_eq!(addressed_lines(text, &a), vec!["deploy v"]);
        let inline_fence = "```chima deploy x```\nchima ci y";
        assert_eq!(addressed_lines(inline_fence, &a), vec!["ci y"]);
        let implicit = addressed_lines("```\ndeploy x\n```", &addressing(true));
        assert!(implicit.is_empty());
    }

    #[test]
    fn several_commands_in_one_message() {
        let lines = addressed_lines("chima ci x\nthanks\nchima deploy x", &addressing(false));
        assert_eq!(lines, vec!["ci x", "deploy x"]);
    }

    #[test]
    fn every_command_in_the_table_parses_its_own_examples() {
        for spec in COMMANDS {
            for example in spec.examples {
                assert!(
                    parse(example).is_ok(),
                    "{}: example {example:?} does not parse",
                    spec.name
                );
            }
        }
    }
}
