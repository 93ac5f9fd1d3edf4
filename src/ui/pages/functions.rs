//! The functions list and a function's page: deploy, scale, remove, the invoke panel and the live logs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::sse::Event;
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use chrono::Utc;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::scope;
use crate::channels::api::{invoke, system};
use crate::dispatch::Trigger;
use crate::error::ApiError;
use crate::function::{
    FunctionDeployment, FunctionName, FunctionStatus, ANNOTATION_AUTH, ANNOTATION_MODE,
    ANNOTATION_TIMEOUT, ANNOTATION_WORKDIR,
};
use crate::provider::{Invocation, Start};
use crate::registry::{DeployMode, Deployer};
use crate::server::{AppState, CallId, RawBody, HEADER_CALL_ID};
use crate::ui::{render, Session, UiError, CSRF_FIELD, CSRF_HEADER};

use super::overview::{by_function, call_series, call_summary, RangeQuery};
use super::{activation_row, form, see_other, CsrfForm, Done, Ui, LABEL_SCALE_MIN, MAX_REPLICAS};
use crate::ui::charts::{CallSeries, Range, Window};

fn function_row(f: &FunctionStatus) -> Value {
    let status = if f.replicas == 0 {
        ("scaled to zero", "idle")
    } else if f.available_replicas >= f.replicas {
        ("ready", "ok")
    } else if f.available_replicas > 0 {
        ("degraded", "warn")
    } else {
        ("starting", "warn")
    };
    json!({
        "name": f.name.as_str(),
        "image": f.image,
        "process": f.env_process,
        "mode": f.annotations.get(ANNOTATION_MODE).map(String::as_str).unwrap_or("fork"),
        "replicas": f.replicas,
        "available": f.available_replicas,
        "invocations": f.invocation_count,
        "status": status.0,
        "status_class": status.1,
        "auth": f.annotations.get(ANNOTATION_AUTH).is_some_and(|a| a == "required"),
    })
}

/// `GET /ui/`: the functions, and the deploy form.
pub async fn functions(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(done): Query<Done>,
) -> Ui<Html<String>> {
    functions_page(
        &state,
        &session,
        done.notice(),
        None,
        &DeployForm::default(),
    )
    .await
}

async fn functions_page(
    state: &AppState,
    session: &Session,
    notice: Option<&str>,
    error: Option<&str>,
    form: &DeployForm,
) -> Ui<Html<String>> {
    let list = state.registry.list().await?;
    let window = Window::new(Range::Hour, Utc::now());
    let (_, calls) = call_series(state, None, window).await?;
    let hour = by_function(window, &calls);
    let idle = CallSeries::new(window);
    let rows: Vec<Value> = list
        .iter()
        .map(|f| {
            let mut row = function_row(f);
            let series = hour.get(f.name.as_str()).unwrap_or(&idle);
            row["hour"] = call_summary(series);
            row
        })
        .collect();
    render(
        "functions.html",
        session,
        json!({
            "nav": "functions",
            "provider": state.registry.provider.name(),
            "functions": rows,
            "notice": notice,
            "error": error,
            "form": form,
            "can_write": session.claims.allows(scope::FUNCTIONS_WRITE),
        }),
    )
}

/// The deploy form.
#[derive(Deserialize, serde::Serialize, Default)]
pub struct DeployForm {
    #[serde(default, skip_serializing)]
    csrf: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    fprocess: String,
    #[serde(default)]
    workdir: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    replicas: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    auth: Option<String>,
}

impl DeployForm {
    /// The deployment the form describes.
    fn deployment(&self) -> Ui<FunctionDeployment> {
        let service: FunctionName = self.name.trim().parse()?;
        let mut spec = FunctionDeployment {
            service,
            image: self.image.trim().to_owned(),
            ..FunctionDeployment::default()
        };
        let fprocess = self.fprocess.trim();
        if !fprocess.is_empty() {
            spec.env_process = Some(fprocess.to_owned());
        }
        if spec.image.is_empty() && spec.env_process.is_none() {
            return Err(UiError::BadForm(
                "give a command (fprocess) or an image".to_owned(),
            ));
        }
        for (key, value) in [
            (ANNOTATION_MODE, self.mode.trim()),
            (ANNOTATION_TIMEOUT, self.timeout.trim()),
            (ANNOTATION_WORKDIR, self.workdir.trim()),
        ] {
            if !value.is_empty() {
                spec.annotations.insert(key.to_owned(), value.to_owned());
            }
        }
        if self.auth.is_some() {
            spec.annotations
                .insert(ANNOTATION_AUTH.to_owned(), "required".to_owned());
        }
        let replicas = self.replicas.trim();
        if !replicas.is_empty() {
            match replicas.parse::<u32>() {
                Ok(n) if n <= MAX_REPLICAS => {
                    spec.labels
                        .insert(LABEL_SCALE_MIN.to_owned(), n.to_string());
                }
                _ => {
                    return Err(UiError::BadForm(format!(
                        "replicas must be a number from 0 to {MAX_REPLICAS}"
                    )))
                }
            }
        }
        for line in self.env.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| {
                UiError::BadForm(format!("environment line {line:?} is not KEY=value"))
            })?;
            spec.env_vars
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(spec)
    }
}

/// `POST /ui/functions`: deploys a new function.
pub async fn deploy(
    State(state): State<Arc<AppState>>,
    session: Session,
    body: RawBody,
) -> Ui<Response> {
    let form: DeployForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    session.require(scope::FUNCTIONS_WRITE)?;
    let result = match form.deployment() {
        Ok(spec) => state
            .registry
            .deploy(spec, DeployMode::Create, Deployer::Token(&session.claims))
            .await
            .map_err(UiError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            tracing::info!(function = %form.name.trim(), subject = ?session.claims.sub, "deployed from the web UI");
            Ok(see_other(&format!(
                "/ui/functions/{}?done=deployed",
                form.name.trim()
            )))
        }
        Err(UiError::BadForm(message)) | Err(UiError::Api(ApiError { message, .. })) => {
            let page = functions_page(&state, &session, None, Some(&message), &form).await?;
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
        Err(other) => Err(other),
    }
}

#[derive(Deserialize)]
pub struct ScaleForm {
    #[serde(default)]
    csrf: Option<String>,
    replicas: String,
}

/// `POST /ui/functions/{name}/scale`.
pub async fn scale(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(name): Path<String>,
    body: RawBody,
) -> Ui<Response> {
    let form: ScaleForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    session.require(scope::FUNCTIONS_WRITE)?;
    let name: FunctionName = name.parse()?;
    let replicas = form
        .replicas
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_REPLICAS)
        .ok_or_else(|| {
            UiError::BadForm(format!(
                "replicas must be a number from 0 to {MAX_REPLICAS}"
            ))
        })?;
    state.registry.scale(&name, replicas).await?;
    tracing::info!(function = %name, replicas, subject = ?session.claims.sub, "scaled from the web UI");
    Ok(see_other(&format!("/ui/functions/{name}?done=scaled")))
}

/// `GET /ui/functions/{name}/remove`: asks for confirmation.
pub async fn remove_form(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(name): Path<String>,
) -> Ui<Html<String>> {
    let name: FunctionName = name.parse()?;
    let status = state.registry.status(&name).await?;
    render(
        "remove.html",
        &session,
        json!({ "nav": "functions", "f": function_row(&status) }),
    )
}

/// `POST /ui/functions/{name}/remove`.
pub async fn remove(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(name): Path<String>,
    body: RawBody,
) -> Ui<Response> {
    let form: CsrfForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    session.require(scope::FUNCTIONS_WRITE)?;
    let name: FunctionName = name.parse()?;
    state.registry.remove(&name).await?;
    tracing::info!(function = %name, subject = ?session.claims.sub, "removed from the web UI");
    Ok(see_other("/ui/?done=removed"))
}

/// `GET /ui/functions/{name}`: status, the invoke panel, recent activations, live logs.
pub async fn function(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(name): Path<String>,
    Query(done): Query<Done>,
    Query(range): Query<RangeQuery>,
) -> Ui<Html<String>> {
    let name: FunctionName = name.parse()?;
    let status = state.registry.status(&name).await?;
    let activations = state.registry.store.activations(Some(&name), 15).await?;
    let (series, _) =
        call_series(&state, Some(&name), Window::new(range.range, Utc::now())).await?;
    let annotations: BTreeMap<&String, &String> = status.annotations.iter().collect();
    render(
        "function.html",
        &session,
        json!({
            "nav": "functions",
            "f": function_row(&status),
            "annotations": annotations,
            "labels": status.labels,
            "env": status.env_vars,
            "secrets": status.secrets,
            "activations": activations.iter().map(activation_row).collect::<Vec<_>>(),
            "notice": done.notice(),
            "can_write": session.claims.allows(scope::FUNCTIONS_WRITE),
            "max_replicas": MAX_REPLICAS,
            "range": range.range,
            "totals": call_summary(&series),
            "graphs": [
                series.rate_chart("chart-calls"),
                series.error_chart("chart-errors"),
                series.latency_chart("chart-latency"),
            ],
        }),
    )
}

/// `POST /ui/functions/{name}/invoke`: the invoke panel's request (multipart: `method`,
/// `headers` as `Name: value` lines, `kind` of body — `text`, `json` or `file` — and `body`
/// or `file`). The call runs through the dispatcher like `/function/NAME` (trigger `ui`);
/// the function's status, `Content-Type` and body go out, with `X-Call-Id` and
/// `X-Duration-Seconds`.
pub async fn invoke(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(name): Path<String>,
    Extension(call_id): Extension<CallId>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Ui<Response> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut file: Option<(Bytes, Option<String>)> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| UiError::BadForm(format!("bad upload: {e}")))?
    {
        let field_name = field.name().unwrap_or_default().to_owned();
        if field_name == "file" {
            let content_type = field.content_type().map(str::to_owned);
            let data = field
                .bytes()
                .await
                .map_err(|e| UiError::BadForm(format!("bad upload: {e}")))?;
            file = Some((data, content_type));
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| UiError::BadForm(format!("bad form field {field_name}: {e}")))?;
            fields.insert(field_name, text);
        }
    }
    let provided = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| fields.get(CSRF_FIELD).cloned());
    session.check_csrf(provided.as_deref())?;
    let name: FunctionName = name.parse()?;
    let spec = state
        .registry
        .deployed(&name)
        .ok_or_else(|| ApiError::not_found(format!("function {name} not found")))?;
    if spec.auth_required() {
        session.require(scope::FUNCTIONS_INVOKE)?;
    }
    let method_text = fields.get("method").map(|m| m.trim()).unwrap_or("POST");
    let method = Method::from_bytes(method_text.to_ascii_uppercase().as_bytes())
        .map_err(|_| UiError::BadForm(format!("{method_text:?} is not an HTTP method")))?;
    let mut call_headers = HeaderMap::new();
    let text = fields.get("body").cloned().unwrap_or_default();
    let body = match fields.get("kind").map(String::as_str).unwrap_or("text") {
        "json" => {
            if !text.trim().is_empty() {
                serde_json::from_str::<Value>(&text)
                    .map_err(|e| UiError::BadForm(format!("the body is not JSON: {e}")))?;
            }
            call_headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(text)
        }
        "file" => {
            let (data, content_type) =
                file.ok_or_else(|| UiError::BadForm("choose a file to upload".to_owned()))?;
            let content_type = content_type.unwrap_or_else(|| "application/octet-stream".into());
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                call_headers.insert(header::CONTENT_TYPE, v);
            }
            data
        }
        _ => {
            call_headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Bytes::from(text)
        }
    };
    let extra = fields.get("headers").map(String::as_str).unwrap_or("");
    for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = line.split_once(':').and_then(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        let (k, v) = parsed
            .ok_or_else(|| UiError::BadForm(format!("header {line:?} is not Name: value")))?;
        call_headers.insert(k, v);
    }
    if let Ok(value) = HeaderValue::from_str(&call_id.0) {
        call_headers.insert(HEADER_CALL_ID, value);
    }
    let call = Invocation {
        call_id: call_id.0.clone(),
        method,
        path: "/".to_owned(),
        query: fields
            .get("query")
            .map(|q| q.trim().trim_start_matches('?').to_owned())
            .filter(|q| !q.is_empty()),
        headers: call_headers,
        body,
    };
    let started = Instant::now();
    let output = invoke::call_sync(&state, &name, Trigger::Ui, call)
        .await
        .map_err(ApiError::from)?
        .map_err(ApiError::from)?;
    // Only the content type of the function's headers: the panel shows the answer on the
    // UI's own origin, where a function's cookies or security headers have no business.
    let mut response = Response::new(Body::from(output.body));
    *response.status_mut() = output.status;
    let h = response.headers_mut();
    if let Some(ct) = output.headers.get(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, ct.clone());
    }
    invoke::set_duration(h, started);
    Ok(response)
}

/// Lines the page shows when it opens; newer ones follow as they come.
const LOG_LINES_SHOWN: usize = 200;

/// `GET /ui/functions/{name}/logs`: the function's latest log lines, then each new one,
/// as server-sent events (the page's `EventSource` resumes with `Last-Event-ID`).
pub async fn logs(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Ui<Response> {
    let name: FunctionName = name.parse()?;
    if state.registry.deployed(&name).is_none() {
        return Err(ApiError::not_found(format!("function {name} not found")).into());
    }
    let start = match system::last_event_id(&headers)? {
        Some(cursor) => Start::After(cursor),
        None => Start::Tail {
            tail: Some(LOG_LINES_SHOWN),
            since: None,
        },
    };
    let hub = state.registry.provider.logs().clone();
    let lines = system::until_stopping(&state, hub.clone().read(name, start, true));
    // The page's stream ends with its session (signed out, expired, token revoked).
    let (auth, id) = (state.auth.clone(), session.id().to_owned());
    let lines = system::while_allowed(lines, move || {
        let (auth, id) = (auth.clone(), id.clone());
        async move { auth.session(&id).await.is_ok() }
    });
    Ok(system::events(lines, move |logged| {
        let l = &logged.line;
        Event::default()
            .id(hub.cursor(logged).to_string())
            .json_data(json!({
                "time": l.timestamp.format("%H:%M:%S%.3f").to_string(),
                "instance": l.instance,
                "text": l.text,
            }))
    }))
}
