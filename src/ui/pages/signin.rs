//! The sign-in page, signing in with a token and signing out.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::auth::scope;
use crate::error::ApiError;
use crate::server::{AppState, RawBody};
use crate::ui::{cookie, set_cookie, Session, UiError, LOGIN_COOKIE, LOGIN_PURPOSE};

use super::{form, see_other, CsrfForm, Done, Ui};

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
    match crate::ui::render_raw("login.html", ctx) {
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
            crate::ui::REFUSED,
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
                set_cookie(crate::ui::session_cookie_name(secure), &id, secure),
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
    let cleared = set_cookie(crate::ui::session_cookie_name(secure), "", secure);
    if let Ok(v) = HeaderValue::from_str(&cleared) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}
