//! The process sandbox (issue 16, item 1): a fork-mode and an HTTP-mode function try to
//! read the gateway's files, another function's secret and the gateway's environment, and
//! to signal the gateway. Every attempt is refused; their own secret and state directory
//! work. Some assertions catch one defence each: the own uid (a root-only file inside the
//! fence, `/etc/shadow`), Landlock (a world-readable file in the data directory) and the
//! limits (`/proc/self/limits`).

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{register_secret, Gateway};

/// What the probe tries, one line each: `WHAT read|refused`, then its uid and limits.
fn probe_script(data: &Path, gateway: u32) -> String {
    let data = data.display();
    format!(
        r#"try() {{ if cat "$2" >/dev/null 2>&1; then echo "$1 read"; else echo "$1 refused"; fi; }}
try jwt.key "{data}/jwt.key"
try secret.key "{data}/secret.key"
try hark.db "{data}/hark.db"
try admin-token "{data}/admin-token"
try other-secret "{data}/secrets/victim/theirs"
try environ /proc/{gateway}/environ
try shadow /etc/shadow
try bait "{data}/bait"
try own-secret "$HARK_SECRETS_DIR/mine"
if kill -0 {gateway} 2>/dev/null; then echo "signal-0 sent"; else echo "signal-0 refused"; fi
if kill -WINCH {gateway} 2>/dev/null; then echo "signal sent"; else echo "signal refused"; fi
if echo x > "$HARK_STATE_DIR/f" && echo y > "$TMPDIR/t"; then echo "state written"; else echo "state refused"; fi
echo "uid $(id -u)"
grep -E "^Max (processes|open files|data size)" /proc/self/limits
"#
    )
}

/// The lines a probe must print, whatever its mode.
const EXPECTED: &[&str] = &[
    "jwt.key refused",
    "secret.key refused",
    "hark.db refused",
    "admin-token refused",
    "other-secret refused",
    "environ refused",
    "shadow refused",
    "bait refused",
    "own-secret read",
    "signal-0 refused",
    "signal refused",
    "state written",
];

/// An HTTP server on `$PORT` answering every POST with the probe's output.
const HTTP_PROBE: &str = r#"
import http.server, os, subprocess
class Probe(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        out = subprocess.run(["sh", "-c", os.environ["PROBE"]], capture_output=True).stdout
        self.send_response(200)
        self.end_headers()
        self.wfile.write(out)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Probe).serve_forever()
"#;

/// Whether to run: as root (the uid separation needs it), or anywhere when `CI` is set.
fn runs_here(test: &str) -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI is set but the tests do not run as root; the sandbox's own users need root"
    );
    eprintln!("skipping {test}: the sandbox's own users need a gateway running as root");
    false
}

async fn create_secret(gw: &Gateway, name: &str, value: &str) {
    register_secret(value);
    let response = gw
        .request(Method::POST, "/system/secrets")
        .json(&json!({ "name": name, "value": value }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// Deploys the victim (owning the secret `theirs`) and the two probes (owning `mine`),
/// with `annotations` on the probes.
async fn deploy_probes(gw: &Gateway, annotations: Value) {
    let probe = probe_script(&gw.data, gw.pid());
    gw.deploy(json!({
        "service": "victim",
        "envProcess": "cat",
        "secrets": ["theirs"],
    }))
    .await;
    let mut fork_annotations = annotations.clone();
    fork_annotations["hark.mode"] = json!("fork");
    gw.deploy(json!({
        "service": "probe-fork",
        "envProcess": "sh -c 'eval \"$PROBE\"'",
        "envVars": { "PROBE": probe },
        "secrets": ["mine"],
        "annotations": fork_annotations,
    }))
    .await;
    let mut http_annotations = annotations;
    http_annotations["hark.mode"] = json!("http");
    gw.deploy(json!({
        "service": "probe-http",
        "envProcess": shell_words_join(&["/usr/bin/python3", "-c", HTTP_PROBE]),
        "envVars": { "PROBE": probe },
        "secrets": ["mine"],
        "annotations": http_annotations,
    }))
    .await;
}

fn shell_words_join(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Calls the probe `name` and returns its lines.
async fn run_probe(gw: &Gateway, name: &str) -> Vec<String> {
    let (status, out) = gw.invoke(name, "go").await;
    assert_eq!(status, 200, "{name}: {out}");
    out.lines().map(str::to_owned).collect()
}

fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
}

/// The soft limit on the `/proc/self/limits` line starting with `prefix`.
fn limit(lines: &[String], prefix: &str) -> String {
    line(lines, prefix)[prefix.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn uid(lines: &[String]) -> u32 {
    line(lines, "uid ")[4..].trim().parse().unwrap()
}

#[tokio::test]
async fn functions_cannot_reach_the_gateway_or_each_other() {
    if !runs_here("functions_cannot_reach_the_gateway_or_each_other") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start_in(dir.path(), &[]);
    assert!(
        crate::util::strip_ansi(&gw.output_containing("landlock_abi"))
            .contains("process sandbox on"),
        "the start-up log names the Landlock ABI"
    );
    create_secret(&gw, "mine", "own-secret-5521").await;
    create_secret(&gw, "theirs", "their-secret-8830").await;
    // A file the gateway leaves readable by everyone: only the Landlock fence keeps it
    // from the functions.
    std::fs::write(gw.data.join("bait"), "bait").unwrap();
    std::fs::set_permissions(
        gw.data.join("bait"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    deploy_probes(
        &gw,
        json!({ "hark.limits.files": "200", "hark.limits.memory": "256Mi" }),
    )
    .await;

    let mut uids = Vec::new();
    for probe in ["probe-fork", "probe-http"] {
        let lines = run_probe(&gw, probe).await;
        for expected in EXPECTED {
            assert!(
                lines.iter().any(|l| l == expected),
                "{probe}: expected {expected:?}, got {lines:#?}"
            );
        }
        let uid = uid(&lines);
        assert!(
            uid >= 1_900_000_000,
            "{probe} runs as uid {uid}, not a user of its own"
        );
        uids.push(uid);
        assert_eq!(limit(&lines, "Max open files"), "200", "{probe}");
        assert_eq!(
            limit(&lines, "Max data size"),
            (256u64 << 20).to_string(),
            "{probe}"
        );
        assert_eq!(
            limit(&lines, "Max processes"),
            "4096",
            "{probe}: the default"
        );
    }
    assert_ne!(uids[0], uids[1], "each function has a user of its own");

    // The uids are recorded: after a restart on the same data directory (which deploys
    // the functions again), the same ones.
    gw.stop();
    let gw = Gateway::start_in(dir.path(), &[]);
    for (probe, before) in ["probe-fork", "probe-http"].into_iter().zip(uids) {
        let lines = run_probe(&gw, probe).await;
        assert_eq!(uid(&lines), before, "{probe} keeps its uid across restarts");
        assert!(lines.iter().any(|l| l == "jwt.key refused"), "{lines:?}");
    }
    // The default limits.
    gw.deploy_sh(
        "defaults",
        "grep -E \"^Max (processes|open files|data size)\" /proc/self/limits",
        json!({}),
    )
    .await;
    let (status, out) = gw.invoke("defaults", "").await;
    assert_eq!(status, 200, "{out}");
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    // 65536, or the gateway's own hard limit when lower.
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    let files = 65536.min(hard.rlim_max);
    assert_eq!(limit(&lines, "Max open files"), files.to_string());
    assert_eq!(limit(&lines, "Max data size"), (1u64 << 30).to_string());
    assert_eq!(limit(&lines, "Max processes"), "4096");
}

#[tokio::test]
async fn sandbox_off_is_a_logged_choice() {
    if !runs_here("sandbox_off_is_a_logged_choice") {
        return;
    }
    let gw = Gateway::start_with(&["--sandbox", "off"]);
    assert!(crate::util::strip_ansi(&gw.output_containing("sandbox OFF")).contains("development"));
    gw.deploy_sh("whoami", "id -u", json!({})).await;
    assert_eq!(gw.invoke("whoami", "").await, (200, "0\n".to_owned()));
}

#[tokio::test]
async fn a_program_its_user_cannot_reach_is_refused_at_deploy() {
    if !runs_here("a_program_its_user_cannot_reach_is_refused_at_deploy") {
        return;
    }
    let gw = Gateway::start();
    // A private directory of the gateway's user (tempdir is 0700).
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let program = private.path().join("f.sh");
    std::fs::write(&program, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let response = gw
        .request(Method::POST, "/system/functions")
        .json(&json!({ "service": "hidden", "envProcess": program.display().to_string() }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("cannot reach"), "{body}");
    // Root as hark.user would undo the sandbox.
    let response = gw
        .request(Method::POST, "/system/functions")
        .json(&json!({ "service": "as-root", "envProcess": "cat", "annotations": { "hark.user": "root" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// A sandboxed replica still dies with its gateway: the uid change (which clears the
/// parent-death signal) comes before `die_with_gateway` sets it.
#[tokio::test]
async fn a_sandboxed_replica_dies_with_a_killed_gateway() {
    if !runs_here("a_sandboxed_replica_dies_with_a_killed_gateway") {
        return;
    }
    let mut gw = Gateway::start();
    gw.deploy(json!({
        "service": "hello",
        "envProcess": crate::util::hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    assert_eq!(gw.invoke("hello", "x").await.0, 200);
    let replicas = crate::util::children_named(gw.pid(), "hello");
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    gw.kill_hard();
    let proc = format!("/proc/{}", replicas[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Path::new(&proc).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica {} outlived its gateway",
            replicas[0]
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Where every root gateway records the uids it gives (`src/provider/process/uids.rs`).
const MACHINE_REGISTRY: &str = "/var/lib/hark-uids/function-users";

/// Deploys a fork-mode function `name` printing its uid, and returns that uid.
async fn uid_of_function(gw: &Gateway, name: &str) -> u32 {
    gw.deploy_sh(name, "id -u", json!({ "hark.mode": "fork" }))
        .await;
    let (status, out) = gw.invoke(name, "").await;
    assert_eq!(status, 200, "{out}");
    out.trim().parse().unwrap()
}

/// Two gateways of one machine (different data directories, the machine's registry)
/// never give their functions the same uid, even for the same name; a restart keeps it.
#[tokio::test]
async fn gateways_of_one_machine_give_different_uids() {
    if !runs_here("gateways_of_one_machine_give_different_uids") {
        return;
    }
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Gateway::start_in(dir_a.path(), &[]);
    let b = Gateway::start_in(dir_b.path(), &[]);
    let uid_a = uid_of_function(&a, "same-name").await;
    let uid_b = uid_of_function(&b, "same-name").await;
    assert!(uid_a >= 1_900_000_000 && uid_b >= 1_900_000_000);
    assert_ne!(uid_a, uid_b, "two gateways gave the same uid");
    assert!(
        crate::util::strip_ansi(&a.output_containing(MACHINE_REGISTRY))
            .contains(&format!("registry={MACHINE_REGISTRY}")),
        "the start-up log names the machine's registry"
    );

    a.stop();
    let a = Gateway::start_in(dir_a.path(), &[]);
    let (status, out) = a.invoke("same-name", "").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out.trim(), uid_a.to_string(), "the uid survives a restart");
}

/// A data directory that recorded a uid another gateway's function now holds (written by
/// a Hark that gave uids per data directory): its function gets a new one, keeps the
/// files of its state directory, and the log says why.
#[tokio::test]
async fn a_recorded_uid_held_by_another_gateway_is_replaced() {
    if !runs_here("a_recorded_uid_held_by_another_gateway_is_replaced") {
        return;
    }
    let other = Gateway::start();
    let held = uid_of_function(&other, "holder").await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("function-users"),
        format!("keeper\t{held}\n"),
    )
    .unwrap();
    let state = dir.path().join("state/keeper");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("notes"), "kept").unwrap();
    for path in [&state, &state.join("notes")] {
        std::os::unix::fs::chown(path, Some(held), Some(held)).unwrap();
    }
    std::fs::set_permissions(
        state.join("notes"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let gw = Gateway::start_in(dir.path(), &[]);
    assert!(
        crate::util::strip_ansi(&gw.output_containing("state directory re-owned"))
            .contains(&format!("uid {held} is held by the function holder")),
        "the log says why"
    );
    gw.deploy_sh(
        "keeper",
        "id -u; cat \"$HARK_STATE_DIR/notes\"",
        json!({ "hark.mode": "fork" }),
    )
    .await;
    let (status, out) = gw.invoke("keeper", "").await;
    assert_eq!(status, 200, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], held.to_string(), "{out}");
    assert_eq!(lines.get(1), Some(&"kept"), "its state came along: {out}");
    let recorded = std::fs::read_to_string(dir.path().join("function-users")).unwrap();
    assert_eq!(recorded, format!("keeper\t{}\n", lines[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_function_users_cannot_pass_is_named_at_deploy() {
    if !runs_here("a_data_directory_function_users_cannot_pass_is_named_at_deploy") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // A data directory inside a 0700 home, as `--data /root/.hark` would be.
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = home.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let gw = Gateway::start_in(&data, &[]);
    create_secret(&gw, "pass-key", "unreachable-value-3321").await;

    // Naming a secret it could never read: refused, with the fix.
    let refused = gw
        .request(Method::POST, "/system/functions")
        .json(&json!({
            "service": "needs-key",
            "envProcess": "sh -c 'cat \"$HARK_SECRETS_DIR/pass-key\"'",
            "secrets": ["pass-key"],
        }))
        .send()
        .await
        .unwrap();
    let status = refused.status().as_u16();
    let body = refused.text().await.unwrap();
    let home_path = home.path().display().to_string();
    assert!(
        status == 400 && body.contains(&format!("chmod o+x {home_path}")),
        "{status} {body}"
    );

    // Without secrets it deploys and runs; the log says its state directory is out of
    // its reach.
    gw.deploy_sh("plain", "echo ran", json!({})).await;
    assert_eq!(gw.invoke("plain", "").await, (200, "ran\n".to_owned()));
    let log = gw.output_containing("to its state directory");
    assert!(
        log.lines()
            .any(|l| l.contains("to its state directory") && l.contains(&home_path)),
        "{log}"
    );

    // Let others pass the home: the secret is read.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    gw.deploy(json!({
        "service": "needs-key",
        "envProcess": "sh -c 'cat \"$HARK_SECRETS_DIR/pass-key\"'",
        "secrets": ["pass-key"],
    }))
    .await;
    assert_eq!(
        gw.invoke("needs-key", "").await,
        (200, "unreachable-value-3321".to_owned())
    );
}

/// Python defining `probe(body)`: it connects over TCP to each `NAME=PORT` of the body on
/// 127.0.0.1, and to the ports of `HARK_GATEWAY_URL` and `HARK_WEBDRIVER_URL`, and says
/// per target `NAME reached`, `NAME denied` (the fence: `EACCES`) or `NAME error …`.
const NET_PROBE: &str = r#"
import os, socket, sys, urllib.parse
def probe(body):
    targets = dict(t.split("=") for t in body.split())
    for var, name in (("HARK_GATEWAY_URL", "gateway"), ("HARK_WEBDRIVER_URL", "webdriver")):
        if os.environ.get(var):
            targets[name] = urllib.parse.urlsplit(os.environ[var]).port
    out = []
    for name, port in sorted(targets.items()):
        try:
            socket.create_connection(("127.0.0.1", int(port)), 3).close()
            out.append(name + " reached")
        except PermissionError:
            out.append(name + " denied")
        except OSError as e:
            out.append(name + " error " + str(e))
    return "\n".join(out) + "\n"
"#;

/// An HTTP-mode replica on its socket answering each POST with `probe(body)`.
const NET_PROBE_HTTP: &str = r#"
import http.server, socketserver
class Probe(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        out = probe(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
socketserver.UnixStreamServer(os.environ["HARK_SOCKET"], Probe).serve_forever()
"#;

/// A replica that only speaks TCP (`hark.listen: tcp`) and answers its own `PORT`.
const TCP_REPLICA: &str = r#"
import http.server, os
class Port(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(os.environ["PORT"].encode())
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Port).serve_forever()
"#;

/// `hark.network` for process functions: an `internal` function (the default) opens TCP
/// connections to the gateway's listeners and nothing else: not a local service, not
/// another function's TCP replica. `internet` lifts the fence.
#[tokio::test]
async fn an_internal_function_reaches_the_gateway_and_no_other_port() {
    if !runs_here("an_internal_function_reaches_the_gateway_and_no_other_port") {
        return;
    }
    let gw = Gateway::start();
    let log = crate::util::strip_ansi(&gw.output_containing("landlock_abi"));
    if !log.contains("network fence") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but this kernel's Landlock cannot fence TCP: {log}"
        );
        eprintln!("skipping: this kernel's Landlock cannot fence TCP ({log})");
        return;
    }
    // A service on the host that listens on loopback only (a database, a metadata proxy).
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let service = service.local_addr().unwrap().port();
    gw.deploy(json!({
        "service": "tcp-victim",
        "envProcess": shell_words_join(&["/usr/bin/python3", "-c", TCP_REPLICA]),
        "annotations": { "hark.mode": "http", "hark.listen": "tcp" },
    }))
    .await;
    let (status, replica) = gw.invoke("tcp-victim", "port?").await;
    assert_eq!(status, 200, "{replica}");
    let fork = format!("{NET_PROBE}\nprint(probe(sys.stdin.read()), end='')\n");
    let http = format!("{NET_PROBE}{NET_PROBE_HTTP}");
    for (name, program, annotations) in [
        ("net-fork", &fork, json!({ "hark.mode": "fork" })),
        (
            "net-http",
            &http,
            json!({ "hark.mode": "http", "hark.listen": "socket" }),
        ),
        (
            "net-open",
            &fork,
            json!({ "hark.mode": "fork", "hark.network": "internet" }),
        ),
        (
            "net-named",
            &fork,
            json!({ "hark.mode": "fork", "hark.network.connect": format!(" {service} ,") }),
        ),
    ] {
        gw.deploy(json!({
            "service": name,
            "envProcess": shell_words_join(&["/usr/bin/python3", "-c", program]),
            "annotations": annotations,
        }))
        .await;
    }
    let body = format!("service={service} replica={replica}");
    for probe in ["net-fork", "net-http"] {
        let (status, out) = gw.invoke(probe, &body).await;
        assert_eq!(status, 200, "{probe}: {out}");
        for expected in [
            "gateway reached",
            "webdriver reached",
            "service denied",
            "replica denied",
        ] {
            assert!(
                out.lines().any(|l| l == expected),
                "{probe}: expected {expected:?}, got {out}"
            );
        }
    }
    let (status, out) = gw.invoke("net-open", &body).await;
    assert_eq!(status, 200, "{out}");
    for expected in ["gateway reached", "service reached", "replica reached"] {
        assert!(
            out.lines().any(|l| l == expected),
            "hark.network: internet: expected {expected:?}, got {out}"
        );
    }
    let (status, out) = gw.invoke("net-named", &body).await;
    assert_eq!(status, 200, "{out}");
    for expected in ["gateway reached", "service reached", "replica denied"] {
        assert!(
            out.lines().any(|l| l == expected),
            "hark.network.connect: expected {expected:?}, got {out}"
        );
    }
    // A value it does not know is refused at deploy, not taken for either.
    let response = gw
        .request(Method::POST, "/system/functions")
        .json(&json!({ "service": "net-bad", "envProcess": "cat", "annotations": { "hark.network": "host" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("hark.network"));
    let response = gw
        .request(Method::POST, "/system/functions")
        .json(&json!({ "service": "net-bad", "envProcess": "cat", "annotations": { "hark.network.connect": "80,http" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("hark.network.connect"));
}

/// Whoever may deploy cannot open the gateway's files to their function through its
/// paths or its user: `hark.sandbox.read` or `hark.workdir` naming the data directory, a
/// directory above it or one of Hark's entries in it, and `hark.user` naming a uid of
/// Hark's range (another function's), are refused with 400. A project directory inside
/// the data directory (as here) stays usable.
#[tokio::test]
async fn deploy_annotations_cannot_open_the_gateways_files() {
    if !runs_here("deploy_annotations_cannot_open_the_gateways_files") {
        return;
    }
    let gw = Gateway::start();
    let data = std::fs::canonicalize(&gw.data).unwrap();
    let data = data.display().to_string();
    let refused = [
        ("hark.sandbox.read", data.clone()),
        ("hark.sandbox.read", "/".to_owned()),
        ("hark.sandbox.read", format!("/usr,{data}/jwt.key")),
        ("hark.sandbox.read", format!("{data}/secrets/victim")),
        ("hark.workdir", format!("{data}/state")),
        ("hark.sandbox.read", format!("{data}/function-users.tmp")),
        ("hark.workdir", format!("{data}/")),
        ("hark.user", "1900000000".to_owned()),
        ("hark.user", "2000000000:2000000000".to_owned()),
    ];
    for (key, value) in refused {
        let response = gw
            .request(Method::POST, "/system/functions")
            .json(
                &json!({ "service": "opener", "envProcess": "cat", "annotations": { key: value } }),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 400, "{key}: {value} was accepted: {body}");
        assert!(
            body.contains("gateway's files") || body.contains("another function"),
            "{key}: {value}: {body}"
        );
    }
    // A project of the operator's checked out inside the data directory.
    let project = gw.data.join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("greeting"), "hello from the project\n").unwrap();
    gw.deploy(json!({
        "service": "in-project",
        "envProcess": "cat greeting",
        "annotations": { "hark.workdir": project.display().to_string() },
    }))
    .await;
    assert_eq!(
        gw.invoke("in-project", "").await,
        (200, "hello from the project\n".to_owned())
    );
}
