//! faseng end to end: webhooks in, statuses and chat out, in process and as real processes;
//! the trust boundary, the release desk, hostile input, retention, operability, the compose
//! file and the dashboard in a real browser.

mod compose;
mod dashboard;
mod desk;
mod hostile_input;
mod operability;
mod retention;
mod scenarios;
mod trust_boundary;
