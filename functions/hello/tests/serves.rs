//! The `hello` function as the gateway runs it: started with `PORT`, it greets over
//! keep-alive HTTP. (Also makes `cargo test --workspace` build the binary that the
//! gateway's integration tests deploy.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn greets_on_the_port_it_is_given_over_one_connection() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello"))
        .env("PORT", port.to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
    child.kill().unwrap();
    let _ = child.wait();
}
