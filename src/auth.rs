//! API tokens: a bearer JWT comes in, the caller's scopes (or a 401/403) go out.
//! Tokens are HS256, signed with a key generated into the data directory on first start.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// File in the data directory holding the signing key.
pub const KEY_FILE: &str = "jwt.key";
/// File in the data directory holding the admin token written on first start.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// What a token allows.
pub mod scope {
    /// Everything.
    pub const ADMIN: &str = "admin";
    /// List and describe functions, read their logs and activations.
    pub const FUNCTIONS_READ: &str = "functions:read";
    /// Deploy, update, scale and remove functions.
    pub const FUNCTIONS_WRITE: &str = "functions:write";
    /// Call functions annotated `hark.auth: required`.
    pub const FUNCTIONS_INVOKE: &str = "functions:invoke";
    /// List secret names.
    pub const SECRETS_READ: &str = "secrets:read";
    /// Create, update and remove secrets.
    pub const SECRETS_WRITE: &str = "secrets:write";
    /// Mint tokens.
    pub const TOKENS_WRITE: &str = "tokens:write";
    /// Every scope a token may carry.
    pub const ALL: &[&str] = &[
        ADMIN,
        FUNCTIONS_READ,
        FUNCTIONS_WRITE,
        FUNCTIONS_INVOKE,
        SECRETS_READ,
        SECRETS_WRITE,
        TOKENS_WRITE,
    ];
}

/// The claims of a Hark token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub scopes: Vec<String>,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

impl Claims {
    /// Whether the token grants `scope`.
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == scope::ADMIN)
    }
}

/// Why a request was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send Authorization: Bearer <token>")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token lacks the {0} scope")]
    Forbidden(&'static str),
    #[error("unknown scope {0:?}")]
    UnknownScope(String),
    #[error("token key {path}: {source}")]
    Key {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs and checks tokens.
pub struct Auth {
    /// The signing key, also the root of [`Auth::derive`]d values.
    secret: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Auth {
    /// Loads the key from `data_dir`, generating it (and an admin token) on first start.
    /// Returns the path of a newly written admin token, if one was written.
    pub fn load_or_create(data_dir: &Path) -> Result<(Auth, Option<PathBuf>), AuthError> {
        let key_path = data_dir.join(KEY_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AuthError::Key { path, source }
        };
        let (key, created) = match std::fs::read(&key_path) {
            Ok(key) => (key, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_private(&key_path, &key).map_err(io(&key_path))?;
                (key.to_vec(), true)
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        let auth = Auth::from_secret(&key)?;
        let token_path = data_dir.join(ADMIN_TOKEN_FILE);
        if created || !token_path.exists() {
            let token = auth.mint("admin", &[scope::ADMIN.to_owned()], None)?;
            write_private(&token_path, format!("{token}\n").as_bytes()).map_err(io(&token_path))?;
            return Ok((auth, Some(token_path)));
        }
        Ok((auth, None))
    }

    /// Tokens signed with `secret`.
    pub fn from_secret(secret: &[u8]) -> Result<Auth, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is checked when present; the admin token has none.
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;
        Ok(Auth {
            secret: secret.to_vec(),
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// A token for `subject` with `scopes`, expiring after `ttl` if given.
    pub fn mint(
        &self,
        subject: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<String, AuthError> {
        if let Some(unknown) = scopes.iter().find(|s| !scope::ALL.contains(&s.as_str())) {
            return Err(AuthError::UnknownScope(unknown.clone()));
        }
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: subject.to_owned(),
            scopes: scopes.to_vec(),
            iat: now,
            exp: ttl.map(|t| now + t.as_secs().max(1)),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// HMAC-SHA256 under the signing key of `purpose`, a zero byte and `data`, hex-encoded:
    /// a value only this gateway can compute, bound to `data` (the web UI's CSRF tokens).
    /// Distinct purposes give unrelated values, so one cannot stand in for another.
    pub fn derive(&self, purpose: &str, data: &[u8]) -> String {
        use hmac::{KeyInit, Mac};
        // HMAC accepts keys of every length, so `new_from_slice` cannot fail here.
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// The claims of `token`, if it is valid and grants `scope`.
    pub fn check_token(&self, token: &str, scope: &'static str) -> Result<Claims, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        if claims.allows(scope) {
            Ok(claims)
        } else {
            Err(AuthError::Forbidden(scope))
        }
    }

    /// The claims of the request's bearer token, if it grants `scope`.
    pub fn check(&self, headers: &HeaderMap, scope: &'static str) -> Result<Claims, AuthError> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        if claims.allows(scope) {
            Ok(claims)
        } else {
            Err(AuthError::Forbidden(scope))
        }
    }
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn scopes_expiry_and_forgery_are_checked() {
        let auth = Auth::from_secret(b"k").unwrap();
        let reader = auth
            .mint(
                "ci",
                &[scope::FUNCTIONS_READ.into()],
                Some(Duration::from_secs(60)),
            )
            .unwrap();
        assert!(auth.check(&bearer(&reader), scope::FUNCTIONS_READ).is_ok());
        assert!(matches!(
            auth.check(&bearer(&reader), scope::FUNCTIONS_WRITE),
            Err(AuthError::Forbidden(_))
        ));
        let other = Auth::from_secret(b"other").unwrap();
        let forged = other.mint("x", &[scope::ADMIN.into()], None).unwrap();
        assert!(matches!(
            auth.check(&bearer(&forged), scope::FUNCTIONS_READ),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.check(&HeaderMap::new(), scope::FUNCTIONS_READ),
            Err(AuthError::Missing)
        ));
        let claims = Claims {
            sub: "old".into(),
            scopes: vec![scope::ADMIN.into()],
            iat: 1,
            exp: Some(2),
        };
        let expired = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"k").unwrap(),
        )
        .unwrap();
        assert!(matches!(
            auth.check(&bearer(&expired), scope::FUNCTIONS_READ),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.mint("x", &["root".into()], None),
            Err(AuthError::UnknownScope(_))
        ));
    }

    #[test]
    fn first_start_writes_a_private_admin_token() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (auth, written) = Auth::load_or_create(dir.path()).unwrap();
        let path = written.expect("admin token written on first start");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(auth
            .check(&bearer(token.trim()), scope::SECRETS_WRITE)
            .is_ok());
        let (again, written) = Auth::load_or_create(dir.path()).unwrap();
        assert!(written.is_none());
        assert!(again
            .check(&bearer(token.trim()), scope::SECRETS_WRITE)
            .is_ok());
    }
}
