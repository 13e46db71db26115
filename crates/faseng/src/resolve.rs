//! Which of the operator's apps a deployment belongs to. faseng's own app.json is the only
//! authority on how anything is deployed: the app is found by the webhook's repository
//! (`payload.name` only chooses between apps of that same repository), the environment must
//! be one the app lists, and `payload.config` is never read.

use deploy_core::{AppConfig, AppName, Apps, EnvName, RepoName};

use crate::messages;

/// Why a deployment does not resolve to an app and environment of the operator's app.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No app deploys the repository.
    UnknownRepository {
        /// `owner/name` as the webhook sent it.
        repo: String,
    },
    /// `payload.name` names an app that deploys another repository.
    AppOfAnotherRepository {
        /// The app named.
        app: String,
        /// The repository that app deploys.
        its_repo: String,
        /// The repository of the deployment.
        repo: String,
    },
    /// Several apps deploy the repository and the payload names none of them.
    Ambiguous {
        /// The repository.
        repo: String,
        /// The apps that deploy it.
        apps: Vec<String>,
    },
    /// The environment is not a valid name or not one of the app's.
    UnlistedEnvironment {
        /// The app.
        app: String,
        /// The environment as sent.
        environment: String,
        /// The environments the app lists.
        listed: Vec<String>,
    },
}

impl Refusal {
    /// The status description for this refusal.
    pub fn description(&self) -> String {
        match self {
            Refusal::UnknownRepository { repo } => messages::no_app_for_repository(repo),
            Refusal::AppOfAnotherRepository {
                app,
                its_repo,
                repo,
            } => messages::app_of_another_repository(app, its_repo, repo),
            Refusal::Ambiguous { repo, apps } => messages::several_apps_deploy(repo, apps),
            Refusal::UnlistedEnvironment {
                app,
                environment,
                listed,
            } => messages::environment_not_listed(app, environment, listed),
        }
    }
}

/// The operator's app for a deployment of `repo` whose payload says `payload_name`.
///
/// The apps whose `repository` is `repo` (GitHub names compare without case) are the
/// candidates; with one, it is the app unless the payload names an app of another
/// repository (an impersonation: refused naming both); with several, the payload's name
/// must pick one of them.
pub fn app_for<'a>(
    apps: &'a Apps,
    repo: &RepoName,
    payload_name: Option<&str>,
) -> Result<&'a AppConfig, Refusal> {
    let repo_text = repo.to_string();
    let candidates: Vec<&AppConfig> = apps
        .iter()
        .filter(|a| a.repository.to_string().eq_ignore_ascii_case(&repo_text))
        .collect();
    let named = payload_name.and_then(|n| AppName::parse(n).ok());
    if let Some(name) = &named
        && let Some(app) = apps.get(name)
        && !candidates.iter().any(|c| c.name == app.name)
    {
        return Err(Refusal::AppOfAnotherRepository {
            app: app.name.to_string(),
            its_repo: app.repository.to_string(),
            repo: repo_text,
        });
    }
    match candidates.as_slice() {
        [] => Err(Refusal::UnknownRepository { repo: repo_text }),
        [only] => Ok(only),
        several => named
            .and_then(|name| several.iter().find(|a| a.name == name).copied())
            .ok_or_else(|| Refusal::Ambiguous {
                repo: repo_text,
                apps: several.iter().map(|a| a.name.to_string()).collect(),
            }),
    }
}

/// The environment `environment` of `app`, when the app lists it.
pub fn environment_of(app: &AppConfig, environment: &str) -> Result<EnvName, Refusal> {
    EnvName::parse(environment)
        .ok()
        .filter(|env| app.has_environment(env))
        .ok_or_else(|| Refusal::UnlistedEnvironment {
            app: app.name.to_string(),
            environment: environment.to_owned(),
            listed: app.environments.iter().map(ToString::to_string).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Apps {
        Apps::from_json(
            r#"{
              "trelhub": {"provider": "shell", "repository": "oursky/trelhub",
                          "environments": ["edge", "production"]},
              "web": {"provider": "shell", "repository": "oursky/site", "environments": ["edge"]},
              "docs": {"provider": "shell", "repository": "oursky/site", "environments": ["edge"]}
            }"#,
        )
        .unwrap()
    }

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn the_only_app_of_a_repository_is_found_with_or_without_a_name() {
        let apps = apps();
        for name in [None, Some("trelhub"), Some("no-such-app"), Some("../x")] {
            let app = app_for(&apps, &repo("oursky/trelhub"), name).unwrap();
            assert_eq!(app.name.as_str(), "trelhub", "{name:?}");
        }
        let app = app_for(&apps, &repo("OurSky/TrelHub"), None).unwrap();
        assert_eq!(
            app.name.as_str(),
            "trelhub",
            "GitHub names compare without case"
        );
    }

    #[test]
    fn a_repository_no_app_deploys_is_refused() {
        assert_eq!(
            app_for(&apps(), &repo("mallory/tools"), Some("trelhub")).unwrap_err(),
            Refusal::AppOfAnotherRepository {
                app: "trelhub".into(),
                its_repo: "oursky/trelhub".into(),
                repo: "mallory/tools".into()
            }
        );
        let refusal = app_for(&apps(), &repo("mallory/tools"), None).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::UnknownRepository {
                repo: "mallory/tools".into()
            }
        );
        assert_eq!(
            refusal.description(),
            "no app in faseng's app.json deploys mallory/tools"
        );
    }

    #[test]
    fn naming_an_app_of_another_repository_is_refused_naming_both() {
        let refusal = app_for(&apps(), &repo("oursky/trelhub"), Some("web")).unwrap_err();
        assert_eq!(
            refusal.description(),
            "payload.name is web, an app of oursky/site, but this deployment is of oursky/trelhub: nothing was run"
        );
    }

    #[test]
    fn the_name_chooses_between_apps_of_one_repository() {
        let apps = apps();
        let site = repo("oursky/site");
        assert_eq!(
            app_for(&apps, &site, Some("docs")).unwrap().name.as_str(),
            "docs"
        );
        assert_eq!(
            app_for(&apps, &site, Some("web")).unwrap().name.as_str(),
            "web"
        );
        let refusal = app_for(&apps, &site, None).unwrap_err();
        assert_eq!(
            refusal.description(),
            "several apps deploy oursky/site (docs, web): the deployment's payload.name must name one"
        );
        assert!(matches!(
            app_for(&apps, &site, Some("nope")),
            Err(Refusal::Ambiguous { .. })
        ));
    }

    #[test]
    fn only_listed_environments_resolve() {
        let apps = apps();
        let app = app_for(&apps, &repo("oursky/trelhub"), None).unwrap();
        assert_eq!(environment_of(app, "edge").unwrap().as_str(), "edge");
        assert_eq!(
            environment_of(app, "Production").unwrap().as_str(),
            "production"
        );
        for bad in ["staging", "bad env", ""] {
            let refusal = environment_of(app, bad).unwrap_err();
            assert!(
                refusal.description().contains("(edge, production)"),
                "{bad}: {}",
                refusal.description()
            );
        }
    }
}
