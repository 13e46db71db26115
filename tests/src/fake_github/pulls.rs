//! Pull requests, reviews and issues of the fake GitHub: what a release request's checks read
//! and what a release's ticket updates write.
//!
//! Answers follow GitHub's documented shapes. Pull requests associated with a commit are
//! `pull-request-simple` items, the same schema as `GET /repos/{owner}/{repo}/pulls` in
//! `openapi-subset.json`, and each answer is validated against it; a pull request's commits are
//! validated against the subset's `commit` schema. The subset has no operation for reviews,
//! issue comments or labels: those follow GitHub's REST reference ("List reviews for a pull
//! request", "Create an issue comment", "Add labels to an issue"), and their user objects are
//! validated against `simple-user`. Request bodies of the two POSTs are checked by hand against
//! the documented bodies; a bad one is answered 422 and recorded as a violation.

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{FakeGithub, PageQuery, RepoAccess, Shared, message, repo_url, resolve_ref};
use crate::fixtures;

/// Where a pull request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    /// Open, not merged.
    Open,
    /// Closed by merging.
    Merged,
    /// Closed without merging.
    Closed,
}

/// A pull request to set up with [`FakeGithub::add_pull`].
#[derive(Debug, Clone)]
pub struct PullSpec {
    /// Its number (also its issue number).
    pub number: u64,
    /// Title.
    pub title: String,
    /// Description (markdown); empty sends `null`, as GitHub does for none.
    pub body: String,
    /// The author's login.
    pub author: String,
    /// The branch it comes from.
    pub head_ref: String,
    /// Open, merged or closed.
    pub state: PullState,
    /// Its commits' messages, oldest first.
    pub commits: Vec<String>,
}

impl PullSpec {
    fn new(number: u64, title: &str, state: PullState) -> Self {
        Self {
            number,
            title: title.to_owned(),
            body: String::new(),
            author: "octocat".to_owned(),
            head_ref: format!("topic-{number}"),
            state,
            commits: vec![title.to_owned()],
        }
    }
    /// A merged pull request by `octocat` from `topic-<number>`, with one commit named as it.
    pub fn merged(number: u64, title: &str) -> Self {
        Self::new(number, title, PullState::Merged)
    }
    /// An open one.
    pub fn open(number: u64, title: &str) -> Self {
        Self::new(number, title, PullState::Open)
    }
    /// One closed without merging.
    pub fn closed(number: u64, title: &str) -> Self {
        Self::new(number, title, PullState::Closed)
    }
    /// With this description.
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }
    /// By this author.
    pub fn author(mut self, login: &str) -> Self {
        self.author = login.to_owned();
        self
    }
    /// From this branch.
    pub fn head(mut self, branch: &str) -> Self {
        self.head_ref = branch.to_owned();
        self
    }
    /// With these commit messages.
    pub fn commits(mut self, messages: &[&str]) -> Self {
        self.commits = messages.iter().map(|m| (*m).to_owned()).collect();
        self
    }
}

#[derive(Debug)]
struct StoredPull {
    spec: PullSpec,
    shas: Vec<String>,
    /// When it was made, in the fake's sequence (later pulls are newer and merged later).
    seq: u64,
}

/// The pull requests, reviews and issues of one repository.
#[derive(Debug, Default)]
pub(super) struct RepoPulls {
    pulls: Vec<StoredPull>,
    reviews: HashMap<u64, Vec<Value>>,
    issues: BTreeSet<u64>,
    comments: HashMap<u64, Vec<String>>,
    labels: HashMap<u64, Vec<String>>,
}

/// A fixed point in time the fake's pull requests and reviews are dated from.
fn dated(seq: u64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-05T09:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    (base + chrono::Duration::minutes(i64::try_from(seq).unwrap_or(0)))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A GitHub user object (`simple-user`) for `login`.
fn user(login: &str) -> Value {
    let mut u = fixtures::github_example("pull-request-simple-items")[0]["user"].clone();
    let id = login
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 1_000_000;
    u["login"] = json!(login);
    u["id"] = json!(id);
    u["url"] = json!(format!("https://api.github.com/users/{login}"));
    u["html_url"] = json!(format!("https://github.com/{login}"));
    u
}

impl FakeGithub {
    /// Adds a pull request associated with commit `sha` (GitHub's "list pull requests
    /// associated with a commit"); adding the same number again associates another sha.
    pub fn add_pull(&self, full_name: &str, sha: &str, spec: PullSpec) {
        let seq = self.next_seq();
        self.with_repo(full_name, |r| {
            let sha = sha.to_ascii_lowercase();
            r.pulls.issues.insert(spec.number);
            match r
                .pulls
                .pulls
                .iter_mut()
                .find(|p| p.spec.number == spec.number)
            {
                Some(p) => {
                    p.spec = spec;
                    p.shas.push(sha);
                }
                None => r.pulls.pulls.push(StoredPull {
                    spec,
                    shas: vec![sha],
                    seq,
                }),
            }
        });
        self.shared.bump();
    }

    /// Adds a review of pull request `number` by `reviewer` in `state` (`APPROVED`,
    /// `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`, `PENDING`), after every earlier one.
    pub fn add_review(&self, full_name: &str, number: u64, reviewer: &str, state: &str) {
        let seq = self.next_seq();
        let base = self.url().to_owned();
        self.with_repo(full_name, |r| {
            assert!(
                r.pulls.pulls.iter().any(|p| p.spec.number == number),
                "add_pull #{number} first"
            );
            let pull_url = format!("{}/pulls/{number}", repo_url(&base, full_name));
            let html =
                format!("https://github.com/{full_name}/pull/{number}#pullrequestreview-{seq}");
            let mut review = json!({
                "id": seq,
                "node_id": format!("PRR_fake{seq}"),
                "user": user(reviewer),
                "body": "",
                "state": state,
                "html_url": html,
                "pull_request_url": pull_url,
                "_links": {"html": {"href": html}, "pull_request": {"href": pull_url}},
                "commit_id": "0000000000000000000000000000000000000000",
                "author_association": "MEMBER",
            });
            // A pending review is not submitted yet: GitHub sends no submitted_at.
            if state != "PENDING" {
                review["submitted_at"] = json!(dated(seq));
            }
            r.pulls.reviews.entry(number).or_default().push(review);
        });
        self.shared.bump();
    }

    /// Adds an issue that comments and labels can be posted to (pull requests are issues too).
    pub fn add_issue(&self, full_name: &str, number: u64) {
        self.with_repo(full_name, |r| r.pulls.issues.insert(number));
    }

    /// The comments posted to an issue, oldest first.
    pub fn issue_comments(&self, full_name: &str, number: u64) -> Vec<String> {
        self.with_repo(full_name, |r| {
            r.pulls.comments.get(&number).cloned().unwrap_or_default()
        })
    }

    /// The labels of an issue, in the order they were added.
    pub fn issue_labels(&self, full_name: &str, number: u64) -> Vec<String> {
        self.with_repo(full_name, |r| {
            r.pulls.labels.get(&number).cloned().unwrap_or_default()
        })
    }

    fn next_seq(&self) -> u64 {
        let mut inner = self.shared.lock();
        inner.next_id += 1;
        inner.next_id
    }
}

/// One page of `list` as GitHub pages it (`per_page` default 30, at most 100; `page` from 1).
fn page(list: Vec<Value>, q: &PageQuery) -> Vec<Value> {
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let skip = q.page.unwrap_or(1).max(1).saturating_sub(1) * per_page;
    list.into_iter().skip(skip).take(per_page).collect()
}

/// Records a violation of a documented shape (the fake panics on drop) and returns its text.
fn violation(shared: &Shared, what: &str, errors: &[String], value: &Value) -> String {
    let text = format!("{what}: {}\n  value: {value}", errors.join("; "));
    shared.lock().violations.push(text.clone());
    text
}

fn pull_json(shared: &Shared, full_name: &str, default_branch: &str, p: &StoredPull) -> Value {
    let spec = &p.spec;
    let n = spec.number;
    let api = repo_url(&shared.base_url, full_name);
    let web = format!("https://github.com/{full_name}");
    let sha = p.shas.last().cloned().unwrap_or_default();
    let mut v = fixtures::github_example("pull-request-simple-items")[0].clone();
    let (owner, _) = full_name.split_once('/').unwrap_or((full_name, ""));
    v["url"] = json!(format!("{api}/pulls/{n}"));
    v["id"] = json!(p.seq);
    v["node_id"] = json!(format!("PR_fake{}", p.seq));
    v["html_url"] = json!(format!("{web}/pull/{n}"));
    v["diff_url"] = json!(format!("{web}/pull/{n}.diff"));
    v["patch_url"] = json!(format!("{web}/pull/{n}.patch"));
    v["issue_url"] = json!(format!("{api}/issues/{n}"));
    v["commits_url"] = json!(format!("{api}/pulls/{n}/commits"));
    v["review_comments_url"] = json!(format!("{api}/pulls/{n}/comments"));
    v["review_comment_url"] = json!(format!("{api}/pulls/comments{{/number}}"));
    v["comments_url"] = json!(format!("{api}/issues/{n}/comments"));
    v["statuses_url"] = json!(format!("{api}/statuses/{sha}"));
    v["number"] = json!(n);
    v["state"] = json!(if spec.state == PullState::Open {
        "open"
    } else {
        "closed"
    });
    v["locked"] = json!(false);
    v["title"] = json!(spec.title);
    v["user"] = user(&spec.author);
    v["body"] = if spec.body.is_empty() {
        Value::Null
    } else {
        json!(spec.body)
    };
    v["labels"] = json!([]);
    v["milestone"] = Value::Null;
    v["assignee"] = Value::Null;
    v["assignees"] = json!([]);
    v["requested_reviewers"] = json!([]);
    v["requested_teams"] = json!([]);
    v["created_at"] = json!(dated(p.seq));
    v["updated_at"] = json!(dated(p.seq + 60));
    let closed = (spec.state != PullState::Open).then(|| json!(dated(p.seq + 60)));
    v["closed_at"] = closed.clone().unwrap_or(Value::Null);
    v["merged_at"] = if spec.state == PullState::Merged {
        closed.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    v["merge_commit_sha"] = json!(sha);
    v["head"]["ref"] = json!(spec.head_ref);
    v["head"]["label"] = json!(format!("{owner}:{}", spec.head_ref));
    v["head"]["sha"] = json!(sha);
    v["base"]["ref"] = json!(default_branch);
    v["base"]["label"] = json!(format!("{owner}:{default_branch}"));
    v["_links"] = json!({
        "self": {"href": format!("{api}/pulls/{n}")},
        "html": {"href": format!("{web}/pull/{n}")},
        "issue": {"href": format!("{api}/issues/{n}")},
        "comments": {"href": format!("{api}/issues/{n}/comments")},
        "review_comments": {"href": format!("{api}/pulls/{n}/comments")},
        "review_comment": {"href": format!("{api}/pulls/comments{{/number}}")},
        "commits": {"href": format!("{api}/pulls/{n}/commits")},
        "statuses": {"href": format!("{api}/statuses/{sha}")},
    });
    v["author_association"] = json!("MEMBER");
    v["auto_merge"] = Value::Null;
    v["draft"] = json!(false);
    v
}

/// `GET /repos/{owner}/{repo}/commits/{sha}/pulls`: the pull requests associated with a
/// commit, newest first; 422 for a ref that names no commit.
pub(super) fn commit_pulls(
    shared: &Shared,
    full_name: &str,
    git_ref: &str,
    q: &PageQuery,
) -> Response {
    let inner = shared.lock();
    let repo = &inner.repos[full_name];
    let Some(sha) = resolve_ref(repo, git_ref) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {git_ref}"),
        );
    };
    let mut list: Vec<Value> = repo
        .pulls
        .pulls
        .iter()
        .filter(|p| p.shas.contains(&sha))
        .map(|p| pull_json(shared, full_name, &repo.default_branch, p))
        .collect();
    drop(inner);
    list.reverse();
    let list = page(list, q);
    let body = Value::Array(list);
    if let Err(errors) =
        fixtures::check_github_response("GET", "/repos/{owner}/{repo}/pulls", 200, &body)
    {
        violation(shared, "GET …/commits/{sha}/pulls answer", &errors, &body);
    }
    axum::Json(body).into_response()
}

/// `GET /repos/{owner}/{repo}/pulls/{n}/reviews`: oldest first, paged.
pub(super) async fn list_reviews(
    State(shared): State<Shared>,
    Path((_, _, number)): Path<(String, String, u64)>,
    Query(q): Query<PageQuery>,
    RepoAccess(full_name): RepoAccess,
) -> Response {
    let inner = shared.lock();
    let repo = &inner.repos[&full_name];
    if !repo.pulls.pulls.iter().any(|p| p.spec.number == number) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let list = repo.pulls.reviews.get(&number).cloned().unwrap_or_default();
    drop(inner);
    let list = page(list, &q);
    for review in &list {
        if let Err(errors) = fixtures::check_github_schema("simple-user", &review["user"]) {
            violation(&shared, "a review's user", &errors, review);
        }
    }
    axum::Json(list).into_response()
}

/// `GET /repos/{owner}/{repo}/pulls/{n}/commits`: oldest first, paged (GitHub lists at most
/// 250).
pub(super) async fn list_pull_commits(
    State(shared): State<Shared>,
    Path((_, _, number)): Path<(String, String, u64)>,
    Query(q): Query<PageQuery>,
    RepoAccess(full_name): RepoAccess,
) -> Response {
    let inner = shared.lock();
    let repo = &inner.repos[&full_name];
    let Some(pull) = repo.pulls.pulls.iter().find(|p| p.spec.number == number) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let api = repo_url(&shared.base_url, &full_name);
    let list: Vec<Value> = pull
        .spec
        .commits
        .iter()
        .take(250)
        .enumerate()
        .map(|(i, text)| {
            let sha = super::fake_sha(&full_name, &format!("pull-{number}-commit-{i}"));
            let mut c = fixtures::github_example("commit");
            c["sha"] = json!(sha);
            c["url"] = json!(format!("{api}/commits/{sha}"));
            c["html_url"] = json!(format!("https://github.com/{full_name}/commit/{sha}"));
            c["comments_url"] = json!(format!("{api}/commits/{sha}/comments"));
            c["commit"]["message"] = json!(text);
            c["commit"]["url"] = json!(format!("{api}/git/commits/{sha}"));
            c["author"] = user(&pull.spec.author);
            c["committer"] = user(&pull.spec.author);
            if let Some(obj) = c.as_object_mut() {
                // The list omits what only the single-commit answer carries.
                obj.remove("stats");
                obj.remove("files");
            }
            c
        })
        .collect();
    drop(inner);
    let list = page(list, &q);
    for commit in &list {
        if let Err(errors) = fixtures::check_github_schema("commit", commit) {
            violation(&shared, "a pull request's commit", &errors, commit);
        }
    }
    axum::Json(list).into_response()
}

/// True when the issue a comment or label is for exists (else GitHub answers 404).
fn known_issue(shared: &Shared, full_name: &str, number: u64) -> bool {
    shared.lock().repos[full_name]
        .pulls
        .issues
        .contains(&number)
}

/// `POST /repos/{owner}/{repo}/issues/{n}/comments` with `{"body": string}`: 201 with the
/// issue comment.
pub(super) async fn create_issue_comment(
    State(shared): State<Shared>,
    Path((_, _, number)): Path<(String, String, u64)>,
    RepoAccess(full_name): RepoAccess,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let text = match body.as_object() {
        Some(o) if o.len() == 1 && o.get("body").is_some_and(Value::is_string) => {
            o["body"].as_str().unwrap_or_default().to_owned()
        }
        _ => {
            let text = violation(
                &shared,
                "POST …/issues/{n}/comments wants exactly {\"body\": string}",
                &[],
                &body,
            );
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Invalid request: {text}"),
            );
        }
    };
    if !known_issue(&shared, &full_name, number) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let id = {
        let mut inner = shared.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let repo = inner.repos.get_mut(&full_name).expect("known repo");
        repo.pulls
            .comments
            .entry(number)
            .or_default()
            .push(text.clone());
        id
    };
    let api = repo_url(&shared.base_url, &full_name);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "id": id,
            "node_id": format!("IC_fake{id}"),
            "url": format!("{api}/issues/comments/{id}"),
            "html_url": format!("https://github.com/{full_name}/issues/{number}#issuecomment-{id}"),
            "body": text,
            "user": user("chima-bot"),
            "created_at": now,
            "updated_at": now,
            "issue_url": format!("{api}/issues/{number}"),
            "author_association": "NONE",
        })),
    )
        .into_response()
}

/// The label names of a documented "add labels" body: `{"labels": [names]}`, `[names]` or
/// `{"labels": [{"name": …}]}`.
fn label_names(body: &Value) -> Option<Vec<String>> {
    let list = match body {
        Value::Array(list) => list,
        Value::Object(o) if o.len() == 1 => o.get("labels")?.as_array()?,
        _ => return None,
    };
    if list.is_empty() {
        return None;
    }
    list.iter()
        .map(|l| match l {
            Value::String(name) => Some(name.clone()),
            Value::Object(o) if o.len() == 1 => o.get("name")?.as_str().map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// `POST /repos/{owner}/{repo}/issues/{n}/labels`: adds labels (creating unknown ones, as
/// GitHub does); 200 with every label of the issue.
pub(super) async fn add_issue_labels(
    State(shared): State<Shared>,
    Path((_, _, number)): Path<(String, String, u64)>,
    RepoAccess(full_name): RepoAccess,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(names) = label_names(&body) else {
        let text = violation(
            &shared,
            "POST …/issues/{n}/labels wants {\"labels\": [names]}",
            &[],
            &body,
        );
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Invalid request: {text}"),
        );
    };
    if !known_issue(&shared, &full_name, number) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let labels = {
        let mut inner = shared.lock();
        let repo = inner.repos.get_mut(&full_name).expect("known repo");
        let labels = repo.pulls.labels.entry(number).or_default();
        for name in names {
            if !labels.contains(&name) {
                labels.push(name);
            }
        }
        labels.clone()
    };
    let api = repo_url(&shared.base_url, &full_name);
    let answer: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({
                "id": 208_045_946 + i,
                "node_id": format!("LA_fake{i}"),
                "url": format!("{api}/labels/{name}"),
                "name": name,
                "description": null,
                "color": "ededed",
                "default": false,
            })
        })
        .collect();
    axum::Json(answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_bodies_in_every_documented_form() {
        for (body, names) in [
            (json!({"labels": ["a", "b"]}), Some(vec!["a", "b"])),
            (json!(["a"]), Some(vec!["a"])),
            (json!({"labels": [{"name": "a"}]}), Some(vec!["a"])),
            (json!({"labels": []}), None),
            (json!({"labels": "a"}), None),
            (json!({"label": ["a"]}), None),
            (json!({"labels": [1]}), None),
        ] {
            assert_eq!(
                label_names(&body),
                names.map(|n| n.into_iter().map(str::to_owned).collect()),
                "{body}"
            );
        }
    }

    #[test]
    fn pages_as_github_does() {
        let list: Vec<Value> = (0..250).map(|i| json!(i)).collect();
        let q = |per_page, page| PageQuery { per_page, page };
        assert_eq!(page(list.clone(), &q(None, None)).len(), 30);
        assert_eq!(page(list.clone(), &q(Some(100), Some(3)))[0], json!(200));
        assert_eq!(page(list.clone(), &q(Some(100), Some(3))).len(), 50);
        assert!(page(list, &q(Some(100), Some(4))).is_empty());
    }
}
