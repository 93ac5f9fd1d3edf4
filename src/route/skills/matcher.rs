//! The local utterance matcher behind `hark say`: a skill and something a user might say come
//! in; the intent and slot values Alexa would most likely send go out. It matches the sample
//! utterances literally (case and punctuation aside) with `{slot}` standing for one or more
//! words, checks each slot value against its type (custom values and synonyms, AMAZON.DATE,
//! AMAZON.NUMBER), and prefers the sample with the most literal text. It is a stand-in for
//! Alexa's language model, good enough to exercise a skill without an Amazon account.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use regex::Regex;
use serde_json::{json, Value};

use super::{date, Skill, CANCEL_INTENT, FALLBACK_INTENT, HELP_INTENT, STOP_INTENT};

/// Samples the built-in intents have even when the skill lists none.
const BUILT_IN_SAMPLES: &[(&str, &[&str])] = &[
    (
        HELP_INTENT,
        &["help", "help me", "what can i say", "what can you do"],
    ),
    (STOP_INTENT, &["stop", "shut up", "be quiet", "off"]),
    (CANCEL_INTENT, &["cancel", "never mind", "forget it"]),
];

/// What an utterance matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub intent: String,
    pub slots: BTreeMap<String, MatchedSlot>,
}

/// One filled slot.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedSlot {
    /// The slot's `value` as Alexa sends it (what was said; a date or number normalised).
    pub value: String,
    /// For a custom type: the canonical value and its id, when the words are a value or synonym.
    pub resolved: Option<(String, Option<String>)>,
}

/// Lower case, sentence punctuation (`? ! , ; : " ( ) [ ]` and word-final periods) dropped,
/// spaces collapsed: the form samples and utterances are compared in. Other characters stay,
/// so a free-form slot keeps what was said.
pub fn normalize(text: &str) -> String {
    let mapped: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if matches!(c, '?' | '!' | ',' | ';' | ':' | '"' | '(' | ')' | '[' | ']') {
                ' '
            } else {
                c
            }
        })
        .collect();
    mapped
        .split_whitespace()
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The best match of `utterance` in `skill`, or `AMAZON.FallbackIntent` with no slots.
pub fn match_utterance(skill: &Skill, utterance: &str, today: NaiveDate) -> Match {
    let said = normalize(utterance);
    let mut best: Option<(i64, Match)> = None;
    let mut consider = |score: i64, m: Match| {
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, m));
        }
    };
    for (intent_name, intent) in &skill.def.intents {
        for sample in &intent.samples {
            if let Some((score, slots)) = match_sample(skill, intent_name, sample, &said, today) {
                consider(
                    score,
                    Match {
                        intent: intent_name.clone(),
                        slots,
                    },
                );
            }
        }
    }
    for (intent_name, samples) in BUILT_IN_SAMPLES {
        if skill
            .intent(intent_name)
            .is_some_and(|i| !i.samples.is_empty())
        {
            continue;
        }
        for sample in *samples {
            if normalize(sample) == said {
                consider(
                    sample.len() as i64 * 10,
                    Match {
                        intent: (*intent_name).to_owned(),
                        slots: BTreeMap::new(),
                    },
                );
            }
        }
    }
    best.map(|(_, m)| m).unwrap_or_else(|| Match {
        intent: FALLBACK_INTENT.to_owned(),
        slots: BTreeMap::new(),
    })
}

/// Matches one sample; the score counts literal characters (10 each) and resolved slots.
fn match_sample(
    skill: &Skill,
    intent: &str,
    sample: &str,
    said: &str,
    today: NaiveDate,
) -> Option<(i64, BTreeMap<String, MatchedSlot>)> {
    let sample = normalize(sample);
    let mut pattern = String::from("^");
    let mut names = Vec::new();
    let mut literal = 0i64;
    for (i, word) in sample.split(' ').enumerate() {
        if i > 0 {
            pattern.push(' ');
        }
        match word.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(slot) => {
                pattern.push_str("(.+?)");
                names.push(slot.to_owned());
            }
            None => {
                pattern.push_str(&regex::escape(word));
                literal += word.len() as i64;
            }
        }
    }
    pattern.push('$');
    let re = Regex::new(&pattern).ok()?;
    let caps = re.captures(said)?;
    let mut score = literal * 10;
    let mut slots = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let words = caps.get(i + 1)?.as_str();
        let slot_type = skill.slot_type(intent, name)?;
        let (slot, bonus) = fill(skill, slot_type, words, today)?;
        score += bonus;
        slots.insert(name.clone(), slot);
    }
    Some((score, slots))
}

/// The slot a type makes of `words`, with a score bonus, or `None` when they cannot fill it.
fn fill(
    skill: &Skill,
    slot_type: &str,
    words: &str,
    today: NaiveDate,
) -> Option<(MatchedSlot, i64)> {
    let plain = |value: String, bonus| {
        Some((
            MatchedSlot {
                value,
                resolved: None,
            },
            bonus,
        ))
    };
    match slot_type {
        "AMAZON.DATE" => plain(date::resolve(words, today)?, 5),
        "AMAZON.NUMBER" | "AMAZON.FOUR_DIGIT_NUMBER" => plain(number(words)?.to_string(), 5),
        t if t.starts_with("AMAZON.") => plain(words.to_owned(), 0),
        custom => {
            let def = skill.def.types.get(custom)?;
            for v in &def.values {
                let names =
                    std::iter::once(v.value()).chain(v.synonyms().iter().map(String::as_str));
                if names.map(normalize).any(|n| n == words) {
                    let resolved = Some((v.value().to_owned(), v.id().map(str::to_owned)));
                    return Some((
                        MatchedSlot {
                            value: words.to_owned(),
                            resolved,
                        },
                        5,
                    ));
                }
            }
            // Alexa passes values outside the list through, unresolved.
            plain(words.to_owned(), -5)
        }
    }
}

/// `12`, `twelve`, `twenty three`.
fn number(words: &str) -> Option<u64> {
    if let Ok(n) = words.parse() {
        return Some(n);
    }
    const UNITS: &[&str] = &[
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: &[&str] = &[
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let mut total = 0u64;
    let mut any = false;
    for w in words.split(' ').filter(|w| *w != "and") {
        if let Some(u) = UNITS.iter().position(|x| *x == w) {
            total += u as u64;
        } else if let Some(t) = TENS.iter().position(|x| *x == w) {
            total += (t as u64 + 2) * 10;
        } else if w == "hundred" {
            total = total.max(1) * 100;
        } else {
            return None;
        }
        any = true;
    }
    any.then_some(total)
}

impl Match {
    /// The `intent` object of an IntentRequest: every slot of the intent, filled or not,
    /// with entity resolutions for custom types.
    pub fn intent_json(&self, skill: &Skill) -> Value {
        let mut slots = serde_json::Map::new();
        let declared = skill.intent(&self.intent).map(|i| &i.slots);
        for (name, def) in declared.into_iter().flatten() {
            let mut slot = json!({ "name": name, "confirmationStatus": "NONE" });
            if let Some(m) = self.slots.get(name) {
                slot["value"] = json!(m.value);
                if !def.slot_type().starts_with("AMAZON.") {
                    let authority = format!(
                        "amzn1.er-authority.echo-sdk.{}.{}",
                        skill.def.id,
                        def.slot_type()
                    );
                    slot["resolutions"] = match &m.resolved {
                        Some((value, id)) => json!({ "resolutionsPerAuthority": [{
                            "authority": authority,
                            "status": { "code": "ER_SUCCESS_MATCH" },
                            "values": [{ "value": { "name": value, "id": id.clone().unwrap_or_else(|| value.clone()) } }],
                        }]}),
                        None => json!({ "resolutionsPerAuthority": [{
                            "authority": authority,
                            "status": { "code": "ER_SUCCESS_NO_MATCH" },
                        }]}),
                    };
                }
            }
            slots.insert(name.clone(), slot);
        }
        json!({ "name": self.intent, "confirmationStatus": "NONE", "slots": slots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn skill() -> Skill {
        Skill::parse(
            "holiday",
            r#"
id: amzn1.ask.skill.h
invocation: holiday helper
types:
  LEAVE_KIND:
    values:
      - { value: holiday, id: HOLIDAY, synonyms: [vacation, day off] }
      - sick day
intents:
  DaysLeft:
    samples: ["how many days do I have left", "how many days off do I have"]
    speech: x
  BookDay:
    samples: ["book {date} off", "book a {kind} on {date}", "take {date} off"]
    slots: { date: AMAZON.DATE, kind: LEAVE_KIND }
    speech: x
  Echo:
    samples: ["repeat {words}"]
    slots: { words: AMAZON.SearchQuery }
    speech: x
"#,
            Path::new("skill.yaml"),
        )
        .unwrap()
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
    }

    #[test]
    fn utterances_find_their_intent_and_fill_slots() {
        let s = skill();
        let m = match_utterance(&s, "How many days do I have left?", today());
        assert_eq!(m.intent, "DaysLeft");
        let m = match_utterance(&s, "book next friday off", today());
        assert_eq!(m.intent, "BookDay");
        assert_eq!(m.slots["date"].value, "2026-12-04");
        let m = match_utterance(&s, "book a vacation on 2026-12-24", today());
        assert_eq!(m.slots["date"].value, "2026-12-24");
        assert_eq!(
            m.slots["kind"].resolved,
            Some(("holiday".into(), Some("HOLIDAY".into())))
        );
        let json = m.intent_json(&s);
        assert_eq!(
            json["slots"]["kind"]["resolutions"]["resolutionsPerAuthority"][0]["values"][0]
                ["value"]["id"],
            "HOLIDAY"
        );
        // Not a date: no BookDay.
        assert_eq!(
            match_utterance(&s, "book the car off", today()).intent,
            "AMAZON.FallbackIntent"
        );
        assert_eq!(
            match_utterance(&s, "help", today()).intent,
            "AMAZON.HelpIntent"
        );
        let m = match_utterance(&s, "repeat </speak> & more", today());
        assert_eq!(m.slots["words"].value, "</speak> & more");
    }

    #[test]
    fn numbers_in_words() {
        assert_eq!(number("twenty three"), Some(23));
        assert_eq!(number("12"), Some(12));
        assert_eq!(number("a few"), None);
    }
}
