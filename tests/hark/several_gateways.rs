//! Gateways sharing one PostgreSQL database (`hark up --store postgres://…`), as an
//! operator runs them behind a proxy: each with its own data directory holding copies of
//! the first one's keys. What one is told, the others do.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::pg_cluster::cluster;
use crate::tokens::status_with;
use crate::util::Gateway;

/// The files the first gateway made that every other one needs: the token signing key,
/// the admin token and the key that seals secrets.
const SHARED_FILES: &[&str] = &["jwt.key", "admin-token", "secret.key"];

fn copy_keys(from: &Path, to: &Path) {
    for file in SHARED_FILES {
        std::fs::copy(from.join(file), to.join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
}

/// Calls `echo` with "hi" through `gw` until it answers `want` (status, and body when
/// given): what another gateway was told reaches this one within a few polls.
async fn until_echo(gw: &Gateway, what: &str, want: (u16, Option<&str>)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = gw.invoke("echo", "hi").await;
        if status == want.0 && want.1.is_none_or(|w| w == body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {status} {body:?} after 10 s (want {want:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_one_gateway_is_told_the_others_do() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    let store = ["--store", url.as_str()];
    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = Gateway::start_in(dir_a.path(), &store);
    copy_keys(dir_a.path(), dir_b.path());
    copy_keys(dir_a.path(), dir_c.path());
    let b = Gateway::start_in(dir_b.path(), &store);
    let c = Gateway::start_in(dir_c.path(), &store);
    // One admin token for all: starting the others revoked nothing.
    assert_eq!(b.token, a.token);
    for gw in [&a, &b, &c] {
        assert_eq!(status_with(gw, &a.token).await, 200, "{}", gw.output());
    }

    // Deployed through one, served by every one; updated through another, served anew by
    // all; removed through a third, gone from all.
    a.deploy_sh("echo", "cat", json!({})).await;
    for gw in [&b, &c] {
        until_echo(
            gw,
            "a function deployed through another gateway",
            (200, Some("hi")),
        )
        .await;
    }
    // Scaled through one, scaled on the others.
    a.scale("echo", 2).await;
    for gw in [&b, &c] {
        gw.wait_status("echo", "scaled as another gateway was told", |s| {
            s["replicas"] == 2
        })
        .await;
    }
    b.deploy_sh_update("echo", "tr a-z A-Z").await;
    for gw in [&a, &c] {
        until_echo(
            gw,
            "an update made through another gateway",
            (200, Some("HI")),
        )
        .await;
    }
    let removed = c
        .request(Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "echo" }))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    for gw in [&a, &b] {
        until_echo(gw, "a removal made through another gateway", (404, None)).await;
    }

    // A secret set through one is listed by another.
    let created = b
        .request(Method::POST, "/system/secrets")
        .json(&json!({ "name": "api-key", "value": "s3cret" }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let names: Value = c.get_json("/system/secrets").await;
    assert!(names.to_string().contains("api-key"), "{names}");

    // A token minted through one works on all; revoked through another, it is refused by
    // all at once.
    let minted: Value = a
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["functions:read"], "ttl": "1h" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    crate::util::register_secret(&token);
    let id = minted["id"].as_str().unwrap().to_owned();
    for gw in [&a, &b, &c] {
        assert_eq!(status_with(gw, &token).await, 200);
    }
    let revoked = b
        .request(Method::DELETE, &format!("/system/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    for gw in [&a, &b, &c] {
        assert_eq!(
            status_with(gw, &token).await,
            401,
            "a revoked token was accepted"
        );
    }

    // A gateway given the secrets' key but not the token keys is refused, and takes
    // nothing from the others: had it started, it would have replaced their admin token
    // with its own.
    let stranger = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir_a.path().join("secret.key"),
        stranger.path().join("secret.key"),
    )
    .unwrap();
    let mut stranger_up = Gateway::up_command(stranger.path(), &store, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stranger_up.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = stranger_up.kill();
            panic!("a gateway without the shared token keys started");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = stranger_up.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not the key the other gateways on this database sign with"),
        "{stderr}"
    );
    for gw in [&a, &b, &c] {
        assert_eq!(status_with(gw, &a.token).await, 200, "{}", gw.output());
    }
}

/// A thousand async calls spread over three gateways (and two functions: the API lists
/// at most 1,000 records at a time), one gateway SIGKILLed while it runs some: every call
/// completes, those it was running are run again by the others once its lease runs out,
/// and no call is run by two gateways at once.
#[tokio::test(flavor = "multi_thread")]
async fn calls_of_a_killed_gateway_run_again_elsewhere_and_none_twice() {
    let Some(cluster) = cluster() else {
        return;
    };
    const CALLS: usize = 1000;
    const FUNCTIONS: [&str; 2] = ["slow-a", "slow-b"];
    let url = cluster.database().await;
    // A short lease: the killed gateway's calls are run again 4 s after its last beat.
    let args = ["--store", url.as_str(), "--queue-lease", "4"];
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = Gateway::start_in(dirs[0].path(), &args);
    for dir in &dirs[1..] {
        copy_keys(dirs[0].path(), dir.path());
    }
    let b = Gateway::start_in(dirs[1].path(), &args);
    let c = Gateway::start_in(dirs[2].path(), &args);
    for function in FUNCTIONS {
        a.deploy_sh(function, "sleep 0.2; cat", json!({})).await;
        for gw in [&b, &c] {
            until_served(gw, function).await;
        }
    }

    let mut accepted = Vec::with_capacity(CALLS);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let gw = [&a, &b, &c][i % 3];
        let function = FUNCTIONS[i % 2];
        let request = gw
            .client
            .post(format!("{}/async-function/{function}", gw.url))
            .body(format!("call {i}"));
        sends.spawn(async move { request.send().await });
    }
    while let Some(sent) = sends.join_next().await {
        let response = sent.unwrap().unwrap();
        assert_eq!(response.status(), 202);
        accepted.push(response.headers()["x-call-id"].to_str().unwrap().to_owned());
    }
    // Killed while it runs calls of its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill_hard();

    // Every call done: the queue (in the store) says so, whichever gateway ran it.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut done: Vec<Value> = Vec::new();
        for function in FUNCTIONS {
            let of_function: Vec<Value> = b
                .get_json(&format!(
                    "/system/queue?state=done&function={function}&limit=1000"
                ))
                .await;
            done.extend(of_function);
        }
        let done: std::collections::HashSet<&str> =
            done.iter().filter_map(|e| e["callId"].as_str()).collect();
        let open = accepted
            .iter()
            .filter(|c| !done.contains(c.as_str()))
            .count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s, {open} of {CALLS} calls are not done\nB: {}\nC: {}",
            b.output(),
            c.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Answers as the activation records tell them (the killed gateway's last records may
    // be lost with it: it writes them in batches).
    let mut records: Vec<Value> = Vec::new();
    for function in FUNCTIONS {
        let of_function: Vec<Value> = c
            .get_json(&format!(
                "/system/activations?function={function}&limit=1000"
            ))
            .await;
        // Fewer than the listing's limit: none was left out.
        assert!(
            of_function.len() < 1000,
            "{function}: {} records",
            of_function.len()
        );
        records.extend(of_function);
    }
    let mut answered: std::collections::HashMap<&str, usize> = Default::default();
    for record in records.iter().filter(|r| r["status"] == 200) {
        *answered
            .entry(record["callId"].as_str().unwrap())
            .or_default() += 1;
    }
    // The calls the killed gateway was running were taken back by another.
    let taken_back = [&b, &c]
        .iter()
        .any(|gw| gw.output().contains("re-queued calls left running"));
    assert!(taken_back, "no gateway took back the killed one's calls");
    // Only a call the killed gateway had run to its end but not yet recorded as done may
    // run twice (at least once, not exactly once): at most its 16 workers' worth.
    let twice = answered.values().filter(|n| **n > 1).count();
    assert!(twice <= 16, "{twice} calls ran more than once");
}

/// Waits until `gw` serves function `name` (deployed through another gateway).
async fn until_served(gw: &Gateway, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.invoke(name, "").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "{name} never served by {}",
            gw.url
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call that runs longer than its lease stays its gateway's: the heartbeat renews the
/// lease, and the other gateway never runs it too.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_longer_than_its_lease_is_not_run_twice() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    let args = ["--store", url.as_str(), "--queue-lease", "4"];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Gateway::start_in(dir_a.path(), &args);
    copy_keys(dir_a.path(), dir_b.path());
    let b = Gateway::start_in(dir_b.path(), &args);
    a.deploy_sh(
        "long",
        "sleep 9; cat",
        json!({ "com.openfaas.timeout": "30s" }),
    )
    .await;
    until_served(&b, "long").await;
    let response = a
        .client
        .post(format!("{}/async-function/long", a.url))
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let call = response.headers()["x-call-id"].to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: Vec<Value> = b
            .get_json("/system/queue?state=done&function=long&limit=10")
            .await;
        if done.iter().any(|e| e["callId"] == call.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "the call never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each gateway's records, once written: one run in all.
    let mut runs = 0;
    for gw in [&a, &b] {
        let records: Vec<Value> = gw
            .get_json("/system/activations?function=long&limit=100")
            .await;
        runs = runs.max(
            records
                .iter()
                .filter(|r| r["callId"] == call.as_str())
                .count(),
        );
    }
    assert_eq!(runs, 1, "the call ran more than once");
    for gw in [&a, &b] {
        assert!(
            !gw.output().contains("re-queued calls left running"),
            "a live gateway's call was taken back:\n{}",
            gw.output()
        );
    }
}

/// A second-resolution schedule served by three gateways for 30 s: every tick fires, and
/// none twice, whichever gateway claims it.
#[tokio::test(flavor = "multi_thread")]
async fn each_schedule_tick_fires_once_across_three_gateways() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    // The function writes its ticks into the test's folder, which a sandboxed function
    // may not write.
    let args = ["--store", url.as_str(), "--sandbox", "off"];
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let log = dirs[0].path().join("ticks");
    let a = Gateway::start_in(dirs[0].path(), &args);
    for dir in &dirs[1..] {
        copy_keys(dirs[0].path(), dir.path());
    }
    let b = Gateway::start_in(dirs[1].path(), &args);
    let c = Gateway::start_in(dirs[2].path(), &args);
    a.deploy_sh(
        "tick",
        &format!("echo \"$Http_X_Hark_Schedule_Tick\" >> {}", log.display()),
        json!({ "schedule": "* * * * * *" }),
    )
    .await;
    for gw in [&b, &c] {
        until_served(gw, "tick").await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Stopped before the ticks are read: no run is left half-written.
    a.deploy_sh_update("tick", "cat >/dev/null").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ticks: Vec<chrono::DateTime<chrono::FixedOffset>> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        // Without a tick: the calls that found it served on each gateway.
        .filter(|t| !t.is_empty())
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("a tick is RFC 3339"))
        .collect();
    let mut unique = ticks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    // Every second between the first and the last tick fired.
    let span = (unique[unique.len() - 1] - unique[0]).num_seconds() + 1;
    assert_eq!(
        unique.len() as i64,
        span,
        "ticks are missing between the first and the last: {unique:?}"
    );
    assert!(unique.len() >= 25, "only {} ticks in 30 s", unique.len());
    let by: Vec<u64> = {
        let mut by = Vec::new();
        for gw in [&a, &b, &c] {
            by.push(gw.status("tick").await["invocationCount"].as_u64().unwrap());
        }
        by
    };
    eprintln!("{} ticks; fired by each gateway: {by:?}", unique.len());
}

/// The same Slack event delivered to two gateways at the same moment (a retry racing
/// the first delivery through another proxy upstream) runs once.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_slack_event_at_two_gateways_runs_once() {
    use crate::channels::{now, post, slack_headers, Site, SLACK_SECRET};
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    let site = Site::new();
    let events = site.file("events.log");
    let record = site.script("record", &format!("cat >> {events}; echo >> {events}"));
    site.config(
        &[("record", &record)],
        "slack:\n  acme:\n    signing_secrets: [slack]\n    events: { app_mention: record }",
    );
    // The database is named by the stack file, as `store: ${VAR}`: a gateway that
    // ignored it would keep a SQLite file of its own, and run each event again.
    let config = site.path().join("hark.yml");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str("store: ${HARK_TEST_DATABASE}\n");
    std::fs::write(&config, yaml).unwrap();
    let env = [
        ("HARK_SECRET_SLACK", SLACK_SECRET),
        ("HARK_TEST_DATABASE", url.as_str()),
        // Not the harness's (HARK_TEST_STORE): the stack file's.
        ("HARK_STORE", ""),
    ];
    let config = config.to_str().unwrap();
    let args = ["--config", config];
    let a = site.start(&args, &env);
    let other = tempfile::tempdir().unwrap();
    copy_keys(site.path(), other.path());
    let mut with_sandbox_off = vec!["--sandbox", "off"];
    with_sandbox_off.extend_from_slice(&args);
    let b = Gateway::start_in_with_env(other.path(), &with_sandbox_off, &env);

    for (n, id) in ["Ev1", "Ev2", "Ev3"].iter().enumerate() {
        let event = format!(
            r#"{{"type":"event_callback","event_id":"{id}","event":{{"type":"app_mention","text":"<@U0> hi {n}","user":"U1"}}}}"#
        );
        let headers = slack_headers(SLACK_SECRET, now(), event.as_bytes(), "application/json");
        let (at_a, at_b) = tokio::join!(
            post(&a, "/slack/acme", &headers, event.clone()),
            post(&b, "/slack/acme", &headers, event.clone()),
        );
        assert_eq!((at_a.0, at_b.0), (200, 200), "{at_a:?} {at_b:?}");
    }
    site.wait_lines("events.log", 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = site.lines("events.log");
    assert_eq!(lines.len(), 3, "an event ran twice: {lines:?}");
    for id in ["Ev1", "Ev2", "Ev3"] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(id)).count(),
            1,
            "{id}: {lines:?}"
        );
    }
}
