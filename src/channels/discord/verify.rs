//! Discord interaction signatures: `X-Signature-Ed25519` is the hex Ed25519 signature of
//! `X-Signature-Timestamp` followed by the raw body, under the application's public key.
//! Discord sends deliberately bad signatures to check an endpoint and removes endpoints that
//! accept them, so every unverifiable request — a signature that is not hex, a timestamp
//! that is not a number — is 401, never 400.

use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use http::HeaderMap;

use crate::verify::{check_window, single_header, Report, Verified, VerifyError, TOLERANCE_SECS};

/// The header carrying the signature (hex).
pub const SIGNATURE: &str = "x-signature-ed25519";
/// The header carrying the signed timestamp (unix seconds).
pub const TIMESTAMP: &str = "x-signature-timestamp";

/// An application's public key, as the Developer Portal shows it (64 hex digits).
pub fn public_key(text: &str) -> Result<[u8; 32], &'static str> {
    let bytes = hex::decode(text.trim()).map_err(|_| "not hex")?;
    bytes.try_into().map_err(|_| "not 32 bytes (64 hex digits)")
}

/// Checks the signature, then the timestamp's window around `now`; returns the timestamp.
pub fn verify(
    keys: &[[u8; 32]],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    if keys.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let signature = single_header(headers, SIGNATURE).map_err(unauthenticated)?;
    let timestamp = single_header(headers, TIMESTAMP).map_err(unauthenticated)?;
    let signature = hex::decode(signature).map_err(|_| VerifyError::Mismatch)?;
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    let secret_index = keys
        .iter()
        .position(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(&message, &signature)
                .is_ok()
        })
        .ok_or(VerifyError::Mismatch)?;
    // Signed, so a number unless the signer meant otherwise.
    let at: i64 = timestamp.parse().map_err(|_| VerifyError::Mismatch)?;
    check_window(at, now, TOLERANCE_SECS)?;
    Ok(Verified {
        secret_index,
        timestamp: Some(at),
        id: None,
    })
}

/// A malformed header is as unverifiable as a wrong signature: 401.
fn unauthenticated(e: VerifyError) -> VerifyError {
    match e {
        VerifyError::MalformedHeader { .. } | VerifyError::DuplicateHeader { .. } => {
            VerifyError::Mismatch
        }
        e => e,
    }
}

/// `hark webhook verify --kind discord --public-key HEX`: the same check, step by step.
pub fn explain_into(report: &mut Report, key: &[u8], headers: &HeaderMap, body: &[u8], now: i64) {
    let key = match public_key(&String::from_utf8_lossy(key)) {
        Ok(key) => {
            report.pass("the public key is 32 bytes of hex");
            key
        }
        Err(problem) => {
            report.fail(format!("the public key is {problem}"));
            report.hint("give the application's PUBLIC KEY from the Developer Portal");
            crate::verify::conclude(report, Err(VerifyError::BadSecret { index: 0, problem }));
            return;
        }
    };
    let outcome = verify(&[key], headers, body, now);
    match &outcome {
        Ok(v) => {
            report.pass("the Ed25519 signature of timestamp + body verifies");
            if let Some(at) = v.timestamp {
                crate::verify::explain_window(report, at, now);
            }
        }
        Err(VerifyError::Stale { .. } | VerifyError::Future { .. }) => {
            report.pass("the Ed25519 signature of timestamp + body verifies");
            let at = single_header(headers, TIMESTAMP)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or_default();
            crate::verify::explain_window(report, at, now);
        }
        Err(e) => {
            report.fail(format!("{e}: the signature does not verify"));
            report.hint(
                "the signature covers X-Signature-Timestamp then the exact body bytes; a body \
                 re-serialised from parsed JSON no longer matches",
            );
        }
    }
    crate::verify::conclude(report, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(signature: &str, timestamp: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE, signature.parse().unwrap());
        headers.insert(TIMESTAMP, timestamp.parse().unwrap());
        headers
    }

    #[test]
    fn the_conformance_vectors_verify_and_tampering_does_not() {
        let Some(doc) = crate::verify::conformance("channels.json") else {
            return;
        };
        let mut checked = 0;
        for vector in doc["discord"]["vectors"].as_array().unwrap() {
            let key = public_key(vector["public_key_hex"].as_str().unwrap()).unwrap();
            let (Some(body), Some(ts), Some(sig)) = (
                vector["raw_body"].as_str(),
                vector["x_signature_timestamp"].as_str(),
                vector["x_signature_ed25519"].as_str(),
            ) else {
                // The bare RFC 8032 vector: the empty message, straight through the key.
                let sig = hex::decode(vector["expected_signature_hex"].as_str().unwrap()).unwrap();
                let message = hex::decode(vector["message_hex"].as_str().unwrap()).unwrap();
                assert!(UnparsedPublicKey::new(&ED25519, &key)
                    .verify(&message, &sig)
                    .is_ok());
                continue;
            };
            let now: i64 = ts.parse().unwrap();
            assert!(verify(&[key], &headers(sig, ts), body.as_bytes(), now).is_ok());
            let mut changed = body.as_bytes().to_vec();
            changed[5] ^= 1;
            assert_eq!(
                verify(&[key], &headers(sig, ts), &changed, now),
                Err(VerifyError::Mismatch)
            );
            let later = (now + 1).to_string();
            assert_eq!(
                verify(&[key], &headers(sig, &later), body.as_bytes(), now),
                Err(VerifyError::Mismatch),
                "a changed timestamp fails the signature"
            );
            assert_eq!(
                verify(&[key], &headers(sig, ts), body.as_bytes(), now + 600)
                    .unwrap_err()
                    .reason(),
                "stale_timestamp"
            );
            let mut other = key;
            other[0] ^= 1;
            assert!(verify(&[other], &headers(sig, ts), body.as_bytes(), now).is_err());
            assert_eq!(
                verify(&[key], &headers("zz", ts), body.as_bytes(), now),
                Err(VerifyError::Mismatch),
                "garbage is 401, as Discord's endpoint check wants"
            );
            checked += 1;
        }
        assert!(checked > 0);
    }
}
