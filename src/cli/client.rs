//! The CLI's view of a gateway: typed calls go in; answers, or errors that say what to
//! do about them (gateway down, token refused, no such function), come out.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use http::StatusCode;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::ADMIN_TOKEN_FILE;

/// A gateway reached over HTTP.
pub struct Gateway {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Gateway {
    /// A client for the gateway at `base`, with `token` or else the admin token in `data`.
    pub fn new(base: &str, token: Option<String>, data: &Path) -> anyhow::Result<Gateway> {
        let token = token.filter(|t| !t.is_empty()).or_else(|| {
            std::fs::read_to_string(data.join(ADMIN_TOKEN_FILE))
                .ok()
                .map(|t| t.trim().to_owned())
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Gateway {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client,
        })
    }

    /// The gateway's base URL (`http://127.0.0.1:8080`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` with the token attached.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`; a network failure becomes an error naming the gateway.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot reach the gateway at {} (is `hark up` running? set --gateway or HARK_GATEWAY)", self.base)
            } else {
                anyhow!("request to the gateway at {} failed: {e}", self.base)
            }
        })
    }

    /// Sends `request` and fails on a non-2xx answer with the gateway's message.
    pub async fn expect_ok(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        Self::success(self.send(request).await?).await
    }

    /// `response` when it is a 2xx answer; otherwise an error with the gateway's message.
    pub async fn success(response: Response) -> anyhow::Result<Response> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(text);
        match status {
            StatusCode::UNAUTHORIZED => bail!(
                "the gateway refused the token (401): {message}; set HARK_TOKEN or --token, or run where the gateway's data directory is"
            ),
            StatusCode::FORBIDDEN => bail!("the token is not allowed to do this (403): {message}"),
            _ => bail!("{message} ({status})"),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.expect_ok(self.request(Method::GET, path)).await?;
        response
            .json()
            .await
            .context("reading the gateway's answer")
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<Response> {
        self.expect_ok(self.request(method, path).json(body)).await
    }
}
