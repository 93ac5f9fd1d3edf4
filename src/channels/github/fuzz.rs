//! The GitHub channel's fuzzing entry point: the target `github_delivery` (`fuzz/fuzz_targets/`,
//! corpus `fuzz/corpus/github_delivery/`), registered through [`ChannelTarget`]; see [`crate::fuzzing`].

use serde_json::Value;

use super::GitHubRoute;
use crate::fuzzing::{header_text, message, ChannelTarget, NOW, SECRET};
use crate::verify;

impl ChannelTarget for GitHubRoute {
    const TARGET: &'static str = "github_delivery";

    fn run(data: &[u8]) {
        github_delivery(data)
    }
}

/// A GitHub delivery: accepted only when `X-Hub-Signature-256` is the body's HMAC under
/// [`SECRET`]; the payload's reply target and a function's label output parse or fail
/// without a panic.
fn github_delivery(data: &[u8]) {
    let (headers, body) = message(data);
    let result = crate::channels::github::verify::verify(&[SECRET], &headers, body, NOW);
    let report = verify::explain(verify::Kind::Channel("github"), SECRET, &headers, body, NOW);
    assert_eq!(report.passed(), result.is_ok());
    if result.is_ok() {
        let sig = header_text(&headers, "x-hub-signature-256");
        assert!(
            sig.trim()
                .eq_ignore_ascii_case(&crate::channels::github::verify::sign(SECRET, body)),
            "accepted the signature {sig:?}, which is not the body's"
        );
    }
    if let Ok(payload) = serde_json::from_slice::<Value>(body) {
        if let Ok(target) = crate::channels::github::api::Target::of(&payload) {
            assert!(!target.repo.is_empty() || payload["repository"]["full_name"] == "");
        }
    }
    let _ = crate::channels::github::api::parse_labels(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed seed really is accepted, so the fuzzer starts from the accepting path.
    #[test]
    fn the_signed_seed_passes() {
        let data = crate::fuzzing::seed("github_delivery", "issue");
        let (headers, body) = message(&data);
        super::super::verify::verify(&[SECRET], &headers, body, NOW).unwrap();
    }
}
