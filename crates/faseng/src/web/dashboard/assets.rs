//! The dashboard's one stylesheet and one script, built into the binary (no build step, no
//! CDN). Pages link them with a `?v=` of their content hash, so a browser may keep them a day
//! and still gets a new version at once; `ETag` answers a revalidation with 304.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// The stylesheet.
pub(crate) const CSS: &str = include_str!("static/dashboard.css");
/// The script.
pub(crate) const JS: &str = include_str!("static/dashboard.js");

/// A served file: its content, type and tag.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        Self {
            body,
            content_type,
            etag: hash[..16].to_owned(),
        }
    }
}

static STYLESHEET: LazyLock<Asset> = LazyLock::new(|| Asset::new(CSS, "text/css; charset=utf-8"));
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| Asset::new(JS, "text/javascript; charset=utf-8"));

/// Where pages link the stylesheet.
pub(crate) fn css_path() -> String {
    format!("/static/dashboard.css?v={}", STYLESHEET.etag)
}

/// Where pages link the script.
pub(crate) fn js_path() -> String {
    format!("/static/dashboard.js?v={}", SCRIPT.etag)
}

/// `GET /static/{file}`.
pub(crate) async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let asset: &Asset = match file.as_str() {
        "dashboard.css" => &STYLESHEET,
        "dashboard.js" => &SCRIPT,
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    let etag = format!("\"{}\"", asset.etag);
    let cache = [
        (header::CACHE_CONTROL, "public, max-age=86400".to_owned()),
        (header::ETAG, etag.clone()),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}
