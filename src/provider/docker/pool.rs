//! The containers of one function: a desired count comes in; supervised containers, each
//! marked ready once its watchdog answers `/_/ready`, go out. A container that exits is
//! reported (exit code, out-of-memory kill), removed and replaced after a growing pause.
//! Calls are proxied to the ready containers' addresses on the functions' network, round
//! robin, with the function's credential (the readiness checks carry it too).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::spec::Template;
use crate::function::FunctionName;
use crate::provider::{LogHub, Replicas};
use crate::watchdog::{DEFAULT_PORT, HEADER_CREDENTIAL};

/// First wait before replacing a crashed container; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A container that ran this long restarts with the first backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Seconds a stopping container gets after SIGTERM to finish its calls.
const STOP_GRACE_SECS: i32 = 5;

/// The containers of one function. Cloning shares them.
#[derive(Clone)]
pub(super) struct Pool {
    inner: Arc<PoolInner>,
}

pub(super) struct PoolInner {
    pub docker: Docker,
    pub name: FunctionName,
    pub template: Template,
    /// The credential the function's watchdog asks for.
    credential: String,
    logs: Arc<LogHub>,
    replicas: tokio::sync::Mutex<Vec<Replica>>,
    desired: AtomicU32,
    /// Addresses of the ready containers, by slot, with the container id.
    ready: watch::Sender<Vec<Ready>>,
    next: AtomicUsize,
    slots: AtomicUsize,
    /// How the last container ended, for error messages.
    last_exit: Mutex<Option<(Instant, String)>>,
    /// Containers found from an earlier run that match this template, to take over.
    adoptable: Mutex<Vec<String>>,
    /// Ended containers the engine could not remove then (it was down); removed once it
    /// answers again, so an engine restart leaves none behind.
    stale: Mutex<Vec<String>>,
}

#[derive(Debug, Clone)]
pub(super) struct Ready {
    pub slot: usize,
    /// The container's address on the functions' network.
    pub ip: String,
    pub container: String,
}

struct Replica {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Pool {
    pub(super) fn new(
        docker: Docker,
        name: FunctionName,
        template: Template,
        credential: String,
        logs: Arc<LogHub>,
        adoptable: Vec<String>,
    ) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                docker,
                name,
                template,
                credential,
                logs,
                replicas: tokio::sync::Mutex::new(Vec::new()),
                desired: AtomicU32::new(0),
                ready: watch::channel(Vec::new()).0,
                next: AtomicUsize::new(0),
                slots: AtomicUsize::new(0),
                last_exit: Mutex::new(None),
                adoptable: Mutex::new(adoptable),
                stale: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(super) fn template(&self) -> &Template {
        &self.inner.template
    }

    pub(super) fn replicas(&self) -> Replicas {
        Replicas {
            desired: self.inner.desired.load(Ordering::Relaxed),
            available: self.inner.ready.borrow().len() as u32,
        }
    }

    /// Ids of the ready containers.
    pub(super) fn ready_containers(&self) -> Vec<String> {
        self.inner
            .ready
            .borrow()
            .iter()
            .map(|r| r.container.clone())
            .collect()
    }

    /// Whether no container runs or is wanted.
    pub(super) async fn is_idle(&self) -> bool {
        self.inner.replicas.lock().await.is_empty()
    }

    /// Starts or stops containers until `n` run.
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

    /// Stops and removes every container.
    pub(super) async fn stop(&self) {
        self.scale(0).await;
    }

    /// Waits until `n` containers are ready, or `deadline` passes.
    pub(super) async fn wait_ready(&self, n: usize, deadline: Instant) -> bool {
        let mut ready = self.inner.ready.subscribe();
        let wait = async move { ready.wait_for(|r| r.len() >= n).await.is_ok() };
        tokio::time::timeout_at(deadline.into(), wait)
            .await
            .unwrap_or(false)
    }

    /// The next ready container's address, round robin, waiting until `deadline`.
    pub(super) async fn ready_ip(&self, deadline: Instant) -> Option<String> {
        let mut ready = self.inner.ready.subscribe();
        let wait = ready.wait_for(|r| !r.is_empty());
        let ready = match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(ready)) => ready.clone(),
            _ => return None,
        };
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        Some(ready[i].ip.clone())
    }

    /// The credential the function's watchdog asks for.
    pub(super) fn credential(&self) -> &str {
        &self.inner.credential
    }

    /// How the last container ended, if that was within `within`.
    pub(super) fn recent_exit(&self, within: Duration) -> Option<String> {
        let last = self
            .inner
            .last_exit
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() <= within)
            .map(|(_, why)| why.clone())
    }
}

async fn stop_all(replicas: Vec<Replica>) {
    let mut tasks = Vec::new();
    for mut replica in replicas {
        if let Some(stop) = replica.stop.take() {
            let _ = stop.send(());
        }
        tasks.push(replica.task);
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Keeps one container running until told to stop.
async fn supervise(pool: Arc<PoolInner>, slot: usize, mut stop: oneshot::Receiver<()>) {
    let name = pool.name.clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let adopted = pool
            .adoptable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let container = match adopted {
            Some(id) => Ok(id),
            None => start_container(&pool, slot).await,
        };
        match container {
            Ok(id) => {
                let short: String = id.chars().take(12).collect();
                let instance = format!("{name}-{short}");
                let log_task = tokio::spawn(stream_logs(
                    pool.docker.clone(),
                    pool.logs.clone(),
                    name.clone(),
                    instance.clone(),
                    id.clone(),
                ));
                let exit = tokio::select! {
                    _ = &mut stop => None,
                    why = run_until_exit(&pool, slot, &id) => Some(why),
                };
                pool.ready.send_modify(|r| r.retain(|r| r.slot != slot));
                match exit {
                    None => {
                        let options = StopContainerOptionsBuilder::default()
                            .t(STOP_GRACE_SECS)
                            .build();
                        let _ = pool.docker.stop_container(&id, Some(options)).await;
                        remove_container(&pool.docker, &id).await;
                        log_task.abort();
                        tracing::info!(function = %name, container = short, "container stopped");
                        return;
                    }
                    Some(why) => {
                        if !remove_container(&pool.docker, &id).await {
                            pool.stale
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(id.clone());
                        }
                        log_task.abort();
                        let message = format!("container {why}; replacing it in {backoff:?}");
                        tracing::warn!(function = %name, container = short, "{message}");
                        pool.logs.push(&name, &instance, message);
                        *pool.last_exit.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((Instant::now(), format!("container {why}")));
                    }
                }
            }
            Err(e) => {
                let message = format!("cannot start a container: {e}; retrying in {backoff:?}");
                tracing::warn!(function = %name, error = %e, "container did not start");
                pool.logs.push(&name, &format!("{name}-{slot}"), message);
                *pool.last_exit.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), format!("cannot start a container: {e}")));
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

/// Creates and starts a container from the template; returns its id.
async fn start_container(pool: &PoolInner, slot: usize) -> Result<String, String> {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let container_name = format!("hark-{}-{slot}-{suffix}", pool.name);
    let options = CreateContainerOptionsBuilder::default()
        .name(&container_name)
        .build();
    let created = pool
        .docker
        .create_container(Some(options), pool.template.body.clone())
        .await
        .map_err(|e| super::describe_engine_error(&e))?;
    if let Err(e) = pool.docker.start_container(&created.id, None).await {
        remove_container(&pool.docker, &created.id).await;
        return Err(super::describe_engine_error(&e));
    }
    tracing::info!(function = %pool.name, container = container_name, "container started");
    // The engine answers again: remove what it could not while it was down.
    let stale: Vec<String> =
        std::mem::take(&mut *pool.stale.lock().unwrap_or_else(|e| e.into_inner()));
    for id in stale {
        tracing::info!(function = %pool.name, container = %id, "removing a container that ended while the engine was unreachable");
        remove_container(&pool.docker, &id).await;
    }
    Ok(created.id)
}

/// Removes a container; whether it is gone.
async fn remove_container(docker: &Docker, id: &str) -> bool {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => true,
        Err(_) => false,
    }
}

/// Finds the container's address, waits for its watchdog to be ready, marks it ready,
/// and returns how the container ended.
async fn run_until_exit(pool: &PoolInner, slot: usize, id: &str) -> String {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut wait = pool.docker.wait_container(id, Some(options));
    let network = pool
        .template
        .body
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    let ip = match container_ip(&pool.docker, id, &network).await {
        Ok(ip) => ip,
        Err(e) => return format!("has no address on network {network}: {e}"),
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let url = format!("http://{ip}:{DEFAULT_PORT}/_/ready");
    let mut delay = Duration::from_millis(5);
    let ready = async {
        loop {
            let probe = client
                .get(&url)
                .header(HEADER_CREDENTIAL, pool.credential.as_str());
            if let Ok(response) = probe.send().await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    };
    tokio::select! {
        _ = wait.next() => return exit_reason(&pool.docker, id).await,
        () = ready => {}
    }
    pool.ready.send_modify(|r| {
        r.push(Ready {
            slot,
            ip: ip.clone(),
            container: id.to_owned(),
        })
    });
    let _ = wait.next().await;
    exit_reason(&pool.docker, id).await
}

/// The container's IPv4 address on `network` (a name or id).
async fn container_ip(docker: &Docker, id: &str, network: &str) -> Result<String, String> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| super::describe_engine_error(&e))?;
    let networks = inspect
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    networks
        .into_iter()
        .find(|(name, endpoint)| name == network || endpoint.network_id.as_deref() == Some(network))
        .and_then(|(_, endpoint)| endpoint.ip_address)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| "the engine gave it none".to_owned())
}

/// "exited with code 137 (killed: out of memory)", from the engine's record.
async fn exit_reason(docker: &Docker, id: &str) -> String {
    let Ok(inspect) = docker.inspect_container(id, None).await else {
        return "ended (it is gone)".to_owned();
    };
    let Some(state) = inspect.state else {
        return "ended".to_owned();
    };
    let code = state.exit_code.unwrap_or(-1);
    let mut why = format!("exited with code {code}");
    if state.oom_killed == Some(true) {
        why.push_str(" (killed: out of memory)");
    } else if code == 137 {
        why.push_str(" (killed)");
    }
    if let Some(error) = state.error.filter(|e| !e.is_empty()) {
        why.push_str(&format!(": {error}"));
    }
    why
}

/// Copies the container's output into the log hub, line by line.
pub(crate) async fn stream_logs(
    docker: Docker,
    logs: Arc<LogHub>,
    name: FunctionName,
    instance: String,
    id: String,
) {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let stream = docker.logs(&id, Some(options)).map(|item| {
        item.map(|output| output.into_bytes())
            .map_err(std::io::Error::other)
    });
    let reader = tokio_util::io::StreamReader::new(stream);
    logs.pump(&name, &instance, reader).await;
}
