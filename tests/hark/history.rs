//! Each activation keeps its story through a real `hark up`: what the function was given,
//! what it answered and the log lines of that call alone, with credentials and the
//! function's secret values redacted and long bodies cut with a mark.

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{hark_bin, hello_bin, register_secret, Gateway};

const SECRET: &str = "s3cr3t-story-9921";

/// Calls `name` with call id `call_id`, a credential header and a credential in the query.
async fn call(gw: &Gateway, name: &str, call_id: &str, body: Vec<u8>) -> (u16, String) {
    let response = gw
        .client
        .post(format!("{}/function/{name}?token=t-456&x=1", gw.url))
        .header("x-call-id", call_id)
        .header("x-api-key", "k-123")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The record of activation `call_id`, story and all.
async fn record(gw: &Gateway, call_id: &str) -> Value {
    let record: Value = gw.get_json(&format!("/system/activations/{call_id}")).await;
    assert_eq!(record["callId"], call_id, "{record}");
    record
}

async fn story(gw: &Gateway, call_id: &str) -> Value {
    record(gw, call_id).await["story"].clone()
}

/// A web UI page at `path`, signed in with the session cookie `cookie` (`name=value`).
pub(crate) async fn ui_page(gw: &Gateway, cookie: &str, path: &str) -> String {
    gw.client
        .get(format!("{}{path}", gw.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Signs in at the web UI; the session cookie as `name=value`.
pub(crate) async fn signed_in(gw: &Gateway) -> String {
    let set = crate::sessions::sign_in(gw, &gw.token).await;
    set.split(';').next().unwrap().to_owned()
}

fn log_texts(story: &Value) -> Vec<String> {
    story["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_keeps_its_request_its_answer_and_its_own_log_lines() {
    let gw = Gateway::start();
    register_secret(SECRET);
    let created = gw
        .request(Method::POST, "/system/secrets")
        .json(&json!({ "name": "story-key", "value": SECRET }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    gw.deploy(json!({
        "service": "teller",
        "envProcess": "sh -c 'body=$(cat); key=$(cat \"$HARK_SECRETS_DIR/story-key\"); echo \"teller heard $body with $key\" >&2; printf \"told %s with %s\" \"$body\" \"$key\"'",
        "secrets": ["story-key"],
    }))
    .await;

    // Fork mode: two calls at once, each with its own process and its own lines.
    let (a, b) = tokio::join!(
        call(&gw, "teller", "story-a", b"alpha".to_vec()),
        call(&gw, "teller", "story-b", b"beta".to_vec())
    );
    assert_eq!(a, (200, format!("told alpha with {SECRET}")));
    assert_eq!(b.0, 200);
    for (call_id, word) in [("story-a", "alpha"), ("story-b", "beta")] {
        let story = story(&gw, call_id).await;
        let request = &story["request"];
        assert_eq!(request["method"], "POST");
        assert_eq!(request["body"]["text"], word);
        assert_eq!(request["query"], "token=[redacted]&x=1");
        let header = |name: &str| {
            request["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == name)
                .map(|h| h[1].clone())
        };
        assert_eq!(header("x-api-key"), Some(json!("[redacted]")));
        assert_eq!(header("x-call-id"), Some(json!(call_id)));
        assert_eq!(story["response"]["status"], 200);
        assert_eq!(
            story["response"]["body"]["text"],
            format!("told {word} with [redacted]")
        );
        assert_eq!(
            log_texts(&story),
            [format!("teller heard {word} with [redacted]")],
            "{call_id}'s own line, not the other call's"
        );
        assert_eq!(story["logsBy"], "process");
        assert!(!story.to_string().contains(SECRET), "{story}");
    }

    // HTTP mode: one replica serves both calls; each keeps the lines naming its id.
    gw.deploy(json!({
        "service": "hello",
        "envProcess": hello_bin().display().to_string(),
        "envVars": { "HELLO_LOG": "1" },
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    gw.wait_status("hello", "became available", |s| s["availableReplicas"] == 1)
        .await;
    let (one, two) = tokio::join!(
        call(&gw, "hello", "story-h1", b"Ada".to_vec()),
        call(&gw, "hello", "story-h2", b"Grace".to_vec())
    );
    assert_eq!(one, (200, "Hello, Ada!\n".to_owned()));
    assert_eq!(two, (200, "Hello, Grace!\n".to_owned()));
    for (call_id, name) in [("story-h1", "Ada"), ("story-h2", "Grace")] {
        let story = story(&gw, call_id).await;
        assert_eq!(story["request"]["body"]["text"], name);
        assert_eq!(
            story["response"]["body"]["text"],
            format!("Hello, {name}!\n")
        );
        assert_eq!(
            log_texts(&story),
            [format!("hello: call {call_id} greets \"{name}\"")]
        );
        assert_eq!(story["logsBy"], "call id");
    }

    // A 1 MiB body is kept up to the cap (64 KiB by default), with a mark in the page.
    gw.deploy_sh("echoer", "cat", json!({})).await;
    let big = vec![b'x'; 1024 * 1024];
    let (status, answer) = call(&gw, "echoer", "story-big", big.clone()).await;
    assert_eq!((status, answer.len()), (200, big.len()));
    let story = story(&gw, "story-big").await;
    for part in ["request", "response"] {
        let body = &story[part]["body"];
        assert_eq!(body["size"], big.len(), "{part}");
        assert_eq!(body["truncated"], true, "{part}");
        assert_eq!(body["text"].as_str().unwrap().len(), 64 * 1024, "{part}");
    }
    let cookie = signed_in(&gw).await;
    let page = ui_page(&gw, &cookie, "/ui/activations/story-big").await;
    assert!(
        page.contains("…cut: the first 65536 of 1048576 bytes are kept"),
        "the page marks the cut body"
    );
    let page = ui_page(&gw, &cookie, "/ui/activations/story-a").await;
    assert!(
        page.contains("teller heard alpha with [redacted]"),
        "{page}"
    );
    assert!(!page.contains(SECRET));

    // The CLI shows it too.
    let shown = tokio::task::block_in_place(|| {
        std::process::Command::new(hark_bin())
            .args(["activations", "show", "story-a"])
            .env("HARK_GATEWAY", &gw.url)
            .env("HARK_DATA", &gw.data)
            .env_remove("HARK_TOKEN")
            .output()
            .unwrap()
    });
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{out}");
    assert!(
        out.contains("told alpha with [redacted]")
            && out.contains("log lines: 1 (told by process)")
            && out.contains("teller heard alpha with [redacted]"),
        "{out}"
    );
}

async fn replay(gw: &Gateway, id: &str, new_id: &str, ask: Value) -> (u16, Value) {
    let response = gw
        .request(Method::POST, &format!("/system/activations/{id}/replay"))
        .header("x-call-id", new_id)
        .json(&ask)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_runs_the_kept_request_again_and_shows_what_changed() {
    let gw = Gateway::start();
    gw.deploy_sh("teller", "printf \"told %s\" \"$(cat)\"", json!({}))
        .await;
    gw.deploy_sh("echoer", "cat", json!({})).await;
    assert_eq!(
        call(&gw, "teller", "first", b"alpha".to_vec()).await,
        (200, "told alpha".to_owned())
    );

    // The same input, the same deterministic function: the same answer, a linked record.
    let (status, replayed) = replay(&gw, "first", "again", json!({})).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["callId"], "again");
    assert_eq!(replayed["replayOf"], "first");
    assert_eq!(replayed["status"], 200);
    assert_eq!(replayed["same"], true, "{replayed}");
    assert!(
        replayed["notes"]
            .to_string()
            .contains("x-api-key was redacted"),
        "a redacted credential is not sent, and the replay says so: {replayed}"
    );
    let record = record(&gw, "again").await;
    assert_eq!(record["replayOf"], "first");
    assert_eq!(record["trigger"], "replay");
    assert_eq!(record["story"]["request"]["body"]["text"], "alpha");
    assert_eq!(record["story"]["response"]["body"]["text"], "told alpha");

    // Against another function: the answers differ, line by line.
    let (status, other) = replay(&gw, "first", "elsewhere", json!({ "function": "echoer" })).await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["function"], "echoer");
    assert_eq!(other["same"], false);
    let diff = other["diff"].as_str().unwrap();
    assert!(
        diff.contains("-told alpha") && diff.contains("+alpha"),
        "{diff}"
    );

    // A body kept only in part cannot be replayed faithfully: refused, saying why.
    call(&gw, "echoer", "big", vec![b'x'; 100 * 1024]).await;
    let (status, refused) = replay(&gw, "big", "big-again", json!({})).await;
    assert_eq!(status, 409);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("--history-max-body"),
        "{refused}"
    );
    let (status, _) = replay(&gw, "never-ran", "x", json!({})).await;
    assert_eq!(status, 404);

    // A function that needs functions:invoke to be called needs it to be replayed too.
    gw.deploy(json!({
        "service": "guarded",
        "envProcess": "cat",
        "annotations": { "hark.auth": "required" },
    }))
    .await;
    let writer: Value = gw
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["functions:write", "functions:read"], "ttl": "10m" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let writer = writer["token"].as_str().unwrap().to_owned();
    register_secret(&writer);
    let refused = gw
        .client
        .post(format!("{}/system/activations/first/replay", gw.url))
        .bearer_auth(&writer)
        .json(&json!({ "function": "guarded" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("functions:invoke"));

    // The activation page's button does the same, and the new page shows the comparison.
    let cookie = signed_in(&gw).await;
    let first_page = ui_page(&gw, &cookie, "/ui/activations/first").await;
    assert!(first_page.contains("id=\"replay-form\""), "a replay button");
    let csrf = crate::sessions::csrf_in(&first_page);
    let answer = crate::sessions::no_redirects()
        .post(format!("{}/ui/activations/first/replay", gw.url))
        .header("cookie", &cookie)
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let to = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to.starts_with("/ui/activations/") && to.ends_with("?done=replayed"),
        "{to}"
    );
    let new_page = ui_page(&gw, &cookie, &to).await;
    assert!(new_page.contains("Replay of"), "{new_page}");
    assert!(
        new_page.contains("The same answer as the first call."),
        "{new_page}"
    );
    let elsewhere = ui_page(&gw, &cookie, "/ui/activations/elsewhere").await;
    assert!(elsewhere.contains("id=\"replay-diff\""), "{elsewhere}");
}

#[tokio::test]
async fn no_story_is_kept_with_a_zero_body_cap() {
    let gw = Gateway::start_with(&["--history-max-body", "0"]);
    gw.deploy_sh("echoer", "cat", json!({})).await;
    assert_eq!(
        call(&gw, "echoer", "untold", b"quiet".to_vec()).await.0,
        200
    );
    assert_eq!(story(&gw, "untold").await, Value::Null);
}

#[tokio::test]
async fn past_the_story_rate_successful_calls_keep_only_their_record_and_failed_ones_all() {
    let gw = Gateway::start_with(&["--history-story-rate", "2"]);
    gw.deploy_sh("fine", "cat", json!({})).await;
    gw.deploy_sh("broken", "cat; exit 3", json!({})).await;
    // The successful calls back to back, timed: the rate refills 2 stories a second
    // while they run, which a slow machine stretches.
    let started = std::time::Instant::now();
    for i in 0..6 {
        assert_eq!(
            call(&gw, "fine", &format!("fine-{i}"), b"ok".to_vec())
                .await
                .0,
            200
        );
    }
    let earned = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    for i in 0..6 {
        let (status, _) = call(&gw, "broken", &format!("broken-{i}"), b"no".to_vec()).await;
        assert!(status >= 500, "{status}");
    }
    let mut told = 0;
    for i in 0..6 {
        let record = record(&gw, &format!("fine-{i}")).await;
        assert_eq!(record["status"], 200, "every call keeps its record");
        told += usize::from(!record["story"].is_null());
    }
    // Two told at once (a second's worth), and those earned while the calls ran.
    assert!(
        (2..=2 + earned).contains(&told),
        "{told} of 6 successful calls told ({earned} earned meanwhile)"
    );
    for i in 0..6 {
        let story = story(&gw, &format!("broken-{i}")).await;
        assert_eq!(
            story["request"]["body"]["text"], "no",
            "a failed call is always told"
        );
    }
}
