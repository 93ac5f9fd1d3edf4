//! Overload: three times the measured capacity, offered open loop, is refused in part
//! with 429 and `Retry-After` (admission control), the calls taken still succeed, the
//! refusals are counted and logged without a line per call, and the gateway serves
//! normally as soon as the load stops.
//!
//! The overloaded function is the bottleneck, as in production: each replica serves one
//! call at a time for 20 ms. (Overloading the gateway's own CPU instead cannot work on a
//! two-core machine: the test's load generator would need three times the CPU the
//! gateway has, and it would be the generator that failed.)

use std::time::{Duration, Instant};

use serde_json::json;

use crate::load::{client, measure_capacity, open_loop, summarize};
use crate::util::Gateway;

/// An HTTP-mode function serving one call at a time, 20 ms each (50 calls a second per
/// replica), on connections it closes after each answer.
const SERIAL_SERVER: &str = r#"
import os, time
from http.server import HTTPServer, BaseHTTPRequestHandler
class Serial(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(0.02)
        self.send_response(200)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *args):
        pass
HTTPServer.request_queue_size = 512
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Serial).serve_forever()
"#;

/// A gateway with the `serial` function on 2 replicas.
async fn serial_gateway(python: &str, args: &[&str]) -> Gateway {
    let gw = Gateway::start_with(args);
    let script = gw.data.join("serial.py");
    std::fs::write(&script, SERIAL_SERVER).unwrap();
    gw.deploy(json!({
        "service": "serial",
        "envProcess": format!("{python} {}", script.display()),
        "annotations": { "hark.mode": "http",
                         "hark.sandbox.read": script.display().to_string() },
    }))
    .await;
    gw.scale("serial", 2).await;
    gw.wait_status("serial", "got 2 replicas", |s| s["availableReplicas"] == 2)
        .await;
    for _ in 0..10 {
        assert_eq!(gw.invoke("serial", "").await.0, 200);
    }
    gw
}

/// The queueing delay the overloaded gateway is configured for: `--max-inflight` is the
/// measured capacity times this (Little's law), as an operator would size it.
const LATENCY_BUDGET: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_capacity_is_refused_with_429_and_recovers_when_the_load_stops() {
    let Some(python) = crate::replica::python3() else {
        return;
    };
    let _one = crate::exclusive().await;
    let client = client();
    let capacity = {
        let gw = serial_gateway(&python, &[]).await;
        measure_capacity(&client, &format!("{}/function/serial", gw.url)).await
    };
    // The default limit (1024) keeps the gateway's file descriptors safe but bounds
    // nothing at a few hundred calls a second: the limit for a latency bound is
    // capacity x budget.
    let limit = ((capacity * LATENCY_BUDGET.as_secs_f64()) as usize).max(8);
    let gw = serial_gateway(&python, &["--max-inflight", &limit.to_string()]).await;
    let url = format!("{}/function/serial", gw.url);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let length = Duration::from_secs(10);
    let offered = 3.0 * capacity;
    let started = Instant::now();
    let samples = open_loop(&client, &url, offered, length, "over").await;
    let ended = started.elapsed();
    // The load has stopped (every call has its answer): the next calls succeed at once.
    let mut recovered_after = None;
    for _ in 0..50 {
        let (status, body) = gw.invoke("serial", "again").await;
        if recovered_after.is_none() {
            recovered_after = Some(started.elapsed() - ended);
        }
        assert_eq!(status, 200, "a call after the overload: {body}");
    }
    let last_sent = samples.iter().map(|s| s.at).max().unwrap_or_default();
    let drained_after = ended.saturating_sub(last_sent);

    let s = summarize(&samples, length);
    let first_refusal = samples
        .iter()
        .filter(|s| s.status == 429 || s.status == 503)
        .map(|s| s.at + s.latency)
        .min();
    let taken: Vec<_> = samples.iter().filter(|s| s.status != 429).collect();
    let slowest_taken = taken.iter().map(|s| s.latency).max().unwrap_or_default();
    eprintln!(
        "FIGURES overload: capacity {capacity:.0}/s, --max-inflight {limit}, offered {offered:.0}/s for {}s = {} calls: {} ok ({:.0}/s), {} refused ({:.1} %), {} errors; first refusal after {first_refusal:?}; slowest call taken {slowest_taken:?}; backlog drained {drained_after:?} after the last call was sent; first call after the load answered in {recovered_after:?}",
        length.as_secs(),
        s.calls,
        s.ok,
        s.achieved,
        s.refused,
        100.0 * s.refused as f64 / s.calls as f64,
        s.errors
    );

    // Overload degrades to refusals, not to errors or time-outs.
    let errors: Vec<_> = samples
        .iter()
        .filter(|s| !(200..300).contains(&s.status) && s.status != 429)
        .take(10)
        .collect();
    assert!(
        errors.is_empty(),
        "calls failed other than with 429: {errors:?}"
    );
    assert!(
        s.refused > 0,
        "3x capacity ({offered:.0}/s) was never refused: {s:?}"
    );
    assert!(
        samples
            .iter()
            .filter(|s| s.status == 429)
            .all(|s| s.retry_after),
        "a 429 without Retry-After"
    );
    // Refusals start within the overload, not after a backlog of its whole length.
    let first_refusal = first_refusal.unwrap();
    assert!(
        first_refusal < length / 2,
        "first refusal only after {first_refusal:?}"
    );

    // Counted in /metrics, and logged without a line per refused call.
    let metrics = gw
        .client
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hark_admission_refused_total "))
        .unwrap_or_else(|| panic!("no hark_admission_refused_total in /metrics:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(counted as usize, s.refused, "refusals counted in /metrics");
    let output = gw.output_containing("limit of in-flight calls");
    let lines = output
        .lines()
        .filter(|l| l.contains("limit of in-flight calls"))
        .count();
    assert!(
        lines >= 1 && lines <= 1 + ended.as_secs() as usize / 5,
        "{lines} log lines for {} refusals",
        s.refused
    );
    assert!(!output.contains("panicked"), "{output}");
}

/// A gateway with a small configured limit refuses what is past it, and the limit and
/// wait come from `hark up`'s flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_limit_bounds_calls_in_flight() {
    let _one = crate::exclusive().await;
    let gw = crate::util::Gateway::start_with(&["--max-inflight", "2", "--admission-wait-ms", "0"]);
    gw.deploy_sh("nap", "sleep 1; echo rested", serde_json::json!({}))
        .await;
    let calls = (0..6).map(|_| gw.invoke("nap", ""));
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((ok, refused), (2, 4), "{answers:?}");
    // Free again once they are done.
    assert_eq!(gw.invoke("nap", "").await.0, 200);
}
