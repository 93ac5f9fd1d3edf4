//! HTTP-mode replicas on Unix sockets (issue 16, item 2): a replica told `HARK_SOCKET`
//! answers through the gateway over it, in a directory only the gateway and the
//! function's own user can open, so another function cannot call it directly and skip
//! the gateway's `hark.auth`. The `hello` example and `hark watchdog` serve there too,
//! and a program that speaks only TCP still works (`hark.listen: auto`).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::util::{eventually, hark_bin, hello_bin, strip_ansi, Gateway};

/// An HTTP server on `$HARK_SOCKET` answering every POST with where it was started to
/// listen, the `Host` it was sent and its uid. It opens its socket to every user: only
/// the directory keeps others out.
const SOCKET_SERVER: &str = r#"
import http.server, os, socketserver
class Where(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = ("port=%s socket=%s host=%s uid=%d\n" % (
            os.environ.get("PORT", "none"), os.environ.get("HARK_SOCKET", "none"),
            self.headers.get("Host"), os.getuid())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
path = os.environ["HARK_SOCKET"]
server = Server(path, Where)
os.chmod(path, 0o777)
server.serve_forever()
"#;

/// A fork-mode caller: connects to the socket whose path is its input and sends a call,
/// printing `answered: ...` or `refused: REASON`.
const DIRECT_CALLER: &str = r#"
import socket, sys
path = sys.stdin.read().strip()
try:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    print("answered: " + s.recv(4096).decode(errors="replace"))
except OSError as e:
    print("refused: %s" % e)
"#;

fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The sockets in `dir`.
fn sockets_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .unwrap()
                .file_type()
                .is_socket()
        })
        .collect()
}

/// The value of `key=` in the server's answer.
fn field<'a>(answer: &'a str, key: &str) -> &'a str {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {answer:?}"))
}

#[tokio::test]
async fn a_replica_on_its_socket_answers_through_the_gateway_and_no_other_function_can_call_it() {
    let gw = Gateway::start();
    gw.deploy(json!({
        "service": "guarded",
        "envProcess": quoted(&["/usr/bin/python3", "-c", SOCKET_SERVER]),
        "annotations": { "hark.mode": "http", "hark.listen": "socket", "hark.auth": "required" },
    }))
    .await;

    // Through the gateway: its check first, then the replica over the socket.
    let (status, _) = gw.invoke("guarded", "x").await;
    assert_eq!(
        status, 401,
        "hark.auth: required lets no anonymous call through"
    );
    let response = gw
        .request(Method::POST, "/function/guarded")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = response.text().await.unwrap();
    assert_eq!(
        field(&answer, "port"),
        "none",
        "no TCP port given: {answer}"
    );
    assert_eq!(field(&answer, "host"), "localhost");
    let socket = std::path::PathBuf::from(field(&answer, "socket"));
    assert_eq!(
        sockets_in(&gw.data.join("sockets/guarded")),
        std::slice::from_ref(&socket)
    );

    // The directory is the function's own, 0700.
    let dir = std::fs::metadata(gw.data.join("sockets/guarded")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    let uid: u32 = field(&answer, "uid").parse().unwrap();
    assert_eq!(
        dir.uid(),
        uid,
        "the socket directory belongs to the function's user"
    );
    if !is_root() {
        eprintln!(
            "skipping the direct call: functions have users of their own only under a root gateway"
        );
        return;
    }
    assert_ne!(uid, 0);

    // Another function, sandboxed, calls the socket directly: refused.
    gw.deploy(json!({
        "service": "intruder",
        "envProcess": quoted(&["/usr/bin/python3", "-c", DIRECT_CALLER]),
    }))
    .await;
    let (status, out) = gw.invoke("intruder", &socket.display().to_string()).await;
    assert_eq!(status, 200, "{out}");
    assert!(
        out.starts_with("refused:") && out.contains("Permission denied"),
        "another function reached guarded past the gateway: {out}"
    );
}

#[tokio::test]
async fn hello_serves_on_its_socket_and_a_tcp_only_program_still_works() {
    let gw = Gateway::start();
    // hello listens on HARK_SOCKET when given one; hark.listen defaults to auto.
    gw.deploy(json!({
        "service": "hello",
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    let (status, answer) = gw.invoke("hello", "Ada").await;
    assert_eq!((status, answer.as_str()), (200, "Hello, Ada!\n"));
    assert_eq!(sockets_in(&gw.data.join("sockets/hello")).len(), 1);

    // A server that knows only PORT: reached over TCP, and the log says what that means.
    let tcp_only = r#"
import http.server, os
class Hi(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"over tcp\n")
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Hi).serve_forever()
"#;
    gw.deploy(json!({
        "service": "tcp-only",
        "envProcess": quoted(&["/usr/bin/python3", "-c", tcp_only]),
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    let (status, answer) = gw.invoke("tcp-only", "x").await;
    assert_eq!((status, answer.as_str()), (200, "over tcp\n"));
    let log = strip_ansi(&gw.output_containing("replica serves on TCP"));
    let over_tcp: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("replica serves on TCP"))
        .collect();
    assert!(over_tcp.iter().any(|l| l.contains("tcp-only")), "{log}");
    assert!(
        !over_tcp.iter().any(|l| l.contains("hello")),
        "hello was reached over TCP: {over_tcp:?}"
    );
}

#[tokio::test]
async fn the_watchdog_as_an_http_mode_function_serves_on_its_socket() {
    let gw = Gateway::start();
    gw.deploy(json!({
        "service": "wd",
        "envProcess": quoted(&[
            &hark_bin().display().to_string(),
            "watchdog",
            "--fprocess",
            "cat",
        ]),
        "annotations": { "hark.mode": "http", "hark.listen": "socket" },
    }))
    .await;
    let (status, answer) = gw.invoke("wd", "through the watchdog").await;
    assert_eq!((status, answer.as_str()), (200, "through the watchdog"));
    let expected = format!("on unix:{}/", gw.data.join("sockets/wd").display());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log_texts("wd").await.join("\n");
        if log.contains(&expected) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{expected} not in {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_removed_function_leaves_no_socket_directory() {
    let gw = Gateway::start();
    gw.deploy(json!({
        "service": "brief",
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http", "hark.listen": "socket" },
    }))
    .await;
    assert_eq!(gw.invoke("brief", "x").await.0, 200);
    let dir = gw.data.join("sockets/brief");
    assert!(dir.exists());
    let response = gw
        .request(Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "brief" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    eventually(
        "the socket directory to go",
        Duration::from_secs(10),
        || !dir.exists(),
    )
    .await;
}

#[tokio::test]
async fn a_redeployed_function_keeps_answering_on_its_new_socket() {
    let gw = Gateway::start();
    // Replicas that stop only when killed, after the 2 s grace: the old one goes well
    // after the new one listens.
    let stubborn =
        format!("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n{SOCKET_SERVER}");
    let spec = |generation: &str| {
        json!({
            "service": "again",
            "envProcess": quoted(&["/usr/bin/python3", "-c", &stubborn]),
            "envVars": { "GENERATION": generation },
            "annotations": { "hark.mode": "http", "hark.listen": "socket" },
        })
    };
    gw.deploy(spec("one")).await;
    assert_eq!(gw.invoke("again", "x").await.0, 200);
    // The changed environment starts a new replica; the answer comes once the old one
    // is gone, and its going must not take the new one's socket with it.
    let response = gw
        .request(Method::PUT, "/system/functions")
        .json(&spec("two"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    for _ in 0..5 {
        let (status, answer) = gw.invoke("again", "x").await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(sockets_in(&gw.data.join("sockets/again")).len(), 1);
}

/// A data directory inside a directory function users cannot pass (a 0700 home or
/// mount): replicas cannot make their sockets there, so under `auto` they listen on TCP
/// (and the log says why), and `hark.listen: socket` is refused with the fix.
#[tokio::test]
async fn a_socket_directory_the_function_cannot_reach_falls_back_to_tcp_or_is_refused() {
    if !is_root() {
        eprintln!("skipping: only a root gateway gives functions users of their own");
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = outer.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let gw = Gateway::start_in(&data, &[]);
    gw.deploy(json!({
        "service": "hello",
        "envProcess": hello_bin().display().to_string(),
        "annotations": { "hark.mode": "http" },
    }))
    .await;
    let (status, answer) = gw.invoke("hello", "Ada").await;
    assert_eq!((status, answer.as_str()), (200, "Hello, Ada!\n"));
    let log = strip_ansi(&gw.output_containing("its replicas listen on TCP only"));
    assert!(
        log.lines()
            .any(|l| l.contains("its replicas listen on TCP only")
                && l.contains(&outer.path().display().to_string())),
        "{log}"
    );
    let refused = gw
        .request(Method::POST, "/system/functions")
        .json(&json!({
            "service": "strict",
            "envProcess": hello_bin().display().to_string(),
            "annotations": { "hark.mode": "http", "hark.listen": "socket" },
        }))
        .send()
        .await
        .unwrap();
    let status = refused.status().as_u16();
    let body = refused.text().await.unwrap();
    assert!(
        status >= 400 && body.contains("chmod o+x"),
        "{status} {body}"
    );
}
