//! A replica of an HTTP-mode function killed under load: the process provider replaces
//! it, only the calls in flight on it fail, and the async calls among them are retried
//! (the queue's semantics: at least once, each failed attempt retried up to
//! `hark.retries`, a call that ends `done` has run successfully exactly once) — none is
//! lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::load::{client, open_loop};
use crate::util::{children_named, Gateway};

/// An HTTP-mode function taking 200 ms per call, so that calls are in flight on each
/// replica when one is killed; it answers with its process id.
const SLOW_SERVER: &str = r#"
import os, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(0.2)
        body = ("%d\n" % os.getpid()).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Slow).serve_forever()
"#;

/// `python3`, or `None` (the test is skipped, or fails under `CI`).
pub fn python3() -> Option<String> {
    let found = which_python();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is needed for the replica test"
        );
        eprintln!("SKIPPED: no python3 for the slow test function");
    }
    found
}

fn which_python() -> Option<String> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_owned)
}

/// Queue rows of the calls whose id is `LIKE pattern`: `(call id, state, attempts)`.
fn queued(gw: &Gateway, pattern: &str) -> Vec<(String, String, u32)> {
    let db = rusqlite::Connection::open_with_flags(
        gw.data.join("hark.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare("SELECT call_id, state, attempts FROM queue WHERE call_id LIKE ?1")
        .unwrap();
    let rows = stmt
        .query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}

/// Activation records of the calls whose id is `LIKE pattern`: `(call id, status)`.
fn activations(gw: &Gateway, pattern: &str) -> Vec<(String, u16)> {
    let db = rusqlite::Connection::open_with_flags(
        gw.data.join("hark.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare("SELECT call_id, status FROM activations WHERE call_id LIKE ?1")
        .unwrap();
    let rows = stmt
        .query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_is_replaced_and_only_its_inflight_calls_fail() {
    let Some(python) = python3() else { return };
    let _one = crate::exclusive().await;
    let gw = Gateway::start();
    let script = gw.data.join("slow.py");
    std::fs::write(&script, SLOW_SERVER).unwrap();
    gw.deploy(json!({
        "service": "slow",
        "envProcess": format!("{python} {}", script.display()),
        "annotations": { "hark.mode": "http", "hark.async.concurrency": "8",
                         "hark.sandbox.read": script.display().to_string(),
                         "hark.retry.backoff": "200ms", "hark.timeout": "10s" },
    }))
    .await;
    gw.scale("slow", 2).await;
    gw.wait_status("slow", "got 2 replicas", |s| s["availableReplicas"] == 2)
        .await;
    let replicas = children_named(gw.pid(), "python3");
    assert_eq!(replicas.len(), 2, "{replicas:?}");

    let client = client();
    let length = Duration::from_secs(6);
    let started = Instant::now();
    let sync_url = format!("{}/function/slow", gw.url);
    let sync = open_loop(&client, &sync_url, 50.0, length, "sync");
    let async_url = format!("{}/async-function/slow", gw.url);
    let queued_calls = open_loop(&client, &async_url, 20.0, length, "async");
    let victim = replicas[0];
    let kill = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // SAFETY: kill(2) of a process this test's gateway started.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        started.elapsed()
    };
    let (sync, queued_calls, killed_at) = tokio::join!(sync, queued_calls, kill);

    // Replaced: two replicas again, the victim not among them.
    let status = gw
        .wait_status("slow", "got its 2 replicas back", |s| {
            s["availableReplicas"] == 2
        })
        .await;
    let now = children_named(gw.pid(), "python3");
    assert_eq!(now.len(), 2, "{now:?}; {status}");
    assert!(
        !now.contains(&victim),
        "the killed replica {victim} is listed"
    );

    // Only calls in flight at the kill failed: each failure had started before the kill
    // and was still waiting after it.
    let failed: Vec<_> = sync.iter().filter(|s| s.status != 200).collect();
    // A call sent in the instant after the signal (the client's clock starts before its
    // bytes reach the replica, which the kernel tears down a moment later) is in flight too.
    const SIGNAL_GRACE: std::time::Duration = std::time::Duration::from_millis(20);
    let inflight_at_kill = |s: &&crate::load::Sample| {
        s.at <= killed_at + SIGNAL_GRACE && s.at + s.latency >= killed_at
    };
    let stray: Vec<_> = failed.iter().filter(|s| !inflight_at_kill(s)).collect();
    assert!(
        failed.iter().all(|s| s.status == 502),
        "failures other than 502: {failed:?}"
    );
    assert!(
        stray.is_empty(),
        "calls failed that were not in flight at the kill ({killed_at:?}): {stray:?}"
    );
    let inflight = sync.iter().filter(inflight_at_kill).count();
    assert!(
        failed.len() <= inflight,
        "{} failures, {inflight} calls in flight",
        failed.len()
    );

    // Every async call accepted ends done; each failed attempt was retried; the
    // function answered each call once (one 2xx activation), and the records match the
    // attempts the queue counted.
    let accepted: HashSet<String> = queued_calls
        .iter()
        .filter(|s| s.status == 202)
        .map(|s| s.call_id.clone())
        .collect();
    assert_eq!(
        accepted.len(),
        queued_calls.len(),
        "every async call is accepted"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = queued(&gw, "async-%");
        if rows.len() == accepted.len() && rows.iter().all(|(_, state, _)| state == "done") {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "async calls not all done: {:?}",
            rows.iter()
                .filter(|(_, s, _)| s != "done")
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    crate::flush_activations(&gw).await;
    let mut records: HashMap<String, (u32, u32)> = HashMap::new();
    for (call_id, status) in activations(&gw, "async-%") {
        let entry = records.entry(call_id).or_default();
        entry.0 += 1;
        if (200..300).contains(&status) {
            entry.1 += 1;
        }
    }
    let mut retried = 0;
    for (call_id, _, attempts) in &rows {
        assert!(accepted.contains(call_id), "unknown call {call_id}");
        let (runs, successes) = records.get(call_id).copied().unwrap_or_default();
        assert_eq!(successes, 1, "{call_id}: {successes} successful runs");
        assert_eq!(
            runs, *attempts,
            "{call_id}: {runs} runs, {attempts} attempts"
        );
        if *attempts > 1 {
            retried += 1;
        }
    }
    eprintln!(
        "FIGURES replica: killed replica {victim} at {killed_at:?}; sync: {} calls, {} in flight at the kill, {} failed (502); async: {} accepted, {} done, {retried} retried after the kill, 0 lost",
        sync.len(),
        inflight,
        failed.len(),
        accepted.len(),
        rows.len(),
    );
    assert!(!gw.output().contains("panicked"), "{}", gw.output());
}
