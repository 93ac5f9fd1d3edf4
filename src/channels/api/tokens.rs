//! `/system/tokens` and `/system/keys`: token and key management requests come in (mint,
//! list, revoke, rotate the admin token, rotate and retire signing keys); records of
//! tokens and keys go out, never a key and never a token other than one just minted.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth::{scope, KeyInfo, Ttl};
use crate::error::ApiError;
use crate::server::{AppState, RawBody};
use crate::store::TokenRecord;

use super::openapi::ErrorBody;

#[derive(Deserialize, utoipa::ToSchema)]
struct TokenRequest {
    #[serde(default)]
    subject: Option<String>,
    scopes: Vec<String>,
    /// `30m`, `12h`, `7d` (at most a year) or `never`; 24h when omitted.
    #[serde(default)]
    ttl: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub token: String,
    /// The token's id, for `hark token revoke`.
    pub id: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/system/tokens", tag = "tokens", description = "Issues an API token with the given scopes, living `ttl` (default 24h; `never` must be asked for). A token never outlives, nor grants more than, the token that mints it.", security(("bearer" = [])), request_body = TokenRequest, responses((status = 201, description = "The token", body = TokenResponse), (status = 400, description = "Unknown scope, bad subject or bad ttl", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let caller = state.auth.check(&headers, scope::TOKENS_WRITE).await?;
    let request: TokenRequest = body.json()?;
    if request.scopes.is_empty() {
        return Err(ApiError::bad_request("give at least one scope"));
    }
    if let Some(unknown) = request.scopes.iter().find(|s| !scope::is_known(s)) {
        return Err(crate::auth::AuthError::UnknownScope(unknown.clone()).into());
    }
    if let Some(beyond) = request.scopes.iter().find(|s| !caller.covers(s)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("cannot grant {beyond:?}: the calling token does not hold it"),
        ));
    }
    let ttl: Ttl = match &request.ttl {
        None => Ttl::default(),
        Some(t) => t
            .parse()
            .map_err(|e: crate::auth::TtlError| ApiError::bad_request(e.to_string()))?,
    };
    // A token never outlives the token that minted it: otherwise a short-lived token
    // (a leaked CI token, say) could mint itself a permanent one.
    let ttl = match caller.exp {
        None => ttl,
        Some(exp) => ttl.at_most(Duration::from_secs(
            exp.saturating_sub(jsonwebtoken::get_current_timestamp()),
        )),
    };
    let subject = request.subject.unwrap_or_else(|| "token".to_owned());
    let (token, record) = state
        .auth
        .mint(&subject, &request.scopes, ttl, false)
        .await?;
    tracing::info!(id = %record.id, subject = ?record.subject, scopes = ?record.scopes, by = ?caller.sub, %ttl, "token minted");
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            token,
            id: record.id,
            scopes: record.scopes,
            expires_at: record.expires_at,
        }),
    ))
}

#[utoipa::path(get, path = "/system/tokens", tag = "tokens", description = "Every token the gateway minted, newest first: id, subject, scopes, times (never the token).", security(("bearer" = [])), responses((status = 200, description = "The tokens", body = Vec<TokenRecord>), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    state.auth.check(&headers, scope::TOKENS_WRITE).await?;
    Ok(Json(state.auth.tokens().await?))
}

#[utoipa::path(delete, path = "/system/tokens/{id}", tag = "tokens", description = "Revokes a token: from now on it answers 401 on every gateway sharing the store, and its web UI sessions end. Only a token holding every scope of the revoked one may revoke it.", security(("bearer" = [])), params(("id" = String, Path, description = "The token's id")), responses((status = 200, description = "Revoked", body = TokenRecord), (status = 404, description = "No such token", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TokenRecord>, ApiError> {
    let caller = state.auth.check(&headers, scope::TOKENS_WRITE).await?;
    let not_found = || ApiError::not_found(format!("no token with id {id:?}"));
    let target = state.auth.token(&id).await?.ok_or_else(not_found)?;
    if let Some(beyond) = target.scopes.iter().find(|s| !caller.covers(s)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("cannot revoke a token with {beyond:?}: the calling token does not hold it"),
        ));
    }
    state.auth.revoke(&id).await?;
    tracing::info!(id = %target.id, subject = ?target.subject, by = ?caller.sub, "token revoked");
    let record = state.auth.token(&id).await?.ok_or_else(not_found)?;
    Ok(Json(record))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminRotated {
    /// Where the new admin token is (on the gateway's host).
    pub path: String,
    /// The new admin token's id.
    pub id: String,
    /// Ids of the admin tokens revoked.
    pub revoked: Vec<String>,
}

#[utoipa::path(post, path = "/system/tokens/rotate-admin", tag = "tokens", description = "Replaces the admin token: a new one is written to the data directory's `admin-token` file (atomically), the earlier admin tokens are revoked, and tokens without an id (minted by older versions) are refused from now on. The new token is not in the answer.", security(("bearer" = [])), responses((status = 200, description = "Rotated", body = AdminRotated), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn rotate_admin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<AdminRotated>, ApiError> {
    let caller = state.auth.check(&headers, scope::ADMIN).await?;
    let rotation = state.auth.rotate_admin().await?;
    tracing::warn!(id = %rotation.token.id, revoked = ?rotation.revoked, by = ?caller.sub, file = %rotation.path.display(), "admin token rotated");
    Ok(Json(AdminRotated {
        path: rotation.path.display().to_string(),
        id: rotation.token.id,
        revoked: rotation.revoked,
    }))
}

#[utoipa::path(get, path = "/system/keys", tag = "tokens", description = "The signing keys' ids: the current one signs, the others still verify.", security(("bearer" = [])), responses((status = 200, description = "The keys", body = Vec<KeyInfo>), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    state.auth.check(&headers, scope::ADMIN).await?;
    Ok(Json(state.auth.keys()))
}

#[utoipa::path(post, path = "/system/keys", tag = "tokens", description = "Makes a new signing key current; tokens signed by the older keys still verify until those are retired.", security(("bearer" = [])), responses((status = 201, description = "The keys after the rotation", body = Vec<KeyInfo>), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn rotate_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Vec<KeyInfo>>), ApiError> {
    let caller = state.auth.check(&headers, scope::ADMIN).await?;
    let kid = state.auth.rotate_key()?;
    tracing::warn!(kid, by = ?caller.sub, "signing key rotated");
    Ok((StatusCode::CREATED, Json(state.auth.keys())))
}

#[utoipa::path(delete, path = "/system/keys/{kid}", tag = "tokens", description = "Retires an older signing key: every token it signed answers 401 from now on, on every gateway sharing the store.", security(("bearer" = [])), params(("kid" = String, Path, description = "The key's id")), responses((status = 200, description = "The keys left", body = Vec<KeyInfo>), (status = 404, description = "No such key", body = ErrorBody), (status = 409, description = "The key is the current one, or signed the admin token", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn retire_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(kid): Path<String>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    let caller = state.auth.check(&headers, scope::ADMIN).await?;
    state.auth.retire_key(&kid).await?;
    tracing::warn!(kid = ?kid, by = ?caller.sub, "signing key retired");
    Ok(Json(state.auth.keys()))
}
