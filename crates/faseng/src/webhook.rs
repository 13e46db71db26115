//! GitHub webhook intake, transport side: signature verification over the raw body, then
//! decoding into the typed events of [`deploy_core::event`]. Nothing here knows about queues or
//! HTTP responses.

use deploy_core::event::{DeploymentEvent, DeploymentStatusEvent};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use thiserror::Error;

/// The largest body GitHub sends (it caps payloads at 25 MB); larger is refused with 413.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// True when `header` is `sha256=<hex>` and matches HMAC-SHA256(secret, body), compared in
/// constant time. The legacy sha1 header is never accepted.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    expected.len() == given.len() && bool::from(expected[..].ct_eq(&given))
}

/// `sha256=<hex>` for a body, as GitHub computes it (used by tests and the benchmark).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A verified webhook, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    /// A deployment to run.
    Deployment {
        /// `X-GitHub-Delivery`.
        delivery_id: String,
        /// The body.
        event: Box<DeploymentEvent>,
    },
    /// A deployment status (history only).
    DeploymentStatus {
        /// `X-GitHub-Delivery`.
        delivery_id: String,
        /// The body.
        event: Box<DeploymentStatusEvent>,
    },
    /// GitHub's hook test.
    Ping,
    /// Any other event, named.
    Ignored(String),
}

/// Why a webhook was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WebhookError {
    /// Missing or wrong `X-Hub-Signature-256`.
    #[error("missing or invalid X-Hub-Signature-256")]
    BadSignature,
    /// No `X-GitHub-Event`.
    #[error("missing X-GitHub-Event header")]
    MissingEvent,
    /// A deployment without `X-GitHub-Delivery`.
    #[error("missing X-GitHub-Delivery header")]
    MissingDelivery,
    /// The body is not the event it claims to be.
    #[error("malformed {event} payload: {reason}")]
    Malformed {
        /// The event name.
        event: String,
        /// The parse error.
        reason: String,
    },
}

/// The headers that matter, already extracted from the request.
#[derive(Debug, Clone, Default)]
pub struct WebhookHeaders<'a> {
    /// `X-GitHub-Event`.
    pub event: Option<&'a str>,
    /// `X-GitHub-Delivery`.
    pub delivery: Option<&'a str>,
    /// `X-Hub-Signature-256`.
    pub signature_256: Option<&'a str>,
}

/// Verifies and decodes a webhook.
pub fn decode(
    secret: &[u8],
    headers: &WebhookHeaders<'_>,
    body: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    if !verify_signature(secret, body, headers.signature_256) {
        return Err(WebhookError::BadSignature);
    }
    let event = headers
        .event
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or(WebhookError::MissingEvent)?;
    let delivery = || {
        headers
            .delivery
            .map(str::trim)
            .filter(|d| !d.is_empty() && d.len() <= 200)
            .map(str::to_owned)
            .ok_or(WebhookError::MissingDelivery)
    };
    let malformed = |e: serde_json::Error| WebhookError::Malformed {
        event: event.to_owned(),
        reason: e.to_string(),
    };
    match event {
        "ping" => Ok(WebhookEvent::Ping),
        "deployment" => Ok(WebhookEvent::Deployment {
            delivery_id: delivery()?,
            event: Box::new(DeploymentEvent::from_json(body).map_err(malformed)?),
        }),
        "deployment_status" => Ok(WebhookEvent::DeploymentStatus {
            delivery_id: delivery()?,
            event: Box::new(DeploymentStatusEvent::from_json(body).map_err(malformed)?),
        }),
        other => Ok(WebhookEvent::Ignored(other.chars().take(64).collect())),
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
    fn githubs_documented_test_vector_verifies() {
        let secret = b"It's a Secret to Everybody";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(secret, b"Hello, World!", Some(sig)));
        assert_eq!(sign(secret, b"Hello, World!"), sig);
        assert!(!verify_signature(secret, b"Hello, World?", Some(sig)));
        assert!(!verify_signature(b"other", b"Hello, World!", Some(sig)));
    }

    #[test]
    fn malformed_and_legacy_signatures_are_refused() {
        let secret = b"s";
        let good = sign(secret, b"x");
        assert!(verify_signature(secret, b"x", Some(&good)));
        assert!(!verify_signature(secret, b"x", None));
        assert!(!verify_signature(secret, b"x", Some("")));
        assert!(!verify_signature(
            secret,
            b"x",
            Some(&good.replace("sha256=", "sha1="))
        ));
        assert!(!verify_signature(secret, b"x", Some("sha256=zz")));
        assert!(!verify_signature(
            secret,
            b"x",
            Some(&good[..good.len() - 2])
        ));
    }

    fn headers<'a>(event: &'a str, sig: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            event: Some(event),
            delivery: Some("d-1"),
            signature_256: Some(sig),
        }
    }

    #[test]
    fn upstream_samples_decode_unmodified() {
        let secret = b"k";
        for name in ["payload", "gh-pages.payload", "with-installation.payload"] {
            let body = std::fs::read(format!("{FIXTURES}/deployment/{name}.json")).unwrap();
            let sig = sign(secret, &body);
            let WebhookEvent::Deployment { delivery_id, event } =
                decode(secret, &headers("deployment", &sig), &body).unwrap()
            else {
                panic!("not a deployment")
            };
            assert_eq!(delivery_id, "d-1");
            assert_eq!(event.deployment.id, 145_988_746);
            assert_eq!(
                event.deployment.sha,
                "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
            );
            assert_eq!(event.repository.full_name, "Codertocat/Hello-World");
            assert!(event.payload_object().is_object());
            assert!(!event.creator().is_empty());
        }
        for name in ["payload", "gh-pages.payload", "with-installation.payload"] {
            let body = std::fs::read(format!("{FIXTURES}/deployment_status/{name}.json")).unwrap();
            let sig = sign(secret, &body);
            let ev = decode(secret, &headers("deployment_status", &sig), &body).unwrap();
            assert!(
                matches!(ev, WebhookEvent::DeploymentStatus { .. }),
                "{name}"
            );
        }
        for name in [
            "payload",
            "with-organization.payload",
            "with-app_id.payload",
        ] {
            let body = std::fs::read(format!("{FIXTURES}/ping/{name}.json")).unwrap();
            let sig = sign(secret, &body);
            assert_eq!(
                decode(secret, &headers("ping", &sig), &body).unwrap(),
                WebhookEvent::Ping
            );
        }
    }

    #[test]
    fn other_events_are_ignored_by_name_and_bad_input_is_refused() {
        let secret = b"k";
        let body = b"{}";
        let sig = sign(secret, body);
        assert_eq!(
            decode(secret, &headers("push", &sig), body).unwrap(),
            WebhookEvent::Ignored("push".into())
        );
        assert_eq!(
            decode(secret, &headers("push", "sha256=00"), body),
            Err(WebhookError::BadSignature)
        );
        let no_event = WebhookHeaders {
            event: None,
            ..headers("x", &sig)
        };
        assert_eq!(
            decode(secret, &no_event, body),
            Err(WebhookError::MissingEvent)
        );
        assert!(matches!(
            decode(secret, &headers("deployment", &sig), body),
            Err(WebhookError::Malformed { .. })
        ));
        let no_delivery = WebhookHeaders {
            delivery: None,
            ..headers("deployment", &sig)
        };
        assert_eq!(
            decode(secret, &no_delivery, body),
            Err(WebhookError::MissingDelivery)
        );
    }

    #[test]
    fn tasks_that_cannot_be_run_are_malformed() {
        let body = |task: &str| {
            serde_json::to_vec(&serde_json::json!({
                "deployment": {"id": 1, "sha": "a", "ref": "main", "environment": "edge",
                               "task": task},
                "repository": {"full_name": "o/r"}
            }))
            .unwrap()
        };
        let secret = b"k";
        for (task, why) in [
            ("deploy\0x", "control"),
            ("deploy\u{202e}", "invisible"),
            ("", "empty"),
            (
                &"a".repeat(deploy_core::task::MAX_TASK_BYTES + 1),
                "longer than 255 bytes",
            ),
        ] {
            let b = body(task);
            let err = decode(secret, &headers("deployment", &sign(secret, &b)), &b).unwrap_err();
            assert!(
                matches!(&err, WebhookError::Malformed { reason, .. } if reason.contains(why)),
                "{task:?}: {err}"
            );
        }
        let b = body("deploy:migrate");
        assert!(decode(secret, &headers("deployment", &sign(secret, &b)), &b).is_ok());
    }
}
