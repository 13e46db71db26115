//! Who may open the dashboard, as faseng's configuration says it (`GITHUB_OAUTH_CLIENT_ID`,
//! `GITHUB_OAUTH_CLIENT_SECRET`, `GITHUB_WEB_URL`, `FASENG_GITHUB_ORG`; local mode).

use std::fmt;

use deploy_core::Secret;

/// How the dashboard is reached.
#[derive(Debug, Clone, Default)]
pub enum DashboardAccess {
    /// No OAuth app configured: the dashboard's routes answer 404 saying how to turn it on.
    #[default]
    Off,
    /// Members of an organization (or of one of its teams) sign in with GitHub.
    Github(GithubSignIn),
    /// Local mode (`chima shell`): no sign-in; only peers on this machine (loopback) are
    /// served, as `local:<user>`.
    Local {
        /// The local user's name (`$USER`).
        user: String,
    },
}

/// The OAuth app members sign in through (authorization code flow).
#[derive(Debug, Clone)]
pub struct GithubSignIn {
    /// `GITHUB_OAUTH_CLIENT_ID`.
    pub client_id: String,
    /// `GITHUB_OAUTH_CLIENT_SECRET`.
    pub client_secret: Secret,
    /// `GITHUB_WEB_URL`: where people sign in (`https://github.com`; GHES: `https://HOST`).
    pub web_url: url::Url,
    /// `FASENG_GITHUB_ORG`: who may sign in.
    pub members_of: Members,
}

/// An organization, or one team of it, whose active members may sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The organization's login.
    pub org: String,
    /// A team's slug, when only that team's members may sign in.
    pub team: Option<String>,
}

impl fmt::Display for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.team {
            Some(team) => write!(f, "{}/{team}", self.org),
            None => f.write_str(&self.org),
        }
    }
}

/// A GitHub login or team slug: letters, digits, `-` and `_` (GitHub's own rules are
/// narrower), at most 100 characters.
fn is_github_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Members {
    /// `org` or `org/team-slug`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        let (org, team) = match s.split_once('/') {
            Some((org, team)) => (org, Some(team)),
            None => (s, None),
        };
        anyhow::ensure!(
            is_github_name(org) && team.is_none_or(is_github_name),
            "FASENG_GITHUB_ORG must be an organization (`my-org`) or one of its teams \
             (`my-org/team-slug`), not {s:?}"
        );
        Ok(Self {
            org: org.to_owned(),
            team: team.map(str::to_owned),
        })
    }
}

/// The dashboard settings as given (flags or environment).
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// `GITHUB_OAUTH_CLIENT_ID`.
    pub client_id: Option<String>,
    /// `GITHUB_OAUTH_CLIENT_SECRET`.
    pub client_secret: Option<Secret>,
    /// `GITHUB_WEB_URL`.
    pub web_url: String,
    /// `FASENG_GITHUB_ORG`.
    pub org: Option<String>,
}

impl DashboardAccess {
    /// The access these settings describe: off without an OAuth app, GitHub sign-in with one.
    /// An OAuth app without its secret or without `FASENG_GITHUB_ORG`, or a web URL that is
    /// not http(s), is an error that names the setting.
    pub fn from_settings(s: AccessSettings) -> anyhow::Result<Self> {
        let client_id = s.client_id.filter(|c| !c.trim().is_empty());
        let client_secret = s.client_secret.filter(|c| !c.expose().trim().is_empty());
        let org = s.org.filter(|o| !o.trim().is_empty());
        let Some(client_id) = client_id else {
            anyhow::ensure!(
                client_secret.is_none(),
                "GITHUB_OAUTH_CLIENT_SECRET is set but GITHUB_OAUTH_CLIENT_ID is not: set both \
                 (the dashboard's OAuth app) or neither (dashboard off)"
            );
            if let Some(org) = org {
                tracing::warn!(
                    "FASENG_GITHUB_ORG is {org:?} but GITHUB_OAUTH_CLIENT_ID is not set: the \
                     dashboard is off"
                );
            }
            return Ok(Self::Off);
        };
        let Some(client_secret) = client_secret else {
            anyhow::bail!(
                "GITHUB_OAUTH_CLIENT_ID is set but GITHUB_OAUTH_CLIENT_SECRET is not: the \
                 dashboard's sign-in needs the OAuth app's secret too"
            );
        };
        let Some(org) = org else {
            anyhow::bail!(
                "FASENG_GITHUB_ORG is required with GITHUB_OAUTH_CLIENT_ID: only active members \
                 of that organization (`my-org`) or team (`my-org/team-slug`) may sign in to the \
                 dashboard"
            );
        };
        let web_url = url::Url::parse(s.web_url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "GITHUB_WEB_URL must be GitHub's web address (`https://github.com`, or \
                     `https://HOST` for GitHub Enterprise Server), not {:?}",
                    s.web_url
                )
            })?;
        Ok(Self::Github(GithubSignIn {
            client_id: client_id.trim().to_owned(),
            client_secret,
            web_url,
            members_of: Members::parse(&org)?,
        }))
    }

    /// What the start banner says about the dashboard.
    pub fn describe(&self) -> String {
        match self {
            Self::Off => crate::messages::dashboard_off().to_owned(),
            Self::Github(g) => format!(
                "dashboard on: members of {} sign in with GitHub ({})",
                g.members_of, g.web_url
            ),
            Self::Local { user } => {
                format!("dashboard on: local mode, no sign-in, loopback only (as {user})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(id: &str, secret: &str, org: &str) -> AccessSettings {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        AccessSettings {
            client_id: some(id),
            client_secret: some(secret).map(Secret::new),
            web_url: "https://github.com".into(),
            org: some(org),
        }
    }

    #[test]
    fn no_oauth_app_is_off_and_a_whole_app_is_github_sign_in() {
        assert!(matches!(
            DashboardAccess::from_settings(settings("", "", "")).unwrap(),
            DashboardAccess::Off
        ));
        assert!(matches!(
            DashboardAccess::from_settings(settings("", "", "oursky")).unwrap(),
            DashboardAccess::Off
        ));
        let DashboardAccess::Github(g) =
            DashboardAccess::from_settings(settings("Iv1.abc", "s3cret", "oursky/deployers"))
                .unwrap()
        else {
            panic!("not GitHub sign-in");
        };
        assert_eq!(g.client_id, "Iv1.abc");
        assert_eq!(
            g.members_of,
            Members {
                org: "oursky".into(),
                team: Some("deployers".into())
            }
        );
        assert_eq!(g.web_url.as_str(), "https://github.com/");
    }

    #[test]
    fn half_an_oauth_app_or_no_org_is_an_error_naming_the_setting() {
        for (s, says) in [
            (
                settings("id", "", "oursky"),
                "GITHUB_OAUTH_CLIENT_SECRET is not",
            ),
            (
                settings("", "secret", "oursky"),
                "GITHUB_OAUTH_CLIENT_ID is not",
            ),
            (
                settings("id", "secret", ""),
                "FASENG_GITHUB_ORG is required with GITHUB_OAUTH_CLIENT_ID",
            ),
            (
                settings("id", "secret", "oursky/a/b"),
                "FASENG_GITHUB_ORG must be",
            ),
            (
                settings("id", "secret", "our sky"),
                "FASENG_GITHUB_ORG must be",
            ),
        ] {
            let e = DashboardAccess::from_settings(s).unwrap_err().to_string();
            assert!(e.contains(says), "{says:?} not in {e:?}");
        }
        let mut s = settings("id", "secret", "oursky");
        s.web_url = "github.com".into();
        let e = DashboardAccess::from_settings(s).unwrap_err().to_string();
        assert!(e.contains("GITHUB_WEB_URL must be"), "{e}");
    }

    #[test]
    fn the_secret_never_prints() {
        let access =
            DashboardAccess::from_settings(settings("id", "hunter2-secret", "oursky")).unwrap();
        assert!(!format!("{access:?}").contains("hunter2"));
    }
}
