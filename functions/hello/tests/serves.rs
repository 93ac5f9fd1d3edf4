//! The `hello` function as the gateway runs it: started with `PORT`, it greets over
//! keep-alive HTTP. (Also makes `cargo test --workspace` build the binary that the
//! gateway's integration tests deploy.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One `hello` at a time: the thousand-connection test fills the machine's thread and
/// process table for a moment, and a `hello` started beside it may find no thread for
/// its connection (seen in CI: the greeting test's connection closed unread, reset).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn greets_on_the_port_it_is_given_over_one_connection() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello"))
        .env("PORT", port.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let served = std::panic::catch_unwind(|| greet_twice_over_tcp(port));
    child.kill().unwrap();
    let _ = child.wait();
    if let Err(failure) = served {
        // What hello said (e.g. that it had no thread for the connection) says why.
        let mut said = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut said);
        eprintln!("hello's stderr:\n{said}");
        std::panic::resume_unwind(failure);
    }
}

/// Greets "Ada", then the world, over one keep-alive TCP connection to `port`.
fn greet_twice_over_tcp(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("hello never listened: {e}"),
        }
    };
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for name in ["Ada", ""] {
        write!(
            writer,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        )
        .unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let expected = if name.is_empty() {
            "Hello, world!\n".to_owned()
        } else {
            format!("Hello, {name}!\n")
        };
        assert_eq!(String::from_utf8(body).unwrap(), expected);
    }
}

/// Sends one request on `stream` and reads the greeting back.
fn greet(stream: std::os::unix::net::UnixStream, name: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    write!(
        writer,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{name}",
        name.len()
    )
    .unwrap();
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// Under the gateway's default memory limit (1 GiB of `RLIMIT_DATA`, which counts thread
/// stacks), a thousand connections at once are served; with std's 2 MiB stacks the
/// function crashed at about 500 ("failed to spawn thread").
#[test]
fn a_thousand_connections_at_once_fit_in_the_sandbox_memory_limit() {
    use std::os::unix::net::UnixStream;
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("prlimit").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is missing"
        );
        eprintln!("skipping: prlimit (util-linux) is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("hello-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("hello.sock");
    let _ = std::fs::remove_file(&socket);
    let mut child = Command::new("prlimit")
        .arg(format!("--data={}", 1u64 << 30))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_hello"))
        .env("HARK_SOCKET", &socket)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // On a thread of its own: a function that stopped accepting leaves `connect` waiting
    // for room in its backlog, and the test must fail, not hang.
    let (done, finished) = std::sync::mpsc::channel();
    let path = socket.clone();
    std::thread::spawn(move || {
        let served = std::panic::catch_unwind(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            let first = loop {
                match UnixStream::connect(&path) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("hello never listened: {e}"),
                }
            };
            let mut held: Vec<UnixStream> = (0..1000)
                .map(|_| UnixStream::connect(&path).unwrap())
                .collect();
            // The last connection answering means every one before it has its thread
            // (they are accepted in order), all of them open at once.
            let last = held.pop().unwrap();
            assert_eq!(greet(last, "last"), "Hello, last!\n");
            for (i, stream) in held.into_iter().enumerate().step_by(100) {
                assert_eq!(greet(stream, &format!("n{i}")), format!("Hello, n{i}!\n"));
            }
            assert_eq!(greet(first, "Ada"), "Hello, Ada!\n");
            assert_eq!(
                greet(UnixStream::connect(&path).unwrap(), "Grace"),
                "Hello, Grace!\n"
            );
        });
        let _ = done.send(served.is_ok());
    });
    let outcome = finished.recv_timeout(Duration::from_secs(60));
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        outcome,
        Ok(true),
        "hello did not serve a thousand connections at once (alive: {alive})"
    );
    assert!(alive, "hello exited");
}
