//! The `hark` binary: parses the command line and hands it to [`hark::cli::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    let cli = hark::cli::Cli::parse_args();
    let _log_lines = hark::telemetry::logs::init(cli.log_format);
    hark::cli::run(cli).await
}

/// glibc gives threads that allocate at once arenas of their own (up to eight per core),
/// and memory freed into one is not reused by the others: under load the gateway's
/// resident memory grew with its thread count. Two arenas serve its two runtime workers
/// and the blocking pool. Runs before any thread starts, as `mallopt` requires.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only sets a tuning value of the allocator; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
