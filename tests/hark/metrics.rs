//! `/metrics`, `/openapi.json` and `--log-format json` on a real `hark up`.

use std::collections::BTreeMap;

use hark::channels::github::verify as github;
use hark::channels::slack::verify as slack;
use serde_json::{json, Value};

use crate::util::Gateway;

/// The samples of a Prometheus text exposition: `name{labels}` → value.
async fn scrape(gw: &Gateway) -> BTreeMap<String, f64> {
    let response = gw
        .client
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

#[tokio::test]
async fn counters_and_histogram_count_every_invocation_by_status_code() {
    let gw = Gateway::start();
    // Fails (exit 1, so 500) when the body says "fail".
    gw.deploy_sh("flaky", "grep -q fail && exit 1; echo fine", json!({}))
        .await;
    let mut seen: BTreeMap<u16, u32> = BTreeMap::new();
    for body in ["a", "fail", "b", "c", "fail", "d", "fail"] {
        let (status, _) = gw.invoke("flaky", body).await;
        *seen.entry(status).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "wanted successes and failures: {seen:?}");
    assert_eq!(seen.get(&200), Some(&4), "{seen:?}");

    let m = scrape(&gw).await;
    for (code, n) in &seen {
        let labels = format!(r#"{{function_name="flaky",code="{code}"}}"#);
        assert_eq!(
            sample(&m, &format!("gateway_function_invocation_total{labels}")),
            f64::from(*n)
        );
        assert_eq!(
            sample(&m, &format!("gateway_functions_seconds_count{labels}")),
            f64::from(*n)
        );
        assert_eq!(
            sample(
                &m,
                &format!(
                    r#"gateway_functions_seconds_bucket{{function_name="flaky",code="{code}",le="+Inf"}}"#
                )
            ),
            f64::from(*n)
        );
    }
    assert_eq!(
        sample(
            &m,
            r#"gateway_function_invocation_started{function_name="flaky"}"#
        ),
        7.0
    );
    assert_eq!(
        sample(&m, r#"gateway_service_count{function_name="flaky"}"#),
        1.0
    );

    // Scaled to 0 and then removed, the function's replicas read 0.
    let response = gw
        .request(reqwest::Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "flaky" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let m = scrape(&gw).await;
    assert_eq!(
        sample(&m, r#"gateway_service_count{function_name="flaky"}"#),
        0.0
    );
}

const SLACK_SECRET: &str = "slack-signing-secret";
const GITHUB_SECRET: &str = "github-webhook-secret";

#[tokio::test]
async fn refused_slack_github_and_alexa_requests_are_counted_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data.join("skills/greeter")).unwrap();
    std::fs::write(
        data.join("skills/greeter/skill.yaml"),
        "id: amzn1.ask.skill.greeter\ninvocation: greeter\nintents:\n  Hello:\n    samples: [hello]\n    speech: Hello.\n",
    )
    .unwrap();
    std::fs::write(
        data.join("hark.yml"),
        "functions:\n  echo:\n    fprocess: cat\nchannels:\n  slack:\n    acme:\n      signing_secrets: [slack-sign]\n      commands: { /echo: echo }\n  github:\n    triage:\n      webhook_secrets: [gh-hook]\n      token: gh-token\n      api: \"http://127.0.0.1:9\"\n      events: { issues.opened: echo }\n",
    )
    .unwrap();
    let gw = Gateway::start_in_with_env(
        data,
        &[],
        &[
            ("HARK_SECRET_SLACK_SIGN", SLACK_SECRET),
            ("HARK_SECRET_GH_HOOK", GITHUB_SECRET),
            ("HARK_SECRET_GH_TOKEN", "token"),
        ],
    );
    let post = |path: &str, headers: Vec<(&'static str, String)>, body: &str| {
        let mut request = gw
            .client
            .post(format!("{}{path}", gw.url))
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let now = chrono::Utc::now().timestamp();
    let form = "command=%2Fecho&text=hi&response_url=";
    let slack_headers = |secret: &str| {
        vec![
            (
                slack::SIGNATURE,
                slack::sign(secret.as_bytes(), now, form.as_bytes()),
            ),
            (slack::TIMESTAMP, now.to_string()),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ]
    };
    // Slack: one good command, two forged, one unsigned.
    assert_eq!(
        post("/slack/acme", slack_headers(SLACK_SECRET), form).await,
        200
    );
    assert_eq!(
        post("/slack/acme", slack_headers("forged"), form).await,
        401
    );
    assert_eq!(
        post("/slack/acme", slack_headers("forged"), form).await,
        401
    );
    assert_eq!(post("/slack/acme", vec![], form).await, 401);
    // GitHub: a forged delivery, and a route that does not exist.
    let issue = r#"{"action":"opened"}"#;
    let gh = vec![
        (
            github::SIGNATURE_256,
            github::sign(b"forged", issue.as_bytes()),
        ),
        (github::EVENT, "issues".to_owned()),
        (github::DELIVERY, "d-1".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    assert_eq!(post("/github/triage", gh.clone(), issue).await, 401);
    assert_eq!(post("/github/nope", gh, issue).await, 404);
    // Alexa: a request without Amazon's signature headers.
    assert_eq!(post("/alexa/greeter", vec![], "{}").await, 400);

    let m = scrape(&gw).await;
    let count = |channel: &str, outcome: &str, reason: &str| {
        sample(
            &m,
            &format!(
                r#"hark_channel_requests_total{{channel="{channel}",outcome="{outcome}",reason="{reason}"}}"#
            ),
        )
    };
    assert_eq!(count("slack", "accepted", "ok"), 1.0);
    assert_eq!(count("slack", "refused", "signature_mismatch"), 2.0);
    assert_eq!(count("slack", "refused", "missing_header"), 1.0);
    assert_eq!(count("github", "refused", "signature_mismatch"), 1.0);
    assert_eq!(count("github", "refused", "unknown_route"), 1.0);
    assert_eq!(count("alexa", "refused", "missing_header"), 1.0);
}

#[tokio::test]
async fn queue_depth_and_dead_letters_show_async_calls() {
    let gw = Gateway::start_with(&["--queue-workers", "1"]);
    let enqueue = |name: &str| {
        let request = gw.client.post(format!("{}/async-function/{name}", gw.url));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // A call that fails with no retries left becomes a dead letter.
    gw.deploy_sh("broken", "exit 1", json!({ "hark.retries": "0" }))
        .await;
    assert_eq!(enqueue("broken").await, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let m = loop {
        let m = scrape(&gw).await;
        if m.get("hark_queue_dead_letters") == Some(&1.0) {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter: {m:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(sample(&m, "hark_queue_depth"), 0.0);

    // Calls of a function that blocks until the gateway stops stay queued: one runs on
    // the only worker, two wait.
    gw.deploy_sh("slow", "sleep 60", json!({})).await;
    for _ in 0..3 {
        assert_eq!(enqueue("slow").await, 202);
    }
    let m = scrape(&gw).await;
    assert_eq!(sample(&m, "hark_queue_depth"), 3.0);
    assert_eq!(sample(&m, "hark_queue_dead_letters"), 1.0);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in_with_env(dir.path(), &[], &[("HARK_LOG_FORMAT", "json")]);
    gw.deploy_sh("hello", "echo hi", json!({})).await;
    assert_eq!(gw.invoke("hello", "").await.0, 200);
    let mut gw = gw;
    assert!(gw.stop());
    let output = gw.output_containing(r#""message":"stopped""#);
    let events: Vec<Value> = output
        .lines()
        // The lines `hark up` prints for people (token path, address) are not logs.
        .filter(|l| !l.starts_with("hark: "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let invoked = events
        .iter()
        .find(|e| e["fields"]["message"] == "invoked")
        .unwrap_or_else(|| panic!("no `invoked` event in {output}"));
    assert_eq!(invoked["fields"]["function"], "hello");
    assert_eq!(invoked["fields"]["status"], 200);
    assert_eq!(invoked["level"], "INFO");
    assert!(events.iter().any(|e| e["fields"]["message"] == "stopped"));
}

#[tokio::test]
async fn metrics_can_require_a_token_and_the_api_description_is_served() {
    let gw = Gateway::start_with(&["--metrics-auth"]);
    let open = gw
        .client
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 401);
    let with_token = gw
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);

    let doc: Value = gw
        .client
        .get(format!("{}/openapi.json", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/system/functions"]["post"].is_object());
    assert!(doc["paths"]["/slack/{app}"]["post"].is_object());
}
