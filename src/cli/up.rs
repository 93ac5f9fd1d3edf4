//! `hark up`: settings come in (flags, `HARK_*` variables, defaults); a running gateway
//! with the stored functions and those of `hark.yml` goes out, until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::channels::alexa::{AlexaChannel, AlexaSettings};
use crate::channels::common::ChannelReplies;
use crate::channels::common::{BuildContext, Secrets};
use crate::channels::{Channels, ChannelsConfig};
use crate::clock::{Clock, OffsetClock, SystemClock};
use crate::dispatch::admission::{self, Admission};
use crate::dispatch::queue::{AsyncQueue, QueueConfig};
use crate::dispatch::Dispatcher;
use crate::provider::docker::{self, DockerProvider};
use crate::provider::process::{ProcessProvider, SandboxMode, Sandboxing};
use crate::provider::swarm::{self, SwarmProvider};
use crate::provider::{LogHub, Provider};
use crate::registry::{DeployMode, Deployer, Registry};
use crate::route::skills::{Skill, DEFAULT_SKILLS_DIR};
use crate::server::{
    AppState, BodyBudget, ConnLimits, DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_STREAMS, MIN_MAX_HEADER_BYTES,
};
use crate::stack::Stack;
use crate::store::{Durability, Retention, Store};

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
    /// Most synchronous calls in flight over all functions; calls past it wait at most
    /// `--admission-wait-ms`, then get 429 with Retry-After [default: 1024, or a quarter
    /// of the open-files limit when that is lower].
    #[arg(long, env = "HARK_MAX_INFLIGHT")]
    pub max_inflight: Option<usize>,
    /// How long a call past `--max-inflight` waits for a slot before its 429, in ms.
    #[arg(long, env = "HARK_ADMISSION_WAIT_MS", default_value_t = admission::DEFAULT_WAIT.as_millis() as u64)]
    pub admission_wait_ms: u64,
    /// Async calls running at once over all functions.
    #[arg(long, env = "HARK_QUEUE_WORKERS", default_value_t = 16)]
    pub queue_workers: usize,
    /// Most async calls waiting (503 above it).
    #[arg(long, env = "HARK_QUEUE_MAX", default_value_t = 100_000)]
    pub queue_max: u64,
    /// Most bytes (headers and bodies) that waiting, running and dead-lettered async calls
    /// hold over all functions (503 above it); e.g. 1GiB.
    #[arg(long, env = "HARK_QUEUE_MAX_BYTES", default_value = "1GiB", value_parser = crate::function::parse_bytes)]
    pub queue_max_bytes: u64,
    /// The same for one function's calls [default: a quarter of --queue-max-bytes].
    #[arg(long, env = "HARK_QUEUE_MAX_FUNCTION_BYTES", value_parser = crate::function::parse_bytes)]
    pub queue_max_function_bytes: Option<u64>,
    /// New async and channel calls answer 503 while the data directory's file system has
    /// less free space than this (0: never).
    #[arg(long, env = "HARK_MIN_FREE_DISK", default_value = "256MiB", value_parser = crate::function::parse_bytes)]
    pub min_free_disk: u64,
    /// Each activation keeps what its function was given and answered, each body cut at
    /// this many bytes (0: keep no request, answer or log lines with activations).
    #[arg(long, env = "HARK_HISTORY_MAX_BODY", default_value = "64KiB", value_parser = crate::function::parse_bytes)]
    pub history_max_body: u64,
    /// How many successful calls of each function keep their story per second, or `all`;
    /// failed calls, replays and the web UI's calls always keep theirs. Telling a story
    /// costs more than the gateway's own work on a call, so under load only a sample is.
    #[arg(long, env = "HARK_HISTORY_STORY_RATE", default_value = "20", value_parser = crate::dispatch::story::parse_story_rate)]
    pub history_story_rate: crate::dispatch::story::PerSecond,
    /// Most bytes of those kept activation stories in all; the oldest go first, their
    /// activation records stay.
    #[arg(long, env = "HARK_HISTORY_MAX_BYTES", default_value = "256MiB", value_parser = crate::function::parse_bytes)]
    pub history_max_bytes: u64,
    /// Most activation records kept; the oldest go first.
    #[arg(long, env = "HARK_HISTORY_MAX_RECORDS", default_value_t = 100_000)]
    pub history_max_records: u64,
    /// Activation records older than this go, e.g. 30d, 12h (0: whatever their age).
    #[arg(long, env = "HARK_HISTORY_MAX_AGE", default_value = "30d", value_parser = parse_age)]
    pub history_max_age: Duration,
    /// Most bytes of request bodies held at once over all requests (503 above it).
    #[arg(long, env = "HARK_MAX_BODY_TOTAL", default_value = "256MiB", value_parser = crate::function::parse_bytes)]
    pub max_body_total: u64,
    /// Most open connections; past it, the connection idle longest closes to make room, and
    /// when none is idle new connections wait until one closes or falls idle.
    #[arg(long, env = "HARK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(usize))]
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams (requests) on one connection.
    #[arg(long, env = "HARK_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS)]
    pub max_streams: u32,
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "HARK_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Seconds a client has to send a request's headers; the connection is closed after.
    #[arg(long, env = "HARK_HEADER_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Seconds a client has to send a request's body, from its headers (408 after).
    #[arg(long, env = "HARK_BODY_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,
    /// Largest request head in bytes: request line and headers (431 above it; at least 8192).
    #[arg(long, env = "HARK_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Most header fields in a request (431 above it).
    #[arg(long, env = "HARK_MAX_HEADERS", default_value_t = DEFAULT_MAX_HEADERS)]
    pub max_headers: usize,
    /// Directory of Alexa skills (skills/NAME/skill.yaml); default: `alexa.skills` of the
    /// stack file, else ./skills if present.
    #[arg(long, env = "HARK_SKILLS")]
    pub skills: Option<PathBuf>,
    /// TESTING AID: start the gateway's clock at this time — RFC 3339, or unix seconds —
    /// (it then runs at the real rate). Only request verification reads it, for replaying
    /// recorded requests and published test vectors. Never set it in production: it turns
    /// off replay protection by time.
    #[arg(long, alias = "test-clock", env = "HARK_TEST_CLOCK", hide = true)]
    pub clock: Option<String>,
    /// Backend that runs the functions [default: the stack file's `provider.name` when
    /// it is process, docker or swarm, else process].
    #[arg(long, env = "HARK_PROVIDER", value_enum)]
    pub provider: Option<ProviderKind>,
    /// Docker network the function containers join (docker provider).
    #[arg(long, env = docker::ENV_NETWORK, default_value = docker::DEFAULT_NETWORK)]
    pub docker_network: String,
    /// Overlay network the function services join (swarm provider).
    #[arg(long, env = swarm::ENV_NETWORK, default_value = swarm::DEFAULT_NETWORK)]
    pub swarm_network: String,
    #[command(flatten)]
    pub browser: crate::browser::BrowserArgs,
    /// Ask for a bearer token with `functions:read` on `/metrics` (default: open, as on
    /// the OpenFaaS gateway).
    #[arg(long, env = "HARK_METRICS_AUTH")]
    pub metrics_auth: bool,
    /// Private, loopback, link-local or other special addresses that callback URLs
    /// (`X-Callback-Url`, Slack's `response_url`) may reach anyway: CIDR blocks, addresses
    /// or host names, comma-separated (default: none; public addresses are always allowed).
    #[arg(long, env = crate::egress::ENV_EGRESS_ALLOW, value_delimiter = ',')]
    pub egress_allow: Vec<String>,
    /// The URL browsers reach the gateway at, e.g. `https://hark.example.com` behind a
    /// TLS-terminating proxy. When it starts with https, the web UI's cookies are `Secure`
    /// and its session cookie is `__Host-hark_session`. (`X-Forwarded-Proto` is not
    /// trusted: anyone can send it.)
    #[arg(long, env = "HARK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// File holding the key that seals stored secrets (created, mode 0600, on first
    /// start) [default: DATA/secret.key]. `HARK_SECRET_KEY` (the key, base64) wins over it.
    #[arg(long, env = crate::store::sealed::ENV_SECRET_KEY_FILE)]
    pub secret_key_file: Option<PathBuf>,
    /// What a commit survives before it is acknowledged (the 202 of an async call, the
    /// answer to a Slack, GitHub or webhook delivery): `full` syncs each commit to disk
    /// (survives a power cut or OS crash); `normal` survives a gateway crash but may lose
    /// the last commits on a power cut or OS crash.
    #[arg(long, env = "HARK_DURABILITY", value_enum, default_value_t = Durability::default())]
    pub durability: Durability,
    /// Process functions run in a sandbox: a user of their own (when the gateway is
    /// root), a Landlock file-system fence and resource limits. `off` is for development
    /// only: functions can then read the data directory (keys, tokens, every secret).
    #[arg(long, env = "HARK_SANDBOX", value_enum, default_value_t = SandboxMode::default())]
    pub sandbox: SandboxMode,
}

/// Makes the gateway non-dumpable (`PR_SET_DUMPABLE` 0): a process of the same user can
/// no longer attach to it with ptrace nor read its `/proc/PID/{mem,environ,fd,…}` (they
/// belong to root from now on), and a crash leaves no core file with secrets in it. The
/// functions it starts are dumpable again after their `exec`.
fn forbid_inspection() -> anyhow::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE takes integer arguments only and touches no
    // memory of ours.
    let done = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if done != 0 {
        anyhow::bail!(
            "cannot make the gateway non-dumpable: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The backends `hark up` can run functions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Child processes of the gateway (no engine needed).
    Process,
    /// Containers on the local Docker Engine.
    Docker,
    /// Services on the Docker Swarm this engine manages.
    Swarm,
}

impl ProviderKind {
    /// The backend a stack file's `provider.name` chooses; `None` for other names
    /// (OpenFaaS files say `openfaas`, which leaves the choice to `hark up`).
    pub fn from_stack(name: &str) -> Option<ProviderKind> {
        match name {
            "process" => Some(ProviderKind::Process),
            "docker" => Some(ProviderKind::Docker),
            "swarm" => Some(ProviderKind::Swarm),
            _ => None,
        }
    }
}

pub async fn run(args: UpArgs, data: &Path) -> anyhow::Result<ExitCode> {
    // Before any secret is read: other processes of the same user may not ptrace the
    // gateway or read its memory or environment.
    forbid_inspection()?;
    let limits = conn_limits(&args)?;
    // First, so that everything from here on is counted.
    crate::telemetry::exporter::install(if args.metrics_auth {
        crate::telemetry::exporter::Access::Token
    } else {
        crate::telemetry::exporter::Access::Open
    });
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data)
        .with_context(|| format!("creating data directory {}", data.display()))?;
    let data = std::fs::canonicalize(data)?;
    let egress = Arc::new(
        crate::egress::EgressPolicy::allowing(&args.egress_allow).context("--egress-allow")?,
    );
    if !egress.allowed().is_empty() {
        tracing::warn!(allowed = ?egress.allowed(), "callback URLs may reach these special addresses");
    }
    let key = crate::store::KeySource::from_env_or(
        args.secret_key_file
            .clone()
            .unwrap_or_else(|| data.join(crate::store::sealed::DEFAULT_KEY_FILE)),
    );
    let store = Store::open_with(&data.join("hark.db"), key, args.durability)
        .context("opening the store")?;
    tracing::info!(durability = %store.durability(), "store opened");
    let secure_cookies = match &args.public_url {
        Some(url) => {
            let url = url::Url::parse(url).context("--public-url")?;
            anyhow::ensure!(
                matches!(url.scheme(), "http" | "https"),
                "--public-url must start with http:// or https://"
            );
            url.scheme() == "https"
        }
        None => false,
    };
    let (auth, new_token) = Auth::load_or_create(&data, store.clone(), secure_cookies).await?;
    // Bound before the stack file is read and the functions start, so that both can be
    // given the gateway's own URL.
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another gateway running? try --port)")
    })?;
    let addr = listener.local_addr()?;
    let gateway_url = own_url(addr);
    let stack_file = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_STACK_FILE)).filter(|p| p.exists()),
    };
    let stack = match &stack_file {
        Some(path) => {
            let stack = Stack::load_for(path, Some(&gateway_url))?;
            for warning in &stack.warnings {
                tracing::warn!(file = %path.display(), "{warning}");
            }
            Some((path, stack))
        }
        None => {
            tracing::info!(
                "no {DEFAULT_STACK_FILE} here: no function deployed at start. `hark new NAME` \
                 makes one; the examples (hark.yml, functions/, skills/) are in Hark's \
                 repository, where `hark up` starts them"
            );
            None
        }
    };
    let from_file = stack
        .as_ref()
        .and_then(|(_, s)| s.provider.as_deref())
        .and_then(ProviderKind::from_stack);
    let kind = args.provider.or(from_file).unwrap_or(ProviderKind::Process);
    let browser = browser_pool(
        &args,
        stack.as_ref().and_then(|(_, s)| s.browser.clone()),
        &data,
    )?;
    browser
        .guard_network(addr)
        .await
        .context("browser automation")?;
    let logs = Arc::new(LogHub::default());
    let mut docker_provider = None;
    let mut swarm_provider = None;
    let mut webdriver_listener = None;
    let provider: Arc<dyn Provider> = match kind {
        ProviderKind::Process => {
            // Process functions reach the pool on a loopback listener of its own, never
            // through `--bind`; their URLs carry their capabilities.
            let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .await
                .context("cannot listen on loopback for the functions' /webdriver")?;
            let base = format!("http://{}", listener.local_addr()?);
            webdriver_listener = Some(listener);
            let secrets = data.join("secrets");
            let mut sandboxing = Sandboxing::start(&data, &secrets, args.sandbox)
                .context("preparing the process sandbox")?;
            if let Some(key_file) = &args.secret_key_file {
                sandboxing = sandboxing
                    .protect(key_file)
                    .context("preparing the process sandbox")?;
            }
            Arc::new(
                ProcessProvider::new(secrets, logs)
                    .with_sockets(data.join("sockets"))
                    .with_gateway_url(&gateway_url)
                    .with_webdriver(&base, browser.capabilities().clone())
                    .with_sandbox(sandboxing),
            )
        }
        ProviderKind::Docker => {
            if let Some((_, stack)) = &stack {
                crate::cli::build::build_missing(&stack.functions).await?;
            }
            let provider =
                Arc::new(DockerProvider::start(&data, &args.docker_network, logs).await?);
            docker_provider = Some(provider.clone());
            if browser.disabled_reason().is_none() {
                webdriver_listener =
                    functions_listener(&provider, &browser, addr.port(), &data).await;
            }
            provider
        }
        ProviderKind::Swarm => {
            if let Some((_, stack)) = &stack {
                crate::cli::build::build_missing(&stack.functions).await?;
            }
            let provider = Arc::new(SwarmProvider::start(&data, &args.swarm_network, logs).await?);
            swarm_provider = Some(provider.clone());
            provider
        }
    };
    tracing::info!(provider = provider.name(), "provider ready");
    let dispatcher = Arc::new(Dispatcher::new(provider.clone(), store.clone()).await?);
    dispatcher.set_max_body(usize::try_from(args.history_max_body).unwrap_or(usize::MAX));
    dispatcher.set_story_rate(args.history_story_rate.0);
    store.set_retention(Retention {
        max_records: args.history_max_records,
        max_age: (!args.history_max_age.is_zero()).then_some(args.history_max_age),
        max_story_bytes: args.history_max_bytes,
    });
    dispatcher.set_browser(browser.clone());
    let registry = Registry::new(store, provider, dispatcher);

    let restored = registry
        .restore()
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    if restored > 0 {
        tracing::info!(functions = restored, "restored deployed functions");
    }
    let mut channels_config = ChannelsConfig::default();
    let mut alexa_settings = None;
    if let Some((path, stack)) = stack {
        alexa_settings = stack.alexa.clone();
        seed_function_secrets(&registry.store, &stack.functions, &stack.generated_secrets).await;
        for spec in stack.functions {
            let name = spec.service.clone();
            if let Err(e) = registry
                .deploy(spec, DeployMode::Upsert, Deployer::Operator)
                .await
            {
                tracing::error!(file = %path.display(), function = %name, error = %e.message, "function not deployed");
            }
        }
        channels_config = stack.channels;
    }
    // Routes are checked once every function is deployed: a route naming a missing
    // secret or function stops the start with a message naming both.
    let alexa = Arc::new(alexa_channel(
        &args,
        alexa_settings.unwrap_or_default(),
        &registry,
    )?);
    let ctx = BuildContext {
        registry: &registry,
        secrets: Secrets::new(registry.store.clone()),
        skills: alexa.skills().iter().map(|s| s.name.clone()).collect(),
    };
    let mut channels = match Channels::build(channels_config, &ctx).await {
        Ok(channels) => channels,
        Err(e) => {
            registry.provider.shutdown().await;
            return Err(anyhow::anyhow!("hark.yml channels: {e}"));
        }
    };
    channels.outbound.set_egress(egress.clone());
    for core in channels.cores() {
        tracing::info!(channel = core.channel, route = %core.name, "route ready at /{}/{}", core.channel, core.name);
    }
    let clock: Arc<dyn Clock> = match &args.clock {
        None => Arc::new(SystemClock),
        Some(at) => {
            let at = crate::clock::parse_start(at).with_context(|| {
                format!("--clock {at:?} is neither an RFC 3339 time nor unix seconds")
            })?;
            tracing::warn!(clock = %at, "testing aid: the gateway's clock starts at a fixed time");
            Arc::new(OffsetClock::starting_at(at))
        }
    };
    if let Some(docker) = docker_provider {
        // Containers of an earlier run that no deployment took over.
        docker.remove_unclaimed().await;
    }
    if let Some(swarm) = swarm_provider {
        // Services of an earlier run that no deployment took over.
        swarm.remove_unclaimed().await;
    }
    if browser.config().mode == crate::browser::BrowserMode::On {
        browser.start().await.context("starting the browser pool")?;
    }

    let (stopping, shutdown) = watch::channel(false);
    let queue = AsyncQueue::new(
        registry.clone(),
        QueueConfig {
            workers: args.queue_workers.max(1),
            max_depth: args.queue_max,
            egress,
            max_bytes: args.queue_max_bytes,
            max_function_bytes: args
                .queue_max_function_bytes
                .unwrap_or(args.queue_max_bytes / 4),
            data_dir: Some(data.clone()),
            min_free_disk: args.min_free_disk,
            ..QueueConfig::default()
        },
    )
    .await?;
    let scheduler = crate::dispatch::schedule::Scheduler::new(registry.clone());
    // Results of channel calls go back through the channels that queued them.
    let channels = Arc::new(channels);
    queue.set_replies(Arc::new(ChannelReplies {
        channels: channels.clone(),
        alexa: alexa.clone(),
        store: registry.store.clone(),
    }));
    let state = Arc::new(AppState {
        scheduler,
        registry,
        queue,
        admission: Arc::new(Admission::new(
            args.max_inflight.unwrap_or_else(admission::default_limit),
            std::time::Duration::from_millis(args.admission_wait_ms),
        )),
        auth: Arc::new(auth),
        max_body: args.max_body,
        shutdown,
        channels,
        alexa,
        clock,
        browser,
        body_budget: Arc::new(BodyBudget::new(args.max_body_total)),
        samples: Default::default(),
    });
    let token_path = data.join(crate::auth::ADMIN_TOKEN_FILE);
    match new_token {
        Some(path) => eprintln!("hark: wrote an admin token to {}", path.display()),
        None => eprintln!("hark: admin token in {}", token_path.display()),
    }
    // Only `/webdriver` is served to the functions, and only with a capability.
    let side = webdriver_listener.map(|listener| {
        let router = crate::browser::webdriver::function_routes().with_state(state.clone());
        (listener, router)
    });
    eprintln!("hark: gateway listening on http://{addr}");
    crate::server::run(listener, state, limits, stopping, shutdown_signal(), side).await?;
    Ok(ExitCode::SUCCESS)
}

/// The URL the gateway's own functions reach it at: its listening address, with loopback
/// in place of a wildcard (`0.0.0.0`, `::`).
fn own_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// The connection limits of the flags, checked.
fn conn_limits(args: &UpArgs) -> anyhow::Result<ConnLimits> {
    anyhow::ensure!(
        args.max_header_bytes >= MIN_MAX_HEADER_BYTES,
        "--max-header-bytes must be at least {MIN_MAX_HEADER_BYTES}"
    );
    anyhow::ensure!(args.max_headers >= 1, "--max-headers must be at least 1");
    anyhow::ensure!(
        args.max_connections >= 1,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(args.max_streams >= 1, "--max-streams must be at least 1");
    Ok(ConnLimits {
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
        body_timeout: std::time::Duration::from_secs(args.body_timeout),
        max_header_bytes: args.max_header_bytes,
        max_headers: args.max_headers,
        max_connections: args.max_connections,
        max_streams: args.max_streams,
    })
}

/// The browser pool of `hark.yml`'s `browser:` section and the flags. Without Chromium
/// (and not asked for with `--browser on`) it is off, and the log says why.
fn browser_pool(
    args: &UpArgs,
    file: Option<crate::browser::BrowserConfig>,
    data: &Path,
) -> anyhow::Result<crate::browser::BrowserPool> {
    let config = args.browser.apply(file.unwrap_or_default());
    for (setting, secs) in [
        ("browser queue_timeout", config.queue_timeout_secs),
        ("browser session_timeout", config.session_timeout_secs),
        ("browser health_interval", config.health_interval_secs),
    ] {
        seconds_within(setting, secs, crate::function::MAX_TIMEOUT)?;
    }
    let mut pool = crate::browser::BrowserPool::new(config, data).context("browser automation")?;
    // Chromedriver runs under this binary's `browser-guard`, so that the browsers die
    // with the gateway even when it is killed.
    if let Ok(hark) = std::env::current_exe() {
        pool = pool.guarded_by(hark);
    }
    match pool.disabled_reason() {
        Some(reason) => tracing::info!(reason, "browser automation is off; /webdriver answers 503"),
        None => {
            let c = pool.config();
            tracing::info!(chromium = %c.chromium.display(), warm = c.warm, max_sessions = c.max_sessions, "browser automation on at /webdriver");
        }
    }
    Ok(pool)
}

/// Refuses a setting of `secs` seconds that is negative, not a number, or past `limit`
/// (which would overflow the deadlines built from it).
fn seconds_within(setting: &str, secs: f64, limit: std::time::Duration) -> anyhow::Result<()> {
    if !(0.0..=limit.as_secs_f64()).contains(&secs) {
        anyhow::bail!(
            "{setting}: {secs} seconds is not between 0 and the limit of {} s",
            limit.as_secs()
        );
    }
    Ok(())
}

/// A listener on the functions' Docker network's gateway address, for containers'
/// `HARK_WEBDRIVER_URL`; `None` (logged) when the network has no usable address. Its
/// port is kept in the data directory and taken again at the next start when free, so
/// the containers' environment (and so their spec hash) stays the same and running
/// containers are taken over.
async fn functions_listener(
    provider: &DockerProvider,
    browser: &crate::browser::BrowserPool,
    port: u16,
    data: &Path,
) -> Option<tokio::net::TcpListener> {
    let Some((ip, _)) = provider.network_gateway().await else {
        tracing::warn!(
            "the functions' network has no gateway address; containers get no HARK_WEBDRIVER_URL"
        );
        return None;
    };
    let saved = data.join("functions-webdriver-port");
    let kept = std::fs::read_to_string(&saved)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok());
    let mut listener = None;
    for port in kept.into_iter().chain([port, 0]) {
        match tokio::net::TcpListener::bind((ip, port)).await {
            Ok(bound) => {
                listener = Some(bound);
                break;
            }
            Err(e) if port == 0 => {
                tracing::warn!(%ip, error = %e, "cannot listen on the functions' network; containers get no HARK_WEBDRIVER_URL");
            }
            Err(_) => {}
        }
    }
    let listener = listener?;
    let local = listener.local_addr().ok()?;
    let _ = std::fs::write(&saved, format!("{}\n", local.port()));
    provider.set_webdriver(&format!("http://{local}"), browser.capabilities().clone());
    tracing::info!(address = %local, "/webdriver served to the functions' network");
    Some(listener)
}

/// Loads the skills and builds the Alexa channel. A skills directory that was asked for
/// must exist; `./skills` is used only when present.
fn alexa_channel(
    args: &UpArgs,
    settings: AlexaSettings,
    registry: &Registry,
) -> anyhow::Result<AlexaChannel> {
    let dir = match args.skills.clone().or_else(|| settings.skills.clone()) {
        Some(dir) => Some(dir),
        None => Some(PathBuf::from(DEFAULT_SKILLS_DIR)).filter(|d| d.is_dir()),
    };
    let skills = match &dir {
        Some(dir) => Skill::load_dir(dir).context("loading Alexa skills")?,
        None => Vec::new(),
    };
    for skill in &skills {
        for (intent, def) in &skill.def.intents {
            if let Some(function) = &def.function {
                if registry.deployed(function).is_none() {
                    tracing::warn!(skill = %skill.name, intent, function = %function, "the intent's function is not deployed (yet)");
                }
            }
        }
        tracing::info!(skill = %skill.name, path = %format!("/alexa/{}", skill.name), intents = skill.def.intents.len(), verify = skill.def.verify, "skill loaded");
    }
    Ok(AlexaChannel::from_settings(&settings, skills, args.bind)?)
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

/// Stores each secret a stack function names that the secret store lacks: from the
/// environment variable `HARK_SECRET_<NAME>` when it is set (the variables channel routes
/// read), else a random value when the stack file's `secrets:` section says `generate`
/// (the demo portal's password), so a first `hark up` needs no setting. A secret already
/// in the store is left as it is.
async fn seed_function_secrets(
    store: &Store,
    functions: &[crate::function::FunctionDeployment],
    generated: &[String],
) {
    let mut names: Vec<&String> = functions.iter().flat_map(|f| &f.secrets).collect();
    names.extend(generated);
    names.sort();
    names.dedup();
    for name in names {
        match store.secret(name).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(secret = %name, error = %e, "secret store not readable");
                continue;
            }
        }
        let var = crate::channels::common::secrets::env_name(name);
        let (value, from) = match std::env::var(&var).ok().filter(|v| !v.is_empty()) {
            Some(value) => (value, var.as_str()),
            None if generated.contains(name) => (random_secret(), "generated"),
            None => continue,
        };
        match store.put_secret(name, value.into_bytes()).await {
            Ok(_) if from == "generated" => tracing::info!(
                secret = %name,
                "secret generated with a random value: the functions naming it read it from their secrets directory (HARK_SECRETS_DIR); set your own with `hark secret update {name} --from-file FILE`"
            ),
            Ok(_) => tracing::info!(secret = %name, from, "secret stored from the environment"),
            Err(e) => tracing::error!(secret = %name, error = %e, "secret not stored"),
        }
    }
}

/// 32 letters and digits from the system's random source (about 190 bits).
fn random_secret() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A history age: days (`30d`) or what function time limits take (`12h`, `90m`).
fn parse_age(text: &str) -> Result<Duration, String> {
    let wrong = || format!("{text:?} is not an age, e.g. 30d, 12h or 0");
    match text.trim().strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(24 * 3600))
            .map(Duration::from_secs)
            .ok_or_else(wrong),
        None => crate::function::parse_duration(text).ok_or_else(wrong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_ages_are_days_or_durations() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("0"), Ok(Duration::ZERO));
        for wrong in ["xd", "99999999999999999999d", "3w"] {
            assert!(parse_age(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn functions_reach_a_wildcard_gateway_on_loopback() {
        let url = |a: &str| own_url(a.parse().unwrap());
        assert_eq!(url("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080");
        assert_eq!(url("10.1.2.3:8080"), "http://10.1.2.3:8080");
    }

    #[test]
    fn browser_seconds_past_a_day_or_not_a_number_are_refused() {
        let day = crate::function::MAX_TIMEOUT;
        for bad in [f64::INFINITY, f64::NAN, -1.0, 1e20, 86_400.5] {
            let e = seconds_within("browser session_timeout", bad, day).unwrap_err();
            assert!(e.to_string().contains("limit of 86400 s"), "{e}");
        }
        for good in [0.0, 2.0, 86_400.0] {
            seconds_within("browser session_timeout", good, day).unwrap();
        }
    }
}
