//! Slack request signing: raw body, `X-Slack-Request-Timestamp` and `X-Slack-Signature` in,
//! the matching signing secret's index (or why none matched) out.
//!
//! Spec: <https://api.slack.com/authentication/verifying-requests-from-slack>. The signature is
//! `v0=` + hex HMAC-SHA256, keyed with the app's signing secret, over `v0:{timestamp}:{body}`;
//! the timestamp must be within five minutes of now, in either direction.

use http::HeaderMap;

use crate::verify::hmac::{sign as mac, Algorithm};
use crate::verify::{
    check_secrets, check_window, decode_prefixed_hex, explain_window, parse_timestamp,
    single_header, Report, Verified, VerifyError, TOLERANCE_SECS,
};

/// `X-Slack-Signature`: `v0=` and 64 hex digits.
pub const SIGNATURE: &str = "x-slack-signature";
/// `X-Slack-Request-Timestamp`: unix seconds when Slack signed the request.
pub const TIMESTAMP: &str = "x-slack-request-timestamp";
/// The only signature version Slack has published.
pub const VERSION: &str = "v0";

struct Parts {
    timestamp: i64,
    signature: Vec<u8>,
}

fn parse_timestamp_header(headers: &HeaderMap) -> Result<i64, VerifyError> {
    parse_timestamp(TIMESTAMP, single_header(headers, TIMESTAMP)?)
}

fn parse_signature_header(headers: &HeaderMap) -> Result<Vec<u8>, VerifyError> {
    decode_prefixed_hex(
        SIGNATURE,
        single_header(headers, SIGNATURE)?,
        "v0=",
        "does not start with v0=",
        32,
        "expected v0= and 64 hex digits",
    )
}

fn parse(headers: &HeaderMap) -> Result<Parts, VerifyError> {
    let timestamp = parse_timestamp_header(headers)?;
    let signature = parse_signature_header(headers)?;
    Ok(Parts {
        timestamp,
        signature,
    })
}

fn basestring_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    let ts = timestamp.to_string();
    mac(
        Algorithm::Sha256,
        secret,
        &[VERSION.as_bytes(), b":", ts.as_bytes(), b":", body],
    )
}

/// The `X-Slack-Signature` value Slack would send for `body` at `timestamp`.
/// For tests and for signing requests to our own endpoints in integration tests.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(basestring_mac(secret, timestamp, body))
    )
}

/// Verifies a Slack request against any of `secrets` (several during a rotation), with the
/// timestamp checked against `now` (unix seconds) first, as Slack advises.
pub fn verify<S: AsRef<[u8]>>(
    secrets: &[S],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    check_secrets(secrets)?;
    let parts = parse(headers)?;
    // https://api.slack.com/authentication/verifying-requests-from-slack#validating-a-request
    // (step: "verify the timestamp is within five minutes of local time").
    check_window(parts.timestamp, now, TOLERANCE_SECS)?;
    for (secret_index, secret) in secrets.iter().enumerate() {
        let expected = basestring_mac(secret.as_ref(), parts.timestamp, body);
        if crate::verify::constant_time_eq(&expected, &parts.signature) {
            return Ok(Verified {
                secret_index,
                timestamp: Some(parts.timestamp),
                id: None,
            });
        }
    }
    Err(VerifyError::Mismatch)
}

pub(crate) fn explain_into(
    report: &mut Report,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) {
    crate::verify::conclude(report, verify(&[secret], headers, body, now));
    let timestamp = match parse_timestamp_header(headers) {
        Ok(t) => {
            report.pass(format!("header {TIMESTAMP}: {t}"));
            Some(t)
        }
        Err(e) => {
            report.fail(e.to_string());
            None
        }
    };
    let signature = match parse_signature_header(headers) {
        Ok(sig) => {
            report.pass(format!("header {SIGNATURE}: v0= and 64 hex digits"));
            Some(sig)
        }
        Err(e) => {
            report.fail(e.to_string());
            None
        }
    };
    let Some(timestamp) = timestamp else { return };
    explain_window(report, timestamp, now);
    report.info(format!(
        "signed content: \"v0:{timestamp}:\" followed by the raw body ({} bytes)",
        body.len()
    ));
    if let Some(sig) = signature {
        let shown = |m: &[u8]| format!("v0={}", hex::encode(m));
        crate::verify::explain_mac(report, secret, body, &[sig], shown, |k, b| {
            basestring_mac(k, timestamp, b)
        });
    } else {
        report.info("signature not checked: the header could not be read");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: i64 = 1_531_420_618;

    fn request(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP, HeaderValue::from_str(ts).expect("ts"));
        h.insert(SIGNATURE, HeaderValue::from_str(sig).expect("sig"));
        h
    }

    fn signed(secret: &str, ts: i64, body: &[u8]) -> HeaderMap {
        request(&ts.to_string(), &sign(secret.as_bytes(), ts, body))
    }

    #[test]
    fn published_slack_example() {
        // The example in Slack's docs, independent of the conformance file.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign(SECRET.as_bytes(), TS, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        let v = verify(&[SECRET], &signed(SECRET, TS, body), body, TS).expect("valid");
        assert_eq!(
            v,
            Verified {
                secret_index: 0,
                timestamp: Some(TS),
                id: None
            }
        );
    }

    #[test]
    fn window_in_both_directions() {
        let body = b"payload=%7B%7D";
        let h = signed(SECRET, TS, body);
        for now in [TS - 300, TS - 1, TS, TS + 1, TS + 300] {
            assert!(
                verify(&[SECRET], &h, body, now).is_ok(),
                "now = ts{:+}",
                now - TS
            );
        }
        // Signed in the future beyond the window (clock skew or a forged timestamp).
        assert!(matches!(
            verify(&[SECRET], &h, body, TS - 301),
            Err(VerifyError::Future {
                ahead_secs: 301,
                ..
            })
        ));
        assert!(matches!(
            verify(&[SECRET], &h, body, TS + 301),
            Err(VerifyError::Stale { age_secs: 301, .. })
        ));
    }

    #[test]
    fn rotated_secrets() {
        let body = b"x=1";
        let old = signed("old-secret", TS, body);
        let new = signed("new-secret", TS, body);
        let third = signed("third-secret", TS, body);
        let secrets = ["old-secret", "new-secret"];
        assert_eq!(
            verify(&secrets, &old, body, TS).map(|v| v.secret_index),
            Ok(0)
        );
        assert_eq!(
            verify(&secrets, &new, body, TS).map(|v| v.secret_index),
            Ok(1)
        );
        assert_eq!(
            verify(&secrets, &third, body, TS),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify::<&str>(&[], &new, body, TS),
            Err(VerifyError::NoSecrets)
        );
    }

    #[test]
    fn exact_bytes_matter() {
        // Form bodies: percent-encoding and order are part of what was signed.
        let raw = b"text=caf%C3%A9&user_name=bob";
        let h = signed(SECRET, TS, raw);
        assert!(verify(&[SECRET], &h, raw, TS).is_ok());
        for altered in [
            &b"user_name=bob&text=caf%C3%A9"[..],
            b"text=caf\xc3\xa9&user_name=bob",
        ] {
            assert_eq!(
                verify(&[SECRET], &h, altered, TS),
                Err(VerifyError::Mismatch)
            );
        }
        // Slack's Events API sends JSON; escaped unicode and spacing are signed as sent.
        let json = b"{\"type\": \"event_callback\", \"text\":\"caf\\u00e9\"}";
        let h = signed(SECRET, TS, json);
        assert!(verify(&[SECRET], &h, json, TS).is_ok());
        let parsed: serde_json::Value = serde_json::from_slice(json).expect("json");
        let again = serde_json::to_vec(&parsed).expect("json");
        assert_ne!(&again[..], &json[..]);
        assert_eq!(
            verify(&[SECRET], &h, &again, TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_refused() {
        let body = b"a=b";
        let good = sign(SECRET.as_bytes(), TS, body);
        let ts = TS.to_string();
        let cases: Vec<(String, String)> = vec![
            (ts.clone(), String::new()),
            (ts.clone(), "v0=".into()),
            (ts.clone(), good.replacen("v0=", "v1=", 1)),
            (ts.clone(), good.replacen("v0=", "", 1)),
            (ts.clone(), good.replacen("v0=", "V0=", 1)),
            (ts.clone(), good[..good.len() - 1].to_string()),
            (ts.clone(), format!("{good}0")),
            (ts.clone(), format!("v0={}", "z".repeat(64))),
            (ts.clone(), format!("v0={}", "a".repeat(100_000))),
            (String::new(), good.clone()),
            ("-1531420618".into(), good.clone()),
            ("+1531420618".into(), good.clone()),
            ("1531420618.5".into(), good.clone()),
            ("99999999999999999999999".into(), good.clone()),
            ("now".into(), good.clone()),
        ];
        for (t, s) in cases {
            let got = verify(&[SECRET], &request(&t, &s), body, TS);
            assert!(
                matches!(got, Err(VerifyError::MalformedHeader { .. })),
                "ts {t:?} sig {:.80?}: {got:?}",
                s
            );
        }
        // Missing either header.
        let mut h = signed(SECRET, TS, body);
        h.remove(SIGNATURE);
        assert!(matches!(
            verify(&[SECRET], &h, body, TS),
            Err(VerifyError::MissingHeader { .. })
        ));
        let mut h = signed(SECRET, TS, body);
        h.remove(TIMESTAMP);
        assert!(matches!(
            verify(&[SECRET], &h, body, TS),
            Err(VerifyError::MissingHeader { .. })
        ));
        // Non-UTF-8 bytes in the header.
        let mut h = signed(SECRET, TS, body);
        h.insert(
            SIGNATURE,
            HeaderValue::from_bytes(b"v0=\xe9\xff").expect("obs-text"),
        );
        assert!(matches!(
            verify(&[SECRET], &h, body, TS),
            Err(VerifyError::MalformedHeader { .. })
        ));
        // Two signature headers: ambiguous, refused even if one is right.
        let mut h = signed(SECRET, TS, body);
        h.append(SIGNATURE, HeaderValue::from_static("v0=00"));
        assert!(matches!(
            verify(&[SECRET], &h, body, TS),
            Err(VerifyError::DuplicateHeader { .. })
        ));
        // Upper-case hex of the right MAC is still the right MAC.
        let h = request(&ts, &format!("v0={}", good[3..].to_uppercase()));
        assert!(verify(&[SECRET], &h, body, TS).is_ok());
    }

    #[test]
    fn errors_never_contain_the_secret_or_signature() {
        let body = b"a=b";
        let h = signed("other", TS, body);
        let sig = sign(b"other", TS, body);
        let e = verify(&[SECRET], &h, body, TS).expect_err("mismatch");
        let text = format!("{e} {e:?} {}", e.reason());
        assert!(
            !text.contains(SECRET) && !text.contains(&sig[3..]),
            "{text}"
        );
    }
}
