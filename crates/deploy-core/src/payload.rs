//! The deployment payload chima puts into `POST /repos/{owner}/{repo}/deployments`, and the
//! request body around it. faseng reads the same types back out of the webhook.

use serde::{Deserialize, Serialize};

use crate::names::{EnvName, GitRef};
use crate::task::Task;
use serde_json::{Map, Value};

/// Where the chat message that started a deployment lives, so faseng can edit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Notify {
    /// Chat adapter: `slack`, `shell`, …
    pub adapter: String,
    /// Channel id.
    pub room: String,
    /// Channel name, without `#`.
    #[serde(default)]
    pub room_name: String,
    /// User id of who asked.
    #[serde(default)]
    pub user: String,
    /// User name of who asked.
    #[serde(default)]
    pub user_name: String,
    /// The `ts` of chima's live message for this deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_ts: Option<String>,
    /// The thread the command was typed in, when it was threaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
}

/// Marks a deployment as a rollback: the commit the environment is rolled back from and the
/// commit it deploys (full shas). Chat and the dashboard say "rollback"; nothing about how it
/// is deployed changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The commit the environment had (its newest deployment's).
    pub from: String,
    /// The commit deployed (the deployment's own sha).
    pub to: String,
}

impl Rollback {
    /// Whether both are commit ids (7 to 40 hex digits): a mark that is not is ignored.
    pub fn is_well_formed(&self) -> bool {
        let sha = |s: &str| (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        sha(&self.from) && sha(&self.to)
    }
}

/// The `payload` of a GitHub deployment created by chima (hubot-deploy compatible).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentPayload {
    /// App name, as keyed in app.json.
    pub name: String,
    /// The bot that created it.
    #[serde(rename = "robotName", default)]
    pub robot_name: String,
    /// Hosts named in the command (`to production/host1,host2`), else empty.
    #[serde(default)]
    pub hosts: String,
    /// The chat message to keep up to date; absent when not created from chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// The app.json entry, without `github_api` / `github_token`.
    #[serde(default)]
    pub config: Value,
    /// The id of the single-use desk ticket chima wrote before creating a deployment that a
    /// lock, an unfreeze or an approved request allows; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desk_ticket: Option<String>,
    /// The release request (`#N`) this deployment carries out, for a protected environment;
    /// absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// Set when the deployment rolls the environment back; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Anything else another creator put there, passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `POST /repos/{owner}/{repo}/deployments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeployment {
    /// Branch, tag or sha.
    #[serde(rename = "ref")]
    pub git_ref: GitRef,
    /// `deploy`, `deploy:migrate`, …
    pub task: Task,
    /// Target environment.
    pub environment: EnvName,
    /// Whether GitHub merges the default branch into the ref first.
    pub auto_merge: bool,
    /// Contexts that must be green; omitted = all; `[]` = none (forced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_contexts: Option<Vec<String>>,
    /// `"{task} on {env} from chima"`.
    pub description: String,
    /// True for the `production` environment.
    pub production_environment: bool,
    /// What faseng needs to run it.
    pub payload: DeploymentPayload,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"{ "name": "project-x", "robotName": "chima", "hosts": "",
      "notify": { "adapter": "slack", "room": "C024BE91L", "room_name": "deployment",
                  "user": "U2147483697", "user_name": "joyz", "message_ts": "1355517523.000005" },
      "config": { "provider": "fabric", "repository": "oursky/project-x", "environments": ["live", "edge"] } }"#;

    #[test]
    fn design_example_round_trips_exactly() {
        let original: Value = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        let parsed: DeploymentPayload = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(parsed.robot_name, "chima");
        let notify = parsed.notify.as_ref().unwrap();
        assert_eq!(notify.message_ts.as_deref(), Some("1355517523.000005"));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), original);
    }

    #[test]
    fn foreign_payloads_parse_and_keep_their_keys() {
        let original =
            serde_json::json!({"name": "x", "web_url": "https://ci", "deep": {"a": [1]}});
        let parsed: DeploymentPayload = serde_json::from_value(original.clone()).unwrap();
        assert!(parsed.notify.is_none());
        assert_eq!(parsed.extra["web_url"], "https://ci");
        let back = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back["deep"], original["deep"]);
    }

    #[test]
    fn a_desk_ticket_round_trips_and_is_left_out_when_there_is_none() {
        let mut payload: DeploymentPayload = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        assert_eq!(
            payload.desk_ticket, None,
            "a payload without one still parses"
        );
        assert!(
            serde_json::to_value(&payload)
                .unwrap()
                .get("desk_ticket")
                .is_none()
        );
        payload.desk_ticket = Some("t-8f2c".into());
        let v = serde_json::to_value(&payload).unwrap();
        assert_eq!(v["desk_ticket"], "t-8f2c");
        let back: DeploymentPayload = serde_json::from_value(v).unwrap();
        assert_eq!(back, payload);
        assert!(!back.extra.contains_key("desk_ticket"));
    }

    #[test]
    fn a_request_id_round_trips_and_is_left_out_when_there_is_none() {
        let mut payload: DeploymentPayload = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        assert_eq!(payload.request, None);
        assert!(
            serde_json::to_value(&payload)
                .unwrap()
                .get("request")
                .is_none()
        );
        payload.request = Some(12);
        let v = serde_json::to_value(&payload).unwrap();
        assert_eq!(v["request"], 12);
        let back: DeploymentPayload = serde_json::from_value(v).unwrap();
        assert_eq!(back, payload);
        assert!(!back.extra.contains_key("request"));
    }

    #[test]
    fn a_rollback_mark_round_trips_and_is_left_out_when_there_is_none() {
        let mut payload: DeploymentPayload = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        assert_eq!(payload.rollback, None);
        assert!(
            serde_json::to_value(&payload)
                .unwrap()
                .get("rollback")
                .is_none()
        );
        payload.rollback = Some(Rollback {
            from: "d".repeat(40),
            to: "a".repeat(40),
        });
        let v = serde_json::to_value(&payload).unwrap();
        assert_eq!(
            v["rollback"],
            serde_json::json!({"from": "d".repeat(40), "to": "a".repeat(40)})
        );
        let back: DeploymentPayload = serde_json::from_value(v).unwrap();
        assert_eq!(back, payload);
        assert!(!back.extra.contains_key("rollback"));
    }

    #[test]
    fn rollback_marks_name_commits() {
        let mark = |from: &str, to: &str| Rollback {
            from: from.into(),
            to: to.into(),
        };
        assert!(mark(&"a".repeat(40), "abc1234").is_well_formed());
        assert!(!mark("main", &"a".repeat(40)).is_well_formed());
        assert!(!mark(&"a".repeat(41), &"a".repeat(40)).is_well_formed());
        assert!(!mark("", "").is_well_formed());
        assert!(!mark("<!here>", &"a".repeat(40)).is_well_formed());
    }

    #[test]
    fn required_contexts_are_omitted_unless_set() {
        let body = NewDeployment {
            git_ref: GitRef::parse("main").unwrap(),
            task: Task::Deploy,
            environment: EnvName::parse("edge").unwrap(),
            auto_merge: true,
            required_contexts: None,
            description: "deploy on edge from chima".into(),
            production_environment: false,
            payload: serde_json::from_str(DESIGN_EXAMPLE).unwrap(),
        };
        let v = serde_json::to_value(&body).unwrap();
        assert!(v.get("required_contexts").is_none());
        assert_eq!(v["ref"], "main");
        let forced = NewDeployment {
            required_contexts: Some(vec![]),
            ..body
        };
        assert_eq!(
            serde_json::to_value(&forced).unwrap()["required_contexts"],
            serde_json::json!([])
        );
    }
}
