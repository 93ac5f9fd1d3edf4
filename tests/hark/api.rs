//! The OpenFaaS-compatible API: auth, function records, bad input, persistence and
//! draining on shutdown.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::util::{children_named, eventually, Gateway};

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    (
        status,
        body["error"].as_str().expect("an error message").to_owned(),
    )
}

#[tokio::test]
async fn system_routes_need_a_valid_token_with_the_right_scope() {
    let gw = Gateway::start();
    let url = format!("{}/system/functions", gw.url);

    let (status, message) = error_of(gw.client.get(&url).send().await.unwrap()).await;
    assert_eq!(status, 401, "{message}");
    let (status, _) = error_of(
        gw.client
            .get(&url)
            .bearer_auth("not.a.jwt")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    // Signed with another key: forged.
    let forged = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4Iiwic2NvcGVzIjpbImFkbWluIl0sImlhdCI6MX0.c2lnbmF0dXJlLW9mLWFub3RoZXIta2V5LXh4eHh4eHh4eHg";
    let (status, _) = error_of(
        gw.client
            .get(&url)
            .bearer_auth(forged)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);

    // A read-only token reads but cannot deploy, and cannot mint an admin token.
    let minted: Value = gw
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["functions:read"], "ttl": "1h" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reader = minted["token"].as_str().unwrap();
    crate::util::register_secret(reader);
    assert!(minted["expiresAt"].is_string());
    assert_eq!(
        gw.client
            .get(&url)
            .bearer_auth(reader)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = gw
        .client
        .post(&url)
        .bearer_auth(reader)
        .json(&json!({ "service": "x", "envProcess": "cat" }))
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(response).await;
    assert_eq!(status, 403);
    assert!(message.contains("functions:write"), "{message}");
    let response = gw
        .client
        .post(format!("{}/system/tokens", gw.url))
        .bearer_auth(reader)
        .json(&json!({ "scopes": ["admin"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // A token that has expired is refused.
    let minted: Value = gw
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["functions:read"], "ttl": "1s" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap();
    let status = || async {
        gw.client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    };
    let minted_at = std::time::Instant::now();
    assert_eq!(status().await, 200, "a fresh token is refused");
    // Refused once its second is over (whole seconds: within about two).
    loop {
        match status().await {
            StatusCode::OK => {
                assert!(
                    minted_at.elapsed() < Duration::from_secs(5),
                    "the token outlived its ttl"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            refused => {
                assert_eq!(refused, 401);
                break;
            }
        }
    }

    // /healthz is open.
    assert_eq!(
        gw.client
            .get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn functions_annotated_auth_required_need_an_invoke_token() {
    let gw = Gateway::start();
    gw.deploy_sh(
        "private",
        "echo \"auth=${Http_Authorization:-none}\"",
        json!({ "hark.auth": "required" }),
    )
    .await;
    gw.deploy_sh("public", "echo open", json!({})).await;
    let (status, _) = error_of(
        gw.client
            .post(format!("{}/function/private", gw.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let invoker: Value = gw
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["functions:invoke"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    crate::util::register_secret(invoker["token"].as_str().unwrap());
    let response = gw
        .client
        .post(format!("{}/function/private", gw.url))
        .bearer_auth(invoker["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The function does not see Hark's token.
    assert_eq!(response.text().await.unwrap(), "auth=none\n");
    assert_eq!(gw.invoke("public", "").await, (200, "open\n".to_owned()));
}

#[tokio::test]
async fn function_records_follow_the_openfaas_shapes() {
    let gw = Gateway::start();
    gw.deploy(json!({
        "service": "echo",
        "image": "ignored/by-process:1",
        "envProcess": "cat",
        "envVars": { "GREETING": "hi" },
        "labels": { "team": "bots" },
        "annotations": { "topic": "demo" },
        "limits": { "memory": "64Mi" },
    }))
    .await;
    gw.invoke("echo", "a").await;
    gw.invoke("echo", "b").await;
    let status = gw.status("echo").await;
    assert_eq!(status["name"], "echo");
    assert_eq!(status["image"], "ignored/by-process:1");
    assert_eq!(status["envProcess"], "cat");
    assert_eq!(status["envVars"]["GREETING"], "hi");
    assert_eq!(status["labels"]["team"], "bots");
    assert_eq!(status["annotations"]["topic"], "demo");
    assert_eq!(status["limits"]["memory"], "64Mi");
    assert_eq!(status["replicas"], 1);
    assert_eq!(status["availableReplicas"], 1);
    assert_eq!(status["invocationCount"], 2);
    assert!(chrono_like(&status["createdAt"]));

    let list: Vec<Value> = gw.get_json("/system/functions").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "echo");

    // PUT updates in place; the environment change reaches the next call.
    let response = gw
        .request(Method::PUT, "/system/functions")
        .json(&json!({ "service": "echo", "envProcess": "sh -c 'echo $GREETING'", "envVars": { "GREETING": "hello" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(gw.invoke("echo", "").await, (200, "hello\n".to_owned()));

    let info: Value = gw.get_json("/system/info").await;
    assert_eq!(info["provider"]["provider"], "hark");
    assert_eq!(info["provider"]["orchestration"], "process");
    assert!(info["version"]["release"].is_string());

    let response = gw
        .request(Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "echo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(gw.invoke("echo", "").await.0, 404);
    assert_eq!(
        gw.request(Method::GET, "/system/function/echo")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

fn chrono_like(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() >= 20 && s.contains('T'))
}

#[tokio::test]
async fn bad_input_gets_a_clear_json_error_and_the_right_status() {
    let gw = Gateway::start_with(&["--max-body", "1024"]);
    let post = |body: &'static str| {
        gw.request(Method::POST, "/system/functions")
            .header("content-type", "application/json")
            .body(body)
    };
    let (status, message) = error_of(post("{not json").send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("invalid JSON"), "{message}");
    let (status, message) = error_of(
        post(r#"{"service":"../etc","envProcess":"cat"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("invalid function name"), "{message}");
    let (status, message) = error_of(
        post(r#"{"service":"ghost","envProcess":"/no/such/binary"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("command not found"), "{message}");
    let (status, message) = error_of(
        post(r#"{"service":"bad","envProcess":"cat","annotations":{"hark.timeout":"soon"}}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("hark.timeout"), "{message}");

    gw.deploy(json!({ "service": "echo", "envProcess": "cat" }))
        .await;
    let (status, message) = error_of(
        post(r#"{"service":"echo","envProcess":"cat"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 409, "{message}");
    let response = gw
        .request(Method::PUT, "/system/functions")
        .json(&json!({ "service": "new", "envProcess": "cat" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let (status, _) = error_of(
        gw.client
            .post(format!("{}/function/nope", gw.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = error_of(
        gw.client
            .post(format!("{}/function/Bad_Name", gw.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let big = "x".repeat(4096);
    let response = gw
        .client
        .post(format!("{}/function/echo", gw.url))
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(response).await;
    assert_eq!(status, 413, "{message}");
    let (status, _) = error_of(
        gw.request(Method::GET, "/system/logs")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = error_of(
        gw.request(Method::GET, "/system/logs?name=..%2Fetc")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = error_of(
        gw.request(Method::POST, "/system/secrets")
            .json(&json!({ "name": "../x", "value": "v" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);

    // After all that the gateway still serves.
    assert_eq!(gw.invoke("echo", "fine").await, (200, "fine".to_owned()));
}

#[tokio::test]
async fn functions_scale_and_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut gw = Gateway::start_in(dir.path(), &[]);
        gw.deploy(json!({ "service": "echo", "envProcess": "cat" }))
            .await;
        gw.deploy(json!({ "service": "off", "envProcess": "cat" }))
            .await;
        gw.scale("off", 0).await;
        for _ in 0..3 {
            gw.invoke("echo", "x").await;
        }
        assert!(gw.stop(), "gateway did not exit cleanly");
    }
    let gw = Gateway::start_in(dir.path(), &[]);
    let status = gw.status("echo").await;
    assert_eq!(status["invocationCount"], 3);
    assert_eq!(gw.status("off").await["replicas"], 0);
    assert_eq!(gw.invoke("echo", "back").await, (200, "back".to_owned()));
    let activations: Vec<Value> = gw
        .get_json("/system/activations?function=echo&limit=10")
        .await;
    assert_eq!(activations.len(), 4);
}

/// Calls `function` and sends the gateway SIGTERM once the call's process runs: the
/// call's answer and whether the gateway exited cleanly, both to come.
async fn stop_during_call(
    mut gw: Gateway,
    function: &str,
    body: &str,
) -> (
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    tokio::task::JoinHandle<bool>,
) {
    let call = gw
        .client
        .post(format!("{}/function/{function}", gw.url))
        .body(body.to_owned())
        .send();
    let answer = tokio::spawn(call);
    // In flight: its process runs.
    let pid = gw.pid();
    eventually(
        "the call's process to start",
        Duration::from_secs(10),
        || !children_named(pid, "sh").is_empty(),
    )
    .await;
    let stopped = tokio::task::spawn_blocking(move || gw.stop());
    (answer, stopped)
}

#[tokio::test]
async fn sigterm_lets_in_flight_calls_finish() {
    let gw = Gateway::start();
    gw.deploy_sh("slow", "sleep 1; echo finished", json!({}))
        .await;
    let (answer, stopped) = stop_during_call(gw, "slow", "").await;
    let response = answer
        .await
        .unwrap()
        .expect("the in-flight call was answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished\n");
    assert!(stopped.await.unwrap(), "gateway did not exit cleanly");
}

/// A running call that calls back into its gateway (a function calling another, a
/// browser loading a function's page) still reaches it after SIGTERM: the listener stays
/// open until the running calls end.
#[tokio::test]
async fn sigterm_lets_a_call_that_calls_back_into_the_gateway_finish() {
    let gw = Gateway::start();
    gw.deploy_sh("callee", "echo called", json!({})).await;
    gw.deploy_sh(
        "caller",
        "read line; sleep 1; curl -sS --max-time 20 \"$HARK_GATEWAY_URL/function/callee\"",
        json!({}),
    )
    .await;
    let (url, client) = (gw.url.clone(), gw.client.clone());
    let (answer, stopped) = stop_during_call(gw, "caller", "go\n").await;
    // Stopping, it tells health checks so, while it still serves.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health = client.get(format!("{url}/healthz")).send().await.unwrap();
        if health.status() == 503 {
            assert_eq!(health.text().await.unwrap(), "draining");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz still answers {} after SIGTERM",
            health.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = answer
        .await
        .unwrap()
        .expect("the in-flight call was answered");
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "called\n"),
        "the call could not reach its gateway after SIGTERM"
    );
    assert!(stopped.await.unwrap(), "gateway did not exit cleanly");
}

#[tokio::test]
async fn hark_yml_in_the_working_directory_is_deployed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hark.yml"),
        "version: 1.0\nfunctions:\n  shout:\n    fprocess: tr a-z A-Z\n    colour: red\n  broken:\n    fprocess: /missing/binary\n",
    )
    .unwrap();
    let gw = Gateway::start_in(dir.path(), &[]);
    assert_eq!(gw.invoke("shout", "hey").await, (200, "HEY".to_owned()));
    gw.output_containing("functions.shout.colour");
    let output = gw.output_containing("command not found");
    assert!(
        output.contains("functions.shout.colour"),
        "unknown key not reported:\n{output}"
    );
    assert!(
        output.contains("broken") && output.contains("command not found"),
        "{output}"
    );
}

/// A token never outlives the token that minted it: a short-lived token with
/// `tokens:write` cannot mint itself a permanent one.
#[tokio::test]
async fn minted_tokens_never_outlive_their_minter() {
    let gw = Gateway::start();
    let mint = |bearer: String, body: Value| {
        let gw = &gw;
        async move {
            let response = gw
                .client
                .post(format!("{}/system/tokens", gw.url))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            response.json::<Value>().await.unwrap()
        }
    };
    let short = mint(
        gw.token.clone(),
        json!({ "scopes": ["tokens:write", "functions:read"], "ttl": "10m" }),
    )
    .await;
    let short_token = short["token"].as_str().unwrap().to_owned();
    crate::util::register_secret(&short_token);
    let short_expiry =
        chrono::DateTime::parse_from_rfc3339(short["expiresAt"].as_str().unwrap()).unwrap();
    for body in [
        json!({ "scopes": ["functions:read"] }),
        json!({ "scopes": ["functions:read"], "ttl": "1000h" }),
    ] {
        let child = mint(short_token.clone(), body.clone()).await;
        crate::util::register_secret(child["token"].as_str().unwrap());
        let expiry = child["expiresAt"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}: minted a token that never expires: {child}"));
        let expiry = chrono::DateTime::parse_from_rfc3339(expiry).unwrap();
        assert!(
            expiry <= short_expiry + chrono::Duration::seconds(2),
            "{body}: {expiry} outlives {short_expiry}"
        );
    }
}
