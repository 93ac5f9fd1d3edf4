//! Microsoft Teams outgoing-webhook signatures: `Authorization: HMAC <base64>` where the
//! value is HMAC-SHA256 of the raw body under the base64-decoded security token Teams showed
//! when the webhook was made. The check runs over the bytes received, before any parsing.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::HeaderMap;

use crate::verify::hmac::{sign as sign_hmac, Algorithm};
use crate::verify::{constant_time_eq, explain_mac, single_header, Report, Verified, VerifyError};

/// The header carrying the signature.
pub const AUTHORIZATION: &str = "authorization";

/// The HMAC key of a security token as Teams shows it (base64 text).
pub fn key(token: &[u8]) -> Result<Vec<u8>, &'static str> {
    let key = BASE64
        .decode(token.trim_ascii())
        .map_err(|_| "not the base64 security token Teams shows")?;
    if key.is_empty() {
        return Err("empty");
    }
    Ok(key)
}

/// The `Authorization` value Teams sends for `body` under `token` (base64, as shown).
pub fn sign(token: &[u8], body: &[u8]) -> Result<String, &'static str> {
    let mac = sign_mac(&key(token)?, body);
    Ok(format!("HMAC {}", BASE64.encode(mac)))
}

fn sign_mac(key: &[u8], body: &[u8]) -> Vec<u8> {
    sign_hmac(Algorithm::Sha256, key, &[body])
}

/// The MAC `Authorization: HMAC …` carries, decoded.
fn sent_mac(headers: &HeaderMap) -> Result<Vec<u8>, VerifyError> {
    let text = single_header(headers, AUTHORIZATION)?;
    let (scheme, mac) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| VerifyError::malformed(AUTHORIZATION, "not `HMAC <base64>`"))?;
    if !scheme.eq_ignore_ascii_case("HMAC") {
        return Err(VerifyError::malformed(
            AUTHORIZATION,
            "its scheme is not HMAC",
        ));
    }
    BASE64
        .decode(mac.trim())
        .map_err(|_| VerifyError::malformed(AUTHORIZATION, "the MAC is not base64"))
}

/// Checks the request against the route's keys (decoded security tokens; two while one
/// replaces the other).
pub fn verify(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
    if keys.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let sent = sent_mac(headers)?;
    for (secret_index, key) in keys.iter().enumerate() {
        if constant_time_eq(&sent, &sign_mac(key, body)) {
            return Ok(Verified {
                secret_index,
                timestamp: None,
                id: None,
            });
        }
    }
    Err(VerifyError::Mismatch)
}

/// `hark webhook verify --kind teams`: the same check, step by step, with `token` as
/// Teams shows it.
pub fn explain_into(report: &mut Report, token: &[u8], headers: &HeaderMap, body: &[u8]) {
    let key = match key(token) {
        Ok(key) => {
            report.pass(format!(
                "security token decodes to a {}-byte key",
                key.len()
            ));
            key
        }
        Err(problem) => {
            report.fail(format!("the security token is {problem}"));
            crate::verify::conclude(report, Err(VerifyError::BadSecret { index: 0, problem }));
            return;
        }
    };
    let sent = match sent_mac(headers) {
        Ok(sent) => {
            report.pass("Authorization header has an HMAC value");
            sent
        }
        Err(e) => {
            report.fail(e.to_string());
            crate::verify::conclude(report, Err(e));
            return;
        }
    };
    explain_mac(
        report,
        &key,
        body,
        &[sent],
        |mac| BASE64.encode(mac),
        sign_mac,
    );
    crate::verify::conclude(report, verify(&[key], headers, body));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_conformance_vectors_verify_and_a_changed_byte_does_not() {
        let Some(doc) = crate::verify::conformance("channels.json") else {
            return;
        };
        let mut checked = 0;
        for vector in doc["teams"]["vectors"].as_array().unwrap() {
            let Some(body) = vector["raw_body"].as_str() else {
                continue;
            };
            let key = key(vector["security_token_b64"].as_str().unwrap().as_bytes()).unwrap();
            let header = vector["authorization_header"].as_str().unwrap();
            let verified = verify(
                std::slice::from_ref(&key),
                &headers(header),
                body.as_bytes(),
            );
            assert_eq!(verified.is_ok(), vector["verified"].as_bool().unwrap());
            let mut changed = body.as_bytes().to_vec();
            changed[3] ^= 1;
            assert_eq!(
                verify(std::slice::from_ref(&key), &headers(header), &changed),
                Err(VerifyError::Mismatch)
            );
            let mut wrong_key = key.clone();
            wrong_key[0] ^= 1;
            assert_eq!(
                verify(&[wrong_key, key.clone()], &headers(header), body.as_bytes())
                    .unwrap()
                    .secret_index,
                1,
                "the second key of a rotation is tried"
            );
            assert_eq!(
                sign(
                    vector["security_token_b64"].as_str().unwrap().as_bytes(),
                    body.as_bytes()
                ),
                Ok(header.to_owned())
            );
            checked += 1;
        }
        assert!(checked > 0, "no Teams vector with a body");
    }

    #[test]
    fn malformed_headers_are_named() {
        let keys = [b"k".to_vec()];
        assert_eq!(
            verify(&keys, &HeaderMap::new(), b"{}"),
            Err(VerifyError::MissingHeader {
                header: AUTHORIZATION.into()
            })
        );
        for bad in ["Bearer abc", "HMAC", "HMAC !!!"] {
            let e = verify(&keys, &headers(bad), b"{}").unwrap_err();
            assert_eq!(e.reason(), "malformed_header", "{bad}");
        }
        assert_eq!(
            key(b"not base64!"),
            Err("not the base64 security token Teams shows")
        );
    }
}
