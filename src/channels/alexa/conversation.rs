//! One turn of a conversation: a verified request envelope and its skill come in; the
//! response Alexa speaks goes out. Launch, built-in and skill intents are answered from the
//! skill's templates; an intent with a function submits it to the durable queue and waits
//! the skill's budget, telling the user to wait (a progressive response) past
//! `progressive_after`, and answering "still working" when the budget runs out. The queue
//! goes on with the call (across a gateway restart) and hands its result to [`deliver`]
//! with an [`AlexaReply`], which stores the answer to be spoken at the user's next request.
//! Nothing here answers an HTTP error: after verification every failure becomes the skill's
//! spoken error reply.

use super::channel::AlexaRoute;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::{error, info, warn};

use super::types::{
    Card, CardImage, Directive, Intent, ProgressiveResponse, RequestEnvelope, RequestKind,
    Response, RESOLUTION_MATCH,
};
use super::{ssml, types::DialogState, AlexaChannel};
use crate::channels::common::delivery::invocation;
use crate::channels::common::{queued_call, ReplyTo};
use crate::dispatch::queue::{CallResult, EnqueueError, Submit, Submitted};
use crate::dispatch::Trigger;
use crate::function::FunctionName;
use crate::route::skills::template::{inner, intent_template, prompt_template, speak, RenderError};
use crate::route::skills::{
    IntentDef, Skill, CANCEL_INTENT, HELP_INTENT, NAVIGATE_HOME_INTENT, STOP_INTENT,
};
use crate::server::AppState;
use crate::store::{PendingReply, Store};

/// The trigger activation records of Alexa calls carry.
pub const TRIGGER: Trigger =
    <super::channel::AlexaRoute as crate::channels::common::ChannelRoute>::TRIGGER;
/// Said when even the error reply cannot be rendered.
const LAST_RESORT: &str = "<speak>Sorry, something went wrong.</speak>";
/// Keys of a function's JSON answer that update attributes instead of being spoken.
pub const SET_SESSION: &str = "set_session";
pub const SET_USER: &str = "set_user";
/// User id used when a request carries none.
const ANONYMOUS: &str = "anonymous";

/// What a request needs for its turn.
struct Turn<'a> {
    state: &'a Arc<AppState>,
    skill: &'a Arc<Skill>,
    envelope: &'a RequestEnvelope,
    call_id: &'a str,
    user_id: String,
    session: Map<String, Value>,
    /// Why the intent's function call failed, when it did (for `hark say`).
    failure: Option<String>,
    /// Whether the intent's call outlived the budget and goes on in the queue, which
    /// keeps its answer for the user's next request.
    deferred: bool,
}

/// One answered turn: the response, why its call failed, whether its call goes on.
pub struct TurnOutcome {
    pub response: Response,
    pub failure: Option<String>,
    pub deferred: bool,
}

/// The reply to one request.
struct Reply {
    /// A checked `<speak>` document.
    speech: Option<String>,
    reprompt: Option<String>,
    card: Option<Card>,
    end_session: Option<bool>,
    directive: Option<Directive>,
}

impl Reply {
    fn say(speech: String) -> Self {
        Reply {
            speech: Some(speech),
            reprompt: None,
            card: None,
            end_session: Some(true),
            directive: None,
        }
    }

    fn ask(speech: String, reprompt: String) -> Self {
        Reply {
            reprompt: Some(reprompt),
            end_session: Some(false),
            ..Reply::say(speech)
        }
    }
}

/// Answers one verified request for `skill`.
pub async fn respond(
    state: &Arc<AppState>,
    skill: &Arc<Skill>,
    envelope: &RequestEnvelope,
    call_id: &str,
) -> Response {
    respond_explained(state, skill, envelope, call_id)
        .await
        .response
}

/// [`respond`], with why the intent's function call failed when it did ("function
/// book-holiday is not deployed"): Alexa hears the skill's error reply, `hark say` also
/// prints the cause; and whether the call goes on past the budget (a phone line then waits
/// for it).
pub async fn respond_explained(
    state: &Arc<AppState>,
    skill: &Arc<Skill>,
    envelope: &RequestEnvelope,
    call_id: &str,
) -> TurnOutcome {
    let quiet = || TurnOutcome {
        response: Response::empty(),
        failure: None,
        deferred: false,
    };
    let user_id = user_id(envelope);
    let session = envelope
        .session
        .as_ref()
        .and_then(|s| s.attributes.clone())
        .unwrap_or_default();
    let mut turn = Turn {
        state,
        skill,
        envelope,
        call_id,
        user_id,
        session,
        failure: None,
        deferred: false,
    };
    let reply = match &envelope.request.kind {
        RequestKind::SessionEnded(_) => return quiet(),
        RequestKind::Launch(_) => turn.reply_ask("launch", "launch_reprompt"),
        RequestKind::Intent(request) => turn.intent(&request.intent, request.dialog_state).await,
        // CanFulfillIntent, exceptions and events: acknowledged quietly.
        _ => return quiet(),
    };
    let response = turn.finish(reply).await;
    TurnOutcome {
        response,
        failure: turn.failure,
        deferred: turn.deferred,
    }
}

fn user_id(envelope: &RequestEnvelope) -> String {
    let from_context = envelope
        .context
        .as_ref()
        .and_then(|c| c.system.as_ref())
        .and_then(|s| s.user.as_ref())
        .map(|u| u.user_id.clone());
    let from_session = envelope
        .session
        .as_ref()
        .and_then(|s| s.user.as_ref())
        .map(|u| u.user_id.clone());
    from_context
        .or(from_session)
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| ANONYMOUS.to_owned())
}

/// Slot values by name: the canonical value where Alexa resolved one, else what was said.
fn slot_values(intent: &Intent) -> Map<String, Value> {
    intent
        .slots
        .iter()
        .filter_map(|(name, slot)| {
            let resolved = slot
                .resolutions
                .as_ref()
                .and_then(|r| {
                    r.resolutions_per_authority
                        .iter()
                        .find(|a| a.status.code == RESOLUTION_MATCH)
                })
                .and_then(|a| a.values.first())
                .map(|v| v.value.name.clone());
            let value = resolved.or_else(|| slot.value.clone())?;
            Some((name.clone(), Value::String(value)))
        })
        .collect()
}

/// Where a late answer goes: what [`deliver`] needs to render an intent's reply once its
/// call has finished. Stored with the queued call; user ids and attributes, no secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlexaReply {
    pub skill: String,
    pub user_id: String,
    pub intent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default)]
    pub slots: Map<String, Value>,
    /// The session's attributes when the call was made.
    #[serde(default)]
    pub session: Map<String, Value>,
}

impl Turn<'_> {
    fn context(
        &self,
        intent: Option<&str>,
        slots: &Map<String, Value>,
        user: &Map<String, Value>,
    ) -> Value {
        self.skill.context(
            intent,
            self.envelope.request.locale.as_deref(),
            slots,
            &self.session,
            user,
        )
    }

    /// Renders speech template `name`, falling back to the error reply (and then to a fixed
    /// sentence) so that what is sent is always valid SSML.
    fn speech(&self, name: &str, ctx: &Value) -> String {
        match self.skill.templates.speech(name, ctx) {
            Ok(s) => s,
            Err(e) => {
                error!(channel = "alexa", skill = %self.skill.name, template = name, error = %e, "reply could not be rendered; saying the error reply");
                self.error_speech(None, ctx)
            }
        }
    }

    fn error_speech(&self, intent: Option<&str>, ctx: &Value) -> String {
        let own = intent
            .map(|i| intent_template(i, "error"))
            .filter(|n| self.skill.templates.has(n));
        for name in own.into_iter().chain(["reply/error".to_owned()]) {
            match self.skill.templates.speech(&name, ctx) {
                Ok(s) => return s,
                Err(e) => {
                    error!(channel = "alexa", skill = %self.skill.name, template = %name, error = %e, "error reply could not be rendered")
                }
            }
        }
        LAST_RESORT.to_owned()
    }

    fn reply_ask(&self, speech: &str, reprompt: &str) -> Reply {
        let ctx = self.context(None, &Map::new(), &Map::new());
        Reply::ask(
            self.speech(&format!("reply/{speech}"), &ctx),
            self.speech(&format!("reply/{reprompt}"), &ctx),
        )
    }

    async fn intent(&mut self, intent: &Intent, dialog: Option<DialogState>) -> Reply {
        let name = intent.name.as_str();
        let def = self
            .skill
            .intent(name)
            .filter(|d| d.function.is_some() || d.speech.is_some())
            .cloned();
        let Some(def) = def else {
            return match name {
                HELP_INTENT => self.reply_ask("help", "help_reprompt"),
                STOP_INTENT | CANCEL_INTENT | NAVIGATE_HOME_INTENT => {
                    let ctx = self.context(Some(name), &Map::new(), &Map::new());
                    Reply::say(self.speech("reply/stop", &ctx))
                }
                _ => {
                    if !name.starts_with("AMAZON.") {
                        warn!(channel = "alexa", skill = %self.skill.name, intent = name, "intent not defined in skill.yaml; answering with the fallback reply");
                    }
                    self.reply_ask("fallback", "fallback_reprompt")
                }
            };
        };
        let slots = slot_values(intent);
        let store = &self.state.registry.store;
        let mut user = match store
            .alexa_user_attributes(&self.skill.name, &self.user_id)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                error!(channel = "alexa", skill = %self.skill.name, error = %e, "user attributes could not be read");
                Map::new()
            }
        };
        let user_before = user.clone();
        let ctx = self.context(Some(name), &slots, &user);

        // A required slot that is still empty: ask for it.
        if dialog != Some(DialogState::Completed) {
            if let Some((slot, _)) = def
                .slots
                .iter()
                .find(|(slot, d)| d.required() && !slots.contains_key(*slot))
            {
                let prompt = self.speech(&prompt_template(name, slot), &ctx);
                let mut reply = Reply::ask(prompt.clone(), prompt);
                reply.directive = Some(Directive::DialogElicitSlot {
                    slot_to_elicit: slot.clone(),
                    updated_intent: Some(intent.clone()),
                });
                return reply;
            }
        }

        let Some(function) = def.function.clone() else {
            return self.templated_reply(name, &def, ctx);
        };
        let input = match &def.input {
            Some(input) => match self.skill.templates.input(name, input, &ctx) {
                Ok(v) => v,
                Err(e) => {
                    error!(channel = "alexa", skill = %self.skill.name, intent = name, error = %e, "function input could not be rendered");
                    return Reply::say(self.error_speech(Some(name), &ctx));
                }
            },
            None => Value::Object(slots.clone()),
        };
        let body = json!({
            "skill": self.skill.name,
            "intent": name,
            "locale": self.envelope.request.locale,
            "requestId": self.envelope.request.request_id,
            "input": input,
            "slots": slots,
            "session": self.session,
            "user": { "id": self.user_id, "attributes": user },
        });
        let late = AlexaReply {
            skill: self.skill.name.clone(),
            user_id: self.user_id.clone(),
            intent: name.to_owned(),
            locale: self.envelope.request.locale.clone(),
            slots: slots.clone(),
            session: self.session.clone(),
        };
        match self.dispatch(&function, body, late).await {
            Ok(Submitted::Finished(result)) => {
                self.failure = failure(&result);
                let (reply, session_set, user_set) = answer(self.skill, name, &def, ctx, &result);
                merge(&mut self.session, session_set);
                merge(&mut user, user_set);
                if user != user_before {
                    if let Err(e) = store
                        .put_alexa_user_attributes(&self.skill.name, &self.user_id, &user)
                        .await
                    {
                        error!(channel = "alexa", skill = %self.skill.name, error = %e, "user attributes could not be saved");
                    }
                }
                reply
            }
            // Queued, or already queued by an earlier try of this request: the queue
            // delivers the answer.
            Ok(Submitted::Queued | Submitted::Duplicate) => {
                self.deferred = true;
                Reply::say(self.speech(
                    "reply/still_working",
                    &self.context(Some(name), &slots, &user_before),
                ))
            }
            Err(e) => {
                error!(channel = "alexa", skill = %self.skill.name, intent = name, function = %function, error = %e, "call could not be queued; saying the error reply");
                self.failure = Some(format!("function {function}: {e}"));
                Reply::say(self.error_speech(Some(name), &ctx))
            }
        }
    }

    fn templated_reply(&self, name: &str, def: &IntentDef, ctx: Value) -> Reply {
        render_reply(self.skill, name, def, &ctx, false)
    }

    /// Submits the call to the durable queue and waits for it at most the skill's budget,
    /// sending a progressive response past `progressive_after`. A call that has not
    /// finished by then goes on in the queue, which delivers its answer to `late`.
    async fn dispatch(
        &self,
        function: &FunctionName,
        body: Value,
        late: AlexaReply,
    ) -> Result<Submitted, EnqueueError> {
        let started = Instant::now();
        let call = invocation(
            self.call_id,
            TRIGGER.as_str(),
            &self.skill.name,
            None,
            "application/json",
            Bytes::from(body.to_string()),
            HeaderMap::new(),
        );
        let reply = serde_json::to_string(&ReplyTo::new::<AlexaRoute>(&late)).ok();
        let queued = crate::store::QueuedCall {
            function: function.to_string(),
            trigger: Some(TRIGGER.as_str().to_owned()),
            reply,
            ..queued_call(call)
        };
        let submit = Submit {
            hold: None,
            wait: Some(self.skill.budget),
            answers: true,
            no_retries: true,
        };
        let submitted = self.state.queue.submit(queued, submit);
        let progressive = tokio::time::sleep_until((started + self.skill.progressive_after).into());
        tokio::pin!(submitted);
        let submitted = tokio::select! {
            submitted = &mut submitted => submitted,
            () = progressive => {
                self.send_progressive();
                submitted.await
            }
        };
        if let Ok(Submitted::Queued | Submitted::Duplicate) = submitted {
            info!(channel = "alexa", skill = %self.skill.name, function = %function, call_id = self.call_id, budget_ms = self.skill.budget.as_millis() as u64, "budget spent; the queue delivers the answer later");
        }
        submitted
    }

    /// Says the `working` reply through `POST {apiEndpoint}/v1/directives`, in the background.
    fn send_progressive(&self) {
        let Some((endpoint, token)) = self.envelope.api_access() else {
            return;
        };
        let ctx = self.context(None, &Map::new(), &Map::new());
        let speech = self.speech("reply/working", &ctx);
        let body = ProgressiveResponse::speak(self.envelope.request.request_id.clone(), speech);
        let url = match self.state.alexa.progressive_url(endpoint) {
            Ok(url) => url,
            Err(e) => {
                warn!(channel = "alexa", skill = %self.skill.name, error = %e, "progressive response not sent");
                return;
            }
        };
        let request = self
            .state
            .alexa
            .progressive
            .post(url)
            .bearer_auth(token.expose())
            .json(&body);
        let skill = self.skill.name.clone();
        tokio::spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    info!(channel = "alexa", skill = %skill, "progressive response sent")
                }
                Ok(r) => {
                    warn!(channel = "alexa", skill = %skill, status = r.status().as_u16(), "progressive response refused")
                }
                Err(e) => {
                    warn!(channel = "alexa", skill = %skill, error = %e, "progressive response failed")
                }
            }
        });
    }

    /// The response: pending late results first, then the reply, with the session's attributes.
    async fn finish(&self, mut reply: Reply) -> Response {
        let store = &self.state.registry.store;
        let pending = match store
            .take_alexa_pending(&self.skill.name, &self.user_id)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                error!(channel = "alexa", skill = %self.skill.name, error = %e, "pending results could not be read");
                Vec::new()
            }
        };
        if !pending.is_empty() {
            let ctx = self.context(None, &Map::new(), &Map::new());
            let intro = self
                .skill
                .templates
                .speech("reply/earlier", &ctx)
                .unwrap_or_default();
            let mut fragment = String::new();
            for p in &pending {
                fragment.push_str(&format!("<p>{} {}</p>", inner(&intro), inner(&p.speech)));
            }
            let own = reply.speech.as_deref().map(inner).unwrap_or_default();
            match speak(&format!("{fragment} {own}")) {
                Ok(combined) => reply.speech = Some(combined),
                Err(e) => {
                    // Too long together: say the late results now and drop the new reply's
                    // speech rather than lose them.
                    warn!(channel = "alexa", skill = %self.skill.name, error = %e, "late results and reply do not fit together");
                    reply.speech = speak(&fragment).ok().or(reply.speech);
                }
            }
        }
        let mut response = match reply.speech {
            Some(s) => Response::speak(s),
            None => Response::empty(),
        };
        if let Some(reprompt) = reply.reprompt {
            response = response.ask(reprompt);
        }
        response = response.end_session(reply.end_session);
        if let Some(card) = reply.card {
            response = response.card(card);
        }
        if let Some(d) = reply.directive {
            response = response.directive(d);
        }
        response.session_attributes(self.session.clone())
    }
}

/// Renders a late call's answer and stores it for the user's next request in the skill
/// (the queue's delivery of an [`AlexaReply`]). A delivery made again after a restart
/// stores nothing new when the answer is already waiting.
pub async fn deliver(
    alexa: &AlexaChannel,
    store: &Store,
    reply: &AlexaReply,
    result: &CallResult,
) -> Result<(), String> {
    let skill = alexa
        .skill(&reply.skill)
        .ok_or_else(|| format!("skill {} is not loaded", reply.skill))?;
    let def = skill
        .intent(&reply.intent)
        .cloned()
        .ok_or_else(|| format!("skill {} has no intent {}", reply.skill, reply.intent))?;
    let mut user = store
        .alexa_user_attributes(&skill.name, &reply.user_id)
        .await
        .map_err(|e| format!("user attributes could not be read: {e}"))?;
    let ctx = skill.context(
        Some(&reply.intent),
        reply.locale.as_deref(),
        &reply.slots,
        &reply.session,
        &user,
    );
    let (spoken, _, user_set) = answer(&skill, &reply.intent, &def, ctx, result);
    if !user_set.is_empty() {
        merge(&mut user, user_set);
        if let Err(e) = store
            .put_alexa_user_attributes(&skill.name, &reply.user_id, &user)
            .await
        {
            error!(channel = "alexa", skill = %skill.name, error = %e, "user attributes could not be saved");
        }
    }
    let pending = PendingReply {
        call_id: result.call_id.clone(),
        intent: reply.intent.clone(),
        speech: spoken.speech.unwrap_or_else(|| LAST_RESORT.to_owned()),
        created_at: Utc::now(),
    };
    store
        .push_alexa_pending(&skill.name, &reply.user_id, pending)
        .await
        .map_err(|e| format!("late result could not be stored: {e}"))?;
    alexa.pending_stored.notify_waiters();
    info!(channel = "alexa", skill = %skill.name, call_id = result.call_id, "late result stored for the next request");
    Ok(())
}

/// Why a finished call failed ("status 404: function x is not deployed"); `None` for a
/// 2xx answer.
fn failure(result: &CallResult) -> Option<String> {
    (!result.is_success()).then(|| {
        format!(
            "status {}: {}",
            result.status,
            result.error.clone().unwrap_or_else(|| {
                String::from_utf8_lossy(&result.body)
                    .chars()
                    .take(200)
                    .collect()
            })
        )
    })
}

/// The reply to a finished call, with the attribute updates the function asked for.
fn answer(
    skill: &Skill,
    intent: &str,
    def: &IntentDef,
    mut ctx: Value,
    result: &CallResult,
) -> (Reply, Map<String, Value>, Map<String, Value>) {
    let failure = match result {
        result if result.is_success() => {
            let mut value = match serde_json::from_slice::<Value>(&result.body) {
                Ok(v) => v,
                Err(_) => Value::String(String::from_utf8_lossy(&result.body).trim().to_owned()),
            };
            let mut take = |key| match value.as_object_mut().and_then(|o| o.remove(key)) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            let (session_set, user_set) = (take(SET_SESSION), take(SET_USER));
            ctx["result"] = value;
            return (
                render_reply(skill, intent, def, &ctx, false),
                session_set,
                user_set,
            );
        }
        result => failure(result).unwrap_or_default(),
    };
    error!(channel = "alexa", skill = %skill.name, intent, function = %result.function, error = %failure, "function failed; saying the error reply");
    (
        render_reply(skill, intent, def, &ctx, true),
        Map::new(),
        Map::new(),
    )
}

/// Renders an intent's speech, reprompt and card (or its error reply when `failed`).
fn render_reply(skill: &Skill, intent: &str, def: &IntentDef, ctx: &Value, failed: bool) -> Reply {
    let t = &skill.templates;
    let log = |name: &str, e: &RenderError| {
        error!(channel = "alexa", skill = %skill.name, template = name, error = %e, "reply could not be rendered; saying the error reply");
    };
    let error_reply = || {
        for name in [intent_template(intent, "error"), "reply/error".to_owned()] {
            if t.has(&name) {
                match t.speech(&name, ctx) {
                    Ok(s) => return s,
                    Err(e) => log(&name, &e),
                }
            }
        }
        LAST_RESORT.to_owned()
    };
    if failed {
        return Reply::say(error_reply());
    }
    let speech_name = intent_template(intent, "speech");
    let speech = if t.has(&speech_name) {
        match t.speech(&speech_name, ctx) {
            Ok(s) => s,
            Err(e) => {
                log(&speech_name, &e);
                return Reply::say(error_reply());
            }
        }
    } else {
        // No speech template: say the function's answer (its `speech` field, or the text).
        let text = match &ctx["result"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("speech")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        };
        speak(&ssml::escape(&text)).unwrap_or_else(|e| {
            error!(channel = "alexa", skill = %skill.name, intent, error = %e, "function answer cannot be spoken");
            error_reply()
        })
    };
    let reprompt_name = intent_template(intent, "reprompt");
    let reprompt = t.has(&reprompt_name).then(|| t.speech(&reprompt_name, ctx));
    let mut reply = match reprompt {
        Some(Ok(r)) => Reply::ask(speech.clone(), r),
        Some(Err(e)) => {
            log(&reprompt_name, &e);
            Reply::say(speech.clone())
        }
        None => Reply::say(speech.clone()),
    };
    if let Some(end) = def.end_session {
        reply.end_session = Some(end);
    }
    if let Some(card) = &def.card {
        let title = t.plain(&intent_template(intent, "card_title"), ctx);
        let text = match &card.text {
            Some(_) => t.plain(&intent_template(intent, "card_text"), ctx),
            None => Ok(ssml::to_plain_text(&speech)),
        };
        match (title, text) {
            (Ok(title), Ok(text)) => {
                reply.card = Some(
                    if card.small_image.is_some() || card.large_image.is_some() {
                        Card::Standard {
                            title,
                            text,
                            image: Some(CardImage {
                                small_image_url: card.small_image.clone(),
                                large_image_url: card.large_image.clone(),
                            }),
                        }
                    } else {
                        Card::Simple {
                            title,
                            content: text,
                        }
                    },
                );
            }
            (Err(e), _) | (_, Err(e)) => log("card", &e),
        }
    }
    reply
}

/// Merges `updates` into `attrs`; a `null` value removes the key.
fn merge(attrs: &mut Map<String, Value>, updates: Map<String, Value>) {
    for (k, v) in updates {
        if v.is_null() {
            attrs.remove(&k);
        } else {
            attrs.insert(k, v);
        }
    }
}
