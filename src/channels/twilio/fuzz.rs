//! The Twilio channel's fuzzing entry point: the target `twilio_request` (`fuzz/fuzz_targets/`,
//! corpus `fuzz/corpus/twilio_request/`), registered through [`ChannelTarget`]; see [`crate::fuzzing`].

use super::TwilioRoute;
use crate::fuzzing::{header_text, message, ChannelTarget, NOW, SECRET};

/// The URL the Twilio target's requests were sent to.
pub const TWILIO_URL: &str = "https://hark.example.com/twilio/line?turn=1";

impl ChannelTarget for TwilioRoute {
    const TARGET: &'static str = "twilio_request";

    fn run(data: &[u8]) {
        twilio_request(data)
    }
}

/// A Twilio request to [`TWILIO_URL`]: accepted only when `X-Twilio-Signature` is the
/// HMAC of the URL and sorted form parameters under [`SECRET`] (the report agrees); form
/// bodies parse or fail without a panic.
fn twilio_request(data: &[u8]) {
    use crate::channels::twilio::verify;
    let (headers, body) = message(data);
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
        return;
    };
    let result = verify::verify(
        &[SECRET.to_vec()],
        &headers,
        TWILIO_URL,
        &params,
        body,
        false,
    );
    let report = crate::verify::explain_request(
        crate::verify::Kind::Channel("twilio"),
        &crate::verify::Offline {
            secret: SECRET,
            headers: &headers,
            body,
            now: NOW,
            url: Some(TWILIO_URL),
        },
    );
    assert_eq!(report.passed(), result.is_ok());
    if result.is_ok() {
        let sent = header_text(&headers, verify::SIGNATURE);
        let plain = verify::sign_request(SECRET, TWILIO_URL, &params);
        let with_port =
            verify::sign_request(SECRET, &TWILIO_URL.replace(".com/", ".com:443/"), &params);
        assert!(
            sent.trim() == plain || sent.trim() == with_port,
            "accepted {sent:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed seed really is accepted, so the fuzzer starts from the accepting path.
    #[test]
    fn the_signed_seed_passes() {
        let data = crate::fuzzing::seed("twilio_request", "signed");
        let (headers, body) = message(&data);
        let params: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap();
        super::super::verify::verify(
            &[SECRET.to_vec()],
            &headers,
            TWILIO_URL,
            &params,
            body,
            false,
        )
        .unwrap();
    }
}
