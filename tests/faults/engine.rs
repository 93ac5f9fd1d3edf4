//! The Docker Engine restarting under load: on a private `dockerd` of this test (never the
//! shared engine), the docker provider's calls fail at once with a clear error while the
//! engine is down (no hang), the containers come back when it does, every async call
//! accepted meanwhile ends done, and no container is left behind.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::load::{client, open_loop};
use crate::util::{hark_bin, hello_bin, Gateway};

/// A `dockerd` of this test: its own socket, data, exec root, containerd, address pool and
/// network namespace, and no iptables rules, so it touches nothing of the shared engine.
///
/// The namespace matters: Debian's dockerd (20.10), restarted after a crash with
/// containers on a user-defined network, removes the stale sandboxes' network by the
/// default bridge name and deletes `docker0` — in the host's namespace that is the
/// machine's own engine's bridge (seen here even with `--bridge=` naming a bridge of the
/// test's own). In a namespace of its own it deletes only its own. The gateway under test
/// runs in that namespace too (the engine publishes the containers' ports on its
/// loopback), and the test reaches it over a veth pair.
struct PrivateEngine {
    dir: PathBuf,
    netns: String,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

/// The name of the machine's own engine's default bridge, which no test may remove.
const HOST_BRIDGE: &str = "docker0";
/// The addresses of the veth pair's ends: the host's and the namespace's (where the
/// gateway listens).
const HOST_END: &str = "10.215.0.1/30";
const NETNS_END: &str = "10.215.0.2";

/// Whether the network device `name` exists in this namespace.
fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Runs `ip ARGS`, or says why it failed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `command` run inside the network namespace `netns`, with the same arguments,
/// environment and working directory. (`nsenter --net` joins the namespace alone; `ip
/// netns exec` would also mount a new `/sys`, hiding the cgroups dockerd needs.)
fn in_netns(command: &Command, netns: &str) -> Command {
    let mut wrapped = Command::new("nsenter");
    wrapped
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

impl PrivateEngine {
    /// Starts one, or says why it cannot.
    async fn start() -> Result<PrivateEngine, String> {
        if !Path::new("/usr/sbin/dockerd").exists() {
            return Err("no /usr/sbin/dockerd".into());
        }
        // Short: containerd's socket path under it must fit a Unix socket address.
        let tmp = tempfile::Builder::new()
            .prefix("hf")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        std::fs::write(tmp.path().join("daemon.json"), "{}").map_err(|e| e.to_string())?;
        let id = std::process::id() % 100_000_000;
        let netns = format!("hfns{id}");
        let (host_end, netns_end) = (format!("hfv{id}h"), format!("hfv{id}n"));
        // Left by an earlier run that was killed: removing the namespace removes its veth.
        let _ = ip(&["netns", "del", &netns]);
        ip(&["netns", "add", &netns])?;
        let engine = PrivateEngine {
            dir: tmp.path().to_owned(),
            netns,
            child: None,
            _tmp: tmp,
        };
        let ns = engine.netns.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &netns_end,
        ])?;
        ip(&["link", "set", &netns_end, "netns", ns])?;
        ip(&["addr", "add", HOST_END, "dev", &host_end])?;
        ip(&["link", "set", &host_end, "up"])?;
        let inside = format!("{NETNS_END}/30");
        ip(&["-n", ns, "addr", "add", &inside, "dev", &netns_end])?;
        ip(&["-n", ns, "link", "set", &netns_end, "up"])?;
        let mut engine = engine;
        engine.spawn().await?;
        Ok(engine)
    }

    fn host(&self) -> String {
        format!("unix://{}/d.sock", self.dir.display())
    }

    /// Starts `dockerd` and waits until it answers.
    async fn spawn(&mut self) -> Result<(), String> {
        let d = self.dir.display();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["--", "/usr/sbin/dockerd"])
            .arg(format!("--config-file={d}/daemon.json"))
            .arg(format!("--host={}", self.host()))
            .arg(format!("--data-root={d}/data"))
            .arg(format!("--exec-root={d}/x"))
            .arg(format!("--pidfile={d}/d.pid"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--default-address-pool=base=10.213.0.0/16,size=24",
            ])
            // overlay2 cannot nest in the overlay root file system of a container; vfs
            // always works but copies every layer.
            .arg(if which::which("fuse-overlayfs").is_ok() {
                "--storage-driver=fuse-overlayfs"
            } else {
                "--storage-driver=vfs"
            })
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run dockerd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let version = tokio::process::Command::new("docker")
                .arg("-H")
                .arg(self.host())
                .args(["version", "--format", "{{.Server.APIVersion}}"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if version.is_ok_and(|s| s.success()) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("dockerd exited ({status}): {}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "dockerd did not answer in 60 s: {}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Runs the docker CLI against this engine.
    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Kills the engine (SIGKILL, as a crash would) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Processes started for this engine (containerd, shims, fuse-overlayfs,
    /// docker-proxy): those whose command line names its directory.
    fn strays(&self) -> Vec<i32> {
        let needle = self.dir.display().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                found.push(pid);
            }
        }
        found
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // Networks first, while the engine runs: each is a bridge device on the host.
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            for id in ids.lines() {
                let _ = self.docker(&["rm", "-f", "-v", id]);
            }
        }
        let _ = self.docker(&["network", "prune", "-f"]);
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) of the dockerd this guard started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.strays() {
            // SAFETY: kill(2) of a process started for this engine (its command line
            // names the engine's own directory).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
        let needle = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.starts_with(&needle))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// Queue rows `(call id, state, attempts)`.
type QueueRows = Vec<(String, String, u32)>;

/// Queue rows and 2xx activations by call id, of the calls whose id is `LIKE pattern`.
fn queue_and_successes(gw: &Gateway, pattern: &str) -> (QueueRows, HashMap<String, u32>) {
    let db = rusqlite::Connection::open_with_flags(
        gw.data.join("hark.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare("SELECT call_id, state, attempts FROM queue WHERE call_id LIKE ?1")
        .unwrap();
    let rows = stmt
        .query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut stmt = db
        .prepare("SELECT call_id, COUNT(*) FROM activations WHERE call_id LIKE ?1 AND status BETWEEN 200 AND 299 GROUP BY call_id")
        .unwrap();
    let ok = stmt
        .query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<HashMap<_, _>, _>>()
        .unwrap();
    (rows, ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_engine_restarting_under_load_is_survived() {
    let _one = crate::exclusive().await;
    let had_host_bridge = link_exists(HOST_BRIDGE);
    let mut engine = match PrivateEngine::start().await {
        Ok(engine) => engine,
        Err(why) => {
            assert!(std::env::var_os("CI").is_none(), "private dockerd: {why}");
            eprintln!("SKIPPED: cannot start a private dockerd: {why}");
            return;
        }
    };
    let host = engine.host();

    // The function's image, built into the private engine.
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("fn")).unwrap();
    std::fs::write(work.path().join("fn/README"), "engine restart test\n").unwrap();
    std::fs::write(
        work.path().join("hark.yml"),
        format!(
            "functions:\n  hello:\n    handler: ./fn\n    fprocess: {}\n",
            hello_bin().display()
        ),
    )
    .unwrap();
    let built = Command::new(hark_bin())
        .args(["build", "hello", "--tag", &run, "-f"])
        .arg(work.path().join("hark.yml"))
        .current_dir(work.path())
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "hark build: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let data = tempfile::tempdir().unwrap();
    let up = Gateway::up_command(
        data.path(),
        &["--provider", "docker", "--bind", NETNS_END],
        &[("DOCKER_HOST", host.as_str())],
    );
    let mut gw = Gateway::spawn(in_netns(&up, &engine.netns), data.path());
    gw.deploy(json!({
        "service": "hello",
        "image": format!("hark/hello:{run}"),
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http", "hark.retries": "10",
                         "hark.retry.backoff": "500ms", "hark.async.concurrency": "4" },
    }))
    .await;
    gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    assert_eq!(gw.invoke("hello", "warm").await.0, 200);

    // Load for 30 s; the engine is killed at 5 s and started again at 12 s.
    let client = client();
    let length = Duration::from_secs(30);
    let started = Instant::now();
    let sync_url = format!("{}/function/hello", gw.url);
    let async_url = format!("{}/async-function/hello", gw.url);
    let sync = open_loop(&client, &sync_url, 20.0, length, "esync");
    let queued = open_loop(&client, &async_url, 10.0, length, "easync");
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        engine.kill();
        let killed_at = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        // While it is down: a clear error, at once.
        let asked = Instant::now();
        let (status, body) = gw.invoke("hello", "down").await;
        let answered_in = asked.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let restart = Instant::now();
        let restarted = engine.spawn().await;
        let restarted_at = started.elapsed();
        let restart_took = restart.elapsed();
        (
            killed_at,
            status,
            body,
            answered_in,
            restarted,
            restarted_at,
            restart_took,
        )
    };
    let (
        sync,
        queued,
        (killed_at, down_status, down_body, down_in, restarted, restarted_at, restart_took),
    ) = tokio::join!(sync, queued, chaos);
    restarted.expect("the private dockerd starts again");

    assert_eq!(down_status, 502, "{down_body}");
    assert!(
        down_body.contains("Docker Engine"),
        "unclear error while the engine is down: {down_body}"
    );
    // No call hung: every one was answered within the client's 10 s.
    let unanswered: Vec<_> = sync.iter().filter(|s| s.status == 0).take(5).collect();
    assert!(unanswered.is_empty(), "calls hung: {unanswered:?}");
    let failed: Vec<_> = sync.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.iter().all(|s| s.status == 502),
        "failures other than 502: {:?}",
        failed.iter().take(5).collect::<Vec<_>>()
    );
    // It serves again: the calls of the last 8 s all succeeded.
    let last = length - Duration::from_secs(8);
    let late_failures: Vec<_> = sync
        .iter()
        .filter(|s| s.at > last && s.status != 200)
        .collect();
    assert!(
        late_failures.is_empty(),
        "calls failed after the engine was back: {:?}",
        late_failures.iter().take(5).collect::<Vec<_>>()
    );
    let back_at = sync
        .iter()
        .filter(|s| s.at > restarted_at && s.status == 200)
        .map(|s| s.at)
        .min()
        .unwrap();
    let first_failure = failed.iter().map(|s| s.at).min();
    let last_failure = failed.iter().map(|s| s.at + s.latency).max();

    // No async call lost: every one accepted ends done, answered once.
    let accepted: HashSet<String> = queued
        .iter()
        .filter(|s| s.status == 202)
        .map(|s| s.call_id.clone())
        .collect();
    assert_eq!(
        accepted.len(),
        queued.len(),
        "async calls are accepted while the engine is down"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let (rows, _) = queue_and_successes(&gw, "easync-%");
        if rows.len() == accepted.len() && rows.iter().all(|(_, s, _)| s == "done") {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "async calls not done: {:?}",
            rows.iter()
                .filter(|(_, s, _)| s != "done")
                .take(5)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Activation records are written a moment after the call's outcome.
    crate::flush_activations(&gw).await;
    let (_, successes) = queue_and_successes(&gw, "easync-%");
    for (call_id, _, _) in &rows {
        assert_eq!(successes.get(call_id), Some(&1), "{call_id} answered once");
    }
    let retried = rows.iter().filter(|(_, _, a)| *a > 1).count();
    let most_attempts = rows.iter().map(|(_, _, a)| *a).max().unwrap_or(0);

    // A clean stop leaves no container behind, not even those that ended while the
    // engine was down.
    let output = gw.output();
    assert!(gw.stop(), "the gateway stops cleanly:\n{output}");
    let left = engine.docker(&["ps", "-aq"]).unwrap();
    assert_eq!(left, "", "containers left on the engine");
    assert!(!output.contains("panicked"), "{output}");
    eprintln!(
        "FIGURES engine: killed at {killed_at:?}, started again at {restarted_at:?} (took {restart_took:?}); a call while down answered {down_status} in {down_in:?}: {down_body}; sync: {} calls, {} failed (502) from {first_failure:?} to {last_failure:?}, first success after the restart at {back_at:?} ({:?} after it); async: {} accepted, {} done, {retried} retried (at most {most_attempts} attempts), 0 lost",
        sync.len(),
        failed.len(),
        back_at - restarted_at,
        accepted.len(),
        rows.len()
    );
    // The test damaged nothing of the machine: its engine and namespace are gone, and
    // the machine's own engine still has its default bridge.
    let netns = engine.netns.clone();
    drop(engine);
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "the namespace {netns} was left"
    );
    if had_host_bridge {
        assert!(
            link_exists(HOST_BRIDGE),
            "the host's {HOST_BRIDGE} was removed by the private engine"
        );
    }
}
