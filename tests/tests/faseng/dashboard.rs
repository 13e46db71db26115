//! The dashboard in a real browser: a real `faseng serve` process (Redis or SQLite) behind
//! GitHub sign-in through the fake GitHub's OAuth pages, driven in headless chromium
//! ([`e2e::browser`]); screenshots of every page go to `target/screenshots/<test>/`.
//! Signing in lands on the page asked for; an unsigned visitor gets the sign-in page and no
//! data; a non-member is refused; an action without this session's CSRF token or from another
//! site is refused and changes nothing; every page sends the CSP; a signed log link still
//! opens without signing in; local mode serves the dashboard without sign-in to this machine
//! only; without an OAuth app the dashboard is off.

use std::path::Path;
use std::time::Duration;

use e2e::backend::Backend;
use e2e::browser::{Browser, PHONE};
use e2e::procs::ProcessEnv;
use e2e::world::{REPO, SECRET, World};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const CLIENT_ID: &str = "Iv1.faseng0dashboard";
const CLIENT_SECRET: &str = "dashboard-oauth-client-secret-0123456789";
const ORG: &str = "oursky";
const MEMBER: (&str, u64) = ("octocat", 583231);
const STRANGER: (&str, u64) = ("mallory", 666);
/// The CSP every dashboard page sends.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// What the deploy script writes, so a page that shows the log can be recognised.
const LOG_TEXT: &str = "deployed by the dashboard test script";

/// A world with a real faseng serving the dashboard behind GitHub sign-in for `members`.
struct Dash {
    world: World,
    url: String,
    http: reqwest::Client,
}

e2e::wraps_world!(Dash);

impl Dash {
    /// `None` (with the reason printed) when Redis is wanted but absent.
    async fn start(backend: Backend, members: &str, script: &str) -> Option<Self> {
        let world = World::build(backend)
            .shell_app()
            .script(script)
            .start()
            .await?;
        world.gh.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
        world.gh.add_org_member(ORG, MEMBER.0, "active");
        let port = e2e::net::free_port("127.0.0.1");
        let mut env = world.faseng_env(&world.apps_json());
        env.bind(port)
            .set("GITHUB_OAUTH_CLIENT_ID", CLIENT_ID)
            .set("GITHUB_OAUTH_CLIENT_SECRET", CLIENT_SECRET)
            .set("GITHUB_WEB_URL", world.gh.web_url())
            .set("FASENG_GITHUB_ORG", members);
        let url = format!("http://127.0.0.1:{port}");
        let mut dash = Self {
            world,
            url,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        dash.serve(&env).await;
        Some(dash)
    }

    async fn serve(&mut self, env: &ProcessEnv) {
        let mut cmd = env.command(e2e::bins::binary("faseng"));
        cmd.arg("serve").current_dir(self.dir.path());
        let url = self.url.clone();
        self.world.procs.spawn_healthy(cmd, &url).await;
        self.gh
            .set_webhook(&format!("{url}/webhooks/github"), SECRET);
    }

    /// Deploys `main` to `env` through the fake GitHub's webhook and waits for its end.
    async fn deploy(&self, env: &str) -> u64 {
        let id = self.deploy_started(env).await;
        let status = self.wait_final_or(id, WAIT, || self.procs.logs()).await;
        assert_eq!(
            status["state"],
            "success",
            "{status}\n{}",
            self.procs.logs()
        );
        id
    }

    /// Creates a deployment of `main` to `env` (faseng takes it from the webhook); its id.
    async fn deploy_started(&self, env: &str) -> u64 {
        let (body, _) = self.deployment_body(env, "deploy", &Value::Null);
        let d = self.gh.create_deployment(REPO, body).await;
        d["id"].as_u64().unwrap()
    }

    /// The store faseng keeps (to see what an action changed).
    async fn store(&self) -> std::sync::Arc<dyn faseng::store::Store> {
        faseng::queue::open(&self.queue.queue_url(), Default::default())
            .await
            .unwrap()
            .1
    }

    /// A GET of `path` with `cookie` (if any): status, headers and body.
    async fn get(
        &self,
        path: &str,
        cookie: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        let response = r.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    /// A form POST of `form` to `path` with `cookie` and `origin` (if any).
    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        form: &str,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        let response = r.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    /// Opens `path`, meets the sign-in page, signs in on the fake GitHub's authorize page
    /// and lands back on `path`.
    async fn sign_in(&self, browser: &Browser, path: &str, shots: bool) {
        browser.goto(&format!("{}{path}", self.url)).await;
        browser.find("#sign-in").await;
        if shots {
            browser.screenshot("sign-in").await;
        }
        browser.click("#sign-in").await;
        browser.find("#js-oauth-authorize-btn").await;
        if shots {
            browser.screenshot("github-authorize").await;
        }
        browser.click("#js-oauth-authorize-btn").await;
        browser.wait_for_path(path).await;
    }
}

/// The session cookie the browser holds, as a `Cookie` header.
async fn session_cookie(browser: &Browser) -> String {
    let c = browser
        .client()
        .get_named_cookie("faseng_session")
        .await
        .expect("a session cookie");
    format!("faseng_session={}", c.value())
}

/// `html` without the sign-in link's `href` (which carries the path asked for).
fn without_sign_in_link(html: &str) -> String {
    let start = html
        .find("href=\"/auth/login?next=")
        .expect("a sign-in link");
    let end = start + html[start + 6..].find('"').expect("a closing quote") + 7;
    format!("{}{}", &html[..start], &html[end..])
}

fn assert_csp(headers: &reqwest::header::HeaderMap, what: &str) {
    assert_eq!(headers["content-security-policy"], CSP, "{what}");
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["referrer-policy"], "same-origin", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
}

/// The dashboard's pages of one deployment `id` of trelhub.
fn pages(id: u64) -> Vec<(&'static str, String)> {
    vec![
        ("overview", "/".to_owned()),
        ("app", "/apps/trelhub".to_owned()),
        (
            "app-filtered",
            "/apps/trelhub?env=edge&state=success".to_owned(),
        ),
        ("stats", "/apps/trelhub/stats".to_owned()),
        ("run", format!("/runs/{REPO}/{id}")),
        ("desk", "/desk".to_owned()),
    ]
}

fn script() -> String {
    format!("echo {LOG_TEXT} $DEPLOY_ENV")
}

/// Sign in from a deep link: the browser lands on the page it asked for, signed in as the
/// member; every page then shows, with the CSP; signing out ends it.
async fn a_member_signs_in_on_githubs_pages_and_lands_on_the_page_asked_for(backend: Backend) {
    let Some(dash) = Dash::start(backend, ORG, &script()).await else {
        return;
    };
    let id = dash.deploy("edge").await;
    let test = format!("sign_in_{backend:?}").to_lowercase();
    let Some(browser) = Browser::start(&test).await else {
        return;
    };
    dash.gh.sign_in_as(MEMBER.0, MEMBER.1);
    let asked = "/apps/trelhub?env=edge";
    dash.sign_in(&browser, asked, true).await;
    browser
        .wait_for_text(".viewer", "Signed in as octocat")
        .await;
    let html = browser.source().await;
    assert!(html.contains(&format!("#{id}")), "the history lists #{id}");
    let exchanges = dash.gh.oauth_exchanges();
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert!(exchanges[0].outcome.is_ok(), "{exchanges:?}");

    let cookie = session_cookie(&browser).await;
    for (name, path) in pages(id) {
        browser.goto(&format!("{}{path}", dash.url)).await;
        browser
            .wait_for_text(".viewer", "Signed in as octocat")
            .await;
        browser.screenshot(name).await;
        let (status, headers, _) = dash.get(&path, Some(&cookie)).await;
        assert_eq!(status, 200, "{path}");
        assert_csp(&headers, &path);
    }
    browser
        .goto(&format!("{}/runs/{REPO}/{id}", dash.url))
        .await;
    browser.wait_for_text("#log", LOG_TEXT).await;

    browser.click(".viewer form button").await;
    browser.find("#sign-in").await;
    let text = browser.text().await;
    assert!(!text.contains("octocat"), "{text}");
    assert!(
        browser
            .client()
            .get_named_cookie("faseng_session")
            .await
            .is_err(),
        "signing out drops the session cookie"
    );
    browser.close().await;
}

/// Before signing in, every page is the sign-in page (401), with nothing of the app, its
/// deployments or logs in it; the live stream too; an action is refused (403) and recorded
/// nowhere.
async fn an_unsigned_visitor_gets_the_sign_in_page_and_no_data(backend: Backend) {
    let Some(dash) = Dash::start(backend, ORG, &script()).await else {
        return;
    };
    let id = dash.deploy("edge").await;
    let short_sha = &dash.sha[..7];
    let mut paths: Vec<String> = pages(id).into_iter().map(|(_, p)| p).collect();
    paths.push(format!("/runs/{REPO}/{id}/events"));
    paths.push("/actions/1".into());
    for path in &paths {
        let (status, headers, body) = dash.get(path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("Sign in with GitHub"), "{path}: {body}");
        // The sign-in link names the path asked for (the visitor's own); nothing else does.
        let body = without_sign_in_link(&body);
        for secret in ["trelhub", short_sha, LOG_TEXT, "joyz", "edge"] {
            assert!(!body.contains(secret), "{path} shows {secret:?}: {body}");
        }
        assert_csp(&headers, path);
    }
    for form in [
        "app=trelhub&env=edge".to_owned(),
        format!("app=trelhub&env=edge&deployment={id}&csrf=x"),
    ] {
        for action in ["/actions/rollback", "/actions/unlock"] {
            let (status, _, body) = dash.post(action, None, Some(&dash.url), &form).await;
            assert_eq!(status, 403, "{action}: {body}");
            assert!(body.contains("sign in first"), "{body}");
        }
    }
    assert!(dash.store().await.web_action(1).await.unwrap().is_none());

    let test = format!("unsigned_{backend:?}").to_lowercase();
    let Some(browser) = Browser::start(&test).await else {
        return;
    };
    for (name, path) in pages(id) {
        browser.goto(&format!("{}{path}", dash.url)).await;
        browser.find("#sign-in").await;
        let html = without_sign_in_link(&browser.source().await);
        for secret in ["trelhub", short_sha, LOG_TEXT] {
            assert!(!html.contains(secret), "{path} shows {secret:?}");
        }
        browser.screenshot(&format!("unsigned-{name}")).await;
    }
    browser.close().await;
}

e2e::both_backends!(
    a_member_signs_in_on_githubs_pages_and_lands_on_the_page_asked_for,
    an_unsigned_visitor_gets_the_sign_in_page_and_no_data,
);

/// Someone GitHub signs in who is not an active member (of the org, or of the team when
/// one is set) gets a page that says so, and no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_member_and_a_member_outside_the_team_are_refused() {
    let Some(dash) = Dash::start(Backend::Sqlite, "oursky/deployers", &script()).await else {
        return;
    };
    let Some(browser) = Browser::start("non_member").await else {
        return;
    };
    dash.gh.sign_in_as(STRANGER.0, STRANGER.1);
    dash.gh.add_org_member(ORG, STRANGER.0, "active");
    dash.gh
        .add_team_member(ORG, "deployers", STRANGER.0, "pending");
    browser.goto(&format!("{}/desk", dash.url)).await;
    browser.click("#sign-in").await;
    browser.click("#js-oauth-authorize-btn").await;
    let refusal = browser
        .wait_for_text("#sign-in-failed", "is not an active member")
        .await;
    assert!(
        refusal.contains("mallory is not an active member of oursky/deployers"),
        "{refusal}"
    );
    browser.screenshot("not-a-member").await;
    assert!(
        browser
            .client()
            .get_named_cookie("faseng_session")
            .await
            .is_err(),
        "a non-member got a session"
    );
    browser.goto(&format!("{}/desk", dash.url)).await;
    browser.find("#sign-in").await;

    // Once in the team, the same person gets in.
    dash.gh
        .add_team_member(ORG, "deployers", STRANGER.0, "active");
    dash.sign_in(&browser, "/desk", false).await;
    browser
        .wait_for_text(".viewer", "Signed in as mallory")
        .await;
    // Declining on GitHub's page signs nobody in.
    browser.client().delete_all_cookies().await.unwrap();
    browser.goto(&format!("{}/", dash.url)).await;
    browser.click("#sign-in").await;
    browser.click("#js-oauth-cancel-btn").await;
    browser
        .wait_for_text(
            "#sign-in-failed",
            "GitHub did not sign you in (access_denied",
        )
        .await;
    browser.close().await;
}

/// With a session, an action is done only with this session's token from the dashboard's own
/// pages: without the token, with another, or posted by another site's page in the same
/// browser, it is refused and nothing is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_without_this_sessions_csrf_token_or_from_another_site_change_nothing() {
    let Some(dash) = Dash::start(Backend::Sqlite, ORG, &script()).await else {
        return;
    };
    // The page of an earlier good deployment (another commit) has the rollback form.
    let id = dash.deploy("edge").await;
    dash.repo.write("CHANGES", "a second commit\n");
    let second = dash.repo.commit("a second commit");
    dash.gh.set_branch(REPO, "main", &second);
    dash.deploy("edge").await;
    let Some(browser) = Browser::start("csrf").await else {
        return;
    };
    dash.gh.sign_in_as(MEMBER.0, MEMBER.1);
    dash.sign_in(&browser, "/", false).await;
    let cookie = session_cookie(&browser).await;
    let rollback = format!("app=trelhub&env=edge&deployment={id}");
    let origin = Some(dash.url.as_str());
    for (form, origin) in [
        (rollback.clone(), origin),
        (format!("{rollback}&csrf="), origin),
        (format!("{rollback}&csrf=0123456789abcdef"), origin),
        (format!("{rollback}&csrf=x"), Some("http://127.0.0.1:1")),
    ] {
        let (status, headers, body) = dash
            .post("/actions/rollback", Some(&cookie), origin, &form)
            .await;
        assert_eq!(status, 403, "{form}: {body}");
        assert_csp(&headers, "a refusal");
    }
    let store = dash.store().await;
    assert!(store.web_action(1).await.unwrap().is_none());

    // Another site's page (another port of this host: the same site, so the browser sends
    // the cookie) posting the form with a guessed token.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_url = format!("http://{}", evil.local_addr().unwrap());
    let target = format!("{}/actions/rollback", dash.url);
    let page = format!(
        "<!doctype html><html><body><form method=\"post\" action=\"{target}\">\
         <input type=\"hidden\" name=\"app\" value=\"trelhub\">\
         <input type=\"hidden\" name=\"env\" value=\"edge\">\
         <input type=\"hidden\" name=\"csrf\" value=\"guess\">\
         <button id=\"go\" type=\"submit\">Win a prize</button></form></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    tokio::spawn(async move { axum::serve(evil, app).await.ok() });
    browser.goto(&evil_url).await;
    browser.click("#go").await;
    browser
        .wait_for_text("body", "did not come from the dashboard's own pages")
        .await;
    browser.screenshot("cross-site-refused").await;
    assert!(store.web_action(1).await.unwrap().is_none());

    // The page's own form goes through (so the refusals above were not for another reason).
    browser
        .goto(&format!("{}/runs/{REPO}/{id}", dash.url))
        .await;
    browser.click("#rollback-form button[type=submit]").await;
    browser
        .wait_until("the action's page", |c| async move {
            let url = c.current_url().await.ok()?;
            url.path().starts_with("/actions/").then_some(())
        })
        .await;
    let action = store.web_action(1).await.unwrap().expect("submitted");
    assert_eq!(action.user_id, "github:octocat");
    assert!(
        action.command.starts_with("rollback trelhub in edge"),
        "{}",
        action.command
    );
    browser.close().await;
}

/// A deployment's signed log link (its `log_url`) opens its log without signing in, in the
/// browser and as text; the dashboard's page of it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_log_link_still_opens_one_deployments_log_without_signing_in() {
    let Some(dash) = Dash::start(Backend::Sqlite, ORG, &script()).await else {
        return;
    };
    let id = dash.deploy("edge").await;
    let log_url = dash
        .gh
        .statuses(id)
        .iter()
        .find_map(|s| {
            s["log_url"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
        })
        .expect("a status with a log_url");
    assert!(
        log_url.starts_with(&format!("{}/deployments/", dash.url)),
        "{log_url}"
    );
    let text = e2e::net::get_text(&dash.http, &format!("{log_url}/log")).await;
    assert!(text.contains(LOG_TEXT), "{text}");
    let Some(browser) = Browser::start("log_link").await else {
        return;
    };
    browser.goto(&log_url).await;
    browser.wait_for_text("#log", LOG_TEXT).await;
    browser.screenshot("log-link").await;
    browser
        .goto(&format!("{}/runs/{REPO}/{id}", dash.url))
        .await;
    browser.find("#sign-in").await;
    browser.close().await;
}

/// Without an OAuth app the dashboard and sign-in answer 404 saying how to turn it on, and
/// the start banner says so; an OAuth app without FASENG_GITHUB_ORG stops faseng at start
/// with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_oauth_app_the_dashboard_is_off() {
    let Some(world) = World::build(Backend::Sqlite).shell_app().start().await else {
        return;
    };
    let port = e2e::net::free_port("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    let mut env = world.faseng_env(&world.apps_json());
    env.bind(port);
    let mut procs = e2e::world::Procs::new(world.dir.path(), "off");
    let mut cmd = env.command(e2e::bins::binary("faseng"));
    cmd.arg("serve").current_dir(world.dir.path());
    let n = procs.spawn_healthy(cmd, &url).await;
    for path in ["/", "/desk", "/auth/login"] {
        let r = world.http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("the dashboard is off: set GITHUB_OAUTH_CLIENT_ID, GITHUB_OAUTH_CLIENT_SECRET and FASENG_GITHUB_ORG"),
            "{body}"
        );
    }
    assert!(
        procs.log(n).contains("the dashboard is off"),
        "{}",
        procs.log(n)
    );
    procs.terminate(n).await;

    env.set("GITHUB_OAUTH_CLIENT_ID", CLIENT_ID)
        .set("GITHUB_OAUTH_CLIENT_SECRET", CLIENT_SECRET);
    let out = env
        .std_command(e2e::bins::binary("faseng"))
        .arg("serve")
        .current_dir(world.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("FASENG_GITHUB_ORG is required with GITHUB_OAUTH_CLIENT_ID"),
        "{said}"
    );
    assert!(!said.contains(CLIENT_SECRET), "{said}");
}

/// The first non-loopback address of this machine, if it has one.
fn outside_address() -> Option<std::net::IpAddr> {
    // No packet is sent: connecting a UDP socket only picks the route's source address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Local mode (`chima shell`'s in-process faseng): the dashboard opens without signing in, as
/// the local user, to this machine only; a connection from another address of it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_mode_serves_the_dashboard_without_sign_in_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let apps = deploy_core::Apps::from_json(
        r#"{"trelhub": {"provider": "shell", "repository": "oursky/trelhub", "environments": ["edge"]}}"#,
    )
    .unwrap();
    let local = faseng::local::LocalFaseng::start(
        faseng::local::LocalSettings {
            queue_url: format!("sqlite://{}", dir.path().join("faseng.db").display()),
            workdir: dir.path().join("work"),
            deploy_config_dir: dir.path().join("deploy-config"),
            deployment_timeout: Duration::from_secs(60),
            apps,
        },
        std::sync::Arc::new(faseng::status::NullStatusSink),
    )
    .await
    .unwrap();
    let url = local.dashboard_url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let user = std::env::var("USER").unwrap_or_default();
    if let Some(browser) = Browser::start("local_mode").await {
        browser.goto(&url).await;
        browser.wait_for_text(".viewer", "Signed in as").await;
        let html = browser.source().await;
        assert!(html.contains("trelhub"), "the overview lists the app");
        assert!(!html.contains("Sign in with GitHub"));
        if !user.is_empty() {
            browser.wait_for_text(".viewer", &user).await;
        }
        browser.screenshot("overview").await;
        browser.resize(PHONE).await;
        browser.screenshot("overview-phone").await;
        browser.close().await;
    }
    let Some(outside) = outside_address() else {
        eprintln!("skipped the refusal of another address: this machine has only loopback");
        local.stop().await.unwrap();
        return;
    };
    let from_outside = reqwest::Client::builder()
        .local_address(outside)
        .build()
        .unwrap();
    let r = from_outside.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("only on this machine"), "{body}");
    assert!(!body.contains("trelhub"), "{body}");
    local.stop().await.unwrap();
}

/// Deploys and the pages that show them, live: a deploy's log lines and stages appear in the
/// open page without a reload; the statistics draw their charts; each page is screenshotted
/// on a desktop and a phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pages_follow_a_deploy_live_and_draw_the_statistics() {
    let dir_marker = "$SCRATCH/go";
    let script = format!(
        "echo {LOG_TEXT} $DEPLOY_ENV\nif [ \"$DEPLOY_ENV\" = staging ]; then\n  echo waiting for the test\n  while [ ! -f {dir_marker} ]; do sleep 0.05; done\n  echo released by the test\nfi"
    );
    let Some(dash) = Dash::start(Backend::Sqlite, ORG, &script).await else {
        return;
    };
    let first = dash.deploy("edge").await;
    let Some(browser) = Browser::start("live").await else {
        return;
    };
    dash.gh.sign_in_as(MEMBER.0, MEMBER.1);
    dash.sign_in(&browser, "/", false).await;

    let id = dash.deploy_started("staging").await;
    dash.gh.wait_for_status(id, "in_progress", WAIT).await;
    browser
        .goto(&format!("{}/runs/{REPO}/{id}", dash.url))
        .await;
    browser.wait_for_text("#log", "waiting for the test").await;
    let log = browser.find("#log").await;
    browser
        .find("li.stage[data-stage=deploy][data-state=running]")
        .await;
    browser.screenshot("run-live").await;
    std::fs::write(Path::new(&dash.scratch("go")), "").unwrap();
    // The same element (a reload would have made it stale) gets the new line and the end.
    browser
        .wait_until("the log to show the released line", |_| {
            let log = log.clone();
            async move {
                let text = log.text().await.ok()?;
                text.contains("released by the test").then_some(())
            }
        })
        .await;
    browser
        .find("li.stage[data-stage=deploy][data-state=done]")
        .await;
    browser.find("#run-state[data-state=success]").await;
    assert!(log.text().await.unwrap().contains("waiting for the test"));
    browser.screenshot("run-done").await;

    browser
        .goto(&format!("{}/apps/trelhub/stats", dash.url))
        .await;
    let bars = browser
        .wait_until("a chart with data", |c| async move {
            let marks = c
                .find_all(fantoccini::Locator::Css(
                    "figure.chart svg rect, figure.chart svg circle",
                ))
                .await
                .ok()?;
            (!marks.is_empty()).then_some(marks.len())
        })
        .await;
    assert!(bars >= 2, "{bars} marks");
    let figures = browser.text().await;
    assert!(
        figures.contains("edge") && figures.contains("staging"),
        "{figures}"
    );
    browser.screenshot("stats").await;
    for (name, path) in pages(first) {
        browser.resize(PHONE).await;
        browser.goto(&format!("{}{path}", dash.url)).await;
        browser.find("main").await;
        browser.screenshot(&format!("{name}-phone")).await;
    }
    browser.close().await;
}

/// Rolling back from a deployment's page: the form submits a web action, `chima serve` on the
/// same store carries it out as the signed-in member, and the action's page leads to the new
/// deployment, which faseng runs as a rollback of the newer commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_from_the_page_deploys_the_earlier_version_again() {
    let Some(dash) = Dash::start(Backend::Sqlite, ORG, &script()).await else {
        return;
    };
    let first = dash.deploy("edge").await;
    dash.repo.write("CHANGES", "a second commit\n");
    let second = dash.repo.commit("a second commit");
    dash.gh.set_branch(REPO, "main", &second);
    dash.deploy("edge").await;
    let (_chima, _) = dash
        .chima_serve(&dash.apps_json(), "8f742231b10e8888abcd99yyyzzz85a5")
        .await;
    let Some(browser) = Browser::start("rollback").await else {
        return;
    };
    dash.gh.sign_in_as(MEMBER.0, MEMBER.1);
    dash.sign_in(&browser, &format!("/runs/{REPO}/{first}"), false)
        .await;
    browser.screenshot("run-with-rollback-form").await;
    browser.click("#rollback-form button[type=submit]").await;
    let made = dash.gh.wait_for_deployments(REPO, 3, WAIT).await;
    let id = made[2]["id"].as_u64().unwrap();
    assert_eq!(made[2]["sha"], dash.sha.as_str(), "{}", made[2]);
    assert_eq!(
        made[2]["payload"]["rollback"],
        serde_json::json!({"from": second, "to": dash.sha}),
        "{}",
        made[2]
    );
    let status = dash.wait_final_or(id, WAIT, || dash.procs.logs()).await;
    assert_eq!(status["state"], "success", "{status}");
    browser.find("#action-state[data-state=done]").await;
    browser.screenshot("action-done").await;
    browser.click("#new-run").await;
    browser.wait_for_path(&format!("/runs/{REPO}/{id}")).await;
    browser.find("#rollback").await;
    browser.find("#run-state[data-state=success]").await;
    browser.screenshot("rollback-run").await;
    let action = dash.store().await.web_action(1).await.unwrap().unwrap();
    assert_eq!(action.user_id, "github:octocat");
    assert_eq!(
        action.run_key.as_deref(),
        Some(format!("{REPO}/{id}").as_str())
    );
    browser.close().await;
}
