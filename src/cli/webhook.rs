//! `hark webhook verify`: a captured delivery (body file, headers, secret, the time) comes
//! in; the same check the gateway runs, explained step by step, goes out. Offline: no
//! gateway is needed. Exit status 0 only when the delivery verifies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::Output;
use crate::verify::{explain_request, Kind, Offline, Report};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Signature scheme: slack, github, standard, discord, teams, telegram, twilio, hmac-sha1|hmac-sha256|hmac-sha512
    /// (optionally `:HEADER-NAME`, e.g. hmac-sha256:X-Signature).
    #[arg(long)]
    pub kind: Kind,
    /// The secret (a Standard Webhooks secret with its whsec_ prefix).
    #[arg(
        long,
        conflicts_with_all = ["secret_file", "public_key"],
        required_unless_present_any = ["secret_file", "public_key"]
    )]
    pub secret: Option<String>,
    /// The URL Twilio called, query included, for `--kind twilio`.
    #[arg(long)]
    pub url: Option<String>,
    /// A Discord application's public key (hex), for `--kind discord`.
    #[arg(long, conflicts_with = "secret_file")]
    pub public_key: Option<String>,
    /// Read the secret from a file, used byte for byte.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// The body exactly as received (`-` for stdin).
    #[arg(long)]
    pub body: PathBuf,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Check as if the time were this (RFC 3339, or unix seconds); default now.
    #[arg(long)]
    pub at: Option<String>,
}

/// The body of `--body PATH`, or of standard input for `-`.
pub(crate) fn read_body(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading the body from standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading --body {}", path.display()))
    }
}

/// Prints a verifier's report as text or (`-o json`) JSON: one layout for both verifiers.
pub(crate) fn print_report(report: &Report, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
        Output::Table => println!("{report}"),
    }
    Ok(())
}

pub fn verify(args: VerifyArgs, output: Output) -> anyhow::Result<ExitCode> {
    let secret = match (&args.secret, &args.secret_file, &args.public_key) {
        (Some(s), _, _) | (None, None, Some(s)) => s.clone().into_bytes(),
        (None, Some(path), _) => std::fs::read(path)
            .with_context(|| format!("reading secret file {}", path.display()))?,
        (None, None, None) => bail!("give --secret, --secret-file or --public-key"),
    };
    let body = read_body(&args.body)?;
    let mut headers = HeaderMap::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("header {header:?} is not `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("header name {:?}", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("header value of {name}"))?;
        headers.append(name, value);
    }
    let now = match &args.at {
        Some(at) => crate::clock::parse_start(at)
            .with_context(|| format!("--at {at:?} is neither an RFC 3339 time nor unix seconds"))?,
        None => chrono::Utc::now(),
    };
    let request = Offline {
        secret: &secret,
        headers: &headers,
        body: &body,
        now: now.timestamp(),
        url: args.url.as_deref(),
    };
    let mut report = explain_request(args.kind, &request);
    report.at = args.at.is_some().then_some(now);
    print_report(&report, output)?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
