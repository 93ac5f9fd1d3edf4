//! Function names and the OpenFaaS-shaped deployment and status records that every
//! layer passes around: the API reads them as JSON, the store keeps them, providers run them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Annotation choosing how the process provider runs a function: `fork` or `http`.
pub const ANNOTATION_MODE: &str = "hark.mode";
/// Annotation choosing where an HTTP-mode replica of the process provider listens:
/// `socket` (`$HARK_SOCKET` only), `tcp` (`$PORT` only) or `auto` (both given; the
/// first to accept is used, the socket checked first).
pub const ANNOTATION_LISTEN: &str = "hark.listen";
/// Annotation choosing what a function may reach on the network: `internal` (the
/// default: the gateway only) or `internet` (a route out). Docker functions get a network
/// of that kind; process functions a Landlock fence on TCP connections.
pub const ANNOTATION_NETWORK: &str = "hark.network";
/// Annotation naming more TCP ports an `internal` process function may connect to,
/// comma-separated (a ChromeDriver or database of the operator's on this host).
pub const ANNOTATION_NETWORK_CONNECT: &str = "hark.network.connect";
/// Annotation giving the per-call time limit, e.g. `30s`, `500ms`, `2m`.
pub const ANNOTATION_TIMEOUT: &str = "hark.timeout";
/// Annotation giving the most calls a function runs at once (429 beyond it).
pub const ANNOTATION_MAX_INFLIGHT: &str = "hark.max_inflight";
/// Annotation that, set to `required`, makes `/function/NAME` demand a bearer token.
pub const ANNOTATION_AUTH: &str = "hark.auth";
/// Annotation that, set to `false`, keeps anonymous callers out: only schedules,
/// channels and token-bearing calls reach the function.
pub const ANNOTATION_PUBLIC: &str = "hark.public";
/// Annotation giving how many times a failed async call is retried (default 3).
pub const ANNOTATION_RETRIES: &str = "hark.retries";
/// Annotation giving the first retry delay of async calls, doubled each time (default 1s).
pub const ANNOTATION_RETRY_BACKOFF: &str = "hark.retry.backoff";
/// Annotation giving how many async calls of the function run at once (default 4).
pub const ANNOTATION_ASYNC_CONCURRENCY: &str = "hark.async.concurrency";
/// Annotation giving the working directory of a process function.
pub const ANNOTATION_WORKDIR: &str = "hark.workdir";
/// Annotation giving the largest answer the gateway reads from the function, e.g.
/// `64MiB` (a larger one answers 502).
pub const ANNOTATION_MAX_RESPONSE: &str = "hark.max_response";

/// Default largest answer of one call when `hark.max_response` is not set.
pub const DEFAULT_MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// Default time limit of one call when `hark.timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A function's name, checked against `[a-z0-9][a-z0-9-]{0,62}` so that it is safe
/// in paths, file names, process arguments and container names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct FunctionName(String);

/// Why a string is not a valid [`FunctionName`].
#[derive(Debug, thiserror::Error)]
#[error("invalid function name {0:?}: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
pub struct InvalidName(pub String);

impl FunctionName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FunctionName {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 63
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if valid {
            Ok(FunctionName(s.to_owned()))
        } else {
            Err(InvalidName(s.chars().take(80).collect()))
        }
    }
}

impl<'de> Deserialize<'de> for FunctionName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resource limits or requests, as OpenFaaS writes them (`"128Mi"`, `"0.5"`).
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
#[schemars(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

/// The body of `POST/PUT /system/functions`: OpenFaaS's `FunctionDeployment`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeployment {
    pub service: FunctionName,
    /// Container image; optional for the process provider.
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The command line of the function's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_process: Option<String>,
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Resources>,
    #[serde(default)]
    pub read_only_root_filesystem: bool,
}

impl Default for FunctionName {
    fn default() -> Self {
        FunctionName("function".into())
    }
}

/// How the process provider runs a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One process per call: body on stdin, response on stdout.
    Fork,
    /// Long-running processes serving HTTP on `$HARK_SOCKET` or `$PORT`.
    Http,
}

/// Where an HTTP-mode replica listens (`hark.listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listen {
    /// Given both `HARK_SOCKET` and `PORT`; whichever accepts first (the socket checked
    /// first) carries its calls.
    #[default]
    Auto,
    /// Only a Unix socket in a directory no other function can open.
    Socket,
    /// Only a loopback TCP port, which every local user can reach.
    Tcp,
}

/// What a function may reach on the network (`hark.network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The gateway and nothing else: no Internet, no metadata address, no other function,
    /// no local service (the default).
    #[default]
    Internal,
    /// A route to the Internet; still no other function where the provider can tell.
    Internet,
}

/// A deployment whose annotations did not parse.
#[derive(Debug, thiserror::Error)]
#[error("annotation {key}: {message}")]
pub struct AnnotationError {
    pub key: &'static str,
    pub message: String,
}

impl FunctionDeployment {
    /// `hark.mode`, defaulting to fork.
    pub fn mode(&self) -> Result<Mode, AnnotationError> {
        match self.annotations.get(ANNOTATION_MODE).map(String::as_str) {
            None | Some("fork") => Ok(Mode::Fork),
            Some("http") => Ok(Mode::Http),
            Some(other) => Err(AnnotationError {
                key: ANNOTATION_MODE,
                message: format!("{other:?} is neither \"fork\" nor \"http\""),
            }),
        }
    }

    /// `hark.listen`, defaulting to [`Listen::Auto`].
    pub fn listen(&self) -> Result<Listen, AnnotationError> {
        match self.annotations.get(ANNOTATION_LISTEN).map(|v| v.trim()) {
            None | Some("auto") => Ok(Listen::Auto),
            Some("socket") => Ok(Listen::Socket),
            Some("tcp") => Ok(Listen::Tcp),
            Some(other) => Err(AnnotationError {
                key: ANNOTATION_LISTEN,
                message: format!("{other:?} is none of \"socket\", \"tcp\" or \"auto\""),
            }),
        }
    }

    /// `hark.network`, defaulting to [`Network::Internal`].
    pub fn network(&self) -> Result<Network, AnnotationError> {
        match self.annotations.get(ANNOTATION_NETWORK).map(|v| v.trim()) {
            None | Some("") | Some("internal") => Ok(Network::Internal),
            Some("internet") => Ok(Network::Internet),
            Some(other) => Err(AnnotationError {
                key: ANNOTATION_NETWORK,
                message: format!("{other:?} is neither \"internal\" nor \"internet\""),
            }),
        }
    }

    /// `hark.network.connect`: the ports, none by default.
    pub fn network_connect(&self) -> Result<Vec<u16>, AnnotationError> {
        let Some(value) = self.annotations.get(ANNOTATION_NETWORK_CONNECT) else {
            return Ok(Vec::new());
        };
        value
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.parse::<u16>() {
                Ok(port) if port > 0 => Ok(port),
                _ => Err(AnnotationError {
                    key: ANNOTATION_NETWORK_CONNECT,
                    message: format!("{p:?} is not a TCP port (1 to 65535)"),
                }),
            })
            .collect()
    }

    /// `hark.timeout`, defaulting to [`DEFAULT_TIMEOUT`].
    pub fn timeout(&self) -> Result<Duration, AnnotationError> {
        self.duration(ANNOTATION_TIMEOUT, DEFAULT_TIMEOUT)
    }

    /// `hark.max_inflight`; `None` means unlimited.
    pub fn max_inflight(&self) -> Result<Option<usize>, AnnotationError> {
        match self.annotations.get(ANNOTATION_MAX_INFLIGHT) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(0) | Err(_) => Err(AnnotationError {
                    key: ANNOTATION_MAX_INFLIGHT,
                    message: format!("{v:?} is not a positive whole number"),
                }),
                Ok(n) => Ok(Some(n)),
            },
        }
    }

    /// Whether `/function/NAME` demands a bearer token: `hark.auth: required`, or
    /// `hark.public: "false"`.
    pub fn auth_required(&self) -> bool {
        self.annotations.get(ANNOTATION_AUTH).map(String::as_str) == Some("required")
            || self.annotations.get(ANNOTATION_PUBLIC).map(String::as_str) == Some("false")
    }

    /// `hark.retries`: retries of a failed async call.
    pub fn retries(&self) -> Result<u32, AnnotationError> {
        self.count(ANNOTATION_RETRIES, 3, 0)
    }

    /// `hark.async.concurrency`: async calls of this function running at once.
    pub fn async_concurrency(&self) -> Result<u32, AnnotationError> {
        self.count(ANNOTATION_ASYNC_CONCURRENCY, 4, 1)
    }

    /// `hark.retry.backoff`: the first retry delay.
    pub fn retry_backoff(&self) -> Result<Duration, AnnotationError> {
        self.duration(ANNOTATION_RETRY_BACKOFF, Duration::from_secs(1))
    }

    fn duration(&self, key: &'static str, default: Duration) -> Result<Duration, AnnotationError> {
        match self.annotations.get(key) {
            None => Ok(default),
            Some(v) => parse_duration_within(v, MAX_TIMEOUT).map_err(|e| AnnotationError {
                key,
                message: format!("{v:?} {e}"),
            }),
        }
    }

    /// `hark.max_response`: the largest answer the gateway reads from the function.
    pub fn max_response(&self) -> Result<u64, AnnotationError> {
        match self.annotations.get(ANNOTATION_MAX_RESPONSE) {
            None => Ok(DEFAULT_MAX_RESPONSE),
            Some(v) => match parse_bytes(v) {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(AnnotationError {
                    key: ANNOTATION_MAX_RESPONSE,
                    message: format!("{v:?} is not a size such as 512KiB, 64MiB or 1GiB"),
                }),
            },
        }
    }

    fn count(&self, key: &'static str, default: u32, min: u32) -> Result<u32, AnnotationError> {
        match self.annotations.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(AnnotationError {
                    key,
                    message: format!("{v:?} is not a whole number of at least {min}"),
                }),
            },
        }
    }

    /// Checks every annotation Hark reads, so that a bad one fails the deploy.
    pub fn validate(&self) -> Result<(), AnnotationError> {
        self.mode()?;
        self.listen()?;
        self.timeout()?;
        self.max_inflight()?;
        self.retries()?;
        self.retry_backoff()?;
        self.async_concurrency()?;
        self.max_response()?;
        crate::dispatch::schedule::Schedule::of(self)?;
        Ok(())
    }
}

/// A size in bytes: a whole number, optionally followed by `K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB` or `T`/`TiB` (binary units, any case), as flags and annotations take it.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 1048576, 512KiB or 1GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit (use KiB, MiB, GiB or TiB)"
            ))
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The longest timeout, deadline or delay Hark takes from a deployment, a request or a
/// setting: a day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest lifetime (of a token, say) Hark takes from a request: a year.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is not a duration such as 500ms, 30s, 2m or 1h")]
    Unreadable,
    #[error("is longer than the limit of {}", human(*limit))]
    TooLong { limit: Duration },
}

/// `24h`, `8760h`, `90s`: how limits are named in messages.
fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses like [`parse_duration`], refusing more than `limit` (e.g. [`MAX_TIMEOUT`]).
/// Callers put the value before the error's text: `"99h" is longer than the limit of 24h`.
pub fn parse_duration_within(s: &str, limit: Duration) -> Result<Duration, DurationError> {
    let d = parse_duration(s).ok_or(DurationError::Unreadable)?;
    if d > limit {
        return Err(DurationError::TooLong { limit });
    }
    Ok(d)
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a bare number of seconds. Values no [`Duration`]
/// holds (`99999999999999999999h`) are `None`, like any other unreadable one; callers cap
/// the rest with [`parse_duration_within`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    // try_: from_secs_f64 panics on a value past Duration::MAX.
    Duration::try_from_secs_f64(seconds).ok()
}

/// Resource use reported by a provider, as OpenFaaS's `FunctionUsage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu: f64,
    pub total_memory_bytes: f64,
}

/// The answer of `GET /system/function/NAME`: OpenFaaS's `FunctionStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    pub name: FunctionName,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_process: Option<String>,
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Resources>,
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    pub invocation_count: u64,
    pub replicas: u32,
    pub available_replicas: u32,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl FunctionStatus {
    /// A status for `spec` with the counts filled in by the caller.
    pub fn new(spec: &FunctionDeployment, created_at: DateTime<Utc>) -> Self {
        FunctionStatus {
            name: spec.service.clone(),
            image: spec.image.clone(),
            namespace: spec.namespace.clone(),
            env_process: spec.env_process.clone(),
            env_vars: spec.env_vars.clone(),
            constraints: spec.constraints.clone(),
            secrets: spec.secrets.clone(),
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
            limits: spec.limits.clone(),
            requests: spec.requests.clone(),
            read_only_root_filesystem: spec.read_only_root_filesystem,
            invocation_count: 0,
            replicas: 0,
            available_replicas: 0,
            created_at,
            usage: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_one_pattern() {
        for ok in ["a", "echo", "book-holiday", "0day", &"x".repeat(63)] {
            assert!(ok.parse::<FunctionName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "Echo",
            "a_b",
            "a/b",
            "..",
            "a.b",
            &"x".repeat(64),
            "é",
        ] {
            assert!(bad.parse::<FunctionName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hark_listen_takes_socket_tcp_or_auto_and_refuses_the_rest() {
        let mut spec = FunctionDeployment::default();
        assert_eq!(spec.listen().unwrap(), Listen::Auto);
        for (value, listen) in [
            ("socket", Listen::Socket),
            ("tcp", Listen::Tcp),
            ("auto", Listen::Auto),
        ] {
            spec.annotations
                .insert(ANNOTATION_LISTEN.into(), value.into());
            assert_eq!(spec.listen().unwrap(), listen, "{value}");
        }
        spec.annotations
            .insert(ANNOTATION_LISTEN.into(), "unix".into());
        let refused = spec.validate().unwrap_err();
        assert_eq!(refused.key, ANNOTATION_LISTEN);
        assert!(refused.message.contains("\"unix\""), "{}", refused.message);
    }

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5d"), None);
    }

    #[test]
    fn huge_negative_and_odd_durations_are_refused_without_a_panic() {
        for odd in [
            "99999999999999999999h",
            "18446744073709551615",
            "18446744073709551616s",
            "1e400",
            "-5s",
            "-0.5",
            "NaN",
            "inf",
            "1.5.5s",
            "",
            "h",
        ] {
            assert_eq!(parse_duration(odd), None, "{odd}");
            assert_eq!(
                parse_duration_within(odd, MAX_TIMEOUT),
                Err(DurationError::Unreadable),
                "{odd}"
            );
        }
        // Representable, but past the caps.
        for long in ["99999999999h", "25h", "86401", "1441m"] {
            let e = parse_duration_within(long, MAX_TIMEOUT).unwrap_err();
            assert_eq!(e.to_string(), "is longer than the limit of 24h", "{long}");
        }
        assert_eq!(
            parse_duration_within("24h", MAX_TIMEOUT),
            Ok(Duration::from_secs(86400))
        );
        assert_eq!(
            parse_duration_within("8760h", MAX_TTL),
            Ok(Duration::from_secs(365 * 86400))
        );
        assert!(parse_duration_within("8761h", MAX_TTL).is_err());
    }

    #[test]
    fn a_deployment_with_a_timeout_past_a_day_is_refused_naming_the_limit() {
        for (key, value) in [
            (ANNOTATION_TIMEOUT, "99999999999h"),
            (ANNOTATION_RETRY_BACKOFF, "9999999999999"),
        ] {
            let mut d: FunctionDeployment =
                serde_json::from_str(r#"{"service":"echo","envProcess":"cat"}"#).unwrap();
            d.annotations.insert(key.into(), value.into());
            let e = d.validate().unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.message.contains("limit of 24h"), "{}", e.message);
        }
    }

    proptest::proptest! {
        #[test]
        fn no_text_makes_duration_parsing_panic(s in "\\PC{0,24}", n in proptest::num::u64::ANY, unit in "(ms|s|m|h|)") {
            let _ = parse_duration(&s);
            let capped = parse_duration_within(&format!("{n}{unit}"), MAX_TIMEOUT);
            if let Ok(d) = capped {
                proptest::prop_assert!(d <= MAX_TIMEOUT);
            }
        }
    }

    #[test]
    fn sizes_parse_in_bytes_and_binary_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2k"), Ok(2048));
        assert_eq!(parse_bytes("1TiB"), Ok(1 << 40));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999TiB").is_err());
        assert!(parse_bytes("-1").is_err());
    }

    #[test]
    fn deployment_reads_openfaas_field_names() {
        let json = r#"{"service":"echo","image":"","envProcess":"cat","envVars":{"A":"1"},
            "secrets":["s"],"labels":{},"annotations":{"hark.mode":"http"},
            "limits":{"memory":"128Mi"},"readOnlyRootFilesystem":true}"#;
        let d: FunctionDeployment = serde_json::from_str(json).unwrap();
        assert_eq!(d.service.as_str(), "echo");
        assert_eq!(d.env_process.as_deref(), Some("cat"));
        assert_eq!(d.mode().unwrap(), Mode::Http);
        assert!(d.read_only_root_filesystem);
        assert!(serde_json::from_str::<FunctionDeployment>(r#"{"service":"../x"}"#).is_err());
    }
}
