//! Telling an activation's story: a call's request, its answer and the log lines it
//! wrote come in; a [`Story`] with bodies capped and credentials and the function's own
//! secret values redacted goes out, before anything is kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderMap;

use crate::function::FunctionName;
use crate::provider::{Invocation, LogHub, Logged, Output};
use crate::store::story::{Body, Request, Response, Story};

/// Default cap of each kept body (`hark up --history-max-body`).
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// What replaces a credential or a secret value.
pub const REDACTED: &str = "[redacted]";

/// Secret values shorter than this are not searched for in bodies and log lines: a
/// one-letter "secret" would blank out half a page and protect nothing.
pub const MIN_REDACTED_LEN: usize = 4;

/// Hides credentials and a function's secret values from what is kept of its calls.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// The values given, to carry over to the next set on a rotation.
    values: Vec<Vec<u8>>,
    /// Every form a value is searched for in, longest first.
    forms: Vec<Vec<u8>>,
}

impl Redactor {
    /// Redacts the values in `secrets` in the forms they reach bodies and log lines in:
    /// as they are, without surrounding white space, each line of a multi-line value,
    /// escaped in a JSON string, and form-encoded (forms shorter than
    /// [`MIN_REDACTED_LEN`] are not searched for).
    pub fn new(secrets: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let values: Vec<Vec<u8>> = secrets.into_iter().collect();
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for value in &values {
            let trimmed = value.trim_ascii();
            forms.push(value.clone());
            forms.push(trimmed.to_vec());
            forms.extend(
                trimmed
                    .split(|b| *b == b'\n')
                    .map(|l| l.trim_ascii().to_vec()),
            );
            if let Ok(text) = std::str::from_utf8(trimmed) {
                let json = serde_json::to_string(text).unwrap_or_default();
                if json.len() >= 2 {
                    forms.push(json.as_bytes()[1..json.len() - 1].to_vec());
                }
            }
            forms.push(
                url::form_urlencoded::byte_serialize(trimmed)
                    .collect::<String>()
                    .into_bytes(),
            );
        }
        forms.retain(|f| f.len() >= MIN_REDACTED_LEN);
        // Longest first, so a form that holds another is hidden whole.
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Redactor { values, forms }
    }

    /// This redactor for `secrets`, still hiding the values it hid before: calls that
    /// started before a rotation, and their log lines, may still hold the old ones.
    pub fn rotated(&self, secrets: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let mut values: Vec<Vec<u8>> = secrets.into_iter().collect();
        let current = values.len();
        values.extend(self.values.iter().take(current.max(1) * 4).cloned());
        Redactor::new(values)
    }

    /// The longest form searched for.
    fn longest(&self) -> usize {
        self.forms.first().map_or(0, Vec::len)
    }

    /// `data` with each secret value replaced by [`REDACTED`].
    pub fn bytes(&self, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        for form in &self.forms {
            if out.len() < form.len() {
                continue;
            }
            let finder = memchr::memmem::Finder::new(form);
            if finder.find(&out).is_none() {
                continue;
            }
            let mut replaced = Vec::with_capacity(out.len());
            let mut rest = &out[..];
            while let Some(at) = finder.find(rest) {
                replaced.extend_from_slice(&rest[..at]);
                replaced.extend_from_slice(REDACTED.as_bytes());
                rest = &rest[at + form.len()..];
            }
            replaced.extend_from_slice(rest);
            out = replaced;
        }
        out
    }

    pub fn text(&self, text: &str) -> String {
        if self.forms.is_empty() {
            return text.to_owned();
        }
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    /// Headers as name–value pairs; credentials (by name) and secret values redacted.
    pub fn headers(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                let value = if is_credential(name.as_str()) {
                    REDACTED.to_owned()
                } else {
                    self.text(&String::from_utf8_lossy(value.as_bytes()))
                };
                (name.as_str().to_owned(), value)
            })
            .collect()
    }

    /// A query string with credential parameters and secret values redacted.
    pub fn query(&self, query: &str) -> String {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_credential(&name.to_ascii_lowercase()) => {
                    format!("{name}={REDACTED}")
                }
                _ => self.text(pair),
            })
            .collect();
        pairs.join("&")
    }

    /// The first `max` bytes of `body` (after redaction), as text when it is UTF-8.
    pub fn body(&self, body: &[u8], headers: &HeaderMap, max: usize) -> Body {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Only what can be kept is searched: the first `max` bytes and enough after
        // them to find a value that starts inside them.
        let window = &body[..body.len().min(max.saturating_add(self.longest()))];
        let fields = (window.len() == body.len())
            .then(|| credential_fields(body, content_type.as_deref()))
            .flatten();
        let redacted = self.bytes(fields.as_deref().unwrap_or(window));
        let truncated = redacted.len() > max || window.len() < body.len();
        let mut kept = &redacted[..redacted.len().min(max)];
        let text = match std::str::from_utf8(kept) {
            Ok(text) => Some(text.to_owned()),
            // Cut inside a character: the text up to it.
            Err(e) if truncated && e.error_len().is_none() => {
                kept = &kept[..e.valid_up_to()];
                std::str::from_utf8(kept).ok().map(str::to_owned)
            }
            Err(_) => None,
        };
        Body {
            size: body.len(),
            content_type,
            base64: text
                .is_none()
                .then(|| base64::engine::general_purpose::STANDARD.encode(kept)),
            text,
            truncated,
        }
    }

    /// The story of `call`: its request and `answer`; its log lines come from
    /// [`CallLines::tell`].
    pub fn story(&self, call: &Invocation, answer: Option<&Output>, max_body: usize) -> Story {
        Story {
            request: Request {
                method: call.method.to_string(),
                path: call.path.clone(),
                query: call.query.as_deref().map(|q| self.query(q)),
                headers: self.headers(&call.headers),
                body: self.body(&call.body, &call.headers, max_body),
            },
            response: answer.map(|out| Response {
                status: out.status.as_u16(),
                headers: self.headers(&out.headers),
                body: self.body(&out.body, &out.headers, max_body),
            }),
            logs: Vec::new(),
            logs_by: String::new(),
        }
    }
}

/// Default of how many successful calls of each function keep their story per second
/// (`hark up --history-story-rate`); failed calls always keep theirs.
pub const DEFAULT_STORY_RATE: u32 = 20;

/// Which successful calls keep their story: at most a rate per function and second
/// (a token bucket holding a second's worth), or every one. Telling a story costs a
/// call more than running it through the gateway does (copying and redacting its
/// request and answer, writing them with the record), so under load only a sample of
/// the calls that went well are told; a failed call, a replay and a call from the UI's
/// invoke panel are always told.
#[derive(Debug)]
pub struct StoryRate {
    /// Stories per function and second; `u32::MAX`: every call's.
    per_second: AtomicU32,
    buckets: Mutex<HashMap<FunctionName, (Instant, f64)>>,
}

impl Default for StoryRate {
    fn default() -> Self {
        StoryRate {
            per_second: AtomicU32::new(DEFAULT_STORY_RATE),
            buckets: Default::default(),
        }
    }
}

impl StoryRate {
    /// At most `per_second` successful calls of each function keep their story; `None`:
    /// every call does.
    pub fn set(&self, per_second: Option<u32>) {
        let value = per_second.map_or(u32::MAX, |n| n.min(u32::MAX - 1));
        self.per_second.store(value, Ordering::Relaxed);
    }

    /// Whether a successful call of `name` that ends now keeps its story.
    pub fn allow(&self, name: &FunctionName, now: Instant) -> bool {
        let rate = self.per_second.load(Ordering::Relaxed);
        if rate == u32::MAX {
            return true;
        }
        let rate = f64::from(rate);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(name) {
            return take(bucket, now, rate);
        }
        // A function's first call: its name is cloned only now, into a full bucket.
        take(
            buckets.entry(name.clone()).or_insert((now, rate)),
            now,
            rate,
        )
    }
}

/// Refills a bucket of at most `rate` tokens at `rate` a second up to `now`, and takes a
/// token from it if it holds one.
fn take((at, tokens): &mut (Instant, f64), now: Instant, rate: f64) -> bool {
    *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(rate);
    *at = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

/// `--history-story-rate`: stories per function and second, or `None` for `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerSecond(pub Option<u32>);

/// Parses `--history-story-rate`: a number of stories per function and second, or `all`.
pub fn parse_story_rate(text: &str) -> Result<PerSecond, String> {
    match text.trim() {
        "all" => Ok(PerSecond(None)),
        n => n
            .parse::<u32>()
            .map(|n| PerSecond(Some(n)))
            .map_err(|_| format!("{text:?} is not a number of stories per second or `all`")),
    }
}

/// How long after a call's answer the lines of a process that serves many calls are
/// gathered: the replica writes a line before it answers, but the line comes through a
/// pipe the gateway reads on its own time.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Where a call's log lines are in its function's lines: those pushed after `start`;
/// `end` was the last one pushed when it answered.
pub struct CallLines {
    pub hub: Arc<LogHub>,
    pub name: FunctionName,
    pub call_id: String,
    /// The process that ran the call alone, when it had one.
    pub instance: Option<String>,
    pub start: u64,
    pub end: u64,
    /// Most bytes of line text kept; the lines after are cut, with a mark.
    pub max_bytes: usize,
}

impl CallLines {
    /// Whether the lines are all there at the answer (the call had its own process,
    /// whose output was read to its end), or come a moment later ([`SETTLE`]).
    pub fn complete(&self) -> bool {
        self.instance.is_some()
    }

    /// Puts the call's own lines, redacted, into `story`: those of its own process when
    /// it had one; else those naming its id, when some do; else every line of the
    /// function while it ran (other calls' among them), as `logs_by` says.
    pub fn tell(self, redactor: &Redactor, story: &mut Story) {
        let lines = self.hub.since_mark(&self.name, self.start);
        let (own, by): (Vec<Logged>, &str) = if let Some(instance) = &self.instance {
            let own = lines.into_iter().filter(|l| &l.line.instance == instance);
            (own.collect(), "process")
        } else if lines
            .iter()
            .any(|l| names_call(&l.line.text, &self.call_id))
        {
            let own = lines
                .into_iter()
                .filter(|l| names_call(&l.line.text, &self.call_id));
            (own.collect(), "call id")
        } else {
            let own = lines.into_iter().filter(|l| l.seq <= self.end);
            (own.collect(), "time window")
        };
        let mut kept = 0;
        story.logs = Vec::new();
        for logged in own {
            let mut line = logged.line;
            if kept + line.text.len() > self.max_bytes {
                line.text = format!("…[lines cut: more than {} bytes]", self.max_bytes);
                story.logs.push(line);
                break;
            }
            kept += line.text.len();
            line.text = redactor.text(&line.text);
            story.logs.push(line);
        }
        story.logs_by = by.to_owned();
    }
}

/// How a replay's answer compares with the first call's.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Same status, content type and kept body.
    pub same: bool,
    /// A unified diff of the two answers (status and content type first), empty when
    /// they are the same.
    pub diff: String,
}

/// Compares the answers of `before` and `after`; an error says why they cannot be
/// compared (a call that gave no answer, a body kept only in part).
pub fn difference(before: &Story, after: &Story) -> Result<Difference, String> {
    let (Some(old), Some(new)) = (&before.response, &after.response) else {
        return Err("one of the two calls gave no answer".to_owned());
    };
    if old.body.truncated || new.body.truncated {
        return Err(
            "an answer is kept only in part (--history-max-body), so they are not compared"
                .to_owned(),
        );
    }
    let shown = |r: &Response| {
        let body = match &r.body.text {
            Some(text) => text.clone(),
            None => format!(
                "(binary body, base64) {}",
                r.body.base64.as_deref().unwrap_or("")
            ),
        };
        format!(
            "status {}\ncontent-type {}\n\n{body}",
            r.status,
            r.body.content_type.as_deref().unwrap_or("-")
        )
    };
    let (old, new) = (shown(old), shown(new));
    if old == new {
        return Ok(Difference {
            same: true,
            diff: String::new(),
        });
    }
    let diff = similar::TextDiff::configure()
        .timeout(Duration::from_millis(100))
        .diff_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header("first answer", "replayed answer")
        .to_string();
    Ok(Difference { same: false, diff })
}

/// Whether a header or query parameter of this (lower-case) name carries a credential.
pub fn is_credential(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-csrf-token"
    ) || [
        "signature",
        "token",
        "secret",
        "password",
        "key",
        "auth",
        "pass",
        "pwd",
        "session",
        "jwt",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
        || name.split(['-', '_']).any(|part| part == "sig")
}

/// Whether a field of a JSON or form body carries a credential, by its name: one that
/// ends in `token`, `secret`, `password`, `passwd`, `apikey`, `privatekey`, `signature`,
/// `authorization`, `credentials` or `responseurl` once lower-cased without `-` and `_`.
fn is_credential_field(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "privatekey",
        "signature",
        "authorization",
        "credential",
        "credentials",
        // Slack's response_url: whoever holds it may post to the channel for 30 minutes.
        "responseurl",
    ]
    .iter()
    .any(|end| name.ends_with(end))
}

/// A JSON or form-encoded `body` with the values of its credential fields redacted;
/// `None` when it is neither, or holds none.
fn credential_fields(body: &[u8], content_type: Option<&str>) -> Option<Vec<u8>> {
    let kind = content_type.unwrap_or("").to_ascii_lowercase();
    if kind.contains("json") {
        fn walk(value: &mut serde_json::Value) -> bool {
            match value {
                serde_json::Value::Object(map) => {
                    let mut changed = false;
                    for (key, v) in map.iter_mut() {
                        if is_credential_field(key) && (v.is_string() || v.is_number()) {
                            *v = REDACTED.into();
                            changed = true;
                        } else {
                            changed |= walk(v);
                        }
                    }
                    changed
                }
                serde_json::Value::Array(items) => {
                    // Every item is walked: no short cut once one has changed.
                    let mut changed = false;
                    for item in items {
                        changed |= walk(item);
                    }
                    changed
                }
                _ => false,
            }
        }
        let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
        return walk(&mut value).then(|| serde_json::to_vec(&value).unwrap_or_default());
    }
    if kind.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        if !pairs.iter().any(|(k, _)| is_credential_field(k)) {
            return None;
        }
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            let v = if is_credential_field(k) { REDACTED } else { v };
            out.append_pair(k, v);
        }
        return Some(out.finish().into_bytes());
    }
    None
}

/// Whether `text` names `call_id` as a whole word (not inside a longer id).
fn names_call(text: &str, call_id: &str) -> bool {
    let is_id = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(call_id).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + call_id.len()..].chars().next();
        !before.is_some_and(is_id) && !after.is_some_and(is_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderValue, Method, StatusCode};

    #[test]
    fn a_second_of_stories_is_told_at_once_then_the_rate_refills_per_function() {
        let rate = StoryRate::default();
        rate.set(Some(3));
        let (a, b): (FunctionName, FunctionName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let t = Instant::now();
        let told = |f: &FunctionName, at| (0..10).filter(|_| rate.allow(f, at)).count();
        assert_eq!(told(&a, t), 3, "a burst of a second's worth");
        assert_eq!(told(&b, t), 3, "each function has its own");
        assert_eq!(
            told(&a, t + Duration::from_millis(500)),
            1,
            "1.5 earned, 1 told"
        );
        assert_eq!(
            told(&a, t + Duration::from_secs(60)),
            3,
            "never more than a second's worth"
        );
        rate.set(None);
        assert_eq!(told(&a, t + Duration::from_secs(60)), 10, "all: every call");
        assert_eq!(parse_story_rate("all"), Ok(PerSecond(None)));
        assert_eq!(parse_story_rate("20"), Ok(PerSecond(Some(20))));
        assert!(parse_story_rate("lots").is_err());
    }

    fn call(body: &[u8]) -> Invocation {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
        headers.insert("x-hub-signature-256", HeaderValue::from_static("sha256=00"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("x-note", HeaderValue::from_static("pass hunter22 on"));
        Invocation {
            call_id: "call-1".into(),
            method: Method::POST,
            path: "/".into(),
            query: Some("token=t0k3n&q=hunter22&x=1".into()),
            headers,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn name() -> FunctionName {
        "f".parse().unwrap()
    }

    /// A hub holding `lines` (instance, text) of function `f`, pushed after mark 0.
    fn hub(lines: &[(&str, &str)]) -> Arc<LogHub> {
        let hub = Arc::new(LogHub::default());
        for (instance, text) in lines {
            hub.push(&name(), instance, (*text).to_owned());
        }
        hub
    }

    fn lines_of(hub: &Arc<LogHub>, call_id: &str, instance: Option<&str>, end: u64) -> CallLines {
        CallLines {
            hub: hub.clone(),
            name: name(),
            call_id: call_id.into(),
            instance: instance.map(str::to_owned),
            start: 0,
            end,
            max_bytes: DEFAULT_MAX_BODY,
        }
    }

    fn told(lines: CallLines) -> Story {
        let mut story = Redactor::default().story(&call(b""), None, DEFAULT_MAX_BODY);
        lines.tell(&Redactor::default(), &mut story);
        story
    }

    fn texts(story: &Story) -> Vec<&str> {
        story.logs.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn credentials_and_secret_values_are_redacted_everywhere() {
        let redactor = Redactor::new([b"hunter22".to_vec(), b"ab".to_vec()]);
        let answer = Output {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"your password is hunter22"),
            error: None,
            instance: None,
        };
        let mut story = redactor.story(
            &call(b"login with hunter22, about ab"),
            Some(&answer),
            DEFAULT_MAX_BODY,
        );
        let hub = hub(&[("f-1", "checking hunter22")]);
        lines_of(&hub, "call-1", None, hub.mark()).tell(&redactor, &mut story);
        let json = serde_json::to_string(&story).unwrap();
        assert!(
            !json.contains("hunter22") && !json.contains("Bearer abc"),
            "{json}"
        );
        assert!(
            !json.contains("t0k3n") && !json.contains("sha256=00"),
            "{json}"
        );
        assert_eq!(
            story.request.body.text.as_deref(),
            Some("login with [redacted], about ab"),
            "a secret under four bytes is not searched for"
        );
        assert_eq!(
            story.request.query.as_deref(),
            Some("token=[redacted]&q=[redacted]&x=1")
        );
        assert_eq!(story.logs[0].text, "checking [redacted]");
        assert_eq!(story.logs_by, "time window");
        let note = story.request.headers.iter().find(|(n, _)| n == "x-note");
        assert_eq!(note.unwrap().1, "pass [redacted] on");
    }

    #[test]
    fn secret_values_are_found_in_the_forms_they_travel_in() {
        let pem = b"-----BEGIN KEY-----\nAAAAbbbbCCCC\n-----END KEY-----\n".to_vec();
        let redactor = Redactor::new([b"pa ss\"word1\n".to_vec(), pem]);
        // Without its newline, JSON-escaped, form-encoded, and one line of a PEM value.
        for (text, hidden) in [
            ("key=pa ss\"word1.", "pa ss"),
            (r#"{"v":"pa ss\"word1"}"#, "word1"),
            ("v=pa+ss%22word1&x=1", "word1"),
            ("line: AAAAbbbbCCCC", "AAAAbbbbCCCC"),
        ] {
            let out = redactor.text(text);
            assert!(
                !out.contains(hidden) && out.contains(REDACTED),
                "{text} -> {out}"
            );
        }
        // A rotation keeps hiding the old value too.
        let rotated = redactor.rotated([b"new-value".to_vec()]);
        assert_eq!(
            rotated.text("pa ss\"word1 new-value"),
            "[redacted] [redacted]"
        );
    }

    #[test]
    fn credential_fields_of_json_and_form_bodies_are_redacted_by_name() {
        let redactor = Redactor::default();
        let mut json = HeaderMap::new();
        json.insert("content-type", HeaderValue::from_static("application/json"));
        let body = br#"{"token":"xoxb-1","event":{"apiAccessToken":"a-2","text":"hi","keys_url":"u"},"client_secret":7}"#;
        let kept = redactor.body(body, &json, DEFAULT_MAX_BODY);
        let text = kept.text.unwrap();
        assert!(!text.contains("xoxb-1") && !text.contains("a-2"), "{text}");
        assert!(
            text.contains(r#""text":"hi""#) && text.contains(r#""keys_url":"u""#),
            "{text}"
        );
        assert_eq!(kept.size, body.len());
        let mut form = HeaderMap::new();
        form.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let kept = redactor.body(b"user=ada&password=hunter2", &form, DEFAULT_MAX_BODY);
        assert_eq!(
            kept.text.as_deref(),
            Some("user=ada&password=%5Bredacted%5D")
        );
        assert!(is_credential("x-sig") && is_credential("x-api-key") && !is_credential("x-design"));
    }

    #[test]
    fn a_call_id_is_named_as_a_whole_word() {
        assert!(names_call("start c1 now", "c1"));
        assert!(names_call("(c1)", "c1"));
        assert!(!names_call("start c12", "c1") && !names_call("abc1", "c1"));
    }

    #[test]
    fn bodies_are_cut_at_the_cap_and_binary_ones_kept_as_bytes() {
        let redactor = Redactor::default();
        let big = "é".repeat(1000);
        let body = redactor.body(big.as_bytes(), &HeaderMap::new(), 101);
        assert!(body.truncated);
        assert_eq!(body.size, 2000);
        assert_eq!(
            body.text.as_deref(),
            Some("é".repeat(50).as_str()),
            "cut between characters"
        );
        let png = [0x89, b'P', b'N', b'G', 0xff, 0x00];
        let body = redactor.body(&png, &HeaderMap::new(), 100);
        assert!(!body.truncated && body.text.is_none());
        assert_eq!(body.bytes(), png);
    }

    #[test]
    fn replayed_answers_are_compared_line_by_line() {
        let redactor = Redactor::default();
        let told = |body: &'static [u8], status: StatusCode| {
            let answer = Output {
                status,
                headers: HeaderMap::new(),
                body: Bytes::from_static(body),
                error: None,
                instance: None,
            };
            redactor.story(&call(b""), Some(&answer), DEFAULT_MAX_BODY)
        };
        let first = told(b"one\ntwo\n", StatusCode::OK);
        assert_eq!(
            difference(&first, &told(b"one\ntwo\n", StatusCode::OK)),
            Ok(Difference {
                same: true,
                diff: String::new()
            })
        );
        let changed = difference(&first, &told(b"one\nthree\n", StatusCode::BAD_GATEWAY)).unwrap();
        assert!(!changed.same);
        assert!(
            changed.diff.contains("-status 200") && changed.diff.contains("+status 502"),
            "{}",
            changed.diff
        );
        assert!(
            changed.diff.contains("-two") && changed.diff.contains("+three"),
            "{}",
            changed.diff
        );
        let unanswered = Story {
            response: None,
            ..first.clone()
        };
        assert!(difference(&first, &unanswered).is_err());
    }

    #[test]
    fn a_call_keeps_its_own_lines() {
        let lines = [("f-1", "mine"), ("f-2", "theirs"), ("f-1", "mine too")];
        let forked = told(lines_of(&hub(&lines), "c1", Some("f-1"), 3));
        assert_eq!(
            (texts(&forked), forked.logs_by.as_str()),
            (vec!["mine", "mine too"], "process")
        );

        // A replica serving many calls: the lines naming the call's id, even one that
        // came after its answer.
        let echoed = hub(&[("r", "start c1"), ("r", "start c2"), ("r", "c1 done")]);
        let shared = told(lines_of(&echoed, "c1", None, 2));
        assert_eq!(
            (texts(&shared), shared.logs_by.as_str()),
            (vec!["start c1", "c1 done"], "call id")
        );

        // Lines that name no call: those written while it ran, not after its answer.
        let window = told(lines_of(&hub(&lines), "c9", None, 2));
        assert_eq!(
            (texts(&window), window.logs_by.as_str()),
            (vec!["mine", "theirs"], "time window")
        );
    }
}
