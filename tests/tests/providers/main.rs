//! Every provider, run directly through faseng's stage runner and end to end through a
//! webhook: shell, capistrano and fabric over a real sshd, Heroku against its fake, before
//! and after stages, and what a deploy script can reach.

mod capistrano;
mod fabric;
mod heroku;
mod isolation;
mod shell_example;
mod stages;
