//! The log subscriber: a format (`--log-format`, `HARK_LOG_FORMAT`) and a filter
//! (`HARK_LOG`, default `info`) come in; `tracing` events go out on stderr as text for
//! people or as one JSON object per line for log collectors.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
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

/// Lines buffered for the writer thread before a logging thread waits for it. The
/// buffer is allocated whole at start-up (8k lines: 256 KiB of resident memory; 64k cost
/// 2 MiB of the idle gateway).
const BUFFERED_LINES: usize = 8 * 1024;

/// Installs the process-wide subscriber writing to stderr. Lines go to stderr from a
/// thread of their own, written together when several are waiting: a request's log line
/// costs it a queue push instead of a `write` system call and the wake-up of whoever
/// reads stderr. No line is dropped: when the writer falls `BUFFERED_LINES` behind,
/// logging waits for it. Lines still queued are written when the returned guard drops,
/// so keep it until the process ends.
#[must_use = "lines still queued are lost unless the guard lives until the process ends"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_env(ENV_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("log-writer")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    // Colours for a person at a terminal; plain text for files, pipes and collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}
