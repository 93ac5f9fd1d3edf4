//! Fuzzing entry points: untrusted bytes in, nothing out. Each function feeds one parser that
//! sees bytes from the internet (or from a file a user hands Hark) and panics only when an
//! invariant that matters breaks — a forged input accepted, untrusted text escaping its SSML
//! element, a parse error turned into a panic. The gateway's own targets are here; each
//! channel's is in its folder (`channels/NAME/fuzz.rs`, a [`ChannelTarget`]). The cargo-fuzz
//! targets in `fuzz/` call them, and the corpus replay test
//! (`corpus_replays_without_a_failure`, below) runs the committed corpus through the same
//! functions in `cargo test`.
//!
//! Several targets read their input as a small HTTP-like message, so seeds stay readable:
//! header lines `Name: value`, an empty line, then the body ([`message`]).

use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::channels::alexa::ssml::{self, Speech, SsmlError};
use crate::channels::alexa::testpki::{self, Pki};
use crate::channels::alexa::types::RequestEnvelope;
use crate::channels::alexa::verify::{
    check_cert_url, parse_pem_chain, CertSource, SignatureHeaders, Verifier, VerifierConfig,
    CERT_URL_HOST, CERT_URL_PATH_PREFIX,
};
use crate::route::skills::template::RenderError;
use crate::route::skills::{export, matcher, Skill};
use crate::stack::Stack;
use crate::verify::rules;

/// The fixed clock of the signature targets (unix seconds): 2025-03-01T12:00:00Z.
pub const NOW: i64 = 1_740_830_400;
/// The secret the Slack, GitHub and Standard Webhooks targets verify with. Seeds that should
/// pass are signed with it.
pub const SECRET: &[u8] = b"fuzz-signing-secret";

/// Splits `data` into header lines and a body at the first empty line (`\n\n` or
/// `\r\n\r\n`); with no empty line, everything is the body. Header lines that are not
/// `Name: value` with a valid name and value are skipped, as a server would refuse them.
pub fn message(data: &[u8]) -> (HeaderMap, &[u8]) {
    let split = find(data, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| find(data, b"\n\n").map(|i| (i, i + 2)));
    let Some((head_end, body_start)) = split else {
        return (HeaderMap::new(), data);
    };
    let mut headers = HeaderMap::new();
    for line in data[..head_end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    (headers, &data[body_start..])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits `data` at lines holding only `%%` into at most `N` parts (missing parts are empty).
pub fn sections<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for slot in out.iter_mut().take(N - 1) {
        match find(rest, b"\n%%\n") {
            Some(i) => {
                *slot = &rest[..i];
                rest = &rest[i + 4..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
                break;
            }
        }
    }
    if !rest.is_empty() {
        out[N - 1] = rest;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Alexa
// ---------------------------------------------------------------------------------------------

/// `SignatureCertChainUrl` check: whatever it accepts, a real URL parser reads as
/// `https://s3.amazonaws.com:443/echo.api/...` with no dot segment left, and the canonical
/// URL and file name it returns say the same.
pub fn alexa_cert_url(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = check_cert_url(raw) else {
        return;
    };
    for text in [raw, url.as_str()] {
        let parsed = url::Url::parse(text).unwrap_or_else(|e| {
            panic!("accepted {raw:?}, but the url crate refuses {text:?}: {e}")
        });
        assert_eq!(parsed.scheme(), "https", "accepted {raw:?}");
        assert_eq!(parsed.host_str(), Some(CERT_URL_HOST), "accepted {raw:?}");
        assert_eq!(
            parsed.port_or_known_default(),
            Some(443),
            "accepted {raw:?}"
        );
        assert!(
            parsed.path().starts_with(CERT_URL_PATH_PREFIX),
            "accepted {raw:?}, whose path is {:?}",
            parsed.path()
        );
        assert!(
            parsed.username().is_empty() && parsed.password().is_none(),
            "accepted {raw:?} with user info"
        );
        assert!(
            parsed.query().is_none() && parsed.fragment().is_none(),
            "accepted {raw:?} with a query or fragment"
        );
    }
    let canonical = url.as_str();
    assert!(
        canonical.starts_with("https://s3.amazonaws.com/echo.api/"),
        "accepted {raw:?} as {canonical:?}"
    );
    assert!(
        !canonical.split('/').any(|s| s == "." || s == ".."),
        "accepted {raw:?} as {canonical:?}, which keeps a dot segment"
    );
    let file = url.file_name();
    assert!(
        !file.is_empty() && !file.contains(['/', '\\', '%']) && file != "." && file != "..",
        "accepted {raw:?} with the file name {file:?}"
    );
    assert!(canonical.ends_with(&format!("/{file}")));
}

/// The `Signature-256` value that [`alexa_request`] replaces with a real signature of the
/// body by the test PKI's leaf, so the checks after the signature (timestamp, skill id) are
/// reached too.
pub const SIGN_PLACEHOLDER: &str = "fuzz-sign";
/// The skill id the Alexa targets expect.
pub const ALEXA_APP_ID: &str = "amzn1.ask.skill.fuzz";

/// The test PKI of this process (keys are made per process, so no committed input carries a
/// signature that verifies) and a verifier that trusts only its root and serves its good chain.
fn alexa_pki() -> &'static (Pki, Verifier) {
    static PKI: OnceLock<(Pki, Verifier)> = OnceLock::new();
    PKI.get_or_init(|| {
        let pki = Pki::for_time(now());
        let verifier = alexa_verifier(
            &pki.root_pem,
            CertSource::Pem(pki.good_chain.as_bytes().into()),
        );
        (pki, verifier)
    })
}

/// An Alexa request: the signature headers and the body. The envelope parser never panics
/// and a parsed envelope survives a round trip; the verifier accepts the request only when
/// the body is signed by the trusted leaf (see [`SIGN_PLACEHOLDER`]), its certificate URL is
/// Amazon's, its timestamp within 150 s of [`NOW`] (an hour for skill events) and its skill
/// id [`ALEXA_APP_ID`].
pub fn alexa_request(data: &[u8]) {
    let (headers, body) = message(data);
    let envelope = RequestEnvelope::from_slice(body).ok();
    if let Some(envelope) = &envelope {
        let _ = (
            envelope.request.type_name(),
            envelope.context_application_id(),
            envelope.api_access(),
        );
        let text = serde_json::to_vec(envelope).expect("a parsed envelope serialises");
        let again = RequestEnvelope::from_slice(&text)
            .unwrap_or_else(|e| panic!("a parsed envelope does not parse back: {e}"));
        assert_eq!(&again, envelope, "the envelope changed on a round trip");
    }
    let mut signature_headers =
        SignatureHeaders::from_lookup(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    if let Some(raw) = &signature_headers.cert_chain_url {
        alexa_cert_url(raw.as_bytes());
    }
    let signed = signature_headers.signature_256.as_deref() == Some(SIGN_PLACEHOLDER);
    if signed {
        signature_headers.signature_256 = Some(testpki::sign(body));
    }
    let (_, verifier) = alexa_pki();
    let Ok(verified) = block_on(verifier.verify(&signature_headers, body, now(), ALEXA_APP_ID))
    else {
        return;
    };
    assert!(signed, "a request no one signed was accepted");
    let url = signature_headers.cert_chain_url.unwrap_or_default();
    assert!(
        check_cert_url(&url).is_ok(),
        "accepted the chain URL {url:?}"
    );
    let envelope = envelope.expect("an accepted body is an envelope");
    assert_eq!(verified.envelope, envelope);
    let skew = (now() - envelope.request.timestamp).num_seconds().abs();
    let limit = if envelope.request.is_skill_event() {
        3600
    } else {
        150
    };
    assert!(skew <= limit, "accepted a timestamp {skew}s from now");
    assert_eq!(envelope.context_application_id(), Some(ALEXA_APP_ID));
    let session_id = envelope.session_application_id();
    assert!(session_id.is_none() || session_id == Some(ALEXA_APP_ID));
}

/// A PEM certificate chain as served at a `SignatureCertChainUrl`: the PEM and X.509 parsers
/// and every check of the chain run on it (`diagnose` does not stop at the first failure),
/// and no chain makes an unsigned request pass.
pub fn alexa_cert_chain(data: &[u8]) {
    let _ = parse_pem_chain(data);
    let (pki, _) = alexa_pki();
    let verifier = alexa_verifier(&pki.root_pem, CertSource::Pem(data.into()));
    let headers = SignatureHeaders {
        cert_chain_url: Some("https://s3.amazonaws.com/echo.api/echo-api-cert.pem".into()),
        signature_256: Some("c2lnbmF0dXJl".into()),
        signature_sha1: Some("c2lnbmF0dXJl".into()),
    };
    let body = br#"{"version":"1.0","context":{"System":{"application":{"applicationId":"amzn1.ask.skill.fuzz"}}},"request":{"type":"LaunchRequest","requestId":"r","timestamp":"2025-03-01T12:00:00Z"}}"#;
    let report = block_on(verifier.diagnose(&headers, body, now(), Some(ALEXA_APP_ID)));
    assert!(!report.passed(), "a chain made a forged signature pass");
}

fn alexa_verifier(root_pem: &str, source: CertSource) -> Verifier {
    // An HTTP client per input would dominate the run; one is shared, and never used (the
    // chain comes from memory).
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(reqwest::Client::new).clone();
    let mut config = VerifierConfig {
        use_default_roots: false,
        cert_source: source,
        http_client: Some(client),
        ..VerifierConfig::default()
    };
    config
        .add_root_pem(root_pem.as_bytes())
        .expect("the test root parses");
    config
        .build()
        .expect("the fuzz verifier configuration is valid")
}

/// Runs a future that never waits on I/O (the verifier with an in-memory chain).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// [`NOW`] as a time.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// SSML
// ---------------------------------------------------------------------------------------------

/// A skill whose templates put slot values in every kind of place a skill author might.
const SLOT_SKILL: &str = r#"
id: amzn1.ask.skill.fuzz
invocation: fuzz helper
intents:
  EchoIntent:
    samples: ["say {thing}", "say {thing} on {date}"]
    slots:
      thing: AMAZON.SearchQuery
      date: AMAZON.DATE
    function: fuzz
    input: { thing: "{{ slots.thing }}", date: "{{ slots.date }}" }
    speech: 'You said {{ slots.thing }}.'
    reprompt: '<emphasis level="strong">{{ slots.thing }}</emphasis>, <say-as interpret-as="date">{{ slots.date }}</say-as>'
    error: '<p>{{ slots.thing | upper }}</p><s>{{ slots.date ~ slots.thing }}</s>'
    card: { title: "{{ slots.thing }}", text: "{{ slots.date }}" }
"#;

/// The repository's skills plus [`SLOT_SKILL`], parsed once.
fn slot_skills() -> &'static [Skill] {
    static SKILLS: OnceLock<Vec<Skill>> = OnceLock::new();
    SKILLS.get_or_init(|| {
        [
            ("fuzz", SLOT_SKILL),
            ("holiday", include_str!("../skills/holiday/skill.yaml")),
        ]
        .iter()
        .map(|(name, text)| {
            Skill::parse(name, text, Path::new("skill.yaml"))
                .unwrap_or_else(|e| panic!("skill {name} does not load: {e}"))
        })
        .collect()
    })
}

/// Untrusted text (a slot value, a spoken phrase) in SSML. Written with [`Speech::text`] it
/// renders as a valid `<speak>` document whose text is the input (XML-forbidden characters
/// read as spaces); put in every speech template of the skills, it never makes a reply fail
/// its SSML check. Arbitrary bytes given to the SSML parser are an `Err`, never a panic.
pub fn ssml_slot(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = ssml::validate(&text);
    let _ = ssml::to_plain_text(&text);

    let doc = Speech::new().text(&*text).render();
    match ssml::validate(&doc) {
        Ok(()) => {
            // XML 1.0's `Char` production; anything else may only come back as a space.
            let xml_char = |c: char| matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
            let expected: String = text
                .chars()
                .map(|c| if xml_char(c) { c } else { ' ' })
                .collect();
            assert_eq!(
                collapse(&ssml::to_plain_text(&doc)),
                collapse(&expected),
                "the text does not come back from {doc:?}"
            );
        }
        Err(SsmlError::TooLong { .. }) => {}
        Err(e) => panic!("text {text:?} rendered as invalid SSML {doc:?}: {e}"),
    }

    let value = Value::String(text.into_owned());
    for skill in slot_skills() {
        for (intent_name, intent) in &skill.def.intents {
            let slots: Map<String, Value> = intent
                .slots
                .keys()
                .map(|s| (s.clone(), value.clone()))
                .collect();
            let ctx = skill.context(
                Some(intent_name),
                Some("en-US"),
                &slots,
                &Map::new(),
                &Map::new(),
            );
            for part in ["speech", "reprompt", "error"] {
                let name = crate::route::skills::template::intent_template(intent_name, part);
                if !skill.templates.has(&name) {
                    continue;
                }
                match skill.templates.speech(&name, &ctx) {
                    Ok(doc) => {
                        if let Err(e) = ssml::validate(&doc) {
                            panic!("{name} of {} rendered invalid SSML: {e}", skill.name);
                        }
                    }
                    Err(RenderError::Ssml {
                        source: SsmlError::TooLong { .. },
                        ..
                    }) => {}
                    Err(RenderError::Ssml { source, .. }) => panic!(
                        "slot value {value} broke {name} of skill {}: {source}",
                        skill.name
                    ),
                    // Templates that need a function result fail without one.
                    Err(RenderError::Template { .. }) => {}
                }
            }
            let _ = skill.templates.input(
                intent_name,
                &intent.input.clone().unwrap_or(Value::Null),
                &ctx,
            );
        }
    }
}

/// Runs of whitespace as one space, trimmed.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// Signed webhooks
// ---------------------------------------------------------------------------------------------

/// The text of header `name`, or empty.
pub fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A webhook trigger rule (YAML, as in `hark.yml`), `%%`, then the request it is evaluated
/// against (headers, empty line, body; `?query` on the first line is the query string). A
/// rule loads or is refused, and evaluates to the same answer twice, without a panic; `not`
/// is the negation of its rule.
pub fn trigger_rule(data: &[u8]) {
    let [rule_text, request] = sections::<2>(data);
    let Ok(rule_text) = std::str::from_utf8(rule_text) else {
        return;
    };
    let Ok(rule) = serde_norway::from_str::<rules::Rule>(rule_text) else {
        return;
    };
    let (query_line, request) = match request.strip_prefix(b"?") {
        Some(rest) => {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            (&rest[..end], rest.get(end + 1..).unwrap_or_default())
        }
        None => (&request[..0], request),
    };
    let query: Vec<(String, String)> = serde_urlencoded::from_bytes(query_line).unwrap_or_default();
    let (headers, body) = message(request);
    let payload = rules::parse_payload(body);
    let req = rules::RuleRequest {
        headers: &headers,
        query: &query,
        body,
        payload: payload.as_ref(),
        remote_ip: Some(std::net::IpAddr::from([192, 0, 2, 7])),
    };
    let first = rule.evaluate(&req);
    let second = rule.evaluate(&req);
    assert_eq!(first.is_ok(), second.is_ok());
    if let (Ok(a), Ok(b)) = (&first, &second) {
        assert_eq!(a, b, "a rule answered differently twice");
    }
    let negated = rules::Rule::Not(Box::new(rule));
    if let (Ok(a), Ok(b)) = (first, negated.evaluate(&req)) {
        assert_eq!(a, !b, "not is not the negation");
    }
}

// ---------------------------------------------------------------------------------------------
// Files users hand Hark
// ---------------------------------------------------------------------------------------------

/// `hark.yml` text: it loads (with `${VAR}` substitution) or is an `Err`, never a panic.
pub fn stack_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "FUZZ_VAR").then(|| "value".to_owned());
    let _ = Stack::parse(text, Path::new("hark.yml"), Path::new("/fuzz"), &env);
}

/// `skill.yaml` text: it loads or is an `Err`, never a panic; a loaded skill exports its
/// interaction model and matches utterances (its own samples among them) without a panic.
pub fn skill_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(skill) = Skill::parse("fuzz", text, Path::new("skill.yaml")) else {
        return;
    };
    let model = export::interaction_model(&skill);
    assert!(model.is_object(), "the interaction model is not an object");
    let today = NaiveDate::from_ymd_opt(2025, 3, 1).expect("a valid date");
    let mut utterances: Vec<String> = vec!["help".into(), "book next friday off".into()];
    for intent in skill.def.intents.values().take(4) {
        utterances.extend(intent.samples.iter().take(4).cloned());
    }
    for utterance in &utterances {
        let found = matcher::match_utterance(&skill, utterance, today);
        let _ = found.intent_json(&skill);
    }
    let ctx = skill.context(None, Some("en-US"), &Map::new(), &Map::new(), &Map::new());
    for (name, _) in crate::route::skills::template::REPLIES {
        let _ = skill.templates.speech(&format!("reply/{name}"), &ctx);
    }
}

/// A fuzz target: untrusted bytes in.
pub type Target = fn(&[u8]);

/// A channel's fuzz target, in its own folder (`channels/NAME/fuzz.rs`). Every channel
/// the registration line names must have one: the list of targets comes from there.
pub trait ChannelTarget {
    /// The target's name: its `fuzz/fuzz_targets/` file and corpus directory.
    const TARGET: &'static str;

    /// Untrusted bytes through the channel's verification and parsing.
    fn run(data: &[u8]);
}

/// The targets that are not a channel's, by the name of their `fuzz/fuzz_targets/` file
/// and corpus directory.
const OWN_TARGETS: &[(&str, Target)] = &[
    ("alexa_cert_url", alexa_cert_url),
    ("alexa_request", alexa_request),
    ("alexa_cert_chain", alexa_cert_chain),
    ("ssml_slot", ssml_slot),
    ("trigger_rule", trigger_rule),
    ("stack_file", stack_file),
    ("skill_file", skill_file),
];

/// Every target: the gateway's own, then each registered channel's.
pub fn targets() -> impl Iterator<Item = (&'static str, Target)> {
    OWN_TARGETS
        .iter()
        .chain(crate::channels::Channels::FUZZ_TARGETS)
        .copied()
}

/// Runs target `name` on `data` (the `fuzz/fuzz_targets/` files of channels call this).
pub fn run(name: &str, data: &[u8]) {
    match targets().find(|(target, _)| *target == name) {
        Some((_, target)) => target(data),
        None => panic!("no fuzz target named {name:?}"),
    }
}

/// The committed corpus input `fuzz/corpus/TARGET/NAME` (tests).
#[cfg(test)]
pub(crate) fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect();
        inputs.sort();
        inputs
    }

    /// The committed corpus of every target, through the same entry points the fuzzer calls.
    #[test]
    fn corpus_replays_without_a_failure() {
        let mut total = 0;
        let mut count = 0;
        for (target, run) in targets() {
            count += 1;
            let inputs = corpus(target);
            assert!(!inputs.is_empty(), "no corpus for {target}");
            for (path, data) in &inputs {
                if let Err(panic) = std::panic::catch_unwind(|| run(data)) {
                    let text = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    panic!("{target} fails on {}: {text}", path.display());
                }
            }
            total += inputs.len();
        }
        eprintln!("fuzz corpus: {total} inputs replayed over {count} targets");
    }

    /// Every target has a `fuzz/fuzz_targets/` file calling it, and nothing else is there.
    #[test]
    fn every_target_has_a_fuzz_target_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut expected: Vec<String> = targets().map(|(t, _)| format!("{t}.rs")).collect();
        expected.sort();
        assert_eq!(files, expected);
        for (target, _) in targets() {
            let text = std::fs::read_to_string(dir.join(format!("{target}.rs"))).unwrap();
            assert!(
                text.contains(&format!("hark::fuzzing::{target}("))
                    || text.contains(&format!("hark::fuzzing::run(\"{target}\", ")),
                "{target}.rs"
            );
        }
    }

    #[test]
    fn message_splits_headers_from_the_body() {
        let (headers, body) = message(b"A: 1\r\nbad line\nB:  two \n\n{\"x\": 1}\n\nmore");
        assert_eq!(headers.get("a").unwrap(), "1");
        assert_eq!(headers.get("b").unwrap(), "two");
        assert_eq!(headers.len(), 2);
        assert_eq!(body, b"{\"x\": 1}\n\nmore");
        let (headers, body) = message(b"no blank line");
        assert!(headers.is_empty());
        assert_eq!(body, b"no blank line");
        let [a, b, c] = sections::<3>(b"one\n%%\ntwo\n%%\nthree\n%%\nfour");
        assert_eq!(
            (a, b, c),
            (&b"one"[..], &b"two"[..], &b"three\n%%\nfour"[..])
        );
    }

    /// The signed Alexa seed really is accepted, so the fuzzer starts from the accepting
    /// path (a change of clock or signing scheme would silently make it a refusal). Each
    /// channel checks its own signed seed in its `fuzz.rs`.
    #[test]
    fn the_signed_alexa_seed_passes() {
        let data = seed("alexa_request", "signed-intent");
        let (headers, body) = message(&data);
        let mut sig =
            SignatureHeaders::from_lookup(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        assert_eq!(sig.signature_256.as_deref(), Some(SIGN_PLACEHOLDER));
        sig.signature_256 = Some(testpki::sign(body));
        let (_, verifier) = alexa_pki();
        block_on(verifier.verify(&sig, body, now(), ALEXA_APP_ID)).unwrap();
    }

    /// A template that does not escape slot values is refused when the skill loads (so
    /// `ssml_slot` only meets escaping templates), and the escaping one speaks `</speak>`
    /// as text.
    #[test]
    fn slot_text_is_spoken_not_parsed() {
        let unsafe_skill = SLOT_SKILL.replace("{{ slots.thing }}.'", "{{ slots.thing | safe }}.'");
        assert_ne!(unsafe_skill, SLOT_SKILL);
        let refused = Skill::parse("fuzz", &unsafe_skill, Path::new("skill.yaml"));
        assert!(matches!(
            refused,
            Err(crate::route::skills::SkillError::Template { .. })
        ));
        let slots: Map<String, Value> = [("thing".to_owned(), Value::from("</speak>"))]
            .into_iter()
            .collect();
        let skill = &slot_skills()[0];
        let ctx = skill.context(Some("EchoIntent"), None, &slots, &Map::new(), &Map::new());
        let doc = skill.templates.speech("EchoIntent/speech", &ctx).unwrap();
        assert_eq!(ssml::to_plain_text(&doc), "You said </speak>.");
        ssml_slot(b"</speak>");
    }

    /// Writes the `alexa_cert_chain` seeds: the test PKI's chains (good, expired, not yet
    /// valid, wrong SAN, untrusted root) and its root. Run by hand:
    /// `cargo test --lib fuzzing::tests::write_cert_chain_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_cert_chain_seeds() {
        let pki = Pki::for_time(now());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/alexa_cert_chain");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, pem) in [
            ("good", &pki.good_chain),
            ("expired", &pki.expired_chain),
            ("future", &pki.future_chain),
            ("no-san", &pki.no_san_chain),
            ("rogue", &pki.rogue_chain),
            ("root", &pki.root_pem),
        ] {
            std::fs::write(dir.join(format!("{name}.pem")), pem).unwrap();
        }
    }
}
