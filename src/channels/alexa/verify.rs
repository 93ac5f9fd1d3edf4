//! Alexa request verification: the raw body bytes and the signature headers in, a parsed
//! [`VerifiedRequest`] out, or a [`VerifyError`] naming the one check that refused it.
//!
//! Amazon's rules, "Host a custom skill as a web service", section "Verify that the request was
//! sent by Alexa":
//! <https://developer.amazon.com/en-US/docs/alexa/custom-skills/host-a-custom-skill-as-a-web-service.html#verify-request-sent-by-alexa>
//!
//! 1. `SignatureCertChainUrl` points into `https://s3.amazonaws.com/echo.api/` ([`check_cert_url`]).
//! 2. The PEM chain at that URL (downloaded once, then cached) has a leaf valid now, whose SAN
//!    holds `echo-api.amazon.com`, and which chains to a trusted root.
//! 3. `Signature-256` is the RSA PKCS#1 v1.5 SHA-256 signature of the raw body by that leaf
//!    (the legacy SHA-1 `Signature` only when [`VerifierConfig::allow_sha1_signature`] is on).
//! 4. `request.timestamp` is within 150 s of now (an hour for `AlexaSkillEvent.*`).
//! 5. The application id in the body is the configured skill's.
//!
//! Every check takes the time as an argument; nothing here reads the system clock.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lc_rs::signature::{ParsedPublicKey, UnparsedPublicKey};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use tokio::sync::RwLock;
use tracing::debug;

use super::types::RequestEnvelope;
use crate::verify::report::Report;

/// Header with the URL of the PEM certificate chain that signed the request.
pub const HEADER_CERT_CHAIN_URL: &str = "SignatureCertChainUrl";
/// Header with the base64 RSA PKCS#1 v1.5 SHA-256 signature of the body.
pub const HEADER_SIGNATURE_256: &str = "Signature-256";
/// Legacy header with the base64 RSA PKCS#1 v1.5 SHA-1 signature of the body.
pub const HEADER_SIGNATURE_SHA1: &str = "Signature";

/// The name the signing certificate must carry in its subject alternative names.
pub const ECHO_API_DOMAIN: &str = "echo-api.amazon.com";
/// The only host certificate chains are fetched from.
pub const CERT_URL_HOST: &str = "s3.amazonaws.com";
/// The path every certificate chain URL starts with (case-sensitive).
pub const CERT_URL_PATH_PREFIX: &str = "/echo.api/";

/// How far `request.timestamp` may be from now.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(150);
/// The tolerance for skill events (`AlexaSkillEvent.*`), which Amazon may deliver late.
pub const SKILL_EVENT_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(3600);
/// Default limit on downloading a certificate chain.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Default size limit of a certificate chain (download or file).
pub const DEFAULT_MAX_CHAIN_BYTES: usize = 256 * 1024;
/// Chains kept in memory; the cache is emptied when it would grow past this. Valid URLs all
/// point into Amazon's bucket, so in practice it holds one or two chains.
const MAX_CACHED_CHAINS: usize = 32;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a request was refused. [`VerifyError::reason`] gives a short stable string for logs;
/// no variant carries key or signature material.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent or empty.
    #[error("missing or empty header {0}")]
    MissingHeader(&'static str),
    /// `SignatureCertChainUrl` is not a URL Amazon signs from.
    #[error("bad {HEADER_CERT_CHAIN_URL}: {0}")]
    BadCertUrl(#[from] CertUrlError),
    /// The chain could not be downloaded or read.
    #[error("could not get the certificate chain: {0}")]
    CertFetch(#[from] FetchError),
    /// The chain is not a PEM list of X.509 certificates.
    #[error("bad certificate chain: {0}")]
    CertParse(String),
    /// The signing certificate's `notAfter` is before now.
    #[error("signing certificate expired at {not_after}")]
    CertExpired { not_after: DateTime<Utc> },
    /// The signing certificate's `notBefore` is after now.
    #[error("signing certificate is not valid before {not_before}")]
    CertNotYetValid { not_before: DateTime<Utc> },
    /// The signing certificate's SAN does not contain [`ECHO_API_DOMAIN`].
    #[error("signing certificate is not issued for {ECHO_API_DOMAIN}")]
    SanMissing,
    /// The chain does not lead to a trusted root (or is otherwise invalid for server auth).
    #[error("certificate chain is not trusted: {0}")]
    UntrustedChain(String),
    /// The signing certificate's key is not RSA.
    #[error("signing certificate does not hold an RSA key")]
    UnsupportedKey,
    /// The signature header is not base64.
    #[error("signature header is not valid base64")]
    BadSignatureEncoding,
    /// The signature does not verify over the body with the certificate's key.
    #[error("signature does not match the body")]
    SignatureMismatch,
    /// Only the SHA-1 `Signature` header was sent, and SHA-1 is switched off.
    #[error(
        "only a SHA-1 {HEADER_SIGNATURE_SHA1} header was sent and SHA-1 signatures are disabled"
    )]
    Sha1Disabled,
    /// `request.timestamp` is too far from now.
    #[error("request timestamp {timestamp} is {} (limit {limit_secs} s)", skew_words(*skew_secs))]
    TimestampOutOfRange {
        timestamp: DateTime<Utc>,
        skew_secs: i64,
        limit_secs: u64,
    },
    /// The application id in the body is not the configured skill's.
    #[error("{field} is {got:?}, not the configured skill id")]
    AppIdMismatch {
        field: &'static str,
        got: Option<String>,
    },
    /// The (correctly signed) body is not an Alexa request.
    #[error("request body is not an Alexa request: {0}")]
    MalformedBody(#[source] serde_json::Error),
    /// The verifier configuration is unusable (bad root PEM, HTTP client).
    #[error("verifier configuration: {0}")]
    Config(String),
}

/// A request's distance from the checking time in words: "42 s before", "3 h 5 min in
/// the future", "3302 days before".
fn skew_words(skew_secs: i64) -> String {
    let n = skew_secs.unsigned_abs();
    let amount = match n {
        0..=119 => format!("{n} s"),
        120..=7199 => format!("{} min", n / 60),
        7200..=172_799 => format!("{} h {} min", n / 3600, n % 3600 / 60),
        _ => format!("{} days", n / 86_400),
    };
    if skew_secs < 0 {
        format!("{amount} in the future")
    } else {
        format!("{amount} before the check time")
    }
}

impl VerifyError {
    /// A short stable identifier for log lines and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::BadCertUrl(e) => e.reason(),
            VerifyError::CertFetch(_) => "cert_fetch",
            VerifyError::CertParse(_) => "cert_parse",
            VerifyError::CertExpired { .. } => "cert_expired",
            VerifyError::CertNotYetValid { .. } => "cert_not_yet_valid",
            VerifyError::SanMissing => "cert_san_missing",
            VerifyError::UntrustedChain(_) => "cert_untrusted",
            VerifyError::UnsupportedKey => "cert_key_unsupported",
            VerifyError::BadSignatureEncoding => "bad_signature_encoding",
            VerifyError::SignatureMismatch => "signature_mismatch",
            VerifyError::Sha1Disabled => "sha1_disabled",
            VerifyError::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            VerifyError::AppIdMismatch { .. } => "app_id_mismatch",
            VerifyError::MalformedBody(_) => "malformed_body",
            VerifyError::Config(_) => "bad_config",
        }
    }
}

/// What is wrong with a `SignatureCertChainUrl`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertUrlError {
    #[error("not a URL: {0}")]
    Unparsable(String),
    #[error("scheme is not https")]
    Scheme,
    #[error("host is not {CERT_URL_HOST}")]
    Host,
    #[error("user information is not allowed")]
    UserInfo,
    #[error("port is not 443")]
    Port,
    #[error("path does not start with {CERT_URL_PATH_PREFIX}")]
    Path,
    #[error("percent-encoding is not allowed in the path")]
    PercentEncoded,
    #[error("backslashes and control characters are not allowed")]
    BadCharacter,
    #[error("query and fragment are not allowed")]
    QueryOrFragment,
    #[error("the path names no file")]
    NoFileName,
}

impl CertUrlError {
    /// A short stable identifier for log lines.
    pub fn reason(&self) -> &'static str {
        match self {
            CertUrlError::Unparsable(_) => "cert_url_unparsable",
            CertUrlError::Scheme => "cert_url_scheme",
            CertUrlError::Host => "cert_url_host",
            CertUrlError::UserInfo => "cert_url_userinfo",
            CertUrlError::Port => "cert_url_port",
            CertUrlError::Path => "cert_url_path",
            CertUrlError::PercentEncoded => "cert_url_percent_encoded",
            CertUrlError::BadCharacter => "cert_url_bad_character",
            CertUrlError::QueryOrFragment => "cert_url_query",
            CertUrlError::NoFileName => "cert_url_no_file",
        }
    }
}

/// Why a certificate chain could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("download failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("download answered HTTP {0}")]
    Status(u16),
    #[error("chain is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not in the certificate directory and downloads are off")]
    NotInCertDir(PathBuf),
}

// ---------------------------------------------------------------------------------------------
// Step 1: the certificate chain URL
// ---------------------------------------------------------------------------------------------

/// A `SignatureCertChainUrl` that passed [`check_cert_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertUrl {
    canonical: String,
    file_name: String,
}

impl CertUrl {
    /// `https://s3.amazonaws.com/echo.api/...` with dot segments resolved: what is fetched and
    /// the cache key.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The last path segment (`echo-api-cert-12.pem`), looked up in a certificate directory.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }
}

impl fmt::Display for CertUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

/// Checks a `SignatureCertChainUrl` as Amazon requires: scheme `https` and host
/// `s3.amazonaws.com` (any case), port 443 if given, and a path that, after resolving `.` and
/// `..`, starts with `/echo.api/` (exact case).
///
/// Decided on the raw string, because the `url` crate would already have normalised
/// percent-encoded dots and backslashes: any `%` in the path, a backslash, a control
/// character, user information, a query or a fragment are refused. The `url` crate then parses
/// the result as a second opinion.
pub fn check_cert_url(raw: &str) -> Result<CertUrl, CertUrlError> {
    if raw.chars().any(|c| c == '\\' || c.is_control() || c == ' ') {
        return Err(CertUrlError::BadCharacter);
    }
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| CertUrlError::Unparsable("no scheme".into()))?;
    if !scheme.eq_ignore_ascii_case("https") {
        return Err(CertUrlError::Scheme);
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path_and_more) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(CertUrlError::UserInfo);
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if !host.eq_ignore_ascii_case(CERT_URL_HOST) {
        return Err(CertUrlError::Host);
    }
    if port.is_some_and(|p| p != "443") {
        return Err(CertUrlError::Port);
    }
    if path_and_more.contains(['?', '#']) {
        return Err(CertUrlError::QueryOrFragment);
    }
    if path_and_more.contains('%') {
        return Err(CertUrlError::PercentEncoded);
    }
    let path = remove_dot_segments(path_and_more);
    if !path.starts_with(CERT_URL_PATH_PREFIX) {
        return Err(CertUrlError::Path);
    }
    let file_name = path.rsplit('/').next().unwrap_or_default();
    if file_name.is_empty() {
        return Err(CertUrlError::NoFileName);
    }

    // Second opinion from a real URL parser on the raw input.
    let parsed = url::Url::parse(raw).map_err(|e| CertUrlError::Unparsable(e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(CertUrlError::Scheme);
    }
    if parsed.host_str() != Some(CERT_URL_HOST) {
        return Err(CertUrlError::Host);
    }
    if parsed.port_or_known_default() != Some(443) {
        return Err(CertUrlError::Port);
    }
    if parsed.path() != path {
        return Err(CertUrlError::Unparsable(
            "path normalises differently".into(),
        ));
    }

    Ok(CertUrl {
        canonical: format!("https://{CERT_URL_HOST}{path}"),
        file_name: file_name.to_owned(),
    })
}

/// RFC 3986 section 5.2.4 on an absolute path (`""` becomes `/`).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if last {
                    // A trailing dot segment leaves a directory path ("/a/.." -> "/").
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Where certificate chains come from.
#[derive(Debug, Clone, Default)]
pub enum CertSource {
    /// Download from the checked URL (the default).
    #[default]
    Download,
    /// Use `dir/<last URL path segment>` when that file exists; otherwise download if
    /// `download_missing`, else refuse. For pinned or offline deployments.
    Dir {
        dir: PathBuf,
        download_missing: bool,
    },
    /// Always this PEM file, whatever the URL names (the CLI's `--cert-file`).
    File(PathBuf),
    /// Always this PEM chain, held in memory (tests of the HTTP layer).
    Pem(Arc<[u8]>),
}

/// Settings of a [`Verifier`]; [`VerifierConfig::build`] makes one.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Trust the Mozilla roots shipped in `webpki-roots` (default `true`).
    pub use_default_roots: bool,
    /// More trusted roots, DER (see [`parse_pem_chain`]).
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub cert_source: CertSource,
    /// Accept the legacy SHA-1 `Signature` header when `Signature-256` is absent
    /// (default `false`; only for replaying old recorded requests).
    pub allow_sha1_signature: bool,
    pub download_timeout: Duration,
    pub max_chain_bytes: usize,
    /// The client downloads go through; `None` builds one with `download_timeout`, HTTPS
    /// only and no redirects.
    pub http_client: Option<reqwest::Client>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            use_default_roots: true,
            extra_roots: Vec::new(),
            cert_source: CertSource::Download,
            allow_sha1_signature: false,
            download_timeout: DEFAULT_DOWNLOAD_TIMEOUT,
            max_chain_bytes: DEFAULT_MAX_CHAIN_BYTES,
            http_client: None,
        }
    }
}

/// Reads every `CERTIFICATE` block of a PEM file (other blocks are skipped).
pub fn parse_pem_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, VerifyError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::CertParse(format!("PEM: {e}")))?;
    if certs.is_empty() {
        return Err(VerifyError::CertParse("no certificate in PEM".into()));
    }
    Ok(certs)
}

impl VerifierConfig {
    /// Adds every certificate of a PEM file's contents as a trusted root.
    pub fn add_root_pem(&mut self, pem: &[u8]) -> Result<(), VerifyError> {
        self.extra_roots.extend(parse_pem_chain(pem)?);
        Ok(())
    }

    /// Checks the settings and makes the verifier.
    pub fn build(self) -> Result<Verifier, VerifyError> {
        let mut anchors: Vec<TrustAnchor<'static>> = Vec::new();
        if self.use_default_roots {
            anchors.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for der in &self.extra_roots {
            let anchor = webpki::anchor_from_trusted_cert(der)
                .map_err(|e| VerifyError::Config(format!("extra root: {e}")))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(VerifyError::Config("no trusted roots".into()));
        }
        let echo_api_name = ServerName::try_from(ECHO_API_DOMAIN)
            .map_err(|e| VerifyError::Config(e.to_string()))?;
        let http = match self.http_client {
            Some(client) => client,
            None => reqwest::Client::builder()
                .timeout(self.download_timeout)
                .connect_timeout(self.download_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .https_only(true)
                .build()
                .map_err(|e| VerifyError::Config(format!("HTTP client: {e}")))?,
        };
        Ok(Verifier {
            anchors,
            echo_api_name,
            source: self.cert_source,
            allow_sha1: self.allow_sha1_signature,
            max_chain_bytes: self.max_chain_bytes,
            http,
            cache: RwLock::new(HashMap::new()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Requests in, results out
// ---------------------------------------------------------------------------------------------

/// The three signature headers of a request, as strings.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub cert_chain_url: Option<String>,
    pub signature_256: Option<String>,
    pub signature_sha1: Option<String>,
}

impl fmt::Debug for SignatureHeaders {
    /// Shows the URL but only the presence of signatures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureHeaders")
            .field("cert_chain_url", &self.cert_chain_url)
            .field("signature_256", &self.signature_256.as_ref().map(|_| ".."))
            .field(
                "signature_sha1",
                &self.signature_sha1.as_ref().map(|_| ".."),
            )
            .finish()
    }
}

impl SignatureHeaders {
    /// Reads the headers through a lookup function (`name` is one of the `HEADER_*` constants;
    /// HTTP header names are case-insensitive, so the lookup should be too).
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            cert_chain_url: get(HEADER_CERT_CHAIN_URL).map(str::to_owned),
            signature_256: get(HEADER_SIGNATURE_256).map(str::to_owned),
            signature_sha1: get(HEADER_SIGNATURE_SHA1).map(str::to_owned),
        }
    }

    /// Reads the headers from an `http::HeaderMap` (the type axum and reqwest share).
    /// Non-UTF-8 values are kept lossily, so they fail their check instead of going missing.
    pub fn from_header_map(headers: &reqwest::header::HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Self {
            cert_chain_url: get(HEADER_CERT_CHAIN_URL),
            signature_256: get(HEADER_SIGNATURE_256),
            signature_sha1: get(HEADER_SIGNATURE_SHA1),
        }
    }
}

/// Which signature header authenticated the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// `Signature-256`.
    Sha256,
    /// Legacy `Signature`.
    Sha1,
}

impl SignatureAlgorithm {
    fn header(self) -> &'static str {
        match self {
            SignatureAlgorithm::Sha256 => HEADER_SIGNATURE_256,
            SignatureAlgorithm::Sha1 => HEADER_SIGNATURE_SHA1,
        }
    }
}

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    pub envelope: RequestEnvelope,
    pub signature: SignatureAlgorithm,
    /// The canonical chain URL that signed it.
    pub cert_url: String,
}

/// A parsed certificate chain, as cached. Validity is not cached: it is checked against the
/// clock on every request.
#[derive(Debug)]
struct Chain {
    /// Leaf first, then the intermediates (and maybe a root) as served.
    certs: Vec<CertificateDer<'static>>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    /// Unix seconds between which every certificate of `certs` is valid (the latest
    /// `notBefore`, the earliest `notAfter`); empty when they do not overlap.
    all_valid: (i64, i64),
    subject: String,
    /// The issuer of the last certificate served: the root the chain needs.
    top_issuer: String,
    dns_names: Vec<String>,
    /// PKCS#1 `RSAPublicKey` of the leaf, when its key is RSA.
    rsa_public_key: Option<Vec<u8>>,
    /// What the cached hot path ([`Verifier::verify`]) learnt once about this chain.
    checked: ChainChecks,
}

/// The time-independent outcomes of checks of one cached chain, kept so that a request
/// with a cached certificate costs one RSA verification (its body's) instead of three.
/// Only [`Verifier::verify`] uses them, on chains from its own cache, so the trust anchors
/// they were checked against are always the same.
#[derive(Debug, Default)]
struct ChainChecks {
    /// Set once the leaf's SAN was found to hold `echo-api.amazon.com`.
    san: OnceLock<()>,
    /// Set once the chain led to a trusted root. The path's signatures never change, and
    /// the only time-dependent part of the path check is each certificate's validity, so
    /// the result holds at any time within [`Chain::all_valid`]; outside it the whole
    /// check runs again.
    trusted: OnceLock<()>,
    /// The leaf's key parsed for SHA-256 and for SHA-1 signatures.
    sha256_key: OnceLock<Option<ParsedPublicKey>>,
    sha1_key: OnceLock<Option<ParsedPublicKey>>,
}

impl Chain {
    fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        let certs = parse_pem_chain(pem)?;
        // `parse_pem_chain` never returns an empty list, so `certs[0]` (here and below) exists.
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0])
            .map_err(|e| VerifyError::CertParse(format!("leaf certificate: {e}")))?;
        let time = |t: &x509_parser::time::ASN1Time| {
            DateTime::from_timestamp(t.timestamp(), 0)
                .ok_or_else(|| VerifyError::CertParse("validity date out of range".into()))
        };
        let validity = leaf.validity();
        let dns_names = match leaf.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(VerifyError::CertParse(format!("leaf SAN: {e}"))),
        };
        let spki = leaf.public_key();
        let rsa_public_key = (spki.algorithm.algorithm
            == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION)
            .then(|| spki.subject_public_key.data.to_vec());
        let mut all_valid = (i64::MIN, i64::MAX);
        let mut top_issuer = String::new();
        for (i, der) in certs.iter().enumerate() {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| VerifyError::CertParse(format!("certificate {i}: {e}")))?;
            top_issuer = cert.issuer().to_string();
            let validity = cert.validity();
            all_valid.0 = all_valid.0.max(validity.not_before.timestamp());
            all_valid.1 = all_valid.1.min(validity.not_after.timestamp());
        }
        Ok(Chain {
            not_before: time(&validity.not_before)?,
            not_after: time(&validity.not_after)?,
            all_valid,
            subject: leaf.subject().to_string(),
            top_issuer,
            dns_names,
            rsa_public_key,
            certs,
            checked: ChainChecks::default(),
        })
    }
}

/// Why webpki refused `chain`, in words: the missing root named (and how to trust it), the
/// dates of an expired certificate, else the error's name as a phrase ("unknown issuer")
/// rather than its debug form.
fn untrusted(error: &webpki::Error, chain: &Chain) -> String {
    let date = |t: &UnixTime| {
        DateTime::<Utc>::from_timestamp(t.as_secs() as i64, 0)
            .map(|d| d.to_string())
            .unwrap_or_else(|| "an unreadable date".to_owned())
    };
    match error {
        webpki::Error::UnknownIssuer => format!(
            "no trusted root issued its top certificate; the chain needs {} (add that root: alexa.trust_roots, or --root for `hark alexa verify`)",
            chain.top_issuer
        ),
        webpki::Error::CertExpired { time, not_after } => format!(
            "a certificate of the chain expired at {} (checked at {})",
            date(not_after),
            date(time)
        ),
        webpki::Error::CertNotValidYet { time, not_before } => format!(
            "a certificate of the chain is not valid before {} (checked at {})",
            date(not_before),
            date(time)
        ),
        other => phrase(&format!("{other:?}")),
    }
}

/// `InvalidSignatureForPublicKey { .. }` → "invalid signature for public key".
fn phrase(debug: &str) -> String {
    let name = debug.split([' ', '(', '{']).next().unwrap_or(debug);
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Verifies Alexa requests. Cheap to share (`Arc<Verifier>`); caches certificate chains.
pub struct Verifier {
    anchors: Vec<TrustAnchor<'static>>,
    echo_api_name: ServerName<'static>,
    source: CertSource,
    allow_sha1: bool,
    max_chain_bytes: usize,
    http: reqwest::Client,
    cache: RwLock<HashMap<String, Arc<Chain>>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("trust_anchors", &self.anchors.len())
            .field("source", &self.source)
            .field("allow_sha1", &self.allow_sha1)
            .field("max_chain_bytes", &self.max_chain_bytes)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Runs every check on a request, in Amazon's order, and stops at the first failure.
    /// `body` must be the exact bytes received; `now` is the current time (injected so tests
    /// and replays can set it).
    ///
    /// The checks are Amazon's, from
    /// <https://developer.amazon.com/en-US/docs/alexa/custom-skills/host-a-custom-skill-as-a-web-service.html#verify-request-sent-by-alexa>
    pub async fn verify(
        &self,
        headers: &SignatureHeaders,
        body: &[u8],
        now: DateTime<Utc>,
        expected_app_id: &str,
    ) -> Result<VerifiedRequest, VerifyError> {
        let raw_url = non_empty(&headers.cert_chain_url)
            .ok_or(VerifyError::MissingHeader(HEADER_CERT_CHAIN_URL))?;
        let (algorithm, signature) = self.pick_signature(headers)?;
        let url = check_cert_url(raw_url)?;
        let chain = self.chain(Some(&url)).await?;
        self.check_dates(&chain, now)?;
        if chain.checked.san.get().is_none() {
            self.check_san(&chain)?;
            let _ = chain.checked.san.set(());
        }
        self.check_trust_cached(&chain, now)?;
        check_signature_cached(&chain, algorithm, signature, body)?;
        let envelope = RequestEnvelope::from_slice(body).map_err(VerifyError::MalformedBody)?;
        check_timestamp(&envelope, now)?;
        check_app_id(&envelope, expected_app_id)?;
        Ok(VerifiedRequest {
            envelope,
            signature: algorithm,
            cert_url: url.canonical,
        })
    }

    /// Chooses `Signature-256` when present, else the SHA-1 `Signature` if allowed.
    fn pick_signature<'h>(
        &self,
        headers: &'h SignatureHeaders,
    ) -> Result<(SignatureAlgorithm, &'h str), VerifyError> {
        if let Some(sig) = non_empty(&headers.signature_256) {
            return Ok((SignatureAlgorithm::Sha256, sig));
        }
        match non_empty(&headers.signature_sha1) {
            Some(sig) if self.allow_sha1 => Ok((SignatureAlgorithm::Sha1, sig)),
            Some(_) => Err(VerifyError::Sha1Disabled),
            None => Err(VerifyError::MissingHeader(HEADER_SIGNATURE_256)),
        }
    }

    /// The chain for `url`, from the cache or the configured source. `url` may be `None`
    /// only for sources that do not need it (file, in-memory).
    async fn chain(&self, url: Option<&CertUrl>) -> Result<Arc<Chain>, VerifyError> {
        let key = url.map_or("", |u| u.as_str());
        if let Some(chain) = self.cache.read().await.get(key) {
            return Ok(Arc::clone(chain));
        }
        let pem = self.load_pem(url).await?;
        let chain = Arc::new(Chain::from_pem(&pem)?);
        debug!(channel = "alexa", url = key, subject = %chain.subject, "certificate chain loaded");
        let mut cache = self.cache.write().await;
        if cache.len() >= MAX_CACHED_CHAINS {
            cache.clear();
        }
        cache.insert(key.to_owned(), Arc::clone(&chain));
        Ok(chain)
    }

    async fn load_pem(&self, url: Option<&CertUrl>) -> Result<Vec<u8>, VerifyError> {
        let cap = self.max_chain_bytes;
        let need_url =
            || url.ok_or_else(|| VerifyError::CertParse("no valid certificate URL to load".into()));
        let pem = match &self.source {
            CertSource::Pem(pem) => pem.to_vec(),
            CertSource::File(path) => read_capped(path, cap).await?,
            CertSource::Dir {
                dir,
                download_missing,
            } => {
                let url = need_url()?;
                // The file name is the last segment of a checked URL: no `/`, `\`, `%`, and
                // never `.` or `..` (dot segments are resolved), so it stays inside `dir`.
                let path = dir.join(url.file_name());
                if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                    read_capped(&path, cap).await?
                } else if *download_missing {
                    download_capped(&self.http, url.as_str(), cap).await?
                } else {
                    return Err(FetchError::NotInCertDir(path).into());
                }
            }
            CertSource::Download => download_capped(&self.http, need_url()?.as_str(), cap).await?,
        };
        if pem.len() > cap {
            return Err(FetchError::TooLarge { limit: cap }.into());
        }
        Ok(pem)
    }

    /// Step 2a: the leaf is valid at `now`.
    fn check_dates(&self, chain: &Chain, now: DateTime<Utc>) -> Result<(), VerifyError> {
        if now < chain.not_before {
            return Err(VerifyError::CertNotYetValid {
                not_before: chain.not_before,
            });
        }
        if now > chain.not_after {
            return Err(VerifyError::CertExpired {
                not_after: chain.not_after,
            });
        }
        Ok(())
    }

    /// Step 2b: the leaf's SAN holds `echo-api.amazon.com` (webpki never falls back to CN).
    fn check_san(&self, chain: &Chain) -> Result<(), VerifyError> {
        let leaf = end_entity(chain)?;
        leaf.verify_is_valid_for_subject_name(&self.echo_api_name)
            .map_err(|_| VerifyError::SanMissing)
    }

    /// Step 2c: the chain leads from the leaf to a trusted root, for server authentication.
    fn check_trust(&self, chain: &Chain, now: DateTime<Utc>) -> Result<(), VerifyError> {
        let leaf = end_entity(chain)?;
        let secs = u64::try_from(now.timestamp()).unwrap_or(0);
        let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &chain.certs[1..],
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| VerifyError::UntrustedChain(untrusted(&e, chain)))
    }

    /// [`Verifier::check_trust`] once per chain of this verifier's cache, then only the
    /// validity dates of its certificates (see [`ChainChecks::trusted`]).
    fn check_trust_cached(&self, chain: &Chain, now: DateTime<Utc>) -> Result<(), VerifyError> {
        let secs = now.timestamp();
        let (from, until) = chain.all_valid;
        let within = from <= secs && secs <= until;
        if within && chain.checked.trusted.get().is_some() {
            return Ok(());
        }
        self.check_trust(chain, now)?;
        if within {
            let _ = chain.checked.trusted.set(());
        }
        Ok(())
    }

    /// Runs every check it can and reports each one, for `hark alexa verify`. Unlike
    /// [`Verifier::verify`] it does not stop at the first failure; checks that need something
    /// an earlier step could not provide are reported as skipped. `expected_app_id = None`
    /// skips the application id check.
    pub async fn diagnose(
        &self,
        headers: &SignatureHeaders,
        body: &[u8],
        now: DateTime<Utc>,
        expected_app_id: Option<&str>,
    ) -> Report {
        let mut report = Report::new("alexa");

        // Headers.
        let raw_url = non_empty(&headers.cert_chain_url);
        let signature = self.pick_signature(headers);
        let header_result = match (&raw_url, &signature) {
            (None, _) => Err(VerifyError::MissingHeader(HEADER_CERT_CHAIN_URL).to_string()),
            (Some(_), Err(e)) => Err(e.to_string()),
            (Some(_), Ok((alg, _))) => Ok(format!(
                "{HEADER_CERT_CHAIN_URL} and {} present",
                alg.header()
            )),
        };
        report.check(CHECK_HEADERS, header_result);

        // URL.
        let url = match raw_url {
            None => {
                report.skip(CHECK_CERT_URL, "no URL");
                None
            }
            Some(raw) => {
                let checked = check_cert_url(raw);
                report.check(
                    CHECK_CERT_URL,
                    checked
                        .as_ref()
                        .map(|u| format!("{u}"))
                        .map_err(|e| e.to_string()),
                );
                checked.ok()
            }
        };

        // Chain.
        let needs_url = matches!(self.source, CertSource::Download | CertSource::Dir { .. });
        let chain = if url.is_none() && needs_url {
            report.skip(CHECK_CERT_FETCH, "no valid URL to load the chain from");
            None
        } else {
            let loaded = self.chain(url.as_ref()).await;
            report.check(
                CHECK_CERT_FETCH,
                loaded
                    .as_ref()
                    .map(|c| format!("{} certificates, leaf {}", c.certs.len(), c.subject))
                    .map_err(|e| e.to_string()),
            );
            loaded.ok()
        };
        match &chain {
            None => {
                for name in [
                    CHECK_CERT_DATES,
                    CHECK_CERT_SAN,
                    CHECK_CERT_TRUST,
                    CHECK_SIGNATURE,
                ] {
                    report.skip(name, "no certificate chain");
                }
            }
            Some(chain) => {
                report.check_result(
                    CHECK_CERT_DATES,
                    self.check_dates(chain, now),
                    format!("valid {} to {}", chain.not_before, chain.not_after),
                );
                report.check_result(
                    CHECK_CERT_SAN,
                    self.check_san(chain),
                    format!("DNS names {:?}", chain.dns_names),
                );
                report.check_result(
                    CHECK_CERT_TRUST,
                    self.check_trust(chain, now),
                    format!("leads to a trusted root at {now}"),
                );
                match &signature {
                    Ok((alg, sig)) => {
                        let checked = check_signature(chain, *alg, sig, body);
                        // A common mix-up: Amazon's legacy SHA-1 header given as Signature-256.
                        let sha1_instead = *alg == SignatureAlgorithm::Sha256
                            && checked.is_err()
                            && check_signature(chain, SignatureAlgorithm::Sha1, sig, body).is_ok();
                        match checked {
                            Err(e) if sha1_instead => report.check(
                                CHECK_SIGNATURE,
                                Err(format!("{e}: it is a SHA-1 signature, Amazon's legacy {HEADER_SIGNATURE_SHA1} header (give it with --signature)")),
                            ),
                            checked => report.check_result(
                                CHECK_SIGNATURE,
                                checked,
                                format!("{} matches the body", alg.header()),
                            ),
                        }
                    }
                    Err(e) => report.check(CHECK_SIGNATURE, Err(e.to_string())),
                }
            }
        }

        // Body.
        match RequestEnvelope::from_slice(body) {
            Err(e) => {
                report.check(CHECK_BODY, Err(VerifyError::MalformedBody(e).to_string()));
                report.skip(CHECK_TIMESTAMP, "body did not parse");
                report.skip(CHECK_APP_ID, "body did not parse");
            }
            Ok(envelope) => {
                let r = &envelope.request;
                report.check(
                    CHECK_BODY,
                    Ok(format!(
                        "{} {} {}",
                        r.type_name(),
                        r.locale.as_deref().unwrap_or("-"),
                        r.request_id
                    )),
                );
                let skew = (now - r.timestamp).num_seconds();
                report.check_result(
                    CHECK_TIMESTAMP,
                    check_timestamp(&envelope, now),
                    format!("{} is {}", r.timestamp, skew_words(skew)),
                );
                match expected_app_id {
                    None => report.skip(
                        CHECK_APP_ID,
                        &format!(
                            "no skill id given; request is for {}",
                            envelope.application_id().unwrap_or("(none)")
                        ),
                    ),
                    Some(expected) => report.check_result(
                        CHECK_APP_ID,
                        check_app_id(&envelope, expected),
                        expected.to_owned(),
                    ),
                }
            }
        }
        report
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn end_entity(chain: &Chain) -> Result<webpki::EndEntityCert<'_>, VerifyError> {
    webpki::EndEntityCert::try_from(&chain.certs[0])
        .map_err(|e| VerifyError::CertParse(format!("leaf certificate: {e}")))
}

/// Step 3: the signature over the raw body verifies with the leaf's RSA key.
fn check_signature(
    chain: &Chain,
    algorithm: SignatureAlgorithm,
    signature_b64: &str,
    body: &[u8],
) -> Result<(), VerifyError> {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| VerifyError::BadSignatureEncoding)?;
    let key = chain
        .rsa_public_key
        .as_deref()
        .ok_or(VerifyError::UnsupportedKey)?;
    let params = match algorithm {
        SignatureAlgorithm::Sha256 => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        SignatureAlgorithm::Sha1 => {
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
    };
    UnparsedPublicKey::new(params, key)
        .verify(body, &signature)
        .map_err(|_| VerifyError::SignatureMismatch)
}

/// [`check_signature`] with the leaf's key parsed once per chain and algorithm.
fn check_signature_cached(
    chain: &Chain,
    algorithm: SignatureAlgorithm,
    signature_b64: &str,
    body: &[u8],
) -> Result<(), VerifyError> {
    let (cell, params) = match algorithm {
        SignatureAlgorithm::Sha256 => (
            &chain.checked.sha256_key,
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        ),
        SignatureAlgorithm::Sha1 => (
            &chain.checked.sha1_key,
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        ),
    };
    let key = cell.get_or_init(|| {
        let key = chain.rsa_public_key.as_deref()?;
        UnparsedPublicKey::new(params, key).parse().ok()
    });
    let Some(key) = key else {
        // No RSA key, or one aws-lc refuses: the uncached check names the reason.
        return check_signature(chain, algorithm, signature_b64, body);
    };
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| VerifyError::BadSignatureEncoding)?;
    key.verify_sig(body, &signature)
        .map_err(|_| VerifyError::SignatureMismatch)
}

/// Step 4: `request.timestamp` is close to `now`.
fn check_timestamp(envelope: &RequestEnvelope, now: DateTime<Utc>) -> Result<(), VerifyError> {
    let request = &envelope.request;
    let limit = if request.is_skill_event() {
        SKILL_EVENT_TIMESTAMP_TOLERANCE
    } else {
        TIMESTAMP_TOLERANCE
    };
    let skew = now - request.timestamp;
    let skew_ms = skew.num_milliseconds().unsigned_abs();
    if u128::from(skew_ms) > limit.as_millis() {
        return Err(VerifyError::TimestampOutOfRange {
            timestamp: request.timestamp,
            skew_secs: skew.num_seconds(),
            limit_secs: limit.as_secs(),
        });
    }
    Ok(())
}

/// Step 5: the request is for the configured skill.
fn check_app_id(envelope: &RequestEnvelope, expected: &str) -> Result<(), VerifyError> {
    const CONTEXT_FIELD: &str = "context.System.application.applicationId";
    const SESSION_FIELD: &str = "session.application.applicationId";
    // `context` names the skill in every request since 2018; older ones (and some event
    // requests) carry only the session's id, which must then be there and match.
    match (
        envelope.context_application_id(),
        envelope.session_application_id(),
    ) {
        (Some(context_id), _) if context_id != expected => {
            return Err(VerifyError::AppIdMismatch {
                field: CONTEXT_FIELD,
                got: Some(context_id.to_owned()),
            })
        }
        (None, None) => {
            return Err(VerifyError::AppIdMismatch {
                field: CONTEXT_FIELD,
                got: None,
            })
        }
        _ => {}
    }
    // Written without a let-chain so the module also builds on edition 2021.
    match envelope.session_application_id() {
        Some(session_id) if session_id != expected => Err(VerifyError::AppIdMismatch {
            field: SESSION_FIELD,
            got: Some(session_id.to_owned()),
        }),
        _ => Ok(()),
    }
}

async fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>, FetchError> {
    let io = |source| FetchError::Io {
        path: path.to_owned(),
        source,
    };
    let len = tokio::fs::metadata(path).await.map_err(io)?.len();
    if len > cap as u64 {
        return Err(FetchError::TooLarge { limit: cap });
    }
    tokio::fs::read(path).await.map_err(io)
}

/// GETs `url`, refusing non-2xx answers and bodies over `cap` bytes (checked while reading,
/// not only from `Content-Length`). The client's own timeout bounds the whole exchange.
async fn download_capped(
    client: &reqwest::Client,
    url: &str,
    cap: usize,
) -> Result<Vec<u8>, FetchError> {
    let mut response = client.get(url).send().await?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(FetchError::TooLarge { limit: cap });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Err(FetchError::TooLarge { limit: cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Diagnostic report
// ---------------------------------------------------------------------------------------------

/// Check names of the report of [`Verifier::diagnose`], in the order they appear.
pub const CHECK_HEADERS: &str = "headers";
pub const CHECK_CERT_URL: &str = "cert_url";
pub const CHECK_CERT_FETCH: &str = "cert_fetch";
pub const CHECK_CERT_DATES: &str = "cert_dates";
pub const CHECK_CERT_SAN: &str = "cert_san";
pub const CHECK_CERT_TRUST: &str = "cert_chain_trust";
pub const CHECK_SIGNATURE: &str = "signature";
pub const CHECK_BODY: &str = "body";
pub const CHECK_TIMESTAMP: &str = "timestamp";
pub const CHECK_APP_ID: &str = "application_id";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Test helpers shared with the sibling modules' tests and the integration tests.
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod test_support {
    use std::path::PathBuf;

    /// Environment variable naming the conformance directory when it is not at
    /// `CARGO_MANIFEST_DIR/../shared/conformance`.
    pub const CONFORMANCE_ENV: &str = "HARK_CONFORMANCE_DIR";

    /// The shared conformance directory, or `None` (after saying so) when it is missing
    /// outside CI. In CI (`CI` set) a missing directory fails the test.
    pub fn conformance_dir() -> Option<PathBuf> {
        let default = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/conformance"
        ));
        let from_env = std::env::var_os(CONFORMANCE_ENV).map(PathBuf::from);
        for dir in std::iter::once(default.clone()).chain(from_env.clone()) {
            if dir.join("alexa").is_dir() {
                return Some(dir);
            }
        }
        let looked = format!(
            "{} and ${CONFORMANCE_ENV} ({})",
            default.display(),
            from_env.map_or("unset".into(), |d| d.display().to_string())
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "conformance files not found at {looked}"
        );
        eprintln!("skipping: conformance files not found at {looked}");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::conformance_dir;
    use super::*;
    use crate::verify::report::Status;
    use chrono::TimeZone as _;
    use serde_json::json;
    use std::sync::OnceLock;

    /// Requests without `context` (Amazon's until 2018) name their skill in the session,
    /// as the ASK SDKs read it; a request naming no skill at all is refused.
    #[test]
    fn a_request_without_context_is_for_the_skill_its_session_names() {
        let request = json!({"type": "LaunchRequest", "requestId": "r1",
            "timestamp": "2017-11-20T10:00:00Z", "locale": "en-GB"});
        let envelope = |value: serde_json::Value| {
            RequestEnvelope::from_slice(value.to_string().as_bytes()).unwrap()
        };
        let with_session = |app: &str| {
            envelope(json!({"version": "1.0", "request": request,
                "session": {"new": true, "sessionId": "s1",
                    "application": {"applicationId": app}}}))
        };
        let mine = "amzn1.ask.skill.mine";
        assert!(check_app_id(&with_session(mine), mine).is_ok());
        assert_eq!(with_session(mine).application_id(), Some(mine));
        let other = check_app_id(&with_session("amzn1.ask.skill.other"), mine).unwrap_err();
        assert!(
            other.to_string().contains("amzn1.ask.skill.other"),
            "{other}"
        );
        let nameless = envelope(json!({"version": "1.0", "request": request}));
        assert!(check_app_id(&nameless, mine).is_err());
    }

    const REAL_APP_ID: &str = "amzn1.ask.skill.f5e6173c-8f7a-4c51-85e8-275e52d9443b";
    const APP_ID: &str = "amzn1.ask.skill.00000000-1111-2222-3333-444444444444";
    const GOOD_URL: &str = "https://s3.amazonaws.com/echo.api/echo-api-cert-12.pem";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    // --- Step 1: URLs ------------------------------------------------------------------------

    #[test]
    fn amazons_valid_urls_pass() {
        for (raw, canonical) in [
            (
                "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
                "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
            ),
            (
                "https://s3.amazonaws.com:443/echo.api/echo-api-cert.pem",
                "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
            ),
            (
                "https://s3.amazonaws.com/echo.api/../echo.api/echo-api-cert.pem",
                "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
            ),
            (
                "HTTPS://s3.AmAzOnAwS.cOm/echo.api/echo-api-cert.pem",
                "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
            ),
            (
                "https://s3.amazonaws.com/echo.api/./sub/../echo-api-cert-12.pem",
                "https://s3.amazonaws.com/echo.api/echo-api-cert-12.pem",
            ),
        ] {
            let url = check_cert_url(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(url.as_str(), canonical, "{raw}");
        }
        let url = check_cert_url(GOOD_URL).unwrap();
        assert_eq!(url.file_name(), "echo-api-cert-12.pem");
    }

    fn bad_urls() -> Vec<(&'static str, CertUrlError)> {
        use CertUrlError::*;
        vec![
            // Amazon's documented invalid examples.
            ("http://s3.amazonaws.com/echo.api/echo-api-cert.pem", Scheme),
            ("https://notamazon.com/echo.api/echo-api-cert.pem", Host),
            ("https://s3.amazonaws.com/EcHo.aPi/echo-api-cert.pem", Path),
            (
                "https://s3.amazonaws.com/invalid.path/echo-api-cert.pem",
                Path,
            ),
            (
                "https://s3.amazonaws.com:563/echo.api/echo-api-cert.pem",
                Port,
            ),
            // Traversal out of /echo.api/.
            ("https://s3.amazonaws.com/echo.api/../x", Path),
            (
                "https://s3.amazonaws.com/echo.api/../invalid.path/echo-api-cert.pem",
                Path,
            ),
            ("https://s3.amazonaws.com/echo.api/%2E%2E/x", PercentEncoded),
            ("https://s3.amazonaws.com/echo.api/%2e%2e/x", PercentEncoded),
            ("https://s3.amazonaws.com/echo.api/.%2e/x", PercentEncoded),
            ("https://s3.amazonaws.com/echo.api%2F..%2Fx", PercentEncoded),
            ("https://s3.amazonaws.com/echo.api\\..\\x", BadCharacter),
            ("https://s3.amazonaws.com/echo.api/..", Path),
            // Host look-alikes and other ports.
            (
                "https://s3.amazonaws.com.evil.com/echo.api/echo-api-cert.pem",
                Host,
            ),
            ("https://s3.amazonaws.com./echo.api/echo-api-cert.pem", Host),
            (
                "https://evil.com@s3.amazonaws.com/echo.api/echo-api-cert.pem",
                UserInfo,
            ),
            (
                "https://s3.amazonaws.com@evil.com/echo.api/echo-api-cert.pem",
                UserInfo,
            ),
            (
                "https://s3.amazonaws.com:80/echo.api/echo-api-cert.pem",
                Port,
            ),
            ("https://s3.amazonaws.com:/echo.api/echo-api-cert.pem", Port),
            (
                "https://s3.amazonaws.com:0443/echo.api/echo-api-cert.pem",
                Port,
            ),
            ("ftp://s3.amazonaws.com/echo.api/echo-api-cert.pem", Scheme),
            (
                "https://s3.amazonaws.com/echo.api/echo-api-cert.pem?x=1",
                QueryOrFragment,
            ),
            (
                "https://s3.amazonaws.com/echo.api/echo-api-cert.pem#x",
                QueryOrFragment,
            ),
            ("https://s3.amazonaws.com/echo.api/", NoFileName),
            ("https://s3.amazonaws.com", Path),
            (
                "s3.amazonaws.com/echo.api/echo-api-cert.pem",
                Unparsable("no scheme".into()),
            ),
            ("https://s3.amazonaws.com/echo.api/a b.pem", BadCharacter),
        ]
    }

    #[test]
    fn bad_urls_are_refused_for_the_right_reason() {
        for (raw, expected) in bad_urls() {
            assert_eq!(check_cert_url(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        assert_eq!(remove_dot_segments("/a/b/../c"), "/a/c");
        assert_eq!(remove_dot_segments("/a/./b"), "/a/b");
        assert_eq!(remove_dot_segments("/../a"), "/a");
        assert_eq!(remove_dot_segments("/a/.."), "/");
        assert_eq!(remove_dot_segments("/a/b/."), "/a/b/");
        assert_eq!(remove_dot_segments(""), "/");
        assert_eq!(remove_dot_segments("/a//b"), "/a//b");
    }

    // --- Real Amazon fixtures ----------------------------------------------------------------

    struct Real {
        body: Vec<u8>,
        headers: SignatureHeaders,
        dir: PathBuf,
    }

    fn real_2017() -> Option<Real> {
        let dir = conformance_dir()?.join("alexa");
        let r = dir.join("real-2017-11-20");
        let read = |name: &str| std::fs::read_to_string(r.join(name)).unwrap();
        Some(Real {
            body: std::fs::read(r.join("body.json")).unwrap(),
            headers: SignatureHeaders {
                cert_chain_url: Some(read("signature_cert_chain_url.txt").trim().to_owned()),
                signature_256: None,
                signature_sha1: Some(read("signature.b64").trim().to_owned()),
            },
            dir,
        })
    }

    fn real_2017_verifier(real: &Real, allow_sha1: bool) -> Verifier {
        let mut config = VerifierConfig {
            allow_sha1_signature: allow_sha1,
            cert_source: CertSource::Dir {
                dir: real.dir.join("real-2017-11-20"),
                download_missing: false,
            },
            ..VerifierConfig::default()
        };
        config
            .add_root_pem(
                &std::fs::read(real.dir.join("chains/verisign-class3-g5-root.pem")).unwrap(),
            )
            .unwrap();
        config.build().unwrap()
    }

    const REAL_NOW: &str = "2017-11-20T08:45:05Z";

    #[tokio::test]
    async fn real_2017_request_verifies() {
        let Some(real) = real_2017() else { return };
        let v = real_2017_verifier(&real, true);
        let ok = v
            .verify(&real.headers, &real.body, at(REAL_NOW), REAL_APP_ID)
            .await
            .unwrap();
        assert_eq!(ok.signature, SignatureAlgorithm::Sha1);
        assert_eq!(
            ok.cert_url,
            "https://s3.amazonaws.com/echo.api/echo-api-cert-5.pem"
        );
        assert_eq!(ok.envelope.request.type_name(), "IntentRequest");

        // The same through a cert file.
        let mut config = VerifierConfig {
            allow_sha1_signature: true,
            cert_source: CertSource::File(real.dir.join("real-2017-11-20/echo-api-cert-5.pem")),
            ..VerifierConfig::default()
        };
        config
            .add_root_pem(
                &std::fs::read(real.dir.join("chains/verisign-class3-g5-root.pem")).unwrap(),
            )
            .unwrap();
        let v = config.build().unwrap();
        v.verify(&real.headers, &real.body, at(REAL_NOW), REAL_APP_ID)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn real_2017_request_refused_when_one_byte_changes() {
        let Some(real) = real_2017() else { return };
        let v = real_2017_verifier(&real, true);
        // Every position matters, including the leading space and the newlines.
        for i in [0, 1, real.body.len() / 2, real.body.len() - 1] {
            let mut body = real.body.clone();
            body[i] = if body[i] == b' ' { b'\t' } else { b' ' };
            let err = v
                .verify(&real.headers, &body, at(REAL_NOW), REAL_APP_ID)
                .await
                .unwrap_err();
            assert!(
                matches!(err, VerifyError::SignatureMismatch),
                "byte {i}: {err}"
            );
        }
        // Re-serialising the (equal) JSON also breaks it: the raw bytes are what is signed.
        let value: serde_json::Value = serde_json::from_slice(&real.body).unwrap();
        let reserialised = serde_json::to_vec(&value).unwrap();
        let err = v
            .verify(&real.headers, &reserialised, at(REAL_NOW), REAL_APP_ID)
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::SignatureMismatch), "{err}");
    }

    #[tokio::test]
    async fn real_2017_request_refused_an_hour_later() {
        let Some(real) = real_2017() else { return };
        let v = real_2017_verifier(&real, true);
        let err = v
            .verify(
                &real.headers,
                &real.body,
                at("2017-11-20T09:45:05Z"),
                REAL_APP_ID,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::TimestampOutOfRange {
                    skew_secs: 3603,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.reason(), "timestamp_out_of_range");
        // And years later the certificate itself has expired.
        let err = v
            .verify(
                &real.headers,
                &real.body,
                at("2019-01-01T00:00:00Z"),
                REAL_APP_ID,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::CertExpired { .. }), "{err}");
    }

    #[tokio::test]
    async fn real_2017_request_refused_with_sha1_off_by_default() {
        let Some(real) = real_2017() else { return };
        assert!(!VerifierConfig::default().allow_sha1_signature);
        let v = real_2017_verifier(&real, false);
        let err = v
            .verify(&real.headers, &real.body, at(REAL_NOW), REAL_APP_ID)
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::Sha1Disabled), "{err}");
        assert_eq!(err.reason(), "sha1_disabled");
    }

    #[tokio::test]
    async fn real_2017_request_other_refusals() {
        let Some(real) = real_2017() else { return };
        let v = real_2017_verifier(&real, true);
        // Wrong skill.
        let err = v
            .verify(&real.headers, &real.body, at(REAL_NOW), APP_ID)
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::AppIdMismatch { .. }), "{err}");
        // Without the VeriSign root the chain is not trusted.
        let untrusting = VerifierConfig {
            allow_sha1_signature: true,
            cert_source: CertSource::Dir {
                dir: real.dir.join("real-2017-11-20"),
                download_missing: false,
            },
            ..VerifierConfig::default()
        }
        .build()
        .unwrap();
        let err = untrusting
            .verify(&real.headers, &real.body, at(REAL_NOW), REAL_APP_ID)
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::UntrustedChain(_)), "{err}");
        // A Signature-256 header is preferred: a bad one is not rescued by a good SHA-1 one.
        let mut both = real.headers.clone();
        both.signature_256 = Some(real.headers.signature_sha1.clone().unwrap());
        let err = v
            .verify(&both, &real.body, at(REAL_NOW), REAL_APP_ID)
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::SignatureMismatch), "{err}");
        // A URL whose file is not in the directory, with downloads off.
        let mut other = real.headers.clone();
        other.cert_chain_url =
            Some("https://s3.amazonaws.com/echo.api/echo-api-cert-99.pem".into());
        let err = v
            .verify(&other, &real.body, at(REAL_NOW), REAL_APP_ID)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::CertFetch(FetchError::NotInCertDir(_))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn real_2017_diagnosis_reports_every_check() {
        let Some(real) = real_2017() else { return };
        let v = real_2017_verifier(&real, true);
        let report = v
            .diagnose(&real.headers, &real.body, at(REAL_NOW), Some(REAL_APP_ID))
            .await;
        let names: Vec<_> = report
            .steps
            .iter()
            .map(|c| c.check.unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                CHECK_HEADERS,
                CHECK_CERT_URL,
                CHECK_CERT_FETCH,
                CHECK_CERT_DATES,
                CHECK_CERT_SAN,
                CHECK_CERT_TRUST,
                CHECK_SIGNATURE,
                CHECK_BODY,
                CHECK_TIMESTAMP,
                CHECK_APP_ID
            ]
        );
        assert!(report.passed(), "{report}");
        assert!(
            report.steps.iter().all(|c| c.status == Status::Pass),
            "{report}"
        );
        assert!(
            report
                .to_string()
                .contains("PASS  signature         Signature matches the body"),
            "{report}"
        );

        // An hour later, with a changed body and another skill id: every failure is listed,
        // and the checks that can still run still pass.
        let mut body = real.body.clone();
        body[0] = b'\n';
        let report = v
            .diagnose(
                &real.headers,
                &body,
                at("2017-11-20T09:45:05Z"),
                Some(APP_ID),
            )
            .await;
        assert!(!report.passed());
        let status = |name| report.get(name).unwrap().status;
        assert_eq!(status(CHECK_CERT_DATES), Status::Pass);
        assert_eq!(status(CHECK_CERT_TRUST), Status::Pass);
        assert_eq!(status(CHECK_SIGNATURE), Status::Fail);
        assert_eq!(status(CHECK_BODY), Status::Pass);
        assert_eq!(status(CHECK_TIMESTAMP), Status::Fail);
        assert_eq!(status(CHECK_APP_ID), Status::Fail);

        // A bad URL with a cert file still checks the chain; no app id is a skip.
        let config = VerifierConfig {
            cert_source: CertSource::File(real.dir.join("real-2017-11-20/echo-api-cert-5.pem")),
            ..VerifierConfig::default()
        };
        let v = config.build().unwrap();
        let mut headers = real.headers.clone();
        headers.cert_chain_url = Some("http://example.com/x.pem".into());
        let report = v.diagnose(&headers, &real.body, at(REAL_NOW), None).await;
        let status = |name| report.get(name).unwrap().status;
        assert_eq!(status(CHECK_HEADERS), Status::Fail, "sha1 is off: {report}");
        assert_eq!(status(CHECK_CERT_URL), Status::Fail);
        assert_eq!(status(CHECK_CERT_FETCH), Status::Pass);
        assert_eq!(
            status(CHECK_CERT_TRUST),
            Status::Fail,
            "no VeriSign root: {report}"
        );
        assert_eq!(status(CHECK_APP_ID), Status::Skip);
        let app_id_detail = &report.get(CHECK_APP_ID).unwrap().text;
        assert!(app_id_detail.contains(REAL_APP_ID), "{app_id_detail}");
    }

    fn chain_file(name: &str) -> Option<Chain> {
        let dir = conformance_dir()?.join("alexa/chains");
        Some(Chain::from_pem(&std::fs::read(dir.join(name)).unwrap()).unwrap())
    }

    fn default_roots() -> Verifier {
        VerifierConfig::default().build().unwrap()
    }

    fn check_whole_chain(
        v: &Verifier,
        chain: &Chain,
        now: DateTime<Utc>,
    ) -> Result<(), VerifyError> {
        v.check_dates(chain, now)?;
        v.check_san(chain)?;
        v.check_trust(chain, now)
    }

    #[test]
    fn current_amazon_chains_are_trusted_by_default_roots() {
        let v = default_roots();
        for (file, date) in [
            ("echo-api-cert-12.pem", "2023-06-01T00:00:00Z"),
            ("echo-api-cert-7.pem", "2020-01-01T00:00:00Z"),
            ("echo-api-cert-6-ats.pem", "2019-01-01T00:00:00Z"),
        ] {
            let Some(chain) = chain_file(file) else {
                return;
            };
            check_whole_chain(&v, &chain, at(date)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(chain.dns_names, ["echo-api.amazon.com"]);
            assert!(chain.rsa_public_key.is_some());
        }
        let Some(chain) = chain_file("echo-api-cert-12.pem") else {
            return;
        };
        let err = check_whole_chain(&v, &chain, at("2024-06-01T00:00:00Z")).unwrap_err();
        assert!(matches!(err, VerifyError::CertExpired { .. }), "{err}");
        let err = check_whole_chain(&v, &chain, at("2023-01-01T00:00:00Z")).unwrap_err();
        assert!(matches!(err, VerifyError::CertNotYetValid { .. }), "{err}");
    }

    #[test]
    fn expired_2015_chain_is_refused_as_expired() {
        let Some(chain) = chain_file("cert-expired-2015.pem") else {
            return;
        };
        let err =
            check_whole_chain(&default_roots(), &chain, at("2023-06-01T00:00:00Z")).unwrap_err();
        assert!(matches!(err, VerifyError::CertExpired { .. }), "{err}");
        assert_eq!(err.reason(), "cert_expired");
        assert_eq!(chain.not_after, at("2015-10-31T23:59:59Z"));
    }

    // --- Own PKI for Signature-256 -----------------------------------------------------------

    use super::super::testpki::{self, Pki};

    /// The test clock: inside every "valid" leaf below.
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    /// The shared test PKI (`testpki`), its validity judged at [`now`].
    fn pki() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| Pki::for_time(now()))
    }

    fn keys() -> &'static testpki::Keys {
        testpki::keys()
    }

    fn verifier_with(chain_pem: &str) -> Verifier {
        let mut config = VerifierConfig {
            use_default_roots: false,
            cert_source: CertSource::Pem(chain_pem.as_bytes().into()),
            ..VerifierConfig::default()
        };
        config.add_root_pem(pki().root_pem.as_bytes()).unwrap();
        config.build().unwrap()
    }

    fn body_at(timestamp: DateTime<Utc>) -> Vec<u8> {
        json!({
            "version": "1.0",
            "session": {"new": true, "sessionId": "s1", "application": {"applicationId": APP_ID},
                        "user": {"userId": "u1"}},
            "context": {"System": {"application": {"applicationId": APP_ID}, "user": {"userId": "u1"}}},
            "request": {"type": "LaunchRequest", "requestId": "r1", "locale": "en-US",
                        "timestamp": timestamp.to_rfc3339()}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(body: &[u8]) -> String {
        let key = &keys().leaf;
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            body,
            &mut sig,
        )
        .unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig)
    }

    fn signed(body: &[u8]) -> SignatureHeaders {
        SignatureHeaders {
            cert_chain_url: Some(GOOD_URL.into()),
            signature_256: Some(sign(body)),
            signature_sha1: None,
        }
    }

    async fn verify_good(
        headers: &SignatureHeaders,
        body: &[u8],
    ) -> Result<VerifiedRequest, VerifyError> {
        verifier_with(&pki().good_chain)
            .verify(headers, body, now(), APP_ID)
            .await
    }

    #[tokio::test]
    async fn signature_256_valid_request_passes() {
        let body = body_at(now() - chrono::Duration::seconds(2));
        let ok = verify_good(&signed(&body), &body).await.unwrap();
        assert_eq!(ok.signature, SignatureAlgorithm::Sha256);
        assert_eq!(ok.envelope.request.request_id, "r1");
        assert_eq!(ok.cert_url, GOOD_URL);
        // With a (wrong) SHA-1 header beside it, Signature-256 decides.
        let mut both = signed(&body);
        both.signature_sha1 = Some("AAAA".into());
        verify_good(&both, &body).await.unwrap();
    }

    #[tokio::test]
    async fn a_trusted_chain_is_checked_again_once_one_of_its_certificates_expires() {
        use chrono::Datelike as _;
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyUsagePurpose};
        // An intermediate that ends tomorrow, under the trusted test root, and a leaf
        // that outlives it.
        let root_key = testpki::rcgen_key(&keys().root);
        let leaf_key = testpki::rcgen_key(&keys().leaf);
        let root = Issuer::new(testpki::ca_params("Hark Test Root"), &root_key);
        let mut inter_params = testpki::ca_params("Hark Test Intermediate");
        let ends = now() + chrono::Duration::days(1);
        inter_params.not_after =
            rcgen::date_time_ymd(ends.year(), ends.month() as u8, ends.day() as u8);
        let inter_cert = inter_params.signed_by(&root_key, &root).unwrap();
        let inter = Issuer::new(inter_params, &root_key);
        let mut leaf = CertificateParams::new(vec![ECHO_API_DOMAIN.to_owned()]).unwrap();
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let leaf_cert = leaf.signed_by(&leaf_key, &inter).unwrap();
        let verifier = verifier_with(&format!("{}{}", leaf_cert.pem(), inter_cert.pem()));

        let body = body_at(now());
        verifier
            .verify(&signed(&body), &body, now(), APP_ID)
            .await
            .unwrap();
        // The chain is now known to be trusted; a changed body still fails its signature.
        let forged = String::from_utf8(body.clone()).unwrap().replace("r1", "r2");
        assert!(matches!(
            verifier
                .verify(&signed(&body), forged.as_bytes(), now(), APP_ID)
                .await,
            Err(VerifyError::SignatureMismatch)
        ));
        // Two days on the leaf is still valid but the intermediate is not: the whole path
        // check runs again and refuses the chain.
        let later = now() + chrono::Duration::days(2);
        let body = body_at(later);
        let refused = verifier.verify(&signed(&body), &body, later, APP_ID).await;
        assert!(
            matches!(refused, Err(VerifyError::UntrustedChain(_))),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn missing_or_empty_headers_are_refused() {
        let body = body_at(now());
        let full = signed(&body);
        let cases = [
            (
                SignatureHeaders {
                    cert_chain_url: None,
                    ..full.clone()
                },
                HEADER_CERT_CHAIN_URL,
            ),
            (
                SignatureHeaders {
                    cert_chain_url: Some(" ".into()),
                    ..full.clone()
                },
                HEADER_CERT_CHAIN_URL,
            ),
            (
                SignatureHeaders {
                    signature_256: None,
                    ..full.clone()
                },
                HEADER_SIGNATURE_256,
            ),
            (
                SignatureHeaders {
                    signature_256: Some(String::new()),
                    ..full.clone()
                },
                HEADER_SIGNATURE_256,
            ),
            (SignatureHeaders::default(), HEADER_CERT_CHAIN_URL),
        ];
        for (headers, missing) in cases {
            match verify_good(&headers, &body).await {
                Err(VerifyError::MissingHeader(name)) => assert_eq!(name, missing, "{headers:?}"),
                other => panic!("{headers:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn every_bad_url_form_is_refused_before_any_fetch() {
        let body = body_at(now());
        for (raw, expected) in bad_urls() {
            let headers = SignatureHeaders {
                cert_chain_url: Some(raw.into()),
                ..signed(&body)
            };
            match verify_good(&headers, &body).await {
                Err(VerifyError::BadCertUrl(e)) => assert_eq!(e, expected, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn chain_problems_are_refused() {
        let body = body_at(now());
        let headers = signed(&body);
        let p = pki();
        let run = |chain: &'static str| {
            let headers = headers.clone();
            let body = body.clone();
            async move {
                verifier_with(chain)
                    .verify(&headers, &body, now(), APP_ID)
                    .await
            }
        };
        let err = run(&p.rogue_chain).await.unwrap_err();
        assert!(matches!(err, VerifyError::UntrustedChain(_)), "{err}");
        assert_eq!(err.reason(), "cert_untrusted");
        let err = run(&p.expired_chain).await.unwrap_err();
        assert!(matches!(err, VerifyError::CertExpired { .. }), "{err}");
        let err = run(&p.future_chain).await.unwrap_err();
        assert!(matches!(err, VerifyError::CertNotYetValid { .. }), "{err}");
        let err = run(&p.no_san_chain).await.unwrap_err();
        assert!(matches!(err, VerifyError::SanMissing), "{err}");
        let err = run("not a pem").await.unwrap_err();
        assert!(matches!(err, VerifyError::CertParse(_)), "{err}");
        // Only the leaf, without its intermediate: no path to the root.
        let leaf_only: &'static str = p
            .good_chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap();
        let err = run(leaf_only).await.unwrap_err();
        assert!(matches!(err, VerifyError::UntrustedChain(_)), "{err}");
    }

    #[tokio::test]
    async fn signature_problems_are_refused() {
        let body = body_at(now());
        for (sig, want) in [
            ("not base64!", "bad_signature_encoding"),
            ("QUJD", "signature_mismatch"),
        ] {
            let headers = SignatureHeaders {
                signature_256: Some(sig.into()),
                ..signed(&body)
            };
            let err = verify_good(&headers, &body).await.unwrap_err();
            assert_eq!(err.reason(), want, "{sig}: {err}");
        }
        // A signature of another body.
        let other = body_at(now() - chrono::Duration::seconds(1));
        let err = verify_good(&signed(&other), &body).await.unwrap_err();
        assert!(matches!(err, VerifyError::SignatureMismatch), "{err}");
        // One byte changed.
        let headers = signed(&body);
        let mut changed = body.clone();
        let last = changed.len() - 1;
        changed[last] = b' ';
        let err = verify_good(&headers, &changed).await.unwrap_err();
        assert!(matches!(err, VerifyError::SignatureMismatch), "{err}");
        // A signature that verifies under SHA-256 is not accepted as SHA-1, even when allowed.
        let mut config = VerifierConfig {
            use_default_roots: false,
            allow_sha1_signature: true,
            cert_source: CertSource::Pem(pki().good_chain.as_bytes().into()),
            ..VerifierConfig::default()
        };
        config.add_root_pem(pki().root_pem.as_bytes()).unwrap();
        let sha1_only = SignatureHeaders {
            signature_256: None,
            signature_sha1: Some(sign(&body)),
            ..signed(&body)
        };
        let err = config
            .build()
            .unwrap()
            .verify(&sha1_only, &body, now(), APP_ID)
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::SignatureMismatch), "{err}");
        // With SHA-1 off, the SHA-1 header alone is refused as such.
        let err = verify_good(&sha1_only, &body).await.unwrap_err();
        assert!(matches!(err, VerifyError::Sha1Disabled), "{err}");
    }

    #[tokio::test]
    async fn timestamps_outside_150_seconds_are_refused() {
        for (offset, ok) in [
            (-150, true),
            (150, true),
            (-151, false),
            (151, false),
            (-3600, false),
            (3600, false),
        ] {
            let body = body_at(now() + chrono::Duration::seconds(offset));
            let result = verify_good(&signed(&body), &body).await;
            match (ok, result) {
                (true, Ok(_)) => {}
                (
                    false,
                    Err(VerifyError::TimestampOutOfRange {
                        skew_secs,
                        limit_secs: 150,
                        ..
                    }),
                ) => {
                    assert_eq!(skew_secs, -offset);
                }
                (_, other) => panic!("offset {offset}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn skill_events_get_an_hour() {
        let event = |offset: i64| {
            json!({
                "version": "1.0",
                "context": {"System": {"application": {"applicationId": APP_ID}}},
                "request": {"type": "AlexaSkillEvent.SkillEnabled", "requestId": "r1",
                            "timestamp": (now() + chrono::Duration::seconds(offset)).to_rfc3339(),
                            "eventCreationTime": "2025-03-01T11:00:00Z"}
            })
            .to_string()
            .into_bytes()
        };
        let body = event(-3000);
        verify_good(&signed(&body), &body).await.unwrap();
        let body = event(-3601);
        let err = verify_good(&signed(&body), &body).await.unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::TimestampOutOfRange {
                    limit_secs: 3600,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn wrong_application_ids_are_refused() {
        let mut value: serde_json::Value = serde_json::from_slice(&body_at(now())).unwrap();
        // Wrong id in context.
        value["context"]["System"]["application"]["applicationId"] = json!("amzn1.ask.skill.other");
        let body = value.to_string().into_bytes();
        let err = verify_good(&signed(&body), &body).await.unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::AppIdMismatch {
                    field: "context.System.application.applicationId",
                    ..
                }
            ),
            "{err}"
        );
        // Right id in context, wrong in session.
        value["context"]["System"]["application"]["applicationId"] = json!(APP_ID);
        value["session"]["application"]["applicationId"] = json!("amzn1.ask.skill.other");
        let body = value.to_string().into_bytes();
        let err = verify_good(&signed(&body), &body).await.unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::AppIdMismatch {
                    field: "session.application.applicationId",
                    ..
                }
            ),
            "{err}"
        );
        // No context at all (Amazon's requests until 2018): the session's id counts.
        value.as_object_mut().unwrap().remove("context");
        value["session"]["application"]["applicationId"] = json!(APP_ID);
        let body = value.to_string().into_bytes();
        verify_good(&signed(&body), &body).await.unwrap();
        value["session"]["application"]["applicationId"] = json!("amzn1.ask.skill.other");
        let body = value.to_string().into_bytes();
        let err = verify_good(&signed(&body), &body).await.unwrap_err();
        assert_eq!(err.reason(), "app_id_mismatch");
        // Neither context nor session: no skill named.
        value.as_object_mut().unwrap().remove("session");
        let body = value.to_string().into_bytes();
        let err = verify_good(&signed(&body), &body).await.unwrap_err();
        assert!(
            matches!(err, VerifyError::AppIdMismatch { got: None, .. }),
            "{err}"
        );
        // Expected id differs from the (consistent) body.
        let body = body_at(now());
        let err = verifier_with(&pki().good_chain)
            .verify(&signed(&body), &body, now(), "amzn1.ask.skill.mine")
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "app_id_mismatch");
    }

    #[tokio::test]
    async fn signed_garbage_is_malformed_not_forged() {
        let body = b"{\"request\": 1}".to_vec();
        let err = verify_good(&signed(&body), &body).await.unwrap_err();
        assert!(matches!(err, VerifyError::MalformedBody(_)), "{err}");
        assert_eq!(err.reason(), "malformed_body");
    }

    #[tokio::test]
    async fn cached_chains_are_still_checked_for_dates() {
        let dir = std::env::temp_dir().join(format!("hark-alexa-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("echo-api-cert-12.pem");
        std::fs::write(&file, &pki().good_chain).unwrap();
        let mut config = VerifierConfig {
            use_default_roots: false,
            cert_source: CertSource::Dir {
                dir: dir.clone(),
                download_missing: false,
            },
            ..VerifierConfig::default()
        };
        config.add_root_pem(pki().root_pem.as_bytes()).unwrap();
        let v = config.build().unwrap();
        let body = body_at(now());
        v.verify(&signed(&body), &body, now(), APP_ID)
            .await
            .unwrap();
        // The file is gone: the cached chain answers, through a dot-segment URL too.
        std::fs::remove_file(&file).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let mut headers = signed(&body);
        headers.cert_chain_url =
            Some("https://s3.amazonaws.com/echo.api/x/../echo-api-cert-12.pem".into());
        v.verify(&headers, &body, now(), APP_ID).await.unwrap();
        // A year later the cached leaf has expired, and that is noticed.
        let later = now() + chrono::Duration::days(365);
        let body = body_at(later);
        let err = v
            .verify(&signed(&body), &body, later, APP_ID)
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::CertExpired { .. }), "{err}");
    }

    #[tokio::test]
    async fn signature_256_diagnosis() {
        let body = body_at(now());
        let report = verifier_with(&pki().good_chain)
            .diagnose(&signed(&body), &body, now(), Some(APP_ID))
            .await;
        assert!(report.passed(), "{report}");
        let report = verifier_with(&pki().rogue_chain)
            .diagnose(&SignatureHeaders::default(), &body, now(), Some(APP_ID))
            .await;
        let status = |name| report.get(name).unwrap().status;
        assert_eq!(status(CHECK_HEADERS), Status::Fail);
        assert_eq!(status(CHECK_CERT_URL), Status::Skip);
        // An in-memory chain needs no URL.
        assert_eq!(status(CHECK_CERT_FETCH), Status::Pass);
        assert_eq!(status(CHECK_CERT_TRUST), Status::Fail);
        assert_eq!(status(CHECK_SIGNATURE), Status::Fail);
        assert_eq!(status(CHECK_TIMESTAMP), Status::Pass);
        // Download source without a URL cannot fetch anything.
        let v = VerifierConfig::default().build().unwrap();
        let report = v
            .diagnose(&SignatureHeaders::default(), b"nope", now(), None)
            .await;
        assert_eq!(report.get(CHECK_CERT_FETCH).unwrap().status, Status::Skip);
        assert_eq!(report.get(CHECK_SIGNATURE).unwrap().status, Status::Skip);
        assert_eq!(report.get(CHECK_BODY).unwrap().status, Status::Fail);
        assert!(!report.passed());
    }

    #[tokio::test]
    async fn verifier_is_shared_across_tasks() {
        let v = Arc::new(verifier_with(&pki().good_chain));
        let body = body_at(now());
        let headers = signed(&body);
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (v, headers, body) = (Arc::clone(&v), headers.clone(), body.clone());
                tokio::spawn(async move { v.verify(&headers, &body, now(), APP_ID).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    #[test]
    fn reasons_and_messages_hold_no_signature_material() {
        let headers = SignatureHeaders {
            cert_chain_url: Some(GOOD_URL.into()),
            signature_256: Some("SECRETSIG".into()),
            signature_sha1: Some("SECRETSIG1".into()),
        };
        assert!(!format!("{headers:?}").contains("SECRETSIG"));
        for e in [
            VerifyError::BadSignatureEncoding,
            VerifyError::SignatureMismatch,
            VerifyError::Sha1Disabled,
        ] {
            assert!(!e.to_string().contains("SECRET"));
            let reason = e.reason();
            let stable = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            assert!(reason.chars().all(stable), "{reason}");
        }
    }

    #[test]
    fn headers_from_a_header_map_ignore_case() {
        let mut map = reqwest::header::HeaderMap::new();
        map.insert("signaturecertchainurl", GOOD_URL.parse().unwrap());
        map.insert("SIGNATURE-256", "abc".parse().unwrap());
        let h = SignatureHeaders::from_header_map(&map);
        assert_eq!(h.cert_chain_url.as_deref(), Some(GOOD_URL));
        assert_eq!(h.signature_256.as_deref(), Some("abc"));
        assert_eq!(h.signature_sha1, None);
        let h =
            SignatureHeaders::from_lookup(|name| (name == HEADER_SIGNATURE_SHA1).then_some("s"));
        assert_eq!(h.signature_sha1.as_deref(), Some("s"));
        assert_eq!(h.cert_chain_url, None);
    }

    // --- Downloads ---------------------------------------------------------------------------

    /// Serves each connection `response` (after reading the request head), or, when `None`,
    /// reads and never answers. Bound to 127.0.0.1 only.
    async fn serve(response: Option<Vec<u8>>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    match response {
                        Some(r) => {
                            let _ = socket.write_all(&r).await;
                            let _ = socket.shutdown().await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        format!("http://{addr}/echo.api/echo-api-cert.pem")
    }

    fn http_response(status: &str, body: &[u8], content_length: bool) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {status}\r\nconnection: close\r\n").into_bytes();
        if content_length {
            r.extend(format!("content-length: {}\r\n", body.len()).into_bytes());
        }
        r.extend(b"\r\n");
        r.extend(body);
        r
    }

    fn test_client(timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder().timeout(timeout).build().unwrap()
    }

    #[tokio::test]
    async fn download_returns_the_body() {
        let url = serve(Some(http_response(
            "200 OK",
            pki().good_chain.as_bytes(),
            true,
        )))
        .await;
        let got = download_capped(
            &test_client(Duration::from_secs(5)),
            &url,
            DEFAULT_MAX_CHAIN_BYTES,
        )
        .await
        .unwrap();
        assert_eq!(got, pki().good_chain.as_bytes());
        Chain::from_pem(&got).unwrap();
    }

    #[tokio::test]
    async fn download_refuses_large_bodies_and_errors() {
        let client = test_client(Duration::from_secs(5));
        let big = vec![b'a'; 300 * 1024];
        for content_length in [true, false] {
            let url = serve(Some(http_response("200 OK", &big, content_length))).await;
            let err = download_capped(&client, &url, DEFAULT_MAX_CHAIN_BYTES)
                .await
                .unwrap_err();
            assert!(
                matches!(err, FetchError::TooLarge { .. }),
                "content-length {content_length}: {err}"
            );
        }
        let url = serve(Some(http_response("404 Not Found", b"no", true))).await;
        let err = download_capped(&client, &url, DEFAULT_MAX_CHAIN_BYTES)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Status(404)), "{err}");
    }

    #[tokio::test]
    async fn download_times_out() {
        let url = serve(None).await;
        let started = std::time::Instant::now();
        let err = download_capped(&test_client(Duration::from_millis(300)), &url, 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, FetchError::Http(e) if e.is_timeout()),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn oversized_cert_files_are_refused() {
        let path = std::env::temp_dir().join(format!("hark-alexa-big-{}.pem", std::process::id()));
        std::fs::write(&path, vec![b'a'; 2048]).unwrap();
        let err = read_capped(&path, 1024).await.unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, FetchError::TooLarge { limit: 1024 }), "{err}");
    }

    #[test]
    fn default_download_client_is_https_only() {
        // Built without error, with the documented defaults.
        let config = VerifierConfig::default();
        assert_eq!(config.download_timeout, Duration::from_secs(5));
        assert_eq!(config.max_chain_bytes, 256 * 1024);
        assert!(config.build().is_ok());
    }
}
