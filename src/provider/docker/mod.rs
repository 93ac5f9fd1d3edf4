//! The Docker provider: functions run as containers on the local Docker Engine, reached
//! through bollard over its Unix socket (`DOCKER_HOST` respected). A deployment comes in;
//! containers running the function's image behind the [watchdog](crate::watchdog) go out.
//!
//! - Containers carry the labels [`spec::LABEL_FUNCTION`] and [`spec::LABEL_INSTANCE`]
//!   (an id kept in the data directory), so Hark finds its own containers after a
//!   restart and never touches any other.
//! - **Fences.** Containers join a bridge network Hark creates (`hark-functions`) that is
//!   `internal` (no route out: no Internet, no cloud metadata address) and has
//!   inter-container traffic off (`enable_icc=false`: a function cannot reach another's
//!   container). A function annotated `hark.network: internet` joins a second network,
//!   `NAME-internet`, with a route out but still no neighbours. On both, the host's
//!   address on the bridge answers only the gateway's own connections and the
//!   `/webdriver` listener: Hark adds `INPUT` rules for the bridge with `iptables` (see
//!   [`fence_host`]); without them a container reaches every service of the host that
//!   listens on all addresses. A network of an earlier version with other options is
//!   replaced (see [`ensure_network`]).
//! - The gateway reaches a container at its address on that network, port 8080 (an
//!   internal network publishes no ports), and sends the function's credential, which
//!   the watchdog checks: a local process that reaches the address cannot call the
//!   function (see [`crate::watchdog`]). The credential is made at the first deployment,
//!   kept in the data directory (`docker-credentials/NAME`), mounted read-only into the
//!   containers, and removed with the function.
//! - A container gets calls once its watchdog answers `/_/ready`; one that exits is
//!   replaced; an update starts the new containers and stops the old ones only when the
//!   new ones are ready.

pub mod build;
pub(crate) mod pool;
pub mod runtime;
pub mod spec;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use http::header;
use tokio::sync::{RwLock, Semaphore};

use self::pool::Pool;
use self::spec::{LABEL_FUNCTION, LABEL_INSTANCE, LABEL_SPEC};
use super::upstream::{Upstream, UpstreamError};
use super::{Deployment, Invocation, LogHub, Output, Provider, ProviderError, Replicas};
use crate::function::{FunctionName, Network, Usage};
use crate::watchdog::{DEFAULT_PORT, HEADER_CREDENTIAL, HEADER_ERROR};

/// The network function containers join unless told otherwise.
pub const DEFAULT_NETWORK: &str = "hark-functions";
/// Variable naming another network (tests use one of their own).
pub const ENV_NETWORK: &str = "HARK_DOCKER_NETWORK";
/// The suffix of the network of the functions that ask for the Internet.
pub const INTERNET_SUFFIX: &str = "-internet";
/// Label on the networks Hark creates.
pub const LABEL_NETWORK: &str = "com.hark.network";
/// Bridge option: traffic between containers of the network (Hark sets `false`).
pub const OPTION_ICC: &str = "com.docker.network.bridge.enable_icc";
/// The cloud metadata address, which no function reaches.
pub const METADATA_ADDRESS: &str = "169.254.169.254";
/// File in the data directory holding this Hark's instance id.
pub const INSTANCE_FILE: &str = "docker-instance";
/// The engine's default address when `DOCKER_HOST` is not set.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Longest wait for a container to become ready: on a call to a function at zero
/// (hold-on-cold-start), and for the new containers of an update.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How often a call waiting for a container checks that the engine still answers.
const ENGINE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Time the gateway gives a call beyond the function's limit, which the watchdog
/// enforces; only a lost container runs into it.
const CALL_MARGIN: Duration = Duration::from_secs(2);

/// Why the Docker provider could not start or build.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine did not answer at the address tried.
    #[error("cannot reach the Docker Engine at {endpoint}: {reason} (is dockerd running? DOCKER_HOST selects another engine)")]
    Unreachable { endpoint: String, reason: String },
    /// The engine refused a request.
    #[error("{what}: {reason}")]
    Engine { what: String, reason: String },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A build could not be prepared.
    #[error("{0}")]
    Build(String),
}

/// The engine's address this process uses: `DOCKER_HOST`, else the default socket.
pub fn endpoint() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
}

/// Connects to the engine and agrees on an API version it speaks (this engine may be
/// older than the API bollard targets).
pub async fn connect() -> Result<Docker, DockerError> {
    let unreachable = |reason: String| DockerError::Unreachable {
        endpoint: endpoint(),
        reason,
    };
    let docker = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}

/// An engine error as one line; the engine's own message when it sent one.
pub(crate) fn describe_engine_error(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (engine status {status_code})"),
        bollard::errors::Error::HyperLegacyError { .. }
        | bollard::errors::Error::IOError { .. }
        | bollard::errors::Error::RequestTimeoutError
        | bollard::errors::Error::SocketNotFoundError(_) => {
            format!("cannot reach the Docker Engine at {}: {e}", endpoint())
        }
        other => other.to_string(),
    }
}

/// The local image a function runs, or a clear error naming `hark build` when the engine
/// does not have it (no registry is used).
pub(crate) async fn local_image(
    docker: &Docker,
    name: &FunctionName,
    image: &str,
) -> Result<bollard::models::ImageInspect, ProviderError> {
    match docker.inspect_image(image).await {
        Ok(inspected) => Ok(inspected),
        Err(e) if is_not_found(&e) => Err(ProviderError::BadSpec(format!(
            "function {name}: image {image} is not in the local Docker Engine (no registry is used); build it with `hark build {name}`"
        ))),
        Err(e) => Err(ProviderError::Internal(format!(
            "inspecting image {image}: {}",
            describe_engine_error(&e)
        ))),
    }
}

pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Runs functions as containers on the local engine.
pub struct DockerProvider {
    docker: Docker,
    instance: String,
    /// Id of the functions' network.
    network: String,
    /// Its name, which the Internet network's name extends.
    network_name: String,
    /// Id of the network of functions asking for the Internet, made at first use.
    internet: tokio::sync::OnceCell<String>,
    secrets_root: PathBuf,
    credentials_root: PathBuf,
    logs: Arc<LogHub>,
    client: Upstream,
    functions: RwLock<HashMap<FunctionName, Arc<DockerFunction>>>,
    /// Running containers of this instance found at start, by function: `(id, spec hash)`.
    found: std::sync::Mutex<HashMap<FunctionName, Vec<(String, String)>>>,
    /// The last CPU reading of each container, for a usage rate: `(container cpu ns, system ns)`.
    cpu_readings: std::sync::Mutex<HashMap<String, (u64, u64)>>,
    /// The gateway's address on the functions' network and the capabilities, for
    /// `HARK_WEBDRIVER_URL`.
    webdriver: std::sync::RwLock<Option<(String, crate::browser::capability::Capabilities)>>,
}

struct DockerFunction {
    pool: Pool,
    timeout: Duration,
    /// `hark.max_response`, in bytes.
    max_response: u64,
    inflight: Option<Arc<Semaphore>>,
}

impl DockerProvider {
    /// Connects to the engine, creates the network if needed, and takes stock of the
    /// containers an earlier run of this Hark (same data directory) left running.
    pub async fn start(
        data_dir: &Path,
        network: &str,
        logs: Arc<LogHub>,
    ) -> Result<Self, DockerError> {
        let docker = connect().await?;
        let instance = instance_id(data_dir, INSTANCE_FILE)?;
        let network_name = network.to_owned();
        let network = ensure_network(&docker, network, false, &instance).await?;
        fence_host(&docker, &network).await;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_INSTANCE}={instance}")],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers =
            docker
                .list_containers(Some(options))
                .await
                .map_err(|e| DockerError::Engine {
                    what: "listing containers".into(),
                    reason: describe_engine_error(&e),
                })?;
        let mut found: HashMap<FunctionName, Vec<(String, String)>> = HashMap::new();
        for container in containers {
            let Some(id) = container.id else { continue };
            let labels = container.labels.unwrap_or_default();
            let running = container.state.map(|s| s.to_string()) == Some("running".into());
            let function = labels
                .get(LABEL_FUNCTION)
                .and_then(|n| n.parse::<FunctionName>().ok());
            match (function, running) {
                (Some(function), true) => found
                    .entry(function)
                    .or_default()
                    .push((id, labels.get(LABEL_SPEC).cloned().unwrap_or_default())),
                _ => remove_container(&docker, &id).await,
            }
        }
        if !found.is_empty() {
            let count: usize = found.values().map(Vec::len).sum();
            tracing::info!(
                containers = count,
                "found running containers of an earlier run"
            );
        }
        let client = Upstream::new(Duration::from_secs(30), 64);
        Ok(DockerProvider {
            docker,
            instance,
            network,
            network_name,
            internet: tokio::sync::OnceCell::new(),
            secrets_root: data_dir.join("docker-secrets"),
            credentials_root: data_dir.join("docker-credentials"),
            logs,
            client,
            functions: RwLock::new(HashMap::new()),
            found: std::sync::Mutex::new(found),
            cpu_readings: std::sync::Mutex::new(HashMap::new()),
            webdriver: std::sync::RwLock::new(None),
        })
    }

    /// The functions' network's gateway address (the host, seen from the containers)
    /// and its subnet.
    pub async fn network_gateway(&self) -> Option<(std::net::IpAddr, ipnet::IpNet)> {
        let network = self
            .docker
            .inspect_network(
                &self.network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .ok()?;
        network.ipam?.config?.into_iter().find_map(|c| {
            let gateway = c.gateway?.parse().ok()?;
            let subnet = c.subnet?.parse().ok()?;
            Some((gateway, subnet))
        })
    }

    /// Gives functions deployed from now on `HARK_WEBDRIVER_URL` under the gateway at
    /// `base`, an address reachable from the functions' network, with each function's
    /// capability.
    pub fn set_webdriver(
        &self,
        base: &str,
        capabilities: crate::browser::capability::Capabilities,
    ) {
        if let Some(port) = port_of(base) {
            let docker = self.docker.clone();
            let network = self.network.clone();
            tokio::spawn(async move { allow_webdriver(&docker, &network, port).await });
        }
        if let Ok(mut webdriver) = self.webdriver.write() {
            *webdriver = Some((base.to_owned(), capabilities));
        }
    }

    /// The engine connection.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// This Hark's instance id, as in the containers' [`LABEL_INSTANCE`].
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The id of the network a function asking for `network` joins (the Internet one is
    /// made at first use).
    async fn network_for(&self, network: Network) -> Result<String, ProviderError> {
        match network {
            Network::Internal => Ok(self.network.clone()),
            Network::Internet => {
                let name = format!("{}{INTERNET_SUFFIX}", self.network_name);
                self.internet
                    .get_or_try_init(|| async {
                        let id = ensure_network(&self.docker, &name, true, &self.instance).await?;
                        fence_host(&self.docker, &id).await;
                        let base = self.webdriver.read().ok().and_then(|w| w.clone());
                        if let Some(port) = base.and_then(|(base, _)| port_of(&base)) {
                            allow_webdriver(&self.docker, &id, port).await;
                        }
                        Ok::<_, DockerError>(id)
                    })
                    .await
                    .cloned()
                    .map_err(|e| ProviderError::Internal(e.to_string()))
            }
        }
    }

    /// The function's credential, made at its first deployment and kept (in a file the
    /// containers mount) until it is removed; returns it and the file.
    fn credential(&self, name: &FunctionName) -> Result<(String, PathBuf), ProviderError> {
        let dir = self.credentials_root.join(name.as_str());
        let file = dir.join("credential");
        let failed = |e: std::io::Error| {
            ProviderError::Internal(format!("credential of {name} in {}: {e}", dir.display()))
        };
        match std::fs::read_to_string(&file) {
            Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), file)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
        let credential = new_credential();
        // Only root (the gateway) opens the outer directory; the file is readable by
        // whatever user the container runs as.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.credentials_root)
            .map_err(failed)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(failed)?;
        write_mode(&file, credential.as_bytes(), 0o444).map_err(failed)?;
        Ok((credential, file))
    }

    async fn get(&self, name: &FunctionName) -> Result<Arc<DockerFunction>, ProviderError> {
        self.functions
            .read()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(name.clone()))
    }

    /// Removes the containers found at start that no deployment took over.
    pub async fn remove_unclaimed(&self) {
        let found: Vec<(FunctionName, Vec<(String, String)>)> = self
            .found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (name, containers) in found {
            for (id, _) in containers {
                tracing::info!(function = %name, container = %id, "removing a container no deployment claims");
                remove_container(&self.docker, &id).await;
            }
        }
    }

    /// Waits for a ready container, checking every [`ENGINE_CHECK_EVERY`] that the engine
    /// answers: while it is down a call fails at once with a clear error instead of
    /// waiting out [`READY_LIMIT`].
    async fn wait_for_container(
        &self,
        name: &FunctionName,
        pool: &Pool,
    ) -> Result<String, ProviderError> {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            let ping = tokio::time::timeout(ENGINE_CHECK_EVERY, self.docker.ping()).await;
            let down = match ping {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(describe_engine_error(&e)),
                Err(_) => Some(format!(
                    "the Docker Engine at {} did not answer within {ENGINE_CHECK_EVERY:?}",
                    endpoint()
                )),
            };
            if let Some(reason) = down {
                return Err(ProviderError::Unavailable {
                    name: name.clone(),
                    reason,
                });
            }
            let next = (Instant::now() + ENGINE_CHECK_EVERY).min(deadline);
            if let Some(ip) = pool.ready_ip(next).await {
                return Ok(ip);
            }
            if Instant::now() >= deadline {
                return Err(self.unavailable(
                    name,
                    pool,
                    format!("no container became ready within {READY_LIMIT:?}"),
                ));
            }
        }
    }

    fn unavailable(&self, name: &FunctionName, pool: &Pool, reason: String) -> ProviderError {
        let reason = match pool.recent_exit(Duration::from_secs(10)) {
            Some(exit) => format!("{reason}; {exit}"),
            None => reason,
        };
        ProviderError::Unavailable {
            name: name.clone(),
            reason,
        }
    }
}

/// Reads this Hark's instance id from `file` in the data directory, creating it the
/// first time.
pub(crate) fn instance_id(data_dir: &Path, file: &str) -> Result<String, DockerError> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(DockerError::Io { path, source }),
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&path, format!("{id}\n")).map_err(|source| DockerError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(id)
}

/// A new random credential (256 bits, hex).
pub(crate) fn new_credential() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Writes `data` to `path` (replacing it) with `mode`.
pub(crate) fn write_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(data)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// Creates the functions' bridge network unless one with the fences exists: `internal`
/// unless `internet`, inter-container traffic off either way. Returns its id.
///
/// A network of the name that Hark made (label [`LABEL_NETWORK`]) without those
/// options — made by an earlier version — is replaced: this instance's containers on it
/// are removed (the deployments start new ones) and so is the network. When other
/// containers still use it, Hark logs why and uses `NAME-fenced` instead. A network the
/// operator made is used as it is, with a warning naming what it lacks.
pub async fn ensure_network(
    docker: &Docker,
    name: &str,
    internet: bool,
    instance: &str,
) -> Result<String, DockerError> {
    let engine = |what: &str, e: bollard::errors::Error| DockerError::Engine {
        what: format!("{what} {name}"),
        reason: describe_engine_error(&e),
    };
    let existing = networks_named(docker, name)
        .await
        .map_err(|e| engine("listing network", e))?;
    let Some((id, _)) = existing.first() else {
        return create_network(docker, name, "bridge", internet).await;
    };
    let inspected = docker
        .inspect_network(id, None::<bollard::query_parameters::InspectNetworkOptions>)
        .await
        .map_err(|e| engine("inspecting network", e))?;
    let options = inspected.options.clone().unwrap_or_default();
    let icc_off = options.get(OPTION_ICC).map(String::as_str) == Some("false");
    let internal_ok = inspected.internal.unwrap_or(false) != internet;
    if icc_off && internal_ok {
        return Ok(id.clone());
    }
    let lacks = format!(
        "{}{}",
        if internal_ok {
            ""
        } else if internet {
            "it is internal (no route out) "
        } else {
            "it is not internal (it routes out) "
        },
        if icc_off {
            ""
        } else {
            "its containers reach each other"
        }
    );
    let ours = inspected
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_NETWORK));
    if !ours {
        tracing::warn!(
            network = name,
            lacks = lacks.trim(),
            "the functions' network was made outside Hark without its fences; using it as it is"
        );
        return Ok(id.clone());
    }
    tracing::info!(
        network = name,
        lacks = lacks.trim(),
        "replacing a functions' network of an earlier version"
    );
    for (container, endpoint) in inspected.containers.unwrap_or_default() {
        let Ok(c) = docker.inspect_container(&container, None).await else {
            continue;
        };
        let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
        if labels.get(LABEL_INSTANCE).map(String::as_str) == Some(instance) {
            tracing::info!(
                container = endpoint.name.as_deref().unwrap_or(&container),
                "removing a container of an earlier version"
            );
            remove_container(docker, &container).await;
        }
    }
    match docker.remove_network(id).await {
        Ok(()) => create_network(docker, name, "bridge", internet).await,
        Err(e) => {
            let fenced = format!("{name}-fenced");
            tracing::warn!(network = name, instead = %fenced, reason = %describe_engine_error(&e), "cannot remove the functions' network of an earlier version (other containers use it); using another");
            Box::pin(ensure_network(docker, &fenced, internet, instance)).await
        }
    }
}

/// Creates a network with `driver` unless one of the name exists, whatever its
/// options; returns its id. The swarm provider's overlay network (attachable); the
/// functions' bridge networks go through [`ensure_network`], which checks the fences.
pub(crate) async fn ensure_network_of(
    docker: &Docker,
    name: &str,
    driver: &str,
) -> Result<String, DockerError> {
    let engine = |what: &str, e: bollard::errors::Error| DockerError::Engine {
        what: format!("{what} {name}"),
        reason: describe_engine_error(&e),
    };
    let existing = networks_named(docker, name)
        .await
        .map_err(|e| engine("listing network", e))?;
    if let Some((id, _)) = existing.first() {
        return Ok(id.clone());
    }
    create_network(docker, name, driver, true).await
}

/// Creates a network: a bridge with inter-container traffic off, `internal` unless
/// `internet`; an overlay attachable.
///
/// The engine allows two networks of one name, so two Harks starting at once could
/// each create one: after creating, the oldest network of the name wins and a younger
/// one this call created is removed again.
async fn create_network(
    docker: &Docker,
    name: &str,
    driver: &str,
    internet: bool,
) -> Result<String, DockerError> {
    let engine = |what: &str, e: bollard::errors::Error| DockerError::Engine {
        what: format!("{what} {name}"),
        reason: describe_engine_error(&e),
    };
    let bridge = driver == "bridge";
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some(driver.into()),
        attachable: (driver == "overlay").then_some(true),
        internal: (bridge && !internet).then_some(true),
        options: bridge.then(|| HashMap::from([(OPTION_ICC.to_owned(), "false".to_owned())])),
        labels: Some(HashMap::from([(LABEL_NETWORK.into(), "true".into())])),
        ..Default::default()
    };
    let created = docker
        .create_network(request)
        .await
        .map_err(|e| engine("creating network", e))?
        .id;
    let all = networks_named(docker, name)
        .await
        .map_err(|e| engine("listing network", e))?;
    match all.first() {
        Some((oldest, _)) if *oldest != created => {
            let _ = docker.remove_network(&created).await;
            Ok(oldest.clone())
        }
        _ => {
            tracing::info!(network = name, "created the functions' network");
            Ok(created)
        }
    }
}

/// Ids of the networks named exactly `name`, oldest first.
async fn networks_named(
    docker: &Docker,
    name: &str,
) -> Result<Vec<(String, String)>, bollard::errors::Error> {
    let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
    let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut found: Vec<(String, String)> = docker
        .list_networks(Some(options))
        .await?
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| Some((n.id?, n.created.map(|c| c.to_string()).unwrap_or_default())))
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    Ok(found)
}

/// The name of the host's interface of the bridge network `network`, when it is in
/// this network namespace.
async fn bridge_of(docker: &Docker, network: &str) -> Option<String> {
    let inspected = docker
        .inspect_network(
            network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .ok()?;
    let name = inspected
        .options
        .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
        .or_else(|| Some(format!("br-{}", inspected.id?.get(..12)?)))?;
    Path::new("/sys/class/net")
        .join(&name)
        .exists()
        .then_some(name)
}

/// Runs `iptables -w ARGS`; whether it succeeded, and its error output.
fn iptables(args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// Inserts `rule` in `chain` (at the top) unless it is there.
fn ensure_rule(chain: &str, rule: &[&str]) -> Result<(), String> {
    let check: Vec<&str> = ["-C", chain].iter().chain(rule).copied().collect();
    if iptables(&check).is_ok() {
        return Ok(());
    }
    let insert: Vec<&str> = ["-I", chain, "1"].iter().chain(rule).copied().collect();
    iptables(&insert)
}

/// Keeps the containers of `network` off the host: packets from its bridge to the host
/// are dropped unless they answer a connection the host opened (the gateway's calls);
/// on a network with a route out, the metadata address is dropped too. Best effort: it
/// needs `iptables` and the right to use it (root); without them a warning says what
/// containers can reach.
pub async fn fence_host(docker: &Docker, network: &str) {
    let Some(bridge) = bridge_of(docker, network).await else {
        tracing::warn!(
            network,
            "the functions' bridge is not in this network namespace; the host is not fenced off"
        );
        return;
    };
    let br = bridge.as_str();
    let fenced = ensure_rule("INPUT", &["-i", br, "-j", "DROP"]).and_then(|()| {
        ensure_rule(
            "INPUT",
            &[
                "-i",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        )
    });
    match fenced {
        Ok(()) => tracing::info!(bridge = br, "containers are fenced off the host"),
        Err(reason) => {
            tracing::warn!(bridge = br, %reason, "cannot fence containers off the host: they reach every service of the host that listens on all addresses (run the gateway as root with iptables, or add: iptables -I INPUT -i BRIDGE -j DROP)")
        }
    }
    // On a network with a route out, forwarded packets pass DOCKER-USER first.
    if ensure_rule(
        "DOCKER-USER",
        &["-i", br, "-d", METADATA_ADDRESS, "-j", "DROP"],
    )
    .is_err()
    {
        tracing::warn!(
            bridge = br,
            "cannot fence off the metadata address {METADATA_ADDRESS} (no DOCKER-USER chain, or no iptables): functions with hark.network: internet can reach it"
        );
    }
}

/// The port of a URL such as `http://172.18.0.1:8081`.
fn port_of(base: &str) -> Option<u16> {
    base.trim_end_matches('/').rsplit(':').next()?.parse().ok()
}

/// Lets the containers of `network` reach the host's TCP `port` (the `/webdriver`
/// listener) through the host fence.
async fn allow_webdriver(docker: &Docker, network: &str, port: u16) {
    if let Some(bridge) = bridge_of(docker, network).await {
        allow_host_port(&bridge, port);
    }
}

fn allow_host_port(bridge: &str, port: u16) {
    let port = port.to_string();
    let rule = [
        "-i",
        bridge,
        "-p",
        "tcp",
        "--dport",
        port.as_str(),
        "-j",
        "ACCEPT",
    ];
    if let Err(reason) = ensure_rule("INPUT", &rule) {
        tracing::warn!(bridge, port, %reason, "cannot open the /webdriver port to the containers");
    }
}

async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let _ = docker.remove_container(id, Some(options)).await;
}

/// Why a call could not be forwarded to a replica.
pub(crate) enum Forwarded {
    /// The call ended in a provider error (time limit, overload).
    Provider(ProviderError),
    /// The replica could not be reached or answered badly; `connect` when the request
    /// never reached it (so it is safe to send elsewhere).
    Failed { reason: String, connect: bool },
}

/// Sends one call to the watchdog at `authority` (`host:port`) with the function's
/// `credential`, and returns the function's answer, mapping the watchdog's timeout and
/// overload answers to provider errors.
pub(crate) async fn forward(
    client: &Upstream,
    authority: &str,
    name: &FunctionName,
    call: &Invocation,
    limit: Duration,
    max_response: u64,
    credential: &str,
) -> Result<Output, Forwarded> {
    let extra = [
        (
            header::HeaderName::from_static("x-call-id"),
            call.call_id.as_str(),
        ),
        (
            header::HeaderName::from_static(HEADER_CREDENTIAL),
            credential,
        ),
    ];
    let answer = client
        .send(
            authority,
            call.clone(),
            &extra,
            limit + CALL_MARGIN,
            max_response,
        )
        .await
        .map_err(|e| match e {
            UpstreamError::TooLarge(max) => {
                tracing::warn!(function = %name, max_response = max, "answer larger than hark.max_response; refused with 502");
                Forwarded::Provider(ProviderError::Unavailable {
                    name: name.clone(),
                    reason: format!("its answer is larger than hark.max_response ({max} bytes)"),
                })
            }
            UpstreamError::Timeout => Forwarded::Provider(ProviderError::Timeout {
                name: name.clone(),
                limit,
            }),
            UpstreamError::Connect(reason) => Forwarded::Failed {
                reason: format!("request to the container failed: {reason}"),
                connect: true,
            },
            UpstreamError::Failed(reason) => Forwarded::Failed {
                reason: format!("request to the container failed: {reason}"),
                connect: false,
            },
        })?;
    let status = answer.status;
    let mut headers = answer.headers;
    let error = headers
        .remove(HEADER_ERROR)
        .and_then(|v| v.to_str().ok().map(str::to_owned));
    match (status.as_u16(), &error) {
        (504, Some(_)) => {
            return Err(Forwarded::Provider(ProviderError::Timeout {
                name: name.clone(),
                limit,
            }))
        }
        (429, Some(_)) => return Err(Forwarded::Provider(ProviderError::Overloaded(name.clone()))),
        _ => {}
    }
    let body = answer.body;
    let error = error.or_else(|| {
        status
            .is_server_error()
            .then(|| format!("function {name} answered {status}"))
    });
    Ok(Output {
        status,
        headers,
        body,
        error,
        instance: None,
    })
}

/// CPU and memory of the containers `ids`, summed; `None` when there are none.
/// `readings` keeps each container's last CPU reading, for a rate since then.
pub(crate) async fn container_usage(
    docker: &Docker,
    ids: Vec<String>,
    readings: &std::sync::Mutex<HashMap<String, (u64, u64)>>,
) -> Option<Usage> {
    if ids.is_empty() {
        return None;
    }
    let mut usage = Usage::default();
    for id in ids {
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let Some(Ok(stats)) = docker.stats(&id, Some(options)).next().await else {
            continue;
        };
        if let Some(memory) = stats.memory_stats {
            let cache = memory
                .stats
                .as_ref()
                .and_then(|s| s.get("cache").or_else(|| s.get("inactive_file")))
                .copied()
                .unwrap_or(0);
            usage.total_memory_bytes += memory.usage.unwrap_or(0).saturating_sub(cache) as f64;
        }
        let cpu = stats.cpu_stats.and_then(|c| {
            Some((
                c.cpu_usage?.total_usage?,
                c.system_cpu_usage?,
                c.online_cpus.unwrap_or(1),
            ))
        });
        if let Some((total, system, cpus)) = cpu {
            let mut readings = readings.lock().unwrap_or_else(|e| e.into_inner());
            // CPU use since the previous reading, in percent of one CPU.
            if let Some((last_total, last_system)) = readings.insert(id.clone(), (total, system)) {
                let used = total.saturating_sub(last_total) as f64;
                let elapsed = system.saturating_sub(last_system) as f64;
                if elapsed > 0.0 {
                    usage.cpu += used / elapsed * f64::from(cpus) * 100.0;
                }
            }
        }
    }
    Some(usage)
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn deploy(&self, deployment: Deployment) -> Result<(), ProviderError> {
        let mut with_webdriver = deployment.spec.clone();
        if let Some((base, capabilities)) = self.webdriver.read().ok().and_then(|w| w.clone()) {
            let url = capabilities.function_url(&base, with_webdriver.service.as_str());
            // The function's own setting wins.
            with_webdriver
                .env_vars
                .entry(crate::browser::ENV_WEBDRIVER_URL.to_owned())
                .or_insert(url);
        }
        let spec = &with_webdriver;
        spec.validate()
            .map_err(|e| ProviderError::BadSpec(e.to_string()))?;
        let name = spec.service.clone();
        let image = spec::default_image(spec);
        let inspected = local_image(&self.docker, &name, &image).await?;
        let image_user = inspected.config.and_then(|c| c.user).unwrap_or_default();
        let secrets_dir = self.secrets_root.join(name.as_str());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.secrets_root)
            .map_err(|e| ProviderError::Internal(format!("secrets directory: {e}")))?;
        // Readable inside the container whatever user it runs as; the 0700 directory
        // above keeps other users of the host out.
        crate::provider::process::write_secret_files(
            &secrets_dir,
            &deployment.secrets,
            0o755,
            0o444,
        )
        .map_err(|e| ProviderError::Internal(format!("secret files of {name}: {e}")))?;
        let network = spec
            .network()
            .map_err(|e| ProviderError::BadSpec(format!("function {name}: {e}")))?;
        let network = self.network_for(network).await?;
        let (credential, credential_file) = self.credential(&name)?;
        let template = spec::template(
            spec,
            &image,
            &image_user,
            &self.instance,
            &network,
            &secrets_dir,
            &credential_file,
        )
        .map_err(|e| ProviderError::BadSpec(format!("function {name}: {e}")))?;
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

        let previous = self.functions.read().await.get(&name).cloned();
        if let Some(old) = &previous {
            if old.pool.template().hash == template.hash {
                // Same containers: keep them; only secrets (rewritten above) and the
                // gateway's limits may have changed.
                let function = Arc::new(DockerFunction {
                    pool: old.pool.clone(),
                    timeout,
                    max_response,
                    inflight,
                });
                self.functions.write().await.insert(name, function);
                return Ok(());
            }
        }
        // Containers of an earlier run that match this deployment are taken over; the
        // others of this function are removed.
        let found = self
            .found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name)
            .unwrap_or_default();
        let mut adoptable = Vec::new();
        for (id, hash) in found {
            if hash == template.hash && adoptable.len() < deployment.replicas as usize {
                adoptable.push(id);
            } else {
                remove_container(&self.docker, &id).await;
            }
        }
        let pool = Pool::new(
            self.docker.clone(),
            name.clone(),
            template,
            credential,
            self.logs.clone(),
            adoptable,
        );
        pool.scale(deployment.replicas).await;
        // Rolling update: the old containers serve until the new ones are ready. A new
        // function answers at once; its first calls wait for a ready container.
        if previous.is_some()
            && deployment.replicas > 0
            && !pool
                .wait_ready(deployment.replicas as usize, Instant::now() + READY_LIMIT)
                .await
        {
            let reason = pool
                .recent_exit(READY_LIMIT)
                .unwrap_or_else(|| format!("not ready within {READY_LIMIT:?}"));
            pool.stop().await;
            return Err(ProviderError::Unavailable { name, reason });
        }
        let function = Arc::new(DockerFunction {
            pool,
            timeout,
            max_response,
            inflight,
        });
        self.functions.write().await.insert(name, function);
        if let Some(old) = previous {
            old.pool.stop().await;
        }
        Ok(())
    }

    async fn remove(&self, name: &FunctionName) -> Result<(), ProviderError> {
        let removed = self.functions.write().await.remove(name);
        let Some(function) = removed else {
            return Err(ProviderError::NotFound(name.clone()));
        };
        function.pool.stop().await;
        let _ = std::fs::remove_dir_all(self.secrets_root.join(name.as_str()));
        let _ = std::fs::remove_dir_all(self.credentials_root.join(name.as_str()));
        self.logs.forget(name);
        Ok(())
    }

    async fn replicas(&self, name: &FunctionName) -> Result<Replicas, ProviderError> {
        Ok(self.get(name).await?.pool.replicas())
    }

    async fn scale(&self, name: &FunctionName, replicas: u32) -> Result<(), ProviderError> {
        self.get(name).await?.pool.scale(replicas).await;
        Ok(())
    }

    async fn invoke(&self, name: &FunctionName, call: Invocation) -> Result<Output, ProviderError> {
        let function = self.get(name).await?;
        let _permit = super::inflight_permit(function.inflight.as_ref(), name)?;
        let pool = &function.pool;
        if pool.replicas().desired == 0 && pool.is_idle().await {
            // Hold on cold start: start a container and wait for it.
            pool.scale(1).await;
        }
        let ip = match pool.ready_ip(Instant::now()).await {
            Some(ip) => ip,
            None => self.wait_for_container(name, pool).await?,
        };
        forward(
            &self.client,
            &format!("{ip}:{DEFAULT_PORT}"),
            name,
            &call,
            function.timeout,
            function.max_response,
            pool.credential(),
        )
        .await
        .map_err(|e| match e {
            Forwarded::Failed { reason, .. } => self.unavailable(name, pool, reason),
            Forwarded::Provider(e) => e,
        })
    }

    async fn usage(&self, name: &FunctionName) -> Option<Usage> {
        let function = self.get(name).await.ok()?;
        container_usage(
            &self.docker,
            function.pool.ready_containers(),
            &self.cpu_readings,
        )
        .await
    }

    fn logs(&self) -> &Arc<LogHub> {
        &self.logs
    }

    async fn shutdown(&self) {
        let functions: Vec<_> = self.functions.write().await.drain().collect();
        let stops = functions.iter().map(|(_, function)| function.pool.stop());
        futures::future::join_all(stops).await;
        self.remove_unclaimed().await;
    }
}
