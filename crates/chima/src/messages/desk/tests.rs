use chrono::{DateTime, Duration, Utc};
use deploy_core::chat::{MARKUP_INJECTIONS, slack};
use deploy_core::{Apps, GitRef};
use deploy_store::{AuditAction, AuditEntry, ChatThread};

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn now() -> DateTime<Utc> {
    t("2026-12-06T10:00:00Z")
}

fn apps() -> Apps {
    Apps::from_json(
        r#"{"demo": {"provider": "shell", "repository": "o/demo",
             "environments": ["staging", "production"], "lock_ttl": "2h"}}"#,
    )
    .unwrap()
}

fn demo() -> AppConfig {
    apps()
        .get(&AppName::parse("demo").unwrap())
        .unwrap()
        .clone()
}

fn staging() -> EnvName {
    EnvName::parse("staging").unwrap()
}

fn lock(user_name: &str, reason: &str) -> EnvLock {
    EnvLock {
        user: "U0ALICE".into(),
        user_name: user_name.into(),
        reason: reason.into(),
        at: now() - Duration::minutes(5),
        expires_at: Some(now() + Duration::minutes(59)),
        thread: None,
        reminded_at: None,
        branch: None,
    }
}

fn request(git_ref: &str) -> LineRequest {
    LineRequest {
        id: 1,
        line: "demo/staging".into(),
        user: "U0BOB".into(),
        user_name: "bob".into(),
        git_ref: git_ref.into(),
        command: format!("deploy demo/{git_ref} to staging"),
        chat: ChatThread::default(),
        at: now(),
        expires_at: now() + Duration::hours(2),
    }
}

#[test]
fn a_lock_says_who_why_and_until_when_and_how_to_wait() {
    assert_eq!(
        locked(
            &demo(),
            &staging(),
            &lock("alice", "testing"),
            false,
            now(),
            "chima"
        )
        .text(),
        "demo in staging is locked by alice: testing, until 10:59 UTC (in 59 min). Only they may deploy there; others can say `chima deploy demo/<ref> to staging when free` to wait in line. Release it with `chima unlock demo in staging`."
    );
}

#[test]
fn a_refused_deploy_names_the_holder_and_offers_the_line() {
    let blocked = crate::desk::lock_blocked(&lock("alice", "testing"));
    let reply = deploy_refused(
        &demo(),
        &staging(),
        &GitRef::parse("feature").unwrap(),
        &blocked,
        now(),
        "chima deploy demo/feature to staging when free",
        "U0BOB",
    );
    assert_eq!(
        reply.text(),
        "demo in staging is locked by alice: testing, until 10:59 UTC (in 59 min). Nothing was deployed. To deploy feature by itself as soon as it is free, say `chima deploy demo/feature to staging when free`."
    );
    assert_eq!(reply.tone(), Tone::Error);
    assert_eq!(reply.actions[0].kind, ActionKind::DeployWhenFree);
    assert_eq!(reply.actions[0].only_user.as_deref(), Some("U0BOB"));
}

#[test]
fn joining_the_line_says_the_place_and_what_it_waits_for() {
    let blocked = crate::desk::lock_blocked(&lock("alice", "testing"));
    assert_eq!(
        joined_line(
            &demo(),
            &staging(),
            &request("feature"),
            2,
            &blocked,
            now(),
            "chima"
        )
        .text(),
        "feature is #2 in line for demo in staging: it deploys by itself when the environment is free for you (until 12:00 UTC (in 2 h)). demo in staging is locked by alice: testing, until 10:59 UTC (in 59 min). Leave the line with `chima cancel demo in staging`."
    );
}

#[test]
fn reminders_offer_extend_and_unlock_to_the_holder_only() {
    let reply = lock_reminder(
        &demo(),
        &staging(),
        &lock("alice", "testing"),
        now(),
        "chima",
    );
    assert!(
        reply.text().starts_with(
            "Reminder: alice, you hold demo in staging (testing) until 10:59 UTC (in 59 min)."
        ),
        "{}",
        reply.text()
    );
    let kinds: Vec<_> = reply
        .actions
        .iter()
        .map(|a| (a.kind.clone(), a.command.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                ActionKind::ExtendLock,
                "chima lock demo in staging for 2h: testing"
            ),
            (ActionKind::Unlock, "chima unlock demo in staging"),
        ]
    );
    assert!(
        reply
            .actions
            .iter()
            .all(|a| a.only_user.as_deref() == Some("U0ALICE"))
    );
}

#[test]
fn the_audit_lists_newest_first_with_who_what_and_where() {
    let entry = AuditEntry {
        at: now() - Duration::minutes(3),
        actor: "U0ALICE".into(),
        actor_name: "alice".into(),
        action: AuditAction::Lock,
        app: "demo".into(),
        environment: Some("staging".into()),
        git_ref: None,
        sha: None,
        room: Some("#deploys".into()),
        adapter: Some("slack".into()),
        detail: "for 1h: testing".into(),
    };
    let records = [deploy_store::AuditRecord { id: 1, entry }];
    assert_eq!(
        audit(
            &AppName::parse("demo").unwrap(),
            None,
            None,
            &records,
            now(),
            deploy_core::desk::Tz::UTC
        )
        .text(),
        "Release actions for demo, newest first:\n• 09:57 UTC (3 min ago) — alice lock staging: for 1h: testing (from #deploys)"
    );
    assert_eq!(
        audit(
            &AppName::parse("demo").unwrap(),
            Some(&staging()),
            Some("2d".parse().unwrap()),
            &[],
            now(),
            deploy_core::desk::Tz::UTC
        )
        .text(),
        "No release actions for demo in staging in the last 2d yet."
    );
}

#[test]
fn values_people_typed_never_become_markup_in_slack() {
    for value in MARKUP_INJECTIONS {
        let l = lock(value, value);
        let blocked = crate::desk::lock_blocked(&l);
        let replies = [
            locked(&demo(), &staging(), &l, false, now(), "chima"),
            lock_refused(&demo(), &staging(), &blocked, now(), "chima"),
            lock_taken_from_you(
                &AppName::parse("demo").unwrap(),
                &staging(),
                value,
                Some(value),
            ),
            joined_line(
                &demo(),
                &staging(),
                &request("main"),
                1,
                &blocked,
                now(),
                "chima",
            ),
            lock_expired("demo", "staging", &l, now(), deploy_core::desk::Tz::UTC),
            lock_reminder(&demo(), &staging(), &l, now(), "chima"),
        ];
        for reply in replies {
            let shown = slack::mrkdwn(&reply.message);
            assert!(!shown.contains(['<', '>']), "{value}: {shown}");
        }
    }
}
