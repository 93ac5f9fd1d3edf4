//! The gateway as a container: `hark build --gateway-image` makes `hark/gateway:TAG`
//! on the local engine, and a container of it serves the stack file mounted at
//! /etc/hark/hark.yml, deploys and runs a function through its API, reports healthy,
//! stops cleanly on SIGTERM and keeps its functions in its volume.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::contract::{docker, docker_fixture};
use crate::util::hark_bin;

/// Removes the test's container (and its volume) and image, whether it passed or not.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        docker(&["rm", "-f", "-v", &self.container]);
        docker(&["rmi", "-f", &self.image]);
    }
}

/// `docker ARGS`, asserting it succeeded; its stdout.
pub(crate) fn docker_ok(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs `hark build --gateway-image --tag TAG`, asserting it succeeded; what it said.
pub(crate) fn build_gateway_image(tag: &str) -> String {
    let built = Command::new(hark_bin())
        .args(["build", "--gateway-image", "--tag", tag])
        .output()
        .expect("run hark build");
    assert!(
        built.status.success(),
        "hark build --gateway-image failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    String::from_utf8_lossy(&built.stderr).into_owned()
}

/// Waits until the container's gateway answers `/healthz`, then gives its URL and admin
/// token (read inside the container: nothing in the image gives it away).
async fn reach(client: &reqwest::Client, container: &str) -> (String, String) {
    let port = docker_ok(&["port", container, "8080/tcp"]);
    let port = port
        .lines()
        .next()
        .and_then(|l| l.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .unwrap_or_else(|| panic!("no published port: {port:?}"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = client.get(format!("{url}/healthz")).send().await;
        if matches!(&up, Ok(r) if r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway in {container} never answered /healthz ({up:?}); its output:\n{}",
            logs(container)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token = docker_ok(&["exec", container, "cat", "/var/lib/hark/admin-token"]);
    (url, token)
}

pub(crate) fn logs(container: &str) -> String {
    let output = Command::new("docker")
        .args(["logs", container])
        .output()
        .expect("run the docker CLI");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_gateway_image_serves_stops_cleanly_and_keeps_its_functions() {
    // The shared fixture built (and will remove) the watchdog image this one starts from.
    if docker_fixture().is_none() {
        return;
    }
    let run = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let image = format!("hark/gateway:{run}");
    let container = format!("hark-gateway-{run}");
    let _cleanup = Cleanup {
        container: container.clone(),
        image: image.clone(),
    };
    let said = build_gateway_image(run);
    assert!(said.contains(&format!("built {image}")), "{said}");

    // The stack file is read from the working directory, /etc/hark.
    let stack = tempfile::tempdir().unwrap();
    std::fs::write(
        stack.path().join("hark.yml"),
        "functions:\n  shout:\n    fprocess: tr a-z A-Z\n",
    )
    .unwrap();
    let mount = format!(
        "{}:/etc/hark/hark.yml:ro",
        stack.path().join("hark.yml").display()
    );
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &container,
        "-p",
        "127.0.0.1::8080",
        "-v",
        &mount,
        &image,
    ]);
    let client = reqwest::Client::new();
    let (url, token) = reach(&client, &container).await;
    let shout = client
        .post(format!("{url}/function/shout"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(shout.status(), 200, "{}", logs(&container));
    assert_eq!(shout.text().await.unwrap(), "HELLO");

    // A function deployed through the API runs in the container (busybox's `cat`).
    let deployed = client
        .post(format!("{url}/system/functions"))
        .bearer_auth(&token)
        .json(&json!({ "service": "echo", "envProcess": "cat" }))
        .send()
        .await
        .unwrap();
    let status = deployed.status();
    assert_eq!(
        status,
        202,
        "{}\n{}",
        deployed.text().await.unwrap(),
        logs(&container)
    );
    let invoke = |body: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let answer = client
                .post(format!("{url}/function/echo"))
                .body(body)
                .send()
                .await
                .unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    assert_eq!(
        invoke("from the host").await,
        (200, "from the host".to_owned()),
        "{}",
        logs(&container)
    );
    // The management API is not open to a stranger because it is reached over a bridge.
    let stranger = client
        .request(Method::GET, format!("{url}/system/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);

    // The image's health check runs the gateway's /healthz.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = docker_ok(&[
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &container,
        ]);
        if health == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline && health != "unhealthy",
            "the container's health is {health:?}\n{}",
            logs(&container)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // `docker stop` sends SIGTERM: the gateway drains and exits 0, well before the kill.
    docker_ok(&["stop", "--time", "20", &container]);
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &container]),
        "0",
        "{}",
        logs(&container)
    );
    // Started again on the same volume: the function is still deployed, the same token
    // still works.
    docker_ok(&["start", &container]);
    let (url_again, token_again) = reach(&client, &container).await;
    assert_eq!(token_again, token);
    let answer = client
        .post(format!("{url_again}/function/echo"))
        .body("after a restart")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", logs(&container));
    assert_eq!(answer.text().await.unwrap(), "after a restart");
}
