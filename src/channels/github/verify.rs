//! GitHub webhook signatures: raw body and `X-Hub-Signature-256` in, the matching webhook
//! secret's index (or why none matched) out.
//!
//! Spec: <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>.
//! The header is `sha256=` + hex HMAC-SHA256 of the raw body under the webhook secret. GitHub
//! signs no timestamp, so `now` plays no part and replays are caught, if at all, by the
//! `X-GitHub-Delivery` id. The legacy SHA-1 `X-Hub-Signature` is not accepted.

use http::HeaderMap;

use crate::verify::hmac::{sign as mac, Algorithm};
use crate::verify::{
    check_secrets, decode_prefixed_hex, single_header, Report, Verified, VerifyError,
};

/// `X-Hub-Signature-256`: `sha256=` and 64 hex digits.
pub const SIGNATURE_256: &str = "x-hub-signature-256";
/// `X-Hub-Signature`: the legacy SHA-1 signature, named only to explain its absence.
pub const SIGNATURE_SHA1: &str = "x-hub-signature";
/// `X-GitHub-Delivery`: a GUID per delivery (not signed).
pub const DELIVERY: &str = "x-github-delivery";
/// `X-GitHub-Event`: the event name, e.g. `push` (not signed).
pub const EVENT: &str = "x-github-event";

fn parse(headers: &HeaderMap) -> Result<Vec<u8>, VerifyError> {
    decode_prefixed_hex(
        SIGNATURE_256,
        single_header(headers, SIGNATURE_256)?,
        "sha256=",
        "does not start with sha256=",
        32,
        "expected sha256= and 64 hex digits",
    )
}

/// The `X-Hub-Signature-256` value GitHub would send for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(Algorithm::Sha256, secret, &[body]))
    )
}

/// Verifies a GitHub delivery against any of `secrets`. `now` is taken for the same shape as
/// the other schemes and is unused: GitHub signs no timestamp.
pub fn verify<S: AsRef<[u8]>>(
    secrets: &[S],
    headers: &HeaderMap,
    body: &[u8],
    _now: i64,
) -> Result<Verified, VerifyError> {
    check_secrets(secrets)?;
    let signature = parse(headers)?;
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    // ("use a constant time comparison").
    for (secret_index, secret) in secrets.iter().enumerate() {
        let expected = mac(Algorithm::Sha256, secret.as_ref(), &[body]);
        if crate::verify::constant_time_eq(&expected, &signature) {
            return Ok(Verified {
                secret_index,
                timestamp: None,
                id: None,
            });
        }
    }
    Err(VerifyError::Mismatch)
}

pub(crate) fn explain_into(report: &mut Report, secret: &[u8], headers: &HeaderMap, body: &[u8]) {
    crate::verify::conclude(report, verify(&[secret], headers, body, 0));
    let signature = match parse(headers) {
        Ok(sig) => {
            report.pass(format!("header {SIGNATURE_256}: sha256= and 64 hex digits"));
            sig
        }
        Err(e) => {
            report.fail(e.to_string());
            if headers.contains_key(SIGNATURE_SHA1) {
                report.hint(format!(
                    "only the legacy SHA-1 {SIGNATURE_SHA1} was given; GitHub sends both, \
                     pass {SIGNATURE_256} too"
                ));
            }
            return;
        }
    };
    report.info(format!(
        "signed content: the raw body ({} bytes); GitHub signs no timestamp",
        body.len()
    ));
    let shown = |m: &[u8]| format!("sha256={}", hex::encode(m));
    crate::verify::explain_mac(report, secret, body, &[signature], shown, |k, b| {
        mac(Algorithm::Sha256, k, &[b])
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_sig(sig: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            SIGNATURE_256,
            HeaderValue::from_bytes(sig).expect("header value"),
        );
        h
    }

    #[test]
    fn github_docs_example() {
        // From GitHub's "Validating webhook deliveries", independent of the conformance file.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn raw_bytes_are_what_is_signed() {
        // Escaped unicode, key order and whitespace as the sender wrote them.
        let raw = b"{\n  \"zen\": \"caf\\u00e9\",\n  \"action\":\"opened\"\n}";
        let h = with_sig(sign(b"s", raw).as_bytes());
        assert!(verify(&["s"], &h, raw, 0).is_ok());
        let parsed: serde_json::Value = serde_json::from_slice(raw).expect("json");
        for again in [
            serde_json::to_vec(&parsed).expect("json"),
            serde_json::to_vec_pretty(&parsed).expect("json"),
        ] {
            assert_ne!(&again[..], &raw[..]);
            assert_eq!(verify(&["s"], &h, &again, 0), Err(VerifyError::Mismatch));
        }
    }

    #[test]
    fn rotated_secrets() {
        let body = b"{}";
        let secrets = ["old", "new"];
        for (i, s) in secrets.iter().enumerate() {
            let h = with_sig(sign(s.as_bytes(), body).as_bytes());
            assert_eq!(verify(&secrets, &h, body, 0).map(|v| v.secret_index), Ok(i));
        }
        let h = with_sig(sign(b"third", body).as_bytes());
        assert_eq!(verify(&secrets, &h, body, 0), Err(VerifyError::Mismatch));
        assert!(matches!(
            verify(&["old", ""], &h, body, 0),
            Err(VerifyError::BadSecret { index: 1, .. })
        ));
    }

    #[test]
    fn malformed_headers_refused() {
        let body = b"{}";
        let good = sign(b"s", body);
        let bad: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"sha256=".to_vec(),
            good.replacen("sha256=", "sha1=", 1).into_bytes(),
            good.replacen("sha256=", "", 1).into_bytes(),
            good.as_bytes()[..good.len() - 1].to_vec(),
            format!("{good}ab").into_bytes(),
            format!("sha256={}", "x".repeat(64)).into_bytes(),
            b"sha256=\xc3\xa9\xff".to_vec(),
        ];
        for value in bad {
            let got = verify(&["s"], &with_sig(&value), body, 0);
            assert!(
                matches!(got, Err(VerifyError::MalformedHeader { .. })),
                "{value:?}: {got:?}"
            );
        }
        assert!(matches!(
            verify(&["s"], &HeaderMap::new(), body, 0),
            Err(VerifyError::MissingHeader { .. })
        ));
        // Only the SHA-1 header: refused, and explain says why.
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_SHA1, HeaderValue::from_static("sha1=00"));
        assert!(matches!(
            verify(&["s"], &h, body, 0),
            Err(VerifyError::MissingHeader { .. })
        ));
        let r = crate::verify::explain(crate::verify::Kind::Channel("github"), b"s", &h, body, 0);
        assert!(r.to_string().contains("legacy SHA-1"), "{r}");
    }
}
