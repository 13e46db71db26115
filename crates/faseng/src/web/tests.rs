//! Unit tests of the HTTP endpoints over a real SQLite store.

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

use super::*;
use crate::queue::{self, QueueUrl};
use crate::store::RunState;

/// Web state over a fresh SQLite store holding finished runs `o/r/1` and `o/r/2` and the
/// unfinished run `o/r/3`, each with a two-line log.
pub(super) async fn state(dir: &std::path::Path) -> WebState {
    let (queue, store) = queue::open(&QueueUrl::Sqlite(dir.join("faseng.db")), Default::default())
        .await
        .unwrap();
    for id in 1..=3 {
        let mut run = crate::store::contract::run(
            deploy_core::RunKey::new(&deploy_core::RepoName::parse("o/r").unwrap(), id).as_str(),
        );
        run.deployment_id = id;
        run.state = if id == 3 {
            RunState::InProgress
        } else {
            RunState::Success
        };
        store.create_run(&run).await.unwrap();
        store
            .append_log(&run.key, &[format!("output of #{id}"), "<b>&</b>".into()])
            .await
            .unwrap();
    }
    WebState {
        secret: Secret::new("webhook secret"),
        intake: Arc::new(Intake::new(store.clone(), queue, Default::default())),
        store,
        metrics: Arc::new(Metrics::default()),
        isolation: "providers share faseng's user (a unit test)".into(),
        link_key: LinkKey::new(&"link key ".repeat(4)).unwrap(),
        streams: StreamSlots::new(2, 3),
        apps: Default::default(),
        clock: deploy_core::clock::system(),
        github_web_url: url::Url::parse("https://github.com").unwrap(),
        gate: Arc::new(auth::Gate::off()),
    }
}

/// The response to a GET of `path` from `client`, its body not read yet.
async fn respond(state: &WebState, path: &str, client: &str) -> Response {
    let mut request = Request::get(path).body(Body::empty()).unwrap();
    let client: SocketAddr = client.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(client));
    router(state.clone()).oneshot(request).await.unwrap()
}

async fn get(state: &WebState, path: &str) -> (StatusCode, String) {
    let response = respond(state, path, "192.0.2.1:40000").await;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn secret(s: &WebState, id: u64) -> String {
    s.link_key.secret(&RepoName::parse("o/r").unwrap(), id)
}

const PARTS: [&str; 3] = ["", "/log", "/events"];

#[tokio::test]
async fn a_log_opens_under_its_link_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let own = secret(&s, 1);
    for part in PARTS {
        let (code, body) = get(&s, &format!("/deployments/o/r/1/{own}{part}")).await;
        assert_eq!(code, StatusCode::OK, "{part:?}: {body}");
        assert!(body.contains("output of #1"), "{part:?}: {body}");

        let refused = [
            format!("/deployments/o/r/1{part}"),
            format!("/deployments/o/r/1/{}{part}", "0".repeat(32)),
            format!("/deployments/o/r/1/{}{part}", &own[..31]),
            format!("/deployments/o/r/1/{}{part}", secret(&s, 2)),
            format!("/deployments/o/r/2/{own}{part}"),
            format!("/deployments/o/r/x/{own}{part}"),
            format!("/deployments/o/r/4/{}{part}", secret(&s, 4)),
        ];
        for path in refused {
            assert_eq!(
                get(&s, &path).await,
                (StatusCode::NOT_FOUND, "no such deployment".to_owned()),
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn health_and_metrics_need_no_link() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    assert_eq!(get(&s, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&s, "/metrics").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_page_links_its_plain_text_and_live_stream_with_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let own = secret(&s, 3);
    let (_, page) = get(&s, &format!("/deployments/o/r/3/{own}")).await;
    assert!(
        page.contains(&format!(r#"<a href="/deployments/o/r/3/{own}/log">"#)),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            r#"new EventSource("/deployments/o/r/3/{own}/events?from=2")"#
        )),
        "{page}"
    );
    assert!(
        page.contains("<pre id=\"log\">output of #3\n&lt;b&gt;&amp;&lt;/b&gt;\n</pre>"),
        "{page}"
    );
    let (_, text) = get(&s, &format!("/deployments/o/r/3/{own}/log")).await;
    assert_eq!(text, "output of #3\n<b>&</b>\n");
}

#[test]
fn the_page_escapes_every_field_and_line() {
    let mut run = crate::store::contract::run("o/r/1");
    run.git_ref = "<img src=x onerror=alert(1)>".into();
    run.creator = "\"'&".into();
    let html = page_html(
        &run,
        "/deployments/o/r/1/s",
        &["</pre><script>alert(2)</script>".into()],
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;@"),
        "{html}"
    );
    assert!(html.contains("Who: &quot;&#39;&amp;"), "{html}");
    assert!(
        html.contains("&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;\n</pre>"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
}

#[test]
fn a_long_log_is_escaped_into_one_buffer_sized_up_front() {
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!("line {i}: <a href=\"x\">&</a> 'quoted'"))
        .collect();
    let mut run = crate::store::contract::run("o/r/1");
    run.description = "<&>".repeat(40);
    let html = page_html(&run, "/deployments/o/r/1/s", &lines);
    let escaped_log: usize = lines.iter().map(|l| escaped_len(l) + 1).sum();
    assert!(html.len() > escaped_log, "the whole log is on the page");
    // A buffer that had to grow would have doubled: far more spare room than the frame.
    assert!(
        html.capacity() - html.len() <= PAGE_FRAME_BYTES,
        "the page outgrew its buffer: {} of {}",
        html.len(),
        html.capacity()
    );

    let text = plain_log(&lines);
    assert_eq!(
        text.capacity(),
        text.len(),
        "the plain log is sized exactly"
    );
    assert_eq!(text, format!("{}\n", lines.join("\n")));
}

#[test]
fn escaping_counts_what_it_writes() {
    let s = "a<b>&\"c'd é";
    let mut out = String::new();
    write_escaped(&mut out, s).unwrap();
    assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&#39;d é");
    assert_eq!(escaped_len(s), out.len());
}

#[tokio::test]
async fn live_streams_over_a_cap_get_429_and_a_closed_one_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let events = format!("/deployments/o/r/3/{}/events", secret(&s, 3));
    // Run 3 goes on, so its streams stay open while their responses are held.
    let mut open = Vec::new();
    for client in ["192.0.2.1:1", "192.0.2.1:2", "192.0.2.2:1"] {
        let response = respond(&s, &events, client).await;
        assert_eq!(response.status(), StatusCode::OK, "{client}");
        open.push(response);
    }
    let refused = |response: Response| async move {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    assert_eq!(
        refused(respond(&s, &events, "192.0.2.2:2").await).await,
        (StatusCode::TOO_MANY_REQUESTS, messages::too_many_streams(3))
    );
    drop(open.pop());
    assert_eq!(s.streams.open(), 2);
    assert_eq!(
        refused(respond(&s, &events, "192.0.2.1:3").await).await,
        (
            StatusCode::TOO_MANY_REQUESTS,
            messages::too_many_streams_from_client(2)
        )
    );
    let again = respond(&s, &events, "192.0.2.2:3").await;
    assert_eq!(again.status(), StatusCode::OK);
    // Full, a wrong link is still answered like an unknown deployment, and takes no slot.
    let wrong = format!("/deployments/o/r/3/{}/events", secret(&s, 2));
    assert_eq!(
        refused(respond(&s, &wrong, "192.0.2.3:1").await).await,
        (
            StatusCode::NOT_FOUND,
            messages::no_such_deployment().to_owned()
        )
    );
    assert_eq!(s.streams.open(), 3);
    drop(open);
    drop(again);
    assert_eq!(s.streams.open(), 0);
}
