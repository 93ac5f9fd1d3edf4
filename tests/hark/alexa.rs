//! The Alexa channel over a real socket: the holiday skill through `hark say`, its exported
//! interaction model, the real Amazon-signed request replayed against `hark up --clock`, and
//! `hark alexa verify` on the same request.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hark::channels::alexa::verify::test_support::conformance_dir;
use serde_json::Value;

use crate::channels::channel_stats;
use crate::util::{hark_bin, strip_ansi, Gateway};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(hark_bin());
    command
        .args(args)
        .env_remove("HARK_TOKEN")
        .env_remove("HARK_SKILLS");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn stdout_ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "hark failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn hark_skill_export_prints_the_holiday_interaction_model() {
    let skills = repo().join("skills");
    let out = stdout_ok(&run(
        &[
            "skill",
            "export",
            "holiday",
            "--skills",
            skills.to_str().unwrap(),
        ],
        &[],
    ));
    let model: Value = serde_json::from_str(&out).unwrap();
    let lm = &model["interactionModel"]["languageModel"];
    assert_eq!(lm["invocationName"], "holiday helper");
    let intents = lm["intents"].as_array().unwrap();
    let names: Vec<&str> = intents
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for required in [
        "AMAZON.CancelIntent",
        "AMAZON.HelpIntent",
        "AMAZON.StopIntent",
        "BalanceIntent",
        "BookDayOffIntent",
    ] {
        assert!(
            names.contains(&required),
            "{required} missing from {names:?}"
        );
    }
    let book = intents
        .iter()
        .find(|i| i["name"] == "BookDayOffIntent")
        .unwrap();
    assert!(
        book["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "book {date} off"),
        "{book}"
    );
    assert!(
        book["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "date" && s["type"] == "AMAZON.DATE"),
        "{book}"
    );
    assert_eq!(lm["types"][0]["name"], "HALF_DAY");
    assert!(
        lm["types"][0]["values"][0]["name"]["synonyms"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    assert_eq!(
        model["interactionModel"]["dialog"]["intents"][0]["name"],
        "BookDayOffIntent"
    );
    // Every sample is something the console accepts: no digits or stray punctuation.
    for intent in intents {
        for s in intent["samples"].as_array().unwrap() {
            let s = s.as_str().unwrap();
            assert!(
                s.chars()
                    .all(|c| c.is_alphabetic() || " '{}.-_".contains(c)),
                "{s}"
            );
        }
    }
    // An unknown skill is a clear error.
    let out = run(
        &[
            "skill",
            "export",
            "nope",
            "--skills",
            skills.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no skill \"nope\""));
}

/// `hark say` itself is exercised against the real booking flow in `holiday.rs`; here, the
/// paths it and Amazon use refuse requests without a token or a signature.
#[tokio::test(flavor = "multi_thread")]
async fn the_say_path_needs_a_token_and_the_alexa_path_a_signature() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hark.yml");
    std::fs::write(
        &config,
        format!("alexa:\n  skills: {}\n", repo().join("skills").display()),
    )
    .unwrap();
    let gw = Gateway::start_with(&["--config", config.to_str().unwrap()]);
    // Without a token the say path is refused; unsigned requests on Amazon's path too.
    let response = gw
        .client
        .post(format!("{}/system/skills/holiday/say", gw.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = gw
        .client
        .post(format!("{}/alexa/holiday", gw.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let log = strip_ansi(&gw.output_containing("reason=\"missing_header\""));
    assert!(
        log.contains("reason=\"missing_header\"") && log.contains("verification failed"),
        "{log}"
    );
}

/// Each skill is a route of the one channel contract: `alexa.max_body` refuses a larger
/// request with 413 before anything is verified, and `/system/channels` lists the skill
/// with its limits and what it refused.
#[tokio::test(flavor = "multi_thread")]
async fn each_skill_is_a_channel_route_with_limits_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hark.yml");
    std::fs::write(
        &config,
        format!(
            "alexa:\n  skills: {}\n  max_body: 1KiB\n  max_inflight: 3\n",
            repo().join("skills").display()
        ),
    )
    .unwrap();
    let gw = Gateway::start_with(&["--config", config.to_str().unwrap()]);
    let post = |body: String| {
        gw.client
            .post(format!("{}/alexa/holiday", gw.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let big = format!("{{\"padding\":\"{}\"}}", "x".repeat(2048));
    assert_eq!(post(big).await.unwrap().status(), 413);
    assert_eq!(post("{}".to_owned()).await.unwrap().status(), 400);
    let response = gw
        .client
        .post(format!("{}/alexa/no-such-skill", gw.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let holiday = channel_stats(&gw, "alexa", "holiday").await;
    assert_eq!(holiday["path"], "/alexa/holiday");
    assert_eq!(holiday["max_body"], 1024);
    assert_eq!(holiday["max_inflight"], 3);
    assert_eq!(holiday["refused"]["too_large"], 1, "{holiday}");
    assert_eq!(holiday["refused"]["missing_header"], 1, "{holiday}");
}

/// The real request, its headers, and a gateway configured to trust its 2017 chain.
struct Real {
    dir: PathBuf,
    body: Vec<u8>,
    url: String,
    signature: String,
}

fn real() -> Option<Real> {
    let dir = conformance_dir()?.join("alexa");
    let r = dir.join("real-2017-11-20");
    let read = |n: &str| {
        std::fs::read_to_string(r.join(n))
            .unwrap()
            .trim()
            .to_owned()
    };
    Some(Real {
        body: std::fs::read(r.join("body.json")).unwrap(),
        url: read("signature_cert_chain_url.txt"),
        signature: read("signature.b64"),
        dir,
    })
}

#[tokio::test]
async fn the_real_amazon_request_is_accepted_over_a_socket_at_its_time() {
    let Some(real) = real() else { return };
    let dir = tempfile::tempdir().unwrap();
    let skill_dir = dir.path().join("skills/real");
    std::fs::create_dir_all(&skill_dir).unwrap();
    std::fs::write(
        skill_dir.join("skill.yaml"),
        "id: amzn1.ask.skill.f5e6173c-8f7a-4c51-85e8-275e52d9443b\ninvocation: real player\nintents:\n  PlayAudio:\n    samples: [play]\n    function: play\n",
    )
    .unwrap();
    let config = dir.path().join("hark.yml");
    std::fs::write(
        &config,
        format!(
            "functions:\n  play:\n    fprocess: echo Playing now.\nalexa:\n  skills: ./skills\n  trust_roots: [{}]\n  cert_dir: {}\n  download_missing: false\n  allow_sha1_signature: true\n",
            real.dir.join("chains/verisign-class3-g5-root.pem").display(),
            real.dir.join("real-2017-11-20").display(),
        ),
    )
    .unwrap();
    let send = |gw: &Gateway, body: Vec<u8>| {
        gw.client
            .post(format!("{}/alexa/real", gw.url))
            .header("SignatureCertChainUrl", &real.url)
            .header("Signature", &real.signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let config = config.to_str().unwrap();
    let gw = Gateway::start_with(&["--config", config, "--clock", "2017-11-20T08:45:05Z"]);
    let response = send(&gw, real.body.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["response"]["outputSpeech"]["ssml"],
        "<speak>Playing now.</speak>"
    );
    let mut changed = real.body.clone();
    changed[0] = b'\n';
    assert_eq!(send(&gw, changed).await.unwrap().status(), 400);
    drop(gw);

    let later = Gateway::start_with(&["--config", config, "--clock", "2017-11-20T09:45:05Z"]);
    assert_eq!(send(&later, real.body.clone()).await.unwrap().status(), 400);
    let log = strip_ansi(&later.output_containing("reason=\"timestamp_out_of_range\""));
    assert!(log.contains("reason=\"timestamp_out_of_range\""), "{log}");
}

#[test]
fn hark_alexa_verify_reports_each_check_of_the_real_request() {
    let Some(real) = real() else { return };
    let body = real.dir.join("real-2017-11-20/body.json");
    let root = real.dir.join("chains/verisign-class3-g5-root.pem");
    let chain = real.dir.join("real-2017-11-20/echo-api-cert-5.pem");
    let args = |at: &'static str| {
        vec![
            "alexa".to_owned(),
            "verify".into(),
            "--body".into(),
            body.display().to_string(),
            "--cert-url".into(),
            real.url.clone(),
            "--signature".into(),
            real.signature.clone(),
            "--at".into(),
            at.into(),
            "--root".into(),
            root.display().to_string(),
            "--cert-file".into(),
            chain.display().to_string(),
            "--app-id".into(),
            "amzn1.ask.skill.f5e6173c-8f7a-4c51-85e8-275e52d9443b".into(),
        ]
    };
    let ok = Command::new(hark_bin())
        .args(args("2017-11-20T08:45:05Z"))
        .output()
        .unwrap();
    let out = stdout_ok(&ok);
    for check in [
        "cert_url",
        "cert_dates",
        "cert_san",
        "cert_chain_trust",
        "signature",
        "timestamp",
        "application_id",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("PASS") && l.contains(check)),
            "{check}: {out}"
        );
    }
    let late = Command::new(hark_bin())
        .args(args("2019-01-01T00:00:00Z"))
        .output()
        .unwrap();
    assert_eq!(late.status.code(), Some(1));
    let out = String::from_utf8_lossy(&late.stdout);
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("FAIL") && l.contains("cert_dates")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("FAIL") && l.contains("timestamp")),
        "{out}"
    );
}

/// The mistakes a user makes with `hark alexa verify`, each answered in words: the body on
/// stdin, both signature headers at once (as Amazon sends them), the SHA-1 header given as
/// Signature-256, no root for a 2017 chain, a request from the future, `-o json`.
#[test]
fn hark_alexa_verify_explains_the_usual_mistakes_in_words() {
    let Some(real) = real() else { return };
    let chain = real.dir.join("real-2017-11-20/echo-api-cert-5.pem");
    let root = real.dir.join("chains/verisign-class3-g5-root.pem");
    // `hark [global] alexa verify --body - ... [flags]`, the real body on stdin.
    let run = |global: &[&str], flags: &[&str]| {
        use std::io::Write;
        let mut child = Command::new(hark_bin())
            .args(global)
            .args(["alexa", "verify", "--body", "-", "--cert-url", &real.url])
            .arg("--cert-file")
            .arg(&chain)
            .args(flags)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&real.body).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text)
    };
    let root = root.to_str().unwrap();
    let sig = real.signature.as_str();
    let line = |out: &str, check: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(check))
            .unwrap_or_else(|| panic!("no {check} line: {out}"))
            .to_owned()
    };

    // Both headers, as Amazon sends them, the time as unix seconds: all checks pass (the
    // SHA-256 header is the SHA-1 value here, so only Signature is given as that).
    let (code, out) = run(
        &[],
        &["--signature", sig, "--root", root, "--at", "1511167505"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("checking at 2017-11-20 08:45:05 UTC"), "{out}");
    let (code, out) = run(
        &[],
        &[
            "--signature",
            sig,
            "--signature-256",
            sig,
            "--root",
            root,
            "--at",
            "1511167505",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    // The SHA-1 value as Signature-256: a hint, not just "does not match".
    assert!(
        line(&out, "signature").contains("it is a SHA-1 signature"),
        "{out}"
    );
    // No root for the 2017 chain: the missing issuer is named, with the way to trust it.
    let (_, out) = run(&[], &["--signature", sig, "--at", "2017-11-20T08:45:05Z"]);
    let trust = line(&out, "cert_chain_trust");
    assert!(
        trust.contains("VeriSign Class 3 Public Primary Certification Authority - G5")
            && trust.contains("--root"),
        "{trust}"
    );
    // A request from the future says so; no debug forms anywhere.
    let (_, out) = run(
        &[],
        &[
            "--signature",
            sig,
            "--root",
            root,
            "--at",
            "2017-11-20T08:00:00Z",
        ],
    );
    assert!(
        line(&out, "timestamp").contains("45 min in the future"),
        "{out}"
    );
    let (_, out) = run(&[], &["--signature", sig, "--at", "2026-01-01T00:00:00Z"]);
    for debug in ["UnixTime", "CertExpired {", "UnknownIssuer", "is None"] {
        assert!(!out.contains(debug), "{debug}: {out}");
    }
    // -o json: the same checks, machine-readable, in the shape `hark webhook verify` prints.
    let (code, out) = run(
        &["-o", "json"],
        &[
            "--signature",
            sig,
            "--root",
            root,
            "--at",
            "2017-11-20T08:45:05Z",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["kind"], "alexa");
    assert_eq!(json["at"], "2017-11-20T08:45:05+00:00");
    assert_eq!(json["result"], "all checks passed");
    assert!(json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["check"] == "signature" && c["status"] == "pass"));
}

/// A `Slow` intent whose function outlasts the skill's budget.
const SLOW_SKILL: &str = r#"
id: amzn1.ask.skill.slow
invocation: slow helper
deadline: { budget: 500ms, progressive_after: 200ms }
replies:
  still_working: "Still on it."
intents:
  Slow:
    samples: ["take your time"]
    function: slow
    speech: "Booked {{ result.days }} days."
  WhatHappened:
    samples: ["what happened"]
    speech: "That's all."
"#;

/// A request envelope of the slow skill's user for `intent`.
fn slow_turn(intent: &str, request_id: &str) -> Value {
    let app = serde_json::json!({ "applicationId": "amzn1.ask.skill.slow" });
    let user = serde_json::json!({ "userId": "amzn1.ask.account.late" });
    serde_json::json!({
        "version": "1.0",
        "session": { "new": true, "sessionId": "s1", "application": app, "attributes": {}, "user": user },
        "context": { "System": { "application": app, "user": user } },
        "request": {
            "type": "IntentRequest",
            "requestId": request_id,
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "locale": "en-GB",
            "intent": { "name": intent, "confirmationStatus": "NONE", "slots": {} },
        },
    })
}

async fn say_turn(gw: &Gateway, body: Value) -> String {
    let response = gw
        .request(reqwest::Method::POST, "/system/skills/slow/say")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    answer["response"]["outputSpeech"]["ssml"]
        .as_str()
        .unwrap_or_else(|| panic!("no speech in {answer}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_alexa_answer_survives_a_gateway_killed_while_its_function_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data.join("skills/slow")).unwrap();
    std::fs::write(data.join("skills/slow/skill.yaml"), SLOW_SKILL).unwrap();
    std::fs::write(
        data.join("hark.yml"),
        r#"functions:
  slow:
    fprocess: sh -c 'sleep 3; echo "{\"days\":3}"'
alexa:
  skills: ./skills
"#,
    )
    .unwrap();
    let mut gw = Gateway::start_in(data, &[]);
    let said = say_turn(&gw, slow_turn("Slow", "amzn1.echo-api.request.late-1")).await;
    assert_eq!(said, "<speak>Still on it.</speak>");
    // The function is still running when the gateway dies.
    gw.kill_hard();

    let gw = Gateway::start_in(data, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut turn = 0;
    loop {
        turn += 1;
        let id = format!("amzn1.echo-api.request.next-{turn}");
        let said = say_turn(&gw, slow_turn("WhatHappened", &id)).await;
        if said.contains("Booked 3 days.") {
            assert!(said.ends_with("That's all.</speak>"), "{said}");
            break;
        }
        assert_eq!(said, "<speak>That's all.</speak>");
        assert!(
            std::time::Instant::now() < deadline,
            "the late answer never arrived; gateway log:\n{}",
            gw.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let log =
        strip_ansi(&gw.output_containing("re-queued calls left running by a stopped gateway"));
    assert!(
        log.contains("re-queued calls left running by a stopped gateway"),
        "{log}"
    );
    // Said once.
    let said = say_turn(
        &gw,
        slow_turn("WhatHappened", "amzn1.echo-api.request.last"),
    )
    .await;
    assert_eq!(said, "<speak>That's all.</speak>");
}

/// The chain `signed_turn` names, as the gateway finds it in its `cert_dir`.
const TEST_CHAIN: &str = "hark-test-chain.pem";

/// Writes into `data` the slow skill and a `hark.yml` whose gateway trusts a test PKI made
/// now (its chain in `certs/`, no download), for requests made by [`signed_turn`].
fn signed_slow_skill(data: &Path) {
    use hark::channels::alexa::testpki;
    let pki = testpki::Pki::for_time(chrono::Utc::now());
    std::fs::create_dir_all(data.join("certs")).unwrap();
    std::fs::write(data.join("certs").join(TEST_CHAIN), &pki.good_chain).unwrap();
    std::fs::write(data.join("root.pem"), &pki.root_pem).unwrap();
    std::fs::create_dir_all(data.join("skills/slow")).unwrap();
    std::fs::write(data.join("skills/slow/skill.yaml"), SLOW_SKILL).unwrap();
    std::fs::write(
        data.join("hark.yml"),
        "functions:\n  slow:\n    fprocess: sh -c 'sleep 2; echo {}'\nalexa:\n  skills: ./skills\n  use_default_roots: false\n  trust_roots: [./root.pem]\n  cert_dir: ./certs\n  download_missing: false\n",
    )
    .unwrap();
}

/// `body` posted to the slow skill, signed by the test PKI of [`signed_slow_skill`].
fn signed_turn(gw: &Gateway, body: String) -> reqwest::RequestBuilder {
    use hark::channels::alexa::{testpki, verify};
    gw.client
        .post(format!("{}/alexa/slow", gw.url))
        .header("content-type", "application/json")
        .header(
            verify::HEADER_CERT_CHAIN_URL,
            format!("https://s3.amazonaws.com/echo.api/{TEST_CHAIN}"),
        )
        .header(verify::HEADER_SIGNATURE_256, testpki::sign(body.as_bytes()))
        .body(body)
}

/// A signed request whose `context.System.apiEndpoint` names a listener on this host
/// (as an attacker who replays or forges a request's context would): the progressive
/// response goes nowhere, and the log says so without the request's API token. The
/// gateway may reach loopback (`--egress-allow`), so only the Alexa API origin rule
/// stops it.
#[tokio::test(flavor = "multi_thread")]
async fn a_progressive_response_goes_only_to_the_alexa_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    signed_slow_skill(data);
    let gw = Gateway::start_in(data, &["--egress-allow", "127.0.0.0/8"]);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let token = format!("alexa-api-token-{}", uuid::Uuid::new_v4());
    crate::util::register_secret(&token);
    let mut body = slow_turn("Slow", "amzn1.echo-api.request.egress-1");
    body["context"]["System"]["apiEndpoint"] =
        Value::from(format!("http://{}", listener.local_addr().unwrap()));
    body["context"]["System"]["apiAccessToken"] = Value::from(token.as_str());
    let body = body.to_string();
    let response = signed_turn(&gw, body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", gw.output());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["response"]["outputSpeech"]["ssml"],
        "<speak>Still on it.</speak>"
    );
    let log = strip_ansi(&gw.output_containing("progressive response not sent"));
    assert!(
        log.lines()
            .any(|l| l.contains("progressive response not sent") && l.contains("apiEndpoint")),
        "{log}"
    );
    assert!(!log.contains(&token));
    // Nothing connected to the listener.
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the gateway called the listener: {other:?}"),
    }
}

/// A skill left to its defaults takes a burst of turns at once without refusing any: a
/// refused turn is spoken as the skill failing. 24 signed turns at once, each holding its
/// place until its answer (here the skill's "still working" reply, as the function takes
/// 2 s), all answer 200 (the default was 16 for a while, which refused a third of them).
#[tokio::test(flavor = "multi_thread")]
async fn a_default_skill_takes_a_burst_of_turns_without_refusing_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    signed_slow_skill(data);
    let gw = Gateway::start_in(data, &[]);
    let turns = (0..24).map(|i| {
        let body = slow_turn("Slow", &format!("amzn1.echo-api.request.burst-{i}")).to_string();
        signed_turn(&gw, body).send()
    });
    let statuses: Vec<u16> = futures::future::join_all(turns)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        gw.output()
    );
    let slow = channel_stats(&gw, "alexa", "slow").await;
    assert_eq!(slow["max_inflight"], 64, "{slow}");
}
