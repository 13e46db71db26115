//! A stand-in for the dashboard's pages until they land: one page naming the viewer, with a
//! form that posts an action, so the gate in [`super::auth`] has something to guard.

use axum::response::Html;
use axum::routing::{get, post};
use axum::{Extension, Router};

use super::viewer::Viewer;
use super::{Escaped, WebState};

/// `/` (who is signed in, a form) and `POST /actions/echo` (says who posted it).
pub fn router() -> Router<WebState> {
    Router::new()
        .route("/", get(overview))
        .route("/actions/echo", post(echo))
}

async fn overview(Extension(viewer): Extension<Viewer>) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>faseng</title></head>
<body><h1>faseng</h1><p id="viewer">Signed in as {name}</p>
<form method="post" action="/actions/echo"><input type="hidden" name="csrf" value="{csrf}">
<button type="submit" id="echo">Echo</button></form>
<form method="post" action="/auth/logout"><input type="hidden" name="csrf" value="{csrf}">
<button type="submit" id="sign-out">Sign out</button></form></body></html>"#,
        name = Escaped(&viewer.name),
        csrf = Escaped(&viewer.csrf),
    ))
}

async fn echo(Extension(viewer): Extension<Viewer>) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>faseng</title></head>
<body><p id="echoed">done for {}</p></body></html>"#,
        Escaped(&viewer.id)
    ))
}
