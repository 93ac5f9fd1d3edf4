//! Reply templates: a skill's minijinja sources come in; rendered speech that is checked
//! Alexa SSML goes out, or an error naming the template. Values printed into speech are
//! SSML-escaped (so a slot value `</speak> & co` is spoken, never parsed) unless marked
//! `|safe`; card and input templates are plain text.

use minijinja::value::{Serde, Value as JinjaValue};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use super::{defaults, IntentDef, Skill, SkillDef};
use crate::channels::alexa::ssml;

/// The custom auto-escape mode of speech templates.
const SSML_ESCAPE: &str = "ssml";
/// Template name prefixes whose output is plain text, not SSML.
const PLAIN_PREFIXES: &[&str] = &["card/", "input/"];
/// Slot values used to try every template at load time: they must come out escaped.
const SAMPLE_SLOT_VALUE: &str = "Ben & Jerry's </speak> <break time=\"1s\"/>";

/// Why a template could not give a reply.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {name}: {source}")]
    Template {
        name: String,
        source: minijinja::Error,
    },
    #[error("template {name} made invalid SSML: {source}")]
    Ssml {
        name: String,
        source: ssml::SsmlError,
    },
}

/// A skill's compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

/// Wraps an SSML fragment in `<speak>` and checks it against Alexa's rules.
pub fn speak(fragment: &str) -> Result<String, ssml::SsmlError> {
    let doc = format!("<speak>{}</speak>", fragment.trim());
    ssml::validate(&doc)?;
    Ok(doc)
}

/// The inside of a `<speak>` document (or the text itself when it is not one).
pub fn inner(ssml_doc: &str) -> &str {
    let t = ssml_doc.trim();
    t.strip_prefix("<speak>")
        .and_then(|t| t.strip_suffix("</speak>"))
        .unwrap_or(t)
}

/// The template names of the skill-wide replies, with their defaults.
pub const REPLIES: &[(&str, &str)] = &[
    ("launch", defaults::LAUNCH),
    ("launch_reprompt", defaults::LAUNCH_REPROMPT),
    ("help", defaults::HELP),
    ("help_reprompt", defaults::HELP_REPROMPT),
    ("stop", defaults::STOP),
    ("fallback", defaults::FALLBACK),
    ("fallback_reprompt", defaults::FALLBACK_REPROMPT),
    ("error", defaults::ERROR),
    ("working", defaults::WORKING),
    ("still_working", defaults::STILL_WORKING),
    ("earlier", defaults::EARLIER),
];

fn reply_source<'a>(def: &'a SkillDef, name: &str, default: &'a str) -> &'a str {
    let r = &def.replies;
    let given = match name {
        "launch" => &r.launch,
        "launch_reprompt" => &r.launch_reprompt,
        "help" => &r.help,
        "help_reprompt" => &r.help_reprompt,
        "stop" => &r.stop,
        "fallback" => &r.fallback,
        "fallback_reprompt" => &r.fallback_reprompt,
        "error" => &r.error,
        "working" => &r.working,
        "still_working" => &r.still_working,
        "earlier" => &r.earlier,
        _ => &None,
    };
    given.as_deref().unwrap_or(default)
}

/// Template names of an intent's parts.
pub fn intent_template(intent: &str, part: &str) -> String {
    match part {
        "card_title" => format!("card/{intent}/title"),
        "card_text" => format!("card/{intent}/text"),
        _ => format!("{intent}/{part}"),
    }
}

/// Name of the template for the prompt of a required slot.
pub fn prompt_template(intent: &str, slot: &str) -> String {
    format!("prompt/{intent}/{slot}")
}

fn input_templates(intent: &str, value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((format!("input/{intent}{path}"), s.clone())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                input_templates(intent, v, &format!("{path}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                input_templates(intent, v, &format!("{path}/{k}"), out);
            }
        }
        _ => {}
    }
}

impl Templates {
    /// Compiles every template of `def`; an error names the template and what is wrong.
    pub fn compile(def: &SkillDef) -> Result<Templates, (String, String)> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|name| {
            if PLAIN_PREFIXES.iter().any(|p| name.starts_with(p)) {
                AutoEscape::None
            } else {
                AutoEscape::Custom(SSML_ESCAPE.into())
            }
        });
        env.set_formatter(|out, state, value| {
            if value.is_undefined() || value.is_none() {
                return Ok(());
            }
            match state.auto_escape() {
                AutoEscape::Custom(mode) if mode == SSML_ESCAPE && !value.is_safe() => {
                    let text = match value.as_str() {
                        Some(s) => s.to_owned(),
                        None => value.to_string(),
                    };
                    out.write_str(&ssml::escape(&text)).map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
                    })
                }
                AutoEscape::Custom(_) => write!(out, "{value}").map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
                }),
                _ => minijinja::escape_formatter(out, state, value),
            }
        });
        let mut sources: Vec<(String, String)> = Vec::new();
        for (name, default) in REPLIES {
            let source = reply_source(def, name, default);
            sources.push((format!("reply/{name}"), inner(source).to_owned()));
        }
        for (intent_name, intent) in &def.intents {
            intent_sources(intent_name, intent, &mut sources);
        }
        for (name, source) in sources {
            env.add_template_owned(name.clone(), source)
                .map_err(|e| (name, detail(&e)))?;
        }
        Ok(Templates { env })
    }

    /// Whether the skill has a template called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    fn render(&self, name: &str, ctx: &Value) -> Result<String, RenderError> {
        let err = |source| RenderError::Template {
            name: name.to_owned(),
            source,
        };
        let template = self.env.get_template(name).map_err(err)?;
        template.render(JinjaValue::from(Serde(ctx))).map_err(err)
    }

    /// Renders the speech template `name` and returns a checked `<speak>` document.
    pub fn speech(&self, name: &str, ctx: &Value) -> Result<String, RenderError> {
        let fragment = self.render(name, ctx)?;
        speak(inner(&fragment)).map_err(|source| RenderError::Ssml {
            name: name.to_owned(),
            source,
        })
    }

    /// Renders the plain-text template `name` (cards).
    pub fn plain(&self, name: &str, ctx: &Value) -> Result<String, RenderError> {
        Ok(self.render(name, ctx)?.trim().to_owned())
    }

    /// The function input of `intent`: `input` with each string rendered as a template.
    pub fn input(&self, intent: &str, input: &Value, ctx: &Value) -> Result<Value, RenderError> {
        self.input_at(intent, input, "", ctx)
    }

    fn input_at(
        &self,
        intent: &str,
        v: &Value,
        path: &str,
        ctx: &Value,
    ) -> Result<Value, RenderError> {
        Ok(match v {
            Value::String(_) => Value::String(self.render(&format!("input/{intent}{path}"), ctx)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.input_at(intent, v, &format!("{path}/{i}"), ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            self.input_at(intent, v, &format!("{path}/{k}"), ctx)?,
                        ))
                    })
                    .collect::<Result<Map<_, _>, RenderError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Renders every speech template with sample values (slot values full of SSML
    /// metacharacters, no function result) and checks the SSML, so a template that cannot
    /// produce valid speech is refused when the skill loads. Templates that fail only for
    /// want of real data (arithmetic on a missing result) are left to render time.
    pub fn check_with_samples(&self, skill: &Skill) -> Result<(), (String, String)> {
        for (name, _) in REPLIES {
            let ctx = skill.context(None, Some("en-US"), &Map::new(), &Map::new(), &Map::new());
            self.check_one(&format!("reply/{name}"), &ctx)?;
        }
        for (intent_name, intent) in &skill.def.intents {
            let slots: Map<String, Value> = intent
                .slots
                .keys()
                .map(|s| (s.clone(), Value::String(SAMPLE_SLOT_VALUE.to_owned())))
                .collect();
            let ctx = skill.context(
                Some(intent_name),
                Some("en-US"),
                &slots,
                &Map::new(),
                &Map::new(),
            );
            for part in ["speech", "reprompt", "error"] {
                let name = intent_template(intent_name, part);
                if self.has(&name) {
                    self.check_one(&name, &ctx)?;
                }
            }
            for slot in intent.slots.keys() {
                let name = prompt_template(intent_name, slot);
                if self.has(&name) {
                    self.check_one(&name, &ctx)?;
                }
            }
        }
        Ok(())
    }

    fn check_one(&self, name: &str, ctx: &Value) -> Result<(), (String, String)> {
        match self.speech(name, ctx) {
            Ok(_) => Ok(()),
            Err(RenderError::Ssml { source, .. }) => Err((name.to_owned(), source.to_string())),
            Err(RenderError::Template { source, .. }) => match source.kind() {
                minijinja::ErrorKind::SyntaxError
                | minijinja::ErrorKind::UnknownFilter
                | minijinja::ErrorKind::UnknownTest
                | minijinja::ErrorKind::UnknownFunction => Err((name.to_owned(), detail(&source))),
                _ => Ok(()),
            },
        }
    }
}

fn intent_sources(intent_name: &str, intent: &IntentDef, out: &mut Vec<(String, String)>) {
    let mut add = |part: &str, source: &Option<String>| {
        if let Some(s) = source {
            out.push((intent_template(intent_name, part), inner(s).to_owned()));
        }
    };
    add("speech", &intent.speech);
    add("reprompt", &intent.reprompt);
    add("error", &intent.error);
    if let Some(card) = &intent.card {
        add("card_title", &Some(card.title.clone()));
        add("card_text", &card.text);
    }
    for (slot, def) in &intent.slots {
        if let Some(prompt) = def.prompt() {
            out.push((prompt_template(intent_name, slot), inner(prompt).to_owned()));
        }
    }
    if let Some(input) = &intent.input {
        input_templates(intent_name, input, "", out);
    }
}

/// A minijinja error with its line, on one line.
fn detail(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{} (line {line})", e),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn skill(text: &str) -> Skill {
        Skill::parse("t", text, Path::new("skill.yaml")).unwrap()
    }

    #[test]
    fn slot_values_are_escaped_in_speech_and_raw_in_cards_and_input() {
        let s = skill(
            r#"
id: x
invocation: t
intents:
  Say:
    samples: ["say {what}"]
    slots: { what: AMAZON.SearchQuery }
    function: f
    input: { text: "{{ slots.what }}", n: 3 }
    speech: "<s>You said {{ slots.what }}</s><break time='200ms'/>"
    card: { title: "Said {{ slots.what }}" }
"#,
        );
        let slots: Map<String, Value> = [("what".to_owned(), json!("</speak> & <b>"))]
            .into_iter()
            .collect();
        let ctx = s.context(Some("Say"), None, &slots, &Map::new(), &Map::new());
        let speech = s.templates.speech("Say/speech", &ctx).unwrap();
        assert_eq!(
            speech,
            "<speak><s>You said &lt;/speak&gt; &amp; &lt;b&gt;</s><break time='200ms'/></speak>"
        );
        ssml::validate(&speech).unwrap();
        assert_eq!(ssml::to_plain_text(&speech), "You said </speak> & <b>");
        assert_eq!(
            s.templates.plain("card/Say/title", &ctx).unwrap(),
            "Said </speak> & <b>"
        );
        let input = s
            .templates
            .input("Say", s.def.intents["Say"].input.as_ref().unwrap(), &ctx)
            .unwrap();
        assert_eq!(input, json!({ "text": "</speak> & <b>", "n": 3 }));
    }

    #[test]
    fn a_template_that_marks_a_slot_safe_is_refused_at_load_time() {
        let err = Skill::parse(
            "t",
            "id: x\ninvocation: t\nintents:\n  Say:\n    samples: [\"say {what}\"]\n    slots: { what: AMAZON.SearchQuery }\n    speech: \"{{ slots.what|safe }}\"\n",
            Path::new("skill.yaml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Say/speech"), "{err}");
    }

    #[test]
    fn defaults_render_and_a_speak_wrapper_is_tolerated() {
        let s =
            skill("id: x\ninvocation: the test\nreplies:\n  stop: \"<speak>Bye now.</speak>\"\n");
        let ctx = s.context(None, None, &Map::new(), &Map::new(), &Map::new());
        assert_eq!(
            s.templates.speech("reply/stop", &ctx).unwrap(),
            "<speak>Bye now.</speak>"
        );
        assert!(s
            .templates
            .speech("reply/launch", &ctx)
            .unwrap()
            .contains("Welcome to the test."));
    }
}
