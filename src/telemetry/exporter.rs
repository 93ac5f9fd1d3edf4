//! The Prometheus exporter: the process-wide recorder is installed once; a scrape of
//! `GET /metrics` comes in and the text exposition format goes out, after the values that
//! are read rather than counted (replicas, queue depth, dead letters) are refreshed.
//!
//! `/metrics` is open by default, as on the OpenFaaS gateway, so a stock Prometheus scrape
//! works; `hark up --metrics-auth` (`HARK_METRICS_AUTH=true`) asks for a bearer token with
//! the `functions:read` scope instead.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::{GATEWAY_SERVICE_COUNT, QUEUE_DEAD_LETTERS, QUEUE_DEPTH};
use crate::auth::scope;
use crate::error::ApiError;
use crate::server::AppState;

/// Histogram buckets in seconds: Prometheus' defaults, which OpenFaaS dashboards expect.
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How often histogram samples are folded in between scrapes (bounds their memory).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Anyone who can reach the gateway (the OpenFaaS default).
    #[default]
    Open,
    /// Only bearers of a token with `functions:read`.
    Token,
}

/// The installed recorder and what scrapes need.
pub struct Exporter {
    handle: PrometheusHandle,
    access: Access,
    /// Functions given a `gateway_service_count` by the last scrape, so a removed function
    /// drops to 0 instead of keeping its last value.
    services: Mutex<HashSet<String>>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Installs the process-wide recorder (the first call wins; later calls return it). Until
/// this runs, the `metrics` macros record nothing, so `hark up` calls it first thing.
pub fn install(access: Access) -> &'static Exporter {
    EXPORTER.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            // Cannot fail: BUCKETS is not empty.
            .expect("non-empty buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            // Another recorder (only possible when Hark is a library in a bigger program):
            // `/metrics` then shows what reaches this one, which is nothing.
            tracing::warn!(error = %e, "a metrics recorder was already installed");
        }
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        Exporter {
            handle,
            access,
            services: Mutex::new(HashSet::new()),
        }
    })
}

impl Exporter {
    /// Who may read `/metrics`.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Refreshes the read-at-scrape values and renders everything.
    pub async fn render(&self, state: &AppState) -> String {
        let mut seen = HashSet::new();
        for spec in state.registry.deployed_all() {
            let name = spec.service.to_string();
            let replicas = state
                .registry
                .provider
                .replicas(&spec.service)
                .await
                .unwrap_or_default();
            metrics::gauge!(GATEWAY_SERVICE_COUNT, "function_name" => name.clone())
                .set(f64::from(replicas.desired));
            seen.insert(name);
        }
        let gone: Vec<String> = {
            let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
            let gone = services.difference(&seen).cloned().collect();
            *services = seen;
            gone
        };
        for name in gone {
            metrics::gauge!(GATEWAY_SERVICE_COUNT, "function_name" => name).set(0.0);
        }
        match state.registry.store.queue_counts().await {
            Ok(counts) => {
                metrics::gauge!(QUEUE_DEPTH).set(counts.depth as f64);
                metrics::gauge!(QUEUE_DEAD_LETTERS).set(counts.dead as f64);
            }
            Err(e) => tracing::warn!(error = %e, "reading queue depth for /metrics failed"),
        }
        self.handle.render()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "system", description = "Prometheus metrics in the text exposition format, with the OpenFaaS gateway names. Open unless the gateway runs with `--metrics-auth`, which asks for a token with `functions:read`.", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"), (status = 401, description = "With --metrics-auth: no valid bearer token", body = crate::channels::api::openapi::ErrorBody)))]
/// `GET /metrics`: the Prometheus text exposition format.
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let exporter = install(Access::default());
    if exporter.access() == Access::Token {
        state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    }
    let body = exporter.render(&state).await;
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}
