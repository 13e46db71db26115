//! The Events API transport: `POST /slack/events`, `/slack/commands`, `/slack/interactions`
//! and `GET /healthz`. Every Slack request is verified (v0 signature over the raw body,
//! constant time, 5-minute window) before it is read; work runs after the acknowledgement.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use slack_morphism::prelude::SlackSigningSecret;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

use crate::slack::app::SlackApp;
use crate::slack::events::{self, Inbound};
use crate::slack::web::slash_ack;

/// Shared state of the HTTP transport.
#[derive(Clone)]
pub struct HttpState {
    app: Arc<SlackApp>,
    verifier: Arc<SlackEventSignatureVerifier>,
}

/// A request body whose Slack signature checked out, with Slack's retry counter.
pub struct VerifiedBody {
    /// The raw body, as signed.
    pub body: String,
    /// `X-Slack-Retry-Num`, when Slack is retrying.
    pub retry: Option<u32>,
}

impl FromRequest<HttpState> for VerifiedBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &HttpState) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let signature = header("x-slack-signature");
        let timestamp = header("x-slack-request-timestamp");
        let retry = header("x-slack-retry-num").and_then(|r| r.parse().ok());
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
            tracing::warn!("Slack request without signature headers rejected");
            return Err(StatusCode::UNAUTHORIZED.into_response());
        };
        let Ok(body) = String::from_utf8(bytes.to_vec()) else {
            return Err(StatusCode::BAD_REQUEST.into_response());
        };
        if let Err(e) = state.verifier.verify(&signature, &body, &timestamp) {
            tracing::warn!(error = %e, "Slack request with a bad or stale signature rejected");
            return Err(StatusCode::UNAUTHORIZED.into_response());
        }
        Ok(Self { body, retry })
    }
}

/// The routes, ready to serve.
pub fn router(app: Arc<SlackApp>, signing_secret: &str) -> Router {
    let state = HttpState {
        app,
        verifier: Arc::new(SlackEventSignatureVerifier::new(&SlackSigningSecret::new(
            signing_secret.to_owned(),
        ))),
    };
    Router::new()
        .route("/slack/events", post(on_events))
        .route("/slack/commands", post(on_command))
        .route("/slack/interactions", post(on_interaction))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}

fn dispatch(app: &Arc<SlackApp>, inbound: Inbound) {
    app.dispatch(inbound);
}

async fn on_events(State(state): State<HttpState>, verified: VerifiedBody) -> Response {
    match events::parse_event_body(&verified.body, state.app.bot_user_id()) {
        Ok(Inbound::UrlVerification { challenge }) => challenge.into_response(),
        Ok(Inbound::Message(m)) => {
            let first = m
                .event_id
                .as_deref()
                .is_none_or(|id| state.app.first_delivery(id));
            if first {
                dispatch(&state.app, Inbound::Message(m));
            } else {
                tracing::info!(retry = ?verified.retry, "Slack retry of an event already taken; ignored");
            }
            StatusCode::OK.into_response()
        }
        Ok(other) => {
            dispatch(&state.app, other);
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::warn!(error = e, "unreadable Slack event");
            StatusCode::BAD_REQUEST.into_response()
        }
    }
}

async fn on_command(State(state): State<HttpState>, verified: VerifiedBody) -> Response {
    match events::parse_command_body(&verified.body) {
        Ok(inbound) => {
            dispatch(&state.app, inbound);
            axum::Json(slash_ack()).into_response()
        }
        Err(e) => {
            tracing::warn!(error = e, "unreadable slash command");
            StatusCode::BAD_REQUEST.into_response()
        }
    }
}

async fn on_interaction(State(state): State<HttpState>, verified: VerifiedBody) -> Response {
    match events::parse_interaction_body(&verified.body) {
        Ok(inbound) => {
            dispatch(&state.app, inbound);
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::warn!(error = e, "unreadable interaction");
            StatusCode::BAD_REQUEST.into_response()
        }
    }
}
