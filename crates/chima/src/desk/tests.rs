use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use deploy_core::desk::Blocked;
use deploy_core::{Apps, EnvName, ManualClock};
use deploy_store::{Allowance, EnvLock, NewFreeze, StoreUrl, UnfreezeGrant};

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn apps() -> Apps {
    Apps::from_json(
        r#"{"demo": {"provider": "shell", "repository": "o/demo",
             "environments": ["staging", "production"],
             "freeze": [{"from": "2026-12-24T00:00:00Z", "until": "2026-12-27T00:00:00Z",
                         "reason": "holidays", "environments": ["production"]}]}}"#,
    )
    .unwrap()
}

struct World {
    desk: Desk,
    clock: ManualClock,
    apps: Apps,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("faseng.db").display());
    let store = StoreUrl::parse(&url).unwrap().open().await.unwrap();
    let clock = ManualClock::new(t("2026-12-06T10:00:00Z"));
    World {
        desk: Desk::new(store, Arc::new(clock.clone())),
        clock,
        apps: apps(),
        _dir: dir,
    }
}

impl World {
    fn app(&self) -> &AppConfig {
        self.apps.get(&AppName::parse("demo").unwrap()).unwrap()
    }

    async fn gate(&self, env: &str, user: &str) -> Gate {
        self.desk
            .gate(self.app(), &EnvName::parse(env).unwrap(), user)
            .await
            .unwrap()
    }

    /// alice's unfreeze of demo in production, for 30 minutes from `now`.
    async fn unfreeze_alice(&self, now: DateTime<Utc>) {
        self.desk
            .store()
            .grant_unfreeze(&UnfreezeGrant {
                app: "demo".into(),
                environment: "production".into(),
                user: "U0ALICE".into(),
                user_name: "alice".into(),
                reason: "hotfix".into(),
                at: now,
                until: now + Duration::minutes(30),
            })
            .await
            .unwrap();
    }

    async fn lock(&self, env: &str, user: &str, hours: i64) {
        let now = self.desk.now();
        let lock = EnvLock {
            user: user.into(),
            user_name: user.to_lowercase(),
            reason: "testing".into(),
            at: now,
            expires_at: Some(now + Duration::hours(hours)),
            thread: None,
            reminded_at: None,
            branch: None,
        };
        self.desk
            .store()
            .acquire_lock(&format!("demo/{env}"), &lock, now)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn nothing_in_the_way_is_free() {
    let w = world().await;
    assert_eq!(w.gate("staging", "U1").await, Gate::Free);
}

#[tokio::test]
async fn someone_elses_lock_blocks_and_names_them_the_holders_lets_them_through() {
    let w = world().await;
    w.lock("staging", "U0ALICE", 1).await;
    match w.gate("staging", "U0BOB").await {
        Gate::Blocked(Blocked::Locked {
            holder_name,
            reason,
            until,
            ..
        }) => {
            assert_eq!(holder_name, "u0alice");
            assert_eq!(reason, "testing");
            assert_eq!(until, Some(t("2026-12-06T11:00:00Z")));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.gate("staging", "U0ALICE").await,
        Gate::Allowed(vec![Allowance::Lock])
    );
    assert_eq!(
        w.gate("production", "U0BOB").await,
        Gate::Free,
        "a lock holds one environment"
    );
}

#[tokio::test]
async fn a_lock_that_ran_out_blocks_nobody() {
    let w = world().await;
    w.lock("staging", "U0ALICE", 1).await;
    w.clock.advance(Duration::hours(1));
    assert_eq!(w.gate("staging", "U0BOB").await, Gate::Free);
}

#[tokio::test]
async fn an_app_json_window_freezes_its_environments_while_it_is_on() {
    let w = world().await;
    w.clock.set(t("2026-12-25T09:00:00Z"));
    match w.gate("production", "U0BOB").await {
        Gate::Blocked(Blocked::Frozen { reason, until, by }) => {
            assert_eq!(reason, "holidays");
            assert_eq!(until, t("2026-12-27T00:00:00Z"));
            assert_eq!(by, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.gate("staging", "U0BOB").await, Gate::Free);
    w.clock.set(t("2026-12-27T00:00:00Z"));
    assert_eq!(w.gate("production", "U0BOB").await, Gate::Free);
}

#[tokio::test]
async fn an_unfreeze_lets_only_its_holder_through_and_only_while_it_lasts() {
    let w = world().await;
    let now = t("2026-12-25T09:00:00Z");
    w.clock.set(now);
    w.unfreeze_alice(now).await;
    assert_eq!(
        w.gate("production", "U0ALICE").await,
        Gate::Allowed(vec![Allowance::Unfreeze])
    );
    assert!(matches!(
        w.gate("production", "U0BOB").await,
        Gate::Blocked(Blocked::Frozen { .. })
    ));
    w.clock.advance(Duration::minutes(30));
    assert!(matches!(
        w.gate("production", "U0ALICE").await,
        Gate::Blocked(Blocked::Frozen { .. })
    ));
}

#[tokio::test]
async fn a_freeze_made_in_chat_for_every_app_names_who_made_it() {
    let w = world().await;
    let now = w.desk.now();
    w.desk
        .store()
        .add_freeze(&NewFreeze {
            app: None,
            environment: None,
            from: now,
            until: now + Duration::hours(2),
            reason: "datacenter move".into(),
            by: "U0OPS".into(),
            by_name: "ops".into(),
            chat: None,
        })
        .await
        .unwrap();
    assert_eq!(
        w.gate("staging", "U0BOB").await,
        Gate::Blocked(Blocked::Frozen {
            reason: "datacenter move".into(),
            until: now + Duration::hours(2),
            by: Some("ops".into()),
        })
    );
}

#[tokio::test]
async fn a_lock_and_a_freeze_held_by_the_same_person_are_both_allowances() {
    let w = world().await;
    w.clock.set(t("2026-12-25T09:00:00Z"));
    w.lock("production", "U0ALICE", 1).await;
    let now = w.desk.now();
    w.unfreeze_alice(now).await;
    assert_eq!(
        w.gate("production", "U0ALICE").await,
        Gate::Allowed(vec![Allowance::Lock, Allowance::Unfreeze])
    );
}

#[tokio::test]
async fn a_ticket_is_redeemed_once_for_its_app_environment_and_sha() {
    let w = world().await;
    let app = AppName::parse("demo").unwrap();
    let env = EnvName::parse("staging").unwrap();
    let id = w
        .desk
        .issue_ticket(
            &app,
            &env,
            "abc123",
            ("U0ALICE", "alice"),
            vec![Allowance::Lock],
        )
        .await
        .unwrap();
    let now = w.desk.now();
    let store = w.desk.store();
    assert_eq!(
        store
            .redeem_ticket(&id, "demo", "staging", "other", now)
            .await
            .unwrap(),
        None
    );
    let ticket = store
        .redeem_ticket(&id, "demo", "staging", "abc123", now)
        .await
        .unwrap()
        .expect("the ticket");
    assert_eq!(ticket.user, "U0ALICE");
    assert_eq!(ticket.allowed_by, vec![Allowance::Lock]);
    assert_eq!(
        store
            .redeem_ticket(&id, "demo", "staging", "abc123", now)
            .await
            .unwrap(),
        None,
        "single use"
    );
}

#[tokio::test]
async fn the_audit_records_who_did_what_where() {
    let w = world().await;
    let chat = deploy_store::ChatThread {
        adapter: "shell".into(),
        room: "shell".into(),
        room_name: "shell".into(),
        thread: None,
    };
    w.desk
        .record(
            Record::new(
                ("U0ALICE", "alice"),
                deploy_store::AuditAction::Lock,
                "demo",
                Some(&chat),
            )
            .env("staging")
            .detail("for 1h: testing"),
        )
        .await;
    let page = w
        .desk
        .store()
        .audit(&deploy_store::AuditQuery {
            app: Some("demo".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = &page.items[0].entry;
    assert_eq!(
        (e.actor.as_str(), e.action, e.environment.as_deref()),
        ("U0ALICE", deploy_store::AuditAction::Lock, Some("staging"))
    );
    assert_eq!(e.room.as_deref(), Some("#shell"));
    assert_eq!(e.adapter.as_deref(), Some("shell"));
    assert_eq!(e.at, t("2026-12-06T10:00:00Z"));
}
