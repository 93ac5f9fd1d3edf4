//! The Alexa channel: requests Amazon signed come in; verified requests, their typed
//! envelopes and spoken (SSML) replies go out.
//!
//! - [`verify`]: the certificate-URL, chain, signature, timestamp and skill-id checks.
//! - [`types`]: the request envelope and the response, as serde models.
//! - [`ssml`]: building, escaping and validating speech.
//! - [`channel`]: the `alexa:` settings and the channel state built from them at start-up.
//! - [`handler`]: the HTTP routes (`POST /alexa/{skill}`, `hark say`'s path).
//! - [`conversation`]: one turn: the skill's reply, the function call within the deadline.
//! - [`local`]: the request envelope of a typed utterance (`hark say`, the web UI).
//! - `testpki`: a test certificate authority (tests and `hark bench`; feature `test-util`).

pub mod channel;
pub mod conversation;
pub mod handler;
pub mod local;
pub mod ssml;
#[cfg(feature = "test-util")]
pub mod testpki;
pub mod types;
pub mod verify;

pub use channel::{AlexaChannel, AlexaSettings};
pub use handler::{routes, HEADER_CALL_ERROR, HEADER_DEFERRED};

#[cfg(test)]
mod tests;
