//! The Slack transport: Events API over HTTP or Socket Mode, Web API replies, one live
//! message per deployment, buttons and the "nobody picked it up" watchdog.

pub mod app;
pub mod events;
pub mod http;
pub mod poster;
pub mod socket;
pub mod web;
