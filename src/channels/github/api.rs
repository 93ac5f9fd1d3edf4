//! GitHub REST API calls for replies: a function's output and the delivery's issue come in;
//! an issue comment or labels go out, authorised by a GitHub App installation token (minted
//! from an RS256 JWT and cached until shortly before it expires) or a personal token.
//!
//! App auth: <https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app>
//! and <https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app>.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::{Duration, Instant};

use crate::channels::common::delivery::SendError;
use crate::channels::common::Outbound;

/// `Accept` GitHub recommends for its REST API.
pub const ACCEPT: &str = "application/vnd.github+json";
/// The REST API version Hark speaks.
pub const API_VERSION: &str = "2022-11-28";
/// How far in the past the JWT's `iat` is set, against clock drift (GitHub's advice).
pub const JWT_BACKDATE_SECS: i64 = 60;
/// The JWT's lifetime from now; GitHub allows at most 10 minutes.
pub const JWT_LIFETIME_SECS: i64 = 9 * 60;
/// An installation token is renewed this long before its `expires_at`.
pub const TOKEN_RENEW_BEFORE_SECS: i64 = 5 * 60;
/// How long replies to GitHub are retried.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(120);

/// Why a reply could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("signing the app JWT: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("unexpected answer from GitHub: {0}")]
    Answer(String),
    #[error("the delivery has no {0}")]
    Missing(&'static str),
    #[error("the function's output is not a list of labels: {0}")]
    Labels(String),
    /// `repository.full_name` is not `OWNER/REPO` of GitHub's name characters.
    #[error("repository.full_name {0:?} is not OWNER/REPO")]
    Repo(String),
    #[error("the API base URL {0:?} is not an absolute URL")]
    Api(String),
}

/// `api` with `segments` appended as path segments (each percent-encoded, never read as
/// `/`, `?`, `#` or a dot segment), so nothing from a delivery can change the request's
/// host or climb out of the API's path.
pub fn api_url(api: &str, segments: &[&str]) -> Result<url::Url, ReplyError> {
    let mut url = url::Url::parse(api).map_err(|_| ReplyError::Api(api.to_owned()))?;
    url.path_segments_mut()
        .map_err(|()| ReplyError::Api(api.to_owned()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Whether `name` is a GitHub owner or repository name: letters, digits, `-`, `_`, `.`,
/// not a dot segment.
fn is_github_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The claims of a GitHub App JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClaims {
    pub iat: i64,
    pub exp: i64,
    /// The App id, as text (GitHub accepts the id or the client id).
    pub iss: String,
}

/// A GitHub App's id and private key, and its cached installation tokens.
pub struct AppCredentials {
    pub id: u64,
    key: EncodingKey,
    tokens: Mutex<HashMap<u64, CachedToken>>,
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires_at: i64,
}

impl AppCredentials {
    /// Reads the App's PEM private key (PKCS#1, as GitHub issues it, or PKCS#8).
    pub fn new(id: u64, pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(AppCredentials {
            id,
            key: EncodingKey::from_rsa_pem(pem)?,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The claims of a JWT minted at `now` (unix seconds).
    pub fn claims(&self, now: i64) -> AppClaims {
        AppClaims {
            iat: now - JWT_BACKDATE_SECS,
            exp: now + JWT_LIFETIME_SECS,
            iss: self.id.to_string(),
        }
    }

    /// An RS256 JWT identifying the App.
    pub fn jwt(&self, now: i64) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &self.claims(now), &self.key)
    }

    fn cached(&self, installation: u64, now: i64) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(&installation)
            .filter(|t| t.expires_at - TOKEN_RENEW_BEFORE_SECS > now)
            .map(|t| t.token.clone())
    }

    /// An installation token: from the cache, or exchanged for a new JWT.
    pub async fn installation_token(
        &self,
        outbound: &Outbound,
        api: &str,
        installation: u64,
    ) -> Result<String, ReplyError> {
        let now = Utc::now().timestamp();
        if let Some(token) = self.cached(installation, now) {
            return Ok(token);
        }
        let jwt = self.jwt(now)?;
        let installation_id = installation.to_string();
        let url = api_url(
            api,
            &["app", "installations", &installation_id, "access_tokens"],
        )?;
        let response = outbound
            .send(
                "github installation token",
                Instant::now() + REPLY_DEADLINE,
                |client| {
                    client
                        .post(url.clone())
                        .bearer_auth(&jwt)
                        .header("accept", ACCEPT)
                        .header("x-github-api-version", API_VERSION)
                },
            )
            .await?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: String,
            expires_at: DateTime<Utc>,
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| ReplyError::Answer(format!("access_tokens: {e}")))?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(
            installation,
            CachedToken {
                token: answer.token.clone(),
                expires_at: answer.expires_at.timestamp(),
            },
        );
        Ok(answer.token)
    }
}

/// How a route authenticates to the REST API.
pub enum ApiAuth {
    /// No credentials: the route cannot reply.
    None,
    /// A personal (or fine-grained) access token.
    Token(String),
    /// A GitHub App; the installation comes from each delivery.
    App(AppCredentials),
}

/// Where on GitHub a delivery's reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `owner/repo`.
    pub repo: String,
    /// Issue or pull-request number.
    pub number: u64,
    /// The App installation that sent the delivery.
    pub installation: Option<u64>,
}

impl Target {
    /// The issue or pull request a payload is about, if any.
    pub fn of(payload: &Value) -> Result<Target, ReplyError> {
        let repo = payload["repository"]["full_name"]
            .as_str()
            .ok_or(ReplyError::Missing("repository.full_name"))?;
        match repo.split_once('/') {
            Some((owner, name)) if is_github_name(owner) && is_github_name(name) => {}
            _ => return Err(ReplyError::Repo(repo.chars().take(200).collect())),
        }
        let number = payload["issue"]["number"]
            .as_u64()
            .or_else(|| payload["pull_request"]["number"].as_u64())
            .or_else(|| payload["number"].as_u64())
            .ok_or(ReplyError::Missing("issue or pull request number"))?;
        Ok(Target {
            repo: repo.to_owned(),
            number,
            installation: payload["installation"]["id"].as_u64(),
        })
    }
}

/// The labels a function printed: `["bug", "triage"]` or `{"labels": [...]}`.
pub fn parse_labels(output: &[u8]) -> Result<Vec<String>, ReplyError> {
    let text = String::from_utf8_lossy(output);
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| ReplyError::Labels(e.to_string()))?;
    let list = match &value {
        Value::Array(_) => &value,
        Value::Object(o) => o
            .get("labels")
            .ok_or_else(|| ReplyError::Labels("object without labels".into()))?,
        _ => return Err(ReplyError::Labels("neither a list nor an object".into())),
    };
    let labels = list
        .as_array()
        .ok_or_else(|| ReplyError::Labels("labels is not a list".into()))?
        .iter()
        .map(|l| l.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ReplyError::Labels("a label is not a string".into()))?;
    Ok(labels)
}

/// Sends `body` as `POST {api}/repos/OWNER/REPO/issues/NUMBER/{last}` with the route's
/// credentials.
pub async fn post(
    outbound: &Outbound,
    auth: &ApiAuth,
    api: &str,
    target: &Target,
    what: &str,
    last: &str,
    body: Value,
) -> Result<(), ReplyError> {
    let (owner, repo) = target
        .repo
        .split_once('/')
        .ok_or_else(|| ReplyError::Repo(target.repo.clone()))?;
    let number = target.number.to_string();
    let url = api_url(api, &["repos", owner, repo, "issues", &number, last])?;
    let token = match auth {
        ApiAuth::None => return Err(ReplyError::Missing("credentials")),
        ApiAuth::Token(token) => token.clone(),
        ApiAuth::App(app) => {
            let installation = target
                .installation
                .ok_or(ReplyError::Missing("installation.id"))?;
            app.installation_token(outbound, api, installation).await?
        }
    };
    outbound
        .send(what, Instant::now() + REPLY_DEADLINE, |client| {
            client
                .post(url.clone())
                .bearer_auth(&token)
                .header("accept", ACCEPT)
                .header("x-github-api-version", API_VERSION)
                .json(&body)
        })
        .await?;
    Ok(())
}

/// Adds `text` as a comment on the target issue or pull request.
pub async fn comment(
    outbound: &Outbound,
    auth: &ApiAuth,
    api: &str,
    target: &Target,
    text: &str,
) -> Result<(), ReplyError> {
    post(
        outbound,
        auth,
        api,
        target,
        "github comment",
        "comments",
        json!({ "body": text }),
    )
    .await
}

/// Adds `labels` to the target issue or pull request.
pub async fn labels(
    outbound: &Outbound,
    auth: &ApiAuth,
    api: &str,
    target: &Target,
    labels: &[String],
) -> Result<(), ReplyError> {
    post(
        outbound,
        auth,
        api,
        target,
        "github labels",
        "labels",
        json!({ "labels": labels }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_as_a_list_or_an_object() {
        assert_eq!(parse_labels(b"[\"bug\", \"p1\"]\n").unwrap(), ["bug", "p1"]);
        assert_eq!(parse_labels(br#"{"labels":["x"]}"#).unwrap(), ["x"]);
        assert!(parse_labels(b"bug").is_err());
        assert!(parse_labels(b"[1]").is_err());
    }

    #[test]
    fn targets_come_from_issues_and_pull_requests() {
        let issue = json!({"repository": {"full_name": "o/r"}, "issue": {"number": 7}, "installation": {"id": 42}});
        assert_eq!(
            Target::of(&issue).unwrap(),
            Target {
                repo: "o/r".into(),
                number: 7,
                installation: Some(42)
            }
        );
        let pr =
            json!({"repository": {"full_name": "o/r"}, "number": 3, "pull_request": {"number": 3}});
        assert_eq!(Target::of(&pr).unwrap().number, 3);
        assert!(Target::of(&json!({"repository": {"full_name": "o/r"}})).is_err());
        for bad in [
            "../../orgs/evil/repos?",
            "o/r/../../user",
            "o/..",
            "o",
            "o/r#x",
            "o/r?x",
            "o/ r",
            "/r",
        ] {
            let payload = json!({"repository": {"full_name": bad}, "number": 1});
            assert!(
                matches!(Target::of(&payload), Err(ReplyError::Repo(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn api_urls_are_joined_by_segment() {
        let url = api_url(
            "https://ghe.example/api/v3/",
            &["repos", "o", "r.js", "issues", "7", "comments"],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://ghe.example/api/v3/repos/o/r.js/issues/7/comments"
        );
        let url = api_url("https://api.github.com", &["a/b", "..", "?x"]).unwrap();
        assert_eq!(url.host_str(), Some("api.github.com"));
        assert!(url.path().starts_with("/a%2Fb/"), "{url}");
        assert!(url.query().is_none(), "{url}");
        assert!(api_url("not a url", &["x"]).is_err());
    }
}
