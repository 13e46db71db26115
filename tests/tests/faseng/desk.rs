//! The release desk as faseng enforces it (issue #15), on both backends: deployments made
//! outside chat (straight on the fake GitHub, as CI or `gh api` would; a copied payload; a
//! replayed ticket) are refused by someone else's lock or a freeze with chima's own words;
//! a desk ticket names who deploys; Heaven's `deploy:lock` / `deploy:unlock` and sticky
//! branch locks act on the desk's locks; every step is in the audit. The desk is set up
//! through the store API on the test's store, as chima would write it.

use chrono::{DateTime, Duration, Utc};
use deploy_core::desk::{Blocked, Tz};
use deploy_core::{AppName, EnvName};
use e2e::harness::{Backend, Env, Options, REPO, ROOM, WAIT, scratch};
use e2e::wait::poll_async;
use faseng::store::{
    AuditAction, AuditEntry, AuditQuery, EnvLock, NewFreeze, UnfreezeGrant, freeze_blocked,
    lock_blocked,
};
use serde_json::{Value, json};

/// Each run writes who deployed it.
const SCRIPT: &str = "echo $DEPLOY_USER >> $SCRATCH/deployed";

async fn start(backend: Backend, app: Value) -> Option<Env> {
    let opts = Options {
        script: SCRIPT.into(),
        app,
        ..Options::default()
    };
    Env::start(backend, opts).await
}

/// Who deployed, in order (empty when nothing ran).
fn deployed(env: &Env) -> Vec<String> {
    std::fs::read_to_string(scratch(env.dir.path(), "deployed"))
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A deployment of `main` made straight on the fake GitHub, as CI or `gh api` makes one:
/// no payload, no ticket; its creator is the token's user.
async fn outside_chat(env: &Env, environment: &str) -> u64 {
    let d = env
        .gh
        .create_deployment(
            REPO,
            json!({"ref": "main", "environment": environment, "auto_merge": false,
                   "required_contexts": []}),
        )
        .await;
    d["id"].as_u64().unwrap()
}

/// Who the fake says created a deployment made with the test token.
const CREATOR: &str = "chima-bot";

/// `user`'s lock on trelhub in `environment` for `hours`, written as chima writes one.
async fn lock(env: &Env, environment: &str, user: &str, reason: &str, hours: i64) -> EnvLock {
    let now = Utc::now();
    let lock = EnvLock {
        user: e2e::harness::user_id(user),
        user_name: user.into(),
        reason: reason.into(),
        at: now,
        expires_at: Some(now + Duration::hours(hours)),
        thread: None,
        reminded_at: None,
        branch: None,
    };
    let line = format!("trelhub/{environment}");
    let held = env
        .store()
        .await
        .acquire_lock(&line, &lock, now)
        .await
        .unwrap();
    assert_eq!(held, lock);
    lock
}

/// The status description chima's refusal becomes: the desk's words, cut to GitHub's limit.
fn refusal(blocked: &Blocked, environment: &str) -> String {
    let app = AppName::parse("trelhub").unwrap();
    let env = EnvName::parse(environment).unwrap();
    faseng::messages::description(&blocked.plain(&app, &env, Utc::now(), Tz::UTC))
}

/// Waits for deployment `id`'s final status and asserts it is `error` with `description`.
async fn expect_refused(env: &Env, id: u64, description: &str) {
    let s = env.wait_final(id).await;
    assert_eq!(
        (s["state"].as_str(), s["description"].as_str()),
        (Some("error"), Some(description)),
        "#{id}: {s}"
    );
}

async fn expect_success(env: &Env, id: u64) {
    let s = env.wait_final(id).await;
    assert_eq!(s["state"], "success", "#{id}: {s}");
}

/// The audit of trelhub, oldest first.
async fn audit(env: &Env) -> Vec<AuditEntry> {
    let query = AuditQuery {
        app: Some("trelhub".into()),
        ..AuditQuery::default()
    };
    let mut entries: Vec<AuditEntry> = env
        .store()
        .await
        .audit(&query)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.entry)
        .collect();
    entries.reverse();
    entries
}

/// Waits until the audit holds an entry `pick` accepts; returns it.
async fn audited(env: &Env, what: &str, pick: impl Fn(&AuditEntry) -> bool) -> AuditEntry {
    poll_async(
        what,
        WAIT,
        || async { audit(env).await.into_iter().find(|e| pick(e)) },
        String::new,
    )
    .await
}

/// The lock on trelhub in `environment` now.
async fn lock_on(env: &Env, environment: &str) -> Option<EnvLock> {
    env.store()
        .await
        .lock_at(&format!("trelhub/{environment}"), Utc::now())
        .await
        .unwrap()
}

/// Asserts `at` is `span` after a time between `before` and `after`.
fn about(at: Option<DateTime<Utc>>, before: DateTime<Utc>, after: DateTime<Utc>, span: Duration) {
    let at = at.expect("an expiry");
    assert!(
        before + span <= at && at <= after + span,
        "{at} is not {span} after [{before}, {after}]"
    );
}

async fn a_deployment_made_outside_chat_into_a_locked_environment_is_refused(backend: Backend) {
    let Some(env) = start(backend, json!({})).await else {
        return;
    };
    let held = lock(&env, "edge", "alice", "testing the migration", 2).await;
    let words = refusal(&lock_blocked(&held), "edge");
    assert!(
        words.starts_with("⚿ trelhub in edge is locked by alice: testing the migration, until "),
        "{words}"
    );

    let id = outside_chat(&env, "edge").await;
    expect_refused(&env, id, &words).await;

    // chima's payload for alice copied without her ticket: `notify` names her, but only a
    // ticket or the creator says who deploys. The chat message gets the full refusal.
    let (payload, ts) = env.payload("alice");
    let copied = env.deploy_payload("edge", "deploy", payload).await;
    expect_refused(&env, copied, &words).await;
    let msg = env
        .slack
        .wait_for_text(ROOM, &ts, "was refused", WAIT)
        .await;
    assert!(
        msg.text
            .starts_with(":lock: chima-bot's deployment of trelhub/main")
            && msg.text.contains(
                "was refused: trelhub in edge is locked by alice: testing the migration, until "
            ),
        "{}",
        msg.text
    );

    // Other environments are free.
    let staging = outside_chat(&env, "staging").await;
    expect_success(&env, staging).await;
    assert_eq!(deployed(&env), [CREATOR], "a refused deploy ran");
}

async fn a_ticket_for_the_holder_lets_the_deployment_through_once(backend: Backend) {
    let Some(env) = start(backend, json!({})).await else {
        return;
    };
    let held = lock(&env, "edge", "alice", "testing", 2).await;
    let (payload, _) = env.ticketed_payload("edge", "alice", "main").await;
    let id = env.deploy_payload("edge", "deploy", payload.clone()).await;
    expect_success(&env, id).await;
    assert_eq!(deployed(&env), ["alice"]);

    // The same payload again (copied, ticket and all): the ticket is used up, so the
    // creator deploys, and the lock is not theirs.
    let replayed = env.deploy_payload("edge", "deploy", payload).await;
    expect_refused(&env, replayed, &refusal(&lock_blocked(&held), "edge")).await;
    // A ticket for bob is his, not the holder's.
    let (bob, _) = env.deploy("edge", "deploy", "bob").await;
    expect_refused(&env, bob, &refusal(&lock_blocked(&held), "edge")).await;
    assert_eq!(deployed(&env), ["alice"]);
}

async fn freezes_refuse_and_an_unfreeze_lets_its_holder_through(backend: Backend) {
    let now = Utc::now();
    let until: DateTime<Utc> = (now + Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        .parse()
        .unwrap();
    let window = json!({"freeze": [{"from": (now - Duration::hours(1)).to_rfc3339(),
                                     "until": until.to_rfc3339(), "reason": "release prep",
                                     "environments": ["edge"]}]});
    let Some(env) = start(backend, window).await else {
        return;
    };
    let frozen = Blocked::Frozen {
        reason: "release prep".into(),
        until,
        by: None,
    };
    let words = refusal(&frozen, "edge");
    assert!(
        words.starts_with("⚠ trelhub in edge is frozen: release prep, until "),
        "{words}"
    );
    let (joyz, _) = env.deploy("edge", "deploy", "joyz").await;
    expect_refused(&env, joyz, &words).await;
    let ci = outside_chat(&env, "edge").await;
    expect_refused(&env, ci, &words).await;

    // An ad-hoc freeze made in chat, of staging.
    let store = env.store().await;
    let ad_hoc = store
        .add_freeze(&NewFreeze {
            app: Some("trelhub".into()),
            environment: Some("staging".into()),
            from: now,
            until: now + Duration::hours(2),
            reason: "database move".into(),
            by: e2e::harness::user_id("bob"),
            by_name: "bob".into(),
            chat: None,
        })
        .await
        .unwrap();
    let (staging, _) = env.deploy("staging", "deploy", "joyz").await;
    expect_refused(&env, staging, &refusal(&freeze_blocked(&ad_hoc), "staging")).await;

    // joyz's unfreeze of edge lets joyz (by ticket) through, nobody else.
    store
        .grant_unfreeze(&UnfreezeGrant {
            app: "trelhub".into(),
            environment: "edge".into(),
            user: e2e::harness::user_id("joyz"),
            user_name: "joyz".into(),
            reason: "hotfix".into(),
            at: now,
            until: now + Duration::minutes(30),
        })
        .await
        .unwrap();
    let (joyz, _) = env.deploy("edge", "deploy", "joyz").await;
    expect_success(&env, joyz).await;
    let (bob, _) = env.deploy("edge", "deploy", "bob").await;
    expect_refused(&env, bob, &words).await;
    let ci = outside_chat(&env, "edge").await;
    expect_refused(&env, ci, &words).await;
    assert_eq!(deployed(&env), ["joyz"]);
}

async fn deploy_lock_and_unlock_act_on_the_desks_locks(backend: Backend) {
    let Some(env) = start(backend, json!({"lock_ttl": "2h"})).await else {
        return;
    };
    let before = Utc::now();
    let (id, ts) = env.deploy("edge", "deploy:lock", "alice").await;
    let s = env.wait_final(id).await;
    let after = Utc::now();
    assert_eq!(s["state"], "success", "{s}");
    assert!(
        s["description"]
            .as_str()
            .unwrap()
            .starts_with("trelhub locked on edge by alice until "),
        "{s}"
    );
    let held = lock_on(&env, "edge").await.expect("a lock in the store");
    assert_eq!(
        (
            held.user.as_str(),
            held.user_name.as_str(),
            held.reason.as_str(),
            held.branch.as_deref()
        ),
        ("U0ALICE", "alice", "deploy:lock on edge", None)
    );
    about(held.expires_at, before, after, Duration::hours(2));
    let thread = held
        .thread
        .as_ref()
        .expect("the lock talks where it was asked for");
    assert_eq!(
        (thread.room.as_str(), thread.thread.as_deref()),
        (ROOM, Some(ts.as_str()))
    );
    let locked = audited(&env, "the lock in the audit", |e| {
        e.action == AuditAction::Lock
    })
    .await;
    assert_eq!(
        (
            locked.actor.as_str(),
            locked.environment.as_deref(),
            locked.room.as_deref(),
            locked.adapter.as_deref()
        ),
        ("U0ALICE", Some("edge"), Some("#deployment"), Some("slack"))
    );
    assert_eq!(
        locked.detail,
        format!("deploy:lock on edge (deploy:lock, deployment #{id})")
    );

    // Someone else can neither unlock it nor deploy through it.
    let (bob, _) = env.deploy("edge", "deploy:unlock", "bob").await;
    let s = env.wait_final(bob).await;
    assert_eq!(
        (s["state"].as_str(), s["description"].as_str()),
        (
            Some("error"),
            Some("trelhub is locked on edge by alice; only they can unlock it")
        ),
        "{s}"
    );
    assert_eq!(lock_on(&env, "edge").await.as_ref(), Some(&held));

    let (id, _) = env.deploy("edge", "deploy:unlock", "alice").await;
    let s = env.wait_final(id).await;
    assert_eq!(
        s["description"], "trelhub unlocked on edge (was locked by alice)",
        "{s}"
    );
    assert_eq!(lock_on(&env, "edge").await, None);
    let unlocked = audited(&env, "the unlock in the audit", |e| {
        e.action == AuditAction::Unlock
    })
    .await;
    assert_eq!(unlocked.actor, "U0ALICE");
    let actions: Vec<AuditAction> = audit(&env).await.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [AuditAction::Lock, AuditAction::Unlock],
        "bob's refused unlock changed nothing"
    );
}

async fn a_branch_deploy_locks_the_environment_until_the_default_branch_is_back(backend: Backend) {
    let Some(env) = start(backend, json!({"branch_lock": true})).await else {
        return;
    };
    env.gh.set_branch(REPO, "feature/x", &env.sha);
    let before = Utc::now();
    let (branch, _) = env.deploy_ref("edge", "deploy", "alice", "feature/x").await;
    expect_success(&env, branch).await;
    let after = Utc::now();
    let held = lock_on(&env, "edge").await.expect("a branch lock");
    assert_eq!(
        (
            held.user.as_str(),
            held.reason.as_str(),
            held.branch.as_deref()
        ),
        ("U0ALICE", "feature/x is on edge", Some("feature/x"))
    );
    about(held.expires_at, before, after, Duration::hours(4));

    // bob's deploy of main is refused; alice's brings main back and frees edge.
    let (bob, _) = env.deploy("edge", "deploy", "bob").await;
    expect_refused(&env, bob, &refusal(&lock_blocked(&held), "edge")).await;
    let (main, _) = env.deploy("edge", "deploy", "alice").await;
    expect_success(&env, main).await;
    assert_eq!(lock_on(&env, "edge").await, None);
    let (bob, _) = env.deploy("edge", "deploy", "bob").await;
    expect_success(&env, bob).await;
    assert_eq!(deployed(&env), ["alice", "alice", "bob"]);

    let entries = audit(&env).await;
    let locks: Vec<(AuditAction, &str, &str)> = entries
        .iter()
        .filter(|e| matches!(e.action, AuditAction::Lock | AuditAction::Unlock))
        .map(|e| {
            (
                e.action,
                e.actor.as_str(),
                e.git_ref.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        locks,
        [
            (AuditAction::Lock, "U0ALICE", "feature/x"),
            (AuditAction::Unlock, "U0ALICE", "main")
        ]
    );

    // A lock taken by hand is not a branch lock: deploying main leaves it.
    lock(&env, "staging", "alice", "testing", 1).await;
    let (main, _) = env.deploy("staging", "deploy", "alice").await;
    expect_success(&env, main).await;
    assert_eq!(
        lock_on(&env, "staging").await.map(|l| l.reason),
        Some("testing".to_owned())
    );
}

async fn a_deploy_made_outside_chat_is_audited_with_its_creator(backend: Backend) {
    let Some(env) = start(backend, json!({})).await else {
        return;
    };
    let id = outside_chat(&env, "edge").await;
    expect_success(&env, id).await;
    let entry = audited(&env, "the deploy in the audit", |e| {
        e.action == AuditAction::Deploy
    })
    .await;
    assert_eq!(
        (
            entry.actor.as_str(),
            entry.environment.as_deref(),
            entry.git_ref.as_deref(),
            entry.sha.as_deref(),
            entry.adapter.as_deref(),
            entry.detail.as_str()
        ),
        (
            CREATOR,
            Some("edge"),
            Some("main"),
            Some(env.sha.as_str()),
            Some("github"),
            format!("deployment #{id} (deploy)").as_str()
        )
    );

    // chima audits the deploys it makes (with a ticket): faseng does not write them again.
    let (chat, _) = env.deploy("edge", "deploy", "joyz").await;
    expect_success(&env, chat).await;
    let later = outside_chat(&env, "edge").await;
    expect_success(&env, later).await;
    audited(&env, "the second deploy in the audit", |e| {
        e.detail == format!("deployment #{later} (deploy)")
    })
    .await;
    let deploys: Vec<String> = audit(&env)
        .await
        .into_iter()
        .filter(|e| e.action == AuditAction::Deploy)
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        deploys,
        [
            format!("deployment #{id} (deploy)"),
            format!("deployment #{later} (deploy)")
        ]
    );
}

/// Issue #16: into a protected environment, only an approved release request's deployment
/// of exactly its commit runs; `gh api`, a chat deploy without a request, a request for
/// another commit or not yet approved are refused.
async fn a_protected_environment_takes_only_an_approved_requests_commit(backend: Backend) {
    let protect = json!({"protect": {"edge": {"approvers": ["bob"]}}});
    let Some(env) = start(backend, protect).await else {
        return;
    };
    let words = "trelhub in edge is protected: it is deployed only through an approved release request (in chat: `deploy trelhub to edge` opens one).";
    let ci = outside_chat(&env, "edge").await;
    expect_refused(&env, ci, words).await;
    let (chat, _) = env.deploy("edge", "deploy", "joyz").await;
    expect_refused(&env, chat, words).await;

    let sha = env.gh.branch_sha(REPO, "main");
    let store = env.store().await;
    let now = Utc::now();
    let request = store
        .open_request(&faseng::store::NewRequest {
            app: "trelhub".into(),
            environment: "edge".into(),
            git_ref: "main".into(),
            sha: sha.clone(),
            requester: e2e::harness::user_id("joyz"),
            requester_name: "joyz".into(),
            chat: Default::default(),
            opened_at: now,
            expires_at: now + Duration::hours(4),
        })
        .await
        .unwrap();
    let with_request = |n: u64| vec![faseng::store::Allowance::Request(n)];
    let not_yet = format!(
        "trelhub in edge is protected: it is deployed only through an approved release request, and request #{} is not approved for this commit and environment.",
        request.id
    );
    let (mut payload, _) = env.payload("joyz");
    payload["desk_ticket"] = json!(
        env.ticket("edge", "joyz", &sha, with_request(request.id))
            .await
    );
    payload["request"] = json!(request.id);
    let open = env.deploy_payload("edge", "deploy", payload).await;
    expect_refused(&env, open, &faseng::messages::description(&not_yet)).await;

    let mut approved = request.clone();
    approved.state = faseng::store::RequestState::Deploying;
    store
        .update_request(&approved)
        .await
        .unwrap()
        .expect("approved");
    let (mut payload, _) = env.payload("joyz");
    payload["desk_ticket"] = json!(
        env.ticket("edge", "joyz", &sha, with_request(request.id))
            .await
    );
    payload["request"] = json!(request.id);
    let released = env.deploy_payload("edge", "deploy", payload).await;
    expect_success(&env, released).await;
    assert_eq!(deployed(&env), ["joyz"]);

    // The approved request does not cover another commit.
    let other = env.gh.add_branch(REPO, "other");
    let (mut payload, _) = env.payload("joyz");
    payload["desk_ticket"] = json!(
        env.ticket("edge", "joyz", &other, with_request(request.id))
            .await
    );
    let id = env.create_ref("edge", "deploy", "other", payload).await;
    expect_refused(&env, id, &faseng::messages::description(&not_yet)).await;
    assert_eq!(deployed(&env), ["joyz"]);
}

e2e::both_backends!(
    a_protected_environment_takes_only_an_approved_requests_commit,
    a_deployment_made_outside_chat_into_a_locked_environment_is_refused,
    a_ticket_for_the_holder_lets_the_deployment_through_once,
    freezes_refuse_and_an_unfreeze_lets_its_holder_through,
    deploy_lock_and_unlock_act_on_the_desks_locks,
    a_branch_deploy_locks_the_environment_until_the_default_branch_is_back,
    a_deploy_made_outside_chat_is_audited_with_its_creator,
);
