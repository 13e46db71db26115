//! Unit tests of reconciling against a scripted GitHub and a real store.

use async_trait::async_trait;
use deploy_core::{Apps, ManualClock, Secret};
use http::HeaderMap;
use serde_json::json;

use super::*;
use crate::queue::{self, QueueUrl};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    Answer {
        status,
        headers: map,
        body: body.to_owned(),
    }
}

#[test]
fn the_window_includes_its_edge_and_the_future_and_nothing_older() {
    let d = |id: u64, created: &str| json!({"id": id, "created_at": created});
    let list = vec![
        d(1, "2026-12-06T09:00:00Z"),      // exactly one hour before now
        d(2, "2026-12-06T08:59:59Z"),      // one second older
        d(3, "2026-12-06T10:00:05Z"),      // dated after now (clock skew)
        d(4, "2026-12-06T09:30:00+01:00"), // 08:30 UTC
        json!({"id": 5}),
        json!({"id": 6, "created_at": "yesterday"}),
        json!({"created_at": "2026-12-06T09:59:00Z"}),
        d(7, "2026-12-06T09:59:00Z"),
    ];
    let ids: Vec<u64> = in_window(&list, t0(), chrono::Duration::hours(1))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [1, 3, 7]);
    assert!(
        in_window(&list, t0(), chrono::Duration::zero())
            .iter()
            .all(|(id, _)| *id == 3)
    );
}

#[test]
fn rate_limits_are_read_from_the_headers() {
    let now = at(0);
    let reset = (now.timestamp() + 120).to_string();
    // Retry-After, in seconds or as a date.
    let a = answer(429, &[("retry-after", "7")], "");
    assert_eq!(rate_limit_wait(&a, now), Some(Duration::from_secs(7)));
    let a = answer(
        403,
        &[("retry-after", "Sun, 06 Dec 2026 10:00:30 GMT")],
        "{}",
    );
    assert_eq!(rate_limit_wait(&a, now), Some(Duration::from_secs(30)));
    // Primary limit: until the reset.
    let a = answer(
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ],
        r#"{"message":"API rate limit exceeded"}"#,
    );
    assert_eq!(rate_limit_wait(&a, now), Some(Duration::from_secs(120)));
    // A reset already past still waits a moment.
    let a = answer(
        403,
        &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")],
        "",
    );
    assert_eq!(rate_limit_wait(&a, now), Some(Duration::from_secs(1)));
    // Far off: bounded.
    let a = answer(429, &[("retry-after", "999999")], "");
    assert_eq!(rate_limit_wait(&a, now), Some(MAX_WAIT));
    // No hint: a minute.
    let a = answer(429, &[], "");
    assert_eq!(rate_limit_wait(&a, now), Some(DEFAULT_RATE_LIMIT_WAIT));
    let a = answer(
        403,
        &[],
        r#"{"message":"You have exceeded a secondary rate limit."}"#,
    );
    assert_eq!(rate_limit_wait(&a, now), Some(DEFAULT_RATE_LIMIT_WAIT));
    // A refusal is not a rate limit, nor is a good answer with budget left.
    let a = answer(
        403,
        &[("x-ratelimit-remaining", "4000")],
        r#"{"message":"Resource not accessible by integration"}"#,
    );
    assert_eq!(rate_limit_wait(&a, now), None);
    let a = answer(200, &[("retry-after", "5")], "[]");
    assert_eq!(rate_limit_wait(&a, now), None);
}

#[test]
fn passes_slow_down_when_little_of_the_budget_is_left() {
    let now = at(0);
    let budget = |remaining| Budget {
        remaining,
        limit: 5000,
        reset: at(1800),
    };
    assert_eq!(budget(4000).pace(10, now), None, "plenty left");
    assert_eq!(budget(500).pace(10, now), None, "a tenth left is plenty");
    // 400 left, 10 per pass: 20 passes may use half of it in the 30 minutes left.
    assert_eq!(budget(400).pace(10, now), Some(Duration::from_secs(90)));
    assert_eq!(
        budget(15).pace(10, now),
        Some(Duration::from_secs(1800)),
        "not even one pass fits in half: wait for the reset"
    );
    assert_eq!(budget(0).pace(1, now), Some(Duration::from_secs(1800)));
    let a = answer(
        200,
        &[
            ("x-ratelimit-remaining", "12"),
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-reset", &at(60).timestamp().to_string()),
        ],
        "[]",
    );
    assert_eq!(
        Budget::of(&a),
        Some(Budget {
            remaining: 12,
            limit: 60,
            reset: at(60)
        })
    );
    assert_eq!(Budget::of(&answer(200, &[], "[]")), None);
}

#[test]
fn targets_are_the_distinct_repositories_faseng_can_read() {
    let apps = Apps::from_json(
        &json!({
            "a": {"provider": "shell", "repository": "o/one"},
            "b": {"provider": "shell", "repository": "o/one", "github_token": "tb"},
            "c": {"provider": "shell", "repository": "o/two", "github_api": "https://ghe/api/v3/"},
            "d": {"provider": "shell", "repository": "o/two"},
        })
        .to_string(),
    )
    .unwrap();
    let (readable, unreadable) = targets(&apps, true);
    assert!(unreadable.is_empty());
    assert_eq!(readable.len(), 3);
    let one = readable.iter().find(|t| t.repo.name() == "one").unwrap();
    assert_eq!(one.token, Some(Secret::new("tb")));
    assert!(
        readable
            .iter()
            .any(|t| t.api.as_deref() == Some("https://ghe/api/v3"))
    );
    let (readable, unreadable) = targets(&apps, false);
    assert_eq!(readable.len(), 1, "only o/one has a token of its own");
    assert_eq!(unreadable.len(), 2);
}

/// A scripted GitHub: deployments with statuses per repository, ETags on lists and
/// repositories, and rate-limited answers on demand.
#[derive(Default)]
struct Scripted {
    deployments: Mutex<Vec<Value>>,
    statuses: Mutex<HashMap<u64, usize>>,
    /// Answers given before any other, first first.
    next: Mutex<std::collections::VecDeque<Answer>>,
    calls: Mutex<Vec<(String, Option<String>, u16)>>,
}

impl Scripted {
    fn add(&self, id: u64, created_at: DateTime<Utc>) {
        self.deployments.lock().unwrap().insert(
            0,
            json!({"id": id, "sha": "a".repeat(40), "ref": "main", "task": "deploy",
                   "environment": "edge", "creator": {"login": "ci"}, "payload": {},
                   "created_at": created_at.to_rfc3339()}),
        );
    }

    fn calls(&self) -> Vec<(String, Option<String>, u16)> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn etag_of(body: &str) -> String {
    use sha2::Digest as _;
    format!(
        "W/\"{}\"",
        hex::encode(sha2::Sha256::digest(body.as_bytes()))
    )
}

#[async_trait]
impl GithubReader for Scripted {
    async fn get(
        &self,
        _: &Target,
        route: &str,
        if_none_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let next = self.next.lock().unwrap().pop_front();
        let answer = if let Some(next) = next {
            next
        } else {
            let path = route.split('?').next().unwrap();
            let body = match path.split('/').collect::<Vec<_>>()[..] {
                ["", "repos", _, _, "deployments"] => {
                    serde_json::to_string(&*self.deployments.lock().unwrap()).unwrap()
                }
                ["", "repos", _, _, "deployments", id, "statuses"] => {
                    let n = self
                        .statuses
                        .lock()
                        .unwrap()
                        .get(&id.parse().unwrap())
                        .copied();
                    json!(vec![json!({"state": "success"}); n.unwrap_or(0).min(1)]).to_string()
                }
                ["", "repos", o, r] => json!({"full_name": format!("{o}/{r}"),
                                              "clone_url": "https://example/o/r.git"})
                .to_string(),
                _ => anyhow::bail!("not scripted: {route}"),
            };
            let etag = etag_of(&body);
            if if_none_match == Some(etag.as_str()) {
                answer(304, &[("etag", &etag)], "")
            } else {
                answer(200, &[("etag", &etag)], &body)
            }
        };
        self.calls.lock().unwrap().push((
            route.to_owned(),
            if_none_match.map(str::to_owned),
            answer.status,
        ));
        Ok(answer)
    }
}

struct Fixture {
    reconciler: Reconciler,
    github: Arc<Scripted>,
    store: Arc<dyn Store>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (queue, store) = queue::open(
        &QueueUrl::Sqlite(dir.path().join("r.db")),
        Default::default(),
    )
    .await
    .unwrap();
    let apps = Arc::new(
        Apps::from_json(r#"{"trelhub": {"provider": "shell", "repository": "oursky/trelhub", "environments": ["edge"]}}"#)
            .unwrap(),
    );
    let (targets, _) = targets(&apps, true);
    let github = Arc::new(Scripted::default());
    let clock = ManualClock::new(t0());
    let reconciler = Reconciler::new(
        targets,
        github.clone(),
        store.clone(),
        Arc::new(Intake::new(store.clone(), queue, apps)),
        Arc::new(Metrics::default()),
        Arc::new(clock.clone()),
        ReconcileSettings {
            every: Duration::from_secs(30),
            window: "1h".parse().unwrap(),
        },
    );
    Fixture {
        reconciler,
        github,
        store,
        clock,
        _dir: dir,
    }
}

#[tokio::test]
async fn only_new_unknown_deployments_without_statuses_are_taken_in_once() {
    let f = fixture().await;
    f.github.add(1, at(-7200)); // before the window
    f.github.add(2, at(-600)); // a previous deployer's, with a status
    f.github.statuses.lock().unwrap().insert(2, 1);
    f.github.add(3, at(-600)); // known to the store (its webhook came)
    let mut known = crate::store::contract::run("oursky/trelhub/3");
    known.deployment_id = 3;
    f.store.create_run(&known).await.unwrap();
    f.github.add(4, at(-30)); // missed
    let report = f.reconciler.pass().await;
    assert_eq!(report.found, ["oursky/trelhub/4"]);
    let run = f.store.get_run("oursky/trelhub/4").await.unwrap().unwrap();
    assert_eq!((run.app.as_str(), run.creator.as_str()), ("trelhub", "ci"));
    assert!(f.store.get_run("oursky/trelhub/1").await.unwrap().is_none());
    assert!(f.store.get_run("oursky/trelhub/2").await.unwrap().is_none());
    let calls = f.github.calls();
    let routes: Vec<&str> = calls.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        routes,
        [
            "/repos/oursky/trelhub/deployments?per_page=100",
            "/repos/oursky/trelhub/deployments/4/statuses?per_page=1",
            "/repos/oursky/trelhub",
            "/repos/oursky/trelhub/deployments/2/statuses?per_page=1",
        ],
        "the store is asked before GitHub; deployments before the window cost nothing"
    );
    assert!(
        f.reconciler
            .metrics
            .render(None)
            .contains("faseng_reconciled_total 1")
    );

    // Nothing changed: one 304, nothing taken twice.
    let report = f.reconciler.pass().await;
    assert_eq!((report.found.len(), report.unchanged), (0, 1));
    let calls = f.github.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, 304);
    assert!(calls[0].1.is_some(), "If-None-Match was sent");

    // A new deployment: the list changed, the repository did not.
    f.github.add(5, at(-1));
    let report = f.reconciler.pass().await;
    assert_eq!(report.found, ["oursky/trelhub/5"]);
    let calls = f.github.calls();
    let repo_call = calls
        .iter()
        .find(|(r, _, _)| r == "/repos/oursky/trelhub")
        .unwrap();
    assert_eq!(repo_call.2, 304, "the repository came from its cache");
    assert!(
        f.reconciler
            .metrics
            .render(None)
            .contains("faseng_reconciled_total 2")
    );
}

#[tokio::test]
async fn a_rate_limit_pauses_reconciling_and_keeps_the_list_unread() {
    let f = fixture().await;
    f.github.add(1, at(-10));
    f.github
        .next
        .lock()
        .unwrap()
        .push_back(answer(429, &[("retry-after", "90")], ""));
    let report = f.reconciler.pass().await;
    assert_eq!(report.rate_limited, Some(Duration::from_secs(90)));
    assert!(report.found.is_empty());
    f.github.calls();

    f.clock.advance(chrono::Duration::seconds(89));
    let report = f.reconciler.pass().await;
    assert!(report.skipped, "still waiting");
    assert!(f.github.calls().is_empty(), "nothing asked while waiting");

    f.clock.advance(chrono::Duration::seconds(1));
    let report = f.reconciler.pass().await;
    assert_eq!(report.found, ["oursky/trelhub/1"]);
    let calls = f.github.calls();
    assert_eq!(calls[0].1, None, "the limited answer left no ETag behind");
}

#[tokio::test]
async fn a_failed_repository_leaves_its_list_to_be_read_again() {
    let f = fixture().await;
    f.github.add(1, at(-10));
    // The list is read, the statuses answer fails: the list must not be remembered as
    // dealt with.
    let list = serde_json::to_string(&*f.github.deployments.lock().unwrap()).unwrap();
    {
        let mut next = f.github.next.lock().unwrap();
        next.push_back(answer(200, &[("etag", "\"v1\"")], &list));
        next.push_back(answer(500, &[], "oops"));
    }
    let report = f.reconciler.pass().await;
    assert_eq!((report.failed, report.found.len()), (1, 0));
    f.github.calls();
    let report = f.reconciler.pass().await;
    assert_eq!(report.found, ["oursky/trelhub/1"]);
    let calls = f.github.calls();
    assert_eq!(calls[0].1, None, "no If-None-Match after a failed pass");
}

#[tokio::test]
async fn a_low_budget_spaces_passes_out() {
    let f = fixture().await;
    let reset = at(600).timestamp().to_string();
    f.github.next.lock().unwrap().push_back(answer(
        200,
        &[
            ("x-ratelimit-remaining", "20"),
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-reset", &reset),
        ],
        "[]",
    ));
    let report = f.reconciler.pass().await;
    assert_eq!(report.rate_limited, None);
    // 20 left, 1 request a pass: 10 passes in the 600 s left.
    f.clock.advance(chrono::Duration::seconds(59));
    assert!(f.reconciler.pass().await.skipped);
    f.clock.advance(chrono::Duration::seconds(1));
    assert!(!f.reconciler.pass().await.skipped);
}
