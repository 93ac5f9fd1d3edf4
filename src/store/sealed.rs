//! Secrets at rest: a secret's clear value and name come in; AES-256-GCM ciphertext (a
//! random 96-bit nonce per value, the name as associated data, so a value cannot be moved
//! to another name) goes out, and back. The 256-bit key is kept outside the store: in a key
//! file (mode 0600, created on first start, by default `secret.key` beside `hark.db`) or in
//! the environment variable `HARK_SECRET_KEY` (base64), never in the database and never in
//! a log. A check value sealed with the key is stored, so a wrong key is refused at start
//! with an error naming where the key came from, instead of yielding garbage later.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;

/// Environment variable holding the key itself (base64 of 32 bytes), instead of a file.
pub const ENV_SECRET_KEY: &str = "HARK_SECRET_KEY";
/// Environment variable naming the key file (`hark up --secret-key-file`).
pub const ENV_SECRET_KEY_FILE: &str = "HARK_SECRET_KEY_FILE";
/// The key file's name beside the database when no other place is given.
pub const DEFAULT_KEY_FILE: &str = "secret.key";

const KEY_LEN: usize = 32;
/// Associated data of the key check value (secret names cannot contain ':').
const CHECK_AAD: &[u8] = b"hark:key-check";
const CHECK_TEXT: &[u8] = b"hark secret key check v1";

/// Where the key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A key file, created (mode 0600) when missing and the store has no sealed secrets.
    File(PathBuf),
    /// The value of `HARK_SECRET_KEY`.
    Env(String),
}

impl KeySource {
    /// `HARK_SECRET_KEY` if set, else the file `file`.
    pub fn from_env_or(file: PathBuf) -> KeySource {
        match std::env::var(ENV_SECRET_KEY) {
            Ok(value) if !value.trim().is_empty() => KeySource::Env(value),
            _ => KeySource::File(file),
        }
    }

    /// Where the key is, for messages (never the key).
    pub fn describe(&self) -> String {
        match self {
            KeySource::File(path) => format!("key file {}", path.display()),
            KeySource::Env(_) => format!("environment variable {ENV_SECRET_KEY}"),
        }
    }
}

/// Why the secrets' key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the secrets of this store were sealed with a key that is missing: {0} does not exist; restore it (or set {ENV_SECRET_KEY}) — without it the stored secrets cannot be read")]
    Missing(String),
    #[error("{0} does not hold a secret key (base64 of 32 bytes)")]
    Malformed(String),
    #[error("{0} holds the wrong key: it does not open the secrets of this store; use the key the store was created with")]
    Wrong(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret {0:?} cannot be opened with the store's key (tampered with, or sealed with another key)")]
    Unreadable(String),
    #[error("sealing failed")]
    Seal,
}

/// The key that seals and opens secret values.
pub struct SecretKey {
    key: LessSafeKey,
    source: KeySource,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.source.describe())
    }
}

impl SecretKey {
    /// Loads the key from `source`. A missing key file is created with a new random key
    /// only when `may_create` (the store holds no sealed secret yet).
    pub fn load(source: KeySource, may_create: bool) -> Result<SecretKey, KeyError> {
        let text = match &source {
            KeySource::Env(value) => value.clone(),
            KeySource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    warn_if_readable_by_others(path);
                    text
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => {
                    create_key_file(path)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(KeyError::Missing(source.describe()))
                }
                Err(source_err) => {
                    return Err(KeyError::Io {
                        what: format!("reading {}", source.describe()),
                        source: source_err,
                    })
                }
            },
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == KEY_LEN)
            .ok_or_else(|| KeyError::Malformed(source.describe()))?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| KeyError::Malformed(source.describe()))?;
        Ok(SecretKey {
            key: LessSafeKey::new(key),
            source,
        })
    }

    /// Where the key came from, for messages.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// `nonce || ciphertext || tag` of `value`, bound to `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.seal_aad(name.as_bytes(), value)
    }

    /// The clear value of `sealed`, which must have been sealed for `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.open_aad(name.as_bytes(), sealed)
            .ok_or_else(|| KeyError::Unreadable(name.to_owned()))
    }

    /// The check value stored beside the secrets.
    pub fn check_value(&self) -> Result<Vec<u8>, KeyError> {
        self.seal_aad(CHECK_AAD, CHECK_TEXT)
    }

    /// Whether `check` was made by [`SecretKey::check_value`] with this key.
    pub fn verify_check(&self, check: &[u8]) -> Result<(), KeyError> {
        match self.open_aad(CHECK_AAD, check) {
            Some(text) if text == CHECK_TEXT => Ok(()),
            _ => Err(KeyError::Wrong(self.source.describe())),
        }
    }

    fn seal_aad(&self, aad: &[u8], value: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyError::Seal)?;
        let mut in_out = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| KeyError::Seal)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    fn open_aad(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let clear = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .ok()?;
        Some(clear.to_vec())
    }
}

/// Writes a new random key to `path` (mode 0600, never over an existing file); returns it.
/// Writes a new random key to `path` (mode 0600), which must not exist; the key's text.
pub fn create_key_file(path: &Path) -> Result<String, KeyError> {
    let io = |source| KeyError::Io {
        what: format!("creating the key file {}", path.display()),
        source,
    };
    let mut key = [0u8; KEY_LEN];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| KeyError::Seal)?;
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    tracing::info!(path = %path.display(), "created the key that seals stored secrets; back it up apart from the store");
    Ok(text)
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the secrets' key file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_in(dir: &Path) -> SecretKey {
        SecretKey::load(KeySource::File(dir.join("k")), true).unwrap()
    }

    #[test]
    fn values_round_trip_bound_to_their_name_with_a_fresh_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let key = key_in(dir.path());
        let a = key.seal("gh", b"lovelace").unwrap();
        let b = key.seal("gh", b"lovelace").unwrap();
        assert_ne!(a, b, "same nonce twice");
        assert!(!a.windows(8).any(|w| w == b"lovelace"));
        assert_eq!(key.open("gh", &a).unwrap(), b"lovelace");
        // Moved to another name, or altered, it does not open.
        assert!(matches!(
            key.open("other", &a),
            Err(KeyError::Unreadable(_))
        ));
        let mut bad = a.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(key.open("gh", &bad).is_err());
        assert!(key.open("gh", b"short").is_err());
        let mode = std::fs::metadata(dir.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_wrong_missing_or_malformed_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let check = key_in(dir.path()).check_value().unwrap();
        key_in(dir.path()).verify_check(&check).unwrap();
        let other = SecretKey::load(KeySource::File(dir.path().join("k2")), true).unwrap();
        let e = other.verify_check(&check).unwrap_err().to_string();
        assert!(e.contains("wrong key") && e.contains("k2"), "{e}");
        let e = SecretKey::load(KeySource::File(dir.path().join("gone")), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("gone"), "{e}");
        let e = SecretKey::load(KeySource::Env("not base64!".into()), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(ENV_SECRET_KEY), "{e}");
    }
}
