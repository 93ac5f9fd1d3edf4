//! The UI's handlers: a [`Session`](super::Session) and a page's parameters or form come in; a rendered page,
//! a redirect after a form, or (for the invoke panel and the live logs) the raw answer goes
//! out. They call the registry, store, queue, scheduler and skills as the REST API does.
//!
//! One file per page group: [`signin`], [`overview`], [`functions`], [`activations`],
//! [`skills`] and [`queue`]; here, what they share.

mod activations;
mod functions;
mod overview;
mod queue;
mod signin;
mod skills;

pub use activations::{activation, activation_screenshot, activations, replay};
pub use functions::{deploy, function, functions, invoke, logs, remove, remove_form, scale};
pub use overview::overview;
pub use queue::{queue, retry, schedules};
pub use signin::{login, login_form, logout};
pub use skills::{skills, try_utterance};

use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::UiError;
use crate::server::RawBody;

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
            "replayed" => "Replayed: this is the new call.",
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

/// A form that carries nothing but its CSRF token (sign-out, remove, retry).
#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// An activation as the pages show it.
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
