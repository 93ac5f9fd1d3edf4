//! What only the process provider promises, through the gateway: process groups killed
//! at the time limit, concurrency limits, bounded memory, the secrets API, and replicas
//! that die with the gateway. The behaviour every provider shares is in `contract.rs`.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::util::{children_named, eventually, hello_bin, Gateway};

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
    // The process group was killed: no `sh` is left behind (reaped within moments).
    let pid = gw.pid();
    eventually(
        "the timed-out call's sh to be gone",
        Duration::from_secs(5),
        || children_named(pid, "sh").is_empty(),
    )
    .await;
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

/// Out of memory, the kernel kills the function, never the gateway (or, in a container,
/// the watchdog serving it): CI once lost a container's watchdog to its function's OOM.
#[tokio::test]
async fn a_function_is_the_oom_killers_first_choice_and_the_gateway_is_not() {
    let gw = Gateway::start();
    // The score is set before the program runs (by the fork-mode child, before exec); the
    // body is read first all the same.
    gw.deploy_sh(
        "score",
        "cat > /dev/null; cat /proc/self/oom_score_adj",
        json!({}),
    )
    .await;
    assert_eq!(gw.invoke("score", "").await, (200, "1000\n".to_owned()));
    let gateway = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", gw.pid())).unwrap();
    assert_eq!(gateway.trim(), "0");
}

#[tokio::test]
async fn secrets_are_files_the_function_reads_and_never_logged() {
    let gw = Gateway::start();
    let value = "s3cr3t-value-4417";
    crate::util::register_secret(value);
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
