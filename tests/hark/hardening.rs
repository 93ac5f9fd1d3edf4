//! Process hardening of `hark up`: the durability it commits with, and that other local
//! processes cannot inspect it. The durability and schema tests are SQLite's (`--store
//! sqlite`, whatever `HARK_TEST_STORE` says); PostgreSQL's are in `several_gateways.rs`
//! and the store's contract tests.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::util::{strip_ansi, Gateway};

async fn durability(gw: &Gateway) -> String {
    let info: serde_json::Value = gw.get_json("/system/info").await;
    info["durability"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_durability_flag_reaches_the_store() {
    let full = Gateway::start_with(&["--store", "sqlite", "--durability", "full"]);
    assert_eq!(durability(&full).await, "full");
    let log = strip_ansi(&full.output_containing("store opened"));
    assert!(log.contains("durability=full"), "{log}");
    let normal = Gateway::start_with(&["--store", "sqlite", "--durability", "normal"]);
    assert_eq!(durability(&normal).await, "normal");
    let dir = tempfile::tempdir().unwrap();
    let from_env = Gateway::start_in_with_env(
        dir.path(),
        &["--store", "sqlite"],
        &[("HARK_DURABILITY", "normal")],
    );
    assert_eq!(durability(&from_env).await, "normal");
}

#[test]
fn an_unknown_durability_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Gateway::up_command(dir.path(), &["--durability", "sometimes"], &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("full") && stderr.contains("normal"),
        "{stderr}"
    );
}

/// The schema version of the store in `data`.
fn schema_version(data: &std::path::Path) -> i64 {
    rusqlite::Connection::open(data.join("hark.db"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_store_a_newer_hark_wrote_is_refused_at_start_and_left_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = ["--store", "sqlite"];
    let mut gw = Gateway::start_in(dir.path(), &sqlite);
    gw.deploy_sh("keep", "cat", serde_json::json!({})).await;
    assert!(gw.stop(), "the gateway did not stop cleanly");
    let current = schema_version(dir.path());
    assert!(current >= 1, "the store records no schema version");
    // What a newer Hark would leave behind before a downgrade.
    let newer = current + 1;
    rusqlite::Connection::open(dir.path().join("hark.db"))
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let out = Gateway::up_command(dir.path(), &sqlite, &[])
        .output()
        .unwrap();
    assert!(!out.status.success(), "hark up started on a newer store");
    let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(
        stderr.contains(&format!("schema version {newer}")) && stderr.contains("newer Hark"),
        "{stderr}"
    );
    assert_eq!(
        schema_version(dir.path()),
        newer,
        "the refused store was changed"
    );
    // Back on its own version (the newer Hark's copy restored), it starts with its function.
    rusqlite::Connection::open(dir.path().join("hark.db"))
        .unwrap()
        .pragma_update(None, "user_version", current)
        .unwrap();
    let gw = Gateway::start_in(dir.path(), &sqlite);
    let functions: serde_json::Value = gw.get_json("/system/functions").await;
    assert!(functions.to_string().contains("\"keep\""), "{functions}");
}

/// The user the processes of the next test run as: the test's own, or `nobody` when the
/// test runs as root (root may read any process's environment, so it proves nothing).
const NOBODY: u32 = 65534;

/// `command` run as a plain local user (see [`NOBODY`]).
fn as_plain_user(command: &mut Command) -> &mut Command {
    // SAFETY: geteuid(2) reads the caller's id and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        command.uid(NOBODY).gid(NOBODY);
    }
    command
}

/// What another process of the gateway's user reads from `/proc/PID/environ`.
fn environ_as_a_local_process(pid: u32) -> std::process::Output {
    as_plain_user(Command::new("cat").arg(format!("/proc/{pid}/environ")))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn another_local_process_cannot_read_the_gateways_environment() {
    const MARKER: &str = "HARK_TEST_ENVIRON_MARKER=visible-to-others";
    let (name, value) = MARKER.split_once('=').unwrap();
    // The reader works: it sees the variable in an ordinary process of the same user.
    let mut control = as_plain_user(Command::new("sleep").arg("60").env(name, value))
        .spawn()
        .unwrap();
    let seen = environ_as_a_local_process(control.id());
    let _ = control.kill();
    let _ = control.wait();
    assert!(
        String::from_utf8_lossy(&seen.stdout).contains(MARKER),
        "the reader cannot read an ordinary process's environment: the check proves nothing"
    );

    let dir = tempfile::tempdir().unwrap();
    // SAFETY: geteuid(2) reads the caller's id and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let mut up = Gateway::up_command(dir.path(), &[], &[(name, value)]);
    as_plain_user(&mut up);
    let gw = Gateway::spawn(up, dir.path());
    let read = environ_as_a_local_process(gw.pid());
    assert!(
        !String::from_utf8_lossy(&read.stdout).contains(MARKER),
        "another process of the gateway's user read its environment"
    );
    assert!(!read.status.success());
    // Non-dumpable: the kernel hands the gateway's /proc files to root.
    let environ = std::fs::metadata(format!("/proc/{}/environ", gw.pid())).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&environ), 0);
    // It still serves, committing with the default durability.
    assert_eq!(durability(&gw).await, "full");
}
