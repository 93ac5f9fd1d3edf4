//! Microsoft Teams outgoing webhooks through a real `hark up`: the published key's vector,
//! forged, stale and replayed activities, routing by the word after the mention, the
//! working message for a slow function, and `hark webhook verify --kind teams`.

use std::process::Command;

use serde_json::{json, Value};

use crate::channels::{channel_stats, now, post, Site};
use crate::util::hark_bin;
use hark::channels::teams::verify::sign;

/// The security token of Microsoft's documentation (the conformance vector's key).
const TOKEN: &str = "vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=";
/// Another well-formed token, for a webhook Hark does not know.
const OTHER_TOKEN: &str = "b3RoZXIgdGVhbXMgd2ViaG9vayB0b2tlbiBoZXJlISE=";

fn activity(id: &str, at: i64, text: &str) -> Vec<u8> {
    let timestamp = chrono::DateTime::from_timestamp(at, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({
        "type": "message",
        "id": id,
        "timestamp": timestamp,
        "text": text,
        "from": { "id": "29:1abc", "name": "Ada Lovelace" },
        "conversation": { "id": "19:general@thread.skype" },
    })
    .to_string()
    .into_bytes()
}

fn signed(token: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", sign(token.as_bytes(), body).unwrap()),
        ("content-type", "application/json".to_owned()),
    ]
}

fn teams_site() -> Site {
    let site = Site::new();
    let runs = site.file("runs.log");
    // Echoes the command's text (the top-level one, before the nested objects); records
    // each run.
    let echo = site.script(
        "echo",
        &format!(
            "input=$(cat); echo \"$input\" >> {runs}; \
             printf '%s' \"$input\" | sed -n 's/^{{[^{{}}]*\"text\":\"\\([^\"]*\\)\".*/echo: \\1/p'"
        ),
    );
    let slow = site.script(
        "slow",
        &format!("cat > /dev/null; sleep 2; echo slow-done >> {runs}; echo done"),
    );
    let fail = site.script("fail", "cat > /dev/null; echo boom >&2; exit 1");
    site.config(
        &[("echo", &echo), ("slow", &slow), ("fail", &fail)],
        "teams:\n  helpdesk:\n    security_tokens: [teams-old, teams-new]\n    function: echo\n    \
         commands: { slow: slow, Break: fail }\n    ack_budget: 500ms\n",
    );
    site
}

fn teams_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HARK_SECRET_TEAMS_OLD", OTHER_TOKEN),
        ("HARK_SECRET_TEAMS_NEW", TOKEN),
    ]
}

async fn reply(gw: &crate::util::Gateway, body: &[u8]) -> (u16, Value) {
    let (status, text) = post(gw, "/teams/helpdesk", &signed(TOKEN, body), body.to_vec()).await;
    let answer = serde_json::from_str(&text).unwrap_or_else(|_| Value::from(text));
    (status, answer)
}

#[tokio::test]
async fn teams_messages_are_verified_routed_and_answered_inline() {
    let site = teams_site();
    let gw = site.start(&[], &teams_env());

    // The conformance vector, exactly as signed: its activity has no id or timestamp.
    // Requests the vector check adds to the refusals counted below.
    let mut vector_mismatches = 0;
    if let Some(doc) = hark::verify::conformance("channels.json") {
        for vector in doc["teams"]["vectors"].as_array().unwrap() {
            let Some(body) = vector["raw_body"].as_str() else {
                continue;
            };
            let headers = vec![
                (
                    "authorization",
                    vector["authorization_header"].as_str().unwrap().to_owned(),
                ),
                ("content-type", "application/json".to_owned()),
            ];
            let (status, text) = post(&gw, "/teams/helpdesk", &headers, body).await;
            assert_eq!(status, 200, "{}: {text}", vector["name"]);
            let answer: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(answer["type"], "message");
            assert_eq!(answer["text"], "echo: hello", "{answer}");
            let mut changed = body.as_bytes().to_vec();
            changed[10] ^= 1;
            assert_eq!(post(&gw, "/teams/helpdesk", &headers, changed).await.0, 401);
            vector_mismatches += 1;
        }
    }

    // The mention and markup go; the first word picks the command, without case.
    let body = activity("a-1", now(), "<at>Hark</at>&nbsp;reset my   password");
    let (status, answer) = reply(&gw, &body).await;
    assert_eq!(
        (status, &answer["text"]),
        (200, &json!("echo: reset my password"))
    );
    let input: Value = serde_json::from_str(site.lines("runs.log").last().unwrap()).unwrap();
    assert_eq!(input["command"], Value::Null);
    assert_eq!(input["user"]["name"], "Ada Lovelace");
    assert_eq!(input["activity"]["id"], "a-1");

    // A failing command gets an apology, not its output.
    let (status, answer) = reply(&gw, &activity("a-2", now(), "<at>Hark</at> BREAK it")).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["text"], "Sorry, `fail` failed (status 500).",
        "{answer}"
    );

    // A replayed activity (same id) is acknowledged and runs nothing.
    let runs_before = site.lines("runs.log").len();
    let (status, answer) = reply(&gw, &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["duplicate"], "19:general@thread.skype/a-1",
        "{answer}"
    );
    assert_eq!(site.lines("runs.log").len(), runs_before);

    // Stale or future activities, a wrong or unknown key, no or a malformed header.
    for skew in [-400, 400] {
        let body = activity(&format!("skew{skew}"), now() + skew, "hi");
        assert_eq!(reply(&gw, &body).await.0, 401, "skew {skew}");
    }
    let body = activity("a-3", now(), "hi");
    let forged = signed("Zm9yZ2VkIGtleQ==", &body);
    assert_eq!(
        post(&gw, "/teams/helpdesk", &forged, body.clone()).await.0,
        401
    );
    assert_eq!(post(&gw, "/teams/helpdesk", &[], body.clone()).await.0, 401);
    let bearer = vec![("authorization", "Bearer abc".to_owned())];
    assert_eq!(
        post(&gw, "/teams/helpdesk", &bearer, body.clone()).await.0,
        400
    );
    assert_eq!(
        post(&gw, "/teams/nowhere", &signed(TOKEN, &body), body.clone())
            .await
            .0,
        404
    );
    // The other token of the rotation works too.
    let (status, _) = post(&gw, "/teams/helpdesk", &signed(OTHER_TOKEN, &body), body).await;
    assert_eq!(status, 200);

    // A function slower than the budget: the working message now, the run goes on.
    let (status, answer) = reply(&gw, &activity("a-4", now(), "<at>Hark</at> slow")).await;
    assert_eq!(status, 200);
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .starts_with("Still working on it"),
        "{answer}"
    );
    assert!(site
        .wait_lines("runs.log", runs_before + 2)
        .await
        .contains(&"slow-done".to_owned()));

    let stats = channel_stats(&gw, "teams", "helpdesk").await;
    assert_eq!(stats["path"], "/teams/helpdesk");
    assert_eq!(stats["duplicates"], 1, "{stats}");
    assert_eq!(stats["refused"]["stale_timestamp"], 1, "{stats}");
    assert_eq!(stats["refused"]["future_timestamp"], 1, "{stats}");
    assert_eq!(
        stats["refused"]["signature_mismatch"],
        1 + vector_mismatches,
        "{stats}"
    );
    assert_eq!(stats["refused"]["missing_header"], 1, "{stats}");
    assert_eq!(stats["refused"]["malformed_header"], 1, "{stats}");
    let activations: Value = gw.get_json("/system/activations?function=echo").await;
    let activations = activations.as_array().unwrap();
    assert!(!activations.is_empty());
    for activation in activations {
        assert_eq!(activation["trigger"], "teams", "{activation}");
    }
}

#[test]
fn hark_webhook_verify_checks_teams_signatures() {
    let Some(doc) = hark::verify::conformance("channels.json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for vector in doc["teams"]["vectors"].as_array().unwrap() {
        let Some(body) = vector["raw_body"].as_str() else {
            continue;
        };
        let run = |body: &str| {
            let path = dir.path().join("body.json");
            std::fs::write(&path, body).unwrap();
            Command::new(hark_bin())
                .args(["webhook", "verify", "--kind", "teams", "--secret"])
                .arg(vector["security_token_b64"].as_str().unwrap())
                .arg("--body")
                .arg(&path)
                .args([
                    "-H",
                    &format!(
                        "Authorization: {}",
                        vector["authorization_header"].as_str().unwrap()
                    ),
                ])
                .output()
                .unwrap()
        };
        let passed = run(body);
        let text = String::from_utf8_lossy(&passed.stdout);
        assert!(passed.status.success(), "{text}");
        assert!(text.contains("result: PASS"), "{text}");
        let failed = run(&body.replace("hello", "hellO"));
        let text = String::from_utf8_lossy(&failed.stdout);
        assert!(!failed.status.success(), "{text}");
        assert!(text.contains("signature does not match"), "{text}");
        checked += 1;
    }
    assert!(checked > 0);
}
