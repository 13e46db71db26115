//! GitHub's OAuth web flow and the membership endpoints, as the fake serves them.
//!
//! The web side sits at the fake's root (as on github.com, or a GHES host whose API is under
//! `/api/v3`): `GET /login/oauth/authorize` is a small page with an "Authorize" button (a
//! form a browser submits) and a "Cancel" one; the form sends the browser back to
//! `redirect_uri` with `code` and `state` (or `error=access_denied`). `POST
//! /login/oauth/access_token` checks the client id and secret and the code (single use, and
//! the `redirect_uri` it was granted for) and answers JSON when asked for it, a form
//! otherwise, with GitHub's error objects (`bad_verification_code`, …) on HTTP 200 as GitHub
//! does. The API side answers `GET /user` for an issued token (checked against the
//! `GET /user` response schema), `GET /user/memberships/orgs/{org}` and
//! `GET /orgs/{org}/teams/{team_slug}/memberships/{username}` (404 for a non-member, 403
//! without the `read:org` scope). The subset of GitHub's OpenAPI description has no schema
//! for the two memberships: their shapes follow GitHub's REST reference, and the `user` in
//! an org membership is checked against `simple-user`.
//!
//! Which user the browser is signed in to GitHub as, and what they are a member of, is set
//! by the test ([`FakeGithub::sign_in_as`], [`FakeGithub::add_org_member`],
//! [`FakeGithub::add_team_member`]).

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{FakeGithub, Shared, bearer, message};
use crate::fixtures;

/// What the fake knows of OAuth: apps, users, grants, tokens and memberships.
#[derive(Debug, Default)]
pub(super) struct OauthState {
    /// client id → client secret.
    apps: HashMap<String, String>,
    /// login → user id.
    users: HashMap<String, u64>,
    /// Whom the browser is signed in to GitHub as.
    signed_in: Option<String>,
    /// Codes not yet exchanged.
    codes: HashMap<String, Grant>,
    /// Issued token → (login, scope).
    tokens: HashMap<String, (String, String)>,
    /// (org, login) → membership state (`active`, `pending`).
    org_members: HashMap<(String, String), String>,
    /// (org, team slug, login) → membership state.
    team_members: HashMap<(String, String, String), String>,
    /// Numbers for codes and tokens.
    issued: u64,
    /// Every exchange asked for, with what the fake answered.
    exchanges: Vec<Exchange>,
}

/// An authorization the user gave, until its code is exchanged.
#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    login: String,
    redirect_uri: String,
    scope: String,
}

/// One `POST /login/oauth/access_token` and the fake's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The client id sent.
    pub client_id: String,
    /// The code sent.
    pub code: String,
    /// The token issued, or GitHub's error code.
    pub outcome: Result<String, String>,
}

impl FakeGithub {
    /// The web address (`GITHUB_WEB_URL`): the fake's root, where its OAuth pages are.
    pub fn web_url(&self) -> String {
        let url = url::Url::parse(&self.url).expect("a URL");
        url.origin().ascii_serialization()
    }

    /// Registers an OAuth app.
    pub fn add_oauth_app(&self, client_id: &str, client_secret: &str) {
        self.shared
            .lock()
            .oauth
            .apps
            .insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// The browser is signed in to GitHub as `login` (user `id`): the authorize page
    /// authorizes for them.
    pub fn sign_in_as(&self, login: &str, id: u64) {
        let mut inner = self.shared.lock();
        inner.oauth.users.insert(login.to_owned(), id);
        inner.oauth.signed_in = Some(login.to_owned());
    }

    /// `login` is a member of `org` in `state` (`active`, or `pending` for an invitation).
    pub fn add_org_member(&self, org: &str, login: &str, state: &str) {
        self.shared
            .lock()
            .oauth
            .org_members
            .insert((org.to_owned(), login.to_owned()), state.to_owned());
    }

    /// `login` is a member of team `team` of `org` in `state`.
    pub fn add_team_member(&self, org: &str, team: &str, login: &str, state: &str) {
        self.shared.lock().oauth.team_members.insert(
            (org.to_owned(), team.to_owned(), login.to_owned()),
            state.to_owned(),
        );
    }

    /// Every token exchange asked for, oldest first.
    pub fn oauth_exchanges(&self) -> Vec<Exchange> {
        self.shared.lock().oauth.exchanges.clone()
    }
}

/// The web routes (at the fake's root).
pub(super) fn web_routes() -> Router<Shared> {
    Router::new()
        .route(
            "/login/oauth/authorize",
            get(authorize_page).post(authorize),
        )
        .route(
            "/login/oauth/access_token",
            axum::routing::post(access_token),
        )
}

/// The API routes of memberships.
pub(super) fn api_routes() -> Router<Shared> {
    Router::new()
        .route("/user/memberships/orgs/{org}", get(org_membership))
        .route(
            "/orgs/{org}/teams/{team_slug}/memberships/{username}",
            get(team_membership),
        )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn oauth_page(status: StatusCode, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Authorize application</title></head><body>{body}</body></html>"
        )),
    )
        .into_response()
}

/// `GET /login/oauth/authorize`: the page asking the signed-in user to authorize the app.
async fn authorize_page(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let inner = shared.lock();
    let client_id = q.get("client_id").cloned().unwrap_or_default();
    if !inner.oauth.apps.contains_key(&client_id) {
        return oauth_page(StatusCode::NOT_FOUND, "<h1>404: no such application</h1>");
    }
    let Some(login) = inner.oauth.signed_in.clone() else {
        return oauth_page(
            StatusCode::OK,
            "<h1>Sign in to GitHub</h1><p>(the test signed nobody in)</p>",
        );
    };
    let hidden: String = ["client_id", "redirect_uri", "state", "scope"]
        .iter()
        .map(|k| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(q.get(*k).map(String::as_str).unwrap_or_default())
            )
        })
        .collect();
    oauth_page(
        StatusCode::OK,
        &format!(
            "<h1>Authorize {app}</h1><p id=\"signed-in-as\">Signed in as {login}</p>\
             <p>wants to read your organization memberships ({scope}).</p>\
             <form method=\"post\" action=\"/login/oauth/authorize\">{hidden}\
             <button type=\"submit\" name=\"authorize\" value=\"1\" id=\"js-oauth-authorize-btn\">Authorize</button>\
             <button type=\"submit\" name=\"authorize\" value=\"0\" id=\"js-oauth-cancel-btn\">Cancel</button>\
             </form>",
            app = escape(&client_id),
            login = escape(&login),
            scope = escape(q.get("scope").map(String::as_str).unwrap_or_default()),
        ),
    )
}

/// `POST /login/oauth/authorize`: the user's answer; back to `redirect_uri`.
async fn authorize(State(shared): State<Shared>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut inner = shared.lock();
    let Some(login) = inner.oauth.signed_in.clone() else {
        return oauth_page(StatusCode::FORBIDDEN, "<h1>nobody is signed in</h1>");
    };
    let Ok(mut back) = url::Url::parse(&field("redirect_uri")) else {
        return oauth_page(
            StatusCode::BAD_REQUEST,
            "<h1>redirect_uri is not a URL</h1>",
        );
    };
    if field("authorize") == "1" {
        inner.oauth.issued += 1;
        let code = format!("fakecode{:012}", inner.oauth.issued);
        inner.oauth.codes.insert(
            code.clone(),
            Grant {
                client_id: field("client_id"),
                login,
                redirect_uri: field("redirect_uri"),
                scope: field("scope"),
            },
        );
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &field("state"));
    } else {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair(
                "error_description",
                "The user has denied your application access.",
            )
            .append_pair(
                "error_uri",
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied",
            )
            .append_pair("state", &field("state"));
    }
    Redirect::to(back.as_str()).into_response()
}

/// GitHub's error object for a token exchange (sent with HTTP 200, as GitHub does).
fn exchange_error(error: &str) -> Value {
    let description = match error {
        "incorrect_client_credentials" => {
            "The client_id and/or client_secret passed are incorrect."
        }
        "redirect_uri_mismatch" => {
            "The redirect_uri MUST match the registered callback URL for this application."
        }
        _ => "The code passed is incorrect or expired.",
    };
    json!({"error": error, "error_description": description,
           "error_uri": format!("https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#{}", error.replace('_', "-"))})
}

/// `POST /login/oauth/access_token`: a code for a token, once.
async fn access_token(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        _ => url::form_urlencoded::parse(&body).into_owned().collect(),
    };
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (client_id, code) = (field("client_id"), field("code"));
    let mut inner = shared.lock();
    let oauth = &mut inner.oauth;
    let outcome = if oauth.apps.get(&client_id) != Some(&field("client_secret")) {
        Err("incorrect_client_credentials".to_owned())
    } else {
        match oauth.codes.remove(&code) {
            Some(grant) if grant.client_id != client_id => Err("bad_verification_code".into()),
            Some(grant)
                if form.contains_key("redirect_uri")
                    && field("redirect_uri") != grant.redirect_uri =>
            {
                Err("redirect_uri_mismatch".into())
            }
            Some(grant) => {
                oauth.issued += 1;
                let token = format!("gho_fake{:028}", oauth.issued);
                oauth
                    .tokens
                    .insert(token.clone(), (grant.login, grant.scope));
                Ok(token)
            }
            None => Err("bad_verification_code".into()),
        }
    };
    oauth.exchanges.push(Exchange {
        client_id,
        code,
        outcome: outcome.clone(),
    });
    let answer = match &outcome {
        Ok(token) => json!({"access_token": token, "token_type": "bearer", "scope": "read:org"}),
        Err(e) => exchange_error(e),
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        axum::Json(answer).into_response()
    } else {
        let pairs: Vec<(String, String)> = answer
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        (
            [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
            serde_urlencoded::to_string(pairs).unwrap(),
        )
            .into_response()
    }
}

/// The user an issued token belongs to (login, id, scope).
pub(super) fn token_user(shared: &Shared, headers: &HeaderMap) -> Option<(String, u64, String)> {
    let token = bearer(headers)?;
    let inner = shared.lock();
    let (login, scope) = inner.oauth.tokens.get(&token)?.clone();
    let id = inner.oauth.users.get(&login).copied().unwrap_or(1);
    Some((login, id, scope))
}

/// `GET /user` for `login`: GitHub's public-user shape, from its documented example.
pub(super) fn user_json(shared: &Shared, login: &str, id: u64) -> Value {
    let example = fixtures::github_example("private-user-response-with-public-profile-information");
    let mut text = example.to_string().replace("octocat", login);
    text = text.replace("\"id\":1,", &format!("\"id\":{id},"));
    let user: Value = serde_json::from_str(&text).unwrap();
    if let Err(errors) = fixtures::check_github_response("GET", "/user", 200, &user) {
        shared
            .lock()
            .violations
            .push(format!("the fake's GET /user answer: {errors:?}"));
    }
    user
}

fn simple_user(user: &Value) -> Value {
    let keys = [
        "login",
        "id",
        "node_id",
        "avatar_url",
        "gravatar_id",
        "url",
        "html_url",
        "followers_url",
        "following_url",
        "gists_url",
        "starred_url",
        "subscriptions_url",
        "organizations_url",
        "repos_url",
        "events_url",
        "received_events_url",
        "type",
        "site_admin",
    ];
    Value::Object(
        keys.iter()
            .map(|k| ((*k).to_owned(), user[*k].clone()))
            .collect(),
    )
}

/// The membership endpoints' refusal of a token without `read:org`.
fn needs_read_org() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "You need at least read:org scope or user scope to list your organization memberships.",
    )
}

/// `GET /user/memberships/orgs/{org}`.
async fn org_membership(
    State(shared): State<Shared>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((login, id, scope)) = token_user(&shared, &headers) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if !scope.split([',', ' ']).any(|s| s == "read:org") {
        return needs_read_org();
    }
    let state = shared
        .lock()
        .oauth
        .org_members
        .get(&(org.clone(), login.clone()))
        .cloned();
    let Some(state) = state else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let base = &shared.base_url;
    let user = simple_user(&user_json(&shared, &login, id));
    if let Err(errors) = fixtures::check_github_schema("simple-user", &user) {
        shared
            .lock()
            .violations
            .push(format!("the fake's org membership user: {errors:?}"));
    }
    axum::Json(json!({
        "url": format!("{base}/orgs/{org}/memberships/{login}"),
        "state": state,
        "role": "member",
        "organization_url": format!("{base}/orgs/{org}"),
        "organization": {
            "login": org, "id": 1, "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=",
            "url": format!("{base}/orgs/{org}"),
            "repos_url": format!("{base}/orgs/{org}/repos"),
            "events_url": format!("{base}/orgs/{org}/events"),
            "hooks_url": format!("{base}/orgs/{org}/hooks"),
            "issues_url": format!("{base}/orgs/{org}/issues"),
            "members_url": format!("{base}/orgs/{org}/members{{/member}}"),
            "public_members_url": format!("{base}/orgs/{org}/public_members{{/member}}"),
            "avatar_url": "https://github.com/images/error/octocat_happy.gif",
            "description": "A great organization"
        },
        "user": user,
        "permissions": {"can_create_repository": false}
    }))
    .into_response()
}

/// `GET /orgs/{org}/teams/{team_slug}/memberships/{username}`.
async fn team_membership(
    State(shared): State<Shared>,
    Path((org, team, username)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some((_, _, scope)) = token_user(&shared, &headers) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if !scope.split([',', ' ']).any(|s| s == "read:org") {
        return needs_read_org();
    }
    let state = shared
        .lock()
        .oauth
        .team_members
        .get(&(org.clone(), team.clone(), username.clone()))
        .cloned();
    match state {
        Some(state) => axum::Json(json!({
            "url": format!("{}/organizations/1/team/1/memberships/{username}", shared.base_url),
            "role": "member",
            "state": state
        }))
        .into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}
