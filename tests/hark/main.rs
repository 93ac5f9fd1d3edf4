//! Integration tests: a real `hark up` over a real socket with real child processes,
//! and the `hark` CLI spawned against it.

mod alexa;
mod api;
mod bench;
mod browser;
mod channels;
mod charts;
mod cli;
mod contract;
mod discord;
mod docker;
mod doctor;
mod fences;
mod first_run;
mod gateway_image;
mod hardening;
mod history;
mod holiday;
mod install;
mod limits;
mod logs;
mod metrics;
#[path = "../../src/store/pg_cluster.rs"]
mod pg_cluster;
mod process;
mod queue;
mod repeated_warnings;
mod sandbox;
mod scaffold;
mod schedule;
mod secret_scope;
mod sessions;
mod several_gateways;
mod sockets;
mod swarm;
mod teams;
mod telegram;
mod tokens;
mod twilio;
mod ui;
mod util;
mod watchdog;
