//! Starting a gateway for a test, and small HTTP helpers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "secret_check.rs"]
mod secret_check;

/// The tests' throwaway PostgreSQL cluster (`HARK_TEST_STORE=postgres`, and the tests of
/// several gateways).
#[path = "../../src/store/pg_cluster.rs"]
pub mod pg_cluster;

/// The `hark` binary under test.
pub fn hark_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hark"))
}

/// The `hello` example function, built beside `hark` by `cargo build --workspace`.
pub fn hello_bin() -> PathBuf {
    let path = hark_bin().with_file_name("hello");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// Where this test process leaves every gateway's output and every secret value its tests
/// used (`target/tmp/test-logs/run-PID/`); each log is checked for those secrets when its
/// gateway stops ([`secret_check`]).
pub fn test_logs_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("test-logs")
        .join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The running test's name (libtest names each test's thread after it), for file names.
fn test_name() -> String {
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")
}

/// Records a secret value a test uses, so that the log check looks for it. Values of
/// `HARK_SECRET_*` variables given to a gateway, its admin token and its secrets' key are
/// recorded by [`Gateway`] itself; tests record the others (secrets created through the
/// API, minted tokens).
pub fn register_secret(value: &str) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(test_logs_dir().join("secrets.tsv"))
        .unwrap();
    // Hex, so that the registry itself holds no secret in a greppable form.
    writeln!(file, "{}\t{}", test_name(), hex::encode(value)).unwrap();
}

/// A new file for one gateway's output: `test-logs/run-PID/TEST-N.log`.
fn gateway_log_file() -> (std::fs::File, PathBuf) {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = test_logs_dir().join(format!("{}-{n}.log", test_name()));
    (std::fs::File::create(&path).unwrap(), path)
}

/// Fails the test if the log at `path` carries a secret this test process used.
fn check_log(path: &Path) {
    secret_check::check_log(path, &test_logs_dir().join("secrets.tsv"));
}

/// Checks `text`, the log output of a `hark` process a test ran itself (not a
/// [`Gateway`]), for the secrets the tests used.
pub fn record_log(text: &[u8]) {
    let (mut file, path) = gateway_log_file();
    file.write_all(text).unwrap();
    drop(file);
    check_log(&path);
}

/// With `HARK_TEST_STORE=postgres`, the database the gateways of data directory `data`
/// keep their state in, instead of `DATA/hark.db`: one per data directory (two gateways
/// started on one directory share it, as they share the SQLite file), on the tests'
/// throwaway cluster. `None` when the variable is unset or says `sqlite`.
pub fn test_store(data: &Path) -> Option<String> {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    match std::env::var("HARK_TEST_STORE").as_deref() {
        Err(_) | Ok("" | "sqlite") => return None,
        Ok("postgres") => {}
        Ok(other) => panic!("HARK_TEST_STORE={other:?}: give sqlite or postgres"),
    }
    let Some(cluster) = pg_cluster::cluster() else {
        panic!("HARK_TEST_STORE=postgres, but no PostgreSQL cluster could be started");
    };
    let mut databases = DATABASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let url = databases
        .entry(data.to_owned())
        .or_insert_with(|| {
            // Its own runtime: this is called inside tests' runtimes, and outside them.
            std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(cluster.database())
                })
                .join()
                .unwrap()
            })
        })
        .clone();
    Some(url)
}

/// A running `hark up` with its own data directory.
pub struct Gateway {
    pub url: String,
    pub data: PathBuf,
    pub token: String,
    pub client: reqwest::Client,
    child: Option<Child>,
    /// Everything the gateway wrote to stderr so far.
    pub output: Arc<Mutex<String>>,
    /// The file its output is copied to, and the thread copying it (done at its exit).
    log: PathBuf,
    logged: Option<std::sync::mpsc::Receiver<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Gateway {
    /// Starts a gateway in a new temporary data directory.
    pub fn start() -> Gateway {
        Self::start_with(&[])
    }

    /// Starts a gateway with extra `hark up` arguments.
    pub fn start_with(args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut gw = Self::start_in(dir.path(), args);
        gw._dir = Some(dir);
        gw
    }

    /// Starts a gateway on the data directory `data` (kept by the caller).
    pub fn start_in(data: &Path, args: &[&str]) -> Gateway {
        Self::start_in_with_env(data, args, &[])
    }

    /// The `hark up` command for data directory `data`, with extra variables `env`. It runs
    /// in `data`, so a `hark.yml` there is loaded.
    pub fn up_command(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        Self::up_command_on(data, 0, args, env)
    }

    /// [`Gateway::up_command`] listening on `port` (0: any free port).
    pub fn up_command_on(data: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(hark_bin());
        let port = port.to_string();
        command
            .arg("--data")
            .arg(data)
            .args(["up", "--port", &port])
            .args(args)
            .current_dir(data)
            .env("HARK_LOG", "info")
            .env_remove("HARK_CONFIG")
            .env_remove("HARK_TEST_CLOCK")
            .env_remove("HARK_PROVIDER")
            .env_remove("HARK_STORE")
            // Gateways of the tests record their uids where every root gateway does.
            .env_remove("HARK_UID_REGISTRY");
        // Outbound requests of the gateway go to servers of the test on 127.0.0.1.
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            command.env_remove(var);
        }
        // Through the environment, so that a test's own `--store` wins; a test whose
        // stack file names the store gives `HARK_STORE` empty, and none is set.
        let own_store = env.iter().any(|(name, _)| *name == "HARK_STORE");
        if let Some(url) = test_store(data).filter(|_| !own_store) {
            command.env("HARK_STORE", url);
        }
        command.envs(
            env.iter()
                .copied()
                .filter(|(name, value)| !(*name == "HARK_STORE" && value.is_empty())),
        );
        for (name, value) in env {
            if name.starts_with("HARK_SECRET") {
                register_secret(value);
            }
        }
        command
    }

    /// Starts a gateway on the data directory `data` with extra environment variables.
    pub fn start_in_with_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Self::spawn(Self::up_command(data, args, env), data)
    }

    /// Starts the gateway `command` (made by [`Gateway::up_command_on`]) on data directory `data`.
    pub fn spawn(mut command: Command, data: &Path) -> Gateway {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hark up");
        let stderr = child.stderr.take().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = output.clone();
        let (mut log, log_path) = gateway_log_file();
        let (done, logged) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _done = done;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("gateway listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
                let _ = writeln!(log, "{line}");
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => panic!(
                "hark up did not start; its output:\n{}",
                output.lock().unwrap()
            ),
        };
        let token = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        register_secret(&token);
        if let Ok(key) = std::fs::read_to_string(data.join("secret.key")) {
            register_secret(key.trim());
        }
        Gateway {
            url,
            data: data.to_owned(),
            token,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            child: Some(child),
            output,
            log: log_path,
            logged: Some(logged),
            _dir: None,
        }
    }

    /// Sends SIGTERM and waits for the gateway to exit; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the gateway with SIGKILL and reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// `GET path` with the admin token, its JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Deploys a function by the API and asserts it was accepted.
    pub async fn deploy(&self, spec: Value) {
        let response = self
            .request(reqwest::Method::POST, "/system/functions")
            .json(&spec)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 202, "deploy {spec}: {body}");
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

    /// Replaces a fork-mode function's script.
    pub async fn deploy_sh_update(&self, name: &str, script: &str) {
        let response = self
            .request(reqwest::Method::PUT, "/system/functions")
            .json(&json!({
                "service": name,
                "envProcess": format!("sh -c '{}'", script.replace('\'', "'\\''")),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    /// Calls a function without a token.
    pub async fn invoke(&self, name: &str, body: &str) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}/function/{name}", self.url))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// A function's status.
    pub async fn status(&self, name: &str) -> Value {
        self.request(reqwest::Method::GET, &format!("/system/function/{name}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Scales a function and asserts it was accepted.
    pub async fn scale(&self, name: &str, replicas: u32) {
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("/system/scale-function/{name}"),
            )
            .json(&json!({ "serviceName": name, "replicas": replicas }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    /// Waits until `check` holds for the function's status, or panics after 15 s.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = self.status(name).await;
            if check(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{name} never {what}: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The function's log lines so far.
    pub async fn log_texts(&self, name: &str) -> Vec<String> {
        let text = self
            .request(reqwest::Method::GET, &format!("/system/logs?name={name}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// Everything the gateway logged so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Everything the gateway logged so far, once it holds `needle`: the gateway writes
    /// its log lines from a thread of its own, a moment after what they tell of. After
    /// 10 s without it, what there is (for the assertion that follows to show).
    pub fn output_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let output = self.output();
            if strip_ansi(&output).contains(needle) || Instant::now() > deadline {
                return output;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The whole log, once the copying thread has seen the end of the output.
        if let Some(logged) = self.logged.take() {
            let _ = logged.recv_timeout(Duration::from_secs(10));
        }
        if !std::thread::panicking() {
            check_log(&self.log);
        }
    }
}

/// Waits until `holds()` is true, looking every 20 ms; after `within` the test fails,
/// naming `what` it waited for. For tests that would otherwise sleep and hope.
pub async fn eventually(what: &str, within: Duration, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !holds() {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Process ids of the live children of `parent` whose command name is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Format: pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let mut rest = stat[close + 2..].split(' ');
        let state = rest.next().unwrap_or("");
        let ppid: u32 = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && name == comm && state != "Z" {
            found.push(pid);
        }
    }
    found
}

/// A gateway's log without terminal colours.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
