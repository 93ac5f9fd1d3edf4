//! Discord interactions through a real `hark up`, against a local stand-in for Discord's
//! API: the conformance PING, Ed25519 signatures (forged, stale, garbage), commands and
//! components answered in time, a replayed interaction, and a deferred command whose
//! result edits `@original` after the gateway was killed between the deferral and the
//! result. Also `hark webhook verify --kind discord`.

use std::process::Command;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use crate::channels::{channel_stats, now, post, Recorder, Site};
use crate::util::{hark_bin, Gateway};

/// RFC 8032 TEST 1's secret key (the conformance vectors' key).
const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const APP_ID: &str = "1180000000000000001";

fn key_pair(seed: &str) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&hex::decode(seed).unwrap()).unwrap()
}

fn public_hex(seed: &str) -> String {
    hex::encode(key_pair(seed).public_key().as_ref())
}

fn signed(seed: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut message = ts.to_string().into_bytes();
    message.extend_from_slice(body);
    vec![
        (
            "x-signature-ed25519",
            hex::encode(key_pair(seed).sign(&message).as_ref()),
        ),
        ("x-signature-timestamp", ts.to_string()),
        ("content-type", "application/json".to_owned()),
    ]
}

fn command(id: &str, name: &str, day: &str) -> Vec<u8> {
    json!({
        "id": id,
        "type": 2,
        "application_id": APP_ID,
        "token": format!("token-{id}"),
        "channel_id": "c-1",
        "guild_id": "g-1",
        "member": { "user": { "id": "u-1", "username": "ada" } },
        "data": { "name": name, "options": [{ "name": "day", "type": 3, "value": day }] },
    })
    .to_string()
    .into_bytes()
}

async fn interact(gw: &Gateway, body: &[u8]) -> (u16, Value) {
    let (status, text) = post(
        gw,
        "/discord/desk",
        &signed(SEED, now(), body),
        body.to_vec(),
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn discord_site(api: &str) -> Site {
    let site = Site::new();
    let runs = site.file("runs.log");
    let book = site.script(
        "book",
        &format!(
            "input=$(cat); echo book >> {runs}; \
             printf '%s' \"$input\" | sed -n 's/.*\"value\":\"\\([^\"]*\\)\".*/booked \\1/p'"
        ),
    );
    let slow = site.script(
        "slow",
        &format!("cat > /dev/null; echo slow-start >> {runs}; sleep 2; echo done late"),
    );
    site.config(
        &[("book", &book), ("slow", &slow)],
        &format!(
            "discord:\n  desk:\n    public_keys: [{}]\n    commands: {{ book: book, slow: slow }}\n    \
             components: {{ approve: book }}\n    ack_budget: 500ms\n    api: {api}\n",
            public_hex(SEED)
        ),
    );
    site
}

#[tokio::test]
async fn discord_interactions_are_verified_answered_and_deferred_across_a_kill() {
    let api = Recorder::start(|_, _| (200, "{}".into())).await;
    let site = discord_site(&api.url);

    // The conformance PING, on a gateway whose clock is the vector's.
    if let Some(doc) = hark::verify::conformance("channels.json") {
        for vector in doc["discord"]["vectors"].as_array().unwrap() {
            let (Some(body), Some(ts)) = (
                vector["raw_body"].as_str(),
                vector["x_signature_timestamp"].as_str(),
            ) else {
                continue;
            };
            assert_eq!(vector["public_key_hex"], public_hex(SEED));
            let gw = site.start(&["--test-clock", ts], &[]);
            let headers = vec![
                (
                    "x-signature-ed25519",
                    vector["x_signature_ed25519"].as_str().unwrap().to_owned(),
                ),
                ("x-signature-timestamp", ts.to_owned()),
            ];
            let (status, text) = post(&gw, "/discord/desk", &headers, body).await;
            assert_eq!((status, text.as_str()), (200, r#"{"type":1}"#));
            let mut changed = body.as_bytes().to_vec();
            changed[8] ^= 1;
            assert_eq!(post(&gw, "/discord/desk", &headers, changed).await.0, 401);
            let mut later = headers.clone();
            later[1].1 = (ts.parse::<i64>().unwrap() + 1).to_string();
            assert_eq!(post(&gw, "/discord/desk", &later, body).await.0, 401);
        }
    }

    let mut gw = site.start(&[], &[]);
    // A command answered in time: type 4 with the function's output.
    let (status, answer) = interact(&gw, &command("1", "book", "friday")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"type": 4, "data": {"content": "booked friday"}})
    );
    // A button on a message: type 7 updates that message.
    let click = json!({"id": "2", "type": 3, "application_id": APP_ID, "token": "token-2",
        "user": {"id": "u-1"}, "data": {"custom_id": "approve", "component_type": 2}});
    let (_, answer) = interact(&gw, click.to_string().as_bytes()).await;
    assert_eq!(answer["type"], 7, "{answer}");
    // An unknown command: an ephemeral note.
    let (_, answer) = interact(&gw, &command("3", "dance", "now")).await;
    assert_eq!(
        (&answer["type"], &answer["data"]["flags"]),
        (&json!(4), &json!(64))
    );

    // Replayed, stale, future, forged, garbage, unsigned: nothing runs.
    let runs = site.lines("runs.log").len();
    let (_, answer) = interact(&gw, &command("1", "book", "friday")).await;
    assert_eq!(answer["duplicate"], "1", "{answer}");
    let body = command("4", "book", "monday");
    for ts in [now() - 400, now() + 400] {
        let (status, _) = post(&gw, "/discord/desk", &signed(SEED, ts, &body), body.clone()).await;
        assert_eq!(status, 401, "timestamp {ts}");
    }
    let other = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
    assert_eq!(
        post(
            &gw,
            "/discord/desk",
            &signed(other, now(), &body),
            body.clone()
        )
        .await
        .0,
        401
    );
    let mut garbage = signed(SEED, now(), &body);
    garbage[0].1 = "not-hex".into();
    assert_eq!(
        post(&gw, "/discord/desk", &garbage, body.clone()).await.0,
        401
    );
    assert_eq!(post(&gw, "/discord/desk", &[], body.clone()).await.0, 401);
    assert_eq!(site.lines("runs.log").len(), runs);
    let stats = channel_stats(&gw, "discord", "desk").await;
    assert_eq!(stats["duplicates"], 1, "{stats}");
    assert_eq!(stats["refused"]["stale_timestamp"], 1, "{stats}");
    assert_eq!(stats["refused"]["future_timestamp"], 1, "{stats}");
    assert_eq!(stats["refused"]["signature_mismatch"], 2, "{stats}");
    assert_eq!(stats["refused"]["missing_header"], 1, "{stats}");

    // A slow command is deferred; the gateway dies before the result.
    let (status, answer) = interact(&gw, &command("5", "slow", "")).await;
    assert_eq!((status, answer), (200, json!({"type": 5})));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !site.lines("runs.log").contains(&"slow-start".to_owned()) {
        assert!(std::time::Instant::now() < deadline, "slow never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.kill_hard();
    assert!(api.seen().is_empty(), "edited before the kill");

    let gw = site.start(&[], &[]);
    let seen = api.wait_for(1).await;
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(
        seen[0].path,
        format!("/webhooks/{APP_ID}/token-5/messages/@original")
    );
    assert_eq!(seen[0].json(), json!({"content": "done late"}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.seen().len(), 1, "edited once");
    drop(gw);
}

#[test]
fn hark_webhook_verify_checks_discord_signatures() {
    let Some(doc) = hark::verify::conformance("channels.json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for vector in doc["discord"]["vectors"].as_array().unwrap() {
        let (Some(body), Some(ts)) = (
            vector["raw_body"].as_str(),
            vector["x_signature_timestamp"].as_str(),
        ) else {
            continue;
        };
        let path = dir.path().join("body.json");
        std::fs::write(&path, body).unwrap();
        let run = |ts: &str| {
            Command::new(hark_bin())
                .args(["webhook", "verify", "--kind", "discord", "--public-key"])
                .arg(vector["public_key_hex"].as_str().unwrap())
                .arg("--body")
                .arg(&path)
                .args([
                    "-H",
                    &format!(
                        "X-Signature-Ed25519: {}",
                        vector["x_signature_ed25519"].as_str().unwrap()
                    ),
                ])
                .args(["-H", &format!("X-Signature-Timestamp: {ts}")])
                .args(["--at", vector["x_signature_timestamp"].as_str().unwrap()])
                .output()
                .unwrap()
        };
        let passed = run(ts);
        let text = String::from_utf8_lossy(&passed.stdout);
        assert!(passed.status.success(), "{text}");
        assert!(text.contains("result: PASS"), "{text}");
        let failed = run(&(ts.parse::<i64>().unwrap() + 1).to_string());
        let text = String::from_utf8_lossy(&failed.stdout);
        assert!(!failed.status.success(), "{text}");
        checked += 1;
    }
    assert!(checked > 0);
}
