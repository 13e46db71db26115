//! Test harness shared by the end-to-end scenarios: fakes of GitHub and Slack that speak their
//! real wire formats, checked against the upstream samples in `../shared/fixtures`.

pub mod bench;
pub mod bins;
pub mod deploy_config;
pub mod dirs;
pub mod fake_github;
pub mod fake_heroku;
pub mod fake_slack;
pub mod fixtures;
pub mod git_repo;
pub mod hostile;
pub mod log_links;
pub mod net;
pub mod redis_server;
pub mod sshd;
