//! The UI's handlers: a [`Session`] and a page's parameters or form come in; a rendered page,
//! a redirect after a form, or (for the invoke panel and the live logs) the raw answer goes
//! out. They call the registry, store, queue, scheduler and skills as the REST API does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cookie, render, set_cookie, Session, UiError, CSRF_FIELD, CSRF_HEADER, LOGIN_COOKIE,
    LOGIN_PURPOSE,
};
use crate::auth::scope;
use crate::channels::alexa::types::{Card, OutputSpeech, RequestEnvelope};
use crate::channels::alexa::{conversation, local, ssml};
use crate::channels::api::invoke;
use crate::dispatch::Trigger;
use crate::error::ApiError;
use crate::function::{
    FunctionDeployment, FunctionName, FunctionStatus, ANNOTATION_AUTH, ANNOTATION_MODE,
    ANNOTATION_TIMEOUT, ANNOTATION_WORKDIR,
};
use crate::provider::Invocation;
use crate::registry::{DeployMode, Deployer};
use crate::server::{AppState, CallId, RawBody, HEADER_CALL_ID};
use crate::store::CallState;

/// Label giving the replicas a new function starts with.
const LABEL_SCALE_MIN: &str = "com.openfaas.scale.min";
/// The most replicas the UI asks for (the REST API's limit too).
const MAX_REPLICAS: u32 = 64;
/// Activations read for the activations page's filters and an activation's page.
const ACTIVATIONS_SCANNED: u32 = 1000;
/// The Alexa userId of turns tried from the skills page.
const UI_ALEXA_USER: &str = "amzn1.ask.account.hark-ui";

type Ui<T> = Result<T, UiError>;

/// `?done=...` after a form: a fixed set of notices, so no text is reflected from the URL.
#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

impl Done {
    fn notice(&self) -> Option<&'static str> {
        Some(match self.done.as_deref()? {
            "deployed" => "Function deployed.",
            "scaled" => "Replicas changed.",
            "removed" => "Function removed.",
            "retried" => "The call is queued again.",
            "signed-out" => "Signed out.",
            _ => return None,
        })
    }
}

fn form<T: serde::de::DeserializeOwned>(body: &RawBody) -> Ui<T> {
    serde_urlencoded::from_bytes(&body.0).map_err(|e| UiError::BadForm(format!("bad form: {e}")))
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

// ---- sign-in ----

/// `GET /ui/login`: the sign-in form, with a fresh nonce cookie behind its CSRF token.
pub async fn login_form(State(state): State<Arc<AppState>>, Query(done): Query<Done>) -> Response {
    login_page(&state, done.notice(), None, StatusCode::OK)
}

fn login_page(
    state: &AppState,
    notice: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let csrf = state.auth.derive(LOGIN_PURPOSE, nonce.as_bytes());
    let ctx = json!({ "csrf": csrf, "notice": notice, "error": error });
    match super::render_raw("login.html", ctx) {
        Ok(html) => (
            status,
            [(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, &nonce, state.auth.secure_cookies()),
            )],
            Html(html),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// `POST /ui/login`: checks the form's CSRF token and the API token; sets the session cookie.
pub async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> Ui<Response> {
    let form: LoginForm = form(&body)?;
    let expected = cookie(&headers, LOGIN_COOKIE)
        .map(|nonce| state.auth.derive(LOGIN_PURPOSE, nonce.as_bytes()));
    let fresh = expected.is_some_and(|e| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            e.as_bytes(),
            form.csrf.as_bytes(),
        ))
    });
    if !fresh {
        crate::warn_repeated!(
            super::REFUSED,
            "sign-in bad CSRF token",
            "web UI sign-in refused: bad CSRF token"
        );
        return Err(UiError::Csrf);
    }
    let token = form.token.trim();
    let secure = state.auth.secure_cookies();
    match state.auth.start_session(token, scope::FUNCTIONS_READ).await {
        Ok((id, claims)) => {
            tracing::info!(subject = ?claims.sub, token = ?claims.jti, "web UI sign-in");
            let mut response = see_other("/ui/");
            for value in [
                set_cookie(super::session_cookie_name(secure), &id, secure),
                set_cookie(LOGIN_COOKIE, "", secure),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            Ok(response)
        }
        Err(crate::auth::AuthError::Store(e)) => Err(UiError::Api(e.into())),
        Err(e) => {
            tracing::info!(error = %e, "web UI sign-in refused");
            let message = match e {
                crate::auth::AuthError::Forbidden(_) => {
                    "That token lacks the functions:read scope the UI needs."
                }
                _ => "That is not a valid token for this gateway.",
            };
            Ok(login_page(
                &state,
                None,
                Some(message),
                StatusCode::UNAUTHORIZED,
            ))
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /ui/logout`: ends the session in the store and forgets the session cookie.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    session: Session,
    body: RawBody,
) -> Ui<Response> {
    let form: CsrfForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    state
        .auth
        .end_session(session.id())
        .await
        .map_err(ApiError::from)?;
    tracing::info!(subject = ?session.claims.sub, "web UI sign-out");
    let mut response = see_other("/ui/login?done=signed-out");
    let secure = state.auth.secure_cookies();
    let cleared = set_cookie(super::session_cookie_name(secure), "", secure);
    if let Ok(v) = HeaderValue::from_str(&cleared) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

// ---- functions ----

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
    let rows: Vec<Value> = list.iter().map(function_row).collect();
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

fn activation_row(a: &crate::store::Activation) -> Value {
    json!({
        "call_id": a.call_id,
        "function": a.function,
        "trigger": a.trigger,
        "status": a.status,
        "ok": a.status < 400,
        "duration_ms": format!("{:.1}", a.duration_ms),
        "started_at": time(&a.started_at),
        "error": a.error,
    })
}

/// `GET /ui/functions/{name}`: status, the invoke panel, recent activations, live logs.
pub async fn function(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(name): Path<String>,
    Query(done): Query<Done>,
) -> Ui<Html<String>> {
    let name: FunctionName = name.parse()?;
    let status = state.registry.status(&name).await?;
    let activations = state.registry.store.activations(Some(&name), 15).await?;
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

#[derive(Deserialize)]
pub struct LogsQuery {
    tail: Option<usize>,
}

/// `GET /ui/functions/{name}/logs`: the function's latest log lines as JSON (the page polls).
pub async fn logs(
    State(state): State<Arc<AppState>>,
    _session: Session,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Ui<Json<Vec<Value>>> {
    let name: FunctionName = name.parse()?;
    if state.registry.deployed(&name).is_none() {
        return Err(ApiError::not_found(format!("function {name} not found")).into());
    }
    let tail = query.tail.unwrap_or(200).clamp(1, 1000);
    let lines = state
        .registry
        .provider
        .logs()
        .history(&name, Some(tail), None);
    Ok(Json(
        lines
            .iter()
            .map(|l| json!({ "time": l.timestamp.format("%H:%M:%S%.3f").to_string(), "instance": l.instance, "text": l.text }))
            .collect(),
    ))
}

// ---- activations ----

#[derive(Deserialize, Default)]
pub struct ActivationFilter {
    #[serde(default)]
    function: String,
    #[serde(default)]
    trigger: String,
    #[serde(default)]
    status: String,
}

impl ActivationFilter {
    fn keeps(&self, a: &crate::store::Activation) -> bool {
        let status_ok = match self.status.as_str() {
            "" => true,
            "ok" => a.status < 400,
            "error" => a.status >= 400,
            code => code.parse::<u16>().is_ok_and(|c| c == a.status),
        };
        status_ok && (self.trigger.is_empty() || self.trigger == a.trigger)
    }
}

/// `GET /ui/activations`: the newest activations, filtered by function, channel and status.
pub async fn activations(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(filter): Query<ActivationFilter>,
) -> Ui<Html<String>> {
    let function: Option<FunctionName> = match filter.function.trim() {
        "" => None,
        f => Some(f.parse()?),
    };
    let all = state
        .registry
        .store
        .activations(function.as_ref(), ACTIVATIONS_SCANNED)
        .await?;
    let mut triggers: Vec<&str> = all.iter().map(|a| a.trigger.as_str()).collect();
    triggers.extend(Trigger::ALL.map(Trigger::as_str));
    triggers.sort_unstable();
    triggers.dedup();
    let rows: Vec<Value> = all
        .iter()
        .filter(|a| filter.keeps(a))
        .take(200)
        .map(activation_row)
        .collect();
    let names: Vec<String> = state
        .registry
        .deployed_all()
        .iter()
        .map(|f| f.service.to_string())
        .collect();
    render(
        "activations.html",
        &session,
        json!({
            "nav": "activations",
            "rows": rows,
            "functions": names,
            "triggers": triggers,
            "filter": { "function": filter.function, "trigger": filter.trigger, "status": filter.status },
            "scanned": ACTIVATIONS_SCANNED,
        }),
    )
}

/// `GET /ui/activations/{id}`: one activation with its error text, and its browser
/// screenshot when the gateway keeps one.
pub async fn activation(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
) -> Ui<Html<String>> {
    let all = state
        .registry
        .store
        .activations(None, ACTIVATIONS_SCANNED)
        .await?;
    let found = all.iter().find(|a| a.call_id == id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no activation {id} among the newest {ACTIVATIONS_SCANNED}"
        ))
    })?;
    let record = serde_json::to_string_pretty(found).unwrap_or_default();
    render(
        "activation.html",
        &session,
        json!({ "nav": "activations", "a": activation_row(found), "record": record }),
    )
}

/// `GET /ui/activations/{id}/screenshot`: the gateway's own
/// `GET /system/activations/{id}/screenshot` (the browser pool's failure screenshot), asked
/// with the session's token. Gateways without that route answer 404, and the page shows no
/// picture.
pub async fn activation_screenshot(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
) -> Ui<Response> {
    session.require(scope::FUNCTIONS_READ)?;
    match state.registry.store.screenshot(&id).await? {
        Some(shot) => Ok(([(header::CONTENT_TYPE, "image/png")], shot.png).into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

// ---- skills ----

fn skills_list(state: &AppState) -> Vec<Value> {
    state
        .alexa
        .skills()
        .iter()
        .map(|s| {
            let intents: Vec<Value> = s
                .def
                .intents
                .iter()
                .map(|(name, intent)| {
                    let slots: Vec<Value> = intent
                        .slots
                        .iter()
                        .map(|(slot, def)| json!({ "name": slot, "type": def.slot_type(), "required": def.required() }))
                        .collect();
                    json!({
                        "name": name,
                        "samples": intent.samples,
                        "slots": slots,
                        "function": intent.function.as_ref().map(|f| f.to_string()),
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "invocation": s.def.invocation,
                "locales": s.def.locales,
                "intents": intents,
            })
        })
        .collect()
}

#[derive(Deserialize, Default)]
pub struct SkillQuery {
    #[serde(default)]
    skill: String,
}

/// `GET /ui/skills`: every skill's intents and sample utterances, and the try box.
pub async fn skills(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<SkillQuery>,
) -> Ui<Html<String>> {
    render(
        "skills.html",
        &session,
        json!({ "nav": "skills", "skills": skills_list(&state), "selected": query.skill }),
    )
}

#[derive(Deserialize)]
pub struct TryForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    skill: String,
    #[serde(default)]
    utterance: String,
}

/// `POST /ui/skills`: matches the utterance locally (as `hark say` does), runs the turn and
/// shows the spoken reply, its SSML and the card.
pub async fn try_utterance(
    State(state): State<Arc<AppState>>,
    session: Session,
    Extension(call_id): Extension<CallId>,
    body: RawBody,
) -> Ui<Html<String>> {
    let form: TryForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    session.require(scope::FUNCTIONS_INVOKE)?;
    let skill = state
        .alexa
        .skill(&form.skill)
        .ok_or_else(|| ApiError::not_found(format!("no skill named {:?} is loaded", form.skill)))?;
    let today = chrono::Local::now().date_naive();
    let (envelope, matched) = local::envelope(&skill, &form.utterance, UI_ALEXA_USER, None, today);
    let parsed: RequestEnvelope = serde_json::from_value(envelope)
        .map_err(|e| ApiError::internal(format!("the UI built a bad Alexa request: {e}")))?;
    let response = conversation::respond(&state, &skill, &parsed, &call_id.0).await;
    let body = &response.response;
    let (spoken, ssml_doc) = match &body.output_speech {
        Some(OutputSpeech::Ssml { ssml: doc, .. }) => (ssml::to_plain_text(doc), Some(doc.clone())),
        Some(OutputSpeech::PlainText { text, .. }) => (text.clone(), None),
        None => (String::new(), None),
    };
    let reprompt = body.reprompt.as_ref().map(|r| match &r.output_speech {
        OutputSpeech::Ssml { ssml: doc, .. } => doc.clone(),
        OutputSpeech::PlainText { text, .. } => text.clone(),
    });
    let card = match &body.card {
        Some(Card::Simple { title, content }) => Some(json!({ "title": title, "text": content })),
        Some(Card::Standard { title, text, .. }) => Some(json!({ "title": title, "text": text })),
        Some(other) => Some(
            json!({ "title": "Card", "text": serde_json::to_string(other).unwrap_or_default() }),
        ),
        None => None,
    };
    let matched = matched.map(|m| {
        let slots: BTreeMap<&String, &String> =
            m.slots.iter().map(|(k, v)| (k, &v.value)).collect();
        json!({ "intent": m.intent, "slots": slots })
    });
    let result = json!({
        "utterance": form.utterance,
        "matched": matched,
        "spoken": spoken,
        "ssml": ssml_doc,
        "reprompt": reprompt,
        "card": card,
        "end_session": body.should_end_session,
        "json": serde_json::to_string_pretty(&response).unwrap_or_default(),
    });
    render(
        "skills.html",
        &session,
        json!({ "nav": "skills", "skills": skills_list(&state), "selected": form.skill, "result": result }),
    )
}

// ---- schedules and the queue ----

/// `GET /ui/schedules`: scheduled functions, their next tick and recent runs.
pub async fn schedules(State(state): State<Arc<AppState>>, session: Session) -> Ui<Html<String>> {
    let schedules = state.scheduler.status().await?;
    let rows: Vec<Value> = schedules
        .iter()
        .map(|s| {
            let mut row = serde_json::to_value(s).unwrap_or_default();
            row["next_text"] = s.next.as_ref().map(time).into();
            row
        })
        .collect();
    render(
        "schedules.html",
        &session,
        json!({ "nav": "schedules", "schedules": rows }),
    )
}

#[derive(Deserialize, Default)]
pub struct QueueQuery {
    state: Option<CallState>,
    done: Option<String>,
}

/// `GET /ui/queue`: async calls by state; dead-lettered ones can be retried.
pub async fn queue(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<QueueQuery>,
) -> Ui<Html<String>> {
    let entries = state
        .registry
        .store
        .queue_entries(query.state, None, 200)
        .await?;
    let depth = state.registry.store.queue_depth().await?;
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "call_id": e.call_id,
                "function": e.function,
                "state": e.state.as_str(),
                "attempts": e.attempts,
                "status": e.status,
                "error": e.error,
                "created_at": time(&e.created_at),
                "next_attempt_at": e.next_attempt_at.as_ref().map(time),
                "trigger": e.trigger,
            })
        })
        .collect();
    let done = Done { done: query.done };
    render(
        "queue.html",
        &session,
        json!({
            "nav": "queue",
            "rows": rows,
            "depth": depth,
            "state": query.state.map(CallState::as_str),
            "notice": done.notice(),
            "can_write": session.claims.allows(scope::FUNCTIONS_WRITE),
        }),
    )
}

/// `POST /ui/queue/{id}/retry`: queues a dead-lettered call again.
pub async fn retry(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    body: RawBody,
) -> Ui<Response> {
    let form: CsrfForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    session.require(scope::FUNCTIONS_WRITE)?;
    match state.registry.store.requeue_dead(&id).await? {
        None => Err(ApiError::not_found(format!("no queued call {id}")).into()),
        Some(CallState::Dead) => {
            state.queue.wake();
            tracing::info!(call_id = id, subject = ?session.claims.sub, "dead-lettered call queued again from the web UI");
            Ok(see_other("/ui/queue?state=dead&done=retried"))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "call {id} is {}; only dead-lettered calls can be retried",
                other.as_str()
            ),
        )
        .into()),
    }
}
