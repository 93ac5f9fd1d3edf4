//! The `hark` binary: parses the command line and hands it to [`hark::cli::run`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hark::cli::Cli::parse();
    hark::telemetry::logs::init(cli.log_format);
    hark::cli::run(cli).await
}
