//! How a run ends, as values: what happened, not how it is said. [`crate::messages`] renders
//! each one once, for GitHub's status description and for chat.

use chrono::{DateTime, Utc};

use crate::providers::stages::Stage;
use crate::resolve::Refusal;

/// The result of a run, as GitHub states it: `success`, `failure` or `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// `success`.
    Success,
    /// `failure`: the provider (or a stage script) ran and failed.
    Failed(RunFailure),
    /// `error`: it could not run.
    Error(RunError),
}

impl RunOutcome {
    /// The status description (see [`crate::messages::run_failure`] and
    /// [`crate::messages::run_error`]); `None` for success, whose text depends on the run.
    pub fn description(&self) -> Option<String> {
        match self {
            RunOutcome::Success => None,
            RunOutcome::Failed(f) => Some(crate::messages::run_failure(f)),
            RunOutcome::Error(e) => Some(crate::messages::run_error(e)),
        }
    }
}

/// How a provider or a stage script failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFailure {
    /// It exited with a non-zero `code`; `last_line` is the log's last output line.
    Exited {
        /// The exit status.
        code: i32,
        /// The log's last output line, if any.
        last_line: Option<String>,
    },
    /// A signal killed it.
    Killed {
        /// The signal number.
        signal: i32,
    },
    /// The run's timeout stopped it.
    TimedOut {
        /// The timeout, in seconds.
        secs: u64,
    },
    /// The provider's own account of the failure (an SSH key refused, a host key mismatch).
    Explained(String),
    /// A Heroku build failed; `last_line` is the log's last output line.
    HerokuBuild {
        /// The log's last output line, if any.
        last_line: Option<String>,
    },
    /// A `before_deploy` / `after_deploy` script failed.
    Stage {
        /// The stage.
        stage: Stage,
        /// The script, as app.json names it.
        script: String,
        /// How it failed ([`RunFailure::Exited`] or [`RunFailure::Killed`]).
        failure: Box<RunFailure>,
    },
}

/// Why a run could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The operator's app.json refuses the deployment (no app, another repository's app, an
    /// unlisted environment, …).
    Refused(Refusal),
    /// A field of the webhook that may never reach a process.
    InvalidInput {
        /// `ref`, `sha`.
        what: &'static str,
        /// The value as sent.
        value: String,
        /// The rule it breaks.
        why: String,
    },
    /// The release desk refuses it: someone else's lock, or a freeze (see
    /// [`deploy_core::desk::Blocked`]), in the words chima refuses with.
    Blocked {
        /// [`deploy_core::desk::Blocked::plain`]: the status description (before GitHub's
        /// length limit).
        text: String,
        /// [`deploy_core::desk::Blocked::message`]: what chat shows.
        message: deploy_core::chat::Message,
    },
    /// `deploy:unlock` by someone other than the holder.
    UnlockRefused {
        /// App name.
        app: String,
        /// Environment.
        env: String,
        /// Who holds it, as shown.
        holder: String,
    },
    /// The app's provider is not available in this faseng.
    UnsupportedProvider(String),
    /// Checking out the commit failed.
    CheckoutFailed(String),
    /// The worker running the deploy stopped answering (at `at`, when known).
    WorkerStopped {
        /// When it was last heard from.
        at: Option<DateTime<Utc>>,
    },
    /// Anything else that kept the provider from running: the provider refused its inputs,
    /// a command could not be started, the checkout could not be handed over, ….
    CouldNotRun(String),
}
