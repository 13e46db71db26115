//! A small Jira REST (v2) client: move an issue by a transition's name, and comment on it.
//! It authenticates with HTTP basic auth (`JIRA_USER` and `JIRA_TOKEN`, an API token on Jira
//! Cloud); the token is only ever put in the `Authorization` header.

use std::time::Duration;

use deploy_core::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::refs::is_jira_key;

/// How long one Jira call may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Why the Jira settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JiraConfigError {
    /// Some of `JIRA_URL`, `JIRA_USER`, `JIRA_TOKEN` are set, not all.
    #[error("Jira needs JIRA_URL, JIRA_USER and JIRA_TOKEN together; {0} is not set")]
    Missing(&'static str),
    /// `JIRA_URL` is not an http(s) URL without credentials.
    #[error("JIRA_URL {0}")]
    BadUrl(String),
}

/// Why a Jira call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JiraError {
    /// Jira could not be reached or answered something unreadable.
    #[error("Jira is unreachable: {0}")]
    Unreachable(String),
    /// Jira answered an error status.
    #[error("Jira answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Jira's `errorMessages` and `errors`, joined.
        message: String,
    },
    /// The issue has no transition of that name (and is not in a status of that name).
    #[error("{key} has no transition {name:?} (it offers: {})", available.join(", "))]
    NoTransition {
        /// The issue.
        key: String,
        /// The transition asked for.
        name: String,
        /// The transitions it offers now.
        available: Vec<String>,
    },
    /// Not a Jira key (never sent).
    #[error("{0:?} is not a Jira issue key")]
    BadKey(String),
}

impl JiraError {
    /// True when trying again later may work (Jira down, overloaded or rate limiting).
    pub fn is_temporary(&self) -> bool {
        match self {
            JiraError::Unreachable(_) => true,
            JiraError::Status { status, .. } => *status == 429 || *status >= 500,
            JiraError::NoTransition { .. } | JiraError::BadKey(_) => false,
        }
    }
}

/// What moving an issue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// Transitioned.
    Done,
    /// It already was in a status of that name; nothing sent.
    Already,
}

/// A Jira site and the account chima uses there.
#[derive(Clone)]
pub struct JiraClient {
    base: Url,
    user: String,
    token: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for JiraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JiraClient")
            .field("base", &self.base.as_str())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TransitionsJson {
    #[serde(default)]
    transitions: Vec<TransitionJson>,
}

#[derive(Deserialize)]
struct TransitionJson {
    id: String,
    name: String,
    to: Option<StatusJson>,
}

#[derive(Deserialize)]
struct StatusJson {
    name: String,
}

#[derive(Deserialize)]
struct IssueJson {
    fields: IssueFieldsJson,
}

#[derive(Deserialize)]
struct IssueFieldsJson {
    status: StatusJson,
}

#[derive(Deserialize, Default)]
struct ErrorJson {
    #[serde(default, rename = "errorMessages")]
    error_messages: Vec<String>,
    #[serde(default)]
    errors: serde_json::Map<String, Value>,
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

impl JiraClient {
    /// A client for the Jira at `url` (e.g. `https://corp.atlassian.net`, or a server's base
    /// with its context path), signing in as `user` with `token`.
    pub fn new(url: &str, user: &str, token: Secret) -> Result<Self, JiraConfigError> {
        let base =
            Url::parse(url).map_err(|e| JiraConfigError::BadUrl(format!("is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(JiraConfigError::BadUrl("must be http(s)".to_owned()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(JiraConfigError::BadUrl(
                "must not hold credentials: set JIRA_USER and JIRA_TOKEN".to_owned(),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() || base.cannot_be_a_base() {
            return Err(JiraConfigError::BadUrl(
                "must be the site's address, without query or fragment".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| JiraConfigError::BadUrl(format!("cannot be used: {e}")))?;
        Ok(Self {
            base,
            user: user.to_owned(),
            token,
            http,
        })
    }

    /// A client from the three settings (`JIRA_URL`, `JIRA_USER`, `JIRA_TOKEN`): none when none
    /// is set, an error when only some are.
    pub fn configure(
        url: Option<&str>,
        user: Option<&str>,
        token: Option<Secret>,
    ) -> Result<Option<Self>, JiraConfigError> {
        let url = url.filter(|s| !s.is_empty());
        let user = user.filter(|s| !s.is_empty());
        let token = token.filter(|t| !t.expose().is_empty());
        match (url, user, token) {
            (None, None, None) => Ok(None),
            (Some(url), Some(user), Some(token)) => Self::new(url, user, token).map(Some),
            (None, _, _) => Err(JiraConfigError::Missing("JIRA_URL")),
            (_, None, _) => Err(JiraConfigError::Missing("JIRA_USER")),
            (_, _, None) => Err(JiraConfigError::Missing("JIRA_TOKEN")),
        }
    }

    /// The site's address.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// `<base>/rest/api/2/issue/<key>[/<tail>]`, the key checked first.
    fn issue_url(&self, key: &str, tail: Option<&str>) -> Result<Url, JiraError> {
        if !is_jira_key(key) {
            return Err(JiraError::BadKey(key.to_owned()));
        }
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| JiraError::Unreachable("JIRA_URL cannot be a base".to_owned()))?;
            segments
                .pop_if_empty()
                .extend(["rest", "api", "2", "issue", key]);
            if let Some(tail) = tail {
                segments.push(tail);
            }
        }
        Ok(url)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<String, JiraError> {
        let response = request
            .basic_auth(&self.user, Some(self.token.expose()))
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| JiraError::Unreachable(short_error(&e)))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| JiraError::Unreachable(short_error(&e)))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let body: ErrorJson = serde_json::from_str(&text).unwrap_or_default();
        let mut parts = body.error_messages;
        parts.extend(body.errors.iter().map(|(field, why)| match why.as_str() {
            Some(why) => format!("{field}: {why}"),
            None => format!("{field}: {why}"),
        }));
        let message = if parts.is_empty() {
            text.chars().take(200).collect()
        } else {
            parts.join("; ")
        };
        Err(JiraError::Status { status, message })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: Url) -> Result<T, JiraError> {
        let text = self.send(self.http.get(url)).await?;
        serde_json::from_str(&text)
            .map_err(|e| JiraError::Unreachable(format!("unreadable answer: {e}")))
    }

    /// Moves `key` by the transition named `name` (matched without regard to case; the name
    /// of the status it leads to also matches). An issue already in a status of that name is
    /// left alone.
    pub async fn transition(&self, key: &str, name: &str) -> Result<Moved, JiraError> {
        let list: TransitionsJson = self.get(self.issue_url(key, Some("transitions"))?).await?;
        let chosen = list
            .transitions
            .iter()
            .find(|t| same_name(&t.name, name))
            .or_else(|| {
                list.transitions
                    .iter()
                    .find(|t| t.to.as_ref().is_some_and(|s| same_name(&s.name, name)))
            });
        let Some(chosen) = chosen else {
            let mut url = self.issue_url(key, None)?;
            url.set_query(Some("fields=status"));
            let issue: IssueJson = self.get(url).await?;
            if same_name(&issue.fields.status.name, name) {
                return Ok(Moved::Already);
            }
            return Err(JiraError::NoTransition {
                key: key.to_owned(),
                name: name.to_owned(),
                available: list.transitions.into_iter().map(|t| t.name).collect(),
            });
        };
        let body = json!({"transition": {"id": chosen.id}});
        self.send(
            self.http
                .post(self.issue_url(key, Some("transitions"))?)
                .json(&body),
        )
        .await?;
        Ok(Moved::Done)
    }

    /// Adds a comment to `key`.
    pub async fn comment(&self, key: &str, body: &str) -> Result<(), JiraError> {
        self.send(
            self.http
                .post(self.issue_url(key, Some("comment"))?)
                .json(&json!({ "body": body })),
        )
        .await?;
        Ok(())
    }
}

/// An error and its causes on one line, cut short.
fn short_error(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> JiraClient {
        JiraClient::new(url, "bot@example.com", Secret::new("s3cr3t-token")).unwrap()
    }

    #[test]
    fn issue_urls_keep_the_sites_path() {
        assert_eq!(
            client("https://corp.atlassian.net")
                .issue_url("PROJ-1", Some("transitions"))
                .unwrap()
                .as_str(),
            "https://corp.atlassian.net/rest/api/2/issue/PROJ-1/transitions"
        );
        assert_eq!(
            client("http://127.0.0.1:8080/jira/")
                .issue_url("PROJ-1", None)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/jira/rest/api/2/issue/PROJ-1"
        );
        assert_eq!(
            client("https://x.example").issue_url("../admin", None),
            Err(JiraError::BadKey("../admin".to_owned()))
        );
    }

    #[test]
    fn settings_are_all_or_nothing() {
        assert!(JiraClient::configure(None, None, None).unwrap().is_none());
        assert!(
            JiraClient::configure(Some(""), Some(""), None)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            JiraClient::configure(Some("https://x.example"), Some("u"), None).unwrap_err(),
            JiraConfigError::Missing("JIRA_TOKEN")
        );
        assert_eq!(
            JiraClient::configure(None, Some("u"), Some(Secret::new("t"))).unwrap_err(),
            JiraConfigError::Missing("JIRA_URL")
        );
        let ok =
            JiraClient::configure(Some("https://x.example"), Some("u"), Some(Secret::new("t")));
        assert_eq!(ok.unwrap().unwrap().url(), "https://x.example/");
        for bad in [
            "ftp://x.example",
            "https://u:p@x.example",
            "not a url",
            "https://x.example/?a=1",
        ] {
            assert!(
                matches!(
                    JiraClient::new(bad, "u", Secret::new("t")),
                    Err(JiraConfigError::BadUrl(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let text = format!("{:?}", client("https://x.example"));
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("bot@example.com"));
    }

    #[test]
    fn temporary_errors() {
        assert!(JiraError::Unreachable("x".into()).is_temporary());
        for (status, temporary) in [
            (500, true),
            (503, true),
            (429, true),
            (400, false),
            (401, false),
            (404, false),
        ] {
            assert_eq!(
                JiraError::Status {
                    status,
                    message: String::new()
                }
                .is_temporary(),
                temporary,
                "{status}"
            );
        }
        assert!(!JiraError::BadKey("x".into()).is_temporary());
    }
}
