//! What a deployment runs: the `task` of a GitHub deployment, parsed once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest task faseng takes. GitHub sets no limit, but a task travels to providers as an
/// environment value or an argument, where a megabyte would fail the exec.
pub const MAX_TASK_BYTES: usize = 255;

/// The longest task chima creates from a chat command.
pub const MAX_COMMAND_TASK_BYTES: usize = 64;

/// Why a task can never be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The empty string.
    #[error("deployment.task must not be empty")]
    Empty,
    /// Longer than [`MAX_TASK_BYTES`].
    #[error("deployment.task is longer than {MAX_TASK_BYTES} bytes")]
    TooLong,
    /// A control or invisible character.
    #[error("deployment.task contains a control or invisible character")]
    Invisible,
}

/// The part after `deploy:` in `deploy:migrate` or `deploy:db:migrate`: words of
/// `[a-z0-9_-]`, none empty or starting with `-` (so a task never reads as an option to `cap`
/// or `fab`), joined by `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskWord(String);

impl TaskWord {
    /// The word, or `None` when it breaks the rules above.
    pub fn parse(s: &str) -> Option<Self> {
        s.split(':')
            .all(|p| {
                !p.is_empty()
                    && !p.starts_with('-')
                    && p.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
            })
            .then(|| Self(s.to_owned()))
    }

    /// The word as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A deployment task. On the wire (GitHub's `task`, faseng's queued job) it is the string
/// `deploy`, `deploy:<word>`, `deploy:lock` or `deploy:unlock`; [`Display`](fmt::Display) and
/// serde give that string back exactly as it was parsed.
///
/// `deploy:rollback` is reserved for a `Rollback` variant; until rollback exists it parses as
/// [`Task::DeployWith`] and runs like any other task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Task {
    /// `deploy`.
    #[default]
    Deploy,
    /// `deploy:<word>`, e.g. `deploy:migrations`: the provider runs that task.
    DeployWith(TaskWord),
    /// `deploy:lock`: lock the environment instead of deploying.
    Lock,
    /// `deploy:unlock`: release the environment's lock.
    Unlock,
    /// Any other task another deployment creator sent (`build`, `Deploy:X`, …), kept as
    /// sent and handed to the provider unchanged.
    Other(String),
}

impl Task {
    /// Parses a task typed in chat: case-insensitive, at most [`MAX_COMMAND_TASK_BYTES`], and
    /// only `deploy` or `deploy:<word>` (which includes `deploy:lock` / `deploy:unlock`).
    pub fn parse_command(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        if s.len() > MAX_COMMAND_TASK_BYTES {
            return None;
        }
        match s.parse::<Task>().ok()? {
            Task::Other(_) => None,
            task => Some(task),
        }
    }

    /// Whether it is plain `deploy`.
    pub fn is_deploy(&self) -> bool {
        matches!(self, Task::Deploy)
    }
}

impl FromStr for Task {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Self, TaskError> {
        if s.is_empty() {
            return Err(TaskError::Empty);
        }
        if s.len() > MAX_TASK_BYTES {
            return Err(TaskError::TooLong);
        }
        if s.chars()
            .any(|c| c.is_control() || crate::names::is_invisible(c))
        {
            return Err(TaskError::Invisible);
        }
        Ok(match s {
            "deploy" => Task::Deploy,
            "deploy:lock" => Task::Lock,
            "deploy:unlock" => Task::Unlock,
            _ => match s.strip_prefix("deploy:").and_then(TaskWord::parse) {
                Some(word) => Task::DeployWith(word),
                None => Task::Other(s.to_owned()),
            },
        })
    }
}

impl TryFrom<&str> for Task {
    type Error = TaskError;

    fn try_from(s: &str) -> Result<Self, TaskError> {
        s.parse()
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Deploy => f.write_str("deploy"),
            Task::DeployWith(word) => write!(f, "deploy:{}", word.as_str()),
            Task::Lock => f.write_str("deploy:lock"),
            Task::Unlock => f.write_str("deploy:unlock"),
            Task::Other(s) => f.write_str(s),
        }
    }
}

impl Serialize for Task {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for s in [
            "deploy",
            "deploy:lock",
            "deploy:unlock",
            "deploy:migrations",
            "deploy:db:migrate",
            "deploy:rollback",
            "build",
            "Deploy:Lock",
            "deploy:-x",
            "deploy:",
        ] {
            let task: Task = s.parse().unwrap();
            assert_eq!(task.to_string(), s);
            let json = serde_json::to_string(&task).unwrap();
            assert_eq!(json, serde_json::to_string(s).unwrap());
            assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
        }
    }

    #[test]
    fn variants_are_what_the_wire_says() {
        assert_eq!("deploy".parse(), Ok(Task::Deploy));
        assert_eq!("deploy:lock".parse(), Ok(Task::Lock));
        assert_eq!("deploy:unlock".parse(), Ok(Task::Unlock));
        assert!(
            matches!("deploy:migrate".parse(), Ok(Task::DeployWith(w)) if w.as_str() == "migrate")
        );
        assert!(matches!("Deploy:Lock".parse(), Ok(Task::Other(_))));
        assert!(matches!("deploy:$(id)".parse(), Ok(Task::Other(_))));
    }

    #[test]
    fn unusable_tasks_are_refused_with_the_rule_they_break() {
        assert_eq!("".parse::<Task>(), Err(TaskError::Empty));
        assert_eq!("x".repeat(256).parse::<Task>(), Err(TaskError::TooLong));
        assert_eq!("deploy\n".parse::<Task>(), Err(TaskError::Invisible));
        assert_eq!("deploy\u{200b}".parse::<Task>(), Err(TaskError::Invisible));
        assert!(
            TaskError::TooLong
                .to_string()
                .contains("longer than 255 bytes")
        );
    }

    #[test]
    fn chat_commands_take_only_deploy_tasks() {
        assert_eq!(Task::parse_command("DEPLOY"), Some(Task::Deploy));
        assert_eq!(Task::parse_command("deploy:LOCK"), Some(Task::Lock));
        assert_eq!(Task::parse_command("build"), None);
        assert_eq!(Task::parse_command("deploy:"), None);
        assert_eq!(Task::parse_command("deploy:-x"), None);
        assert_eq!(
            Task::parse_command(&format!("deploy:{}", "a".repeat(60))),
            None
        );
    }
}
