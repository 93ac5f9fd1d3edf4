//! Hark turns voice commands, chat commands, webhooks and schedules into calls of small
//! functions, and turns the functions' answers back into spoken or written replies.
//!
//! # Layout
//! The modules follow the path of a request:
//! - [`channels`]: ingress. `api` is the OpenFaaS-compatible REST API and `/function/NAME`.
//! - [`registry`]: which functions exist; deploys them through the provider and the store.
//! - [`dispatch`]: runs one call within its time limit and records its activation.
//! - [`provider`]: the backend trait and its implementations (`process`, the default;
//!   `docker`, containers on the local engine).
//! - [`store`]: SQLite persistence of functions, secrets and activations.
//! - [`verify`]: signature checks of Slack, GitHub, Standard Webhooks and payload HMACs,
//!   and webhook trigger rules.
//! - [`auth`]: API tokens (JWT) and their scopes.
//! - [`server`]: the axum router and the serve/drain loop; [`error`]: the HTTP error type.
//! - [`stack`]: `hark.yml` (OpenFaaS stack files); [`function`]: names and deployment records.
//! - [`cli`]: the `hark` command line; [`watchdog`]: the entrypoint inside function images.

pub mod auth;
pub mod channels;
pub mod cli;
pub mod dispatch;
pub mod error;
pub mod function;
pub mod provider;
pub mod registry;
pub mod server;
pub mod stack;
pub mod store;
pub mod verify;
pub mod watchdog;
