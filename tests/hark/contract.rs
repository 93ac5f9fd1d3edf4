//! The provider contract: one set of cases, run through a real gateway against every
//! provider. `process` always runs; `docker` and `swarm` need the real engine (in CI,
//! with `CI` set, a missing engine or a refused swarm fails the tests; elsewhere they are
//! skipped with a message).
//!
//! The swarm runs share the docker runs' image, a single-node swarm (made through the
//! engine's API when the engine is in none, and left again at exit — see
//! [`swarm_fixture`]) and an overlay network of their own.
//!
//! The docker runs share one image built once per test run with `hark build` (busybox
//! for the shell cases, the `hello` binary for the http cases), a network of their own,
//! and clean up every container, the network and the images they made, even when a test
//! fails: containers through a guard dropped after each gateway, the rest at exit.

use std::collections::HashSet;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{children_named, hark_bin, hello_bin, Gateway};

/// The providers the contract runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Process,
    Docker,
    Swarm,
}

/// Runs each case once per provider: `contract::process::CASE`, `contract::docker::CASE`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod process {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Kind::Process).await
                }
            )*
        }
        mod docker {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Kind::Docker).await
                }
            )*
        }
        mod swarm {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Kind::Swarm).await
                }
            )*
        }
    };
}

contract!(
    fork_mode_passes_the_request_through_stdin_and_http_variables,
    a_failing_function_answers_500_with_its_exit_status_and_stderr,
    http_mode_serves_through_a_ready_replica,
    scale_up_down_to_zero_and_back,
    a_crashed_replica_is_replaced,
    a_call_past_its_time_limit_answers_504,
    logs_are_served_as_ndjson_and_followed_live,
    secrets_are_files_the_function_reads,
    a_removed_function_is_gone,
);

/// What the docker runs share: one image and one network per test run.
pub struct DockerFixture {
    pub image: String,
    pub network: String,
}

/// Whether the docker tests can run: the engine answers and a static busybox is at hand
/// for their images. In CI a missing one is a failure.
pub fn engine_available() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("CI is set but the Docker Engine is not reachable (docker version failed)");
    }
    if ok && !static_busybox() {
        // The images the tests build run shell scripts: without `/bin/sh` in them every
        // container exits at once, which reads as a provider fault.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but there is no static busybox for the test images (apt-get install busybox-static)"
        );
        eprintln!("SKIPPED: no static busybox on $PATH: the docker tests' images would have no /bin/sh (apt-get install busybox-static)");
        return false;
    }
    ok
}

/// Whether `busybox` on `$PATH` is statically linked, as `hark build` needs it to be to
/// give an image `/bin/sh`.
fn static_busybox() -> bool {
    let Ok(busybox) = which::which("busybox") else {
        return false;
    };
    // ldd fails on a static executable ("not a dynamic executable").
    Command::new("ldd")
        .arg(&busybox)
        .output()
        .is_ok_and(|o| !o.status.success())
}

/// Runs the docker CLI and returns its output.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

static FIXTURE: OnceLock<Option<DockerFixture>> = OnceLock::new();
static CLEANUP: OnceLock<(String, String, Vec<String>)> = OnceLock::new();

/// Removes what the docker runs made: containers on the run's network, the network, and
/// the images built (run at process exit, whether the tests passed or not).
extern "C" fn cleanup_at_exit() {
    let Some((network, image, bases)) = CLEANUP.get() else {
        return;
    };
    // The gateways make `NETWORK-internet` for functions asking for the Internet.
    let networks = [network.clone(), format!("{network}-internet")];
    for network in &networks {
        let containers = docker(&["ps", "-aq", "--filter", &format!("network={network}")]);
        for id in containers.lines().filter(|l| !l.is_empty()) {
            docker(&["rm", "-f", id]);
        }
    }
    for line in docker(&[
        "network",
        "ls",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Name}}",
    ])
    .lines()
    {
        if let Some((id, name)) = line.split_once(' ') {
            if networks.iter().any(|n| n == name) {
                remove_fence_rules(&format!("br-{}", &id[..12.min(id.len())]));
                docker(&["network", "rm", id]);
            }
        }
    }
    docker(&["rmi", "-f", image]);
    for base in bases {
        docker(&["rmi", "-f", base]);
    }
}

/// Deletes the `iptables` rules the gateways added for the bridge `bridge` (the docker
/// provider fences containers off the host), so test runs leave none behind.
pub fn remove_fence_rules(bridge: &str) {
    for chain in ["INPUT", "DOCKER-USER"] {
        let Ok(listed) = Command::new("iptables").args(["-w", "-S", chain]).output() else {
            return;
        };
        let needle = format!(" -i {bridge} ");
        for rule in String::from_utf8_lossy(&listed.stdout).lines() {
            let Some(rule) = rule.strip_prefix("-A ") else {
                continue;
            };
            if format!("{rule} ").contains(&needle) {
                let _ = Command::new("iptables")
                    .args(["-w", "-D"])
                    .args(rule.split_whitespace())
                    .output();
            }
        }
    }
}

/// Builds the shared image once; `None` when the engine is missing (outside CI).
pub fn docker_fixture() -> Option<&'static DockerFixture> {
    FIXTURE
        .get_or_init(|| {
            if !engine_available() {
                eprintln!("SKIPPED: docker contract tests: no Docker Engine, or no static busybox for their image (set CI to make this a failure)");
                return None;
            }
            let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
            let image = format!("hark/contract:{run}");
            let network = format!("hark-test-{run}");
            let bases_before: HashSet<String> = docker(&[
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "hark/watchdog",
            ])
            .lines()
            .map(str::to_owned)
            .collect();
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("fn")).unwrap();
            std::fs::write(dir.path().join("fn/README"), "contract test function\n").unwrap();
            std::fs::write(
                dir.path().join("hark.yml"),
                format!(
                    "functions:\n  contract:\n    handler: ./fn\n    fprocess: {}\n",
                    hello_bin().display()
                ),
            )
            .unwrap();
            // Made once here, so the gateways of parallel tests find it.
            // With the fences the gateway asks for (else it would replace it).
            docker(&[
                "network",
                "create",
                "--internal",
                "--opt",
                "com.docker.network.bridge.enable_icc=false",
                "--label",
                "com.hark.network=true",
                &network,
            ]);
            let built = Command::new(hark_bin())
                .args(["build", "contract", "--tag", &run, "-f"])
                .arg(dir.path().join("hark.yml"))
                .current_dir(dir.path())
                .output()
                .expect("run hark build");
            let bases_after: Vec<String> = docker(&[
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "hark/watchdog",
            ])
            .lines()
            .filter(|b| !bases_before.contains(*b))
            .map(str::to_owned)
            .collect();
            // Registered even when the build failed, so that cleans up too.
            if CLEANUP
                .set((network.clone(), image.clone(), bases_after))
                .is_ok()
            {
                // SAFETY: registers a plain extern "C" function once.
                unsafe {
                    libc::atexit(cleanup_at_exit);
                }
            }
            assert!(
                built.status.success(),
                "hark build failed:\n{}",
                String::from_utf8_lossy(&built.stderr)
            );
            Some(DockerFixture {
                image,
                network,
            })
        })
        .as_ref()
}

/// What the swarm runs share: the docker runs' image and an overlay network.
pub struct SwarmFixture {
    pub image: String,
    pub network: String,
}

static SWARM: OnceLock<Option<SwarmFixture>> = OnceLock::new();
static SWARM_NETWORK: OnceLock<String> = OnceLock::new();
/// Held (shared) by every test process that uses the swarm, so the last one out leaves
/// a swarm that a test made; taken exclusively to make one.
const SWARM_LOCK: &str = "/tmp/hark-swarm-tests.lock";
/// Present while a swarm made by these tests is up.
const SWARM_MADE: &str = "/tmp/hark-swarm-tests.made";

/// The bridge network swarm mode creates on each node.
const GWBRIDGE: &str = "docker_gwbridge";
/// What [`SWARM_MADE`] holds when the tests' swarm also made [`GWBRIDGE`].
const GWBRIDGE_MADE: &str = "made by hark's tests, with docker_gwbridge\n";

fn docker_network_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["network", "inspect", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `f` on the engine through bollard, on a runtime of its own (the fixture is set
/// up from inside the tests' runtimes, which cannot block).
fn with_engine<T: Send + 'static>(
    f: impl FnOnce(bollard::Docker) -> futures::future::BoxFuture<'static, T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let docker = bollard::Docker::connect_with_defaults()
                    .unwrap()
                    .negotiate_version()
                    .await
                    .unwrap();
                f(docker).await
            })
    })
    .join()
    .unwrap()
}

fn swarm_state() -> String {
    docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
}

/// Makes the engine a single-node swarm manager unless it is one; whether this call
/// made it, or the engine's refusal.
fn ensure_swarm() -> Result<bool, String> {
    if swarm_state() == "active" {
        return Ok(false);
    }
    with_engine(|docker| {
        Box::pin(async move {
            let request = bollard::models::SwarmInitRequest {
                listen_addr: Some("127.0.0.1:2377".into()),
                advertise_addr: Some("127.0.0.1".into()),
                ..Default::default()
            };
            docker
                .init_swarm(request)
                .await
                .map(|_| true)
                .map_err(|e| e.to_string())
        })
    })
}

/// Leaves the swarm the tests made, when no other test process still uses it.
fn leave_swarm_if_last(lock: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file this process holds open.
    let exclusive = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if exclusive && std::path::Path::new(SWARM_MADE).exists() {
        let left = with_engine(|docker| {
            Box::pin(async move {
                let options = bollard::query_parameters::LeaveSwarmOptionsBuilder::default()
                    .force(true)
                    .build();
                docker
                    .leave_swarm(Some(options))
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        match left {
            Ok(()) => {
                let note = std::fs::read_to_string(SWARM_MADE).unwrap_or_default();
                if note == GWBRIDGE_MADE {
                    let _ = Command::new("docker")
                        .args(["network", "rm", GWBRIDGE])
                        .output();
                }
                let _ = std::fs::remove_file(SWARM_MADE);
            }
            Err(e) => eprintln!("could not leave the swarm the tests made: {e}"),
        }
    }
}

static SWARM_LOCK_FILE: OnceLock<std::fs::File> = OnceLock::new();

/// Removes the swarm runs' network and leaves a swarm the tests made (at process exit,
/// whether the tests passed or not; services went with their gateways' guards).
extern "C" fn swarm_cleanup_at_exit() {
    if let Some(network) = SWARM_NETWORK.get() {
        // The tasks of removed services leave the network a moment later.
        for _ in 0..20 {
            let gone = Command::new("docker")
                .args(["network", "rm", network])
                .output()
                .map(|o| {
                    o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not found")
                })
                .unwrap_or(true);
            if gone {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    if let Some(lock) = SWARM_LOCK_FILE.get() {
        leave_swarm_if_last(lock);
    }
}

/// The docker fixture plus an active swarm and an overlay network; `None` when the
/// engine is missing or refuses swarm mode (outside CI; in CI that fails).
pub fn swarm_fixture() -> Option<&'static SwarmFixture> {
    SWARM
        .get_or_init(|| {
            use std::os::fd::AsRawFd;
            let docker_fixture = docker_fixture()?;
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(SWARM_LOCK)
                .expect("open the swarm tests' lock file");
            // SAFETY: flock on a file this process holds open.
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            // Swarm mode makes the `docker_gwbridge` network and leaving keeps it: note
            // whether it was there, so leaving restores the engine as it was.
            let had_gwbridge = docker_network_exists(GWBRIDGE);
            let made = ensure_swarm();
            if let Ok(true) = made {
                let note = if had_gwbridge { "made by hark's tests\n" } else { GWBRIDGE_MADE };
                std::fs::write(SWARM_MADE, note).unwrap();
            }
            // SAFETY: as above; downgrades to a shared lock for the rest of the run.
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH) };
            let _ = SWARM_LOCK_FILE.set(lock);
            let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
            let network = format!("hark-test-swarm-{run}");
            if SWARM_NETWORK.set(network.clone()).is_ok() {
                // SAFETY: registers a plain extern "C" function once.
                unsafe {
                    libc::atexit(swarm_cleanup_at_exit);
                }
            }
            if let Err(e) = made {
                if std::env::var_os("CI").is_some() {
                    panic!("CI is set but the engine refused swarm mode: {e}");
                }
                eprintln!("SKIPPED: the engine refused swarm mode ({e}); swarm tests skipped (set CI to make this a failure)");
                return None;
            }
            let created = Command::new("docker")
                .args(["network", "create", "--driver", "overlay", "--attachable"])
                .args(["--label", "com.hark.network=true", &network])
                .output()
                .expect("run the docker CLI");
            assert!(
                created.status.success(),
                "creating overlay network {network}: {}",
                String::from_utf8_lossy(&created.stderr)
            );
            Some(SwarmFixture {
                image: docker_fixture.image.clone(),
                network,
            })
        })
        .as_ref()
}

/// Removes every service and Swarm secret labelled with a gateway's instance id.
pub struct ServiceGuard {
    pub instance: String,
}

impl ServiceGuard {
    /// A guard for the swarm gateway whose data directory is `data`.
    pub fn for_data(data: &std::path::Path) -> ServiceGuard {
        let instance = std::fs::read_to_string(data.join("swarm-instance"))
            .expect("the swarm provider wrote its instance id")
            .trim()
            .to_owned();
        ServiceGuard { instance }
    }
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let label = format!("label=com.hark.instance={}", self.instance);
        for id in docker(&["service", "ls", "-q", "--filter", &label]).lines() {
            docker(&["service", "rm", id]);
        }
        for id in docker(&["secret", "ls", "-q", "--filter", &label]).lines() {
            docker(&["secret", "rm", id]);
        }
    }
}

/// A gateway on one provider, and what a case needs to poke at its replicas.
pub struct Harness {
    pub kind: Kind,
    pub gw: Gateway,
    /// Removes this gateway's containers once the gateway is gone (dropped after `gw`).
    _containers: Option<ContainerGuard>,
    /// Removes this gateway's services and secrets once the gateway is gone.
    _services: Option<ServiceGuard>,
    /// The gateway's instance id (docker and swarm).
    instance: String,
    image: String,
}

/// Removes every container labelled with a gateway's instance id.
pub struct ContainerGuard {
    pub instance: String,
}

impl ContainerGuard {
    /// A guard for the gateway whose data directory is `data`.
    pub fn for_data(data: &std::path::Path) -> ContainerGuard {
        let instance = std::fs::read_to_string(data.join("docker-instance"))
            .expect("the docker provider wrote its instance id")
            .trim()
            .to_owned();
        ContainerGuard { instance }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let label = format!("label=com.hark.instance={}", self.instance);
        for id in docker(&["ps", "-aq", "--filter", &label]).lines() {
            docker(&["rm", "-f", id]);
        }
    }
}

impl Harness {
    /// A gateway on `kind`; `None` when the docker engine is missing outside CI.
    pub fn start(kind: Kind) -> Option<Harness> {
        match kind {
            Kind::Process => Some(Harness {
                kind,
                gw: Gateway::start_with(&["--provider", "process"]),
                _containers: None,
                _services: None,
                instance: String::new(),
                image: String::new(),
            }),
            Kind::Swarm => {
                let fixture = swarm_fixture()?;
                let gw = Gateway::start_with(&[
                    "--provider",
                    "swarm",
                    "--swarm-network",
                    &fixture.network,
                ]);
                let guard = ServiceGuard::for_data(&gw.data);
                Some(Harness {
                    kind,
                    gw,
                    instance: guard.instance.clone(),
                    _services: Some(guard),
                    _containers: None,
                    image: fixture.image.clone(),
                })
            }
            Kind::Docker => {
                let fixture = docker_fixture()?;
                let gw = Gateway::start_with(&[
                    "--provider",
                    "docker",
                    "--docker-network",
                    &fixture.network,
                ]);
                let guard = ContainerGuard::for_data(&gw.data);
                Some(Harness {
                    kind,
                    gw,
                    instance: guard.instance.clone(),
                    _containers: Some(guard),
                    _services: None,
                    image: fixture.image.clone(),
                })
            }
        }
    }

    /// `spec` with this provider's image.
    pub fn spec(&self, mut spec: Value) -> Value {
        spec["image"] = json!(self.image);
        spec
    }

    pub async fn deploy(&self, spec: Value) {
        self.gw.deploy(self.spec(spec)).await;
    }

    /// Deploys a fork-mode function running `sh -c SCRIPT`.
    pub async fn deploy_sh(&self, name: &str, script: &str, annotations: Value) {
        self.deploy(json!({
            "service": name,
            "envProcess": format!("sh -c '{}'", script.replace('\'', "'\\''")),
            "annotations": annotations,
        }))
        .await;
    }

    /// Deploys the `hello` http-mode function.
    pub async fn deploy_hello(&self) {
        self.deploy(json!({
            "service": "hello",
            "envProcess": hello_bin().display().to_string(),
            "annotations": { "hark.mode": "http" },
        }))
        .await;
    }

    /// Deploys `hello` (`VERSION=1`) and waits for it, then updates it to `VERSION=2`
    /// while calling it for 3 s: every call is answered. The replicas that ran before the
    /// update come back.
    pub async fn update_hello_while_calling_it(&self) -> Vec<String> {
        let h = self;
        let spec = |version: &str| {
            h.spec(json!({
                "service": "hello",
                "envProcess": hello_bin().display().to_string(),
                "envVars": { "VERSION": version },
                "annotations": { "hark.mode": "http" },
            }))
        };
        h.gw.deploy(spec("1")).await;
        h.gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
            .await;
        let old = h.running("hello");
        let update = async {
            let response =
                h.gw.request(Method::PUT, "/system/functions")
                    .json(&spec("2"))
                    .send()
                    .await
                    .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        };
        let calls = async {
            let started = Instant::now();
            let mut answered = 0;
            while started.elapsed() < Duration::from_secs(3) {
                assert_eq!(
                    h.gw.invoke("hello", "x").await,
                    (200, "Hello, x!\n".to_owned())
                );
                answered += 1;
            }
            answered
        };
        let ((), answered) = tokio::join!(update, calls);
        assert!(answered > 0);
        old
    }

    /// Ids of the running replicas of `name` (process ids, or container ids).
    pub fn running(&self, name: &str) -> Vec<String> {
        match self.kind {
            Kind::Process => children_named(self.gw.pid(), name)
                .into_iter()
                .map(|p| p.to_string())
                .collect(),
            Kind::Docker | Kind::Swarm => {
                let instance = &self.instance;
                docker(&[
                    "ps",
                    "-q",
                    "--no-trunc",
                    "--filter",
                    &format!("label=com.hark.instance={instance}"),
                    "--filter",
                    &format!("label=com.hark.function={name}"),
                ])
                .lines()
                .map(str::to_owned)
                .collect()
            }
        }
    }

    /// Kills one replica of `name` the hard way; returns its id.
    pub fn crash_one(&self, name: &str) -> String {
        let running = self.running(name);
        assert_eq!(running.len(), 1, "{running:?}");
        match self.kind {
            Kind::Process => unsafe {
                libc::kill(running[0].parse().unwrap(), libc::SIGKILL);
            },
            Kind::Docker | Kind::Swarm => {
                docker(&["kill", &running[0]]);
            }
        }
        running[0].clone()
    }

    /// Waits until the function's log has a line containing `text`.
    pub async fn wait_log(&self, name: &str, text: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let lines = self.gw.log_texts(name).await;
            if lines.iter().any(|l| l.contains(text)) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never logged {text:?}: {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn fork_mode_passes_the_request_through_stdin_and_http_variables(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    h.deploy_sh(
        "env",
        r#"printf "%s|%s|%s|%s|" "$Http_Method" "$Http_Path" "$Http_Query" "$Http_X_Custom"; cat"#,
        json!({}),
    )
    .await;
    let response =
        h.gw.client
            .put(format!("{}/function/env/some/path?a=1&b=2", h.gw.url))
            .header("X-Custom", "yes")
            .header("X-Call-Id", "my-call-1")
            .body("the body")
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-call-id"], "my-call-1");
    assert_eq!(
        response.text().await.unwrap(),
        "PUT|/some/path|a=1&b=2|yes|the body"
    );
}

async fn a_failing_function_answers_500_with_its_exit_status_and_stderr(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    h.deploy_sh("fails", "echo something broke >&2; exit 3", json!({}))
        .await;
    let (status, body) = h.gw.invoke("fails", "").await;
    assert_eq!(status, 500);
    assert!(
        body.contains("exit status 3") && body.contains("something broke"),
        "{body}"
    );
    h.wait_log("fails", "something broke").await;
    let activations: Value = h.gw.get_json("/system/activations?function=fails").await;
    let record = &activations[0];
    assert_eq!(record["status"], 500);
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("something broke"),
        "{record}"
    );
}

async fn http_mode_serves_through_a_ready_replica(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    h.deploy_hello().await;
    // A call right after the deploy waits for the replica to be ready.
    assert_eq!(
        h.gw.invoke("hello", "Ada").await,
        (200, "Hello, Ada!\n".to_owned())
    );
    let status =
        h.gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
            .await;
    assert_eq!(status["replicas"], 1);
    assert_eq!(h.running("hello").len(), 1);
}

async fn scale_up_down_to_zero_and_back(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    h.deploy_hello().await;
    h.gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;

    h.gw.scale("hello", 3).await;
    let status = wait_status_long(&h.gw, "hello", "reached 3 replicas", |s| {
        s["availableReplicas"] == 3
    })
    .await;
    assert_eq!(status["replicas"], 3);
    assert_eq!(h.running("hello").len(), 3);
    for i in 0..9 {
        assert_eq!(
            h.gw.invoke("hello", &format!("n{i}")).await,
            (200, format!("Hello, n{i}!\n"))
        );
    }
    // Each replica wrote its own log lines.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let instances: HashSet<String> = log_lines(&h.gw, "hello")
            .await
            .iter()
            .map(|l| l["instance"].as_str().unwrap().to_owned())
            .collect();
        if instances.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{instances:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    h.gw.scale("hello", 0).await;
    wait_status_long(&h.gw, "hello", "scaled to zero", |s| {
        s["availableReplicas"] == 0 && s["replicas"] == 0
    })
    .await;
    assert!(h.running("hello").is_empty());

    // A call at zero starts a replica and waits for it.
    assert_eq!(
        h.gw.invoke("hello", "again").await,
        (200, "Hello, again!\n".to_owned())
    );
    let status = h.gw.status("hello").await;
    assert_eq!(
        (
            status["replicas"].as_u64(),
            status["availableReplicas"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

async fn a_crashed_replica_is_replaced(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    h.deploy_hello().await;
    h.gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    let crashed = h.crash_one("hello");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = h.running("hello");
        if now.len() == 1
            && now[0] != crashed
            && h.gw.status("hello").await["availableReplicas"] == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "replica was not replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.gw.invoke("hello", "back").await,
        (200, "Hello, back!\n".to_owned())
    );
    h.wait_log("hello", "exited").await;
}

async fn a_call_past_its_time_limit_answers_504(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    h.deploy_sh(
        "slow",
        "sleep 30; echo late",
        json!({ "hark.timeout": "300ms" }),
    )
    .await;
    let started = Instant::now();
    let (status, body) = h.gw.invoke("slow", "").await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let activations: Value = h.gw.get_json("/system/activations?function=slow").await;
    assert_eq!(activations[0]["status"], 504, "{activations}");
}

async fn logs_are_served_as_ndjson_and_followed_live(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    h.deploy_sh("talker", "echo \"heard $(cat)\" >&2", json!({}))
        .await;
    h.gw.invoke("talker", "one").await;
    h.gw.invoke("talker", "two").await;
    h.wait_log("talker", "heard two").await;
    let lines = log_lines_query(&h.gw, "name=talker&tail=1").await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["name"], "talker");
    assert_eq!(lines[0]["text"], "heard two");
    assert!(lines[0]["instance"]
        .as_str()
        .unwrap()
        .starts_with("talker-"));
    assert!(lines[0]["timestamp"].as_str().is_some());

    let mut follow =
        h.gw.request(Method::GET, "/system/logs?name=talker&follow=true&tail=0")
            .send()
            .await
            .unwrap();
    h.gw.invoke("talker", "three").await;
    let chunk = tokio::time::timeout(Duration::from_secs(10), follow.chunk())
        .await
        .expect("followed log line")
        .unwrap()
        .unwrap();
    let line: Value = serde_json::from_slice(&chunk).unwrap();
    assert_eq!(line["text"], "heard three");
}

async fn secrets_are_files_the_function_reads(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    let value = "s3cr3t-value-4417";
    crate::util::register_secret(value);
    let response =
        h.gw.request(Method::POST, "/system/secrets")
            .json(&json!({ "name": "api-key", "value": value }))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 201);
    h.deploy(json!({
        "service": "reader",
        "envProcess": "sh -c 'cat \"$HARK_SECRETS_DIR/api-key\"'",
        "secrets": ["api-key"],
    }))
    .await;
    assert_eq!(h.gw.invoke("reader", "").await, (200, value.to_owned()));

    // Updating the secret rewrites the file the function reads.
    let response =
        h.gw.request(Method::PUT, "/system/secrets")
            .json(&json!({ "name": "api-key", "value": "rotated" }))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(h.gw.invoke("reader", "").await, (200, "rotated".to_owned()));
    let output = h.gw.output();
    assert!(
        !output.contains(value) && !output.contains("rotated"),
        "a secret reached the log:\n{output}"
    );
}

async fn a_removed_function_is_gone(kind: Kind) {
    let Some(h) = Harness::start(kind) else {
        return;
    };
    h.deploy_hello().await;
    h.gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    let response =
        h.gw.request(Method::DELETE, "/system/functions")
            .json(&json!({ "functionName": "hello" }))
            .send()
            .await
            .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(h.gw.invoke("hello", "x").await.0, 404);
    assert!(h.running("hello").is_empty());
}

/// Like [`Gateway::wait_status`], with room for containers to start on a busy machine.
async fn wait_status_long(
    gw: &Gateway,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = gw.status(name).await;
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{name} never {what}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_lines(gw: &Gateway, name: &str) -> Vec<Value> {
    log_lines_query(gw, &format!("name={name}")).await
}

async fn log_lines_query(gw: &Gateway, query: &str) -> Vec<Value> {
    gw.request(Method::GET, &format!("/system/logs?{query}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
