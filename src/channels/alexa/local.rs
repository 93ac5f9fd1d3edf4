//! Utterances typed by a person: a skill and the words come in; the local matcher's
//! [`Match`] and the Alexa request envelope Amazon would have sent go out. `hark say` and
//! the web UI's "try an utterance" box both build their requests here.

use chrono::{NaiveDate, Utc};
use serde_json::{json, Value};

use crate::route::skills::matcher::{match_utterance, Match};
use crate::route::skills::Skill;

/// The request envelope for `utterance` said to `skill` by `user`, and the match it came
/// from (`None` for an empty utterance, which opens the skill with a `LaunchRequest`).
/// `locale` defaults to the skill's first; `today` resolves relative dates.
pub fn envelope(
    skill: &Skill,
    utterance: &str,
    user: &str,
    locale: Option<&str>,
    today: NaiveDate,
) -> (Value, Option<Match>) {
    let id = skill.def.id.clone();
    let locale = locale
        .map(str::to_owned)
        .or_else(|| skill.def.locales.first().cloned())
        .unwrap_or_else(|| "en-US".to_owned());
    let request_id = format!("amzn1.echo-api.request.hark-say-{}", uuid::Uuid::new_v4());
    let (mut request, matched) = if utterance.trim().is_empty() {
        (json!({ "type": "LaunchRequest" }), None)
    } else {
        let matched = match_utterance(skill, utterance, today);
        let request = json!({ "type": "IntentRequest", "intent": matched.intent_json(skill) });
        (request, Some(matched))
    };
    request["requestId"] = json!(request_id);
    request["timestamp"] = json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    request["locale"] = json!(locale);
    let user = json!({ "userId": user });
    let envelope = json!({
        "version": "1.0",
        "session": {
            "new": true,
            "sessionId": format!("amzn1.echo-api.session.hark-say-{}", uuid::Uuid::new_v4()),
            "application": { "applicationId": id },
            "attributes": {},
            "user": user,
        },
        "context": { "System": {
            "application": { "applicationId": id },
            "user": user,
            "device": { "deviceId": "hark-say", "supportedInterfaces": {} },
        }},
        "request": request,
    });
    (envelope, matched)
}
