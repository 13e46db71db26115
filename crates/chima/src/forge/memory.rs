//! An in-memory forge for unit tests of what reads pull requests and writes to issues: canned
//! answers, a record of every call, and the comments and labels written.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use deploy_core::{AppConfig, EnvName, GitRef, NewDeployment};

use super::{
    CiReport, CreateOutcome, DeploymentFilter, DeploymentInfo, DeploymentState, Forge, ForgeError,
    PullInfo, ReviewInfo,
};

/// Canned answers; a call it has no answer for panics.
#[derive(Default)]
pub(crate) struct MemoryForge {
    pub ci: Option<Result<CiReport, ForgeError>>,
    pub pulls: Option<Result<Vec<PullInfo>, ForgeError>>,
    pub reviews: HashMap<u64, Result<Vec<ReviewInfo>, ForgeError>>,
    pub commits: HashMap<u64, Result<Vec<String>, ForgeError>>,
    /// Issues that exist; comments and labels on others answer 404.
    pub issues: Vec<u64>,
    /// The next this many comment or label calls fail as unreachable.
    pub failing_writes: Mutex<u32>,
    /// Every call, e.g. `pulls <sha>`, `comment 12`.
    pub asked: Mutex<Vec<String>>,
    /// Comments written: (issue, body).
    pub comments: Mutex<Vec<(u64, String)>>,
    /// Labels added: (issue, label).
    pub labels: Mutex<Vec<(u64, String)>>,
}

impl MemoryForge {
    fn note(&self, what: String) {
        self.asked.lock().unwrap().push(what);
    }

    fn write(&self, issue: u64) -> Result<(), ForgeError> {
        let mut failing = self.failing_writes.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            return Err(ForgeError::Unreachable("connection reset".to_owned()));
        }
        if self.issues.contains(&issue) {
            Ok(())
        } else {
            Err(ForgeError::NotFound)
        }
    }

    /// The calls made, in order.
    pub fn calls(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl Forge for MemoryForge {
    fn describe(&self) -> String {
        "memory".to_owned()
    }
    async fn default_branch(&self, _: &AppConfig) -> Result<GitRef, ForgeError> {
        unreachable!("not canned")
    }
    async fn create_deployment(
        &self,
        _: &AppConfig,
        _: &NewDeployment,
    ) -> Result<CreateOutcome, ForgeError> {
        unreachable!("not canned")
    }
    async fn deployments(
        &self,
        _: &AppConfig,
        _: &DeploymentFilter,
    ) -> Result<Vec<DeploymentInfo>, ForgeError> {
        unreachable!("not canned")
    }
    async fn current_deployment(
        &self,
        _: &AppConfig,
        _: &EnvName,
    ) -> Result<Option<DeploymentInfo>, ForgeError> {
        unreachable!("not canned")
    }
    async fn deployment_state(
        &self,
        _: &AppConfig,
        _: u64,
    ) -> Result<Option<DeploymentState>, ForgeError> {
        unreachable!("not canned")
    }
    async fn has_statuses(&self, _: &AppConfig, _: u64) -> Result<bool, ForgeError> {
        unreachable!("not canned")
    }
    async fn resolve_sha(&self, _: &AppConfig, _: &GitRef) -> Result<Option<String>, ForgeError> {
        unreachable!("not canned")
    }
    async fn ci_report(&self, _: &AppConfig, git_ref: &GitRef) -> Result<CiReport, ForgeError> {
        self.note(format!("ci {git_ref}"));
        self.ci.clone().expect("ci canned")
    }
    async fn pulls_for_commit(
        &self,
        _: &AppConfig,
        sha: &str,
    ) -> Result<Vec<PullInfo>, ForgeError> {
        self.note(format!("pulls {sha}"));
        self.pulls.clone().expect("pulls canned")
    }
    async fn pull_reviews(&self, _: &AppConfig, n: u64) -> Result<Vec<ReviewInfo>, ForgeError> {
        self.note(format!("reviews {n}"));
        self.reviews.get(&n).cloned().unwrap_or(Ok(Vec::new()))
    }
    async fn pull_commits(&self, _: &AppConfig, n: u64) -> Result<Vec<String>, ForgeError> {
        self.note(format!("commits {n}"));
        self.commits.get(&n).cloned().unwrap_or(Ok(Vec::new()))
    }
    async fn comment_on_issue(
        &self,
        _: &AppConfig,
        issue: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.note(format!("comment {issue}"));
        self.write(issue)?;
        self.comments.lock().unwrap().push((issue, body.to_owned()));
        Ok(())
    }
    async fn add_label(&self, _: &AppConfig, issue: u64, label: &str) -> Result<(), ForgeError> {
        self.note(format!("label {issue}"));
        self.write(issue)?;
        self.labels.lock().unwrap().push((issue, label.to_owned()));
        Ok(())
    }
    async fn log(&self, _: u64) -> Result<Vec<String>, ForgeError> {
        unreachable!("not canned")
    }
    fn hooks_settings_url(&self, _: &AppConfig) -> String {
        unreachable!("not canned")
    }
}
