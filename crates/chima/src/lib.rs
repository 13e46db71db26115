//! chima, the chat bot: chat commands become GitHub deployments.
//!
//! The grammar ([`grammar`]) is pure; handlers ([`handlers`]) take a parsed command and a chat
//! context and answer through an [`chat::Outbox`]; where deployments live is a [`forge::Forge`]
//! (GitHub in [`github`]); transports (the shell in [`shell`]) sit at the edge.

#![warn(missing_docs)]

pub mod chat;
pub mod checks;
pub mod cli;
pub mod desk;
pub mod forge;
pub mod github;
pub mod grammar;
pub mod handlers;
pub mod local;
pub mod messages;
pub mod shell;
pub mod slack;
pub mod store;
pub mod tickets;
pub mod web_actions;

pub use handlers::Bot;
