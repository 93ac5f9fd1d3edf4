//! Phone calls (Twilio Voice) served by the same skills as Alexa: `POST /twilio/{route}`
//! comes in when a call starts and after each thing the caller says; it is checked by
//! `X-Twilio-Signature` against the route's `public_url` ([`verify`]), the words
//! (`SpeechResult`) go through the skill's own matcher into the request Alexa would have
//! sent, the skill answers as it answers Alexa, and the speech goes out as TwiML: `<Say>`,
//! then `<Gather input="speech">` for the next turn. A function slower than the skill's
//! budget gets its "still working" reply and a `<Redirect>` back here, where Hark waits for
//! the answer the queue keeps for this caller, so the caller hears it without hanging up.

#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod verify;

use crate::channels::common::NoReply;
use crate::verify::{Offline, Report};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::header;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::alexa::conversation::respond_explained;
use super::alexa::ssml;
use super::alexa::types::{OutputSpeech, RequestEnvelope};
use super::common::route::Outcome;
use super::common::{
    contract, invalid, BuildContext, ByteSize, ChannelError, ChannelRoute, ConfigError, Delivery,
    Handled, RouteCore,
};
use crate::server::AppState;

/// How long one request waits for a slow function's answer before redirecting again
/// (Twilio waits 15 s for TwiML).
pub const WAIT_PER_REQUEST: Duration = Duration::from_secs(10);
/// How many times a call is redirected to wait for one answer.
pub const MAX_WAITS: u32 = 6;

/// One phone number's voice webhook, as written under `channels.twilio.NAME` in `hark.yml`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TwilioRouteConfig {
    /// Names of secrets holding the account's auth token; two while rotating.
    pub auth_tokens: Vec<String>,
    /// The skill (a directory of the skills directory) that answers.
    pub skill: String,
    /// The URL Twilio calls, exactly as set on the phone number
    /// (`https://hark.example.com/twilio/NAME`): behind a proxy Hark sees another one.
    pub public_url: String,
    /// `<Say>` voice (e.g. `Polly.Joanna`); Twilio's default when unset.
    #[serde(default)]
    pub voice: Option<String>,
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub max_inflight: Option<usize>,
}

/// A checked Twilio route.
pub struct TwilioRoute {
    pub core: RouteCore,
    tokens: Vec<Vec<u8>>,
    skill: String,
    line: Line,
}

/// How a line speaks: where Twilio posts the caller's next words, and the voice.
pub struct Line {
    /// The URL Twilio calls (without a query).
    pub public_url: String,
    pub voice: Option<String>,
}

impl TwilioRouteConfig {
    /// Resolves the auth tokens and checks the skill and URL.
    pub async fn build(
        self,
        name: &str,
        ctx: &BuildContext<'_>,
    ) -> Result<TwilioRoute, ConfigError> {
        let route = format!("channels.twilio.{name}");
        let core = ctx.core::<TwilioRoute>(name, self.max_body, self.max_inflight)?;
        if self.auth_tokens.is_empty() {
            return Err(invalid(
                &route,
                "auth_tokens needs at least one secret name",
            ));
        }
        if !ctx.skills.contains(&self.skill) {
            return Err(invalid(
                &route,
                format!(
                    "skill {:?} is not loaded from the skills directory",
                    self.skill
                ),
            ));
        }
        let public_url = self.public_url.trim().to_owned();
        match url::Url::parse(&public_url) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.query().is_none() => {}
            _ => {
                return Err(invalid(
                    &route,
                    format!(
                        "public_url {public_url:?} is not an http(s) URL without a query: \
                         give the URL set on the phone number"
                    ),
                ))
            }
        }
        Ok(TwilioRoute {
            core,
            tokens: ctx.secrets(&route, &self.auth_tokens).await?,
            skill: self.skill,
            line: Line {
                public_url,
                voice: self.voice,
            },
        })
    }
}

contract::endpoint! {
    #[utoipa::path(post, path = "/twilio/{route}", operation_id = "twilio_voice", tag = "channels", description = "Twilio Voice webhooks for the `twilio` route named `route` in hark.yml, signed with `X-Twilio-Signature` over the route's `public_url`; a skill answers in TwiML.", params(("route" = String, Path, description = "Route name in hark.yml")), request_body(content = String, description = "Twilio's form parameters (CallSid, From, SpeechResult...)", content_type = "application/x-www-form-urlencoded"), responses((status = 200, description = "TwiML", body = String, content_type = "text/xml"), (status = 400, description = "Malformed header or body", body = crate::channels::api::openapi::ErrorBody), (status = 401, description = "Signature missing or wrong", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No route of that name in hark.yml", body = crate::channels::api::openapi::ErrorBody), (status = 413, description = "Body over the route's limit", body = crate::channels::api::openapi::ErrorBody), (status = 429, description = "The route is at its max_inflight", body = crate::channels::api::openapi::ErrorBody)))]
    TwilioRoute
}

impl ChannelRoute for TwilioRoute {
    fn explain(report: &mut Report, r: &Offline<'_>) {
        verify::explain_into(report, r.secret, r.headers, r.url, r.body);
    }

    type Reply = NoReply;

    async fn serve(route: &Arc<Self>, d: Delivery<'_>) -> Handled {
        let (state, call_id, parts, body, delivery) = d.into_parts();
        let url = verify::request_url(&route.line.public_url, parts.uri.query());
        let json = url.contains("bodySHA256=");
        let params: Vec<(String, String)> = if json {
            Vec::new()
        } else {
            serde_urlencoded::from_bytes(&body)
                .map_err(|e| ChannelError::Malformed(format!("form body: {e}")))?
        };
        verify::verify(&route.tokens, &parts.headers, &url, &params, &body, json)?;
        if json {
            return Err(ChannelError::UnsupportedMediaType(
                "a voice webhook sends form parameters, not JSON".into(),
            ));
        }
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let call_sid = param("CallSid").unwrap_or_default();
        // Twilio signs no time. A request is known by what was signed (the URL, which carries
        // Hark's turn number, and every parameter): a replay of it runs nothing.
        let mut signed = Sha256::new();
        signed.update(url.as_bytes());
        for (k, v) in &params {
            signed.update(k.as_bytes());
            signed.update([0]);
            signed.update(v.as_bytes());
            signed.update([0]);
        }
        let id = format!("{call_sid}/{}", &hex::encode(signed.finalize())[..32]);
        *delivery = Some(id.clone());
        let first = state
            .registry
            .store
            .first_delivery(&route.core.key(), &id, chrono::Utc::now().timestamp())
            .await
            .map_err(|e| ChannelError::Internal(e.to_string()))?;
        if !first {
            return Ok((Outcome::Duplicate, twiml(String::new())));
        }
        let Some(skill) = state.alexa.skill(&route.skill) else {
            return Err(ChannelError::Internal(format!(
                "skill {:?} is not loaded",
                route.skill
            )));
        };
        let caller = param("From").or(param("Caller")).unwrap_or("anonymous");
        let user = format!("twilio:{caller}");
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        let turn: u32 = query.get("turn").and_then(|t| t.parse().ok()).unwrap_or(0);
        let _permit = route.core.permit()?;

        if let Some(waits) = query.get("wait").and_then(|w| w.parse::<u32>().ok()) {
            return Ok((
                Outcome::Accepted,
                wait(state, route, &skill.name, &user, turn, waits).await,
            ));
        }
        let words = param("SpeechResult").unwrap_or_default();
        let today = state.clock.now().date_naive();
        let (envelope, _) = super::alexa::local::envelope(&skill, words, &user, None, today);
        let envelope = RequestEnvelope::from_slice(envelope.to_string().as_bytes())
            .map_err(|e| ChannelError::Internal(format!("request for the skill: {e}")))?;
        let outcome = respond_explained(state, &skill, &envelope, call_id).await;
        let verbs = route
            .line
            .turn(&outcome.response, outcome.deferred, words.is_empty(), turn);
        Ok((Outcome::Accepted, twiml(verbs)))
    }
}

/// A `?wait=N` request: the answer the queue kept for this caller, once it is there (at
/// most [`WAIT_PER_REQUEST`]), then the next turn; or a pause and another redirect.
async fn wait(
    state: &Arc<AppState>,
    route: &TwilioRoute,
    skill: &str,
    user: &str,
    turn: u32,
    waits: u32,
) -> Response {
    let store = &state.registry.store;
    let deadline = tokio::time::Instant::now() + WAIT_PER_REQUEST;
    loop {
        match store.take_alexa_pending(skill, user).await {
            Ok(pending) if !pending.is_empty() => {
                let words: Vec<String> = pending
                    .iter()
                    .map(|p| ssml::to_plain_text(&p.speech))
                    .collect();
                let line = &route.line;
                return twiml(line.gather(turn + 1, &line.say(&words.join(" "))));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(channel = "twilio", route = %route.core.name, error = %e, "pending answers could not be read");
                break;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if waits >= MAX_WAITS {
        return twiml(
            route
                .line
                .say("This is taking too long. I will tell you the answer when you call again.")
                + "<Hangup/>",
        );
    }
    twiml(route.line.say("Still working on it.") + &route.line.redirect(turn, waits + 1))
}

/// The words of an Alexa output speech, for `<Say>`.
fn spoken(speech: &OutputSpeech) -> String {
    match speech {
        OutputSpeech::Ssml { ssml: doc, .. } => ssml::to_plain_text(doc),
        OutputSpeech::PlainText { text, .. } => text.clone(),
    }
}

/// `text` escaped for XML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Line {
    /// The verbs answering one turn whose skill response is `response`: its words, then a
    /// redirect to wait for a `deferred` call, the next `<Gather>` when the skill keeps the
    /// conversation open (or the call has just `opened`), else `<Hangup/>`.
    pub fn turn(
        &self,
        response: &super::alexa::types::Response,
        deferred: bool,
        opened: bool,
        turn: u32,
    ) -> String {
        let body = &response.response;
        let speech = body.output_speech.as_ref().map(spoken).unwrap_or_default();
        let mut verbs = self.say(&speech);
        if deferred {
            verbs.push_str(&self.redirect(turn, 1));
        } else if body.should_end_session == Some(false) || opened {
            verbs = self.gather(turn + 1, &verbs);
        } else {
            verbs.push_str("<Hangup/>");
        }
        verbs
    }

    /// `<Say>` of `text`, escaped; nothing for no words.
    fn say(&self, text: &str) -> String {
        if text.trim().is_empty() {
            return String::new();
        }
        match &self.voice {
            Some(voice) => format!(
                "<Say voice=\"{}\">{}</Say>",
                escape(voice),
                escape(text.trim())
            ),
            None => format!("<Say>{}</Say>", escape(text.trim())),
        }
    }

    /// `<Gather>` of the caller's next words around `inner`, posted back as turn `turn`;
    /// when the caller says nothing, the call ends.
    fn gather(&self, turn: u32, inner: &str) -> String {
        let action = format!("{}?turn={turn}", self.public_url);
        format!(
            "<Gather input=\"speech\" speechTimeout=\"auto\" method=\"POST\" action=\"{}\">{inner}</Gather><Hangup/>",
            escape(&action)
        )
    }

    /// Back here to wait for the answer (`wait` counts the redirects).
    fn redirect(&self, turn: u32, wait: u32) -> String {
        let url = format!("{}?turn={turn}&wait={wait}", self.public_url);
        format!("<Redirect method=\"POST\">{}</Redirect>", escape(&url))
    }
}

/// The TwiML document of `verbs`.
pub fn document(verbs: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{verbs}</Response>")
}

/// A TwiML document of `verbs`.
fn twiml(verbs: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        document(&verbs),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Line {
        Line {
            public_url: "https://h.example/twilio/line".into(),
            voice: None,
        }
    }

    #[test]
    fn words_are_escaped_and_turns_numbered() {
        let r = route();
        assert_eq!(
            r.say(" a < b & \"c\" "),
            "<Say>a &lt; b &amp; &quot;c&quot;</Say>"
        );
        assert_eq!(r.say("  "), "");
        assert_eq!(
            r.gather(2, "<Say>x</Say>"),
            "<Gather input=\"speech\" speechTimeout=\"auto\" method=\"POST\" action=\"https://h.example/twilio/line?turn=2\"><Say>x</Say></Gather><Hangup/>"
        );
        assert_eq!(
            r.redirect(1, 2),
            "<Redirect method=\"POST\">https://h.example/twilio/line?turn=1&amp;wait=2</Redirect>"
        );
    }
}
