//! The pool browsers' only way out: proxy requests of Chromium come in (absolute-form HTTP
//! requests and `CONNECT` tunnels, on a loopback port given to every browser with
//! `--proxy-server`); they go out to public addresses, to the gateway's own
//! `/function/…` routes, or to what `browser.allow` names, and everything else gets a 403
//! page and a log line.
//!
//! Without it a page (or a function driving the browser) could read the gateway's control
//! plane (`/system`, `/ui`, `/webdriver`, `/metrics` at `127.0.0.1:PORT`), chromedriver's
//! own port, and every service on loopback and the private network behind the host. The
//! address rules are the SSRF guard's ([`crate::egress`]): a host name is resolved once,
//! every address it resolves to is checked, and the connection goes to exactly those
//! addresses, so a DNS answer that changes in between (rebinding) cannot switch it.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::egress::{special_range, EgressPolicy};
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

/// The path under which the gateway serves functions; the only one pages may reach on it.
const FUNCTION_PREFIX: &str = "/function/";

/// How long connecting to a destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most client connections the proxy serves at once (a few browsers need far fewer).
const MAX_CONNECTIONS: usize = 512;

/// Why the proxy could not start or an allow entry is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A `browser.allow` entry is neither a host, an address, a CIDR block nor a URL prefix.
    #[error("browser.allow entry {0:?} is neither a host name, an IP address, a CIDR block nor an http(s) URL prefix")]
    BadAllow(String),
    /// The loopback port could not be bound.
    #[error("cannot listen on loopback for the browsers' proxy: {0}")]
    Bind(#[source] std::io::Error),
}

/// What `browser.allow` opens beyond the public Internet: host names, addresses and CIDR
/// blocks (any port), and `http(s)://host[:port]/path` URL prefixes.
#[derive(Debug, Clone, Default)]
pub struct BrowserAllow {
    addresses: EgressPolicy,
    prefixes: Vec<url::Url>,
}

impl BrowserAllow {
    /// Parses the entries of `browser.allow` / `--browser-allow`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<BrowserAllow, ProxyError> {
        let mut addresses = Vec::new();
        let mut prefixes = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if entry.contains("://") {
                match crate::egress::parse_http(entry) {
                    Ok(url) => prefixes.push(url),
                    Err(_) => return Err(ProxyError::BadAllow(entry.to_owned())),
                }
            } else {
                addresses.push(entry.to_owned());
            }
        }
        let addresses = EgressPolicy::allowing(&addresses).map_err(|e| match e {
            crate::egress::EgressError::BadAllow(entry) => ProxyError::BadAllow(entry),
            other => ProxyError::BadAllow(other.to_string()),
        })?;
        Ok(BrowserAllow {
            addresses,
            prefixes,
        })
    }

    /// The entries, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        let mut all = self.addresses.allowed();
        all.extend(self.prefixes.iter().map(|u| u.to_string()));
        all
    }

    /// Whether a URL prefix opens `url` (plain HTTP, whose path the proxy sees).
    fn opens_url(&self, url: &url::Url) -> bool {
        self.prefixes.iter().any(|p| {
            p.scheme() == url.scheme()
                && p.host() == url.host()
                && p.port_or_known_default() == url.port_or_known_default()
                && url.path().starts_with(p.path())
        })
    }

    /// Whether an `https://` URL prefix names `host:port` (a tunnel: its path is not seen).
    fn opens_tunnel(&self, host: &str, port: u16) -> bool {
        self.prefixes.iter().any(|p| {
            p.scheme() == "https"
                && p.host_str()
                    .is_some_and(|h| h.trim_matches(['[', ']']).eq_ignore_ascii_case(host))
                && p.port_or_known_default() == Some(port)
        })
    }
}

/// Where a request may go.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// The gateway itself (only its `/function/…` routes).
    Gateway,
    /// These checked addresses.
    Remote(Vec<SocketAddr>),
}

/// Why a request was refused (shown on the 403 page and logged; holds no secret).
#[derive(Debug, PartialEq, Eq)]
struct Refusal(String);

/// Why a request goes nowhere: refused by the rules (403, a warning), or its host does not
/// resolve (502; Chromium's own background requests meet this on closed networks).
#[derive(Debug, PartialEq, Eq)]
enum Blocked {
    Refused(Refusal),
    Unresolved(String),
}

impl From<Refusal> for Blocked {
    fn from(refusal: Refusal) -> Self {
        Blocked::Refused(refusal)
    }
}

/// The rules: the gateway's own address and what is allowed beyond the public Internet.
#[derive(Debug, Clone)]
struct Rules {
    gateway: SocketAddr,
    allow: BrowserAllow,
}

impl Rules {
    /// Whether `addr` is the gateway's listener (or reaches it: loopback or unspecified on
    /// its port).
    fn is_gateway(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        addr.port() == self.gateway.port()
            && (ip.is_loopback() || ip.is_unspecified() || ip == canonical(self.gateway.ip()))
    }

    /// Resolves `host` once: an address literal as it is, a name through the resolver.
    async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Blocked> {
        let bare = host.trim_matches(['[', ']']);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| Blocked::Unresolved(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(Blocked::Unresolved("no address".into()));
        }
        Ok(addrs)
    }

    /// Where a request for `host:port` may go: `url` is the plain-HTTP request's URL, or
    /// `None` for a tunnel.
    async fn destination(
        &self,
        host: &str,
        port: u16,
        url: Option<&url::Url>,
    ) -> Result<Destination, Blocked> {
        let addrs = Self::resolve(host, port).await?;
        if addrs.iter().any(|a| self.is_gateway(*a)) {
            return match url {
                Some(url) if url.path().starts_with(FUNCTION_PREFIX) => Ok(Destination::Gateway),
                Some(url) => Err(Refusal(format!(
                    "{} on the gateway is not a function's page; only {FUNCTION_PREFIX}… is open to browsers",
                    url.path()
                ))
                .into()),
                None => Err(Refusal(
                    "tunnels to the gateway's port are refused; pages reach its /function/… routes over plain http".into(),
                )
                .into()),
            };
        }
        let bare = host.trim_matches(['[', ']']);
        let allowed = match url {
            Some(url) => self.allow.opens_url(url),
            None => self.allow.opens_tunnel(bare, port),
        } || self.allow.addresses.allows_host(bare)
            || addrs.iter().all(|a| self.allow.addresses.lists_ip(a.ip()));
        if !allowed {
            if let Some((addr, range)) = addrs
                .iter()
                .find_map(|a| special_range(a.ip()).map(|r| (a, r)))
            {
                return Err(Refusal(format!(
                    "{host} is {}, a {range} address; browsers reach only public addresses unless browser.allow names it",
                    addr.ip()
                ))
                .into());
            }
        }
        Ok(Destination::Remote(addrs))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The running proxy.
#[derive(Debug)]
pub struct BrowserProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BrowserProxy {
    /// Starts the proxy on a free loopback port for a gateway listening on `gateway`.
    pub async fn start(gateway: SocketAddr, allow: BrowserAllow) -> Result<Self, ProxyError> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(ProxyError::Bind)?;
        let addr = listener.local_addr().map_err(ProxyError::Bind)?;
        let rules = Arc::new(Rules { gateway, allow });
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    static FULL: Throttle = Throttle::new(REPEAT_INTERVAL);
                    crate::warn_repeated!(
                        FULL,
                        "browser proxy full",
                        "browser proxy at its connection limit; connection dropped"
                    );
                    continue;
                };
                let rules = rules.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let rules = rules.clone();
                        async move { Ok::<_, Infallible>(handle(&rules, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    drop(permit);
                });
            }
        });
        Ok(BrowserProxy { addr, task })
    }

    /// The proxy's loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for BrowserProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// The 403 page of a refused request.
fn refused(host: &str, why: &Refusal) -> Response<Body> {
    static REFUSED: Throttle = Throttle::new(REPEAT_INTERVAL);
    if why.0.starts_with("/favicon.ico ") {
        // Chromium asks every page's origin for its icon on its own: not the function's
        // doing, and refused without a warning (the demo would print one per booking).
        tracing::debug!(host = %host, reason = %why.0, "browser request refused");
    } else {
        let kind = format!("browser request refused host={host} reason={}", why.0);
        crate::warn_repeated!(REFUSED, &kind, host = %host, reason = %why.0, "browser request refused");
    }
    let page = format!(
        "<!doctype html><html><head><title>Refused by Hark</title></head><body><h1>Refused by Hark</h1><p>This browser may not reach this address: {}</p></body></html>",
        html_escape(&why.0)
    );
    let mut response = Response::new(full(page));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The answer for a request that goes nowhere.
fn blocked(host: &str, why: Blocked) -> Response<Body> {
    match why {
        Blocked::Refused(refusal) => refused(host, &refusal),
        Blocked::Unresolved(e) => bad_gateway(host, &format!("does not resolve: {e}")),
    }
}

fn bad_gateway(host: &str, what: &str) -> Response<Body> {
    tracing::debug!(host = %host, error = %what, "browser proxy could not reach a destination");
    let mut response = Response::new(full(format!("the browser proxy could not reach {host}")));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

async fn handle(rules: &Rules, request: Request<Incoming>) -> Response<Body> {
    if request.method() == Method::CONNECT {
        return tunnel(rules, request).await;
    }
    // Only absolute-form http requests are proxy requests (https comes as CONNECT).
    let url = match url::Url::parse(&request.uri().to_string()) {
        Ok(url) if url.scheme() == "http" && url.host_str().is_some() => url,
        _ => {
            let host = request.uri().host().unwrap_or("-").to_owned();
            return refused(
                &host,
                &Refusal("not a proxy request for an http:// URL".into()),
            );
        }
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    match rules.destination(&host, port, Some(&url)).await {
        Ok(Destination::Gateway) => {
            let gateway = SocketAddr::new(loopback_of(rules.gateway.ip()), rules.gateway.port());
            forward(request, &url, &host, &[gateway]).await
        }
        Ok(Destination::Remote(addrs)) => forward(request, &url, &host, &addrs).await,
        Err(why) => blocked(&host, why),
    }
}

/// The address the gateway answers on from this machine.
fn loopback_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

async fn connect(addrs: &[SocketAddr]) -> Result<tokio::net::TcpStream, String> {
    let mut last = "no address".to_owned();
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no connection within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(last)
}

/// Headers that belong to one hop (RFC 9110 §7.6.1) or to the proxy.
fn strip_hop_headers(headers: &mut HeaderMap) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| header::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Sends a plain-HTTP request on to one of `addrs` and its answer back.
async fn forward(
    request: Request<Incoming>,
    url: &url::Url,
    host: &str,
    addrs: &[SocketAddr],
) -> Response<Body> {
    let stream = match connect(addrs).await {
        Ok(stream) => stream,
        Err(e) => return bad_gateway(host, &e),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return bad_gateway(host, &e.to_string()),
        };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let (mut parts, body) = request.into_parts();
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    parts.uri = match target.parse() {
        Ok(uri) => uri,
        Err(_) => return refused(host, &Refusal("the URL's path is not valid".into())),
    };
    strip_hop_headers(&mut parts.headers);
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(answer) => {
            let (mut parts, body) = answer.into_parts();
            strip_hop_headers(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => bad_gateway(host, &e.to_string()),
    }
}

/// A `CONNECT host:port` tunnel (https, wss): checked, connected, then bytes both ways.
async fn tunnel(rules: &Rules, request: Request<Incoming>) -> Response<Body> {
    let Some(authority) = request.uri().authority().cloned() else {
        return refused("-", &Refusal("CONNECT without host:port".into()));
    };
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let addrs = match rules.destination(&host, port, None).await {
        Ok(Destination::Remote(addrs)) => addrs,
        Ok(Destination::Gateway) => {
            // `destination` never opens a tunnel to the gateway; refuse if it ever did.
            return refused(&host, &Refusal("tunnels to the gateway are refused".into()));
        }
        Err(why) => return blocked(&host, why),
    };
    let mut upstream = match connect(&addrs).await {
        Ok(stream) => stream,
        Err(e) => return bad_gateway(&host, &e),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "browser proxy tunnel not upgraded"),
        }
    });
    Response::new(full(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str]) -> Rules {
        Rules {
            gateway: "127.0.0.1:8080".parse().unwrap(),
            allow: BrowserAllow::parse(allow).unwrap(),
        }
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    async fn verdict(rules: &Rules, raw: &str) -> Result<Destination, Blocked> {
        let u = url(raw);
        let host = u.host_str().unwrap().to_owned();
        rules
            .destination(&host, u.port_or_known_default().unwrap(), Some(&u))
            .await
    }

    #[tokio::test]
    async fn the_gateway_is_open_only_at_function_routes() {
        let r = rules(&[]);
        for open in [
            "http://127.0.0.1:8080/function/hr-portal/",
            "http://localhost:8080/function/x?y=1",
            "http://[::1]:8080/function/x",
            "http://0.0.0.0:8080/function/x",
            "http://127.0.0.1:8080/system/../function/x",
        ] {
            assert_eq!(verdict(&r, open).await, Ok(Destination::Gateway), "{open}");
        }
        for closed in [
            "http://127.0.0.1:8080/system/functions",
            "http://127.0.0.1:8080/ui/",
            "http://127.0.0.1:8080/webdriver/session",
            "http://127.0.0.1:8080/metrics",
            "http://127.0.0.1:8080/healthz",
            "http://127.0.0.1:8080/function",
            "http://127.0.0.1:8080/function/../system/functions",
            "http://127.0.0.1:8080/function/%2e%2e/system/functions",
            "http://127.1:8080/system/functions",
            "http://[::ffff:127.0.0.1]:8080/ui/",
        ] {
            assert!(verdict(&r, closed).await.is_err(), "{closed} passed");
        }
        // No tunnel to the gateway's port, even with loopback allowed.
        let open = rules(&["127.0.0.0/8", "https://127.0.0.1:8080/"]);
        assert!(open.destination("127.0.0.1", 8080, None).await.is_err());
        assert!(open.destination("localhost", 8080, None).await.is_err());
    }

    #[tokio::test]
    async fn loopback_and_private_addresses_are_refused_unless_allowed() {
        let r = rules(&[]);
        for closed in [
            "http://127.0.0.1:9515/status",
            "http://localhost:3000/",
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00::1]/",
            "http://2130706433:9000/",
        ] {
            let e = verdict(&r, closed).await.expect_err(closed);
            assert!(
                matches!(&e, Blocked::Refused(Refusal(why)) if why.contains("browser.allow")),
                "{e:?}"
            );
        }
        assert!(r.destination("127.0.0.1", 443, None).await.is_err());
        assert!(r.destination("10.1.1.1", 443, None).await.is_err());
        // A public address passes.
        assert_eq!(
            r.destination("1.1.1.1", 443, None).await,
            Ok(Destination::Remote(vec!["1.1.1.1:443".parse().unwrap()]))
        );

        let open = rules(&[
            "10.0.0.0/8",
            "http://127.0.0.1:3000/app/",
            "https://127.0.0.1:3443",
        ]);
        assert!(verdict(&open, "http://10.2.3.4/").await.is_ok());
        assert!(verdict(&open, "http://127.0.0.1:3000/app/page")
            .await
            .is_ok());
        assert!(verdict(&open, "http://127.0.0.1:3000/other").await.is_err());
        assert!(verdict(&open, "http://127.0.0.1:3001/app/").await.is_err());
        assert!(open.destination("127.0.0.1", 3443, None).await.is_ok());
        assert!(open.destination("127.0.0.1", 3444, None).await.is_err());
        assert!(verdict(&open, "http://192.168.0.1/").await.is_err());
    }

    #[test]
    fn allow_entries_are_checked() {
        assert!(BrowserAllow::parse(&["intranet.example", "10.0.0.0/8", "::1"]).is_ok());
        assert!(matches!(
            BrowserAllow::parse(&["ftp://x/"]),
            Err(ProxyError::BadAllow(_))
        ));
        assert!(matches!(
            BrowserAllow::parse(&["not a host"]),
            Err(ProxyError::BadAllow(_))
        ));
    }
}
