//! The `holiday` function as the gateway runs it: JSON in on stdin, JSON out, state kept
//! in the file `HOLIDAY_STATE` names. (Also makes `cargo test --workspace` build the
//! binary that the gateway's Alexa tests deploy.)

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn call(state: &std::path::Path, input: Value) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holiday"))
        .env("HOLIDAY_STATE", state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let request = json!({ "input": input, "user": { "id": "amzn1.ask.account.test" } });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "holiday failed: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn books_and_cancels_days_off_against_the_allowance() {
    let dir = std::env::temp_dir().join(format!("holiday-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    assert_eq!(
        call(&state, json!({ "action": "balance" }))["days_left"],
        25
    );
    // 2030-01-07 is a Monday, 2030-01-05 a Saturday.
    let booked = call(&state, json!({ "action": "book", "date": "2030-01-07" }));
    assert_eq!(
        (booked["status"].as_str(), booked["days_left"].as_u64()),
        (Some("booked"), Some(24))
    );
    assert_eq!(booked["weekday"], "Monday");
    let again = call(&state, json!({ "action": "book", "date": "2030-01-07" }));
    assert_eq!(again["status"], "already_booked");
    assert_eq!(
        call(&state, json!({ "action": "book", "date": "2030-01-05" }))["status"],
        "weekend"
    );
    assert_eq!(
        call(&state, json!({ "action": "book", "date": "someday" }))["status"],
        "not_a_day"
    );
    let balance = call(&state, json!({ "action": "balance" }));
    assert_eq!(balance["days_left"], 24);
    assert_eq!(balance["booked"], json!(["2030-01-07"]));
    let cancelled = call(&state, json!({ "action": "cancel", "date": "2030-01-07" }));
    assert_eq!(
        (
            cancelled["status"].as_str(),
            cancelled["days_left"].as_u64()
        ),
        (Some("cancelled"), Some(25))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
