//! chima end to end: its bot against the fake GitHub, its Slack app against the fake Slack,
//! `chima shell` and local mode as real processes, and whole scenarios of chima and faseng
//! as real processes together.

mod checks;
mod dashboard_local;
mod desk;
mod forge_conformance;
mod github;
mod local_mode;
mod requests;
mod rollback;
mod scenarios;
mod shell;
mod slack;
