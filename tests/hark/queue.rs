//! Async calls through the durable queue: callbacks, retries, dead letters, cancelling,
//! overload, and no lost call when the gateway is killed. The functions leave traces in
//! folders of the test's, which a sandboxed function may not write: the gateways run with
//! `--sandbox off` (`sandbox.rs` tests the sandbox; these, the queue).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use crate::util::Gateway;

/// A local HTTP server recording every callback it receives.
struct CallbackServer {
    url: String,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

impl CallbackServer {
    async fn start() -> CallbackServer {
        let received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/done",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((headers, body));
                    "thanks"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/done", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        CallbackServer { url, received }
    }

    async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Bytes)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} callbacks arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn enqueue(gw: &Gateway, name: &str, body: &str, callback: Option<&str>) -> String {
    let mut request = gw
        .client
        .post(format!("{}/async-function/{name}", gw.url))
        .body(body.to_owned());
    if let Some(url) = callback {
        request = request.header("X-Callback-Url", url);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    response.headers()["x-call-id"].to_str().unwrap().to_owned()
}

async fn queue(gw: &Gateway, query: &str) -> Vec<Value> {
    gw.get_json(&format!("/system/queue?{query}")).await
}

async fn wait_state(gw: &Gateway, call_id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = queue(gw, "limit=1000").await;
        if let Some(entry) = entries.iter().find(|e| e["callId"] == call_id) {
            if entry["state"] == state {
                return entry.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{call_id} never became {state}: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn an_async_call_runs_and_its_result_is_posted_to_the_callback() {
    // The test's receiver is on loopback, which callbacks may reach only when allowed.
    let gw = Gateway::start_with(&["--egress-allow", "127.0.0.1", "--sandbox", "off"]);
    let callbacks = CallbackServer::start().await;
    gw.deploy_sh("shout", "tr a-z A-Z", json!({})).await;
    let id = enqueue(&gw, "shout", "queued words", Some(&callbacks.url)).await;
    let got = callbacks.wait_for(1).await;
    let (headers, body) = &got[0];
    assert_eq!(body.as_ref(), b"QUEUED WORDS");
    assert_eq!(headers["x-call-id"], id.as_str());
    assert_eq!(headers["x-function-status"], "200");
    assert_eq!(headers["x-function-name"], "shout");
    assert!(headers["x-duration-seconds"]
        .to_str()
        .unwrap()
        .parse::<f64>()
        .is_ok());
    let entry = wait_state(&gw, &id, "done").await;
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["callbackState"], "delivered");
    // The activation record names the trigger.
    let activations: Vec<Value> = gw.get_json("/system/activations?function=shout").await;
    assert_eq!(activations[0]["trigger"], "async");
    assert_eq!(activations[0]["callId"], id.as_str());
}

#[tokio::test]
async fn failures_are_retried_with_backoff_then_dead_lettered_and_can_be_retried() {
    let gw = Gateway::start_with(&["--sandbox", "off"]);
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("attempts");
    // Fails twice, then succeeds.
    gw.deploy_sh(
        "flaky",
        &format!(
            "echo x >> {0}; [ $(wc -l < {0}) -ge 3 ] || exit 1; echo ok",
            counter.display()
        ),
        json!({ "hark.retries": "3", "hark.retry.backoff": "50ms" }),
    )
    .await;
    let id = enqueue(&gw, "flaky", "", None).await;
    let entry = wait_state(&gw, &id, "done").await;
    assert_eq!(entry["attempts"], 3);
    assert_eq!(entry["status"], 200);

    // Always fails: 1 attempt + 2 retries, then the dead-letter list.
    gw.deploy_sh(
        "broken",
        "exit 1",
        json!({ "hark.retries": "2", "hark.retry.backoff": "50ms" }),
    )
    .await;
    let id = enqueue(&gw, "broken", "", None).await;
    let entry = wait_state(&gw, &id, "dead").await;
    assert_eq!(entry["attempts"], 3);
    assert_eq!(entry["status"], 500);
    let dead = queue(&gw, "state=dead").await;
    assert_eq!(dead.len(), 1);
    let activations: Vec<Value> = gw.get_json("/system/activations?function=broken").await;
    assert_eq!(activations.len(), 3, "one activation per attempt");

    // Fixed, and retried from the dead-letter list.
    gw.deploy_sh_update("broken", "echo fixed").await;
    let response = gw
        .request(Method::POST, &format!("/system/queue/{id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let entry = wait_state(&gw, &id, "done").await;
    assert_eq!(entry["status"], 200);
    assert!(queue(&gw, "state=dead").await.is_empty());
}

#[tokio::test]
async fn a_pending_call_can_be_cancelled_and_never_runs() {
    let gw = Gateway::start_with(&["--sandbox", "off"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran");
    gw.deploy_sh(
        "one-at-a-time",
        &format!("sleep 1; cat >> {}", log.display()),
        json!({ "hark.async.concurrency": "1" }),
    )
    .await;
    let first = enqueue(&gw, "one-at-a-time", "first\n", None).await;
    wait_state(&gw, &first, "running").await;
    let second = enqueue(&gw, "one-at-a-time", "second\n", None).await;
    let response = gw
        .request(Method::DELETE, &format!("/async-function/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A running call cannot be cancelled; an unknown one is not found.
    let response = gw
        .request(Method::DELETE, &format!("/async-function/{first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let response = gw
        .request(Method::DELETE, "/async-function/no-such-call")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    wait_state(&gw, &first, "done").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "first\n");
    assert_eq!(wait_state(&gw, &second, "cancelled").await["attempts"], 0);
}

#[tokio::test]
async fn overload_answers_429_or_503_with_retry_after() {
    let gw = Gateway::start_with(&[
        "--max-inflight",
        "1",
        "--queue-max",
        "2",
        "--sandbox",
        "off",
    ]);
    gw.deploy_sh(
        "slow",
        "sleep 1; echo done",
        json!({ "hark.async.concurrency": "1" }),
    )
    .await;
    let (first, second) = tokio::join!(gw.invoke("slow", ""), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.client
            .post(format!("{}/function/slow", gw.url))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(first.0, 200);
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");

    enqueue(&gw, "slow", "", None).await;
    enqueue(&gw, "slow", "", None).await;
    let response = gw
        .client
        .post(format!("{}/async-function/slow", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("queue is full"),
        "{body}"
    );
}

#[tokio::test]
async fn functions_that_are_not_public_refuse_anonymous_callers() {
    let gw = Gateway::start_with(&["--sandbox", "off"]);
    gw.deploy_sh("internal", "echo inside", json!({ "hark.public": "false" }))
        .await;
    assert_eq!(gw.invoke("internal", "").await.0, 401);
    let response = gw
        .client
        .post(format!("{}/async-function/internal", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = gw
        .request(Method::POST, "/function/internal")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "inside\n");
}

#[tokio::test]
async fn no_accepted_call_is_lost_when_the_gateway_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("completed");
    let mut gw = Gateway::start_in(dir.path(), &["--sandbox", "off"]);
    gw.deploy_sh(
        "work",
        &format!("sleep 0.1; echo \"$HARK_CALL_ID\" >> {}", log.display()),
        json!({ "hark.async.concurrency": "4" }),
    )
    .await;
    let calls =
        (0..300).map(|i| enqueue(&gw, "work", Box::leak(i.to_string().into_boxed_str()), None));
    let accepted: Vec<String> = futures::future::join_all(calls).await;
    // Kill it while the queue is being worked through: some calls done, most not.
    let done = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    crate::util::eventually(
        "the first calls to complete",
        Duration::from_secs(30),
        || done() >= 8,
    )
    .await;
    gw.kill_hard();
    let done_before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        done_before < accepted.len(),
        "the queue was already empty; kill earlier"
    );

    let gw = Gateway::start_in(dir.path(), &["--sandbox", "off"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open = queue(&gw, "state=pending&limit=1000").await.len()
            + queue(&gw, "state=running&limit=1000").await.len();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} calls still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let completed: HashSet<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !completed.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted calls never completed, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(queue(&gw, "state=dead").await.is_empty());
    eprintln!(
        "completed before the kill: {done_before} of {}",
        accepted.len()
    );
}

/// Server-side request forgery: callbacks to private, loopback, link-local... addresses,
/// in any spelling or behind a name, are refused at enqueue with 400 unless allowed.
#[tokio::test]
async fn callbacks_to_special_addresses_are_refused_unless_allowed() {
    let gw = Gateway::start_with(&["--sandbox", "off"]);
    let callbacks = CallbackServer::start().await;
    gw.deploy_sh("shout", "tr a-z A-Z", json!({})).await;
    let port = reqwest::Url::parse(&callbacks.url).unwrap().port().unwrap();
    let refused = [
        callbacks.url.clone(),
        format!("http://localhost:{port}/done"),
        format!("http://2130706433:{port}/done"),
        format!("http://0x7f.0.0.1:{port}/done"),
        format!("http://0177.0.0.1:{port}/done"),
        format!("http://[::1]:{port}/done"),
        format!("http://[::ffff:127.0.0.1]:{port}/done"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://0.0.0.0/".to_owned(),
        "http://224.0.0.1/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ];
    for url in &refused {
        let response = gw
            .client
            .post(format!("{}/async-function/shout", gw.url))
            .header("X-Callback-Url", url)
            .body("x")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 400, "{url} was accepted: {body}");
        assert!(body.contains("X-Callback-Url"), "{url}: {body}");
    }
    assert!(
        queue(&gw, "limit=1000").await.is_empty(),
        "a refused call was queued"
    );
    assert!(gw
        .output_containing("X-Callback-Url not allowed")
        .contains("X-Callback-Url not allowed"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(callbacks.received.lock().unwrap().len(), 0);
}

/// The callback URL is checked again when the result is posted: a call queued while
/// loopback was allowed is not posted there by a gateway that no longer allows it.
#[tokio::test]
async fn callbacks_are_checked_again_when_the_result_is_posted() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let callbacks = CallbackServer::start().await;
    let mut gw = Gateway::start_in(
        dir.path(),
        &["--egress-allow", "127.0.0.0/8", "--sandbox", "off"],
    );
    gw.deploy_sh(
        "slow",
        &format!("echo run >> {}; sleep 2; echo late", started.display()),
        json!({}),
    )
    .await;
    let id = enqueue(&gw, "slow", "", Some(&callbacks.url)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the call never started");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    gw.kill_hard();

    let gw = Gateway::start_in(dir.path(), &["--sandbox", "off"]);
    wait_state(&gw, &id, "done").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let entry = loop {
        let entries = queue(&gw, "limit=1000").await;
        let entry = entries.into_iter().find(|e| e["callId"] == id.as_str());
        if let Some(e) = entry.as_ref().filter(|e| e["callbackState"] == "failed") {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "callback never failed: {entry:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["status"], 200);
    assert!(
        gw.output_containing("callback refused: its URL is not allowed")
            .contains("callback refused: its URL is not allowed"),
        "{}",
        gw.output()
    );
    assert_eq!(
        callbacks.received.lock().unwrap().len(),
        0,
        "posted to loopback"
    );
}
