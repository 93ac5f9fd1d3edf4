//! The log subscriber: a format (`--log-format`, `HARK_LOG_FORMAT`) and a filter
//! (`HARK_LOG`, default `info`) come in; `tracing` events go out on stderr as text for
//! people or as one JSON object per line for log collectors.

use tracing_subscriber::EnvFilter;

/// Variable holding the log filter, in `RUST_LOG` syntax.
pub const ENV_LOG: &str = "HARK_LOG";
/// Variable holding the log format (`text` or `json`).
pub const ENV_LOG_FORMAT: &str = "HARK_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with
    /// `message`) and the enclosing `span`s.
    Json,
}

/// Installs the process-wide subscriber writing to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env(ENV_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
