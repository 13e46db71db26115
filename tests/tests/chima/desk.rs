//! The release desk in chat, as a conversation: locks that expire and remind, the line you
//! join with `when free`, takeovers, freezes and unfreezes, and the audit of it all. chima's
//! bot in process against the fake GitHub, with the store on both backends and a clock the
//! scenario moves by hand.

use chrono::{DateTime, Duration, Utc};
use e2e::backend::Backend;
use e2e::chat::example_apps;
use e2e::conversation::{Conversation, at};
use faseng::store::{AuditAction, StoreUrl};

const REPO: &str = "oursky/trelhub";

fn t(s: &str) -> DateTime<Utc> {
    at(s)
}

/// A conversation about the shipped apps, with branches `feature` and `hotfix` of trelhub.
async fn start(backend: Backend) -> Option<Conversation> {
    let desk = Conversation::start(backend, example_apps()).await?;
    desk.chat.gh.add_branch(REPO, "feature");
    desk.chat.gh.add_branch(REPO, "hotfix");
    Some(desk)
}

async fn a_lock_keeps_everyone_else_out_before_github_is_asked(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    let locked = desk
        .say(
            "alice",
            "lock trelhub in edge for 1h: testing the migration",
        )
        .await;
    assert_eq!(
        locked,
        "trelhub in edge is locked by alice: testing the migration, until 10:00 UTC (in 1 h). Only they may deploy there; others can say `chima deploy trelhub/<ref> to edge when free` to wait in line. Release it with `chima unlock trelhub in edge`."
    );
    let refused = desk.say("joyz", "deploy trelhub/feature to edge").await;
    assert_eq!(
        refused,
        "trelhub in edge is locked by alice: testing the migration, until 10:00 UTC (in 1 h). Nothing was deployed. To deploy feature by itself as soon as it is free, say `chima deploy trelhub/feature to edge when free`."
    );
    assert!(desk.deployments(REPO).is_empty(), "GitHub was not asked");
    let forced = desk.say("joyz", "deploy! trelhub/feature to edge").await;
    assert!(forced.contains("is locked by alice"), "{forced}");
    assert!(
        desk.deployments(REPO).is_empty(),
        "deploy! never skips a lock"
    );
    let other_env = desk
        .says("joyz", "deploy trelhub/feature to pandawork")
        .await;
    assert!(other_env[0].starts_with("Deployment #"), "{other_env:?}");

    let mine = desk.says("alice", "deploy trelhub/hotfix to edge").await;
    assert!(
        mine[0].starts_with("Deployment #"),
        "the holder deploys: {mine:?}"
    );
    let deployments = desk.deployments(REPO);
    let hotfix = deployments
        .iter()
        .find(|d| d["ref"] == "hotfix")
        .expect("alice's deployment");
    let ticket = hotfix["payload"]["desk_ticket"]
        .as_str()
        .expect("a desk ticket");
    let store = StoreUrl::parse(&desk.url).unwrap().open().await.unwrap();
    let sha = hotfix["sha"].as_str().unwrap().to_owned();
    let redeemed = store
        .redeem_ticket(
            ticket,
            "trelhub",
            "edge",
            &sha,
            deploy_core::Clock::now(&desk.clock),
        )
        .await
        .unwrap()
        .expect("the ticket matches the deployment");
    assert_eq!(redeemed.user, "U0ALICE");
    assert_eq!(redeemed.allowed_by, vec![faseng::store::Allowance::Lock]);
}

async fn a_request_in_line_deploys_by_itself_when_the_holder_unlocks(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    desk.say("alice", "lock trelhub in edge: testing").await;
    let joined = desk
        .say("joyz", "deploy trelhub/feature to edge when free")
        .await;
    assert!(
        joined.starts_with("feature is #1 in line for trelhub in edge"),
        "{joined}"
    );
    let second = desk
        .say("bob", "deploy trelhub/hotfix to edge when free")
        .await;
    assert!(second.starts_with("hotfix is #2 in line"), "{second}");
    assert!(desk.deployments(REPO).is_empty());

    let unlocked = desk.say("alice", "unlock trelhub in edge").await;
    assert_eq!(
        unlocked,
        "trelhub in edge is unlocked. The 2 requests waiting in line go in order."
    );
    let deployed = desk.deployments(REPO);
    assert_eq!(deployed.len(), 2, "both requests were handed off");
    let refs: Vec<&str> = deployed
        .iter()
        .map(|d| d["ref"].as_str().unwrap())
        .collect();
    assert!(
        refs.contains(&"feature") && refs.contains(&"hotfix"),
        "{refs:?}"
    );
    let joyz = deployed.iter().find(|d| d["ref"] == "feature").unwrap();
    assert_eq!(joyz["payload"]["notify"]["user"], "U0JOYZ");
    let said = desk.said();
    assert!(
        said.iter()
            .any(|(_, text)| text
                == "joyz, trelhub in edge is free: deploying feature as you asked."),
        "{said:#?}"
    );
    let actions: Vec<AuditAction> = desk
        .audit("trelhub")
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(
        actions,
        [
            AuditAction::Lock,
            AuditAction::LineJoin,
            AuditAction::LineJoin,
            AuditAction::Unlock,
            AuditAction::HandOff,
            AuditAction::Deploy,
            AuditAction::HandOff,
            AuditAction::Deploy,
        ]
    );
    let audit = desk.say("joyz", "audit trelhub").await;
    assert!(
        audit.starts_with("Release actions for trelhub, newest first:"),
        "{audit}"
    );
    assert!(
        audit.contains("alice lock edge: for 4h: testing (from #deployment)"),
        "{audit}"
    );
}

async fn only_the_holder_unlocks_and_a_takeover_tells_the_holder(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    desk.say("alice", "lock trelhub in edge: testing").await;
    let refused = desk.say("joyz", "unlock trelhub in edge").await;
    assert!(
        refused.contains("Only alice can unlock it") && refused.ends_with("Nothing was done."),
        "{refused}"
    );
    desk.say("bob", "deploy trelhub/hotfix to edge when free")
        .await;
    let taken = desk
        .say("joyz", "unlock! trelhub in edge: prod is down")
        .await;
    assert!(
        taken.starts_with("trelhub in edge is now locked by joyz (taken over from alice, who was told): prod is down"),
        "{taken}"
    );
    let said = desk.said();
    let told = "joyz took your lock on trelhub in edge: prod is down.";
    assert!(
        said.iter()
            .any(|(place, text)| place.starts_with("C024BE91L/") && text == told),
        "told in the lock's thread: {said:#?}"
    );
    assert!(
        said.contains(&("dm:U0ALICE".to_owned(), told.to_owned())),
        "and directly: {said:#?}"
    );
    assert!(
        desk.deployments(REPO).is_empty(),
        "a takeover does not move the line"
    );
    let refused = desk.say("alice", "deploy trelhub/feature to edge").await;
    assert!(
        refused.contains("is locked by joyz: prod is down"),
        "{refused}"
    );
    let actions: Vec<(AuditAction, String)> = desk.audit("trelhub").await;
    assert!(
        actions.contains(&(AuditAction::Takeover, "joyz".into())),
        "{actions:?}"
    );
}

async fn locks_remind_their_holder_and_run_out_on_the_clock(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    desk.say("alice", "lock trelhub in edge for 3h: testing")
        .await;
    desk.say("joyz", "deploy trelhub/feature to edge when free")
        .await;
    desk.clock.advance(Duration::minutes(119));
    assert_eq!(desk.chat.tick().await.reminded, 0, "not yet 2h");
    desk.clock.advance(Duration::minutes(1));
    assert_eq!(desk.chat.tick().await.reminded, 1);
    let said = desk.said();
    let (place, reminder) = said.last().unwrap();
    assert!(
        place.starts_with("C024BE91L/"),
        "in the lock's thread: {place}"
    );
    assert!(
        reminder.starts_with(
            "Reminder: alice, you hold trelhub in edge (testing) until 12:00 UTC (in 1 h)."
        ),
        "{reminder}"
    );
    let buttons = desk.chat.poster.replies().last().unwrap().1.actions.clone();
    assert_eq!(
        buttons[0].command,
        "chima lock trelhub in edge for 4h: testing"
    );
    assert_eq!(buttons[1].command, "chima unlock trelhub in edge");
    assert_eq!(desk.chat.tick().await.reminded, 0, "once per lock_reminder");

    desk.clock.advance(Duration::hours(1));
    let tick = desk.chat.tick().await;
    assert_eq!((tick.expired, tick.handed_off), (1, 1), "{tick:?}");
    let said = desk.said();
    assert!(
        said.iter().any(|(_, t)| t.starts_with(
            "trelhub in edge is unlocked: the lock of alice (testing) ran out at 12:00 UTC"
        )),
        "{said:#?}"
    );
    assert_eq!(
        desk.deployments(REPO).len(),
        1,
        "the line moved when the lock ran out"
    );
    let actions: Vec<AuditAction> = desk
        .audit("trelhub")
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert!(actions.contains(&AuditAction::LockExpired), "{actions:?}");
}

async fn extending_a_lock_keeps_it_and_delays_the_next_reminder(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    desk.say("alice", "lock trelhub in edge for 3h: testing")
        .await;
    desk.clock.advance(Duration::hours(2));
    assert_eq!(desk.chat.tick().await.reminded, 1);
    let extended = desk
        .say("alice", "lock trelhub in edge for 4h: testing")
        .await;
    assert!(
        extended.starts_with(
            "trelhub in edge stays locked by alice: testing, until 15:00 UTC (in 4 h)."
        ),
        "{extended}"
    );
    desk.clock.advance(Duration::hours(1));
    let tick = desk.chat.tick().await;
    assert_eq!((tick.expired, tick.reminded), (0, 0), "{tick:?}");
    let actions: Vec<AuditAction> = desk
        .audit("trelhub")
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(actions, [AuditAction::Lock, AuditAction::Extend]);
}

async fn a_request_leaves_the_line_by_cancel_or_after_lock_ttl(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    desk.say("alice", "lock trelhub in edge for 7d: long test")
        .await;
    desk.say("joyz", "deploy trelhub/feature to edge when free")
        .await;
    desk.say("bob", "deploy trelhub/hotfix to edge when free")
        .await;
    assert_eq!(
        desk.say("bob", "cancel trelhub in edge").await,
        "You left the line for trelhub in edge: hotfix will not be deployed."
    );
    assert_eq!(
        desk.say("bob", "cancel trelhub in edge").await,
        "You are not in line for trelhub in edge. Nothing was done."
    );
    let queue = desk.say("bob", "queue trelhub in edge").await;
    assert!(
        queue.contains("trelhub in edge — locked by alice until Mon 14 Dec 09:00 UTC (in 7 days)")
            && queue.contains("1. feature by joyz — waiting in line"),
        "{queue}"
    );
    desk.clock.advance(Duration::hours(4));
    let tick = desk.chat.tick().await;
    assert_eq!(tick.line_expired, 1, "{tick:?}");
    let said = desk.said();
    assert!(
        said.iter().any(|(_, t)| t.starts_with(
            "feature left the line for trelhub in edge: it waited as long as the app's lock_ttl."
        )),
        "{said:#?}"
    );
    assert!(desk.deployments(REPO).is_empty());
}

async fn a_freeze_refuses_deploys_until_the_person_unfreezes(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    let frozen = desk
        .say("ops", "freeze trelhub in pandawork for 2h: release train")
        .await;
    assert!(
        frozen.starts_with(
            "trelhub in pandawork is frozen by ops: release train, until 11:00 UTC (in 2 h)."
        ),
        "{frozen}"
    );
    let refused = desk
        .say("joyz", "deploy trelhub/feature to pandawork")
        .await;
    assert!(
        refused.starts_with("trelhub in pandawork is frozen by ops: release train, until 11:00 UTC (in 2 h). Nothing was deployed."),
        "{refused}"
    );
    assert!(desk.deployments(REPO).is_empty());
    assert_eq!(
        desk.say("joyz", "unfreeze trelhub in pandawork for 2h: hotfix")
            .await,
        "An unfreeze lasts at most 1h; 2h is too long. Nothing was done."
    );
    let unfrozen = desk
        .say("joyz", "unfreeze trelhub in pandawork: hotfix for login")
        .await;
    assert!(
        unfrozen.starts_with("joyz lifted the freeze on trelhub in pandawork for themselves only, until 09:30 UTC (in 30 min): hotfix for login."),
        "{unfrozen}"
    );
    let deployed = desk
        .says("joyz", "deploy trelhub/feature to pandawork")
        .await;
    assert!(deployed[0].starts_with("Deployment #"), "{deployed:?}");
    let still = desk.say("bob", "deploy trelhub/hotfix to pandawork").await;
    assert!(still.contains("is frozen by ops"), "{still}");
    desk.clock.advance(Duration::minutes(30));
    let again = desk
        .say("joyz", "deploy trelhub/feature to pandawork")
        .await;
    assert!(
        again.contains("is frozen by ops"),
        "the unfreeze ran out: {again}"
    );
    let freezes = desk.say("bob", "freezes trelhub").await;
    assert!(
        freezes.contains(
            "trelhub in pandawork — on now, until 11:00 UTC (in 2 h): release train (by ops)"
        ),
        "{freezes}"
    );
    let actions: Vec<AuditAction> = desk
        .audit("trelhub")
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(
        actions,
        [
            AuditAction::Freeze,
            AuditAction::Unfreeze,
            AuditAction::Deploy
        ]
    );
}

async fn an_app_json_window_freezes_on_its_schedule_in_its_zone(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    // modmod-web (shipped app.json): production frozen from Friday 18:00 for 64h, Hong Kong.
    desk.chat.gh.add_repo("oursky/modmod-web", "main");
    desk.clock.set(t("2026-12-11T09:30:00Z"));
    let before = desk.says("joyz", "deploy modmod-web to production").await;
    assert!(before[0].starts_with("Deployment #"), "{before:?}");
    desk.clock.set(t("2026-12-11T11:00:00Z"));
    let refused = desk.say("joyz", "deploy modmod-web to production").await;
    assert_eq!(
        refused,
        "modmod-web in production is frozen: weekend: no production releases, until Mon 14 Dec 10:00 HKT (in 3 days). Nothing was deployed. To deploy main by itself as soon as it is free, say `chima deploy modmod-web/main to production when free`."
    );
    let edge = desk.says("joyz", "deploy modmod-web to edge").await;
    assert!(
        edge[0].starts_with("Deployment #"),
        "only production: {edge:?}"
    );
    let freezes = desk.say("joyz", "freezes modmod-web").await;
    assert!(
        freezes.contains("modmod-web in production — on now, 02:00 HKT (in 0 min)")
            || freezes.contains("modmod-web in production — on now"),
        "{freezes}"
    );
}

async fn locks_lists_every_lock_and_the_desk_checks_names(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    assert_eq!(desk.say("joyz", "locks").await, "No locks.");
    desk.say("alice", "lock trelhub in edge for 2h: testing")
        .await;
    assert_eq!(
        desk.say("joyz", "locks trelhub").await,
        "Locks:\n• trelhub in edge — alice: testing, since 09:00 UTC (just now), until 11:00 UTC (in 2 h)"
    );
    assert_eq!(
        desk.say("joyz", "lock trelhub in staging: x").await,
        "trelhub doesn't seem to have a staging environment. It has: pandawork, edge."
    );
    assert_eq!(
        desk.say("joyz", "lock trelhub in edge for 8d: x").await,
        "A lock lasts at most 7d; 8d is too long. Nothing was done."
    );
    assert_eq!(
        desk.say("joyz", "unlock trelhub in pandawork").await,
        "trelhub in pandawork is not locked. Nothing was done."
    );
}

/// The ticket's sha is read from GitHub first; when that read fails, a deploy nothing stands
/// in the way of still goes ahead (without a ticket), and one that needs the desk's word
/// (the holder's own lock) says what failed instead.
async fn a_failing_sha_lookup_blocks_only_what_needs_a_ticket(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    let gh = &desk.chat.gh;
    gh.fail_next("GET", "/repos/oursky/trelhub/commits/*/status", 3);
    let free = desk
        .says("joyz", "deploy trelhub/feature to pandawork")
        .await;
    assert!(free[0].starts_with("Deployment #"), "{free:?}");
    let deployed = desk.deployments(REPO);
    assert!(
        deployed[0]["payload"].get("desk_ticket").is_none(),
        "{deployed:?}"
    );

    desk.say("alice", "lock trelhub in edge: testing").await;
    gh.fail_next("GET", "/repos/oursky/trelhub/commits/*/status", 3);
    let mine = desk.say("alice", "deploy trelhub/hotfix to edge").await;
    assert!(
        mine.starts_with("Unable to read the ref for oursky/trelhub: GitHub answered 500"),
        "{mine}"
    );
    assert_eq!(desk.deployments(REPO).len(), 1, "nothing more was deployed");
}

e2e::both_backends!(
    a_failing_sha_lookup_blocks_only_what_needs_a_ticket,
    a_lock_keeps_everyone_else_out_before_github_is_asked,
    a_request_in_line_deploys_by_itself_when_the_holder_unlocks,
    only_the_holder_unlocks_and_a_takeover_tells_the_holder,
    locks_remind_their_holder_and_run_out_on_the_clock,
    extending_a_lock_keeps_it_and_delays_the_next_reminder,
    a_request_leaves_the_line_by_cancel_or_after_lock_ttl,
    a_freeze_refuses_deploys_until_the_person_unfreezes,
    an_app_json_window_freezes_on_its_schedule_in_its_zone,
    locks_lists_every_lock_and_the_desk_checks_names,
);

mod slack {
    //! The desk over Slack: a refusal's "Deploy when free" button joins the line, the
    //! hand-off is said in the requester's thread, reminders come with an Extend button, and
    //! the holder of a lock taken over hears it in the lock's thread and by direct message.

    use std::time::Duration;

    use e2e::backend::{Backend, Queue};
    use e2e::slack_app::{BOB, DEPLOYMENT, DeskSetup, JOYZ, SlackHarness, WAIT};

    use super::t;

    async fn harness(
        backend: Backend,
    ) -> Option<(
        SlackHarness,
        deploy_core::ManualClock,
        Queue,
        tempfile::TempDir,
    )> {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::start(backend, dir.path())?;
        let clock = deploy_core::ManualClock::new(t("2026-12-07T09:00:00Z"));
        let h = SlackHarness::start_with(
            Duration::from_secs(3600),
            Some(DeskSetup {
                store_url: queue.url.clone(),
                clock: clock.clone(),
            }),
        )
        .await;
        h.slack.add_user(BOB, "bob");
        Some((h, clock, queue, dir))
    }

    async fn the_refusal_button_joins_the_line_and_the_unlock_hands_off(backend: Backend) {
        let Some((h, _clock, _queue, _dir)) = harness(backend).await else {
            return;
        };
        let lock = h
            .mention(DEPLOYMENT, BOB, "lock trelhub in edge: testing")
            .await;
        h.reply_in_thread(DEPLOYMENT, &lock, "is locked by bob")
            .await;
        let ask = h.mention(DEPLOYMENT, JOYZ, "deploy trelhub to edge").await;
        let refusal = h
            .reply_in_thread(DEPLOYMENT, &ask, "is locked by bob: testing")
            .await;
        assert_eq!(
            refusal.blocks[1]["elements"][0]["action_id"],
            "deploy-when-free"
        );
        assert!(h.gh.deployments("oursky/trelhub").is_empty());
        assert_eq!(h.press(BOB, &refusal).await, 200);
        h.slack
            .wait_until(WAIT, "the button refused to bob", |s| {
                s.messages()
                    .into_iter()
                    .find(|m| m.text.contains("Only joyz can press this button"))
            })
            .await;
        assert_eq!(h.press(JOYZ, &refusal).await, 200);
        h.reply_in_thread(DEPLOYMENT, &ask, "is #1 in line for trelhub in edge")
            .await;
        let unlock = h.mention(DEPLOYMENT, BOB, "unlock trelhub in edge").await;
        h.reply_in_thread(DEPLOYMENT, &unlock, "is unlocked").await;
        h.reply_in_thread(
            DEPLOYMENT,
            &ask,
            "joyz, trelhub in edge is free: deploying main",
        )
        .await;
        h.reply_in_thread(DEPLOYMENT, &ask, "Deployment #").await;
        let deployed = h.gh.deployments("oursky/trelhub");
        assert_eq!(deployed.len(), 1);
        assert_eq!(deployed[0]["payload"]["notify"]["user"], JOYZ);
    }

    async fn reminders_and_takeovers_reach_the_holder(backend: Backend) {
        let Some((h, clock, _queue, _dir)) = harness(backend).await else {
            return;
        };
        let lock = h
            .mention(DEPLOYMENT, BOB, "lock trelhub in edge for 3h: testing")
            .await;
        h.reply_in_thread(DEPLOYMENT, &lock, "is locked by bob")
            .await;
        clock.advance(chrono::Duration::hours(2));
        assert_eq!(h.tick().await.reminded, 1);
        let reminder = h
            .reply_in_thread(DEPLOYMENT, &lock, "Reminder: bob, you hold trelhub in edge")
            .await;
        assert_eq!(
            reminder.blocks[1]["elements"][0]["action_id"],
            "extend-lock"
        );
        assert_eq!(h.press(BOB, &reminder).await, 200);
        h.reply_in_thread(DEPLOYMENT, &lock, "stays locked by bob")
            .await;

        let take = h
            .mention(DEPLOYMENT, JOYZ, "unlock! trelhub in edge: prod is down")
            .await;
        h.reply_in_thread(DEPLOYMENT, &take, "taken over from bob")
            .await;
        h.reply_in_thread(
            DEPLOYMENT,
            &lock,
            "joyz took your lock on trelhub in edge: prod is down",
        )
        .await;
        let dm = h
            .slack
            .messages()
            .into_iter()
            .find(|m| m.channel == BOB)
            .expect("a direct message to bob");
        assert!(dm.text.contains("joyz took your lock"), "{}", dm.text);
    }

    e2e::both_backends!(
        the_refusal_button_joins_the_line_and_the_unlock_hands_off,
        reminders_and_takeovers_reach_the_holder,
    );
}
