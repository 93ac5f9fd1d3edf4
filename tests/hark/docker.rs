//! What only the docker provider promises, against the real engine: locked-down
//! containers, clear errors (missing image, out-of-memory kill), rolling updates that
//! keep serving, and containers found again after the gateway is killed.

use reqwest::Method;
use serde_json::{json, Value};

use crate::contract::{docker, docker_fixture, ContainerGuard, Harness, Kind};
use crate::util::{hello_bin, Gateway};

#[tokio::test]
async fn a_missing_image_is_refused_with_the_build_hint() {
    let Some(h) = Harness::start(Kind::Docker) else {
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

#[tokio::test]
async fn containers_run_locked_down_with_a_writable_tmp() {
    let Some(h) = Harness::start(Kind::Docker) else {
        return;
    };
    h.deploy(json!({
        "service": "jail",
        "envProcess": "sh -c 'id -u; echo scratch > /tmp/t && cat /tmp/t; (echo x > /home/app/x) 2>/dev/null || echo read-only'",
        "readOnlyRootFilesystem": true,
        "limits": { "memory": "64Mi", "cpu": "0.5" },
        "labels": { "team": "bots" },
    }))
    .await;
    assert_eq!(
        h.gw.invoke("jail", "").await,
        (200, "65534\nscratch\nread-only\n".to_owned())
    );
    let id = &h.running("jail")[0];
    let host: Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .HostConfig}}",
        id,
    ]))
    .unwrap();
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{host}");
    assert_eq!(host["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Memory"], 64 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["Privileged"], false);
    // No port on the host: the gateway calls the container at its network address.
    assert!(
        host["PortBindings"]
            .as_object()
            .is_none_or(|p| p.is_empty()),
        "{host}"
    );
    let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", id]);
    assert!(labels.contains(r#""team":"bots""#), "{labels}");
    // Usage is measured for a function with running containers.
    let status = h.gw.status("jail").await;
    assert!(
        status["usage"]["totalMemoryBytes"].as_f64().unwrap_or(0.0) > 0.0,
        "{status}"
    );
}

#[tokio::test]
async fn an_out_of_memory_kill_is_reported_in_the_activation() {
    let Some(h) = Harness::start(Kind::Docker) else {
        return;
    };
    h.deploy(json!({
        "service": "hog",
        "envProcess": "sh -c 'x=$(head -c 200000000 /dev/zero | tr \"\\0\" a); echo ${#x}'",
        "limits": { "memory": "32Mi" },
    }))
    .await;
    let (status, body) = h.gw.invoke("hog", "").await;
    assert_eq!(status, 500, "{body}");
    let activations: Value = h.gw.get_json("/system/activations?function=hog").await;
    let error = activations[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("out of memory"), "{activations}");
    // Only the function's process was killed; the container and its watchdog live on.
    let running = h.running("hog");
    assert_eq!(running.len(), 1);
    let (status, body) = h.gw.invoke("hog", "").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(h.running("hog"), running);
}

#[tokio::test]
async fn an_update_keeps_the_old_container_serving_until_the_new_one_is_ready() {
    let Some(h) = Harness::start(Kind::Docker) else {
        return;
    };
    let old = h.update_hello_while_calling_it().await;
    let new = h.running("hello");
    assert_eq!(new.len(), 1, "{new:?}");
    assert_ne!(new, old, "the container was not replaced");
}

#[tokio::test]
async fn containers_are_found_again_after_the_gateway_is_killed() {
    let Some(fixture) = docker_fixture() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args = ["--provider", "docker", "--docker-network", &fixture.network];
    let mut gw = Gateway::start_in(dir.path(), &args);
    let guard = ContainerGuard::for_data(dir.path());
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
    let before = docker(&["ps", "-q", "--filter", &label]);
    assert!(!before.is_empty());
    gw.kill_hard();
    // The container outlives a killed gateway...
    assert_eq!(docker(&["ps", "-q", "--filter", &label]), before);
    // ...and the next gateway on the same data directory takes it over.
    let mut gw = Gateway::start_in(dir.path(), &args);
    assert_eq!(
        gw.invoke("hello", "again").await,
        (200, "Hello, again!\n".to_owned())
    );
    assert_eq!(docker(&["ps", "-q", "--filter", &label]), before);
    // A clean stop removes the containers.
    assert!(gw.stop());
    assert_eq!(docker(&["ps", "-aq", "--filter", &label]), "");
    drop(guard);
}
