//! Release requests (DESIGN.md § "Release requests"): a deploy into a protected environment
//! opens request `#N` instead of a deployment. Its checks are evaluated with their evidence,
//! people other than the requester approve it (an approver may waive red checks with a
//! reason), a release admin claims it when the app needs one, and then chima deploys exactly
//! the approved sha with a desk ticket that faseng checks. The requester is told every step
//! in the request's thread and directly; every step is audited.
//!
//! A request is changed by compare-and-set on its version, so two chimas (or two quick
//! approvals) never both deploy it.

use deploy_core::protect::{Approver, Protection};
use deploy_core::{AppConfig, AppName, EnvName};
use deploy_store::{Approval, AuditAction, CheckState, ReleaseRequest, RequestState};

use crate::chat::{ChatContext, Outbox};
use crate::desk::Desk;
use crate::grammar::RequestCommand;
use crate::messages::{desk as say_desk, requests as say};

use super::{Bot, DeployResult};

mod open;
mod release;

/// Attempts at a compare-and-set before giving up (someone else keeps changing it).
const CAS_ATTEMPTS: usize = 8;

impl RequestCommand {
    /// The request the command names (none for `requests`).
    fn id(&self) -> Option<u64> {
        match self {
            RequestCommand::Approve { id, .. }
            | RequestCommand::Reject { id, .. }
            | RequestCommand::Claim { id }
            | RequestCommand::Deploy { id }
            | RequestCommand::Cancel { id }
            | RequestCommand::Recheck { id } => Some(*id),
            RequestCommand::List { .. } => None,
        }
    }
}

/// Whether the request's checks let it deploy: every check passed or was skipped, or an
/// approver waived them (`approve!`).
fn checks_clear(request: &ReleaseRequest) -> bool {
    request.approvals.iter().any(|a| a.overriding.is_some())
        || request
            .checks
            .iter()
            .all(|c| matches!(c.state, CheckState::Pass | CheckState::Skipped))
}

/// Distinct approvers so far (never the requester).
fn approvals(request: &ReleaseRequest) -> usize {
    let mut people: Vec<&str> = request
        .approvals
        .iter()
        .filter(|a| a.user != request.requester)
        .map(|a| a.user.as_str())
        .collect();
    people.sort_unstable();
    people.dedup();
    people.len()
}

/// What a request still waits for; empty when it can deploy.
pub fn missing(request: &ReleaseRequest, protection: &Protection) -> Vec<String> {
    let mut missing = Vec::new();
    let have = approvals(request);
    let need = protection.approvals as usize;
    if have < need {
        missing.push(format!(
            "{} more approval{}",
            need - have,
            if need - have == 1 { "" } else { "s" }
        ));
    }
    if !checks_clear(request) {
        missing.push("green checks (or `approve!`)".to_owned());
    }
    if protection.needs_admin && request.claimed_by.is_none() {
        missing.push("a release admin's claim".to_owned());
    }
    missing
}

impl Bot {
    /// Whether `ctx`'s speaker is one of `people`: by id, by chat handle, or by membership of
    /// a `@group` (asked of the chat only when the list has a group).
    async fn is_one_of(&self, people: &[Approver], ctx: &ChatContext) -> bool {
        let groups = match self.poster() {
            Some(poster) if people.iter().any(|p| matches!(p, Approver::Group(_))) => {
                poster.groups_of(&ctx.user_id).await
            }
            _ => Vec::new(),
        };
        people
            .iter()
            .any(|p| p.matches(&ctx.user_id, &ctx.user_name, &groups))
    }

    /// Handles a release-request command; the deployments it made.
    pub async fn request_command(
        &self,
        command: RequestCommand,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> Vec<DeployResult> {
        let Some(desk) = self.desk() else {
            outbox.post(say_desk::no_store()).await;
            return Vec::new();
        };
        match self.request_reply(&desk, command, ctx, outbox).await {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "release request command failed");
                outbox.post(say_desk::store_failed(&format!("{e:#}"))).await;
                Vec::new()
            }
        }
    }

    async fn request_reply(
        &self,
        desk: &Desk,
        command: RequestCommand,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> anyhow::Result<Vec<DeployResult>> {
        let Some(id) = command.id() else {
            let RequestCommand::List { app } = command else {
                return Ok(Vec::new());
            };
            if let Some(app) = &app
                && let Err(reply) = self.app(app)
            {
                outbox.post(reply).await;
                return Ok(Vec::new());
            }
            let open = desk
                .store()
                .requests(app.as_ref().map(AppName::as_str), true)
                .await?;
            outbox
                .post(say::list(app.as_ref(), &open, desk.now()))
                .await;
            return Ok(Vec::new());
        };
        let Some(request) = desk.store().request(id).await? else {
            outbox.post(say::not_found(id)).await;
            return Ok(Vec::new());
        };
        let Some((app, env)) = self.app_env(&request) else {
            outbox.post(say::app_gone(&request)).await;
            return Ok(Vec::new());
        };
        let Some(protection) = app.protection(&env) else {
            outbox.post(say::no_longer_protected(&request)).await;
            return Ok(Vec::new());
        };
        if !request.state.is_open() {
            outbox.post(say::closed(&request)).await;
            return Ok(Vec::new());
        }
        match command {
            RequestCommand::Approve { overriding, .. } => {
                self.approve(desk, request, app, protection, ctx, overriding, outbox)
                    .await
            }
            RequestCommand::Reject { reason, .. } => {
                self.reject(desk, request, protection, ctx, &reason, outbox)
                    .await?;
                Ok(Vec::new())
            }
            RequestCommand::Claim { .. } => {
                if !self.is_one_of(&protection.admins, ctx).await {
                    outbox.post(say::not_admin(&request, protection)).await;
                    return Ok(Vec::new());
                }
                let by = (ctx.user_id.clone(), ctx.user_name.clone());
                let Some(request) = self
                    .change(desk, request.id, |r| {
                        r.claimed_by = Some(by.clone());
                    })
                    .await?
                else {
                    outbox.post(say::not_found(id)).await;
                    return Ok(Vec::new());
                };
                self.audit_request(desk, &request, ctx, AuditAction::Claim, String::new())
                    .await;
                self.tell_requester(&request, say::claimed_note(&request, &ctx.user_name))
                    .await;
                outbox.post(say::claimed(&request, protection)).await;
                Ok(self
                    .release_if_complete(desk, request, app, protection)
                    .await)
            }
            RequestCommand::Deploy { .. } => {
                let admin = self.is_one_of(&protection.admins, ctx).await;
                if ctx.user_id != request.requester && !admin {
                    outbox
                        .post(say::not_requester_or_admin(&request, "deploy"))
                        .await;
                    return Ok(Vec::new());
                }
                let waiting = missing(&request, protection);
                if !waiting.is_empty() {
                    outbox.post(say::not_ready(&request, &waiting)).await;
                    return Ok(Vec::new());
                }
                Ok(self.release(desk, request, app).await)
            }
            RequestCommand::Cancel { .. } => {
                if ctx.user_id != request.requester
                    && !self.is_one_of(&protection.admins, ctx).await
                {
                    outbox
                        .post(say::not_requester_or_admin(&request, "cancel"))
                        .await;
                    return Ok(Vec::new());
                }
                if request.state == RequestState::Deploying {
                    outbox.post(say::closed(&request)).await;
                    return Ok(Vec::new());
                }
                let Some(request) = self
                    .change(desk, id, |r| r.state = RequestState::Cancelled)
                    .await?
                else {
                    return Ok(Vec::new());
                };
                self.audit_request(
                    desk,
                    &request,
                    ctx,
                    AuditAction::RequestCancel,
                    String::new(),
                )
                .await;
                if ctx.user_id != request.requester {
                    self.tell_requester(&request, say::cancelled(&request, &ctx.user_name))
                        .await;
                }
                outbox.post(say::cancelled(&request, &ctx.user_name)).await;
                Ok(Vec::new())
            }
            RequestCommand::Recheck { .. } => {
                let request = self.evaluate(desk, request, app, protection).await?;
                self.audit_checks(desk, &request, ctx).await;
                outbox.post(say::checks(&request, protection)).await;
                self.tell_requester(&request, say::checks_note(&request))
                    .await;
                Ok(self
                    .release_if_complete(desk, request, app, protection)
                    .await)
            }
            RequestCommand::List { .. } => Ok(Vec::new()),
        }
    }

    fn app_env(&self, request: &ReleaseRequest) -> Option<(&AppConfig, EnvName)> {
        let app = self.apps.get(&AppName::parse(&request.app).ok()?)?;
        let env = EnvName::parse(&request.environment).ok()?;
        Some((app, env))
    }

    #[allow(clippy::too_many_arguments)]
    async fn approve(
        &self,
        desk: &Desk,
        request: ReleaseRequest,
        app: &AppConfig,
        protection: &Protection,
        ctx: &ChatContext,
        overriding: Option<String>,
        outbox: &mut dyn Outbox,
    ) -> anyhow::Result<Vec<DeployResult>> {
        if ctx.user_id == request.requester {
            outbox.post(say::self_approval(&request)).await;
            return Ok(Vec::new());
        }
        if !self.is_one_of(&protection.approvers, ctx).await {
            outbox
                .post(say::not_an_approver(&request, protection))
                .await;
            return Ok(Vec::new());
        }
        if request.state == RequestState::Deploying {
            outbox.post(say::closed(&request)).await;
            return Ok(Vec::new());
        }
        if overriding.is_none() && request.approvals.iter().any(|a| a.user == ctx.user_id) {
            outbox.post(say::already_approved(&request)).await;
            return Ok(Vec::new());
        }
        let request = self.evaluate(desk, request, app, protection).await?;
        self.audit_checks(desk, &request, ctx).await;
        let needed = protection.approvals as usize;
        let approval = Approval {
            user: ctx.user_id.clone(),
            user_name: ctx.user_name.clone(),
            at: desk.now(),
            overriding: overriding.clone(),
        };
        let Some(request) = self
            .change(desk, request.id, |r| {
                r.approvals.retain(|a| a.user != approval.user);
                r.approvals.push(approval.clone());
                if approvals(r) >= needed {
                    r.state = RequestState::Approved;
                }
            })
            .await?
        else {
            return Ok(Vec::new());
        };
        let action = if overriding.is_some() {
            AuditAction::Override
        } else {
            AuditAction::Approve
        };
        self.audit_request(
            desk,
            &request,
            ctx,
            action,
            overriding.clone().unwrap_or_default(),
        )
        .await;
        let waiting = missing(&request, protection);
        outbox
            .post(say::approved(
                &request,
                &ctx.user_name,
                overriding.as_deref(),
                &waiting,
            ))
            .await;
        self.tell_requester(
            &request,
            say::approved_note(&request, &ctx.user_name, overriding.as_deref(), &waiting),
        )
        .await;
        Ok(self
            .release_if_complete(desk, request, app, protection)
            .await)
    }

    async fn reject(
        &self,
        desk: &Desk,
        request: ReleaseRequest,
        protection: &Protection,
        ctx: &ChatContext,
        reason: &str,
        outbox: &mut dyn Outbox,
    ) -> anyhow::Result<()> {
        if !self.is_one_of(&protection.approvers, ctx).await
            && !self.is_one_of(&protection.admins, ctx).await
        {
            outbox
                .post(say::not_an_approver(&request, protection))
                .await;
            return Ok(());
        }
        if request.state == RequestState::Deploying {
            outbox.post(say::closed(&request)).await;
            return Ok(());
        }
        let rejection = (
            ctx.user_id.clone(),
            ctx.user_name.clone(),
            reason.to_owned(),
        );
        let Some(request) = self
            .change(desk, request.id, |r| {
                r.state = RequestState::Rejected;
                r.rejection = Some(rejection.clone());
            })
            .await?
        else {
            return Ok(());
        };
        self.audit_request(desk, &request, ctx, AuditAction::Reject, reason.to_owned())
            .await;
        outbox
            .post(say::rejected(&request, &ctx.user_name, reason))
            .await;
        self.tell_requester(&request, say::rejected(&request, &ctx.user_name, reason))
            .await;
        Ok(())
    }
}

/// The first 7 characters of a sha.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}
