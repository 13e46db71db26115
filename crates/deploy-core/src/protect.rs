//! Release requests' configuration from app.json: which environments are protected and how
//! (`protect`), and which trackers are updated after a release (`tickets`). Pure: who may
//! approve is answered from the ids, handles and groups the caller passes in.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::apps::Checker;
use crate::duration::Span;
use crate::names::EnvName;

/// `protect.<env>.approvals` when unset.
pub const DEFAULT_APPROVALS: u32 = 1;
/// `protect.<env>.checks` when unset.
pub const DEFAULT_CHECKS: [CheckKind; 2] = [CheckKind::Ci, CheckKind::NotLocked];
/// `protect.<env>.ttl` when unset: how long a request stays open.
pub const DEFAULT_REQUEST_TTL: Span = Span::from_secs(4 * 3_600);
/// The longest `protect.<env>.ttl` may be.
pub const MAX_REQUEST_TTL: Span = Span::from_secs(7 * 86_400);
/// `tickets.label` when unset (`{env}` is the environment released to).
pub const DEFAULT_TICKET_LABEL: &str = "released:{env}";
/// `tickets.jira.transition` when unset.
pub const DEFAULT_JIRA_TRANSITION: &str = "Released";

/// Someone named in `approvers` or `admins`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Approver {
    /// A Slack-style user id (`U0LEAD001`, `W0ENTERP1`): `U` or `W`, then upper-case letters
    /// and digits.
    Id(String),
    /// A chat handle (Slack `name`, the shell user), compared without regard to case.
    Name(String),
    /// A Slack user group, written `@release-managers`; held without the `@`.
    Group(String),
}

/// Why an `approvers` or `admins` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a user id (U0LEAD001), a chat handle (alice) or a user group (@release-managers)"
)]
pub struct ApproverError(String);

/// A handle or group name: letters, digits, `.`, `_`, `-`, starting with a letter or digit.
fn is_handle(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl Approver {
    /// Parses an entry: `@name` is a group, `U…`/`W…` in capitals and digits an id, any other
    /// handle a name. A display name (with spaces) is refused.
    pub fn parse(text: &str) -> Result<Self, ApproverError> {
        let refuse = || ApproverError(text.to_owned());
        let s = text.trim();
        if let Some(group) = s.strip_prefix('@') {
            return is_handle(group)
                .then(|| Approver::Group(group.to_owned()))
                .ok_or_else(refuse);
        }
        let id_like = s.len() >= 3
            && s.starts_with(['U', 'W'])
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if id_like {
            Ok(Approver::Id(s.to_owned()))
        } else if is_handle(s) {
            Ok(Approver::Name(s.to_owned()))
        } else {
            Err(refuse())
        }
    }

    /// True when the user with id `user_id`, chat handle `user_name` and user groups `groups`
    /// (handles or ids, `@` optional) is this one: an id by id, a name by handle, a group by
    /// membership. Never pass a display name.
    pub fn matches(&self, user_id: &str, user_name: &str, groups: &[String]) -> bool {
        match self {
            Approver::Id(id) => id == user_id,
            Approver::Name(name) => {
                let handle = user_name.trim().trim_start_matches('@');
                !handle.is_empty() && name.eq_ignore_ascii_case(handle)
            }
            Approver::Group(group) => groups
                .iter()
                .any(|g| g.trim().trim_start_matches('@').eq_ignore_ascii_case(group)),
        }
    }
}

impl fmt::Display for Approver {
    /// As written in app.json (`U0LEAD001`, `alice`, `@release-managers`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::Id(id) => f.write_str(id),
            Approver::Name(name) => f.write_str(name),
            Approver::Group(group) => write!(f, "@{group}"),
        }
    }
}

/// A check a release request runs before it may deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The sha's combined status and check runs (or the app's `required_contexts`) are green.
    Ci,
    /// The pull request that brought the sha is approved by someone other than its author,
    /// with no outstanding change request.
    Review,
    /// That pull request's body has a non-empty `Rollback` section.
    RollbackNotes,
    /// No lock or freeze covers the environment (unless the requester holds it).
    NotLocked,
}

impl CheckKind {
    /// Every check, in the order app.json's help lists them.
    pub const ALL: [CheckKind; 4] = [
        CheckKind::Ci,
        CheckKind::Review,
        CheckKind::RollbackNotes,
        CheckKind::NotLocked,
    ];

    /// The name used in app.json (`rollback_notes`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Ci => "ci",
            CheckKind::Review => "review",
            CheckKind::RollbackNotes => "rollback_notes",
            CheckKind::NotLocked => "not_locked",
        }
    }

    /// The check named `name` in app.json, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// True when it asks GitHub (so it is skipped in local mode).
    pub fn needs_github(self) -> bool {
        !matches!(self, CheckKind::NotLocked)
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one environment is protected (`protect.<env>`): deploys to it go through a release
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// How many distinct approvers (never the requester) a request needs; at least 1.
    pub approvals: u32,
    /// Who may approve (and reject); never empty.
    pub approvers: Vec<Approver>,
    /// The checks run on a request, in the order written.
    pub checks: Vec<CheckKind>,
    /// Release admins: who may claim, deploy, reject or cancel any request.
    pub admins: Vec<Approver>,
    /// Whether an admin must claim a request before it deploys.
    pub needs_admin: bool,
    /// How long a request stays open before it expires.
    pub ttl: Span,
}

impl Protection {
    /// True when the user (id, chat handle, user groups) is one of the approvers.
    pub fn is_approver(&self, user_id: &str, user_name: &str, groups: &[String]) -> bool {
        self.approvers
            .iter()
            .any(|a| a.matches(user_id, user_name, groups))
    }

    /// True when the user (id, chat handle, user groups) is one of the release admins.
    pub fn is_admin(&self, user_id: &str, user_name: &str, groups: &[String]) -> bool {
        self.admins
            .iter()
            .any(|a| a.matches(user_id, user_name, groups))
    }
}

/// Which trackers are updated after a successful release (`tickets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketSettings {
    /// Comment on the GitHub issues the released pull requests reference (default true).
    pub github_issues: bool,
    /// The label those issues get, `{env}` standing for the environment (default
    /// `released:{env}`); `None` (`"label": false`) adds none.
    pub label: Option<String>,
    /// Move Jira issues too, when set.
    pub jira: Option<JiraSettings>,
}

impl TicketSettings {
    /// The label for a release to `env`, `{env}` substituted.
    pub fn label_for(&self, env: &EnvName) -> Option<String> {
        self.label
            .as_ref()
            .map(|label| label.replace("{env}", env.as_str()))
    }
}

/// Jira issues to move after a release (`tickets.jira`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JiraSettings {
    /// The project key: issue keys `PROJ-123` are found for project `PROJ`.
    pub project: String,
    /// The transition to apply, by name (default `Released`).
    pub transition: String,
}

impl JiraSettings {
    /// The project's issue keys in `text` (`PROJ-12` in a title, branch name or commit
    /// message; not inside a longer word such as `XPROJ-12` or `PROJ-12a`), each once, in
    /// the order found.
    pub fn keys_in(&self, text: &str) -> Vec<String> {
        let prefix = format!("{}-", self.project);
        let mut keys: Vec<String> = Vec::new();
        let mut from = 0;
        while let Some(found) = text[from..].find(&prefix) {
            let start = from + found;
            let digits_at = start + prefix.len();
            from = start + prefix.chars().next().map_or(1, char::len_utf8);
            let before_ok = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_');
            let digits = text[digits_at..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            let after_ok = text[digits_at + digits..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_');
            let number = &text[digits_at..digits_at + digits];
            if before_ok && after_ok && !number.is_empty() && !number.starts_with('0') {
                let key = format!("{prefix}{number}");
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }
}

const PROTECT_KEYS: [&str; 6] = [
    "approvals",
    "approvers",
    "checks",
    "admins",
    "needs_admin",
    "ttl",
];
const TICKET_KEYS: [&str; 3] = ["github_issues", "label", "jira"];
const JIRA_KEYS: [&str; 2] = ["project", "transition"];

/// Reports every key of `entry` not in `known` (on the checker's own path).
fn unknown_keys(c: &mut Checker<'_>, entry: &Map<String, Value>, known: &[&str]) {
    for key in entry.keys() {
        if !known.contains(&key.as_str()) {
            c.problem(
                "",
                format!("unknown key {key:?} (known: {})", known.join(", ")),
            );
        }
    }
}

/// A list of approvers (`approvers`, `admins`); `None` when absent.
fn approver_list(c: &mut Checker<'_>, field: &str) -> Option<Vec<Approver>> {
    let texts = c.string_list(field)?;
    let mut approvers: Vec<Approver> = Vec::new();
    for text in texts {
        match Approver::parse(&text) {
            Ok(a) if approvers.contains(&a) => {
                c.problem(field, format!("{a} is listed more than once"));
            }
            Ok(a) => approvers.push(a),
            Err(e) => c.problem(field, e.to_string()),
        }
    }
    Some(approvers)
}

/// One environment's `protect` entry (the checker's path is `protect.<env>`).
fn protection(c: &mut Checker<'_>) -> Option<Protection> {
    let entry = c.entry;
    unknown_keys(c, entry, &PROTECT_KEYS);
    let approvals = match entry.get("approvals") {
        None | Some(Value::Null) => DEFAULT_APPROVALS,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= 1 => n,
            _ => {
                c.problem("approvals", "must be a whole number, at least 1");
                DEFAULT_APPROVALS
            }
        },
    };
    let approvers = match approver_list(c, "approvers") {
        None => {
            c.problem(
                "approvers",
                "is required: the user ids, chat handles or @groups who may approve",
            );
            Vec::new()
        }
        Some(list) if list.is_empty() && !c.has_problem("approvers") => {
            c.problem("approvers", "must name at least one approver");
            list
        }
        Some(list) => list,
    };
    let no_groups = approvers.iter().all(|a| !matches!(a, Approver::Group(_)));
    if !approvers.is_empty() && no_groups && approvals as usize > approvers.len() {
        c.problem(
            "approvals",
            format!(
                "{approvals} approvals needed but only {} approver{} listed",
                approvers.len(),
                if approvers.len() == 1 { "" } else { "s" }
            ),
        );
    }
    let checks = match c.string_list("checks") {
        None => DEFAULT_CHECKS.to_vec(),
        Some(names) => {
            let mut checks: Vec<CheckKind> = Vec::new();
            for name in names {
                match CheckKind::parse(&name) {
                    Some(k) if checks.contains(&k) => {
                        c.problem("checks", format!("{k} is listed more than once"));
                    }
                    Some(k) => checks.push(k),
                    None => c.problem(
                        "checks",
                        format!(
                            "unknown check {name:?} (known: {})",
                            CheckKind::ALL.map(CheckKind::as_str).join(", ")
                        ),
                    ),
                }
            }
            checks
        }
    };
    let admins = approver_list(c, "admins").unwrap_or_default();
    let needs_admin = c.bool("needs_admin", false);
    if needs_admin && admins.is_empty() && !c.has_problem("admins") {
        c.problem(
            "needs_admin",
            "is true but no admins are listed: name who may claim and deploy in admins",
        );
    }
    let ttl = c.span("ttl", DEFAULT_REQUEST_TTL, Some(MAX_REQUEST_TTL));
    Some(Protection {
        approvals,
        approvers,
        checks,
        admins,
        needs_admin,
        ttl,
    })
}

/// The app's `protect` (the checker is the app's), keyed by the app's `environments`.
pub(crate) fn parse_protect(
    c: &mut Checker<'_>,
    environments: &[EnvName],
) -> BTreeMap<EnvName, Protection> {
    let mut protected = BTreeMap::new();
    let entries = match c.entry.get("protect") {
        None | Some(Value::Null) => return protected,
        Some(Value::Object(entries)) => entries,
        Some(_) => {
            c.problem(
                "protect",
                "must be an object keyed by environment, e.g. {\"production\": {\"approvers\": [\"alice\"]}}",
            );
            return protected;
        }
    };
    for (key, value) in entries {
        let env = match EnvName::parse(key) {
            Ok(env) if env.as_str() == key && environments.contains(&env) => Some(env),
            Ok(env) if env.as_str() == key => {
                c.problem(
                    "protect",
                    format!("{env} is not one of the app's environments"),
                );
                None
            }
            Ok(_) => {
                c.problem(
                    "protect",
                    format!("{key:?}: environment names are lower-case"),
                );
                None
            }
            Err(e) => {
                c.problem(
                    "protect",
                    format!("{key:?} is not a valid environment name: {e}"),
                );
                None
            }
        };
        let path = format!("protect.{key}");
        let Value::Object(entry) = value else {
            c.problem(
                &path,
                format!(
                    "must be an object ({}; approvers required)",
                    PROTECT_KEYS.join(", ")
                ),
            );
            continue;
        };
        let found = protection(&mut c.nested(&path, entry));
        if let (Some(env), Some(found)) = (env, found) {
            protected.insert(env, found);
        }
    }
    protected
}

/// The app's `tickets` (the checker is the app's); `None` when absent.
pub(crate) fn parse_tickets(c: &mut Checker<'_>) -> Option<TicketSettings> {
    let entry = match c.entry.get("tickets") {
        None | Some(Value::Null) => return None,
        Some(Value::Object(entry)) => entry,
        Some(_) => {
            c.problem(
                "tickets",
                format!("must be an object ({})", TICKET_KEYS.join(", ")),
            );
            return None;
        }
    };
    let mut t = c.nested("tickets", entry);
    unknown_keys(&mut t, entry, &TICKET_KEYS);
    let github_issues = t.bool("github_issues", true);
    let label = match entry.get("label") {
        None => Some(DEFAULT_TICKET_LABEL.to_owned()),
        Some(Value::Null | Value::Bool(false)) => None,
        Some(Value::String(label)) if !label.trim().is_empty() => Some(label.trim().to_owned()),
        Some(_) => {
            t.problem(
                "label",
                "must be a label name such as \"released:{env}\", or false for none",
            );
            None
        }
    };
    let jira = match entry.get("jira") {
        None | Some(Value::Null) => None,
        Some(Value::Object(jira)) => {
            let mut j = t.nested("jira", jira);
            unknown_keys(&mut j, jira, &JIRA_KEYS);
            let project = match jira.get("project") {
                Some(Value::String(p)) if is_jira_project(p) => Some(p.clone()),
                None | Some(Value::Null) => {
                    j.problem(
                        "project",
                        "is required: the Jira project key, e.g. \"PROJ\" for PROJ-123",
                    );
                    None
                }
                Some(other) => {
                    j.problem(
                        "project",
                        format!(
                            "{other} is not a Jira project key (capital letters, digits and '_', starting with a letter, e.g. \"PROJ\")"
                        ),
                    );
                    None
                }
            };
            let transition = j
                .string("transition")
                .unwrap_or_else(|| DEFAULT_JIRA_TRANSITION.to_owned());
            project.map(|project| JiraSettings {
                project,
                transition,
            })
        }
        Some(_) => {
            t.problem(
                "jira",
                format!("must be an object ({})", JIRA_KEYS.join(", ")),
            );
            None
        }
    };
    Some(TicketSettings {
        github_issues,
        label,
        jira,
    })
}

/// A Jira project key: a capital letter, then capitals, digits or `_`.
fn is_jira_project(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvers_are_ids_names_or_groups() {
        for (text, want) in [
            ("U0LEAD001", Approver::Id("U0LEAD001".into())),
            ("W0ENTERP1", Approver::Id("W0ENTERP1".into())),
            ("alice", Approver::Name("alice".into())),
            ("Bob.Smith", Approver::Name("Bob.Smith".into())),
            ("ulrich", Approver::Name("ulrich".into())),
            (
                " @release-managers ",
                Approver::Group("release-managers".into()),
            ),
        ] {
            assert_eq!(Approver::parse(text).unwrap(), want, "{text:?}");
        }
        for bad in [
            "",
            "@",
            "Alice Smith",
            "@release managers",
            "-x",
            "a@b",
            "@@x",
        ] {
            assert_eq!(
                Approver::parse(bad).unwrap_err().to_string(),
                format!(
                    "{bad:?} is not a user id (U0LEAD001), a chat handle (alice) or a user group (@release-managers)"
                )
            );
        }
        assert_eq!(
            Approver::parse("@release-managers").unwrap().to_string(),
            "@release-managers"
        );
    }

    #[test]
    fn approvers_match_by_id_handle_or_membership_only() {
        let groups = vec!["@release-managers".to_owned(), "S0OPS".to_owned()];
        let id = Approver::parse("U0LEAD001").unwrap();
        assert!(id.matches("U0LEAD001", "lead", &[]));
        assert!(
            !id.matches("U0LEAD002", "U0LEAD001", &[]),
            "a name is no id"
        );
        let name = Approver::parse("alice").unwrap();
        assert!(name.matches("U0ALICE", "alice", &[]));
        assert!(name.matches("U0ALICE", "Alice", &[]), "handles ignore case");
        assert!(name.matches("U0ALICE", "@alice", &[]));
        assert!(!name.matches("alice", "", &[]), "an id is no handle");
        assert!(!name.matches("U0X", "alice2", &[]));
        assert!(!name.matches("U0X", "Alice Smith", &[]));
        let group = Approver::parse("@release-managers").unwrap();
        assert!(group.matches("U0X", "x", &groups));
        assert!(group.matches("U0X", "x", &["Release-Managers".to_owned()]));
        assert!(
            !group.matches("U0X", "release-managers", &[]),
            "membership only"
        );
        assert!(!group.matches("U0X", "x", &["release".to_owned()]));
    }

    #[test]
    fn checks_have_snake_case_names() {
        for kind in CheckKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(CheckKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(CheckKind::RollbackNotes.as_str(), "rollback_notes");
        assert_eq!(CheckKind::parse("lint"), None);
        assert!(!CheckKind::NotLocked.needs_github());
        assert!(CheckKind::Review.needs_github());
    }

    #[test]
    fn labels_substitute_the_environment() {
        let t = TicketSettings {
            github_issues: true,
            label: Some("released:{env}".into()),
            jira: None,
        };
        let live = EnvName::parse("live").unwrap();
        assert_eq!(t.label_for(&live).as_deref(), Some("released:live"));
        let none = TicketSettings { label: None, ..t };
        assert_eq!(none.label_for(&live), None);
    }

    #[test]
    fn jira_keys_are_found_as_whole_words() {
        let jira = JiraSettings {
            project: "PROJ".into(),
            transition: "Released".into(),
        };
        assert_eq!(
            jira.keys_in("PROJ-12: fix login (also PROJ-7, PROJ-12)"),
            ["PROJ-12", "PROJ-7"]
        );
        assert_eq!(jira.keys_in("feature/PROJ-345-retry"), ["PROJ-345"]);
        for none in [
            "XPROJ-1", "PROJ-", "PROJ-x", "PROJ-01", "PROJ-1a", "proj-1", "OTHER-1", "",
        ] {
            assert!(jira.keys_in(none).is_empty(), "{none:?}");
        }
        assert_eq!(jira.keys_in("é PROJ-9é PROJ-10"), ["PROJ-10"]);
    }
}
