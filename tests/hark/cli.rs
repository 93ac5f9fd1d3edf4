//! The `hark` CLI, spawned against a running gateway.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::util::{hark_bin, hello_bin, Gateway};

/// Runs `hark ARGS` against `gw`, with `stdin` as input.
fn hark(gw: &Gateway, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(hark_bin())
        .args(args)
        .env("HARK_GATEWAY", &gw.url)
        .env("HARK_DATA", &gw.data)
        .env_remove("HARK_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    crate::util::record_log(&output.stderr);
    output
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "hark failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "hark succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_deploys_invokes_scales_and_reports() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("stack.yml");
    std::fs::write(
        &stack,
        format!(
            "functions:\n  upper:\n    fprocess: tr a-z A-Z\n  hello:\n    fprocess: {}\n    annotations:\n      hark.mode: http\n",
            hello_bin().display()
        ),
    )
    .unwrap();
    let stack = stack.to_str().unwrap();

    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["deploy", "-f", stack], "")));
    assert!(
        out.contains("deployed upper") && out.contains("deployed hello"),
        "{out}"
    );
    // Deploying again updates rather than failing.
    tokio::task::block_in_place(|| ok(&hark(&gw, &["deploy", "-f", stack, "upper"], "")));

    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["invoke", "upper"], "quiet words")));
    assert_eq!(out, "QUIET WORDS");
    gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["invoke", "hello"], "CLI")));
    assert_eq!(out, "Hello, CLI!\n");

    tokio::task::block_in_place(|| ok(&hark(&gw, &["scale", "hello", "2"], "")));
    gw.wait_status("hello", "reached 2 replicas", |s| {
        s["availableReplicas"] == 2
    })
    .await;

    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["list"], "")));
    let hello_row = out
        .lines()
        .find(|l| l.trim_start().starts_with("hello"))
        .expect("hello listed");
    let cells: Vec<&str> = hello_row.split_whitespace().collect();
    assert_eq!(cells, ["hello", "http", "1", "2", "2"], "{out}");
    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["list", "-o", "json"], "")));
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 2);

    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["describe", "upper"], "")));
    assert!(
        out.contains("tr a-z A-Z") && out.contains("Invocations"),
        "{out}"
    );

    let out = tokio::task::block_in_place(|| {
        ok(&hark(
            &gw,
            &["activations", "--function", "upper", "-o", "json"],
            "",
        ))
    });
    let activations: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(activations.len(), 1);
    assert_eq!(activations[0]["status"], 200);

    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["logs", "hello", "--tail", "5"], "")));
    assert!(out.contains("hello: listening on"), "{out}");

    crate::util::register_secret("hunter2");
    tokio::task::block_in_place(|| ok(&hark(&gw, &["secret", "create", "db-password"], "hunter2")));
    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["secret", "list"], "")));
    assert!(
        out.contains("db-password") && !out.contains("hunter2"),
        "{out}"
    );
    tokio::task::block_in_place(|| ok(&hark(&gw, &["secret", "remove", "db-password"], "")));

    let token = tokio::task::block_in_place(|| {
        ok(&hark(
            &gw,
            &[
                "token",
                "create",
                "--scope",
                "functions:read",
                "--ttl",
                "10m",
            ],
            "",
        ))
    });
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    crate::util::register_secret(token.trim());

    tokio::task::block_in_place(|| ok(&hark(&gw, &["remove", "upper"], "")));
    let err = tokio::task::block_in_place(|| failed(&hark(&gw, &["invoke", "upper"], "")));
    assert!(err.contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_explains_what_went_wrong_and_exits_non_zero() {
    let gw = Gateway::start();
    let err = tokio::task::block_in_place(|| failed(&hark(&gw, &["describe", "ghost"], "")));
    assert!(err.contains("function ghost not found"), "{err}");

    let mut down = Command::new(hark_bin());
    down.args(["list"])
        .env("HARK_GATEWAY", "http://127.0.0.1:9")
        .env("HARK_DATA", &gw.data);
    let output = down.output().unwrap();
    let err = failed(&output);
    assert!(err.contains("cannot reach the gateway"), "{err}");

    let mut forged = Command::new(hark_bin());
    forged
        .args(["list"])
        .env("HARK_GATEWAY", &gw.url)
        .env("HARK_TOKEN", "x.y.z");
    let err = failed(&forged.output().unwrap());
    assert!(err.contains("401"), "{err}");
}

/// `hark webhook verify` runs offline on a captured delivery: the published Slack example
/// passes at its own time, fails (exit 1) when tampered with or checked later, and says why.
#[test]
fn webhook_verify_explains_a_captured_delivery() {
    let Some(doc) = hark::verify::conformance("webhooks.json") else {
        return;
    };
    let case = &doc["slack"][0];
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, case["body"].as_str().unwrap()).unwrap();
    let ts = case["timestamp"].as_i64().unwrap().to_string();
    let run_with = |global: &[&str], body: &std::path::Path, at: &str| {
        Command::new(hark_bin())
            .args(global)
            .args(["webhook", "verify", "--kind", "slack", "--secret"])
            .arg(case["signing_secret"].as_str().unwrap())
            .arg("--body")
            .arg(body)
            .args(["-H", &format!("X-Slack-Request-Timestamp: {ts}")])
            .args([
                "-H",
                &format!(
                    "X-Slack-Signature: {}",
                    case["header_x_slack_signature"].as_str().unwrap()
                ),
            ])
            .args(["--at", at])
            .output()
            .unwrap()
    };
    let run = |body: &std::path::Path, at: &str| run_with(&[], body, at);
    let passed = run(&body, &ts);
    let text = String::from_utf8_lossy(&passed.stdout);
    assert!(passed.status.success(), "{text}");
    assert!(text.contains("result: PASS"), "{text}");
    // The same time as RFC 3339, and the report as JSON with -o json.
    let at = chrono::DateTime::from_timestamp(case["timestamp"].as_i64().unwrap(), 0)
        .unwrap()
        .to_rfc3339();
    let json = run_with(&["-o", "json"], &body, &at);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stdout)));
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["kind"], "slack");
    assert_eq!(report["at"], at.as_str());
    assert_eq!(report["result"], "secret #0");
    assert!(report["steps"].as_array().is_some_and(|s| !s.is_empty()));

    let later = (case["timestamp"].as_i64().unwrap() + 3600).to_string();
    let stale = run(&body, &later);
    let text = String::from_utf8_lossy(&stale.stdout);
    assert_eq!(stale.status.code(), Some(1), "{text}");
    assert!(
        text.contains("stale_timestamp") && text.contains(&format!("--at {ts}")),
        "{text}"
    );

    let newline = dir.path().join("body-newline");
    std::fs::write(&newline, format!("{}\n", case["body"].as_str().unwrap())).unwrap();
    let tampered = run(&newline, &ts);
    let text = String::from_utf8_lossy(&tampered.stdout);
    assert_eq!(tampered.status.code(), Some(1), "{text}");
    assert!(text.contains("trailing newline"), "{text}");
}

/// The offline commands do not offer the flags that only matter to a gateway; the client
/// commands still do, and the flags still work before the subcommand.
#[test]
fn offline_commands_do_not_offer_the_gateway_flags() {
    let help = |args: &[&str]| {
        let out = Command::new(hark_bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} --help failed");
        String::from_utf8(out.stdout).unwrap()
    };
    for offline in [
        &["webhook", "verify"][..],
        &["alexa", "verify"],
        &["schema"],
    ] {
        let text = help(offline);
        for flag in ["--gateway", "--token", "--data"] {
            assert!(!text.contains(flag), "{offline:?} offers {flag}:\n{text}");
        }
        assert!(text.contains("--output"), "{offline:?}:\n{text}");
    }
    let text = help(&["deploy"]);
    for flag in ["--gateway", "--token", "--data"] {
        assert!(text.contains(flag), "deploy does not offer {flag}:\n{text}");
    }
}
