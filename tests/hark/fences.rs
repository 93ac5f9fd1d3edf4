//! Functions fenced off from each other and from the host (issue 16, items 3 and 4),
//! against the real engine: a docker function reaches neither another function's
//! container nor the host nor the metadata address, while the gateway calls both; a
//! function asking for the Internet gets a network with a route out but still no
//! neighbours; the process limit and the read-only root hold; and a container or a swarm
//! task called directly, without its own function's credential, answers 401.
//!
//! There is no Internet here, so that `hark.network: internet` really reaches it is not
//! tested; its network's settings are.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::contract::{docker, Harness, Kind};

/// The fork-mode function that tries each `IP PORT` line of its input and says whether
/// an HTTP answer came back (`reached`) or not (`blocked`). (Busybox's `nc` closes the
/// connection when its input ends: the `sleep` leaves time for the answer.)
const PROBE: &str = r#"command -v nc >/dev/null || { echo "no nc on $PATH" >&2; exit 1; }; while read ip port; do if { printf "GET /_/health HTTP/1.0\r\n\r\n"; sleep 1; } | nc -w 2 $ip $port 2>/dev/null | grep -q HTTP; then echo "$ip $port reached"; else echo "$ip $port blocked"; fi; done"#;

/// A listener of the host on all addresses that answers every connection and counts them.
struct HostService {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl HostService {
    fn start() -> HostService {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost service\n");
            }
        });
        HostService { port, accepted }
    }
}

/// The address of the only running container of `name` on its network, and the
/// network's name.
fn container_address(h: &Harness, name: &str) -> (String, String) {
    let running = h.running(name);
    assert_eq!(running.len(), 1, "{running:?}");
    let networks: Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Networks}}",
        &running[0],
    ]))
    .unwrap();
    let (network, endpoint) = networks.as_object().unwrap().iter().next().unwrap();
    (
        endpoint["IPAddress"].as_str().unwrap().to_owned(),
        network.clone(),
    )
}

/// The host's address on `network` (its gateway).
fn host_address(network: &str) -> String {
    docker(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
        network,
    ])
}

fn network_settings(network: &str) -> Value {
    serde_json::from_str(&docker(&[
        "network",
        "inspect",
        "--format",
        "{{json .}}",
        network,
    ]))
    .unwrap()
}

async fn deploy_hello(h: &Harness, name: &str, annotations: Value) {
    let mut annotations = annotations;
    annotations["hark.mode"] = json!("http");
    h.deploy(json!({
        "service": name,
        "envProcess": crate::util::hello_bin().display().to_string(),
        "annotations": annotations,
    }))
    .await;
    h.gw.wait_status(name, "became available", |s| s["availableReplicas"] == 1)
        .await;
}

/// Deploys a prober on `network` (an annotation value), lets it try `targets`, and
/// returns its answer. It first tries its own watchdog, which it must reach (else the
/// probe itself is broken); that line is checked and left out of the answer.
async fn probe(h: &Harness, name: &str, network: &str, targets: &[(String, u16)]) -> String {
    h.deploy_sh(
        name,
        PROBE,
        json!({ "hark.network": network, "hark.timeout": "60s" }),
    )
    .await;
    h.gw.wait_status(name, "became available", |s| s["availableReplicas"] == 1)
        .await;
    let (own, _) = container_address(h, name);
    let input: String = std::iter::once(&(own.clone(), 8080))
        .chain(targets)
        .map(|(ip, port)| format!("{ip} {port}\n"))
        .collect();
    let (status, body) = h.gw.invoke(name, &input).await;
    assert_eq!(status, 200, "{body}");
    let control = format!("{own} 8080 reached\n");
    assert!(
        body.starts_with(&control),
        "the prober cannot reach even itself: {body}"
    );
    body[control.len()..].to_owned()
}

#[tokio::test]
async fn a_docker_function_reaches_neither_another_function_nor_the_host() {
    let Some(h) = Harness::start(Kind::Docker) else {
        return;
    };
    let host = HostService::start();
    deploy_hello(&h, "target", json!({})).await;
    let (target, network) = container_address(&h, "target");
    let settings = network_settings(&network);
    assert_eq!(settings["Internal"], true, "{settings}");
    assert_eq!(
        settings["Options"]["com.docker.network.bridge.enable_icc"], "false",
        "{settings}"
    );
    let gateway_ip = host_address(&network);
    let answer = probe(
        &h,
        "prober",
        "internal",
        &[
            (target.clone(), 8080),
            (gateway_ip.clone(), host.port),
            ("169.254.169.254".to_owned(), 80),
        ],
    )
    .await;
    assert_eq!(
        answer,
        format!(
            "{target} 8080 blocked\n{gateway_ip} {} blocked\n169.254.169.254 80 blocked\n",
            host.port
        )
    );
    assert_eq!(host.accepted.load(Ordering::SeqCst), 0);
    // The gateway still calls both.
    assert_eq!(
        h.gw.invoke("target", "gateway").await,
        (200, "Hello, gateway!\n".to_owned())
    );
    assert_eq!(h.gw.invoke("prober", "").await.0, 200);
}

#[tokio::test]
async fn an_internet_function_gets_a_route_out_but_still_no_neighbours() {
    let Some(h) = Harness::start(Kind::Docker) else {
        return;
    };
    let host = HostService::start();
    deploy_hello(&h, "open-target", json!({ "hark.network": "internet" })).await;
    let (target, network) = container_address(&h, "open-target");
    assert!(network.ends_with("-internet"), "{network}");
    let settings = network_settings(&network);
    // A route out (not internal), yet no traffic between its containers.
    assert_eq!(settings["Internal"], false, "{settings}");
    assert_eq!(
        settings["Options"]["com.docker.network.bridge.enable_icc"], "false",
        "{settings}"
    );
    // Nothing answers 169.254.169.254 here, so the fence is read off the rules: the
    // network's bridge may not forward to the metadata address.
    let id = settings["Id"].as_str().unwrap();
    let bridge = format!("br-{}", &id[..12]);
    let rules = std::process::Command::new("iptables")
        .args(["-w", "-S", "DOCKER-USER"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        rules.lines().any(|r| r.contains(&format!("-i {bridge} "))
            && r.contains("-d 169.254.169.254/32")
            && r.ends_with("-j DROP")),
        "no metadata fence for {bridge}:\n{rules}"
    );
    let gateway_ip = host_address(&network);
    let answer = probe(
        &h,
        "open-prober",
        "internet",
        &[(target.clone(), 8080), (gateway_ip.clone(), host.port)],
    )
    .await;
    assert_eq!(
        answer,
        format!(
            "{target} 8080 blocked\n{gateway_ip} {} blocked\n",
            host.port
        )
    );
    assert_eq!(host.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(
        h.gw.invoke("open-target", "gateway").await,
        (200, "Hello, gateway!\n".to_owned())
    );
}

#[tokio::test]
async fn a_process_limit_and_a_read_only_root_hold_with_a_writable_tmp() {
    let Some(h) = Harness::start(Kind::Docker) else {
        return;
    };
    h.deploy_sh(
        "forker",
        "for i in $(seq 60); do sleep 1 & done; echo all started",
        json!({ "hark.limits.processes": "20" }),
    )
    .await;
    let (status, body) = h.gw.invoke("forker", "").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("can't fork"), "{body}");
    let id = &h.running("forker")[0];
    assert_eq!(
        docker(&["inspect", "--format", "{{.HostConfig.PidsLimit}}", id]),
        "20"
    );

    // Read-only by default: no readOnlyRootFilesystem, no annotation.
    let writes = "touch /x 2>&1; echo t > /tmp/t && cat /tmp/t";
    h.deploy_sh("writer", writes, json!({})).await;
    let (status, body) = h.gw.invoke("writer", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "touch: /x: Read-only file system\nt\n");
    let id = &h.running("writer")[0];
    let host: Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .HostConfig}}",
        id,
    ]))
    .unwrap();
    assert_eq!(host["ReadonlyRootfs"], true, "{host}");
    assert_eq!(host["PidsLimit"], 256, "{host}");

    // The opt-out: the root is writable (by root; the function runs as nobody).
    h.deploy_sh(
        "scribbler",
        writes,
        json!({ "hark.readonly_root": "false" }),
    )
    .await;
    let (status, body) = h.gw.invoke("scribbler", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "touch: /x: Permission denied\nt\n");
}

/// GET `url` with `credential` (when given) in the credential header.
async fn call_directly(url: &str, credential: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client.get(url);
    if let Some(credential) = credential {
        request = request.header("x-hark-credential", credential);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_container_called_without_its_own_credential_answers_401() {
    let Some(h) = Harness::start(Kind::Docker) else {
        return;
    };
    deploy_hello(&h, "guarded", json!({})).await;
    deploy_hello(&h, "other", json!({})).await;
    let (ip, _) = container_address(&h, "guarded");
    let url = format!("http://{ip}:8080/?name=direct");
    let credential = |name: &str| {
        std::fs::read_to_string(
            h.gw.data
                .join("docker-credentials")
                .join(name)
                .join("credential"),
        )
        .unwrap()
    };
    let (own, other) = (credential("guarded"), credential("other"));
    assert_ne!(own, other);
    // A local process: no credential, another function's, then its own.
    assert_eq!(call_directly(&url, None).await.0, 401);
    assert_eq!(call_directly(&url, Some(&other)).await.0, 401);
    assert_eq!(call_directly(&url, Some(&own)).await.0, 200);
    assert_eq!(
        h.gw.invoke("guarded", "gateway").await,
        (200, "Hello, gateway!\n".to_owned())
    );
    // The refusal is logged, without the credential.
    let id = &h.running("guarded")[0];
    let logs = docker(&["logs", id]);
    let logs = logs
        + &String::from_utf8_lossy(
            &std::process::Command::new("docker")
                .args(["logs", id])
                .output()
                .unwrap()
                .stderr,
        );
    assert!(logs.contains("refused GET / with 401"), "{logs}");
    assert!(!logs.contains(other.trim()) && !logs.contains(own.trim()));
    // Removing the function removes its credential.
    h.gw.request(reqwest::Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "other" }))
        .send()
        .await
        .unwrap();
    assert!(!h.gw.data.join("docker-credentials/other").exists());
}

#[tokio::test]
async fn a_swarm_task_called_without_its_own_credential_answers_401() {
    let Some(h) = Harness::start(Kind::Swarm) else {
        return;
    };
    deploy_hello(&h, "guarded", json!({})).await;
    deploy_hello(&h, "other", json!({})).await;
    let id = &h.running("guarded")[0];
    // The task's watchdog, published in host mode on every address of the node.
    let ports: Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Ports}}",
        id,
    ]))
    .unwrap();
    let port = ports["8080/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("http://127.0.0.1:{port}/?name=direct");
    let credential = |name: &str| {
        std::fs::read_to_string(h.gw.data.join("swarm-credentials").join(name)).unwrap()
    };
    let (own, other) = (credential("guarded"), credential("other"));
    assert_ne!(own, other);
    assert_eq!(call_directly(&url, None).await.0, 401);
    assert_eq!(call_directly(&url, Some(&other)).await.0, 401);
    assert_eq!(call_directly(&url, Some(&own)).await.0, 200);
    assert_eq!(
        h.gw.invoke("guarded", "gateway").await,
        (200, "Hello, gateway!\n".to_owned())
    );
    // Each function's credential is a Swarm secret of its own, removed with it.
    let secrets = |name: &str| {
        docker(&[
            "secret",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.hark.function={name}"),
            "--filter",
            "label=com.hark.secret=hark credential",
        ])
    };
    assert_eq!(secrets("other").lines().count(), 1);
    h.gw.request(reqwest::Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "other" }))
        .send()
        .await
        .unwrap();
    assert_eq!(secrets("other"), "");
    assert!(!h.gw.data.join("swarm-credentials/other").exists());
}

/// Removes the networks `names` (and their containers and fence rules) when dropped.
struct NetworkGuard(Vec<String>);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            for id in docker(&["ps", "-aq", "--filter", &format!("network={name}")]).lines() {
                docker(&["rm", "-f", id]);
            }
            let id = docker(&["network", "inspect", "--format", "{{.Id}}", name]);
            if id.len() >= 12 {
                crate::contract::remove_fence_rules(&format!("br-{}", &id[..12]));
                docker(&["network", "rm", name]);
            }
        }
    }
}

#[tokio::test]
async fn a_network_of_an_earlier_version_is_replaced_at_start() {
    let Some(fixture) = crate::contract::docker_fixture() else {
        return;
    };
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let old = format!("hark-test-old-{run}");
    let fenced = format!("{old}-fenced");
    let _networks = NetworkGuard(vec![old.clone(), fenced.clone()]);
    // What an earlier Hark made: a plain bridge, its containers reaching each other.
    docker(&[
        "network",
        "create",
        "--label",
        "com.hark.network=true",
        &old,
    ]);
    let hello = json!({
        "service": "hello",
        "image": fixture.image,
        "envProcess": crate::util::hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http" },
    });
    let start = |data: &std::path::Path| {
        crate::util::Gateway::start_in(data, &["--provider", "docker", "--docker-network", &old])
    };

    // Another program's container still uses it: Hark leaves it and uses another.
    let stray = docker(&[
        "run",
        "-d",
        "--network",
        &old,
        "--entrypoint",
        "/bin/sh",
        &fixture.image,
        "-c",
        "sleep 120",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start(dir.path());
    let _containers = crate::contract::ContainerGuard::for_data(dir.path());
    gw.deploy(hello).await;
    assert_eq!(
        gw.invoke("hello", "a").await,
        (200, "Hello, a!\n".to_owned())
    );
    let settings = network_settings(&fenced);
    assert_eq!(settings["Internal"], true, "{settings}");
    assert_eq!(network_settings(&old)["Internal"], false);
    assert!(gw.stop());

    // Once it is free, the next start replaces it (and deploys the stored function).
    docker(&["rm", "-f", &stray]);
    let mut gw = start(dir.path());
    assert_eq!(
        gw.invoke("hello", "b").await,
        (200, "Hello, b!\n".to_owned())
    );
    let settings = network_settings(&old);
    assert_eq!(settings["Internal"], true, "{settings}");
    assert_eq!(
        settings["Options"]["com.docker.network.bridge.enable_icc"], "false",
        "{settings}"
    );
    assert!(gw.stop());
}

#[tokio::test]
async fn the_watchdog_answers_only_its_credential_and_hides_it_from_the_function() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credential");
    std::fs::write(&file, "s3cr3t-credential\n").unwrap();
    let mut child = std::process::Command::new(crate::util::hark_bin())
        .args(["watchdog", "--port", "0", "--bind", "127.0.0.1"])
        .args(["--fprocess", "sh -c 'env | grep -ci credential; true'"])
        .env("HARK_CREDENTIAL_FILE", &file)
        .env("HARK_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
        if let Some(addr) = line.split(" mode) on ").nth(1) {
            break addr.trim().to_owned();
        }
    };
    let url = format!("http://{addr}/");
    assert_eq!(call_directly(&url, None).await.0, 401);
    assert_eq!(
        call_directly(&format!("http://{addr}/_/ready"), None)
            .await
            .0,
        401
    );
    assert_eq!(call_directly(&url, Some("s3cr3t-credentia")).await.0, 401);
    // With it: the function runs, and only the file's path variable names a credential
    // (no `Http_X_Hark_Credential`).
    assert_eq!(
        call_directly(&url, Some("s3cr3t-credential")).await,
        (200, "1\n".to_owned())
    );
    let _ = child.kill();
    let _ = child.wait();
    let logged: Vec<String> = rx.try_iter().collect();
    assert!(
        logged.iter().any(|l| l.contains("refused GET / with 401")),
        "{logged:?}"
    );
    assert!(!logged.iter().any(|l| l.contains("s3cr3t")), "{logged:?}");
}

#[tokio::test]
async fn a_docker_function_still_reaches_the_gateways_webdriver_listener() {
    let Some(h) = Harness::start(Kind::Docker) else {
        return;
    };
    // The one port of the host the fence leaves open to containers.
    let script = r#"u=${HARK_WEBDRIVER_URL#http://}; hp=${u%%/*}; [ -n "$hp" ] || { echo none; exit 0; }; if { printf "GET /status HTTP/1.0\r\n\r\n"; sleep 1; } | nc -w 2 ${hp%:*} ${hp#*:} 2>/dev/null | grep -q HTTP; then echo reached; else echo blocked; fi"#;
    h.deploy_sh("browsing", script, json!({})).await;
    let (status, body) = h.gw.invoke("browsing", "").await;
    assert_eq!(status, 200, "{body}");
    if body == "none\n" && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: browser automation is off here (no Chromium?), so functions get no HARK_WEBDRIVER_URL");
        return;
    }
    assert_eq!(body, "reached\n");
}
