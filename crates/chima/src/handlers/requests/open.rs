//! Opening a release request (or moving the open one to its ref's new commit), and
//! evaluating its checks with their evidence.

use deploy_core::protect::Protection;
use deploy_core::{AppConfig, EnvName, GitRef};
use deploy_store::{
    AuditAction, CheckResult, CheckState, NewRequest, ReleaseRequest, RequestState, RollbackMark,
};

use crate::chat::{ChatContext, Outbox};
use crate::checks::{Evidence, Verdict};
use crate::desk::{Desk, Gate};
use crate::messages::rollback::RollbackPlan;
use crate::messages::{desk as say_desk, requests as say};

use super::super::Bot;
use super::short;

impl Bot {
    /// A deploy command into a protected environment: opens request `#N` (or moves the open
    /// one for the same app, environment and ref to the ref's new sha), evaluates its
    /// checks, and posts it with its buttons.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open_request(
        &self,
        app: &AppConfig,
        env: &EnvName,
        git_ref: &GitRef,
        protection: &Protection,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
        rollback: Option<&RollbackPlan>,
    ) -> anyhow::Result<()> {
        let Some(desk) = self.desk() else {
            outbox.post(say_desk::no_store()).await;
            return Ok(());
        };
        let sha = match self.forge.resolve_sha(app, git_ref).await {
            Ok(Some(sha)) => sha,
            Ok(None) => {
                outbox
                    .post(crate::messages::unprocessable(
                        app,
                        git_ref.as_str(),
                        &format!("No ref found for: {git_ref}"),
                    ))
                    .await;
                return Ok(());
            }
            Err(e) => {
                outbox
                    .post(crate::messages::forge_failed(app, "read the ref", &e))
                    .await;
                return Ok(());
            }
        };
        let now = desk.now();
        let expires_at = now + protection.ttl.as_chrono();
        let existing = desk
            .store()
            .open_request_for(app.name.as_str(), env.as_str(), git_ref.as_str())
            .await?;
        let (request, moved) = match existing {
            Some(open) if open.sha == sha => {
                outbox.post(say::already_open(&open, protection)).await;
                return Ok(());
            }
            Some(open) if open.state == RequestState::Deploying => {
                outbox.post(say::closed(&open)).await;
                return Ok(());
            }
            Some(open) => {
                let sha = sha.clone();
                let Some(moved) = self
                    .change(&desk, open.id, |r| {
                        r.sha = sha.clone();
                        r.approvals.clear();
                        r.checks.clear();
                        r.state = RequestState::Open;
                        r.expires_at = expires_at;
                    })
                    .await?
                else {
                    return Ok(());
                };
                (moved, true)
            }
            None => {
                let opened = desk
                    .store()
                    .open_request(&NewRequest {
                        app: app.name.to_string(),
                        environment: env.to_string(),
                        git_ref: git_ref.to_string(),
                        sha,
                        requester: ctx.user_id.clone(),
                        requester_name: ctx.user_name.clone(),
                        chat: ctx.chat_thread(),
                        opened_at: now,
                        expires_at,
                    })
                    .await?;
                (opened, false)
            }
        };
        let mark = rollback.map(|p| RollbackMark {
            from: p.from.clone(),
            to: p.to.clone(),
        });
        let request = if request.rollback != mark {
            self.change(&desk, request.id, |r| r.rollback = mark.clone())
                .await?
                .unwrap_or(request)
        } else {
            request
        };
        let detail = if moved {
            format!("moved to {}; approvals reset", short(&request.sha))
        } else {
            format!("opened for {}", short(&request.sha))
        };
        self.audit_request(&desk, &request, ctx, AuditAction::Request, detail)
            .await;
        let request = self.evaluate(&desk, request, app, protection).await?;
        self.audit_checks(&desk, &request, ctx).await;
        let reply = if moved {
            say::moved(&request, protection, &self.name)
        } else {
            say::opened(&request, protection, &self.name)
        };
        outbox.post(reply).await;
        self.direct(&request.requester, say::opened_note(&request, protection))
            .await;
        Ok(())
    }

    /// Evaluates the request's checks now and stores them.
    pub(super) async fn evaluate(
        &self,
        desk: &Desk,
        request: ReleaseRequest,
        app: &AppConfig,
        protection: &Protection,
    ) -> anyhow::Result<ReleaseRequest> {
        let env = EnvName::parse(&request.environment)?;
        let not_locked = match desk.gate(app, &env, &request.requester).await? {
            Gate::Free => Evidence {
                verdict: Verdict::Pass,
                summary: "no lock or freeze".to_owned(),
                url: None,
            },
            Gate::Allowed(_) => Evidence {
                verdict: Verdict::Pass,
                summary: "the requester holds the lock or an unfreeze".to_owned(),
                url: None,
            },
            Gate::Blocked(blocked) => Evidence {
                verdict: Verdict::Fail,
                summary: blocked.plain(&app.name, &env, desk.now(), app.tz()),
                url: None,
            },
        };
        let kinds: Vec<String> = protection
            .checks
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        let git_ref = GitRef::parse(&request.git_ref)?;
        let results = crate::checks::evaluate(
            self.forge.as_ref(),
            app,
            &request.sha,
            &git_ref,
            &kinds,
            not_locked,
        )
        .await;
        let now = desk.now();
        let checks: Vec<CheckResult> = results
            .into_iter()
            .map(|(kind, e)| CheckResult {
                kind,
                state: match e.verdict {
                    Verdict::Pass => CheckState::Pass,
                    Verdict::Fail => CheckState::Fail,
                    Verdict::Pending => CheckState::Pending,
                    Verdict::Skipped => CheckState::Skipped,
                },
                summary: e.summary,
                url: e.url,
                at: now,
            })
            .collect();
        Ok(self
            .change(desk, request.id, |r| r.checks = checks.clone())
            .await?
            .unwrap_or(request))
    }
}
