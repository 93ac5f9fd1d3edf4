//! Trigger rules in adnanh/webhook's shape: a rule tree (`and` / `or` / `not` over `match`)
//! loaded from YAML or JSON in, a yes/no verdict for one request ([`RuleRequest`]) out.
//!
//! Shape and semantics follow <https://github.com/adnanh/webhook/blob/master/docs/Hook-Rules.md>:
//!
//! ```yaml
//! and:
//!   - match:
//!       type: payload-hmac-sha256
//!       secret: mysecret
//!       parameter: {source: header, name: X-Hub-Signature-256}
//!   - match:
//!       type: value
//!       value: refs/heads/main
//!       parameter: {source: payload, name: ref}
//!   - not:
//!       match: {type: regex, regex: "^bot-", parameter: {source: url, name: user}}
//!   - match: {type: ip-whitelist, ip-range: "192.0.2.0/24 2001:db8::/32"}
//! ```
//!
//! Differences from adnanh, each on the side of refusing: regexes and IP ranges are checked
//! when the rules are loaded, not on the first request; empty `and`/`or` groups, empty
//! secrets, unknown fields and header names that cannot exist are load errors; a wrong or
//! malformed signature is simply `false` (so `or` over two secrets works). A parameter that is
//! absent (no such header, query key or payload path, or a JSON `null`) makes its `match` false,
//! never an error.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;
use regex::Regex;
use serde::de::Deserializer;
use serde::Deserialize;
use serde_json::Value;

use super::hmac::{verify_signature, Algorithm};

/// A rule could not be loaded, or could not be evaluated for lack of input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A `match` lacks a field its `type` needs.
    #[error("match type {kind} needs `{field}`")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },
    /// A `match` has a field its `type` does not use (likely a mistake in the rule).
    #[error("match type {kind} does not use `{field}`")]
    UnusedField {
        kind: &'static str,
        field: &'static str,
    },
    /// The `regex` does not compile.
    #[error("invalid regex: {0}")]
    Regex(#[source] regex::Error),
    /// An `ip-range` entry is neither an IP address nor a CIDR range.
    #[error("invalid ip-range entry {entry:?}: {problem}")]
    IpRange { entry: String, problem: String },
    /// `ip-range` has no entry.
    #[error("ip-range is empty")]
    EmptyIpRange,
    /// A `payload-hmac-*` secret is empty.
    #[error("payload-hmac secret is empty")]
    EmptySecret,
    /// A header parameter names a header that cannot exist.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A rule map has none, or more than one, of `and`, `or`, `not`, `match`.
    #[error("a rule needs exactly one of `and`, `or`, `not`, `match`")]
    Shape,
    /// An `and` or `or` list is empty (it would be always true, or always false).
    #[error("`{0}` needs at least one rule")]
    EmptyGroup(&'static str),
    /// A parameter has an empty name.
    #[error("parameter name is empty")]
    EmptyParameterName,
    /// An `ip-whitelist` rule was evaluated without the request's remote address: a wiring
    /// mistake in the caller, reported rather than guessed at.
    #[error("ip-whitelist rule needs the remote address, and the request has none")]
    NoRemoteAddr,
}

/// A trigger rule tree. Deserialises from a map with exactly one of the keys `and`, `or`,
/// `not`, `match` (adnanh's shape), in JSON and in YAML alike: YAML libraries read a plain
/// externally tagged enum only from `!tag` syntax, so the map is read explicitly.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RuleSpec")]
pub enum Rule {
    /// True when every rule is true. Loading refuses an empty list.
    And(Vec<Rule>),
    /// True when any rule is true. Loading refuses an empty list.
    Or(Vec<Rule>),
    /// True when the rule is false.
    Not(Box<Rule>),
    /// One test on the request.
    Match(Box<MatchRule>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(default)]
    and: Option<Vec<Rule>>,
    #[serde(default)]
    or: Option<Vec<Rule>>,
    #[serde(default)]
    not: Option<Box<Rule>>,
    #[serde(default, rename = "match")]
    match_: Option<Box<MatchRule>>,
}

impl TryFrom<RuleSpec> for Rule {
    type Error = RuleError;

    fn try_from(spec: RuleSpec) -> Result<Self, RuleError> {
        let rule = match (spec.and, spec.or, spec.not, spec.match_) {
            (Some(rules), None, None, None) if rules.is_empty() => {
                return Err(RuleError::EmptyGroup("and"))
            }
            (None, Some(rules), None, None) if rules.is_empty() => {
                return Err(RuleError::EmptyGroup("or"))
            }
            (Some(rules), None, None, None) => Rule::And(rules),
            (None, Some(rules), None, None) => Rule::Or(rules),
            (None, None, Some(rule), None) => Rule::Not(rule),
            (None, None, None, Some(m)) => Rule::Match(m),
            _ => return Err(RuleError::Shape),
        };
        Ok(rule)
    }
}

/// What a rule is evaluated against. The gateway fills it from the HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct RuleRequest<'a> {
    pub headers: &'a HeaderMap,
    /// Decoded query pairs, in order; the first pair with a name wins.
    pub query: &'a [(String, String)],
    /// The raw body, as signed.
    pub body: &'a [u8],
    /// The body parsed as JSON, when it is JSON (see [`parse_payload`]).
    pub payload: Option<&'a Value>,
    /// The peer address (IPv4-mapped IPv6 addresses are treated as IPv4).
    pub remote_ip: Option<IpAddr>,
}

/// The body as JSON, or `None` when it is not JSON.
pub fn parse_payload(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

impl Rule {
    /// Whether the request satisfies the rule. `Err` only when the request lacks an input the
    /// rule needs and that the caller should always supply ([`RuleError::NoRemoteAddr`]).
    pub fn evaluate(&self, req: &RuleRequest<'_>) -> Result<bool, RuleError> {
        match self {
            // Empty groups are refused at load; built by hand, they fail closed.
            Rule::And(rules) if rules.is_empty() => Ok(false),
            Rule::Or(rules) if rules.is_empty() => Ok(false),
            Rule::And(rules) => {
                for rule in rules {
                    if !rule.evaluate(req)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Rule::Or(rules) => {
                for rule in rules {
                    if rule.evaluate(req)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Rule::Not(rule) => Ok(!rule.evaluate(req)?),
            Rule::Match(m) => m.evaluate(req),
        }
    }
}

/// Where a parameter is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A request header (case-insensitive name; the first value).
    Header,
    /// A query-string parameter (`url` in adnanh; `query` is accepted too).
    #[serde(alias = "query")]
    Url,
    /// A dotted path into the JSON body: `head_commit.author.name`, `commits.0.id`.
    Payload,
}

/// A value taken from the request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ParameterSpec")]
pub struct Parameter {
    pub source: Source,
    pub name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterSpec {
    source: Source,
    name: String,
}

impl TryFrom<ParameterSpec> for Parameter {
    type Error = RuleError;

    fn try_from(spec: ParameterSpec) -> Result<Self, RuleError> {
        Parameter::new(spec.source, spec.name)
    }
}

impl Parameter {
    /// Checks that the name can name something of `source`.
    pub fn new(source: Source, name: impl Into<String>) -> Result<Self, RuleError> {
        let name = name.into();
        if name.is_empty() {
            return Err(RuleError::EmptyParameterName);
        }
        if source == Source::Header && http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(RuleError::HeaderName(name));
        }
        Ok(Parameter { source, name })
    }

    /// The parameter's value as text, or `None` when the request does not have it.
    pub fn extract<'r>(&self, req: &RuleRequest<'r>) -> Option<Cow<'r, str>> {
        match self.source {
            Source::Header => {
                let value = req.headers.get(self.name.as_str())?;
                std::str::from_utf8(value.as_bytes())
                    .ok()
                    .map(Cow::Borrowed)
            }
            Source::Url => req
                .query
                .iter()
                .find(|(k, _)| *k == self.name)
                .map(|(_, v)| Cow::Borrowed(v.as_str())),
            Source::Payload => lookup(req.payload?, &self.name).and_then(as_text),
        }
    }
}

/// adnanh's path walk: at an object, the whole remaining path is tried as a key first (so a
/// last key may contain dots), then its first segment; at an array, the segment is an index.
/// One lookup per segment: the payload is the sender's, and no key layout makes this slow.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => {
            if let Some(v) = map.get(path) {
                return Some(v);
            }
            let (head, rest) = path.split_once('.')?;
            lookup(map.get(head)?, rest)
        }
        Value::Array(items) => {
            let (head, rest) = match path.split_once('.') {
                Some((head, rest)) => (head, Some(rest)),
                None => (path, None),
            };
            if head.is_empty() || !head.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let item = items.get(head.parse::<usize>().ok()?)?;
            match rest {
                Some(rest) => lookup(item, rest),
                None => Some(item),
            }
        }
        _ => None,
    }
}

/// Text of a JSON value as adnanh compares it: strings as they are, numbers and booleans
/// printed, arrays and objects as compact JSON; `null` counts as absent.
fn as_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Array(_) | Value::Object(_) => Some(Cow::Owned(value.to_string())),
    }
}

/// A secret that does not show in `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// One test, checked when loaded. Deserialises from adnanh's `match` object ([`MatchSpec`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "MatchSpec")]
#[non_exhaustive]
pub enum MatchRule {
    /// `type: value`: the parameter equals `value` (compared in constant time).
    Value { parameter: Parameter, value: String },
    /// `type: regex`: the regex matches somewhere in the parameter (unanchored, like Go's
    /// `regexp.MatchString`; anchor with `^...$`).
    Regex { parameter: Parameter, regex: Regex },
    /// `type: payload-hmac-sha1|sha256|sha512`: the parameter holds a signature of the raw
    /// body under `secret` (see [`super::hmac`]).
    PayloadHmac {
        parameter: Parameter,
        algorithm: Algorithm,
        secret: Secret,
    },
    /// `type: ip-whitelist`: the remote address is in one of the ranges.
    IpWhitelist { ranges: Vec<IpNet> },
}

/// The `type` of a `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchType {
    Value,
    Regex,
    #[serde(alias = "payload-hash-sha1")]
    PayloadHmacSha1,
    #[serde(alias = "payload-hash-sha256")]
    PayloadHmacSha256,
    #[serde(alias = "payload-hash-sha512")]
    PayloadHmacSha512,
    IpWhitelist,
}

impl MatchType {
    fn name(self) -> &'static str {
        match self {
            MatchType::Value => "value",
            MatchType::Regex => "regex",
            MatchType::PayloadHmacSha1 => "payload-hmac-sha1",
            MatchType::PayloadHmacSha256 => "payload-hmac-sha256",
            MatchType::PayloadHmacSha512 => "payload-hmac-sha512",
            MatchType::IpWhitelist => "ip-whitelist",
        }
    }
}

/// A `match` object as written in a hooks file, before it is checked.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(rename = "type")]
    pub kind: MatchType,
    /// Strings, numbers and booleans are all read as text (`value: 42` is `"42"`).
    #[serde(default, deserialize_with = "scalar_text")]
    pub value: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    /// Whitespace-separated addresses or CIDR ranges, or a list of them.
    #[serde(default, deserialize_with = "ranges_text")]
    pub ip_range: Option<Vec<String>>,
    #[serde(default)]
    pub parameter: Option<Parameter>,
}

fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Bool(bool),
        Int(i64),
        Uint(u64),
        Float(f64),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::Text(t) => t,
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Uint(u) => u.to_string(),
        Scalar::Float(f) => f.to_string(),
    }))
}

fn ranges_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ranges {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<Ranges>::deserialize(d)?.map(|r| {
        let items = match r {
            Ranges::One(s) => vec![s],
            Ranges::Many(v) => v,
        };
        items
            .iter()
            .flat_map(|s| s.split_whitespace())
            .map(str::to_string)
            .collect()
    }))
}

fn parse_range(entry: &str) -> Result<IpNet, RuleError> {
    let problem = |e: &dyn fmt::Display| RuleError::IpRange {
        entry: entry.to_string(),
        problem: e.to_string(),
    };
    if entry.contains('/') {
        entry.parse::<IpNet>().map_err(|e| problem(&e))
    } else {
        // A bare address is a range of one (/32 or /128), as in adnanh.
        entry
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|e| problem(&e))
    }
}

impl TryFrom<MatchSpec> for MatchRule {
    type Error = RuleError;

    fn try_from(spec: MatchSpec) -> Result<Self, RuleError> {
        let kind = spec.kind.name();
        let need = |field: &'static str| RuleError::MissingField { kind, field };
        let unused = |field: &'static str, present: bool| match present {
            true => Err(RuleError::UnusedField { kind, field }),
            false => Ok(()),
        };
        if spec.kind != MatchType::IpWhitelist {
            unused("ip-range", spec.ip_range.is_some())?;
        }
        if spec.kind != MatchType::Value {
            unused("value", spec.value.is_some())?;
        }
        if spec.kind != MatchType::Regex {
            unused("regex", spec.regex.is_some())?;
        }
        let algorithm = match spec.kind {
            MatchType::PayloadHmacSha1 => Some(Algorithm::Sha1),
            MatchType::PayloadHmacSha256 => Some(Algorithm::Sha256),
            MatchType::PayloadHmacSha512 => Some(Algorithm::Sha512),
            _ => None,
        };
        if algorithm.is_none() {
            unused("secret", spec.secret.is_some())?;
        }
        match spec.kind {
            MatchType::Value => Ok(MatchRule::Value {
                parameter: spec.parameter.ok_or(need("parameter"))?,
                value: spec.value.ok_or(need("value"))?,
            }),
            MatchType::Regex => {
                let pattern = spec.regex.ok_or(need("regex"))?;
                Ok(MatchRule::Regex {
                    parameter: spec.parameter.ok_or(need("parameter"))?,
                    regex: Regex::new(&pattern).map_err(RuleError::Regex)?,
                })
            }
            MatchType::PayloadHmacSha1
            | MatchType::PayloadHmacSha256
            | MatchType::PayloadHmacSha512 => {
                let secret = spec.secret.ok_or(need("secret"))?;
                if secret.is_empty() {
                    return Err(RuleError::EmptySecret);
                }
                Ok(MatchRule::PayloadHmac {
                    parameter: spec.parameter.ok_or(need("parameter"))?,
                    // Set for exactly these three types just above.
                    algorithm: algorithm.unwrap_or(Algorithm::Sha256),
                    secret: Secret(secret),
                })
            }
            MatchType::IpWhitelist => {
                unused("parameter", spec.parameter.is_some())?;
                let entries = spec.ip_range.ok_or(need("ip-range"))?;
                let ranges = entries
                    .iter()
                    .map(|e| parse_range(e))
                    .collect::<Result<Vec<_>, _>>()?;
                if ranges.is_empty() {
                    return Err(RuleError::EmptyIpRange);
                }
                Ok(MatchRule::IpWhitelist { ranges })
            }
        }
    }
}

impl MatchRule {
    /// Whether the request passes this one test.
    pub fn evaluate(&self, req: &RuleRequest<'_>) -> Result<bool, RuleError> {
        match self {
            MatchRule::Value { parameter, value } => Ok(parameter
                .extract(req)
                .is_some_and(|arg| super::constant_time_eq(arg.as_bytes(), value.as_bytes()))),
            MatchRule::Regex { parameter, regex } => Ok(parameter
                .extract(req)
                .is_some_and(|arg| regex.is_match(&arg))),
            MatchRule::PayloadHmac {
                parameter,
                algorithm,
                secret,
            } => Ok(parameter.extract(req).is_some_and(|sig| {
                verify_signature(*algorithm, &[secret.expose()], &sig, req.body).is_ok()
            })),
            MatchRule::IpWhitelist { ranges } => {
                let ip = req.remote_ip.ok_or(RuleError::NoRemoteAddr)?.to_canonical();
                Ok(ranges.iter().any(|net| net.contains(&ip)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn yaml(text: &str) -> Rule {
        serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn load_error(text: &str) -> String {
        match serde_norway::from_str::<Rule>(text) {
            Ok(rule) => panic!("loaded, should not have: {rule:?}"),
            Err(e) => e.to_string(),
        }
    }

    struct Req {
        headers: HeaderMap,
        query: Vec<(String, String)>,
        body: Vec<u8>,
        payload: Option<Value>,
        ip: Option<IpAddr>,
    }

    impl Req {
        fn new(body: &[u8]) -> Self {
            Req {
                headers: HeaderMap::new(),
                query: Vec::new(),
                body: body.to_vec(),
                payload: parse_payload(body),
                ip: Some("203.0.113.9".parse().expect("ip")),
            }
        }
        fn header(mut self, k: &'static str, v: &str) -> Self {
            self.headers
                .append(k, HeaderValue::from_str(v).expect("value"));
            self
        }
        fn query(mut self, k: &str, v: &str) -> Self {
            self.query.push((k.into(), v.into()));
            self
        }
        fn ip(mut self, ip: Option<&str>) -> Self {
            self.ip = ip.map(|s| s.parse().expect("ip"));
            self
        }
        fn eval(&self, rule: &Rule) -> Result<bool, RuleError> {
            rule.evaluate(&RuleRequest {
                headers: &self.headers,
                query: &self.query,
                body: &self.body,
                payload: self.payload.as_ref(),
                remote_ip: self.ip,
            })
        }
        fn check(&self, rule: &Rule) -> bool {
            self.eval(rule).expect("evaluates")
        }
    }

    const PUSH: &[u8] = br#"{"ref":"refs/heads/main","repository":{"full_name":"acme/hark"},
        "commits":[{"id":"a1","author":{"name":"Ada"}},{"id":"b2","author":{"name":"Bob"}}],
        "size":2,"forced":false,"dotted.key":{"x":"yes"},"nothing":null}"#;

    #[test]
    fn adnanh_github_example() {
        let rule = yaml(
            r#"
and:
  - match:
      type: payload-hmac-sha256
      secret: mysecret
      parameter:
        source: header
        name: X-Hub-Signature-256
  - match:
      type: value
      value: refs/heads/main
      parameter:
        source: payload
        name: ref
"#,
        );
        let sig = super::super::github::sign(b"mysecret", PUSH);
        assert!(Req::new(PUSH)
            .header("x-hub-signature-256", &sig)
            .check(&rule));
        let forged = super::super::github::sign(b"guess", PUSH);
        assert!(!Req::new(PUSH)
            .header("x-hub-signature-256", &forged)
            .check(&rule));
        assert!(!Req::new(PUSH).check(&rule), "no signature header");
        let other_branch = String::from_utf8(PUSH.to_vec())
            .expect("utf-8")
            .replace("refs/heads/main", "refs/heads/dev");
        let sig = super::super::github::sign(b"mysecret", other_branch.as_bytes());
        let req = Req::new(other_branch.as_bytes()).header("x-hub-signature-256", &sig);
        assert!(!req.check(&rule), "signed, but not main");
    }

    #[test]
    fn value_over_each_source() {
        let header = yaml(
            "match: {type: value, value: push, parameter: {source: header, name: X-GitHub-Event}}",
        );
        let url =
            yaml("match: {type: value, value: s3cret, parameter: {source: url, name: token}}");
        let query =
            yaml("match: {type: value, value: s3cret, parameter: {source: query, name: token}}");
        let payload = yaml(
            r#"{"match": {"type": "value", "value": "Bob", "parameter": {"source": "payload", "name": "commits.1.author.name"}}}"#,
        );
        let req = Req::new(PUSH)
            .header("x-github-event", "push")
            .query("other", "x")
            .query("token", "s3cret")
            .query("token", "second");
        for rule in [&header, &url, &query, &payload] {
            assert!(req.check(rule), "{rule:?}");
        }
        let wrong = Req::new(b"{\"commits\":[{\"author\":{\"name\":\"Bob\"}}]}")
            .header("x-github-event", "issues")
            .query("token", "S3CRET");
        for rule in [&header, &url, &query, &payload] {
            assert!(!wrong.check(rule), "{rule:?}");
        }
        // Equality, not containment or prefix.
        let longer = Req::new(br#"{"commits":[{},{"author":{"name":"Bobby"}}]}"#)
            .header("x-github-event", "push_request")
            .query("token", "s3cret2");
        for rule in [&header, &url, &query, &payload] {
            assert!(!longer.check(rule), "{rule:?}");
        }
    }

    #[test]
    fn payload_paths_and_scalars() {
        let req = Req::new(PUSH);
        for (path, value) in [
            ("ref", "refs/heads/main"),
            ("repository.full_name", "acme/hark"),
            ("commits.0.id", "a1"),
            ("commits.1.author.name", "Bob"),
            ("size", "2"),
            ("forced", "false"),
            // A key containing dots is found when it is the rest of the path (adnanh's rule).
            ("dotted.key", r#"{"x":"yes"}"#),
            ("commits.0.author", r#"{"name":"Ada"}"#),
        ] {
            let rule = Rule::Match(Box::new(MatchRule::Value {
                parameter: Parameter::new(Source::Payload, path).expect("param"),
                value: value.into(),
            }));
            assert!(req.check(&rule), "{path} = {value}");
        }
        // Numbers and booleans in the rule file are read as text.
        assert!(req.check(&yaml(
            "match: {type: value, value: 2, parameter: {source: payload, name: size}}"
        )));
        assert!(req.check(&yaml(
            "match: {type: value, value: false, parameter: {source: payload, name: forced}}"
        )));
    }

    #[test]
    fn missing_parameters_are_false_not_errors() {
        let req = Req::new(PUSH);
        for (source, name) in [
            ("payload", "nope"),
            ("payload", "commits.5.id"),
            ("payload", "commits.x.id"),
            ("payload", "commits.-1"),
            ("payload", "ref.deeper"),
            ("payload", "nothing"),
            ("payload", "commits.0.id.more"),
            ("header", "X-Missing"),
            ("url", "missing"),
        ] {
            for kind in [
                "{type: value, value: x",
                "{type: regex, regex: '.*'",
                "{type: payload-hmac-sha1, secret: s",
            ] {
                let text =
                    format!("match: {kind}, parameter: {{source: {source}, name: '{name}'}}}}");
                let rule = yaml(&text);
                assert_eq!(req.eval(&rule).ok(), Some(false), "{text}");
                // ...and so `not` of it is true.
                let not = Rule::Not(Box::new(rule));
                assert_eq!(req.eval(&not).ok(), Some(true), "not {text}");
            }
        }
        // A body that is not JSON has no payload parameters.
        let form = Req::new(b"ref=refs/heads/main");
        let rule = yaml(
            "match: {type: value, value: refs/heads/main, parameter: {source: payload, name: ref}}",
        );
        assert_eq!(form.eval(&rule).ok(), Some(false));
        // A header whose bytes are not UTF-8 counts as absent.
        let mut odd = Req::new(PUSH);
        odd.headers.insert(
            "x-event",
            HeaderValue::from_bytes(b"\xff").expect("obs-text"),
        );
        let rule =
            yaml("match: {type: regex, regex: '.*', parameter: {source: header, name: X-Event}}");
        assert_eq!(odd.eval(&rule).ok(), Some(false));
    }

    #[test]
    fn regex_matches_unanchored_and_anchored() {
        let req = Req::new(PUSH).header("user-agent", "GitHub-Hookshot/abc123");
        let loose = yaml("match: {type: regex, regex: 'Hookshot', parameter: {source: header, name: User-Agent}}");
        let anchored = yaml("match: {type: regex, regex: '^Hookshot', parameter: {source: header, name: User-Agent}}");
        let branch = yaml(
            r#"match: {type: regex, regex: '^refs/heads/(main|release/.+)$', parameter: {source: payload, name: ref}}"#,
        );
        assert!(req.check(&loose));
        assert!(!req.check(&anchored));
        assert!(req.check(&branch));
    }

    #[test]
    fn hmac_rules_over_header_and_url() {
        for (alg, kind) in [
            (Algorithm::Sha1, "payload-hmac-sha1"),
            (Algorithm::Sha256, "payload-hmac-sha256"),
            (Algorithm::Sha512, "payload-hmac-sha512"),
        ] {
            let sig = hex::encode(super::super::hmac::sign(alg, b"k", &[PUSH]));
            let by_header = yaml(&format!(
                "match: {{type: {kind}, secret: k, parameter: {{source: header, name: X-Sig}}}}"
            ));
            let by_url = yaml(&format!(
                "match: {{type: {kind}, secret: k, parameter: {{source: url, name: sig}}}}"
            ));
            let good = Req::new(PUSH)
                .header("x-sig", &format!("{}{sig}", alg.prefix()))
                .query("sig", &sig);
            assert!(good.check(&by_header), "{kind}");
            assert!(good.check(&by_url), "{kind}");
            let bad = Req::new(PUSH)
                .header("x-sig", "not-hex")
                .query("sig", &"0".repeat(sig.len()));
            assert!(!bad.check(&by_header), "{kind}");
            assert!(!bad.check(&by_url), "{kind}");
        }
        // adnanh's deprecated payload-hash-* names are read as payload-hmac-*.
        let old = yaml("match: {type: payload-hash-sha1, secret: k, parameter: {source: header, name: X-Hub-Signature}}");
        assert!(
            matches!(old, Rule::Match(ref m) if matches!(**m, MatchRule::PayloadHmac { algorithm: Algorithm::Sha1, .. }))
        );
        // Two secrets side by side in an `or`: a wrong signature is false, not an error.
        let either = yaml(
            "or:\n- match: {type: payload-hmac-sha256, secret: old, parameter: {source: header, name: X-Sig}}\n\
             - match: {type: payload-hmac-sha256, secret: new, parameter: {source: header, name: X-Sig}}\n",
        );
        for (secret, expected) in [(&b"old"[..], true), (b"new", true), (b"third", false)] {
            let sig = hex::encode(super::super::hmac::sign(Algorithm::Sha256, secret, &[PUSH]));
            assert_eq!(
                Req::new(PUSH).header("x-sig", &sig).check(&either),
                expected
            );
        }
    }

    #[test]
    fn ip_whitelist_v4_v6_and_mapped() {
        let rule =
            yaml("match: {type: ip-whitelist, ip-range: '192.168.0.1/24  10.1.2.3 2001:db8::/32'}");
        let list =
            yaml("match: {type: ip-whitelist, ip-range: ['192.168.0.0/24', '2001:db8::/32 ::1']}");
        for r in [&rule, &list] {
            for (ip, expected) in [
                ("192.168.0.200", true),
                ("192.168.1.1", false),
                ("2001:db8::42", true),
                ("2001:db9::1", false),
                ("::ffff:192.168.0.7", true),
                ("203.0.113.9", false),
            ] {
                assert_eq!(Req::new(b"").ip(Some(ip)).check(r), expected, "{ip}");
            }
        }
        assert!(Req::new(b"").ip(Some("10.1.2.3")).check(&rule));
        assert!(
            !Req::new(b"").ip(Some("10.1.2.4")).check(&rule),
            "bare address is a /32"
        );
        assert!(Req::new(b"").ip(Some("::1")).check(&list));
        assert!(matches!(
            Req::new(b"").ip(None).eval(&rule),
            Err(RuleError::NoRemoteAddr)
        ));
    }

    #[test]
    fn nested_and_or_not() {
        let rule = yaml(
            r#"
or:
  - and:
      - match: {type: value, value: push, parameter: {source: header, name: X-GitHub-Event}}
      - not:
          match: {type: regex, regex: "^refs/tags/", parameter: {source: payload, name: ref}}
  - and:
      - match: {type: value, value: manual, parameter: {source: url, name: trigger}}
      - match: {type: ip-whitelist, ip-range: "127.0.0.0/8 ::1/128"}
"#,
        );
        let push_main = Req::new(PUSH).header("x-github-event", "push");
        assert!(push_main.check(&rule));
        let tag = Req::new(br#"{"ref":"refs/tags/v1"}"#).header("x-github-event", "push");
        assert!(!tag.check(&rule));
        let manual_local = Req::new(b"")
            .query("trigger", "manual")
            .ip(Some("127.0.0.1"));
        assert!(manual_local.check(&rule));
        let manual_remote = Req::new(b"")
            .query("trigger", "manual")
            .ip(Some("198.51.100.1"));
        assert!(!manual_remote.check(&rule));
        // Short-circuit: the first branch is true, so the missing address is never needed.
        assert!(push_main.ip(None).check(&rule));
    }

    #[test]
    fn load_errors() {
        for (text, needle) in [
            ("match: {type: regex, regex: '(unclosed', parameter: {source: header, name: A}}", "invalid regex"),
            ("match: {type: regex, regex: 'a{99999999}', parameter: {source: header, name: A}}", "invalid regex"),
            ("match: {type: ip-whitelist, ip-range: '10.0.0.0/33'}", "invalid ip-range entry"),
            ("match: {type: ip-whitelist, ip-range: '10.0.0'}", "invalid ip-range entry"),
            ("match: {type: ip-whitelist, ip-range: 'fe80::/129'}", "invalid ip-range entry"),
            ("match: {type: ip-whitelist, ip-range: '  '}", "empty"),
            ("match: {type: ip-whitelist}", "needs `ip-range`"),
            ("match: {type: value, value: x}", "parameter"),
            ("match: {type: value, parameter: {source: header, name: A}}", "value"),
            ("match: {type: payload-hmac-sha256, secret: '', parameter: {source: header, name: A}}", "empty"),
            ("match: {type: payload-hmac-sha256, parameter: {source: header, name: A}}", "secret"),
            ("match: {type: value, value: x, parameter: {source: header, name: 'bad name'}}", "header name"),
            ("match: {type: value, value: x, parameter: {source: payload, name: ''}}", "empty"),
            ("match: {type: value, value: x, parameter: {source: body, name: a}}", "body"),
            ("match: {type: value, value: x, regex: y, parameter: {source: header, name: A}}", "regex"),
            ("match: {type: value, value: x, ip_range: y, parameter: {source: header, name: A}}", "ip_range"),
            ("match: {type: md5, value: x}", "md5"),
            ("and: []", "at least one"),
            ("or: []", "at least one"),
            ("xor: []", "xor"),
            ("{}", "exactly one"),
            ("{not: {match: {type: ip-whitelist, ip-range: '::1'}}, or: []}", "exactly one"),
            ("match: {type: value, value: x, parameter: {source: header, name: A, extra: 1}}", "extra"),
        ] {
            let err = load_error(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
        // JSON takes the same path.
        let err = serde_json::from_str::<Rule>(
            r#"{"match":{"type":"regex","regex":"[z-a]","parameter":{"source":"url","name":"q"}}}"#,
        )
        .expect_err("bad regex");
        assert!(err.to_string().contains("invalid regex"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let rule = yaml("match: {type: payload-hmac-sha256, secret: hunter2, parameter: {source: header, name: A}}");
        assert!(!format!("{rule:?}").contains("hunter2"));
    }

    #[test]
    fn hand_built_empty_groups_fail_closed() {
        let req = Req::new(b"");
        assert!(!req.check(&Rule::And(vec![])));
        assert!(!req.check(&Rule::Or(vec![])));
    }
}
