//! `hark.yml`: the stack file. YAML text comes in, with `${VAR:-default}` substituted
//! from the environment; checked [`FunctionDeployment`]s and warnings about keys Hark
//! does not know go out. It accepts the OpenFaaS `stack.yml` shape so an existing stack
//! file mostly just works, plus Hark's own `channels:` section (Slack, GitHub and webhook
//! routes, checked when `hark up` builds them: see [`crate::channels::common`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::channels::alexa::AlexaSettings;
use crate::channels::ChannelsConfig;
use crate::function::{FunctionDeployment, FunctionName, Resources, ANNOTATION_WORKDIR};

/// Variable Hark sets for substitution when the environment lacks it: the directory of
/// the running `hark` binary, where `cargo build --workspace` also puts the Rust functions.
pub const VAR_BIN_DIR: &str = "HARK_BIN_DIR";

/// Variable naming the gateway the stack is deployed to: `hark up` sets it to where it
/// listens, `hark deploy` to the gateway it deploys to; functions get the same value in
/// their environment (`HARK_GATEWAY_URL`) from the process provider.
pub const VAR_GATEWAY_URL: &str = "HARK_GATEWAY_URL";

/// Why a stack file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
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
    #[error("{path}: function {name:?}: {message}")]
    Function {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// A parsed stack file.
#[derive(Debug, Default)]
pub struct Stack {
    pub gateway: Option<String>,
    /// `provider.name`: the backend `hark up` uses when it is `process`, `docker` or `swarm`
    /// (OpenFaaS files say `openfaas` here, which leaves the choice to `hark up`).
    pub provider: Option<String>,
    pub functions: Vec<FunctionDeployment>,
    /// The `channels:` section: webhook routes to functions.
    pub channels: ChannelsConfig,
    /// Keys that were not understood, and variables that were not set.
    pub warnings: Vec<String>,
    /// The `alexa:` section, its paths made absolute.
    pub alexa: Option<AlexaSettings>,
    /// The `browser:` section: the browser pool behind `/webdriver`.
    pub browser: Option<crate::browser::BrowserConfig>,
    /// Secrets of the `secrets:` section marked `generate: true`.
    pub generated_secrets: Vec<String>,
    /// `store:`: `sqlite`, or the `postgres://` URL of a database several gateways share
    /// (`--store` and `HARK_STORE` win over it).
    pub store: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[schemars(
    deny_unknown_fields,
    title = "hark.yml",
    description = "Hark's stack file: functions, channels, Alexa skills and the browser pool (the OpenFaaS stack.yml shape)"
)]
struct RawStack {
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "Option<serde_json::Value>")]
    version: Option<String>,
    #[serde(default)]
    provider: Option<RawProvider>,
    #[serde(default)]
    functions: BTreeMap<String, RawFunction>,
    #[serde(default)]
    channels: ChannelsConfig,
    alexa: Option<AlexaSettings>,
    browser: Option<crate::browser::BrowserConfig>,
    /// Secrets the stack provides for itself.
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    /// Where durable state lives: `sqlite` (DATA/hark.db, the default) or
    /// `postgres://USER@HOST:PORT/DB`, a database several gateways share. Give a password
    /// through a variable (`postgres://hark:${PGPASSWORD}@db/hark`), not in the file.
    #[serde(default)]
    store: Option<String>,
}

/// A secret of the `secrets:` section.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
struct RawSecret {
    /// `hark up` stores a random value (32 letters and digits) when the secret store has
    /// none and `HARK_SECRET_<NAME>` does not give one; `hark secret update` replaces it.
    #[serde(default)]
    generate: bool,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
struct RawProvider {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
struct RawFunction {
    #[serde(default)]
    #[allow(dead_code)]
    lang: Option<String>,
    #[serde(default)]
    handler: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    fprocess: Option<String>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    environment: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    environment_file: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    limits: Option<Resources>,
    #[serde(default)]
    requests: Option<Resources>,
    #[serde(default)]
    constraints: Vec<String>,
    #[serde(default)]
    readonly_root_filesystem: bool,
    #[serde(default)]
    namespace: Option<String>,
    // Build settings belong to `faas-cli build`; accepted so stack files load unchanged.
    #[serde(default)]
    #[allow(dead_code)]
    skip_build: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "Option<serde_json::Value>")]
    build_args: Option<serde_norway::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "Option<serde_json::Value>")]
    build_options: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
struct EnvironmentFile {
    #[serde(default)]
    environment: BTreeMap<String, serde_norway::Value>,
}

impl Stack {
    /// The JSON Schema of the stack file (`hark schema`), for editors: misspelt keys,
    /// which `hark up` only warns of, are errors there.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(RawStack)).unwrap_or_default()
    }

    /// Reads and checks the stack file at `path`.
    pub fn load(path: &Path) -> Result<Stack, StackError> {
        Stack::load_for(path, None)
    }

    /// Reads and checks the stack file at `path` for the gateway at `gateway_url`, which
    /// `${HARK_GATEWAY_URL}` then names (else the environment's, else the default port's).
    pub fn load_for(path: &Path, gateway_url: Option<&str>) -> Result<Stack, StackError> {
        let text = std::fs::read_to_string(path).map_err(|source| StackError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        })
        .unwrap_or_else(|_| base.to_owned());
        Stack::parse(&text, path, &base, &|name| match gateway_url {
            Some(url) if name == VAR_GATEWAY_URL => Some(url.to_owned()),
            _ => lookup_var(name),
        })
    }

    /// Parses stack-file text; relative paths resolve against `base`, variables through `env`.
    pub fn parse(
        text: &str,
        path: &Path,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Stack, StackError> {
        let mut warnings = Vec::new();
        let text = substitute(text, env, &mut warnings);
        let parse_error = |source| StackError::Parse {
            path: path.to_owned(),
            source,
        };
        let deserializer = serde_norway::Deserializer::from_str(&text);
        let mut unknown = Vec::new();
        let raw: RawStack =
            serde_ignored::deserialize(deserializer, |key| unknown.push(key.to_string()))
                .map_err(parse_error)?;
        warnings.extend(
            unknown
                .into_iter()
                .map(|key| format!("unknown key {key} ignored")),
        );

        let mut functions = Vec::new();
        for (name, f) in raw.functions {
            let function_error = |message: String| StackError::Function {
                path: path.to_owned(),
                name: name.clone(),
                message,
            };
            let service: FunctionName = name
                .parse()
                .map_err(|e: crate::function::InvalidName| function_error(e.to_string()))?;
            let mut env_vars = BTreeMap::new();
            for file in &f.environment_file {
                let file_path = base.join(file);
                let text = std::fs::read_to_string(&file_path).map_err(|e| {
                    function_error(format!("environment_file {}: {e}", file_path.display()))
                })?;
                let parsed: EnvironmentFile = serde_norway::from_str(&text).map_err(|e| {
                    function_error(format!("environment_file {}: {e}", file_path.display()))
                })?;
                env_vars.extend(parsed.environment.into_iter().map(|(k, v)| (k, scalar(v))));
            }
            env_vars.extend(f.environment.into_iter().map(|(k, v)| (k, scalar(v))));
            let mut annotations = f.annotations;
            if let Some(handler) = &f.handler {
                annotations
                    .entry(ANNOTATION_WORKDIR.to_owned())
                    .or_insert_with(|| join_clean(base, handler).display().to_string());
            }
            let spec = FunctionDeployment {
                service,
                image: f.image.unwrap_or_default(),
                namespace: f.namespace,
                env_process: f.fprocess,
                env_vars,
                constraints: f.constraints,
                secrets: f.secrets,
                labels: f.labels,
                annotations,
                limits: f.limits,
                requests: f.requests,
                read_only_root_filesystem: f.readonly_root_filesystem,
            };
            spec.validate().map_err(|e| function_error(e.to_string()))?;
            functions.push(spec);
        }
        let alexa = raw.alexa.map(|mut a| {
            a.resolve(base);
            a
        });
        let (provider, gateway) = match raw.provider {
            Some(p) => (p.name, p.gateway),
            None => (None, None),
        };
        Ok(Stack {
            gateway,
            provider,
            functions,
            channels: raw.channels,
            warnings,
            alexa,
            browser: raw.browser,
            generated_secrets: raw
                .secrets
                .into_iter()
                .filter(|(_, secret)| secret.generate)
                .map(|(name, _)| name)
                .collect(),
            store: raw.store,
        })
    }
}

/// `base/path` without `.` segments (`./functions/echo` → `BASE/functions/echo`).
fn join_clean(base: &Path, path: &str) -> PathBuf {
    let mut joined = base.to_owned();
    for part in Path::new(path).components() {
        match part {
            std::path::Component::CurDir => {}
            other => joined.push(other),
        }
    }
    joined
}

/// A variable from the environment, with Hark's own defaults.
fn lookup_var(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| match name {
        VAR_BIN_DIR => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.display().to_string())),
        VAR_GATEWAY_URL => Some(format!(
            "http://127.0.0.1:{}",
            std::env::var("HARK_PORT").unwrap_or_else(|_| "8080".to_owned())
        )),
        _ => None,
    })
}

/// A YAML scalar as an environment value (`port: 8080` → `"8080"`).
fn scalar(v: serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s,
        serde_norway::Value::Null => String::new(),
        other => serde_norway::to_string(&other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// Replaces `${VAR}` and `${VAR:-default}`, as faas-cli does.
fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            out.push_str(&rest[start..start + 2 + end + 1]);
        } else {
            match env(name)
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_owned))
            {
                Some(value) => out.push_str(&value),
                None => warnings.push(format!("variable {name} is not set; using an empty value")),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "GREETING" => Some("hello".into()),
            _ => None,
        }
    }

    #[test]
    fn openfaas_stack_files_load_with_substitution_and_warnings() {
        let text = r#"
version: 1.0
provider:
  name: openfaas
  gateway: ${GATEWAY:-http://127.0.0.1:8080}
functions:
  echo:
    lang: dockerfile
    handler: ./functions/echo
    fprocess: cat
    environment:
      greeting: ${GREETING}
      port: 8080
      missing: ${NOPE}
    secrets: [api-key]
    labels: { com.openfaas.scale.min: "2" }
    annotations: { hark.mode: fork }
    limits: { memory: 128Mi }
    colour: blue
"#;
        let stack = Stack::parse(text, Path::new("hark.yml"), Path::new("/srv"), &env).unwrap();
        assert_eq!(stack.gateway.as_deref(), Some("http://127.0.0.1:8080"));
        let f = &stack.functions[0];
        assert_eq!(f.service.as_str(), "echo");
        assert_eq!(f.env_process.as_deref(), Some("cat"));
        assert_eq!(f.env_vars["greeting"], "hello");
        assert_eq!(f.env_vars["port"], "8080");
        assert_eq!(f.env_vars["missing"], "");
        assert_eq!(f.annotations[ANNOTATION_WORKDIR], "/srv/functions/echo");
        assert_eq!(f.limits.as_ref().unwrap().memory.as_deref(), Some("128Mi"));
        assert!(
            stack
                .warnings
                .iter()
                .any(|w| w.contains("functions.echo.colour")),
            "{:?}",
            stack.warnings
        );
        assert!(
            stack.warnings.iter().any(|w| w.contains("NOPE")),
            "{:?}",
            stack.warnings
        );
    }

    #[test]
    fn channels_are_read_and_their_unknown_keys_reported() {
        let text = r#"
functions:
  label-issue: { fprocess: cat }
channels:
  slack:
    acme:
      signing_secrets: [slack-signing]
      commands: { /standup: standup }
      response_type: in_channel
      colour: red
  github:
    triage:
      webhook_secrets: [gh-hook]
      app: { id: 12345, private_key: gh-app-key, api: "https://ghe.example/api/v3" }
      events: { issues.opened: label-issue }
      reply: labels
  hooks:
    deploy:
      standard_webhooks_secrets: [deploy-hook]
      function: deploy
      async: true
      max_body: 64KiB
"#;
        let stack = Stack::parse(text, Path::new("hark.yml"), Path::new("/"), &env).unwrap();
        let slack = &stack.channels.slack["acme"];
        assert_eq!(slack.commands["/standup"], "standup");
        let github = &stack.channels.github["triage"];
        assert_eq!(github.app.as_ref().unwrap().id, 12345);
        let hook = &stack.channels.hooks["deploy"];
        assert!(hook.run_async);
        assert_eq!(hook.max_body.unwrap().0, 64 * 1024);
        assert!(
            stack
                .warnings
                .iter()
                .any(|w| w.contains("channels.slack.acme.colour")),
            "{:?}",
            stack.warnings
        );
        // A wrong value is an error naming where it is.
        let bad = "channels:\n  github:\n    t:\n      webhook_secrets: [s]\n      events: {}\n      reply: emoji\n";
        let err = Stack::parse(bad, Path::new("hark.yml"), Path::new("/"), &env).unwrap_err();
        assert!(err.to_string().contains("emoji"), "{err}");
    }

    #[test]
    fn bad_functions_are_refused_with_their_name() {
        let bad_name = "functions:\n  Bad_Name:\n    fprocess: cat\n";
        let err = Stack::parse(bad_name, Path::new("hark.yml"), Path::new("/"), &env).unwrap_err();
        assert!(err.to_string().contains("Bad_Name"), "{err}");
        let bad_mode =
            "functions:\n  f:\n    fprocess: cat\n    annotations: { hark.mode: turbo }\n";
        let err = Stack::parse(bad_mode, Path::new("hark.yml"), Path::new("/"), &env).unwrap_err();
        assert!(err.to_string().contains("turbo"), "{err}");
        assert!(Stack::parse("functions: [", Path::new("hark.yml"), Path::new("/"), &env).is_err());
    }
}
