//! Mapping a deployment onto a Swarm service: a [`FunctionDeployment`] comes in, the
//! engine's service spec goes out (the same environment, labels, limits, read-only root,
//! dropped capabilities, non-root user and tmpfs `/tmp` as the docker provider's
//! containers; secrets as Swarm secrets at `/var/openfaas/secrets/NAME`; replicas, a
//! restart policy that replaces crashed tasks, a start-first rolling update; the same
//! process limit and read-only root by default; the function's credential as a Swarm
//! secret at [`CREDENTIAL_PATH`], which the watchdog asks every request for; port 8080 of
//! every task published on its node in host mode at a port the engine picks).

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountTmpfsOptions, MountType,
    NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use sha2::{Digest, Sha256};

use crate::function::FunctionDeployment;
use crate::provider::docker::spec::{
    environment, labels, limits, process_limit, read_only_root, user, CREDENTIAL_PATH, LABEL_SPEC,
};
use crate::watchdog::{DEFAULT_PORT, ENV_CREDENTIAL_FILE, SECRETS_DIR};

/// Pause before Swarm replaces a task that ended (nanoseconds).
const RESTART_DELAY_NS: i64 = 200_000_000;
/// Time a stopping task gets after SIGTERM to finish its calls (nanoseconds).
const STOP_GRACE_NS: i64 = 5_000_000_000;
/// How long Swarm watches a new task of an update before it counts as a success.
const UPDATE_MONITOR_NS: i64 = 1_000_000_000;

/// The engine's name of a function's service: unique per Hark instance, at most 63
/// characters (a DNS label).
pub fn service_name(instance: &str, function: &str) -> String {
    let short: String = instance.chars().take(8).collect();
    let mut name = format!("hark-{short}-{function}");
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

/// A Swarm secret's name for one value of one function's secret: a hash, so that a new
/// value is a new secret (Swarm secrets cannot change) and a service update follows.
pub fn secret_name(instance: &str, function: &str, secret: &str, value: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for part in [instance.as_bytes(), function.as_bytes(), secret.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(value);
    format!("hark-{}", hex::encode(&hasher.finalize()[..12]))
}

/// A secret the service mounts: its Swarm id and name, and the file name the function
/// reads.
#[derive(Debug, Clone)]
pub struct SecretRef {
    pub id: String,
    pub swarm_name: String,
    pub file: String,
}

/// A function's service spec and its hash (also in the [`LABEL_SPEC`] labels of the
/// service and its containers).
#[derive(Debug, Clone)]
pub struct ServiceTemplate {
    pub spec: ServiceSpec,
    pub hash: String,
}

/// Builds the service spec for `spec`. `image_user` is the image's `USER` (empty when
/// none); `network` the overlay network's name; `credential` the Swarm secret holding
/// the function's credential.
#[allow(clippy::too_many_arguments)]
pub fn service(
    spec: &FunctionDeployment,
    image: &str,
    image_user: &str,
    instance: &str,
    network: &str,
    secrets: &[SecretRef],
    credential: &SecretRef,
    replicas: u32,
) -> Result<ServiceTemplate, String> {
    let mut env = environment(spec)?;
    env.push(format!("{ENV_CREDENTIAL_FILE}={CREDENTIAL_PATH}"));
    env.sort();
    let mut labels = labels(spec, instance);
    let (memory, nano_cpus) = limits(spec)?;
    let pids = process_limit(spec)?;
    let read_only = read_only_root(spec)?;
    let mount = |s: &SecretRef, path: String| TaskSpecContainerSpecSecrets {
        file: Some(TaskSpecContainerSpecFile {
            name: Some(path),
            uid: Some("0".into()),
            gid: Some("0".into()),
            // Readable whatever user the function runs as.
            mode: Some(0o444),
        }),
        secret_id: Some(s.id.clone()),
        secret_name: Some(s.swarm_name.clone()),
    };
    let secrets = secrets
        .iter()
        .map(|s| mount(s, format!("{SECRETS_DIR}/{}", s.file)))
        .chain([mount(credential, CREDENTIAL_PATH.to_owned())])
        .collect();
    let tmp = Mount {
        target: Some("/tmp".into()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(64 * 1024 * 1024),
            mode: Some(0o1777),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = TaskSpecContainerSpec {
        image: Some(image.into()),
        labels: Some(labels.clone()),
        env: Some(env),
        user: Some(user(image_user)),
        read_only: Some(read_only),
        mounts: Some(vec![tmp]),
        secrets: Some(secrets),
        capability_drop: Some(vec!["ALL".into()]),
        // A small init reaps the processes fork mode leaves behind and forwards SIGTERM.
        init: Some(true),
        stop_grace_period: Some(STOP_GRACE_NS),
        ..Default::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus,
                memory_bytes: memory,
                pids: Some(pids),
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
            delay: Some(RESTART_DELAY_NS),
            ..Default::default()
        }),
        networks: Some(vec![NetworkAttachmentConfig {
            target: Some(network.into()),
            // Other containers on the network reach the function by its own name.
            aliases: Some(vec![spec.service.to_string()]),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut service = ServiceSpec {
        name: Some(service_name(instance, spec.service.as_str())),
        labels: Some(labels.clone()),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(UPDATE_MONITOR_NS),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            // DNS round robin: the name resolves to the tasks' addresses. (The virtual
            // IP mode needs IPVS in the kernel; see the module doc.)
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(DEFAULT_PORT)),
                // No published port: the engine picks one per task.
                published_port: None,
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    };
    // Hash everything but the replica count (scaling is not a new deployment).
    let hash = crate::provider::docker::spec::spec_hash(&service);
    labels.insert(LABEL_SPEC.into(), hash.clone());
    service.labels = Some(labels.clone());
    if let Some(c) = service
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        c.labels = Some(labels);
    }
    set_replicas(&mut service, replicas);
    Ok(ServiceTemplate {
        spec: service,
        hash,
    })
}

/// Sets a service spec's replica count.
pub fn set_replicas(spec: &mut ServiceSpec, replicas: u32) {
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(i64::from(replicas)),
        }),
        ..Default::default()
    });
}

/// The labels a service or container of `function` carries, for a `label=` filter.
pub fn label_filters(instance: &str, function: Option<&str>) -> HashMap<String, Vec<String>> {
    use crate::provider::docker::spec::{LABEL_FUNCTION, LABEL_INSTANCE};
    let mut labels = vec![format!("{LABEL_INSTANCE}={instance}")];
    if let Some(function) = function {
        labels.push(format!("{LABEL_FUNCTION}={function}"));
    }
    HashMap::from([("label".to_owned(), labels)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::docker::spec::{DEFAULT_USER, LABEL_FUNCTION, LABEL_INSTANCE};

    #[test]
    fn a_deployment_becomes_a_locked_down_service() {
        let spec: FunctionDeployment = serde_json::from_value(serde_json::json!({
            "service": "echo",
            "envProcess": "cat",
            "labels": { "team": "x" },
            "secrets": ["key"],
            "limits": { "memory": "64Mi", "cpu": "0.5" },
            "readOnlyRootFilesystem": true,
        }))
        .unwrap();
        let secrets = [SecretRef {
            id: "sid".into(),
            swarm_name: "hark-abc".into(),
            file: "key".into(),
        }];
        let cred = SecretRef {
            id: "cid".into(),
            swarm_name: "hark-cred".into(),
            file: String::new(),
        };
        let t = service(
            &spec,
            "hark/echo:latest",
            "",
            "inst",
            "net",
            &secrets,
            &cred,
            2,
        )
        .unwrap();
        let task = t.spec.task_template.as_ref().unwrap();
        let c = task.container_spec.as_ref().unwrap();
        assert_eq!(t.spec.name.as_deref(), Some("hark-inst-echo"));
        assert_eq!(
            t.spec
                .mode
                .as_ref()
                .unwrap()
                .replicated
                .as_ref()
                .unwrap()
                .replicas,
            Some(2)
        );
        assert!(c.env.as_ref().unwrap().contains(&"fprocess=cat".to_owned()));
        let labels = c.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_FUNCTION], "echo");
        assert_eq!(labels[LABEL_INSTANCE], "inst");
        assert_eq!(labels[LABEL_SPEC], t.hash);
        assert_eq!(labels["team"], "x");
        assert_eq!(c.user.as_deref(), Some(DEFAULT_USER));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.capability_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let file = c.secrets.as_ref().unwrap()[0].file.as_ref().unwrap();
        assert_eq!(file.name.as_deref(), Some("/var/openfaas/secrets/key"));
        let file = c.secrets.as_ref().unwrap()[1].file.as_ref().unwrap();
        assert_eq!(file.name.as_deref(), Some(CREDENTIAL_PATH));
        let env = c.env.as_ref().unwrap();
        assert!(env.contains(&format!("{ENV_CREDENTIAL_FILE}={CREDENTIAL_PATH}")));
        let limits = task.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits.memory_bytes, Some(64 * 1024 * 1024));
        assert_eq!(limits.nano_cpus, Some(500_000_000));
        assert_eq!(
            limits.pids,
            Some(crate::provider::docker::spec::DEFAULT_PROCESSES)
        );
        // Scaling is not a change of deployment; a new secret value is.
        let scaled = service(
            &spec,
            "hark/echo:latest",
            "",
            "inst",
            "net",
            &secrets,
            &cred,
            5,
        )
        .unwrap();
        assert_eq!(scaled.hash, t.hash);
        let rotated = [SecretRef {
            swarm_name: "hark-def".into(),
            ..secrets[0].clone()
        }];
        let other = service(
            &spec,
            "hark/echo:latest",
            "",
            "inst",
            "net",
            &rotated,
            &cred,
            2,
        )
        .unwrap();
        assert_ne!(other.hash, t.hash);
    }

    #[test]
    fn names_stay_within_the_engines_limits() {
        let long = "f".repeat(63);
        assert!(service_name("0123456789abcdef", &long).len() <= 63);
        let a = secret_name("i", "f", "s", b"one");
        assert!(a.len() <= 64 && a.starts_with("hark-"));
        assert_ne!(a, secret_name("i", "f", "s", b"two"));
    }
}
