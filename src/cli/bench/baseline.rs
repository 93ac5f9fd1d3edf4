//! `hark bench-baseline echo|spawn` (hidden): the bare servers `hark bench` measures the
//! gateway against, each run as its own process. A request comes in on `--port`
//! (default `$PORT`), or on the Unix socket `--socket` (default `$HARK_SOCKET`) when one
//! is named — so the echo server also serves as an HTTP-mode function on either — and:
//!
//! - `echo`: its body goes back with its content type — a bare axum server, the ceiling
//!   any gateway in front of it is measured against;
//! - `spawn`: its body goes to a new `/bin/cat` on stdin and cat's stdout goes back — the
//!   bare spawn-per-request server that fork mode is measured against.
//!
//! Both read the body whole with axum's default limit, as a small server of a user's would.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// Which server.
    #[arg(value_enum)]
    pub kind: BaselineKind,
    /// Port to listen on (127.0.0.1).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Unix socket to listen on instead of the port.
    #[arg(long, env = crate::provider::process::ENV_SOCKET)]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineKind {
    /// Answers each request with its body.
    Echo,
    /// Runs `cat` per request with the body on stdin; answers with its stdout.
    Spawn,
}

pub async fn run(args: BaselineArgs) -> anyhow::Result<ExitCode> {
    let app = match args.kind {
        BaselineKind::Echo => axum::Router::new().fallback(echo),
        BaselineKind::Spawn => {
            let cat = which::which("cat").context("cat is not on $PATH")?;
            axum::Router::new()
                .fallback(spawn)
                .with_state(Arc::new(cat))
        }
    };
    match args.socket.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => {
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            axum::serve(listener, app).await?;
        }
        None => {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
                .await
                .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
            axum::serve(listener, app).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn echo(headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn spawn(State(cat): State<Arc<PathBuf>>, body: Bytes) -> Response {
    match run_cat(&cat, &body).await {
        Ok(out) => out.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn run_cat(cat: &std::path::Path, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = tokio::process::Command::new(cat)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("cat has no pipes"));
    };
    let feed = async move {
        let written = stdin.write_all(body).await;
        drop(stdin);
        written
    };
    let mut out = Vec::new();
    let (written, read, status) = tokio::join!(feed, stdout.read_to_end(&mut out), child.wait());
    written?;
    read?;
    let status = status?;
    if !status.success() {
        return Err(std::io::Error::other(format!("cat exited with {status}")));
    }
    Ok(out)
}
