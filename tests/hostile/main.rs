//! Hostile input over real HTTP against a real `hark up` (process provider): slow senders,
//! truncated and oversized bodies, header floods, invalid UTF-8, deeply nested JSON, wrong
//! content types, path traversal, SSML injection through Alexa slots and replayed
//! deliveries. Each case checks the status code, the gateway's log line naming the refusal,
//! that a normal call still works afterwards, and (for the volleys) that the gateway's
//! memory stays bounded. Malformed HTTP that reqwest cannot send goes over raw
//! `tokio::net::TcpStream`s. Its own test binary: the volleys and slow senders should not
//! share the machine's two cores with the main suite.

#[allow(dead_code)]
#[path = "../hark/util.rs"]
mod util;

use std::path::Path;
use std::time::{Duration, Instant};

use hark::channels::alexa::{testpki, verify as alexa_verify};
use hark::channels::github::verify as github;
use hark::channels::hooks::verify as standard;
use hark::channels::slack::verify as slack;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use util::{strip_ansi, Gateway};

const SLACK_SECRET: &str = "hostile-slack-signing-secret-0001";
const GH_SECRET: &str = "hostile-github-webhook-secret-0002";
const WHSEC: &str = "whsec_aG9zdGlsZSBzdGFuZGFyZCB3ZWJob29rcyBzZWNyZXQ=";
const TEAMS_TOKEN: &str = "aG9zdGlsZSB0ZWFtcyBzZWN1cml0eSB0b2tlbiAwMDAz";
const TELEGRAM_SECRET: &str = "hostile-telegram-secret-0004";
/// The seed of the Discord application's key.
const DISCORD_SEED: &[u8; 32] = b"hostile-discord-application-key!";
const APP_ID: &str = "amzn1.ask.skill.hostile";
const CERT_URL: &str = "https://s3.amazonaws.com/echo.api/hostile.pem";
/// The gateway's body limit in these tests (small, so the volleys stay cheap).
const MAX_BODY: usize = 64 * 1024;
/// The gateway's head limit in these tests.
const MAX_HEADER_BYTES: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------
// Fixtures

/// A gateway with one route on every channel, short timeouts and small limits.
struct Site {
    gw: Gateway,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Site {
    fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let pki = testpki::Pki::for_time(chrono::Utc::now());
        std::fs::create_dir_all(data.join("certs")).unwrap();
        std::fs::write(data.join("certs/hostile.pem"), &pki.good_chain).unwrap();
        std::fs::write(data.join("root.pem"), &pki.root_pem).unwrap();
        let skill = data.join("skills/parrot");
        std::fs::create_dir_all(&skill).unwrap();
        std::fs::write(
            skill.join("skill.yaml"),
            format!(
                r#"id: {APP_ID}
invocation: parrot
intents:
  Repeat:
    samples: ["repeat {{words}}"]
    slots: {{ words: AMAZON.SearchQuery }}
    speech: "You said {{{{ slots.words }}}}."
  Relay:
    samples: ["relay {{words}}"]
    slots: {{ words: AMAZON.SearchQuery }}
    function: relay
    input: {{ text: "{{{{ slots.words }}}}" }}
"#
            ),
        )
        .unwrap();
        // Prints the slot's text as the function's answer, markup and all.
        // In a folder of its own: the sandbox makes files directly in the data directory
        // private to the gateway at start.
        std::fs::create_dir_all(data.join("code")).unwrap();
        std::fs::write(
            data.join("code/relay.sh"),
            "sed -n 's/.*\"text\":\"\\([^\"]*\\)\".*/\\1/p'\n",
        )
        .unwrap();
        std::fs::write(
            data.join("hark.yml"),
            format!(
                r#"functions:
  echo:
    fprocess: cat
  relay:
    fprocess: sh {relay}
    annotations:
      hark.sandbox.read: {relay}
channels:
  slack:
    acme:
      signing_secrets: [slack-hostile]
      commands: {{ /say: echo }}
  github:
    repo:
      webhook_secrets: [gh-hostile]
      events: {{ issues.opened: echo }}
  hooks:
    signed:
      standard_webhooks_secrets: [hooks-hostile]
      function: echo
    open:
      public: true
      function: echo
      max_body: 1KiB
  discord:
    app:
      public_keys: [6c7a9bd63cacae7ae4bf8819314199feeb3b31e299b3faaf0c37a102b3144664]
      commands: {{ say: echo }}
  twilio:
    phone:
      auth_tokens: [twilio-hostile]
      skill: parrot
      public_url: https://hostile.example/twilio/phone
  teams:
    desk:
      security_tokens: [teams-hostile]
      function: echo
  telegram:
    bot:
      bot_token: tg-hostile-bot
      secret_token: tg-hostile-secret
      function: echo
      api: http://127.0.0.1:9
alexa:
  skills: ./skills
  use_default_roots: false
  trust_roots: [./root.pem]
  cert_dir: ./certs
  download_missing: false
"#,
                relay = data.join("code/relay.sh").display()
            ),
        )
        .unwrap();
        let max_body = MAX_BODY.to_string();
        let max_header_bytes = MAX_HEADER_BYTES.to_string();
        let gw = Gateway::start_in_with_env(
            data,
            &[
                "--max-body",
                &max_body,
                "--max-header-bytes",
                &max_header_bytes,
                "--header-timeout",
                "2",
                "--body-timeout",
                "2",
                "--browser",
                "off",
            ],
            &[
                ("HARK_SECRET_SLACK_HOSTILE", SLACK_SECRET),
                ("HARK_SECRET_GH_HOSTILE", GH_SECRET),
                ("HARK_SECRET_HOOKS_HOSTILE", WHSEC),
                ("HARK_SECRET_TEAMS_HOSTILE", TEAMS_TOKEN),
                ("HARK_SECRET_TWILIO_HOSTILE", "hostile-twilio-auth-token"),
                ("HARK_SECRET_TG_HOSTILE_BOT", "1:hostile-bot-token"),
                ("HARK_SECRET_TG_HOSTILE_SECRET", TELEGRAM_SECRET),
            ],
        );
        let addr = gw.url.trim_start_matches("http://").to_owned();
        Site {
            gw,
            addr,
            _dir: dir,
        }
    }

    /// POSTs `body` with `headers` to `path`; the status and body.
    async fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
        let mut request = self
            .gw
            .client
            .post(format!("{}{path}", self.gw.url))
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// GETs `path` with the admin token; the status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .gw
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// A normal call answers: the gateway is still up and serving.
    async fn still_serving(&self) {
        let (status, body) = self.post("/function/echo", &[], b"still here").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "still here"),
            "{}",
            self.log()
        );
    }

    /// The gateway's log so far, without terminal colours.
    fn log(&self) -> String {
        strip_ansi(&self.gw.output())
    }

    /// Waits (up to 10 s) for a log line holding every one of `needles`; returns it.
    async fn log_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} in:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many log lines hold every one of `needles`.
    fn log_count(&self, needles: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    /// The gateway's resident memory in KiB, from /proc.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.gw.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// Sends raw bytes on a new connection and reads until the gateway closes it (at
    /// most 20 s); what came back. Write errors are ignored: the gateway may close first.
    async fn raw(&self, bytes: &[u8]) -> String {
        let mut stream = TcpStream::connect(&self.addr).await.unwrap();
        let _ = stream.write_all(bytes).await;
        read_all(&mut stream).await
    }
}

/// Reads until the peer closes (at most 20 s).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 answer, 0 for none.
fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn slack_headers(ts: i64, body: &[u8], content_type: &str) -> Vec<(&'static str, String)> {
    vec![
        (slack::TIMESTAMP, ts.to_string()),
        (
            slack::SIGNATURE,
            slack::sign(SLACK_SECRET.as_bytes(), ts, body),
        ),
        ("content-type", content_type.to_owned()),
    ]
}

fn github_headers(delivery: &str, body: &[u8], content_type: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            github::SIGNATURE_256,
            github::sign(GH_SECRET.as_bytes(), body),
        ),
        (github::EVENT, "issues".to_owned()),
        (github::DELIVERY, delivery.to_owned()),
        ("content-type", content_type.to_owned()),
    ]
}

fn standard_headers(id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (standard::ID, id.to_owned()),
        (standard::TIMESTAMP, ts.to_string()),
        (
            standard::SIGNATURE,
            standard::sign(WHSEC.as_bytes(), id, ts, body).unwrap(),
        ),
        ("content-type", "application/json".to_owned()),
    ]
}

fn teams_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (
            "authorization",
            hark::channels::teams::verify::sign(TEAMS_TOKEN.as_bytes(), body).unwrap(),
        ),
        ("content-type", "application/json".to_owned()),
    ]
}

fn discord_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(DISCORD_SEED).unwrap();
    let ts = now().to_string();
    let mut message = ts.clone().into_bytes();
    message.extend_from_slice(body);
    vec![
        (
            "x-signature-ed25519",
            hex::encode(pair.sign(&message).as_ref()),
        ),
        ("x-signature-timestamp", ts),
        ("content-type", "application/json".to_owned()),
    ]
}

fn telegram_headers() -> Vec<(&'static str, String)> {
    vec![
        (
            "x-telegram-bot-api-secret-token",
            TELEGRAM_SECRET.to_owned(),
        ),
        ("content-type", "application/json".to_owned()),
    ]
}

fn alexa_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (alexa_verify::HEADER_CERT_CHAIN_URL, CERT_URL.to_owned()),
        (alexa_verify::HEADER_SIGNATURE_256, testpki::sign(body)),
        ("content-type", "application/json".to_owned()),
    ]
}

/// An IntentRequest of the parrot skill with the slot `words`, timestamped `at`.
fn alexa_intent(intent: &str, words: &str, at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let app = json!({ "applicationId": APP_ID });
    let user = json!({ "userId": "amzn1.ask.account.hostile" });
    json!({
        "version": "1.0",
        "session": { "new": true, "sessionId": format!("s-{}", uuid::Uuid::new_v4()),
                     "application": app, "attributes": {}, "user": user },
        "context": { "System": { "application": app, "user": user } },
        "request": { "type": "IntentRequest",
                     "requestId": format!("amzn1.echo-api.request.{}", uuid::Uuid::new_v4()),
                     "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                     "locale": "en-GB",
                     "intent": { "name": intent, "confirmationStatus": "NONE",
                                 "slots": { "words": { "name": "words", "value": words } } } },
    })
    .to_string()
    .into_bytes()
}

fn slash_form(text: &str) -> Vec<u8> {
    format!(
        "command=%2Fsay&text={text}&team_id=T1&channel_id=C1&user_id=U1&user_name=ada&trigger_id=t"
    )
    .into_bytes()
}

fn issue_opened() -> Vec<u8> {
    br#"{"action":"opened","issue":{"number":1,"title":"x"},"repository":{"full_name":"o/r"}}"#
        .to_vec()
}

/// `depth` opening brackets and nothing else: a JSON document nested beyond any limit.
fn nested(depth: usize) -> Vec<u8> {
    vec![b'['; depth]
}

/// An object whose unknown field `deep` is nested `depth` deep: typed parsers skip
/// unknown fields, so this reaches their recursion limit too.
fn nested_field(depth: usize) -> Vec<u8> {
    let mut body = br#"{"service":"deep","envProcess":"cat","deep":"#.to_vec();
    body.extend(nested(depth));
    body
}

/// The memory a volley may add to the gateway. Generous on purpose: the allocator keeps
/// freed pages, and a worker thread's buffers grow to the largest request it has seen;
/// what this catches is growth with the volume sent (a volley below sends several hundred
/// MiB in all), i.e. bodies, headers or parse trees kept after their request ended.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

fn assert_bounded(site: &Site, before: u64, what: &str) {
    let after = site.rss_kib();
    eprintln!("{what}: VmRSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + RSS_GROWTH_LIMIT_KIB,
        "{what}: the gateway grew from {before} KiB to {after} KiB"
    );
}

// ---------------------------------------------------------------------------------------
// Slow senders

/// Sends `head` and then `trickle` one byte every 100 ms, while reading; returns how many
/// trickled bytes were sent before the gateway answered or closed, and what it answered.
async fn trickle(addr: &str, head: &[u8], trickle: &[u8]) -> (usize, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = read.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    let mut sent = 0;
    for byte in trickle {
        if reader.is_finished() || write.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the gateway kept the connection open after the whole trickle")
        .unwrap();
    (sent, answer)
}

#[tokio::test]
async fn slow_senders_are_cut_off_by_the_header_and_body_timeouts() {
    let site = Site::start();
    // An idle keep-alive connection is closed after the header timeout too, but quietly:
    // the warning is for senders that started a head.
    let mut idle = TcpStream::connect(&site.addr).await.unwrap();
    idle.write_all(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let answer = read_all(&mut idle).await;
    assert!(
        status_of(&answer) == 200 && answer.ends_with("hi"),
        "{answer}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut [0u8; 1])).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle connection is still open"
    );
    // The gateway logs a connection's end just after closing it: give the line time to land,
    // or this check would pass however the gateway classified the close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        site.log_count(&["request head not received within the header timeout"]),
        0,
        "{}",
        site.log()
    );
    // 300 bytes at 10 a second: 30 s, far beyond the 2 s header timeout.
    let header = format!("X-Slow: {}\r\n", "a".repeat(290));
    let (sent, answer) = trickle(
        &site.addr,
        b"GET /function/echo HTTP/1.1\r\nHost: x\r\n",
        header.as_bytes(),
    )
    .await;
    assert!(
        sent < header.len(),
        "the slow head was read to its end: {answer}"
    );
    assert_eq!(status_of(&answer), 0, "{answer}");
    site.log_line(&["request head not received within the header timeout"])
        .await;

    // Many at once do not starve normal calls, and every one is cut off.
    let mut slow = Vec::new();
    for _ in 0..32 {
        let addr = site.addr.clone();
        let header = header.clone();
        slow.push(tokio::spawn(async move {
            trickle(
                &addr,
                b"POST /function/echo HTTP/1.1\r\n",
                header.as_bytes(),
            )
            .await
        }));
    }
    site.still_serving().await;
    for task in slow {
        let (sent, answer) = task.await.unwrap();
        assert!(sent < header.len(), "{answer}");
    }
    assert!(
        site.log_count(&["request head not received within the header timeout"]) >= 33,
        "{}",
        site.log()
    );

    // A body trickled after a prompt head: 408, for the API and for a channel route.
    let body = "x".repeat(300);
    for path in ["/function/echo", "/hooks/open"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (sent, answer) = trickle(&site.addr, head.as_bytes(), body.as_bytes()).await;
        assert_eq!(status_of(&answer), 408, "{path}: {answer}");
        assert!(
            sent < body.len(),
            "{path}: the slow body was read to its end"
        );
    }
    site.log_line(&["request body not received in time; refused with 408"])
        .await;
    site.log_line(&["status=408", "request body not received in time"])
        .await;
    site.log_line(&["reason=\"body_timeout\"", "delivery refused"])
        .await;
    site.still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Bodies

#[tokio::test]
async fn truncated_and_oversized_bodies_are_refused() {
    let site = Site::start();
    // Content-Length promises 1000 bytes; 10 come, then the sender stops writing.
    let mut stream = TcpStream::connect(&site.addr).await.unwrap();
    stream
        .write_all(
            b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_all(&mut stream).await;
    let status = status_of(&answer);
    assert!(status == 0 || status == 400, "{answer}");
    site.log_line(&["status=400", "cannot read request body"])
        .await;
    // The same, closed outright, on a channel route.
    let mut stream = TcpStream::connect(&site.addr).await.unwrap();
    stream
        .write_all(b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"a\":")
        .await
        .unwrap();
    drop(stream);
    site.log_line(&["route=open", "reason=\"malformed\"", "delivery refused"])
        .await;
    site.still_serving().await;

    // One byte over the limit: 413.
    let (status, body) = site
        .post("/function/echo", &[], &vec![b'x'; MAX_BODY + 1])
        .await;
    assert_eq!(status, 413, "{body}");
    site.log_line(&["status=413", "larger than the gateway's limit"])
        .await;
    // A declared length far over the limit is refused before any of it is read.
    let answer = site
        .raw(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        .await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    // Chunked, with no length: refused when the limit is crossed.
    let chunk = "y".repeat(40_000);
    let request = format!(
        "POST /function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let answer = site.raw(request.as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    // A channel route's own limit (1 KiB).
    let (status, body) = site.post("/hooks/open", &[], &[b'z'; 2048]).await;
    assert_eq!(status, 413, "{body}");
    site.log_line(&["route=open", "reason=\"too_large\"", "status=413"])
        .await;
    site.still_serving().await;

    // A volley of oversized bodies (256 of 1 MiB + 1 byte, over every route's limit, 8
    // at a time) leaves memory bounded. Every other round streams them chunked, with no
    // length to refuse them by, so the gateway reads up to its limit before refusing.
    let before = site.rss_kib();
    let big = bytes::Bytes::from(vec![b'o'; 1024 * 1024 + 1]);
    for round in 0..32 {
        let mut batch = Vec::new();
        for path in [
            "/function/echo",
            "/hooks/open",
            "/hooks/signed",
            "/slack/acme",
            "/github/repo",
            "/alexa/parrot",
            "/system/functions",
            "/async-function/echo",
        ] {
            let client = site.gw.client.clone();
            let url = format!("{}{path}", site.gw.url);
            let big = big.clone();
            batch.push(tokio::spawn(async move {
                let body = if round % 2 == 0 {
                    reqwest::Body::from(big)
                } else {
                    let chunks = big
                        .chunks(64 * 1024)
                        .map(|c| Ok::<_, std::io::Error>(big.slice_ref(c)));
                    reqwest::Body::wrap_stream(futures::stream::iter(chunks.collect::<Vec<_>>()))
                };
                // The gateway answers 413 and closes before the upload ends, which the
                // client may see as a broken upload instead; `still_serving` below
                // shows the gateway lived through it.
                match client.post(url).body(body).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 413,
                }
            }));
        }
        for task in batch {
            assert_eq!(task.await.unwrap(), 413);
        }
    }
    site.still_serving().await;
    assert_bounded(&site, before, "oversized bodies");
}

// ---------------------------------------------------------------------------------------
// Headers

#[tokio::test]
async fn header_floods_are_refused_with_431() {
    let site = Site::start();
    // Fifty headers and an 8 KiB one are fine.
    let mut request = String::from(
        "POST /function/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n",
    );
    for i in 0..50 {
        request.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    request.push_str(&format!("X-Big: {}\r\n\r\nok", "b".repeat(8 * 1024)));
    let answer = site.raw(request.as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");

    // 101 header fields (the limit is 100).
    let many = |n: usize| {
        let mut request = String::from("GET /function/echo HTTP/1.1\r\nHost: x\r\n");
        for i in 0..n {
            request.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        request.push_str("\r\n");
        request
    };
    let answer = site.raw(many(100).as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    site.log_line(&["request head over the limit"]).await;
    // One header of 20 KiB, over the 16 KiB head limit.
    let huge = format!(
        "GET /function/echo HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(20 * 1024)
    );
    let answer = site.raw(huge.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    // A URI longer than the head limit.
    let long = format!(
        "GET /function/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "n".repeat(20 * 1024)
    );
    let answer = site.raw(long.as_bytes()).await;
    assert!(matches!(status_of(&answer), 414 | 431), "{answer}");
    site.still_serving().await;

    // Volleys: 200 heads of 10 000 headers, 200 of one 1 MiB header, 8 connections at a time.
    let before = site.rss_kib();
    let flood = many(10_000);
    let one_huge = format!(
        "GET /function/echo HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(1024 * 1024)
    );
    for request in [flood, one_huge] {
        for _ in 0..25 {
            let mut batch = Vec::new();
            for _ in 0..8 {
                let addr = site.addr.clone();
                let request = request.clone();
                batch.push(tokio::spawn(async move {
                    let mut stream = TcpStream::connect(&addr).await.unwrap();
                    let _ = stream.write_all(request.as_bytes()).await;
                    status_of(&read_all(&mut stream).await)
                }));
            }
            for task in batch {
                // 431, or a reset when the gateway closed while the head still came in.
                let status = task.await.unwrap();
                assert!(status == 431 || status == 0, "status {status}");
            }
        }
    }
    site.still_serving().await;
    assert_bounded(&site, before, "header floods");
    assert!(
        site.log_count(&["request head over the limit"]) >= 100,
        "{}",
        site.log()
    );
}

// ---------------------------------------------------------------------------------------
// Parsers: nesting, UTF-8

/// One request of a volley: path, headers, body.
type Shot<'a> = (&'static str, Vec<(&'static str, String)>, &'a Vec<u8>);

#[tokio::test]
async fn deeply_nested_json_is_refused_by_every_parser() {
    let site = Site::start();
    // Nested 60 000 deep: past every parser's limit, within the 64 KiB body limit.
    let deep = nested(60_000);
    let token = [("authorization", format!("Bearer {}", site.gw.token))];
    let (status, body) = site
        .post("/system/functions", &token, &nested_field(60_000))
        .await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["status=400", "invalid JSON body"]).await;
    let (status, body) = site
        .post(
            "/slack/acme",
            &slack_headers(now(), &deep, "application/json"),
            &deep,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = site
        .post(
            "/github/repo",
            &github_headers("nested-1", &deep, "application/json"),
            &deep,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["route=repo", "reason=\"malformed\"", "recursion limit"])
        .await;
    let (status, body) = site
        .post("/alexa/parrot", &alexa_headers(&deep), &deep)
        .await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["route=parrot", "reason=\"malformed_body\""])
        .await;
    let (status, body) = site.post("/teams/desk", &teams_headers(&deep), &deep).await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["route=desk", "reason=\"malformed\"", "JSON body"])
        .await;
    let (status, body) = site
        .post("/discord/app", &discord_headers(&deep), &deep)
        .await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["route=app", "reason=\"malformed\"", "not an interaction"])
        .await;
    let (status, body) = site.post("/telegram/bot", &telegram_headers(), &deep).await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["route=bot", "reason=\"malformed\"", "not a Telegram update"])
        .await;
    // A signed hook passes its bytes through untouched: the function gets them.
    let small = nested(10_000);
    let (status, body) = site
        .post(
            "/hooks/signed",
            &standard_headers("msg-nested", now(), &small),
            &small,
        )
        .await;
    assert_eq!((status, body.len()), (200, small.len()));
    site.still_serving().await;

    // A volley: 350 documents nested 64 KiB deep (the body limit), on every parser.
    let before = site.rss_kib();
    let deep = nested(MAX_BODY);
    let deep_field = nested_field(MAX_BODY - 100);
    for round in 0..50 {
        let mut batch = Vec::new();
        let requests: Vec<Shot> = vec![
            ("/system/functions", token.to_vec(), &deep_field),
            ("/system/secrets", token.to_vec(), &deep),
            (
                "/slack/acme",
                slack_headers(now(), &deep, "application/json"),
                &deep,
            ),
            (
                "/github/repo",
                github_headers(&format!("nested-v{round}"), &deep, "application/json"),
                &deep,
            ),
            ("/alexa/parrot", alexa_headers(&deep), &deep),
            ("/system/skills/parrot/say", token.to_vec(), &deep),
            ("/function/echo", Vec::new(), &deep),
        ];
        for (path, headers, body) in requests {
            let client = site.gw.client.clone();
            let url = format!("{}{path}", site.gw.url);
            let deep = body.clone();
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            batch.push(tokio::spawn(async move {
                let mut request = client.post(url).body(deep);
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                (path, request.send().await.unwrap().status().as_u16())
            }));
        }
        for task in batch {
            let (path, status) = task.await.unwrap();
            // The echo function answers with the bytes; every parser refuses them.
            let wanted = if path == "/function/echo" { 200 } else { 400 };
            assert_eq!(status, wanted, "{path}");
        }
    }
    site.still_serving().await;
    assert_bounded(&site, before, "nested JSON");
}

#[tokio::test]
async fn invalid_utf8_in_bodies_headers_paths_and_queries_is_refused_or_passed_as_bytes() {
    let site = Site::start();
    let junk: &[u8] = b"\xff\xfe\xc3\x28 \xed\xa0\x80";
    let token = [("authorization", format!("Bearer {}", site.gw.token))];
    // A function gets the bytes as they are.
    let response = site
        .gw
        .client
        .post(format!("{}/function/echo", site.gw.url))
        .body(junk.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&response.bytes().await.unwrap()[..], junk);
    // Parsers refuse them, each with its log line.
    let (status, body) = site.post("/system/functions", &token, junk).await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["status=400", "invalid JSON body"]).await;
    let (status, body) = site
        .post(
            "/github/repo",
            &github_headers("utf8-1", junk, "application/json"),
            junk,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let mut form = slash_form("hi");
    form.extend_from_slice(b"&x=");
    form.extend_from_slice(junk);
    let (status, body) = site
        .post(
            "/slack/acme",
            &slack_headers(now(), &form, "application/x-www-form-urlencoded"),
            &form,
        )
        .await;
    assert!(status == 400 || status == 200, "{status} {body}");
    let (status, body) = site.post("/alexa/parrot", &alexa_headers(junk), junk).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = site.post("/teams/desk", &teams_headers(junk), junk).await;
    assert_eq!(status, 400, "{body}");
    // A phone call's form with invalid UTF-8, signed as Twilio would: the parser reads it
    // (lossily), the skill answers with TwiML, nothing panics.
    let url = "https://hostile.example/twilio/phone";
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(junk).unwrap();
    let signature =
        hark::channels::twilio::verify::sign_request(b"hostile-twilio-auth-token", url, &params);
    let form_type = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );
    let (status, body) = site
        .post(
            "/twilio/phone",
            &[("x-twilio-signature", signature), form_type.clone()],
            junk,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Response>"), "{body}");
    let (status, body) = site.post("/twilio/phone", &[form_type], junk).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = site
        .post("/discord/app", &discord_headers(junk), junk)
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = site.post("/telegram/bot", &telegram_headers(), junk).await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["route=bot", "reason=\"malformed\"", "not a Telegram update"])
        .await;

    // Headers: a non-ASCII call id is replaced, a non-ASCII token or signature refused.
    let mut request = b"POST /function/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\nX-Call-Id: \xff\xfe\r\n\r\nok".to_vec();
    let answer = site.raw(&request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(!answer.contains('\u{fffd}'), "{answer}");
    request = b"GET /system/functions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n".to_vec();
    let answer = site.raw(&request).await;
    assert_eq!(status_of(&answer), 401, "{answer}");
    site.log_line(&["status=401"]).await;
    let body = issue_opened();
    let mut request = format!(
        "POST /github/repo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nX-GitHub-Event: issues\r\nX-GitHub-Delivery: utf8-2\r\nContent-Length: {}\r\nX-Hub-Signature-256: sha256=",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(b"\xff\xfe\r\n\r\n");
    request.extend_from_slice(&body);
    let answer = site.raw(&request).await;
    assert!(matches!(status_of(&answer), 400 | 401), "{answer}");
    site.log_line(&["route=repo", "delivery refused", "delivery=\"-\""])
        .await;

    // Paths: raw bytes are refused by the parser, escaped ones by the router.
    let answer = site
        .raw(b"GET /function/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    site.log_line(&["malformed request head (400)"]).await;
    for path in ["/function/%FF%FE", "/system/function/%C3%28"] {
        let (status, body) = site.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    site.log_line(&["status=400", "path=/function/%FF%FE"])
        .await;
    // Queries.
    let (status, body) = site.get("/system/logs?name=%FF%FE").await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["status=400", "invalid function name"])
        .await;
    site.still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Content types, names, SSML, replays

#[tokio::test]
async fn wrong_content_types_are_refused_on_every_channel() {
    let site = Site::start();
    let token = [
        ("authorization", format!("Bearer {}", site.gw.token)),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    // The API: a form where JSON belongs.
    let (status, body) = site
        .post("/system/functions", &token, b"service=x&image=y")
        .await;
    assert_eq!(status, 400, "{body}");
    // Slack: a slash command's form labelled JSON.
    let form = slash_form("hi");
    let (status, body) = site
        .post(
            "/slack/acme",
            &slack_headers(now(), &form, "application/json"),
            &form,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["route=acme", "reason=\"malformed\"", "delivery refused"])
        .await;
    // GitHub: a webhook set to form encoding (`payload=...`).
    let payload = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(&issue_opened()).collect::<String>()
    );
    let (status, body) = site
        .post(
            "/github/repo",
            &github_headers(
                "form-1",
                payload.as_bytes(),
                "application/x-www-form-urlencoded",
            ),
            payload.as_bytes(),
        )
        .await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("application/json"), "{body}");
    site.log_line(&[
        "route=repo",
        "reason=\"unsupported_media_type\"",
        "status=415",
    ])
    .await;
    // Alexa: a signed form body.
    let (status, body) = site
        .post("/alexa/parrot", &alexa_headers(&form), &form)
        .await;
    assert_eq!(status, 400, "{body}");
    site.log_line(&["route=parrot", "reason=\"malformed_body\""])
        .await;
    // Hooks pass any content type to the function, which decides.
    let xml = b"<a>1</a>";
    let mut headers = standard_headers("msg-xml", now(), xml);
    headers[3].1 = "application/xml".into();
    let (status, body) = site.post("/hooks/signed", &headers, xml).await;
    assert_eq!((status, body.as_bytes()), (200, &xml[..]));
    site.still_serving().await;
}

#[tokio::test]
async fn path_traversal_in_names_and_log_queries_is_refused() {
    let site = Site::start();
    let long = "a".repeat(5000);
    for path in [
        "/function/..%2f..%2fetc%2fpasswd".to_owned(),
        "/function/a%00b".to_owned(),
        format!("/function/{long}"),
        "/async-function/..%2f..%2fetc".to_owned(),
    ] {
        let (status, body) = site.post(&path, &[], b"{}").await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    site.log_line(&["status=400", "\"../../etc/passwd\""]).await;
    // Dot segments that a client library would resolve away, sent as they are.
    for target in [
        "/function/..",
        "/function/../../etc/passwd",
        "/function/%2e%2e/x",
    ] {
        let answer = site
            .raw(format!("POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes())
            .await;
        assert_eq!(status_of(&answer), 400, "{target}: {answer}");
    }
    for path in [
        "/system/logs?name=../../".to_owned(),
        "/system/logs?name=..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/system/logs?name=a%00b".to_owned(),
        format!("/system/logs?name={long}"),
        "/system/function/..%2f..%2fetc".to_owned(),
        "/system/activations?function=..%2F..".to_owned(),
    ] {
        let (status, body) = site.get(&path).await;
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
    site.log_line(&["status=400", "\"../../\""]).await;
    // A secret or a deployment naming a path is refused; nothing is written outside.
    let token = [("authorization", format!("Bearer {}", site.gw.token))];
    let escape = site.gw.data.parent().unwrap().join("hostile-escape");
    for (path, body) in [
        (
            "/system/secrets",
            json!({"name": "../../hostile-escape", "value": "x"}),
        ),
        (
            "/system/secrets",
            json!({"name": "a/../../hostile-escape", "value": "x"}),
        ),
        (
            "/system/functions",
            json!({"service": "../../hostile-escape", "envProcess": "cat"}),
        ),
        (
            "/system/functions",
            json!({"service": "ok-name", "envProcess": "cat", "secrets": ["../../../hostile-escape"]}),
        ),
    ] {
        let (status, answer) = site.post(path, &token, body.to_string().as_bytes()).await;
        assert!((400..500).contains(&status), "{body}: {status} {answer}");
    }
    assert!(!escape.exists());
    assert!(!Path::new("/hostile-escape").exists());
    site.still_serving().await;
}

#[tokio::test]
async fn ssml_in_alexa_slot_values_is_spoken_as_text() {
    let site = Site::start();
    let attack = "</speak><audio src='https://evil.example/x.mp3'/> & <break time='10s'/>";
    for intent in ["Repeat", "Relay"] {
        let body = alexa_intent(intent, attack, chrono::Utc::now());
        let (status, answer) = site
            .post("/alexa/parrot", &alexa_headers(&body), &body)
            .await;
        assert_eq!(status, 200, "{intent}: {answer}\n{}", site.log());
        let answer: Value = serde_json::from_str(&answer).unwrap();
        let ssml = answer["response"]["outputSpeech"]["ssml"]
            .as_str()
            .unwrap_or_else(|| panic!("{intent}: no speech in {answer}"));
        // Well-formed: one <speak> element, nothing but escaped text inside.
        hark::channels::alexa::ssml::validate(ssml)
            .unwrap_or_else(|e| panic!("{intent}: {e}: {ssml}"));
        assert!(
            ssml.starts_with("<speak>") && ssml.ends_with("</speak>"),
            "{ssml}"
        );
        assert_eq!(ssml.matches("<speak>").count(), 1, "{ssml}");
        assert!(
            !ssml.contains("<audio") && !ssml.contains("<break"),
            "{ssml}"
        );
        assert!(
            ssml.contains("&lt;/speak&gt;&lt;audio src=") && ssml.contains(" &amp; "),
            "{intent}: {ssml}"
        );
        assert!(
            hark::channels::alexa::ssml::to_plain_text(ssml).contains(attack),
            "{intent}: {ssml}"
        );
    }
    site.still_serving().await;
}

#[tokio::test]
async fn replayed_deliveries_are_refused_or_not_run_twice() {
    let site = Site::start();
    let activations = || async {
        let (_, body) = site.get("/system/activations?function=echo").await;
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };

    // GitHub: the same X-GitHub-Delivery twice runs the function once; the second is
    // acknowledged (200) so that GitHub stops redelivering, and logged as a duplicate.
    let body = issue_opened();
    let headers = github_headers("replay-1", &body, "application/json");
    let (first, _) = site.post("/github/repo", &headers, &body).await;
    assert!(matches!(first, 200 | 202), "{first}");
    let (again, answer) = site.post("/github/repo", &headers, &body).await;
    assert_eq!(again, 200, "{answer}");
    assert!(answer.contains("duplicate"), "{answer}");
    site.log_line(&["route=repo", "delivery=\"replay-1\"", "duplicate=true"])
        .await;

    // Standard Webhooks: the same webhook-id twice, likewise.
    let body = b"{\"n\":1}";
    let headers = standard_headers("msg-replay", now(), body);
    let (first, _) = site.post("/hooks/signed", &headers, body).await;
    assert_eq!(first, 200);
    let (again, answer) = site.post("/hooks/signed", &headers, body).await;
    assert_eq!(again, 200, "{answer}");
    assert!(answer.contains("duplicate"), "{answer}");
    site.log_line(&["route=signed", "delivery=\"msg-replay\"", "duplicate=true"])
        .await;
    // Replayed later with its old timestamp re-signed away: refused as stale.
    let stale = standard_headers("msg-replay-2", now() - 600, body);
    let (status, answer) = site.post("/hooks/signed", &stale, body).await;
    assert_eq!(status, 401, "{answer}");
    site.log_line(&["route=signed", "reason=\"stale_timestamp\"", "status=401"])
        .await;

    // Slack: a captured request replayed after Slack's five minutes is refused.
    let form = slash_form("again");
    let (status, answer) = site
        .post(
            "/slack/acme",
            &slack_headers(now() - 600, &form, "application/x-www-form-urlencoded"),
            &form,
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    site.log_line(&["route=acme", "reason=\"stale_timestamp\"", "status=401"])
        .await;

    // Alexa: a request timestamped beyond Amazon's 150 s tolerance is refused.
    let body = alexa_intent(
        "Repeat",
        "old",
        chrono::Utc::now() - chrono::Duration::seconds(600),
    );
    let (status, answer) = site
        .post("/alexa/parrot", &alexa_headers(&body), &body)
        .await;
    assert_eq!(status, 400, "{answer}");
    site.log_line(&["route=parrot", "verification failed", "timestamp"])
        .await;

    // Only the first GitHub delivery and the first hook message reached the function.
    let deadline = Instant::now() + Duration::from_secs(10);
    while activations().await < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(activations().await, 2, "{}", site.log());
    site.still_serving().await;
}
