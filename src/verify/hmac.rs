//! Plain payload HMAC: raw body, secrets and a signature value (`sha256=<hex>`, bare hex, or
//! several comma-separated for rotation) in; [`Verified`] or [`VerifyError`] out.
//!
//! Semantics follow adnanh/webhook's `payload-hmac-sha1|sha256|sha512` match rules
//! (<https://github.com/adnanh/webhook/blob/master/docs/Hook-Rules.md#match-payload-hmac-sha1>):
//! the MAC is computed over the raw request body, the algorithm's `shaN=` prefix is optional,
//! and a comma-separated value holds several signatures of which one must match. Unlike
//! adnanh, hex is accepted in either case and several secrets may be configured.
//!
//! This file also computes the MACs for the other schemes ([`sign`]).

use std::fmt;
use std::str::FromStr;

use ::hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::{check_secrets, constant_time_eq, Report, Verified, VerifyError};

/// Headers tried, in order, by [`super::explain`] when `--kind hmac-*` names none.
pub const DEFAULT_HEADERS: &[&str] = &[
    "x-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-signature-256",
];

/// Hash function under the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The optional prefix of a signature value, e.g. `sha256=`.
    pub fn prefix(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1=",
            Algorithm::Sha256 => "sha256=",
            Algorithm::Sha512 => "sha512=",
        }
    }

    /// MAC length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix().trim_end_matches('='))
    }
}

impl FromStr for Algorithm {
    type Err = ();

    /// `sha1`, `sha256` or `sha512`, any case.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(()),
        }
    }
}

/// HMAC of the concatenation of `parts` under `key`.
pub fn sign(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha1 => mac::<Hmac<Sha1>>(key, parts),
        Algorithm::Sha256 => mac::<Hmac<Sha256>>(key, parts),
        Algorithm::Sha512 => mac::<Hmac<Sha512>>(key, parts),
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length (RFC 2104 §2 hashes long keys, pads short ones), so
    // `new_from_slice` cannot fail for `Hmac<_>`. Should it ever, the empty MAC returned
    // matches no signature, so the failure is closed, not open.
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The candidate signatures in a value: comma-separated, each trimmed, the algorithm's prefix
/// removed when present. `None` for a candidate that is not hex of the right length.
fn candidates(algorithm: Algorithm, value: &str) -> Vec<Option<Vec<u8>>> {
    value
        .split(',')
        .map(|part| {
            let part = part.trim();
            let digits = part.strip_prefix(algorithm.prefix()).unwrap_or(part);
            if digits.len() != algorithm.output_len() * 2 {
                return None;
            }
            hex::decode(digits).ok()
        })
        .collect()
}

/// Checks a signature value (as taken from a header or query parameter) against the raw body.
pub fn verify_signature<S: AsRef<[u8]>>(
    algorithm: Algorithm,
    secrets: &[S],
    signature: &str,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    verify_value(algorithm, secrets, "signature", signature, body)
}

/// Checks the signature in header `header` against the raw body.
pub fn verify<S: AsRef<[u8]>>(
    algorithm: Algorithm,
    secrets: &[S],
    headers: &HeaderMap,
    header: &str,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    check_secrets(secrets)?;
    let mut values = headers.get_all(header).iter();
    let value = values.next().ok_or_else(|| VerifyError::MissingHeader {
        header: header.to_ascii_lowercase().into(),
    })?;
    if values.next().is_some() {
        return Err(VerifyError::DuplicateHeader {
            header: header.to_ascii_lowercase().into(),
        });
    }
    let text = value
        .to_str()
        .map_err(|_| VerifyError::malformed(header.to_ascii_lowercase(), "not printable ASCII"))?;
    verify_value(algorithm, secrets, &header.to_ascii_lowercase(), text, body)
}

fn verify_value<S: AsRef<[u8]>>(
    algorithm: Algorithm,
    secrets: &[S],
    label: &str,
    value: &str,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    check_secrets(secrets)?;
    let label = label.to_string();
    if value.trim().is_empty() {
        return Err(VerifyError::malformed(label, "empty"));
    }
    let sent: Vec<Vec<u8>> = candidates(algorithm, value).into_iter().flatten().collect();
    if sent.is_empty() {
        return Err(VerifyError::malformed(
            label,
            "no signature of the expected hex length (optionally prefixed shaN=)",
        ));
    }
    // One MAC per secret, then compare it with every candidate: work grows with the header
    // length, not with header length times body length.
    for (secret_index, secret) in secrets.iter().enumerate() {
        let expected = sign(algorithm, secret.as_ref(), &[body]);
        if sent.iter().any(|s| constant_time_eq(s, &expected)) {
            return Ok(Verified {
                secret_index,
                timestamp: None,
                id: None,
            });
        }
    }
    Err(VerifyError::Mismatch)
}

pub(crate) fn explain_into(
    report: &mut Report,
    algorithm: Algorithm,
    header: Option<&str>,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) {
    let chosen = match header {
        Some(h) => Some(h.to_string()),
        None => {
            let found = DEFAULT_HEADERS.iter().find(|h| headers.contains_key(**h));
            if found.is_none() {
                report.fail(format!(
                    "no signature header: none of {} is present (name one with \
                     --kind hmac-{algorithm}:HEADER)",
                    DEFAULT_HEADERS.join(", ")
                ));
            }
            found.map(|h| h.to_string())
        }
    };
    let Some(name) = chosen else {
        super::conclude(
            report,
            Err(VerifyError::MissingHeader {
                header: "signature".into(),
            }),
        );
        return;
    };
    super::conclude(report, verify(algorithm, &[secret], headers, &name, body));
    let value = headers.get(&name).map(|v| v.to_str());
    let Some(Ok(value)) = value else {
        report.fail(match value {
            None => format!("header {name} is missing"),
            Some(_) => format!("header {name} is not printable ASCII"),
        });
        return;
    };
    let all = candidates(algorithm, value);
    let sent: Vec<Vec<u8>> = all.iter().flatten().cloned().collect();
    report.info(format!(
        "header {name}: {} signature(s), {} of them {} hex digits (prefix {} optional)",
        all.len(),
        sent.len(),
        algorithm.output_len() * 2,
        algorithm.prefix()
    ));
    if sent.is_empty() {
        report.fail(format!(
            "no usable hmac-{algorithm} signature in header {name}"
        ));
        return;
    }
    report.info(format!(
        "signed content: the raw body ({} bytes)",
        body.len()
    ));
    super::explain_mac(
        report,
        secret,
        body,
        &sent,
        |m| hex::encode(m),
        |k, b| sign(algorithm, k, &[b]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const BODY: &[u8] = b"{\"ref\":\"refs/heads/main\"}";

    fn hex_sig(alg: Algorithm, key: &[u8]) -> String {
        hex::encode(sign(alg, key, &[BODY]))
    }

    #[test]
    fn known_answers_rfc4231_case_2() {
        // RFC 4231 test case 2 ("Jefe"), and the RFC 2202 SHA-1 equivalent.
        let data: &[&[u8]] = &[b"what do ya want ", b"for nothing?"];
        assert_eq!(
            hex::encode(sign(Algorithm::Sha256, b"Jefe", data)),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(sign(Algorithm::Sha512, b"Jefe", data)),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        assert_eq!(
            hex::encode(sign(Algorithm::Sha1, b"Jefe", data)),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn each_algorithm_with_and_without_prefix() {
        for alg in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            let bare = hex_sig(alg, b"k");
            let prefixed = format!("{}{bare}", alg.prefix());
            assert!(
                verify_signature(alg, &["k"], &bare, BODY).is_ok(),
                "{alg} bare"
            );
            assert!(
                verify_signature(alg, &["k"], &prefixed, BODY).is_ok(),
                "{alg} prefixed"
            );
            assert!(
                verify_signature(alg, &["k"], &bare.to_uppercase(), BODY).is_ok(),
                "{alg} upper-case hex"
            );
            assert_eq!(
                verify_signature(alg, &["x"], &bare, BODY),
                Err(VerifyError::Mismatch)
            );
        }
        // A sha1 signature does not pass as sha256 (wrong length), nor the other way round.
        let sha1 = format!("sha1={}", hex_sig(Algorithm::Sha1, b"k"));
        assert!(verify_signature(Algorithm::Sha256, &["k"], &sha1, BODY).is_err());
        // The prefix must be the algorithm's own.
        let wrong_prefix = format!("sha512={}", hex_sig(Algorithm::Sha256, b"k"));
        assert!(verify_signature(Algorithm::Sha256, &["k"], &wrong_prefix, BODY).is_err());
    }

    #[test]
    fn comma_separated_signatures_and_several_secrets() {
        let alg = Algorithm::Sha256;
        let good = hex_sig(alg, b"new");
        let junk = "0".repeat(64);
        let value = format!("sha256={junk}, not-hex ,sha256={good}");
        assert!(verify_signature(alg, &["new"], &value, BODY).is_ok());
        // Rotation on our side: old and new secrets both accepted, a third refused.
        let by_old = hex_sig(alg, b"old");
        let v = verify_signature(alg, &["old", "new"], &good, BODY).expect("new");
        assert_eq!(v.secret_index, 1);
        let v = verify_signature(alg, &["old", "new"], &by_old, BODY).expect("old");
        assert_eq!(v.secret_index, 0);
        let third = hex_sig(alg, b"third");
        assert_eq!(
            verify_signature(alg, &["old", "new"], &third, BODY),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        let alg = Algorithm::Sha256;
        let good = hex_sig(alg, b"k");
        for bad in [
            "",
            "   ",
            ",",
            "sha256=",
            "zz",
            &good[1..],
            &format!("{good}0"),
            "sha256=xyz",
        ] {
            let got = verify_signature(alg, &["k"], bad, BODY);
            assert!(
                matches!(got, Err(VerifyError::MalformedHeader { .. })),
                "{bad:?}: {got:?}"
            );
        }
        let non_hex = format!("sha256={}", "g".repeat(64));
        assert!(verify_signature(alg, &["k"], &non_hex, BODY).is_err());
        assert_eq!(
            verify_signature::<&str>(alg, &[], &good, BODY),
            Err(VerifyError::NoSecrets)
        );
        assert!(matches!(
            verify_signature(alg, &[""], &good, BODY),
            Err(VerifyError::BadSecret { index: 0, .. })
        ));
    }

    #[test]
    fn header_form() {
        let alg = Algorithm::Sha512;
        let mut h = HeaderMap::new();
        assert!(matches!(
            verify(alg, &["k"], &h, "X-Signature", BODY),
            Err(VerifyError::MissingHeader { .. })
        ));
        h.insert(
            "x-signature",
            HeaderValue::from_bytes(b"sha512=\xff").expect("obs-text"),
        );
        // A header name that cannot exist is simply absent, not a panic.
        assert!(matches!(
            verify(alg, &["k"], &h, "bad name\n", BODY),
            Err(VerifyError::MissingHeader { .. })
        ));
        assert!(matches!(
            verify(alg, &["k"], &h, "X-Signature", BODY),
            Err(VerifyError::MalformedHeader { .. })
        ));
        let sig = format!("sha512={}", hex_sig(alg, b"k"));
        h.insert("x-signature", HeaderValue::from_str(&sig).expect("ascii"));
        assert!(verify(alg, &["k"], &h, "X-Signature", BODY).is_ok());
        h.append("x-signature", HeaderValue::from_static("sha512=00"));
        assert!(matches!(
            verify(alg, &["k"], &h, "X-Signature", BODY),
            Err(VerifyError::DuplicateHeader { .. })
        ));
    }

    #[test]
    fn raw_bytes_not_reserialised_json() {
        let raw = b"{ \"b\": 1,\n  \"a\": \"caf\\u00e9\" }";
        let sig = hex::encode(sign(Algorithm::Sha256, b"k", &[raw]));
        assert!(verify_signature(Algorithm::Sha256, &["k"], &sig, raw).is_ok());
        let parsed: serde_json::Value = serde_json::from_slice(raw).expect("json");
        let reserialised = serde_json::to_vec(&parsed).expect("json");
        assert_ne!(&reserialised[..], &raw[..]);
        assert_eq!(
            verify_signature(Algorithm::Sha256, &["k"], &sig, &reserialised),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn explain_uses_default_or_named_header() {
        let alg = Algorithm::Sha256;
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&hex_sig(alg, b"k")).expect("a"),
        );
        let kind = super::super::Kind::Hmac {
            algorithm: alg,
            header: None,
        };
        let r = super::super::explain(kind, b"k", &h, BODY, 0);
        assert!(r.passed(), "{r}");
        let kind = super::super::Kind::Hmac {
            algorithm: alg,
            header: Some("X-Other".into()),
        };
        let r = super::super::explain(kind, b"k", &h, BODY, 0);
        assert!(!r.passed(), "{r}");
        assert!(
            r.to_string().contains("x-other") || r.to_string().contains("X-Other"),
            "{r}"
        );
    }
}
