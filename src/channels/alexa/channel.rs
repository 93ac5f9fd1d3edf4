//! The Alexa channel as the gateway holds it: the `alexa:` settings of `hark.yml` and the
//! loaded skills come in; one [`AlexaChannel`] (the shared [`Verifier`], the skills by name,
//! the client for progressive responses) goes out, built once at start-up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::verify::{CertSource, Verifier, VerifierConfig, VerifyError};
use crate::route::skills::Skill;

/// How long a progressive response may take before Hark stops waiting for it.
pub const PROGRESSIVE_TIMEOUT: Duration = Duration::from_secs(2);

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
/// ```
#[derive(Debug, Clone, Deserialize)]
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

/// The Alexa channel's shared state.
#[derive(Debug)]
pub struct AlexaChannel {
    pub verifier: Verifier,
    skills: HashMap<String, Arc<Skill>>,
    /// Client for progressive responses (`POST {apiEndpoint}/v1/directives`).
    pub progressive: reqwest::Client,
}

impl AlexaChannel {
    /// A channel serving `skills` with `verifier`.
    pub fn new(verifier: Verifier, skills: Vec<Skill>) -> Result<AlexaChannel, ChannelError> {
        let mut by_name = HashMap::new();
        for skill in skills {
            let name = skill.name.clone();
            if by_name.insert(name.clone(), Arc::new(skill)).is_some() {
                return Err(ChannelError::Duplicate(name));
            }
        }
        let progressive = reqwest::Client::builder()
            .timeout(PROGRESSIVE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| VerifyError::Config(format!("HTTP client: {e}")))?;
        Ok(AlexaChannel {
            verifier,
            skills: by_name,
            progressive,
        })
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
        AlexaChannel::new(verifier, skills)
    }

    /// A channel with no skills (the gateway without a skills directory, and tests).
    pub fn empty() -> AlexaChannel {
        let verifier = VerifierConfig::default()
            .build()
            .unwrap_or_else(|e| panic!("the default verifier always builds: {e}"));
        AlexaChannel::new(verifier, Vec::new())
            .unwrap_or_else(|e| panic!("an empty channel always builds: {e}"))
    }

    /// The skill served at `/alexa/NAME`.
    pub fn skill(&self, name: &str) -> Option<Arc<Skill>> {
        self.skills.get(name).cloned()
    }

    /// Every skill, by name.
    pub fn skills(&self) -> Vec<Arc<Skill>> {
        let mut all: Vec<_> = self.skills.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
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
