//! Telemetry: what the gateway does comes in as counter, gauge and histogram updates
//! (through the `metrics` facade) and as `tracing` events; Prometheus text at `/metrics`
//! and log lines on stderr (text, or JSON lines with `--log-format json`) go out.
//!
//! - [`exporter`]: the process-wide Prometheus recorder, the `/metrics` route, and the
//!   values read at scrape time (replicas, queue depth, dead letters).
//! - [`meters`]: cheap recording helpers for the hot paths (function calls, channel
//!   requests); metric names are the `const`s below.
//! - [`logs`]: the log subscriber and its `--log-format`.
//! - [`throttle`]: repeated warnings rate-limited, with a count of those held back.
//! - [`samples`]: the queue's and the browser pool's gauges over the last day, for the UI.

pub mod exporter;
pub mod logs;
pub mod meters;
pub mod samples;
pub mod throttle;

/// OpenFaaS: calls of a function by its HTTP status (counter; `function_name`, `code`).
pub const GATEWAY_INVOCATION_TOTAL: &str = "gateway_function_invocation_total";
/// OpenFaaS: calls of a function that started (counter; `function_name`).
pub const GATEWAY_INVOCATION_STARTED: &str = "gateway_function_invocation_started";
/// OpenFaaS: how long calls took, in seconds (histogram; `function_name`, `code`).
pub const GATEWAY_FUNCTIONS_SECONDS: &str = "gateway_functions_seconds";
/// OpenFaaS: desired replicas of a function (gauge; `function_name`).
pub const GATEWAY_SERVICE_COUNT: &str = "gateway_service_count";
/// Requests to the Slack, GitHub, hooks and Alexa channels, by how they ended (counter;
/// `channel`, `outcome` = accepted | duplicate | refused, `reason`).
pub const CHANNEL_REQUESTS_TOTAL: &str = "hark_channel_requests_total";
/// Async calls pending or running (gauge, read at scrape time).
pub const QUEUE_DEPTH: &str = "hark_queue_depth";
/// Async calls that used up their retries (gauge, read at scrape time).
pub const QUEUE_DEAD_LETTERS: &str = "hark_queue_dead_letters";
/// Scheduled runs by outcome (counter; `function_name`, `outcome` = ok | failed |
/// skipped | cancelled).
pub const SCHEDULE_RUNS_TOTAL: &str = "hark_schedule_runs_total";
