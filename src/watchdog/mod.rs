//! The watchdog: the entrypoint inside a function's container image, like OpenFaaS's
//! watchdogs. HTTP requests on port 8080 (or on the Unix socket `HARK_SOCKET` names,
//! when it runs as an HTTP-mode function of the process provider) come in; `fprocess` runs once per request
//! (fork mode) or is kept running and proxied to (http mode), and its answer goes out.
//!
//! It runs the function through the process provider, so a function behaves the same in
//! a container as on the host: the same `Http_*` variables, time limit, restarts and
//! cold starts. `/_/health` answers while the watchdog runs; `/_/ready` answers 200 only
//! when a call can be served (in http mode: once the function's port accepts
//! connections), and 503 from the moment SIGTERM arrives, while calls in flight finish.
//!
//! When [`ENV_CREDENTIAL_FILE`] names a file (the docker and swarm providers mount the
//! function's own credential there), every request, `/_/health` and `/_/ready`
//! included, must carry that credential in [`HEADER_CREDENTIAL`]; others get 401 and a
//! log line (without the credential). The header is removed before the function sees
//! the request.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::function::{
    FunctionDeployment, FunctionName, Mode, ANNOTATION_MAX_INFLIGHT, ANNOTATION_MODE,
    ANNOTATION_TIMEOUT, ANNOTATION_WORKDIR,
};
use crate::provider::process::ProcessProvider;
use crate::provider::{Deployment, Invocation, LogHub, Provider, ProviderError};

/// Header carrying the reason a call failed, for the gateway's activation record.
pub const HEADER_ERROR: &str = "x-hark-error";
/// The port the watchdog listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8080;
/// Where the OpenFaaS convention puts secret files inside a container.
pub const SECRETS_DIR: &str = "/var/openfaas/secrets";
/// Environment variables that configure the watchdog (OpenFaaS's names).
pub const ENV_FPROCESS: &str = "fprocess";
pub const ENV_MODE: &str = "mode";
pub const ENV_EXEC_TIMEOUT: &str = "exec_timeout";
pub const ENV_MAX_INFLIGHT: &str = "max_inflight";
/// Variable naming the file that holds the credential every request must carry.
pub const ENV_CREDENTIAL_FILE: &str = "HARK_CREDENTIAL_FILE";
/// Header carrying a function's credential from the gateway to its watchdog.
pub const HEADER_CREDENTIAL: &str = "x-hark-credential";
/// Largest request body the watchdog accepts.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What the watchdog runs and how.
#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    /// Address to listen on, unless `socket` is set.
    pub listen: SocketAddr,
    /// Unix socket to listen on instead of `listen` (`HARK_SOCKET`).
    pub socket: Option<PathBuf>,
    /// The function's command line, split like a shell would (no shell runs it).
    pub fprocess: String,
    pub mode: Mode,
    /// Per-call time limit.
    pub timeout: Duration,
    /// Most calls at once (429 beyond it); `None` is unlimited.
    pub max_inflight: Option<usize>,
    /// Directory the function's `HARK_SECRETS_DIR` points at.
    pub secrets_dir: PathBuf,
    /// Name used in log lines.
    pub name: FunctionName,
}

impl WatchdogConfig {
    /// Default settings for running `fprocess`.
    pub fn new(fprocess: impl Into<String>) -> Self {
        WatchdogConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            socket: None,
            fprocess: fprocess.into(),
            mode: Mode::Fork,
            timeout: crate::function::DEFAULT_TIMEOUT,
            max_inflight: None,
            secrets_dir: PathBuf::from(SECRETS_DIR),
            name: FunctionName::default(),
        }
    }
}

/// Why the watchdog could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("fprocess {fprocess:?} cannot run: {source}")]
    Function {
        fprocess: String,
        source: ProviderError,
    },
    #[error("credential file {path}: {reason}")]
    Credential { path: PathBuf, reason: String },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

struct Watchdog {
    provider: ProcessProvider,
    name: FunctionName,
    draining: AtomicBool,
}

/// Serves the function until `shutdown` completes, then lets calls in flight finish and
/// stops the function's process.
pub async fn run(
    config: WatchdogConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WatchdogError> {
    let credential = credential_from_env()?;
    let logs = Arc::new(LogHub::default());
    // The function's output lines go to the watchdog's stderr, where the container
    // engine collects them.
    let mut feed = logs.subscribe();
    tokio::spawn(async move {
        use std::io::Write;
        loop {
            match feed.recv().await {
                Ok(line) => {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{}", line.line.text);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
    let provider = ProcessProvider::with_secrets_in(config.secrets_dir.clone(), logs);
    provider
        .deploy(Deployment {
            spec: deployment(&config),
            secrets: Vec::new(),
            replicas: 1,
        })
        .await
        .map_err(|source| WatchdogError::Function {
            fprocess: config.fprocess.clone(),
            source,
        })?;
    let listener = Listening::bind(&config).await?;
    let watchdog = Arc::new(Watchdog {
        provider,
        name: config.name.clone(),
        draining: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/_/health", get(health))
        .route("/_/ready", get(ready))
        .fallback(call)
        .with_state(watchdog.clone())
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(credential),
            check_credential,
        ));
    let drain = {
        let watchdog = watchdog.clone();
        async move {
            shutdown.await;
            watchdog.draining.store(true, Ordering::SeqCst);
        }
    };
    eprintln!(
        "hark watchdog: {:?} ({} mode) on {}",
        config.fprocess,
        match config.mode {
            Mode::Fork => "fork",
            Mode::Http => "http",
        },
        listener.describe().map_err(WatchdogError::Serve)?
    );
    let served = match listener {
        Listening::Tcp(listener) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(drain)
                .await
        }
        Listening::Unix(listener) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(drain)
                .await
        }
    };
    watchdog.provider.shutdown().await;
    served.map_err(WatchdogError::Serve)
}

/// The watchdog's listener: TCP, or the Unix socket of `HARK_SOCKET`.
enum Listening {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listening {
    async fn bind(config: &WatchdogConfig) -> Result<Listening, WatchdogError> {
        match config.socket.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => {
                let listen = |source| WatchdogError::Listen {
                    addr: path.display().to_string(),
                    source,
                };
                // A socket left by an earlier run of this replica; anything else stays.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path).map_err(listen)?;
                }
                tokio::net::UnixListener::bind(path)
                    .map(Listening::Unix)
                    .map_err(listen)
            }
            None => tokio::net::TcpListener::bind(config.listen)
                .await
                .map(Listening::Tcp)
                .map_err(|source| WatchdogError::Listen {
                    addr: config.listen.to_string(),
                    source,
                }),
        }
    }

    /// Where it listens, for the start-up line.
    fn describe(&self) -> std::io::Result<String> {
        Ok(match self {
            Listening::Tcp(listener) => listener.local_addr()?.to_string(),
            Listening::Unix(listener) => match listener.local_addr()?.as_pathname() {
                Some(path) => format!("unix:{}", path.display()),
                None => "an unnamed unix socket".to_owned(),
            },
        })
    }
}

/// The deployment the embedded process provider runs: the watchdog's whole environment
/// is the function's environment.
fn deployment(config: &WatchdogConfig) -> FunctionDeployment {
    let mut spec = FunctionDeployment {
        service: config.name.clone(),
        env_process: Some(config.fprocess.clone()),
        // Less the watchdog's own socket: the function gets one of its own, or a port.
        env_vars: std::env::vars()
            .filter(|(k, _)| k != crate::provider::process::ENV_SOCKET)
            .collect(),
        ..FunctionDeployment::default()
    };
    let mode = match config.mode {
        Mode::Fork => "fork",
        Mode::Http => "http",
    };
    spec.annotations.insert(ANNOTATION_MODE.into(), mode.into());
    spec.annotations.insert(
        ANNOTATION_TIMEOUT.into(),
        format!("{}ms", config.timeout.as_millis()),
    );
    if let Some(n) = config.max_inflight {
        spec.annotations
            .insert(ANNOTATION_MAX_INFLIGHT.into(), n.to_string());
    }
    if let Ok(dir) = std::env::current_dir() {
        spec.annotations
            .insert(ANNOTATION_WORKDIR.into(), dir.display().to_string());
    }
    spec
}

/// The credential in the file [`ENV_CREDENTIAL_FILE`] names; `None` when it is unset.
fn credential_from_env() -> Result<Option<String>, WatchdogError> {
    let Some(path) = std::env::var_os(ENV_CREDENTIAL_FILE).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path).map_err(|e| WatchdogError::Credential {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let credential = text.trim().to_owned();
    if credential.is_empty() {
        return Err(WatchdogError::Credential {
            path,
            reason: "it is empty".into(),
        });
    }
    Ok(Some(credential))
}

/// Lets a request through only with the expected credential (compared in constant
/// time), and takes the credential out of it; 401 otherwise.
async fn check_credential(
    State(expected): State<Arc<Option<String>>>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    use subtle::ConstantTimeEq;
    let Some(expected) = expected.as_ref() else {
        return next.run(request).await;
    };
    let given = request.headers_mut().remove(HEADER_CREDENTIAL);
    let matches = given
        .as_ref()
        .is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())));
    if !matches {
        let why = if given.is_some() {
            "a wrong credential"
        } else {
            "no credential"
        };
        eprintln!(
            "hark watchdog: refused {} {} with 401: {why} in {HEADER_CREDENTIAL}",
            request.method(),
            request.uri().path()
        );
        return (
            StatusCode::UNAUTHORIZED,
            format!("this function's watchdog answers only its gateway ({HEADER_CREDENTIAL} missing or wrong)\n"),
        )
            .into_response();
    }
    next.run(request).await
}

async fn health(State(watchdog): State<Arc<Watchdog>>) -> StatusCode {
    if watchdog.draining.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn ready(State(watchdog): State<Arc<Watchdog>>) -> StatusCode {
    if watchdog.draining.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match watchdog.provider.replicas(&watchdog.name).await {
        Ok(r) if r.available > 0 => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn call(State(watchdog): State<Arc<Watchdog>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return failure(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}"));
        }
    };
    let call_id = parts
        .headers
        .get("x-call-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let invocation = Invocation {
        call_id,
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    let oom_before = oom_kills();
    let result = watchdog.provider.invoke(&watchdog.name, invocation).await;
    let oom = match (oom_before, oom_kills()) {
        (Some(before), Some(after)) => after > before,
        _ => false,
    };
    let out_of_memory = |what: String| {
        if oom {
            format!("{what}; out of memory: the kernel's OOM killer stopped the function (memory limit reached)")
        } else {
            what
        }
    };
    match result {
        Ok(output) => {
            let mut response = (output.status, output.body).into_response();
            *response.headers_mut() = output.headers;
            if let Some(error) = output.error {
                set_error(response.headers_mut(), &out_of_memory(error));
            }
            response
        }
        Err(e) => {
            let status = crate::error::provider_status(&e);
            failure(status, out_of_memory(e.to_string()))
        }
    }
}

fn failure(status: StatusCode, message: String) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    set_error(response.headers_mut(), &message);
    response
}

/// Puts `message` in [`HEADER_ERROR`], on one line and cut to a sane length.
fn set_error(headers: &mut HeaderMap, message: &str) {
    let line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| c.is_ascii())
        .take(2000)
        .collect();
    if let Ok(value) = HeaderValue::from_str(&line) {
        headers.insert(HEADER_ERROR, value);
    }
}

/// How often the kernel's OOM killer has struck in this container's memory cgroup
/// (v2 `memory.events`, or v1 `memory.oom_control`); `None` when neither is readable.
fn oom_kills() -> Option<u64> {
    for file in [
        "/sys/fs/cgroup/memory.events",
        "/sys/fs/cgroup/memory/memory.oom_control",
    ] {
        if let Ok(text) = std::fs::read_to_string(file) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok());
        }
    }
    None
}

/// Completes on SIGTERM or Ctrl-C (as PID 1 without an init, only handled signals arrive).
pub async fn terminated() {
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
