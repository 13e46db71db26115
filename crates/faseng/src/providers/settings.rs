//! Operator settings the providers need (SSH deploy key, known hosts, Heroku API), given to
//! [`super::for_kind`] so a provider never reads faseng's own environment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deploy_core::Secret;

/// The default Heroku Platform API base.
pub const DEFAULT_HEROKU_API_URL: &str = "https://api.heroku.com";

/// Where the deploy key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKeySource {
    /// `DEPLOY_SSH_KEY`: the private key text (written 0600 into a per-run directory).
    Text(Secret),
    /// `DEPLOY_SSH_KEY_FILE`: a path, used in place.
    File(PathBuf),
}

/// Provider settings from faseng's flags / environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The deploy key for fabric and capistrano.
    pub ssh_key: Option<SshKeySource>,
    /// `DEPLOY_SSH_KNOWN_HOSTS`: known_hosts lines; `None` = accept-new.
    pub ssh_known_hosts: Option<String>,
    /// `HEROKU_API_KEY`.
    pub heroku_api_key: Option<Secret>,
    /// `HEROKU_API_URL`.
    pub heroku_api_url: String,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            ssh_key: None,
            ssh_known_hosts: None,
            heroku_api_key: None,
            heroku_api_url: DEFAULT_HEROKU_API_URL.to_owned(),
        }
    }
}

impl ProviderConfig {
    /// Values that must never appear in a log: the Heroku key and every line of the deploy
    /// key text.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(k) = &self.heroku_api_key {
            out.push(k.expose().to_owned());
        }
        if let Some(SshKeySource::Text(t)) = &self.ssh_key {
            out.extend(crate::runlog::pem_secrets(t.expose()));
        }
        out
    }
}

/// Everything providers get: the operator's [`ProviderConfig`] plus what faseng knows anyway.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Flags / environment.
    pub config: ProviderConfig,
    /// GitHub API base (for the tarball link Heroku builds from).
    pub github_api_url: String,
    /// faseng's work directory: per-run SSH directories and the accept-new known_hosts live
    /// under `<state_dir>/ssh/`.
    pub state_dir: PathBuf,
    /// HTTP client for provider APIs (redirects are not followed).
    pub http: reqwest::Client,
}

impl ProviderSettings {
    /// Settings over a config; the HTTP client never follows redirects (GitHub's tarball
    /// link is read from the `Location` header, not downloaded).
    pub fn new(config: ProviderConfig, github_api_url: &str, state_dir: PathBuf) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("faseng/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is compiled in");
        Arc::new(Self {
            config,
            github_api_url: github_api_url.trim_end_matches('/').to_owned(),
            state_dir,
            http,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_cover_the_heroku_key_and_each_line_of_the_deploy_key() {
        let c = ProviderConfig {
            ssh_key: Some(SshKeySource::Text(Secret::new(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQUJDREVGR0hJSktMTU5P\n-----END OPENSSH PRIVATE KEY-----\n",
            ))),
            heroku_api_key: Some(Secret::new("hrku-0123456789")),
            ..ProviderConfig::default()
        };
        let s = c.secrets();
        assert!(s.contains(&"hrku-0123456789".to_owned()));
        assert!(s.contains(&"b3BlbnNzaC1rZXktdjEAAAAA".to_owned()));
        assert!(s.contains(&"QUJDREVGR0hJSktMTU5P".to_owned()));
        assert!(!s.iter().any(|l| l.starts_with("-----END")));
        assert_eq!(
            ProviderConfig::default().heroku_api_url,
            DEFAULT_HEROKU_API_URL
        );
        assert!(ProviderConfig::default().secrets().is_empty());
    }
}
