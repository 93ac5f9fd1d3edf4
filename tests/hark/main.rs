//! Integration tests: a real `hark up` over a real socket with real child processes,
//! and the `hark` CLI spawned against it.

mod alexa;
mod api;
mod bench;
mod browser;
mod channels;
mod cli;
mod contract;
mod docker;
mod hardening;
mod holiday;
mod limits;
mod metrics;
mod process;
mod queue;
mod sandbox;
mod scaffold;
mod schedule;
mod sessions;
mod swarm;
mod tokens;
mod ui;
mod util;
mod watchdog;
