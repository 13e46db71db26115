//! The GitHub `deployment` and `deployment_status` webhook bodies, typed: the other half of
//! the GitHub contract beside [`crate::NewDeployment`]. Decoding only; verifying the signature
//! that proves a body came from GitHub is the receiver's transport (faseng's `webhook`).

use serde::Deserialize;
use serde_json::Value;

use crate::task::Task;

/// A GitHub user as it appears in webhook payloads.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WebhookUser {
    /// Login name.
    pub login: String,
}

/// The `deployment` object of a webhook.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WebhookDeployment {
    /// Deployment id.
    pub id: u64,
    /// The commit sha (validated later, before use).
    pub sha: String,
    /// The ref (validated later, before use).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `deploy`, `deploy:lock`, …; at most [`crate::task::MAX_TASK_BYTES`], no control
    /// or invisible characters (it reaches providers as `DEPLOY_TASK` or an argument).
    #[serde(default)]
    pub task: Task,
    /// Target environment.
    pub environment: String,
    /// Free text; the lock reason for `deploy:lock`.
    #[serde(default)]
    pub description: Option<String>,
    /// Who created it.
    #[serde(default)]
    pub creator: Option<WebhookUser>,
    /// The payload: an object, or (hubot-deploy era) a JSON string.
    #[serde(default)]
    pub payload: Value,
}

/// The most characters of a user name faseng passes on (GitHub logins have at most 39).
pub const MAX_USER_CHARS: usize = 100;

/// A user name (a GitHub login or a chat display name) made safe to show and to hand a
/// provider as `DEPLOY_USER`: control and invisible characters become U+FFFD and it is cut to
/// [`MAX_USER_CHARS`] characters. A NUL or a megabyte would otherwise fail the exec.
pub fn clean_user_name(name: &str) -> String {
    name.chars()
        .take(MAX_USER_CHARS)
        .map(|c| {
            if c.is_control() || crate::is_invisible(c) {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// The `repository` object of a webhook.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WebhookRepository {
    /// `owner/name`.
    pub full_name: String,
    /// HTTPS clone URL.
    #[serde(default)]
    pub clone_url: Option<String>,
    /// The repository's default branch (what a sticky branch lock waits for).
    #[serde(default)]
    pub default_branch: Option<String>,
}

/// A `deployment` webhook body.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DeploymentEvent {
    /// `created`.
    #[serde(default)]
    pub action: Option<String>,
    /// The deployment.
    pub deployment: WebhookDeployment,
    /// Its repository.
    pub repository: WebhookRepository,
    /// Who triggered the event.
    #[serde(default)]
    pub sender: Option<WebhookUser>,
}

impl DeploymentEvent {
    /// Decodes a `deployment` webhook body (a task that could not be run is refused here).
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The payload as an object: a JSON-string payload is decoded, anything else is `{}`.
    pub fn payload_object(&self) -> Value {
        match &self.deployment.payload {
            Value::Object(_) => self.deployment.payload.clone(),
            Value::String(s) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::Object(Default::default())),
            _ => Value::Object(Default::default()),
        }
    }

    /// Who asked: the deployment's creator, else the sender (cleaned with
    /// [`clean_user_name`]).
    pub fn creator(&self) -> String {
        self.deployment
            .creator
            .as_ref()
            .or(self.sender.as_ref())
            .map(|u| clean_user_name(&u.login))
            .unwrap_or_default()
    }
}

/// The `deployment_status` object of a webhook.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WebhookDeploymentStatus {
    /// `success`, `failure`, …
    pub state: String,
    /// When it was created.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A `deployment_status` webhook body (recorded, not acted on).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DeploymentStatusEvent {
    /// The status.
    pub deployment_status: WebhookDeploymentStatus,
    /// The deployment it belongs to.
    pub deployment: WebhookDeployment,
    /// Its repository.
    pub repository: WebhookRepository,
}

impl DeploymentStatusEvent {
    /// Decodes a `deployment_status` webhook body.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/github/webhooks"
    );

    #[test]
    fn upstream_samples_parse_unmodified() {
        for (name, environment, creator) in [
            ("payload", "production", "Codertocat"),
            ("gh-pages.payload", "github-pages", "github-pages[bot]"),
            ("with-installation.payload", "production", "Codertocat"),
        ] {
            let body = std::fs::read(format!("{FIXTURES}/deployment/{name}.json")).unwrap();
            let event = DeploymentEvent::from_json(&body).unwrap();
            assert_eq!(event.action.as_deref(), Some("created"), "{name}");
            assert_eq!(event.deployment.id, 145_988_746);
            assert_eq!(
                event.deployment.sha,
                "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
            );
            assert_eq!(event.deployment.environment, environment);
            assert_eq!(event.repository.full_name, "Codertocat/Hello-World");
            assert_eq!(event.repository.default_branch.as_deref(), Some("master"));
            assert!(event.payload_object().is_object());
            assert_eq!(event.creator(), creator);

            let body = std::fs::read(format!("{FIXTURES}/deployment_status/{name}.json")).unwrap();
            let status = DeploymentStatusEvent::from_json(&body).unwrap();
            assert_eq!(status.deployment.id, 145_988_746, "{name}");
            assert!(!status.deployment_status.state.is_empty());
        }
    }

    #[test]
    fn tasks_that_cannot_be_run_are_refused_while_decoding() {
        let body = |task: &str| {
            serde_json::to_vec(&serde_json::json!({
                "deployment": {"id": 1, "sha": "a", "ref": "main", "environment": "edge",
                               "task": task},
                "repository": {"full_name": "o/r"}
            }))
            .unwrap()
        };
        for (task, why) in [
            ("deploy\0x", "control"),
            ("deploy\u{202e}", "invisible"),
            ("", "empty"),
            (
                &"a".repeat(crate::task::MAX_TASK_BYTES + 1),
                "longer than 255 bytes",
            ),
        ] {
            let err = DeploymentEvent::from_json(&body(task)).unwrap_err();
            assert!(err.to_string().contains(why), "{task:?}: {err}");
        }
        let ok = DeploymentEvent::from_json(&body("deploy:migrate")).unwrap();
        assert_eq!(ok.deployment.task.to_string(), "deploy:migrate");
    }

    #[test]
    fn user_names_lose_control_characters_and_length() {
        assert_eq!(clean_user_name("joyz"), "joyz");
        assert_eq!(
            clean_user_name("jo\0y\nz\u{202e}"),
            "jo\u{fffd}y\u{fffd}z\u{fffd}"
        );
        assert_eq!(
            clean_user_name(&"é".repeat(1000)),
            "é".repeat(MAX_USER_CHARS)
        );
    }

    #[test]
    fn the_creator_is_the_deployments_else_the_senders_else_nobody() {
        let event = |creator: Option<&str>, sender: Option<&str>| DeploymentEvent {
            action: None,
            deployment: WebhookDeployment {
                id: 1,
                sha: "a".into(),
                git_ref: "main".into(),
                task: Task::Deploy,
                environment: "edge".into(),
                description: None,
                creator: creator.map(|login| WebhookUser {
                    login: login.into(),
                }),
                payload: Value::Null,
            },
            repository: WebhookRepository {
                full_name: "o/r".into(),
                clone_url: None,
                default_branch: None,
            },
            sender: sender.map(|login| WebhookUser {
                login: login.into(),
            }),
        };
        assert_eq!(event(Some("joyz"), Some("bot")).creator(), "joyz");
        assert_eq!(event(None, Some("bot\n")).creator(), "bot\u{fffd}");
        assert_eq!(event(None, None).creator(), "");
        assert_eq!(event(None, None).payload_object(), serde_json::json!({}));
    }

    #[test]
    fn string_payloads_from_hubot_deploy_are_decoded() {
        let ev: DeploymentEvent = serde_json::from_value(serde_json::json!({
            "deployment": {"id": 1, "sha": "a", "ref": "main", "environment": "production",
                           "payload": "{\"name\":\"x\"}"},
            "repository": {"full_name": "o/r"}
        }))
        .unwrap();
        assert_eq!(ev.payload_object()["name"], "x");
        assert_eq!(ev.deployment.task, Task::Deploy);
        let not_an_object: DeploymentEvent = serde_json::from_value(serde_json::json!({
            "deployment": {"id": 1, "sha": "a", "ref": "main", "environment": "production",
                           "payload": "[1]"},
            "repository": {"full_name": "o/r"}
        }))
        .unwrap();
        assert_eq!(not_an_object.payload_object(), serde_json::json!({}));
    }
}
