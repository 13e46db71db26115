//! The one test world of the end-to-end scenarios: fakes of GitHub, Slack and Heroku that
//! speak their real wire formats (checked against the upstream samples in
//! `../shared/fixtures`), queue backends, faseng and chima in process and as real
//! processes, and the waits they share.
//!
//! Start from [`world::World::build`] (fakes, repository, backend), [`harness::Env`] (faseng
//! in process on a world), [`procs::ProcessEnv`] (the one environment list of a real faseng
//! or chima), [`direct::Direct`] (a provider run directly), [`chat::Chat`] (chima's bot in
//! process) or [`slack_app::SlackHarness`] (chima's Slack app in process).

pub mod backend;
pub mod bench;
pub mod bins;
pub mod browser;
pub mod chat;
pub mod conversation;
pub mod deploy_config;
pub mod direct;
pub mod dirs;
pub mod fake_github;
pub mod fake_heroku;
pub mod fake_jira;
pub mod fake_slack;
pub mod fixtures;
pub mod git_repo;
pub mod harness;
pub mod hostile;
pub mod log_links;
pub mod net;
pub mod procs;
pub mod redis_server;
pub mod slack_app;
pub mod snapshot;
pub mod sshd;
pub mod wait;
pub mod world;
