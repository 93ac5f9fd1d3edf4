//! Mapping a deployment onto a container: a [`FunctionDeployment`] comes in, the
//! engine's container-create body goes out (image, environment for the watchdog, labels,
//! limits (memory, CPU, processes), secrets and credential mounts, a read-only root
//! unless the function opts out, dropped privileges, tmpfs `/tmp`, and the functions'
//! network; no port is published: the gateway reaches the watchdog at the container's
//! address on that network, with the function's credential).

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
};
use sha2::{Digest, Sha256};

use crate::function::{FunctionDeployment, Mode};
use crate::provider::process::ENV_SECRETS_DIR;
use crate::watchdog::{
    DEFAULT_PORT, ENV_CREDENTIAL_FILE, ENV_EXEC_TIMEOUT, ENV_FPROCESS, ENV_MAX_INFLIGHT, ENV_MODE,
    SECRETS_DIR,
};

/// Label naming the function a container runs.
pub const LABEL_FUNCTION: &str = "com.hark.function";
/// Label naming the Hark instance that created a container; Hark touches no other.
pub const LABEL_INSTANCE: &str = "com.hark.instance";
/// Label holding a hash of the container's settings, to tell whether a container found
/// after a restart still matches its function's deployment.
pub const LABEL_SPEC: &str = "com.hark.spec";
/// The user functions run as when the image names none: `nobody`.
pub const DEFAULT_USER: &str = "65534:65534";
/// Annotation setting the most processes (and threads) a function's container may run.
pub const ANNOTATION_PROCESSES: &str = "hark.limits.processes";
/// Annotation that, set to `"false"`, gives the container a writable root file system.
pub const ANNOTATION_READONLY_ROOT: &str = "hark.readonly_root";
/// The process limit when the function sets none.
pub const DEFAULT_PROCESSES: i64 = 256;
/// Where a container finds its function's credential (see [`crate::watchdog`]).
pub const CREDENTIAL_PATH: &str = "/var/run/hark/credential";

/// The process limit ([`ANNOTATION_PROCESSES`], else [`DEFAULT_PROCESSES`]).
pub fn process_limit(spec: &FunctionDeployment) -> Result<i64, String> {
    match spec.annotations.get(ANNOTATION_PROCESSES) {
        None => Ok(DEFAULT_PROCESSES),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                format!("annotation {ANNOTATION_PROCESSES} {v:?} is not a number from 1 to 1000000")
            }),
    }
}

/// Whether the root file system is read-only: yes unless [`ANNOTATION_READONLY_ROOT`]
/// is `"false"` (OpenFaaS's `readOnlyRootFilesystem: true` asks for what is the default).
pub fn read_only_root(spec: &FunctionDeployment) -> Result<bool, String> {
    match spec
        .annotations
        .get(ANNOTATION_READONLY_ROOT)
        .map(|v| v.trim())
    {
        None | Some("true") => Ok(true),
        Some("false") if spec.read_only_root_filesystem => Err(format!(
            "readOnlyRootFilesystem is true but annotation {ANNOTATION_READONLY_ROOT} is \"false\""
        )),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "annotation {ANNOTATION_READONLY_ROOT} {other:?} is neither \"true\" nor \"false\""
        )),
    }
}

/// The image a function runs when its deployment names none: what `hark build` tags.
pub fn default_image(spec: &FunctionDeployment) -> String {
    if spec.image.trim().is_empty() {
        format!("hark/{}:latest", spec.service)
    } else {
        spec.image.clone()
    }
}

/// Everything needed to create one container of a function.
#[derive(Debug, Clone)]
pub struct Template {
    pub body: ContainerCreateBody,
    /// Hash of `body`, also in its [`LABEL_SPEC`] label.
    pub hash: String,
}

/// Builds the container body for `spec`.
///
/// `image_user` is the `USER` the image declares (empty when none): a function runs as
/// that user, else as [`DEFAULT_USER`]. Secrets are bind-mounted read-only from
/// `secrets_dir` when the function names any; the function's credential file
/// `credential_file` is bind-mounted read-only at [`CREDENTIAL_PATH`].
pub fn template(
    spec: &FunctionDeployment,
    image: &str,
    image_user: &str,
    instance: &str,
    network: &str,
    secrets_dir: &Path,
    credential_file: &Path,
) -> Result<Template, String> {
    let mut env = environment(spec)?;
    env.push(format!("{ENV_CREDENTIAL_FILE}={CREDENTIAL_PATH}"));
    env.sort();
    let labels = labels(spec, instance);
    let (memory, nano_cpus) = limits(spec)?;
    let pids_limit = process_limit(spec)?;
    let read_only = read_only_root(spec)?;

    let mut mounts = vec![Mount {
        target: Some(CREDENTIAL_PATH.into()),
        source: Some(credential_file.display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    }];
    if !spec.secrets.is_empty() {
        mounts.push(Mount {
            target: Some(SECRETS_DIR.into()),
            source: Some(secrets_dir.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let host_config = HostConfig {
        memory,
        // No swap beyond the memory limit, so the limit is what the function gets.
        memory_swap: memory,
        nano_cpus,
        pids_limit: Some(pids_limit),
        readonly_rootfs: Some(read_only),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            "rw,nosuid,nodev,size=64m,mode=1777".to_owned(),
        )])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        privileged: Some(false),
        // A small init reaps the processes fork mode leaves behind and forwards SIGTERM.
        init: Some(true),
        network_mode: Some(network.into()),
        mounts: Some(mounts),
        ..Default::default()
    };
    let user = user(image_user);
    let mut body = ContainerCreateBody {
        image: Some(image.into()),
        env: Some(env),
        labels: Some(labels),
        user: Some(user),
        exposed_ports: Some(vec![format!("{DEFAULT_PORT}/tcp")]),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_owned(),
                EndpointSettings::default(),
            )])),
        }),
        ..Default::default()
    };
    // Everything but the hash label itself.
    let hash = spec_hash(&body);
    if let Some(labels) = body.labels.as_mut() {
        labels.insert(LABEL_SPEC.into(), hash.clone());
    }
    Ok(Template { body, hash })
}

/// The watchdog's environment for `spec` (`fprocess`, `mode`, `exec_timeout`, …) and
/// the function's own variables, sorted.
pub fn environment(spec: &FunctionDeployment) -> Result<Vec<String>, String> {
    let mode = spec.mode().map_err(|e| e.to_string())?;
    let timeout = spec.timeout().map_err(|e| e.to_string())?;
    let mut env: Vec<String> = spec
        .env_vars
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if let Some(fprocess) = super::build::fprocess_in_image(spec) {
        env.push(format!("{ENV_FPROCESS}={fprocess}"));
    }
    let mode = match mode {
        Mode::Fork => "fork",
        Mode::Http => "http",
    };
    env.push(format!("{ENV_MODE}={mode}"));
    env.push(format!("{ENV_EXEC_TIMEOUT}={}ms", timeout.as_millis()));
    if let Some(n) = spec.max_inflight().map_err(|e| e.to_string())? {
        env.push(format!("{ENV_MAX_INFLIGHT}={n}"));
    }
    env.push(format!("{ENV_SECRETS_DIR}={SECRETS_DIR}"));
    env.push(format!("HARK_FUNCTION={}", spec.service));
    env.sort();
    Ok(env)
}

/// A short hash of `value`'s JSON with every object's keys sorted, so that maps (whose
/// iteration order is random, and kept by serde_json's `preserve_order`) hash the same.
pub fn spec_hash<T: serde::Serialize>(value: &T) -> String {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    let canonical = serde_json::to_value(value)
        .map(|v| sorted(v).to_string())
        .unwrap_or_default();
    hex::encode(&Sha256::digest(canonical.as_bytes())[..8])
}

/// The function's labels plus Hark's [`LABEL_FUNCTION`] and [`LABEL_INSTANCE`].
pub fn labels(spec: &FunctionDeployment, instance: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_FUNCTION.into(), spec.service.to_string());
    labels.insert(LABEL_INSTANCE.into(), instance.into());
    labels
}

/// The memory limit in bytes and the CPU limit in billionths of a CPU.
pub fn limits(spec: &FunctionDeployment) -> Result<(Option<i64>, Option<i64>), String> {
    let limits = spec.limits.clone().unwrap_or_default();
    let memory = limits
        .memory
        .as_deref()
        .map(|m| {
            parse_memory(m)
                .ok_or_else(|| format!("limits.memory {m:?} is not a size such as 128Mi or 1G"))
        })
        .transpose()?;
    let nano_cpus = limits
        .cpu
        .as_deref()
        .map(|c| {
            parse_cpu(c).ok_or_else(|| {
                format!("limits.cpu {c:?} is not a number of CPUs such as 0.5 or 500m")
            })
        })
        .transpose()?;
    Ok((memory, nano_cpus))
}

/// The user a function runs as: the image's `USER`, else [`DEFAULT_USER`].
pub fn user(image_user: &str) -> String {
    if image_user.trim().is_empty() {
        DEFAULT_USER.to_owned()
    } else {
        image_user.to_owned()
    }
}

/// `128Mi`, `1Gi`, `128M`, `512k` or a number of bytes.
pub fn parse_memory(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim() {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" | "kb" | "KB" => 1024.0,
        "Mi" | "m" | "mb" | "MB" => 1024.0 * 1024.0,
        "Gi" | "g" | "gb" | "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * factor;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as i64)
}

/// `0.5`, `2` or Kubernetes' `500m`, as billionths of a CPU.
pub fn parse_cpu(s: &str) -> Option<i64> {
    let s = s.trim();
    let cpus: f64 = match s.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => s.parse().ok()?,
    };
    (cpus.is_finite() && cpus > 0.0).then_some((cpus * 1e9) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::Network;

    #[test]
    fn limits_parse_in_openfaas_units() {
        assert_eq!(parse_memory("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("64m"), Some(64 * 1024 * 1024));
        assert_eq!(parse_memory("4096"), Some(4096));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_cpu("0.5"), Some(500_000_000));
        assert_eq!(parse_cpu("250m"), Some(250_000_000));
        assert_eq!(parse_cpu("-1"), None);
    }

    #[test]
    fn a_deployment_becomes_a_locked_down_container() {
        let spec: FunctionDeployment = serde_json::from_value(serde_json::json!({
            "service": "echo",
            "envProcess": "cat",
            "envVars": { "A": "1" },
            "labels": { "team": "x" },
            "secrets": ["key"],
            "annotations": { "hark.timeout": "5s" },
            "limits": { "memory": "64Mi", "cpu": "0.5" },
            "readOnlyRootFilesystem": true,
        }))
        .unwrap();
        let cred = Path::new("/c");
        let t = template(
            &spec,
            "hark/echo:latest",
            "",
            "inst",
            "net",
            Path::new("/s"),
            cred,
        )
        .unwrap();
        let env = t.body.env.as_ref().unwrap();
        for want in ["A=1", "fprocess=cat", "mode=fork", "exec_timeout=5000ms"] {
            assert!(env.contains(&want.to_owned()), "{want} in {env:?}");
        }
        let labels = t.body.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_FUNCTION], "echo");
        assert_eq!(labels[LABEL_INSTANCE], "inst");
        assert_eq!(labels[LABEL_SPEC], t.hash);
        assert_eq!(labels["team"], "x");
        assert_eq!(t.body.user.as_deref(), Some(DEFAULT_USER));
        let host = t.body.host_config.as_ref().unwrap();
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.pids_limit, Some(DEFAULT_PROCESSES));
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let mounts = host.mounts.as_ref().unwrap();
        assert_eq!(mounts[0].target.as_deref(), Some(CREDENTIAL_PATH));
        assert_eq!(mounts[1].target.as_deref(), Some(SECRETS_DIR));
        assert!(mounts.iter().all(|m| m.read_only == Some(true)));
        // The same deployment hashes the same; a changed one differently.
        let again = template(
            &spec,
            "hark/echo:latest",
            "",
            "inst",
            "net",
            Path::new("/s"),
            cred,
        )
        .unwrap();
        assert_eq!(again.hash, t.hash);
        let other = template(
            &spec,
            "hark/echo:v2",
            "",
            "inst",
            "net",
            Path::new("/s"),
            cred,
        )
        .unwrap();
        assert_ne!(other.hash, t.hash);
    }

    #[test]
    fn fences_follow_the_annotations_with_safe_defaults() {
        let spec = |annotations: serde_json::Value| -> FunctionDeployment {
            serde_json::from_value(serde_json::json!({
                "service": "f", "envProcess": "cat", "annotations": annotations,
            }))
            .unwrap()
        };
        let plain = spec(serde_json::json!({}));
        assert_eq!(plain.network().unwrap(), Network::Internal);
        assert_eq!(process_limit(&plain), Ok(DEFAULT_PROCESSES));
        assert_eq!(read_only_root(&plain), Ok(true));
        let open = spec(serde_json::json!({
            "hark.network": "internet", "hark.limits.processes": "32", "hark.readonly_root": "false",
        }));
        assert_eq!(open.network().unwrap(), Network::Internet);
        assert_eq!(process_limit(&open), Ok(32));
        assert_eq!(read_only_root(&open), Ok(false));
        let bad = spec(serde_json::json!({
            "hark.network": "host", "hark.limits.processes": "0", "hark.readonly_root": "no",
        }));
        assert!(bad
            .network()
            .unwrap_err()
            .to_string()
            .contains("hark.network"));
        assert!(process_limit(&bad)
            .unwrap_err()
            .contains("hark.limits.processes"));
        assert!(read_only_root(&bad)
            .unwrap_err()
            .contains("hark.readonly_root"));
    }
}
