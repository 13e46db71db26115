//! The keys runs and waiting lines are stored under. Built only here, so every part of the
//! system spells them the same way.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{AppName, EnvName, RepoName};

/// A run's key: `owner/repo/<deployment id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunKey(String);

impl RunKey {
    /// The key of deployment `id` of `repo`.
    pub fn new(repo: &RepoName, id: u64) -> Self {
        Self(format!("{repo}/{id}"))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for RunKey {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RunKey {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<RunKey> for String {
    fn eq(&self, other: &RunKey) -> bool {
        *self == other.0
    }
}

/// A waiting line's key: `app/env`. Runs in one line take turns; a lock is held on a line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LineKey(String);

impl LineKey {
    /// The line of `app` (an operator's app name) and an environment as sent. An environment
    /// that is not a valid name gets a line of its own (the run fails validation anyway).
    pub fn new(app: &AppName, environment: &str) -> Self {
        Self::build(app.as_str(), environment)
    }

    /// The line of a deployment of `repo` that resolved to none of the operator's apps.
    pub fn unresolved(repo: &RepoName, environment: &str) -> Self {
        Self::build(&format!("?{repo}"), environment)
    }

    fn build(owner: &str, environment: &str) -> Self {
        match EnvName::parse(environment) {
            Ok(env) => Self(format!("{owner}/{env}")),
            Err(_) => Self(format!("{owner}/invalid:{}", environment.escape_default())),
        }
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The app part (before the first `/`).
    pub fn app(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

impl fmt::Display for LineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_as_the_store_expects() {
        let repo = RepoName::parse("o/r").unwrap();
        let app = AppName::parse("a").unwrap();
        assert_eq!(RunKey::new(&repo, 7).as_str(), "o/r/7");
        assert_eq!(LineKey::new(&app, "Production").as_str(), "a/production");
        assert_eq!(LineKey::new(&app, "bad env").as_str(), "a/invalid:bad env");
        assert_eq!(LineKey::unresolved(&repo, "edge").as_str(), "?o/r/edge");
        assert_eq!(
            serde_json::to_string(&RunKey::new(&repo, 7)).unwrap(),
            "\"o/r/7\""
        );
    }
}
