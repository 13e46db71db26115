//! The GitHub client factory: one octocrab client per (API base, credential), built once and
//! reused so connections stay alive. Works with github.com, GitHub Enterprise (`/api/v3`
//! prefix) and local fakes; authenticates with a personal token or as a GitHub App.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use octocrab::Octocrab;
use octocrab::service::middleware::retry::RetryConfig;

use crate::apps::Secret;
use crate::names::RepoName;

/// The public GitHub API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// How to authenticate to GitHub.
#[derive(Debug, Clone)]
pub enum GithubAuth {
    /// A personal access token (or fine-grained token).
    Token(Secret),
    /// A GitHub App; an installation token is minted per repository owner.
    App {
        /// The App's id.
        app_id: u64,
        /// The App's private key, PEM.
        private_key: Secret,
    },
}

impl GithubAuth {
    /// Reads `GITHUB_TOKEN`, else `GITHUB_APP_ID` + `GITHUB_APP_PRIVATE_KEY`; `None` if neither.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let non_empty = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(token) = non_empty("GITHUB_TOKEN") {
            return Ok(Some(Self::Token(Secret::new(token.trim()))));
        }
        match (
            non_empty("GITHUB_APP_ID"),
            non_empty("GITHUB_APP_PRIVATE_KEY"),
        ) {
            (Some(id), Some(key)) => Ok(Some(Self::App {
                app_id: id
                    .trim()
                    .parse()
                    .context("GITHUB_APP_ID must be a number")?,
                private_key: Secret::new(key),
            })),
            (Some(_), None) => {
                anyhow::bail!("GITHUB_APP_ID is set but GITHUB_APP_PRIVATE_KEY is not")
            }
            (None, Some(_)) => {
                anyhow::bail!("GITHUB_APP_PRIVATE_KEY is set but GITHUB_APP_ID is not")
            }
            (None, None) => Ok(None),
        }
    }
}

/// Builds and caches GitHub clients; cheap to share behind an `Arc`.
pub struct GithubClients {
    api_url: String,
    auth: Option<GithubAuth>,
    clients: Mutex<HashMap<(String, u64), Octocrab>>,
}

impl std::fmt::Debug for GithubClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubClients")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

fn fingerprint(parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// Trims a trailing `/` so routes join cleanly; `https://ghe/api/v3/` → `https://ghe/api/v3`.
pub fn normalize_api_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

impl GithubClients {
    /// A factory for the given default API base and credential.
    pub fn new(api_url: &str, auth: Option<GithubAuth>) -> Self {
        Self {
            api_url: normalize_api_url(api_url),
            auth,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The default API base URL.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// True when a default credential is configured.
    pub fn has_credentials(&self) -> bool {
        self.auth.is_some()
    }

    /// The client for a repository, honouring a per-app API URL and token.
    pub async fn for_repo(
        &self,
        repo: &RepoName,
        api_override: Option<&str>,
        token_override: Option<&Secret>,
    ) -> anyhow::Result<Octocrab> {
        let api = api_override.map_or_else(|| self.api_url.clone(), normalize_api_url);
        let auth = match token_override {
            Some(token) => Some(GithubAuth::Token(token.clone())),
            None => self.auth.clone(),
        };
        let key = match &auth {
            Some(GithubAuth::Token(t)) => fingerprint(&["token", t.expose()]),
            Some(GithubAuth::App { app_id, .. }) => {
                fingerprint(&["app", &app_id.to_string(), repo.owner()])
            }
            None => fingerprint(&["anonymous"]),
        };
        if let Some(client) = self.cached(&api, key) {
            return Ok(client);
        }
        let client = match &auth {
            Some(GithubAuth::Token(token)) => base_builder(&api)?
                .personal_token(token.expose().to_owned())
                .build()?,
            Some(GithubAuth::App {
                app_id,
                private_key,
            }) => {
                let app = base_builder(&api)?
                    .app_from_rsa_pem((*app_id).into(), private_key.expose().as_bytes())
                    .context("GITHUB_APP_PRIVATE_KEY is not a valid RSA private key (PEM)")?
                    .build()?;
                let installation = app
                    .apps()
                    .get_repository_installation(repo.owner(), repo.name())
                    .await
                    .with_context(|| format!("the GitHub App is not installed on {repo}"))?;
                app.installation(installation.id)?
            }
            None => base_builder(&api)?.build()?,
        };
        self.clients
            .lock()
            .expect("client cache lock")
            .insert((api, key), client.clone());
        Ok(client)
    }

    /// The token git and downloads may send for `repo`: the configured token, or a GitHub
    /// App's installation token for the repository (minted and refreshed by octocrab);
    /// `None` without credentials.
    pub async fn access_token(
        &self,
        repo: &RepoName,
        api_override: Option<&str>,
    ) -> anyhow::Result<Option<Secret>> {
        use octocrab::secrecy::ExposeSecret as _;
        match &self.auth {
            None => Ok(None),
            Some(GithubAuth::Token(t)) => Ok(Some(t.clone())),
            Some(GithubAuth::App { .. }) => {
                let client = self.for_repo(repo, api_override, None).await?;
                let token = client
                    .installation_token()
                    .await
                    .with_context(|| format!("minting an installation token for {repo}"))?;
                Ok(Some(Secret::new(token.expose_secret())))
            }
        }
    }

    fn cached(&self, api: &str, key: u64) -> Option<Octocrab> {
        self.clients
            .lock()
            .expect("client cache lock")
            .get(&(api.to_owned(), key))
            .cloned()
    }
}

fn base_builder(
    api: &str,
) -> anyhow::Result<
    octocrab::OctocrabBuilder<
        octocrab::NoSvc,
        octocrab::DefaultOctocrabBuilderConfig,
        octocrab::NoAuth,
        octocrab::NotLayerReady,
    >,
> {
    Ok(Octocrab::builder()
        .base_uri(api)
        .with_context(|| format!("invalid GitHub API URL {api:?}"))?
        // Retrying a POST after a 5xx could create a second deployment; callers retry what is safe.
        .add_retry_config(RetryConfig::None)
        .set_connect_timeout(Some(Duration::from_secs(10)))
        .set_read_timeout(Some(Duration::from_secs(30))))
}

/// The HTTP status of a GitHub error response, if the error is one.
pub fn error_status(err: &octocrab::Error) -> Option<u16> {
    match err {
        octocrab::Error::GitHub { source, .. } => Some(source.status_code.as_u16()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_are_normalised() {
        assert_eq!(
            normalize_api_url("https://ghe.corp/api/v3/"),
            "https://ghe.corp/api/v3"
        );
        assert_eq!(
            normalize_api_url(" https://api.github.com "),
            "https://api.github.com"
        );
    }

    #[tokio::test]
    async fn one_client_per_credential_is_reused() {
        let clients = GithubClients::new(
            "http://127.0.0.1:9/api/v3/",
            Some(GithubAuth::Token(Secret::new("t1"))),
        );
        let repo = RepoName::parse("o/r").unwrap();
        clients.for_repo(&repo, None, None).await.unwrap();
        clients.for_repo(&repo, None, None).await.unwrap();
        clients
            .for_repo(&repo, None, Some(&Secret::new("t2")))
            .await
            .unwrap();
        clients
            .for_repo(&repo, Some("http://127.0.0.1:9/other"), None)
            .await
            .unwrap();
        assert_eq!(clients.clients.lock().unwrap().len(), 3);
        assert!(!format!("{clients:?}").contains("t1"));
    }

    #[tokio::test]
    async fn a_bad_api_url_is_reported() {
        let clients = GithubClients::new("not a url", None);
        let err = clients
            .for_repo(&RepoName::parse("o/r").unwrap(), None, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid GitHub API URL"), "{err}");
    }
}
