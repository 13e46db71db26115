//! The clockwork of release requests: requests that ran out before they were complete, and
//! requests being deployed, followed to their deployment's end (the requester told, the
//! tickets updated after a success, everything audited).

use deploy_core::AppConfig;
use deploy_store::{AuditAction, ReleaseRequest, RequestState};

use crate::chat::Poster;
use crate::handlers::Bot;
use crate::messages::requests as say;
use crate::tickets::{self, Release, TicketAction, TicketPlan, TicketReport};

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
    pub async fn releases_tick(
        &self,
        desk: &Desk,
        poster: &dyn Poster,
    ) -> anyhow::Result<ReleaseReport> {
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
                RequestState::Deploying if self.follow_release(desk, &request).await? => {
                    report.finished += 1;
                }
                _ => {}
            }
        }
        self.retry_tickets(desk).await?;
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
        self.tell_requester(
            &done,
            say::finished(&done, &state.state, state.log_url.as_deref()),
        )
        .await;
        if succeeded {
            self.update_tickets(desk, &done, app).await;
        }
        Ok(true)
    }

    async fn record_release(
        &self,
        desk: &Desk,
        r: &ReleaseRequest,
        action: AuditAction,
        detail: String,
    ) {
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

    /// After a successful release: the tickets its pull requests name get their comment,
    /// label and transition; what failed for a reason that may pass is kept on the request
    /// and tried again by later ticks (without repeating what worked). Said in the thread,
    /// audited; never fails the release.
    async fn update_tickets(&self, desk: &Desk, request: &ReleaseRequest, app: &AppConfig) {
        let Some(settings) = app.tickets() else {
            let _ = self
                .change(desk, request.id, |r| r.tickets_done = true)
                .await;
            return;
        };
        let Ok(env) = deploy_core::EnvName::parse(&request.environment) else {
            return;
        };
        let plan = TicketPlan::for_release(settings, &env);
        let pending: Vec<TicketAction> = request
            .tickets_pending
            .iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect();
        let report = if pending.is_empty() {
            let release = Release {
                sha: request.sha.clone(),
                environment: request.environment.clone(),
                deployment_id: request.deployment_id.unwrap_or_default(),
                by: request.requester_name.clone(),
            };
            tickets::update_tickets(self.forge().as_ref(), self.jira(), app, &release, &plan).await
        } else {
            TicketReport {
                lookup: None,
                results: tickets::apply(self.forge().as_ref(), self.jira(), app, &pending).await,
                left_out: 0,
            }
        };
        let retry: Vec<serde_json::Value> = report
            .to_retry()
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect();
        let lookup_again = report.lookup.as_ref().is_some_and(|f| f.temporary);
        let done = retry.is_empty() && !lookup_again;
        let _ = self
            .change(desk, request.id, |r| {
                r.tickets_done = done;
                r.tickets_pending = retry.clone();
            })
            .await;
        let lines = report.lines();
        if lines.is_empty() {
            return;
        }
        self.record_release(desk, request, AuditAction::TicketUpdate, lines.join("; "))
            .await;
        if let Some(poster) = self.poster() {
            poster
                .outbox(&request.chat, &request.requester)
                .post(say::tickets(request, &lines, done))
                .await;
        }
    }

    /// Released requests whose tickets are still to update (a tracker was not reached).
    async fn retry_tickets(&self, desk: &Desk) -> anyhow::Result<()> {
        for request in desk.store().requests(None, false).await? {
            if request.state != RequestState::Succeeded || request.tickets_done {
                continue;
            }
            let Some(app) = deploy_core::AppName::parse(&request.app)
                .ok()
                .and_then(|a| self.apps().get(&a))
            else {
                continue;
            };
            self.update_tickets(desk, &request, app).await;
        }
        Ok(())
    }
}
