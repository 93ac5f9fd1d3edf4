//! Standard Webhooks: raw body, `webhook-id`, `webhook-timestamp` and `webhook-signature` in,
//! the matching secret's index and the signed message id (or why nothing matched) out.
//!
//! Spec: <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md#verifying-webhook-authenticity>.
//! The signature header is a space-separated list of `{version},{base64 signature}`; only
//! `v1` (HMAC-SHA256 over `{id}.{timestamp}.{body}`) is checked and other versions are
//! ignored. One matching entry is enough, which is how senders rotate secrets. The timestamp
//! must be within five minutes of now, in either direction.
//!
//! Secrets: `whsec_` + base64 is the spec's form, and the key is the decoded bytes. A secret
//! without that prefix is used as raw key bytes, as the reference libraries do for a raw key
//! (so configure a base64 secret *with* its `whsec_` prefix).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::HeaderMap;

use crate::verify::hmac::{sign as mac, Algorithm};
use crate::verify::{
    check_secrets, check_window, constant_time_eq, explain_window, parse_timestamp, single_header,
    Report, Verified, VerifyError, TOLERANCE_SECS,
};

/// `webhook-id`: the message id, the same across retries of one message.
pub const ID: &str = "webhook-id";
/// `webhook-timestamp`: unix seconds when the message was signed.
pub const TIMESTAMP: &str = "webhook-timestamp";
/// `webhook-signature`: space-separated `v1,<base64>` entries.
pub const SIGNATURE: &str = "webhook-signature";
/// Prefix of a secret given in the spec's base64 form.
pub const SECRET_PREFIX: &str = "whsec_";

/// Standard base64, padding optional on input, written with padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The HMAC key for a configured secret: base64-decoded after a `whsec_` prefix, otherwise
/// the bytes as given. The error is a short problem description (never the secret).
pub fn decode_secret(secret: &[u8]) -> Result<Vec<u8>, &'static str> {
    let key = match secret.strip_prefix(SECRET_PREFIX.as_bytes()) {
        Some(encoded) => B64
            .decode(encoded.trim_ascii())
            .map_err(|_| "the part after whsec_ is not base64")?,
        None => secret.to_vec(),
    };
    if key.is_empty() {
        return Err("empty");
    }
    Ok(key)
}

/// The `webhook-signature` entry (`v1,<base64>`) for a message, under a configured secret
/// (`whsec_...` or raw). For tests and for signing our own outgoing webhooks.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Result<String, &'static str> {
    let key = decode_secret(secret)?;
    Ok(format!(
        "v1,{}",
        B64.encode(signed_mac(&key, id, timestamp, body))
    ))
}

fn signed_mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let ts = timestamp.to_string();
    mac(
        Algorithm::Sha256,
        key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    )
}

/// The `v1` signatures in a header value, decoded; entries of other versions are skipped,
/// and so are `v1` entries that are not base64 of 32 bytes (they could match nothing).
struct Signatures {
    entries: usize,
    v1: usize,
    decoded: Vec<Vec<u8>>,
}

fn parse_signatures(value: &str) -> Signatures {
    let mut out = Signatures {
        entries: 0,
        v1: 0,
        decoded: Vec::new(),
    };
    for entry in value.split(' ').filter(|e| !e.is_empty()) {
        out.entries += 1;
        let Some(("v1", sig)) = entry.split_once(',') else {
            continue;
        };
        out.v1 += 1;
        // A 32-byte MAC is 44 base64 characters; a much longer entry is not worth decoding.
        if sig.len() > 64 {
            continue;
        }
        if let Ok(bytes) = B64.decode(sig) {
            if bytes.len() == 32 {
                out.decoded.push(bytes);
            }
        }
    }
    out
}

struct Parts<'h> {
    id: &'h str,
    timestamp: i64,
    signatures: Vec<Vec<u8>>,
}

fn parse(headers: &HeaderMap) -> Result<Parts<'_>, VerifyError> {
    let id = single_header(headers, ID)?;
    let timestamp = parse_timestamp(TIMESTAMP, single_header(headers, TIMESTAMP)?)?;
    let sigs = parse_signatures(single_header(headers, SIGNATURE)?);
    if sigs.v1 == 0 {
        return Err(VerifyError::UnsupportedVersion {
            header: SIGNATURE.into(),
        });
    }
    if sigs.decoded.is_empty() {
        return Err(VerifyError::malformed(
            SIGNATURE,
            "no v1 entry is base64 of 32 bytes",
        ));
    }
    Ok(Parts {
        id,
        timestamp,
        signatures: sigs.decoded,
    })
}

fn decode_secrets<S: AsRef<[u8]>>(secrets: &[S]) -> Result<Vec<Vec<u8>>, VerifyError> {
    check_secrets(secrets)?;
    secrets
        .iter()
        .enumerate()
        .map(|(index, s)| {
            decode_secret(s.as_ref()).map_err(|problem| VerifyError::BadSecret { index, problem })
        })
        .collect()
}

/// Verifies a Standard Webhooks message against any of `secrets` (`whsec_...` or raw bytes)
/// at time `now` (unix seconds). On success [`Verified::id`] holds `webhook-id`, which the
/// caller should remember for the window to refuse replays of the same message.
pub fn verify<S: AsRef<[u8]>>(
    secrets: &[S],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    let keys = decode_secrets(secrets)?;
    let parts = parse(headers)?;
    // https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md#verifying-webhook-authenticity
    // ("verify the timestamp ... within some allowed tolerance").
    check_window(parts.timestamp, now, TOLERANCE_SECS)?;
    for (secret_index, key) in keys.iter().enumerate() {
        let expected = signed_mac(key, parts.id, parts.timestamp, body);
        if parts
            .signatures
            .iter()
            .any(|sig| constant_time_eq(sig, &expected))
        {
            return Ok(Verified {
                secret_index,
                timestamp: Some(parts.timestamp),
                id: Some(parts.id.to_string()),
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
    let key = match decode_secret(secret) {
        Ok(key) if secret.starts_with(SECRET_PREFIX.as_bytes()) => {
            report.pass(format!(
                "secret: whsec_ form, key is {} base64-decoded bytes",
                key.len()
            ));
            Some(key)
        }
        Ok(key) => {
            report.info(format!(
                "secret: no whsec_ prefix, used as {} raw bytes",
                key.len()
            ));
            Some(key)
        }
        Err(problem) => {
            report.fail(format!("secret is unusable: {problem}"));
            None
        }
    };
    let id = single_header(headers, ID)
        .map_err(|e| report.fail(e.to_string()))
        .ok();
    if let Some(id) = id {
        report.pass(format!("header {ID}: {id:?}"));
    }
    let timestamp = single_header(headers, TIMESTAMP)
        .and_then(|t| parse_timestamp(TIMESTAMP, t))
        .map_err(|e| report.fail(e.to_string()))
        .ok();
    if let Some(t) = timestamp {
        report.pass(format!("header {TIMESTAMP}: {t}"));
    }
    let sigs = single_header(headers, SIGNATURE)
        .map_err(|e| report.fail(e.to_string()))
        .ok();
    let sigs = sigs.map(parse_signatures);
    if let Some(s) = &sigs {
        let line = format!(
            "header {SIGNATURE}: {} entries, {} of version v1, {} of them base64 of 32 bytes \
             (other versions are ignored)",
            s.entries,
            s.v1,
            s.decoded.len()
        );
        if s.decoded.is_empty() {
            report.fail(line);
        } else {
            report.pass(line);
        }
    }
    let Some(timestamp) = timestamp else { return };
    explain_window(report, timestamp, now);
    let (Some(key), Some(id), Some(sigs)) = (key, id, sigs) else {
        return;
    };
    if sigs.decoded.is_empty() {
        return;
    }
    report.info(format!(
        "signed content: \"{id}.{timestamp}.\" followed by the raw body ({} bytes)",
        body.len()
    ));
    let shown = |m: &[u8]| format!("v1,{}", B64.encode(m));
    let matched = crate::verify::explain_mac(report, &key, body, &sigs.decoded, shown, |k, b| {
        signed_mac(k, id, timestamp, b)
    });
    if !matched && !secret.starts_with(SECRET_PREFIX.as_bytes()) {
        if let Ok(decoded) = B64.decode(secret.trim_ascii()) {
            let expected = signed_mac(&decoded, id, timestamp, body);
            if sigs.decoded.iter().any(|s| constant_time_eq(s, &expected)) {
                report.hint(
                    "it matches when the secret is read as base64: write it as whsec_<base64>",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID_: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = b"{\"test\": 2432232314}";

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [(ID, id), (TIMESTAMP, ts), (SIGNATURE, sig)] {
            h.insert(k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn signed(secret: &str, body: &[u8]) -> HeaderMap {
        let sig = sign(secret.as_bytes(), ID_, TS, body).expect("secret");
        headers(ID_, &TS.to_string(), &sig)
    }

    #[test]
    fn reference_vector() {
        // From the reference libraries' tests, independent of the conformance file.
        assert_eq!(
            sign(SECRET.as_bytes(), ID_, TS, BODY).as_deref(),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        let v = verify(&[SECRET], &signed(SECRET, BODY), BODY, TS).expect("valid");
        assert_eq!(v.id.as_deref(), Some(ID_));
    }

    #[test]
    fn several_signatures_one_matches() {
        let good = sign(SECRET.as_bytes(), ID_, TS, BODY).expect("secret");
        let other = sign(b"whsec_b3RoZXI=", ID_, TS, BODY).expect("secret");
        for value in [
            format!("{other} {good}"),
            format!("{good} {other}"),
            format!("v1a,xyz  v2,abc {other} v1,!!notbase64 {good}"),
            format!("{}  {good}", good.replace("v1,", "v1,A")),
        ] {
            let h = headers(ID_, &TS.to_string(), &value);
            assert!(verify(&[SECRET], &h, BODY, TS).is_ok(), "{value}");
        }
        // None matching.
        let h = headers(ID_, &TS.to_string(), &format!("{other} {other}"));
        assert_eq!(verify(&[SECRET], &h, BODY, TS), Err(VerifyError::Mismatch));
        // Only unknown versions.
        let h = headers(ID_, &TS.to_string(), &good.replace("v1,", "v2,"));
        assert!(matches!(
            verify(&[SECRET], &h, BODY, TS),
            Err(VerifyError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn rotated_secrets_and_raw_secrets() {
        let old = "whsec_b2xkLXNlY3JldC1ieXRlcw==";
        let raw = "a raw secret without prefix";
        let secrets = [old, SECRET, raw];
        for (i, s) in secrets.iter().enumerate() {
            let got = verify(&secrets, &signed(s, BODY), BODY, TS).map(|v| v.secret_index);
            assert_eq!(got, Ok(i), "{s}");
        }
        let third = signed("whsec_dGhpcmQ=", BODY);
        assert_eq!(
            verify(&secrets, &third, BODY, TS),
            Err(VerifyError::Mismatch)
        );
        // The raw form is the bytes as given, not their base64 decoding.
        assert_eq!(decode_secret(b"YWJj"), Ok(b"YWJj".to_vec()));
        assert_eq!(decode_secret(b"whsec_YWJj"), Ok(b"abc".to_vec()));
        assert_eq!(
            decode_secret(b"whsec_YWI"),
            Ok(b"ab".to_vec()),
            "padding optional"
        );
        for bad in [&b"whsec_"[..], b"whsec_***", b""] {
            assert!(decode_secret(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            verify(&[SECRET, "whsec_%%"], &signed(SECRET, BODY), BODY, TS),
            Err(VerifyError::BadSecret { index: 1, .. })
        ));
    }

    #[test]
    fn window_in_both_directions() {
        let h = signed(SECRET, BODY);
        for now in [TS - 300, TS, TS + 300] {
            assert!(verify(&[SECRET], &h, BODY, now).is_ok());
        }
        assert!(matches!(
            verify(&[SECRET], &h, BODY, TS - 301),
            Err(VerifyError::Future { .. })
        ));
        assert!(matches!(
            verify(&[SECRET], &h, BODY, TS + 301),
            Err(VerifyError::Stale { .. })
        ));
    }

    #[test]
    fn id_and_timestamp_are_signed() {
        let sig = sign(SECRET.as_bytes(), ID_, TS, BODY).expect("secret");
        let h = headers("msg_other", &TS.to_string(), &sig);
        assert_eq!(verify(&[SECRET], &h, BODY, TS), Err(VerifyError::Mismatch));
        let h = headers(ID_, &(TS + 1).to_string(), &sig);
        assert_eq!(verify(&[SECRET], &h, BODY, TS), Err(VerifyError::Mismatch));
    }

    #[test]
    fn exact_body_bytes() {
        let raw = b"{\"name\":\"Ren\\u00e9e\",  \"b\":[1, 2],\"a\":true}";
        let h = signed(SECRET, raw);
        assert!(verify(&[SECRET], &h, raw, TS).is_ok());
        let parsed: serde_json::Value = serde_json::from_slice(raw).expect("json");
        let again = serde_json::to_vec(&parsed).expect("json");
        assert_ne!(&again[..], &raw[..]);
        assert_eq!(
            verify(&[SECRET], &h, &again, TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_refused() {
        let good = sign(SECRET.as_bytes(), ID_, TS, BODY).expect("secret");
        let ts = TS.to_string();
        for (id, t, sig) in [
            ("", ts.as_str(), good.as_str()),
            (ID_, "", good.as_str()),
            (ID_, "16142653300000000000000", good.as_str()),
            (ID_, "1614265330.0", good.as_str()),
            (ID_, ts.as_str(), ""),
            (ID_, ts.as_str(), "v1,"),
            (ID_, ts.as_str(), "v1,@@@"),
            (ID_, ts.as_str(), "v1,YWJj"),
        ] {
            let got = verify(&[SECRET], &headers(id, t, sig), BODY, TS);
            assert!(
                matches!(got, Err(VerifyError::MalformedHeader { .. })),
                "{id} {t} {sig}"
            );
        }
        for missing in [ID, TIMESTAMP, SIGNATURE] {
            let mut h = headers(ID_, &ts, &good);
            h.remove(missing);
            assert!(matches!(
                verify(&[SECRET], &h, BODY, TS),
                Err(VerifyError::MissingHeader { .. })
            ));
        }
        let mut h = headers(ID_, &ts, &good);
        h.insert(ID, HeaderValue::from_bytes(b"msg_\xff").expect("obs-text"));
        assert!(matches!(
            verify(&[SECRET], &h, BODY, TS),
            Err(VerifyError::MalformedHeader { .. })
        ));
        let huge = format!("v1,{} {good}", "A".repeat(200_000));
        assert!(verify(&[SECRET], &headers(ID_, &ts, &huge), BODY, TS).is_ok());
    }

    #[test]
    fn explain_hints_at_missing_prefix() {
        let h = signed(SECRET, BODY);
        let r = crate::verify::explain(
            crate::verify::Kind::Channel("standard"),
            SECRET.trim_start_matches("whsec_").as_bytes(),
            &h,
            BODY,
            TS,
        );
        assert!(!r.passed());
        assert!(r.to_string().contains("whsec_<base64>"), "{r}");
    }
}
