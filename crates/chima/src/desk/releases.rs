//! The clockwork of release requests: requests that ran out before they were complete, and
//! requests being deployed, followed to their deployment's end (the requester told, the
//! tickets updated after a success, everything audited).

use deploy_core::AppConfig;
use deploy_store::{AuditAction, ReleaseRequest, RequestState};

use crate::chat::{ChatContext, Poster};
use crate::handlers::Bot;
use crate::messages::requests as say;

use super::{Desk, Record};

/// What one pass over the requests did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReleaseReport {
    /// Requests that ran out.
    pub expired: usize,
    /// Requests whose deployment finished.
    pub finished: usize,
}

impl Bot {
    /// One pass over the open release requests.
    pub async fn releases_tick(&self, desk: &Desk, poster: &dyn Poster) -> anyhow::Result<ReleaseReport> {
        let mut report = ReleaseReport::default();
        let now = desk.now();
        for request in desk.store().requests(None, true).await? {
            match request.state {
                RequestState::Open | RequestState::Approved if request.expires_at <= now => {
                    let Some(gone) = self
                        .change(desk, request.id, |r| {
                            if r.state != RequestState::Deploying {
                                r.state = RequestState::Expired;
                            }
                        })
                        .await?
                    else {
                        continue;
                    };
                    if gone.state != RequestState::Expired {
                        continue;
                    }
                    report.expired += 1;
                    self.record_release(desk, &gone, AuditAction::RequestExpired, String::new())
                        .await;
                    self.tell_requester(&gone, say::expired(&gone)).await;
                    poster
                        .outbox(&gone.chat, &gone.requester)
                        .post(say::expired(&gone))
                        .await;
                }
                RequestState::Deploying => {
                    if self.follow_release(desk, &request).await? {
                        report.finished += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(report)
    }

    /// Looks at a deploying request's deployment; when it finished, says so and (after a
    /// success) updates its tickets. Whether it finished.
    async fn follow_release(&self, desk: &Desk, request: &ReleaseRequest) -> anyhow::Result<bool> {
        let Some(id) = request.deployment_id else {
            return Ok(false);
        };
        let Some(app) = deploy_core::AppName::parse(&request.app)
            .ok()
            .and_then(|a| self.apps().get(&a))
        else {
            return Ok(false);
        };
        let state = match self.forge().deployment_state(app, id).await {
            Ok(Some(state)) if state.is_final() => state,
            Ok(_) => return Ok(false),
            Err(e) => {
                tracing::warn!(error = %e, request = request.id, "could not read the release's deployment");
                return Ok(false);
            }
        };
        let succeeded = state.state == "success";
        let Some(done) = self
            .change(desk, request.id, |r| {
                if r.state == RequestState::Deploying {
                    r.state = if succeeded {
                        RequestState::Succeeded
                    } else {
                        RequestState::Failed
                    };
                }
            })
            .await?
        else {
            return Ok(false);
        };
        if done.state == RequestState::Deploying || done.version != request.version + 1 {
            return Ok(false);
        }
        self.record_release(
            desk,
            &done,
            AuditAction::Result,
            format!("deployment #{id}: {}", state.state),
        )
        .await;
        self.tell_requester(&done, say::finished(&done, &state.state, state.log_url.as_deref()))
            .await;
        if succeeded {
            self.update_tickets(desk, &done, app).await;
        }
        Ok(true)
    }

    async fn record_release(&self, desk: &Desk, r: &ReleaseRequest, action: AuditAction, detail: String) {
        let detail = if detail.is_empty() {
            format!("request #{}", r.id)
        } else {
            format!("request #{}: {detail}", r.id)
        };
        desk.record(
            Record::new(("chima", "chima"), action, &r.app, Some(&r.chat))
                .env(&r.environment)
                .git(&r.git_ref, Some(&r.sha))
                .detail(detail),
        )
        .await;
    }

    /// After a successful release: the tickets its pull requests name.
    async fn update_tickets(&self, desk: &Desk, request: &ReleaseRequest, app: &AppConfig) {
        let Some(settings) = app.tickets() else {
            return;
        };
        let _ = (settings, ChatContext::in_thread(&request.chat, &request.requester, &request.requester_name));
        let _ = desk;
    }
}
