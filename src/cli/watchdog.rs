//! `hark watchdog`: settings from flags or OpenFaaS's environment variables come in;
//! a watchdog serving the function goes out, until SIGTERM (see [`crate::watchdog`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::function::{parse_duration_within, FunctionName, Mode, MAX_TIMEOUT};
use crate::watchdog::{self, WatchdogConfig};

#[derive(Debug, clap::Args)]
pub struct WatchdogArgs {
    /// The function's command line (split like a shell does; no shell runs it).
    #[arg(long, env = watchdog::ENV_FPROCESS)]
    pub fprocess: String,
    /// fork: one process per request; http: one long-running process on $PORT, proxied.
    #[arg(long, env = watchdog::ENV_MODE, default_value = "fork")]
    pub mode: String,
    /// Per-request time limit, e.g. 30s or 500ms.
    #[arg(long, env = watchdog::ENV_EXEC_TIMEOUT, default_value = "30s")]
    pub exec_timeout: String,
    /// Most requests at once (429 beyond it); 0 is unlimited.
    #[arg(long, env = watchdog::ENV_MAX_INFLIGHT, default_value_t = 0)]
    pub max_inflight: usize,
    /// Port to listen on.
    #[arg(long, env = "port", default_value_t = watchdog::DEFAULT_PORT)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
    /// Unix socket to listen on instead of --bind and --port (set by the process
    /// provider for an HTTP-mode function).
    #[arg(long, env = crate::provider::process::ENV_SOCKET)]
    pub socket: Option<PathBuf>,
    /// Directory of the secret files (`HARK_SECRETS_DIR` for the function).
    #[arg(long, default_value = watchdog::SECRETS_DIR)]
    pub secrets_dir: PathBuf,
    /// The function's name, for log lines.
    #[arg(long, env = "HARK_FUNCTION", default_value = "function")]
    pub name: String,
}

pub async fn run(args: WatchdogArgs) -> anyhow::Result<ExitCode> {
    let mode = match args.mode.as_str() {
        "fork" => Mode::Fork,
        "http" => Mode::Http,
        other => anyhow::bail!("mode {other:?} is neither fork nor http"),
    };
    let timeout = parse_duration_within(&args.exec_timeout, MAX_TIMEOUT)
        .with_context(|| format!("exec_timeout {:?}", args.exec_timeout))?;
    let name: FunctionName = args.name.parse()?;
    let config = WatchdogConfig {
        listen: SocketAddr::new(args.bind, args.port),
        socket: args.socket,
        fprocess: args.fprocess,
        mode,
        timeout,
        max_inflight: (args.max_inflight > 0).then_some(args.max_inflight),
        secrets_dir: args.secrets_dir,
        name,
    };
    watchdog::run(config, watchdog::terminated()).await?;
    Ok(ExitCode::SUCCESS)
}
