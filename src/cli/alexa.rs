//! The Alexa commands: `hark skill export` (the interaction model of a skill), `hark say`
//! (an utterance matched locally, sent to the running gateway, its answer printed) and
//! `hark alexa verify` (the request checks run offline, one line per check).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::Utc;
use reqwest::Method;
use serde_json::Value;

use super::{Gateway, Output};
use crate::channels::alexa::ssml;
use crate::channels::alexa::types::{Card, OutputSpeech, Response};
use crate::channels::alexa::verify::{CertSource, SignatureHeaders, VerifierConfig};
use crate::route::skills::export::interaction_model;
use crate::route::skills::{Skill, DEFAULT_SKILLS_DIR, FALLBACK_INTENT};

#[derive(Debug, clap::Subcommand)]
pub enum SkillCommand {
    /// Print a skill's interaction model JSON (for the Alexa developer console or ask-cli).
    Export {
        /// The skill (its directory under the skills directory).
        name: String,
        /// Directory of skills.
        #[arg(long, env = "HARK_SKILLS", default_value = DEFAULT_SKILLS_DIR)]
        skills: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct SayArgs {
    /// The skill to talk to.
    pub skill: String,
    /// What the user says; empty opens the skill (a LaunchRequest).
    pub utterance: String,
    /// Directory of skills, for matching the utterance locally.
    #[arg(long, env = "HARK_SKILLS", default_value = DEFAULT_SKILLS_DIR)]
    pub skills: PathBuf,
    /// The Alexa userId to send (persistent attributes and late results are per user).
    #[arg(long, default_value = "amzn1.ask.account.hark-say")]
    pub user: String,
    /// Locale of the request (default: the skill's first).
    #[arg(long)]
    pub locale: Option<String>,
    /// Print the SSML too.
    #[arg(long)]
    pub ssml: bool,
    /// Print the card too.
    #[arg(long)]
    pub card: bool,
    /// Print the whole response JSON instead.
    #[arg(long)]
    pub json: bool,
    /// The channel to answer as: `alexa` (the speech), or `twilio` (the TwiML a phone line
    /// of this skill would answer a caller who said the utterance with).
    #[arg(long, value_enum, default_value_t = SayChannel::Alexa)]
    pub channel: SayChannel,
}

/// What `hark say` answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SayChannel {
    Alexa,
    Twilio,
}

#[derive(Debug, clap::Subcommand)]
pub enum AlexaCommand {
    /// Run the request checks on a captured request and print each; exit 0 only if all pass.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("sig").required(true).multiple(true).args(["signature_256", "signature"])))]
pub struct VerifyArgs {
    /// A file holding the raw request body, exactly as received (`-`: standard input).
    #[arg(long)]
    pub body: PathBuf,
    /// The SignatureCertChainUrl header.
    #[arg(long)]
    pub cert_url: String,
    /// The Signature-256 header (base64); checked when given, as the gateway does.
    #[arg(long)]
    pub signature_256: Option<String>,
    /// The legacy SHA-1 Signature header (base64). Amazon sends both headers: give both,
    /// or this one alone to check it (SHA-1 is then turned on for this run).
    #[arg(long)]
    pub signature: Option<String>,
    /// The time to check at (RFC 3339, or unix seconds); default now.
    #[arg(long)]
    pub at: Option<String>,
    /// An extra trusted root (PEM file; repeatable).
    #[arg(long = "root")]
    pub roots: Vec<PathBuf>,
    /// Use this PEM chain instead of downloading the URL.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// The skill's application id (the check is skipped without it).
    #[arg(long)]
    pub app_id: Option<String>,
}

fn load_skill(dir: &Path, name: &str) -> anyhow::Result<Skill> {
    let path = dir.join(name);
    if !path.join(crate::route::skills::SKILL_FILE).is_file() {
        bail!(
            "no skill {name:?}: {} does not exist (set --skills or HARK_SKILLS)",
            path.join(crate::route::skills::SKILL_FILE).display()
        );
    }
    Ok(Skill::load(&path)?)
}

/// `hark skill ...`.
pub async fn skill(command: SkillCommand) -> anyhow::Result<ExitCode> {
    match command {
        SkillCommand::Export { name, skills } => {
            let skill = load_skill(&skills, &name)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&interaction_model(&skill))?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `hark say SKILL UTTERANCE`.
pub async fn say(
    args: SayArgs,
    gateway: &str,
    token: Option<String>,
    data: &Path,
) -> anyhow::Result<ExitCode> {
    let skill = load_skill(&args.skills, &args.skill)?;
    let today = chrono::Local::now().date_naive();
    let (envelope, matched) = crate::channels::alexa::local::envelope(
        &skill,
        &args.utterance,
        &args.user,
        args.locale.as_deref(),
        today,
    );
    match matched {
        Some(m) if m.intent == FALLBACK_INTENT => {
            eprintln!("hark say: no sample utterance matched; sending {FALLBACK_INTENT}");
        }
        Some(m) => {
            let slots: Vec<String> = m
                .slots
                .iter()
                .map(|(k, v)| format!("{k}={:?}", v.value))
                .collect();
            eprintln!("hark say: {} {}", m.intent, slots.join(" "));
        }
        None => {}
    }
    let gw = Gateway::new(gateway, token, data)?;
    let path = format!("/system/skills/{}/say", args.skill);
    let answer = gw
        .expect_ok(gw.request(Method::POST, &path).json(&envelope))
        .await?;
    if let Some(why) = answer
        .headers()
        .get(crate::channels::alexa::HEADER_CALL_ERROR)
        .and_then(|v| v.to_str().ok())
    {
        eprintln!("hark say: the call failed: {why}");
    }
    let deferred = answer
        .headers()
        .contains_key(crate::channels::alexa::HEADER_DEFERRED);
    let answer: Value = answer
        .json()
        .await
        .context("reading the gateway's answer")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let response: Response =
        serde_json::from_value(answer).context("the gateway's answer is not an Alexa response")?;
    if args.channel == SayChannel::Twilio {
        let line = crate::channels::twilio::Line {
            public_url: format!("{}/twilio/ROUTE", gateway.trim_end_matches('/')),
            voice: None,
        };
        let verbs = line.turn(&response, deferred, args.utterance.trim().is_empty(), 0);
        println!("{}", crate::channels::twilio::document(&verbs));
        return Ok(ExitCode::SUCCESS);
    }
    let body = &response.response;
    match &body.output_speech {
        Some(OutputSpeech::Ssml { ssml: doc, .. }) => {
            println!("{}", ssml::to_plain_text(doc));
            if args.ssml {
                println!("ssml: {doc}");
            }
        }
        Some(OutputSpeech::PlainText { text, .. }) => println!("{text}"),
        None => println!("(silence)"),
    }
    if args.ssml {
        if let Some(reprompt) = &body.reprompt {
            if let OutputSpeech::Ssml { ssml: doc, .. } = &reprompt.output_speech {
                println!("reprompt: {doc}");
            }
        }
    }
    if args.card {
        match &body.card {
            Some(Card::Simple { title, content }) => println!("card: {title}\n{content}"),
            Some(Card::Standard { title, text, .. }) => println!("card: {title}\n{text}"),
            Some(other) => println!("card: {}", serde_json::to_string(other)?),
            None => println!("card: (none)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hark alexa ...`.
pub async fn alexa(command: AlexaCommand, output: Output) -> anyhow::Result<ExitCode> {
    let AlexaCommand::Verify(args) = command;
    let body = crate::cli::webhook::read_body(&args.body)?;
    let now = match &args.at {
        Some(at) => crate::clock::parse_start(at)
            .with_context(|| format!("--at {at:?} is neither an RFC 3339 time nor unix seconds"))?,
        None => Utc::now(),
    };
    let mut config = VerifierConfig {
        allow_sha1_signature: args.signature.is_some(),
        ..VerifierConfig::default()
    };
    if args.signature.is_some() && args.signature_256.is_none() {
        eprintln!("note: checking the legacy SHA-1 Signature; the gateway refuses it unless alexa.allow_sha1_signature is set");
    }
    for root in &args.roots {
        let pem =
            std::fs::read(root).with_context(|| format!("reading --root {}", root.display()))?;
        config
            .add_root_pem(&pem)
            .with_context(|| format!("--root {}", root.display()))?;
    }
    if let Some(file) = &args.cert_file {
        config.cert_source = CertSource::File(file.clone());
    }
    let verifier = config.build()?;
    let headers = SignatureHeaders {
        cert_chain_url: Some(args.cert_url.clone()),
        signature_256: args.signature_256.clone(),
        signature_sha1: args.signature.clone(),
    };
    let report = verifier
        .diagnose(&headers, &body, now, args.app_id.as_deref())
        .await;
    let mut report = report;
    report.at = args.at.is_some().then_some(now);
    crate::cli::webhook::print_report(&report, output)?;
    let passed = report.passed();
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
