//! The backend contract: a deployment or an invocation comes in, running processes
//! (or containers) and their answers go out. Modelled on OpenFaaS's faas-provider:
//! one trait for every backend, and an operation a backend lacks answers
//! [`ProviderError::Unsupported`], which the API turns into 501.

pub mod docker;
pub mod logs;
pub mod process;
pub mod swarm;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::function::{FunctionDeployment, FunctionName, Usage};
pub use logs::{Cursor, LogHub, LogLine, Logged, Start};

/// What a provider needs to start a function.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub spec: FunctionDeployment,
    /// The values of the secrets the spec names, `(name, value)`.
    pub secrets: Vec<(String, Vec<u8>)>,
    /// Replicas to run at first.
    pub replicas: u32,
}

/// One call of a function, as the gateway received it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub call_id: String,
    pub method: Method,
    /// The path below `/function/NAME`, always starting with `/`.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A function's answer.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What went wrong, for the activation record, when the function failed.
    pub error: Option<String>,
    /// The process that ran this call alone (fork mode), whose log lines are the call's.
    pub instance: Option<String>,
}

/// Replica counts of one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replicas {
    pub desired: u32,
    pub available: u32,
}

/// Why a provider could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No such function is deployed.
    #[error("function {0} is not deployed")]
    NotFound(FunctionName),
    /// The backend cannot do this operation (501).
    #[error("the {provider} provider cannot {operation}")]
    Unsupported {
        provider: &'static str,
        operation: &'static str,
    },
    /// The deployment cannot run as given (400).
    #[error("{0}")]
    BadSpec(String),
    /// The call ran past its time limit and was stopped (504).
    #[error("function {name} did not answer within {limit:?}")]
    Timeout { name: FunctionName, limit: Duration },
    /// The function is at its concurrency limit (429).
    #[error("function {0} is at its max_inflight limit; try again later")]
    Overloaded(FunctionName),
    /// The function could not be reached or started (502).
    #[error("function {name} is unavailable: {reason}")]
    Unavailable { name: FunctionName, reason: String },
    /// The backend itself failed (500).
    #[error("provider failure: {0}")]
    Internal(String),
    /// The data directory's disk is full or read-only (503).
    #[error("cannot write to the data directory (disk full or read-only?): {0}")]
    Unwritable(String),
}

impl ProviderError {
    /// A failed file operation of the backend on `what`: [`ProviderError::Unwritable`]
    /// when the disk is full or read-only, else [`ProviderError::Internal`].
    pub fn io(what: impl std::fmt::Display, e: &std::io::Error) -> ProviderError {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EROFS | libc::EDQUOT) => {
                ProviderError::Unwritable(format!("{what}: {e}"))
            }
            _ => ProviderError::Internal(format!("{what}: {e}")),
        }
    }
}

/// A slot under a function's `hark.max_inflight` limit (none when it has no limit), or
/// [`ProviderError::Overloaded`] when every slot is taken.
pub fn inflight_permit(
    limit: Option<&std::sync::Arc<tokio::sync::Semaphore>>,
    name: &FunctionName,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ProviderError> {
    limit
        .map(|l| l.clone().try_acquire_owned())
        .transpose()
        .map_err(|_| ProviderError::Overloaded(name.clone()))
}

/// A backend that runs functions.
#[async_trait]
pub trait Provider: Send + Sync {
    /// A short name for `/system/info` and logs, e.g. `process`.
    fn name(&self) -> &'static str;

    /// Starts a function, or replaces a running one with the same name.
    async fn deploy(&self, deployment: Deployment) -> Result<(), ProviderError>;

    /// Stops a function and forgets it.
    async fn remove(&self, name: &FunctionName) -> Result<(), ProviderError>;

    /// The function's desired and ready replicas.
    async fn replicas(&self, name: &FunctionName) -> Result<Replicas, ProviderError>;

    /// Sets the number of replicas; 0 stops them until the next call.
    async fn scale(&self, name: &FunctionName, replicas: u32) -> Result<(), ProviderError>;

    /// Runs one call to its end, within the function's time limit.
    async fn invoke(&self, name: &FunctionName, call: Invocation) -> Result<Output, ProviderError>;

    /// The function's resource use (CPU, memory), where the backend measures it cheaply.
    async fn usage(&self, _name: &FunctionName) -> Option<Usage> {
        None
    }

    /// Where the function's output lines are kept.
    fn logs(&self) -> &Arc<LogHub>;

    /// Stops every process, waiting a little for them to end.
    async fn shutdown(&self);
}
