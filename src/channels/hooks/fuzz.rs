//! The hooks channel's fuzzing entry point: the target `standard_webhook` (`fuzz/fuzz_targets/`,
//! corpus `fuzz/corpus/standard_webhook/`), registered through [`ChannelTarget`]; see [`crate::fuzzing`].

use super::HookRoute;
use crate::fuzzing::{header_text, message, ChannelTarget, NOW};
use crate::verify;

/// The Standard Webhooks secret, in its `whsec_` form (base64 of [`SECRET`]).
pub const STANDARD_SECRET: &str = "whsec_ZnV6ei1zaWduaW5nLXNlY3JldA==";

impl ChannelTarget for HookRoute {
    const TARGET: &'static str = "standard_webhook";

    fn run(data: &[u8]) {
        standard_webhook(data)
    }
}

/// A Standard Webhooks delivery: the `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` parsers never panic, and a delivery is accepted only when one of its
/// signatures is the HMAC of `id.timestamp.body` under [`STANDARD_SECRET`], within the window.
fn standard_webhook(data: &[u8]) {
    let (headers, body) = message(data);
    let result = crate::channels::hooks::verify::verify(&[STANDARD_SECRET], &headers, body, NOW);
    let report = verify::explain(
        verify::Kind::Channel("standard"),
        STANDARD_SECRET.as_bytes(),
        &headers,
        body,
        NOW,
    );
    assert_eq!(report.passed(), result.is_ok());
    if let Ok(verified) = result {
        let id = verified.id.expect("a verified delivery has an id");
        let ts = verified
            .timestamp
            .expect("a verified delivery has a timestamp");
        assert!(
            (NOW - ts).abs() <= 300,
            "accepted a timestamp {ts} outside the window"
        );
        let expected =
            crate::channels::hooks::verify::sign(STANDARD_SECRET.as_bytes(), &id, ts, body)
                .expect("the secret is valid");
        let sigs = header_text(&headers, "webhook-signature");
        assert!(
            sigs.split_whitespace().any(|s| s == expected),
            "accepted {sigs:?}, none of which is {expected:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed seed really is accepted, so the fuzzer starts from the accepting path.
    #[test]
    fn the_signed_seed_passes() {
        let data = crate::fuzzing::seed("standard_webhook", "signed");
        let (headers, body) = message(&data);
        super::super::verify::verify(&[STANDARD_SECRET], &headers, body, NOW).unwrap();
    }
}
