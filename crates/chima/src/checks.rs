//! The checks of a release request: pure verdicts over what the forge says about a commit
//! (`ci`, `review`, `rollback_notes`), and [`evaluate`], which asks the forge and runs them.
//!
//! Every result is [`Evidence`]: a verdict, a one-line summary and the link that shows it (the
//! pull request, the failing check). A check the forge cannot answer in local mode is
//! [`Verdict::Skipped`]; one GitHub could not answer fails, so a request never passes on
//! missing evidence.

use std::collections::HashMap;

use deploy_core::{AppConfig, CheckKind, GitRef};
use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};

use crate::forge::{CiReport, Forge, ForgeError, PullInfo, ReviewInfo};

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Green.
    Pass,
    /// Red.
    Fail,
    /// Not decided yet (CI still running); blocks like a failure.
    Pending,
    /// Not run here (local mode has no GitHub); does not block.
    Skipped,
}

impl Verdict {
    /// True when this verdict holds the deploy back (failing or pending).
    pub fn blocks(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Pending)
    }

    /// `pass`, `fail`, `pending`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Pending => "pending",
            Verdict::Skipped => "skipped",
        }
    }
}

/// A check's verdict with what it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The verdict.
    pub verdict: Verdict,
    /// One line for people, e.g. "PR #12 approved by alice".
    pub summary: String,
    /// The page that shows it: the pull request, the failing check.
    pub url: Option<String>,
}

impl Evidence {
    /// Evidence with this verdict, summary and link.
    pub fn new(verdict: Verdict, summary: impl Into<String>, url: Option<String>) -> Self {
        Self {
            verdict,
            summary: summary.into(),
            url,
        }
    }

    /// True when it holds the deploy back.
    pub fn blocks(&self) -> bool {
        self.verdict.blocks()
    }
}

/// The `ci` check: with `required` contexts only those count (each must have reported and
/// passed); otherwise every status and check run. Red when any fails, pending while any runs;
/// passes as "no CI configured" when the commit has no statuses and no check runs at all.
pub fn ci(report: &CiReport, required: Option<&[String]>) -> Evidence {
    let mut missing = Vec::new();
    let relevant: Vec<_> = match required {
        Some(names) => {
            if names.is_empty() {
                return Evidence::new(Verdict::Pass, texts::no_contexts_required(), None);
            }
            for name in names {
                if !report.checks.iter().any(|c| &c.name == name) {
                    missing.push(name.as_str());
                }
            }
            report
                .checks
                .iter()
                .filter(|c| names.contains(&c.name))
                .collect()
        }
        None => {
            if report.checks.is_empty() {
                return Evidence::new(Verdict::Pass, texts::no_ci(), None);
            }
            report.checks.iter().collect()
        }
    };
    let subset = CiReport {
        sha: report.sha.clone(),
        checks: relevant.into_iter().cloned().collect(),
    };
    let failing: Vec<_> = subset.failing().collect();
    if let Some(first) = failing.first() {
        let names: Vec<&str> = failing.iter().map(|c| c.name.as_str()).collect();
        return Evidence::new(Verdict::Fail, texts::ci_failing(&names), first.url.clone());
    }
    let pending: Vec<_> = subset.pending().collect();
    if !pending.is_empty() || !missing.is_empty() {
        let mut names: Vec<&str> = pending.iter().map(|c| c.name.as_str()).collect();
        names.extend(&missing);
        let url = pending.first().and_then(|c| c.url.clone());
        return Evidence::new(Verdict::Pending, texts::ci_pending(&names), url);
    }
    let url = subset.checks.iter().find_map(|c| c.url.clone());
    Evidence::new(Verdict::Pass, texts::ci_green(subset.checks.len()), url)
}

/// The pull request that brought a commit: the newest merged one, else the newest open one
/// (closed unmerged ones never count).
pub fn pick_pull(pulls: &[PullInfo]) -> Option<&PullInfo> {
    pulls
        .iter()
        .filter(|p| p.merged)
        .max_by_key(|p| (p.merged_at, p.number))
        .or_else(|| {
            pulls
                .iter()
                .filter(|p| p.state == "open")
                .max_by_key(|p| (p.created_at, p.number))
        })
}

/// The `review` check of `pull` with its reviews (oldest first, as GitHub lists them).
///
/// Each reviewer's latest verdict counts: dismissed reviews are dropped, and a comment-only
/// review (like a pending one) leaves the reviewer's earlier verdict standing, as on GitHub.
/// Passes with an approval from someone other than the author and no outstanding change
/// request; without a pull request it fails.
pub fn review(pull: Option<&PullInfo>, reviews: &[ReviewInfo]) -> Evidence {
    let Some(pull) = pull else {
        return Evidence::new(Verdict::Fail, texts::no_pull(), None);
    };
    let url = Some(pull.html_url.clone());
    let mut ordered: Vec<&ReviewInfo> = reviews.iter().collect();
    // Stable: reviews GitHub gives in order stay in order; pending ones (no time) go last.
    ordered.sort_by_key(|r| (r.submitted_at.is_none(), r.submitted_at));
    let mut latest: HashMap<String, (&str, &str)> = HashMap::new();
    for r in ordered {
        let state = r.state.as_str();
        if !matches!(state, "APPROVED" | "CHANGES_REQUESTED")
            || r.author.is_empty()
            || r.author.eq_ignore_ascii_case(&pull.author)
        {
            continue;
        }
        latest.insert(r.author.to_ascii_lowercase(), (r.author.as_str(), state));
    }
    let by_state = |wanted: &str| {
        let mut who: Vec<&str> = latest
            .values()
            .filter(|(_, s)| *s == wanted)
            .map(|(login, _)| *login)
            .collect();
        who.sort_unstable();
        who
    };
    let blocking = by_state("CHANGES_REQUESTED");
    if !blocking.is_empty() {
        return Evidence::new(
            Verdict::Fail,
            texts::changes_requested(pull.number, &blocking),
            url,
        );
    }
    let approvers = by_state("APPROVED");
    if approvers.is_empty() {
        return Evidence::new(
            Verdict::Fail,
            texts::not_approved(pull.number, &pull.author),
            url,
        );
    }
    Evidence::new(Verdict::Pass, texts::approved(pull.number, &approvers), url)
}

/// What a pull request's description says about rolling back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollbackSection {
    /// No heading starting with "Rollback".
    Missing,
    /// Such headings, each with nothing but whitespace and HTML comments below.
    Empty,
    /// A section with notes.
    Present,
}

/// Finds the sections headed "Rollback…" (any case, ATX or setext, any level; each ends at
/// the next heading of the same or a higher level) and whether one holds anything but
/// whitespace and HTML comments. Headings inside a section are not notes themselves.
fn rollback_section(markdown: &str) -> RollbackSection {
    let mut found = RollbackSection::Missing;
    // The open Rollback section's level, whether it holds text, and its raw HTML so far.
    let mut section: Option<(HeadingLevel, bool, String)> = None;
    let mut heading: Option<(HeadingLevel, String)> = None;
    let close = |section: &mut Option<(HeadingLevel, bool, String)>,
                 found: &mut RollbackSection| {
        if let Some((_, text, html)) = section.take() {
            if text || !strip_html_comments(&html).trim().is_empty() {
                *found = RollbackSection::Present;
            } else if *found == RollbackSection::Missing {
                *found = RollbackSection::Empty;
            }
        }
    };
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                if section.as_ref().is_some_and(|(open, _, _)| level <= *open) {
                    close(&mut section, &mut found);
                }
                heading = Some((level, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take()
                    && section.is_none()
                    && text.trim_start().to_lowercase().starts_with("rollback")
                {
                    section = Some((level, false, String::new()));
                }
            }
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                if let Some((_, text)) = heading.as_mut() {
                    text.push_str(&t);
                } else if let Some((_, has_text, _)) = section.as_mut()
                    && !t.trim().is_empty()
                {
                    *has_text = true;
                }
            }
            Event::Html(h) | Event::InlineHtml(h) => {
                if heading.is_none()
                    && let Some((_, _, html)) = section.as_mut()
                {
                    html.push_str(&h);
                }
            }
            Event::Rule | Event::FootnoteReference(_) => {
                if heading.is_none()
                    && let Some((_, has_text, _)) = section.as_mut()
                {
                    // A rule alone is not notes; a footnote reference is.
                    *has_text |= matches!(event, Event::FootnoteReference(_));
                }
            }
            _ => {}
        }
    }
    close(&mut section, &mut found);
    found
}

/// `html` without its `<!-- … -->` comments (an unclosed one runs to the end).
fn strip_html_comments(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start + 4..].find("-->") {
            Some(end) => rest = &rest[start + 4 + end + 3..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The `rollback_notes` check: the pull request's description has a section headed
/// "Rollback" with notes in it.
pub fn rollback_notes(pull: Option<&PullInfo>) -> Evidence {
    let Some(pull) = pull else {
        return Evidence::new(Verdict::Fail, texts::no_pull(), None);
    };
    let url = Some(pull.html_url.clone());
    match rollback_section(&pull.body) {
        RollbackSection::Present => {
            Evidence::new(Verdict::Pass, texts::rollback_present(pull.number), url)
        }
        RollbackSection::Empty => {
            Evidence::new(Verdict::Fail, texts::rollback_empty(pull.number), url)
        }
        RollbackSection::Missing => {
            Evidence::new(Verdict::Fail, texts::rollback_missing(pull.number), url)
        }
    }
}

/// Evidence for a forge call that failed: skipped when the forge has no such thing (local
/// mode), else red with the reason.
fn unanswered(err: &ForgeError) -> Evidence {
    match err {
        ForgeError::Unsupported(_) => Evidence::new(Verdict::Skipped, texts::skipped(), None),
        other => Evidence::new(Verdict::Fail, texts::forge_failed(other), None),
    }
}

/// Runs the checks named in `kinds` ([`CheckKind`] names, in that order) for `sha` of `app`, asking the forge for
/// CI, the pull request and its reviews; `not_locked` is the desk's own verdict, used as is.
/// `git_ref` is what the request named, for the texts. An unknown kind fails.
pub async fn evaluate(
    forge: &dyn Forge,
    app: &AppConfig,
    sha: &str,
    git_ref: &GitRef,
    kinds: &[String],
    not_locked: Evidence,
) -> Vec<(String, Evidence)> {
    let wants = |k: CheckKind| kinds.iter().any(|x| CheckKind::parse(x) == Some(k));
    let needs_pull = wants(CheckKind::Review) || wants(CheckKind::RollbackNotes);
    let commit = GitRef::parse(sha).unwrap_or_else(|_| git_ref.clone());
    let ci_evidence = async {
        if !wants(CheckKind::Ci) {
            return None;
        }
        Some(match forge.ci_report(app, &commit).await {
            Ok(report) => ci(&report, app.required_contexts.as_deref()),
            Err(e) => unanswered(&e),
        })
    };
    let pull_evidence = async {
        if !needs_pull {
            return None;
        }
        let pulls = match forge.pulls_for_commit(app, sha).await {
            Ok(pulls) => pulls,
            Err(e) => return Some((Some(unanswered(&e)), unanswered(&e))),
        };
        let Some(pull) = pick_pull(&pulls) else {
            let none = Evidence::new(Verdict::Fail, texts::no_pull_for(sha, git_ref), None);
            return Some((Some(none.clone()), none));
        };
        let review_evidence = if wants(CheckKind::Review) {
            Some(match forge.pull_reviews(app, pull.number).await {
                Ok(reviews) => review(Some(pull), &reviews),
                Err(e) => unanswered(&e),
            })
        } else {
            None
        };
        Some((review_evidence, rollback_notes(Some(pull))))
    };
    let (ci_evidence, pull_evidence) = futures::join!(ci_evidence, pull_evidence);
    kinds
        .iter()
        .map(|k| {
            let evidence = match CheckKind::parse(k) {
                Some(CheckKind::Ci) => ci_evidence.clone(),
                Some(CheckKind::Review) => pull_evidence.as_ref().and_then(|(r, _)| r.clone()),
                Some(CheckKind::RollbackNotes) => pull_evidence.as_ref().map(|(_, n)| n.clone()),
                Some(CheckKind::NotLocked) => Some(not_locked.clone()),
                None => None,
            }
            .unwrap_or_else(|| Evidence::new(Verdict::Fail, texts::unknown_check(k), None));
            (k.clone(), evidence)
        })
        .collect()
}

/// The checks' texts (summaries are shown after the check's name, e.g. "ci: 3 checks green").
pub mod texts {
    use deploy_core::GitRef;

    use crate::forge::ForgeError;

    fn list(names: &[&str]) -> String {
        names.join(", ")
    }

    /// Why a forge without pull requests or issues (local mode) cannot answer.
    pub fn needs_github() -> String {
        "Local mode has no pull requests, reviews or issues: this needs GitHub.".to_owned()
    }

    pub(crate) fn skipped() -> String {
        "skipped (needs GitHub)".to_owned()
    }

    pub(crate) fn forge_failed(err: &ForgeError) -> String {
        format!("could not ask GitHub ({err}); recheck later")
    }

    pub(crate) fn unknown_check(kind: &str) -> String {
        format!("unknown check {kind:?}")
    }

    pub(crate) fn no_ci() -> String {
        "no CI configured".to_owned()
    }

    pub(crate) fn no_contexts_required() -> String {
        "no status contexts required".to_owned()
    }

    pub(crate) fn ci_failing(names: &[&str]) -> String {
        format!("failing: {}", list(names))
    }

    pub(crate) fn ci_pending(names: &[&str]) -> String {
        format!("waiting for: {}", list(names))
    }

    pub(crate) fn ci_green(n: usize) -> String {
        match n {
            1 => "1 check green".to_owned(),
            n => format!("{n} checks green"),
        }
    }

    pub(crate) fn no_pull() -> String {
        "no pull request brought this commit".to_owned()
    }

    pub(crate) fn no_pull_for(sha: &str, git_ref: &GitRef) -> String {
        let short = sha.get(..7).unwrap_or(sha);
        format!("no pull request brought {short} ({git_ref})")
    }

    pub(crate) fn changes_requested(number: u64, who: &[&str]) -> String {
        format!("PR #{number}: changes requested by {}", list(who))
    }

    pub(crate) fn not_approved(number: u64, author: &str) -> String {
        format!("PR #{number} has no approval from someone other than its author {author}")
    }

    pub(crate) fn approved(number: u64, who: &[&str]) -> String {
        format!("PR #{number} approved by {}", list(who))
    }

    pub(crate) fn rollback_present(number: u64) -> String {
        format!("PR #{number} has rollback notes")
    }

    pub(crate) fn rollback_empty(number: u64) -> String {
        format!("the Rollback section of PR #{number} is empty")
    }

    pub(crate) fn rollback_missing(number: u64) -> String {
        format!("PR #{number} has no section headed Rollback")
    }
}

#[cfg(test)]
mod tests;
