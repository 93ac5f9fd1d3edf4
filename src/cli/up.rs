//! `hark up`: settings come in (flags, `HARK_*` variables, defaults); a running gateway
//! with the stored functions and those of `hark.yml` goes out, until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::channels::common::{system_clock, BuildContext, Secrets};
use crate::channels::{Channels, ChannelsConfig, Clock};
use crate::dispatch::queue::{AsyncQueue, QueueConfig};
use crate::dispatch::Dispatcher;
use crate::provider::process::ProcessProvider;
use crate::provider::{LogHub, Provider};
use crate::registry::{DeployMode, Registry};
use crate::server::{AppState, DEFAULT_MAX_BODY, DEFAULT_MAX_INFLIGHT};
use crate::stack::Stack;
use crate::store::Store;

/// Stack file loaded from the working directory when `--config` is not given.
pub const DEFAULT_STACK_FILE: &str = "hark.yml";

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Port to listen on.
    #[arg(long, env = "HARK_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HARK_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Stack file whose functions are deployed at start (default: ./hark.yml if present).
    #[arg(long, env = "HARK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Most synchronous calls in flight over all functions (429 above it).
    #[arg(long, env = "HARK_MAX_INFLIGHT", default_value_t = DEFAULT_MAX_INFLIGHT)]
    pub max_inflight: usize,
    /// Async calls running at once over all functions.
    #[arg(long, env = "HARK_QUEUE_WORKERS", default_value_t = 16)]
    pub queue_workers: usize,
    /// Most async calls waiting (503 above it).
    #[arg(long, env = "HARK_QUEUE_MAX", default_value_t = 100_000)]
    pub queue_max: u64,
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "HARK_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Testing aid only: check webhook signature timestamps as if the time were this many
    /// unix seconds, so recorded deliveries and published test vectors verify. Never set
    /// it in production: it turns off replay protection by time.
    #[arg(long, env = "HARK_TEST_CLOCK", hide = true)]
    pub test_clock: Option<i64>,
}

pub async fn run(args: UpArgs, data: &Path) -> anyhow::Result<ExitCode> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data)
        .with_context(|| format!("creating data directory {}", data.display()))?;
    let data = std::fs::canonicalize(data)?;
    let store = Store::open(&data.join("hark.db")).context("opening the store")?;
    let (auth, new_token) = Auth::load_or_create(&data)?;
    let logs = Arc::new(LogHub::default());
    let provider: Arc<dyn Provider> = Arc::new(ProcessProvider::new(data.join("secrets"), logs));
    let dispatcher = Arc::new(Dispatcher::new(provider.clone(), store.clone()).await?);
    let registry = Registry::new(store, provider, dispatcher);

    let restored = registry
        .restore()
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    if restored > 0 {
        tracing::info!(functions = restored, "restored deployed functions");
    }
    let stack_file = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_STACK_FILE)).filter(|p| p.exists()),
    };
    let mut channels_config = ChannelsConfig::default();
    if let Some(path) = stack_file {
        let stack = Stack::load(&path)?;
        for warning in &stack.warnings {
            tracing::warn!(file = %path.display(), "{warning}");
        }
        for spec in stack.functions {
            let name = spec.service.clone();
            if let Err(e) = registry.deploy(spec, DeployMode::Upsert).await {
                tracing::error!(file = %path.display(), function = %name, error = %e.message, "function not deployed");
            }
        }
        channels_config = stack.channels;
    }
    // Routes are checked once every function is deployed: a route naming a missing
    // secret or function stops the start with a message naming both.
    let ctx = BuildContext {
        registry: &registry,
        secrets: Secrets::new(registry.store.clone()),
    };
    let channels = match Channels::build(channels_config, &ctx).await {
        Ok(channels) => channels,
        Err(e) => {
            registry.provider.shutdown().await;
            return Err(anyhow::anyhow!("hark.yml channels: {e}"));
        }
    };
    for core in channels.cores() {
        tracing::info!(channel = core.channel, route = %core.name, "route ready at /{}/{}", core.channel, core.name);
    }
    let clock = match args.test_clock {
        Some(fixed) => {
            tracing::warn!(unix = fixed, "TEST CLOCK: webhook signatures are checked as if the time were fixed; for tests only");
            Arc::new(move || fixed) as Clock
        }
        None => system_clock(),
    };

    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another gateway running? try --port)")
    })?;
    let addr = listener.local_addr()?;
    let (stopping, shutdown) = watch::channel(false);
    let queue = AsyncQueue::new(
        registry.clone(),
        QueueConfig {
            workers: args.queue_workers.max(1),
            max_depth: args.queue_max,
            ..QueueConfig::default()
        },
    )
    .await?;
    // Results of channel calls go back through the channels that queued them.
    let channels = Arc::new(channels);
    queue.set_replies(channels.clone());
    let state = Arc::new(AppState {
        registry,
        queue,
        sync_slots: Arc::new(tokio::sync::Semaphore::new(args.max_inflight.max(1))),
        auth: Arc::new(auth),
        max_body: args.max_body,
        shutdown,
        channels,
        clock,
    });
    let token_path = data.join(crate::auth::ADMIN_TOKEN_FILE);
    match new_token {
        Some(path) => eprintln!("hark: wrote an admin token to {}", path.display()),
        None => eprintln!("hark: admin token in {}", token_path.display()),
    }
    eprintln!("hark: gateway listening on http://{addr}");
    crate::server::run(listener, state, stopping, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
