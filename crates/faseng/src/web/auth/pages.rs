//! The few pages signing in shows: the sign-in page (a link, no data) and the page that says
//! why a sign-in did not go through. No script and no inline style (the CSP allows neither);
//! every value is escaped.

use std::fmt::Write as _;

use super::super::Escaped;

/// The stylesheet the dashboard serves (also used here when it is there).
const STYLESHEET: &str = "/static/dashboard.css";

fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{STYLESHEET}">
</head>
<body class="auth"><main class="auth-card">
<h1>faseng</h1>
{body}
</main></body></html>
"#,
        title = Escaped(title),
    )
}

/// The link that starts signing in and comes back to `next` (a local path).
fn sign_in_link(next: &str) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    format!("/auth/login?{query}")
}

/// The sign-in page: what the dashboard is for, and one link. Nothing else.
pub fn sign_in(invitation: &str, next: &str) -> String {
    page(
        "Sign in — faseng",
        &format!(
            r#"<p id="sign-in-needed">{invitation}</p>
<p><a class="button" id="sign-in" href="{href}">Sign in with GitHub</a></p>"#,
            invitation = Escaped(invitation),
            href = Escaped(&sign_in_link(next)),
        ),
    )
}

/// Why a sign-in failed, with a way to try again.
pub fn sign_in_failed(why: &str, next: &str) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p id="sign-in-failed">{why}</p>
<p><a class="button" id="sign-in" href="{href}">Sign in again</a></p>"#,
        why = Escaped(why),
        href = Escaped(&sign_in_link(next)),
    );
    page("Not signed in — faseng", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sign_in_page_links_to_login_with_the_path_asked_for_and_escapes_it() {
        let html = sign_in("Members only.", "/apps/demo?env=a&x=\"<b>\"");
        assert!(
            html.contains(
                r#"href="/auth/login?next=%2Fapps%2Fdemo%3Fenv%3Da%26x%3D%22%3Cb%3E%22""#
            )
        );
        assert!(html.contains(">Sign in with GitHub</a>"));
        assert!(!html.contains("<script") && !html.contains("style="));
    }

    #[test]
    fn a_failure_is_escaped() {
        let html = sign_in_failed("<img src=x onerror=alert(1)> is not a member", "/");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; is not a member"));
        assert!(!html.contains("<img"));
    }
}
