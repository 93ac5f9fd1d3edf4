//! The Alexa channel: requests Amazon signed come in; verified requests, their typed
//! envelopes and spoken (SSML) replies go out.
//!
//! - [`verify`]: the certificate-URL, chain, signature, timestamp and skill-id checks.
//! - [`types`]: the request envelope and the response, as serde models.
//! - [`ssml`]: building, escaping and validating speech.

pub mod ssml;
pub mod types;
pub mod verify;
