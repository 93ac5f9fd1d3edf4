//! `hello`: an HTTP-mode example function. It listens on the Unix socket `$HARK_SOCKET`
//! when the gateway gives one (only the gateway and the function's own user can open
//! it), else on `$PORT` (127.0.0.1, which every local user can reach), and answers every
//! request with a greeting for the name in the body, e.g. `Hello, Ada!`. It uses only the
//! standard library and keeps connections alive, so the gateway can reuse them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;

/// The largest request body this function reads.
const MAX_BODY: usize = 1024 * 1024;

/// The stack of each connection's thread. Serving one needs a few KiB, and a function's
/// memory limit (`hark.limits.memory`, `RLIMIT_DATA`: 1 GiB by default in the gateway's
/// sandbox) counts every thread's stack: with std's 2 MiB, about 500 connections at once
/// were the most, and the next one crashed the function.
const THREAD_STACK: usize = 128 * 1024;

fn main() {
    if let Some(path) = std::env::var_os("HARK_SOCKET").filter(|p| !p.is_empty()) {
        let listener = match UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("hello: cannot listen on {}: {e}", path.to_string_lossy());
                std::process::exit(1);
            }
        };
        eprintln!("hello: listening on {}", path.to_string_lossy());
        for stream in listener.incoming().flatten() {
            on_a_thread(move || {
                stream
                    .try_clone()
                    .and_then(|reader| serve(BufReader::new(reader), stream))
            });
        }
        return;
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_owned());
    let listener = match TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap_or(8080))) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hello: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("hello: listening on 127.0.0.1:{port}");
    for stream in listener.incoming().flatten() {
        on_a_thread(move || {
            stream
                .set_nodelay(true)
                .and_then(|()| stream.try_clone())
                .and_then(|reader| serve(BufReader::new(reader), stream))
        });
    }
}

/// Serves one connection on a thread of its own. When no thread can be had (the
/// memory or process limit reached), that connection is closed and the others go on.
fn on_a_thread(serve: impl FnOnce() -> std::io::Result<()> + Send + 'static) {
    let started = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || {
            if let Err(e) = serve() {
                eprintln!("hello: connection error: {e}");
            }
        });
    if let Err(e) = started {
        eprintln!("hello: no thread for a new connection ({e}): closing it");
    }
}

/// Serves requests on one connection until the peer closes it.
fn serve(mut reader: impl BufRead, mut writer: impl Write) -> std::io::Result<()> {
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut close = false;
        let mut call_id = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "content-length" {
                    content_length = value.parse().unwrap_or(0);
                } else if name == "connection" && value.eq_ignore_ascii_case("close") {
                    close = true;
                } else if name == "x-call-id" {
                    call_id = value.to_owned();
                }
            }
        }
        if content_length > MAX_BODY {
            respond(&mut writer, "413 Payload Too Large", "body too large\n")?;
            return Ok(());
        }
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body)?;
        let name = String::from_utf8_lossy(&body);
        let name = name.trim();
        let greeting = if name.is_empty() {
            "Hello, world!\n".to_owned()
        } else {
            format!("Hello, {name}!\n")
        };
        // With HELLO_LOG set, a line per call naming its call id: the gateway files a
        // replica's lines under the call whose id they name.
        if std::env::var_os("HELLO_LOG").is_some() {
            eprintln!("hello: call {call_id} greets {name:?}");
        }
        respond(&mut writer, "200 OK", &greeting)?;
        if close {
            return Ok(());
        }
    }
}

fn respond(writer: &mut impl Write, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    writer.write_all(response.as_bytes())
}
