//! Slack, GitHub and generic webhooks through a real gateway: routes from `hark.yml`,
//! secrets from the environment, signed requests over a real socket, and Slack's
//! `response_url` and the GitHub API played by small servers of the test on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use hark::channels::github::verify as github;
use hark::channels::hooks::verify as standard;
use hark::channels::slack::verify as slack;
use serde_json::{json, Value};

use crate::util::Gateway;

// ---------------------------------------------------------------------------------------
// Fixtures

/// A data directory with a `hark.yml` and function scripts.
pub(crate) struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    pub(crate) fn new() -> Site {
        Site {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a shell script and returns the `fprocess` that runs it.
    pub(crate) fn script(&self, name: &str, body: &str) -> String {
        let path = self.path().join(format!("{name}.sh"));
        std::fs::write(&path, body).unwrap();
        format!("sh {}", path.display())
    }

    /// A file in the site (for functions to leave traces in).
    pub(crate) fn file(&self, name: &str) -> String {
        self.path().join(name).display().to_string()
    }

    /// Lines a function appended to `name` so far.
    pub(crate) fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `name` has at least `n` lines.
    pub(crate) async fn wait_lines(&self, name: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let lines = self.lines(name);
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{name} has {lines:?}, wanted {n} lines"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `hark.yml`: `functions` (name → fprocess) and the `channels` YAML text.
    pub(crate) fn config(&self, functions: &[(&str, &str)], channels: &str) {
        let mut yaml = String::from("functions:\n");
        for (name, fprocess) in functions {
            yaml.push_str(&format!("  {name}:\n    fprocess: {fprocess}\n"));
        }
        yaml.push_str("channels:\n");
        for line in channels.lines() {
            yaml.push_str("  ");
            yaml.push_str(line);
            yaml.push('\n');
        }
        std::fs::write(self.path().join("hark.yml"), yaml).unwrap();
    }

    /// Its functions run outside the process sandbox: their scripts and the traces they
    /// leave live in the site, the gateway's data directory, which a sandboxed function
    /// may not read (`sandbox.rs` tests the sandbox; these, the channels).
    pub(crate) fn start(&self, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut all = vec!["--sandbox", "off"];
        all.extend_from_slice(args);
        Gateway::start_in_with_env(self.path(), &all, env)
    }

    /// Runs `hark up` expecting it to fail; returns its stderr.
    pub(crate) fn start_fails(&self, env: &[(&str, &str)]) -> String {
        let mut child = Gateway::up_command(self.path(), &[], env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                    .unwrap();
                crate::util::record_log(stderr.as_bytes());
                assert!(!status.success(), "hark up succeeded: {stderr}");
                assert!(
                    !stderr.contains("gateway listening"),
                    "hark up started serving: {stderr}"
                );
                return stderr;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("hark up kept running although its configuration is wrong");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One request a test server received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Seen {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// A server on 127.0.0.1 that records every request and answers with `answer(request,
/// index)`.
pub(crate) struct Recorder {
    pub(crate) url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub(crate) async fn start(
        answer: impl Fn(&Seen, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let answer = Arc::new(answer);
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let log = log.clone();
            let answer = answer.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let request = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    log.len() - 1
                };
                let (status, body) = answer(&request, index);
                (
                    http::StatusCode::from_u16(status).unwrap(),
                    [(http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { url, seen }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "got {} requests, wanted {n}: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// POSTs `body` with `headers` to `path` of the gateway.
pub(crate) async fn post(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, String)],
    body: impl Into<Vec<u8>>,
) -> (u16, String) {
    let mut request = gw
        .client
        .post(format!("{}{path}", gw.url))
        .body(body.into());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

pub(crate) fn slack_headers(
    secret: &str,
    ts: i64,
    body: &[u8],
    content_type: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (slack::TIMESTAMP, ts.to_string()),
        (slack::SIGNATURE, slack::sign(secret.as_bytes(), ts, body)),
        ("content-type", content_type.to_owned()),
    ]
}

fn github_headers(
    secret: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        (github::SIGNATURE_256, github::sign(secret.as_bytes(), body)),
        (github::EVENT, event.to_owned()),
        (github::DELIVERY, delivery.to_owned()),
        ("content-type", "application/json".to_owned()),
    ]
}

fn standard_headers(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (standard::ID, id.to_owned()),
        (standard::TIMESTAMP, ts.to_string()),
        (
            standard::SIGNATURE,
            standard::sign(secret.as_bytes(), id, ts, body).unwrap(),
        ),
        ("content-type", "application/json".to_owned()),
    ]
}

pub(crate) async fn channel_stats(gw: &Gateway, channel: &str, name: &str) -> Value {
    let all: Value = gw.get_json("/system/channels").await;
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == channel && r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {channel}/{name} in {all}"))
}

// ---------------------------------------------------------------------------------------
// Conformance: every published vector through the real endpoints

/// Every case of `webhooks.json` as a route of its own (its secret, its name), on gateways
/// whose clock is the case's `now`: valid cases answer 2xx, invalid ones 401.
#[tokio::test]
async fn conformance_vectors_through_the_real_endpoints() {
    let Some(doc) = hark::verify::conformance("webhooks.json") else {
        return;
    };
    struct Case {
        name: String,
        channel: &'static str,
        secret: String,
        now: Option<i64>,
        valid: bool,
        headers: Vec<(&'static str, String)>,
        body: String,
    }
    let s = |c: &Value, k: &str| {
        c[k].as_str()
            .unwrap_or_else(|| panic!("{k} of {c}"))
            .to_owned()
    };
    let mut cases = Vec::new();
    for c in doc["slack"].as_array().unwrap() {
        let ts = c["timestamp"].as_i64().unwrap();
        cases.push(Case {
            name: s(c, "name"),
            channel: "slack",
            secret: s(c, "signing_secret"),
            now: Some(c["now"].as_i64().unwrap_or(ts)),
            valid: c["valid"].as_bool().unwrap(),
            headers: vec![
                (slack::TIMESTAMP, ts.to_string()),
                (slack::SIGNATURE, s(c, "header_x_slack_signature")),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
            body: s(c, "body"),
        });
    }
    for (i, c) in doc["github"].as_array().unwrap().iter().enumerate() {
        cases.push(Case {
            name: s(c, "name"),
            channel: "github",
            secret: s(c, "secret"),
            now: None,
            valid: c["valid"].as_bool().unwrap(),
            headers: vec![
                (github::SIGNATURE_256, s(c, "header_x_hub_signature_256")),
                (github::EVENT, "ping".into()),
                (github::DELIVERY, format!("conformance-{i}")),
            ],
            body: s(c, "body"),
        });
    }
    for c in doc["standard_webhooks"].as_array().unwrap() {
        let ts = c["webhook_timestamp"].as_i64().unwrap();
        cases.push(Case {
            name: s(c, "name"),
            channel: "hooks",
            secret: s(c, "secret"),
            now: Some(c["now"].as_i64().unwrap_or(ts)),
            valid: c["valid"].as_bool().unwrap(),
            headers: vec![
                (standard::ID, s(c, "webhook_id")),
                (standard::TIMESTAMP, ts.to_string()),
                (standard::SIGNATURE, s(c, "webhook_signature")),
                ("content-type", "application/json".into()),
            ],
            body: s(c, "body"),
        });
    }

    // One gateway per clock; GitHub signs no time, so its cases join the first one.
    let mut clocks: BTreeMap<i64, Vec<&Case>> = BTreeMap::new();
    for case in &cases {
        if let Some(now) = case.now {
            clocks.entry(now).or_default().push(case);
        }
    }
    let first = *clocks.keys().next().unwrap();
    for case in cases.iter().filter(|c| c.now.is_none()) {
        clocks.get_mut(&first).unwrap().push(case);
    }
    let mut ran = BTreeMap::<&str, usize>::new();
    for (clock, cases) in clocks {
        let site = Site::new();
        let mut env = Vec::new();
        let mut yaml = BTreeMap::<&str, String>::new();
        for (i, case) in cases.iter().enumerate() {
            let secret = format!("conf-{i}");
            env.push((format!("HARK_SECRET_CONF_{i}"), case.secret.clone()));
            let route = match case.channel {
                "slack" => format!(
                    "    case-{i}:\n      signing_secrets: [{secret}]\n      commands: {{ /webhook-collect: ok }}\n",
                ),
                "github" => format!(
                    "    case-{i}:\n      webhook_secrets: [{secret}]\n      events: {{ push: ok }}\n",
                ),
                _ => format!(
                    "    case-{i}:\n      standard_webhooks_secrets: [{secret}]\n      function: ok\n",
                ),
            };
            yaml.entry(case.channel).or_default().push_str(&route);
        }
        let channels: String = yaml
            .iter()
            .map(|(channel, routes)| format!("{channel}:\n{routes}"))
            .collect();
        site.config(&[("ok", "echo ok")], channels.trim_end());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let clock = clock.to_string();
        let gw = site.start(&["--test-clock", &clock], &env);
        // Routes are named by number: some vectors' names hold their (published) secret,
        // which would then be logged as a route name.
        for (i, case) in cases.into_iter().enumerate() {
            let path = format!("/{}/case-{i}", case.channel);
            let (status, body) = post(&gw, &path, &case.headers, case.body.clone()).await;
            if case.valid {
                assert!(
                    (200..300).contains(&status),
                    "{}: {status} {body}",
                    case.name
                );
            } else {
                assert_eq!(status, 401, "{}: {body}", case.name);
            }
            *ran.entry(case.channel).or_default() += 1;
        }
    }
    eprintln!("conformance cases run through the gateway: {ran:?}");
    for channel in ["slack", "github", "hooks"] {
        assert!(
            ran.get(channel).copied().unwrap_or(0) > 0,
            "no {channel} cases"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Slack

pub(crate) const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_NEW_SECRET: &str = "0123456789abcdef0123456789abcdef";

fn slash_form(command: &str, text: &str, response_url: &str) -> String {
    let pairs = [
        ("token", "legacy"),
        ("team_id", "T1"),
        ("team_domain", "acme"),
        ("channel_id", "C1"),
        ("channel_name", "general"),
        ("user_id", "U1"),
        ("user_name", "ada"),
        ("command", command),
        ("text", text),
        ("response_url", response_url),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ];
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A Slack app with a quick command, a slow one, an event and an action.
fn slack_site() -> Site {
    let site = Site::new();
    let say = site.script("say", r#"sed -n 's/.*"text":"\([^"]*\)".*/You said: \1/p'"#);
    let whoami = site.script("whoami", "cat");
    let slow = site.script(
        "slow",
        "cat >/dev/null; echo slow command running >&2; sleep 2; echo done late",
    );
    let events = site.file("events.log");
    let record = site.script("record", &format!("cat >> {events}; echo >> {events}"));
    let approve = site.script(
        "approve",
        r#"cat >/dev/null; echo '{"blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*Approved*"}}]}'"#,
    );
    // Refuses a modal's input unless it says "long enough".
    let validate = site.script(
        "validate",
        r#"grep -q "long enough" && exit 0; echo '{"response_action":"errors","errors":{"note":"Too short"}}'"#,
    );
    site.config(
        &[
            ("say", &say),
            ("whoami", &whoami),
            ("slow", &slow),
            ("record", &record),
            ("approve", &approve),
            ("validate", &validate),
        ],
        r#"slack:
  acme:
    signing_secrets: [slack-old, slack-new]
    commands: { /say: say, /whoami: whoami, /slow: slow }
    events: { app_mention: record }
    actions: { approve-button: approve, feedback-modal: validate }
    response_type: in_channel
    working_message: "Give me a second…"
    ack_budget: 300ms"#,
    );
    site
}

/// `hark up` arguments letting callbacks reach the test's servers on 127.0.0.1 (refused
/// by default: see `src/egress.rs`).
const ALLOW_LOOPBACK: &[&str] = &["--egress-allow", "127.0.0.1"];

fn slack_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HARK_SECRET_SLACK_OLD", SLACK_SECRET),
        ("HARK_SECRET_SLACK_NEW", SLACK_NEW_SECRET),
    ]
}

#[tokio::test]
async fn slack_slash_commands_answer_in_time_with_the_function_result() {
    let slack_api = Recorder::start(|_, _| (200, "ok".into())).await;
    let site = slack_site();
    let gw = site.start(ALLOW_LOOPBACK, &slack_env());
    let response_url = format!("{}/commands/T1/1/quick", slack_api.url);
    let body = slash_form("/say", "hello there", &response_url);
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(
            SLACK_SECRET,
            now(),
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        ),
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer,
        json!({"response_type": "in_channel", "text": "You said: hello there"})
    );
    // Answered in time, so not posted to response_url as well.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(slack_api.seen().is_empty(), "{:?}", slack_api.seen());

    // The function sees a clean event: text, user, channel, team, response_url.
    let body = slash_form("/whoami", "x", "https://hooks.slack.com/commands/T1/1/abc");
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(
            SLACK_NEW_SECRET,
            now(),
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        ),
        body,
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    // `cat` echoed the input, which has a `text` key, so it passed through as a message.
    assert_eq!(answer["command"], "/whoami");
    assert_eq!(answer["user"], json!({"id": "U1", "name": "ada"}));
    assert_eq!(answer["channel"], json!({"id": "C1", "name": "general"}));
    assert_eq!(answer["team"], json!({"id": "T1", "domain": "acme"}));
    assert_eq!(
        answer["response_url"],
        "https://hooks.slack.com/commands/T1/1/abc"
    );

    // An unknown command is answered (ephemerally), not refused.
    let body = slash_form("/nope", "", "");
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(
            SLACK_SECRET,
            now(),
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        ),
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        answer.contains("No function is set up for /nope"),
        "{answer}"
    );
}

#[tokio::test]
async fn slack_slow_commands_get_the_working_message_and_the_result_at_response_url() {
    // The first post to response_url fails with 500: Hark retries.
    let slack_api = Recorder::start(|_, i| {
        if i == 0 {
            (500, "{}".into())
        } else {
            (200, "ok".into())
        }
    })
    .await;
    let site = slack_site();
    let gw = site.start(ALLOW_LOOPBACK, &slack_env());
    let response_url = format!("{}/commands/T1/1/xyz", slack_api.url);
    let body = slash_form("/slow", "", &response_url);
    let started = Instant::now();
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(
            SLACK_SECRET,
            now(),
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        ),
        body,
    )
    .await;
    // The function sleeps 2 s; the answer comes at the 300 ms budget.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer,
        json!({"response_type": "ephemeral", "text": "Give me a second…"})
    );

    let seen = slack_api.wait_for(2).await;
    for request in &seen {
        assert_eq!(request.path, "/commands/T1/1/xyz");
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(
            request.json(),
            json!({"response_type": "in_channel", "text": "done late"})
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        slack_api.seen().len(),
        2,
        "no post after the successful one"
    );

    // Replaying the command runs the function again on what it was given, and posts
    // nothing to response_url: the replay calls the function, not Slack.
    let records: Vec<Value> = gw.get_json("/system/activations?function=slow").await;
    assert_eq!(records[0]["trigger"], "slack");
    let original = records[0]["callId"].as_str().unwrap();
    // Its activation tells what the function was given (the command, its channel and
    // route; the response_url, a capability, redacted), what it answered and its log.
    let record: Value = gw
        .get_json(&format!("/system/activations/{original}"))
        .await;
    let story = &record["story"];
    let given = story["request"]["body"]["text"].as_str().unwrap();
    assert!(given.contains(r#""command":"/slow""#), "{given}");
    assert!(!given.contains("/commands/T1/1/xyz"), "{given}");
    let headers = story["request"]["headers"].to_string();
    assert!(
        headers.contains(r#"["x-hark-channel","slack"]"#),
        "{headers}"
    );
    assert_eq!(story["response"]["body"]["text"], "done late\n");
    assert_eq!(story["logs"][0]["text"], "slow command running");
    assert_eq!(story["logs"].as_array().unwrap().len(), 1);
    let replayed: Value = gw
        .request(
            reqwest::Method::POST,
            &format!("/system/activations/{original}/replay"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["status"], 200, "{replayed}");
    assert_eq!(replayed["same"], true, "{replayed}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        slack_api.seen().len(),
        2,
        "a replay does not post to response_url"
    );
}

/// Commands past their function's async slots wait their turn on the gateway they came
/// to, without the queue's runner: each runs once, never beside another (the function
/// allows one at a time), even after its answer went out with the working message, and
/// each result reaches its response_url.
#[tokio::test]
async fn slack_commands_past_their_functions_slots_run_in_turn() {
    let slack_api = Recorder::start(|_, _| (200, "ok".into())).await;
    let site = Site::new();
    let turns = site.file("turns.log");
    let turn = site.script(
        "turn",
        &format!(
            "cat >/dev/null; echo start >> {turns}; sleep 0.5; echo end >> {turns}; echo my turn"
        ),
    );
    std::fs::write(
        site.path().join("hark.yml"),
        format!(
            r#"functions:
  turn:
    fprocess: {turn}
    annotations: {{ hark.async.concurrency: "1" }}
channels:
  slack:
    acme:
      signing_secrets: [slack-old]
      commands: {{ /turn: turn }}
      response_type: in_channel
      ack_budget: 300ms
"#
        ),
    )
    .unwrap();
    let gw = site.start(ALLOW_LOOPBACK, &slack_env());
    let command = |n: usize| {
        let body = slash_form("/turn", "", &format!("{}/commands/T1/1/{n}", slack_api.url));
        let headers = slack_headers(
            SLACK_SECRET,
            now(),
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        );
        let gw = &gw;
        async move { post(gw, "/slack/acme", &headers, body).await }
    };
    let answers = futures::future::join_all((1..=3).map(command)).await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
    }

    let mut seen = slack_api.wait_for(3).await;
    seen.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/commands/T1/1/1", "/commands/T1/1/2", "/commands/T1/1/3"]
    );
    for request in &seen {
        assert_eq!(
            request.json(),
            json!({"response_type": "in_channel", "text": "my turn"})
        );
    }
    assert_eq!(
        site.lines("turns.log"),
        ["start", "end", "start", "end", "start", "end"],
        "calls overlapped past the function's one slot"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slack_api.seen().len(), 3, "a result was posted twice");
}

#[tokio::test]
async fn slack_events_are_acknowledged_and_run_once_despite_retries() {
    let site = slack_site();
    let gw = site.start(&[], &slack_env());

    // URL verification.
    let challenge = br#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(SLACK_SECRET, now(), challenge, "application/json"),
        challenge.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    // An event, its retry, and a forged copy.
    let event = br#"{"type":"event_callback","event_id":"Ev0PV52K25","event":{"type":"app_mention","text":"<@U0> hi","user":"U1"}}"#;
    let headers = slack_headers(SLACK_SECRET, now(), event, "application/json");
    let (status, _) = post(&gw, "/slack/acme", &headers, event.to_vec()).await;
    assert_eq!(status, 200);
    let mut retry = slack_headers(SLACK_SECRET, now(), event, "application/json");
    retry.push(("x-slack-retry-num", "1".into()));
    retry.push(("x-slack-retry-reason", "http_timeout".into()));
    let (status, _) = post(&gw, "/slack/acme", &retry, event.to_vec()).await;
    assert_eq!(status, 200);
    let forged = slack_headers("not-the-secret", now(), event, "application/json");
    let (status, _) = post(&gw, "/slack/acme", &forged, event.to_vec()).await;
    assert_eq!(status, 401);

    let lines = site.wait_lines("events.log", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines_later = site.lines("events.log");
    assert_eq!(lines_later.len(), 1, "the event ran once: {lines_later:?}");
    // The function got the event's exact bytes.
    assert_eq!(lines[0].as_bytes(), event);

    let stats = channel_stats(&gw, "slack", "acme").await;
    assert_eq!(stats["duplicates"], 1, "{stats}");
    assert_eq!(stats["refused"]["signature_mismatch"], 1, "{stats}");

    // The activation record names the trigger.
    let activations: Value = gw.get_json("/system/activations?function=record").await;
    assert_eq!(activations.as_array().unwrap().len(), 1, "{activations}");
    assert_eq!(activations[0]["trigger"], "slack");
}

#[tokio::test]
async fn slack_block_actions_post_block_kit_to_response_url() {
    let slack_api = Recorder::start(|_, _| (200, "ok".into())).await;
    let site = slack_site();
    let gw = site.start(ALLOW_LOOPBACK, &slack_env());
    let payload = json!({
        "type": "block_actions",
        "user": {"id": "U1"},
        "trigger_id": "trig-1",
        "response_url": format!("{}/actions/1", slack_api.url),
        "actions": [{"action_id": "approve-button", "value": "yes"}],
    });
    let body = format!("payload={}", form_encode(&payload.to_string()));
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(
            SLACK_SECRET,
            now(),
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        ),
        body,
    )
    .await;
    assert_eq!((status, answer.as_str()), (200, ""));
    let seen = slack_api.wait_for(1).await;
    assert_eq!(seen[0].path, "/actions/1");
    let message = seen[0].json();
    assert_eq!(message["blocks"][0]["text"]["text"], "*Approved*");
    assert_eq!(message["response_type"], "in_channel");
}

/// A view submission, routed by the view's callback_id: the function's `response_action`
/// is the answer; an empty output closes the modal with an empty 200.
#[tokio::test]
async fn slack_view_submissions_answer_with_the_response_action() {
    let site = slack_site();
    let gw = site.start(&[], &slack_env());
    let submit = |note: &str| {
        let payload = json!({
            "type": "view_submission",
            "user": {"id": "U1"},
            "trigger_id": "trig-2",
            "view": {
                "id": "V1",
                "callback_id": "feedback-modal",
                "state": {"values": {"note": {"input": {"type": "plain_text_input", "value": note}}}},
            },
        });
        format!("payload={}", form_encode(&payload.to_string()))
    };
    let form = "application/x-www-form-urlencoded";
    let body = submit("meh");
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(SLACK_SECRET, now(), body.as_bytes(), form),
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({"response_action": "errors", "errors": {"note": "Too short"}})
    );
    let body = submit("long enough");
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(SLACK_SECRET, now(), body.as_bytes(), form),
        body,
    )
    .await;
    assert_eq!((status, answer.as_str()), (200, ""));
    let activations: Value = gw.get_json("/system/activations?function=validate").await;
    assert_eq!(activations.as_array().unwrap().len(), 2, "{activations}");
    assert_eq!(activations[0]["trigger"], "slack");
}

/// Events' results are posted by the app's bot with chat.postMessage: in the event's
/// channel and thread, plain text as `text`, Block Kit passed through.
#[tokio::test]
async fn slack_event_results_are_posted_with_chat_post_message() {
    let slack_api = Recorder::start(|request, _| {
        if request.path == "/api/chat.postMessage" {
            (200, r#"{"ok":true,"ts":"1.2"}"#.into())
        } else {
            (404, r#"{"ok":false,"error":"unknown_method"}"#.into())
        }
    })
    .await;
    let site = Site::new();
    let greet = site.script("greet", r#"sed -n 's/.*"user":"\([^"]*\)".*/Hi <@\1>!/p'"#);
    let react = site.script(
        "react",
        r#"cat >/dev/null; echo '{"blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*noted*"}}]}'"#,
    );
    site.config(
        &[("greet", &greet), ("react", &react)],
        &format!(
            r#"slack:
  acme:
    signing_secrets: [slack-old]
    bot_token: slack-bot
    api: "{}/api"
    reply_in_thread: true
    events: {{ app_mention: greet, reaction_added: react }}"#,
            slack_api.url
        ),
    );
    let gw = site.start(
        &[],
        &[
            ("HARK_SECRET_SLACK_OLD", SLACK_SECRET),
            ("HARK_SECRET_SLACK_BOT", "xoxb-test-token"),
        ],
    );
    let mention = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention","user":"U7","text":"<@U0> hi","channel":"C42","ts":"1700000000.000100"}}"#;
    let (status, _) = post(
        &gw,
        "/slack/acme",
        &slack_headers(SLACK_SECRET, now(), mention, "application/json"),
        mention.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let seen = slack_api.wait_for(1).await;
    assert_eq!(seen[0].path, "/api/chat.postMessage");
    assert_eq!(seen[0].header("authorization"), "Bearer xoxb-test-token");
    assert_eq!(
        seen[0].json(),
        json!({"channel": "C42", "thread_ts": "1700000000.000100", "text": "Hi <@U7>!"})
    );

    // An event without a ts of its own is answered in its channel, not in a thread.
    let reaction = br#"{"type":"event_callback","event_id":"Ev2","event":{"type":"reaction_added","user":"U7","reaction":"eyes","item":{"type":"message","channel":"C7","ts":"1.1"}}}"#;
    let (status, _) = post(
        &gw,
        "/slack/acme",
        &slack_headers(SLACK_SECRET, now(), reaction, "application/json"),
        reaction.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let seen = slack_api.wait_for(2).await;
    assert_eq!(
        seen[1].json(),
        json!({"channel": "C7", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*noted*"}}]})
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slack_api.seen().len(), 2);
    // Neither the token nor the descriptor's secrets are in the log or the queue listing.
    assert!(!gw.output().contains("xoxb-test-token"));
    let queued = gw
        .request(reqwest::Method::GET, "/system/queue")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!queued.contains("xoxb"), "{queued}");
}

// ---------------------------------------------------------------------------------------
// Crash safety: an acknowledged delivery survives a SIGKILL of the gateway

/// Waits until the queue shows `call_id` with its result delivered, and returns the entry.
async fn wait_delivered(gw: &Gateway, function: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries: Value = gw
            .get_json(&format!("/system/queue?function={function}"))
            .await;
        if let Some(entry) = entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["callbackState"] == "delivered")
        {
            return entry.clone();
        }
        assert!(Instant::now() < deadline, "no delivered result: {entries}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A slow slash command is acknowledged with the working message, the gateway is killed
/// with SIGKILL while the function runs, and after a restart on the same data directory
/// the function runs again (at least once) and its result reaches response_url once.
#[tokio::test]
async fn slack_deferred_reply_survives_a_killed_gateway() {
    let slack_api = Recorder::start(|_, _| (200, "ok".into())).await;
    let site = Site::new();
    let started = site.file("started.log");
    let slow = site.script(
        "slow",
        &format!("cat >/dev/null; echo run >> {started}; sleep 2; echo done late"),
    );
    site.config(
        &[("slow", &slow)],
        r#"slack:
  acme:
    signing_secrets: [slack-old]
    commands: { /slow: slow }
    response_type: in_channel
    ack_budget: 300ms"#,
    );
    let env = [("HARK_SECRET_SLACK_OLD", SLACK_SECRET)];
    let mut gw = site.start(ALLOW_LOOPBACK, &env);
    let response_url = format!("{}/commands/T1/1/crash", slack_api.url);
    let body = slash_form("/slow", "", &response_url);
    let (status, answer) = post(
        &gw,
        "/slack/acme",
        &slack_headers(
            SLACK_SECRET,
            now(),
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        ),
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert!(answer.contains("Working on it"), "{answer}");
    site.wait_lines("started.log", 1).await;
    gw.kill_hard();
    assert!(slack_api.seen().is_empty(), "posted before the kill");

    let gw = site.start(ALLOW_LOOPBACK, &env);
    let seen = slack_api.wait_for(1).await;
    assert_eq!(seen[0].path, "/commands/T1/1/crash");
    assert_eq!(
        seen[0].json(),
        json!({"response_type": "in_channel", "text": "done late"})
    );
    let entry = wait_delivered(&gw, "slow").await;
    assert_eq!(entry["trigger"], "slack");
    assert_eq!(entry["state"], "done");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(slack_api.seen().len(), 1, "posted once");
    assert_eq!(
        site.lines("started.log").len(),
        2,
        "ran again after the restart"
    );
}

/// A GitHub delivery answered 202 gets its comment after the gateway was killed while
/// the function ran; a redelivery of it after the restart is still a duplicate.
#[tokio::test]
async fn github_comment_survives_a_killed_gateway() {
    let api = Recorder::start(|_, _| (201, "{}".into())).await;
    let site = Site::new();
    let started = site.file("started.log");
    let commenter = site.script(
        "commenter",
        &format!("cat >/dev/null; echo run >> {started}; sleep 2; echo 'Looked at it.'"),
    );
    site.config(
        &[("commenter", &commenter)],
        &format!(
            r#"github:
  triage:
    webhook_secrets: [gh-hook]
    token: gh-token
    api: "{}"
    events: {{ issues.opened: commenter }}
    reply: comment
    ack_budget: 300ms"#,
            api.url
        ),
    );
    let env = [
        ("HARK_SECRET_GH_HOOK", GH_SECRET),
        ("HARK_SECRET_GH_TOKEN", "ghp_personal"),
    ];
    let mut gw = site.start(&[], &env);
    let body = issue_opened(12);
    let headers = github_headers(GH_SECRET, "issues", "crash-1", &body);
    let (status, answer) = post(&gw, "/github/triage", &headers, body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    site.wait_lines("started.log", 1).await;
    gw.kill_hard();
    assert!(api.seen().is_empty(), "commented before the kill");

    let gw = site.start(&[], &env);
    let seen = api.wait_for(1).await;
    assert_eq!(seen[0].path, "/repos/octo/repo/issues/12/comments");
    assert_eq!(seen[0].header("authorization"), "Bearer ghp_personal");
    assert_eq!(seen[0].json(), json!({"body": "Looked at it."}));
    let entry = wait_delivered(&gw, "commenter").await;
    assert_eq!(entry["trigger"], "github");
    let (status, answer) = post(&gw, "/github/triage", &headers, body).await;
    assert_eq!(status, 200);
    assert!(answer.contains("duplicate"), "{answer}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(api.seen().len(), 1, "commented once");
    assert_eq!(
        site.lines("started.log").len(),
        2,
        "ran again after the restart"
    );
}

#[tokio::test]
async fn slack_refuses_forged_stale_future_and_malformed_requests() {
    let site = slack_site();
    let gw = site.start(&[], &slack_env());
    let body = slash_form("/say", "hi", "");
    let form = "application/x-www-form-urlencoded";
    let send = |headers: Vec<(&'static str, String)>| {
        let (gw, body) = (&gw, body.clone());
        async move { post(gw, "/slack/acme", &headers, body).await }
    };

    // Rotation: both configured secrets pass, a third does not.
    assert_eq!(
        send(slack_headers(SLACK_SECRET, now(), body.as_bytes(), form))
            .await
            .0,
        200
    );
    assert_eq!(
        send(slack_headers(
            SLACK_NEW_SECRET,
            now(),
            body.as_bytes(),
            form
        ))
        .await
        .0,
        200
    );
    assert_eq!(
        send(slack_headers("third-secret", now(), body.as_bytes(), form))
            .await
            .0,
        401
    );
    // Six minutes old, or six minutes ahead: refused; four minutes ahead: fine.
    assert_eq!(
        send(slack_headers(
            SLACK_SECRET,
            now() - 360,
            body.as_bytes(),
            form
        ))
        .await
        .0,
        401
    );
    assert_eq!(
        send(slack_headers(
            SLACK_SECRET,
            now() + 360,
            body.as_bytes(),
            form
        ))
        .await
        .0,
        401
    );
    assert_eq!(
        send(slack_headers(
            SLACK_SECRET,
            now() + 240,
            body.as_bytes(),
            form
        ))
        .await
        .0,
        200
    );
    // Missing signature → 401; unreadable one → 400.
    assert_eq!(
        send(vec![(slack::TIMESTAMP, now().to_string())]).await.0,
        401
    );
    let mut bad = slack_headers(SLACK_SECRET, now(), body.as_bytes(), form);
    bad[1].1 = "v0=not-hex".into();
    assert_eq!(send(bad).await.0, 400);
    // Unknown app.
    let (status, _) = post(
        &gw,
        "/slack/other",
        &slack_headers(SLACK_SECRET, now(), body.as_bytes(), form),
        body.clone(),
    )
    .await;
    assert_eq!(status, 404);

    let stats = channel_stats(&gw, "slack", "acme").await;
    assert_eq!(stats["accepted"], 3, "{stats}");
    assert_eq!(stats["refused"]["signature_mismatch"], 1, "{stats}");
    assert_eq!(stats["refused"]["stale_timestamp"], 1, "{stats}");
    assert_eq!(stats["refused"]["future_timestamp"], 1, "{stats}");
    assert_eq!(stats["refused"]["missing_header"], 1, "{stats}");
    assert_eq!(stats["refused"]["malformed_header"], 1, "{stats}");
    // Refused requests never reached a function.
    let activations: Value = gw.get_json("/system/activations?function=say").await;
    assert_eq!(activations.as_array().unwrap().len(), 3);
    // No secret or signature in the log.
    let log = gw.output_containing("delivery refused");
    assert!(log.contains("delivery refused"), "{log}");
    assert!(!log.contains(SLACK_SECRET) && !log.contains(SLACK_NEW_SECRET));
    assert!(!log.contains(&slack::sign(b"third-secret", now(), body.as_bytes())[3..20]));
}

// ---------------------------------------------------------------------------------------
// GitHub

/// The test GitHub App's key, made once per test binary: (PKCS#8 PEM, PKCS#1 public key DER).
fn app_key() -> &'static (String, Vec<u8>) {
    static KEY: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        use aws_lc_rs::signature::KeyPair as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der: Pkcs8V1Der<'static> = pair.as_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        (pem, pair.public_key().as_ref().to_vec())
    })
}

/// Checks an RS256 JWT with the app's public key and returns its header and claims.
fn verified_jwt(token: &str) -> (Value, Value) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let signature = b64.decode(parts[2]).unwrap();
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        &app_key().1,
    );
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("JWT signature verifies with the app's public key");
    let decode = |p: &str| serde_json::from_slice::<Value>(&b64.decode(p).unwrap()).unwrap();
    (decode(parts[0]), decode(parts[1]))
}

const GH_SECRET: &str = "It's a Secret to Everybody";

fn issue_opened(number: u64) -> Vec<u8> {
    // Unusual but valid bytes: escaped unicode, keys out of order, odd whitespace.
    format!(
        "{{ \"action\":\"opened\",\n \"issue\": {{\"title\":\"Caf\\u00e9 \\ud83d\\ude00 crash\", \"number\": {number} }},\
         \"repository\":{{\"full_name\":\"octo/repo\"}},  \"installation\":{{\"id\":42}} }}"
    )
    .into_bytes()
}

#[tokio::test]
async fn github_app_labels_new_issues_with_an_installation_token() {
    let api = Recorder::start(|request, _| {
        if request.path.ends_with("/access_tokens") {
            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
            (
                201,
                json!({"token": "ghs_installation", "expires_at": expires.to_rfc3339()})
                    .to_string(),
            )
        } else {
            (200, "[]".into())
        }
    })
    .await;
    let site = Site::new();
    let labeler = site.script("labeler", r#"cat > /dev/null; echo '["bug", "triage"]'"#);
    let slow = site.script("slow", "cat > /dev/null; sleep 3; echo '[\"slow\"]'");
    site.config(
        &[("labeler", &labeler), ("slow", &slow)],
        &format!(
            r#"github:
  triage:
    webhook_secrets: [gh-hook]
    app: {{ id: 12345, private_key: gh-app-key, api: "{}" }}
    events: {{ issues.opened: labeler, issues.reopened: slow }}
    reply: labels
    ack_budget: 500ms"#,
            api.url
        ),
    );
    let gw = site.start(
        &[],
        &[
            ("HARK_SECRET_GH_HOOK", GH_SECRET),
            ("HARK_SECRET_GH_APP_KEY", &app_key().0),
        ],
    );

    let body = issue_opened(7);
    let before = now();
    let (status, answer) = post(
        &gw,
        "/github/triage",
        &github_headers(GH_SECRET, "issues", "d-1", &body),
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let seen = api.wait_for(2).await;
    let after = now();

    // The token exchange: JWT signed with the app's key, iat 60 s back, exp ≤ 10 min.
    assert_eq!(seen[0].path, "/app/installations/42/access_tokens");
    let jwt = seen[0]
        .header("authorization")
        .strip_prefix("Bearer ")
        .unwrap();
    let (header, claims) = verified_jwt(jwt);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], "12345");
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(
        (before - 61..=after - 59).contains(&iat),
        "iat {iat} vs now {before}..{after}"
    );
    assert!(exp > after && exp - iat <= 600, "exp {exp}, iat {iat}");
    assert_eq!(seen[0].header("accept"), "application/vnd.github+json");
    assert!(seen[0].header("user-agent").starts_with("hark/"));

    // The labels, with the installation token.
    assert_eq!(seen[1].path, "/repos/octo/repo/issues/7/labels");
    assert_eq!(seen[1].header("authorization"), "Bearer ghs_installation");
    assert_eq!(seen[1].json(), json!({"labels": ["bug", "triage"]}));

    // A redelivery (same X-GitHub-Delivery) does not run the function again.
    let (status, answer) = post(
        &gw,
        "/github/triage",
        &github_headers(GH_SECRET, "issues", "d-1", &body),
        body.clone(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(answer.contains("duplicate"), "{answer}");

    // Another issue: the cached token is reused, no second exchange.
    let body = issue_opened(8);
    let (status, _) = post(
        &gw,
        "/github/triage",
        &github_headers(GH_SECRET, "issues", "d-2", &body),
        body,
    )
    .await;
    assert_eq!(status, 200);
    let seen = api.wait_for(3).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2].path, "/repos/octo/repo/issues/8/labels");
    assert_eq!(seen[2].header("authorization"), "Bearer ghs_installation");

    // A slow function: 202 within the budget, the labels follow.
    let body = String::from_utf8(issue_opened(9))
        .unwrap()
        .replace("opened", "reopened");
    let started = Instant::now();
    let (status, _) = post(
        &gw,
        "/github/triage",
        &github_headers(GH_SECRET, "issues", "d-3", body.as_bytes()),
        body.clone(),
    )
    .await;
    assert_eq!(status, 202);
    assert!(started.elapsed() < Duration::from_millis(2500));
    let seen = api.wait_for(4).await;
    assert_eq!(seen[3].path, "/repos/octo/repo/issues/9/labels");
    assert_eq!(seen[3].json(), json!({"labels": ["slow"]}));

    // ping, an event nobody handles, and a forgery.
    let (status, _) = post(
        &gw,
        "/github/triage",
        &github_headers(GH_SECRET, "ping", "d-4", b"{}"),
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    let closed = br#"{"action":"closed"}"#;
    let (status, answer) = post(
        &gw,
        "/github/triage",
        &github_headers(GH_SECRET, "issues", "d-5", closed),
        closed.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(answer.contains("no function for issues.closed"), "{answer}");
    let body = issue_opened(10);
    let (status, _) = post(
        &gw,
        "/github/triage",
        &github_headers("wrong", "issues", "d-6", &body),
        body,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(api.seen().len(), 4);
}

#[tokio::test]
async fn github_personal_token_comments_on_pull_requests() {
    let api = Recorder::start(|_, _| (201, "{}".into())).await;
    let site = Site::new();
    let commenter = site.script("commenter", "cat > /dev/null; echo 'Thanks for the *PR*!'");
    site.config(
        &[("commenter", &commenter)],
        &format!(
            r#"github:
  reviews:
    webhook_secrets: [gh-old, gh-new]
    token: gh-token
    api: "{}/api/v3"
    events: {{ "pull_request.*": commenter }}
    reply: comment"#,
            api.url
        ),
    );
    let gw = site.start(
        &[],
        &[
            ("HARK_SECRET_GH_OLD", "old"),
            ("HARK_SECRET_GH_NEW", "new"),
            ("HARK_SECRET_GH_TOKEN", "ghp_personal"),
        ],
    );
    let body = br#"{"action":"synchronize","number":3,"pull_request":{"number":3},"repository":{"full_name":"octo/repo"}}"#;
    let (status, answer) = post(
        &gw,
        "/github/reviews",
        &github_headers("new", "pull_request", "p-1", body),
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let seen = api.wait_for(1).await;
    assert_eq!(seen[0].path, "/api/v3/repos/octo/repo/issues/3/comments");
    assert_eq!(seen[0].header("authorization"), "Bearer ghp_personal");
    assert_eq!(seen[0].json(), json!({"body": "Thanks for the *PR*!"}));
    // The old secret still works during a rotation; a third does not.
    let (status, _) = post(
        &gw,
        "/github/reviews",
        &github_headers("old", "pull_request", "p-2", body),
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &gw,
        "/github/reviews",
        &github_headers("third", "pull_request", "p-3", body),
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 401);
    // A missing signature is 401 too.
    let (status, _) = post(
        &gw,
        "/github/reviews",
        &[(github::EVENT, "pull_request".into())],
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 401);
}

// ---------------------------------------------------------------------------------------
// Generic hooks

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_NEW: &str = "whsec_dGhpcyBpcyB0aGUgbmV3IHNlY3JldCE=";

fn hooks_site() -> Site {
    let site = Site::new();
    let echo = site.script("echo", "cat");
    let count = site.file("count.log");
    let counter = site.script(
        "counter",
        &format!("cat > /dev/null; echo run >> {count}; echo counted"),
    );
    let slow = site.script(
        "slow",
        &format!("cat > /dev/null; sleep 2; echo slow >> {count}"),
    );
    site.config(
        &[("echo", &echo), ("counter", &counter), ("slow", &slow)],
        r#"hooks:
  deploy:
    standard_webhooks_secrets: [deploy-old, deploy-new]
    function: echo
  once:
    standard_webhooks_secrets: [deploy-old]
    function: counter
  signed:
    trigger_rule:
      and:
        - match: { type: payload-hmac-sha256, secret: hook-hmac, parameter: { source: header, name: X-Signature } }
        - match: { type: value, value: refs/heads/main, parameter: { source: payload, name: ref } }
    function: echo
  local:
    trigger_rule:
      match: { type: ip-whitelist, ip-range: "127.0.0.1/32" }
    function: echo
  elsewhere:
    trigger_rule:
      match: { type: ip-whitelist, ip-range: "192.0.2.0/24" }
    function: echo
  small:
    public: true
    function: echo
    max_body: 1KiB
  open:
    public: true
    function: echo
  background:
    public: true
    async: true
    function: slow
  narrow:
    public: true
    function: slow
    max_inflight: 1"#,
    );
    site
}

fn hooks_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HARK_SECRET_DEPLOY_OLD", WHSEC),
        ("HARK_SECRET_DEPLOY_NEW", WHSEC_NEW),
        ("HARK_SECRET_HOOK_HMAC", "hmac-key"),
    ]
}

#[tokio::test]
async fn standard_webhooks_pass_exact_bytes_and_refuse_replays_rotation_and_skew() {
    let site = hooks_site();
    let gw = site.start(&[], &hooks_env());
    // Bytes that change if parsed and re-serialised: escapes, key order, whitespace.
    let body = "{\"z\":1,  \"a\":\"caf\\u00e9\",\n\t\"n\":1.0e0}".as_bytes();
    let (status, answer) = post(
        &gw,
        "/hooks/deploy",
        &standard_headers(WHSEC, "msg_1", now(), body),
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.as_bytes(), body, "the function got the exact bytes");

    // Rotation: the new secret works, a third one does not.
    let (status, _) = post(
        &gw,
        "/hooks/deploy",
        &standard_headers(WHSEC_NEW, "msg_2", now(), body),
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let third = "whsec_b3RoZXIgc2VjcmV0IG5vdCBjb25maWd1cmVk";
    let (status, _) = post(
        &gw,
        "/hooks/deploy",
        &standard_headers(third, "msg_3", now(), body),
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 401);

    // Skew: 6 minutes ahead or behind is refused.
    for skew in [360, -360] {
        let (status, _) = post(
            &gw,
            "/hooks/deploy",
            &standard_headers(WHSEC, "msg_4", now() + skew, body),
            body.to_vec(),
        )
        .await;
        assert_eq!(status, 401, "skew {skew}");
    }
    // Missing signature → 401; an unreadable timestamp → 400.
    let mut headers = standard_headers(WHSEC, "msg_5", now(), body);
    headers.remove(2);
    assert_eq!(
        post(&gw, "/hooks/deploy", &headers, body.to_vec()).await.0,
        401
    );
    let mut headers = standard_headers(WHSEC, "msg_5", now(), body);
    headers[1].1 = "yesterday".into();
    assert_eq!(
        post(&gw, "/hooks/deploy", &headers, body.to_vec()).await.0,
        400
    );

    // A replayed message (same webhook-id) runs the function once.
    let headers = standard_headers(WHSEC, "msg_once", now(), b"{}");
    let first = post(&gw, "/hooks/once", &headers, "{}").await;
    let again = post(&gw, "/hooks/once", &headers, "{}").await;
    assert_eq!(first, (200, "counted\n".to_owned()));
    assert_eq!(again.0, 200);
    assert!(again.1.contains("duplicate"), "{}", again.1);
    assert_eq!(site.lines("count.log"), ["run"]);

    let stats = channel_stats(&gw, "hooks", "deploy").await;
    assert_eq!(stats["accepted"], 2, "{stats}");
    assert_eq!(stats["refused"]["signature_mismatch"], 1, "{stats}");
    assert_eq!(stats["refused"]["stale_timestamp"], 1, "{stats}");
    assert_eq!(stats["refused"]["future_timestamp"], 1, "{stats}");
    assert_eq!(channel_stats(&gw, "hooks", "once").await["duplicates"], 1);
}

#[tokio::test]
async fn trigger_rules_check_payload_hmacs_and_addresses() {
    let site = hooks_site();
    let gw = site.start(&[], &hooks_env());
    let body = br#"{"ref":"refs/heads/main", "after":"\u0041"}"#;
    let mac = |key: &[u8], body: &[u8]| {
        hex::encode(hark::verify::hmac::sign(
            hark::verify::hmac::Algorithm::Sha256,
            key,
            &[body],
        ))
    };
    let good = mac(b"hmac-key", body);
    // Rotation on the sender's side: several comma-separated signatures, one right.
    let signature = format!("sha256={}, sha256={good}", mac(b"old", body));
    let (status, answer) = post(
        &gw,
        "/hooks/signed",
        &[("x-signature", signature)],
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.as_bytes(), body);
    // A forged signature, a missing one, and the right signature on another branch.
    let (status, _) = post(
        &gw,
        "/hooks/signed",
        &[("x-signature", mac(b"guess", body))],
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(&gw, "/hooks/signed", &[], body.to_vec()).await;
    assert_eq!(status, 401);
    let other = br#"{"ref":"refs/heads/dev"}"#;
    let (status, _) = post(
        &gw,
        "/hooks/signed",
        &[("x-signature", mac(b"hmac-key", other))],
        other.to_vec(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        channel_stats(&gw, "hooks", "signed").await["refused"]["rule_not_satisfied"],
        3
    );

    // ip-whitelist sees the real peer address.
    assert_eq!(post(&gw, "/hooks/local", &[], "x").await.0, 200);
    assert_eq!(post(&gw, "/hooks/elsewhere", &[], "x").await.0, 401);
}

#[tokio::test]
async fn hooks_limit_body_size_and_concurrency_and_run_async() {
    let site = hooks_site();
    let gw = site.start(&[], &hooks_env());
    // max_body: 1KiB on `small`; the default 1 MiB elsewhere.
    assert_eq!(
        post(&gw, "/hooks/small", &[], vec![b'x'; 1024]).await.0,
        200
    );
    assert_eq!(
        post(&gw, "/hooks/small", &[], vec![b'x'; 1025]).await.0,
        413
    );
    assert_eq!(
        post(&gw, "/hooks/open", &[], vec![b'x'; 1024 * 1024 + 1])
            .await
            .0,
        413
    );
    assert_eq!(
        channel_stats(&gw, "hooks", "small").await["refused"]["too_large"],
        1
    );

    // async: 202 at once, the function runs afterwards.
    let started = Instant::now();
    let (status, answer) = post(&gw, "/hooks/background", &[], "go").await;
    assert_eq!(status, 202, "{answer}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    site.wait_lines("count.log", 1).await;

    // max_inflight: 1 — a second concurrent delivery is refused with 429.
    let (first, second) = tokio::join!(post(&gw, "/hooks/narrow", &[], "a"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        post(&gw, "/hooks/narrow", &[], "b").await
    });
    assert_eq!(first.0, 200);
    assert_eq!(second.0, 429, "{}", second.1);
    assert_eq!(
        channel_stats(&gw, "hooks", "narrow").await["refused"]["overloaded"],
        1
    );

    // Unknown hooks are 404.
    assert_eq!(post(&gw, "/hooks/nope", &[], "x").await.0, 404);
    // /system/channels needs a token.
    let anonymous = gw
        .client
        .get(format!("{}/system/channels", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

// ---------------------------------------------------------------------------------------
// Start-up checks

#[tokio::test]
async fn routes_naming_missing_secrets_or_functions_stop_the_start() {
    let site = Site::new();
    site.config(
        &[("ok", "echo ok")],
        "slack:\n  acme:\n    signing_secrets: [slack-signing]\n    commands: { /x: ok }",
    );
    let stderr = site.start_fails(&[]);
    assert!(stderr.contains("channels.slack.acme"), "{stderr}");
    assert!(stderr.contains("\"slack-signing\""), "{stderr}");
    assert!(stderr.contains("HARK_SECRET_SLACK_SIGNING"), "{stderr}");

    site.config(
        &[("ok", "echo ok")],
        "github:\n  triage:\n    webhook_secrets: [gh]\n    events: { issues.opened: labeler }",
    );
    let stderr = site.start_fails(&[("HARK_SECRET_GH", "s")]);
    assert!(stderr.contains("channels.github.triage"), "{stderr}");
    assert!(
        stderr.contains("function \"labeler\" is not deployed"),
        "{stderr}"
    );

    site.config(&[("ok", "echo ok")], "hooks:\n  open:\n    function: ok");
    let stderr = site.start_fails(&[]);
    assert!(stderr.contains("channels.hooks.open"), "{stderr}");
    assert!(stderr.contains("public: true"), "{stderr}");

    // A rule's payload-hmac secret is a secret name too.
    site.config(
        &[("ok", "echo ok")],
        "hooks:\n  h:\n    function: ok\n    trigger_rule: { match: { type: payload-hmac-sha1, secret: rule-key, parameter: { source: header, name: x-sig } } }",
    );
    let stderr = site.start_fails(&[]);
    assert!(stderr.contains("\"rule-key\""), "{stderr}");

    // Fixed, it starts.
    let gw = site.start(&[], &[("HARK_SECRET_RULE_KEY", "k")]);
    assert!(
        gw.output_containing("route ready at /hooks/h")
            .contains("route ready at /hooks/h"),
        "{}",
        gw.output()
    );
}

/// A secret in the store counts, and wins over the environment.
#[tokio::test]
async fn secrets_come_from_the_store_before_the_environment() {
    let site = Site::new();
    let mut gw = site.start(&[], &[]);
    crate::util::register_secret(WHSEC);
    let response = gw
        .request(reqwest::Method::POST, "/system/secrets")
        .json(&json!({"name": "deploy-hook", "value": WHSEC}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert!(gw.stop());
    site.config(
        &[("ok", "echo ok")],
        "hooks:\n  deploy:\n    standard_webhooks_secrets: [deploy-hook]\n    function: ok",
    );
    let gw = site.start(
        &[],
        &[("HARK_SECRET_DEPLOY_HOOK", "whsec_ZW52aXJvbm1lbnQgdmFsdWU=")],
    );
    let (status, _) = post(
        &gw,
        "/hooks/deploy",
        &standard_headers(WHSEC, "m1", now(), b"{}"),
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    let env_signed = standard_headers("whsec_ZW52aXJvbm1lbnQgdmFsdWU=", "m2", now(), b"{}");
    assert_eq!(post(&gw, "/hooks/deploy", &env_signed, "{}").await.0, 401);
}
