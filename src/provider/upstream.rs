//! The HTTP client the providers call replicas with: a call ([`Invocation`]) and a
//! replica's address (a TCP `host:port` or a Unix socket, [`Endpoint`]) come in; the
//! replica's answer goes out, with hop-by-hop headers dropped both ways. Keep-alive
//! connections are pooled per replica, over either transport.
//!
//! hyper's pooled client rather than reqwest: a call to a replica needs no URL parsing,
//! proxy matching, redirects or TLS, and its headers and body move into the request
//! instead of being copied header by header. On the gateway's hot path that was
//! measurable (`BENCHMARKS.md`).

use std::future::Future;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::Invocation;

/// Headers that describe one connection, not the call: never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// A replica's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// Without hop-by-hop headers and `Content-Length` (the gateway sets its own).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a call to a replica failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No answer within the time allowed.
    Timeout,
    /// The request never reached the replica (refused, reset while connecting): it is
    /// safe to send it elsewhere.
    Connect(String),
    /// The replica was reached but the exchange failed.
    Failed(String),
    /// The answer's body is larger than the function's `hark.max_response` (the
    /// limit, in bytes); it was not read further.
    TooLarge(u64),
}

/// Where a replica listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` over TCP.
    Tcp(String),
    /// A Unix socket. `authority` is the path hex-encoded: the key of its connection
    /// pool, from which [`UnixConnector`] reads the path back.
    Unix { path: PathBuf, authority: String },
}

impl Endpoint {
    /// The loopback TCP port `port`.
    pub fn loopback(port: u16) -> Endpoint {
        Endpoint::Tcp(format!("127.0.0.1:{port}"))
    }

    /// The Unix socket at `path`.
    pub fn unix(path: &Path) -> Endpoint {
        use std::fmt::Write;
        let mut authority = String::with_capacity(path.as_os_str().len() * 2);
        for byte in path.as_os_str().as_bytes() {
            let _ = write!(authority, "{byte:02x}");
        }
        Endpoint::Unix {
            path: path.to_owned(),
            authority,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(authority) => write!(f, "tcp {authority}"),
            Endpoint::Unix { path, .. } => write!(f, "unix {}", path.display()),
        }
    }
}

/// Connects to the Unix socket whose path is hex-encoded in a URI's host
/// ([`Endpoint::unix`]).
#[derive(Clone, Copy, Debug, Default)]
struct UnixConnector;

impl tower::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let path = uri.host().and_then(unhex).map(PathBuf::from);
        Box::pin(async move {
            let path = path.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the replica's address is not a hex-encoded socket path",
                )
            })?;
            let stream = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("unix socket {}: {e}", path.display()))
            })?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The bytes of lowercase hex `text`, as a path.
fn unhex(text: &str) -> Option<std::ffi::OsString> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let value = |d: u8| (d as char).to_digit(16).map(|v| v as u8);
    digits
        .chunks(2)
        .map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .map(std::ffi::OsString::from_vec)
}

/// Pooled keep-alive connections to replicas.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    /// For replicas on Unix sockets; it sets `Host: localhost` itself.
    unix: Client<UnixConnector, Full<Bytes>>,
}

impl Upstream {
    /// A client keeping up to `idle_per_host` idle connections to each replica for `idle`.
    pub fn new(idle: Duration, idle_per_host: usize) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(idle_per_host)
            .pool_timer(TokioTimer::new());
        let client = builder.build(connector);
        let unix = builder.set_host(false).build(UnixConnector);
        Upstream { client, unix }
    }

    /// Sends `call` to the replica at `authority` (`host:port`) and reads its answer,
    /// all within `limit`, and at most `max_body` bytes of it (a longer answer is
    /// [`UpstreamError::TooLarge`], and its connection is dropped). `extra` headers are
    /// set on top of the call's own.
    pub async fn send(
        &self,
        authority: &str,
        call: Invocation,
        extra: &[(header::HeaderName, &str)],
        limit: Duration,
        max_body: u64,
    ) -> Result<Answer, UpstreamError> {
        self.send_to(
            &Endpoint::Tcp(authority.to_owned()),
            call,
            extra,
            limit,
            max_body,
        )
        .await
    }

    /// [`Upstream::send`] to a replica at `endpoint`, over TCP or a Unix socket.
    pub async fn send_to(
        &self,
        endpoint: &Endpoint,
        call: Invocation,
        extra: &[(header::HeaderName, &str)],
        limit: Duration,
        max_body: u64,
    ) -> Result<Answer, UpstreamError> {
        let authority = match endpoint {
            Endpoint::Tcp(authority) => authority,
            Endpoint::Unix { authority, .. } => authority,
        };
        let path_and_query = match &call.query {
            Some(q) => format!("{}?{q}", call.path),
            None => call.path,
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| UpstreamError::Failed(format!("cannot address the replica: {e}")))?;
        let mut headers = call.headers;
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
        // The body is sent whole; hyper writes its length.
        headers.remove(header::CONTENT_LENGTH);
        for (name, value) in extra {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), value);
            }
        }
        let mut request = http::Request::new(Full::new(call.body));
        *request.method_mut() = call.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let exchange = async {
            let sent = match endpoint {
                Endpoint::Tcp(_) => self.client.request(request).await,
                Endpoint::Unix { .. } => {
                    request
                        .headers_mut()
                        .insert(header::HOST, HeaderValue::from_static("localhost"));
                    self.unix.request(request).await
                }
            };
            let response = sent.map_err(|e| {
                if e.is_connect() {
                    UpstreamError::Connect(describe(&e))
                } else {
                    UpstreamError::Failed(describe(&e))
                }
            })?;
            let (parts, body) = response.into_parts();
            if hyper::body::Body::size_hint(&body).lower() > max_body {
                return Err(UpstreamError::TooLarge(max_body));
            }
            let max = usize::try_from(max_body).unwrap_or(usize::MAX);
            let body = http_body_util::Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        UpstreamError::TooLarge(max_body)
                    } else {
                        UpstreamError::Failed(format!("reading the answer: {e}"))
                    }
                })?
                .to_bytes();
            Ok::<_, UpstreamError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        let mut headers = parts.headers;
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
        headers.remove(header::CONTENT_LENGTH);
        Ok(Answer {
            status: parts.status,
            headers,
            body,
        })
    }
}

/// The error and its causes on one line ("client error (Connect): tcp connect error:
/// Connection refused (os error 111)").
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    /// A replica that answers each request with what it received, as JSON.
    async fn mirror() -> (String, tokio::task::JoinHandle<()>) {
        use axum::routing::any;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().fallback(any(
            |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
                let seen: Vec<String> = headers
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
                    .collect();
                (
                    [("connection", "keep-alive"), ("x-answer", "yes")],
                    serde_json::json!({
                        "method": method.as_str(),
                        "uri": uri.to_string(),
                        "headers": seen,
                        "body": String::from_utf8_lossy(&body),
                    })
                    .to_string(),
                )
            },
        ));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (addr, task)
    }

    fn call(query: Option<&str>) -> Invocation {
        let mut headers = HeaderMap::new();
        headers.insert("x-custom", HeaderValue::from_static("kept"));
        headers.insert("connection", HeaderValue::from_static("close"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        Invocation {
            call_id: "c1".into(),
            method: Method::PUT,
            path: "/a/b".into(),
            query: query.map(str::to_owned),
            headers,
            body: Bytes::from_static(b"hello"),
        }
    }

    #[tokio::test]
    async fn a_call_reaches_the_replica_whole_and_its_answer_comes_back() {
        let (addr, _server) = mirror().await;
        let upstream = Upstream::new(Duration::from_secs(5), 4);
        let extra = [(header::HeaderName::from_static("x-call-id"), "c1")];
        let answer = upstream
            .send(
                &addr,
                call(Some("x=1&y=2")),
                &extra,
                Duration::from_secs(5),
                1 << 20,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["x-answer"], "yes");
        assert!(answer.headers.get("connection").is_none());
        assert!(answer.headers.get("content-length").is_none());
        let seen: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(seen["method"], "PUT");
        assert_eq!(seen["uri"], "/a/b?x=1&y=2");
        assert_eq!(seen["body"], "hello");
        let headers: Vec<&str> = seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert!(headers.contains(&"x-custom=kept"), "{headers:?}");
        assert!(headers.contains(&"x-call-id=c1"), "{headers:?}");
        // The length is the body's, not the stale header's; the connection stays open.
        assert!(headers.contains(&"content-length=5"), "{headers:?}");
        assert!(!headers.contains(&"connection=close"), "{headers:?}");
    }

    #[tokio::test]
    async fn a_call_reaches_a_replica_on_a_unix_socket_over_one_kept_connection() {
        use axum::routing::any;
        use axum::serve::ListenerExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sock");
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        let listener = tokio::net::UnixListener::bind(&path)
            .unwrap()
            .tap_io(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            });
        let app = axum::Router::new().fallback(any(|headers: HeaderMap, body: Bytes| async move {
            let host = headers[header::HOST].to_str().unwrap_or("?").to_owned();
            format!("{host}:{}", String::from_utf8_lossy(&body))
        }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let upstream = Upstream::new(Duration::from_secs(5), 4);
        let endpoint = Endpoint::unix(&path);
        for _ in 0..3 {
            let answer = upstream
                .send_to(&endpoint, call(None), &[], Duration::from_secs(5), 1 << 20)
                .await
                .unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.body, "localhost:hello");
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "the connection is reused"
        );

        let gone = Endpoint::unix(&dir.path().join("gone.sock"));
        let refused = upstream
            .send_to(&gone, call(None), &[], Duration::from_secs(5), 1 << 20)
            .await;
        assert!(
            matches!(&refused, Err(UpstreamError::Connect(reason)) if reason.contains("gone.sock")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_socket_path_survives_its_hex_authority() {
        let path = Path::new("/tmp/d\u{e9}j\u{e0}/0.sock");
        let Endpoint::Unix { authority, .. } = Endpoint::unix(path) else {
            unreachable!()
        };
        assert!(authority.parse::<http::uri::Authority>().is_ok());
        assert_eq!(unhex(&authority).unwrap(), path.as_os_str());
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_whatever_its_length_says() {
        use axum::routing::any;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new()
            .route("/sized", any(|| async { vec![b'x'; 4096] }))
            .route(
                "/chunked",
                any(|| async {
                    let chunks =
                        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024])));
                    axum::body::Body::from_stream(futures::stream::iter(chunks))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let upstream = Upstream::new(Duration::from_secs(5), 4);
        for path in ["/sized", "/chunked"] {
            let mut c = call(None);
            c.path = path.into();
            let refused = upstream
                .send(&addr, c.clone(), &[], Duration::from_secs(5), 1000)
                .await;
            assert!(
                matches!(refused, Err(UpstreamError::TooLarge(1000))),
                "{path}: {refused:?}"
            );
            let fits = upstream
                .send(&addr, c, &[], Duration::from_secs(5), 8192)
                .await
                .unwrap();
            assert!(fits.body.len() >= 4096, "{path}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_slow_replica_are_told_apart() {
        let upstream = Upstream::new(Duration::from_secs(5), 4);
        // A port nobody listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = upstream
            .send(
                &format!("127.0.0.1:{port}"),
                call(None),
                &[],
                Duration::from_secs(5),
                1 << 20,
            )
            .await;
        assert!(
            matches!(&refused, Err(UpstreamError::Connect(reason)) if reason.contains("refused")),
            "{refused:?}"
        );

        // A listener that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let _held = tokio::spawn(async move {
            let _conn = silent.accept().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let slow = upstream
            .send(&addr, call(None), &[], Duration::from_millis(200), 1 << 20)
            .await;
        assert!(matches!(slow, Err(UpstreamError::Timeout)), "{slow:?}");
    }
}
