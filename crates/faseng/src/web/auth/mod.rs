//! Who may see the dashboard, and the gate every dashboard request passes.
//!
//! Three modes ([`DashboardAccess`]): off (no OAuth app: the dashboard's routes answer 404
//! saying how to turn it on), GitHub sign-in (OAuth authorization code flow; active members
//! of `FASENG_GITHUB_ORG`, or of one of its teams, only), and local mode (`chima shell`: no
//! sign-in, loopback peers only).
//!
//! The gate ([`routes`]) wraps the dashboard's pages: a signed-in member's request gets a
//! [`Viewer`] in its extensions; a GET without a session gets the sign-in page (no data), any
//! other method 403. Every request that is not a GET or HEAD must come from the dashboard's
//! own pages (`Origin` / `Sec-Fetch-Site`) and carry the session's token in its form field
//! `csrf` (compared in constant time). Every response of the dashboard and of `/auth/` gets
//! the [`CSP`] and the other headers of [`security_headers`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use deploy_core::{Clock, Secret};
use subtle::ConstantTimeEq as _;
use url::Url;

mod github;
mod pages;
mod session;
mod settings;

pub use github::SignInError;
pub use settings::{AccessSettings, DashboardAccess, GithubSignIn, Members};

use self::github::OauthClient;
use self::session::{Cookies, Session, SignInState};
use super::WebState;
use super::viewer::Viewer;
use crate::messages;

/// The Content-Security-Policy of every dashboard page: no inline script or style, nothing
/// from elsewhere, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// Where the dashboard's stylesheet and script are served.
const STATIC_PREFIX: &str = "/static/";

/// The largest form body an action may send.
const FORM_MAX_BYTES: usize = 64 * 1024;

/// The dashboard's gate, made once per process from its [`DashboardAccess`].
pub struct Gate {
    mode: Mode,
    clock: Arc<dyn Clock>,
    /// `scheme://host[:port]` of the public URL (what a same-origin `Origin` says).
    public_origin: String,
    /// `{public URL}/auth/callback`.
    redirect_uri: String,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("public_origin", &self.public_origin)
            .finish_non_exhaustive()
    }
}

enum Mode {
    Off,
    Local { user: String, csrf: String },
    Github(Box<SignIn>),
}

/// GitHub sign-in: the OAuth app and the cookies it leads to.
struct SignIn {
    oauth: OauthClient,
    cookies: Cookies,
}

/// Why a request does not reach the dashboard's pages.
enum Refusal {
    /// The dashboard is off.
    Off,
    /// Local mode, and the peer is another machine.
    NotLoopback,
    /// No session: the sign-in page, coming back to `next`.
    SignIn { invitation: String, next: String },
    /// No session, and the request would change something.
    NeedsSession,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Off => dashboard_off(),
            Self::NotLoopback => {
                (StatusCode::FORBIDDEN, messages::dashboard_local_only()).into_response()
            }
            Self::SignIn { invitation, next } => (
                StatusCode::UNAUTHORIZED,
                Html(pages::sign_in(&invitation, &next)),
            )
                .into_response(),
            Self::NeedsSession => {
                (StatusCode::FORBIDDEN, messages::action_needs_session()).into_response()
            }
        }
    }
}

impl Gate {
    /// The gate for `access`, for a faseng whose public URL is `public_url`. GitHub sign-in
    /// signs its cookies with a key derived from the OAuth client secret and
    /// `webhook_secret` (required then) and calls the REST API at `api_url`.
    pub fn new(
        access: &DashboardAccess,
        public_url: &str,
        webhook_secret: Option<&Secret>,
        api_url: &str,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let public = Url::parse(public_url)
            .map_err(|e| anyhow::anyhow!("FASENG_PUBLIC_URL {public_url:?} is not a URL: {e}"))?;
        let mut callback = public.clone();
        callback.set_query(None);
        callback.set_fragment(None);
        callback
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("FASENG_PUBLIC_URL {public_url:?} has no path"))?
            .pop_if_empty()
            .extend(["auth", "callback"]);
        let mode = match access {
            DashboardAccess::Off => Mode::Off,
            DashboardAccess::Local { user } => Mode::Local {
                user: user.clone(),
                csrf: session::random_token()?,
            },
            DashboardAccess::Github(sign_in) => {
                let Some(webhook_secret) = webhook_secret else {
                    anyhow::bail!("GitHub sign-in needs GITHUB_WEBHOOK_SECRET too");
                };
                let key = session::derive_key(&sign_in.client_secret, webhook_secret);
                Mode::Github(Box::new(SignIn {
                    oauth: OauthClient::new(sign_in.clone(), api_url)?,
                    cookies: Cookies::new(key, public.scheme() == "https"),
                }))
            }
        };
        Ok(Self {
            mode,
            clock,
            public_origin: public.origin().ascii_serialization(),
            redirect_uri: callback.to_string(),
        })
    }

    /// A gate that keeps the dashboard off.
    pub fn off() -> Self {
        Self {
            mode: Mode::Off,
            clock: deploy_core::clock::system(),
            public_origin: String::new(),
            redirect_uri: String::new(),
        }
    }

    /// Whether the dashboard is served at all.
    pub fn is_on(&self) -> bool {
        !matches!(self.mode, Mode::Off)
    }

    /// Whether a state-changing request comes from the dashboard's own pages: its
    /// `Sec-Fetch-Site` (when sent) is `same-origin`, and its `Origin` is the public URL's or
    /// names the host the request was sent to. A request with neither header is refused.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        let fetch_site = headers.get("sec-fetch-site");
        if fetch_site.is_some_and(|s| s != "same-origin") {
            return false;
        }
        match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            Some(origin) => {
                origin == self.public_origin
                    || headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .is_some_and(|host| origin_names_host(origin, host))
            }
            None => fetch_site.is_some(),
        }
    }

    /// The viewer of a request, or why there is none.
    fn viewer(&self, request: &Request) -> Result<Viewer, Refusal> {
        match &self.mode {
            Mode::Off => Err(Refusal::Off),
            Mode::Local { user, csrf } => {
                let loopback = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .is_some_and(|ConnectInfo(peer)| peer.ip().to_canonical().is_loopback());
                if !loopback {
                    return Err(Refusal::NotLoopback);
                }
                Ok(Viewer {
                    id: format!("local:{user}"),
                    name: user.clone(),
                    csrf: csrf.clone(),
                })
            }
            Mode::Github(g) => match g.cookies.session(request.headers(), self.clock.now()) {
                Some(s) => Ok(Viewer {
                    id: format!("github:{}", s.login),
                    name: s.login,
                    csrf: s.csrf,
                }),
                None if is_safe(request.method()) => Err(Refusal::SignIn {
                    invitation: messages::sign_in_needed(&g.oauth.members().to_string()),
                    next: request
                        .uri()
                        .path_and_query()
                        .and_then(|p| local_path(p.as_str()))
                        .unwrap_or_else(|| "/".to_owned()),
                }),
                None => Err(Refusal::NeedsSession),
            },
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (a `Host` header: `host[:port]`).
fn origin_names_host(origin: &str, host: &str) -> bool {
    let Ok(url) = Url::parse(origin) else {
        return false;
    };
    let Some(name) = url.host_str() else {
        return false;
    };
    let authority = match url.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_owned(),
    };
    authority.eq_ignore_ascii_case(host)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// `next` when it is a path on this site (one leading `/`, nothing that makes it another
/// origin once parsed), as path and query; `/auth/` paths become `/`.
pub fn local_path(next: &str) -> Option<String> {
    if !next.starts_with('/')
        || next.starts_with("//")
        || next.contains('\\')
        || next.chars().any(char::is_control)
    {
        return None;
    }
    let base = Url::parse("http://faseng.invalid/").expect("a URL");
    let url = base.join(next).ok()?;
    if url.origin() != base.origin() {
        return None;
    }
    if url.path().starts_with("/auth/") {
        return Some("/".to_owned());
    }
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Some(path)
}

/// Whether the form in `body` carries `expected` as its `csrf` field (constant time).
fn form_csrf_matches(body: &[u8], expected: &str) -> bool {
    let presented = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

fn dashboard_off() -> Response {
    (StatusCode::NOT_FOUND, messages::dashboard_off()).into_response()
}

/// The dashboard's `pages` behind the gate, with the sign-in routes (`/auth/login`,
/// `/auth/callback`, `POST /auth/logout`); every response gets [`security_headers`].
pub fn routes(pages: Router<WebState>, state: &WebState) -> Router<WebState> {
    pages
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .layer(middleware::map_response(security_headers))
}

/// The gate: a [`Viewer`] for a member, the sign-in page or a refusal for anyone else; the
/// origin and CSRF checks of every action.
async fn guard(State(s): State<WebState>, request: Request, next: Next) -> Response {
    let gate = &s.gate;
    let viewer = match gate.viewer(&request) {
        Ok(v) => v,
        // The stylesheet and script hold no data: the sign-in page uses them too.
        Err(Refusal::SignIn { .. }) if request.uri().path().starts_with(STATIC_PREFIX) => {
            return next.run(request).await;
        }
        Err(refusal) => return refusal.into_response(),
    };
    let mut request = if is_safe(request.method()) {
        request
    } else {
        if !gate.same_origin(request.headers()) {
            return (StatusCode::FORBIDDEN, messages::cross_site_refused()).into_response();
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, FORM_MAX_BYTES).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        if !form_csrf_matches(&bytes, &viewer.csrf) {
            tracing::info!(viewer = %viewer.id, path = %parts.uri.path(), "dashboard: a form with a wrong csrf token was refused");
            return (StatusCode::FORBIDDEN, messages::form_out_of_date()).into_response();
        }
        Request::from_parts(parts, Body::from(bytes))
    };
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

/// The headers of every dashboard and sign-in response: the [`CSP`], `nosniff`,
/// `Referrer-Policy: same-origin`, `X-Frame-Options: DENY`, and `Cache-Control: no-store`
/// unless the page set its own.
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// `/auth/login?next=`: remembers a new `state` (signed cookie) and sends the browser to
/// GitHub's authorize page.
async fn login(
    State(s): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let gate = &s.gate;
    let next = q
        .next
        .as_deref()
        .and_then(local_path)
        .unwrap_or_else(|| "/".to_owned());
    let (oauth, cookies) = match &gate.mode {
        Mode::Off => return dashboard_off(),
        Mode::Local { .. } => return Redirect::to(&next).into_response(),
        Mode::Github(g) => (&g.oauth, &g.cookies),
    };
    let state = match session::random_token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "dashboard sign-in: no randomness");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let pending = SignInState {
        state,
        next,
        expires_at: gate.clock.now() + session::STATE_TTL,
    };
    let to = oauth.authorize_url(&gate.redirect_uri, &pending.state);
    (
        cookies.begin_sign_in(&headers, &pending),
        Redirect::to(to.as_str()),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `/auth/callback`: GitHub sends the browser back here with `code` and `state`.
async fn callback(
    State(s): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let gate = &s.gate;
    let (oauth, cookies) = match &gate.mode {
        Mode::Off => return dashboard_off(),
        Mode::Local { .. } => return Redirect::to("/").into_response(),
        Mode::Github(g) => (&g.oauth, &g.cookies),
    };
    let now = gate.clock.now();
    let failed = |status: StatusCode, why: &str, next: &str| {
        (
            status,
            cookies.drop_sign_in(&headers),
            Html(pages::sign_in_failed(why, next)),
        )
            .into_response()
    };
    let Some(pending) = cookies.sign_in_state(&headers, now) else {
        return failed(StatusCode::BAD_REQUEST, messages::sign_in_expired(), "/");
    };
    let presented = q.state.unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(pending.state.as_bytes())) {
        tracing::info!("dashboard sign-in: the state GitHub handed back is not this browser's");
        return failed(StatusCode::BAD_REQUEST, messages::sign_in_expired(), "/");
    }
    if let Some(error) = q.error {
        let why = messages::sign_in_declined(&error, q.error_description.as_deref());
        return failed(StatusCode::FORBIDDEN, &why, &pending.next);
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        let why = messages::code_refused("no code", None);
        return failed(StatusCode::BAD_REQUEST, &why, &pending.next);
    };
    match sign_in(oauth, &code, &gate.redirect_uri).await {
        Ok(Ok(user)) => {
            let csrf = match session::random_token() {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "dashboard sign-in: no randomness");
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
            };
            tracing::info!(login = %user.login, user_id = user.id, "dashboard: signed in");
            let session = Session {
                login: user.login,
                user_id: user.id,
                csrf,
                expires_at: now + session::SESSION_TTL,
            };
            (
                cookies.start_session(&headers, &session),
                Redirect::to(&pending.next),
            )
                .into_response()
        }
        Ok(Err(login)) => {
            tracing::info!(%login, members = %oauth.members(), "dashboard: sign-in refused, not a member");
            let why = messages::not_a_member(&login, &oauth.members().to_string());
            failed(StatusCode::FORBIDDEN, &why, &pending.next)
        }
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: sign-in failed");
            let status = match e {
                SignInError::Refused(_) => StatusCode::FORBIDDEN,
                SignInError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            };
            failed(status, &e.to_string(), &pending.next)
        }
    }
}

/// The code → token → user → membership steps: the member, or the login of a non-member.
/// The token goes out of scope (and is forgotten) here.
async fn sign_in(
    oauth: &OauthClient,
    code: &str,
    redirect_uri: &str,
) -> Result<Result<github::GithubUser, String>, SignInError> {
    let token = oauth.exchange(code, redirect_uri).await?;
    let user = oauth.user(&token).await?;
    if oauth.is_member(&token, &user.login).await? {
        Ok(Ok(user))
    } else {
        Ok(Err(user.login))
    }
}

/// `POST /auth/logout` (same origin, with the session's `csrf`): ends the session.
async fn logout(State(s): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    let gate = &s.gate;
    let cookies = match &gate.mode {
        Mode::Off => return dashboard_off(),
        Mode::Local { .. } => return Redirect::to("/").into_response(),
        Mode::Github(g) => &g.cookies,
    };
    let Some(session) = cookies.session(&headers, gate.clock.now()) else {
        return Redirect::to("/").into_response();
    };
    if !gate.same_origin(&headers) {
        return (StatusCode::FORBIDDEN, messages::cross_site_refused()).into_response();
    }
    if !form_csrf_matches(&body, &session.csrf) {
        return (StatusCode::FORBIDDEN, messages::form_out_of_date()).into_response();
    }
    tracing::info!(login = %session.login, "dashboard: signed out");
    (cookies.end_session(&headers), Redirect::to("/")).into_response()
}

#[cfg(test)]
mod tests;
