//! API tokens and web UI sessions: a bearer JWT (or a UI session id) comes in; the caller's
//! claims, or a 401/403, go out. Tokens are HS256, signed with a key of the data directory
//! named by the `kid` in their header ([`keys`]). Every minted token carries an id (`jti`)
//! recorded in the store, and every check asks the store whether that id was revoked or
//! its key retired, so a revocation holds at once on every gateway sharing the store.
//!
//! Tokens without an id (minted before ids existed) still verify against any known key,
//! until `hark token rotate-admin` runs (or the key that signed them is retired): from then
//! on they are refused.

mod keys;
mod secret_scope;
mod ttl;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use keys::{write_private_atomic, KEY_FILE, MIN_KEY_LEN, OLD_KEYS_DIR};
pub use secret_scope::SecretGrant;
pub use ttl::{Ttl, TtlError, DEFAULT_TTL, MAX_TTL};

use crate::store::{Store, StoreError, TokenRecord, UiSession};
use keys::Keyring;

/// File in the data directory holding the admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Subject of the admin token.
pub const ADMIN_SUBJECT: &str = "admin";
/// The longest subject a token may carry.
pub const MAX_SUBJECT_LEN: usize = 128;
/// The longest a web UI session lasts (less when its token expires sooner).
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// How often an unknown `kid` may make the gateway re-read its key files (another gateway
/// sharing the data directory may have rotated the key).
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Name any secret in a deployment (which hands its value to the deployed code).
    /// `secrets:use:NAME` and `secrets:use:PREFIX*` allow only the secrets they match.
    pub const SECRETS_USE: &str = "secrets:use";
    /// What a scope allowing some secrets starts with: `secrets:use:hr-*`.
    pub const SECRETS_USE_PREFIX: &str = "secrets:use:";
    /// Mint, list and revoke tokens.
    pub const TOKENS_WRITE: &str = "tokens:write";
    /// Every scope a token may carry, but for the `secrets:use:PATTERN` ones.
    pub const ALL: &[&str] = &[
        ADMIN,
        FUNCTIONS_READ,
        FUNCTIONS_WRITE,
        FUNCTIONS_INVOKE,
        SECRETS_READ,
        SECRETS_WRITE,
        SECRETS_USE,
        TOKENS_WRITE,
    ];

    /// Whether a token may carry `scope`: one of [`ALL`], or a well-formed
    /// `secrets:use:PATTERN`.
    pub fn is_known(scope: &str) -> bool {
        ALL.contains(&scope) || super::SecretGrant::parse(scope).is_some()
    }
}

/// The claims of a Hark token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub scopes: Vec<String>,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The token's id; None on tokens minted before ids existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// Whether the token grants `scope`.
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == scope::ADMIN)
    }

    /// The secrets this token lets a deployment name.
    fn secret_grants(&self) -> impl Iterator<Item = SecretGrant> + '_ {
        let admin = self.allows(scope::ADMIN).then_some(SecretGrant::All);
        admin
            .into_iter()
            .chain(self.scopes.iter().filter_map(|s| SecretGrant::parse(s)))
    }

    /// Whether a deployment made with this token may name secret `name` (and so hand
    /// its value to the code it deploys).
    pub fn may_use_secret(&self, name: &str) -> bool {
        self.secret_grants().any(|g| g.matches(name))
    }

    /// Whether this token holds everything `scope` grants, so that it may mint or
    /// revoke a token carrying it: the scope itself (or admin), or for a
    /// `secrets:use…` scope a grant containing it (`secrets:use:hr-*` covers
    /// `secrets:use:hr-portal`).
    pub fn covers(&self, scope: &str) -> bool {
        if self.allows(scope) {
            return true;
        }
        match SecretGrant::parse(scope) {
            Some(wanted) => self.secret_grants().any(|g| g.contains(&wanted)),
            None => false,
        }
    }
}

/// Why a request was not let in, or a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send Authorization: Bearer <token>")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token lacks the {0} scope")]
    Forbidden(&'static str),
    #[error("unknown scope {0:?}: the scopes are admin, functions:read, functions:write, functions:invoke, secrets:read, secrets:write, secrets:use (or secrets:use:NAME, secrets:use:PREFIX*) and tokens:write")]
    UnknownScope(String),
    #[error("{0}")]
    Ttl(#[from] TtlError),
    #[error("a token subject is 1 to {MAX_SUBJECT_LEN} characters without control characters")]
    BadSubject,
    #[error("no signing key {0:?}")]
    UnknownKey(String),
    #[error("key {0} signs new tokens: rotate it first (hark token rotate-key)")]
    CurrentKey(String),
    #[error("key {0} signed the admin token: replace it first (hark token rotate-admin)")]
    AdminTokenKey(String),
    #[error("token key {path}: {source}")]
    Key {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already exists: keys are never replaced, remove it first or choose another directory", .0.display())]
    KeyExists(PathBuf),
    #[error("token key {path} is {len} bytes; a signing key must be at least {MIN_KEY_LEN} bytes (remove it to have a new one generated, which invalidates every token)")]
    ShortKey { path: PathBuf, len: usize },
    #[error("signing token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("token key {path} (key {ours}) is not the key the other gateways on this database sign with (key {agreed}): copy jwt.key, jwt-keys/ and admin-token from the first gateway's data directory")]
    NotTheSharedKey {
        path: PathBuf,
        ours: String,
        agreed: String,
    },
}

/// A signing key as `GET /system/keys` lists it (never the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub kid: String,
    /// This key signs new tokens; the others only verify.
    pub current: bool,
}

/// What `rotate-admin` did.
#[derive(Debug, Clone)]
pub struct AdminRotation {
    /// Where the new admin token was written.
    pub path: PathBuf,
    /// The new token's record.
    pub token: TokenRecord,
    /// Ids of the admin tokens revoked.
    pub revoked: Vec<String>,
}

/// Signs and checks tokens and UI sessions.
pub struct Auth {
    data_dir: PathBuf,
    keys: RwLock<Arc<Keyring>>,
    /// The key that signed at start: the root of [`Auth::derive`]d values.
    root: Vec<u8>,
    store: Store,
    validation: Validation,
    last_reload: Mutex<Option<Instant>>,
    secure_cookies: bool,
}

/// A verified token before its standing in the store is checked.
struct Verified {
    claims: Claims,
    /// The key that verified it.
    kid: String,
}

/// The `meta` key under which gateways sharing a database keep the id of the key they
/// sign tokens with.
const SIGNING_KEY: &str = "signing_key";

/// Gateways sharing a database must sign with one key: a token minted through one is
/// checked by all, and a gateway that made a key of its own would replace the admin token
/// of the others with its own. The first gateway's current key id is kept in the store; a
/// gateway whose keys do not include it is refused. One whose older keys include it was
/// rotated since (`hark token rotate-key`), and its new key becomes the agreed one.
async fn agree_on_signing_key(
    ring: &Keyring,
    store: &Store,
    data_dir: &Path,
) -> Result<(), AuthError> {
    let ours = ring.current.kid.clone();
    let agreed = store
        .first_meta(SIGNING_KEY, ours.clone().into_bytes())
        .await?;
    let agreed = String::from_utf8_lossy(&agreed).into_owned();
    if agreed == ours {
        return Ok(());
    }
    if ring.older.iter().any(|k| k.kid == agreed) {
        tracing::warn!(key = %ours, earlier = %agreed, "this gateway's signing key was rotated: the other gateways on the database need its key files too");
        store.set_meta(SIGNING_KEY, ours.into_bytes()).await?;
        return Ok(());
    }
    Err(AuthError::NotTheSharedKey {
        path: data_dir.join(keys::KEY_FILE),
        ours,
        agreed,
    })
}

/// The time of a claim's unix seconds (`iat`, `exp`), if it is one.
fn claim_time(secs: u64) -> Option<DateTime<Utc>> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
}

/// A new token for `subject` with `scopes`, signed with `ring`'s current key, and its
/// record (not yet stored).
fn sign(
    ring: &Keyring,
    subject: &str,
    scopes: &[String],
    ttl: Ttl,
    admin_file: bool,
) -> Result<(String, TokenRecord), AuthError> {
    if subject.is_empty()
        || subject.chars().count() > MAX_SUBJECT_LEN
        || subject.chars().any(char::is_control)
    {
        return Err(AuthError::BadSubject);
    }
    if let Some(unknown) = scopes.iter().find(|s| !scope::is_known(s)) {
        return Err(AuthError::UnknownScope(unknown.clone()));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let exp = ttl.expiry(now)?;
    let jti = hex::encode(rand::random::<[u8; 16]>());
    let claims = Claims {
        sub: subject.to_owned(),
        scopes: scopes.to_vec(),
        iat: now,
        exp,
        jti: Some(jti.clone()),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(ring.current.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &ring.current.encoding)?;
    let record = TokenRecord {
        id: jti,
        subject: subject.to_owned(),
        scopes: scopes.to_vec(),
        kid: ring.current.kid.clone(),
        issued_at: claim_time(now).unwrap_or_default(),
        expires_at: exp.and_then(claim_time),
        revoked_at: None,
        admin_file,
    };
    Ok((token, record))
}

/// Makes, in `dir`, the key files of gateways that will share one database, before any
/// of them starts (`hark keys`): the token signing key, an admin token signed with it,
/// and the key that seals secrets. Each gateway is given the same files (as Docker or
/// Swarm secrets), and the first to start records the token. Refuses a directory that
/// already holds any of them. Their paths.
pub fn make_shared_keys(dir: &Path) -> Result<[PathBuf; 3], AuthError> {
    use crate::store::sealed::{create_key_file, DEFAULT_KEY_FILE};
    let made = [
        dir.join(KEY_FILE),
        dir.join(ADMIN_TOKEN_FILE),
        dir.join(DEFAULT_KEY_FILE),
    ];
    if let Some(path) = made.iter().find(|path| path.exists()) {
        return Err(AuthError::KeyExists(path.clone()));
    }
    let [_, admin_token, sealing] = &made;
    let (ring, _) = Keyring::load(dir)?;
    let (token, _) = sign(
        &ring,
        ADMIN_SUBJECT,
        &[scope::ADMIN.to_owned()],
        Ttl::Never,
        true,
    )?;
    write_private_atomic(admin_token, format!("{token}\n").as_bytes()).map_err(|source| {
        AuthError::Key {
            path: admin_token.clone(),
            source,
        }
    })?;
    create_key_file(sealing).map_err(StoreError::from)?;
    Ok(made)
}

impl Auth {
    /// Loads the keys from `data_dir` (generating one on first start) and makes sure the
    /// admin token file holds a token this gateway accepts, writing a new one if not.
    /// Returns the path of a newly written admin token, if one was written.
    /// `secure_cookies`: the gateway is reached over https (its public URL says so).
    pub async fn load_or_create(
        data_dir: &Path,
        store: Store,
        secure_cookies: bool,
    ) -> Result<(Auth, Option<PathBuf>), AuthError> {
        let (ring, _) = Keyring::load(data_dir)?;
        if store.is_shared() {
            agree_on_signing_key(&ring, &store, data_dir).await?;
        }
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is checked when present; tokens minted with `--ttl never` have none.
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;
        let auth = Auth {
            data_dir: data_dir.to_owned(),
            root: ring.current.secret.clone(),
            keys: RwLock::new(Arc::new(ring)),
            store,
            validation,
            last_reload: Mutex::new(None),
            secure_cookies,
        };
        let token_path = data_dir.join(ADMIN_TOKEN_FILE);
        let refused = match std::fs::read_to_string(&token_path) {
            Ok(token) => match auth.check_token(token.trim(), scope::ADMIN).await {
                Ok(_) => return Ok((auth, None)),
                Err(AuthError::Store(e)) => return Err(e.into()),
                Err(_) if auth.adopt_admin_token(token.trim()).await? => return Ok((auth, None)),
                Err(e) => Some(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(AuthError::Key {
                    path: token_path,
                    source,
                })
            }
        };
        if let Some(e) = refused {
            tracing::warn!(file = %token_path.display(), error = %e, "the admin token file holds a token this gateway refuses; writing a new one");
        }
        let (token, record) = auth
            .mint(ADMIN_SUBJECT, &[scope::ADMIN.to_owned()], Ttl::Never, true)
            .await?;
        write_private_atomic(&token_path, format!("{token}\n").as_bytes()).map_err(|source| {
            AuthError::Key {
                path: token_path.clone(),
                source,
            }
        })?;
        // Admin tokens of earlier files stop working: only the file's token is the admin's.
        // (Tokens without an id keep working until an explicit rotate-admin.)
        auth.store.rotate_admin_token(&record.id, false).await?;
        Ok((auth, Some(token_path)))
    }

    /// Records the admin token file's token when it was made offline ([`make_shared_keys`],
    /// for gateways that share a database and are each given the same key files, e.g. as
    /// Swarm secrets): signed by one of this gateway's keys, an admin token that never
    /// expires, and never recorded (a revoked one stays refused). Earlier admin tokens are
    /// revoked, as when a gateway writes a new file. Gateways starting together each record
    /// it once. Whether it was adopted.
    async fn adopt_admin_token(&self, token: &str) -> Result<bool, AuthError> {
        let Ok(Verified { claims, kid }) = self.verify(token) else {
            return Ok(false);
        };
        let Some(jti) = claims.jti else {
            return Ok(false);
        };
        if claims.sub != ADMIN_SUBJECT || claims.scopes != [scope::ADMIN] || claims.exp.is_some() {
            return Ok(false);
        }
        let standing = self
            .store
            .token_standing(Some(jti.clone()), Some(kid.clone()))
            .await?;
        if standing.known || standing.key_retired {
            return Ok(false);
        }
        self.store
            .record_token(TokenRecord {
                id: jti.clone(),
                subject: claims.sub,
                scopes: claims.scopes,
                kid,
                issued_at: claim_time(claims.iat).unwrap_or_default(),
                expires_at: None,
                revoked_at: None,
                admin_file: true,
            })
            .await?;
        let revoked = self.store.rotate_admin_token(&jti, false).await?;
        tracing::info!(token = %jti, revoked = revoked.len(), "adopted the admin token of the admin token file (made offline for gateways that share the store)");
        Ok(true)
    }

    /// Whether the UI's cookies are `Secure` (with the `__Host-` name).
    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    fn ring(&self) -> Arc<Keyring> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_ring(&self, ring: Keyring) {
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(ring);
    }

    /// Re-reads the key files, at most once per [`KEY_RELOAD_INTERVAL`]; whether it did.
    fn reload_keys(&self) -> bool {
        let mut last = self
            .last_reload
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|t| t.elapsed() < KEY_RELOAD_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match Keyring::load(&self.data_dir) {
            Ok((ring, _)) => {
                self.set_ring(ring);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the signing keys failed");
                false
            }
        }
    }

    /// A token for `subject` with `scopes`, living `ttl`, signed with the current key and
    /// recorded in the store (before it is handed out). `admin_file`: the admin token.
    pub async fn mint(
        &self,
        subject: &str,
        scopes: &[String],
        ttl: Ttl,
        admin_file: bool,
    ) -> Result<(String, TokenRecord), AuthError> {
        let (token, record) = sign(&self.ring(), subject, scopes, ttl, admin_file)?;
        self.store.record_token(record.clone()).await?;
        Ok((token, record))
    }

    /// HMAC-SHA256 under the gateway's root key of `purpose`, a zero byte and `data`,
    /// hex-encoded: a value only this gateway can compute, bound to `data` (the web UI's
    /// CSRF tokens). Distinct purposes give unrelated values. The root is the key that
    /// signed when the gateway started; it changes on the first restart after a rotation.
    pub fn derive(&self, purpose: &str, data: &[u8]) -> String {
        use hmac::{KeyInit, Mac};
        // HMAC accepts keys of every length, so `new_from_slice` cannot fail here.
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.root)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks `token`'s signature and expiry against the known keys.
    fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::Invalid(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        let decode = |key: &keys::SigningKey| {
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation).map(|d| {
                Verified {
                    claims: d.claims,
                    kid: key.kid.clone(),
                }
            })
        };
        match header.kid {
            Some(kid) => {
                let mut ring = self.ring();
                if ring.find(&kid).is_none() && keys::is_kid(&kid) && self.reload_keys() {
                    ring = self.ring();
                }
                let key = ring
                    .find(&kid)
                    .ok_or_else(|| AuthError::Invalid("signed by an unknown key".to_owned()))?;
                decode(key).map_err(invalid)
            }
            // Minted before keys had ids: any known key may have signed it.
            None => {
                let ring = self.ring();
                let mut last = None;
                for key in ring.all() {
                    match decode(key) {
                        Ok(v) => return Ok(v),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.map_or_else(|| AuthError::Invalid("no key".to_owned()), invalid))
            }
        }
    }

    /// Refuses a token (or session) with id `jti` signed by `kid` that the store says is
    /// revoked, unknown, signed by a retired key, or without an id once those are refused.
    async fn check_standing(&self, jti: Option<&str>, kid: Option<&str>) -> Result<(), AuthError> {
        let standing = self
            .store
            .token_standing(jti.map(str::to_owned), kid.map(str::to_owned))
            .await?;
        let refused = if standing.key_retired {
            "signed by a retired key"
        } else if jti.is_some() && !standing.known {
            "not a token this gateway minted"
        } else if standing.revoked {
            "revoked"
        } else if jti.is_none() && standing.legacy_refused {
            "a token without an id, refused since the admin token was rotated; mint a new one"
        } else {
            return Ok(());
        };
        Err(AuthError::Invalid(refused.to_owned()))
    }

    async fn check_verified(
        &self,
        token: &str,
        scope: &'static str,
    ) -> Result<Verified, AuthError> {
        let verified = self.verify(token)?;
        self.check_standing(verified.claims.jti.as_deref(), Some(&verified.kid))
            .await?;
        if verified.claims.allows(scope) {
            Ok(verified)
        } else {
            Err(AuthError::Forbidden(scope))
        }
    }

    /// The claims of `token`, if it is valid, not revoked, and grants `scope`.
    pub async fn check_token(&self, token: &str, scope: &'static str) -> Result<Claims, AuthError> {
        Ok(self.check_verified(token, scope).await?.claims)
    }

    /// The claims of the request's bearer token, if it grants `scope`.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        scope: &'static str,
    ) -> Result<Claims, AuthError> {
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
        self.check_token(token, scope).await
    }

    /// Every recorded token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, AuthError> {
        Ok(self.store.tokens().await?)
    }

    /// One recorded token.
    pub async fn token(&self, jti: &str) -> Result<Option<TokenRecord>, AuthError> {
        Ok(self.store.token(jti).await?)
    }

    /// Revokes token `jti` (and ends its UI sessions); false when there is no such token.
    pub async fn revoke(&self, jti: &str) -> Result<bool, AuthError> {
        Ok(self.store.revoke_token(jti).await?)
    }

    /// Replaces the admin token: a new one is minted and written to the admin token file
    /// (atomically), then the earlier admin tokens, and tokens without an id, are refused.
    pub async fn rotate_admin(&self) -> Result<AdminRotation, AuthError> {
        let (token, record) = self
            .mint(ADMIN_SUBJECT, &[scope::ADMIN.to_owned()], Ttl::Never, true)
            .await?;
        let path = self.data_dir.join(ADMIN_TOKEN_FILE);
        if let Err(source) = write_private_atomic(&path, format!("{token}\n").as_bytes()) {
            // Nobody holds the new token: take it back.
            let _ = self.store.revoke_token(&record.id).await;
            return Err(AuthError::Key { path, source });
        }
        let revoked = self.store.rotate_admin_token(&record.id, true).await?;
        Ok(AdminRotation {
            path,
            token: record,
            revoked,
        })
    }

    /// The signing keys this gateway knows.
    pub fn keys(&self) -> Vec<KeyInfo> {
        let ring = self.ring();
        ring.all()
            .map(|k| KeyInfo {
                kid: k.kid.clone(),
                current: k.kid == ring.current.kid,
            })
            .collect()
    }

    /// Makes a new signing key current; the old one still verifies until retired.
    /// Returns the new key's id.
    pub fn rotate_key(&self) -> Result<String, AuthError> {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ring = keys::rotate(&self.data_dir, &keys)?;
        let kid = ring.current.kid.clone();
        *keys = Arc::new(ring);
        Ok(kid)
    }

    /// Retires the older key `kid`: tokens it signed are refused from now on by every
    /// gateway sharing the store, and its file is removed.
    pub async fn retire_key(&self, kid: &str) -> Result<(), AuthError> {
        let ring = self.ring();
        if !keys::is_kid(kid) || ring.find(kid).is_none() {
            return Err(AuthError::UnknownKey(kid.to_owned()));
        }
        if ring.current.kid == kid {
            return Err(AuthError::CurrentKey(kid.to_owned()));
        }
        // Retiring it would lock the operator out of the admin token file.
        let admin_signed = self
            .store
            .tokens()
            .await?
            .iter()
            .any(|t| t.admin_file && t.revoked_at.is_none() && t.kid == kid);
        if admin_signed {
            return Err(AuthError::AdminTokenKey(kid.to_owned()));
        }
        self.store.retire_key(kid).await?;
        keys::remove_old(&self.data_dir, kid)?;
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let older = keys
            .older
            .iter()
            .filter(|k| k.kid != kid)
            .cloned()
            .collect();
        *keys = Arc::new(Keyring {
            current: keys.current.clone(),
            older,
        });
        Ok(())
    }

    /// Signs a browser in with `token` (which must grant `scope`): a new session is stored
    /// under the hash of a random id; the id (for the cookie) and the claims come back.
    pub async fn start_session(
        &self,
        token: &str,
        scope: &'static str,
    ) -> Result<(String, Claims), AuthError> {
        let Verified { claims, kid } = self.check_verified(token, scope).await?;
        let id = hex::encode(rand::random::<[u8; 32]>());
        let now = Utc::now();
        let max = now + chrono::Duration::from_std(SESSION_MAX_AGE).unwrap_or_default();
        let expires_at = claims
            .exp
            .and_then(|e| i64::try_from(e).ok())
            .and_then(|e| DateTime::<Utc>::from_timestamp(e, 0))
            .map_or(max, |exp| exp.min(max));
        self.store
            .create_ui_session(
                &session_hash(&id),
                UiSession {
                    jti: claims.jti.clone(),
                    kid: Some(kid),
                    subject: claims.sub.clone(),
                    scopes: claims.scopes.clone(),
                    created_at: now,
                    expires_at,
                },
            )
            .await?;
        Ok((id, claims))
    }

    /// The claims of the session with id `id`, if it exists, has not expired and its
    /// token is still good.
    pub async fn session(&self, id: &str) -> Result<Claims, AuthError> {
        let gone = || AuthError::Invalid("no such session".to_owned());
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(gone());
        }
        let session = self
            .store
            .ui_session(&session_hash(id))
            .await?
            .ok_or_else(gone)?;
        self.check_standing(session.jti.as_deref(), session.kid.as_deref())
            .await?;
        Ok(Claims {
            sub: session.subject,
            scopes: session.scopes,
            iat: u64::try_from(session.created_at.timestamp()).unwrap_or_default(),
            exp: u64::try_from(session.expires_at.timestamp()).ok(),
            jti: session.jti,
        })
    }

    /// Ends the session with id `id`.
    pub async fn end_session(&self, id: &str) -> Result<(), AuthError> {
        Ok(self.store.delete_ui_session(&session_hash(id)).await?)
    }
}

/// The hash a session is stored under: a copy of the database holds no usable session id.
fn session_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

#[cfg(test)]
mod tests;
