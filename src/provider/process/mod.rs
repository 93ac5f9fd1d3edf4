//! The process provider, Hark's embedded default: functions run as child processes of
//! the gateway, with no container engine. A deployment comes in; a [`ProcFunction`]
//! that forks per call ([`fork`]) or keeps HTTP replicas up ([`http`]) goes out.

mod fork;
mod http;
mod sandbox;
mod spawn;
mod uids;

pub use sandbox::{SandboxMode, Sandboxing, ENV_STATE_DIR};

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{RwLock, Semaphore};

use super::{Deployment, Invocation, LogHub, Output, Provider, ProviderError, Replicas};
use crate::function::{FunctionDeployment, FunctionName, Listen, Mode, ANNOTATION_WORKDIR};

/// Environment variable telling a function where its secret files are.
pub const ENV_SECRETS_DIR: &str = "HARK_SECRETS_DIR";
/// Environment variable giving every function the gateway's own URL (`http://ADDR:PORT`
/// as `hark up` listens, loopback for a wildcard `--bind`), to call other functions.
pub const ENV_GATEWAY_URL: &str = "HARK_GATEWAY_URL";
/// Environment variable telling an HTTP-mode function which port to listen on: a
/// loopback port every local user can connect to (`hark.listen: tcp` or `auto`).
pub const ENV_PORT: &str = "PORT";
/// Environment variable telling an HTTP-mode function the Unix socket to listen on, in
/// a directory only the gateway and the function's own user can open
/// (`hark.listen: socket` or `auto`).
pub const ENV_SOCKET: &str = "HARK_SOCKET";
/// The longest socket path the kernel takes (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Variables of the gateway's own environment that functions inherit; nothing else
/// leaks from the gateway (its tokens, for instance).
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"];

/// Runs functions as local processes.
pub struct ProcessProvider {
    functions: RwLock<HashMap<FunctionName, Arc<ProcFunction>>>,
    logs: Arc<LogHub>,
    secrets: SecretFiles,
    /// The functions' WebDriver listener and capabilities, for `HARK_WEBDRIVER_URL`.
    webdriver: Option<Webdriver>,
    /// The functions' sandbox (none for the watchdog, whose container is the sandbox).
    sandboxing: Option<Arc<Sandboxing>>,
    /// `HARK_GATEWAY_URL` of every function.
    gateway_url: Option<String>,
    /// Where HTTP-mode replicas get their Unix sockets, a directory per function; without
    /// it they listen on TCP only.
    sockets_root: Option<PathBuf>,
}

/// Where process functions reach the browser pool: the base URL of the gateway's
/// loopback listener for functions, and the capabilities that go in their URLs.
#[derive(Clone)]
pub(crate) struct Webdriver {
    base: String,
    capabilities: crate::browser::capability::Capabilities,
}

/// Where a function finds its secret files.
enum SecretFiles {
    /// Hark writes them, one directory per function under this root.
    Managed(PathBuf),
    /// Someone else put them in this directory (the watchdog inside a container, where
    /// the engine mounts them); Hark only points the function at it.
    Fixed(PathBuf),
}

/// How one function is started: everything derived from its deployment once.
#[derive(Debug, Clone, PartialEq)]
struct Launch {
    name: FunctionName,
    program: PathBuf,
    args: Vec<String>,
    workdir: Option<PathBuf>,
    env: Vec<(String, String)>,
    timeout: Duration,
    /// `hark.max_response`: the largest answer read from a call, in bytes.
    max_response: u64,
    /// Entered by every process of the function ([`sandbox::Sandbox::apply`]).
    sandbox: Arc<sandbox::Sandbox>,
    /// Where its HTTP-mode replicas listen; `Auto` or `Tcp` when it has no socket
    /// directory.
    listen: Listen,
    /// The directory of its replicas' sockets (0700, its user's), when it has one.
    sockets: Option<PathBuf>,
}

struct ProcFunction {
    launch: Arc<Launch>,
    mode: Mode,
    inflight: Option<Arc<Semaphore>>,
    runner: Runner,
}

enum Runner {
    /// Fork mode has no standing processes; `replicas` is the count last asked for.
    Fork {
        replicas: AtomicU32,
    },
    Http(http::Pool),
}

impl ProcessProvider {
    /// A provider keeping secret files under `secrets_root`.
    pub fn new(secrets_root: PathBuf, logs: Arc<LogHub>) -> Self {
        ProcessProvider {
            functions: RwLock::new(HashMap::new()),
            logs,
            secrets: SecretFiles::Managed(secrets_root),
            webdriver: None,
            sandboxing: None,
            gateway_url: None,
            sockets_root: None,
        }
    }

    /// Gives every function `HARK_GATEWAY_URL`: `url`, where the gateway listens.
    pub fn with_gateway_url(mut self, url: &str) -> Self {
        self.gateway_url = Some(url.to_owned());
        self
    }

    /// Gives HTTP-mode replicas Unix sockets in a directory per function under `root`
    /// (`DATA/sockets`).
    pub fn with_sockets(mut self, root: PathBuf) -> Self {
        self.sockets_root = Some(root);
        self
    }

    /// Runs every function in the sandbox `sandboxing` describes.
    pub fn with_sandbox(mut self, sandboxing: Sandboxing) -> Self {
        self.sandboxing = Some(Arc::new(sandboxing));
        self
    }

    /// Gives each function `HARK_WEBDRIVER_URL` under the gateway's functions' listener
    /// at `base` (e.g. `http://127.0.0.1:41234`) with the function's capability; fork-mode
    /// calls get one naming the call, valid while the call runs.
    pub fn with_webdriver(
        mut self,
        base: &str,
        capabilities: crate::browser::capability::Capabilities,
    ) -> Self {
        self.webdriver = Some(Webdriver {
            base: base.to_owned(),
            capabilities,
        });
        self
    }

    /// A provider whose functions read secrets from `dir`, written by someone else
    /// (the watchdog uses this: the container engine mounts the files).
    pub fn with_secrets_in(dir: PathBuf, logs: Arc<LogHub>) -> Self {
        ProcessProvider {
            functions: RwLock::new(HashMap::new()),
            logs,
            secrets: SecretFiles::Fixed(dir),
            webdriver: None,
            sandboxing: None,
            gateway_url: None,
            sockets_root: None,
        }
    }

    /// The TCP ports of the gateway's listeners that functions are given URLs of
    /// (`HARK_GATEWAY_URL`, `HARK_WEBDRIVER_URL`): all an `internal` function may connect
    /// to, unless it names more (the sandbox sorts and dedups the whole list).
    fn gateway_ports(&self) -> Vec<u16> {
        self.gateway_url
            .iter()
            .chain(self.webdriver.as_ref().map(|w| &w.base))
            .filter_map(|url| reqwest::Url::parse(url).ok()?.port_or_known_default())
            .collect()
    }

    fn secrets_dir(&self, name: &FunctionName) -> PathBuf {
        match &self.secrets {
            SecretFiles::Managed(root) => root.join(name.as_str()),
            SecretFiles::Fixed(dir) => dir.clone(),
        }
    }

    async fn get(&self, name: &FunctionName) -> Result<Arc<ProcFunction>, ProviderError> {
        self.functions
            .read()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(name.clone()))
    }

    fn launch(&self, spec: &FunctionDeployment) -> Result<Launch, ProviderError> {
        let command = spec.env_process.as_deref().unwrap_or("").trim();
        if command.is_empty() {
            return Err(ProviderError::BadSpec(format!(
                "function {}: envProcess (fprocess) is empty; the process provider needs a command to run",
                spec.service
            )));
        }
        let words = shell_words::split(command).map_err(|e| {
            ProviderError::BadSpec(format!("function {}: envProcess: {e}", spec.service))
        })?;
        let (program, args) = words.split_first().ok_or_else(|| {
            ProviderError::BadSpec(format!("function {}: envProcess is empty", spec.service))
        })?;
        let workdir = spec.annotations.get(ANNOTATION_WORKDIR).map(PathBuf::from);
        let sandboxed = self.sandboxing.as_ref().is_some_and(|s| s.is_on());
        let program = resolve_program(program, workdir.as_deref(), sandboxed).ok_or_else(|| {
            ProviderError::BadSpec(format!(
                "function {}: command not found: {program:?} (looked in {}and $PATH)",
                spec.service,
                workdir
                    .as_deref()
                    .map(|w| format!("{} ", w.display()))
                    .unwrap_or_default()
            ))
        })?;
        let secrets_dir = self.secrets_dir(&spec.service);
        let mut env: Vec<(String, String)> = INHERITED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        env.extend(
            self.gateway_url
                .iter()
                .map(|url| (ENV_GATEWAY_URL.to_owned(), url.clone())),
        );
        if let Some(webdriver) = &self.webdriver {
            env.push((
                crate::browser::ENV_WEBDRIVER_URL.into(),
                webdriver
                    .capabilities
                    .function_url(&webdriver.base, spec.service.as_str()),
            ));
        }
        let mode = spec
            .mode()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?;
        let mut listen = spec
            .listen()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?;
        let mut sockets = match (&self.sockets_root, mode, listen) {
            (_, Mode::Fork, _) | (_, Mode::Http, Listen::Tcp) => None,
            (Some(root), Mode::Http, _) => {
                let dir = root.join(spec.service.as_str());
                // A replica's socket name (`POOL-SLOT.sock`, `http.rs`) must fit.
                if dir.as_os_str().len() + "/999999-999.sock".len() > MAX_SOCKET_PATH {
                    if listen == Listen::Socket {
                        return Err(ProviderError::Internal(format!(
                            "function {}: its socket directory {} is too long for a Unix socket path ({MAX_SOCKET_PATH} bytes); use a shorter --data directory or hark.listen: tcp",
                            spec.service,
                            dir.display()
                        )));
                    }
                    tracing::warn!(function = %spec.service, dir = %dir.display(), "socket directory too long for a Unix socket path; the function's replicas listen on TCP only");
                    listen = Listen::Tcp;
                    None
                } else {
                    make_socket_dir(root, &dir).map_err(|e| {
                        ProviderError::io(format_args!("socket directory of {}", spec.service), &e)
                    })?;
                    Some(dir)
                }
            }
            (None, Mode::Http, Listen::Socket) => {
                return Err(ProviderError::BadSpec(format!(
                "function {}: hark.listen: socket, but this provider gives no sockets (only TCP)",
                spec.service
            )))
            }
            (None, Mode::Http, Listen::Auto) => {
                listen = Listen::Tcp;
                None
            }
        };
        let sandbox = match &self.sandboxing {
            Some(sandboxing) => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&secrets_dir)
                    .map_err(|e| {
                        ProviderError::io(format_args!("secrets directory of {}", spec.service), &e)
                    })?;
                let prepared = sandboxing.prepare(
                    spec,
                    &program,
                    workdir.as_deref(),
                    &secrets_dir,
                    sockets.as_deref(),
                    &self.gateway_ports(),
                )?;
                env.extend(prepared.env);
                if let Some(blocked) = prepared.sockets_blocked {
                    let why = format!(
                        "its user cannot pass {} on the way to its socket directory",
                        blocked.display()
                    );
                    if listen == Listen::Socket {
                        return Err(ProviderError::BadSpec(format!(
                            "function {}: hark.listen: socket, but {why}; let others pass it (chmod o+x), or use a --data directory they can",
                            spec.service
                        )));
                    }
                    tracing::warn!(function = %spec.service, blocked = %blocked.display(), "{why}: its replicas listen on TCP only (chmod o+x that directory to give them sockets)");
                    listen = Listen::Tcp;
                    sockets = None;
                }
                prepared.sandbox
            }
            None => Arc::new(sandbox::Sandbox::off()),
        };
        env.extend(spec.env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push((ENV_SECRETS_DIR.into(), secrets_dir.display().to_string()));
        Ok(Launch {
            name: spec.service.clone(),
            program,
            args: args.to_vec(),
            workdir,
            env,
            timeout: spec
                .timeout()
                .map_err(|e| ProviderError::BadSpec(e.to_string()))?,
            max_response: spec
                .max_response()
                .map_err(|e| ProviderError::BadSpec(e.to_string()))?,
            sandbox,
            listen,
            sockets,
        })
    }

    /// Writes each secret as a 0600 file in the function's own 0700 directory,
    /// removing files of secrets the function no longer names.
    fn write_secrets(
        &self,
        launch: &Launch,
        secrets: &[(String, Vec<u8>)],
    ) -> Result<(), ProviderError> {
        let name = &launch.name;
        let SecretFiles::Managed(root) = &self.secrets else {
            return Ok(());
        };
        let dir = root.join(name.as_str());
        write_secret_files(&dir, secrets, 0o700, 0o600)
            .and_then(|()| match &self.sandboxing {
                Some(sandboxing) => sandboxing.own_secrets(&launch.sandbox, &dir),
                None => Ok(()),
            })
            .map_err(|e| ProviderError::io(format_args!("secret files of {name}"), &e))
    }
}

/// Creates `dir`, the socket directory of one function, 0700 (its user's, once the
/// sandbox hands it over), under `root` (0711: passable, not listable). A directory left
/// by an earlier run loses any wider permission.
fn make_socket_dir(root: &Path, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes each secret as a file named after it in `dir` (created with `dir_mode`),
/// atomically by rename, and removes files of secrets no longer named.
pub(crate) fn write_secret_files(
    dir: &Path,
    secrets: &[(String, Vec<u8>)],
    dir_mode: u32,
    file_mode: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let keep = secrets.iter().any(|(n, _)| entry.file_name() == n.as_str());
        if !keep {
            std::fs::remove_file(entry.path())?;
        }
    }
    for (secret, value) in secrets {
        let path = dir.join(secret);
        let tmp = dir.join(format!(".{secret}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(file_mode)
            .open(&tmp)?;
        file.write_all(value)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(file_mode))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// Finds the program: a path with a `/` is taken relative to the working directory,
/// a bare name is looked up in `$PATH` (for a sandboxed function, in the directories of
/// `$PATH` its own user can reach).
fn resolve_program(program: &str, workdir: Option<&Path>, sandboxed: bool) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        let path = match workdir {
            Some(w) if !Path::new(program).is_absolute() => w.join(program),
            _ => PathBuf::from(program),
        };
        let meta = std::fs::metadata(&path).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(path)
    } else if sandboxed {
        sandbox::which(program)
    } else {
        which::which(program).ok()
    }
}

#[async_trait]
impl Provider for ProcessProvider {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn deploy(&self, deployment: Deployment) -> Result<(), ProviderError> {
        let spec = &deployment.spec;
        spec.validate()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?;
        let launch = Arc::new(self.launch(spec)?);
        let mode = spec
            .mode()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?;
        let inflight = spec
            .max_inflight()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?
            .map(|n| Arc::new(Semaphore::new(n)));
        self.write_secrets(&launch, &deployment.secrets)?;

        let mut functions = self.functions.write().await;
        let previous = functions.get(&spec.service).cloned();
        if let Some(old) = &previous {
            // Same command, environment and mode: keep the running processes; only the
            // secret files (rewritten above) and the limits may have changed.
            if old.launch == launch && old.mode == mode {
                let runner = match &old.runner {
                    Runner::Fork { replicas } => Runner::Fork {
                        replicas: AtomicU32::new(replicas.load(Ordering::Relaxed)),
                    },
                    Runner::Http(pool) => Runner::Http(pool.clone()),
                };
                functions.insert(
                    spec.service.clone(),
                    Arc::new(ProcFunction {
                        launch,
                        mode,
                        inflight,
                        runner,
                    }),
                );
                return Ok(());
            }
        }
        let runner = match mode {
            Mode::Fork => Runner::Fork {
                replicas: AtomicU32::new(deployment.replicas),
            },
            Mode::Http => {
                let pool = http::Pool::new(launch.clone(), self.logs.clone());
                pool.scale(deployment.replicas).await;
                Runner::Http(pool)
            }
        };
        functions.insert(
            spec.service.clone(),
            Arc::new(ProcFunction {
                launch,
                mode,
                inflight,
                runner,
            }),
        );
        drop(functions);
        if let Some(old) = previous {
            if let Runner::Http(pool) = &old.runner {
                pool.stop().await;
            }
        }
        Ok(())
    }

    async fn remove(&self, name: &FunctionName) -> Result<(), ProviderError> {
        let removed = self.functions.write().await.remove(name);
        let Some(function) = removed else {
            return Err(ProviderError::NotFound(name.clone()));
        };
        if let Runner::Http(pool) = &function.runner {
            pool.stop().await;
        }
        if let SecretFiles::Managed(root) = &self.secrets {
            let _ = std::fs::remove_dir_all(root.join(name.as_str()));
        }
        if let Some(root) = &self.sockets_root {
            let _ = std::fs::remove_dir_all(root.join(name.as_str()));
        }
        if let Some(sandboxing) = &self.sandboxing {
            sandboxing.remove(name.as_str());
        }
        self.logs.forget(name);
        Ok(())
    }

    async fn replicas(&self, name: &FunctionName) -> Result<Replicas, ProviderError> {
        let function = self.get(name).await?;
        Ok(match &function.runner {
            Runner::Fork { replicas } => {
                let n = replicas.load(Ordering::Relaxed);
                Replicas {
                    desired: n,
                    available: n,
                }
            }
            Runner::Http(pool) => pool.replicas(),
        })
    }

    async fn scale(&self, name: &FunctionName, replicas: u32) -> Result<(), ProviderError> {
        let function = self.get(name).await?;
        match &function.runner {
            Runner::Fork { replicas: n } => n.store(replicas, Ordering::Relaxed),
            Runner::Http(pool) => pool.scale(replicas).await,
        }
        Ok(())
    }

    async fn invoke(&self, name: &FunctionName, call: Invocation) -> Result<Output, ProviderError> {
        let function = self.get(name).await?;
        let _permit = super::inflight_permit(function.inflight.as_ref(), name)?;
        match &function.runner {
            Runner::Fork { replicas } => {
                // A call to a function scaled to zero wakes it, as in the http mode.
                replicas.fetch_max(1, Ordering::Relaxed);
                fork::invoke(&function.launch, &self.logs, self.webdriver.as_ref(), call).await
            }
            Runner::Http(pool) => pool.invoke(call).await,
        }
    }

    fn logs(&self) -> &Arc<LogHub> {
        &self.logs
    }

    async fn shutdown(&self) {
        let functions: Vec<_> = self.functions.write().await.drain().collect();
        for (_, function) in functions {
            if let Runner::Http(pool) = &function.runner {
                pool.stop().await;
            }
        }
    }
}

/// Makes a child process die with the gateway: if the gateway is killed (even with
/// SIGKILL), the kernel sends the child SIGKILL, so no replica outlives it.
fn die_with_gateway(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Makes a started HTTP-mode replica the OOM killer's first choice (score adjustment 1000):
/// when a function runs out of memory, alone in a container's limit with its watchdog or
/// beside the gateway, it is the function that is killed, never the process serving it.
/// Written by the parent after the start; the window before the write is far shorter than
/// any growth to a memory limit. (A fork-mode process raises its own score before exec:
/// `spawn::oom_first_in_child`.)
fn oom_first(pid: u32) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "1000") {
        tracing::debug!(pid, error = %e, "cannot raise the OOM score of a function process");
    }
}

/// Sends `signal` to the process group led by `pid` (children are started as group leaders).
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory.
    unsafe {
        libc::kill(-pid, signal);
    }
}
