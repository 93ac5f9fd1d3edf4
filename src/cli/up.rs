//! `hark up`: settings come in (flags, `HARK_*` variables); they become a
//! [`GatewayConfig`], which builds the gateway, served until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::dispatch::admission;
use crate::gateway::{
    ClockConfig, GatewayConfig, HistoryConfig, Limits, ProviderChoice, ProviderKind, QueueLimits,
    StackSource, StoreChoice,
};
use crate::provider::docker;
use crate::provider::process::SandboxMode;
use crate::provider::swarm;
use crate::server::{
    ConnLimits, DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_STREAMS, MIN_MAX_HEADER_BYTES,
};
use crate::store::{Durability, Retention};

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
    /// Seconds a running async call stays leased to this gateway without a heartbeat (it
    /// renews every quarter of it, at most every 10 s): when a gateway dies, another one
    /// sharing its store runs its calls again this long after.
    #[arg(long, env = "HARK_QUEUE_LEASE", default_value_t = crate::dispatch::queue::DEFAULT_LEASE.as_secs(), value_parser = clap::value_parser!(u64).range(4..=86_400))]
    pub queue_lease: u64,
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
    /// Where durable state lives: `sqlite`, the file DATA/hark.db, or a PostgreSQL
    /// database several gateways share, `postgres://USER[:PASSWORD]@HOST:PORT/DB` (its
    /// schema is made or brought up to date at start) [default: the stack file's `store:`,
    /// else sqlite].
    #[arg(long, env = "HARK_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// A file holding the store's URL, read at start, instead of `--store` (e.g. a Docker
    /// or Swarm secret: the URL's password is then in neither the command line nor the
    /// environment).
    #[arg(long, env = "HARK_STORE_FILE", conflicts_with = "store")]
    pub store_file: Option<PathBuf>,
    /// What a commit survives before it is acknowledged (the 202 of an async call, the
    /// answer to a Slack, GitHub or webhook delivery): `full` syncs each commit to disk
    /// (survives a power cut or OS crash); `normal` survives a gateway crash but may lose
    /// the last commits on a power cut or OS crash. On PostgreSQL, `normal` turns
    /// `synchronous_commit` off for this gateway's connections (a database server crash
    /// may then lose the last commits too) and `full` leaves the server's setting.
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

pub async fn run(args: UpArgs, data: &Path) -> anyhow::Result<ExitCode> {
    // Before any secret is read: other processes of the same user may not ptrace the
    // gateway or read its memory or environment.
    forbid_inspection()?;
    let gateway = args.into_config(data)?.build().await?;
    match &gateway.new_admin_token {
        Some(path) => eprintln!("hark: wrote an admin token to {}", path.display()),
        None => eprintln!(
            "hark: admin token in {}",
            gateway.admin_token_file.display()
        ),
    }
    eprintln!("hark: gateway listening on http://{}", gateway.local_addr());
    gateway.serve(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

impl UpArgs {
    /// The gateway these flags ask for, its state kept in `data`.
    pub fn into_config(self, data: &Path) -> anyhow::Result<GatewayConfig> {
        let conn = conn_limits(&self)?;
        let public_url = match &self.public_url {
            Some(url) => {
                let url = url::Url::parse(url).context("--public-url")?;
                anyhow::ensure!(
                    matches!(url.scheme(), "http" | "https"),
                    "--public-url must start with http:// or https://"
                );
                Some(url)
            }
            None => None,
        };
        let clock = match &self.clock {
            None => ClockConfig::System,
            Some(at) => {
                ClockConfig::StartingAt(crate::clock::parse_start(at).with_context(|| {
                    format!("--clock {at:?} is neither an RFC 3339 time nor unix seconds")
                })?)
            }
        };
        Ok(GatewayConfig {
            data: data.to_owned(),
            listen: SocketAddr::new(self.bind, self.port),
            public_url,
            stack: StackSource::file_or_default(self.config),
            skills: self.skills,
            store: StoreChoice {
                location: store_location(self.store, self.store_file.as_deref())?,
                key_file: self.secret_key_file,
                durability: self.durability,
            },
            provider: ProviderChoice {
                kind: self.provider,
                sandbox: self.sandbox,
                docker_network: self.docker_network,
                swarm_network: self.swarm_network,
            },
            browser: self.browser,
            limits: Limits {
                conn,
                max_body: self.max_body,
                max_body_total: self.max_body_total,
                max_inflight: self.max_inflight,
                admission_wait: Duration::from_millis(self.admission_wait_ms),
            },
            queue: QueueLimits {
                workers: self.queue_workers,
                max_depth: self.queue_max,
                max_bytes: self.queue_max_bytes,
                max_function_bytes: self.queue_max_function_bytes,
                min_free_disk: self.min_free_disk,
                lease: Duration::from_secs(self.queue_lease),
            },
            history: HistoryConfig {
                max_body: self.history_max_body,
                story_rate: self.history_story_rate.0,
                retention: Retention {
                    max_records: self.history_max_records,
                    max_age: (!self.history_max_age.is_zero()).then_some(self.history_max_age),
                    max_story_bytes: self.history_max_bytes,
                },
            },
            egress_allow: self.egress_allow,
            metrics: if self.metrics_auth {
                crate::telemetry::exporter::Access::Token
            } else {
                crate::telemetry::exporter::Access::Open
            },
            clock,
            alexa_api_for_tests: None,
        })
    }
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

/// The store's URL from `--store` or read from `--store-file` (a Docker or Swarm secret;
/// the two exclude each other on the command line), else none (the stack file's `store:`
/// or SQLite). `hark doctor` resolves its own the same way, so it checks the store the
/// gateway opens.
pub(crate) fn store_location(
    store: Option<String>,
    file: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    Ok(match (store, file) {
        (Some(store), _) => Some(store),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("--store-file {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    })
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
}
