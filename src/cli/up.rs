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
use crate::dispatch::Dispatcher;
use crate::provider::docker::{self, DockerProvider};
use crate::provider::process::ProcessProvider;
use crate::provider::{LogHub, Provider};
use crate::registry::{DeployMode, Registry};
use crate::server::{AppState, DEFAULT_MAX_BODY};
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
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "HARK_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Backend that runs the functions [default: the stack file's `provider.name` when
    /// it is process or docker, else process].
    #[arg(long, env = "HARK_PROVIDER", value_enum)]
    pub provider: Option<ProviderKind>,
    /// Docker network the function containers join (docker provider).
    #[arg(long, env = docker::ENV_NETWORK, default_value = docker::DEFAULT_NETWORK)]
    pub docker_network: String,
}

/// The backends `hark up` can run functions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Child processes of the gateway (no engine needed).
    Process,
    /// Containers on the local Docker Engine.
    Docker,
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
    let stack_file = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_STACK_FILE)).filter(|p| p.exists()),
    };
    let stack = match &stack_file {
        Some(path) => {
            let stack = Stack::load(path)?;
            for warning in &stack.warnings {
                tracing::warn!(file = %path.display(), "{warning}");
            }
            Some((path, stack))
        }
        None => None,
    };
    let from_file = stack
        .as_ref()
        .and_then(|(_, s)| s.provider.as_deref())
        .and_then(|name| match name {
            "process" => Some(ProviderKind::Process),
            "docker" => Some(ProviderKind::Docker),
            _ => None,
        });
    let kind = args.provider.or(from_file).unwrap_or(ProviderKind::Process);
    let logs = Arc::new(LogHub::default());
    let mut docker_provider = None;
    let provider: Arc<dyn Provider> = match kind {
        ProviderKind::Process => Arc::new(ProcessProvider::new(data.join("secrets"), logs)),
        ProviderKind::Docker => {
            if let Some((_, stack)) = &stack {
                crate::cli::build::build_missing(&stack.functions).await?;
            }
            let provider =
                Arc::new(DockerProvider::start(&data, &args.docker_network, logs).await?);
            docker_provider = Some(provider.clone());
            provider
        }
    };
    tracing::info!(provider = provider.name(), "provider ready");
    let dispatcher = Arc::new(Dispatcher::new(provider.clone(), store.clone()).await?);
    let registry = Registry::new(store, provider, dispatcher);

    let restored = registry
        .restore()
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    if restored > 0 {
        tracing::info!(functions = restored, "restored deployed functions");
    }
    if let Some((path, stack)) = stack {
        for spec in stack.functions {
            let name = spec.service.clone();
            if let Err(e) = registry.deploy(spec, DeployMode::Upsert).await {
                tracing::error!(file = %path.display(), function = %name, error = %e.message, "function not deployed");
            }
        }
    }
    if let Some(docker) = docker_provider {
        // Containers of an earlier run that no deployment took over.
        docker.remove_unclaimed().await;
    }

    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another gateway running? try --port)")
    })?;
    let addr = listener.local_addr()?;
    let (stopping, shutdown) = watch::channel(false);
    let state = Arc::new(AppState {
        registry,
        auth: Arc::new(auth),
        max_body: args.max_body,
        shutdown,
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
