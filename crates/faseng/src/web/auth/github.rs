//! GitHub's side of signing in (OAuth authorization code flow): the authorize URL, the code
//! exchanged for a token, who the token belongs to, and whether they are an active member of
//! the organization or team. The token is used for those calls only and then dropped.

use std::time::Duration;

use deploy_core::Secret;
use serde::Deserialize;
use url::Url;

use super::settings::{GithubSignIn, Members};
use crate::messages;

/// Why a sign-in did not go through; each becomes a page that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// GitHub refused (the code was bad or used, the user declined, the app is restricted).
    #[error("{0}")]
    Refused(String),
    /// GitHub could not be asked, or answered with a server error.
    #[error("{0}")]
    Unavailable(String),
}

/// A GitHub user, as `GET /user` describes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GithubUser {
    /// The login.
    pub login: String,
    /// The user id.
    pub id: u64,
}

/// The OAuth app faseng signs members in through.
#[derive(Debug, Clone)]
pub struct OauthClient {
    settings: GithubSignIn,
    api: Url,
    http: reqwest::Client,
}

/// How long one call to GitHub may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The REST API version asked for.
const API_VERSION: &str = "2022-11-28";

impl OauthClient {
    /// A client of the OAuth app in `settings`, calling the REST API at `api_url`.
    pub fn new(settings: GithubSignIn, api_url: &str) -> anyhow::Result<Self> {
        let api = Url::parse(api_url.trim_end_matches('/')).map_err(|e| {
            anyhow::anyhow!(
                "GITHUB_API_URL {api_url:?} is not a URL ({e}): it is needed to sign in"
            )
        })?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("faseng/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            settings,
            api,
            http,
        })
    }

    /// Who may sign in.
    pub fn members(&self) -> &Members {
        &self.settings.members_of
    }

    /// Where the browser goes to sign in: GitHub's authorize page for this app, asking for
    /// `read:org` (to read memberships), coming back to `redirect_uri` with `state`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> Url {
        let mut url = self.web_url(&["login", "oauth", "authorize"]);
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "read:org")
            .append_pair("state", state)
            .append_pair("allow_signup", "false");
        url
    }

    fn web_url(&self, segments: &[&str]) -> Url {
        let mut url = self.settings.web_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// Exchanges an authorization code for an access token.
    pub async fn exchange(&self, code: &str, redirect_uri: &str) -> Result<Secret, SignInError> {
        #[derive(Deserialize)]
        struct Answer {
            access_token: Option<String>,
            error: Option<String>,
            error_description: Option<String>,
        }
        let url = self.web_url(&["login", "oauth", "access_token"]);
        let response = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("client_id", self.settings.client_id.as_str()),
                ("client_secret", self.settings.client_secret.expose()),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ])
            .send()
            .await
            .map_err(|e| unreachable_github(&e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(SignInError::Unavailable(messages::github_failed(
                status.as_u16(),
            )));
        }
        let answer: Answer = response.json().await.map_err(|_| {
            SignInError::Unavailable(messages::github_answer_unreadable(status.as_u16()))
        })?;
        match (answer.access_token, answer.error) {
            (Some(token), None) if !token.is_empty() => Ok(Secret::new(token)),
            (_, error) => Err(SignInError::Refused(messages::code_refused(
                error.as_deref().unwrap_or("no token"),
                answer.error_description.as_deref(),
            ))),
        }
    }

    async fn get(&self, url: Url, token: &Secret) -> Result<reqwest::Response, SignInError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .send()
            .await
            .map_err(|e| unreachable_github(&e))?;
        if response.status().is_server_error() {
            return Err(SignInError::Unavailable(messages::github_failed(
                response.status().as_u16(),
            )));
        }
        Ok(response)
    }

    /// Who `token` belongs to.
    pub async fn user(&self, token: &Secret) -> Result<GithubUser, SignInError> {
        let response = self.get(self.api_url(&["user"]), token).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(SignInError::Refused(messages::github_refused_user(
                status.as_u16(),
            )));
        }
        let user: GithubUser = response.json().await.map_err(|_| {
            SignInError::Unavailable(messages::github_answer_unreadable(status.as_u16()))
        })?;
        if !is_login(&user.login) {
            return Err(SignInError::Unavailable(
                messages::github_answer_unreadable(status.as_u16()),
            ));
        }
        Ok(user)
    }

    /// Whether `login` (whose token this is) is an active member of the organization, or of
    /// the team when one is set: `GET /user/memberships/orgs/{org}` or
    /// `GET /orgs/{org}/teams/{team}/memberships/{login}`, state `active`. A pending
    /// invitation is no membership; 404 (and 403 for an org that restricts OAuth apps) says
    /// "not a member".
    pub async fn is_member(&self, token: &Secret, login: &str) -> Result<bool, SignInError> {
        #[derive(Deserialize)]
        struct Membership {
            state: String,
        }
        let members = &self.settings.members_of;
        let url = match &members.team {
            None => self.api_url(&["user", "memberships", "orgs", &members.org]),
            Some(team) => {
                self.api_url(&["orgs", &members.org, "teams", team, "memberships", login])
            }
        };
        let response = self.get(url, token).await?;
        let status = response.status();
        match status.as_u16() {
            200 => {
                let m: Membership = response.json().await.map_err(|_| {
                    SignInError::Unavailable(messages::github_answer_unreadable(200))
                })?;
                Ok(m.state == "active")
            }
            404 => Ok(false),
            403 => Err(SignInError::Refused(messages::membership_hidden(
                &members.to_string(),
            ))),
            code => Err(SignInError::Unavailable(messages::github_failed(code))),
        }
    }
}

/// A GitHub login: letters, digits and single hyphens (what faseng shows and audits).
fn is_login(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn unreachable_github(e: &reqwest::Error) -> SignInError {
    // The error names the URL (no secret is in one) and what failed.
    tracing::warn!(error = %e, "dashboard sign-in: GitHub could not be reached");
    SignInError::Unavailable(messages::github_unreachable().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(web: &str, api: &str, members: &str) -> OauthClient {
        OauthClient::new(
            GithubSignIn {
                client_id: "Iv1.0123".into(),
                client_secret: Secret::new("shh"),
                web_url: Url::parse(web).unwrap(),
                members_of: Members::parse(members).unwrap(),
            },
            api,
        )
        .unwrap()
    }

    #[test]
    fn the_authorize_url_is_built_by_the_parser_and_asks_for_read_org() {
        let c = client(
            "https://ghe.example/",
            "https://ghe.example/api/v3",
            "oursky",
        );
        let url = c.authorize_url("https://faseng.example/auth/callback", "st&ate=x#frag");
        assert_eq!(url.path(), "/login/oauth/authorize");
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(q.contains(&("client_id".into(), "Iv1.0123".into())));
        assert!(q.contains(&(
            "redirect_uri".into(),
            "https://faseng.example/auth/callback".into()
        )));
        assert!(q.contains(&("scope".into(), "read:org".into())));
        assert!(q.contains(&("state".into(), "st&ate=x#frag".into())));
        assert!(url.fragment().is_none());
        let under_a_path = client("https://example.com/github", "https://x", "o");
        assert_eq!(
            under_a_path.authorize_url("r", "s").path(),
            "/github/login/oauth/authorize"
        );
    }

    #[test]
    fn api_paths_keep_the_enterprise_prefix_and_escape_segments() {
        let c = client(
            "https://ghe.example",
            "https://ghe.example/api/v3/",
            "oursky/ops",
        );
        assert_eq!(
            c.api_url(&["orgs", "oursky", "teams", "ops", "memberships", "a/b"])
                .as_str(),
            "https://ghe.example/api/v3/orgs/oursky/teams/ops/memberships/a%2Fb"
        );
        assert_eq!(
            c.api_url(&["user"]).as_str(),
            "https://ghe.example/api/v3/user"
        );
    }
}
