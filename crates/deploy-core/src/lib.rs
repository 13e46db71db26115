//! Contract types shared by chima (the chat bot) and faseng (the deployer): the app.json
//! model, validated names and git refs, the neutral chat message and its renderings, the
//! deployment payload and the webhook events GitHub sends about it, the release desk's
//! vocabulary (locks, freeze windows, refusals) and release requests' configuration
//! (protected environments, ticket updates), the GitHub client factory, the HTTP serve
//! loop with its limits, and process logging (`LOG_FORMAT`).

#![warn(missing_docs)]

pub mod apps;
pub mod chat;
pub mod clock;
pub mod desk;
pub mod duration;
pub mod event;
pub mod github;
pub mod keys;
pub mod logging;
pub mod names;
pub mod payload;
pub mod protect;
pub mod server;
pub mod task;

pub use apps::{AppConfig, Apps, ConfigError, ConfigProblem, Provider, Secret};
pub use clock::{Clock, ManualClock, SystemClock};
pub use duration::{Span, SpanError};
pub use event::DeploymentEvent;
pub use github::{GithubAuth, GithubClients};
pub use keys::{LineKey, RunKey};
pub use names::{
    AppName, CommitSha, EnvName, GitRef, NameError, RefError, RepoName, RepoNameError, ScriptPath,
    ScriptPathError, ShaError, is_invisible,
};
pub use payload::{DeploymentPayload, NewDeployment, Notify, Rollback};
pub use protect::{Approver, CheckKind, JiraSettings, Protection, TicketSettings};
pub use task::{Task, TaskError, TaskWord};
