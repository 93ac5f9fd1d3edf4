//! `hark webhook verify`: a captured delivery (body file, headers, secret, the time) comes
//! in; the same check the gateway runs, explained step by step, goes out. Offline: no
//! gateway is needed. Exit status 0 only when the delivery verifies.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::verify::{explain, Kind};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Signature scheme: slack, github, standard, hmac-sha1|hmac-sha256|hmac-sha512
    /// (optionally `:HEADER-NAME`, e.g. hmac-sha256:X-Signature).
    #[arg(long)]
    pub kind: Kind,
    /// The secret (a Standard Webhooks secret with its whsec_ prefix).
    #[arg(
        long,
        conflicts_with = "secret_file",
        required_unless_present = "secret_file"
    )]
    pub secret: Option<String>,
    /// Read the secret from a file, used byte for byte.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// The body exactly as received (`-` for stdin).
    #[arg(long)]
    pub body: PathBuf,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Check as if the time were this (unix seconds); default now.
    #[arg(long)]
    pub at: Option<i64>,
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let secret = match (&args.secret, &args.secret_file) {
        (Some(s), _) => s.clone().into_bytes(),
        (None, Some(path)) => std::fs::read(path)
            .with_context(|| format!("reading secret file {}", path.display()))?,
        (None, None) => bail!("give --secret or --secret-file"),
    };
    let body = if args.body.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(&args.body)
            .with_context(|| format!("reading body file {}", args.body.display()))?
    };
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
    let now = args.at.unwrap_or_else(|| chrono::Utc::now().timestamp());
    let report = explain(args.kind, &secret, &headers, &body, now);
    println!("{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
