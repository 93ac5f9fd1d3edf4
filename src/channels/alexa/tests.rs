//! The Alexa channel through the HTTP layer (`app(state).oneshot(..)`) with real fork-mode
//! functions: verification failures answer 400, verified requests run their function and
//! speak, and the deadline, late results, attributes and errors behave as documented.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tower::ServiceExt as _;

use super::channel::AlexaSettings;
use super::testpki::{self, Pki};
use super::verify::test_support::conformance_dir;
use super::verify::{HEADER_CERT_CHAIN_URL, HEADER_SIGNATURE_256, HEADER_SIGNATURE_SHA1};
use crate::browser::BrowserMode;
use crate::function::FunctionDeployment;
use crate::gateway::{ClockConfig, GatewayConfig, StackSource};
use crate::provider::process::SandboxMode;
use crate::server::{app, AppState};
use crate::stack::Stack;

const APP_ID: &str = "amzn1.ask.skill.00000000-1111-2222-3333-444444444444";
const REAL_APP_ID: &str = "amzn1.ask.skill.f5e6173c-8f7a-4c51-85e8-275e52d9443b";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The clock of the Signature-256 tests.
fn now() -> DateTime<Utc> {
    at("2025-03-01T12:00:00Z")
}

struct Harness {
    state: Arc<AppState>,
    admin: String,
    _dir: tempfile::TempDir,
    /// Dropped, the gateway drains and stops.
    _stop: oneshot::Sender<()>,
}

/// A gateway state with `skills` (name, skill.yaml), fork functions (name, sh script),
/// the given settings and clock.
async fn harness(
    skills: &[(&str, &str)],
    functions: &[(&str, &str)],
    settings: AlexaSettings,
    clock: DateTime<Utc>,
) -> Harness {
    harness_with_api(skills, functions, settings, clock, None).await
}

/// [`harness`] whose progressive responses may also go to the fake Alexa API at `api`.
/// The gateway is built as `hark up` builds it: skills from a directory, functions from
/// a stack, no sandbox and no browser.
async fn harness_with_api(
    skills: &[(&str, &str)],
    functions: &[(&str, &str)],
    settings: AlexaSettings,
    clock: DateTime<Utc>,
    api: Option<&str>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let skills_dir = dir.path().join("skills");
    for (name, text) in skills {
        std::fs::create_dir_all(skills_dir.join(name)).unwrap();
        std::fs::write(skills_dir.join(name).join("skill.yaml"), text).unwrap();
    }
    let functions_named = functions;
    let functions = functions
        .iter()
        .map(|(name, script)| FunctionDeployment {
            service: name.parse().unwrap(),
            env_process: Some(format!("sh -c '{}'", script.replace('\'', "'\\''"))),
            ..FunctionDeployment::default()
        })
        .collect();
    let mut config = GatewayConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.skills = Some(skills_dir);
    config.stack = StackSource::Parsed(Box::new(Stack {
        functions,
        alexa: Some(settings),
        ..Stack::default()
    }));
    config.provider.sandbox = SandboxMode::Off;
    config.browser.mode = Some(BrowserMode::Off);
    config.clock = ClockConfig::Fixed(clock);
    config.alexa_api_for_tests = api.map(|api| api.parse().unwrap());
    // Late answers go through the queue: not refused on a nearly full test disk.
    config.queue.min_free_disk = 0;
    let gateway = config.build().await.unwrap();
    let state = gateway.state().clone();
    for (name, _) in functions_named {
        assert!(
            state.registry.deployed(&name.parse().unwrap()).is_some(),
            "{name} was not deployed"
        );
    }
    let (admin, _) = state
        .auth
        .mint("test", &["admin".to_owned()], Default::default(), false)
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));
    Harness {
        state,
        admin,
        _dir: dir,
        _stop: stop,
    }
}

impl Harness {
    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::post(path).header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = app(self.state.clone())
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// Sends an unsigned request to a `verify: false` skill and expects 200.
    async fn say(&self, skill: &str, body: Value) -> Value {
        let (status, answer) = self
            .post(
                &format!("/alexa/{skill}"),
                &[],
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// A request envelope for `app_id` at `timestamp`.
fn envelope(app_id: &str, timestamp: DateTime<Utc>, request: Value) -> Value {
    let mut request = request;
    request["requestId"] = json!("amzn1.echo-api.request.test-1");
    request["timestamp"] = json!(timestamp.to_rfc3339());
    request["locale"] = json!("en-GB");
    json!({
        "version": "1.0",
        "session": {"new": true, "sessionId": "s1", "application": {"applicationId": app_id},
                    "attributes": {}, "user": {"userId": "amzn1.ask.account.u1"}},
        "context": {"System": {"application": {"applicationId": app_id},
                               "user": {"userId": "amzn1.ask.account.u1"}}},
        "request": request,
    })
}

fn intent(name: &str, slots: &[(&str, &str)]) -> Value {
    let slots: serde_json::Map<String, Value> = slots
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!({ "name": k, "value": v, "confirmationStatus": "NONE" }),
            )
        })
        .collect();
    json!({ "type": "IntentRequest", "intent": { "name": name, "confirmationStatus": "NONE", "slots": slots } })
}

fn speech(answer: &Value) -> &str {
    answer["response"]["outputSpeech"]["ssml"]
        .as_str()
        .unwrap_or_else(|| panic!("no speech in {answer}"))
}

// --- The real Amazon-signed request ----------------------------------------------------------

const REAL_SKILL: &str = r#"
id: amzn1.ask.skill.f5e6173c-8f7a-4c51-85e8-275e52d9443b
invocation: real player
intents:
  PlayAudio:
    samples: [play]
    function: play
    speech: "{{ result.speech }}"
"#;

#[tokio::test]
async fn the_real_amazon_request_is_verified_through_the_endpoint() {
    let Some(dir) = conformance_dir() else { return };
    let real = dir.join("alexa/real-2017-11-20");
    let body = std::fs::read(real.join("body.json")).unwrap();
    let url = std::fs::read_to_string(real.join("signature_cert_chain_url.txt")).unwrap();
    let signature = std::fs::read_to_string(real.join("signature.b64")).unwrap();
    let headers = [
        (HEADER_CERT_CHAIN_URL, url.trim()),
        (HEADER_SIGNATURE_SHA1, signature.trim()),
    ];
    let settings = |sha1: bool| AlexaSettings {
        trust_roots: vec![dir
            .join("alexa/chains/verisign-class3-g5-root.pem")
            .display()
            .to_string()],
        cert_dir: Some(real.clone()),
        download_missing: false,
        allow_sha1_signature: sha1,
        ..AlexaSettings::default()
    };
    let play = [("play", r#"echo "{\"speech\": \"Playing.\"}""#)];
    let signed_at = at("2017-11-20T08:45:05Z");

    let h = harness(&[("real", REAL_SKILL)], &play, settings(true), signed_at).await;
    let (status, answer) = h.post("/alexa/real", &headers, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(speech(&answer), "<speak>Playing.</speak>");

    // One byte of the body changed.
    let mut changed = body.clone();
    let i = changed.iter().position(|b| *b == b'P').unwrap();
    changed[i] = b'Q';
    let (status, answer) = h.post("/alexa/real", &headers, changed).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("signature_mismatch"),
        "{answer}"
    );

    // An hour later.
    let later = harness(
        &[("real", REAL_SKILL)],
        &play,
        settings(true),
        signed_at + chrono::Duration::hours(1),
    )
    .await;
    let (status, answer) = later.post("/alexa/real", &headers, body.clone()).await;
    assert_eq!(status, 400, "{answer}");

    // SHA-1 off, as by default.
    let default = harness(&[("real", REAL_SKILL)], &play, settings(false), signed_at).await;
    let (status, answer) = default.post("/alexa/real", &headers, body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("sha1_disabled"),
        "{answer}"
    );
    let _ = REAL_APP_ID;
}

// --- Signature-256 with the test CA ------------------------------------------------------------

const GREETER: &str = r#"
id: amzn1.ask.skill.00000000-1111-2222-3333-444444444444
invocation: the greeter
intents:
  Greet:
    samples: ["greet {name}"]
    slots: { name: AMAZON.FirstName }
    function: greet
    input: { who: "{{ slots.name }}" }
    speech: "{{ result }}"
"#;

const GREET_FN: &str = r#"sed -e "s/.*\"who\":\"\([^\"]*\)\".*/Hello, \1!/""#;

/// The certificate directory: one chain per file, chosen by the URL's last segment.
fn cert_dir(pki: &Pki) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in [
        ("good.pem", &pki.good_chain),
        ("expired.pem", &pki.expired_chain),
        ("future.pem", &pki.future_chain),
        ("nosan.pem", &pki.no_san_chain),
        ("rogue.pem", &pki.rogue_chain),
    ] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    dir
}

/// A refused request: what it is, its headers, its body, the reason expected.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);

const GOOD_URL: &str = "https://s3.amazonaws.com/echo.api/good.pem";

#[tokio::test]
async fn signature_256_requests_are_verified_and_every_failure_is_a_400() {
    let pki = Pki::for_time(now());
    let certs = cert_dir(&pki);
    let settings = AlexaSettings {
        use_default_roots: false,
        trust_roots: vec![pki.root_pem.clone()],
        cert_dir: Some(certs.path().to_owned()),
        download_missing: false,
        ..AlexaSettings::default()
    };
    let h = harness(
        &[("greeter", GREETER)],
        &[("greet", GREET_FN)],
        settings,
        now(),
    )
    .await;
    let body_at = |ts: DateTime<Utc>, app: &str| {
        envelope(app, ts, intent("Greet", &[("name", "Ada")]))
            .to_string()
            .into_bytes()
    };
    let body = body_at(now() - chrono::Duration::seconds(3), APP_ID);
    let sig = testpki::sign(&body);

    // The valid request runs the function and speaks its answer.
    let headers = [
        (HEADER_CERT_CHAIN_URL, GOOD_URL),
        (HEADER_SIGNATURE_256, sig.as_str()),
    ];
    let (status, answer) = h.post("/alexa/greeter", &headers, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(speech(&answer), "<speak>Hello, Ada!</speak>");

    let url = |u: &'static str| {
        vec![
            (HEADER_CERT_CHAIN_URL, u),
            (HEADER_SIGNATURE_256, sig.as_str()),
        ]
    };
    let mut cases: Vec<Case> = vec![
        ("no headers", vec![], body.clone(), "missing_header"),
        (
            "no URL",
            vec![(HEADER_SIGNATURE_256, sig.as_str())],
            body.clone(),
            "missing_header",
        ),
        (
            "empty URL",
            vec![
                (HEADER_CERT_CHAIN_URL, ""),
                (HEADER_SIGNATURE_256, sig.as_str()),
            ],
            body.clone(),
            "missing_header",
        ),
        (
            "no signature",
            vec![(HEADER_CERT_CHAIN_URL, GOOD_URL)],
            body.clone(),
            "missing_header",
        ),
        (
            "empty signature",
            vec![
                (HEADER_CERT_CHAIN_URL, GOOD_URL),
                (HEADER_SIGNATURE_256, ""),
            ],
            body.clone(),
            "missing_header",
        ),
        (
            "http scheme",
            url("http://s3.amazonaws.com/echo.api/good.pem"),
            body.clone(),
            "cert_url_scheme",
        ),
        (
            "wrong host",
            url("https://notamazon.com/echo.api/good.pem"),
            body.clone(),
            "cert_url_host",
        ),
        (
            "host look-alike",
            url("https://s3.amazonaws.com.evil.com/echo.api/good.pem"),
            body.clone(),
            "cert_url_host",
        ),
        (
            "wrong port",
            url("https://s3.amazonaws.com:563/echo.api/good.pem"),
            body.clone(),
            "cert_url_port",
        ),
        (
            "path case",
            url("https://s3.amazonaws.com/EcHo.aPi/good.pem"),
            body.clone(),
            "cert_url_path",
        ),
        (
            "wrong path",
            url("https://s3.amazonaws.com/invalid.path/good.pem"),
            body.clone(),
            "cert_url_path",
        ),
        (
            "traversal",
            url("https://s3.amazonaws.com/echo.api/../good.pem"),
            body.clone(),
            "cert_url_path",
        ),
        (
            "encoded traversal",
            url("https://s3.amazonaws.com/echo.api/%2E%2E/good.pem"),
            body.clone(),
            "cert_url_percent_encoded",
        ),
        (
            "chain not in cert_dir",
            url("https://s3.amazonaws.com/echo.api/absent.pem"),
            body.clone(),
            "cert_fetch",
        ),
        (
            "untrusted chain",
            url("https://s3.amazonaws.com/echo.api/rogue.pem"),
            body.clone(),
            "cert_untrusted",
        ),
        (
            "expired leaf",
            url("https://s3.amazonaws.com/echo.api/expired.pem"),
            body.clone(),
            "cert_expired",
        ),
        (
            "leaf not yet valid",
            url("https://s3.amazonaws.com/echo.api/future.pem"),
            body.clone(),
            "cert_not_yet_valid",
        ),
        (
            "SAN missing",
            url("https://s3.amazonaws.com/echo.api/nosan.pem"),
            body.clone(),
            "cert_san_missing",
        ),
        (
            "non-base64 signature",
            vec![
                (HEADER_CERT_CHAIN_URL, GOOD_URL),
                (HEADER_SIGNATURE_256, "not*base64!"),
            ],
            body.clone(),
            "bad_signature_encoding",
        ),
        (
            "SHA-1 header only",
            vec![
                (HEADER_CERT_CHAIN_URL, GOOD_URL),
                (HEADER_SIGNATURE_SHA1, sig.as_str()),
            ],
            body.clone(),
            "sha1_disabled",
        ),
    ];
    let mut changed = body.clone();
    let i = changed.iter().position(|b| *b == b'A').unwrap();
    changed[i] = b'B';
    cases.push((
        "body changed",
        headers.to_vec(),
        changed,
        "signature_mismatch",
    ));
    let other = body_at(now(), APP_ID);
    let other_sig = testpki::sign(&other);
    cases.push((
        "signature of another body",
        vec![
            (HEADER_CERT_CHAIN_URL, GOOD_URL),
            (HEADER_SIGNATURE_256, other_sig.as_str()),
        ],
        body.clone(),
        "signature_mismatch",
    ));
    let mut signed_cases = Vec::new();
    for (what, ts, app, reason) in [
        (
            "timestamp too old",
            now() - chrono::Duration::seconds(151),
            APP_ID,
            "timestamp_out_of_range",
        ),
        (
            "timestamp too far ahead",
            now() + chrono::Duration::seconds(151),
            APP_ID,
            "timestamp_out_of_range",
        ),
        (
            "wrong application id",
            now(),
            "amzn1.ask.skill.someone-else",
            "app_id_mismatch",
        ),
    ] {
        let b = body_at(ts, app);
        let s = testpki::sign(&b);
        signed_cases.push((what, b, s, reason));
    }
    for (what, b, s, reason) in &signed_cases {
        cases.push((
            what,
            vec![
                (HEADER_CERT_CHAIN_URL, GOOD_URL),
                (HEADER_SIGNATURE_256, s.as_str()),
            ],
            b.clone(),
            reason,
        ));
    }
    for (what, headers, body, reason) in cases {
        let (status, answer) = h.post("/alexa/greeter", &headers, body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{what}: expected {reason}, got {error}"
        );
    }
    // Nothing but the valid request ran the function.
    h.state.registry.store.flush().await;
    let runs = h.state.registry.store.activations(None, 100).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger, "alexa");

    // An unknown skill is a 404.
    let (status, _) = h.post("/alexa/nobody", &headers, body).await;
    assert_eq!(status, 404);
}

// --- Replies ------------------------------------------------------------------------------------

const DEV_SKILL: &str = r#"
id: amzn1.ask.skill.dev
invocation: dev helper
verify: false
deadline: { budget: 1500ms, progressive_after: 300ms }
replies:
  still_working: "Still on it."
  error: "That went wrong."
intents:
  Repeat:
    samples: ["repeat {words}"]
    slots: { words: AMAZON.SearchQuery }
    speech: "You said {{ slots.words }}."
    card: { title: "Repeat" }
  Echo:
    samples: ["echo {words}"]
    slots: { words: AMAZON.SearchQuery }
    function: cat
    speech: "The function saw {{ result.input.words }}, user {{ result.user.attributes.name }}, count {{ result.session.count }}."
  Remember:
    samples: ["call me {name}"]
    slots: { name: AMAZON.FirstName }
    function: remember
    input: { name: "{{ slots.name }}" }
    speech: "Hello {{ result.speech }}, I'll remember."
  Slow:
    samples: ["take your time"]
    function: slow
    speech: "Booked {{ result.days }} days."
  Crash:
    samples: ["crash"]
    function: crash
    speech: "never said"
  Missing:
    samples: ["call nobody"]
    function: nobody
    speech: "never said"
  Book:
    samples: ["book {date}"]
    slots:
      date: { type: AMAZON.DATE, required: true, prompt: "Which day?" }
    speech: "Booked {{ slots.date }}."
  WhatHappened:
    samples: ["what happened"]
    speech: "That's all."
"#;

fn dev_functions() -> Vec<(&'static str, &'static str)> {
    vec![
        ("cat", "cat"),
        (
            "remember",
            r#"n=$(sed -e "s/.*\"name\":\"\([^\"]*\)\".*/\1/"); echo "{\"speech\":\"$n\",\"set_user\":{\"name\":\"$n\"},\"set_session\":{\"count\":1}}""#,
        ),
        ("slow", r#"sleep 2.5; echo "{\"days\": 3}""#),
        ("crash", "echo oops >&2; exit 3"),
    ]
}

async fn dev() -> Harness {
    harness(
        &[("dev", DEV_SKILL)],
        &dev_functions(),
        AlexaSettings::default(),
        Utc::now(),
    )
    .await
}

#[tokio::test]
async fn slot_values_with_ssml_metacharacters_are_spoken_escaped() {
    let h = dev().await;
    let answer = h
        .say(
            "dev",
            envelope(
                "amzn1.ask.skill.dev",
                Utc::now(),
                intent("Repeat", &[("words", "</speak> & <break time=\"10s\"/>")]),
            ),
        )
        .await;
    let ssml = speech(&answer);
    assert_eq!(
        ssml,
        "<speak>You said &lt;/speak&gt; &amp; &lt;break time=&quot;10s&quot;/&gt;.</speak>"
    );
    super::ssml::validate(ssml).unwrap();
    assert_eq!(
        answer["response"]["card"],
        json!({ "type": "Simple", "title": "Repeat", "content": "You said </speak> & <break time=\"10s\"/>." })
    );
    assert_eq!(answer["response"]["shouldEndSession"], true);
}

#[tokio::test]
async fn functions_see_slots_session_and_user_attributes_which_persist() {
    let h = dev().await;
    let app = "amzn1.ask.skill.dev";
    let answer = h
        .say(
            "dev",
            envelope(app, Utc::now(), intent("Remember", &[("name", "Ada & Bo")])),
        )
        .await;
    assert_eq!(
        speech(&answer),
        "<speak>Hello Ada &amp; Bo, I'll remember.</speak>"
    );
    assert_eq!(answer["sessionAttributes"], json!({ "count": 1 }));

    // Next turn of the session: the session attributes come back from Alexa.
    let mut next = envelope(app, Utc::now(), intent("Echo", &[("words", "hi")]));
    next["session"]["attributes"] = answer["sessionAttributes"].clone();
    let answer = h.say("dev", next).await;
    assert_eq!(
        speech(&answer),
        "<speak>The function saw hi, user Ada &amp; Bo, count 1.</speak>"
    );

    // A new session: the user attribute persisted in the store, the session one did not.
    let answer = h
        .say(
            "dev",
            envelope(app, Utc::now(), intent("Echo", &[("words", "again")])),
        )
        .await;
    assert_eq!(
        speech(&answer),
        "<speak>The function saw again, user Ada &amp; Bo, count .</speak>"
    );
}

#[tokio::test]
async fn failing_or_missing_functions_are_spoken_errors_not_500s() {
    let h = dev().await;
    let app = "amzn1.ask.skill.dev";
    for name in ["Crash", "Missing"] {
        let answer = h
            .say("dev", envelope(app, Utc::now(), intent(name, &[])))
            .await;
        assert_eq!(speech(&answer), "<speak>That went wrong.</speak>", "{name}");
    }
}

#[tokio::test]
async fn built_in_requests_get_sensible_answers() {
    let h = dev().await;
    let app = "amzn1.ask.skill.dev";
    let ended = h
        .say(
            "dev",
            envelope(
                app,
                Utc::now(),
                json!({ "type": "SessionEndedRequest", "reason": "USER_INITIATED" }),
            ),
        )
        .await;
    assert_eq!(ended, json!({ "version": "1.0", "response": {} }));
    let launch = h
        .say(
            "dev",
            envelope(app, Utc::now(), json!({ "type": "LaunchRequest" })),
        )
        .await;
    assert_eq!(
        speech(&launch),
        "<speak>Welcome to dev helper. What would you like to do?</speak>"
    );
    assert_eq!(launch["response"]["shouldEndSession"], false);
    assert!(launch["response"]["reprompt"]["outputSpeech"]["ssml"].is_string());
    let help = h
        .say(
            "dev",
            envelope(app, Utc::now(), intent("AMAZON.HelpIntent", &[])),
        )
        .await;
    assert!(speech(&help).contains("echo something"), "{help}");
    let stop = h
        .say(
            "dev",
            envelope(app, Utc::now(), intent("AMAZON.StopIntent", &[])),
        )
        .await;
    assert_eq!(speech(&stop), "<speak>Goodbye.</speak>");
    let fallback = h
        .say(
            "dev",
            envelope(app, Utc::now(), intent("AMAZON.FallbackIntent", &[])),
        )
        .await;
    assert!(speech(&fallback).contains("can't help"), "{fallback}");

    // A required slot that is missing is asked for.
    let book = h
        .say("dev", envelope(app, Utc::now(), intent("Book", &[])))
        .await;
    assert_eq!(speech(&book), "<speak>Which day?</speak>");
    assert_eq!(
        book["response"]["directives"][0]["type"],
        "Dialog.ElicitSlot"
    );
    assert_eq!(book["response"]["directives"][0]["slotToElicit"], "date");
    let book = h
        .say(
            "dev",
            envelope(app, Utc::now(), intent("Book", &[("date", "2026-12-04")])),
        )
        .await;
    assert_eq!(speech(&book), "<speak>Booked 2026-12-04.</speak>");

    // Unsigned requests for another skill id are refused even in development mode.
    let body = envelope(
        "amzn1.ask.skill.other",
        Utc::now(),
        json!({ "type": "LaunchRequest" }),
    );
    let (status, _) = h
        .post("/alexa/dev", &[], body.to_string().into_bytes())
        .await;
    assert_eq!(status, 400);
}

/// Requests the fake Alexa API received: (path, authorization, body).
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

async fn fake_alexa_api() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let sink = sink.clone();
        async move {
            let path = request.uri().path().to_owned();
            let auth = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            sink.lock().unwrap().push((path, auth, body));
            StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_function_gets_a_progressive_response_and_is_spoken_next_time() {
    let (api, seen) = fake_alexa_api().await;
    let h = harness_with_api(
        &[("dev", DEV_SKILL)],
        &dev_functions(),
        AlexaSettings::default(),
        Utc::now(),
        Some(&api),
    )
    .await;
    let app = "amzn1.ask.skill.dev";
    let mut body = envelope(app, Utc::now(), intent("Slow", &[]));
    body["context"]["System"]["apiEndpoint"] = json!(api);
    body["context"]["System"]["apiAccessToken"] = json!("token-abc");
    let started = std::time::Instant::now();
    let answer = h.say("dev", body).await;
    let took = started.elapsed();
    assert_eq!(speech(&answer), "<speak>Still on it.</speak>");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2400),
        "{took:?}"
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (path, auth, progressive) = &seen[0];
    assert_eq!(path, "/v1/directives");
    assert_eq!(auth, "Bearer token-abc");
    assert_eq!(
        progressive,
        &json!({
            "header": { "requestId": "amzn1.echo-api.request.test-1" },
            "directive": { "type": "VoicePlayer.Speak", "speech": "<speak>Working on it.</speak>" },
        })
    );

    // The next request hears the result, once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = h
            .say(
                "dev",
                envelope(app, Utc::now(), intent("WhatHappened", &[])),
            )
            .await;
        let said = speech(&answer).to_owned();
        if said.contains("Booked 3 days.") {
            assert_eq!(
                said,
                "<speak><p>About your earlier request: Booked 3 days.</p> That's all.</speak>"
            );
            break;
        }
        assert_eq!(said, "<speak>That's all.</speak>");
        assert!(
            std::time::Instant::now() < deadline,
            "the late result never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = h
        .say(
            "dev",
            envelope(app, Utc::now(), intent("WhatHappened", &[])),
        )
        .await;
    assert_eq!(speech(&answer), "<speak>That's all.</speak>");
}

#[tokio::test]
async fn hark_say_requests_need_a_token_and_skip_the_signature() {
    let pki = Pki::for_time(now());
    let settings = AlexaSettings {
        use_default_roots: false,
        trust_roots: vec![pki.root_pem.clone()],
        ..AlexaSettings::default()
    };
    let h = harness(
        &[("greeter", GREETER)],
        &[("greet", GREET_FN)],
        settings,
        now(),
    )
    .await;
    let body = envelope(APP_ID, now(), intent("Greet", &[("name", "Bo")]))
        .to_string()
        .into_bytes();
    let (status, _) = h
        .post("/system/skills/greeter/say", &[], body.clone())
        .await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {}", h.admin);
    let (status, answer) = h
        .post(
            "/system/skills/greeter/say",
            &[("authorization", &bearer)],
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(speech(&answer), "<speak>Hello, Bo!</speak>");
    // The same body unsigned on Amazon's path is refused.
    let (status, _) = h.post("/alexa/greeter", &[], body).await;
    assert_eq!(status, 400);
}
