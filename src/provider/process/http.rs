//! HTTP mode: `replicas` long-running processes, each told where to listen: a Unix
//! socket in `HARK_SOCKET` (in a directory only the gateway and the function's user can
//! open) and/or a loopback port in `PORT`, as `hark.listen` says. A call comes in; it is
//! proxied over keep-alive connections to a ready replica, round robin, and the
//! replica's response goes out. Crashed replicas are restarted with backoff; a call to a
//! function at zero replicas starts one and waits for it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{signal_group, Launch, ENV_PORT, ENV_SOCKET};
use crate::function::Listen;
use crate::provider::upstream::{Endpoint, Upstream, UpstreamError};
use crate::provider::{Invocation, LogHub, Output, ProviderError, Replicas};

/// First wait before restarting a crashed replica; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A replica that ran this long without crashing restarts with the first backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a stopping replica gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Numbers the pools of this gateway: a pool replacing another of the same function
/// (a redeploy) names its sockets apart from those of the one still stopping.
static POOLS: AtomicUsize = AtomicUsize::new(0);

/// The replicas of one HTTP-mode function. Cloning shares the same replicas.
#[derive(Clone)]
pub(super) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// From [`POOLS`]: its replicas' sockets are `POOL-SLOT.sock`.
    generation: usize,
    launch: Arc<Launch>,
    logs: Arc<LogHub>,
    client: Upstream,
    /// Supervisors of the replicas, one per desired replica.
    replicas: tokio::sync::Mutex<Vec<Replica>>,
    desired: AtomicU32,
    /// Where the replicas that answer listen, by replica slot; watched by waiting calls.
    ready: watch::Sender<Vec<(usize, Arc<Endpoint>)>>,
    next: AtomicUsize,
    slots: AtomicUsize,
}

struct Replica {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Pool {
    pub(super) fn new(launch: Arc<Launch>, logs: Arc<LogHub>) -> Self {
        let client = Upstream::new(Duration::from_secs(90), 64);
        Pool {
            inner: Arc::new(PoolInner {
                generation: POOLS.fetch_add(1, Ordering::Relaxed),
                launch,
                logs,
                client,
                replicas: tokio::sync::Mutex::new(Vec::new()),
                desired: AtomicU32::new(0),
                ready: watch::channel(Vec::new()).0,
                next: AtomicUsize::new(0),
                slots: AtomicUsize::new(0),
            }),
        }
    }

    pub(super) fn replicas(&self) -> Replicas {
        Replicas {
            desired: self.inner.desired.load(Ordering::Relaxed),
            available: self.inner.ready.borrow().len() as u32,
        }
    }

    /// Starts or stops replicas until `n` run.
    pub(super) async fn scale(&self, n: u32) {
        let mut replicas = self.inner.replicas.lock().await;
        self.inner.desired.store(n, Ordering::Relaxed);
        while replicas.len() < n as usize {
            let slot = self.inner.slots.fetch_add(1, Ordering::Relaxed);
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(supervise(self.inner.clone(), slot, stopped));
            replicas.push(Replica {
                stop: Some(stop),
                task,
            });
        }
        let extra: Vec<Replica> = replicas.drain(n as usize..).collect();
        drop(replicas);
        stop_all(extra).await;
    }

    /// Stops every replica.
    pub(super) async fn stop(&self) {
        let mut replicas = self.inner.replicas.lock().await;
        self.inner.desired.store(0, Ordering::Relaxed);
        let all: Vec<Replica> = replicas.drain(..).collect();
        drop(replicas);
        stop_all(all).await;
    }

    /// Proxies one call to a ready replica, starting one first if none runs.
    pub(super) async fn invoke(&self, mut call: Invocation) -> Result<Output, ProviderError> {
        let launch = &self.inner.launch;
        let deadline = Instant::now() + launch.timeout;
        if self.inner.desired.load(Ordering::Relaxed) == 0 {
            let replicas = self.inner.replicas.lock().await;
            let empty = replicas.is_empty();
            drop(replicas);
            if empty {
                self.scale(1).await;
            }
        }
        let (mut endpoint, mut others) = self.ready_endpoint(deadline).await?;
        let answer = loop {
            let limit = deadline.saturating_duration_since(Instant::now());
            // A call that never reached its replica (it died a moment ago and the
            // supervisor has not noticed yet) goes to another ready one; a copy is kept
            // for that only when there is another.
            let spare = (!others.is_empty()).then(|| call.clone());
            let sent = self
                .inner
                .client
                .send_to(&endpoint, call, &[], limit, launch.max_response)
                .await;
            match (sent, spare) {
                (Ok(answer), _) => break answer,
                (Err(UpstreamError::Connect(reason)), Some(copy)) => {
                    tracing::debug!(function = %launch.name, %endpoint, reason, "replica refused the call; trying another");
                    endpoint = others.remove(0);
                    call = copy;
                }
                (Err(e), _) => return Err(self.request_error(e)),
            }
        };
        let error = answer
            .status
            .is_server_error()
            .then(|| format!("function {} answered {}", launch.name, answer.status));
        Ok(Output {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
            error,
            instance: None,
        })
    }

    fn request_error(&self, e: UpstreamError) -> ProviderError {
        let name = self.inner.launch.name.clone();
        match e {
            UpstreamError::Timeout => ProviderError::Timeout {
                name,
                limit: self.inner.launch.timeout,
            },
            UpstreamError::TooLarge(max) => {
                tracing::warn!(function = %name, max_response = max, "answer larger than hark.max_response; refused with 502");
                ProviderError::Unavailable {
                    name,
                    reason: format!("its answer is larger than hark.max_response ({max} bytes)"),
                }
            }
            UpstreamError::Connect(reason) | UpstreamError::Failed(reason) => {
                ProviderError::Unavailable {
                    name,
                    reason: format!("request to replica failed: {reason}"),
                }
            }
        }
    }

    /// Where the next ready replica (round robin) listens, and where the other ready
    /// replicas after it do.
    async fn ready_endpoint(
        &self,
        deadline: Instant,
    ) -> Result<(Arc<Endpoint>, Vec<Arc<Endpoint>>), ProviderError> {
        let mut ready = self.inner.ready.subscribe();
        let wait = ready.wait_for(|ports| !ports.is_empty());
        let ports = match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(ports)) => ports.clone(),
            _ => {
                return Err(ProviderError::Timeout {
                    name: self.inner.launch.name.clone(),
                    limit: self.inner.launch.timeout,
                })
            }
        };
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % ports.len();
        let others = (1..ports.len())
            .map(|k| ports[(i + k) % ports.len()].1.clone())
            .collect();
        Ok((ports[i].1.clone(), others))
    }
}

async fn stop_all(replicas: Vec<Replica>) {
    for mut replica in replicas {
        if let Some(stop) = replica.stop.take() {
            let _ = stop.send(());
        }
        let _ = replica.task.await;
    }
}

/// Where one replica is told to listen.
struct Listeners {
    /// `HARK_SOCKET`: in the function's own socket directory, one name per slot.
    socket: Option<PathBuf>,
    /// `PORT`.
    port: Option<u16>,
}

/// Keeps one replica running until told to stop: start, wait for its socket or port,
/// serve, and on a crash start again after a growing pause.
async fn supervise(pool: Arc<PoolInner>, slot: usize, mut stop: oneshot::Receiver<()>) {
    let launch = &pool.launch;
    let instance = format!("{}-{slot}", launch.name);
    let mut backoff = FIRST_BACKOFF;
    let socket = match (&launch.sockets, launch.listen) {
        (Some(dir), Listen::Socket | Listen::Auto) => {
            Some(dir.join(format!("{}-{slot}.sock", pool.generation)))
        }
        _ => None,
    };
    loop {
        let port = match launch.listen {
            Listen::Socket => None,
            Listen::Tcp | Listen::Auto => match free_port() {
                Ok(port) => Some(port),
                Err(e) => {
                    pool.logs
                        .push(&launch.name, &instance, format!("no free port: {e}"));
                    return;
                }
            },
        };
        let listeners = Listeners {
            socket: socket.clone(),
            port,
        };
        // A socket left by the replica's last run would look ready before it is.
        if let Some(path) = &listeners.socket {
            remove_socket(path);
        }
        let started = Instant::now();
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)));
        if let Some(port) = listeners.port {
            command.env(ENV_PORT, port.to_string());
        }
        if let Some(path) = &listeners.socket {
            command.env(ENV_SOCKET, path);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // First: a change of uid clears the parent-death signal set after it.
        launch.sandbox.apply(&mut command);
        super::die_with_gateway(&mut command);
        if let Some(dir) = &launch.workdir {
            command.current_dir(dir);
        }
        match command.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                super::oom_first(pid);
                for stream in [
                    child
                        .stdout
                        .take()
                        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                    child
                        .stderr
                        .take()
                        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                ]
                .into_iter()
                .flatten()
                {
                    let (logs, name, instance) =
                        (pool.logs.clone(), launch.name.clone(), instance.clone());
                    tokio::spawn(async move {
                        logs.pump(&name, &instance, stream).await;
                    });
                }
                tracing::info!(function = %launch.name, instance, pid, port, socket = ?listeners.socket, "replica started");
                let exit = tokio::select! {
                    _ = &mut stop => None,
                    status = run_until_exit(&pool, slot, &listeners, &mut child) => Some(status),
                };
                pool.ready
                    .send_modify(|ports| ports.retain(|(s, _)| *s != slot));
                match exit {
                    None => {
                        signal_group(pid, libc::SIGTERM);
                        if tokio::time::timeout(STOP_GRACE, child.wait())
                            .await
                            .is_err()
                        {
                            signal_group(pid, libc::SIGKILL);
                            let _ = child.wait().await;
                        }
                        if let Some(path) = &listeners.socket {
                            remove_socket(path);
                        }
                        tracing::info!(function = %launch.name, instance, "replica stopped");
                        return;
                    }
                    Some(status) => {
                        signal_group(pid, libc::SIGKILL);
                        let message =
                            format!("replica exited ({status}); restarting in {backoff:?}");
                        tracing::warn!(function = %launch.name, instance, %status, "replica exited");
                        pool.logs.push(&launch.name, &instance, message);
                    }
                }
            }
            Err(e) => {
                let message = format!(
                    "cannot start {}: {e}; retrying in {backoff:?}",
                    launch.program.display()
                );
                tracing::warn!(function = %launch.name, instance, error = %e, "replica failed to start");
                pool.logs.push(&launch.name, &instance, message);
            }
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Waits for the replica's socket or port to accept connections (the socket is tried
/// first), marks it ready there, and returns the process's exit status when it ends.
async fn run_until_exit(
    pool: &PoolInner,
    slot: usize,
    listeners: &Listeners,
    child: &mut tokio::process::Child,
) -> String {
    let mut delay = Duration::from_millis(2);
    let endpoint = loop {
        tokio::select! {
            status = child.wait() => return describe(status),
            accepted = accepting(listeners) => {
                if let Some(endpoint) = accepted {
                    break endpoint;
                }
            }
        }
        tokio::select! {
            status = child.wait() => return describe(status),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_millis(100));
    };
    if let Endpoint::Tcp(_) = endpoint {
        tracing::info!(function = %pool.launch.name, slot, %endpoint, "replica serves on TCP: every local user can call it directly, past the gateway's checks; listen on $HARK_SOCKET to prevent that");
    }
    pool.ready
        .send_modify(|ports| ports.push((slot, Arc::new(endpoint))));
    describe(child.wait().await)
}

/// Where the replica accepts connections now: its socket, else its port.
async fn accepting(listeners: &Listeners) -> Option<Endpoint> {
    if let Some(path) = &listeners.socket {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Some(Endpoint::unix(path));
        }
    }
    if let Some(port) = listeners.port {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            if !connected_to_itself(&stream) {
                return Some(Endpoint::loopback(port));
            }
        }
    }
    None
}

/// Whether `stream` is connected to itself: a connect to a local port in the ephemeral
/// range that nothing listens on succeeds now and then when the kernel picks that same
/// port as its source (TCP simultaneous open). Taken for the replica's answer, it made
/// a replica that had not started yet look ready (a CI run got 502 from its first call).
fn connected_to_itself(stream: &tokio::net::TcpStream) -> bool {
    matches!((stream.local_addr(), stream.peer_addr()), (Ok(local), Ok(peer)) if local == peer)
}

/// Removes a replica's socket file, if there is one.
fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(socket = %path.display(), error = %e, "cannot remove a replica's socket");
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// A port the kernel says is free right now on the loopback interface.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_to_itself_is_not_a_replica_listening() {
        // What the kernel does now and then by chance, done on purpose: a socket bound to
        // a port connects to that same port, with nothing listening there.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let own = socket.local_addr().unwrap();
        let stream = socket.connect(own).await.expect("a self-connection");
        assert!(connected_to_itself(&stream));

        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let real = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(!connected_to_itself(&real));
    }
}
