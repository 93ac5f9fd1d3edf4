//! Hark turns voice commands, chat commands, webhooks and schedules into calls of small
//! functions, and turns the functions' answers back into spoken or written replies.
//!
//! # Layout
//! The modules follow the path of a request:
//! - [`channels`]: ingress. `api` is the OpenFaaS-compatible REST API and `/function/NAME`;
//!   `slack`, `github` and `hooks` verify signed deliveries, run the routed function within
//!   the platform's deadline and format its reply; `common` is their shared plumbing.
//! - [`registry`]: which functions exist; deploys them through the provider and the store.
//! - [`route`]: which function a platform event calls: Alexa skills (`skills/NAME/skill.yaml`).
//! - [`dispatch`]: runs one call within its time limit and records its activation.
//! - [`egress`]: the SSRF guard of requests to URLs that requests supply (callbacks).
//! - [`provider`]: the backend trait and its implementations (`process`, the default;
//!   `docker`, containers on the local engine; `swarm`, services on a Docker Swarm).
//! - [`browser`]: the pool of warm headless-Chromium WebDriver sessions that functions
//!   lease through `/webdriver`, the proxy their pages go out through, and the screenshots
//!   of failed browser calls.
//! - [`store`]: SQLite persistence of functions, secrets, activations, the async queue,
//!   schedules and delivery ids.
//! - [`verify`]: signature checks of Slack, GitHub, Standard Webhooks and payload HMACs,
//!   and webhook trigger rules.
//! - [`auth`]: API tokens (JWT with ids and key ids, revocable through the store), their
//!   scopes, and the web UI's server-side sessions.
//! - [`ui`]: the web UI at `/ui/` (server-rendered pages over the same registry and store).
//! - [`server`]: the axum router and the serve/drain loop; [`error`]: the HTTP error type.
//! - [`stack`]: `hark.yml` (OpenFaaS stack files); [`function`]: names and deployment records.
//! - [`clock`]: the wall clock as an injectable value.
//! - [`fuzzing`]: one entry point per fuzz target (`fuzz/`), replayed over the corpus by
//!   `cargo test` (feature `fuzzing`: not in the product binary).
//! - [`telemetry`]: Prometheus metrics at `/metrics` (OpenFaaS names) and the log format.
//! - [`gateway`]: the composition root: a `GatewayConfig` (flags over `hark.yml` over
//!   defaults) builds the store, provider, registry, channels and queue of a gateway.
//! - [`cli`]: the `hark` command line; [`watchdog`]: the entrypoint inside function images.
//! - [`scaffold`]: function templates (`hark new`), embedded from `functions/templates/`.

pub mod auth;
pub mod browser;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod dispatch;
pub mod egress;
pub mod error;
pub mod function;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gateway;
pub mod provider;
pub mod registry;
pub mod route;
pub mod scaffold;
pub mod server;
pub mod stack;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod verify;
pub mod watchdog;
