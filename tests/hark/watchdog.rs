//! `hark watchdog` as a process on the host (no engine needed): fork and http mode,
//! health and readiness, the time limit, and a SIGTERM that lets calls in flight finish.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{hark_bin, hello_bin};

/// A running watchdog and its address.
struct Watchdog {
    child: Child,
    url: String,
}

impl Watchdog {
    fn start(args: &[&str]) -> Watchdog {
        let mut child = Command::new(hark_bin())
            .args(["watchdog", "--port", "0", "--bind", "127.0.0.1"])
            .args(args)
            .env("HARK_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hark watchdog");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split(" mode) on ").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the watchdog printed its address");
        Watchdog {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn fork_mode_serves_health_readiness_and_calls() {
    let wd = Watchdog::start(&["--fprocess", "sh -c 'printf \"%s:\" \"$Http_Path\"; cat'"]);
    let c = client();
    for path in ["/_/health", "/_/ready"] {
        let r = c.get(format!("{}{path}", wd.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = c
        .post(format!("{}/a/b", wd.url))
        .body("body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "/a/b:body");
}

#[tokio::test]
async fn http_mode_is_ready_once_the_function_listens() {
    let hello = hello_bin().display().to_string();
    let wd = Watchdog::start(&["--fprocess", &hello, "--mode", "http"]);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(15);
    while c
        .get(format!("{}/_/ready", wd.url))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c.post(&wd.url).body("Ada").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Hello, Ada!\n");
}

#[tokio::test]
async fn a_call_past_exec_timeout_answers_504_with_the_reason() {
    let wd = Watchdog::start(&["--fprocess", "sleep 30", "--exec-timeout", "300ms"]);
    let started = Instant::now();
    let r = client().post(&wd.url).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.headers()["x-hark-error"]
        .to_str()
        .unwrap()
        .contains("did not answer"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_lets_the_call_in_flight_finish_then_exits() {
    let mut wd = Watchdog::start(&["--fprocess", "sh -c 'sleep 1; echo finished'"]);
    let c = client();
    let url = wd.url.clone();
    let call = tokio::spawn(async move { c.post(&url).send().await.unwrap().text().await });
    // In flight: its sh runs.
    let pid = wd.child.id();
    crate::util::eventually(
        "the call's process to start",
        Duration::from_secs(10),
        || !crate::util::children_named(pid, "sh").is_empty(),
    )
    .await;
    unsafe {
        libc::kill(wd.child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(call.await.unwrap().unwrap(), "finished\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = wd.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "the watchdog did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
