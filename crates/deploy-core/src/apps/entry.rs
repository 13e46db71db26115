//! One app's entry of app.json, read field by field into an [`AppConfig`].

use chrono_tz::Tz;
use serde_json::Value;

use crate::desk;
use crate::names::{AppName, EnvName, RepoName, ScriptPath};
use crate::protect;

use super::{AppConfig, Checker, ConfigProblem, PRIVATE_KEYS, Provider, Secret};

pub(super) fn check_app(
    name: &str,
    value: &Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<AppConfig> {
    let app_name = match AppName::parse(name) {
        Ok(n) if n.as_str() == name => Some(n),
        Ok(_) => {
            problems.push(ConfigProblem {
                app: Some(name.to_owned()),
                field: None,
                message: "app names must be lower-case (commands are case-insensitive)".into(),
            });
            None
        }
        Err(e) => {
            problems.push(ConfigProblem {
                app: Some(name.to_owned()),
                field: None,
                message: format!("is not a valid app name: {e}"),
            });
            None
        }
    };
    let Value::Object(entry) = value else {
        problems.push(ConfigProblem {
            app: Some(name.to_owned()),
            field: None,
            message: "must be an object".to_owned(),
        });
        return None;
    };
    let mut c = Checker {
        app: name,
        path: String::new(),
        entry,
        problems,
    };

    let provider = match entry.get("provider") {
        None => {
            c.problem(
                "provider",
                "is required (shell, fabric, capistrano or heroku)",
            );
            None
        }
        Some(Value::String(p)) => Provider::parse(p).or_else(|| {
            c.problem(
                "provider",
                format!("unknown provider {p:?} (expected shell, fabric, capistrano or heroku)"),
            );
            None
        }),
        Some(_) => {
            c.problem(
                "provider",
                "must be a string (shell, fabric, capistrano or heroku)",
            );
            None
        }
    };

    let repository = match entry.get("repository") {
        None => {
            c.problem("repository", "is required (owner/name)");
            None
        }
        Some(Value::String(r)) => RepoName::parse(r)
            .map_err(|e| c.problem("repository", e.to_string()))
            .ok(),
        Some(_) => {
            c.problem("repository", "must be a string of the form owner/name");
            None
        }
    };

    let environments = match entry.get("environments") {
        None => vec![EnvName::production()],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut envs: Vec<EnvName> = Vec::new();
            for item in items {
                match item.as_str().map(EnvName::parse) {
                    Some(Ok(env)) if envs.contains(&env) => {
                        c.problem("environments", format!("{env} is listed more than once"));
                    }
                    Some(Ok(env)) => envs.push(env),
                    Some(Err(e)) => c.problem(
                        "environments",
                        format!("{item} is not a valid environment name: {e}"),
                    ),
                    None => c.problem("environments", "must be a non-empty list of names"),
                }
            }
            envs
        }
        Some(_) => {
            c.problem("environments", "must be a non-empty list of names");
            Vec::new()
        }
    };

    let default_environment = match c.string("default_environment") {
        None => EnvName::production(),
        Some(d) => match EnvName::parse(&d) {
            Ok(env) if environments.is_empty() || environments.contains(&env) => env,
            Ok(env) => {
                c.problem(
                    "default_environment",
                    format!("{env} is not one of the app's environments"),
                );
                env
            }
            Err(e) => {
                c.problem("default_environment", format!("{d:?} {e}"));
                EnvName::production()
            }
        },
    };

    let allowed_rooms = c.string_list("allowed_rooms");
    if allowed_rooms.as_ref().is_some_and(Vec::is_empty) {
        c.problem(
            "allowed_rooms",
            "is empty, so no room could deploy; remove it to allow every room",
        );
    }

    let auto_merge = c.bool("auto_merge", true);

    let required_contexts = c.string_list("required_contexts");
    let github_api = c.string("github_api");
    if let Some(api) = &github_api
        && !(api.starts_with("https://") || api.starts_with("http://"))
    {
        c.problem("github_api", "must be an http(s) URL");
    }
    let github_token = c.string("github_token").map(Secret::new);

    let deploy_script = match c.string("deploy_script") {
        None => ScriptPath::parse("script/deploy").expect("default script path is valid"),
        Some(s) => ScriptPath::parse(&s).unwrap_or_else(|e| {
            c.problem("deploy_script", e.to_string());
            ScriptPath::parse("script/deploy").expect("default script path is valid")
        }),
    };

    let timeout = match entry.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(t) if (1..=86_400).contains(&t) => Some(t),
            _ => {
                c.problem(
                    "timeout",
                    "must be a whole number of seconds from 1 to 86400",
                );
                None
            }
        },
    };

    let clone_url = c.string("clone_url");
    if let Some(url) = &clone_url
        && url.starts_with('-')
    {
        c.problem("clone_url", "must not start with '-'");
    }
    let fabric_task = c.string("fabric_task");
    let task_ok = |t: &str| {
        !t.starts_with('-')
            && t.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
    };
    if fabric_task.as_deref().is_some_and(|t| !task_ok(t)) {
        c.problem(
            "fabric_task",
            "must be a task name (letters, digits, '_', '.', '-')",
        );
    }
    let before_deploy = c.script_list("before_deploy");
    let after_deploy = c.script_list("after_deploy");

    let lock_ttl = c.span("lock_ttl", desk::DEFAULT_LOCK_TTL, Some(desk::MAX_LOCK));
    let lock_reminder = c.span("lock_reminder", desk::DEFAULT_LOCK_REMINDER, None);
    let branch_lock = c.bool("branch_lock", false);
    let tz = match entry.get("tz") {
        None | Some(Value::Null) => Tz::UTC,
        Some(value) => desk::parse_tz(value).unwrap_or_else(|e| {
            c.problem("tz", e);
            Tz::UTC
        }),
    };
    let freeze = c.freeze(tz, &environments);
    let protect = protect::parse_protect(&mut c, &environments);
    let lock_after_rollback = c.bool("lock_after_rollback", true);
    let rollback_on_failure = rollback_on_failure(&mut c, &environments);
    let tickets = protect::parse_tickets(&mut c);

    for (key, value) in entry {
        if let Some(env) = key.strip_suffix("_url").filter(|_| key != "clone_url")
            && !value.is_string()
        {
            c.problem(
                key,
                format!("must be a URL string (environment_url for {env})"),
            );
        }
        if key.starts_with("heroku_") && key.ends_with("name") && !value.is_string() {
            c.problem(key, "must be a Heroku app name");
        }
    }

    Some(AppConfig {
        name: app_name?,
        provider: provider?,
        repository: repository?,
        environments,
        default_environment,
        allowed_rooms,
        auto_merge,
        required_contexts,
        github_api,
        github_token,
        deploy_script,
        timeout,
        clone_url,
        fabric_task,
        before_deploy,
        after_deploy,
        raw: entry
            .iter()
            .filter(|(k, _)| !PRIVATE_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        lock_ttl,
        lock_reminder,
        branch_lock,
        tz,
        freeze,
        protect,
        tickets,
        lock_after_rollback,
        rollback_on_failure,
    })
}

/// `rollback_on_failure`: `true` (every environment), `false`, or a list of the app's
/// environments.
fn rollback_on_failure(c: &mut Checker<'_>, environments: &[EnvName]) -> Vec<EnvName> {
    const FIELD: &str = "rollback_on_failure";
    let items = match c.entry.get(FIELD) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Vec::new(),
        Some(Value::Bool(true)) => return environments.to_vec(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            c.problem(FIELD, "must be true, false or a list of environment names");
            return Vec::new();
        }
    };
    let mut envs: Vec<EnvName> = Vec::new();
    for item in items {
        match item.as_str().map(EnvName::parse) {
            Some(Ok(env)) if envs.contains(&env) => {
                c.problem(FIELD, format!("{env} is listed more than once"));
            }
            Some(Ok(env)) if !environments.is_empty() && !environments.contains(&env) => {
                c.problem(FIELD, format!("{env} is not one of the app's environments"));
            }
            Some(Ok(env)) => envs.push(env),
            Some(Err(e)) => c.problem(
                FIELD,
                format!("{item} is not a valid environment name: {e}"),
            ),
            None => c.problem(FIELD, "must be true, false or a list of environment names"),
        }
    }
    envs
}
