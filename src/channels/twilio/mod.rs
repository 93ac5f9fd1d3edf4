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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::header;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::alexa::conversation::respond_explained;
use super::alexa::ssml;
use super::alexa::types::{OutputSpeech, RequestEnvelope, Response as AlexaResponse};
use super::common::route::Outcome;
use super::common::{
    contract, invalid, BuildContext, ByteSize, ChannelError, ChannelRoute, ConfigError, Delivery,
    Handled, RouteCore,
};
use crate::server::AppState;
use crate::channels::common::NoReply;
use crate::verify::{Offline, Report};

/// How long one request waits for a slow function's answer before redirecting again
/// (Twilio waits 15 s for TwiML).
pub const WAIT_PER_REQUEST: Duration = Duration::from_secs(10);
/// How often a waiting request reads the store when nothing wakes it.
const RECHECK: Duration = Duration::from_secs(1);
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
    /// The skill's session of each call in progress, by `CallSid`: one call is one Alexa
    /// session, its attributes carried from turn to turn.
    calls: std::sync::Mutex<HashMap<String, CallSession>>,
}

/// One call's skill session.
struct CallSession {
    id: String,
    attributes: serde_json::Map<String, Value>,
    last_turn: std::time::Instant,
}

/// How long a call's session is kept after its last turn (a call with no turn for this
/// long has ended without Hark hearing of it).
const CALL_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// How many calls' sessions a line keeps at once.
const MAX_CALLS: usize = 10_000;
/// The largest session (its attributes as JSON) kept from turn to turn; Alexa's own limit
/// on a whole response is 24 KiB.
const MAX_SESSION_BYTES: usize = 24 * 1024;

impl TwilioRoute {
    /// Makes `envelope` (a new session's request) the next request of call `call_sid`'s
    /// session, when the call has one.
    fn continue_session(&self, call_sid: &str, envelope: &mut Value) {
        // Idle calls are pruned when a turn is kept (`keep_session`); here one is only
        // skipped.
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let live = calls
            .get(call_sid)
            .filter(|c| c.last_turn.elapsed() < CALL_SESSION_IDLE);
        if let Some(call) = live {
            envelope["session"]["new"] = Value::Bool(false);
            envelope["session"]["sessionId"] = Value::from(call.id.as_str());
            envelope["session"]["attributes"] = Value::Object(call.attributes.clone());
        }
    }

    /// Keeps the session attributes of `response` for the call's next turn while the call
    /// `goes_on` (the skill keeps the session open, or Hark waits for a slow answer), or
    /// forgets the call. At most [`MAX_CALLS`] calls are kept, each with attributes of at
    /// most [`MAX_SESSION_BYTES`]: past that, the oldest call's session goes first.
    fn keep_session(
        &self,
        call_sid: &str,
        session_id: &str,
        response: &AlexaResponse,
        goes_on: bool,
    ) {
        if call_sid.is_empty() {
            return;
        }
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.retain(|_, c| c.last_turn.elapsed() < CALL_SESSION_IDLE);
        let size = serde_json::to_vec(&response.session_attributes).map_or(usize::MAX, |v| v.len());
        if !goes_on || size > MAX_SESSION_BYTES {
            calls.remove(call_sid);
            return;
        }
        if calls.len() >= MAX_CALLS && !calls.contains_key(call_sid) {
            let oldest = calls
                .iter()
                .min_by_key(|(_, c)| c.last_turn)
                .map(|(sid, _)| sid.clone());
            if let Some(oldest) = oldest {
                calls.remove(&oldest);
            }
        }
        calls.insert(
            call_sid.to_owned(),
            CallSession {
                id: session_id.to_owned(),
                attributes: response.session_attributes.clone(),
                last_turn: std::time::Instant::now(),
            },
        );
    }

    /// Marks call `call_sid` as still going (it is waiting for a slow answer).
    fn touch_session(&self, call_sid: &str) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(call) = calls.get_mut(call_sid) {
            call.last_turn = std::time::Instant::now();
        }
    }
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
            calls: std::sync::Mutex::new(HashMap::new()),
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
            route.touch_session(call_sid);
            return Ok((
                Outcome::Accepted,
                wait(state, route, &skill.name, &user, turn, waits).await,
            ));
        }
        let words = param("SpeechResult").unwrap_or_default();
        let today = state.clock.now().date_naive();
        let (mut envelope, _) = super::alexa::local::envelope(&skill, words, &user, None, today);
        route.continue_session(call_sid, &mut envelope);
        let session_id = envelope["session"]["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let envelope = RequestEnvelope::from_slice(envelope.to_string().as_bytes())
            .map_err(|e| ChannelError::Internal(format!("request for the skill: {e}")))?;
        let outcome = respond_explained(state, &skill, &envelope, call_id).await;
        let goes_on = outcome.deferred
            || words.is_empty()
            || outcome.response.response.should_end_session == Some(false);
        route.keep_session(call_sid, &session_id, &outcome.response, goes_on);
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
        // Listening before the store is read, so an answer stored in between still wakes.
        let stored = state.alexa.pending_stored.notified();
        tokio::pin!(stored);
        stored.as_mut().enable();
        match store.take_alexa_pending(skill, user).await {
            Ok(pending) if !pending.is_empty() => {
                let line = &route.line;
                let speech: Vec<String> = pending.iter().map(|p| line.ssml(&p.speech)).collect();
                return twiml(line.gather(turn + 1, &line.say_markup(&speech.join(" "))));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(channel = "twilio", route = %route.core.name, error = %e, "pending answers could not be read");
                break;
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        // Woken by the answer; the store is read again now and then all the same, for an
        // answer another gateway process stored.
        tokio::select! {
            () = &mut stored => {}
            () = tokio::time::sleep_until((now + RECHECK).min(deadline)) => {}
        }
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
        response: &AlexaResponse,
        deferred: bool,
        opened: bool,
        turn: u32,
    ) -> String {
        let body = &response.response;
        let speech = match &body.output_speech {
            Some(OutputSpeech::Ssml { ssml: doc, .. }) => self.ssml(doc),
            Some(OutputSpeech::PlainText { text, .. }) => escape(text),
            None => String::new(),
        };
        let mut verbs = self.say_markup(&speech);
        if deferred {
            verbs.push_str(&self.redirect(turn, 1));
        } else if body.should_end_session == Some(false) || opened {
            verbs = self.gather(turn + 1, &verbs);
        } else {
            verbs.push_str("<Hangup/>");
        }
        verbs
    }

    /// Whether the voice speaks SSML: Twilio takes it only with Amazon Polly and Google
    /// voices; its basic voices (and the default) read plain text.
    fn speaks_ssml(&self) -> bool {
        self.voice
            .as_deref()
            .is_some_and(|v| v.starts_with("Polly.") || v.starts_with("Google."))
    }

    /// A skill's SSML as the content of `<Say>`: reduced to the tags TwiML takes when the
    /// voice speaks SSML, else its plain words; escaped either way.
    fn ssml(&self, doc: &str) -> String {
        if self.speaks_ssml() {
            ssml::to_twiml(doc)
        } else {
            escape(&ssml::to_plain_text(doc))
        }
    }

    /// `<Say>` of `text`, escaped; nothing for no words.
    fn say(&self, text: &str) -> String {
        self.say_markup(&escape(text))
    }

    /// `<Say>` of `markup` (escaped text, and SSML tags the voice speaks); nothing for no
    /// words.
    fn say_markup(&self, markup: &str) -> String {
        let markup = markup.trim();
        if markup.is_empty() {
            return String::new();
        }
        match &self.voice {
            Some(voice) => format!("<Say voice=\"{}\">{markup}</Say>", escape(voice)),
            None => format!("<Say>{markup}</Say>"),
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

    #[test]
    fn ssml_is_kept_only_for_voices_that_speak_it() {
        let doc = "<speak>Booked <break time=\"1s\"/><audio src=\"https://a.example/x.mp3\"/>\
                   <emphasis>Friday</emphasis> &amp; more</speak>";
        let polly = Line {
            voice: Some("Polly.Joanna".into()),
            ..route()
        };
        assert_eq!(
            polly.say_markup(&polly.ssml(doc)),
            "<Say voice=\"Polly.Joanna\">Booked <break time=\"1s\"/><emphasis>Friday</emphasis> &amp; more</Say>"
        );
        for basic in [route(), Line { voice: Some("alice".into()), ..route() }] {
            let said = basic.say_markup(&basic.ssml(doc));
            assert!(!said.contains("<break") && !said.contains("<emphasis"), "{said}");
            assert!(said.contains("Booked") && said.contains("Friday &amp; more</Say>"), "{said}");
        }
    }
}
