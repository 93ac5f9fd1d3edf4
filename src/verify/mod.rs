//! Webhook signature verification and trigger rules: raw body bytes, request headers and the
//! current time in (`now`, unix seconds, always passed in — nothing here reads the clock); a
//! [`Verified`] delivery, a [`VerifyError`], a rule verdict or a human-readable [`Report`] out.
//!
//! # Layout
//! Each platform's check lives with its channel (`channels/slack/verify.rs`,
//! `channels/github/verify.rs`, `channels/hooks/verify.rs` for Standard Webhooks, and the
//! Discord, Teams, Telegram and Twilio ones); here is what they share:
//! - [`hmac`]: a plain payload HMAC (sha1/sha256/sha512), adnanh/webhook `payload-hmac-*`
//!   semantics; also the one place that computes MACs for the other schemes.
//! - [`rules`]: adnanh/webhook-style trigger rules (`and`/`or`/`not`/`match`).
//! - [`report`]: the diagnostic report `hark webhook verify` and `hark alexa verify` print.
//! - here: the shared error type, constant-time compare, timestamp window, header access, and
//!   [`explain`], which backs `hark webhook verify` for every [`Kind`].
//!
//! Every check is a pure function, so the same code serves the HTTP gateway, the CLI and the
//! tests, and no function panics on any input.

pub mod hmac;
pub mod report;
pub mod rules;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use http::HeaderMap;
use subtle::ConstantTimeEq;

pub use report::{Report, Status, Step, Verdict};

// Each platform's check lives with its channel; `verify` keeps what they share.
#[cfg(test)]
use crate::channels::github::verify as github;
#[cfg(test)]
use crate::channels::hooks::verify as standard;
#[cfg(test)]
use crate::channels::slack::verify as slack;

/// How far a signed timestamp may be from `now`, in either direction: 5 minutes, as Slack and
/// Standard Webhooks prescribe.
pub const TOLERANCE_SECS: i64 = 300;

/// A delivery whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Position, in the slice the caller passed, of the secret that matched. Lets the operator
    /// see when nothing is signed with an old secret any more (rotation), without logging it.
    pub secret_index: usize,
    /// The signed timestamp (Slack, Standard Webhooks), already checked against the window.
    pub timestamp: Option<i64>,
    /// The signed message id (Standard Webhooks `webhook-id`): a key for replay protection.
    pub id: Option<String>,
}

/// Why a delivery was refused. The `Display` text and [`VerifyError::reason`] name headers and
/// problems, never secrets or signature values, so both are safe for log lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The caller configured no secret at all.
    #[error("no secret is configured")]
    NoSecrets,
    /// A configured secret cannot be used (empty, or a `whsec_` value that is not base64).
    #[error("configured secret #{index} is unusable: {problem}")]
    BadSecret { index: usize, problem: &'static str },
    /// A required header is absent.
    #[error("header {header} is missing")]
    MissingHeader { header: Cow<'static, str> },
    /// A header that must appear once appears several times.
    #[error("header {header} appears more than once")]
    DuplicateHeader { header: Cow<'static, str> },
    /// A header is present but its value cannot be read (empty, wrong prefix, not hex, ...).
    #[error("header {header} is malformed: {problem}")]
    MalformedHeader {
        header: Cow<'static, str>,
        problem: &'static str,
    },
    /// The signed timestamp is older than the window allows (a replay, or a slow queue).
    #[error("timestamp is {age_secs} s old, more than the {tolerance_secs} s allowed")]
    Stale { age_secs: u64, tolerance_secs: i64 },
    /// The signed timestamp is further in the future than the window allows.
    #[error("timestamp is {ahead_secs} s in the future, more than the {tolerance_secs} s allowed")]
    Future {
        ahead_secs: u64,
        tolerance_secs: i64,
    },
    /// The signature header carries no signature of a version this code checks.
    #[error("header {header} carries no signature of a supported version")]
    UnsupportedVersion { header: Cow<'static, str> },
    /// Well-formed, but no configured secret produces any of the signatures sent.
    #[error("signature does not match")]
    Mismatch,
}

/// Broad class of a [`VerifyError`], for the HTTP layer to pick a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Our configuration is wrong (no or unusable secret): a server error, not the sender's.
    Misconfigured,
    /// The request cannot be parsed as a signed delivery (bad header syntax): 400.
    Malformed,
    /// Missing, stale or wrong signature: unauthenticated, 401/403.
    Unauthenticated,
}

impl VerifyError {
    /// A short, stable, machine-friendly name for log fields and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoSecrets => "no_secrets",
            Self::BadSecret { .. } => "bad_secret",
            Self::MissingHeader { .. } => "missing_header",
            Self::DuplicateHeader { .. } => "duplicate_header",
            Self::MalformedHeader { .. } => "malformed_header",
            Self::Stale { .. } => "stale_timestamp",
            Self::Future { .. } => "future_timestamp",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::Mismatch => "signature_mismatch",
        }
    }

    /// Which side is at fault; see [`ErrorClass`].
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::NoSecrets | Self::BadSecret { .. } => ErrorClass::Misconfigured,
            Self::DuplicateHeader { .. } | Self::MalformedHeader { .. } => ErrorClass::Malformed,
            Self::MissingHeader { .. }
            | Self::Stale { .. }
            | Self::Future { .. }
            | Self::UnsupportedVersion { .. }
            | Self::Mismatch => ErrorClass::Unauthenticated,
        }
    }

    pub(crate) fn malformed(header: impl Into<Cow<'static, str>>, problem: &'static str) -> Self {
        Self::MalformedHeader {
            header: header.into(),
            problem,
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// first differ. Lengths are public here (every MAC of one algorithm has the same length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // subtle's slice ct_eq returns false for different lengths without comparing contents.
    bool::from(a.ct_eq(b))
}

/// Checks a signed `timestamp` against `now`, allowing `tolerance_secs` in either direction
/// (the bound itself is accepted, as Slack's and Standard Webhooks' reference code do).
pub fn check_window(timestamp: i64, now: i64, tolerance_secs: i64) -> Result<(), VerifyError> {
    // i128 so that no pair of i64 values can overflow.
    let skew = i128::from(now) - i128::from(timestamp);
    let tolerance = i128::from(tolerance_secs.max(0));
    let secs = |v: i128| u64::try_from(v).unwrap_or(u64::MAX);
    if skew > tolerance {
        Err(VerifyError::Stale {
            age_secs: secs(skew),
            tolerance_secs,
        })
    } else if -skew > tolerance {
        Err(VerifyError::Future {
            ahead_secs: secs(-skew),
            tolerance_secs,
        })
    } else {
        Ok(())
    }
}

/// The single value of header `name`, trimmed: absent, repeated, non-ASCII and empty values
/// are errors.
pub(crate) fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<&'h str, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(VerifyError::MissingHeader {
        header: name.into(),
    })?;
    if values.next().is_some() {
        return Err(VerifyError::DuplicateHeader {
            header: name.into(),
        });
    }
    let text = value
        .to_str()
        .map_err(|_| VerifyError::malformed(name, "not printable ASCII"))?
        .trim();
    if text.is_empty() {
        return Err(VerifyError::malformed(name, "empty"));
    }
    Ok(text)
}

/// Parses a unix-seconds header value: ASCII digits only (no sign, no fraction).
pub(crate) fn parse_timestamp(name: &'static str, text: &str) -> Result<i64, VerifyError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::malformed(
            name,
            "not a unix timestamp in whole seconds",
        ));
    }
    text.parse::<i64>()
        .map_err(|_| VerifyError::malformed(name, "timestamp out of range"))
}

/// Decodes `prefix` + exactly `len` bytes of hex (either case) from a signature header.
pub(crate) fn decode_prefixed_hex(
    name: &'static str,
    text: &str,
    prefix: &'static str,
    problem_prefix: &'static str,
    len: usize,
    problem_len: &'static str,
) -> Result<Vec<u8>, VerifyError> {
    let digits = text
        .strip_prefix(prefix)
        .ok_or(VerifyError::malformed(name, problem_prefix))?;
    if digits.len() != len * 2 {
        return Err(VerifyError::malformed(name, problem_len));
    }
    hex::decode(digits).map_err(|_| VerifyError::malformed(name, "not hexadecimal"))
}

/// Refuses an empty secret list and empty secrets (an empty HMAC key signs for anyone who
/// guesses it is empty).
pub(crate) fn check_secrets<S: AsRef<[u8]>>(secrets: &[S]) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    match secrets.iter().position(|s| s.as_ref().is_empty()) {
        Some(index) => Err(VerifyError::BadSecret {
            index,
            problem: "empty",
        }),
        None => Ok(()),
    }
}

/// The scheme `hark webhook verify --kind` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A channel's own check, by the name it registers
    /// ([`crate::channels::common::ChannelRoute::VERIFY_KIND`]): `slack`, `github`,
    /// `standard` (hooks), `discord` (the "secret" is the public key), `teams`,
    /// `telegram`, `twilio` (with the URL Twilio called).
    Channel(&'static str),
    /// Plain payload HMAC. `header` is the header carrying the signature; when `None`,
    /// [`hmac::DEFAULT_HEADERS`] are tried in order.
    Hmac {
        algorithm: hmac::Algorithm,
        header: Option<String>,
    },
}

/// The `--kind` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown webhook kind {0:?}: expected {kinds}, or hmac-sha1|hmac-sha256|hmac-sha512 \
     (optionally followed by :HEADER-NAME)",
    kinds = crate::channels::Channels::VERIFY_KINDS.join(", ")
)]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    /// A channel's kind (`slack`, `standard` or `standard-webhooks`...), `hmac-sha256`,
    /// and `hmac-sha256:X-Signature` to name the signature header. Case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownKind(s.to_string());
        let (name, header) = match s.split_once(':') {
            Some((name, header)) => (name, Some(header.trim())),
            None => (s, None),
        };
        let name = name.trim().to_ascii_lowercase();
        let name = match name.as_str() {
            "standard-webhooks" | "standardwebhooks" => "standard",
            name => name,
        };
        let channel = crate::channels::Channels::VERIFY_KINDS
            .iter()
            .find(|kind| **kind == name);
        if let Some(kind) = channel {
            return if header.is_none() {
                Ok(Kind::Channel(kind))
            } else {
                Err(unknown())
            };
        }
        let algorithm = name
            .strip_prefix("hmac-")
            .and_then(|alg| alg.parse::<hmac::Algorithm>().ok())
            .ok_or_else(unknown)?;
        let header = match header {
            None => None,
            Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => Some(h.to_string()),
            Some(_) => return Err(unknown()),
        };
        Ok(Kind::Hmac { algorithm, header })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Channel(name) => f.write_str(name),
            Kind::Hmac {
                algorithm,
                header: None,
            } => write!(f, "hmac-{algorithm}"),
            Kind::Hmac {
                algorithm,
                header: Some(h),
            } => write!(f, "hmac-{algorithm}:{h}"),
        }
    }
}

/// The verdict of a [`Report`] from what the real verifier returned.
pub(crate) fn verdict_of(outcome: &Result<Verified, VerifyError>) -> Verdict {
    match outcome {
        Ok(v) => Verdict {
            passed: true,
            text: format!("secret #{}", v.secret_index),
            reason: None,
        },
        Err(e) => Verdict {
            passed: false,
            text: e.to_string(),
            reason: Some(e.reason()),
        },
    }
}

/// Records what the real verifier returned as the report's verdict, so the report can
/// never disagree with the gateway.
pub(crate) fn conclude(report: &mut Report, outcome: Result<Verified, VerifyError>) {
    report.verdict = Some(verdict_of(&outcome));
}

/// Explains whether a delivery signed with `secret` passes the `kind` check at time `now`.
/// Backs `hark webhook verify --kind K --secret S --body FILE -H 'Name: value'... [--at T]`.
pub fn explain(kind: Kind, secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Report {
    explain_request(
        kind,
        &Offline {
            secret,
            headers,
            body,
            now,
            url: None,
        },
    )
}

/// A request as a platform sent it, for [`explain_request`].
pub struct Offline<'a> {
    pub secret: &'a [u8],
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Unix seconds the check runs at.
    pub now: i64,
    /// The URL the platform called, for schemes that sign it (Twilio).
    pub url: Option<&'a str>,
}

/// [`explain`] with every part of the request, the URL included.
pub fn explain_request(kind: Kind, request: &Offline<'_>) -> Report {
    let secret = request.secret;
    let mut report = Report::new(kind.to_string());
    conclude(&mut report, Err(VerifyError::NoSecrets));
    if secret.is_empty() {
        report.fail("the secret is empty");
    } else if secret.trim_ascii() != secret {
        report.info(format!(
            "the secret ({} bytes) has leading or trailing whitespace; it is used as given",
            secret.len()
        ));
    }
    match kind {
        Kind::Channel(name) => {
            if !crate::channels::Channels::explain(name, &mut report, request) {
                report.fail(format!("no channel checks {name:?} requests"));
            }
        }
        Kind::Hmac { algorithm, header } => hmac::explain_into(
            &mut report,
            algorithm,
            header.as_deref(),
            secret,
            request.headers,
            request.body,
        ),
    }
    report
}

/// Shared explain wording: the timestamp step.
pub(crate) fn explain_window(report: &mut Report, timestamp: i64, now: i64) {
    match check_window(timestamp, now, TOLERANCE_SECS) {
        Ok(()) => {
            let skew = i128::from(now) - i128::from(timestamp);
            let when = if skew >= 0 {
                format!("{skew} s old")
            } else {
                format!("{} s in the future", -skew)
            };
            report.pass(format!(
                "timestamp {timestamp} is {when} at now = {now}; window is ±{TOLERANCE_SECS} s"
            ))
        }
        Err(e) => {
            report.fail(format!("timestamp {timestamp} against now ({now}): {e}"));
            report.hint(format!(
                "to check the signature of an old recorded delivery, pass --at {timestamp}"
            ));
        }
    }
}

/// Shared explain wording: compares a computed MAC with what was sent, and on a mismatch
/// tries the usual mistakes (a trailing newline added to the body file, a secret with
/// surrounding whitespace) through `recompute(secret, body)`.
pub(crate) fn explain_mac(
    report: &mut Report,
    secret: &[u8],
    body: &[u8],
    sent: &[Vec<u8>],
    shown: impl Fn(&[u8]) -> String,
    recompute: impl Fn(&[u8], &[u8]) -> Vec<u8>,
) -> bool {
    let expected = recompute(secret, body);
    let matches = |mac: &[u8]| sent.iter().any(|s| constant_time_eq(s, mac));
    if matches(&expected) {
        report.pass(format!(
            "signature matches ({})",
            fingerprint(&shown(&expected))
        ));
        return true;
    }
    let got: Vec<String> = sent.iter().map(|s| fingerprint(&shown(s))).collect();
    report.fail(format!(
        "signature does not match: computed {}, header has {}",
        fingerprint(&shown(&expected)),
        got.join(", ")
    ));
    let trimmed_body = body
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b));
    if let Some(trimmed) = trimmed_body {
        if matches(&recompute(secret, trimmed)) {
            report.hint(
                "it matches without the body's trailing newline: the body file has a newline \
                 the sender did not sign (save it without one, e.g. `printf %s`)",
            );
        }
    }
    let trimmed_secret = secret.trim_ascii();
    if trimmed_secret != secret
        && !trimmed_secret.is_empty()
        && matches(&recompute(trimmed_secret, body))
    {
        report.hint("it matches once the whitespace around the secret is removed");
    }
    report.hint(
        "the MAC covers the exact bytes sent: a body re-serialised from parsed JSON or \
         form data, or re-encoded, no longer matches",
    );
    false
}

/// A signature shortened for display: its version prefix (`v0=`, `sha256=`, `v1,`) and the
/// first 8 characters after it.
pub(crate) fn fingerprint(sig: &str) -> String {
    let start = sig.find(['=', ',']).filter(|&i| i < 8).map_or(0, |i| i + 1);
    let shown: String = sig.chars().take(start + 8).collect();
    if sig.chars().count() > start + 8 {
        format!("{shown}…")
    } else {
        shown
    }
}

/// Test support, shared by the unit tests here and the integration tests: loads conformance
/// file `name` from `../shared/conformance/` beside the crate, or from
/// `$HARK_CONFORMANCE_DIR`. When it is missing this panics under CI (env `CI` set) and
/// otherwise prints why and returns `None`, so the caller skips.
#[doc(hidden)]
pub fn conformance(name: &str) -> Option<serde_json::Value> {
    use std::path::PathBuf;
    let default = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance"
    ))
    .join(name);
    let mut tried = vec![default];
    if let Ok(dir) = std::env::var("HARK_CONFORMANCE_DIR") {
        tried.push(PathBuf::from(dir).join(name));
    }
    for path in &tried {
        if let Ok(text) = std::fs::read_to_string(path) {
            match serde_json::from_str(&text) {
                Ok(value) => return Some(value),
                Err(e) => panic!("{} is not valid JSON: {e}", path.display()),
            }
        }
    }
    let msg = format!(
        "conformance file not found at {} (set HARK_CONFORMANCE_DIR)",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::Value;

    fn conformance() -> Option<Value> {
        super::conformance("webhooks.json")
    }

    fn s<'a>(case: &'a Value, key: &str) -> &'a str {
        case[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: string field {key}", case["name"]))
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("test header value"));
        }
        h
    }

    /// Every published vector through every verifier that applies, plus `explain`, which must
    /// agree with the verifier.
    #[test]
    fn conformance_vectors() {
        let Some(doc) = conformance() else { return };
        let mut counts = std::collections::BTreeMap::new();

        for case in doc["slack"].as_array().expect("slack cases") {
            let ts = case["timestamp"].as_i64().expect("timestamp");
            let now = case["now"].as_i64().unwrap_or(ts);
            let h = headers(&[
                (slack::TIMESTAMP, ts.to_string()),
                (
                    slack::SIGNATURE,
                    s(case, "header_x_slack_signature").to_string(),
                ),
            ]);
            let secret = s(case, "signing_secret");
            let body = s(case, "body").as_bytes();
            let valid = case["valid"].as_bool().expect("valid");
            let got = slack::verify(&[secret], &h, body, now);
            assert_eq!(got.is_ok(), valid, "{}: {got:?}", case["name"]);
            let report = explain(Kind::Channel("slack"), secret.as_bytes(), &h, body, now);
            assert_eq!(
                report.verdict,
                Some(verdict_of(&got)),
                "{}: explain agrees",
                case["name"]
            );
            *counts.entry("slack").or_insert(0) += 1;
        }

        for case in doc["github"].as_array().expect("github cases") {
            let sig = s(case, "header_x_hub_signature_256");
            let h = headers(&[(github::SIGNATURE_256, sig.to_string())]);
            let secret = s(case, "secret");
            let body = s(case, "body").as_bytes();
            let valid = case["valid"].as_bool().expect("valid");
            // GitHub signs no timestamp; any clock must give the same answer.
            for now in [0, 1_700_000_000, i64::MAX] {
                let got = github::verify(&[secret], &h, body, now);
                assert_eq!(got.is_ok(), valid, "{}: {got:?}", case["name"]);
            }
            // The same header is a plain sha256 payload HMAC with the `sha256=` prefix.
            let plain = hmac::verify_signature(hmac::Algorithm::Sha256, &[secret], sig, body);
            assert_eq!(plain.is_ok(), valid, "{} as hmac-sha256", case["name"]);
            let report = explain(Kind::Channel("github"), secret.as_bytes(), &h, body, 0);
            assert_eq!(report.passed(), valid, "{}: explain", case["name"]);
            *counts.entry("github").or_insert(0) += 1;
        }

        for case in doc["standard_webhooks"].as_array().expect("standard cases") {
            let ts = case["webhook_timestamp"]
                .as_i64()
                .expect("webhook_timestamp");
            let now = case["now"].as_i64().unwrap_or(ts);
            let h = headers(&[
                (standard::ID, s(case, "webhook_id").to_string()),
                (standard::TIMESTAMP, ts.to_string()),
                (
                    standard::SIGNATURE,
                    s(case, "webhook_signature").to_string(),
                ),
            ]);
            let secret = s(case, "secret");
            let body = s(case, "body").as_bytes();
            let valid = case["valid"].as_bool().expect("valid");
            let got = standard::verify(&[secret], &h, body, now);
            assert_eq!(got.is_ok(), valid, "{}: {got:?}", case["name"]);
            if let Ok(v) = &got {
                assert_eq!(v.id.as_deref(), Some(s(case, "webhook_id")));
                assert_eq!(v.timestamp, Some(ts));
            }
            let report = explain(Kind::Channel("standard"), secret.as_bytes(), &h, body, now);
            assert_eq!(
                report.verdict,
                Some(verdict_of(&got)),
                "{}: explain agrees",
                case["name"]
            );
            *counts.entry("standard_webhooks").or_insert(0) += 1;
        }

        eprintln!("conformance cases run: {counts:?}");
        for platform in ["slack", "github", "standard_webhooks"] {
            assert!(
                counts.get(platform).copied().unwrap_or(0) > 0,
                "no {platform} cases"
            );
        }
    }

    #[test]
    fn window_bounds_both_directions() {
        let t = 1_000_000;
        assert!(check_window(t, t, 300).is_ok());
        assert!(check_window(t, t + 300, 300).is_ok());
        assert!(check_window(t, t - 300, 300).is_ok());
        assert_eq!(
            check_window(t, t + 301, 300),
            Err(VerifyError::Stale {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check_window(t, t - 301, 300),
            Err(VerifyError::Future {
                ahead_secs: 301,
                tolerance_secs: 300
            })
        );
        // Extremes do not overflow.
        assert!(matches!(
            check_window(i64::MIN, i64::MAX, 300),
            Err(VerifyError::Stale { .. })
        ));
        assert!(matches!(
            check_window(i64::MAX, i64::MIN, 300),
            Err(VerifyError::Future { .. })
        ));
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn reasons_are_stable_and_free_of_secrets() {
        let errors = [
            VerifyError::NoSecrets,
            VerifyError::BadSecret {
                index: 1,
                problem: "empty",
            },
            VerifyError::MissingHeader { header: "x".into() },
            VerifyError::DuplicateHeader { header: "x".into() },
            VerifyError::malformed("x", "not hexadecimal"),
            VerifyError::Stale {
                age_secs: 1,
                tolerance_secs: 0,
            },
            VerifyError::Future {
                ahead_secs: 1,
                tolerance_secs: 0,
            },
            VerifyError::UnsupportedVersion { header: "x".into() },
            VerifyError::Mismatch,
        ];
        let reasons: std::collections::BTreeSet<_> = errors.iter().map(|e| e.reason()).collect();
        assert_eq!(
            reasons.len(),
            errors.len(),
            "each variant has its own reason"
        );
        assert!(reasons
            .iter()
            .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        assert_eq!(VerifyError::Mismatch.class(), ErrorClass::Unauthenticated);
        assert_eq!(VerifyError::NoSecrets.class(), ErrorClass::Misconfigured);
        assert_eq!(
            VerifyError::malformed("x", "y").class(),
            ErrorClass::Malformed
        );
    }

    #[test]
    fn fingerprints_keep_prefix_and_eight_characters() {
        assert_eq!(fingerprint("v0=0123456789abcdef"), "v0=01234567…");
        assert_eq!(fingerprint("v1,ABCDEFGHIJ="), "v1,ABCDEFGH…");
        assert_eq!(fingerprint("sha256=0123456789"), "sha256=01234567…");
        assert_eq!(fingerprint("0123456789abcdef"), "01234567…");
        assert_eq!(fingerprint("v0=0123"), "v0=0123");
        assert_eq!(fingerprint(""), "");
    }

    #[test]
    fn kind_parses_and_round_trips() {
        for text in [
            "slack",
            "github",
            "standard",
            "discord",
            "teams",
            "telegram",
            "twilio",
            "hmac-sha1",
            "hmac-sha256",
            "hmac-sha512",
        ] {
            let kind: Kind = text.parse().expect(text);
            assert_eq!(kind.to_string(), text);
        }
        assert_eq!(
            "Standard-Webhooks".parse::<Kind>(),
            Ok(Kind::Channel("standard"))
        );
        assert_eq!(
            "hmac-sha256:X-Signature".parse::<Kind>(),
            Ok(Kind::Hmac {
                algorithm: hmac::Algorithm::Sha256,
                header: Some("X-Signature".into())
            })
        );
        for bad in [
            "",
            "gitlab",
            "hmac-md5",
            "hmac-",
            "slack:X",
            "hmac-sha1:bad header",
        ] {
            assert!(bad.parse::<Kind>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn explain_slack_reports_each_step_and_hints() {
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=abc&text=hi";
        let ts = 1_531_420_618;
        let sig = slack::sign(secret, ts, body);
        let h = headers(&[(slack::TIMESTAMP, ts.to_string()), (slack::SIGNATURE, sig)]);

        let ok = explain(Kind::Channel("slack"), secret, &h, body, ts + 10);
        assert!(ok.passed(), "{ok}");
        assert!(ok.steps.iter().all(|s| s.status != Status::Fail), "{ok}");
        assert!(ok.to_string().ends_with("result: PASS (secret #0)"), "{ok}");

        // A body file saved with a trailing newline: the report says so.
        let with_newline = [&body[..], b"\n"].concat();
        let bad = explain(Kind::Channel("slack"), secret, &h, &with_newline, ts);
        assert!(!bad.passed());
        let text = bad.to_string();
        assert!(text.contains("trailing newline"), "{text}");
        assert!(text.contains("signature_mismatch"), "{text}");
        // Only fingerprints of signatures are shown, never a whole one.
        let full = slack::sign(secret, ts, &with_newline);
        assert!(!text.contains(&full[3..]), "{text}");

        // Stale: the window fails, the signature is still checked, and --at is suggested.
        let stale = explain(Kind::Channel("slack"), secret, &h, body, ts + 3600);
        let text = stale.to_string();
        assert!(!stale.passed());
        assert!(text.contains("--at 1531420618"), "{text}");
        assert!(text.contains("signature matches"), "{text}");
    }

    #[test]
    fn explain_hints_at_whitespace_in_secret() {
        let body = b"{}";
        let sig = github::sign(b"s3cret", body);
        let h = headers(&[(github::SIGNATURE_256, sig)]);
        let r = explain(Kind::Channel("github"), b"s3cret\n", &h, body, 0);
        assert!(!r.passed());
        assert!(
            r.to_string()
                .contains("whitespace around the secret is removed"),
            "{r}"
        );
    }

    #[test]
    fn explain_missing_headers_fails_cleanly() {
        let h = HeaderMap::new();
        for kind in ["slack", "github", "standard", "hmac-sha256"] {
            let r = explain(kind.parse().expect("kind"), b"k", &h, b"{}", 0);
            assert!(!r.passed(), "{kind}");
            assert!(
                r.steps.iter().any(|s| s.status == Status::Fail),
                "{kind}: {r}"
            );
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    /// Header values: arbitrary bytes (kept when `http` accepts them), and near-misses of
    /// each scheme's syntax, which reach deeper into the parsers.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            "(v0=|sha256=|sha1=|sha512=|v1,|v2,|whsec_)?[0-9a-fA-F]{0,130}"
                .prop_map(String::into_bytes),
            "(v1,[A-Za-z0-9+/=]{0,50} ?){0,4}".prop_map(String::into_bytes),
            "[0-9]{0,25}".prop_map(String::into_bytes),
            "[ -~]{0,80}".prop_map(String::into_bytes),
        ]
    }

    fn names() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just(slack::SIGNATURE),
            Just(slack::TIMESTAMP),
            Just(github::SIGNATURE_256),
            Just(standard::ID),
            Just(standard::TIMESTAMP),
            Just(standard::SIGNATURE),
            Just("x-signature"),
            Just("x-sig"),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn no_input_panics(
            pairs in proptest::collection::vec((names(), header_value()), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            secret in proptest::collection::vec(any::<u8>(), 0..40),
            now in prop_oneof![any::<i64>(), 1_600_000_000i64..1_700_000_000],
            whsec in any::<bool>(),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in &pairs {
                if let Ok(v) = HeaderValue::from_bytes(value) {
                    headers.append(HeaderName::from_static(name), v);
                }
            }
            let mut secrets = vec![secret.clone(), b"fixed".to_vec()];
            if whsec {
                secrets.push([&b"whsec_"[..], &secret].concat());
            }
            let _ = slack::verify(&secrets, &headers, &body, now);
            let _ = github::verify(&secrets, &headers, &body, now);
            let _ = standard::verify(&secrets, &headers, &body, now);
            for alg in [hmac::Algorithm::Sha1, hmac::Algorithm::Sha256, hmac::Algorithm::Sha512] {
                let _ = hmac::verify(alg, &secrets, &headers, "x-sig", &body);
                if let Some(Ok(text)) = headers.get("x-sig").map(|v| v.to_str()) {
                    let _ = hmac::verify_signature(alg, &secrets, text, &body);
                }
            }
            for kind in ["slack", "github", "standard", "hmac-sha1", "hmac-sha512:x-sig"] {
                let kind: Kind = kind.parse().expect("kind");
                let report = explain(kind, &secret, &headers, &body, now);
                let _ = report.to_string();
            }
            // Rules over the same random request.
            let rule: rules::Rule = serde_json::from_str(r#"{"or": [
                {"match": {"type": "payload-hmac-sha256", "secret": "s", "parameter": {"source": "header", "name": "x-sig"}}},
                {"match": {"type": "regex", "regex": "^v[01]", "parameter": {"source": "header", "name": "webhook-signature"}}},
                {"not": {"match": {"type": "value", "value": "x", "parameter": {"source": "payload", "name": "a.0.b"}}}},
                {"match": {"type": "ip-whitelist", "ip-range": "10.0.0.0/8 ::1"}}
            ]}"#).expect("rule");
            let payload = rules::parse_payload(&body);
            let req = rules::RuleRequest {
                headers: &headers,
                query: &[],
                body: &body,
                payload: payload.as_ref(),
                remote_ip: Some(std::net::IpAddr::from([10, 0, 0, 1])),
            };
            let _ = rule.evaluate(&req);
        }

        /// A correctly signed delivery verifies whatever the body bytes; one flipped bit fails.
        #[test]
        fn any_body_round_trips(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            flip in any::<prop::sample::Index>(),
            ts in 0i64..4_000_000_000,
        ) {
            let mut h = HeaderMap::new();
            let sig = slack::sign(b"k", ts, &body);
            h.insert(slack::TIMESTAMP, HeaderValue::from(ts));
            h.insert(slack::SIGNATURE, HeaderValue::from_str(&sig).expect("ascii"));
            prop_assert!(slack::verify(&["k"], &h, &body, ts).is_ok());
            let sig = standard::sign(b"k", "msg_1", ts, &body).expect("raw secret");
            h.insert(standard::ID, HeaderValue::from_static("msg_1"));
            h.insert(standard::TIMESTAMP, HeaderValue::from(ts));
            h.insert(standard::SIGNATURE, HeaderValue::from_str(&sig).expect("ascii"));
            prop_assert!(standard::verify(&["k"], &h, &body, ts).is_ok());
            h.insert(github::SIGNATURE_256, HeaderValue::from_str(&github::sign(b"k", &body)).expect("ascii"));
            prop_assert!(github::verify(&["k"], &h, &body, ts).is_ok());
            if !body.is_empty() {
                let mut changed = body.clone();
                changed[flip.index(body.len())] ^= 1;
                prop_assert_eq!(slack::verify(&["k"], &h, &changed, ts), Err(VerifyError::Mismatch));
                prop_assert_eq!(standard::verify(&["k"], &h, &changed, ts), Err(VerifyError::Mismatch));
                prop_assert_eq!(github::verify(&["k"], &h, &changed, ts), Err(VerifyError::Mismatch));
            }
        }
    }
}
