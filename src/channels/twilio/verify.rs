//! Twilio request signatures: `X-Twilio-Signature` is base64 HMAC-SHA1, under the account's
//! auth token, of the full URL Twilio called followed by every form parameter as name then
//! value, sorted. A JSON body is signed through the URL instead: its `bodySHA256` query
//! parameter is the hex SHA-256 of the body, and the signature covers the URL alone.
//!
//! Hark sees the URL a proxy forwarded, not the one Twilio called, so the route's configured
//! `public_url` stands in for it, with the request's query. As Twilio's SDKs do, the URL is
//! tried as given, and with the scheme's default port added or removed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::verify::hmac::{sign, Algorithm};
use crate::verify::{constant_time_eq, single_header, Report, Verified, VerifyError};

/// The header carrying the signature.
pub const SIGNATURE: &str = "x-twilio-signature";

/// The string Twilio signs for `url` and form `params`.
fn signed_text(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut text = url.to_owned();
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    text
}

/// The signature Twilio sends for `url` and `params` under `token`.
pub fn sign_request(token: &[u8], url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(sign(
        Algorithm::Sha1,
        token,
        &[signed_text(url, params).as_bytes()],
    ))
}

/// `url` as given, and with its scheme's default port added or taken away.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Ok(parsed) = url::Url::parse(url) else {
        return variants;
    };
    let default = match parsed.scheme() {
        "https" => 443,
        "http" => 80,
        _ => return variants,
    };
    // `Url` drops a default port when it parses, so the text is searched instead.
    let Some(rest) = url.split_once("://").map(|(_, rest)| rest) else {
        return variants;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let scheme = parsed.scheme();
    let with_port = format!(":{default}");
    if let Some(bare) = authority.strip_suffix(&with_port) {
        variants.push(format!("{scheme}://{bare}{tail}"));
    } else if parsed.port().is_none() {
        variants.push(format!("{scheme}://{authority}{with_port}{tail}"));
    }
    variants
}

/// The request URL that stands for what Twilio called: the route's `public_url` with the
/// request's query (`query` without its `?`).
pub fn request_url(public_url: &str, query: Option<&str>) -> String {
    match query.filter(|q| !q.is_empty()) {
        Some(query) => format!("{public_url}?{query}"),
        None => public_url.to_owned(),
    }
}

/// Checks a request: `url` is what Twilio called (see [`request_url`]), `params` the form
/// parameters (none for a JSON body, whose hash `url` must carry).
pub fn verify(
    tokens: &[Vec<u8>],
    headers: &HeaderMap,
    url: &str,
    params: &[(String, String)],
    body: &[u8],
    json: bool,
) -> Result<Verified, VerifyError> {
    if tokens.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let sent = single_header(headers, SIGNATURE)?;
    let sent = BASE64
        .decode(sent)
        .map_err(|_| VerifyError::malformed(SIGNATURE, "not base64"))?;
    if json {
        let hash = url::Url::parse(url)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "bodySHA256")
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or(VerifyError::Mismatch)?;
        let actual = hex::encode(Sha256::digest(body));
        if !constant_time_eq(hash.to_ascii_lowercase().as_bytes(), actual.as_bytes()) {
            return Err(VerifyError::Mismatch);
        }
    }
    let params: &[(String, String)] = if json { &[] } else { params };
    for candidate in url_variants(url) {
        let text = signed_text(&candidate, params);
        for (secret_index, token) in tokens.iter().enumerate() {
            if constant_time_eq(&sent, &sign(Algorithm::Sha1, token, &[text.as_bytes()])) {
                return Ok(Verified {
                    secret_index,
                    timestamp: None,
                    id: None,
                });
            }
        }
    }
    Err(VerifyError::Mismatch)
}

/// `hark webhook verify --kind twilio --url URL`: the same check, step by step. The body is
/// form parameters, or JSON when `url` carries `bodySHA256`.
pub fn explain_into(
    report: &mut Report,
    token: &[u8],
    headers: &HeaderMap,
    url: Option<&str>,
    body: &[u8],
) {
    let Some(url) = url else {
        report.fail("--url is needed: Twilio signs the URL it called");
        report.hint("give the URL exactly as configured in Twilio, query string included");
        crate::verify::conclude(report, Err(VerifyError::Mismatch));
        return;
    };
    let json = url.contains("bodySHA256=");
    let params: Vec<(String, String)> = if json {
        report.info("the URL carries bodySHA256: the body is JSON, signed through its hash");
        Vec::new()
    } else {
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            Ok(params) => {
                report.pass(format!("the body has {} form parameters", params.len()));
                params
            }
            Err(e) => {
                report.fail(format!("the body is not form parameters: {e}"));
                Vec::new()
            }
        }
    };
    let outcome = verify(&[token.to_vec()], headers, url, &params, body, json);
    match &outcome {
        Ok(_) => report.pass("X-Twilio-Signature matches the URL and parameters"),
        Err(e) => {
            report.fail(format!("{e}"));
            report.hint(
                "Twilio signs the URL it called (scheme, host, port, path and query exactly) \
                 then the sorted parameters; a proxy's URL, or the auth token of another \
                 account or subaccount, does not match",
            );
        }
    }
    crate::verify::conclude(report, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn params(value: &Value) -> Vec<(String, String)> {
        let mut params = Vec::new();
        for (name, value) in value.as_object().unwrap() {
            match value {
                Value::Array(values) => {
                    for v in values {
                        params.push((name.clone(), v.as_str().unwrap().to_owned()));
                    }
                }
                v => params.push((name.clone(), v.as_str().unwrap().to_owned())),
            }
        }
        params
    }

    fn headers(signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE, signature.parse().unwrap());
        headers
    }

    #[test]
    fn the_conformance_vectors_verify_and_a_changed_byte_does_not() {
        let Some(doc) = crate::verify::conformance("channels.json") else {
            return;
        };
        for vector in doc["twilio"]["vectors"].as_array().unwrap() {
            let name = vector["name"].as_str().unwrap();
            let token = vector["auth_token"].as_str().unwrap().as_bytes().to_vec();
            let url = vector["url"].as_str().unwrap();
            let params = params(&vector["params"]);
            let body = vector["raw_body"].as_str().unwrap_or("");
            let json = !vector["raw_body"].is_null();
            let sig = headers(vector["expected_x_twilio_signature"].as_str().unwrap());
            let tokens = [token];
            assert!(
                verify(&tokens, &sig, url, &params, body.as_bytes(), json).is_ok(),
                "{name}"
            );
            let other_url = url.replace("foo=1", "foo=2");
            assert!(
                verify(&tokens, &sig, &other_url, &params, body.as_bytes(), json).is_err(),
                "{name}: changed URL"
            );
            if json {
                let changed = body.replace("value", "valuE");
                assert!(
                    verify(&tokens, &sig, url, &params, changed.as_bytes(), json).is_err(),
                    "{name}: changed body"
                );
            } else {
                let mut changed = params.clone();
                changed[0].1.push('0');
                assert!(
                    verify(&tokens, &sig, url, &changed, b"", json).is_err(),
                    "{name}: changed parameter"
                );
            }
            assert!(
                verify(
                    &[b"54321".to_vec()],
                    &sig,
                    url,
                    &params,
                    body.as_bytes(),
                    json
                )
                .is_err(),
                "{name}: wrong token"
            );
        }
    }

    #[test]
    fn default_ports_are_tried_both_ways() {
        assert_eq!(
            url_variants("https://a.example/x?y=1"),
            ["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            url_variants("https://a.example:443/x"),
            ["https://a.example:443/x", "https://a.example/x"]
        );
        assert_eq!(
            url_variants("http://a.example:1234/x"),
            ["http://a.example:1234/x"]
        );
    }
}
