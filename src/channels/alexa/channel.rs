//! The Alexa channel as the gateway holds it: the `alexa:` settings of `hark.yml` and the
//! loaded skills come in; one [`AlexaChannel`] (the shared [`Verifier`], the skills by name,
//! the client for progressive responses) goes out, built once at start-up.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::verify::{CertSource, Verifier, VerifierConfig, VerifyError};
use crate::channels::common::{ByteSize, ChannelRoute, Registered, RouteCore, DEFAULT_MAX_BODY};
use crate::egress::EgressPolicy;
use crate::route::skills::Skill;

/// Default number of turns of one skill running at once. Higher than a chat route's
/// ([`crate::channels::common::DEFAULT_MAX_INFLIGHT`]): a refused turn is spoken to the user as the skill failing,
/// and a turn holds its place for the whole of its function's call.
pub const DEFAULT_SKILL_MAX_INFLIGHT: usize = 64;

/// How long a progressive response may take before Hark stops waiting for it.
pub const PROGRESSIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The Alexa API endpoints a request's `context.System.apiEndpoint` may name (North
/// America, Europe, Far East): progressive responses go to no other origin.
/// <https://developer.amazon.com/en-US/docs/alexa/custom-skills/call-alexa-service-apis-from-your-skill.html>
pub const ALEXA_API_ORIGINS: [&str; 3] = [
    "https://api.amazonalexa.com",
    "https://api.eu.amazonalexa.com",
    "https://api.fe.amazonalexa.com",
];

/// The `alexa:` section of `hark.yml`.
///
/// ```yaml
/// alexa:
///   skills: ./skills              # directory of skills/NAME/skill.yaml
///   trust_roots: [./ca.pem]       # extra trusted roots: PEM files or inline PEM
///   use_default_roots: true       # also trust the Mozilla roots (webpki-roots)
///   cert_dir: ./certs             # PEM named like the URL's last segment, used before downloading
///   download_missing: true        # download chains not found in cert_dir
///   allow_sha1_signature: false   # accept the legacy SHA-1 Signature header
///   allow_unverified_skills: false # allow `verify: false` skills on a non-loopback address
///   max_body: 1MiB                # largest request body a skill accepts (413 above)
///   max_inflight: 64              # turns of one skill running at once (429 above)
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlexaSettings {
    #[serde(default)]
    pub skills: Option<PathBuf>,
    #[serde(default)]
    pub trust_roots: Vec<String>,
    #[serde(default = "yes")]
    pub use_default_roots: bool,
    #[serde(default)]
    pub cert_dir: Option<PathBuf>,
    #[serde(default = "yes")]
    pub download_missing: bool,
    #[serde(default)]
    pub allow_sha1_signature: bool,
    #[serde(default)]
    pub allow_unverified_skills: bool,
    /// Largest request body a skill's route accepts (413 above); Amazon's requests are a
    /// few KiB.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// How many turns of one skill run at once (429 above; default
    /// [`DEFAULT_SKILL_MAX_INFLIGHT`]).
    #[serde(default)]
    pub max_inflight: Option<usize>,
}

fn yes() -> bool {
    true
}

impl Default for AlexaSettings {
    fn default() -> Self {
        AlexaSettings {
            skills: None,
            trust_roots: Vec::new(),
            use_default_roots: true,
            cert_dir: None,
            download_missing: true,
            allow_sha1_signature: false,
            allow_unverified_skills: false,
            max_body: None,
            max_inflight: None,
        }
    }
}

/// Why the channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("alexa.trust_roots: {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("alexa: {0}")]
    Verifier(#[from] VerifyError),
    #[error("skill {skill} has `verify: false`, which accepts unsigned requests, and the gateway listens on {bind}, not loopback; remove it, listen on 127.0.0.1, or set alexa.allow_unverified_skills: true")]
    Unverified { skill: String, bind: IpAddr },
    #[error("two skills are named {0}")]
    Duplicate(String),
    #[error("alexa: {0}")]
    Limits(String),
    /// A request's `apiEndpoint` is not one of [`ALEXA_API_ORIGINS`] (the text says why,
    /// without the endpoint's user part).
    #[error("apiEndpoint {0}; only {origins} are called", origins = ALEXA_API_ORIGINS.join(", "))]
    ApiEndpoint(String),
}

impl AlexaSettings {
    /// Makes the relative paths absolute against `base` (the directory of `hark.yml`).
    pub fn resolve(&mut self, base: &Path) {
        let abs = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        self.skills = self.skills.as_ref().map(abs);
        self.cert_dir = self.cert_dir.as_ref().map(abs);
        for root in &mut self.trust_roots {
            if !root.contains("-----BEGIN") && Path::new(root.as_str()).is_relative() {
                *root = base.join(root.as_str()).display().to_string();
            }
        }
    }

    /// The verifier these settings describe.
    pub fn verifier_config(&self) -> Result<VerifierConfig, ChannelError> {
        let mut config = VerifierConfig {
            use_default_roots: self.use_default_roots,
            allow_sha1_signature: self.allow_sha1_signature,
            ..VerifierConfig::default()
        };
        if let Some(dir) = &self.cert_dir {
            config.cert_source = CertSource::Dir {
                dir: dir.clone(),
                download_missing: self.download_missing,
            };
        }
        for root in &self.trust_roots {
            let pem = if root.contains("-----BEGIN") {
                root.as_bytes().to_vec()
            } else {
                std::fs::read(root).map_err(|source| ChannelError::Root {
                    path: PathBuf::from(root),
                    source,
                })?
            };
            config.add_root_pem(&pem)?;
        }
        Ok(config)
    }
}

/// One skill as the route `POST /alexa/{skill}`: the skill, with its limits and counters.
#[derive(Debug)]
pub struct AlexaRoute {
    pub core: RouteCore,
    pub skill: Arc<Skill>,
}

/// The Alexa channel's shared state.
#[derive(Debug)]
pub struct AlexaChannel {
    pub verifier: Verifier,
    /// The skills, each a route of the channel.
    pub routes: BTreeMap<String, Arc<AlexaRoute>>,
    /// Client for progressive responses (`POST {apiEndpoint}/v1/directives`): connects
    /// only to addresses the egress guard allows.
    pub progressive: reqwest::Client,
    /// The origins `apiEndpoint` may name ([`ALEXA_API_ORIGINS`]; tests add a local one).
    api_origins: Vec<url::Origin>,
    /// Woken each time a late answer is stored for a user's next turn, so a phone call
    /// waiting for one (Twilio's redirect) hears it at once.
    pub pending_stored: tokio::sync::Notify,
}

impl AlexaChannel {
    /// A channel serving `skills` with `verifier`, each skill's route taking bodies up to
    /// `max_body` bytes and running `max_inflight` turns at once.
    pub fn new(
        verifier: Verifier,
        skills: Vec<Skill>,
        max_body: usize,
        max_inflight: usize,
    ) -> Result<AlexaChannel, ChannelError> {
        if max_inflight == 0 {
            return Err(ChannelError::Limits(
                "max_inflight must be at least 1".to_owned(),
            ));
        }
        let mut routes = BTreeMap::new();
        for skill in skills {
            let name = skill.name.clone();
            let core = RouteCore::new(
                AlexaRoute::NAME,
                AlexaRoute::TRIGGER,
                &name,
                max_body,
                max_inflight,
            );
            let route = AlexaRoute {
                core,
                skill: Arc::new(skill),
            };
            if routes.insert(name.clone(), Arc::new(route)).is_some() {
                return Err(ChannelError::Duplicate(name));
            }
        }
        let api_origins = ALEXA_API_ORIGINS
            .iter()
            .filter_map(|o| url::Url::parse(o).ok().map(|u| u.origin()))
            .collect();
        Ok(AlexaChannel {
            verifier,
            routes,
            progressive: Arc::new(EgressPolicy::strict()).client(PROGRESSIVE_TIMEOUT),
            api_origins,
            pending_stored: tokio::sync::Notify::new(),
        })
    }

    /// Lets progressive responses also go to `origin` (an `http://127.0.0.1:PORT` fake
    /// of the Alexa API in tests), through a client that may reach loopback.
    #[doc(hidden)]
    pub fn allow_api_origin_for_tests(&mut self, origin: &url::Url) {
        self.api_origins.push(origin.origin());
        if let Ok(policy) = EgressPolicy::allowing(&["127.0.0.0/8", "::1"]) {
            self.progressive = Arc::new(policy).client(PROGRESSIVE_TIMEOUT);
        }
    }

    /// Where the progressive response for a request whose `apiEndpoint` is `endpoint`
    /// goes: `{origin}/v1/directives`, built by URL joining (any path, query or fragment
    /// of `endpoint` is dropped), when `endpoint` is exactly one of the Alexa API origins
    /// (scheme, host and default port; no user or password). Anything else is refused.
    pub fn progressive_url(&self, endpoint: &str) -> Result<url::Url, ChannelError> {
        let refused = |why: &str| ChannelError::ApiEndpoint(why.to_owned());
        let url = url::Url::parse(endpoint).map_err(|_| refused("is not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused("carries a user name or password"));
        }
        if !self.api_origins.contains(&url.origin()) {
            let host = url.host_str().unwrap_or("");
            return Err(refused(&format!(
                "names {}://{host}{}",
                url.scheme(),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            )));
        }
        url.join(super::types::ProgressiveResponse::PATH)
            .map_err(|_| refused("cannot be joined with the directives path"))
    }

    /// The channel `settings` describe, for a gateway listening on `bind`. A skill with
    /// `verify: false` is refused unless `bind` is loopback or the settings force it.
    pub fn from_settings(
        settings: &AlexaSettings,
        skills: Vec<Skill>,
        bind: IpAddr,
    ) -> Result<AlexaChannel, ChannelError> {
        for skill in &skills {
            if !skill.def.verify {
                if !bind.is_loopback() && !settings.allow_unverified_skills {
                    return Err(ChannelError::Unverified {
                        skill: skill.name.clone(),
                        bind,
                    });
                }
                tracing::warn!(channel = "alexa", skill = %skill.name, "skill accepts unsigned requests (verify: false); for development only");
            }
        }
        let verifier = settings.verifier_config()?.build()?;
        AlexaChannel::new(
            verifier,
            skills,
            settings.max_body.map_or(DEFAULT_MAX_BODY, |b| b.0),
            settings.max_inflight.unwrap_or(DEFAULT_SKILL_MAX_INFLIGHT),
        )
    }

    /// A channel with no skills (the gateway without a skills directory, and tests).
    pub fn empty() -> AlexaChannel {
        let verifier = VerifierConfig::default()
            .build()
            .unwrap_or_else(|e| panic!("the default verifier always builds: {e}"));
        AlexaChannel::new(
            verifier,
            Vec::new(),
            DEFAULT_MAX_BODY,
            DEFAULT_SKILL_MAX_INFLIGHT,
        )
        .unwrap_or_else(|e| panic!("an empty channel always builds: {e}"))
    }

    /// The skill served at `/alexa/NAME`.
    pub fn skill(&self, name: &str) -> Option<Arc<Skill>> {
        self.routes.get(name).map(|r| r.skill.clone())
    }

    /// Every skill, by name.
    pub fn skills(&self) -> Vec<Arc<Skill>> {
        self.routes.values().map(|r| r.skill.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unverified() -> Skill {
        Skill::parse(
            "dev",
            "id: x\ninvocation: dev\nverify: false\n",
            Path::new("skill.yaml"),
        )
        .unwrap()
    }

    #[test]
    fn progressive_responses_go_only_to_the_alexa_api() {
        let channel = AlexaChannel::empty();
        for (endpoint, expected) in [
            (
                "https://api.amazonalexa.com",
                "https://api.amazonalexa.com/v1/directives",
            ),
            (
                "https://api.eu.amazonalexa.com/",
                "https://api.eu.amazonalexa.com/v1/directives",
            ),
            (
                "https://API.FE.amazonalexa.com:443/some/path?x=1#f",
                "https://api.fe.amazonalexa.com/v1/directives",
            ),
        ] {
            assert_eq!(
                channel.progressive_url(endpoint).unwrap().as_str(),
                expected
            );
        }
        for endpoint in [
            "http://api.amazonalexa.com",
            "https://api.amazonalexa.com:8443",
            "https://api.amazonalexa.com.evil.com",
            "https://api.amazonalexa.com./",
            "https://evil.com/api.amazonalexa.com",
            "https://evil.com#@api.amazonalexa.com",
            "https://user:pw@api.amazonalexa.com",
            "https://api.amazonalexa.com@169.254.169.254",
            "http://127.0.0.1:8080",
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
            "api.amazonalexa.com",
            "",
        ] {
            let e = channel.progressive_url(endpoint).unwrap_err();
            assert!(matches!(e, ChannelError::ApiEndpoint(_)), "{endpoint}: {e}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[test]
    fn unverified_skills_need_loopback_or_force() {
        let settings = AlexaSettings::default();
        let public: IpAddr = "0.0.0.0".parse().unwrap();
        let err = AlexaChannel::from_settings(&settings, vec![unverified()], public).unwrap_err();
        assert!(matches!(err, ChannelError::Unverified { .. }), "{err}");
        AlexaChannel::from_settings(&settings, vec![unverified()], "127.0.0.1".parse().unwrap())
            .unwrap();
        AlexaChannel::from_settings(&settings, vec![unverified()], "::1".parse().unwrap()).unwrap();
        let forced = AlexaSettings {
            allow_unverified_skills: true,
            ..AlexaSettings::default()
        };
        AlexaChannel::from_settings(&forced, vec![unverified()], public).unwrap();
    }

    #[test]
    fn settings_resolve_paths_against_the_stack_file() {
        let mut s: AlexaSettings = serde_norway::from_str(
            "skills: skills\ncert_dir: /abs/certs\ntrust_roots: [ca.pem, \"-----BEGIN CERTIFICATE-----\\n\"]\n",
        )
        .unwrap();
        s.resolve(Path::new("/srv/app"));
        assert_eq!(s.skills.as_deref(), Some(Path::new("/srv/app/skills")));
        assert_eq!(s.cert_dir.as_deref(), Some(Path::new("/abs/certs")));
        assert_eq!(s.trust_roots[0], "/srv/app/ca.pem");
        assert!(s.trust_roots[1].starts_with("-----BEGIN"));
        assert!(s.use_default_roots && s.download_missing && !s.allow_sha1_signature);
    }
}
