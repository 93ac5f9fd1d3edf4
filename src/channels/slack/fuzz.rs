//! The Slack channel's fuzzing entry point: the target `slack_request` (`fuzz/fuzz_targets/`,
//! corpus `fuzz/corpus/slack_request/`), registered through [`ChannelTarget`]; see [`crate::fuzzing`].

use serde_json::Value;

use super::SlackRoute;
use crate::fuzzing::{header_text, message, ChannelTarget, NOW, SECRET};
use crate::verify;

impl ChannelTarget for SlackRoute {
    const TARGET: &'static str = "slack_request";

    fn run(data: &[u8]) {
        slack_request(data)
    }
}

/// A Slack delivery (headers, empty line, body): the signature check accepts it only when
/// `X-Slack-Signature` is the HMAC of its own timestamp and body under [`SECRET`], within
/// five minutes of [`NOW`]; the explanation `hark webhook verify` prints agrees; the form and
/// JSON bodies the handler reads never panic.
fn slack_request(data: &[u8]) {
    let (headers, body) = message(data);
    let result = crate::channels::slack::verify::verify(&[SECRET], &headers, body, NOW);
    let report = verify::explain(verify::Kind::Channel("slack"), SECRET, &headers, body, NOW);
    assert_eq!(report.passed(), result.is_ok());
    if result.is_ok() {
        let ts = header_text(&headers, "x-slack-request-timestamp");
        let ts: i64 = ts
            .trim()
            .parse()
            .expect("an accepted timestamp is a number");
        assert!(
            (NOW - ts).abs() <= 300,
            "accepted a timestamp {ts} outside the window"
        );
        let sig = header_text(&headers, "x-slack-signature");
        assert!(
            sig.eq_ignore_ascii_case(&crate::channels::slack::verify::sign(SECRET, ts, body)),
            "accepted the signature {sig:?}, which is not the body's"
        );
    }
    // As the handler reads the body: a form (slash command, or `payload` JSON) or JSON.
    if let Ok(form) =
        serde_urlencoded::from_bytes::<std::collections::BTreeMap<String, String>>(body)
    {
        if let Some(payload) = form.get("payload") {
            let _ = serde_json::from_str::<Value>(payload);
        }
    }
    let _ = serde_json::from_slice::<Value>(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed seed really is accepted, so the fuzzer starts from the accepting path.
    #[test]
    fn the_signed_seed_passes() {
        let data = crate::fuzzing::seed("slack_request", "slash");
        let (headers, body) = message(&data);
        super::super::verify::verify(&[SECRET], &headers, body, NOW).unwrap();
    }
}
