//! The `book-holiday` binary as Hark runs it in fork mode: a request on stdin, one JSON
//! answer on stdout. Requests it cannot act on are answered before any browser is asked
//! for, with the error kind the holiday skill speaks. (Also makes `cargo test --workspace`
//! build the binary that the gateway's end-to-end booking test deploys.)

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs the function with `stdin` and no WebDriver; its exit success and JSON answer.
fn call(stdin: &str) -> (bool, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_book-holiday"))
        .env_remove("HARK_WEBDRIVER_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let answer = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.success(), answer)
}

#[test]
fn a_request_that_is_not_json_is_answered_as_bad_input() {
    let (ok, answer) = call("book friday please");
    assert!(ok, "a refused request is an answer, not a failed call");
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["kind"], "bad_input", "{answer}");
}

#[test]
fn a_date_that_is_not_one_day_is_answered_as_bad_date() {
    // What Alexa sends for "next week": a week, not a day.
    let (ok, answer) = call(r#"{"input": {"action": "book", "date": "2030-W02"}}"#);
    assert!(ok);
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["kind"], "bad_date", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2030-W02"),
        "{answer}"
    );
}
