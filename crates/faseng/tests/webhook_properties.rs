//! Property tests for webhook intake (`faseng::webhook`): no body makes decoding panic, a
//! valid deployment event survives the trip through bytes and a signature unchanged, and
//! the signature check accepts exactly the right MAC.

use deploy_core::Apps;
use faseng::job::DeployJob;
use faseng::webhook::{self, WebhookError, WebhookEvent, WebhookHeaders};
use hmac::{Hmac, Mac as _};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &[u8] = b"It's a Secret to Everybody";
const EVENTS: [&str; 4] = ["deployment", "deployment_status", "ping", "push"];

fn headers<'a>(event: &'a str, signature: &'a str) -> WebhookHeaders<'a> {
    WebhookHeaders {
        event: Some(event),
        delivery: Some("d-1"),
        signature_256: Some(signature),
    }
}

/// JSON values shaped like webhooks: the real keys, wrong types, odd strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9/._-]{0,12}".prop_map(Value::String),
        "\\PC{0,20}".prop_map(Value::String),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("deployment".to_owned()),
                    Just("repository".to_owned()),
                    Just("id".to_owned()),
                    Just("sha".to_owned()),
                    Just("ref".to_owned()),
                    Just("task".to_owned()),
                    Just("environment".to_owned()),
                    Just("payload".to_owned()),
                    Just("full_name".to_owned()),
                    Just("clone_url".to_owned()),
                    Just("creator".to_owned()),
                    Just("login".to_owned()),
                    Just("notify".to_owned()),
                    Just("deployment_status".to_owned()),
                    Just("state".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..7,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Checks what any decoded event must satisfy, and that the job built from it is usable.
fn check_decoded(event: &WebhookEvent) -> Result<(), TestCaseError> {
    if let WebhookEvent::Deployment { event, delivery_id } = event {
        prop_assert_eq!(delivery_id, "d-1");
        prop_assert!(event.payload_object().is_object());
        prop_assert!(
            event
                .deployment
                .task
                .to_string()
                .parse::<deploy_core::Task>()
                .is_ok()
        );
        let creator = event.creator();
        prop_assert!(creator.chars().count() <= deploy_core::event::MAX_USER_CHARS);
        prop_assert!(!creator.chars().any(char::is_control));
        if let Ok(job) = DeployJob::from_event(delivery_id, event, &Apps::default()) {
            prop_assert_eq!(job.app(), "", "no app of an empty app.json");
            prop_assert!(job.payload.is_object());
            prop_assert_eq!(job.repo_name().to_string(), job.repo.clone());
            if let Some(n) = job.notify() {
                prop_assert!(!n.user_name.chars().any(char::is_control));
            }
        }
    }
    Ok(())
}

fn event_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(EVENTS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), event in event_name()) {
        let sig = webhook::sign(SECRET, &body);
        match webhook::decode(SECRET, &headers(event, &sig), &body) {
            Ok(ev) => check_decoded(&ev)?,
            Err(e) => prop_assert!(matches!(e, WebhookError::Malformed { .. }), "{}", e),
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value(), event in event_name()) {
        let body = serde_json::to_vec(&value).unwrap();
        let sig = webhook::sign(SECRET, &body);
        match webhook::decode(SECRET, &headers(event, &sig), &body) {
            Ok(ev) => check_decoded(&ev)?,
            Err(e) => prop_assert!(matches!(e, WebhookError::Malformed { .. }), "{}", e),
        }
    }

    #[test]
    fn arbitrary_deployment_shapes_never_panic(deployment in json_value(), repository in json_value(), payload in json_value()) {
        // Nearly valid bodies: the right top-level keys around arbitrary contents.
        let mut deployment = deployment;
        if let Value::Object(d) = &mut deployment {
            d.entry("payload").or_insert(payload);
        }
        let body = serde_json::to_vec(&json!({"deployment": deployment, "repository": repository})).unwrap();
        let sig = webhook::sign(SECRET, &body);
        if let Ok(ev) = webhook::decode(SECRET, &headers("deployment", &sig), &body) {
            check_decoded(&ev)?;
        }
    }

    #[test]
    fn a_valid_deployment_event_round_trips(
        id in any::<u64>(),
        sha in "[0-9a-f]{40}",
        git_ref in "[A-Za-z0-9_][A-Za-z0-9_/.-]{0,30}",
        task in "deploy(:[a-z_]{1,8}){0,2}",
        environment in "[a-z0-9][a-z0-9_.-]{0,20}",
        description in proptest::option::of("\\PC{0,40}"),
        creator in "[A-Za-z0-9-]{1,39}",
        name in "[a-z0-9][a-z0-9_.-]{0,20}",
        extra in "\\PC{0,40}",
        owner in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        repo in "[A-Za-z0-9_][A-Za-z0-9_-]{0,20}",
        as_string in any::<bool>(),
    ) {
        let payload = json!({"name": name, "extra": extra, "config": {"provider": "shell"}});
        let full_name = format!("{owner}/{repo}");
        let body = serde_json::to_vec(&json!({
            "action": "created",
            "deployment": {
                "id": id, "sha": sha, "ref": git_ref, "task": task, "environment": environment,
                "description": description, "creator": {"login": creator},
                "payload": if as_string { json!(payload.to_string()) } else { payload.clone() },
            },
            "repository": {"full_name": full_name, "clone_url": format!("https://github.com/{full_name}.git")},
            "sender": {"login": "someone-else"},
        })).unwrap();
        let sig = webhook::sign(SECRET, &body);
        let decoded = webhook::decode(SECRET, &headers("deployment", &sig), &body).unwrap();
        let WebhookEvent::Deployment { event, .. } = decoded else {
            return Err(TestCaseError::fail("not a deployment"));
        };
        let d = &event.deployment;
        prop_assert_eq!(d.id, id);
        prop_assert_eq!(&d.sha, &sha);
        prop_assert_eq!(&d.git_ref, &git_ref);
        prop_assert_eq!(d.task.to_string(), task);
        prop_assert_eq!(&d.environment, &environment);
        prop_assert_eq!(&d.description, &description);
        prop_assert_eq!(event.creator(), creator);
        prop_assert_eq!(event.payload_object(), payload);
        prop_assert_eq!(&event.repository.full_name, &full_name);
        let operator = Apps::from_json(&json!({name.clone(): {"provider": "shell", "repository": full_name}}).to_string()).unwrap();
        let job = DeployJob::from_event("d-1", &event, &operator).unwrap();
        prop_assert_eq!((job.deployment_id, &job.sha, &job.git_ref), (id, &sha, &git_ref));
        prop_assert_eq!(job.app(), name.as_str());
        let job = DeployJob::from_event("d-1", &event, &Apps::default()).unwrap();
        prop_assert_eq!(job.app(), "", "the payload's name alone resolves to no app");
    }

    #[test]
    fn only_the_right_signature_is_accepted(
        secret in prop::collection::vec(any::<u8>(), 0..80),
        body in prop::collection::vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
        other_body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let good = webhook::sign(&secret, &body);
        prop_assert!(webhook::verify_signature(&secret, &body, Some(&good)));
        let padded = format!("  {good}\n");
        prop_assert!(webhook::verify_signature(&secret, &body, Some(&padded)));
        prop_assert!(webhook::verify_signature(&secret, &body, Some(&good.to_uppercase().replace("SHA256=", "sha256="))));
        // Any single changed hex digit is refused.
        let hex_part = &good["sha256=".len()..];
        let i = flip.index(hex_part.len());
        let digit = hex_part.as_bytes()[i];
        let changed = if digit == b'0' { '1' } else { '0' };
        let mut bad = good[..7 + i].to_owned();
        bad.push(changed);
        bad.push_str(&good[7 + i + 1..]);
        prop_assert!(!webhook::verify_signature(&secret, &body, Some(&bad)));
        // Truncated, legacy, missing and other-body signatures are refused.
        prop_assert!(!webhook::verify_signature(&secret, &body, Some(&good[..good.len() - 2])));
        prop_assert!(!webhook::verify_signature(&secret, &body, Some(&good.replace("sha256=", "sha1="))));
        prop_assert!(!webhook::verify_signature(&secret, &body, None));
        if other_body != body {
            prop_assert!(!webhook::verify_signature(&secret, &other_body, Some(&good)));
        }
        // An independent HMAC agrees.
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
        mac.update(&body);
        prop_assert_eq!(good, format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
    }

    #[test]
    fn arbitrary_signature_headers_are_accepted_only_when_they_are_the_mac(
        header in "(sha256=)?[0-9a-fA-F]{0,70}|\\PC{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let good = webhook::sign(SECRET, &body);
        let accepted = webhook::verify_signature(SECRET, &body, Some(&header));
        let same_mac = header
            .trim()
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
            .is_some_and(|given| format!("sha256={}", hex::encode(given)) == good);
        prop_assert_eq!(accepted, same_mac);
    }
}

#[test]
fn deep_nesting_is_malformed_not_a_stack_overflow() {
    for body in [
        "[".repeat(100_000),
        "{\"a\":".repeat(100_000),
        format!("{{\"deployment\":{{\"payload\":{}}}}}", "[".repeat(100_000)),
    ] {
        let sig = webhook::sign(SECRET, body.as_bytes());
        assert!(matches!(
            webhook::decode(SECRET, &headers("deployment", &sig), body.as_bytes()),
            Err(WebhookError::Malformed { .. })
        ));
    }
}
