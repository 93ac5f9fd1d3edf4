//! Alexa wire types: the JSON request envelope Alexa POSTs to a skill in, the response
//! envelope (speech, card, reprompt, dialog directives) out, and the progressive-response body.
//!
//! Shapes follow Amazon's "Request and Response JSON Reference":
//! <https://developer.amazon.com/en-US/docs/alexa/custom-skills/request-and-response-json-reference.html>
//! and "Request Types Reference":
//! <https://developer.amazon.com/en-US/docs/alexa/custom-skills/request-types-reference.html>.
//!
//! Parsing is tolerant: unknown fields are ignored, unknown request types land in
//! [`RequestKind::Other`] with their fields kept, and unknown enum values map to an `Unknown`
//! variant. Tokens are held in [`SecretString`], whose `Debug` never prints them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The version string Alexa expects in every response.
pub const RESPONSE_VERSION: &str = "1.0";

/// Prefix of the skill-event request types (`AlexaSkillEvent.SkillEnabled`, ...), which Amazon
/// may deliver up to an hour late.
pub const SKILL_EVENT_PREFIX: &str = "AlexaSkillEvent.";

// ---------------------------------------------------------------------------------------------
// Small shared pieces
// ---------------------------------------------------------------------------------------------

/// A token (OAuth access token, `apiAccessToken`, consent token). Serialises as a plain string;
/// `Debug` and `Display` print `[redacted]` so it never reaches a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a token.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The token itself, for passing on to an API call. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `{"applicationId": "amzn1.ask.skill..."}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub application_id: String,
}

/// `{"type": "...", "message": "..."}` as found in `SessionEndedRequest.error` and
/// `System.ExceptionEncountered.error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// Request timestamps are ISO 8601 strings; a few event types have been seen with epoch
/// milliseconds instead, so both are accepted. `DateTime<Utc>` serialises as RFC 3339.
mod timestamp {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Millis(i64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| D::Error::custom(format!("timestamp is not RFC 3339: {e}"))),
            Raw::Millis(ms) => Utc
                .timestamp_millis_opt(ms)
                .single()
                .ok_or_else(|| D::Error::custom("timestamp milliseconds out of range")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request envelope
// ---------------------------------------------------------------------------------------------

/// The whole body of a request from Alexa.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
    pub request: Request,
}

impl RequestEnvelope {
    /// Parses a request body.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// `context.System.application.applicationId`, the skill the request is for.
    pub fn context_application_id(&self) -> Option<&str> {
        self.context
            .as_ref()?
            .system
            .as_ref()?
            .application
            .as_ref()
            .map(|a| a.application_id.as_str())
    }

    /// The skill the request is for: `context.System.application.applicationId`, else
    /// (requests without `context`, as Amazon sent them until 2018)
    /// `session.application.applicationId`, the order the ASK SDKs read them in.
    pub fn application_id(&self) -> Option<&str> {
        self.context_application_id()
            .or_else(|| self.session_application_id())
    }

    /// `session.application.applicationId`, when the request has a session.
    pub fn session_application_id(&self) -> Option<&str> {
        self.session
            .as_ref()?
            .application
            .as_ref()
            .map(|a| a.application_id.as_str())
    }

    /// `context.System.apiEndpoint` and `apiAccessToken`, needed for progressive responses
    /// and other Alexa API calls.
    pub fn api_access(&self) -> Option<(&str, &SecretString)> {
        let system = self.context.as_ref()?.system.as_ref()?;
        Some((
            system.api_endpoint.as_deref()?,
            system.api_access_token.as_ref()?,
        ))
    }
}

/// `session`: present for requests that belong to a skill session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    #[serde(default)]
    pub new: bool,
    #[serde(default)]
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<Application>,
    /// Whatever the skill put in `sessionAttributes` of its previous response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

/// `session.user` / `context.System.user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub user_id: String,
    /// Account-linking token; `null` or absent when the account is not linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
}

/// `user.permissions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_token: Option<SecretString>,
}

/// `context`: the state of the device and of Alexa services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    #[serde(rename = "System", default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemContext>,
    /// Other interfaces' state (`AudioPlayer`, `Viewport`, ...), kept as JSON.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `context.System`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<Application>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_access_token: Option<SecretString>,
}

/// `context.System.device`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default)]
    pub supported_interfaces: Map<String, Value>,
}

/// `request`: the common fields plus the type-specific part.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub request_id: String,
    pub timestamp: DateTime<Utc>,
    pub locale: Option<String>,
    pub kind: RequestKind,
}

impl Request {
    /// The `type` field as Alexa sent it (`IntentRequest`, `AlexaSkillEvent.SkillEnabled`, ...).
    pub fn type_name(&self) -> &str {
        self.kind.type_name()
    }

    /// True for `AlexaSkillEvent.*` requests, which get a wider timestamp tolerance.
    pub fn is_skill_event(&self) -> bool {
        self.type_name().starts_with(SKILL_EVENT_PREFIX)
    }
}

/// The type-specific part of a request, selected by its `type` field.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestKind {
    Launch(LaunchRequest),
    Intent(IntentRequest),
    SessionEnded(SessionEndedRequest),
    CanFulfillIntent(CanFulfillIntentRequest),
    ExceptionEncountered(ExceptionEncounteredRequest),
    /// Any other type (`AudioPlayer.*`, `AlexaSkillEvent.*`, `Connections.Response`, ...),
    /// with its fields other than the common ones.
    Other {
        type_name: String,
        fields: Map<String, Value>,
    },
}

const TYPE_LAUNCH: &str = "LaunchRequest";
const TYPE_INTENT: &str = "IntentRequest";
const TYPE_SESSION_ENDED: &str = "SessionEndedRequest";
const TYPE_CAN_FULFILL: &str = "CanFulfillIntentRequest";
const TYPE_EXCEPTION: &str = "System.ExceptionEncountered";

impl RequestKind {
    /// The `type` string of this request kind.
    pub fn type_name(&self) -> &str {
        match self {
            RequestKind::Launch(_) => TYPE_LAUNCH,
            RequestKind::Intent(_) => TYPE_INTENT,
            RequestKind::SessionEnded(_) => TYPE_SESSION_ENDED,
            RequestKind::CanFulfillIntent(_) => TYPE_CAN_FULFILL,
            RequestKind::ExceptionEncountered(_) => TYPE_EXCEPTION,
            RequestKind::Other { type_name, .. } => type_name,
        }
    }
}

/// `LaunchRequest`: the user opened the skill without an intent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaunchRequest {}

/// `IntentRequest`: the user said something that maps to an intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntentRequest {
    pub intent: Intent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialog_state: Option<DialogState>,
}

/// `SessionEndedRequest`: the session ended; the skill may only answer with an empty response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEndedRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<SessionEndedReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// `CanFulfillIntentRequest`: Alexa asks whether the skill could handle an intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanFulfillIntentRequest {
    pub intent: Intent,
}

/// `System.ExceptionEncountered`: a directive the skill sent earlier failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionEncounteredRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<ExceptionCause>,
}

/// `System.ExceptionEncountered.cause`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionCause {
    #[serde(default)]
    pub request_id: String,
}

/// `SessionEndedRequest.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionEndedReason {
    UserInitiated,
    Error,
    ExceededMaxReprompts,
    #[serde(other)]
    Unknown,
}

/// `IntentRequest.dialogState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DialogState {
    Started,
    InProgress,
    Completed,
    #[serde(other)]
    Unknown,
}

/// `confirmationStatus` of an intent or a slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfirmationStatus {
    #[default]
    None,
    Confirmed,
    Denied,
    #[serde(other)]
    Unknown,
}

/// An intent with its slots. Also used as `updatedIntent` in dialog directives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    pub name: String,
    #[serde(default)]
    pub confirmation_status: ConfirmationStatus,
    /// Slots by name. Absent in requests for intents without slots.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<String, Slot>,
}

impl Intent {
    /// A new intent without slots.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            confirmation_status: ConfirmationStatus::None,
            slots: BTreeMap::new(),
        }
    }

    /// The spoken value of a slot, if the user filled it.
    pub fn slot_value(&self, name: &str) -> Option<&str> {
        self.slots.get(name)?.value.as_deref()
    }
}

/// One slot of an intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    pub name: String,
    /// What the user said, as Alexa transcribed it. Untrusted user input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub confirmation_status: ConfirmationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolutions: Option<Resolutions>,
}

impl Slot {
    /// The first entity-resolution match (`ER_SUCCESS_MATCH`), if any.
    pub fn resolved(&self) -> Option<&ResolvedValue> {
        self.resolutions
            .as_ref()?
            .resolutions_per_authority
            .iter()
            .filter(|r| r.status.code == RESOLUTION_MATCH)
            .flat_map(|r| r.values.iter())
            .map(|v| &v.value)
            .next()
    }
}

/// The status code of a successful entity resolution.
pub const RESOLUTION_MATCH: &str = "ER_SUCCESS_MATCH";

/// `slot.resolutions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolutions {
    #[serde(default)]
    pub resolutions_per_authority: Vec<Resolution>,
}

/// One authority's resolution of a slot value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    #[serde(default)]
    pub authority: String,
    pub status: ResolutionStatus,
    #[serde(default)]
    pub values: Vec<ResolutionValue>,
}

/// `status` of a resolution: `ER_SUCCESS_MATCH`, `ER_SUCCESS_NO_MATCH`, `ER_ERROR_TIMEOUT`,
/// `ER_ERROR_EXCEPTION` (kept as a string so that new codes pass through).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolutionStatus {
    pub code: String,
}

/// `{"value": {"name": ..., "id": ...}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolutionValue {
    pub value: ResolvedValue,
}

/// A resolved slot value: the canonical name and id from the slot type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedValue {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Common {
            #[serde(rename = "type")]
            type_name: String,
            request_id: String,
            #[serde(deserialize_with = "timestamp::deserialize")]
            timestamp: DateTime<Utc>,
            #[serde(default)]
            locale: Option<String>,
        }

        let mut fields = Map::<String, Value>::deserialize(d)?;
        let common =
            Common::deserialize(Value::Object(fields.clone())).map_err(D::Error::custom)?;
        for key in ["type", "requestId", "timestamp", "locale"] {
            fields.remove(key);
        }
        fn part<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            type_name: &str,
            fields: Map<String, Value>,
        ) -> Result<T, E> {
            T::deserialize(Value::Object(fields))
                .map_err(|e| E::custom(format!("{type_name}: {e}")))
        }
        let t = common.type_name.as_str();
        let kind = match t {
            TYPE_LAUNCH => RequestKind::Launch(part(t, fields)?),
            TYPE_INTENT => RequestKind::Intent(part(t, fields)?),
            TYPE_SESSION_ENDED => RequestKind::SessionEnded(part(t, fields)?),
            TYPE_CAN_FULFILL => RequestKind::CanFulfillIntent(part(t, fields)?),
            TYPE_EXCEPTION => RequestKind::ExceptionEncountered(part(t, fields)?),
            _ => RequestKind::Other {
                type_name: common.type_name.clone(),
                fields,
            },
        };
        Ok(Request {
            request_id: common.request_id,
            timestamp: common.timestamp,
            locale: common.locale,
            kind,
        })
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let specific = match &self.kind {
            RequestKind::Launch(r) => serde_json::to_value(r),
            RequestKind::Intent(r) => serde_json::to_value(r),
            RequestKind::SessionEnded(r) => serde_json::to_value(r),
            RequestKind::CanFulfillIntent(r) => serde_json::to_value(r),
            RequestKind::ExceptionEncountered(r) => serde_json::to_value(r),
            RequestKind::Other { fields, .. } => Ok(Value::Object(fields.clone())),
        }
        .map_err(S::Error::custom)?;
        let mut map = Map::new();
        map.insert("type".into(), Value::from(self.type_name()));
        map.insert("requestId".into(), Value::from(self.request_id.as_str()));
        let ts = serde_json::to_value(self.timestamp).map_err(S::Error::custom)?;
        map.insert("timestamp".into(), ts);
        if let Some(locale) = &self.locale {
            map.insert("locale".into(), Value::from(locale.as_str()));
        }
        if let Value::Object(rest) = specific {
            map.extend(rest);
        }
        map.serialize(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Response envelope
// ---------------------------------------------------------------------------------------------

/// The whole body a skill returns to Alexa.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub version: String,
    /// Carried into `session.attributes` of the next request in the session.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub session_attributes: Map<String, Value>,
    pub response: ResponseBody,
}

/// `response` inside the response envelope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_speech: Option<OutputSpeech>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprompt: Option<Reprompt>,
    /// `true` ends the session, `false` keeps the microphone open, absent lets the device decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_end_session: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directives: Vec<Directive>,
}

/// What Alexa says: plain text or an SSML document (`<speak>...</speak>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OutputSpeech {
    PlainText {
        text: String,
        #[serde(
            rename = "playBehavior",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        play_behavior: Option<PlayBehavior>,
    },
    #[serde(rename = "SSML")]
    Ssml {
        ssml: String,
        #[serde(
            rename = "playBehavior",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        play_behavior: Option<PlayBehavior>,
    },
}

impl OutputSpeech {
    /// Plain text speech.
    pub fn plain(text: impl Into<String>) -> Self {
        OutputSpeech::PlainText {
            text: text.into(),
            play_behavior: None,
        }
    }

    /// SSML speech; `ssml` must be a whole `<speak>` document (see `ssml::Speech::render`).
    pub fn ssml(ssml: impl Into<String>) -> Self {
        OutputSpeech::Ssml {
            ssml: ssml.into(),
            play_behavior: None,
        }
    }
}

/// `outputSpeech.playBehavior`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlayBehavior {
    Enqueue,
    ReplaceAll,
    ReplaceEnqueued,
}

/// `reprompt`: said when the user does not answer while the session is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reprompt {
    pub output_speech: OutputSpeech,
}

/// A card shown in the Alexa app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Card {
    Simple {
        title: String,
        content: String,
    },
    Standard {
        title: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<CardImage>,
    },
    /// Asks the user to link their account in the Alexa app.
    LinkAccount,
    /// Asks the user to grant permissions (`alexa::profile:email:read`, ...).
    AskForPermissionsConsent {
        permissions: Vec<String>,
    },
}

/// `card.image` of a Standard card (HTTPS URLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small_image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_image_url: Option<String>,
}

/// Directives in a response. Dialog directives are only valid while the session stays open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Directive {
    /// Hand the next turn to Alexa's dialog model.
    #[serde(rename = "Dialog.Delegate", rename_all = "camelCase")]
    DialogDelegate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        updated_intent: Option<Intent>,
    },
    /// Ask the user for a value of `slot_to_elicit`.
    #[serde(rename = "Dialog.ElicitSlot", rename_all = "camelCase")]
    DialogElicitSlot {
        slot_to_elicit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        updated_intent: Option<Intent>,
    },
    /// Ask the user to confirm the value of `slot_to_confirm`.
    #[serde(rename = "Dialog.ConfirmSlot", rename_all = "camelCase")]
    DialogConfirmSlot {
        slot_to_confirm: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        updated_intent: Option<Intent>,
    },
    /// Ask the user to confirm the whole intent.
    #[serde(rename = "Dialog.ConfirmIntent", rename_all = "camelCase")]
    DialogConfirmIntent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        updated_intent: Option<Intent>,
    },
    /// Any other directive (AudioPlayer, APL, ...), passed through as JSON.
    #[serde(untagged)]
    Other(Map<String, Value>),
}

impl Response {
    /// A response that says `ssml` (a whole `<speak>` document) and ends the session.
    pub fn speak(ssml: impl Into<String>) -> Self {
        Self::with_body(ResponseBody {
            output_speech: Some(OutputSpeech::ssml(ssml)),
            should_end_session: Some(true),
            ..ResponseBody::default()
        })
    }

    /// A response that says plain `text` and ends the session.
    pub fn speak_plain(text: impl Into<String>) -> Self {
        Self::with_body(ResponseBody {
            output_speech: Some(OutputSpeech::plain(text)),
            should_end_session: Some(true),
            ..ResponseBody::default()
        })
    }

    /// `{"version":"1.0","response":{}}`: the only valid answer to a `SessionEndedRequest`,
    /// and a quiet acknowledgement of events.
    pub fn empty() -> Self {
        Self::with_body(ResponseBody::default())
    }

    /// A response with the given body.
    pub fn with_body(response: ResponseBody) -> Self {
        Self {
            version: RESPONSE_VERSION.to_owned(),
            session_attributes: Map::new(),
            response,
        }
    }

    /// Keeps the session open and sets the SSML reprompt said if the user stays silent.
    pub fn ask(mut self, reprompt_ssml: impl Into<String>) -> Self {
        self.response.reprompt = Some(Reprompt {
            output_speech: OutputSpeech::ssml(reprompt_ssml),
        });
        self.response.should_end_session = Some(false);
        self
    }

    /// Sets `shouldEndSession`.
    pub fn end_session(mut self, end: Option<bool>) -> Self {
        self.response.should_end_session = end;
        self
    }

    /// Adds a card.
    pub fn card(mut self, card: Card) -> Self {
        self.response.card = Some(card);
        self
    }

    /// Adds a directive. Dialog directives keep the session open, so `shouldEndSession`
    /// becomes `false` for them.
    pub fn directive(mut self, directive: Directive) -> Self {
        if !matches!(directive, Directive::Other(_)) {
            self.response.should_end_session = Some(false);
        }
        self.response.directives.push(directive);
        self
    }

    /// Sets the session attributes returned in the next request of the session.
    pub fn session_attributes(mut self, attributes: Map<String, Value>) -> Self {
        self.session_attributes = attributes;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Progressive response
// ---------------------------------------------------------------------------------------------

/// Body POSTed to `{apiEndpoint}/v1/directives` (with `Authorization: Bearer apiAccessToken`)
/// to say something while the skill is still working on the answer.
/// <https://developer.amazon.com/en-US/docs/alexa/custom-skills/send-the-user-a-progressive-response.html>
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressiveResponse {
    pub header: ProgressiveHeader,
    pub directive: ProgressiveDirective,
}

/// `header` of a progressive response: the id of the request being answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressiveHeader {
    pub request_id: String,
}

/// The directive of a progressive response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ProgressiveDirective {
    /// Say `speech` (SSML or plain text, at most 600 characters).
    #[serde(rename = "VoicePlayer.Speak")]
    VoicePlayerSpeak { speech: String },
}

impl ProgressiveResponse {
    /// The path under `apiEndpoint` this body is POSTed to.
    pub const PATH: &'static str = "/v1/directives";

    /// A `VoicePlayer.Speak` progressive response for the request `request_id`.
    pub fn speak(request_id: impl Into<String>, speech: impl Into<String>) -> Self {
        Self {
            header: ProgressiveHeader {
                request_id: request_id.into(),
            },
            directive: ProgressiveDirective::VoicePlayerSpeak {
                speech: speech.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::verify::test_support::conformance_dir;
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_real_2017_request() {
        let Some(dir) = conformance_dir() else { return };
        let body = std::fs::read(dir.join("alexa/real-2017-11-20/body.json")).unwrap();
        let env = RequestEnvelope::from_slice(&body).unwrap();
        assert_eq!(env.version, "1.0");
        let app = "amzn1.ask.skill.f5e6173c-8f7a-4c51-85e8-275e52d9443b";
        assert_eq!(env.context_application_id(), Some(app));
        assert_eq!(env.session_application_id(), Some(app));
        let session = env.session.as_ref().unwrap();
        assert!(session.new);
        assert_eq!(
            session.session_id,
            "SessionId.1cfa16c1-9794-4e44-9358-a009f0a6ea1c"
        );
        let user = session.user.as_ref().unwrap();
        assert!(user.user_id.starts_with("amzn1.ask.account.AFLKBJN4"));
        assert_eq!(user.access_token, None, "accessToken: null");
        assert_eq!(env.request.type_name(), "IntentRequest");
        assert_eq!(
            env.request.request_id,
            "EdwRequestId.edb164fe-5dd1-4fb1-984b-bba5f0d2ee6d"
        );
        assert_eq!(env.request.locale.as_deref(), Some("en-GB"));
        assert_eq!(
            env.request.timestamp.to_rfc3339(),
            "2017-11-20T08:45:02+00:00"
        );
        let RequestKind::Intent(intent) = &env.request.kind else {
            panic!("not an intent request: {:?}", env.request.kind)
        };
        assert_eq!(intent.intent.name, "PlayAudio");
        assert!(intent.intent.slots.is_empty());
        let ctx = env.context.as_ref().unwrap();
        assert!(ctx.other.contains_key("AudioPlayer"), "other context kept");
    }

    fn intent_request_json() -> Value {
        json!({
            "version": "1.0",
            "session": {
                "new": false,
                "sessionId": "amzn1.echo-api.session.1",
                "application": {"applicationId": "amzn1.ask.skill.1"},
                "attributes": {"count": 2},
                "user": {"userId": "amzn1.ask.account.1", "accessToken": "tok-SECRET"}
            },
            "context": {
                "System": {
                    "application": {"applicationId": "amzn1.ask.skill.1"},
                    "user": {"userId": "amzn1.ask.account.1"},
                    "device": {"deviceId": "dev1", "supportedInterfaces": {"AudioPlayer": {}}},
                    "apiEndpoint": "https://api.amazonalexa.com",
                    "apiAccessToken": "api-SECRET"
                },
                "Viewport": {"shape": "RECTANGLE"}
            },
            "request": {
                "type": "IntentRequest",
                "requestId": "amzn1.echo-api.request.1",
                "timestamp": "2024-01-02T03:04:05Z",
                "locale": "en-US",
                "dialogState": "IN_PROGRESS",
                "someNewField": 1,
                "intent": {
                    "name": "OrderPizza",
                    "confirmationStatus": "NONE",
                    "slots": {
                        "size": {
                            "name": "size",
                            "value": "large",
                            "confirmationStatus": "CONFIRMED",
                            "resolutions": {
                                "resolutionsPerAuthority": [{
                                    "authority": "amzn1.er-authority.echo-sdk.amzn1.ask.skill.1.SIZE",
                                    "status": {"code": "ER_SUCCESS_MATCH"},
                                    "values": [{"value": {"name": "Large", "id": "L"}}]
                                }]
                            }
                        },
                        "topping": {"name": "topping", "confirmationStatus": "NONE"}
                    }
                }
            }
        })
    }

    #[test]
    fn parses_intent_request_with_slots_and_resolutions() {
        let env: RequestEnvelope = serde_json::from_value(intent_request_json()).unwrap();
        let RequestKind::Intent(req) = &env.request.kind else {
            panic!()
        };
        assert_eq!(req.dialog_state, Some(DialogState::InProgress));
        assert_eq!(req.intent.slot_value("size"), Some("large"));
        assert_eq!(req.intent.slot_value("topping"), None);
        let size = &req.intent.slots["size"];
        assert_eq!(size.confirmation_status, ConfirmationStatus::Confirmed);
        let resolved = size.resolved().unwrap();
        assert_eq!(
            (resolved.name.as_str(), resolved.id.as_deref()),
            ("Large", Some("L"))
        );
        let (endpoint, token) = env.api_access().unwrap();
        assert_eq!(endpoint, "https://api.amazonalexa.com");
        assert_eq!(token.expose(), "api-SECRET");
    }

    #[test]
    fn debug_output_redacts_tokens() {
        let env: RequestEnvelope = serde_json::from_value(intent_request_json()).unwrap();
        let debug = format!("{env:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn request_round_trips_through_json() {
        let original = intent_request_json();
        let env: RequestEnvelope = serde_json::from_value(original.clone()).unwrap();
        let back = serde_json::to_value(&env).unwrap();
        assert_eq!(back["request"]["type"], "IntentRequest");
        assert_eq!(back["request"]["requestId"], "amzn1.echo-api.request.1");
        assert_eq!(back["request"]["timestamp"], "2024-01-02T03:04:05Z");
        assert_eq!(back["request"]["intent"], original["request"]["intent"]);
        assert_eq!(back["context"]["Viewport"], original["context"]["Viewport"]);
        assert_eq!(back["context"]["System"]["apiAccessToken"], "api-SECRET");
        let again: RequestEnvelope = serde_json::from_value(back).unwrap();
        assert_eq!(again, env);
    }

    #[test]
    fn parses_each_request_type() {
        let base = |extra: Value| {
            let mut r =
                json!({"requestId": "r1", "timestamp": "2024-01-02T03:04:05Z", "locale": "en-US"});
            r.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<Request>(r).unwrap()
        };
        assert!(matches!(
            base(json!({"type": "LaunchRequest"})).kind,
            RequestKind::Launch(_)
        ));
        let ended = base(json!({"type": "SessionEndedRequest", "reason": "ERROR",
            "error": {"type": "INVALID_RESPONSE", "message": "bad"}}));
        let RequestKind::SessionEnded(e) = ended.kind else {
            panic!()
        };
        assert_eq!(e.reason, Some(SessionEndedReason::Error));
        assert_eq!(e.error.unwrap().kind, "INVALID_RESPONSE");
        let cfi =
            base(json!({"type": "CanFulfillIntentRequest", "intent": {"name": "X", "slots": {}}}));
        assert!(matches!(cfi.kind, RequestKind::CanFulfillIntent(ref c) if c.intent.name == "X"));
        let exc = base(json!({"type": "System.ExceptionEncountered",
            "error": {"type": "INVALID_RESPONSE", "message": "m"}, "cause": {"requestId": "r0"}}));
        let RequestKind::ExceptionEncountered(x) = &exc.kind else {
            panic!()
        };
        assert_eq!(x.cause.as_ref().unwrap().request_id, "r0");
        assert_eq!(exc.type_name(), "System.ExceptionEncountered");
        let other = base(json!({"type": "AlexaSkillEvent.SkillEnabled", "eventCreationTime": "x"}));
        assert!(other.is_skill_event());
        let RequestKind::Other { type_name, fields } = &other.kind else {
            panic!()
        };
        assert_eq!(type_name, "AlexaSkillEvent.SkillEnabled");
        assert_eq!(fields["eventCreationTime"], "x");
        assert!(!fields.contains_key("requestId"));
        // Unknown enum values do not fail the parse.
        let odd = base(json!({"type": "SessionEndedRequest", "reason": "SOMETHING_NEW"}));
        assert!(matches!(
            odd.kind,
            RequestKind::SessionEnded(SessionEndedRequest {
                reason: Some(SessionEndedReason::Unknown),
                ..
            })
        ));
        // Epoch-millisecond timestamps are accepted.
        let ms: Request = serde_json::from_value(json!({"type": "LaunchRequest", "requestId": "r",
            "timestamp": 1_700_000_000_000_i64}))
        .unwrap();
        assert_eq!(ms.timestamp.timestamp(), 1_700_000_000);
    }

    #[test]
    fn malformed_requests_are_errors() {
        for bad in [
            json!({"type": "IntentRequest", "requestId": "r", "timestamp": "2024-01-02T03:04:05Z"}),
            json!({"type": "LaunchRequest", "requestId": "r", "timestamp": "yesterday"}),
            json!({"type": "LaunchRequest", "timestamp": "2024-01-02T03:04:05Z"}),
            json!({"requestId": "r", "timestamp": "2024-01-02T03:04:05Z"}),
        ] {
            assert!(
                serde_json::from_value::<Request>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn speak_response_has_amazon_field_names() {
        let r = Response::speak("<speak>Hi</speak>");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"version": "1.0", "response": {
                "outputSpeech": {"type": "SSML", "ssml": "<speak>Hi</speak>"},
                "shouldEndSession": true
            }})
        );
    }

    #[test]
    fn empty_response_is_minimal() {
        assert_eq!(
            serde_json::to_string(&Response::empty()).unwrap(),
            r#"{"version":"1.0","response":{}}"#
        );
    }

    #[test]
    fn full_response_round_trips_with_exact_names() {
        let mut attrs = Map::new();
        attrs.insert("step".into(), json!(3));
        let mut intent = Intent::new("OrderPizza");
        intent.slots.insert(
            "size".into(),
            Slot {
                name: "size".into(),
                value: Some("large".into()),
                confirmation_status: ConfirmationStatus::None,
                resolutions: None,
            },
        );
        let r = Response::speak("<speak>Which size?</speak>")
            .ask("<speak>Say small or large.</speak>")
            .card(Card::Standard {
                title: "Pizza".into(),
                text: "Which size?".into(),
                image: Some(CardImage {
                    small_image_url: Some("https://example.com/s.png".into()),
                    large_image_url: Some("https://example.com/l.png".into()),
                }),
            })
            .directive(Directive::DialogElicitSlot {
                slot_to_elicit: "size".into(),
                updated_intent: Some(intent),
            })
            .session_attributes(attrs);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({
                "version": "1.0",
                "sessionAttributes": {"step": 3},
                "response": {
                    "outputSpeech": {"type": "SSML", "ssml": "<speak>Which size?</speak>"},
                    "card": {"type": "Standard", "title": "Pizza", "text": "Which size?",
                        "image": {"smallImageUrl": "https://example.com/s.png", "largeImageUrl": "https://example.com/l.png"}},
                    "reprompt": {"outputSpeech": {"type": "SSML", "ssml": "<speak>Say small or large.</speak>"}},
                    "shouldEndSession": false,
                    "directives": [{
                        "type": "Dialog.ElicitSlot",
                        "slotToElicit": "size",
                        "updatedIntent": {"name": "OrderPizza", "confirmationStatus": "NONE",
                            "slots": {"size": {"name": "size", "value": "large", "confirmationStatus": "NONE"}}}
                    }]
                }
            })
        );
        let back: Response = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn cards_and_directives_serialise_to_documented_shapes() {
        let cases: Vec<(Value, Value)> = vec![
            (
                serde_json::to_value(Card::Simple {
                    title: "T".into(),
                    content: "C".into(),
                })
                .unwrap(),
                json!({"type": "Simple", "title": "T", "content": "C"}),
            ),
            (
                serde_json::to_value(Card::LinkAccount).unwrap(),
                json!({"type": "LinkAccount"}),
            ),
            (
                serde_json::to_value(Card::AskForPermissionsConsent {
                    permissions: vec!["alexa::profile:email:read".into()],
                })
                .unwrap(),
                json!({"type": "AskForPermissionsConsent", "permissions": ["alexa::profile:email:read"]}),
            ),
            (
                serde_json::to_value(OutputSpeech::plain("hi")).unwrap(),
                json!({"type": "PlainText", "text": "hi"}),
            ),
            (
                serde_json::to_value(OutputSpeech::Ssml {
                    ssml: "<speak/>".into(),
                    play_behavior: Some(PlayBehavior::ReplaceEnqueued),
                })
                .unwrap(),
                json!({"type": "SSML", "ssml": "<speak/>", "playBehavior": "REPLACE_ENQUEUED"}),
            ),
            (
                serde_json::to_value(Directive::DialogDelegate {
                    updated_intent: None,
                })
                .unwrap(),
                json!({"type": "Dialog.Delegate"}),
            ),
            (
                serde_json::to_value(Directive::DialogConfirmSlot {
                    slot_to_confirm: "size".into(),
                    updated_intent: None,
                })
                .unwrap(),
                json!({"type": "Dialog.ConfirmSlot", "slotToConfirm": "size"}),
            ),
            (
                serde_json::to_value(Directive::DialogConfirmIntent {
                    updated_intent: Some(Intent::new("X")),
                })
                .unwrap(),
                json!({"type": "Dialog.ConfirmIntent", "updatedIntent": {"name": "X", "confirmationStatus": "NONE"}}),
            ),
            (
                serde_json::to_value(ProgressiveResponse::speak(
                    "req-1",
                    "<speak>One moment</speak>",
                ))
                .unwrap(),
                json!({"header": {"requestId": "req-1"}, "directive": {"type": "VoicePlayer.Speak", "speech": "<speak>One moment</speak>"}}),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn unknown_directives_pass_through() {
        let raw = json!({"type": "AudioPlayer.Play", "playBehavior": "REPLACE_ALL"});
        let d: Directive = serde_json::from_value(raw.clone()).unwrap();
        assert!(matches!(d, Directive::Other(_)));
        assert_eq!(serde_json::to_value(&d).unwrap(), raw);
        let known: Directive = serde_json::from_value(json!({"type": "Dialog.Delegate"})).unwrap();
        assert_eq!(
            known,
            Directive::DialogDelegate {
                updated_intent: None
            }
        );
    }

    #[test]
    fn response_parse_tolerates_unknown_fields() {
        let r: Response = serde_json::from_value(json!({
            "version": "1.0", "userAgent": "x",
            "response": {"outputSpeech": {"type": "PlainText", "text": "hi"}, "canFulfillIntent": {}}
        }))
        .unwrap();
        assert_eq!(r.response.output_speech, Some(OutputSpeech::plain("hi")));
    }
}
