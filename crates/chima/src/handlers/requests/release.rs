//! Deploying a complete release request (exactly its commit, as its requester, once), the
//! compare-and-set every change goes through, and telling and auditing each step.

use deploy_core::protect::Protection;
use deploy_core::{AppConfig, EnvName, GitRef};
use deploy_store::{AuditAction, ReleaseRequest, RequestState};

use crate::chat::{ChatContext, Outbox, Reply};
use crate::desk::{Desk, Record};
use crate::grammar::DeployCommand;
use crate::messages::requests as say;

use super::super::{Bot, DeployHow, DeployResult};
use super::{CAS_ATTEMPTS, missing, short};
use crate::messages::rollback::{RollbackPlan, Via};

impl Bot {
    /// Deploys the request when nothing is missing.
    pub(super) async fn release_if_complete(
        &self,
        desk: &Desk,
        request: ReleaseRequest,
        app: &AppConfig,
        protection: &Protection,
    ) -> Vec<DeployResult> {
        if !missing(&request, protection).is_empty() {
            return Vec::new();
        }
        self.release(desk, request, app).await
    }

    /// Deploys exactly the approved sha, as the requester, in the request's thread; the
    /// request is marked deploying first (one process wins).
    pub(super) async fn release(
        &self,
        desk: &Desk,
        request: ReleaseRequest,
        app: &AppConfig,
    ) -> Vec<DeployResult> {
        let expected = request.version;
        let mut deploying = request.clone();
        deploying.state = RequestState::Deploying;
        let request = match desk.store().update_request(&deploying).await {
            Ok(Some(r)) if expected + 1 == r.version => r,
            Ok(_) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not mark the request deploying");
                return Vec::new();
            }
        };
        let (Ok(sha), Ok(env)) = (
            GitRef::parse(&request.sha),
            EnvName::parse(&request.environment),
        ) else {
            return Vec::new();
        };
        let command = DeployCommand {
            task: deploy_core::Task::Deploy,
            force: false,
            app: app.name.clone(),
            git_ref: Some(sha),
            env: Some(env),
            hosts: None,
            otp: None,
            when_free: false,
        };
        let ctx =
            ChatContext::in_thread(&request.chat, &request.requester, &request.requester_name);
        let mut fallback = crate::chat::RecordingOutbox::default();
        let mut in_thread = self
            .poster()
            .map(|p| p.outbox(&request.chat, &request.requester));
        let outbox: &mut dyn Outbox = match in_thread.as_mut() {
            Some(thread) => thread.as_mut(),
            None => &mut fallback,
        };
        outbox.post(say::releasing(&request)).await;
        let how = DeployHow {
            release: Some(request.id),
            rollback: request.rollback.as_ref().map(|mark| RollbackPlan {
                from: mark.from.clone(),
                to: mark.to.clone(),
                via: Via::Commit,
            }),
        };
        let result = Box::pin(self.deploy_as(&command, &ctx, outbox, how)).await;
        match &result {
            DeployResult::Created { id, .. } => {
                let id = *id;
                let done = self
                    .change(desk, request.id, |r| r.deployment_id = Some(id))
                    .await;
                if let Ok(Some(r)) = done {
                    self.audit_request(
                        desk,
                        &r,
                        &ctx,
                        AuditAction::Release,
                        format!("deployment #{id} of {}", short(&r.sha)),
                    )
                    .await;
                    self.direct(&r.requester, say::deploying_note(&r, id)).await;
                }
            }
            DeployResult::Refused => {
                // Refused by the desk or GitHub (said in the thread): it stays approved.
                let _ = self
                    .change(desk, request.id, |r| r.state = RequestState::Approved)
                    .await;
            }
        }
        vec![result]
    }

    /// Reads, changes and writes a request by compare-and-set, again on a conflict; the
    /// request as written (`None` when it is gone).
    pub(crate) async fn change(
        &self,
        desk: &Desk,
        id: u64,
        mut edit: impl FnMut(&mut ReleaseRequest),
    ) -> anyhow::Result<Option<ReleaseRequest>> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(mut request) = desk.store().request(id).await? else {
                return Ok(None);
            };
            edit(&mut request);
            request.updated_at = desk.now();
            if let Some(written) = desk.store().update_request(&request).await? {
                return Ok(Some(written));
            }
        }
        anyhow::bail!("request #{id} kept changing under us; try again")
    }

    pub(super) async fn audit_request(
        &self,
        desk: &Desk,
        request: &ReleaseRequest,
        ctx: &ChatContext,
        action: AuditAction,
        detail: String,
    ) {
        let chat = ctx.chat_thread();
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                action,
                &request.app,
                Some(&chat),
            )
            .env(&request.environment)
            .git(&request.git_ref, Some(&request.sha))
            .detail(if detail.is_empty() {
                format!("request #{}", request.id)
            } else {
                format!("request #{}: {detail}", request.id)
            }),
        )
        .await;
    }

    pub(super) async fn audit_checks(
        &self,
        desk: &Desk,
        request: &ReleaseRequest,
        ctx: &ChatContext,
    ) {
        for check in &request.checks {
            let detail = format!("{} {:?}: {}", check.kind, check.state, check.summary);
            self.audit_request(desk, request, ctx, AuditAction::Check, detail)
                .await;
        }
    }

    /// Tells the requester, in the request's thread and directly.
    pub(crate) async fn tell_requester(&self, request: &ReleaseRequest, reply: Reply) {
        let Some(poster) = self.poster() else {
            return;
        };
        poster
            .outbox(&request.chat, &request.requester)
            .post(reply.clone())
            .await;
        poster.direct(&request.requester, reply).await;
    }

    pub(super) async fn direct(&self, user: &str, reply: Reply) {
        if let Some(poster) = self.poster() {
            poster.direct(user, reply).await;
        }
    }
}
