//! The app.json model (hubot-deploy's apps.json, extended) and its loader.
//!
//! Loading validates everything at once and reports every problem with the app and field
//! named, e.g. `app.json: project-x.environments: must be a non-empty list of names`.
//! Unknown keys are kept: the app's entry (minus `github_api` / `github_token`) travels to
//! the provider inside the deployment payload.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::desk::FreezeWindow;
use crate::duration::Span;
use crate::names::{AppName, EnvName, RepoName, ScriptPath};
use crate::protect::{Protection, TicketSettings};

mod checker;
mod entry;

pub(crate) use checker::Checker;
use entry::check_app;

/// Which tool deploys an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// A script in the repository (`deploy_script`, default `script/deploy`).
    Shell,
    /// Fabric 2+/3 (`fab <task> --environment … --ref … --sha …`).
    Fabric,
    /// Capistrano 3 (`cap <env> <task>`).
    Capistrano,
    /// Heroku Platform API builds.
    Heroku,
}

impl Provider {
    /// Every provider, in the order help texts list them.
    pub const ALL: [Provider; 4] = [
        Provider::Shell,
        Provider::Fabric,
        Provider::Capistrano,
        Provider::Heroku,
    ];

    /// The name used in app.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Shell => "shell",
            Provider::Fabric => "fabric",
            Provider::Capistrano => "capistrano",
            Provider::Heroku => "heroku",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is handed to the service that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Keys whose values are secrets or per-installation settings: never sent in a payload.
pub const PRIVATE_KEYS: [&str; 2] = ["github_api", "github_token"];

/// One app's entry in app.json, validated.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The app's name (its key in app.json).
    pub name: AppName,
    /// The tool that deploys it.
    pub provider: Provider,
    /// The GitHub repository.
    pub repository: RepoName,
    /// Environments it may be deployed to (default `["production"]`).
    pub environments: Vec<EnvName>,
    /// Used when a command names no environment.
    pub default_environment: EnvName,
    /// Channel names or ids it may be deployed from; `None` = every room.
    pub allowed_rooms: Option<Vec<String>>,
    /// Whether GitHub merges the default branch into the ref first (default `true`).
    pub auto_merge: bool,
    /// Status contexts that must be green; `None` = GitHub's default (all).
    pub required_contexts: Option<Vec<String>>,
    /// Per-app GitHub API base URL (GitHub Enterprise).
    pub github_api: Option<String>,
    /// Per-app GitHub token.
    pub github_token: Option<Secret>,
    /// Shell provider: the script to run (default `script/deploy`).
    pub deploy_script: ScriptPath,
    /// Seconds one run may take.
    pub timeout: Option<u64>,
    /// Where faseng clones from, when not GitHub's URL.
    pub clone_url: Option<String>,
    /// Fabric provider: task name override.
    pub fabric_task: Option<String>,
    /// Scripts run before the provider, as named stages.
    pub before_deploy: Vec<ScriptPath>,
    /// Scripts run after the provider, as named stages.
    pub after_deploy: Vec<ScriptPath>,
    /// The entry as written, unknown keys included, minus `github_api` and `github_token`.
    pub raw: Map<String, Value>,
    lock_ttl: Span,
    lock_reminder: Span,
    branch_lock: bool,
    tz: Tz,
    freeze: Vec<FreezeWindow>,
    protect: BTreeMap<EnvName, Protection>,
    tickets: Option<TicketSettings>,
    lock_after_rollback: bool,
    rollback_on_failure: Vec<EnvName>,
}

impl AppConfig {
    /// Validates one app entry; `Err` lists every problem found.
    pub fn from_value(name: &str, value: &Value) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let app = check_app(name, value, &mut problems);
        match app {
            Some(app) if problems.is_empty() => Ok(app),
            _ => Err(problems),
        }
    }

    /// How long a lock lasts when no duration is given (`lock_ttl`, default 4h, at most 7d);
    /// also how long a request waits in the line.
    pub fn lock_ttl(&self) -> Span {
        self.lock_ttl
    }

    /// How often a lock's holder is reminded of it (`lock_reminder`, default 2h).
    pub fn lock_reminder(&self) -> Span {
        self.lock_reminder
    }

    /// Whether a deploy of a non-default ref locks the environment for its deployer
    /// (`branch_lock`, default false).
    pub fn branch_lock(&self) -> bool {
        self.branch_lock
    }

    /// The time zone desk texts show times in, and repeating freeze windows default to
    /// (`tz`, default UTC).
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The freeze windows (`freeze`), in the order written.
    pub fn freezes(&self) -> &[FreezeWindow] {
        &self.freeze
    }

    /// How `env` is protected (`protect.<env>`): deploys to it go through a release
    /// request. `None`: deployed as asked.
    pub fn protection(&self, env: &EnvName) -> Option<&Protection> {
        self.protect.get(env)
    }

    /// Which trackers are updated after a successful release (`tickets`); `None`: none.
    pub fn tickets(&self) -> Option<&TicketSettings> {
        self.tickets.as_ref()
    }

    /// Whether a rollback locks the environment for its requester afterwards
    /// (`lock_after_rollback`, default true).
    pub fn lock_after_rollback(&self) -> bool {
        self.lock_after_rollback
    }

    /// Whether a deploy to `env` that ends in `failure` is rolled back automatically
    /// (`rollback_on_failure`: `true` for every environment, or a list of them).
    pub fn rolls_back_on_failure(&self, env: &EnvName) -> bool {
        self.rollback_on_failure.contains(env)
    }

    /// True when `env` is one of this app's environments.
    pub fn has_environment(&self, env: &EnvName) -> bool {
        self.environments.contains(env)
    }

    /// The entry as sent in the deployment payload's `config`: everything but
    /// `github_api` and `github_token`.
    pub fn payload_config(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// The `<env>_url` setting, if any: the deployment status `environment_url`.
    pub fn environment_url(&self, env: &EnvName) -> Option<&str> {
        self.raw.get(&format!("{env}_url")).and_then(Value::as_str)
    }

    /// The Heroku app for an environment: `heroku_<env>_name`, else `heroku_name`.
    pub fn heroku_app(&self, env: &EnvName) -> Option<&str> {
        self.raw
            .get(&format!("heroku_{env}_name"))
            .or_else(|| self.raw.get("heroku_name"))
            .and_then(Value::as_str)
    }

    /// True when the room (by id or name, `#` optional) may deploy this app.
    pub fn allows_room(&self, room_id: &str, room_name: &str) -> bool {
        let Some(rooms) = &self.allowed_rooms else {
            return true;
        };
        let name = room_name.trim_start_matches('#');
        rooms.iter().any(|allowed| {
            let allowed = allowed.trim_start_matches('#');
            allowed == room_id || (!name.is_empty() && allowed.eq_ignore_ascii_case(name))
        })
    }
}

/// One problem found in app.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The app, when the problem is inside one app's entry.
    pub app: Option<String>,
    /// The field, when the problem is about one field.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("app.json: ")?;
        match (&self.app, &self.field) {
            (Some(app), Some(field)) => write!(f, "{app}.{field}: ")?,
            (Some(app), None) => write!(f, "{app}: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

/// Every problem found while loading app.json.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order they appear in the file.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "app.json has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(message: String) -> Self {
        Self {
            problems: vec![ConfigProblem {
                app: None,
                field: None,
                message,
            }],
        }
    }
}

/// All apps from app.json, by name.
#[derive(Debug, Clone, Default)]
pub struct Apps {
    apps: BTreeMap<AppName, AppConfig>,
}

impl Apps {
    /// Reads and validates an app.json file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::single(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    /// Parses and validates app.json text, reporting every problem at once.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let root: Value = serde_json::from_str(text).map_err(|e| {
            ConfigError::single(format!(
                "invalid JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ))
        })?;
        let Value::Object(entries) = root else {
            return Err(ConfigError::single(
                "must be a JSON object keyed by app name".to_owned(),
            ));
        };
        let mut problems = Vec::new();
        let mut apps = BTreeMap::new();
        for (name, value) in &entries {
            if let Some(app) = check_app(name, value, &mut problems) {
                apps.insert(app.name.clone(), app);
            }
        }
        for duplicate in duplicate_top_level_keys(text) {
            problems.push(ConfigProblem {
                app: Some(duplicate),
                field: None,
                message: "is defined more than once".to_owned(),
            });
        }
        if problems.is_empty() {
            Ok(Self { apps })
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The app named `name`, if configured.
    pub fn get(&self, name: &AppName) -> Option<&AppConfig> {
        self.apps.get(name)
    }

    /// All apps, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &AppConfig> {
        self.apps.values()
    }

    /// All app names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &AppName> {
        self.apps.keys()
    }

    /// How many apps there are.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// True when app.json defines no app.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}

fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

/// serde_json keeps the last of duplicate keys silently; a duplicated app is almost always a
/// copy-paste mistake, so find top-level duplicates with a small scan of the (valid) JSON.
fn duplicate_top_level_keys(text: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Keys(#[serde(deserialize_with = "keys_in_order")] Vec<String>);
    fn keys_in_order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(keys)
            }
        }
        d.deserialize_map(Visitor)
    }
    let Ok(Keys(keys)) = serde_json::from_str::<Keys>(text) else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = Vec::new();
    for key in keys {
        if !seen.insert(key.clone()) && !duplicates.contains(&key) {
            duplicates.push(key);
        }
    }
    duplicates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk;
    use crate::protect::{Approver, CheckKind, JiraSettings};

    const EXAMPLE: &str = r#"{
      "project-x": {
        "provider": "fabric", "repository": "oursky/project-x",
        "environments": ["live", "edge"], "allowed_rooms": ["deployment"],
        "auto_merge": false, "required_contexts": ["ci/travis"],
        "edge_url": "https://edge.example.com", "team": "web",
        "github_token": "ghp_secret", "github_api": "https://ghe.example.com/api/v3"
      },
      "trelhub": { "provider": "shell", "repository": "oursky/trelhub",
                   "environments": ["pandawork", "edge"], "default_environment": "edge" },
      "hubot": { "provider": "heroku", "repository": "github/hubot",
                 "heroku_production_name": "hubot-prod", "heroku_name": "hubot-any" }
    }"#;

    fn problems(text: &str) -> Vec<String> {
        Apps::from_json(text)
            .unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn loads_the_example_with_defaults() {
        let apps = Apps::from_json(EXAMPLE).unwrap();
        assert_eq!(apps.len(), 3);
        let x = apps.get(&AppName::parse("project-x").unwrap()).unwrap();
        assert_eq!(x.provider, Provider::Fabric);
        assert_eq!(x.repository.to_string(), "oursky/project-x");
        assert!(!x.auto_merge);
        assert_eq!(x.required_contexts, Some(vec!["ci/travis".to_owned()]));
        assert_eq!(x.default_environment.as_str(), "production");
        assert_eq!(x.deploy_script.as_str(), "script/deploy");
        let t = apps.get(&AppName::parse("trelhub").unwrap()).unwrap();
        assert_eq!(t.default_environment.as_str(), "edge");
        assert!(t.auto_merge);
        assert_eq!(t.required_contexts, None);
        let h = apps.get(&AppName::parse("hubot").unwrap()).unwrap();
        assert_eq!(h.environments, vec![EnvName::production()]);
    }

    #[test]
    fn payload_config_keeps_unknown_keys_and_drops_secrets() {
        let apps = Apps::from_json(EXAMPLE).unwrap();
        let x = apps.get(&AppName::parse("project-x").unwrap()).unwrap();
        let config = x.payload_config();
        assert_eq!(config["team"], "web");
        assert_eq!(config["provider"], "fabric");
        assert!(config.get("github_token").is_none());
        assert!(config.get("github_api").is_none());
        assert!(!format!("{x:?}").contains("ghp_secret"));
    }

    #[test]
    fn environment_url_and_heroku_app_lookups() {
        let apps = Apps::from_json(EXAMPLE).unwrap();
        let x = apps.get(&AppName::parse("project-x").unwrap()).unwrap();
        let edge = EnvName::parse("edge").unwrap();
        assert_eq!(x.environment_url(&edge), Some("https://edge.example.com"));
        assert_eq!(x.environment_url(&EnvName::parse("live").unwrap()), None);
        let h = apps.get(&AppName::parse("hubot").unwrap()).unwrap();
        assert_eq!(h.heroku_app(&EnvName::production()), Some("hubot-prod"));
        assert_eq!(h.heroku_app(&edge), Some("hubot-any"));
    }

    #[test]
    fn rooms_match_by_name_or_id() {
        let apps = Apps::from_json(EXAMPLE).unwrap();
        let x = apps.get(&AppName::parse("project-x").unwrap()).unwrap();
        assert!(x.allows_room("C1", "deployment"));
        assert!(x.allows_room("C1", "#Deployment"));
        assert!(!x.allows_room("C1", "random"));
        let by_id = Apps::from_json(
            r#"{"a": {"provider":"shell","repository":"o/a","allowed_rooms":["C024BE91L"]}}"#,
        )
        .unwrap();
        let a = by_id.iter().next().unwrap();
        assert!(a.allows_room("C024BE91L", "whatever"));
        assert!(!a.allows_room("C999", ""));
    }

    #[test]
    fn json_syntax_errors_name_line_and_column() {
        assert_eq!(
            problems("{\n  \"a\": {\"provider\": \"shell\",}\n}"),
            vec!["app.json: invalid JSON at line 2, column 29: trailing comma"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"{
          "no-repo": {"provider": "shell"},
          "bad-provider": {"provider": "ansible", "repository": "o/r"},
          "empty-envs": {"provider": "shell", "repository": "o/r", "environments": []},
          "dup-envs": {"provider": "shell", "repository": "o/r", "environments": ["a", "a"]},
          "bad-repo": {"provider": "shell", "repository": "not-a-repo"},
          "Upper": {"provider": "shell", "repository": "o/r"},
          "bad-types": {"provider": "shell", "repository": "o/r", "auto_merge": "yes",
                        "timeout": -1, "deploy_script": "../../etc/passwd",
                        "environments": "production"}
        }"#;
        assert_eq!(
            problems(text),
            vec![
                "app.json: Upper: app names must be lower-case (commands are case-insensitive)",
                "app.json: bad-provider.provider: unknown provider \"ansible\" (expected shell, fabric, capistrano or heroku)",
                "app.json: bad-repo.repository: must be of the form owner/name, got \"not-a-repo\"",
                "app.json: bad-types.environments: must be a non-empty list of names",
                "app.json: bad-types.auto_merge: must be true or false",
                "app.json: bad-types.deploy_script: must be a relative path inside the repository (letters, digits, '_', '.', '-', '/'; no '..'), got \"../../etc/passwd\"",
                "app.json: bad-types.timeout: must be a whole number of seconds from 1 to 86400",
                "app.json: dup-envs.environments: a is listed more than once",
                "app.json: empty-envs.environments: must be a non-empty list of names",
                "app.json: no-repo.repository: is required (owner/name)",
            ]
        );
    }

    #[test]
    fn duplicate_apps_are_reported() {
        let text = r#"{"a": {"provider":"shell","repository":"o/a"},
                       "a": {"provider":"shell","repository":"o/b"}}"#;
        assert_eq!(
            problems(text),
            vec!["app.json: a: is defined more than once"]
        );
    }

    #[test]
    fn non_object_roots_and_entries_are_refused() {
        assert_eq!(
            problems("[]"),
            vec!["app.json: must be a JSON object keyed by app name"]
        );
        assert_eq!(
            problems(r#"{"a": 1}"#),
            vec!["app.json: a: must be an object"]
        );
    }

    #[test]
    fn default_environment_must_be_listed() {
        let text = r#"{"a": {"provider":"shell","repository":"o/a",
                       "environments":["edge"],"default_environment":"live"}}"#;
        assert_eq!(
            problems(text),
            vec!["app.json: a.default_environment: live is not one of the app's environments"]
        );
    }

    #[test]
    fn error_report_counts_problems() {
        let err = Apps::from_json(r#"{"a": {}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "app.json has 2 problems:\n  app.json: a.provider: is required (shell, fabric, capistrano or heroku)\n  app.json: a.repository: is required (owner/name)\n"
        );
    }

    fn one(extra: Value) -> Result<AppConfig, Vec<String>> {
        let mut v = serde_json::json!({"provider": "shell", "repository": "o/demo",
                                       "environments": ["staging", "live"]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        AppConfig::from_value("demo", &v).map_err(|ps| ps.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn desk_fields_default_and_parse() {
        let plain = one(serde_json::json!({})).unwrap();
        assert_eq!(plain.lock_ttl().to_string(), "4h");
        assert_eq!(plain.lock_reminder().to_string(), "2h");
        assert!(!plain.branch_lock());
        assert_eq!(plain.tz(), Tz::UTC);
        assert!(plain.freezes().is_empty());

        let set = one(serde_json::json!({
            "lock_ttl": "1h30m", "lock_reminder": "45m", "branch_lock": true,
            "tz": "Asia/Hong_Kong",
            "freeze": [
                {"cron": "0 18 * * FRI", "duration": "64h", "reason": "weekend",
                 "environments": ["live"]},
                {"cron": "0 9 * * MON", "duration": "1h", "tz": "Europe/London",
                 "reason": "standup"},
                {"from": "2026-12-24T00:00:00+08:00", "until": "2026-12-27T00:00:00+08:00",
                 "reason": "holidays"}
            ]
        }))
        .unwrap();
        assert_eq!(set.lock_ttl().as_secs(), 5_400);
        assert_eq!(set.lock_reminder().as_secs(), 2_700);
        assert!(set.branch_lock());
        assert_eq!(set.tz().name(), "Asia/Hong_Kong");
        let [weekend, standup, holidays] = set.freezes() else {
            panic!("three windows: {:?}", set.freezes())
        };
        let live = EnvName::parse("live").unwrap();
        let staging = EnvName::parse("staging").unwrap();
        assert!(weekend.covers(&live) && !weekend.covers(&staging));
        assert!(standup.covers(&live) && standup.covers(&staging));
        match (&weekend.rule, &standup.rule, &holidays.rule) {
            (
                desk::FreezeRule::Cron {
                    schedule,
                    duration,
                    tz,
                },
                desk::FreezeRule::Cron { tz: london, .. },
                desk::FreezeRule::Fixed { from, until },
            ) => {
                assert_eq!(schedule.as_str(), "0 18 * * FRI");
                assert_eq!(duration.to_string(), "2d16h");
                assert_eq!(tz.name(), "Asia/Hong_Kong", "the app's tz is the default");
                assert_eq!(london.name(), "Europe/London");
                assert_eq!(from.to_rfc3339(), "2026-12-23T16:00:00+00:00");
                assert_eq!(until.to_rfc3339(), "2026-12-26T16:00:00+00:00");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(holidays.reason, "holidays");
        let config = set.payload_config();
        assert_eq!(
            config["lock_ttl"], "1h30m",
            "desk fields stay in the payload's config"
        );
        assert_eq!(config["freeze"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn rollback_fields_default_and_parse() {
        let staging = EnvName::parse("staging").unwrap();
        let live = EnvName::parse("live").unwrap();
        let plain = one(serde_json::json!({})).unwrap();
        assert!(plain.lock_after_rollback());
        assert!(!plain.rolls_back_on_failure(&staging));
        let every = one(serde_json::json!({"rollback_on_failure": true,
                                          "lock_after_rollback": false}))
        .unwrap();
        assert!(!every.lock_after_rollback());
        assert!(every.rolls_back_on_failure(&staging) && every.rolls_back_on_failure(&live));
        let listed = one(serde_json::json!({"rollback_on_failure": ["live"]})).unwrap();
        assert!(listed.rolls_back_on_failure(&live));
        assert!(!listed.rolls_back_on_failure(&staging));
        let off = one(serde_json::json!({"rollback_on_failure": false})).unwrap();
        assert!(!off.rolls_back_on_failure(&live));
        assert_eq!(
            listed.payload_config()["rollback_on_failure"],
            serde_json::json!(["live"]),
            "rollback fields stay in the payload's config"
        );
    }

    #[test]
    fn rollback_field_problems_name_the_field() {
        for (extra, want) in [
            (
                serde_json::json!({"lock_after_rollback": "no"}),
                vec!["app.json: demo.lock_after_rollback: must be true or false"],
            ),
            (
                serde_json::json!({"rollback_on_failure": "live"}),
                vec![
                    "app.json: demo.rollback_on_failure: must be true, false or a list of environment names",
                ],
            ),
            (
                serde_json::json!({"rollback_on_failure": ["production", "live", "live", 3, "Bad Env"]}),
                vec![
                    "app.json: demo.rollback_on_failure: production is not one of the app's environments",
                    "app.json: demo.rollback_on_failure: live is listed more than once",
                    "app.json: demo.rollback_on_failure: must be true, false or a list of environment names",
                    "app.json: demo.rollback_on_failure: \"Bad Env\" is not a valid environment name: may only contain a-z, 0-9, '-', '_' and '.', and must start with a letter or digit",
                ],
            ),
        ] {
            assert_eq!(one(extra.clone()).unwrap_err(), want, "{extra}");
        }
    }

    #[test]
    fn desk_field_problems_name_the_field() {
        for (extra, want) in [
            (
                serde_json::json!({"lock_ttl": "8d"}),
                vec!["app.json: demo.lock_ttl: 8d is too long: at most 7d"],
            ),
            (
                serde_json::json!({"lock_ttl": "0m", "lock_reminder": 30}),
                vec![
                    "app.json: demo.lock_ttl: must be more than 0",
                    "app.json: demo.lock_reminder: must be a duration such as \"30m\", \"4h\" or \"1d\"",
                ],
            ),
            (
                serde_json::json!({"lock_reminder": "2 hours", "branch_lock": "yes"}),
                vec![
                    "app.json: demo.lock_reminder: \"2 hours\" is not a duration: write it like 90s, 30m, 4h, 1d or 1h30m",
                    "app.json: demo.branch_lock: must be true or false",
                ],
            ),
            (
                serde_json::json!({"tz": "Asia/HongKong"}),
                vec![
                    "app.json: demo.tz: \"Asia/HongKong\" is not an IANA time zone name such as \"Asia/Hong_Kong\" (did you mean Asia/Hong_Kong?)",
                ],
            ),
            (
                serde_json::json!({"tz": "HKT", "freeze": {"cron": "0 18 * * FRI"}}),
                vec![
                    "app.json: demo.tz: \"HKT\" is not an IANA time zone name such as \"Asia/Hong_Kong\"",
                    "app.json: demo.freeze: must be a list of windows",
                ],
            ),
        ] {
            assert_eq!(one(extra.clone()).unwrap_err(), want, "{extra}");
        }
    }

    #[test]
    fn freeze_window_problems_are_all_reported_with_the_window_named() {
        let err = one(serde_json::json!({"freeze": [
            {"cron": "0 18 * * FRY", "duration": "0h", "tz": "Mars/Olympus", "reason": ""},
            {"cron": "0 18 * * FRI", "duration": "32d", "reason": "r", "environment": ["live"]},
            {"cron": "0 18 * *", "reason": "r", "environments": ["production", "live"]},
            {"from": "2026-12-27T00:00:00+08:00", "until": "2026-12-24T00:00:00+08:00",
             "reason": "backwards"},
            {"from": "2026-12-24", "reason": "no end", "duration": "1d"},
            {"reason": "neither"},
            {"cron": "0 0 30 2 *", "duration": "1h", "reason": "never"},
            {"cron": "0 18 * * FRI", "duration": "1h", "reason": "empty", "environments": []},
            "weekend"
        ]}))
        .unwrap_err();
        let cron_help =
            "is not a cron schedule (minute hour day month weekday, e.g. \"0 18 * * FRI\")";
        assert_eq!(
            err,
            vec![
                format!("app.json: demo.freeze[0].reason: must be a non-empty string"),
                format!("app.json: demo.freeze[0].cron: \"0 18 * * FRY\" {cron_help}: Pattern contains illegal characters: CronPattern contains illegal character 'F' in part 'FRY'"),
                "app.json: demo.freeze[0].duration: must be more than 0".to_owned(),
                "app.json: demo.freeze[0].tz: \"Mars/Olympus\" is not an IANA time zone name such as \"Asia/Hong_Kong\"".to_owned(),
                "app.json: demo.freeze[1]: unknown key \"environment\" (known: cron, duration, tz, reason, environments)".to_owned(),
                "app.json: demo.freeze[1].duration: 32d is too long: a window lasts at most 31d".to_owned(),
                "app.json: demo.freeze[2].environments: production is not one of the app's environments".to_owned(),
                format!("app.json: demo.freeze[2].cron: \"0 18 * *\" {cron_help}: Invalid pattern: Pattern must have 5 fields when seconds are disallowed."),
                "app.json: demo.freeze[2].duration: is required with cron (e.g. \"64h\")".to_owned(),
                "app.json: demo.freeze[3].until: must be later than from".to_owned(),
                "app.json: demo.freeze[4]: unknown key \"duration\" (known: from, until, reason, environments)".to_owned(),
                "app.json: demo.freeze[4].from: \"2026-12-24\" is not an RFC 3339 time such as \"2026-12-24T00:00:00+08:00\": premature end of input".to_owned(),
                "app.json: demo.freeze[4].until: is required (an RFC 3339 time such as \"2026-12-24T00:00:00+08:00\")".to_owned(),
                "app.json: demo.freeze[5]: needs cron + duration (a repeating window) or from + until (a fixed one)".to_owned(),
                format!("app.json: demo.freeze[6].cron: \"0 0 30 2 *\" {cron_help}: it never fires"),
                "app.json: demo.freeze[7].environments: must be a non-empty list of the app's environments (leave it out for all)".to_owned(),
                "app.json: demo.freeze[8]: must be an object with cron + duration, or from + until".to_owned(),
            ]
        );
    }

    #[test]
    fn protect_defaults_and_parses() {
        let plain = one(serde_json::json!({})).unwrap();
        let live = EnvName::parse("live").unwrap();
        let staging = EnvName::parse("staging").unwrap();
        assert_eq!(plain.protection(&live), None, "unprotected unless said");
        assert_eq!(plain.tickets(), None);

        let minimal =
            one(serde_json::json!({"protect": {"live": {"approvers": ["alice"]}}})).unwrap();
        assert_eq!(minimal.protection(&staging), None);
        assert_eq!(
            minimal.protection(&live),
            Some(&Protection {
                approvals: 1,
                approvers: vec![Approver::Name("alice".into())],
                checks: vec![CheckKind::Ci, CheckKind::NotLocked],
                admins: vec![],
                needs_admin: false,
                ttl: "4h".parse().unwrap(),
            })
        );

        let full = one(serde_json::json!({"protect": {"live": {
            "approvals": 2, "approvers": ["U0LEAD001", "alice", "@release-managers"],
            "checks": ["rollback_notes", "ci", "review", "not_locked"], "admins": ["U0OPS0001"],
            "needs_admin": true, "ttl": "1h30m"
        }}}))
        .unwrap();
        let p = full.protection(&live).unwrap();
        assert_eq!(p.approvals, 2);
        assert_eq!(
            p.approvers,
            [
                Approver::Id("U0LEAD001".into()),
                Approver::Name("alice".into()),
                Approver::Group("release-managers".into())
            ]
        );
        assert_eq!(
            p.checks,
            [
                CheckKind::RollbackNotes,
                CheckKind::Ci,
                CheckKind::Review,
                CheckKind::NotLocked
            ],
            "in the order written"
        );
        assert_eq!(p.admins, [Approver::Id("U0OPS0001".into())]);
        assert!(p.needs_admin);
        assert_eq!(p.ttl.as_secs(), 5_400);
        assert!(p.is_approver("U0LEAD001", "lead", &[]));
        assert!(p.is_approver("U0ANY", "carol", &["release-managers".into()]));
        assert!(
            !p.is_approver("U0OPS0001", "ops", &[]),
            "an admin is no approver"
        );
        assert!(p.is_admin("U0OPS0001", "ops", &[]));
        assert!(!p.is_admin("U0LEAD001", "lead", &[]));
        let none =
            one(serde_json::json!({"protect": {"live": {"approvers": ["a"], "checks": []}}}))
                .unwrap();
        assert!(
            none.protection(&live).unwrap().checks.is_empty(),
            "[] means no checks"
        );
        assert_eq!(
            full.payload_config()["protect"]["live"]["approvals"],
            2,
            "protect stays in the payload's config"
        );
    }

    #[test]
    fn protect_problems_are_all_reported_with_the_field_named() {
        let err = one(serde_json::json!({"protect": {
            "live": {"approvals": 0, "approver": ["alice"], "checks": ["ci", "lint", "ci"],
                     "needs_admin": true, "ttl": "8d"},
            "staging": {"approvers": [], "admins": ["Ops Team"], "needs_admin": "yes", "ttl": "0m"},
            "production": {"approvers": ["alice", "bob", "alice"], "approvals": 3},
            "Live": {"approvers": ["alice"]},
            "edge": "alice"
        }}))
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                "app.json: demo.protect: \"Live\": environment names are lower-case",
                "app.json: demo.protect: edge is not one of the app's environments",
                "app.json: demo.protect.edge: must be an object (approvals, approvers, checks, admins, needs_admin, ttl; approvers required)",
                "app.json: demo.protect.live: unknown key \"approver\" (known: approvals, approvers, checks, admins, needs_admin, ttl)",
                "app.json: demo.protect.live.approvals: must be a whole number, at least 1",
                "app.json: demo.protect.live.approvers: is required: the user ids, chat handles or @groups who may approve",
                "app.json: demo.protect.live.checks: unknown check \"lint\" (known: ci, review, rollback_notes, not_locked)",
                "app.json: demo.protect.live.checks: ci is listed more than once",
                "app.json: demo.protect.live.needs_admin: is true but no admins are listed: name who may claim and deploy in admins",
                "app.json: demo.protect.live.ttl: 8d is too long: at most 7d",
                "app.json: demo.protect: production is not one of the app's environments",
                "app.json: demo.protect.production.approvers: alice is listed more than once",
                "app.json: demo.protect.production.approvals: 3 approvals needed but only 2 approvers listed",
                "app.json: demo.protect.staging.approvers: must name at least one approver",
                "app.json: demo.protect.staging.admins: \"Ops Team\" is not a user id (U0LEAD001), a chat handle (alice) or a user group (@release-managers)",
                "app.json: demo.protect.staging.needs_admin: must be true or false",
                "app.json: demo.protect.staging.ttl: must be more than 0",
            ]
        );
        assert_eq!(
            one(serde_json::json!({"protect": ["live"]})).unwrap_err(),
            vec![
                "app.json: demo.protect: must be an object keyed by environment, e.g. {\"production\": {\"approvers\": [\"alice\"]}}"
            ]
        );
        // A group may hold any number of people: no count to check against.
        assert!(
            one(serde_json::json!({"protect": {"live": {"approvals": 3, "approvers": ["@ops"]}}}))
                .is_ok()
        );
    }

    #[test]
    fn tickets_default_and_parse() {
        let live = EnvName::parse("live").unwrap();
        let plain = one(serde_json::json!({"tickets": {}})).unwrap();
        let t = plain.tickets().unwrap();
        assert!(t.github_issues);
        assert_eq!(t.label_for(&live).as_deref(), Some("released:live"));
        assert_eq!(t.jira, None);

        let set = one(serde_json::json!({"tickets": {
            "github_issues": false, "label": "shipped-{env}", "jira": {"project": "PROJ"}
        }}))
        .unwrap();
        let t = set.tickets().unwrap();
        assert!(!t.github_issues);
        assert_eq!(t.label_for(&live).as_deref(), Some("shipped-live"));
        assert_eq!(
            t.jira,
            Some(JiraSettings {
                project: "PROJ".into(),
                transition: "Released".into()
            })
        );
        let moved = one(serde_json::json!({"tickets": {
            "label": false, "jira": {"project": "OPS_2", "transition": "Done"}
        }}))
        .unwrap();
        let t = moved.tickets().unwrap();
        assert_eq!(t.label_for(&live), None, "false: no label");
        assert_eq!(t.jira.as_ref().unwrap().transition, "Done");
    }

    #[test]
    fn ticket_problems_name_the_field() {
        let err = one(serde_json::json!({"tickets": {
            "github_issue": true, "github_issues": "yes", "label": "",
            "jira": {"project": "proj", "transition": "", "board": 1}
        }}))
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                "app.json: demo.tickets: unknown key \"github_issue\" (known: github_issues, label, jira)",
                "app.json: demo.tickets.github_issues: must be true or false",
                "app.json: demo.tickets.label: must be a label name such as \"released:{env}\", or false for none",
                "app.json: demo.tickets.jira: unknown key \"board\" (known: project, transition)",
                "app.json: demo.tickets.jira.project: \"proj\" is not a Jira project key (capital letters, digits and '_', starting with a letter, e.g. \"PROJ\")",
                "app.json: demo.tickets.jira.transition: must be a non-empty string",
            ]
        );
        assert_eq!(
            one(serde_json::json!({"tickets": {"jira": {}}})).unwrap_err(),
            vec![
                "app.json: demo.tickets.jira.project: is required: the Jira project key, e.g. \"PROJ\" for PROJ-123"
            ]
        );
        assert_eq!(
            one(serde_json::json!({"tickets": true})).unwrap_err(),
            vec!["app.json: demo.tickets: must be an object (github_issues, label, jira)"]
        );
    }

    #[test]
    fn the_shipped_example_loads_freezes_only_an_example_environment_and_protects_demo() {
        let apps = Apps::from_json(include_str!("../../../../app.json")).unwrap();
        let demo = apps.get(&AppName::parse("demo").unwrap()).unwrap();
        assert_eq!(demo.lock_ttl().to_string(), "4h");
        assert!(
            demo.freezes().is_empty(),
            "the quick start must never be frozen"
        );
        assert_eq!(
            demo.protection(&EnvName::parse("staging").unwrap()),
            None,
            "the quick start deploys to staging at once"
        );
        let production = demo.protection(&EnvName::production()).unwrap();
        assert_eq!(production.approvals, 1);
        assert!(production.is_approver("bob", "bob", &[]));
        assert!(production.is_approver("alice", "alice", &[]));
        assert_eq!(production.checks, CheckKind::ALL, "every check is shown");
        assert_eq!(production.ttl.to_string(), "4h");
        let modmod = apps.get(&AppName::parse("modmod-web").unwrap()).unwrap();
        assert_eq!(modmod.freezes().len(), 2);
        for window in modmod.freezes() {
            assert!(window.covers(&EnvName::production()));
            assert!(!window.covers(&EnvName::parse("staging").unwrap()));
        }
    }
}
