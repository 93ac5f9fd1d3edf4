//! The process provider through the gateway: fork and http modes, scaling, crashes,
//! time limits, concurrency limits, secrets and logs.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::util::{children_named, hello_bin, Gateway};

#[tokio::test]
async fn fork_mode_passes_the_request_through_stdin_and_http_variables() {
    let gw = Gateway::start();
    gw.deploy_sh(
        "env",
        r#"printf "%s|%s|%s|%s|" "$Http_Method" "$Http_Path" "$Http_Query" "$Http_X_Custom"; cat"#,
        json!({}),
    )
    .await;
    let response = gw
        .client
        .put(format!("{}/function/env/some/path?a=1&b=2", gw.url))
        .header("X-Custom", "yes")
        .header("X-Call-Id", "my-call-1")
        .body("the body")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-call-id"], "my-call-1");
    assert!(response.headers().contains_key("x-duration-seconds"));
    assert_eq!(
        response.text().await.unwrap(),
        "PUT|/some/path|a=1&b=2|yes|the body"
    );

    // A call without an id gets a fresh one.
    let response = gw
        .client
        .post(format!("{}/function/env", gw.url))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-call-id"].to_str().unwrap().to_owned();
    assert!(id.len() >= 32, "{id}");
}

#[tokio::test]
async fn a_failing_fork_function_answers_500_and_its_stderr_is_logged() {
    let gw = Gateway::start();
    gw.deploy_sh("fails", "echo something broke >&2; exit 3", json!({}))
        .await;
    let (status, body) = gw.invoke("fails", "").await;
    assert_eq!(status, 500);
    assert!(
        body.contains("exit status 3") && body.contains("something broke"),
        "{body}"
    );
    assert!(gw
        .log_texts("fails")
        .await
        .contains(&"something broke".to_owned()));
    let activations: serde_json::Value = gw
        .request(Method::GET, "/system/activations?function=fails")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record = &activations[0];
    assert_eq!(record["status"], 500);
    assert_eq!(record["trigger"], "http");
    assert!(record["error"]
        .as_str()
        .unwrap()
        .contains("something broke"));
}

#[tokio::test]
async fn a_call_past_its_time_limit_is_killed_and_answers_504() {
    let gw = Gateway::start();
    gw.deploy_sh(
        "slow",
        "sleep 30; echo late",
        json!({ "hark.timeout": "300ms" }),
    )
    .await;
    let started = std::time::Instant::now();
    let (status, body) = gw.invoke("slow", "").await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The process group was killed: no `sleep` is left behind.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sh = children_named(gw.pid(), "sh");
    assert!(sh.is_empty(), "sh processes left: {sh:?}");
}

#[tokio::test]
async fn max_inflight_answers_429_while_the_function_is_busy() {
    let gw = Gateway::start();
    gw.deploy_sh(
        "busy",
        "sleep 1; echo done",
        json!({ "hark.max_inflight": "1" }),
    )
    .await;
    let (first, second) = tokio::join!(gw.invoke("busy", ""), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.invoke("busy", "").await
    });
    assert_eq!(first, (200, "done\n".to_owned()));
    assert_eq!(second.0, 429, "{}", second.1);
    // Once the first call is done, the function takes calls again.
    assert_eq!(gw.invoke("busy", "").await.0, 200);
}

#[tokio::test]
async fn a_function_flooding_stderr_does_not_exhaust_memory() {
    let gw = Gateway::start();
    gw.deploy_sh(
        "noisy",
        "head -c 20000000 /dev/zero | tr \"\\\\0\" x >&2; echo ok",
        json!({}),
    )
    .await;
    let (status, body) = gw.invoke("noisy", "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let lines = gw.log_texts("noisy").await;
    assert!(
        lines.iter().all(|l| l.len() < 5000),
        "a log line was not cut"
    );
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", gw.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        rss_kib < 200 * 1024,
        "gateway RSS {rss_kib} KiB after 20 MB of stderr"
    );
}

#[tokio::test]
async fn http_mode_scales_up_down_to_zero_and_back() {
    let gw = Gateway::start();
    gw.deploy(json!({
        "service": "hello",
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    assert_eq!(
        gw.invoke("hello", "Ada").await,
        (200, "Hello, Ada!\n".to_owned())
    );

    gw.scale("hello", 3).await;
    let status = gw
        .wait_status("hello", "reached 3 replicas", |s| {
            s["availableReplicas"] == 3
        })
        .await;
    assert_eq!(status["replicas"], 3);
    assert_eq!(children_named(gw.pid(), "hello").len(), 3);
    for i in 0..9 {
        assert_eq!(
            gw.invoke("hello", &format!("n{i}")).await,
            (200, format!("Hello, n{i}!\n"))
        );
    }
    let instances: std::collections::HashSet<String> = gw
        .request(Method::GET, "/system/logs?name=hello")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["instance"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(instances.len(), 3, "{instances:?}");

    gw.scale("hello", 0).await;
    gw.wait_status("hello", "scaled to zero", |s| {
        s["availableReplicas"] == 0 && s["replicas"] == 0
    })
    .await;
    assert!(children_named(gw.pid(), "hello").is_empty());

    // A call at zero starts a replica and waits for it.
    assert_eq!(
        gw.invoke("hello", "again").await,
        (200, "Hello, again!\n".to_owned())
    );
    let status = gw.status("hello").await;
    assert_eq!(
        (
            status["replicas"].as_u64(),
            status["availableReplicas"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn a_crashed_http_replica_is_restarted() {
    let gw = Gateway::start();
    gw.deploy(json!({
        "service": "hello",
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    let pids = children_named(gw.pid(), "hello");
    assert_eq!(pids.len(), 1);
    unsafe {
        libc::kill(pids[0] as i32, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = children_named(gw.pid(), "hello");
        if now.len() == 1 && now[0] != pids[0] && gw.status("hello").await["availableReplicas"] == 1
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gw.invoke("hello", "back").await,
        (200, "Hello, back!\n".to_owned())
    );
    assert!(gw
        .log_texts("hello")
        .await
        .iter()
        .any(|l| l.contains("replica exited")));
}

#[tokio::test]
async fn secrets_are_files_the_function_reads_and_never_logged() {
    let gw = Gateway::start();
    let value = "s3cr3t-value-4417";
    let response = gw
        .request(Method::POST, "/system/secrets")
        .json(&json!({ "name": "api-key", "value": value }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    gw.deploy(json!({
        "service": "reader",
        "envProcess": "sh -c 'cat \"$HARK_SECRETS_DIR/api-key\"; stat -c %a \"$HARK_SECRETS_DIR/api-key\"'",
        "secrets": ["api-key"],
    }))
    .await;
    assert_eq!(
        gw.invoke("reader", "").await,
        (200, format!("{value}600\n"))
    );

    // Updating the secret rewrites the file.
    let response = gw
        .request(Method::PUT, "/system/secrets")
        .json(&json!({ "name": "api-key", "value": "rotated" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        gw.invoke("reader", "").await,
        (200, "rotated600\n".to_owned())
    );

    // Listing shows names only; a secret in use cannot be removed.
    let listed = gw
        .request(Method::GET, "/system/secrets")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(listed, r#"[{"name":"api-key"}]"#);
    let response = gw
        .request(Method::DELETE, "/system/secrets")
        .json(&json!({ "name": "api-key" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);

    // A function naming a secret that does not exist is refused.
    let response = gw
        .request(Method::POST, "/system/functions")
        .json(&json!({ "service": "other", "envProcess": "cat", "secrets": ["nope"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let output = gw.output();
    assert!(
        !output.contains(value) && !output.contains("rotated"),
        "a secret reached the log:\n{output}"
    );
}

#[tokio::test]
async fn logs_are_served_as_ndjson_and_followed_live() {
    let gw = Gateway::start();
    gw.deploy_sh("talker", "echo \"heard $(cat)\" >&2", json!({}))
        .await;
    gw.invoke("talker", "one").await;
    gw.invoke("talker", "two").await;
    let text = gw
        .request(Method::GET, "/system/logs?name=talker&tail=1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["name"], "talker");
    assert_eq!(lines[0]["text"], "heard two");
    assert!(lines[0]["instance"]
        .as_str()
        .unwrap()
        .starts_with("talker-"));
    assert!(lines[0]["timestamp"].as_str().is_some());

    let mut follow = gw
        .request(Method::GET, "/system/logs?name=talker&follow=true&tail=0")
        .send()
        .await
        .unwrap();
    gw.invoke("talker", "three").await;
    let chunk = tokio::time::timeout(Duration::from_secs(10), follow.chunk())
        .await
        .expect("followed log line")
        .unwrap()
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&chunk).unwrap();
    assert_eq!(line["text"], "heard three");
}

#[tokio::test]
async fn replicas_die_with_a_killed_gateway() {
    let mut gw = Gateway::start();
    gw.deploy(json!({
        "service": "hello",
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    let pids = children_named(gw.pid(), "hello");
    assert_eq!(pids.len(), 1);
    gw.kill_hard();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{}/stat", pids[0])).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "replica {} outlived the gateway",
            pids[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
