//! Integration tests: a real `hark up` over a real socket with real child processes,
//! and the `hark` CLI spawned against it.

mod api;
mod cli;
mod contract;
mod docker;
mod process;
mod util;
mod watchdog;
