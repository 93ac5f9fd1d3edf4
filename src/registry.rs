//! The function registry: deploy, update, scale and remove requests come in; the store
//! and the provider are brought into agreement and the resulting status goes out. The
//! API, `hark.yml` loading and start-up all deploy through here, so a function is
//! checked the same way whoever deploys it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::auth::{scope, Claims};
use crate::dispatch::Dispatcher;
use crate::error::ApiError;
use crate::function::{FunctionDeployment, FunctionName, FunctionStatus};
use crate::provider::{Deployment, Provider, ProviderError};
use crate::store::{Store, StoredFunction};
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

/// Label giving the replicas a new function starts with (OpenFaaS's name).
pub const LABEL_SCALE_MIN: &str = "com.openfaas.scale.min";

/// Deploys and tracks functions.
#[derive(Clone)]
pub struct Registry {
    pub store: Store,
    pub provider: Arc<dyn Provider>,
    pub dispatcher: Arc<Dispatcher>,
    /// Deployed functions by name, for the invocation path (no store read per call).
    deployed: Arc<RwLock<HashMap<FunctionName, Arc<FunctionDeployment>>>>,
    /// Held while a change goes to the provider and the store, so that following the
    /// store ([`Registry::follow_store`]) never sees one half made. It holds the replica
    /// counts the store gave at the last look, so that only a change made through
    /// another gateway is followed, not this gateway's own scaling (from zero, on a call).
    changing: Arc<tokio::sync::Mutex<HashMap<FunctionName, u32>>>,
}

/// Whether a deploy may create, replace, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployMode {
    /// `POST`: the name must be new (409 otherwise).
    Create,
    /// `PUT`: the name must exist (404 otherwise).
    Update,
    /// `hark.yml` and start-up: either.
    Upsert,
}

/// Who asks for a deployment. A deployment naming a secret hands its value to the code
/// it deploys, so each named secret is checked against the deployer.
#[derive(Debug, Clone, Copy)]
pub enum Deployer<'a> {
    /// The operator: `hark.yml` at start-up, and tests. May name every secret.
    Operator,
    /// A token or a web UI session (its claims): may name only the secrets its
    /// `secrets:use…` scopes allow, on a first deployment and on every update alike.
    Token(&'a Claims),
}

impl Deployer<'_> {
    /// Refuses (403) a deployment of `spec` naming a secret the deployer may not use,
    /// naming those secrets and the scope that would allow them.
    fn check_secrets(&self, spec: &FunctionDeployment) -> Result<(), ApiError> {
        let Deployer::Token(claims) = self else {
            return Ok(());
        };
        let refused: Vec<&str> = spec
            .secrets
            .iter()
            .map(String::as_str)
            .filter(|name| !claims.may_use_secret(name))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        // Names only: a secret's value is never logged.
        tracing::warn!(function = %spec.service, subject = ?claims.sub, token = ?claims.jti, secrets = ?refused, "deployment refused: the token may not use the secrets it names");
        let scopes: Vec<String> = refused
            .iter()
            .map(|name| format!("{}{name}", scope::SECRETS_USE_PREFIX))
            .collect();
        Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            format!(
                "function {} names {} {}, which this token may not use: a deployment naming a secret needs the {} scope (or {}), e.g. hark token create --scope functions:write --secret {}",
                spec.service,
                if refused.len() == 1 { "secret" } else { "secrets" },
                refused.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "),
                scope::SECRETS_USE,
                scopes.join(", "),
                refused[0],
            ),
        ))
    }
}

impl Registry {
    pub fn new(store: Store, provider: Arc<dyn Provider>, dispatcher: Arc<Dispatcher>) -> Self {
        Registry {
            store,
            provider,
            dispatcher,
            deployed: Arc::default(),
            changing: Arc::default(),
        }
    }

    /// Every running function's deployment.
    pub fn deployed_all(&self) -> Vec<Arc<FunctionDeployment>> {
        let deployed = self.deployed.read().unwrap_or_else(|e| e.into_inner());
        deployed.values().cloned().collect()
    }

    /// The deployment of a running function, without a store read.
    pub fn deployed(&self, name: &FunctionName) -> Option<Arc<FunctionDeployment>> {
        let deployed = self.deployed.read().unwrap_or_else(|e| e.into_inner());
        deployed.get(name).cloned()
    }

    /// Deploys `spec` for `by`, resolving its secrets from the store. A secret `by` may
    /// not use is refused (403) before anything else is looked up, so the answer does not
    /// even tell whether it exists.
    pub async fn deploy(
        &self,
        spec: FunctionDeployment,
        mode: DeployMode,
        by: Deployer<'_>,
    ) -> Result<(), ApiError> {
        spec.validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        by.check_secrets(&spec)?;
        let mut seen = self.changing.lock().await;
        let existing = self.store.function(&spec.service).await?;
        match (mode, &existing) {
            (DeployMode::Create, Some(_)) => {
                return Err(ApiError::new(
                    http::StatusCode::CONFLICT,
                    format!(
                        "function {} already exists; use PUT to update it",
                        spec.service
                    ),
                ))
            }
            (DeployMode::Update, None) => {
                return Err(ApiError::not_found(format!(
                    "function {} not found",
                    spec.service
                )))
            }
            _ => {}
        }
        let replicas = match &existing {
            Some(f) => f.replicas,
            None => initial_replicas(&spec)?,
        };
        self.start(&spec, replicas).await?;
        self.store.put_function(&spec, replicas).await?;
        seen.insert(spec.service.clone(), replicas);
        tracing::info!(function = %spec.service, provider = self.provider.name(), replicas, "deployed");
        Ok(())
    }

    /// Hands a stored function to the provider.
    async fn start(&self, spec: &FunctionDeployment, replicas: u32) -> Result<(), ApiError> {
        let mut secrets = Vec::with_capacity(spec.secrets.len());
        for name in &spec.secrets {
            match self.store.secret(name).await? {
                Some(value) => secrets.push((name.clone(), value)),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "function {} names secret {name:?}, which does not exist; create it first",
                        spec.service
                    )))
                }
            }
        }
        self.dispatcher
            .set_secrets(&spec.service, secrets.iter().map(|(_, v)| v.clone()));
        self.provider
            .deploy(Deployment {
                spec: spec.clone(),
                secrets,
                replicas,
            })
            .await?;
        let mut deployed = self.deployed.write().unwrap_or_else(|e| e.into_inner());
        deployed.insert(spec.service.clone(), Arc::new(spec.clone()));
        Ok(())
    }

    /// Starts every stored function again (after a restart). A function that cannot
    /// start is logged and skipped, so one broken function does not keep the others down.
    pub async fn restore(&self) -> Result<usize, ApiError> {
        let mut started = 0;
        let mut seen = self.changing.lock().await;
        for function in self.store.functions().await? {
            match self.start(&function.spec, function.replicas).await {
                Ok(()) => {
                    seen.insert(function.spec.service.clone(), function.replicas);
                    started += 1;
                }
                Err(e) => {
                    tracing::error!(function = %function.spec.service, error = %e.message, "stored function did not start")
                }
            }
        }
        Ok(started)
    }

    /// Brings this gateway's functions to what the store holds now, for gateways that
    /// share a database: a function another gateway deployed, updated, scaled or removed
    /// is started, updated, scaled or stopped here too. The names of the functions
    /// changed. One that cannot start is logged and tried again on the next call.
    pub async fn follow_store(&self) -> Result<Vec<FunctionName>, ApiError> {
        static NOT_FOLLOWED: Throttle = Throttle::new(REPEAT_INTERVAL);
        let mut seen = self.changing.lock().await;
        let stored = self.store.functions().await?;
        let mut changed = Vec::new();
        for function in &stored {
            let name = &function.spec.service;
            let before = seen.insert(name.clone(), function.replicas);
            if self.deployed(name).as_deref() != Some(&function.spec) {
                match self.start(&function.spec, function.replicas).await {
                    Ok(()) => changed.push(name.clone()),
                    Err(e) => {
                        // Tried again at the next look.
                        seen.remove(name);
                        crate::warn_repeated!(NOT_FOLLOWED, name.as_str(), function = %name, error = %e.message, "a function deployed through another gateway did not start here");
                    }
                }
                continue;
            }
            if before.is_some_and(|b| b != function.replicas) {
                match self.provider.scale(name, function.replicas).await {
                    Ok(()) => changed.push(name.clone()),
                    Err(e) => {
                        seen.insert(name.clone(), before.unwrap_or_default());
                        crate::warn_repeated!(NOT_FOLLOWED, name.as_str(), function = %name, error = %e, "scaling a function as another gateway did failed here");
                    }
                }
            }
        }
        seen.retain(|name, _| stored.iter().any(|f| &f.spec.service == name));
        let gone: Vec<FunctionName> = self
            .deployed_all()
            .iter()
            .map(|d| d.service.clone())
            .filter(|name| !stored.iter().any(|f| &f.spec.service == name))
            .collect();
        for name in gone {
            self.deployed
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            match self.provider.remove(&name).await {
                Ok(()) | Err(ProviderError::NotFound(_)) => {}
                Err(e) => {
                    crate::warn_repeated!(NOT_FOLLOWED, name.as_str(), function = %name, error = %e, "stopping a function another gateway removed failed here");
                }
            }
            changed.push(name);
        }
        Ok(changed)
    }

    /// Re-deploys the functions that use `secret`, so their files hold the new value.
    pub async fn refresh_secret(&self, secret: &str) -> Result<(), ApiError> {
        for function in self.store.functions().await? {
            if function.spec.secrets.iter().any(|s| s == secret) {
                self.start(&function.spec, function.replicas).await?;
            }
        }
        Ok(())
    }

    /// Names of the functions that use `secret`.
    pub async fn users_of_secret(&self, secret: &str) -> Result<Vec<FunctionName>, ApiError> {
        Ok(self
            .store
            .functions()
            .await?
            .into_iter()
            .filter(|f| f.spec.secrets.iter().any(|s| s == secret))
            .map(|f| f.spec.service)
            .collect())
    }

    /// Stops and forgets a function.
    pub async fn remove(&self, name: &FunctionName) -> Result<(), ApiError> {
        let _changing = self.changing.lock().await;
        if !self.store.delete_function(name).await? {
            return Err(ApiError::not_found(format!("function {name} not found")));
        }
        self.deployed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        match self.provider.remove(name).await {
            Ok(()) | Err(ProviderError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(function = %name, "removed");
        Ok(())
    }

    /// Sets a function's replica count and remembers it across restarts.
    pub async fn scale(&self, name: &FunctionName, replicas: u32) -> Result<(), ApiError> {
        let mut seen = self.changing.lock().await;
        if self.store.function(name).await?.is_none() {
            return Err(ApiError::not_found(format!("function {name} not found")));
        }
        self.provider.scale(name, replicas).await?;
        self.store.set_replicas(name, replicas).await?;
        // This gateway's own change: not one to follow.
        seen.insert(name.clone(), replicas);
        tracing::info!(function = %name, replicas, "scaled");
        Ok(())
    }

    /// The status of one function.
    pub async fn status(&self, name: &FunctionName) -> Result<FunctionStatus, ApiError> {
        let function = self
            .store
            .function(name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("function {name} not found")))?;
        Ok(self.describe(function).await)
    }

    /// The status of every function.
    pub async fn list(&self) -> Result<Vec<FunctionStatus>, ApiError> {
        let mut out = Vec::new();
        for function in self.store.functions().await? {
            out.push(self.describe(function).await);
        }
        Ok(out)
    }

    async fn describe(&self, function: StoredFunction) -> FunctionStatus {
        let mut status = FunctionStatus::new(&function.spec, function.created_at);
        let replicas = self
            .provider
            .replicas(&function.spec.service)
            .await
            .unwrap_or_default();
        status.replicas = replicas.desired;
        status.available_replicas = replicas.available;
        status.invocation_count = self.dispatcher.invocation_count(&function.spec.service);
        status.usage = self.provider.usage(&function.spec.service).await;
        status
    }

    /// The deployment of a function, if it exists.
    pub async fn spec(&self, name: &FunctionName) -> Result<Option<FunctionDeployment>, ApiError> {
        Ok(self.store.function(name).await?.map(|f| f.spec))
    }
}

fn initial_replicas(spec: &FunctionDeployment) -> Result<u32, ApiError> {
    match spec.labels.get(LABEL_SCALE_MIN) {
        None => Ok(1),
        Some(v) => v.trim().parse().map_err(|_| {
            ApiError::bad_request(format!(
                "label {LABEL_SCALE_MIN}: {v:?} is not a whole number"
            ))
        }),
    }
}
