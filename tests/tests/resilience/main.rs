//! The fault suite (its list of cases is at the top of `faults.rs`): real faseng processes
//! killed, frozen and restarted, backends and fakes failing, reconciling with GitHub.

mod faults;
mod reconcile;
mod worker_crash;
