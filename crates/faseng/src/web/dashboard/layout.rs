//! The frame every dashboard page shares: head (stylesheet, deferred script), skip link,
//! navigation, who is signed in, and the main landmark.

use maud::{DOCTYPE, Markup, html};

use super::Viewer;
use super::assets;

/// Which part of the navigation a page belongs to (marked `aria-current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    /// The overview and an app's pages.
    Overview,
    /// The release desk.
    Desk,
    /// Pages outside the navigation (a deployment, an action).
    None,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · faseng" }
            link rel="stylesheet" href=(assets::css_path());
            script src=(assets::js_path()) defer {}
        }
    }
}

/// A whole page: `title` is its `<h1>` and the document title.
pub(crate) fn page(title: &str, viewer: &Viewer, nav: Nav, body: Markup) -> Markup {
    let current = |which: Nav| (nav == which).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "faseng" }
                    nav aria-label="Dashboard" {
                        ul {
                            li { a href="/" aria-current=[current(Nav::Overview)] { "Overview" } }
                            li { a href="/desk" aria-current=[current(Nav::Desk)] { "Desk" } }
                        }
                    }
                    div.viewer {
                        span { "Signed in as " strong { (viewer.name) } }
                        @if !viewer.id.starts_with("local:") {
                            form method="post" action="/auth/logout" {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page that only says why something could not be shown.
pub(crate) fn error_page(title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main {
                    h1 { (title) }
                    p.error { (text) }
                    p { a href="/" { "Back to the overview" } }
                }
            }
        }
    }
}
