//! The Swarm provider: functions run as Docker Swarm services on an existing swarm
//! (this engine must be a manager), reached through bollard like the
//! [docker provider](crate::provider::docker), whose engine connection, image checks,
//! container environment, log streaming and call forwarding it shares. A deployment
//! comes in; a replicated service of the function's image behind the
//! [watchdog](crate::watchdog) goes out.
//!
//! - One service per function, named `hark-INSTANCE-NAME` and labelled with
//!   [`LABEL_FUNCTION`] and [`LABEL_INSTANCE`] (an id kept in the data directory), so a
//!   restarted Hark finds its services and never touches any other. Scaling sets the
//!   replica count through `inspect_service` + `update_service` with the version index;
//!   Swarm's restart policy replaces crashed tasks; an update is start-first, so the
//!   old tasks serve until new ones run.
//! - Secrets are Swarm secrets (one per value, labelled like the service) mounted at
//!   `/var/openfaas/secrets/NAME`; they are removed with the function.
//! - Services join an attachable overlay network Hark creates (`hark-swarm`), where
//!   other containers reach a function by its name (DNS round robin over its tasks).
//! - **How the gateway reaches a task.** The gateway runs on the host, outside the
//!   overlay network. Swarm's own answers — a published port through the ingress
//!   routing mesh, or the service's virtual IP — both need IPVS in the kernel; this
//!   machine's kernel has none (the engine logs "Could not get ipvs family information
//!   from the kernel", and an ingress port refuses connections), while overlay DNS round
//!   robin between containers works. So each task publishes port 8080 in host mode at
//!   a port the engine picks, and the gateway spreads calls round robin over the tasks
//!   that are running, wanted, and whose watchdog answered `/_/ready` — on 127.0.0.1 for
//!   this node's tasks and at the node's address for others'. Host-mode ports are bound
//!   on all of a node's addresses (Swarm has no host IP setting), so the ports are
//!   guarded by a credential: each function has its own, made at its first deployment,
//!   delivered to its tasks as a Swarm secret at
//!   [`CREDENTIAL_PATH`](crate::provider::docker::spec::CREDENTIAL_PATH) and kept for
//!   the gateway in the data directory (`swarm-credentials/NAME`, mode 0600); the
//!   watchdog answers 401 to any request without it, so neither a host on the network
//!   nor another function's task can call a task directly. It is removed with the
//!   function. Reaching tasks over the overlay only was not chosen: the gateway runs
//!   outside the overlay, and the routes into it (ingress mesh, virtual IPs) need IPVS,
//!   which this kind of kernel lacks.
//! - The task list is polled every 250 ms per function (readiness, crash reports, log
//!   streams), see [`tasks`].

mod spec;
mod tasks;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use bollard::models::{LocalNodeState, SecretSpec, ServiceSpec};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListSecretsOptionsBuilder, ListServicesOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use bollard::Docker;
use tokio::sync::{RwLock, Semaphore};
use tokio::task::JoinHandle;

use self::spec::{label_filters, SecretRef};
pub use self::spec::{secret_name, service_name};
use self::tasks::{Nodes, ReadyTask, Watched};
use super::docker::spec::{default_image, LABEL_FUNCTION, LABEL_INSTANCE, LABEL_SPEC};
use super::docker::{
    container_usage, describe_engine_error, ensure_network_of, forward, instance_id, is_not_found,
    local_image, new_credential, write_mode, DockerError, Forwarded,
};
use super::upstream::Upstream;
use super::{Deployment, Invocation, LogHub, Output, Provider, ProviderError, Replicas};
use crate::function::{FunctionName, Usage};

/// The overlay network function services join unless told otherwise.
pub const DEFAULT_NETWORK: &str = "hark-swarm";
/// Variable naming another network (tests use one of their own).
pub const ENV_NETWORK: &str = "HARK_SWARM_NETWORK";
/// File in the data directory holding this Hark's instance id for Swarm.
pub const INSTANCE_FILE: &str = "swarm-instance";
/// Label naming the function secret a Swarm secret holds a value of.
pub const LABEL_SECRET: &str = "com.hark.secret";
/// The [`LABEL_SECRET`] of a function's credential (no function secret has this name).
const CREDENTIAL_SECRET: &str = "hark credential";
/// Longest wait for a ready task: on a call at zero (hold-on-cold-start), and for the
/// new tasks of an update.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for a removed service's containers to stop.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// Why the Swarm provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The engine could not be reached or refused a request.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The engine is not a manager of an active swarm.
    #[error("the Docker Engine at {endpoint} is not a manager of an active swarm (swarm state: {state}); create one with `docker swarm init --advertise-addr 127.0.0.1`, or use --provider docker")]
    NotActive { endpoint: String, state: String },
}

/// Runs functions as Swarm services.
pub struct SwarmProvider {
    docker: Docker,
    instance: String,
    /// The overlay network's name.
    network: String,
    /// Where the functions' credentials are kept for the gateway.
    credentials_root: std::path::PathBuf,
    nodes: Arc<Nodes>,
    logs: Arc<LogHub>,
    client: Upstream,
    functions: RwLock<HashMap<FunctionName, Arc<SwarmFunction>>>,
    /// Services of this instance found at start, by function: `(id, spec hash)`.
    found: std::sync::Mutex<HashMap<FunctionName, (String, String)>>,
    cpu_readings: std::sync::Mutex<HashMap<String, (u64, u64)>>,
}

struct SwarmFunction {
    service: String,
    hash: String,
    /// The credential the function's watchdogs ask for.
    credential: Arc<str>,
    timeout: Duration,
    /// `hark.max_response`, in bytes.
    max_response: u64,
    inflight: Option<Arc<Semaphore>>,
    desired: AtomicU32,
    watched: Arc<Watched>,
    watcher: JoinHandle<()>,
    next: AtomicUsize,
    /// Serialises scaling, so two calls at zero start one task.
    scaling: tokio::sync::Mutex<()>,
}

impl Drop for SwarmFunction {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl SwarmFunction {
    /// Ready tasks of the current deployment, else any ready task still wanted.
    fn routable(&self, ready: &[ReadyTask]) -> Vec<ReadyTask> {
        let current: Vec<ReadyTask> = ready
            .iter()
            .filter(|t| t.routable && t.hash == self.hash)
            .cloned()
            .collect();
        if !current.is_empty() {
            return current;
        }
        ready.iter().filter(|t| t.routable).cloned().collect()
    }

    /// The next task for a call, round robin, waiting until `deadline`.
    async fn next_task(&self, deadline: Instant) -> Option<ReadyTask> {
        let mut ready = self.watched.ready.subscribe();
        let wait = ready.wait_for(|r| !self.routable(r).is_empty());
        let tasks = match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(ready)) => self.routable(&ready),
            _ => return None,
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % tasks.len();
        Some(tasks[i].clone())
    }

    /// Waits until `n` tasks of the current deployment are ready.
    async fn wait_ready(&self, n: usize, deadline: Instant) -> bool {
        let mut ready = self.watched.ready.subscribe();
        let hash = self.hash.clone();
        let wait = async move {
            ready
                .wait_for(|r| r.iter().filter(|t| t.routable && t.hash == hash).count() >= n)
                .await
                .is_ok()
        };
        tokio::time::timeout_at(deadline.into(), wait)
            .await
            .unwrap_or(false)
    }
}

impl SwarmProvider {
    /// Connects to the engine, checks it manages an active swarm, creates the overlay
    /// network if needed, and takes stock of the services an earlier run of this Hark
    /// (same data directory) left.
    pub async fn start(
        data_dir: &Path,
        network: &str,
        logs: Arc<LogHub>,
    ) -> Result<Self, SwarmError> {
        let docker = super::docker::connect().await?;
        let info = docker.info().await.map_err(|e| DockerError::Engine {
            what: "reading the engine's info".into(),
            reason: describe_engine_error(&e),
        })?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm.local_node_state.unwrap_or_default();
        if state != LocalNodeState::ACTIVE || swarm.control_available != Some(true) {
            let state = if state == LocalNodeState::ACTIVE {
                "active, but this node is not a manager".to_owned()
            } else {
                format!("{state:?}").to_lowercase()
            };
            return Err(SwarmError::NotActive {
                endpoint: super::docker::endpoint(),
                state,
            });
        }
        let instance = instance_id(data_dir, INSTANCE_FILE)?;
        ensure_network_of(&docker, network, "overlay").await?;
        let options = ListServicesOptionsBuilder::default()
            .filters(&label_filters(&instance, None))
            .build();
        let services =
            docker
                .list_services(Some(options))
                .await
                .map_err(|e| DockerError::Engine {
                    what: "listing services".into(),
                    reason: describe_engine_error(&e),
                })?;
        let mut found = HashMap::new();
        for service in services {
            let Some(id) = service.id else { continue };
            let labels = service.spec.and_then(|s| s.labels).unwrap_or_default();
            let function = labels
                .get(LABEL_FUNCTION)
                .and_then(|n| n.parse::<FunctionName>().ok());
            match function {
                Some(function) => {
                    found.insert(
                        function,
                        (id, labels.get(LABEL_SPEC).cloned().unwrap_or_default()),
                    );
                }
                None => {
                    let _ = docker.delete_service(&id).await;
                }
            }
        }
        if !found.is_empty() {
            tracing::info!(services = found.len(), "found services of an earlier run");
        }
        let client = Upstream::new(Duration::from_secs(30), 64);
        Ok(SwarmProvider {
            docker,
            instance,
            network: network.to_owned(),
            credentials_root: data_dir.join("swarm-credentials"),
            nodes: Arc::new(Nodes {
                local: swarm.node_id.unwrap_or_default(),
                addrs: std::sync::Mutex::new(HashMap::new()),
            }),
            logs,
            client,
            functions: RwLock::new(HashMap::new()),
            found: std::sync::Mutex::new(found),
            cpu_readings: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// This Hark's instance id, as in the services' [`LABEL_INSTANCE`].
    pub fn instance(&self) -> &str {
        &self.instance
    }

    async fn get(&self, name: &FunctionName) -> Result<Arc<SwarmFunction>, ProviderError> {
        self.functions
            .read()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(name.clone()))
    }

    /// Removes the services found at start that no deployment took over.
    pub async fn remove_unclaimed(&self) {
        let found: Vec<(FunctionName, (String, String))> = self
            .found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (name, (id, _)) in found {
            tracing::info!(function = %name, service = %id, "removing a service no deployment claims");
            self.remove_service(&name, &id).await;
        }
    }

    /// The function's credential, made at its first deployment and kept until it is
    /// removed.
    fn credential(&self, name: &FunctionName) -> Result<String, ProviderError> {
        let file = self.credentials_root.join(name.as_str());
        let failed = |e: std::io::Error| {
            ProviderError::Internal(format!("credential of {name} in {}: {e}", file.display()))
        };
        match std::fs::read_to_string(&file) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.credentials_root)
            .map_err(failed)?;
        let credential = new_credential();
        write_mode(&file, credential.as_bytes(), 0o600).map_err(failed)?;
        Ok(credential)
    }

    /// Creates the Swarm secrets of a deployment that do not exist yet.
    async fn ensure_secrets(
        &self,
        name: &FunctionName,
        secrets: &[(String, Vec<u8>)],
    ) -> Result<Vec<SecretRef>, ProviderError> {
        let mut refs = Vec::with_capacity(secrets.len());
        for (secret, value) in secrets {
            let swarm_name = secret_name(&self.instance, name.as_str(), secret, value);
            let filters = HashMap::from([("name".to_owned(), vec![swarm_name.clone()])]);
            let options = ListSecretsOptionsBuilder::default()
                .filters(&filters)
                .build();
            let existing = self
                .docker
                .list_secrets(Some(options))
                .await
                .map_err(|e| engine_failure("listing secrets", &e))?
                .into_iter()
                .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(&swarm_name))
                .and_then(|s| s.id);
            let id = match existing {
                Some(id) => id,
                None => {
                    let mut labels = HashMap::from([
                        (LABEL_INSTANCE.to_owned(), self.instance.clone()),
                        (LABEL_FUNCTION.to_owned(), name.to_string()),
                    ]);
                    labels.insert(LABEL_SECRET.to_owned(), secret.clone());
                    let spec = SecretSpec {
                        name: Some(swarm_name.clone()),
                        labels: Some(labels),
                        data: Some(base64::engine::general_purpose::STANDARD.encode(value)),
                        ..Default::default()
                    };
                    self.docker
                        .create_secret(spec)
                        .await
                        .map_err(|e| engine_failure(&format!("creating secret {secret}"), &e))?
                        .id
                }
            };
            refs.push(SecretRef {
                id,
                swarm_name,
                file: secret.clone(),
            });
        }
        Ok(refs)
    }

    /// Removes the function's Swarm secrets except `keep` (those in use stay; a later
    /// removal takes them).
    async fn remove_secrets(&self, name: &FunctionName, keep: &[SecretRef]) {
        let options = ListSecretsOptionsBuilder::default()
            .filters(&label_filters(&self.instance, Some(name.as_str())))
            .build();
        let Ok(secrets) = self.docker.list_secrets(Some(options)).await else {
            return;
        };
        for secret in secrets {
            let Some(id) = secret.id else { continue };
            if !keep.iter().any(|k| k.id == id) {
                let _ = self.docker.delete_secret(&id).await;
            }
        }
    }

    /// Deletes a service and its secrets, and waits (a while) for its containers to stop.
    async fn remove_service(&self, name: &FunctionName, id: &str) {
        if let Err(e) = self.docker.delete_service(id).await {
            if !is_not_found(&e) {
                tracing::warn!(function = %name, error = %describe_engine_error(&e), "cannot remove the service");
            }
        }
        self.remove_secrets(name, &[]).await;
        let filters = label_filters(&self.instance, Some(name.as_str()));
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            let options = ListContainersOptionsBuilder::default()
                .filters(&filters)
                .build();
            match self.docker.list_containers(Some(options)).await {
                Ok(running) if !running.is_empty() => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => break,
            }
        }
    }

    /// Sets the service's replica count (retrying when another update came first).
    async fn set_replicas(
        &self,
        function: &SwarmFunction,
        replicas: u32,
    ) -> Result<(), ProviderError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let service = self
                .docker
                .inspect_service(&function.service, None)
                .await
                .map_err(|e| engine_failure("inspecting the service", &e))?;
            let version = service.version.and_then(|v| v.index).unwrap_or_default();
            let mut spec = service.spec.unwrap_or_default();
            spec::set_replicas(&mut spec, replicas);
            match self.update(&function.service, spec, version).await {
                Ok(()) => {
                    function.desired.store(replicas, Ordering::Relaxed);
                    return Ok(());
                }
                // "update out of sequence": someone updated it between our two calls.
                Err(e) if attempts < 3 && is_out_of_sequence(&e) => continue,
                Err(e) => return Err(engine_failure("scaling the service", &e)),
            }
        }
    }

    async fn update(
        &self,
        service: &str,
        spec: ServiceSpec,
        version: u64,
    ) -> Result<(), bollard::errors::Error> {
        let options = UpdateServiceOptionsBuilder::default()
            .version(i32::try_from(version).unwrap_or(i32::MAX))
            .build();
        self.docker
            .update_service(service, spec, options, None)
            .await
            .map(|_| ())
    }

    fn unavailable(
        &self,
        name: &FunctionName,
        function: &SwarmFunction,
        reason: String,
    ) -> ProviderError {
        let reason = match function.watched.recent_error(Duration::from_secs(30)) {
            Some(error) => format!("{reason}; {error}"),
            None => reason,
        };
        ProviderError::Unavailable {
            name: name.clone(),
            reason,
        }
    }
}

fn engine_failure(what: &str, e: &bollard::errors::Error) -> ProviderError {
    ProviderError::Internal(format!("{what}: {}", describe_engine_error(e)))
}

fn is_out_of_sequence(e: &bollard::errors::Error) -> bool {
    describe_engine_error(e).contains("out of sequence")
}

#[async_trait]
impl Provider for SwarmProvider {
    fn name(&self) -> &'static str {
        "swarm"
    }

    async fn deploy(&self, deployment: Deployment) -> Result<(), ProviderError> {
        let spec = &deployment.spec;
        spec.validate()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?;
        let name = spec.service.clone();
        let image = default_image(spec);
        // Swarm would try a registry first; the image must be on this node.
        let inspected = local_image(&self.docker, &name, &image).await?;
        let image_user = inspected.config.and_then(|c| c.user).unwrap_or_default();
        let timeout = spec
            .timeout()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?;
        let max_response = spec
            .max_response()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?;
        let inflight = spec
            .max_inflight()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?
            .map(|n| Arc::new(Semaphore::new(n)));
        let secrets = self.ensure_secrets(&name, &deployment.secrets).await?;
        let credential = self.credential(&name)?;
        let credential_ref = self
            .ensure_secrets(
                &name,
                &[(
                    CREDENTIAL_SECRET.to_owned(),
                    credential.clone().into_bytes(),
                )],
            )
            .await?
            .remove(0);
        let template = spec::service(
            spec,
            &image,
            &image_user,
            &self.instance,
            &self.network,
            &secrets,
            &credential_ref,
            deployment.replicas,
        )
        .map_err(|e| ProviderError::BadSpec(format!("function {name}: {e}")))?;

        let previous = self.functions.read().await.get(&name).cloned();
        let found = self
            .found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        let existing = match (&previous, found) {
            (Some(old), _) => Some((old.service.clone(), old.hash.clone())),
            (None, found) => found,
        };
        let watched = match &previous {
            Some(old) if old.hash == template.hash => old.watched.clone(),
            _ => Watched::new(),
        };
        let mut desired = deployment.replicas;
        let (service, updated) = match existing {
            Some((id, hash)) if hash == template.hash => {
                // The same service: keep its tasks and replica count; only the gateway's
                // limits may change.
                let current = self
                    .docker
                    .inspect_service(&id, None)
                    .await
                    .map_err(|e| engine_failure("inspecting the service", &e))?;
                desired = current
                    .spec
                    .and_then(|s| s.mode)
                    .and_then(|m| m.replicated)
                    .and_then(|r| r.replicas)
                    .and_then(|r| u32::try_from(r).ok())
                    .unwrap_or(desired);
                (id, false)
            }
            Some((id, _)) => {
                let current = self
                    .docker
                    .inspect_service(&id, None)
                    .await
                    .map_err(|e| engine_failure("inspecting the service", &e))?;
                let version = current.version.and_then(|v| v.index).unwrap_or_default();
                self.update(&id, template.spec.clone(), version)
                    .await
                    .map_err(|e| engine_failure(&format!("updating service of {name}"), &e))?;
                tracing::info!(function = %name, "service updated (rolling, start-first)");
                (id, true)
            }
            None => {
                let created = self
                    .docker
                    .create_service(template.spec.clone(), None)
                    .await
                    .map_err(|e| engine_failure(&format!("creating service of {name}"), &e))?;
                let id = created.id.unwrap_or_default();
                tracing::info!(function = %name, service = %id, "service created");
                (id, false)
            }
        };
        let function = Arc::new(SwarmFunction {
            watcher: tasks::watch(
                self.docker.clone(),
                service.clone(),
                name.clone(),
                self.logs.clone(),
                self.nodes.clone(),
                watched.clone(),
                credential.clone().into(),
            ),
            service,
            hash: template.hash.clone(),
            credential: credential.into(),
            timeout,
            max_response,
            inflight,
            desired: AtomicU32::new(desired),
            watched,
            next: AtomicUsize::new(0),
            scaling: tokio::sync::Mutex::new(()),
        });
        // Rolling update: the old tasks serve until a new one is ready.
        if updated
            && deployment.replicas > 0
            && !function.wait_ready(1, Instant::now() + READY_LIMIT).await
        {
            return Err(self.unavailable(
                &name,
                &function,
                format!("no task of the update became ready within {READY_LIMIT:?}"),
            ));
        }
        self.functions.write().await.insert(name.clone(), function);
        let mut keep = secrets;
        keep.push(credential_ref);
        self.remove_secrets(&name, &keep).await;
        Ok(())
    }

    async fn remove(&self, name: &FunctionName) -> Result<(), ProviderError> {
        let removed = self.functions.write().await.remove(name);
        let Some(function) = removed else {
            return Err(ProviderError::NotFound(name.clone()));
        };
        function.watcher.abort();
        self.remove_service(name, &function.service).await;
        let _ = std::fs::remove_file(self.credentials_root.join(name.as_str()));
        self.logs.forget(name);
        Ok(())
    }

    async fn replicas(&self, name: &FunctionName) -> Result<Replicas, ProviderError> {
        let function = self.get(name).await?;
        let available = function
            .watched
            .ready
            .borrow()
            .iter()
            .filter(|t| t.hash == function.hash)
            .count() as u32;
        Ok(Replicas {
            desired: function.desired.load(Ordering::Relaxed),
            available,
        })
    }

    async fn scale(&self, name: &FunctionName, replicas: u32) -> Result<(), ProviderError> {
        let function = self.get(name).await?;
        let _scaling = function.scaling.lock().await;
        self.set_replicas(&function, replicas).await
    }

    async fn invoke(&self, name: &FunctionName, call: Invocation) -> Result<Output, ProviderError> {
        let function = self.get(name).await?;
        let _permit = super::inflight_permit(function.inflight.as_ref(), name)?;
        if function.desired.load(Ordering::Relaxed) == 0 {
            // Hold on cold start: ask for one task and wait for it.
            let _scaling = function.scaling.lock().await;
            if function.desired.load(Ordering::Relaxed) == 0 {
                self.set_replicas(&function, 1).await?;
            }
        }
        let deadline = Instant::now() + READY_LIMIT;
        // A task that stops between the readiness check and the call refuses the
        // connection; the call then goes to another task.
        for _ in 0..3 {
            let task = function.next_task(deadline).await.ok_or_else(|| {
                self.unavailable(
                    name,
                    &function,
                    format!("no task became ready within {READY_LIMIT:?}"),
                )
            })?;
            match forward(
                &self.client,
                &format!("{}:{}", task.host, task.port),
                name,
                &call,
                function.timeout,
                function.max_response,
                &function.credential,
            )
            .await
            {
                Ok(output) => return Ok(output),
                Err(Forwarded::Provider(e)) => return Err(e),
                Err(Forwarded::Failed {
                    connect: true,
                    reason,
                }) => {
                    tracing::debug!(function = %name, task = %task.id, reason, "task refused the call; trying another");
                    function
                        .watched
                        .ready
                        .send_modify(|r| r.retain(|t| t.id != task.id));
                }
                Err(Forwarded::Failed { reason, .. }) => {
                    return Err(self.unavailable(name, &function, reason))
                }
            }
        }
        Err(self.unavailable(name, &function, "tasks refused the connection".to_owned()))
    }

    async fn usage(&self, name: &FunctionName) -> Option<Usage> {
        let function = self.get(name).await.ok()?;
        let containers: Vec<String> = function
            .watched
            .ready
            .borrow()
            .iter()
            .filter(|t| !t.container.is_empty())
            .map(|t| t.container.clone())
            .collect();
        container_usage(&self.docker, containers, &self.cpu_readings).await
    }

    fn logs(&self) -> &Arc<LogHub> {
        &self.logs
    }

    async fn shutdown(&self) {
        let functions: Vec<_> = self.functions.write().await.drain().collect();
        let removals = functions.iter().map(|(name, function)| {
            function.watcher.abort();
            self.remove_service(name, &function.service)
        });
        futures::future::join_all(removals).await;
        self.remove_unclaimed().await;
    }
}
