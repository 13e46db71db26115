//! Socket Mode: the same domain events and handlers as the Events API, over Slack's websocket
//! (no public URL needed). Used when `SLACK_APP_TOKEN` is set.

use std::sync::Arc;

use slack_morphism::prelude::*;

use crate::slack::app::SlackApp;
use crate::slack::events::{self, Inbound, IncomingCommand};
use crate::slack::web::SlackWeb;

async fn app_of(state: &SlackClientEventsUserState) -> Option<Arc<SlackApp>> {
    state
        .read()
        .await
        .get_user_state::<Arc<SlackApp>>()
        .cloned()
}

/// The listener environment carrying the adapter as user state.
pub fn environment(
    app: Arc<SlackApp>,
    web: &SlackWeb,
) -> Arc<SlackClientEventsListenerEnvironment<SlackClientHyperHttpsConnector>> {
    Arc::new(SlackClientEventsListenerEnvironment::new(web.client()).with_user_state(app))
}

/// A push event (mention or message) from the websocket.
pub async fn on_push(
    event: SlackPushEventCallback,
    _client: Arc<SlackHyperClient>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let Some(app) = app_of(&state).await else {
        return Ok(());
    };
    let body = serde_json::to_value(&event.event)?;
    let inbound = events::read_event(&body, Some(event.event_id.to_string()), app.bot_user_id());
    if let Inbound::Message(m) = &inbound
        && !m
            .event_id
            .as_deref()
            .is_none_or(|id| app.first_delivery(id))
    {
        return Ok(());
    }
    app.dispatch(inbound);
    Ok(())
}

/// A slash command from the websocket; answered at once, the work follows in the channel.
pub async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<SlackHyperClient>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    if let Some(app) = app_of(&state).await {
        let command = IncomingCommand {
            channel_id: event.channel_id.to_string(),
            channel_name: event.channel_name.clone(),
            user_id: event.user_id.to_string(),
            user_name: None,
            command: event.command.to_string(),
            text: event.text.clone().unwrap_or_default(),
            response_url: Some(event.response_url.0.to_string()),
        };
        app.dispatch(Inbound::Command(command));
    }
    Ok(SlackCommandEventResponse::new(SlackMessageContent::new()))
}

/// A button press from the websocket.
pub async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<SlackHyperClient>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    if let Some(app) = app_of(&state).await {
        let body = serde_json::to_value(&event)?;
        app.dispatch(events::read_interaction(&body));
    }
    Ok(())
}

/// Connects with the app-level token and serves until `shutdown` resolves; then closes the
/// websocket (no more events come) and returns. The events already taken are the caller's
/// to wait for ([`SlackApp::drain`]).
pub async fn run(
    app: Arc<SlackApp>,
    web: &SlackWeb,
    app_token: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let callbacks = SlackSocketModeListenerCallbacks::new()
        .with_push_events(on_push)
        .with_command_events(on_command)
        .with_interaction_events(on_interaction);
    let listener = SlackClientSocketModeListener::new(
        &SlackClientSocketModeConfig::new(),
        environment(app, web),
        callbacks,
    );
    listener
        .listen_for(&SlackApiToken::new(app_token.into()))
        .await
        .map_err(|e| anyhow::anyhow!("Socket Mode connection failed (check SLACK_APP_TOKEN, an xapp- token with connections:write): {e}"))?;
    listener.start().await;
    shutdown.await;
    tracing::info!("closing the Socket Mode connection");
    listener.shutdown().await;
    Ok(())
}
