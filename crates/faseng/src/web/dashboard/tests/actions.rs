//! The rollback and unlock forms, and the action's page.

use axum::http::{StatusCode, header};

use super::{Backend, Fixture, body, on_both_backends, viewer};
use crate::store::WebActionState;

on_both_backends!(
    a_rollback_form_becomes_a_web_action_of_the_viewer,
    an_unlock_or_takeover_becomes_the_chat_command,
    a_form_that_is_not_valid_changes_nothing,
    the_action_page_shows_the_reply_and_refreshes_until_done,
);

/// Posts a form and returns the action id it was redirected to.
async fn submitted(f: &Fixture, path: &str, form: &[(&str, &str)]) -> u64 {
    let response = f.post(path, form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path} {form:?}");
    let location = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    location
        .strip_prefix("/actions/")
        .unwrap_or_else(|| panic!("{location}"))
        .parse()
        .unwrap()
}

async fn a_rollback_form_becomes_a_web_action_of_the_viewer(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    let csrf = viewer().csrf;
    let id = submitted(
        &f,
        "/actions/rollback",
        &[
            ("csrf", &csrf),
            ("app", "demo"),
            ("env", "staging"),
            ("deployment", "12"),
        ],
    )
    .await;
    let action = f.state.store.web_action(id).await.unwrap().unwrap();
    assert_eq!(action.command, "rollback demo in staging to #12");
    assert_eq!(action.user_id, "github:octocat");
    assert_eq!(action.user_name, "octocat");
    assert_eq!(action.state, WebActionState::Pending);
    assert_eq!(action.submitted_at, super::now());
    let newest = submitted(
        &f,
        "/actions/rollback",
        &[
            ("csrf", &csrf),
            ("app", "demo"),
            ("env", "Staging"),
            ("deployment", ""),
        ],
    )
    .await;
    assert_eq!(
        f.state
            .store
            .web_action(newest)
            .await
            .unwrap()
            .unwrap()
            .command,
        "rollback demo in staging"
    );
}

async fn an_unlock_or_takeover_becomes_the_chat_command(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    let csrf = viewer().csrf;
    let unlock = submitted(
        &f,
        "/actions/unlock",
        &[("csrf", &csrf), ("app", "demo"), ("env", "production")],
    )
    .await;
    let takeover = submitted(
        &f,
        "/actions/unlock",
        &[
            ("csrf", &csrf),
            ("app", "demo"),
            ("env", "production"),
            ("takeover", "1"),
        ],
    )
    .await;
    let store = &f.state.store;
    assert_eq!(
        store.web_action(unlock).await.unwrap().unwrap().command,
        "unlock demo in production"
    );
    assert_eq!(
        store.web_action(takeover).await.unwrap().unwrap().command,
        "unlock! demo in production: from the dashboard"
    );
}

async fn a_form_that_is_not_valid_changes_nothing(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    for (path, form, says) in [
        (
            "/actions/rollback",
            vec![("app", "nope"), ("env", "staging")],
            "There is no app named nope",
        ),
        (
            "/actions/rollback",
            vec![("app", "demo"), ("env", "moon")],
            "demo has no environment named moon.",
        ),
        (
            "/actions/rollback",
            vec![("app", "demo; rm -rf /"), ("env", "staging")],
            "The app is not valid",
        ),
        (
            "/actions/rollback",
            vec![("app", "demo"), ("env", "staging to #1")],
            "The environment is not valid",
        ),
        (
            "/actions/rollback",
            vec![
                ("app", "demo"),
                ("env", "staging"),
                ("deployment", "12 in production"),
            ],
            "The deployment is not valid",
        ),
        (
            "/actions/rollback",
            vec![("app", "demo"), ("env", "staging"), ("deployment", "0")],
            "The deployment is not valid",
        ),
        ("/actions/rollback", vec![], "The app is not valid"),
        (
            "/actions/unlock",
            vec![("app", "demo"), ("env", "staging"), ("takeover", "yes")],
            "The takeover is not valid",
        ),
        (
            "/actions/unlock",
            vec![("app", "other"), ("env", "staging")],
            "other has no environment named staging.",
        ),
    ] {
        let response = f.post(path, &form).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form:?}");
        let page = body(response).await;
        assert!(page.contains(says), "{form:?}: {page}");
        assert!(
            page.contains("Nothing was done") || !says.starts_with("The "),
            "{page}"
        );
    }
    assert_eq!(
        f.state.store.web_action(1).await.unwrap(),
        None,
        "nothing was submitted"
    );
}

async fn the_action_page_shows_the_reply_and_refreshes_until_done(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    let store = &f.state.store;
    let id = submitted(
        &f,
        "/actions/rollback",
        &[("app", "demo"), ("env", "staging")],
    )
    .await;
    let (code, page) = f.get(&format!("/actions/{id}")).await;
    assert_eq!(code, StatusCode::OK, "{page}");
    assert!(page.contains(r#"data-state="pending""#), "{page}");
    assert!(
        page.contains(r#"<div id="waiting" data-refresh="2">"#),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"<a href="/actions/{id}">Refresh</a>"#)),
        "works without script: {page}"
    );

    let claimed = store
        .claim_web_action("chima-1", super::now(), std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, id);
    assert!(
        f.get(&format!("/actions/{id}"))
            .await
            .1
            .contains(r#"data-state="running""#)
    );
    assert!(
        store
            .finish_web_action(
                id,
                "chima-1",
                true,
                "Rolling back demo in staging to <main@aaaaaaa>",
                Some("o/r/13")
            )
            .await
            .unwrap()
    );
    let (_, done) = f.get(&format!("/actions/{id}")).await;
    assert!(done.contains(r#"data-state="done""#), "{done}");
    assert!(
        done.contains("Rolling back demo in staging to &lt;main@aaaaaaa&gt;"),
        "{done}"
    );
    assert!(
        done.contains(r#"<a id="new-run" href="/runs/o/r/13">"#),
        "{done}"
    );
    assert!(!done.contains("data-refresh"), "{done}");

    // Someone else's action, or none, is not shown.
    let theirs = store
        .submit_web_action(
            "github:mallory",
            "mallory",
            "unlock demo in staging",
            super::now(),
        )
        .await
        .unwrap();
    for path in [
        format!("/actions/{theirs}"),
        "/actions/999".to_owned(),
        "/actions/x".to_owned(),
    ] {
        let (code, page) = f.get(&path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert!(page.contains("There is no such action of yours."), "{page}");
    }
}
