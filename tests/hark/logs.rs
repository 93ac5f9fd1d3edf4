//! Following a function's logs as server-sent events: the API resumes after the id a
//! client last saw, and `hark logs --follow` carries on across a gateway restart.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{eventually, hark_bin, Gateway};

/// Reads the events of a log stream until it ends, or until `count` have come.
async fn read_events(response: reqwest::Response, count: usize) -> Vec<(String, String)> {
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = response.bytes_stream().eventsource();
    let mut seen = Vec::new();
    while seen.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a log event within 10 s");
        let Some(event) = next else { break };
        let event = event.unwrap();
        let line: Value = serde_json::from_str(&event.data).unwrap();
        seen.push((event.id, line["text"].as_str().unwrap().to_owned()));
    }
    seen
}

fn texts(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(_, text)| text.as_str()).collect()
}

fn stream(gw: &Gateway, query: &str) -> reqwest::RequestBuilder {
    gw.request(Method::GET, &format!("/system/logs?name=talker&{query}"))
        .header("accept", "text/event-stream")
}

#[tokio::test]
async fn a_log_stream_resumes_after_the_last_event_its_client_saw() {
    let gw = Gateway::start();
    gw.deploy_sh("talker", "echo \"heard $(cat)\" >&2", json!({}))
        .await;
    for word in ["one", "two"] {
        assert_eq!(gw.invoke("talker", word).await.0, 200);
    }
    // A follower gets the kept lines, each with an id, and then the new ones as they come.
    let follow = stream(&gw, "follow=true").send().await.unwrap();
    let (first, reader) = tokio::join!(read_events(follow, 3), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.invoke("talker", "three").await
    });
    assert_eq!(reader.0, 200);
    assert_eq!(texts(&first), ["heard one", "heard two", "heard three"]);

    // It drops; two lines come while it is away; it comes back with the id of the
    // last event it saw and gets exactly what it missed.
    for word in ["four", "five"] {
        gw.invoke("talker", word).await;
    }
    let resumed = read_events(
        stream(&gw, "")
            .header("last-event-id", &first[2].0)
            .send()
            .await
            .unwrap(),
        usize::MAX,
    )
    .await;
    assert_eq!(texts(&resumed), ["heard four", "heard five"]);
    // From the middle of what it saw, too.
    let resumed = read_events(
        stream(&gw, "")
            .header("last-event-id", &first[0].0)
            .send()
            .await
            .unwrap(),
        usize::MAX,
    )
    .await;
    assert_eq!(
        texts(&resumed),
        ["heard two", "heard three", "heard four", "heard five"]
    );

    // An id this gateway never sent is refused, saying so.
    let refused = stream(&gw, "")
        .header("last-event-id", "not-an-id")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("Last-Event-ID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hark_logs_follow_carries_on_across_a_gateway_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start_in(data.path(), &[]);
    gw.deploy_sh("talker", "echo \"heard $(cat)\" >&2", json!({}))
        .await;
    let port: u16 = gw.url.rsplit(':').next().unwrap().parse().unwrap();

    let mut follower = Command::new(hark_bin())
        .args(["logs", "talker", "--follow"])
        .env("HARK_GATEWAY", &gw.url)
        .env("HARK_DATA", data.path())
        .env_remove("HARK_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = Arc::new(Mutex::new(String::new()));
    let noted = Arc::new(Mutex::new(String::new()));
    for (pipe, sink) in [
        (
            Box::new(follower.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            printed.clone(),
        ),
        (Box::new(follower.stderr.take().unwrap()), noted.clone()),
    ] {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
    }
    let heard = |word: &str| {
        printed
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.ends_with(&format!("heard {word}")))
            .count()
    };

    assert_eq!(gw.invoke("talker", "before").await.0, 200);
    eventually(
        "the line before the restart",
        Duration::from_secs(10),
        || heard("before") == 1,
    )
    .await;

    // The gateway stops; the follower waits for it and reconnects on its own.
    assert!(gw.stop(), "the gateway stops cleanly");
    let first_output = gw.output();
    let mut gw = Gateway::spawn(
        Gateway::up_command_on(data.path(), port, &[], &[]),
        data.path(),
    );
    gw.wait_status("talker", "came back", |s| s["availableReplicas"] == 1)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    // The follower may connect a moment after the gateway is up: call until it hears.
    while heard("after") == 0 {
        assert!(
            Instant::now() < deadline,
            "the follower heard nothing after the restart; it printed:\n{}\nand noted:\n{}\nit is {:?}; the first gateway said:\n{}",
            printed.lock().unwrap(),
            noted.lock().unwrap(),
            follower.try_wait(),
            first_output,
        );
        gw.invoke("talker", "after").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(
        heard("before"),
        1,
        "printed once, not again on reconnecting"
    );
    assert!(
        noted.lock().unwrap().contains("reconnecting"),
        "it says why the stream paused: {}",
        noted.lock().unwrap()
    );
    gw.stop();
}

#[tokio::test]
async fn a_log_stream_ends_once_its_token_is_revoked() {
    let gw = Gateway::start();
    gw.deploy_sh("talker", "echo \"heard $(cat)\" >&2", json!({}))
        .await;
    let minted: Value = gw
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["functions:read"], "ttl": "10m" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    crate::util::register_secret(&token);
    let follow = gw
        .client
        .get(format!("{}/system/logs?name=talker&follow=true", gw.url))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let revoked = gw
        .request(
            Method::DELETE,
            &format!("/system/tokens/{}", minted["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    // The stream is asked again every 10 s whether its token still holds: it ends.
    let mut events = follow.bytes_stream().eventsource();
    let ended = tokio::time::timeout(Duration::from_secs(25), async {
        while events.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its revoked token");
}
