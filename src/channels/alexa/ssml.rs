//! SSML for Alexa: a builder that turns text and typed tags into a `<speak>` document, a
//! validator that checks any SSML string against Alexa's rules, and a plain-text renderer for
//! cards.
//!
//! Text and attribute values given to the builder are always escaped, so a slot value such as
//! `</speak>` or `&` is spoken, never parsed. Rules follow Amazon's "Speech Synthesis Markup
//! Language (SSML) Reference":
//! <https://developer.amazon.com/en-US/docs/alexa/custom-skills/speech-synthesis-markup-language-ssml-reference.html>

use std::fmt::Write as _;

/// Alexa refuses an `outputSpeech` longer than this many characters (tags included).
pub const MAX_SSML_CHARS: usize = 8000;
/// Alexa plays at most this many `<audio>` tags in one response.
pub const MAX_AUDIO_TAGS: usize = 5;
/// Longest `<break>`: 10 seconds.
pub const MAX_BREAK_MS: u32 = 10_000;
/// Deepest element nesting the parser accepts (real SSML nests a handful of levels).
const MAX_DEPTH: usize = 64;

/// Why a string is not SSML that Alexa accepts. `offset` is a byte offset into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsmlError {
    #[error("SSML is {chars} characters, more than Alexa's {MAX_SSML_CHARS}")]
    TooLong { chars: usize },
    #[error("malformed SSML at byte {offset}: {message}")]
    Syntax { offset: usize, message: String },
    #[error("the root element must be <speak>, found <{found}>")]
    RootNotSpeak { found: String },
    #[error("<speak> may only be the root element (byte {offset})")]
    NestedSpeak { offset: usize },
    #[error("<{tag}> is not an Alexa SSML tag (byte {offset})")]
    UnknownTag { tag: String, offset: usize },
    #[error("<{tag}> has no attribute {attr:?} (byte {offset})")]
    UnknownAttribute {
        tag: String,
        attr: String,
        offset: usize,
    },
    #[error("<{tag}> needs the attribute {attr:?} (byte {offset})")]
    MissingAttribute {
        tag: String,
        attr: &'static str,
        offset: usize,
    },
    #[error("<{tag} {attr}={value:?}> is not allowed: {rule} (byte {offset})")]
    BadAttributeValue {
        tag: String,
        attr: String,
        value: String,
        rule: &'static str,
        offset: usize,
    },
    #[error("<{tag}> must be empty (byte {offset})")]
    NotEmpty { tag: String, offset: usize },
    #[error("{count} <audio> tags, more than Alexa's {MAX_AUDIO_TAGS}")]
    TooManyAudio { count: usize },
}

// ---------------------------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------------------------

/// Escapes text (or an attribute value) for SSML: `& < > " '` become entities, and characters
/// XML 1.0 forbids (most C0 controls, U+FFFE, U+FFFF) become spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push(' '),
        }
    }
    out
}

/// XML 1.0 `Char` production (Rust `char`s are never surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// A piece of speech: text and SSML elements in order. [`Speech::render`] wraps it in
/// `<speak>`. Methods that take inner content accept `&str`/`String` (escaped text) or a
/// nested `Speech`.
///
/// ```text
/// let ssml = Speech::new()
///     .text("You ordered ")
///     .emphasis(EmphasisLevel::Strong, slot_value)
///     .pause(Break::Time { ms: 500 })
///     .whisper("thank you")
///     .render();
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Speech {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Element(Tag, Speech),
}

#[derive(Debug, Clone, PartialEq)]
enum Tag {
    Break(Break),
    Emphasis(EmphasisLevel),
    Prosody(Prosody),
    SayAs(InterpretAs, Option<DateFormat>),
    Phoneme(PhonemeAlphabet, String),
    Sub(String),
    Audio(String),
    P,
    S,
    W(WordRole),
    Lang(String),
    Voice(String),
    Whisper,
    Domain(Domain),
    Emotion(Emotion, Intensity),
}

impl From<&str> for Speech {
    fn from(text: &str) -> Self {
        Speech::new().text(text)
    }
}

impl From<String> for Speech {
    fn from(text: String) -> Self {
        Speech::new().text(text)
    }
}

impl From<&String> for Speech {
    fn from(text: &String) -> Self {
        Speech::new().text(text)
    }
}

impl Speech {
    /// Empty speech.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, tag: Tag, inner: Speech) -> Self {
        self.nodes.push(Node::Element(tag, inner));
        self
    }

    /// Appends text; it is escaped when rendered.
    pub fn text(mut self, text: impl AsRef<str>) -> Self {
        self.nodes.push(Node::Text(text.as_ref().to_owned()));
        self
    }

    /// Appends another piece of speech.
    pub fn append(mut self, other: Speech) -> Self {
        self.nodes.extend(other.nodes);
        self
    }

    /// `<break>`: a pause.
    pub fn pause(self, b: Break) -> Self {
        self.push(Tag::Break(b), Speech::new())
    }

    /// `<emphasis level="...">`.
    pub fn emphasis(self, level: EmphasisLevel, inner: impl Into<Speech>) -> Self {
        self.push(Tag::Emphasis(level), inner.into())
    }

    /// `<prosody rate pitch volume>`.
    pub fn prosody(self, prosody: Prosody, inner: impl Into<Speech>) -> Self {
        self.push(Tag::Prosody(prosody), inner.into())
    }

    /// `<say-as interpret-as="...">`.
    pub fn say_as(self, interpret_as: InterpretAs, text: impl AsRef<str>) -> Self {
        self.push(Tag::SayAs(interpret_as, None), Speech::new().text(text))
    }

    /// `<say-as interpret-as="date" format="...">`.
    pub fn say_date(self, format: DateFormat, text: impl AsRef<str>) -> Self {
        self.push(
            Tag::SayAs(InterpretAs::Date, Some(format)),
            Speech::new().text(text),
        )
    }

    /// `<phoneme alphabet="..." ph="...">`.
    pub fn phoneme(
        self,
        alphabet: PhonemeAlphabet,
        ph: impl Into<String>,
        text: impl AsRef<str>,
    ) -> Self {
        self.push(Tag::Phoneme(alphabet, ph.into()), Speech::new().text(text))
    }

    /// `<sub alias="...">`: say `alias` where `text` is written.
    pub fn sub(self, alias: impl Into<String>, text: impl AsRef<str>) -> Self {
        self.push(Tag::Sub(alias.into()), Speech::new().text(text))
    }

    /// `<audio src="..."/>`: an HTTPS MP3 clip (at most five per response).
    pub fn audio(self, src: impl Into<String>) -> Self {
        self.push(Tag::Audio(src.into()), Speech::new())
    }

    /// `<p>`: a paragraph.
    pub fn paragraph(self, inner: impl Into<Speech>) -> Self {
        self.push(Tag::P, inner.into())
    }

    /// `<s>`: a sentence.
    pub fn sentence(self, inner: impl Into<Speech>) -> Self {
        self.push(Tag::S, inner.into())
    }

    /// `<w role="...">`: pronounce a word as a given part of speech.
    pub fn word(self, role: WordRole, text: impl AsRef<str>) -> Self {
        self.push(Tag::W(role), Speech::new().text(text))
    }

    /// `<lang xml:lang="...">`, with one of [`LANGUAGES`].
    pub fn lang(self, xml_lang: impl Into<String>, inner: impl Into<Speech>) -> Self {
        self.push(Tag::Lang(xml_lang.into()), inner.into())
    }

    /// `<voice name="...">`: an Amazon Polly voice such as `Matthew`.
    pub fn voice(self, name: impl Into<String>, inner: impl Into<Speech>) -> Self {
        self.push(Tag::Voice(name.into()), inner.into())
    }

    /// `<amazon:effect name="whispered">`.
    pub fn whisper(self, inner: impl Into<Speech>) -> Self {
        self.push(Tag::Whisper, inner.into())
    }

    /// `<amazon:domain name="...">`.
    pub fn domain(self, domain: Domain, inner: impl Into<Speech>) -> Self {
        self.push(Tag::Domain(domain), inner.into())
    }

    /// `<amazon:emotion name="..." intensity="...">`.
    pub fn emotion(self, emotion: Emotion, intensity: Intensity, inner: impl Into<Speech>) -> Self {
        self.push(Tag::Emotion(emotion, intensity), inner.into())
    }

    /// True when nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `<speak>` document. Numbers out of Alexa's ranges (break length, prosody
    /// percentages) are clamped; strings are escaped. Free-form values (language, voice,
    /// audio URL) are not checked here: use [`Speech::render_checked`] for that.
    pub fn render(&self) -> String {
        let mut out = String::from("<speak>");
        self.render_into(&mut out);
        out.push_str("</speak>");
        out
    }

    /// [`Speech::render`], then [`validate`].
    pub fn render_checked(&self) -> Result<String, SsmlError> {
        let ssml = self.render();
        validate(&ssml)?;
        Ok(ssml)
    }

    fn render_into(&self, out: &mut String) {
        for node in &self.nodes {
            match node {
                Node::Text(t) => out.push_str(&escape(t)),
                Node::Element(tag, inner) => {
                    let (name, attrs) = tag.name_and_attrs();
                    out.push('<');
                    out.push_str(name);
                    for (k, v) in &attrs {
                        // Writing to a String cannot fail.
                        let _ = write!(out, " {k}=\"{}\"", escape(v));
                    }
                    if matches!(tag, Tag::Break(_) | Tag::Audio(_)) {
                        out.push_str("/>");
                    } else {
                        out.push('>');
                        inner.render_into(out);
                        out.push_str("</");
                        out.push_str(name);
                        out.push('>');
                    }
                }
            }
        }
    }
}

impl Tag {
    fn name_and_attrs(&self) -> (&'static str, Vec<(&'static str, String)>) {
        match self {
            Tag::Break(b) => ("break", vec![b.attr()]),
            Tag::Emphasis(l) => ("emphasis", vec![("level", l.as_str().into())]),
            Tag::Prosody(p) => ("prosody", p.attrs()),
            Tag::SayAs(i, f) => {
                let mut a = vec![("interpret-as", i.as_str().to_owned())];
                if let Some(f) = f {
                    a.push(("format", f.as_str().into()));
                }
                ("say-as", a)
            }
            Tag::Phoneme(al, ph) => (
                "phoneme",
                vec![("alphabet", al.as_str().into()), ("ph", ph.clone())],
            ),
            Tag::Sub(alias) => ("sub", vec![("alias", alias.clone())]),
            Tag::Audio(src) => ("audio", vec![("src", src.clone())]),
            Tag::P => ("p", vec![]),
            Tag::S => ("s", vec![]),
            Tag::W(r) => ("w", vec![("role", r.as_str().into())]),
            Tag::Lang(l) => ("lang", vec![("xml:lang", l.clone())]),
            Tag::Voice(n) => ("voice", vec![("name", n.clone())]),
            Tag::Whisper => ("amazon:effect", vec![("name", "whispered".into())]),
            Tag::Domain(d) => ("amazon:domain", vec![("name", d.as_str().into())]),
            Tag::Emotion(e, i) => (
                "amazon:emotion",
                vec![
                    ("name", e.as_str().into()),
                    ("intensity", i.as_str().into()),
                ],
            ),
        }
    }
}

/// A `<break>`: a length of time or a strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Milliseconds; clamped to [`MAX_BREAK_MS`].
    Time {
        ms: u32,
    },
    Strength(BreakStrength),
}

impl Break {
    fn attr(&self) -> (&'static str, String) {
        match self {
            Break::Time { ms } => ("time", format!("{}ms", (*ms).min(MAX_BREAK_MS))),
            Break::Strength(s) => ("strength", s.as_str().into()),
        }
    }
}

/// Declares a closed set of attribute values with their SSML spelling.
macro_rules! ssml_values {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as written in SSML.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            fn is_valid(s: &str) -> bool {
                Self::ALL.iter().any(|v| v.as_str() == s)
            }
        }
    };
}

ssml_values!(
    /// `<break strength>`.
    BreakStrength { None => "none", XWeak => "x-weak", Weak => "weak", Medium => "medium",
        Strong => "strong", XStrong => "x-strong" }
);
ssml_values!(
    /// `<emphasis level>`.
    EmphasisLevel { Strong => "strong", Moderate => "moderate", Reduced => "reduced" }
);
ssml_values!(
    /// `<say-as interpret-as>`.
    InterpretAs { Characters => "characters", SpellOut => "spell-out", Cardinal => "cardinal",
        Number => "number", Ordinal => "ordinal", Digits => "digits", Fraction => "fraction",
        Unit => "unit", Date => "date", Time => "time", Telephone => "telephone",
        Address => "address", Interjection => "interjection", Expletive => "expletive" }
);
ssml_values!(
    /// `<say-as interpret-as="date" format>`.
    DateFormat { Mdy => "mdy", Dmy => "dmy", Ymd => "ymd", Md => "md", Dm => "dm", Ym => "ym",
        My => "my", D => "d", M => "m", Y => "y" }
);
ssml_values!(
    /// `<phoneme alphabet>`.
    PhonemeAlphabet { Ipa => "ipa", XSampa => "x-sampa" }
);
ssml_values!(
    /// `<w role>`.
    WordRole { Verb => "amazon:VB", PastParticiple => "amazon:VBD", Noun => "amazon:NN",
        Sense1 => "amazon:SENSE_1" }
);
ssml_values!(
    /// `<amazon:domain name>`.
    Domain { Conversational => "conversational", LongForm => "long-form", Music => "music",
        News => "news", Fun => "fun" }
);
ssml_values!(
    /// `<amazon:emotion name>`.
    Emotion { Excited => "excited", Disappointed => "disappointed" }
);
ssml_values!(
    /// `<amazon:emotion intensity>`.
    Intensity { Low => "low", Medium => "medium", High => "high" }
);
ssml_values!(
    /// Named `<prosody rate>` values.
    RateName { XSlow => "x-slow", Slow => "slow", Medium => "medium", Fast => "fast",
        XFast => "x-fast" }
);
ssml_values!(
    /// Named `<prosody pitch>` values.
    PitchName { XLow => "x-low", Low => "low", Medium => "medium", High => "high",
        XHigh => "x-high" }
);
ssml_values!(
    /// Named `<prosody volume>` values.
    VolumeName { Silent => "silent", XSoft => "x-soft", Soft => "soft", Medium => "medium",
        Loud => "loud", XLoud => "x-loud" }
);

/// `<lang xml:lang>` values Alexa supports.
pub const LANGUAGES: &[&str] = &[
    "en-US", "en-GB", "en-IN", "en-AU", "en-CA", "de-DE", "es-ES", "es-MX", "es-US", "hi-IN",
    "it-IT", "ja-JP", "fr-FR", "fr-CA", "pt-BR", "ar-SA",
];

/// `<prosody>` settings; `None` leaves an attribute out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prosody {
    pub rate: Option<Rate>,
    pub pitch: Option<Pitch>,
    pub volume: Option<Volume>,
}

/// `<prosody rate>`: a name or a percentage of normal speed (at least 20 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Named(RateName),
    Percent(u32),
}

/// `<prosody pitch>`: a name or a relative change in percent (-33.3 to +50).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pitch {
    Named(PitchName),
    Percent(f32),
}

/// `<prosody volume>`: a name or a relative change in decibels (at most +4.08).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Volume {
    Named(VolumeName),
    Decibels(f32),
}

impl Prosody {
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut a = Vec::new();
        if let Some(rate) = self.rate {
            a.push((
                "rate",
                match rate {
                    Rate::Named(n) => n.as_str().into(),
                    Rate::Percent(p) => format!("{}%", p.max(20)),
                },
            ));
        }
        if let Some(pitch) = self.pitch {
            a.push((
                "pitch",
                match pitch {
                    Pitch::Named(n) => n.as_str().into(),
                    Pitch::Percent(p) => signed(finite_or_zero(p).clamp(-33.3, 50.0), "%"),
                },
            ));
        }
        if let Some(volume) = self.volume {
            a.push((
                "volume",
                match volume {
                    Volume::Named(n) => n.as_str().into(),
                    Volume::Decibels(d) => signed(finite_or_zero(d).min(4.08), "dB"),
                },
            ));
        }
        a
    }
}

fn finite_or_zero(x: f32) -> f32 {
    if !x.is_finite() {
        return 0.0;
    }
    x
}

/// `+5%`, `-3.5dB`: at most two decimals, always signed.
fn signed(x: f32, unit: &str) -> String {
    let rounded = (x * 100.0).round() / 100.0;
    let sign = if rounded < 0.0 { "-" } else { "+" };
    format!("{sign}{}{unit}", rounded.abs())
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<XNode>,
    offset: usize,
}

#[derive(Debug)]
enum XNode {
    Text(String),
    Element(Element),
}

fn syntax(offset: usize, message: impl Into<String>) -> SsmlError {
    SsmlError::Syntax {
        offset,
        message: message.into(),
    }
}

/// A small XML parser for the subset SSML uses: elements, attributes, text and the five
/// predefined entities plus character references. Comments, CDATA, processing instructions
/// and DOCTYPEs are refused.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), SsmlError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(syntax(self.pos, format!("expected {what}")))
        }
    }

    fn name(&mut self) -> Result<String, SsmlError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || b == b'_'
                || b == b':'
                || (self.pos > start && (b.is_ascii_digit() || b == b'-' || b == b'.'));
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(syntax(start, "expected a name"));
        }
        Ok(self.s[start..self.pos].to_owned())
    }

    fn parse_document(mut self) -> Result<Element, SsmlError> {
        self.skip_ws();
        let mut stack: Vec<Element> = Vec::new();
        let root = loop {
            let Some(b) = self.peek() else {
                return match stack.last() {
                    Some(open) => Err(syntax(self.pos, format!("<{}> is not closed", open.name))),
                    None => Err(syntax(self.pos, "no root element")),
                };
            };
            if b == b'<' {
                let start = self.pos;
                self.pos += 1;
                match self.peek() {
                    Some(b'/') => {
                        self.pos += 1;
                        let name = self.name()?;
                        self.skip_ws();
                        self.expect(b'>', "'>' closing the end tag")?;
                        let Some(el) = stack.pop() else {
                            return Err(syntax(start, format!("</{name}> closes nothing")));
                        };
                        if el.name != name {
                            return Err(syntax(start, format!("</{name}> closes <{}>", el.name)));
                        }
                        match stack.last_mut() {
                            Some(parent) => parent.children.push(XNode::Element(el)),
                            None => break el,
                        }
                    }
                    Some(b'!' | b'?') => {
                        return Err(syntax(
                            start,
                            "comments, CDATA, declarations and processing instructions are not supported",
                        ));
                    }
                    _ => {
                        let (el, self_closing) = self.start_tag(start)?;
                        if self_closing {
                            match stack.last_mut() {
                                Some(parent) => parent.children.push(XNode::Element(el)),
                                None => break el,
                            }
                        } else {
                            if stack.len() >= MAX_DEPTH {
                                return Err(syntax(start, "elements nested too deeply"));
                            }
                            stack.push(el);
                        }
                    }
                }
            } else {
                let start = self.pos;
                let end = self.s[start..]
                    .find('<')
                    .map_or(self.s.len(), |i| start + i);
                self.pos = end;
                let Some(parent) = stack.last_mut() else {
                    return Err(syntax(start, "text outside the root element"));
                };
                let text = unescape(&self.s[start..end], start)?;
                parent.children.push(XNode::Text(text));
            }
        };
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(syntax(self.pos, "content after the root element"));
        }
        Ok(root)
    }

    /// Parses `name attr="v" ... >` or `/>` after the `<` at `start`.
    fn start_tag(&mut self, start: usize) -> Result<(Element, bool), SsmlError> {
        let name = self.name()?;
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            let before_ws = self.pos;
            self.skip_ws();
            match self.peek() {
                Some(b'>') => {
                    self.pos += 1;
                    return Ok((element(name, attrs, start), false));
                }
                Some(b'/') => {
                    self.pos += 1;
                    self.expect(b'>', "'>' after '/'")?;
                    return Ok((element(name, attrs, start), true));
                }
                None => return Err(syntax(self.pos, format!("<{name}> is not finished"))),
                Some(_) if self.pos == before_ws => {
                    return Err(syntax(self.pos, "expected whitespace before an attribute"));
                }
                Some(_) => {
                    let at = self.pos;
                    let key = self.name()?;
                    self.skip_ws();
                    self.expect(b'=', "'=' after the attribute name")?;
                    self.skip_ws();
                    let quote = match self.peek() {
                        Some(q @ (b'"' | b'\'')) => q,
                        _ => return Err(syntax(self.pos, "expected a quoted attribute value")),
                    };
                    self.pos += 1;
                    let vstart = self.pos;
                    let Some(len) = self.s[vstart..].find(quote as char) else {
                        return Err(syntax(vstart, "attribute value is not closed"));
                    };
                    let raw = &self.s[vstart..vstart + len];
                    if let Some(i) = raw.find('<') {
                        return Err(syntax(vstart + i, "'<' in an attribute value"));
                    }
                    let value = unescape(raw, vstart)?;
                    self.pos = vstart + len + 1;
                    if attrs.iter().any(|(k, _)| *k == key) {
                        return Err(syntax(at, format!("attribute {key:?} given twice")));
                    }
                    attrs.push((key, value));
                }
            }
        }
    }
}

fn element(name: String, attrs: Vec<(String, String)>, offset: usize) -> Element {
    Element {
        name,
        attrs,
        children: Vec::new(),
        offset,
    }
}

/// Resolves entity and character references in `raw` (which starts at byte `base`), and
/// refuses characters that XML forbids.
fn unescape(raw: &str, base: usize) -> Result<String, SsmlError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut offset = base;
    while let Some(i) = rest.find('&') {
        push_checked(&mut out, &rest[..i], offset)?;
        let after = &rest[i + 1..];
        let Some(semi) = after.find(';').filter(|&s| s <= 10) else {
            return Err(syntax(
                offset + i,
                "'&' that does not start an entity (write &amp;)",
            ));
        };
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    None
                };
                match code.and_then(char::from_u32).filter(|c| is_xml_char(*c)) {
                    Some(c) => c,
                    None => {
                        return Err(syntax(
                            offset + i,
                            format!("unknown or invalid entity &{entity};"),
                        ));
                    }
                }
            }
        };
        out.push(c);
        let consumed = i + 1 + semi + 1;
        rest = &rest[consumed..];
        offset += consumed;
    }
    push_checked(&mut out, rest, offset)?;
    Ok(out)
}

fn push_checked(out: &mut String, text: &str, offset: usize) -> Result<(), SsmlError> {
    if let Some((i, c)) = text.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        return Err(syntax(
            offset + i,
            format!("character U+{:04X} is not allowed in XML", c as u32),
        ));
    }
    out.push_str(text);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Checks that `ssml` is a `<speak>` document Alexa accepts: well-formed, at most
/// [`MAX_SSML_CHARS`] characters, only Alexa's tags with their allowed attributes and values,
/// at most [`MAX_AUDIO_TAGS`] `<audio>` tags.
pub fn validate(ssml: &str) -> Result<(), SsmlError> {
    let chars = ssml.chars().count();
    if chars > MAX_SSML_CHARS {
        return Err(SsmlError::TooLong { chars });
    }
    let root = Parser { s: ssml, pos: 0 }.parse_document()?;
    if root.name != "speak" {
        return Err(SsmlError::RootNotSpeak { found: root.name });
    }
    let mut audio = 0;
    check_element(&root, true, &mut audio)?;
    if audio > MAX_AUDIO_TAGS {
        return Err(SsmlError::TooManyAudio { count: audio });
    }
    Ok(())
}

fn check_element(el: &Element, is_root: bool, audio: &mut usize) -> Result<(), SsmlError> {
    let tag = el.name.as_str();
    let offset = el.offset;
    // (allowed attributes, required attributes, must be empty)
    let (allowed, required, empty): (&[&str], &[&'static str], bool) = match tag {
        "speak" if !is_root => return Err(SsmlError::NestedSpeak { offset }),
        "speak" | "p" | "s" => (&[], &[], false),
        "break" => (&["strength", "time"], &[], true),
        "audio" => (&["src"], &["src"], true),
        "emphasis" => (&["level"], &[], false),
        "prosody" => (&["rate", "pitch", "volume"], &[], false),
        "say-as" => (&["interpret-as", "format"], &["interpret-as"], false),
        "phoneme" => (&["alphabet", "ph"], &["alphabet", "ph"], false),
        "sub" => (&["alias"], &["alias"], false),
        "w" => (&["role"], &["role"], false),
        "lang" => (&["xml:lang"], &["xml:lang"], false),
        "voice" => (&["name"], &["name"], false),
        "amazon:effect" | "amazon:domain" => (&["name"], &["name"], false),
        "amazon:emotion" => (&["name", "intensity"], &["name", "intensity"], false),
        _ => {
            return Err(SsmlError::UnknownTag {
                tag: tag.to_owned(),
                offset,
            });
        }
    };
    for (key, _) in &el.attrs {
        if !allowed.contains(&key.as_str()) {
            return Err(SsmlError::UnknownAttribute {
                tag: tag.to_owned(),
                attr: key.clone(),
                offset,
            });
        }
    }
    for &attr in required {
        if !el.attrs.iter().any(|(k, _)| k == attr) {
            return Err(SsmlError::MissingAttribute {
                tag: tag.to_owned(),
                attr,
                offset,
            });
        }
    }
    if empty && !el.children.is_empty() {
        return Err(SsmlError::NotEmpty {
            tag: tag.to_owned(),
            offset,
        });
    }
    if tag == "audio" {
        *audio += 1;
    }
    if tag == "break" && el.attrs.len() > 1 {
        return Err(bad(el, "time", "use either strength or time, not both"));
    }
    for (key, value) in &el.attrs {
        if let Err(rule) = check_value(tag, key, value, el) {
            return Err(bad(el, key, rule));
        }
    }
    for child in &el.children {
        if let XNode::Element(c) = child {
            check_element(c, false, audio)?;
        }
    }
    Ok(())
}

fn bad(el: &Element, attr: &str, rule: &'static str) -> SsmlError {
    let value = el
        .attrs
        .iter()
        .find(|(k, _)| k == attr)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    SsmlError::BadAttributeValue {
        tag: el.name.clone(),
        attr: attr.to_owned(),
        value,
        rule,
        offset: el.offset,
    }
}

fn attr<'e>(el: &'e Element, key: &str) -> Option<&'e str> {
    el.attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn check_value(tag: &str, key: &str, v: &str, el: &Element) -> Result<(), &'static str> {
    let ok = |cond: bool, rule: &'static str| if cond { Ok(()) } else { Err(rule) };
    match (tag, key) {
        ("break", "strength") => ok(
            BreakStrength::is_valid(v),
            "strength is none, x-weak, weak, medium, strong or x-strong",
        ),
        ("break", "time") => ok(
            parse_duration_ms(v).is_some_and(|ms| ms <= f64::from(MAX_BREAK_MS)),
            "time is like 500ms or 2s, at most 10s",
        ),
        ("audio", "src") => ok(
            v.len() > "https://".len()
                && v.get(..8)
                    .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
                && !v.chars().any(char::is_whitespace),
            "src is an https URL",
        ),
        ("emphasis", "level") => ok(
            EmphasisLevel::is_valid(v),
            "level is strong, moderate or reduced",
        ),
        ("prosody", "rate") => ok(
            RateName::is_valid(v) || parse_number(v, "%").is_some_and(|p| p >= 20.0),
            "rate is x-slow..x-fast or a percentage of at least 20%",
        ),
        ("prosody", "pitch") => ok(
            PitchName::is_valid(v)
                || parse_signed(v, "%").is_some_and(|p| (-33.3..=50.0).contains(&p)),
            "pitch is x-low..x-high or +n%/-n% between -33.3% and +50%",
        ),
        ("prosody", "volume") => ok(
            VolumeName::is_valid(v) || parse_signed(v, "dB").is_some_and(|d| d <= 4.08),
            "volume is silent..x-loud or +ndB/-ndB up to +4.08dB",
        ),
        ("say-as", "interpret-as") => ok(InterpretAs::is_valid(v), "unknown interpret-as value"),
        ("say-as", "format") => ok(
            DateFormat::is_valid(v) && attr(el, "interpret-as") == Some("date"),
            "format is mdy, dmy, ymd, md, dm, ym, my, d, m or y, with interpret-as=\"date\"",
        ),
        ("phoneme", "alphabet") => ok(PhonemeAlphabet::is_valid(v), "alphabet is ipa or x-sampa"),
        ("phoneme", "ph") => ok(!v.trim().is_empty(), "ph is not empty"),
        ("sub", "alias") => Ok(()),
        ("w", "role") => ok(
            WordRole::is_valid(v),
            "role is amazon:VB, amazon:VBD, amazon:NN or amazon:SENSE_1",
        ),
        ("lang", "xml:lang") => ok(LANGUAGES.contains(&v), "unsupported language"),
        ("voice", "name") => ok(
            !v.is_empty() && v.chars().all(|c| c.is_ascii_alphabetic()),
            "name is an Amazon Polly voice name such as Matthew",
        ),
        ("amazon:effect", "name") => ok(v == "whispered", "the only effect is whispered"),
        ("amazon:domain", "name") => ok(
            Domain::is_valid(v),
            "name is conversational, long-form, music, news or fun",
        ),
        ("amazon:emotion", "name") => ok(Emotion::is_valid(v), "name is excited or disappointed"),
        ("amazon:emotion", "intensity") => {
            ok(Intensity::is_valid(v), "intensity is low, medium or high")
        }
        _ => Err("unexpected attribute"),
    }
}

/// `"500ms"` -> 500, `"2.5s"` -> 2500.
fn parse_duration_ms(v: &str) -> Option<f64> {
    if let Some(ms) = parse_number(v, "ms") {
        Some(ms)
    } else {
        parse_number(v, "s").map(|s| s * 1000.0)
    }
}

/// An unsigned decimal number followed by `unit`: `"20%"`, `"1.5s"`.
fn parse_number(v: &str, unit: &str) -> Option<f64> {
    let num = v.strip_suffix(unit)?;
    let valid = !num.is_empty()
        && !num.starts_with('.')
        && !num.ends_with('.')
        && num.chars().all(|c| c.is_ascii_digit() || c == '.')
        && num.matches('.').count() <= 1;
    valid.then(|| num.parse().ok()).flatten()
}

/// A number with a mandatory sign followed by `unit`: `"+5%"`, `"-2.5dB"`.
fn parse_signed(v: &str, unit: &str) -> Option<f64> {
    if let Some(rest) = v.strip_prefix('+') {
        parse_number(rest, unit)
    } else {
        v.strip_prefix('-')
            .and_then(|rest| parse_number(rest, unit))
            .map(|x| -x)
    }
}

// ---------------------------------------------------------------------------------------------
// Plain text
// ---------------------------------------------------------------------------------------------

/// The written text of an SSML document, for a card: tags removed, entities resolved,
/// paragraphs on their own lines, `<audio>` dropped. Input that does not parse is stripped of
/// anything between `<` and `>` instead.
pub fn to_plain_text(ssml: &str) -> String {
    let mut out = String::new();
    match (Parser { s: ssml, pos: 0 }).parse_document() {
        Ok(root) => plain_into(&root, &mut out),
        Err(_) => lenient_plain(ssml, &mut out),
    }
    out.trim().to_owned()
}

fn plain_into(el: &Element, out: &mut String) {
    let separator = match el.name.as_str() {
        "p" => Some('\n'),
        "s" | "break" => Some(' '),
        _ => None,
    };
    if el.name == "audio" {
        return;
    }
    if let Some(sep) = separator {
        separate(out, sep);
    }
    if let Some(words) = spoken_date(el) {
        out.push_str(&words);
        return;
    }
    for child in &el.children {
        match child {
            XNode::Text(t) => out.push_str(t),
            XNode::Element(c) => plain_into(c, out),
        }
    }
    if let Some(sep) = separator {
        separate(out, sep);
    }
}

/// The elements TwiML's `<Say>` takes inside its text with Amazon Polly and Google voices,
/// each with the attributes it takes
/// (<https://www.twilio.com/docs/voice/twiml/say/text-speech#ssml-tags>).
const TWIML_ELEMENTS: [(&str, &[&str]); 10] = [
    ("break", &["strength", "time"]),
    ("emphasis", &["level"]),
    ("lang", &["xml:lang"]),
    ("p", &[]),
    ("phoneme", &["alphabet", "ph"]),
    ("prosody", &["rate", "pitch", "volume"]),
    ("s", &[]),
    ("say-as", &["interpret-as", "format"]),
    ("sub", &["alias"]),
    ("w", &["role"]),
];

/// The attributes TwiML takes of element `el`, or `None` when `<Say>` does not take the
/// element (Alexa's `say-as interpret-as="interjection"` included: Polly has no such).
fn twiml_attributes(el: &Element) -> Option<&'static [&'static str]> {
    let (_, attrs) = TWIML_ELEMENTS.iter().find(|(name, _)| *name == el.name)?;
    if el.name == "say-as" && attr(el, "interpret-as") == Some("interjection") {
        return None;
    }
    Some(attrs)
}

/// `ssml` reduced to what TwiML's `<Say>` takes, escaped and ready to sit inside it: the
/// content of `<speak>`, with the elements of [`TWIML_ELEMENTS`] and the attributes each
/// takes kept, `<audio>` dropped, and any other element (`amazon:emotion`, `voice`...)
/// replaced by its content. A document that does not parse gives its plain words.
pub fn to_twiml(ssml: &str) -> String {
    match (Parser { s: ssml, pos: 0 }).parse_document() {
        Ok(root) => {
            let mut out = String::new();
            for child in &root.children {
                twiml_into(child, &mut out);
            }
            out.trim().to_owned()
        }
        Err(_) => escape(&to_plain_text(ssml)),
    }
}

fn twiml_into(node: &XNode, out: &mut String) {
    match node {
        XNode::Text(text) => out.push_str(&escape(text)),
        XNode::Element(el) if el.name == "audio" => {}
        XNode::Element(el) => match twiml_attributes(el) {
            Some(kept) => {
                out.push('<');
                out.push_str(&el.name);
                for (key, value) in el.attrs.iter().filter(|(k, _)| kept.contains(&k.as_str())) {
                    let _ = write!(out, " {key}=\"{}\"", escape(value));
                }
                if el.children.is_empty() {
                    out.push_str("/>");
                    return;
                }
                out.push('>');
                for child in &el.children {
                    twiml_into(child, out);
                }
                let _ = write!(out, "</{}>", el.name);
            }
            None => {
                for child in &el.children {
                    twiml_into(child, out);
                }
            }
        },
    }
}

/// The written form of `<say-as interpret-as="date">` with Alexa's `YYYYMMDD` text, where `?`
/// stands for an unknown part: `????1204` reads "4th of December", `20261204` "4th of December
/// 2026", `202612??` "December 2026". Other dates (with a `format`) are written as they are.
fn spoken_date(el: &Element) -> Option<String> {
    let attr = |name: &str| {
        el.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if el.name != "say-as" || attr("interpret-as") != Some("date") || attr("format").is_some() {
        return None;
    }
    let [XNode::Text(text)] = el.children.as_slice() else {
        return None;
    };
    let text = text.trim();
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit() || b == b'?') {
        return None;
    }
    let part = |range: std::ops::Range<usize>| -> Option<Option<u32>> {
        let p = &text[range];
        if p.bytes().all(|b| b == b'?') {
            Some(None)
        } else {
            p.parse().ok().map(Some)
        }
    };
    let (year, month, day) = (part(0..4)?, part(4..6)?, part(6..8)?);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS.get(month?.checked_sub(1)? as usize)?;
    let mut words = match day {
        Some(d @ 1..=31) => {
            let suffix = match (d % 10, d / 10) {
                (1, t) if t != 1 => "st",
                (2, t) if t != 1 => "nd",
                (3, t) if t != 1 => "rd",
                _ => "th",
            };
            format!("{d}{suffix} of {month}")
        }
        Some(_) => return None,
        None => (*month).to_owned(),
    };
    if let Some(year) = year {
        words.push_str(&format!(" {year}"));
    }
    Some(words)
}

/// Adds `sep` unless the text so far is empty or already ends in whitespace.
fn separate(out: &mut String, sep: char) {
    let Some(last) = out.chars().last() else {
        return;
    };
    if !last.is_whitespace() {
        out.push(sep);
    } else if sep == '\n' && last != '\n' {
        // A paragraph break wins over a space just written.
        out.pop();
        out.push('\n');
    }
}

fn lenient_plain(ssml: &str, out: &mut String) {
    let mut stripped = String::with_capacity(ssml.len());
    let mut rest = ssml;
    while let Some(i) = rest.find('<') {
        stripped.push_str(&rest[..i]);
        match rest[i..].find('>') {
            Some(j) => rest = &rest[i + j + 1..],
            None => {
                rest = "";
            }
        }
    }
    stripped.push_str(rest);
    for (entity, c) in [
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&apos;", "'"),
        ("&amp;", "&"),
    ] {
        stripped = stripped.replace(entity, c);
    }
    out.push_str(&stripped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_keeps_what_say_takes_and_drops_the_rest() {
        let doc = "<speak>Hi <break time=\"1s\"/><emphasis level=\"strong\">Ada</emphasis>, \
                   <amazon:emotion name=\"excited\" intensity=\"low\">booked</amazon:emotion> \
                   <audio src=\"https://x.example/a.mp3\"/><say-as interpret-as=\"digits\">42</say-as> \
                   a &amp; b &lt; c</speak>";
        assert_eq!(
            to_twiml(doc),
            "Hi <break time=\"1s\"/><emphasis level=\"strong\">Ada</emphasis>, booked \
             <say-as interpret-as=\"digits\">42</say-as> a &amp; b &lt; c"
        );
        assert_eq!(to_twiml("<speak>not closed & <b"), "not closed &amp;");
        let alexa_only = "<speak><say-as interpret-as=\"interjection\">boom</say-as> \
                          <prosody rate=\"slow\" amazon:max-duration=\"2s\">there</prosody></speak>";
        assert_eq!(
            to_twiml(alexa_only),
            "boom <prosody rate=\"slow\">there</prosody>"
        );
    }
    use proptest::prelude::*;

    fn err(ssml: &str) -> SsmlError {
        validate(ssml).expect_err(ssml)
    }

    #[test]
    fn user_text_that_looks_like_markup_is_spoken_not_parsed() {
        let slot_value = r#"</speak> & <audio src="https://evil.example/x.mp3"/> "quoted" it's"#;
        let ssml = Speech::new().text("You said: ").text(slot_value).render();
        assert_eq!(
            ssml,
            "<speak>You said: &lt;/speak&gt; &amp; &lt;audio src=&quot;https://evil.example/x.mp3&quot;/&gt; \
             &quot;quoted&quot; it&apos;s</speak>"
        );
        validate(&ssml).unwrap();
        assert_eq!(to_plain_text(&ssml), format!("You said: {slot_value}"));
        // Also in attribute positions.
        let ssml = Speech::new().sub(slot_value, slot_value).render();
        validate(&ssml).unwrap();
        assert_eq!(to_plain_text(&ssml), slot_value);
    }

    #[test]
    fn characters_xml_forbids_become_spaces() {
        let ssml = Speech::new().text("a\u{1}b\u{FFFE}c\u{0}d\te").render();
        assert_eq!(ssml, "<speak>a b c d\te</speak>");
        validate(&ssml).unwrap();
    }

    #[test]
    fn unescaped_user_text_would_break_the_reply() {
        // What the escaping protects against: the same text pasted raw is refused.
        let raw = "<speak>You said: </speak> & more</speak>";
        assert!(matches!(err(raw), SsmlError::Syntax { .. }));
        assert!(matches!(
            err("<speak>fish & chips</speak>"),
            SsmlError::Syntax { .. }
        ));
    }

    #[test]
    fn builder_renders_every_tag_and_validates() {
        let s = Speech::new()
            .paragraph(Speech::new().sentence("Hello").sentence("there"))
            .pause(Break::Time { ms: 750 })
            .pause(Break::Strength(BreakStrength::XStrong))
            .emphasis(EmphasisLevel::Strong, "really")
            .prosody(
                Prosody {
                    rate: Some(Rate::Percent(150)),
                    pitch: Some(Pitch::Percent(-10.0)),
                    volume: Some(Volume::Decibels(3.0)),
                },
                "loud",
            )
            .prosody(
                Prosody {
                    rate: Some(Rate::Named(RateName::XSlow)),
                    pitch: Some(Pitch::Named(PitchName::High)),
                    volume: Some(Volume::Named(VolumeName::Soft)),
                },
                "soft",
            )
            .say_as(InterpretAs::SpellOut, "abc")
            .say_date(DateFormat::Mdy, "1/2/2024")
            .phoneme(PhonemeAlphabet::Ipa, "pɪˈkɑːn", "pecan")
            .sub("aluminium", "Al")
            .audio("https://example.com/a.mp3")
            .word(WordRole::PastParticiple, "read")
            .lang("fr-FR", "bonjour")
            .voice("Kendra", "hi")
            .whisper("secret")
            .domain(Domain::News, "news")
            .emotion(Emotion::Excited, Intensity::High, "yay");
        let ssml = s.render_checked().unwrap();
        for needle in [
            "<p><s>Hello</s><s>there</s></p>",
            r#"<break time="750ms"/>"#,
            r#"<break strength="x-strong"/>"#,
            r#"<emphasis level="strong">really</emphasis>"#,
            r#"<prosody rate="150%" pitch="-10%" volume="+3dB">loud</prosody>"#,
            r#"<prosody rate="x-slow" pitch="high" volume="soft">soft</prosody>"#,
            r#"<say-as interpret-as="spell-out">abc</say-as>"#,
            r#"<say-as interpret-as="date" format="mdy">1/2/2024</say-as>"#,
            r#"<phoneme alphabet="ipa" ph="pɪˈkɑːn">pecan</phoneme>"#,
            r#"<sub alias="aluminium">Al</sub>"#,
            r#"<audio src="https://example.com/a.mp3"/>"#,
            r#"<w role="amazon:VBD">read</w>"#,
            r#"<lang xml:lang="fr-FR">bonjour</lang>"#,
            r#"<voice name="Kendra">hi</voice>"#,
            r#"<amazon:effect name="whispered">secret</amazon:effect>"#,
            r#"<amazon:domain name="news">news</amazon:domain>"#,
            r#"<amazon:emotion name="excited" intensity="high">yay</amazon:emotion>"#,
        ] {
            assert!(ssml.contains(needle), "{needle} missing from {ssml}");
        }
        assert_eq!(
            to_plain_text(&ssml),
            "Hello there\nreallyloudsoftabc1/2/2024pecanAlreadbonjourhisecretnewsyay"
        );
    }

    #[test]
    fn builder_clamps_numbers_into_alexas_ranges() {
        let ssml = Speech::new()
            .pause(Break::Time { ms: 60_000 })
            .prosody(
                Prosody {
                    rate: Some(Rate::Percent(5)),
                    pitch: Some(Pitch::Percent(f32::NAN)),
                    volume: Some(Volume::Decibels(99.0)),
                },
                "x",
            )
            .prosody(
                Prosody {
                    pitch: Some(Pitch::Percent(-80.0)),
                    ..Prosody::default()
                },
                "y",
            )
            .render_checked()
            .unwrap();
        assert!(ssml.contains(r#"time="10000ms""#), "{ssml}");
        assert!(
            ssml.contains(r#"rate="20%" pitch="+0%" volume="+4.08dB""#),
            "{ssml}"
        );
        assert!(ssml.contains(r#"pitch="-33.3%""#), "{ssml}");
    }

    #[test]
    fn render_checked_refuses_bad_free_form_values() {
        let bad = [
            Speech::new().lang("xx-XX", "a"),
            Speech::new().voice("Bad Name", "a"),
            Speech::new().audio("http://example.com/a.mp3"),
            Speech::new().phoneme(PhonemeAlphabet::Ipa, " ", "a"),
        ];
        for speech in bad {
            let checked = speech.render_checked();
            assert!(checked.is_err(), "{checked:?}");
        }
    }

    #[test]
    fn accepts_valid_documents() {
        for ok in [
            "<speak></speak>",
            "<speak/>",
            "  <speak>Hello</speak>\n",
            "<speak>a<break/>b</speak>",
            r#"<speak><break time="10s"/><break time="10000ms"/><break time="0.5s"/></speak>"#,
            r#"<speak><break strength='none'/></speak>"#,
            r#"<speak><prosody rate="20%">x</prosody><prosody pitch="+50%">x</prosody></speak>"#,
            r#"<speak><prosody pitch="-33.3%" volume="-6dB">x</prosody></speak>"#,
            r#"<speak><prosody volume="+4.08dB">x</prosody></speak>"#,
            r#"<speak><say-as interpret-as="date" format="ymd">2024-01-02</say-as></speak>"#,
            "<speak>1 &lt; 2 &amp;&amp; 3 &gt; 2 &#233; &#xE9; &quot;&apos;</speak>",
            "<speak>a > b</speak>",
            r#"<speak><amazon:domain name="long-form"><amazon:emotion name="disappointed" intensity="low">x</amazon:emotion></amazon:domain></speak>"#,
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_documents_against_alexas_rules() {
        use SsmlError::*;
        type Expect = fn(&SsmlError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("<p>x</p>", |e| matches!(e, RootNotSpeak { .. })),
            ("<speak><speak>x</speak></speak>", |e| {
                matches!(e, NestedSpeak { .. })
            }),
            ("<speak><script>x</script></speak>", |e| {
                matches!(e, UnknownTag { .. })
            }),
            ("<speak><Break/></speak>", |e| {
                matches!(e, UnknownTag { .. })
            }),
            (r#"<speak version="1.1">x</speak>"#, |e| {
                matches!(e, UnknownAttribute { .. })
            }),
            (r#"<speak><break length="1s"/></speak>"#, |e| {
                matches!(e, UnknownAttribute { .. })
            }),
            (r#"<speak><break time="11s"/></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><break time="10001ms"/></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><break time="5"/></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><break time="-1s"/></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><break strength="huge"/></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (
                r#"<speak><break strength="weak" time="1s"/></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (r#"<speak><break time="1s">x</break></speak>"#, |e| {
                matches!(e, NotEmpty { .. })
            }),
            (
                r#"<speak><emphasis level="loud">x</emphasis></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (r#"<speak><prosody rate="19%">x</prosody></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (
                r#"<speak><prosody rate="fastest">x</prosody></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (r#"<speak><prosody pitch="+51%">x</prosody></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><prosody pitch="-34%">x</prosody></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><prosody pitch="10%">x</prosody></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (
                r#"<speak><prosody volume="+5dB">x</prosody></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (r#"<speak><prosody volume="3dB">x</prosody></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><say-as>x</say-as></speak>"#, |e| {
                matches!(e, MissingAttribute { .. })
            }),
            (
                r#"<speak><say-as interpret-as="verbatim">x</say-as></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (
                r#"<speak><say-as interpret-as="cardinal" format="mdy">1</say-as></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (
                r#"<speak><phoneme alphabet="arpabet" ph="x">x</phoneme></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (
                r#"<speak><phoneme alphabet="ipa">x</phoneme></speak>"#,
                |e| matches!(e, MissingAttribute { .. }),
            ),
            (r#"<speak><sub>x</sub></speak>"#, |e| {
                matches!(e, MissingAttribute { .. })
            }),
            (r#"<speak><w role="amazon:XX">x</w></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><lang xml:lang="en-ZZ">x</lang></speak>"#, |e| {
                matches!(e, BadAttributeValue { .. })
            }),
            (r#"<speak><voice>x</voice></speak>"#, |e| {
                matches!(e, MissingAttribute { .. })
            }),
            (
                r#"<speak><amazon:effect name="shouted">x</amazon:effect></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (
                r#"<speak><amazon:domain name="sports">x</amazon:domain></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (
                r#"<speak><amazon:emotion name="angry" intensity="low">x</amazon:emotion></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (
                r#"<speak><amazon:emotion name="excited" intensity="max">x</amazon:emotion></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (
                r#"<speak><amazon:emotion name="excited">x</amazon:emotion></speak>"#,
                |e| matches!(e, MissingAttribute { .. }),
            ),
            (
                r#"<speak><audio src="http://example.com/a.mp3"/></speak>"#,
                |e| matches!(e, BadAttributeValue { .. }),
            ),
            (r#"<speak><audio/></speak>"#, |e| {
                matches!(e, MissingAttribute { .. })
            }),
            // Well-formedness.
            ("", |e| matches!(e, Syntax { .. })),
            ("Hello", |e| matches!(e, Syntax { .. })),
            ("<speak>x", |e| matches!(e, Syntax { .. })),
            ("<speak>x</p></speak>", |e| matches!(e, Syntax { .. })),
            ("<speak>x</speak><speak/>", |e| matches!(e, Syntax { .. })),
            ("<speak>x</speak>tail", |e| matches!(e, Syntax { .. })),
            ("<speak><!-- c --></speak>", |e| matches!(e, Syntax { .. })),
            ("<?xml version=\"1.0\"?><speak/>", |e| {
                matches!(e, Syntax { .. })
            }),
            ("<speak>&nbsp;</speak>", |e| matches!(e, Syntax { .. })),
            ("<speak>&#0;</speak>", |e| matches!(e, Syntax { .. })),
            ("<speak>\u{1}</speak>", |e| matches!(e, Syntax { .. })),
            (r#"<speak><break time="1s" time="2s"/></speak>"#, |e| {
                matches!(e, Syntax { .. })
            }),
            (r#"<speak><break time=1s/></speak>"#, |e| {
                matches!(e, Syntax { .. })
            }),
            (r#"<speak><sub alias="a<b">x</sub></speak>"#, |e| {
                matches!(e, Syntax { .. })
            }),
            (r#"<speak><sub alias="a"alias="b">x</sub></speak>"#, |e| {
                matches!(e, Syntax { .. })
            }),
        ];
        for (ssml, expected) in cases {
            let e = err(ssml);
            assert!(expected(&e), "{ssml}: unexpected {e:?}");
        }
    }

    #[test]
    fn at_most_five_audio_tags() {
        let mut s = Speech::new();
        for i in 0..MAX_AUDIO_TAGS {
            s = s.audio(format!("https://example.com/{i}.mp3"));
        }
        validate(&s.render()).unwrap();
        let s = s.audio("https://example.com/6.mp3");
        assert_eq!(
            validate(&s.render()),
            Err(SsmlError::TooManyAudio { count: 6 })
        );
    }

    #[test]
    fn at_most_8000_characters() {
        let fits = Speech::new().text("é".repeat(MAX_SSML_CHARS - 15)).render();
        assert_eq!(fits.chars().count(), MAX_SSML_CHARS);
        validate(&fits).unwrap();
        let over = Speech::new().text("é".repeat(MAX_SSML_CHARS - 14)).render();
        assert_eq!(
            validate(&over),
            Err(SsmlError::TooLong {
                chars: MAX_SSML_CHARS + 1
            })
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowing() {
        let deep = format!(
            "<speak>{}x{}</speak>",
            "<p>".repeat(5000),
            "</p>".repeat(5000)
        );
        assert!(matches!(err(&deep), SsmlError::TooLong { .. }));
        let deep = format!(
            "<speak>{}x{}</speak>",
            "<s>".repeat(100),
            "</s>".repeat(100)
        );
        assert!(matches!(err(&deep), SsmlError::Syntax { .. }));
        let _ = to_plain_text(&deep);
    }

    #[test]
    fn plain_text_for_cards() {
        assert_eq!(
            to_plain_text(
                "<speak><p>First &amp; best.</p><p>Second<break time='1s'/>part <audio src='https://x.example/a.mp3'/>end</p></speak>"
            ),
            "First & best.\nSecond part end"
        );
        assert_eq!(to_plain_text("not <b>ssml & stuff"), "not ssml & stuff");
        assert_eq!(to_plain_text("<speak>a &lt; b</speak"), "a < b");
    }

    #[test]
    fn dates_are_written_in_words() {
        let date = |text: &str| {
            to_plain_text(&format!(
                r#"<speak>Friday the <say-as interpret-as="date">{text}</say-as>.</speak>"#
            ))
        };
        assert_eq!(date("????1204"), "Friday the 4th of December.");
        assert_eq!(date("20260101"), "Friday the 1st of January 2026.");
        assert_eq!(date("????0222"), "Friday the 22nd of February.");
        assert_eq!(date("????0313"), "Friday the 13th of March.");
        assert_eq!(date("202612??"), "Friday the December 2026.");
        // Not a date Alexa would read: left as written.
        assert_eq!(date("????1304"), "Friday the ????1304.");
        assert_eq!(
            to_plain_text(
                r#"<speak><say-as interpret-as="date" format="dmy">4/12/2026</say-as></speak>"#
            ),
            "4/12/2026"
        );
    }

    fn sanitized(s: &str) -> String {
        s.chars()
            .map(|c| if is_xml_char(c) { c } else { ' ' })
            .collect()
    }

    proptest! {
        #[test]
        fn escaped_text_always_validates(text in any::<String>()) {
            let ssml = Speech::new().text(&text).render();
            prop_assert_eq!(validate(&ssml), Ok(()));
            let expected = sanitized(&text);
            prop_assert_eq!(to_plain_text(&ssml), expected.trim());
        }

        #[test]
        fn text_with_characters_xml_forbids_still_validates(
            chars in prop::collection::vec(
                prop_oneof![
                    any::<char>(),
                    (0u8..0x20).prop_map(char::from),
                    Just('\u{FFFE}'),
                    Just('\u{FFFF}'),
                    Just('<'),
                    Just('&'),
                ],
                0..64,
            )
        ) {
            let text: String = chars.into_iter().collect();
            let ssml = Speech::new().text(&text).render();
            prop_assert_eq!(validate(&ssml), Ok(()));
            let expected = sanitized(&text);
            prop_assert_eq!(to_plain_text(&ssml), expected.trim());
        }

        #[test]
        fn escaped_markup_like_text_always_validates(text in r#"[<>&"'/a-z =;#x0-9]{0,200}"#) {
            let ssml = Speech::new().text("say ").text(&text).render();
            prop_assert_eq!(validate(&ssml), Ok(()));
            let expected = format!("say {text}");
            prop_assert_eq!(to_plain_text(&ssml), expected.trim());
        }

        #[test]
        fn escaped_attribute_values_always_validate(alias in any::<String>(), text in any::<String>()) {
            let ssml = Speech::new().sub(&alias, &text).render();
            prop_assert_eq!(validate(&ssml), Ok(()));
        }

        #[test]
        fn parser_never_panics(input in any::<String>()) {
            let _ = validate(&input);
            let _ = to_plain_text(&input);
            let wrapped = format!("<speak>{input}</speak>");
            let _ = validate(&wrapped);
            let _ = to_plain_text(&wrapped);
        }
    }
}
