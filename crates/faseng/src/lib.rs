//! faseng, the deployer: GitHub `deployment` webhooks in (signed, deduplicated, durably
//! queued on Redis or SQLite), one run at a time per app+environment in arrival order,
//! provider runs in a per-run worktree, statuses to GitHub and live chat message edits out.
//!
//! Entry points: [`app::Application`] (HTTP + optional worker), [`app::Services::run_worker`]
//! (worker only, through [`worker::run`]), [`deployer::Deployer::process`] (one job, for
//! tests). Dependencies run one way: app → worker → deployer → queue.

#![warn(missing_docs)]

pub mod app;
pub mod checkout;
pub mod deployer;
pub mod desk;
pub mod intake;
pub mod job;
pub mod lease;
pub mod links;
pub mod local;
pub mod messages;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod poster;
pub mod process;
pub mod providers;
pub mod queue;
pub mod reconcile;
pub mod repair;
pub mod reporter;
pub mod resolve;
pub mod retention;
pub mod rundir;
pub mod runlog;
pub mod sandbox;
pub mod status;
pub mod stream_slots;
pub mod web;
pub mod webhook;
pub mod worker;

pub use app::{Application, Config, Services};
/// The durable store, in its own crate (shared with chima).
pub use deploy_store as store;

/// A crash point for fault-injection tests: built with the `failpoints` feature and run with
/// `FAILPOINTS=<name>=return`, the process dies here as if killed with SIGKILL. Without the
/// feature it is nothing.
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |_| $crate::die_at($name));
    };
}
pub(crate) use crash_point;

/// Dies at crash point `name` (see [`crash_point`]).
#[cfg(feature = "failpoints")]
pub(crate) fn die_at(name: &str) -> ! {
    eprintln!("faseng: crash point {name}: dying");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}
