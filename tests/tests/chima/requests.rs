//! Release requests as a conversation: a deploy into a protected environment opens a
//! request, the requester cannot approve it, someone off the list cannot either, red checks
//! block until an approver waives them with a reason, a new commit resets the approvals, a
//! release admin claims when the app needs one, requests run out, and after a successful
//! release the issues its pull request fixes are commented on and labelled. chima's bot in
//! process against the fake GitHub, the store on both backends, a clock moved by hand.

use chrono::{DateTime, Duration, Utc};
use deploy_core::Apps;
use e2e::backend::Backend;
use e2e::conversation::Conversation;
use e2e::fake_github::PullSpec;
use faseng::store::{Allowance, AuditAction, StoreUrl};

const REPO: &str = "oursky/trelhub";

fn t(s: &str) -> DateTime<Utc> {
    e2e::conversation::at(s)
}

fn apps() -> Apps {
    Apps::from_json(
        r#"{"trelhub": {"provider": "shell", "repository": "oursky/trelhub",
             "environments": ["pandawork", "edge", "live"], "default_environment": "pandawork",
             "protect": {
               "live": {"approvals": 1, "approvers": ["bob", "U0CAROL"],
                        "checks": ["ci", "review", "rollback_notes", "not_locked"], "ttl": "4h"},
               "edge": {"approvers": ["bob"], "admins": ["U0OPS"], "needs_admin": true}},
             "tickets": {"github_issues": true}}}"#,
    )
    .unwrap()
}

/// A conversation about [`apps`].
async fn start(backend: Backend) -> Option<Conversation> {
    Conversation::start(backend, apps()).await
}

/// `desk`'s trelhub audit actions, oldest first.
async fn actions(desk: &Conversation) -> Vec<AuditAction> {
    desk.audit("trelhub")
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect()
}

/// A branch with a merged pull request that fixes issue 12, has rollback notes and an
/// approving review by someone other than its author.
fn reviewed_branch(desk: &Conversation, branch: &str) -> String {
    let gh = &desk.chat.gh;
    let sha = gh.add_branch(REPO, branch);
    gh.add_pull(
        REPO,
        &sha,
        PullSpec::merged(7, "Fix the login page")
            .author("joyz")
            .head(branch)
            .body("Fixes #12\n\n## Rollback\n\nRevert the pull request; no data changes.\n"),
    );
    gh.add_review(REPO, 7, "bob", "APPROVED");
    gh.add_issue(REPO, 12);
    sha
}

async fn an_approval_by_someone_else_deploys_exactly_the_approved_commit(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    let sha = reviewed_branch(&desk, "feature");
    let opened = desk.say("joyz", "deploy trelhub/feature to live").await;
    assert!(
        opened.starts_with(&format!(
            "Release request #1 (trelhub feature@{} to live) opened by joyz",
            &sha[..7]
        )),
        "{opened}"
    );
    for check in [
        "• ci ✔ pass",
        "• review ✔ pass",
        "• rollback_notes ✔ pass",
        "• not_locked ✔ pass",
    ] {
        assert!(opened.contains(check), "{check} in {opened}");
    }
    assert!(
        desk.deployments(REPO).is_empty(),
        "a request, not a deployment"
    );

    let own = desk.say("joyz", "approve #1").await;
    assert!(own.contains("someone else must approve it"), "{own}");
    let stranger = desk.say("dave", "approve #1").await;
    assert!(
        stranger.starts_with("Only approvers may decide release request #1"),
        "{stranger}"
    );
    assert!(desk.deployments(REPO).is_empty());

    let approved = desk.says("bob", "approve #1").await;
    assert!(
        approved[0].starts_with("bob approved release request #1"),
        "{approved:?}"
    );
    let deployed = desk.deployments(REPO);
    assert_eq!(deployed.len(), 1, "{approved:?}");
    assert_eq!(
        deployed[0]["ref"],
        sha.as_str(),
        "exactly the approved commit"
    );
    assert_eq!(deployed[0]["environment"], "live");
    assert_eq!(deployed[0]["payload"]["request"], 1);
    assert_eq!(deployed[0]["payload"]["notify"]["user"], "U0JOYZ");
    let ticket = deployed[0]["payload"]["desk_ticket"].as_str().unwrap();
    let store = StoreUrl::parse(&desk.url).unwrap().open().await.unwrap();
    let redeemed = store
        .redeem_ticket(ticket, "trelhub", "live", &sha, t("2026-12-07T09:00:00Z"))
        .await
        .unwrap()
        .expect("the release's ticket");
    assert_eq!(redeemed.allowed_by, vec![Allowance::Request(1)]);

    let id = deployed[0]["id"].as_u64().unwrap();
    desk.chat.gh.add_status(id, "success", "Deployed");
    assert_eq!(desk.chat.tick().await.releases.finished, 1);
    let said = desk.said();
    for step in [
        "Your release request #1",
        "was approved by bob",
        "is complete: deploying exactly",
        "is deploying as deployment #",
        "released (deployment #",
    ] {
        assert!(
            said.iter().any(|(_, text)| text.contains(step)),
            "the requester is told {step:?}: {said:#?}"
        );
    }
    assert!(
        said.iter().any(|(place, _)| place == "dm:U0JOYZ"),
        "and directly: {said:#?}"
    );
    assert_eq!(
        desk.chat.gh.issue_comments(REPO, 12),
        [format!("released to live in deployment #{id} by joyz")]
    );
    assert_eq!(desk.chat.gh.issue_labels(REPO, 12), ["released:live"]);
    let actions = actions(&desk).await;
    for action in [
        AuditAction::Request,
        AuditAction::Check,
        AuditAction::Approve,
        AuditAction::Release,
        AuditAction::Result,
        AuditAction::TicketUpdate,
    ] {
        assert!(actions.contains(&action), "{action:?} in {actions:?}");
    }
    assert_eq!(
        desk.say("joyz", "requests").await,
        "No open release requests."
    );
}

async fn red_checks_block_until_waived_and_a_new_commit_resets_approvals(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    desk.chat.gh.add_branch(REPO, "feature");
    let opened = desk.say("joyz", "deploy trelhub/feature to live").await;
    assert!(opened.contains("• review ✖ fail"), "{opened}");
    assert!(opened.contains("• rollback_notes ✖ fail"), "{opened}");
    let approved = desk.say("bob", "approve #1").await;
    assert!(
        approved.contains("Still waiting for green checks (or `approve!`)."),
        "{approved}"
    );
    assert!(desk.deployments(REPO).is_empty(), "red checks block");
    let early = desk.say("joyz", "deploy #1").await;
    assert!(early.contains("cannot deploy yet"), "{early}");

    let moved_to = "feedfacefeedfacefeedfacefeedfacefeedface";
    desk.chat.gh.set_branch(REPO, "feature", moved_to);
    let moved = desk.say("joyz", "deploy trelhub/feature to live").await;
    assert!(
        moved.starts_with("Release request #1 (trelhub feature@feedfac to live) moved to the ref's new commit feedfac: its approvals were reset."),
        "{moved}"
    );
    assert!(moved.contains("Approvals: 0/1"), "{moved}");

    let list = desk.say("dave", "requests trelhub").await;
    assert!(
        list.contains("#1 (trelhub feature@feedfac to live) — open, by joyz, 0 approvals"),
        "{list}"
    );

    let waived = desk
        .says("carol", "approve! #1: the hotfix cannot wait for review")
        .await;
    assert!(
        waived[0].starts_with("carol approved release request #1 (trelhub feature@feedfac to live) and waived its red checks: the hotfix cannot wait for review."),
        "{waived:?}"
    );
    let deployed = desk.deployments(REPO);
    assert_eq!(deployed.len(), 1);
    assert_eq!(deployed[0]["ref"], moved_to);
    assert!(actions(&desk).await.contains(&AuditAction::Override));
}

async fn reject_claim_and_expiry(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    reviewed_branch(&desk, "feature");
    desk.say("joyz", "deploy trelhub/feature to edge").await;
    let rejected = desk.say("bob", "reject #1: not this week").await;
    assert_eq!(
        rejected,
        format!(
            "Release request #1 (trelhub feature@{} to edge) was rejected by bob: not this week. Nothing will be deployed.",
            &desk.chat.gh.branch_sha(REPO, "feature")[..7]
        )
    );
    assert!(
        desk.say("bob", "approve #1")
            .await
            .ends_with("is rejected. Nothing was done.")
    );

    desk.say("joyz", "deploy trelhub/feature to edge").await;
    let approved = desk.say("bob", "approve #2").await;
    assert!(
        approved.contains("Still waiting for a release admin's claim."),
        "{approved}"
    );
    assert!(desk.deployments(REPO).is_empty());
    let not_admin = desk.say("bob", "claim #2").await;
    assert!(
        not_admin.starts_with("Only a release admin may claim"),
        "{not_admin}"
    );
    let claimed = desk.says("ops", "claim #2").await;
    assert!(
        claimed[0].starts_with("ops claimed release request #2"),
        "{claimed:?}"
    );
    assert_eq!(
        desk.deployments(REPO).len(),
        1,
        "claimed and approved: deployed"
    );

    desk.say("joyz", "deploy trelhub/feature to live").await;
    desk.clock.advance(Duration::hours(4));
    assert_eq!(desk.chat.tick().await.releases.expired, 1);
    assert!(
        desk.say("bob", "approve #3")
            .await
            .ends_with("is expired. Nothing was done.")
    );
    assert!(actions(&desk).await.contains(&AuditAction::RequestExpired));
}

async fn recheck_cancel_and_unknown_requests(backend: Backend) {
    let Some(desk) = start(backend).await else {
        return;
    };
    desk.chat.gh.add_branch(REPO, "feature");
    desk.say("joyz", "deploy trelhub/feature to live").await;
    assert_eq!(
        desk.say("joyz", "approve #9").await,
        "There is no release request #9. Say `requests` to see the open ones."
    );
    // The review arrives: a recheck turns the check green.
    let sha = desk.chat.gh.branch_sha(REPO, "feature");
    desk.chat.gh.add_pull(
        REPO,
        &sha,
        PullSpec::merged(8, "Feature")
            .author("joyz")
            .body("## Rollback\n\nRevert.\n"),
    );
    desk.chat.gh.add_review(REPO, 8, "bob", "APPROVED");
    let rechecked = desk.say("dave", "recheck #1").await;
    assert!(
        rechecked.starts_with("Checks of release request #1")
            && rechecked.contains("• review ✔ pass")
            && rechecked.contains("• rollback_notes ✔ pass"),
        "{rechecked}"
    );
    let refused = desk.say("dave", "cancel #1").await;
    assert!(
        refused.starts_with("Only the requester or a release admin may cancel release request #1")
            && refused.ends_with("Nothing was done."),
        "{refused}"
    );
    let cancelled = desk.say("joyz", "cancel #1").await;
    assert!(cancelled.ends_with("was cancelled by joyz."), "{cancelled}");
    assert!(
        desk.say("bob", "approve #1")
            .await
            .ends_with("is cancelled. Nothing was done.")
    );
    assert!(desk.deployments(REPO).is_empty());
    assert!(actions(&desk).await.contains(&AuditAction::RequestCancel));
}

e2e::both_backends!(
    recheck_cancel_and_unknown_requests,
    an_approval_by_someone_else_deploys_exactly_the_approved_commit,
    red_checks_block_until_waived_and_a_new_commit_resets_approvals,
    reject_claim_and_expiry,
);

mod slack {
    //! A release request over Slack: the request is posted with Approve / Reject buttons; the
    //! requester's press is refused, an approver's press deploys the approved commit.

    use std::time::Duration;

    use e2e::backend::{Backend, Queue};
    use e2e::fake_github::PullSpec;
    use e2e::slack_app::{BOB, DEPLOYMENT, DeskSetup, JOYZ, SlackHarness, WAIT};

    const DEMO: &str = "oursky/chima";

    /// The Slack app with the desk on `backend`, and demo's commit reviewed and with
    /// rollback notes (so its checks are green); with the queue and its directory.
    async fn harness(backend: Backend) -> Option<(SlackHarness, String, Queue, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::start(backend, dir.path())?;
        let clock = deploy_core::ManualClock::new(super::t("2026-12-07T09:00:00Z"));
        let h = SlackHarness::start_with(
            Duration::from_secs(3600),
            Some(DeskSetup {
                store_url: queue.url.clone(),
                clock,
            }),
        )
        .await;
        h.gh.add_repo(DEMO, "main");
        let sha = h.gh.branch_sha(DEMO, "main");
        h.gh.add_pull(
            DEMO,
            &sha,
            PullSpec::merged(3, "Faster deploys")
                .author("joyz")
                .body("## Rollback\n\nDeploy the previous tag.\n"),
        );
        h.gh.add_review(DEMO, 3, "bob", "APPROVED");
        Some((h, sha, queue, dir))
    }

    async fn the_approve_button_of_someone_else_deploys_the_request(backend: Backend) {
        let Some((h, sha, _queue, _dir)) = harness(backend).await else {
            return;
        };
        let ask = h
            .mention(DEPLOYMENT, JOYZ, "deploy demo to production")
            .await;
        let request = h
            .reply_in_thread(DEPLOYMENT, &ask, "Release request #1")
            .await;
        assert_eq!(
            request.blocks[1]["elements"][0]["action_id"],
            "approve-request"
        );
        assert!(h.gh.deployments(DEMO).is_empty());

        assert_eq!(h.press(JOYZ, &request).await, 200);
        h.reply_in_thread(DEPLOYMENT, &ask, "someone else must approve it")
            .await;
        assert!(h.gh.deployments(DEMO).is_empty());

        assert_eq!(h.press(BOB, &request).await, 200);
        h.reply_in_thread(DEPLOYMENT, &ask, "is complete: deploying exactly")
            .await;
        h.reply_in_thread(DEPLOYMENT, &ask, "Deployment #").await;
        let deployed = h.gh.deployments(DEMO);
        assert_eq!(deployed.len(), 1);
        assert_eq!(deployed[0]["ref"], sha.as_str());
        assert_eq!(deployed[0]["payload"]["request"], 1);
        let dm = h
            .slack
            .wait_until(WAIT, "the requester told directly", |s| {
                s.messages()
                    .into_iter()
                    .find(|m| m.channel == JOYZ && m.text.contains("was approved by bob"))
            })
            .await;
        assert!(dm.text.contains("Your release request #1"), "{}", dm.text);
    }

    /// `@release-managers` in demo's approvers: a member of that Slack user group approves,
    /// someone outside it cannot.
    async fn a_member_of_an_approver_group_approves(backend: Backend) {
        let Some((h, sha, _queue, _dir)) = harness(backend).await else {
            return;
        };
        h.slack.add_user("U0CAROL001", "carol");
        h.slack.add_user("U0DAVE0001", "dave");
        h.slack
            .add_user_group("S0RELEASE1", "release-managers", &["U0CAROL001"]);
        let ask = h
            .mention(DEPLOYMENT, JOYZ, "deploy demo to production")
            .await;
        let request = h
            .reply_in_thread(DEPLOYMENT, &ask, "Release request #1")
            .await;
        assert_eq!(h.press("U0DAVE0001", &request).await, 200);
        h.reply_in_thread(DEPLOYMENT, &ask, "Only approvers may decide")
            .await;
        assert_eq!(h.press("U0CAROL001", &request).await, 200);
        h.reply_in_thread(DEPLOYMENT, &ask, "carol approved release request #1")
            .await;
        h.reply_in_thread(DEPLOYMENT, &ask, "Deployment #").await;
        assert_eq!(h.gh.deployments(DEMO)[0]["ref"], sha.as_str());
    }

    e2e::both_backends!(
        the_approve_button_of_someone_else_deploys_the_request,
        a_member_of_an_approver_group_approves,
    );
}
