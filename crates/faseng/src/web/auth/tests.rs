//! The gate in each mode, over the dashboard's pages and a stub of GitHub's OAuth endpoints on
//! loopback (the end-to-end tests sign in through a fuller fake, in a browser).

use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use axum::routing::{get, post};
use chrono::Utc;
use deploy_core::ManualClock;
use tower::ServiceExt as _;

use super::*;

const CLIENT_SECRET: &str = "oauth client secret";
const WEBHOOK_SECRET: &str = "webhook secret";
const PUBLIC: &str = "http://faseng.test:8081";

/// How the stub GitHub answers, and what it was asked.
#[derive(Default)]
struct Stub {
    /// `(status, body)` of the token exchange.
    token: Option<(u16, String)>,
    /// `(status, body)` of `GET /user`.
    user: Option<(u16, String)>,
    /// `(status, body)` of the membership.
    membership: Option<(u16, String)>,
    /// Paths asked, with their `Authorization`.
    asked: Vec<(String, Option<String>)>,
}

type Shared = Arc<Mutex<Stub>>;

fn answer(a: Option<(u16, String)>) -> Response {
    let (status, body) = a.unwrap_or((404, r#"{"message":"Not Found"}"#.into()));
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn stub_github(stub: Shared) -> String {
    async fn token(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
        let mut st = s.lock().unwrap();
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
        assert!(form.contains(&("client_secret".into(), CLIENT_SECRET.into())));
        assert_eq!(headers[header::ACCEPT], "application/json");
        st.asked.push(("/login/oauth/access_token".into(), None));
        answer(st.token.clone())
    }
    async fn api(State(s): State<Shared>, request: Request<Body>) -> Response {
        let mut st = s.lock().unwrap();
        let path = request.uri().path().to_owned();
        let auth = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        st.asked.push((path.clone(), auth));
        if path == "/api/v3/user" {
            answer(st.user.clone())
        } else {
            answer(st.membership.clone())
        }
    }
    let app = Router::new()
        .route("/login/oauth/access_token", post(token))
        .route("/api/v3/{*rest}", get(api))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    url
}

struct Setup {
    state: WebState,
    clock: ManualClock,
    stub: Shared,
    _dir: tempfile::TempDir,
}

async fn setup(access: impl FnOnce(&str) -> DashboardAccess) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let stub: Shared = Arc::default();
    let github = stub_github(stub.clone()).await;
    let clock = ManualClock::new(Utc::now());
    let gate = Gate::new(
        &access(&github),
        PUBLIC,
        Some(&Secret::new(WEBHOOK_SECRET)),
        &format!("{github}/api/v3"),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let state = WebState {
        gate: Arc::new(gate),
        apps: Arc::new(
            deploy_core::Apps::from_json(
                r#"{"demo": {"provider": "shell", "repository": "o/r", "environments": ["staging"]}}"#,
            )
            .unwrap(),
        ),
        ..super::super::tests::state(dir.path()).await
    };
    Setup {
        state,
        clock,
        stub,
        _dir: dir,
    }
}

fn github_access(web: &str, members: &str) -> DashboardAccess {
    DashboardAccess::Github(GithubSignIn {
        client_id: "Iv1.test".into(),
        client_secret: Secret::new(CLIENT_SECRET),
        web_url: Url::parse(web).unwrap(),
        members_of: Members::parse(members).unwrap(),
    })
}

async fn github(members: &str) -> Setup {
    setup(|web| github_access(web, members)).await
}

/// The `Cookie` header a browser sends back after `jar`'s `Set-Cookie`s.
fn cookie_header(jar: axum_extra::extract::SignedCookieJar) -> String {
    cookies_of(&jar.into_response())
}

/// The cookies a response sets (not those it expires), as a `Cookie` header.
fn cookies_of(response: &Response) -> String {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The unlock form of the dashboard, without its `csrf` field.
const UNLOCK: &str = "app=demo&env=staging";

impl Setup {
    /// Asserts that no web action was submitted.
    async fn assert_no_action(&self) {
        assert!(
            self.state.store.web_action(1).await.unwrap().is_none(),
            "an action was submitted"
        );
    }

    /// A session cookie for `login`, as a sign-in would have set it now.
    fn session_cookie(&self, login: &str, csrf: &str) -> String {
        let cookies = Cookies::new(
            session::derive_key(&Secret::new(CLIENT_SECRET), &Secret::new(WEBHOOK_SECRET)),
            false,
        );
        cookie_header(cookies.start_session(
            &HeaderMap::new(),
            &Session {
                login: login.into(),
                user_id: 1,
                csrf: csrf.into(),
                expires_at: self.clock.now() + session::SESSION_TTL,
            },
        ))
    }

    async fn send(&self, request: Request<Body>, peer: &str) -> (StatusCode, HeaderMap, String) {
        let mut request = request;
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = super::super::router(self.state.clone())
            .oneshot(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut r = Request::get(path);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        self.send(r.body(Body::empty()).unwrap(), "192.0.2.7:5000")
            .await
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        form: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut r = Request::post(path)
            .header(header::HOST, "faseng.test:8081")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        self.send(
            r.body(Body::from(form.to_owned())).unwrap(),
            "192.0.2.7:5000",
        )
        .await
    }
}

fn assert_security_headers(headers: &HeaderMap) {
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "same-origin");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
}

#[tokio::test]
async fn off_the_dashboard_and_sign_in_answer_404_saying_how_to_turn_it_on() {
    let s = setup(|_| DashboardAccess::Off).await;
    for path in ["/", "/auth/login", "/auth/callback?code=x&state=y"] {
        let (status, headers, body) = s.get(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            body.contains("the dashboard is off: set GITHUB_OAUTH_CLIENT_ID"),
            "{body}"
        );
        assert_security_headers(&headers);
    }
    let (status, _, _) = s.post("/auth/logout", None, Some(PUBLIC), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The rest of faseng is not behind the gate.
    assert_eq!(s.get("/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn without_a_session_a_page_is_the_sign_in_page_and_an_action_is_refused() {
    let s = github("oursky").await;
    let (status, headers, body) = s.get("/?env=edge", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains(">Sign in with GitHub</a>"), "{body}");
    assert!(
        body.contains(r#"href="/auth/login?next=%2F%3Fenv%3Dedge""#),
        "{body}"
    );
    assert!(body.contains("members of oursky"), "{body}");
    assert!(
        !body.contains("Signed in as") && !body.contains("demo"),
        "{body}"
    );
    assert_security_headers(&headers);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");

    let (status, headers, body) = s.post("/actions/unlock", None, Some(PUBLIC), UNLOCK).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("sign in first"), "{body}");
    assert_security_headers(&headers);
    s.assert_no_action().await;
    // The stylesheet holds no data; the sign-in page uses it.
    let (status, _, css) = s.get("/static/dashboard.css", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!css.is_empty());
}

#[tokio::test]
async fn a_member_with_a_session_sees_the_page_as_themselves() {
    let s = github("oursky").await;
    let cookie = s.session_cookie("octocat", "tok3n");
    let (status, headers, body) = s.get("/", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("Signed in as <strong>octocat</strong>"),
        "{body}"
    );
    assert!(body.contains(r#"name="csrf" value="tok3n""#), "{body}");
    assert_security_headers(&headers);
}

#[tokio::test]
async fn a_session_ends_after_eight_hours_on_the_clock_whatever_the_cookie_says() {
    let s = github("oursky").await;
    let cookie = s.session_cookie("octocat", "tok3n");
    s.clock
        .advance(session::SESSION_TTL - chrono::TimeDelta::seconds(1));
    assert_eq!(s.get("/", Some(&cookie)).await.0, StatusCode::OK);
    s.clock.advance(chrono::TimeDelta::seconds(1));
    let (status, _, body) = s.get("/", Some(&cookie)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Sign in with GitHub"));
}

#[tokio::test]
async fn an_action_needs_this_sessions_csrf_token_and_the_sites_own_origin() {
    let s = github("oursky").await;
    let cookie = s.session_cookie("octocat", "tok3n");
    let c = Some(cookie.as_str());
    for (origin, form, says) in [
        (Some(PUBLIC), UNLOCK.to_owned(), "out of date"),
        (Some(PUBLIC), format!("{UNLOCK}&csrf="), "out of date"),
        (Some(PUBLIC), format!("{UNLOCK}&csrf=tok3N"), "out of date"),
        (Some(PUBLIC), format!("{UNLOCK}&csrf=tok3n0"), "out of date"),
        (
            Some("https://evil.example"),
            format!("{UNLOCK}&csrf=tok3n"),
            "did not come from",
        ),
        (
            Some("null"),
            format!("{UNLOCK}&csrf=tok3n"),
            "did not come from",
        ),
        (None, format!("{UNLOCK}&csrf=tok3n"), "did not come from"),
    ] {
        let r = s.post("/actions/unlock", c, origin, &form).await;
        assert_eq!(r.0, StatusCode::FORBIDDEN, "{origin:?} {form}: {}", r.2);
        assert!(r.2.contains(says), "{says:?} not in {}", r.2);
        assert_security_headers(&r.1);
    }
    s.assert_no_action().await;
    let done = |r: &(StatusCode, HeaderMap, String)| {
        r.0 == StatusCode::SEE_OTHER
            && r.1[header::LOCATION]
                .to_str()
                .unwrap()
                .starts_with("/actions/")
    };
    let form = format!("{UNLOCK}&csrf=tok3n");
    assert!(done(
        &s.post("/actions/unlock", c, Some(PUBLIC), &form).await
    ));
    let action = s.state.store.web_action(1).await.unwrap().unwrap();
    assert_eq!(
        (action.user_id.as_str(), action.command.as_str()),
        ("github:octocat", "unlock demo in staging")
    );
    // The Host it was sent to also names the site (a proxy's other name).
    assert!(done(
        &s.post("/actions/unlock", c, Some("http://faseng.test:8081"), &form)
            .await
    ));
    // Sec-Fetch-Site decides when sent.
    let request = |site: &str| {
        Request::post("/actions/unlock")
            .header(header::COOKIE, cookie.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", site)
            .body(Body::from(format!("{UNLOCK}&csrf=tok3n")))
            .unwrap()
    };
    assert!(done(&s.send(request("same-origin"), "192.0.2.7:1").await));
    for site in ["cross-site", "same-site", "none"] {
        let r = s.send(request(site), "192.0.2.7:1").await;
        assert_eq!(r.0, StatusCode::FORBIDDEN, "{site}");
    }
    // Another member's token is not this session's.
    let other = s.session_cookie("hubot", "other");
    let r = s
        .post("/actions/unlock", Some(&other), Some(PUBLIC), &form)
        .await;
    assert_eq!(r.0, StatusCode::FORBIDDEN);
    assert!(s.state.store.web_action(4).await.unwrap().is_none());
}

#[tokio::test]
async fn local_mode_serves_loopback_peers_as_the_local_user_and_nobody_else() {
    let s = setup(|_| DashboardAccess::Local {
        user: "joyz".into(),
    })
    .await;
    let page = |peer: &'static str| {
        let s = &s;
        async move {
            s.send(Request::get("/").body(Body::empty()).unwrap(), peer)
                .await
        }
    };
    for peer in ["127.0.0.1:4000", "[::1]:4000", "[::ffff:127.0.0.1]:4000"] {
        let (status, headers, body) = page(peer).await;
        assert_eq!(status, StatusCode::OK, "{peer}");
        assert!(
            body.contains("Signed in as <strong>joyz</strong>"),
            "{body}"
        );
        assert_security_headers(&headers);
    }
    for peer in ["192.0.2.7:4000", "[2001:db8::1]:4000"] {
        let (status, _, body) = page(peer).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{peer}");
        assert!(body.contains("only on this machine"), "{body}");
    }
    // Its forms still carry the process's token and must come from its pages.
    let Mode::Local { csrf, .. } = &s.state.gate.mode else {
        panic!("not local mode");
    };
    let csrf = csrf.clone();
    assert_eq!(csrf.len(), 64);
    let post = |form: String, origin: &'static str| {
        Request::post("/actions/unlock")
            .header(header::HOST, "127.0.0.1:4000")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin)
            .body(Body::from(form))
            .unwrap()
    };
    let send = |form: String, origin: &'static str| s.send(post(form, origin), "127.0.0.1:1");
    let r = send(format!("{UNLOCK}&csrf=guess"), "http://127.0.0.1:4000").await;
    assert_eq!(r.0, StatusCode::FORBIDDEN);
    let r = send(format!("{UNLOCK}&csrf={csrf}"), "http://evil.example").await;
    assert_eq!(r.0, StatusCode::FORBIDDEN);
    s.assert_no_action().await;
    let r = send(format!("{UNLOCK}&csrf={csrf}"), "http://127.0.0.1:4000").await;
    assert_eq!(r.0, StatusCode::SEE_OTHER, "{}", r.2);
    let action = s.state.store.web_action(1).await.unwrap().unwrap();
    assert_eq!(
        (action.user_id.as_str(), action.user_name.as_str()),
        ("local:joyz", "joyz")
    );
}

/// Follows `/auth/login?next=…` to GitHub's authorize URL; returns the cookie set and the
/// `state` sent.
async fn begin(s: &Setup, next: &str) -> (String, String, Url) {
    let (status, headers, _) = s.get(&format!("/auth/login?next={next}"), None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_security_headers(&headers);
    let location = Url::parse(headers[header::LOCATION].to_str().unwrap()).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut response = Response::new(Body::empty());
    *response.headers_mut() = headers;
    (cookies_of(&response), state, location)
}

#[tokio::test]
async fn login_sends_the_browser_to_github_with_a_state_kept_in_a_signed_cookie() {
    let s = github("oursky").await;
    let (cookie, state, location) = begin(&s, "%2Fapps%2Fdemo").await;
    assert!(cookie.starts_with("faseng_oauth="), "{cookie}");
    assert_eq!(location.path(), "/login/oauth/authorize");
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], "Iv1.test");
    assert_eq!(q["redirect_uri"], "http://faseng.test:8081/auth/callback");
    assert_eq!(q["scope"], "read:org");
    assert_eq!(state.len(), 64);
    // Two sign-ins never share a state.
    assert_ne!(begin(&s, "%2F").await.1, state);
}

#[tokio::test]
async fn a_member_signs_in_lands_on_the_page_asked_for_and_the_token_is_not_kept() {
    let s = github("oursky").await;
    {
        let mut st = s.stub.lock().unwrap();
        st.token = Some((
            200,
            r#"{"access_token":"gho_abc","token_type":"bearer","scope":"read:org"}"#.into(),
        ));
        st.user = Some((200, r#"{"login":"octocat","id":583231}"#.into()));
        st.membership = Some((200, r#"{"state":"active","role":"member"}"#.into()));
    }
    let (cookie, state, _) = begin(&s, "%2Fapps%2Fdemo%3Fenv%3Dedge").await;
    let (status, headers, _) = s
        .get(
            &format!("/auth/callback?code=c0de&state={state}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/apps/demo?env=edge");
    assert_security_headers(&headers);
    let mut response = Response::new(Body::empty());
    *response.headers_mut() = headers.clone();
    let session = cookies_of(&response);
    assert!(session.starts_with("faseng_session="), "{session}");
    assert!(!session.contains("gho_abc"));
    let set: Vec<&str> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        set.iter()
            .any(|c| c.starts_with("faseng_oauth=") && c.contains("Max-Age=0")),
        "the sign-in state is dropped: {set:?}"
    );
    let asked = s.stub.lock().unwrap().asked.clone();
    assert_eq!(
        asked,
        [
            ("/login/oauth/access_token".into(), None),
            ("/api/v3/user".into(), Some("Bearer gho_abc".into())),
            (
                "/api/v3/user/memberships/orgs/oursky".into(),
                Some("Bearer gho_abc".into())
            ),
        ]
    );
    let (status, _, body) = s.get("/", Some(&session)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Signed in as <strong>octocat</strong>"));
    // The state was for one sign-in only.
    let (status, _, _) = s
        .get(
            &format!("/auth/callback?code=c0de&state={state}"),
            Some(&session),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn team_membership_is_asked_of_the_team() {
    let s = github("oursky/deployers").await;
    {
        let mut st = s.stub.lock().unwrap();
        st.token = Some((200, r#"{"access_token":"gho_abc"}"#.into()));
        st.user = Some((200, r#"{"login":"octocat","id":1}"#.into()));
        st.membership = Some((200, r#"{"state":"active","role":"maintainer"}"#.into()));
    }
    let (cookie, state, _) = begin(&s, "%2F").await;
    let (status, _, _) = s
        .get(
            &format!("/auth/callback?code=c&state={state}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let asked = s.stub.lock().unwrap().asked.clone();
    assert_eq!(
        asked[2].0,
        "/api/v3/orgs/oursky/teams/deployers/memberships/octocat"
    );
}

/// Signs in with the stub answering as set; the status and page of the callback, and the
/// cookies it set.
async fn sign_in_with(s: &Setup, query: &str) -> (StatusCode, String, String) {
    let (cookie, state, _) = begin(s, "%2Fdesk").await;
    let (status, headers, body) = s
        .get(
            &format!("/auth/callback?state={state}&{query}"),
            Some(&cookie),
        )
        .await;
    assert_security_headers(&headers);
    let mut response = Response::new(Body::empty());
    *response.headers_mut() = headers;
    (status, body, cookies_of(&response))
}

#[tokio::test]
async fn a_non_member_a_pending_invitation_and_githubs_failures_each_get_a_clear_page() {
    let s = github("oursky").await;
    let set = |token: (u16, &str), user: (u16, &str), membership: (u16, &str)| {
        let mut st = s.stub.lock().unwrap();
        st.token = Some((token.0, token.1.into()));
        st.user = Some((user.0, user.1.into()));
        st.membership = Some((membership.0, membership.1.into()));
    };
    let token = (200, r#"{"access_token":"gho_abc"}"#);
    let user = (200, r#"{"login":"mallory","id":666}"#);
    let cases: Vec<(_, _, _, StatusCode, &str)> = vec![
        (
            token,
            user,
            (404, r#"{"message":"Not Found"}"#),
            StatusCode::FORBIDDEN,
            "mallory is not an active member of oursky",
        ),
        (
            token,
            user,
            (200, r#"{"state":"pending"}"#),
            StatusCode::FORBIDDEN,
            "mallory is not an active member of oursky",
        ),
        (
            token,
            user,
            (403, r#"{"message":"restricted"}"#),
            StatusCode::FORBIDDEN,
            "may restrict OAuth apps",
        ),
        (
            token,
            user,
            (502, "bad gateway"),
            StatusCode::BAD_GATEWAY,
            "GitHub answered HTTP 502",
        ),
        (
            token,
            (401, r#"{"message":"Bad credentials"}"#),
            user,
            StatusCode::FORBIDDEN,
            "GitHub would not say who you are (HTTP 401)",
        ),
        (
            token,
            (200, "<html>"),
            user,
            StatusCode::BAD_GATEWAY,
            "could not be read",
        ),
        (
            (
                200,
                r#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#,
            ),
            user,
            user,
            StatusCode::FORBIDDEN,
            "GitHub did not accept this sign-in (bad_verification_code: The code passed is incorrect or expired.)",
        ),
        (
            (500, "oops"),
            user,
            user,
            StatusCode::BAD_GATEWAY,
            "GitHub answered HTTP 500",
        ),
    ];
    for (t, u, m, status, says) in cases {
        set(t, u, m);
        let (got, body, cookies) = sign_in_with(&s, "code=c0de").await;
        assert_eq!(got, status, "{says}: {body}");
        assert!(body.contains(says), "{says:?} not in {body}");
        assert!(
            body.contains(r#"href="/auth/login?next=%2Fdesk""#),
            "{body}"
        );
        assert!(!cookies.contains("faseng_session"), "{cookies}");
        assert!(!body.contains("gho_abc") && !body.contains(CLIENT_SECRET));
    }
    // The user declined on GitHub.
    let (got, body, _) = sign_in_with(
        &s,
        "error=access_denied&error_description=The+user+has+denied+your+application+access.",
    )
    .await;
    assert_eq!(got, StatusCode::FORBIDDEN);
    assert!(
        body.contains("GitHub did not sign you in (access_denied: The user has denied"),
        "{body}"
    );
    // GitHub could not be reached at all.
    let unreachable = setup(|_| github_access("http://127.0.0.1:9", "oursky")).await;
    let (got, body, _) = sign_in_with(&unreachable, "code=c").await;
    assert_eq!(got, StatusCode::BAD_GATEWAY);
    assert!(body.contains("GitHub could not be reached"), "{body}");
}

#[tokio::test]
async fn a_callback_without_this_browsers_state_signs_nobody_in() {
    let s = github("oursky").await;
    {
        let mut st = s.stub.lock().unwrap();
        st.token = Some((200, r#"{"access_token":"gho_abc"}"#.into()));
        st.user = Some((200, r#"{"login":"octocat","id":1}"#.into()));
        st.membership = Some((200, r#"{"state":"active"}"#.into()));
    }
    let (cookie, state, _) = begin(&s, "%2F").await;
    for (query, cookie) in [
        (format!("code=c&state={state}"), None),
        (format!("code=c&state={state}x"), Some(cookie.as_str())),
        ("code=c".to_owned(), Some(cookie.as_str())),
    ] {
        let (status, headers, body) = s.get(&format!("/auth/callback?{query}"), cookie).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(body.contains("was not started here"), "{body}");
        assert!(
            headers
                .get_all(header::SET_COOKIE)
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("faseng_session="))
        );
    }
    assert!(s.stub.lock().unwrap().asked.is_empty(), "GitHub was asked");
    // Ten minutes later the state is too old.
    s.clock.advance(session::STATE_TTL);
    let (status, _, _) = s
        .get(
            &format!("/auth/callback?code=c&state={state}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logout_needs_the_csrf_token_then_ends_the_session() {
    let s = github("oursky").await;
    let cookie = s.session_cookie("octocat", "tok3n");
    let (status, _, _) = s
        .post(
            "/auth/logout",
            Some(&cookie),
            Some("https://evil.example"),
            "csrf=tok3n",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = s
        .post("/auth/logout", Some(&cookie), Some(PUBLIC), "csrf=nope")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = s
        .post("/auth/logout", Some(&cookie), Some(PUBLIC), "csrf=tok3n")
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_security_headers(&headers);
    assert!(
        headers.get_all(header::SET_COOKIE).iter().any(|c| c
            .to_str()
            .unwrap()
            .starts_with("faseng_session=")
            && c.to_str().unwrap().contains("Max-Age=0"))
    );
}

#[test]
fn next_is_only_ever_a_local_path() {
    for (next, want) in [
        ("/", Some("/")),
        ("/apps/demo?env=edge", Some("/apps/demo?env=edge")),
        ("/runs/o/r/1#log", Some("/runs/o/r/1")),
        ("/a/../b", Some("/b")),
        ("/auth/logout", Some("/")),
        ("//evil.example/x", None),
        ("/\\evil.example", None),
        ("https://evil.example/", None),
        ("evil", None),
        ("", None),
        ("/\t/evil.example", None),
        ("/%2F%2Fevil.example", Some("/%2F%2Fevil.example")),
    ] {
        assert_eq!(local_path(next).as_deref(), want, "{next:?}");
    }
}
