//! The overview, an app's history, the desk and the static files.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Duration;
use deploy_core::Clock as _;

use super::{Backend, Fixture, body, now, on_both_backends, run};
use crate::store::RunState;

on_both_backends!(
    the_overview_shows_what_is_deployed_where_with_locks_freezes_and_the_line,
    hostile_names_and_refs_are_escaped,
    the_history_filters_and_pages_with_the_store_cursor,
    the_desk_offers_unlock_to_the_holder_and_takeover_to_others,
);

async fn the_overview_shows_what_is_deployed_where_with_locks_freezes_and_the_line(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    f.add_run(&run(1, "staging", RunState::Success, 'a', 90), &[])
        .await;
    f.add_run(&run(2, "staging", RunState::Failure, 'b', 60), &[])
        .await;
    let mut lock = run(3, "staging", RunState::Success, 'c', 50);
    lock.task = "deploy:lock".into();
    f.add_run(&lock, &[]).await;
    f.add_run(&run(4, "staging", RunState::InProgress, 'd', 1), &[])
        .await;
    f.add_run(&run(5, "staging", RunState::Queued, 'e', 0), &[])
        .await;
    let store = &f.state.store;
    store.line_join("demo/staging", "o/r/4").await.unwrap();
    store.line_join("demo/staging", "o/r/5").await.unwrap();
    f.join_line("demo/staging", "bob", "feature").await;
    f.lock("demo/staging", "U42", "testing the migration").await;

    let (code, page) = f.get("/").await;
    assert_eq!(code, StatusCode::OK, "{page}");
    let staging = page
        .split(r#"<tr data-env="staging">"#)
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    assert!(
        staging.contains(r#"<a href="/runs/o/r/1"><code class="version" title="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">main@aaaaaaa</code></a>"#),
        "the newest successful deploy (not the failure, not the lock): {staging}"
    );
    assert!(staging.contains("by alice"), "{staging}");
    assert!(
        staging.contains(r#"datetime="2026-03-10T10:31:05Z""#) && staging.contains("(1 h ago)"),
        "when, absolute and relative: {staging}"
    );
    assert!(
        staging.contains(r##"<a href="/runs/o/r/5">#5</a>"##)
            && staging.contains(r#"data-state="queued""#),
        "the newest run's state: {staging}"
    );
    assert!(
        staging.contains("locked</span> by <strong>U42</strong>: testing the migration"),
        "{staging}"
    );
    assert!(
        staging.contains(r#"data-waiting="2""#),
        "one desk request and one waiting run (the running one is not waiting): {staging}"
    );
    assert!(
        staging.contains(r#"data-state="success""#) && staging.contains(r##"/runs/o/r/3">#3"##),
        "the last result is the newest finished run: {staging}"
    );
    let production = page
        .split(r#"<tr data-env="production">"#)
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    assert!(production.contains("nothing yet"), "{production}");
    assert!(
        production.contains("frozen</span> &lt;i&gt;release week&lt;/i&gt;"),
        "the app.json window in force, escaped: {production}"
    );
    assert!(page.contains(r#"data-app="other""#), "every app: {page}");
    assert!(
        page.contains(r#"href="/static/dashboard.css?v="#)
            && page.contains(r#"<script src="/static/dashboard.js?v="#)
            && page.contains(r##"<a class="skip" href="#main">"##),
        "{page}"
    );
    assert!(
        !page.contains("style=") && !page.contains("<script>") && !has_event_attribute(&page),
        "nothing inline: {page}"
    );
}

async fn hostile_names_and_refs_are_escaped(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    let mut r = run(7, "staging", RunState::Success, 'a', 5);
    r.git_ref = "<script>alert(1)</script>".into();
    r.creator = r#""><img src=x onerror=alert(2)>"#.into();
    f.add_run(&r, &[]).await;
    f.lock("demo/staging", "mallory", "<b>mine</b>").await;
    for path in ["/", "/apps/demo", "/desk"] {
        let (code, page) = f.get(path).await;
        assert_eq!(code, StatusCode::OK, "{path}: {page}");
        assert!(!page.contains("<script>alert"), "{path}: {page}");
        assert!(!page.contains("<img"), "{path}: {page}");
        assert!(!page.contains("<b>mine"), "{path}: {page}");
    }
    let (_, page) = f.get("/apps/demo").await;
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;@aaaaaaa"),
        "{page}"
    );
    assert!(
        page.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    let (code, page) = f.get("/apps/%3Cscript%3E").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        page.contains("There is no app named &lt;script&gt;"),
        "{page}"
    );
}

async fn the_history_filters_and_pages_with_the_store_cursor(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    for id in 1..=120u64 {
        let env = if id % 2 == 0 { "staging" } else { "production" };
        let state = if id % 10 == 0 {
            RunState::Failure
        } else {
            RunState::Success
        };
        let mut r = run(id, env, state, 'a', 1000 - id as i64);
        if id % 3 == 0 {
            r.creator = "Bob".into();
        }
        f.add_run(&r, &[]).await;
    }
    let rows = |page: &str| -> Vec<u64> {
        page.split(r#"<tr data-run="o/r/"#)
            .skip(1)
            .map(|s| s.split('"').next().unwrap().parse().unwrap())
            .collect()
    };
    let older = |page: &str| -> Option<String> {
        page.split(r#"id="older" href=""#)
            .nth(1)
            .map(|s| s.split('"').next().unwrap().replace("&amp;", "&"))
    };

    let (code, first) = f.get("/apps/demo").await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(rows(&first), (71..=120).rev().collect::<Vec<_>>());
    let next = older(&first).expect("an Older link");
    assert!(next.starts_with("/apps/demo?page="), "{next}");
    let (_, second) = f.get(&next).await;
    assert_eq!(rows(&second), (21..=70).rev().collect::<Vec<_>>());
    assert!(second.contains(r#"rel="first""#), "{second}");
    let (_, third) = f.get(&older(&second).unwrap()).await;
    assert_eq!(rows(&third), (1..=20).rev().collect::<Vec<_>>());
    assert_eq!(older(&third), None, "the last page: {third}");

    // Store-side (environment) and page-side (state, who) filters together, paged.
    let (_, failed) = f.get("/apps/demo?env=staging&state=failure&who=bob").await;
    assert_eq!(rows(&failed), vec![120, 90, 60, 30], "{failed}");
    assert!(
        failed.contains(r#"<option value="failure" selected>"#),
        "{failed}"
    );
    let (_, bobs) = f.get("/apps/demo?who=bob&ref=main").await;
    let bob_rows = rows(&bobs);
    assert_eq!(bob_rows.len(), 40, "all 40 of Bob's runs fit one page");
    assert_eq!(older(&bobs), None);
    let (_, none) = f.get("/apps/demo?ref=nope").await;
    assert!(none.contains("No deployments match."), "{none}");

    for bad in [
        "/apps/demo?state=maybe",
        "/apps/demo?env=moon",
        "/apps/demo?page=garbage",
    ] {
        let (code, page) = f.get(bad).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}: {page}");
    }
    assert_eq!(f.get("/apps/nope").await.0, StatusCode::NOT_FOUND);
}

async fn the_desk_offers_unlock_to_the_holder_and_takeover_to_others(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    f.lock("demo/staging", "github:octocat", "mine").await;
    f.lock("demo/production", "U1", "theirs").await;
    f.join_line("demo/staging", "carol", "topic").await;
    f.add_run(&run(9, "staging", RunState::Queued, 'f', 1), &[])
        .await;
    f.state
        .store
        .line_join("demo/staging", "o/r/9")
        .await
        .unwrap();
    let (code, page) = f.get("/desk").await;
    assert_eq!(code, StatusCode::OK, "{page}");
    let row = |line: &str| -> String {
        page.split(&format!(r#"<tr data-line="{line}">"#))
            .nth(1)
            .unwrap()
            .split("</tr>")
            .next()
            .unwrap()
            .to_owned()
    };
    let mine = row("demo/staging");
    assert!(
        mine.contains(r#"<form class="inline" method="post" action="/actions/unlock">"#),
        "{mine}"
    );
    assert!(
        mine.contains(r#"<input type="hidden" name="csrf" value="csrf-0123456789">"#),
        "{mine}"
    );
    assert!(
        mine.contains(">Unlock</button>") && !mine.contains("takeover"),
        "{mine}"
    );
    let theirs = row("demo/production");
    assert!(
        theirs.contains(r#"name="takeover" value="1""#) && theirs.contains(">Take over</button>"),
        "{theirs}"
    );
    assert!(page.contains("<code>topic</code>"), "the desk line: {page}");
    assert!(
        page.contains(r##"<a href="/runs/o/r/9">#9</a>"##),
        "faseng's line: {page}"
    );
    assert!(
        page.contains("release week") && page.contains("app.json"),
        "the freeze window: {page}"
    );
    assert!(page.contains("No release request is open."), "{page}");
}

#[tokio::test]
async fn a_lapsed_lock_and_an_expired_line_request_are_not_shown() {
    let f = Fixture::new(Backend::Sqlite).await.unwrap();
    f.lock("demo/staging", "U1", "old").await;
    f.join_line("demo/staging", "dave", "x").await;
    f.clock.advance(Duration::hours(3));
    let (_, page) = f.get("/desk").await;
    assert!(page.contains("No environment is locked."), "{page}");
    assert!(page.contains("Nobody waits"), "{page}");
    let (_, overview) = f.get("/").await;
    assert!(overview.contains(r#"data-waiting="0""#), "{overview}");
    assert_eq!(f.clock.now(), now() + Duration::hours(3));
}

#[tokio::test]
async fn static_files_are_served_with_cache_headers_and_revalidated() {
    let f = Fixture::new(Backend::Sqlite).await.unwrap();
    for (file, kind) in [
        ("dashboard.css", "text/css"),
        ("dashboard.js", "text/javascript"),
    ] {
        let response = f
            .send(
                Request::get(format!("/static/{file}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=86400");
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        assert!(!body(response).await.is_empty());
        let again = f
            .send(
                Request::get(format!("/static/{file}"))
                    .header(header::IF_NONE_MATCH, &etag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{file}");
    }
    let (code, _) = f.get("/static/../../etc/passwd").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = f.get("/static/other.js").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

/// Whether `html` has an attribute like `onclick=`.
pub(super) fn has_event_attribute(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    })
}

#[test]
fn the_script_and_stylesheet_keep_to_the_csp() {
    use super::super::assets::{CSS, JS};
    assert!(
        !JS.contains("eval(") && !JS.contains("new Function"),
        "no eval"
    );
    assert!(
        !CSS.contains("@import") && !CSS.contains("url("),
        "nothing fetched from elsewhere"
    );
}
