//! Desk tickets: how faseng learns what chat decided. Before chima creates a deployment
//! that a lock, an unfreeze or an approved request allows, it issues a single-use ticket and
//! puts its id in `payload.desk_ticket`; faseng honours the allowance only by redeeming it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What allowed a deployment the desk would otherwise refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allowance {
    /// The deployer holds the environment's lock.
    Lock,
    /// The deployer holds an unfreeze for the app and environment.
    Unfreeze,
    /// Release request `#N` was approved.
    Request(u64),
}

/// A single-use permission for one deployment (app, environment, sha) by one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeskTicket {
    /// Unguessable ([`DeskTicket::new_id`]): what `payload.desk_ticket` carries.
    pub id: String,
    /// The app.
    pub app: String,
    /// The environment.
    pub environment: String,
    /// The commit it allows.
    pub sha: String,
    /// Who deploys (a stable id): whom faseng attributes the deployment to.
    pub user: String,
    /// Who deploys, as shown (never compared).
    #[serde(default)]
    pub user_name: String,
    /// What allowed it.
    pub allowed_by: Vec<Allowance>,
    /// When it was issued.
    pub at: DateTime<Utc>,
    /// When it can no longer be redeemed.
    pub expires_at: DateTime<Utc>,
}

impl DeskTicket {
    /// A fresh ticket id: 128 bits from the operating system's randomness, as 32 hex digits.
    pub fn new_id() -> anyhow::Result<String> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for a desk ticket: {e}"))?;
        Ok(hex::encode(bytes))
    }

    /// Whether it has run out at `now` (the caller's clock).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

/// Desk tickets, keyed by id.
#[async_trait]
pub trait Tickets: Send + Sync + 'static {
    /// Keeps a ticket (one with the same id is replaced).
    async fn issue_ticket(&self, t: &DeskTicket) -> anyhow::Result<()>;

    /// Single use: removes and returns ticket `id` when its app, environment and sha are
    /// these and it has not run out at `now`; else `None`, and a ticket that does not
    /// match stays unused. Atomic: of callers racing for one ticket, one gets it.
    async fn redeem_ticket(
        &self,
        id: &str,
        app: &str,
        environment: &str,
        sha: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeskTicket>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_random_bits_in_hex() {
        let a = DeskTicket::new_id().unwrap();
        let b = DeskTicket::new_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn allowances_are_snake_case() {
        assert_eq!(
            serde_json::to_string(&[Allowance::Lock, Allowance::Unfreeze, Allowance::Request(7)])
                .unwrap(),
            r#"["lock","unfreeze",{"request":7}]"#
        );
    }
}
