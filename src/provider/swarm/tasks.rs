//! Watching one service's tasks: the engine's task list comes in (polled); the tasks
//! that may take calls go out — running, wanted running, with a published port whose
//! watchdog answered `/_/ready`. Also streams each task's container output into the log
//! hub and reports tasks that ended (exit code, the engine's error).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{Task, TaskState};
use bollard::query_parameters::ListTasksOptionsBuilder;
use bollard::Docker;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::function::FunctionName;
use crate::provider::docker::pool::stream_logs;
use crate::provider::docker::spec::LABEL_SPEC;
use crate::provider::LogHub;
use crate::watchdog::DEFAULT_PORT;

/// How often the task list is read.
const POLL: Duration = Duration::from_millis(250);

/// A task that answered its readiness check.
#[derive(Debug, Clone)]
pub(super) struct ReadyTask {
    pub id: String,
    pub container: String,
    pub host: String,
    pub port: u16,
    /// The deployment hash of the task's spec.
    pub hash: String,
    /// Whether Swarm still wants it running (false while it stops).
    pub routable: bool,
}

/// What the watcher shares with the provider.
pub(super) struct Watched {
    pub ready: watch::Sender<Vec<ReadyTask>>,
    /// The last error a task reported, with when.
    pub last_error: Mutex<Option<(Instant, String)>>,
}

impl Watched {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Watched {
            ready: watch::channel(Vec::new()).0,
            last_error: Mutex::new(None),
        })
    }

    /// The last task error, if it came within `within`.
    pub(super) fn recent_error(&self, within: Duration) -> Option<String> {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() <= within)
            .map(|(_, e)| e.clone())
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), error));
    }
}

/// Where a task's published port is reached: this node's tasks on 127.0.0.1, other
/// nodes' at the node's address.
pub(super) struct Nodes {
    pub local: String,
    pub addrs: Mutex<HashMap<String, String>>,
}

/// Follows the tasks of `service` until the returned handle is aborted.
pub(super) fn watch(
    docker: Docker,
    service: String,
    name: FunctionName,
    logs: Arc<LogHub>,
    nodes: Arc<Nodes>,
    watched: Arc<Watched>,
    credential: Arc<str>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut state = State {
            docker,
            service,
            name,
            logs,
            nodes,
            watched,
            credential,
            ready: HashMap::new(),
            running: HashSet::new(),
            reported: HashSet::new(),
            log_tasks: HashMap::new(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap_or_default(),
        };
        loop {
            state.poll().await;
            tokio::time::sleep(POLL).await;
        }
    })
}

struct State {
    docker: Docker,
    service: String,
    name: FunctionName,
    logs: Arc<LogHub>,
    nodes: Arc<Nodes>,
    watched: Arc<Watched>,
    /// The function's credential, which the watchdog asks `/_/ready` for too.
    credential: Arc<str>,
    /// Tasks that answered `/_/ready`, by id.
    ready: HashMap<String, ReadyTask>,
    /// Tasks seen running, to report their end once.
    running: HashSet<String>,
    /// Task errors already reported.
    reported: HashSet<String>,
    log_tasks: HashMap<String, JoinHandle<()>>,
    client: reqwest::Client,
}

impl Drop for State {
    fn drop(&mut self) {
        for (_, task) in self.log_tasks.drain() {
            task.abort();
        }
    }
}

impl State {
    async fn poll(&mut self) {
        let filters = HashMap::from([("service".to_owned(), vec![self.service.clone()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = match self.docker.list_tasks(Some(options)).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!(function = %self.name, error = %crate::provider::docker::describe_engine_error(&e), "cannot list the service's tasks");
                return;
            }
        };
        let mut live = HashSet::new();
        for task in &tasks {
            let Some(id) = task.id.clone() else { continue };
            let status = task.status.clone().unwrap_or_default();
            let state = status.state;
            let container = status
                .container_status
                .as_ref()
                .and_then(|c| c.container_id.clone())
                .filter(|c| !c.is_empty());
            if state == Some(TaskState::RUNNING) {
                live.insert(id.clone());
                self.running.insert(id.clone());
                if let Some(container) = &container {
                    self.follow_logs(&id, container);
                }
                let routable = task.desired_state == Some(TaskState::RUNNING);
                if let Some(ready) = self.ready.get_mut(&id) {
                    ready.routable = routable;
                } else if routable {
                    if let Some(ready) = self.probe(task, &id, container).await {
                        self.ready.insert(id.clone(), ready);
                    }
                }
            } else if is_terminal(state) {
                if let Some(log) = self.log_tasks.remove(&id) {
                    // Let the stream drain what the container wrote last.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        log.abort();
                    });
                }
                let was_running = self.running.remove(&id);
                let failed = matches!(state, Some(TaskState::FAILED | TaskState::REJECTED));
                if failed && self.reported.insert(id.clone()) {
                    self.report(task, &status, was_running);
                }
            }
        }
        self.ready.retain(|id, _| live.contains(id));
        self.running.retain(|id| live.contains(id));
        let tasks_now: HashSet<&str> = tasks.iter().filter_map(|t| t.id.as_deref()).collect();
        self.reported.retain(|id| tasks_now.contains(id.as_str()));
        let ready: Vec<ReadyTask> = self.ready.values().cloned().collect();
        self.watched.ready.send_if_modified(|current| {
            let changed = current.len() != ready.len()
                || current
                    .iter()
                    .zip(&ready)
                    .any(|(a, b)| a.id != b.id || a.routable != b.routable);
            if changed {
                *current = ready;
            }
            changed
        });
    }

    /// Checks a running task's watchdog; the task when it answered ready.
    async fn probe(&self, task: &Task, id: &str, container: Option<String>) -> Option<ReadyTask> {
        let port = published_port(task)?;
        let host = self.host_of(task).await?;
        let url = format!("http://{host}:{port}/_/ready");
        let response = self
            .client
            .get(&url)
            .header(crate::watchdog::HEADER_CREDENTIAL, &*self.credential)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let hash = task
            .spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref())
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_SPEC).cloned())
            .unwrap_or_default();
        tracing::info!(function = %self.name, task = id, port, "task ready");
        Some(ReadyTask {
            id: id.to_owned(),
            container: container.unwrap_or_default(),
            host,
            port,
            hash,
            routable: true,
        })
    }

    /// The address a task's published port is reached at.
    async fn host_of(&self, task: &Task) -> Option<String> {
        let node = task.node_id.clone().unwrap_or_default();
        if node.is_empty() || node == self.nodes.local {
            return Some("127.0.0.1".to_owned());
        }
        if let Some(addr) = self
            .nodes
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
        {
            return Some(addr.clone());
        }
        let inspected = self.docker.inspect_node(&node).await.ok()?;
        let addr = inspected.status?.addr?;
        self.nodes
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, addr.clone());
        Some(addr)
    }

    fn follow_logs(&mut self, id: &str, container: &str) {
        if self.log_tasks.contains_key(id) {
            return;
        }
        let short: String = id.chars().take(12).collect();
        let instance = format!("{}-{short}", self.name);
        self.log_tasks.insert(
            id.to_owned(),
            tokio::spawn(stream_logs(
                self.docker.clone(),
                self.logs.clone(),
                self.name.clone(),
                instance,
                container.to_owned(),
            )),
        );
    }

    /// Reports a task that failed: into the function's log and the last error.
    fn report(&self, task: &Task, status: &bollard::models::TaskStatus, was_running: bool) {
        let code = status.container_status.as_ref().and_then(|c| c.exit_code);
        let err = status.err.clone().unwrap_or_default();
        let short: String = task
            .id
            .as_deref()
            .unwrap_or_default()
            .chars()
            .take(12)
            .collect();
        let instance = format!("{}-{short}", self.name);
        let message = match (was_running, code) {
            (true, Some(code)) => {
                let killed = if code == 137 { " (killed)" } else { "" };
                format!("task exited with code {code}{killed}: {err}; Swarm replaces it")
            }
            _ => format!("task did not start: {err}"),
        };
        tracing::warn!(function = %self.name, task = short, "{message}");
        self.logs.push(&self.name, &instance, message.clone());
        self.watched.set_error(message);
    }
}

fn is_terminal(state: Option<TaskState>) -> bool {
    matches!(
        state,
        Some(
            TaskState::COMPLETE
                | TaskState::SHUTDOWN
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::ORPHANED
                | TaskState::REMOVE
        )
    )
}

/// The host port the engine published the watchdog's port on for this task.
fn published_port(task: &Task) -> Option<u16> {
    task.status
        .as_ref()?
        .port_status
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.target_port == Some(i64::from(DEFAULT_PORT)))
        .and_then(|p| p.published_port)
        .and_then(|p| u16::try_from(p).ok())
}
