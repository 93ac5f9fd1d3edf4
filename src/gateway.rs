//! The composition root: a [`GatewayConfig`] (the settings of `hark up`'s flags over the
//! stack file's over defaults) goes in; [`GatewayConfig::build`] wires the store, the
//! provider, the registry, the channels, the browser pool and the queue into a
//! [`Gateway`], bound and ready, which [`Gateway::serve`] runs until its shutdown signal.
//!
//! `hark up` only turns its flags into a `GatewayConfig`; tests build gateways the same
//! way, so the wiring lives here once.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::browser::{BrowserArgs, BrowserPool};
use crate::channels::alexa::{AlexaChannel, AlexaSettings};
use crate::channels::common::{BuildContext, ChannelReplies, Secrets};
use crate::channels::{Channels, ChannelsConfig};
use crate::clock::{Clock, FixedClock, OffsetClock, SystemClock};
use crate::dispatch::admission::{self, Admission};
use crate::dispatch::queue::{AsyncQueue, QueueConfig};
use crate::dispatch::story::DEFAULT_STORY_RATE;
use crate::dispatch::Dispatcher;
use crate::function::FunctionDeployment;
use crate::provider::docker::{self, DockerProvider};
use crate::provider::process::{ProcessProvider, SandboxMode, Sandboxing};
use crate::provider::swarm::{self, SwarmProvider};
use crate::provider::{LogHub, Provider};
use crate::registry::{DeployMode, Deployer, Registry};
use crate::route::skills::{Skill, DEFAULT_SKILLS_DIR};
use crate::server::{AppState, BodyBudget, ConnLimits, DEFAULT_MAX_BODY, DEFAULT_MAX_BODY_TOTAL};
use crate::stack::Stack;
use crate::store::{Durability, KeySource, Retention, Store};
use crate::telemetry::exporter::Access;
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

/// Stack file loaded from the working directory when none is named.
pub const DEFAULT_STACK_FILE: &str = "hark.yml";

/// Everything a gateway is built from. [`GatewayConfig::new`] gives the defaults of
/// `hark up` with no flags and no stack file.
pub struct GatewayConfig {
    /// The data directory (created, mode 0700): keys, tokens, the SQLite store, secrets.
    pub data: PathBuf,
    /// The address the gateway listens on; port 0 takes a free one.
    pub listen: SocketAddr,
    /// The URL browsers reach the gateway at; an `https` one makes the UI's cookies
    /// `Secure`.
    pub public_url: Option<url::Url>,
    /// The functions, channels, Alexa settings and browser pool deployed at start.
    pub stack: StackSource,
    /// Directory of Alexa skills; default: `alexa.skills` of the stack file, else
    /// `./skills` when present.
    pub skills: Option<PathBuf>,
    pub store: StoreChoice,
    pub provider: ProviderChoice,
    /// The flags' browser settings, applied over the stack file's `browser:` section.
    pub browser: BrowserArgs,
    pub limits: Limits,
    pub queue: QueueLimits,
    pub history: HistoryConfig,
    /// Special addresses callback URLs may reach anyway (CIDR blocks, addresses, hosts).
    pub egress_allow: Vec<String>,
    /// Who may read `/metrics`.
    pub metrics: Access,
    pub clock: ClockConfig,
    /// Progressive responses may also go to this origin (a fake Alexa API in tests).
    #[doc(hidden)]
    pub alexa_api_for_tests: Option<url::Url>,
}

/// Where the stack file's part of the settings comes from.
pub enum StackSource {
    /// No stack file: no function is deployed at start.
    None,
    /// A file, read once the gateway's own URL is known (`${HARK_GATEWAY_URL}`).
    File(PathBuf),
    /// A stack already parsed (tests).
    Parsed(Box<Stack>),
}

impl StackSource {
    /// The stack and the file it came from, its `${HARK_GATEWAY_URL}` being `gateway_url`.
    fn load(self, gateway_url: &str) -> anyhow::Result<Option<(PathBuf, Stack)>> {
        Ok(match self {
            StackSource::None => {
                tracing::info!(
                    "no {DEFAULT_STACK_FILE} here: no function deployed at start. `hark new NAME` \
                     makes one; the examples (hark.yml, functions/, skills/) are in Hark's \
                     repository, where `hark up` starts them"
                );
                None
            }
            StackSource::File(path) => {
                let stack = Stack::load_for(&path, Some(gateway_url))?;
                for warning in &stack.warnings {
                    tracing::warn!(file = %path.display(), "{warning}");
                }
                Some((path, stack))
            }
            StackSource::Parsed(stack) => Some((PathBuf::from(DEFAULT_STACK_FILE), *stack)),
        })
    }

    /// The file `path` names; else `./hark.yml` when it exists; else none.
    pub fn file_or_default(path: Option<PathBuf>) -> StackSource {
        match path.or_else(|| Some(PathBuf::from(DEFAULT_STACK_FILE)).filter(|p| p.exists())) {
            Some(path) => StackSource::File(path),
            None => StackSource::None,
        }
    }
}

/// The store as asked for: the flag's (`--store`, `HARK_STORE`), else the stack file's
/// `store:`, else SQLite; with the settings of each backend.
#[derive(Clone, Default)]
pub struct StoreChoice {
    /// `sqlite` or a `postgres://` URL.
    pub location: Option<String>,
    /// The file of the key that seals stored secrets [default: DATA/secret.key];
    /// `HARK_SECRET_KEY` wins over it.
    pub key_file: Option<PathBuf>,
    /// SQLite's; on PostgreSQL the server's `synchronous_commit` decides.
    pub durability: Durability,
}

impl std::fmt::Debug for StoreChoice {
    /// The location without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let location = self
            .location
            .as_ref()
            .map(|l| DatabaseUrl(l.clone()).to_string());
        f.debug_struct("StoreChoice")
            .field("location", &location)
            .field("key_file", &self.key_file)
            .field("durability", &self.durability)
            .finish()
    }
}

impl StoreChoice {
    /// The backend to open, given the stack file's `store:`.
    pub fn resolve(&self, from_stack: Option<&str>) -> anyhow::Result<StoreConfig> {
        let key_file = self.key_file.clone();
        let (location, from) = match (&self.location, from_stack) {
            (Some(flag), _) => (flag.as_str(), "--store"),
            (None, Some(stack)) => (stack, "store: in the stack file"),
            (None, None) => ("sqlite", ""),
        };
        Ok(match location {
            "sqlite" => StoreConfig::Sqlite {
                key_file,
                durability: self.durability,
            },
            url => StoreConfig::Postgres {
                url: DatabaseUrl::parse(url).context(from)?,
                key_file,
                durability: self.durability,
            },
        })
    }
}

/// Where durable state lives.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One SQLite file, `DATA/hark.db`: the embedded default.
    Sqlite {
        /// The file of the key that seals stored secrets [default: DATA/secret.key];
        /// `HARK_SECRET_KEY` wins over it.
        key_file: Option<PathBuf>,
        durability: Durability,
    },
    /// A PostgreSQL database that several gateways share (`--store postgres://…`).
    Postgres {
        url: DatabaseUrl,
        /// As for SQLite; every gateway on the database must be given the same key.
        key_file: Option<PathBuf>,
        /// `normal` turns `synchronous_commit` off on this gateway's connections; `full`
        /// leaves the server's setting (which waits for its disk unless it was turned off).
        durability: Durability,
    },
}

/// A `postgres://` URL, which may hold a password: shown without it.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// `url` if it is a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> anyhow::Result<DatabaseUrl> {
        let parsed = url::Url::parse(url).map_err(|e| {
            anyhow::anyhow!("not a URL ({e}): give sqlite or postgres://USER@HOST:PORT/DB")
        })?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "postgres" | "postgresql"),
            "{:?} is not a store: give sqlite or postgres://USER@HOST:PORT/DB",
            parsed.scheme()
        );
        Ok(DatabaseUrl(url.to_owned()))
    }

    /// The URL to connect with (password included).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                // `?password=…` is a password too.
                if url.query_pairs().any(|(k, _)| k == "password") {
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if k == "password" { "***".into() } else { v };
                            (k.into_owned(), v.into_owned())
                        })
                        .collect();
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                f.write_str(url.as_str())
            }
            Err(_) => f.write_str("postgres://…"),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl StoreConfig {
    /// A key file named outside the data directory, which the process sandbox must keep
    /// from functions too.
    pub fn key_file(&self) -> Option<&Path> {
        match self {
            StoreConfig::Sqlite { key_file, .. } | StoreConfig::Postgres { key_file, .. } => {
                key_file.as_deref()
            }
        }
    }

    /// Opens the store, its relative defaults taken in `data`.
    pub async fn open(&self, data: &Path) -> anyhow::Result<Store> {
        let key = |key_file: &Option<PathBuf>| {
            KeySource::from_env_or(
                key_file
                    .clone()
                    .unwrap_or_else(|| data.join(crate::store::sealed::DEFAULT_KEY_FILE)),
            )
        };
        match self {
            StoreConfig::Sqlite {
                key_file,
                durability,
            } => {
                let store = Store::open_with(&data.join("hark.db"), key(key_file), *durability)
                    .context("opening the store")?;
                tracing::info!(%durability, "store opened");
                Ok(store)
            }
            StoreConfig::Postgres {
                url,
                key_file,
                durability,
            } => {
                let store = Store::connect(url.expose(), key(key_file), *durability)
                    .await
                    .with_context(|| format!("opening the store at {url}"))?;
                tracing::info!(database = %url, %durability, "store opened on PostgreSQL");
                Ok(store)
            }
        }
    }
}

/// How often a gateway on a shared database looks for the functions the others deployed,
/// updated, scaled or removed.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Keeps this gateway's functions as the store says, every [`FOLLOW_EVERY`], while the
/// gateway runs: what another gateway on the same database deployed is served here too.
async fn follow_other_gateways(registry: Registry) {
    static FAILED: Throttle = Throttle::new(REPEAT_INTERVAL);
    let mut every = tokio::time::interval(FOLLOW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match registry.follow_store().await {
            Ok(changed) if !changed.is_empty() => {
                tracing::info!(functions = ?changed, "followed what another gateway changed")
            }
            Ok(_) => {}
            Err(e) => {
                crate::warn_repeated!(FAILED, "follow", error = %e.message, "cannot read the shared store's functions")
            }
        }
    }
}

/// The backends functions can run on.
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

    /// The backend to run: the one asked for, else the stack file's `provider.name`
    /// when it names one, else the process provider.
    pub fn choose(asked: Option<ProviderKind>, stack_name: Option<&str>) -> ProviderKind {
        asked
            .or_else(|| stack_name.and_then(ProviderKind::from_stack))
            .unwrap_or(ProviderKind::Process)
    }
}

/// The provider as asked for, and the settings of each backend; the choice falls to the
/// stack file's `provider.name`, then to the process provider.
#[derive(Debug, Clone)]
pub struct ProviderChoice {
    pub kind: Option<ProviderKind>,
    /// Process functions' sandbox.
    pub sandbox: SandboxMode,
    /// The Docker network function containers join.
    pub docker_network: String,
    /// The overlay network function services join.
    pub swarm_network: String,
}

impl Default for ProviderChoice {
    fn default() -> Self {
        ProviderChoice {
            kind: None,
            sandbox: SandboxMode::default(),
            docker_network: docker::DEFAULT_NETWORK.to_owned(),
            swarm_network: swarm::DEFAULT_NETWORK.to_owned(),
        }
    }
}

impl ProviderChoice {
    /// The backend to build, given the stack file's `provider.name`.
    pub fn resolve(&self, from_stack: Option<&str>) -> ProviderConfig {
        match ProviderKind::choose(self.kind, from_stack) {
            ProviderKind::Process => ProviderConfig::Process {
                sandbox: self.sandbox,
            },
            ProviderKind::Docker => ProviderConfig::Docker {
                network: self.docker_network.clone(),
            },
            ProviderKind::Swarm => ProviderConfig::Swarm {
                network: self.swarm_network.clone(),
            },
        }
    }
}

/// The backend functions run on, with its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    Process { sandbox: SandboxMode },
    Docker { network: String },
    Swarm { network: String },
}

/// Limits on requests and connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub conn: ConnLimits,
    /// Largest request body.
    pub max_body: usize,
    /// Bytes of request bodies held at once over all requests.
    pub max_body_total: u64,
    /// Synchronous calls in flight over all functions [default: `admission::default_limit`].
    pub max_inflight: Option<usize>,
    /// How long a call past `max_inflight` waits for a slot.
    pub admission_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            conn: ConnLimits::default(),
            max_body: DEFAULT_MAX_BODY,
            max_body_total: DEFAULT_MAX_BODY_TOTAL,
            max_inflight: None,
            admission_wait: admission::DEFAULT_WAIT,
        }
    }
}

/// Limits of the durable queue of async and channel calls.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub workers: usize,
    pub max_depth: u64,
    pub max_bytes: u64,
    /// [default: a quarter of `max_bytes`]
    pub max_function_bytes: Option<u64>,
    /// New calls answer 503 while the data directory's disk has less free space.
    pub min_free_disk: u64,
    /// How long a gateway may go without renewing its running calls' leases before
    /// another gateway runs them again.
    pub lease: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        let queue = QueueConfig::default();
        QueueLimits {
            workers: queue.workers,
            max_depth: queue.max_depth,
            max_bytes: queue.max_bytes,
            max_function_bytes: None,
            min_free_disk: queue.min_free_disk,
            lease: queue.lease,
        }
    }
}

/// What activations keep, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct HistoryConfig {
    /// Each kept request and answer is cut at this many bytes.
    pub max_body: u64,
    /// Successful calls of a function that keep their story each second (`None`: all).
    pub story_rate: Option<u32>,
    pub retention: Retention,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            max_body: crate::dispatch::story::DEFAULT_MAX_BODY as u64,
            story_rate: Some(DEFAULT_STORY_RATE),
            retention: Retention::default(),
        }
    }
}

/// The clock request verification reads.
#[derive(Debug, Clone, Copy, Default)]
pub enum ClockConfig {
    /// The system's.
    #[default]
    System,
    /// Starts at this time and runs at the real rate (`--clock`, a testing aid).
    StartingAt(DateTime<Utc>),
    /// Stands still at this time (tests).
    Fixed(DateTime<Utc>),
}

impl ClockConfig {
    fn build(self) -> Arc<dyn Clock> {
        match self {
            ClockConfig::System => Arc::new(SystemClock),
            ClockConfig::StartingAt(at) => {
                tracing::warn!(clock = %at, "testing aid: the gateway's clock starts at a fixed time");
                Arc::new(OffsetClock::starting_at(at))
            }
            ClockConfig::Fixed(at) => Arc::new(FixedClock(at)),
        }
    }
}

/// A gateway built and bound, not yet serving.
pub struct Gateway {
    state: Arc<AppState>,
    listener: TcpListener,
    /// The functions' own listener for `/webdriver`, with its router.
    side: Option<(TcpListener, axum::Router)>,
    conn: ConnLimits,
    stopping: watch::Sender<bool>,
    /// The file the admin token was written to, when this start made one.
    pub new_admin_token: Option<PathBuf>,
    /// The file the admin token is kept in.
    pub admin_token_file: PathBuf,
}

impl Gateway {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// What its handlers share: the registry, the store, the channels, the queue.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains: running calls finish, the
    /// provider's replicas and the browsers stop, the store is flushed.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        crate::server::run(
            self.listener,
            self.state,
            self.conn,
            self.stopping,
            shutdown,
            self.side,
        )
        .await?;
        Ok(())
    }
}

impl GatewayConfig {
    /// The defaults of `hark up` with no flags, keeping its state in `data`.
    pub fn new(data: impl Into<PathBuf>) -> GatewayConfig {
        GatewayConfig {
            data: data.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            stack: StackSource::None,
            skills: None,
            store: StoreChoice::default(),
            provider: ProviderChoice::default(),
            browser: BrowserArgs::default(),
            limits: Limits::default(),
            queue: QueueLimits::default(),
            history: HistoryConfig::default(),
            egress_allow: Vec::new(),
            metrics: Access::Open,
            clock: ClockConfig::System,
            alexa_api_for_tests: None,
        }
    }

    /// Opens the store, binds the listener, starts the provider, deploys the stored
    /// functions and the stack file's, and builds the channels: a gateway ready to serve.
    pub async fn build(self) -> anyhow::Result<Gateway> {
        let cfg = self;
        // First, so that everything from here on is counted.
        crate::telemetry::exporter::install(cfg.metrics);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.data)
            .with_context(|| format!("creating data directory {}", cfg.data.display()))?;
        let data = std::fs::canonicalize(&cfg.data)?;
        let egress = Arc::new(
            crate::egress::EgressPolicy::allowing(&cfg.egress_allow).context("--egress-allow")?,
        );
        if !egress.allowed().is_empty() {
            tracing::warn!(allowed = ?egress.allowed(), "{}", crate::egress::ALLOWED_WARNING);
        }
        // Bound before the stack file is read and the functions start, so that both can be
        // given the gateway's own URL.
        let listener = TcpListener::bind(cfg.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another gateway running? try --port)",
                cfg.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let gateway_url = own_url(addr);
        let stack = cfg.stack.load(&gateway_url)?;
        let store_config = cfg
            .store
            .resolve(stack.as_ref().and_then(|(_, s)| s.store.as_deref()))?;
        let store = store_config.open(&data).await?;
        let secure_cookies = cfg
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https");
        let (auth, new_admin_token) =
            Auth::load_or_create(&data, store.clone(), secure_cookies).await?;
        let provider_config = cfg
            .provider
            .resolve(stack.as_ref().and_then(|(_, s)| s.provider.as_deref()));
        let browser = browser_pool(
            &cfg.browser,
            stack.as_ref().and_then(|(_, s)| s.browser.clone()),
            &data,
        )?;
        browser
            .guard_network(addr)
            .await
            .context("browser automation")?;
        let stack_functions = stack.as_ref().map(|(_, s)| s.functions.as_slice());
        let built = provider_config
            .build(&ProviderContext {
                data: &data,
                key_file: store_config.key_file(),
                gateway_url: &gateway_url,
                browser: &browser,
                stack_functions,
                port: addr.port(),
            })
            .await?;
        let provider = built.provider;
        tracing::info!(provider = provider.name(), "provider ready");
        let dispatcher = Arc::new(Dispatcher::new(provider.clone(), store.clone()).await?);
        dispatcher.set_max_body(usize::try_from(cfg.history.max_body).unwrap_or(usize::MAX));
        dispatcher.set_story_rate(cfg.history.story_rate);
        store.set_retention(cfg.history.retention);
        dispatcher.set_browser(browser.clone());
        let registry = Registry::new(store, provider, dispatcher);

        let restored = registry
            .restore()
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        if restored > 0 {
            tracing::info!(functions = restored, "restored deployed functions");
        }
        let (channels_config, alexa_settings) = match stack {
            Some((path, stack)) => deploy_stack(&registry, &path, stack).await,
            None => (ChannelsConfig::default(), None),
        };
        // Routes are checked once every function is deployed: a route naming a missing
        // secret or function stops the start with a message naming both.
        let mut alexa = alexa_channel(
            cfg.skills.clone(),
            alexa_settings.unwrap_or_default(),
            &registry,
            cfg.listen.ip(),
        )?;
        if let Some(origin) = &cfg.alexa_api_for_tests {
            alexa.allow_api_origin_for_tests(origin);
        }
        let alexa = Arc::new(alexa);
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
        let clock = cfg.clock.build();
        if let Some(docker) = built.docker {
            // Containers of an earlier run that no deployment took over.
            docker.remove_unclaimed().await;
        }
        if let Some(swarm) = built.swarm {
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
                workers: cfg.queue.workers.max(1),
                max_depth: cfg.queue.max_depth,
                egress,
                max_bytes: cfg.queue.max_bytes,
                max_function_bytes: cfg
                    .queue
                    .max_function_bytes
                    .unwrap_or(cfg.queue.max_bytes / 4),
                data_dir: Some(data.clone()),
                min_free_disk: cfg.queue.min_free_disk,
                lease: cfg.queue.lease,
                ..QueueConfig::default()
            },
        )
        .await?;
        if registry.store.is_shared() {
            tokio::spawn(follow_other_gateways(registry.clone()));
        }
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
                cfg.limits
                    .max_inflight
                    .unwrap_or_else(admission::default_limit),
                cfg.limits.admission_wait,
            )),
            auth: Arc::new(auth),
            max_body: cfg.limits.max_body,
            shutdown,
            channels,
            alexa,
            clock,
            browser,
            body_budget: Arc::new(BodyBudget::new(cfg.limits.max_body_total)),
            samples: Default::default(),
        });
        // Only `/webdriver` is served to the functions, and only with a capability.
        let side = built.webdriver_listener.map(|listener| {
            let router = crate::browser::webdriver::function_routes().with_state(state.clone());
            (listener, router)
        });
        Ok(Gateway {
            state,
            listener,
            side,
            conn: cfg.limits.conn,
            stopping,
            new_admin_token,
            admin_token_file: data.join(crate::auth::ADMIN_TOKEN_FILE),
        })
    }
}

/// A provider, with what the gateway does with it besides running functions.
struct BuiltProvider {
    provider: Arc<dyn Provider>,
    /// The listener that serves `/webdriver` to the functions.
    webdriver_listener: Option<TcpListener>,
    docker: Option<Arc<DockerProvider>>,
    swarm: Option<Arc<SwarmProvider>>,
}

/// What a provider is built with, besides its own settings.
struct ProviderContext<'a> {
    data: &'a Path,
    /// `--secret-key-file`, kept from process functions like the data directory.
    key_file: Option<&'a Path>,
    gateway_url: &'a str,
    browser: &'a BrowserPool,
    /// The stack's functions, whose missing images the engines build first.
    stack_functions: Option<&'a [FunctionDeployment]>,
    /// The gateway's port, which the docker functions' `/webdriver` listener tries first.
    port: u16,
}

impl ProviderConfig {
    /// Starts the backend this names. Images the stack's functions lack are built first
    /// for the engines.
    async fn build(&self, cx: &ProviderContext<'_>) -> anyhow::Result<BuiltProvider> {
        let logs = Arc::new(LogHub::default());
        let built = match self {
            ProviderConfig::Process { sandbox } => {
                // Process functions reach the pool on a loopback listener of its own, never
                // through the gateway's address; their URLs carry their capabilities.
                let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                    .await
                    .context("cannot listen on loopback for the functions' /webdriver")?;
                let base = format!("http://{}", listener.local_addr()?);
                let secrets = cx.data.join("secrets");
                let mut sandboxing = Sandboxing::start(cx.data, &secrets, *sandbox)
                    .context("preparing the process sandbox")?;
                if let Some(key_file) = cx.key_file {
                    sandboxing = sandboxing
                        .protect(key_file)
                        .context("preparing the process sandbox")?;
                }
                BuiltProvider {
                    provider: Arc::new(
                        ProcessProvider::new(secrets, logs)
                            .with_sockets(cx.data.join("sockets"))
                            .with_gateway_url(cx.gateway_url)
                            .with_webdriver(&base, cx.browser.capabilities().clone())
                            .with_sandbox(sandboxing),
                    ),
                    webdriver_listener: Some(listener),
                    docker: None,
                    swarm: None,
                }
            }
            ProviderConfig::Docker { network } => {
                if let Some(functions) = cx.stack_functions {
                    crate::cli::build::build_missing(functions).await?;
                }
                let provider = Arc::new(DockerProvider::start(cx.data, network, logs).await?);
                let webdriver_listener = match cx.browser.disabled_reason() {
                    None => functions_listener(&provider, cx.browser, cx.port, cx.data).await,
                    Some(_) => None,
                };
                BuiltProvider {
                    provider: provider.clone(),
                    webdriver_listener,
                    docker: Some(provider),
                    swarm: None,
                }
            }
            ProviderConfig::Swarm { network } => {
                if let Some(functions) = cx.stack_functions {
                    crate::cli::build::build_missing(functions).await?;
                }
                let provider = Arc::new(SwarmProvider::start(cx.data, network, logs).await?);
                BuiltProvider {
                    provider: provider.clone(),
                    webdriver_listener: None,
                    docker: None,
                    swarm: Some(provider),
                }
            }
        };
        Ok(built)
    }
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

/// The browser pool of the stack file's `browser:` section and the flags. Without
/// Chromium (and not asked for with `--browser on`) it is off, and the log says why.
fn browser_pool(
    flags: &BrowserArgs,
    file: Option<crate::browser::BrowserConfig>,
    data: &Path,
) -> anyhow::Result<BrowserPool> {
    let config = flags.apply(file.unwrap_or_default());
    for (setting, secs) in [
        ("browser queue_timeout", config.queue_timeout_secs),
        ("browser session_timeout", config.session_timeout_secs),
        ("browser health_interval", config.health_interval_secs),
    ] {
        seconds_within(setting, secs, crate::function::MAX_TIMEOUT)?;
    }
    let mut pool = BrowserPool::new(config, data).context("browser automation")?;
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
fn seconds_within(setting: &str, secs: f64, limit: Duration) -> anyhow::Result<()> {
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
    browser: &BrowserPool,
    port: u16,
    data: &Path,
) -> Option<TcpListener> {
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
        match TcpListener::bind((ip, port)).await {
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
    skills_dir: Option<PathBuf>,
    settings: AlexaSettings,
    registry: &Registry,
    bind: IpAddr,
) -> anyhow::Result<AlexaChannel> {
    let dir = match skills_dir.or_else(|| settings.skills.clone()) {
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
    Ok(AlexaChannel::from_settings(&settings, skills, bind)?)
}

/// Deploys the stack's functions (over the stored ones of the same name), with the
/// secrets they need seeded first; a function that fails is logged and skipped. What is
/// left of the stack, its channel routes and Alexa settings, comes back.
async fn deploy_stack(
    registry: &Registry,
    path: &Path,
    stack: Stack,
) -> (ChannelsConfig, Option<AlexaSettings>) {
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
    (stack.channels, stack.alexa)
}

/// Stores each secret a stack function names that the secret store lacks: from the
/// environment variable `HARK_SECRET_<NAME>` when it is set (the variables channel routes
/// read), else a random value when the stack file's `secrets:` section says `generate`
/// (the demo portal's password), so a first `hark up` needs no setting. A secret already
/// in the store is left as it is.
async fn seed_function_secrets(
    store: &Store,
    functions: &[FunctionDeployment],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_flag_wins_over_the_stack_file_which_wins_over_sqlite() {
        let pg = "postgres://hark:pw@db:5432/hark";
        let choice = |location: Option<&str>| StoreChoice {
            location: location.map(str::to_owned),
            ..StoreChoice::default()
        };
        let is_pg =
            |c: StoreConfig| matches!(c, StoreConfig::Postgres { url, .. } if url.expose() == pg);
        let is_sqlite = |c: StoreConfig| matches!(c, StoreConfig::Sqlite { .. });
        assert!(is_sqlite(choice(None).resolve(None).unwrap()));
        assert!(is_pg(choice(None).resolve(Some(pg)).unwrap()));
        assert!(is_sqlite(choice(Some("sqlite")).resolve(Some(pg)).unwrap()));
        assert!(is_pg(choice(Some(pg)).resolve(Some("sqlite")).unwrap()));
        let wrong = choice(None).resolve(Some("mysql://db")).unwrap_err();
        assert_eq!(
            format!("{wrong:#}"),
            "store: in the stack file: \"mysql\" is not a store: give sqlite or postgres://USER@HOST:PORT/DB"
        );
        // The password is not shown.
        assert!(!format!("{:?}", choice(Some(pg))).contains("pw"));
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

    #[test]
    fn the_flag_picks_the_provider_over_the_stack_file_over_process() {
        let mut choice = ProviderChoice {
            sandbox: SandboxMode::Off,
            docker_network: "fn-net".into(),
            ..ProviderChoice::default()
        };
        assert_eq!(
            choice.resolve(None),
            ProviderConfig::Process {
                sandbox: SandboxMode::Off
            }
        );
        assert_eq!(
            choice.resolve(Some("openfaas")),
            ProviderConfig::Process {
                sandbox: SandboxMode::Off
            }
        );
        assert_eq!(
            choice.resolve(Some("docker")),
            ProviderConfig::Docker {
                network: "fn-net".into()
            }
        );
        choice.kind = Some(ProviderKind::Swarm);
        assert_eq!(
            choice.resolve(Some("docker")),
            ProviderConfig::Swarm {
                network: swarm::DEFAULT_NETWORK.into()
            }
        );
    }
}
