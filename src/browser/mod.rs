//! The browser pool: lease requests from functions come in (through [`webdriver`]); warm
//! WebDriver sessions of headless Chromium, each in a fresh profile, go out. A browser is
//! never reused: after its lease it is deleted (browser killed, profile removed) and a
//! fresh warm one is started in the background, so no cookie or page leaks between calls.
//!
//! One supervised `chromedriver` serves every session. Limits: at most `max_sessions`
//! leased at once, a bounded queue of waiting leases (then [`BrowserError::QueueFull`]),
//! a time limit per lease after which the session is killed, and a health check that
//! replaces crashed or hung browsers and a dead chromedriver.

pub mod capability;
pub mod guard;
mod proc;
pub mod proxy;
pub mod webdriver;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Environment variable giving functions their WebDriver URL: the gateway's functions'
/// listener with the function's (or the call's) capability.
pub const ENV_WEBDRIVER_URL: &str = "HARK_WEBDRIVER_URL";

/// Chromium flags that work as root in a closed network (see CRATES.md).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-quic",
    "--no-first-run",
    "--mute-audio",
    "--window-size=1280,800",
];

/// Schemes of browser-internal and local pages that no pool browser may open, in
/// Chromium's URL blocklist syntax (see SECURITY.md for what blocks what).
pub const BLOCKED_URLS: &[&str] = &[
    "file://*",
    "chrome://*",
    "chrome-untrusted://*",
    "chrome-extension://*",
    "devtools://*",
    "view-source:*",
];

/// Chromium flags that send every request of the browser through the gateway's proxy at
/// `proxy`, loopback included (`<-loopback>` removes Chromium's implicit bypass), and
/// keep WebRTC from sending UDP around it. They come after `browser.args`, so they win.
fn lockdown_flags(proxy: std::net::SocketAddr) -> Vec<String> {
    vec![
        format!("--proxy-server=http://{proxy}"),
        "--proxy-bypass-list=<-loopback>".to_owned(),
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp".to_owned(),
        "--disable-quic".to_owned(),
    ]
}

/// The profile preferences of a pool browser: Chromium's managed policies
/// (`URLBlocklist`, `DownloadRestrictions`) can only be set machine-wide, but the
/// preferences behind them are read from the profile too (checked with Chromium 156).
/// Downloads are blocked (3: all); were one to slip through, it would land in the
/// profile, which is deleted with the browser.
fn lockdown_prefs(profile: &Path) -> Value {
    let downloads = profile.join("downloads");
    json!({
        "download_restrictions": 3,
        "download": {
            "default_directory": downloads,
            "prompt_for_download": false,
            "directory_upgrade": true,
        },
        "savefile": {"default_directory": downloads},
        "policy": {"url_blocklist": BLOCKED_URLS},
        "webrtc": {"ip_handling_policy": "disable_non_proxied_udp"},
    })
}

/// A session's capabilities as functions see them: without the profile's path on the
/// gateway host (`chrome.userDataDir`) and the browser's DevTools address
/// (`goog:chromeOptions.debuggerAddress`), which would let a local reader bypass the
/// WebDriver endpoint.
fn public_capabilities(mut capabilities: Value) -> Value {
    if let Some(chrome) = capabilities
        .get_mut("chrome")
        .and_then(Value::as_object_mut)
    {
        chrome.remove("userDataDir");
    }
    if let Some(options) = capabilities
        .get_mut("goog:chromeOptions")
        .and_then(Value::as_object_mut)
    {
        options.remove("debuggerAddress");
    }
    capabilities
}

/// Whether `hark up` runs the browser pool.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Deserialize,
    Serialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BrowserMode {
    /// On when Chromium and ChromeDriver are found; the browsers start at the first lease.
    #[default]
    Auto,
    /// On, with the warm browsers started at once; `hark up` fails without Chromium.
    On,
    /// Off: `/webdriver` answers 503.
    Off,
}

/// The `browser:` section of `hark.yml` (flags of `hark up` override it).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserConfig {
    pub mode: BrowserMode,
    /// The `chromedriver` program.
    pub chromedriver: PathBuf,
    /// The Chromium binary the sessions run.
    pub chromium: PathBuf,
    /// Sessions kept started and ready to lease.
    pub warm: usize,
    /// Most sessions leased at once; further leases wait in the queue.
    pub max_sessions: usize,
    /// Most leases waiting; further ones are refused (429).
    pub queue: usize,
    /// Longest a lease waits in the queue, in seconds.
    pub queue_timeout_secs: f64,
    /// Longest a session stays leased, in seconds; then it is killed.
    pub session_timeout_secs: f64,
    /// How often the browsers' health is checked, in seconds.
    pub health_interval_secs: f64,
    /// Extra Chromium flags, after the built-in ones (the network and download lockdown
    /// flags come last and cannot be overridden here).
    pub args: Vec<String>,
    /// What pages may reach beyond the public Internet and the gateway's `/function/…`
    /// routes: host names, IP addresses, CIDR blocks, `http(s)://host:port/path` prefixes.
    pub allow: Vec<String>,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            mode: BrowserMode::Auto,
            chromedriver: PathBuf::from("chromedriver"),
            chromium: PathBuf::from("/usr/lib/chromium/chromium"),
            warm: 1,
            max_sessions: 4,
            queue: 16,
            queue_timeout_secs: 30.0,
            session_timeout_secs: 120.0,
            health_interval_secs: 2.0,
            args: Vec::new(),
            allow: Vec::new(),
        }
    }
}

/// Why a lease or a browser command failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// Browser automation is off (503).
    #[error("browser automation is off: {0}")]
    Disabled(String),
    /// Every session is leased and the queue is full (429).
    #[error("every browser session is in use and {0} leases are already waiting; try again later")]
    QueueFull(usize),
    /// A lease waited in the queue longer than allowed (503).
    #[error("no browser session became free within {0:?}")]
    QueueTimeout(Duration),
    /// The session id is unknown, or not leased by the asker (404 "invalid session id").
    #[error("no such browser session: {0}")]
    UnknownSession(String),
    /// ChromeDriver or Chromium could not start or answer (502).
    #[error("browser failure: {0}")]
    Driver(String),
    /// The key of the functions' WebDriver capabilities could not be kept.
    #[error(transparent)]
    Capability(#[from] capability::CapabilityError),
}

/// Who holds a lease: the `/webdriver` prefix it was made under. Only requests under the
/// same prefix reach the session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The function, when the lease came through its `HARK_WEBDRIVER_URL`.
    pub function: Option<String>,
    /// The call, when the function's URL named it (fork mode).
    pub call: Option<String>,
}

/// The page a failed call's browser last showed.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub url: String,
    pub png: Vec<u8>,
}

/// A WebDriver session and its browser.
#[derive(Debug)]
struct Session {
    id: String,
    capabilities: Value,
    profile: PathBuf,
    /// The chromedriver it belongs to; a restarted driver has a new generation.
    generation: u64,
}

struct Leased {
    session: Session,
    owner: Owner,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
}

struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    /// Stops chromedriver: a guard is asked to stop (SIGTERM), so that it kills its
    /// browsers first; it is killed if it has not ended within 5 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) of our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

#[derive(Default)]
struct State {
    warm: VecDeque<Session>,
    starting: usize,
    leased: HashMap<String, Leased>,
    /// Screenshots being taken of released sessions, by call.
    pending: HashMap<String, Vec<tokio::task::JoinHandle<Option<Evidence>>>>,
}

/// A lease handed to a function: the session's id and W3C capabilities.
#[derive(Debug, Clone)]
pub struct Lease {
    pub session_id: String,
    pub capabilities: Value,
}

/// Counts for `/system/browser`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub warm: usize,
    pub in_use: usize,
    pub queued: usize,
    pub crashes: u64,
    pub max_sessions: usize,
    /// The browsers' main processes: (session id, pid, leased).
    pub sessions: Vec<SessionStatus>,
}

/// One session in [`PoolStatus`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    pub id: String,
    pub leased: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_pid: Option<u32>,
}

/// The pool. Cloning shares it.
#[derive(Clone)]
pub struct BrowserPool {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrowserConfig,
    /// Why the pool is off, when it is.
    disabled: Option<String>,
    profiles: PathBuf,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    crashes: AtomicU64,
    started: AtomicBool,
    stopping: AtomicBool,
    state: Mutex<State>,
    driver: tokio::sync::Mutex<Option<Driver>>,
    generation: AtomicU64,
    refill: Notify,
    /// The secrets inside the functions' `HARK_WEBDRIVER_URL`s.
    capabilities: capability::Capabilities,
    /// The `hark` binary that runs chromedriver under [`guard`], so that browsers die
    /// with the gateway; without it chromedriver is started directly.
    guard: Option<PathBuf>,
    /// The browsers' proxy; no browser starts without it.
    proxy: std::sync::OnceLock<proxy::BrowserProxy>,
}

/// Finds `program` as given (a path) or in `$PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        program.is_file().then(|| program.to_owned())
    } else {
        which::which(program).ok()
    }
}

impl BrowserPool {
    /// A pool with `config`, its profiles under `data/browser`. When the binaries are
    /// missing (or the mode is off) the pool is off and says why; with mode `on` that is
    /// an error instead.
    pub fn new(mut config: BrowserConfig, data: &Path) -> Result<BrowserPool, BrowserError> {
        let mut disabled = None;
        if config.mode == BrowserMode::Off {
            disabled = Some("turned off (browser.mode: off or --browser off)".to_owned());
        } else {
            match (
                find_program(&config.chromedriver),
                find_program(&config.chromium),
            ) {
                (Some(driver), Some(chromium)) => {
                    config.chromedriver = driver;
                    config.chromium = chromium;
                }
                (driver, _) => {
                    let missing = if driver.is_none() {
                        &config.chromedriver
                    } else {
                        &config.chromium
                    };
                    let reason = format!(
                        "{} not found (install the Debian packages chromium and chromium-driver, or set browser.chromedriver / browser.chromium)",
                        missing.display()
                    );
                    if config.mode == BrowserMode::On {
                        return Err(BrowserError::Disabled(reason));
                    }
                    disabled = Some(reason);
                }
            }
        }
        config.max_sessions = config.max_sessions.max(1);
        let profiles = data.join("browser");
        if disabled.is_none() {
            // Browsers and profiles of an earlier run are stale.
            proc::kill_left_over(&profiles);
            let _ = std::fs::remove_dir_all(&profiles);
        }
        let capabilities = match &disabled {
            None => capability::Capabilities::load_or_create(data)?,
            // Requests are refused anyway; no key file for a pool that is off.
            Some(_) => capability::Capabilities::ephemeral(),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| BrowserError::Driver(format!("HTTP client: {e}")))?;
        Ok(BrowserPool {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(config.max_sessions)),
                config,
                disabled,
                profiles,
                http,
                queued: AtomicUsize::new(0),
                crashes: AtomicU64::new(0),
                started: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                driver: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
                refill: Notify::new(),
                capabilities,
                guard: None,
                proxy: std::sync::OnceLock::new(),
            }),
        })
    }

    /// A pool that is off, for `reason`.
    pub fn disabled(reason: &str) -> BrowserPool {
        let config = BrowserConfig {
            mode: BrowserMode::Off,
            ..BrowserConfig::default()
        };
        let mut pool = BrowserPool::new(config, Path::new("/nonexistent"))
            .unwrap_or_else(|_| unreachable!("mode off needs no binaries"));
        if let Some(inner) = Arc::get_mut(&mut pool.inner) {
            inner.disabled = Some(reason.to_owned());
        }
        pool
    }

    /// Runs chromedriver under `hark browser-guard` of the `hark` binary `hark`, so that a
    /// gateway that dies, even by SIGKILL, takes its browsers with it. Call before the
    /// pool is shared.
    pub fn guarded_by(mut self, hark: PathBuf) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.guard = Some(hark);
        }
        self
    }

    /// Why the pool is off, or `None` when it is on.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.inner.disabled.as_deref()
    }

    /// The secrets of the functions' WebDriver URLs.
    pub fn capabilities(&self) -> &capability::Capabilities {
        &self.inner.capabilities
    }

    /// Starts the proxy every browser of the pool goes out through, for a gateway listening
    /// on `gateway` (see [`proxy`]); checks `browser.allow`. Until it runs, no browser
    /// starts. Does nothing when the pool is off or the proxy already runs.
    pub async fn guard_network(
        &self,
        gateway: std::net::SocketAddr,
    ) -> Result<(), proxy::ProxyError> {
        if self.inner.disabled.is_some() || self.inner.proxy.get().is_some() {
            return Ok(());
        }
        let allow = proxy::BrowserAllow::parse(&self.inner.config.allow)?;
        if !allow.describe().is_empty() {
            tracing::warn!(allowed = ?allow.describe(), "browsers may reach these addresses besides the public Internet");
        }
        let started = proxy::BrowserProxy::start(gateway, allow).await?;
        tracing::info!(proxy = %started.addr(), "browsers go out through the gateway's proxy");
        // A second caller racing this one keeps the first proxy; the other is dropped.
        let _ = self.inner.proxy.set(started);
        Ok(())
    }

    /// The client that talks to chromedriver.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The pool's settings (binaries resolved).
    pub fn config(&self) -> &BrowserConfig {
        &self.inner.config
    }

    /// Starts chromedriver and the warm sessions now rather than at the first lease
    /// (mode `on`). Does nothing when the pool is off.
    pub async fn start(&self) -> Result<(), BrowserError> {
        if self.inner.disabled.is_some() || self.inner.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // The loops run even if chromedriver fails now: they retry it.
        let started = self.inner.driver_url().await.map(|_| ());
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.refill_loop().await });
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.health_loop().await });
        started
    }

    /// Leases a session to `owner`, waiting in the queue when every slot is taken.
    pub async fn lease(&self, owner: Owner) -> Result<Lease, BrowserError> {
        if let Some(reason) = &self.inner.disabled {
            return Err(BrowserError::Disabled(reason.clone()));
        }
        self.start().await?;
        let inner = &self.inner;
        let asked = Instant::now();
        let permit = match inner.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let queued = inner.queued.fetch_add(1, Ordering::SeqCst);
                if queued >= inner.config.queue {
                    inner.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(BrowserError::QueueFull(queued));
                }
                inner.gauges();
                let limit = Duration::from_secs_f64(inner.config.queue_timeout_secs.max(0.0));
                let waited = tokio::time::timeout(limit, inner.slots.clone().acquire_owned()).await;
                inner.queued.fetch_sub(1, Ordering::SeqCst);
                inner.gauges();
                match waited {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return Err(BrowserError::Disabled("shutting down".into())),
                    Err(_) => return Err(BrowserError::QueueTimeout(limit)),
                }
            }
        };
        let warm = inner.lock().warm.pop_front();
        let session = match warm {
            Some(session) => session,
            None => inner.create_session().await?,
        };
        inner.refill.notify_one();
        metrics::histogram!("hark_browser_lease_wait_seconds").record(asked.elapsed());
        let lease = Lease {
            session_id: session.id.clone(),
            capabilities: session.capabilities.clone(),
        };
        let deadline =
            Instant::now() + Duration::from_secs_f64(inner.config.session_timeout_secs.max(0.0));
        tracing::info!(session = %lease.session_id, function = owner.function.as_deref().unwrap_or("-"), call_id = owner.call.as_deref().unwrap_or("-"), "browser session leased");
        inner.lock().leased.insert(
            session.id.clone(),
            Leased {
                session,
                owner,
                deadline,
                _permit: permit,
            },
        );
        inner.gauges();
        Ok(lease)
    }

    /// The chromedriver URL of `session` when `owner` holds it.
    pub async fn session_url(&self, owner: &Owner, session: &str) -> Result<String, BrowserError> {
        {
            let state = self.inner.lock();
            match state.leased.get(session) {
                Some(l) if &l.owner == owner => {}
                _ => return Err(BrowserError::UnknownSession(session.to_owned())),
            }
        }
        let url = self.inner.driver_url().await?;
        Ok(format!("{url}/session/{session}"))
    }

    /// Ends `owner`'s lease of `session`: the browser is deleted and a fresh one warmed.
    /// When the lease belongs to a call, the last page is photographed first, in case the
    /// call fails.
    pub fn release(&self, owner: &Owner, session: &str) -> Result<(), BrowserError> {
        let leased = {
            let mut state = self.inner.lock();
            match state.leased.get(session) {
                Some(l) if &l.owner == owner => state.leased.remove(session),
                _ => None,
            }
        };
        let Some(leased) = leased else {
            return Err(BrowserError::UnknownSession(session.to_owned()));
        };
        tracing::info!(session, "browser session released");
        let inner = self.inner.clone();
        let call = leased.owner.call.clone();
        let task = tokio::spawn(async move {
            let evidence = match call {
                Some(_) => inner.screenshot(&leased.session).await,
                None => None,
            };
            // The slot is free once the picture is taken; deleting goes on behind.
            let Leased { session, .. } = leased;
            let inner2 = inner.clone();
            tokio::spawn(async move { inner2.destroy(session).await });
            inner.gauges();
            evidence
        });
        if let Some(call) = owner.call.clone() {
            self.inner
                .lock()
                .pending
                .entry(call)
                .or_default()
                .push(task);
        }
        Ok(())
    }

    /// The end of call `call_id`: sessions it still holds are released (photographed
    /// first when it `failed`), and the last page of a failed call is returned.
    pub async fn finish_call(&self, call_id: &str, failed: bool) -> Option<Evidence> {
        if self.inner.disabled.is_some() {
            return None;
        }
        let (held, pending) = {
            let mut state = self.inner.lock();
            let ids: Vec<String> = state
                .leased
                .iter()
                .filter(|(_, l)| l.owner.call.as_deref() == Some(call_id))
                .map(|(id, _)| id.clone())
                .collect();
            let held: Vec<Leased> = ids
                .iter()
                .filter_map(|id| state.leased.remove(id))
                .collect();
            (held, state.pending.remove(call_id).unwrap_or_default())
        };
        if held.is_empty() && pending.is_empty() {
            return None;
        }
        let mut evidence = None;
        // A call that went well needs no picture: its released sessions finish alone.
        let pending = if failed { pending } else { Vec::new() };
        for task in pending {
            if let Ok(Some(e)) = task.await {
                evidence = Some(e);
            }
        }
        for leased in held {
            tracing::info!(session = %leased.session.id, call_id, "browser session reclaimed at the end of its call");
            if failed {
                if let Some(e) = self.inner.screenshot(&leased.session).await {
                    evidence = Some(e);
                }
            }
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.destroy(leased.session).await });
        }
        self.inner.gauges();
        if failed {
            evidence
        } else {
            None
        }
    }

    /// Counts and sessions now.
    pub fn status(&self) -> PoolStatus {
        let inner = &self.inner;
        let state = inner.lock();
        let sessions = state
            .warm
            .iter()
            .map(|s| (s, false))
            .chain(state.leased.values().map(|l| (&l.session, true)))
            .map(|(s, leased)| SessionStatus {
                id: s.id.clone(),
                leased,
                browser_pid: proc::browser_pid(&s.profile),
            })
            .collect();
        PoolStatus {
            enabled: inner.disabled.is_none(),
            reason: inner.disabled.clone(),
            warm: state.warm.len(),
            in_use: state.leased.len(),
            queued: inner.queued.load(Ordering::SeqCst),
            crashes: inner.crashes.load(Ordering::SeqCst),
            max_sessions: inner.config.max_sessions,
            sessions,
        }
    }

    /// Starts a session outside the pool and deletes it again (for `hark bench`: the
    /// cold start a lease saves).
    pub async fn cold_session(&self) -> Result<Duration, BrowserError> {
        if let Some(reason) = &self.inner.disabled {
            return Err(BrowserError::Disabled(reason.clone()));
        }
        let started = Instant::now();
        let session = self.inner.create_session().await?;
        let took = started.elapsed();
        self.inner.destroy(session).await;
        Ok(took)
    }

    /// Deletes every session and stops chromedriver.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        inner.slots.close();
        inner.refill.notify_one();
        let sessions: Vec<Session> = {
            let mut state = inner.lock();
            let mut all: Vec<Session> = state.warm.drain(..).collect();
            all.extend(state.leased.drain().map(|(_, l)| l.session));
            all
        };
        futures::future::join_all(sessions.into_iter().map(|s| inner.destroy(s))).await;
        if let Some(driver) = inner.driver.lock().await.take() {
            driver.stop().await;
        }
        let _ = std::fs::remove_dir_all(&inner.profiles);
        inner.gauges();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gauges(&self) {
        let state = self.lock();
        metrics::gauge!("hark_browser_sessions_in_use").set(state.leased.len() as f64);
        metrics::gauge!("hark_browser_sessions_warm").set(state.warm.len() as f64);
        metrics::gauge!("hark_browser_queue_depth").set(self.queued.load(Ordering::SeqCst) as f64);
    }

    fn crashed(&self, what: &str, session: &str) {
        self.crashes.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("hark_browser_crashes_total").increment(1);
        tracing::warn!(session, "{what}; replacing it");
    }

    /// The running chromedriver's URL, starting (or restarting) it when needed.
    async fn driver_url(&self) -> Result<String, BrowserError> {
        let mut driver = self.driver.lock().await;
        if let Some(d) = driver.as_mut() {
            if matches!(d.child.try_wait(), Ok(None)) {
                return Ok(d.url.clone());
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let started = self.spawn_driver(generation).await?;
        let url = started.url.clone();
        *driver = Some(started);
        Ok(url)
    }

    async fn spawn_driver(&self, generation: u64) -> Result<Driver, BrowserError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BrowserError::Driver(format!("no free port for chromedriver: {e}")))?
            .port();
        let chromedriver = [
            self.config.chromedriver.display().to_string(),
            format!("--port={port}"),
        ];
        let mut command = match &self.guard {
            Some(hark) => {
                let mut command = tokio::process::Command::new(hark);
                command.args(guard::guard_args(
                    std::process::id(),
                    &self.profiles,
                    &chromedriver,
                ));
                command
            }
            None => {
                let mut command = tokio::process::Command::new(&chromedriver[0]);
                command.args(&chromedriver[1..]);
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2), which is async-signal-safe: chromedriver (or its guard, which then
        // kills the browsers too) is told when the gateway dies.
        let on_parent_death = if self.guard.is_some() {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, on_parent_death);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            BrowserError::Driver(format!(
                "cannot start {}: {e}",
                self.config.chromedriver.display()
            ))
        })?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BrowserError::Driver(format!(
                    "chromedriver exited: {status}"
                )));
            }
            let ready = self
                .http
                .get(format!("{url}/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = ready {
                if let Ok(body) = r.json::<Value>().await {
                    if body["value"]["ready"] == json!(true) {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(BrowserError::Driver(
                    "chromedriver did not become ready within 20s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(port, generation, "chromedriver started");
        Ok(Driver { child, url })
    }

    /// Starts a browser in a fresh profile and opens a WebDriver session on it.
    async fn create_session(&self) -> Result<Session, BrowserError> {
        let url = self.driver_url().await?;
        let generation = self.generation.load(Ordering::SeqCst);
        let profile = self
            .profiles
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&profile)
            .map_err(|e| BrowserError::Driver(format!("profile {}: {e}", profile.display())))?;
        let Some(proxy) = self.proxy.get().map(|p| p.addr()) else {
            let _ = std::fs::remove_dir_all(&profile);
            return Err(BrowserError::Driver(
                "the browsers' network proxy is not running; no browser starts without it".into(),
            ));
        };
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.extend(self.config.args.iter().cloned());
        args.extend(lockdown_flags(proxy));
        args.push(format!("--user-data-dir={}", profile.display()));
        let body = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": self.config.chromium,
                "args": args,
                "prefs": lockdown_prefs(&profile),
            }
        }}});
        let answer = self
            .http
            .post(format!("{url}/session"))
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        let value: Result<Value, String> = match answer {
            Ok(r) => r.json::<Value>().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let value = match value {
            Ok(v) if v["value"]["sessionId"].is_string() => v,
            Ok(v) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(BrowserError::Driver(format!(
                    "chromedriver did not start a browser: {}",
                    v["value"]["message"].as_str().unwrap_or("no message")
                )));
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(BrowserError::Driver(format!("chromedriver: {e}")));
            }
        };
        let id = value["value"]["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(Session {
            id,
            capabilities: public_capabilities(value["value"]["capabilities"].clone()),
            profile,
            generation,
        })
    }

    /// The session's current URL and a PNG of its page, when it still answers.
    async fn screenshot(&self, session: &Session) -> Option<Evidence> {
        let url = self.driver_url().await.ok()?;
        let base = format!("{url}/session/{}", session.id);
        let get = |path: &'static str| {
            self.http
                .get(format!("{base}/{path}"))
                .timeout(Duration::from_secs(10))
                .send()
        };
        let page = get("url").await.ok()?.json::<Value>().await.ok()?;
        let shot = get("screenshot").await.ok()?.json::<Value>().await.ok()?;
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["value"].as_str()?)
            .ok()?;
        Some(Evidence {
            url: page["value"].as_str().unwrap_or_default().to_owned(),
            png,
        })
    }

    /// Deletes the session, kills whatever is left of its browser and removes its profile.
    async fn destroy(&self, session: Session) {
        let current = self.generation.load(Ordering::SeqCst) == session.generation;
        if current {
            if let Some(url) = self.driver.lock().await.as_ref().map(|d| d.url.clone()) {
                let _ = self
                    .http
                    .delete(format!("{url}/session/{}", session.id))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
            }
        }
        let profile = session.profile.clone();
        let _ = tokio::task::spawn_blocking(move || {
            proc::kill_browsers(&profile);
            let _ = std::fs::remove_dir_all(&profile);
        })
        .await;
    }

    /// Keeps `warm` sessions ready, one start at a time.
    async fn refill_loop(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let wanted = {
                let mut state = self.lock();
                let wanted = state.warm.len() + state.starting < self.config.warm;
                if wanted {
                    state.starting += 1;
                }
                wanted
            };
            if !wanted {
                self.refill.notified().await;
                continue;
            }
            let created = self.create_session().await;
            let created = {
                let mut state = self.lock();
                state.starting -= 1;
                match created {
                    Ok(session) if !self.stopping.load(Ordering::SeqCst) => {
                        state.warm.push_back(session);
                        Ok(None)
                    }
                    Ok(session) => Ok(Some(session)),
                    Err(e) => Err(e),
                }
            };
            match created {
                Ok(None) => {
                    failures = 0;
                    self.gauges();
                }
                Ok(Some(session)) => self.destroy(session).await,
                // Stopping, the driver goes away under a browser being started: not a fault.
                Err(e) if self.stopping.load(Ordering::SeqCst) => {
                    tracing::debug!(error = %e, "warm browser not started: the pool is stopping");
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, "cannot start a warm browser");
                    // Back off so a broken installation does not spin.
                    let wait = Duration::from_millis(500 * u64::from(failures.min(20)));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Replaces dead or hung browsers, restarts a dead chromedriver and kills sessions
    /// past their time limit.
    async fn health_loop(self: Arc<Self>) {
        let every = Duration::from_secs_f64(self.config.health_interval_secs.max(0.1));
        loop {
            tokio::time::sleep(every).await;
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            self.check_driver().await;
            self.check_sessions().await;
        }
    }

    async fn check_driver(&self) {
        let exited = {
            let mut driver = self.driver.lock().await;
            match driver.as_mut() {
                Some(d) => !matches!(d.child.try_wait(), Ok(None)),
                None => false,
            }
        };
        if !exited {
            return;
        }
        self.crashed("chromedriver died", "-");
        let generation = self.generation.load(Ordering::SeqCst);
        let lost: Vec<Session> = {
            let mut state = self.lock();
            let mut lost: Vec<Session> = state.warm.drain(..).collect();
            let ids: Vec<String> = state
                .leased
                .iter()
                .filter(|(_, l)| l.session.generation == generation)
                .map(|(id, _)| id.clone())
                .collect();
            lost.extend(
                ids.iter()
                    .filter_map(|id| state.leased.remove(id))
                    .map(|l| l.session),
            );
            lost
        };
        for session in lost {
            self.destroy(session).await;
        }
        if let Err(e) = self.driver_url().await {
            tracing::error!(error = %e, "cannot restart chromedriver");
        }
        self.gauges();
        self.refill.notify_one();
    }

    async fn check_sessions(&self) {
        let now = Instant::now();
        let (expired, warm_ids, leased_profiles) = {
            let mut state = self.lock();
            let ids: Vec<String> = state
                .leased
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            let expired: Vec<Leased> = ids
                .iter()
                .filter_map(|id| state.leased.remove(id))
                .collect();
            let warm: Vec<(String, PathBuf)> = state
                .warm
                .iter()
                .map(|s| (s.id.clone(), s.profile.clone()))
                .collect();
            let leased: Vec<(String, PathBuf)> = state
                .leased
                .values()
                .map(|l| (l.session.id.clone(), l.session.profile.clone()))
                .collect();
            (expired, warm, leased)
        };
        for leased in expired {
            tracing::warn!(session = %leased.session.id, function = leased.owner.function.as_deref().unwrap_or("-"), limit_secs = self.config.session_timeout_secs, "browser session passed its time limit; killed");
            self.destroy(leased.session).await;
        }
        // A leased browser whose process is gone crashed; its lease ends.
        for (id, profile) in leased_profiles {
            if proc::browser_pid(&profile).is_none() {
                let gone = self.lock().leased.remove(&id);
                if let Some(l) = gone {
                    self.crashed("a leased browser died", &id);
                    self.destroy(l.session).await;
                }
            }
        }
        // A warm browser must be alive and answer quickly.
        let url = self.driver.lock().await.as_ref().map(|d| d.url.clone());
        for (id, profile) in warm_ids {
            let alive = proc::browser_pid(&profile).is_some()
                && match &url {
                    Some(url) => self
                        .http
                        .get(format!("{url}/session/{id}/url"))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false),
                    None => false,
                };
            if !alive {
                let gone = {
                    let mut state = self.lock();
                    let at = state.warm.iter().position(|s| s.id == id);
                    at.and_then(|i| state.warm.remove(i))
                };
                if let Some(session) = gone {
                    self.crashed("a warm browser died or hung", &id);
                    self.destroy(session).await;
                }
            }
        }
        self.gauges();
        self.refill.notify_one();
    }
}

/// The `hark up` flags of the browser pool; each overrides `hark.yml`'s `browser:`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BrowserArgs {
    /// Browser automation for functions at /webdriver: auto (on when Chromium and
    /// ChromeDriver are installed, browsers started at the first lease), on (warm browsers
    /// started at once), off.
    #[arg(long = "browser", env = "HARK_BROWSER", value_enum)]
    pub mode: Option<BrowserMode>,
    /// Browser sessions kept warm (started, ready to lease).
    #[arg(long = "browser-warm", env = "HARK_BROWSER_WARM")]
    pub warm: Option<usize>,
    /// Most browser sessions leased at once; more leases wait in the queue.
    #[arg(long = "browser-max", env = "HARK_BROWSER_MAX")]
    pub max_sessions: Option<usize>,
    /// Most leases waiting for a browser; more are refused with 429.
    #[arg(long = "browser-queue", env = "HARK_BROWSER_QUEUE")]
    pub queue: Option<usize>,
    /// Seconds a browser session may stay leased before it is killed.
    #[arg(long = "browser-session-timeout", env = "HARK_BROWSER_SESSION_TIMEOUT")]
    pub session_timeout_secs: Option<f64>,
    /// The chromedriver program.
    #[arg(long = "chromedriver", env = "HARK_CHROMEDRIVER")]
    pub chromedriver: Option<PathBuf>,
    /// The Chromium binary.
    #[arg(long = "chromium", env = "HARK_CHROMIUM")]
    pub chromium: Option<PathBuf>,
    /// What browser pages may reach besides the public Internet and the gateway's
    /// /function/… routes: host names, IPs, CIDR blocks or http(s) URL prefixes,
    /// comma-separated (replaces `browser.allow`).
    #[arg(
        long = "browser-allow",
        env = "HARK_BROWSER_ALLOW",
        value_delimiter = ','
    )]
    pub allow: Option<Vec<String>>,
}

impl BrowserArgs {
    /// `config` with the flags that were given put over it.
    pub fn apply(&self, mut config: BrowserConfig) -> BrowserConfig {
        if let Some(mode) = self.mode {
            config.mode = mode;
        }
        if let Some(n) = self.warm {
            config.warm = n;
        }
        if let Some(n) = self.max_sessions {
            config.max_sessions = n;
        }
        if let Some(n) = self.queue {
            config.queue = n;
        }
        if let Some(secs) = self.session_timeout_secs {
            config.session_timeout_secs = secs;
        }
        if let Some(path) = &self.chromedriver {
            config.chromedriver = path.clone();
        }
        if let Some(path) = &self.chromium {
            config.chromium = path.clone();
        }
        if let Some(allow) = &self.allow {
            config.allow = allow.clone();
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_section_parses_and_flags_override_it() {
        let config: BrowserConfig =
            serde_norway::from_str("mode: off\nwarm: 3\nmax_sessions: 2\n").unwrap();
        assert_eq!(config.mode, BrowserMode::Off);
        assert_eq!((config.warm, config.max_sessions, config.queue), (3, 2, 16));
        let flags = BrowserArgs {
            warm: Some(0),
            mode: Some(BrowserMode::Auto),
            ..BrowserArgs::default()
        };
        let config = flags.apply(config);
        assert_eq!((config.mode, config.warm), (BrowserMode::Auto, 0));
        let typo = serde_norway::from_str::<BrowserConfig>("warmth: 3\n").unwrap_err();
        assert!(typo.to_string().contains("warmth"), "{typo}");
    }

    #[test]
    fn functions_see_neither_the_profile_path_nor_the_devtools_address() {
        let caps = json!({
            "browserName": "chrome",
            "chrome": {"chromedriverVersion": "156", "userDataDir": "/data/browser/abc"},
            "goog:chromeOptions": {"debuggerAddress": "localhost:40000"},
        });
        let shown = public_capabilities(caps).to_string();
        assert!(!shown.contains("/data/browser"), "{shown}");
        assert!(!shown.contains("localhost:40000"), "{shown}");
        assert!(shown.contains("chromedriverVersion"), "{shown}");
    }

    #[test]
    fn browsers_go_through_the_proxy_with_downloads_and_local_pages_blocked() {
        let flags = lockdown_flags("127.0.0.1:4000".parse().unwrap());
        assert!(flags.contains(&"--proxy-server=http://127.0.0.1:4000".to_owned()));
        assert!(flags.contains(&"--proxy-bypass-list=<-loopback>".to_owned()));
        let prefs = lockdown_prefs(Path::new("/p"));
        assert_eq!(prefs["download_restrictions"], 3);
        let blocked = prefs["policy"]["url_blocklist"].to_string();
        for scheme in ["file://", "chrome://", "view-source:", "devtools://"] {
            assert!(blocked.contains(scheme), "{blocked}");
        }
    }

    #[tokio::test]
    async fn missing_binaries_turn_the_pool_off_unless_it_was_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrowserConfig {
            chromedriver: PathBuf::from("/nonexistent/chromedriver"),
            ..BrowserConfig::default()
        };
        let pool = BrowserPool::new(config.clone(), dir.path()).unwrap();
        let reason = pool.disabled_reason().unwrap().to_owned();
        assert!(reason.contains("/nonexistent/chromedriver"), "{reason}");
        let owner = Owner {
            function: None,
            call: None,
        };
        assert!(matches!(
            pool.lease(owner).await,
            Err(BrowserError::Disabled(_))
        ));
        let asked = BrowserConfig {
            mode: BrowserMode::On,
            ..config
        };
        assert!(BrowserPool::new(asked, dir.path()).is_err());
    }
}
