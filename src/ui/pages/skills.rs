//! The skills page: each Alexa skill's intents, and a typed utterance tried on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Html;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::scope;
use crate::channels::alexa::types::{Card, OutputSpeech, RequestEnvelope};
use crate::channels::alexa::{conversation, local, ssml};
use crate::error::ApiError;
use crate::server::{AppState, CallId, RawBody};
use crate::ui::{render, Session};

use super::{form, Ui, UI_ALEXA_USER};

fn skills_list(state: &AppState) -> Vec<Value> {
    state
        .alexa
        .skills()
        .iter()
        .map(|s| {
            let intents: Vec<Value> = s
                .def
                .intents
                .iter()
                .map(|(name, intent)| {
                    let slots: Vec<Value> = intent
                        .slots
                        .iter()
                        .map(|(slot, def)| json!({ "name": slot, "type": def.slot_type(), "required": def.required() }))
                        .collect();
                    json!({
                        "name": name,
                        "samples": intent.samples,
                        "slots": slots,
                        "function": intent.function.as_ref().map(|f| f.to_string()),
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "invocation": s.def.invocation,
                "locales": s.def.locales,
                "intents": intents,
            })
        })
        .collect()
}

#[derive(Deserialize, Default)]
pub struct SkillQuery {
    #[serde(default)]
    skill: String,
}

/// `GET /ui/skills`: every skill's intents and sample utterances, and the try box.
pub async fn skills(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<SkillQuery>,
) -> Ui<Html<String>> {
    render(
        "skills.html",
        &session,
        json!({ "nav": "skills", "skills": skills_list(&state), "selected": query.skill }),
    )
}

#[derive(Deserialize)]
pub struct TryForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    skill: String,
    #[serde(default)]
    utterance: String,
}

/// `POST /ui/skills`: matches the utterance locally (as `hark say` does), runs the turn and
/// shows the spoken reply, its SSML and the card.
pub async fn try_utterance(
    State(state): State<Arc<AppState>>,
    session: Session,
    Extension(call_id): Extension<CallId>,
    body: RawBody,
) -> Ui<Html<String>> {
    let form: TryForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    session.require(scope::FUNCTIONS_INVOKE)?;
    let skill = state
        .alexa
        .skill(&form.skill)
        .ok_or_else(|| ApiError::not_found(format!("no skill named {:?} is loaded", form.skill)))?;
    let today = chrono::Local::now().date_naive();
    let (envelope, matched) = local::envelope(&skill, &form.utterance, UI_ALEXA_USER, None, today);
    let parsed: RequestEnvelope = serde_json::from_value(envelope)
        .map_err(|e| ApiError::internal(format!("the UI built a bad Alexa request: {e}")))?;
    let response = conversation::respond(&state, &skill, &parsed, &call_id.0).await;
    let body = &response.response;
    let (spoken, ssml_doc) = match &body.output_speech {
        Some(OutputSpeech::Ssml { ssml: doc, .. }) => (ssml::to_plain_text(doc), Some(doc.clone())),
        Some(OutputSpeech::PlainText { text, .. }) => (text.clone(), None),
        None => (String::new(), None),
    };
    let reprompt = body.reprompt.as_ref().map(|r| match &r.output_speech {
        OutputSpeech::Ssml { ssml: doc, .. } => doc.clone(),
        OutputSpeech::PlainText { text, .. } => text.clone(),
    });
    let card = match &body.card {
        Some(Card::Simple { title, content }) => Some(json!({ "title": title, "text": content })),
        Some(Card::Standard { title, text, .. }) => Some(json!({ "title": title, "text": text })),
        Some(other) => Some(
            json!({ "title": "Card", "text": serde_json::to_string(other).unwrap_or_default() }),
        ),
        None => None,
    };
    let matched = matched.map(|m| {
        let slots: BTreeMap<&String, &String> =
            m.slots.iter().map(|(k, v)| (k, &v.value)).collect();
        json!({ "intent": m.intent, "slots": slots })
    });
    let result = json!({
        "utterance": form.utterance,
        "matched": matched,
        "spoken": spoken,
        "ssml": ssml_doc,
        "reprompt": reprompt,
        "card": card,
        "end_session": body.should_end_session,
        "json": serde_json::to_string_pretty(&response).unwrap_or_default(),
    });
    render(
        "skills.html",
        &session,
        json!({ "nav": "skills", "skills": skills_list(&state), "selected": form.skill, "result": result }),
    )
}
