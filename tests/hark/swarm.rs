//! What only the swarm provider promises, against the real engine on a single-node
//! swarm: locked-down services whose calls spread over every replica, Swarm secrets
//! removed with their function, clear errors (missing image, no engine), rolling updates
//! that keep serving, and services found again after the gateway is killed.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::contract::{docker, swarm_fixture, Harness, Kind, ServiceGuard};
use crate::util::{hark_bin, hello_bin, Gateway};

fn service_of(h: &Harness, name: &str) -> Value {
    let instance = std::fs::read_to_string(h.gw.data.join("swarm-instance")).unwrap();
    let label = format!("label=com.hark.function={name}");
    let owner = format!("label=com.hark.instance={}", instance.trim());
    let id = docker(&[
        "service", "ls", "-q", "--filter", &label, "--filter", &owner,
    ]);
    assert_eq!(id.lines().count(), 1, "services of {name}: {id:?}");
    let spec = docker(&["service", "inspect", "--format", "{{json .Spec}}", &id]);
    serde_json::from_str(&spec).unwrap()
}

#[tokio::test]
async fn services_run_locked_down_and_calls_spread_over_every_replica() {
    let Some(h) = Harness::start(Kind::Swarm) else {
        return;
    };
    let response =
        h.gw.request(Method::POST, "/system/secrets")
            .json(&json!({ "name": "token", "value": "t0k3n" }))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 201);
    h.deploy(json!({
        "service": "jail",
        "envProcess": "sh -c 'id -u; cat /etc/hostname; cat /var/openfaas/secrets/token; echo; (echo x > /home/app/x) 2>/dev/null || echo read-only; echo scratch > /tmp/t && cat /tmp/t'",
        "readOnlyRootFilesystem": true,
        "secrets": ["token"],
        "limits": { "memory": "64Mi", "cpu": "0.5" },
        "labels": { "team": "bots" },
    }))
    .await;
    let spec = service_of(&h, "jail");
    let container = &spec["TaskTemplate"]["ContainerSpec"];
    assert_eq!(container["ReadOnly"], true, "{container}");
    assert_eq!(container["CapabilityDrop"], json!(["ALL"]), "{container}");
    assert_eq!(container["Labels"]["team"], "bots");
    assert_eq!(
        spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"],
        64 * 1024 * 1024
    );
    assert_eq!(spec["TaskTemplate"]["Resources"]["Limits"]["Pids"], 256);
    assert_eq!(spec["UpdateConfig"]["Order"], "start-first", "{spec}");
    assert_eq!(spec["TaskTemplate"]["RestartPolicy"]["Condition"], "any");

    h.gw.scale("jail", 2).await;
    h.gw.wait_status("jail", "reached 2 replicas", |s| {
        s["availableReplicas"] == 2
    })
    .await;
    assert_eq!(h.running("jail").len(), 2);
    let mut hosts = HashSet::new();
    for _ in 0..6 {
        let (status, body) = h.gw.invoke("jail", "").await;
        assert_eq!(status, 200, "{body}");
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[0], "65534", "{body}");
        assert_eq!(&lines[2..], ["t0k3n", "read-only", "scratch"], "{body}");
        hosts.insert(lines[1].to_owned());
    }
    assert_eq!(
        hosts.len(),
        2,
        "calls did not reach both replicas: {hosts:?}"
    );

    // The Swarm secrets (the function's and its credential) go with the function.
    let owner = format!("label=com.hark.instance={}", h_instance(&h));
    assert_eq!(
        docker(&["secret", "ls", "-q", "--filter", &owner])
            .lines()
            .count(),
        2
    );
    let response =
        h.gw.request(Method::DELETE, "/system/functions")
            .json(&json!({ "functionName": "jail" }))
            .send()
            .await
            .unwrap();
    assert!(response.status().is_success());
    assert_eq!(docker(&["secret", "ls", "-q", "--filter", &owner]), "");
    assert_eq!(docker(&["service", "ls", "-q", "--filter", &owner]), "");
}

fn h_instance(h: &Harness) -> String {
    std::fs::read_to_string(h.gw.data.join("swarm-instance"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_missing_image_is_refused_with_the_build_hint() {
    let Some(h) = Harness::start(Kind::Swarm) else {
        return;
    };
    let response =
        h.gw.request(Method::POST, "/system/functions")
            .json(&json!({ "service": "ghost", "image": "hark/no-such-image:none" }))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("hark/no-such-image:none") && body.contains("hark build ghost"),
        "{body}"
    );
}

#[test]
fn an_unreachable_engine_is_named_with_the_socket_tried() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(hark_bin())
        .arg("--data")
        .arg(dir.path())
        .args(["up", "--port", "0", "--provider", "swarm"])
        .current_dir(dir.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the Docker Engine at unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_update_keeps_the_old_task_serving_until_the_new_one_is_ready() {
    let Some(h) = Harness::start(Kind::Swarm) else {
        return;
    };
    let old = h.update_hello_while_calling_it().await;
    let service = service_of(&h, "hello");
    let env = service["TaskTemplate"]["ContainerSpec"]["Env"].to_string();
    assert!(env.contains("VERSION=2"), "{env}");
    // The old task stops once the new one runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let new = h.running("hello");
        if new.len() == 1 && new != old {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task was not replaced: {new:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn services_are_found_again_after_the_gateway_is_killed() {
    let Some(fixture) = swarm_fixture() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args = ["--provider", "swarm", "--swarm-network", &fixture.network];
    let mut gw = Gateway::start_in(dir.path(), &args);
    let guard = ServiceGuard::for_data(dir.path());
    gw.deploy(json!({
        "service": "hello",
        "image": fixture.image,
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    let label = format!("label=com.hark.instance={}", guard.instance);
    let services = docker(&["service", "ls", "-q", "--filter", &label]);
    let tasks = docker(&["ps", "-q", "--filter", &label]);
    assert_eq!(services.lines().count(), 1);
    gw.kill_hard();
    // The service outlives a killed gateway...
    assert_eq!(
        docker(&["service", "ls", "-q", "--filter", &label]),
        services
    );
    // ...and the next gateway on the same data directory takes it over, tasks and all.
    let mut gw = Gateway::start_in(dir.path(), &args);
    assert_eq!(
        gw.invoke("hello", "again").await,
        (200, "Hello, again!\n".to_owned())
    );
    assert_eq!(
        docker(&["service", "ls", "-q", "--filter", &label]),
        services
    );
    assert_eq!(docker(&["ps", "-q", "--filter", &label]), tasks);
    // A clean stop removes the service and its containers.
    assert!(gw.stop());
    assert_eq!(docker(&["service", "ls", "-q", "--filter", &label]), "");
    assert_eq!(docker(&["ps", "-q", "--filter", &label]), "");
    drop(guard);
}
