//! Skills: `skills/NAME/skill.yaml` files come in; checked [`Skill`]s go out, each knowing
//! which function an intent calls, with which JSON input, and how to turn the answer into
//! speech (minijinja templates whose output is checked SSML).
//!
//! - [`template`]: the SSML-escaping template environment and the render-and-validate step.
//! - [`matcher`]: the local utterance matcher behind `hark say` (with [`date`] for AMAZON.DATE).
//! - [`export`]: the interaction model JSON for the Alexa developer console and ask-cli.

pub mod date;
pub mod export;
pub mod matcher;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::function::{parse_duration_within, FunctionName, MAX_TIMEOUT};
pub use template::Templates;

/// The file that defines a skill, inside `skills/NAME/`.
pub const SKILL_FILE: &str = "skill.yaml";
/// Default directory of skills, relative to where `hark` runs (or to `hark.yml`).
pub const DEFAULT_SKILLS_DIR: &str = "skills";
/// Default time a function gets before the skill answers "still working".
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(6);
/// Default point after which a progressive response tells the user to wait.
pub const DEFAULT_PROGRESSIVE_AFTER: Duration = Duration::from_millis(2500);
/// Alexa gives up on an answer after about 8 s; budgets must stay below this.
pub const ALEXA_DEADLINE: Duration = Duration::from_secs(8);

/// Built-in intents every skill has; the interaction model must list the first three.
pub const HELP_INTENT: &str = "AMAZON.HelpIntent";
pub const STOP_INTENT: &str = "AMAZON.StopIntent";
pub const CANCEL_INTENT: &str = "AMAZON.CancelIntent";
pub const FALLBACK_INTENT: &str = "AMAZON.FallbackIntent";
pub const NAVIGATE_HOME_INTENT: &str = "AMAZON.NavigateHomeIntent";
/// The built-in intents, in the order the export lists them.
pub const BUILT_IN_INTENTS: &[&str] = &[
    CANCEL_INTENT,
    HELP_INTENT,
    STOP_INTENT,
    NAVIGATE_HOME_INTENT,
    FALLBACK_INTENT,
];

/// Why a skill could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SkillError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: template {template}: {message}")]
    Template {
        path: PathBuf,
        template: String,
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// skill.yaml
// ---------------------------------------------------------------------------------------------

/// `skill.yaml`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillDef {
    /// The skill's application id (`amzn1.ask.skill.…`); requests for another id are refused.
    pub id: String,
    /// What users say to open the skill ("ask *holiday helper* …").
    pub invocation: String,
    /// Locales the skill serves (the interaction model is the same for each).
    #[serde(default = "default_locales")]
    pub locales: Vec<String>,
    /// `false` accepts unsigned requests: development only, refused at start-up unless the
    /// gateway listens on loopback or `alexa.allow_unverified_skills` is set.
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default)]
    pub deadline: DeadlineDef,
    #[serde(default)]
    pub replies: RepliesDef,
    /// Custom slot types.
    #[serde(default)]
    pub types: BTreeMap<String, SlotTypeDef>,
    #[serde(default)]
    pub intents: BTreeMap<String, IntentDef>,
}

fn default_locales() -> Vec<String> {
    vec!["en-US".to_owned()]
}

fn yes() -> bool {
    true
}

/// `deadline:` durations such as `6s` or `2500ms`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineDef {
    pub budget: Option<String>,
    pub progressive_after: Option<String>,
}

/// `replies:` the skill-wide spoken replies (SSML fragments, minijinja templates).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepliesDef {
    pub launch: Option<String>,
    pub launch_reprompt: Option<String>,
    pub help: Option<String>,
    pub help_reprompt: Option<String>,
    pub stop: Option<String>,
    pub fallback: Option<String>,
    pub fallback_reprompt: Option<String>,
    pub error: Option<String>,
    pub working: Option<String>,
    pub still_working: Option<String>,
    /// Said before a result that finished after its request was answered.
    pub earlier: Option<String>,
}

/// A custom slot type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotTypeDef {
    pub values: Vec<TypeValueDef>,
}

/// One value of a custom slot type: a bare string, or a value with an id and synonyms.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TypeValueDef {
    Plain(String),
    Full {
        value: String,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        synonyms: Vec<String>,
    },
}

impl TypeValueDef {
    pub fn value(&self) -> &str {
        match self {
            TypeValueDef::Plain(v) | TypeValueDef::Full { value: v, .. } => v,
        }
    }
    pub fn id(&self) -> Option<&str> {
        match self {
            TypeValueDef::Plain(_) => None,
            TypeValueDef::Full { id, .. } => id.as_deref(),
        }
    }
    pub fn synonyms(&self) -> &[String] {
        match self {
            TypeValueDef::Plain(_) => &[],
            TypeValueDef::Full { synonyms, .. } => synonyms,
        }
    }
}

/// An intent: what users say, which function runs, and what the skill answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentDef {
    #[serde(default)]
    pub samples: Vec<String>,
    #[serde(default)]
    pub slots: BTreeMap<String, SlotDef>,
    /// The function to call; without one, the intent only speaks its templates.
    pub function: Option<FunctionName>,
    /// The function's JSON `input`: strings are templates over `slots`, `session`, `user`.
    /// Without it the input is the slot values by name.
    pub input: Option<Value>,
    pub speech: Option<String>,
    pub reprompt: Option<String>,
    pub card: Option<CardDef>,
    /// Said when the function fails (default: the skill's `replies.error`).
    pub error: Option<String>,
    /// Whether the session ends after the answer (default: yes, unless there is a reprompt).
    pub end_session: Option<bool>,
}

/// A slot: its type, or the type with dialog settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SlotDef {
    Type(String),
    Full {
        #[serde(rename = "type")]
        slot_type: String,
        /// Ask for the slot when it is missing.
        #[serde(default)]
        required: bool,
        /// What to ask (required slots).
        #[serde(default)]
        prompt: Option<String>,
        /// Utterances that fill just this slot, for the dialog model.
        #[serde(default)]
        samples: Vec<String>,
    },
}

impl SlotDef {
    pub fn slot_type(&self) -> &str {
        match self {
            SlotDef::Type(t) | SlotDef::Full { slot_type: t, .. } => t,
        }
    }
    pub fn required(&self) -> bool {
        matches!(self, SlotDef::Full { required: true, .. })
    }
    pub fn prompt(&self) -> Option<&str> {
        match self {
            SlotDef::Type(_) => None,
            SlotDef::Full { prompt, .. } => prompt.as_deref(),
        }
    }
    pub fn samples(&self) -> &[String] {
        match self {
            SlotDef::Type(_) => &[],
            SlotDef::Full { samples, .. } => samples,
        }
    }
}

/// A card shown in the Alexa app: plain-text templates. Without `text`, the card shows the
/// speech as plain text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardDef {
    pub title: String,
    pub text: Option<String>,
    pub small_image: Option<String>,
    pub large_image: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Loaded skills
// ---------------------------------------------------------------------------------------------

/// Default replies, as SSML-fragment templates.
pub mod defaults {
    pub const LAUNCH: &str = "Welcome to {{ invocation }}. What would you like to do?";
    pub const LAUNCH_REPROMPT: &str = "What would you like to do?";
    pub const HELP: &str = "You can say things like: {{ examples }}. What would you like to do?";
    pub const HELP_REPROMPT: &str = "What would you like to do?";
    pub const STOP: &str = "Goodbye.";
    pub const FALLBACK: &str =
        "Sorry, {{ invocation }} can't help with that. You can say help to hear what I can do.";
    pub const FALLBACK_REPROMPT: &str = "What would you like to do?";
    pub const ERROR: &str = "Sorry, something went wrong. Please try again later.";
    pub const WORKING: &str = "Working on it.";
    pub const STILL_WORKING: &str = "That is taking longer than usual. I'll tell you the answer the next time you talk to {{ invocation }}.";
    pub const EARLIER: &str = "About your earlier request:";
}

/// A checked skill.
#[derive(Debug)]
pub struct Skill {
    /// The directory name, which is also the path: `POST /alexa/NAME`.
    pub name: String,
    pub def: SkillDef,
    pub budget: Duration,
    pub progressive_after: Duration,
    /// A few sample utterances, for the help reply.
    pub examples: String,
    pub templates: Templates,
}

impl Skill {
    /// Reads, parses and checks `dir/skill.yaml`; `name` is the directory's name.
    pub fn load(dir: &Path) -> Result<Skill, SkillError> {
        let path = dir.join(SKILL_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SkillError::Read {
            path: path.clone(),
            source,
        })?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Skill::parse(&name, &text, &path)
    }

    /// Parses and checks skill-file text.
    pub fn parse(name: &str, text: &str, path: &Path) -> Result<Skill, SkillError> {
        let invalid = |message: String| SkillError::Invalid {
            path: path.to_owned(),
            message,
        };
        name.parse::<FunctionName>()
            .map_err(|_| invalid(format!("skill name {name:?} (the directory's name) must be 1 to 63 characters of a-z, 0-9 and '-'")))?;
        let def: SkillDef = serde_norway::from_str(text).map_err(|source| SkillError::Parse {
            path: path.to_owned(),
            source,
        })?;
        check_def(&def).map_err(invalid)?;
        let duration = |field: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(v) => parse_duration_within(v, MAX_TIMEOUT)
                .map_err(|e| invalid(format!("deadline.{field}: {v:?} {e}"))),
        };
        let budget = duration("budget", &def.deadline.budget, DEFAULT_BUDGET)?;
        let progressive_after = duration(
            "progressive_after",
            &def.deadline.progressive_after,
            DEFAULT_PROGRESSIVE_AFTER,
        )?;
        if budget >= ALEXA_DEADLINE {
            return Err(invalid(format!(
                "deadline.budget {budget:?} leaves no time to answer before Alexa's {ALEXA_DEADLINE:?} deadline"
            )));
        }
        let examples = examples(&def);
        let templates =
            Templates::compile(&def).map_err(|(template, message)| SkillError::Template {
                path: path.to_owned(),
                template,
                message,
            })?;
        let skill = Skill {
            name: name.to_owned(),
            def,
            budget,
            progressive_after,
            examples,
            templates,
        };
        skill
            .templates
            .check_with_samples(&skill)
            .map_err(|(template, message)| SkillError::Template {
                path: path.to_owned(),
                template,
                message,
            })?;
        Ok(skill)
    }

    /// Every skill in `dir` (each subdirectory holding a `skill.yaml`), by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Skill>, SkillError> {
        let entries = std::fs::read_dir(dir).map_err(|source| SkillError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(SKILL_FILE).is_file())
            .collect();
        dirs.sort();
        dirs.iter().map(|d| Skill::load(d)).collect()
    }

    /// The intent definition for `name`, if the skill defines it.
    pub fn intent(&self, name: &str) -> Option<&IntentDef> {
        self.def.intents.get(name)
    }

    /// The type of slot `slot` of intent `intent`.
    pub fn slot_type(&self, intent: &str, slot: &str) -> Option<&str> {
        self.intent(intent)?.slots.get(slot).map(SlotDef::slot_type)
    }

    /// The template context every reply and input sees: the skill, and what the request
    /// brought. `slots` maps slot names to values (resolved to the canonical value of a
    /// custom type where Alexa resolved one).
    pub fn context(
        &self,
        intent: Option<&str>,
        locale: Option<&str>,
        slots: &Map<String, Value>,
        session: &Map<String, Value>,
        user: &Map<String, Value>,
    ) -> Value {
        json!({
            "skill": self.name,
            "invocation": self.def.invocation,
            "examples": self.examples,
            "intent": intent,
            "locale": locale,
            "slots": slots,
            "session": session,
            "user": user,
        })
    }
}

/// Checks what serde cannot: names, sample syntax, slot references and types.
fn check_def(def: &SkillDef) -> Result<(), String> {
    if def.id.trim().is_empty() {
        return Err("id must be the skill's application id (amzn1.ask.skill.…)".into());
    }
    let inv = def.invocation.trim();
    if inv.is_empty()
        || !inv
            .chars()
            .all(|c| c.is_lowercase() || c == ' ' || c == '\'' || c == '.')
    {
        return Err(format!(
            "invocation {inv:?} must be lower-case words (letters, spaces, apostrophes, periods)"
        ));
    }
    if def.locales.is_empty() {
        return Err("locales must name at least one locale, e.g. en-US".into());
    }
    for (name, t) in &def.types {
        if name.starts_with("AMAZON.") {
            return Err(format!(
                "types.{name}: custom types cannot use the AMAZON. prefix"
            ));
        }
        if t.values.is_empty() {
            return Err(format!("types.{name}: needs at least one value"));
        }
    }
    let mut seen_samples = std::collections::HashMap::new();
    for (intent_name, intent) in &def.intents {
        let at = format!("intents.{intent_name}");
        let valid_name = intent_name
            .strip_prefix("AMAZON.")
            .unwrap_or(intent_name)
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid_name || intent_name.is_empty() {
            return Err(format!("{at}: intent names use letters and '_' only"));
        }
        if intent_name.starts_with("AMAZON.") && !intent.slots.is_empty() {
            return Err(format!("{at}: built-in intents take no slots"));
        }
        if !intent_name.starts_with("AMAZON.") && intent.samples.is_empty() {
            return Err(format!("{at}: needs at least one sample utterance"));
        }
        if !intent_name.starts_with("AMAZON.")
            && intent.function.is_none()
            && intent.speech.is_none()
        {
            return Err(format!(
                "{at}: needs a function, a speech template, or both"
            ));
        }
        for (slot, slot_def) in &intent.slots {
            let t = slot_def.slot_type();
            if !t.starts_with("AMAZON.") && !def.types.contains_key(t) {
                return Err(format!(
                    "{at}.slots.{slot}: type {t:?} is neither built in (AMAZON.…) nor defined under types"
                ));
            }
            if slot_def.required() && slot_def.prompt().is_none() {
                return Err(format!("{at}.slots.{slot}: a required slot needs a prompt"));
            }
        }
        for sample in &intent.samples {
            let used = check_sample(sample).map_err(|e| format!("{at}: sample {sample:?}: {e}"))?;
            for slot in used {
                if !intent.slots.contains_key(&slot) {
                    return Err(format!(
                        "{at}: sample {sample:?} uses {{{slot}}}, which is not one of the intent's slots"
                    ));
                }
            }
            let key = matcher::normalize(sample);
            if let Some(other) = seen_samples.insert(key, intent_name.clone()) {
                return Err(format!(
                    "{at}: sample {sample:?} is also a sample of {other}; Alexa refuses duplicate samples"
                ));
            }
        }
        for (slot, slot_def) in &intent.slots {
            for sample in slot_def.samples() {
                check_sample(sample)
                    .map_err(|e| format!("{at}.slots.{slot}: sample {sample:?}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Checks a sample utterance as the developer console does, returning the slots it names.
fn check_sample(sample: &str) -> Result<Vec<String>, String> {
    let mut slots = Vec::new();
    let mut rest = sample;
    while let Some(open) = rest.find('{') {
        check_words(&rest[..open])?;
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("unclosed {")?;
        let slot = &after[..close];
        if slot.is_empty() || !slot.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{{{slot}}} is not a slot name"));
        }
        slots.push(slot.to_owned());
        rest = &after[close + 1..];
    }
    check_words(rest)?;
    if sample.trim().is_empty() {
        return Err("is empty".into());
    }
    Ok(slots)
}

fn check_words(text: &str) -> Result<(), String> {
    if text.contains('}') {
        return Err("unopened }".into());
    }
    if text.chars().any(|c| c.is_ascii_digit()) {
        return Err("spell numbers out (Alexa refuses digits in samples)".into());
    }
    match text
        .chars()
        .find(|c| !(c.is_alphabetic() || c.is_whitespace() || matches!(c, '\'' | '.' | '-')))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed (letters, spaces, apostrophes, periods)"
        )),
        None => Ok(()),
    }
}

/// "how many days do I have left, or book something off" — the help reply's examples.
fn examples(def: &SkillDef) -> String {
    let picks: Vec<String> = def
        .intents
        .iter()
        .filter(|(name, _)| !name.starts_with("AMAZON."))
        .filter_map(|(_, i)| i.samples.first())
        .take(3)
        .map(|s| {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                out.push_str("something");
                rest = rest[open..].find('}').map_or("", |c| &rest[open + c + 1..]);
            }
            out.push_str(rest);
            out
        })
        .collect();
    match picks.len() {
        0 => "help".to_owned(),
        1 => picks[0].clone(),
        n => format!("{}, or {}", picks[..n - 1].join(", "), picks[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const HOLIDAYISH: &str = r#"
id: amzn1.ask.skill.test
invocation: test helper
intents:
  Greet:
    samples: ["say hello to {name}", "greet {name}"]
    slots: { name: AMAZON.FirstName }
    speech: "Hello, {{ slots.name }}!"
"#;

    fn parse(text: &str) -> Result<Skill, SkillError> {
        Skill::parse("test", text, Path::new("skills/test/skill.yaml"))
    }

    #[test]
    fn a_small_skill_loads_with_defaults() {
        let skill = parse(HOLIDAYISH).unwrap();
        assert_eq!(skill.budget, DEFAULT_BUDGET);
        assert_eq!(skill.def.locales, ["en-US"]);
        assert!(skill.def.verify);
        assert_eq!(skill.examples, "say hello to something");
    }

    #[test]
    fn mistakes_are_named_at_load_time() {
        for (text, expect) in [
            ("id: x\ninvocation: Test\n", "lower-case"),
            ("id: x\ninvocation: t\nintents:\n  A:\n    samples: [\"go {where}\"]\n    speech: hi\n", "not one of the intent's slots"),
            ("id: x\ninvocation: t\nintents:\n  A:\n    samples: [\"go 2 places\"]\n    speech: hi\n", "spell numbers out"),
            ("id: x\ninvocation: t\nintents:\n  A:\n    samples: [go]\n    speech: hi\n    slots: { w: PLACES }\n", "neither built in"),
            ("id: x\ninvocation: t\nintents:\n  A:\n    samples: [go]\n    speech: hi\n  B:\n    samples: [Go]\n    speech: hi\n", "duplicate"),
            ("id: x\ninvocation: t\ndeadline: { budget: 9s }\n", "deadline"),
            ("id: x\ninvocation: t\nintents:\n  A:\n    samples: [go]\n    speech: \"<emphasis level='loudest'>hi</emphasis>\"\n", "template A/speech"),
            ("id: x\ninvocation: t\nintents:\n  A:\n    samples: [go]\n    speech: \"{{ unclosed\"\n", "template A/speech"),
            ("id: x\ninvocation: t\ncolour: blue\n", "colour"),
            ("id: x\ninvocation: t\nintents:\n  A:\n    samples: [go]\n", "needs a function"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}\n=> {err}");
        }
    }
}
