//! Who is looking at the dashboard: put into the request's extensions by the sign-in layer.

/// A signed-in dashboard user (or, in local mode, the local user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The identity actions are done and audited as: `github:<login>`, or `local:<user>`.
    pub id: String,
    /// What pages show: the GitHub login or the local user name.
    pub name: String,
    /// This session's CSRF token: every form carries it as the hidden field `csrf`.
    pub csrf: String,
}
