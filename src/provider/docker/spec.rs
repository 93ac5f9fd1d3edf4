//! Mapping a deployment onto a container: a [`FunctionDeployment`] comes in, the
//! engine's container-create body goes out (image, environment for the watchdog, labels,
//! limits, secrets mount, read-only root, dropped privileges, tmpfs `/tmp`, and port 8080
//! published on 127.0.0.1 at a port the engine picks).

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
    PortBinding,
};
use sha2::{Digest, Sha256};

use crate::function::{FunctionDeployment, Mode};
use crate::provider::process::ENV_SECRETS_DIR;
use crate::watchdog::{
    DEFAULT_PORT, ENV_EXEC_TIMEOUT, ENV_FPROCESS, ENV_MAX_INFLIGHT, ENV_MODE, SECRETS_DIR,
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
/// The watchdog's port inside the container, as the engine names it.
pub const WATCHDOG_PORT: &str = "8080/tcp";

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
/// `secrets_dir` when the function names any.
pub fn template(
    spec: &FunctionDeployment,
    image: &str,
    image_user: &str,
    instance: &str,
    network: &str,
    secrets_dir: &Path,
) -> Result<Template, String> {
    let env = environment(spec)?;
    let labels = labels(spec, instance);
    let (memory, nano_cpus) = limits(spec)?;

    let mounts = (!spec.secrets.is_empty()).then(|| {
        vec![Mount {
            target: Some(SECRETS_DIR.into()),
            source: Some(secrets_dir.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        }]
    });
    let host_config = HostConfig {
        port_bindings: Some(HashMap::from([(
            WATCHDOG_PORT.to_owned(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
        )])),
        memory,
        // No swap beyond the memory limit, so the limit is what the function gets.
        memory_swap: memory,
        nano_cpus,
        readonly_rootfs: Some(spec.read_only_root_filesystem),
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
        mounts,
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
        let t = template(
            &spec,
            "hark/echo:latest",
            "",
            "inst",
            "net",
            Path::new("/s"),
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
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let mount = &host.mounts.as_ref().unwrap()[0];
        assert_eq!(mount.target.as_deref(), Some(SECRETS_DIR));
        assert_eq!(mount.read_only, Some(true));
        // The same deployment hashes the same; a changed one differently.
        let again = template(
            &spec,
            "hark/echo:latest",
            "",
            "inst",
            "net",
            Path::new("/s"),
        )
        .unwrap();
        assert_eq!(again.hash, t.hash);
        let other = template(&spec, "hark/echo:v2", "", "inst", "net", Path::new("/s")).unwrap();
        assert_ne!(other.hash, t.hash);
    }
}
