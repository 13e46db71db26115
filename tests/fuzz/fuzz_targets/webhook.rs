//! faseng's webhook decoding of arbitrary bytes, correctly signed so that parsing is reached:
//! never panics; a decoded deployment yields a job or a clear refusal, a payload object, and
//! a clean user name; a wrong signature is always refused.
#![no_main]

use faseng::job::DeployJob;
use faseng::webhook::{self, WebhookError, WebhookEvent, WebhookHeaders};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"It's a Secret to Everybody";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let event = ["deployment", "deployment_status", "ping", "push"][usize::from(selector % 4)];
    let signature = webhook::sign(SECRET, body);
    let headers = WebhookHeaders {
        event: Some(event),
        delivery: Some("fuzz-1"),
        signature_256: Some(&signature),
    };
    match webhook::decode(SECRET, &headers, body) {
        Ok(WebhookEvent::Deployment { event, .. }) => {
            assert!(event.payload_object().is_object());
            let task = event.deployment.task.to_string();
            assert!(task.parse::<deploy_core::Task>().is_ok());
            let creator = event.creator();
            assert!(creator.chars().count() <= deploy_core::event::MAX_USER_CHARS);
            assert!(!creator.chars().any(char::is_control));
            if let Ok(job) = DeployJob::from_event("fuzz-1", &event, &deploy_core::Apps::default()) {
                assert!(job.payload.is_object());
                let _ = job.repo_name();
                let _ = job.notify();
                let _ = job.app();
            }
        }
        Ok(_) => {}
        Err(e) => assert!(matches!(e, WebhookError::Malformed { .. }), "{e}"),
    }
    let wrong = WebhookHeaders {
        signature_256: Some("sha256=00"),
        ..headers
    };
    assert_eq!(
        webhook::decode(SECRET, &wrong, body),
        Err(WebhookError::BadSignature)
    );
});
