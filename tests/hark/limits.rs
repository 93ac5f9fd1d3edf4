//! What one caller may make the gateway hold, against a real `hark up`: the bytes of
//! queued calls (per function and in total, kept across a restart), the data directory's
//! free-space floor, the answers of http-mode replicas (`hark.max_response`), and the
//! request bodies held at once over all requests.

use std::io::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::util::{hello_bin, strip_ansi, Gateway};

/// Queues `body` for `name`; the answer's status and `Retry-After`.
async fn queue_call(gw: &Gateway, name: &str, body: Vec<u8>) -> (u16, Option<String>) {
    let response = gw
        .client
        .post(format!("{}/async-function/{name}", gw.url))
        .body(body)
        .send()
        .await
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry)
}

/// A burst of 64 KiB async calls to one function fills its share of `--queue-max-bytes`
/// (a quarter: 1 MiB) and is then refused with 503, while another function still takes
/// calls; after a restart the share is still counted as full.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_queued_calls_stops_at_the_functions_byte_quota() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--queue-max-bytes", "4MiB"];
    let mut gw = Gateway::start_in(dir.path(), &args);
    // Calls wait: one runs at a time, for a long time.
    let slow = json!({ "hark.async.concurrency": "1", "hark.timeout": "60s" });
    gw.deploy_sh("filler", "sleep 60", slow.clone()).await;
    gw.deploy_sh("other", "cat", json!({})).await;

    let chunk = vec![b'x'; 64 * 1024];
    let mut accepted = 0;
    let refused = loop {
        let (status, retry) = queue_call(&gw, "filler", chunk.clone()).await;
        match status {
            202 => accepted += 1,
            503 => break retry,
            other => panic!("unexpected {other}"),
        }
        assert!(
            accepted <= 16,
            "1 MiB of 64 KiB calls was queued and more taken"
        );
    };
    assert!(accepted >= 14, "only {accepted} calls of 64 KiB were taken");
    assert!(refused.is_some(), "503 without Retry-After");
    let log = strip_ansi(&gw.output_containing("byte quota"));
    assert!(
        log.lines()
            .any(|l| l.contains("filler") && l.contains("byte quota")),
        "{log}"
    );
    // Another function is not held up by it.
    assert_eq!(queue_call(&gw, "other", chunk.clone()).await.0, 202);

    // The count comes back from the store.
    assert!(gw.stop());
    let gw = Gateway::start_in(dir.path(), &args);
    assert_eq!(queue_call(&gw, "filler", chunk.clone()).await.0, 503);
    assert_eq!(queue_call(&gw, "other", chunk).await.0, 202);
}

/// Under the free-space floor, new async calls are refused with 503; a synchronous call
/// still runs.
#[tokio::test(flavor = "multi_thread")]
async fn under_the_free_disk_floor_async_calls_are_refused() {
    let gw = Gateway::start_with(&["--min-free-disk", "1000000TiB"]);
    gw.deploy_sh("echo", "cat", json!({})).await;
    let (status, retry) = queue_call(&gw, "echo", b"hi".to_vec()).await;
    assert_eq!(status, 503);
    assert!(retry.is_some(), "503 without Retry-After");
    let log = strip_ansi(&gw.output_containing("--min-free-disk"));
    assert!(log.contains("--min-free-disk"), "{log}");
    assert_eq!(gw.invoke("echo", "hi").await, (200, "hi".to_owned()));
}

/// An http-mode function answering more than its `hark.max_response` gets 502 and a log
/// line; a small answer passes.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_mode_answer_over_max_response_is_a_502() {
    let gw = Gateway::start();
    gw.deploy(json!({
        "service": "hello",
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http", "hark.max_response": "1KiB" },
    }))
    .await;
    let (status, body) = gw.invoke("hello", "Ada").await;
    assert_eq!((status, body.trim()), (200, "Hello, Ada!"));
    let (status, body) = gw.invoke("hello", &"A".repeat(4096)).await;
    assert_eq!(status, 502, "{}", &body[..body.len().min(300)]);
    assert!(body.contains("hark.max_response"), "{body}");
    let log = strip_ansi(&gw.output_containing("larger than hark.max_response"));
    assert!(
        log.lines()
            .any(|l| l.contains("larger than hark.max_response") && l.contains("hello")),
        "{log}"
    );
}

/// While one slow client holds most of `--max-body-total`, a concurrent flood of large
/// bodies is refused with 503 instead of being buffered; the gateway stays up and takes
/// the same body once the slow client is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_large_bodies_over_the_global_budget_gets_503() {
    let gw = Gateway::start_with(&["--max-body-total", "1MiB", "--max-body", "1048576"]);
    gw.deploy_sh("sink", "wc -c", json!({})).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    // Announces 900 KiB and sends 1 KiB of it.
    let open_slow = || {
        let mut slow = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            slow,
            "POST /function/sink HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\n",
            900 * 1024
        )
        .unwrap();
        slow.write_all(&[b'y'; 1024]).unwrap();
        slow.flush().unwrap();
        slow
    };
    let mut slow = open_slow();
    let big = vec![b'z'; 600 * 1024];
    let send = |body: Vec<u8>| {
        gw.client
            .post(format!("{}/function/sink", gw.url))
            .body(body)
            .send()
    };
    // The budget is held once the gateway has read the slow request's head; a refused
    // request tells it is. A large request the gateway read first takes the budget, and
    // the slow one is refused instead: then the slow one is sent again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The 503 goes out before the body is read, and the connection is closed: a client
    // still sending may see the close (a broken pipe) instead of the answer.
    loop {
        let Ok(response) = send(big.clone()).await else {
            break;
        };
        if response.status() == 503 {
            break;
        }
        assert_eq!(response.status(), 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the budget was never held"
        );
        slow = open_slow();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flood: Vec<_> = (0..16).map(|_| send(big.clone())).collect();
    for response in futures::future::join_all(flood).await {
        let Ok(response) = response else { continue };
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
    }
    let log = strip_ansi(&gw.output_containing("budget of request bodies"));
    assert!(log.contains("budget of request bodies"), "{log}");
    drop(slow);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Ok(response) = send(big.clone()).await else {
            // Refused while sending: the budget is still held.
            assert!(
                std::time::Instant::now() < deadline,
                "the budget never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if response.status() == 200 {
            assert_eq!(
                response.text().await.unwrap().trim(),
                (600 * 1024).to_string()
            );
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection on which `GET /healthz` was answered and which is kept open (keep-alive).
fn idle_connection(addr: &str) -> std::net::TcpStream {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    healthz(&mut conn, addr).expect("answered");
    conn
}

/// Sends `GET /healthz` on `conn` and reads its answer: `None` when the connection closed
/// first; a read timeout fails.
fn healthz(conn: &mut std::net::TcpStream, addr: &str) -> Option<String> {
    write!(conn, "GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").ok()?;
    read_answer(conn)
}

/// The head and body of one short answer on `conn`; `None` when it closed first.
fn read_answer(conn: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read as _;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("no answer: {e}"),
        }
        let text = String::from_utf8_lossy(&answer);
        // /healthz answers "OK" with a Content-Length.
        if text.contains("\r\n\r\n") && text.ends_with("OK") {
            return Some(text.into_owned());
        }
    }
}

/// At `--max-connections`, the keep-alive connection idle longest is closed to make room
/// for a newcomer (one client's idle connections do not lock others out until the header
/// timeout), while a connection in the middle of a request is never cut: with every
/// connection busy the newcomer waits, and is served once one of them falls idle.
#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_idle_connections_make_room_and_busy_ones_are_kept() {
    let gw = Gateway::start_with(&["--max-connections", "3"]);
    let addr = gw.url.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        // The test client's own connections, if it kept any, fell idle before these.
        let mut oldest = idle_connection(&addr);
        let mut second = idle_connection(&addr);
        let mut third = idle_connection(&addr);
        let mut newcomer = idle_connection(&addr);
        assert_eq!(
            healthz(&mut oldest, &addr),
            None,
            "the connection idle longest made room"
        );
        for conn in [&mut second, &mut third, &mut newcomer] {
            assert!(healthz(conn, &addr).is_some(), "the others are kept");
        }

        // Every connection in the middle of a request head.
        for conn in [&mut second, &mut third, &mut newcomer] {
            write!(conn, "GET /healthz HTTP/1.1\r\n").unwrap();
            conn.flush().unwrap();
        }
        let mut waiting = std::net::TcpStream::connect(&addr).unwrap();
        write!(waiting, "GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").unwrap();
        waiting
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 64];
        let early = std::io::Read::read(&mut waiting, &mut buf);
        assert!(
            matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "no busy connection was cut for the newcomer: {early:?}"
        );
        // One request completes: its connection falls idle and makes room.
        write!(second, "host: {addr}\r\n\r\n").unwrap();
        assert!(read_answer(&mut second).is_some());
        waiting
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert!(
            read_answer(&mut waiting).is_some(),
            "the newcomer is served"
        );
        // The other two were kept through it all and finish their requests.
        for conn in [&mut third, &mut newcomer] {
            write!(conn, "host: {addr}\r\n\r\n").unwrap();
            assert!(read_answer(conn).is_some(), "a busy connection was kept");
        }
    })
    .await
    .unwrap();
}
