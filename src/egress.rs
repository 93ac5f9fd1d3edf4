//! Requests to URLs that a request supplied (an async call's `X-Callback-Url`, Slack's
//! `response_url`): a URL comes in; a verdict, and an HTTP client whose connections can
//! only reach addresses that passed it, go out. This is Hark's guard against server-side
//! request forgery: without it, anyone allowed to queue a call could make the gateway POST
//! to `http://169.254.169.254/` (cloud metadata), `http://127.0.0.1:8080/system/...` or any
//! host of the private network behind it.
//!
//! Refused unless the operator allows them (`hark up --egress-allow`, `HARK_EGRESS_ALLOW`):
//! private (RFC 1918), loopback, link-local, CGNAT (100.64/10), unique-local (fc00::/7),
//! multicast, unspecified, broadcast, reserved and documentation addresses, in IPv4 and
//! IPv6, including IPv4 addresses embedded in IPv6 (v4-mapped `::ffff:a.b.c.d`,
//! v4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`). Decimal, octal and hex IPv4
//! spellings (`http://2130706433/`, `http://0x7f.1/`) are normalised by the URL parser
//! before the check. A host name is checked on the addresses it resolves to, and the
//! connection is made to exactly those addresses (the client's resolver is the check), so
//! a DNS answer that changes between the check and the connection (DNS rebinding) cannot
//! switch it to a forbidden one. The client follows no redirects and uses no proxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

/// Environment variable of `hark up --egress-allow`.
pub const ENV_EGRESS_ALLOW: &str = "HARK_EGRESS_ALLOW";

/// What a gateway warns at start when `--egress-allow` names addresses.
pub const ALLOWED_WARNING: &str = "callback URLs may reach these special addresses";

/// Why a URL may not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("{0:?} is not an absolute http(s) URL")]
    NotHttp(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("host {host} is {address}, a {range} address; callbacks to it are refused unless allowed with --egress-allow / {ENV_EGRESS_ALLOW}")]
    Forbidden {
        host: String,
        address: IpAddr,
        range: &'static str,
    },
    #[error("host {host} does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
    #[error("{0:?} is neither an IP address, a CIDR block nor a host name")]
    BadAllow(String),
}

/// Which special addresses are allowed anyway; everything else that is not a public
/// unicast address is refused.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

impl EgressPolicy {
    /// The policy that refuses every special address (the default).
    pub fn strict() -> EgressPolicy {
        EgressPolicy::default()
    }

    /// A policy allowing `entries`: CIDR blocks (`10.0.0.0/8`, `fd00::/8`), single
    /// addresses (`127.0.0.1`, `::1`) or host names (`callbacks.internal`, matched exactly,
    /// any case; whatever they resolve to is allowed).
    pub fn allowing<S: AsRef<str>>(entries: &[S]) -> Result<EgressPolicy, EgressError> {
        let mut policy = EgressPolicy::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.nets.push(net.trunc());
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if is_host_name(entry) {
                policy
                    .hosts
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err(EgressError::BadAllow(entry.to_owned()));
            }
        }
        Ok(policy)
    }

    /// Whether anything beyond the strict default is allowed (for the start-up log).
    pub fn allowed(&self) -> Vec<String> {
        let nets = self.nets.iter().map(ToString::to_string);
        nets.chain(self.hosts.iter().cloned()).collect()
    }

    /// Whether the host name `host` is allowed by name.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Whether an allowed block holds `ip` (or the IPv4 address it embeds).
    pub fn lists_ip(&self, ip: IpAddr) -> bool {
        let embedded = embedded_v4(ip).map(IpAddr::V4);
        self.nets
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)))
    }

    /// Checks one address `host` resolved (or was spelled as).
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), EgressError> {
        let Some(range) = special_range(ip) else {
            return Ok(());
        };
        if self.lists_ip(ip) {
            Ok(())
        } else {
            Err(EgressError::Forbidden {
                host: host.to_owned(),
                address: ip,
                range,
            })
        }
    }

    /// Checks a URL's scheme and host: an address literal at once, a host name on every
    /// address it resolves to now. The connection is checked again when it is made (see
    /// [`EgressPolicy::client`]), since the DNS answer may change.
    pub async fn check_url(&self, raw: &str) -> Result<url::Url, EgressError> {
        let url = parse_http(raw)?;
        match url.host() {
            None => return Err(EgressError::NoHost(raw.to_owned())),
            Some(url::Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip))?,
            Some(url::Host::Domain(name)) => {
                self.resolve(name).await?;
            }
        }
        Ok(url)
    }

    /// Resolves `host` and checks every address; any forbidden one refuses the name.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, EgressError> {
        let unresolved = |reason: String| EgressError::Unresolved {
            host: host.to_owned(),
            reason,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| unresolved(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(unresolved("no address".into()));
        }
        if !self.allows_host(host) {
            for addr in &addrs {
                self.check_ip(host, addr.ip())?;
            }
        }
        Ok(addrs)
    }

    /// An HTTP client for URLs requests supply: every host name it connects to is resolved
    /// and checked by this policy (the connection goes to the checked addresses only), it
    /// follows no redirects and uses no proxy. Address literals do not go through a
    /// resolver: check the URL with [`EgressPolicy::check_url`] before each request.
    pub fn client(self: &Arc<Self>, timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(GuardedResolver(self.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .user_agent(concat!("hark/", env!("CARGO_PKG_VERSION")))
            .build()
            // Building fails only when the TLS backend cannot start; the default client
            // would lose the guard, so a client that cannot connect anywhere is used.
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the guarded HTTP client could not be built; outbound callbacks will fail");
                reqwest::Client::builder()
                    .https_only(true)
                    .dns_resolver(GuardedResolver(Arc::new(EgressPolicy::strict())))
                    .build()
                    .unwrap_or_default()
            })
    }
}

/// The resolver of [`EgressPolicy::client`]: the addresses it returns are the only ones
/// the connection tries, and each passed the policy.
struct GuardedResolver(Arc<EgressPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match policy.resolve(&host).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(e) => {
                    static REFUSED: Throttle = Throttle::new(REPEAT_INTERVAL);
                    let kind = format!("outbound connection refused host={host}");
                    crate::warn_repeated!(REFUSED, &kind, host, error = %e, "outbound connection refused");
                    Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        })
    }
}

/// Parses an absolute http(s) URL.
pub fn parse_http(raw: &str) -> Result<url::Url, EgressError> {
    let url = url::Url::parse(raw).map_err(|_| EgressError::NotHttp(raw.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EgressError::NotHttp(raw.to_owned()));
    }
    if url.host().is_none() {
        return Err(EgressError::NoHost(raw.to_owned()));
    }
    Ok(url)
}

fn is_host_name(s: &str) -> bool {
    let s = s.trim_end_matches('.');
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // All-numeric "names" are address spellings, not names.
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The IPv4 address an IPv6 address carries: v4-mapped (`::ffff:0:0/96`), v4-compatible
/// (`::/96`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`).
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let tail =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(tail(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) > (0, 1) => Some(tail(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(tail(hi, lo)),
        [0x2002, hi, lo, ..] => Some(tail(hi, lo)),
        _ => None,
    }
}

/// The kind of special address `ip` is, or `None` for a public unicast address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, ..) => "\"this network\" (0.0.0.0/8)",
        (10, ..) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "CGNAT (100.64.0.0/10)",
        (127, ..) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(IpAddr::V6(ip)) {
        // An IPv6 address carrying an IPv4 one is as special as that one.
        return special_v4(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        0x0100 if s[1..4] == [0, 0, 0] => "discard (100::/64)",
        0x2001 if s[1] == 0xdb8 => "documentation",
        0x2001 if s[1] == 0 => "Teredo (2001::/32)",
        0x2001 if s[1] < 0x200 => "IETF protocol assignment (2001::/23)",
        x if x & 0xfe00 == 0xfc00 => "unique-local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ if s[0] == 0 => "reserved (::/8)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> EgressPolicy {
        EgressPolicy::strict()
    }

    async fn refused(policy: &EgressPolicy, url: &str) -> EgressError {
        policy
            .check_url(url)
            .await
            .expect_err(&format!("{url} passed"))
    }

    #[tokio::test]
    async fn special_addresses_are_refused_in_every_spelling() {
        let policy = strict();
        for url in [
            "http://127.0.0.1/",
            "http://127.1.2.3:8080/x",
            "http://localhost/",
            "http://2130706433/",   // decimal 127.0.0.1
            "http://0x7f.0.0.1/",   // hex
            "http://0177.0.0.1/",   // octal
            "http://0x7f000001/",   // one hex number
            "http://017700000001/", // one octal number
            "http://127.1/",        // short form
            "http://0/",            // 0.0.0.0
            "http://[::]/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::10.0.0.1]/",
            "http://[2002:c0a8:0101::1]/", // 6to4 of 192.168.1.1
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://100.127.255.254/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://240.0.0.1/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[fc00::1]/",
            "http://[ff02::1]/",
            "https://127.0.0.1./",
        ] {
            let e = refused(&policy, url).await;
            assert!(matches!(e, EgressError::Forbidden { .. }), "{url}: {e}");
            assert!(e.to_string().contains("--egress-allow"), "{e}");
        }
    }

    #[tokio::test]
    async fn other_schemes_and_garbage_are_refused() {
        let policy = strict();
        for url in [
            "file:///etc/passwd",
            "ftp://1.1.1.1/",
            "gopher://x/",
            "not a url",
            "http://",
        ] {
            let e = refused(&policy, url).await;
            assert!(
                matches!(e, EgressError::NotHttp(_) | EgressError::NoHost(_)),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = strict();
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "2a00:1450:4001::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(policy.check_ip("h", ip), Ok(()), "{ip}");
        }
    }

    #[tokio::test]
    async fn the_allow_list_opens_exactly_what_it_names() {
        let policy = EgressPolicy::allowing(&["127.0.0.0/8", "fd00::/8", "10.9.9.9"]).unwrap();
        for url in [
            "http://127.0.0.1:9/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd12::1]/",
            "http://10.9.9.9/",
        ] {
            policy.check_url(url).await.unwrap();
        }
        for url in [
            "http://10.9.9.8/",
            "http://[::1]/",
            "http://169.254.169.254/",
        ] {
            refused(&policy, url).await;
        }
        assert!(matches!(
            EgressPolicy::allowing(&["not a/host"]),
            Err(EgressError::BadAllow(_))
        ));
        let by_name = EgressPolicy::allowing(&["LocalHost"]).unwrap();
        by_name.check_url("http://localhost:1/").await.unwrap();
        // An allowed name does not open the addresses it resolves to for other names.
        refused(&by_name, "http://127.0.0.1/").await;
    }

    #[tokio::test]
    async fn the_client_refuses_a_name_that_resolves_to_loopback_at_connection_time() {
        // A server on loopback that would answer: the guarded client never reaches it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Arc::new(strict()).client(Duration::from_secs(5));
        let e = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect_err("reached loopback through a name");
        let chain = format!("{:?}", e);
        assert!(chain.contains("Forbidden"), "{chain}");
        // Allowed by name, the same request connects.
        let open = Arc::new(EgressPolicy::allowing(&["localhost"]).unwrap());
        let accept = tokio::spawn(async move { listener.accept().await.is_ok() });
        let _ = open
            .client(Duration::from_secs(2))
            .get(format!("http://localhost:{port}/"))
            .send()
            .await;
        assert!(accept.await.unwrap());
    }
}
