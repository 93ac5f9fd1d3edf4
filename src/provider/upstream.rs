//! The HTTP client the providers call replicas with: a call ([`Invocation`]) and a
//! replica's address come in; the replica's answer goes out, with hop-by-hop headers
//! dropped both ways. Keep-alive connections are pooled per replica.
//!
//! hyper's pooled client rather than reqwest: a call to a replica needs no URL parsing,
//! proxy matching, redirects or TLS, and its headers and body move into the request
//! instead of being copied header by header. On the gateway's hot path that was
//! measurable (`BENCHMARKS.md`).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

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

/// Pooled keep-alive connections to replicas.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    /// A client keeping up to `idle_per_host` idle connections to each replica for `idle`.
    pub fn new(idle: Duration, idle_per_host: usize) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Upstream { client }
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
        let path_and_query = match &call.query {
            Some(q) => format!("{}?{q}", call.path),
            None => call.path,
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
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
            let response = self.client.request(request).await.map_err(|e| {
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
