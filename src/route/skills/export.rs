//! The interaction model: a [`Skill`] comes in; the JSON the Alexa developer console
//! ("JSON Editor") and `ask deploy` read (`skill-package/interactionModels/custom/LOCALE.json`)
//! goes out: `interactionModel.languageModel` with the invocation name, intents (with slots and
//! samples) and custom types, plus `dialog` and `prompts` when a slot is required.
//! <https://developer.amazon.com/en-US/docs/alexa/smapi/interaction-model-schema.html>

use serde_json::{json, Value};

use super::{Skill, BUILT_IN_INTENTS};

/// The interaction model of `skill`.
pub fn interaction_model(skill: &Skill) -> Value {
    let def = &skill.def;
    let mut intents = Vec::new();
    for builtin in BUILT_IN_INTENTS {
        let samples = def
            .intents
            .get(*builtin)
            .map(|i| i.samples.clone())
            .unwrap_or_default();
        intents.push(json!({ "name": builtin, "samples": samples }));
    }
    let mut dialog_intents = Vec::new();
    let mut prompts = Vec::new();
    for (name, intent) in &def.intents {
        if BUILT_IN_INTENTS.contains(&name.as_str()) {
            continue;
        }
        let slots: Vec<Value> = intent
            .slots
            .iter()
            .map(|(slot, s)| {
                let mut v = json!({ "name": slot, "type": s.slot_type() });
                if !s.samples().is_empty() {
                    v["samples"] = json!(s.samples());
                }
                v
            })
            .collect();
        let mut v = json!({ "name": name, "slots": slots, "samples": intent.samples });
        if slots.is_empty() {
            v.as_object_mut().map(|o| o.remove("slots"));
        }
        intents.push(v);

        if intent.slots.values().any(|s| s.required()) {
            let slots: Vec<Value> = intent
                .slots
                .iter()
                .map(|(slot, s)| {
                    let mut v = json!({
                        "name": slot,
                        "type": s.slot_type(),
                        "confirmationRequired": false,
                        "elicitationRequired": s.required(),
                        "prompts": {},
                    });
                    if let (true, Some(prompt)) = (s.required(), s.prompt()) {
                        let id = format!("Elicit.Slot.{name}.{slot}");
                        v["prompts"] = json!({ "elicitation": id });
                        prompts.push(json!({
                            "id": id,
                            "variations": [{ "type": "PlainText", "value": crate::channels::alexa::ssml::to_plain_text(&format!("<speak>{prompt}</speak>")) }],
                        }));
                    }
                    v
                })
                .collect();
            dialog_intents.push(json!({
                "name": name,
                "confirmationRequired": false,
                "prompts": {},
                "slots": slots,
            }));
        }
    }
    let types: Vec<Value> = def
        .types
        .iter()
        .map(|(name, t)| {
            let values: Vec<Value> = t
                .values
                .iter()
                .map(|v| {
                    let mut value = json!({ "name": { "value": v.value() } });
                    if !v.synonyms().is_empty() {
                        value["name"]["synonyms"] = json!(v.synonyms());
                    }
                    if let Some(id) = v.id() {
                        value["id"] = json!(id);
                    }
                    value
                })
                .collect();
            json!({ "name": name, "values": values })
        })
        .collect();
    let mut model = json!({
        "interactionModel": {
            "languageModel": {
                "invocationName": def.invocation.trim(),
                "intents": intents,
                "types": types,
            }
        }
    });
    if !dialog_intents.is_empty() {
        // Hark elicits missing slots itself (Dialog.ElicitSlot), so the skill's responses
        // lead the dialog.
        model["interactionModel"]["dialog"] = json!({
            "intents": dialog_intents,
            "delegationStrategy": "SKILL_RESPONSE",
        });
        model["interactionModel"]["prompts"] = json!(prompts);
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_model_has_the_shape_the_console_imports() {
        let skill = Skill::parse(
            "h",
            r#"
id: amzn1.ask.skill.h
invocation: holiday helper
types:
  KIND: { values: [{ value: holiday, id: H, synonyms: [vacation] }, sick day] }
intents:
  Book:
    samples: ["book {date} off"]
    slots:
      date: { type: AMAZON.DATE, required: true, prompt: "Which day?" }
      kind: KIND
    speech: x
  AMAZON.HelpIntent:
    samples: ["what now"]
"#,
            Path::new("skill.yaml"),
        )
        .unwrap();
        let m = interaction_model(&skill);
        let lm = &m["interactionModel"]["languageModel"];
        assert_eq!(lm["invocationName"], "holiday helper");
        let names: Vec<&str> = lm["intents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "AMAZON.CancelIntent",
                "AMAZON.HelpIntent",
                "AMAZON.StopIntent",
                "AMAZON.NavigateHomeIntent",
                "AMAZON.FallbackIntent",
                "Book"
            ]
        );
        assert_eq!(lm["intents"][1]["samples"], json!(["what now"]));
        assert_eq!(
            lm["intents"][5]["slots"],
            json!([
                { "name": "date", "type": "AMAZON.DATE" }, { "name": "kind", "type": "KIND" }
            ])
        );
        assert_eq!(
            lm["types"][0]["values"][0],
            json!({ "id": "H", "name": { "value": "holiday", "synonyms": ["vacation"] } })
        );
        assert_eq!(
            lm["types"][0]["values"][1],
            json!({ "name": { "value": "sick day" } })
        );
        let dialog = &m["interactionModel"]["dialog"];
        assert_eq!(
            dialog["intents"][0]["slots"][0]["prompts"]["elicitation"],
            "Elicit.Slot.Book.date"
        );
        assert_eq!(
            m["interactionModel"]["prompts"][0]["variations"][0]["value"],
            "Which day?"
        );
    }
}
