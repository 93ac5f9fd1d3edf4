//! The Teams channel's fuzzing entry point: the target `teams_activity` (`fuzz/fuzz_targets/`,
//! corpus `fuzz/corpus/teams_activity/`), registered through [`ChannelTarget`]; see [`crate::fuzzing`].

use super::TeamsRoute;
use crate::fuzzing::{header_text, message, ChannelTarget, NOW};
use crate::verify;

/// The Teams security token, as Teams shows it (base64 of [`SECRET`]).
pub const TEAMS_TOKEN: &str = "ZnV6ei1zaWduaW5nLXNlY3JldA==";

impl ChannelTarget for TeamsRoute {
    const TARGET: &'static str = "teams_activity";

    fn run(data: &[u8]) {
        teams_activity(data)
    }
}

/// A Teams outgoing-webhook request: accepted only when `Authorization` is `HMAC` and the
/// body's MAC under the security token [`TEAMS_TOKEN`]; the report agrees; an accepted
/// activity is refused when its timestamp is outside the window, and its text comes out
/// plain (no `<at>` mention, no surrounding or repeated spaces).
fn teams_activity(data: &[u8]) {
    use crate::channels::teams;
    let (headers, body) = message(data);
    let key = teams::verify::key(TEAMS_TOKEN.as_bytes()).expect("the fuzz token decodes");
    let result = teams::verify::verify(&[key], &headers, body);
    let report = verify::explain(
        verify::Kind::Channel("teams"),
        TEAMS_TOKEN.as_bytes(),
        &headers,
        body,
        NOW,
    );
    assert_eq!(report.passed(), result.is_ok());
    if result.is_ok() {
        let sent = header_text(&headers, "authorization");
        let expected = teams::verify::sign(TEAMS_TOKEN.as_bytes(), body).unwrap();
        assert_eq!(
            sent.trim().split_once(' ').map(|(_, mac)| mac.trim()),
            expected.split_once(' ').map(|(_, mac)| mac),
            "accepted a MAC that is not the body's"
        );
    }
    if let Ok(activity) = teams::read_activity(body, NOW) {
        let text = &activity.text;
        assert_eq!(text.trim(), text);
        assert!(!text.contains("  "), "{text:?}");
        if let Some(timestamp) = &activity.timestamp {
            let at = chrono::DateTime::parse_from_rfc3339(timestamp).unwrap();
            assert!((at.timestamp() - NOW).abs() <= verify::TOLERANCE_SECS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed seed really is accepted, so the fuzzer starts from the accepting path.
    #[test]
    fn the_signed_seed_passes() {
        let data = crate::fuzzing::seed("teams_activity", "signed");
        let (headers, body) = message(&data);
        let key = super::super::verify::key(TEAMS_TOKEN.as_bytes()).unwrap();
        super::super::verify::verify(&[key], &headers, body).unwrap();
        super::super::read_activity(body, NOW).unwrap();
    }
}
