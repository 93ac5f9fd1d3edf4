//! WebDriver capabilities: a function's name (and, for one call, the call's id) comes in;
//! the unguessable secret inside its `HARK_WEBDRIVER_URL` goes out, and a secret taken
//! from a request's path is checked against it in constant time.
//!
//! A function's secret is an HMAC of its name under a key kept in the data directory
//! (`webdriver.key`), so it stays the same across restarts (a container's environment,
//! and so its spec hash, does not change). A call's secret is random, held in memory
//! from the call's start and dropped at its end ([`CallCapability`]).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

/// The key's file in the data directory.
pub const KEY_FILE: &str = "webdriver.key";

/// Bytes of a secret (256 bits), written in URLs as hex.
const SECRET_BYTES: usize = 32;

/// Why the key could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("webdriver key {path}: {source}")]
    Key {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("webdriver key {0}: not {SECRET_BYTES} bytes long; remove it to get a new one")]
    Short(PathBuf),
}

/// A secret, as bytes.
type Secret = [u8; SECRET_BYTES];

/// Secrets of running calls, by (function, call id); a call id run twice at once has two.
type CallSecrets = HashMap<(String, String), Vec<Secret>>;

/// The secrets of every function and running call. Cloning shares them.
#[derive(Clone)]
pub struct Capabilities {
    inner: Arc<Inner>,
}

struct Inner {
    key: [u8; SECRET_BYTES],
    calls: Mutex<CallSecrets>,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capabilities(..)")
    }
}

impl Capabilities {
    /// Capabilities under a key that lives as long as this process.
    pub fn ephemeral() -> Capabilities {
        Capabilities::with_key(rand::random())
    }

    /// Capabilities under the key in `data/webdriver.key`, written (mode 0600) on first
    /// use.
    pub fn load_or_create(data: &Path) -> Result<Capabilities, CapabilityError> {
        let path = data.join(KEY_FILE);
        let io = |source| CapabilityError::Key {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; SECRET_BYTES] = bytes
                    .try_into()
                    .map_err(|_| CapabilityError::Short(path.clone()))?;
                Ok(Capabilities::with_key(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; SECRET_BYTES] = rand::random();
                write_atomically(&path, &key).map_err(io)?;
                Ok(Capabilities::with_key(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn with_key(key: [u8; SECRET_BYTES]) -> Capabilities {
        Capabilities {
            inner: Arc::new(Inner {
                key,
                calls: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn function_secret(&self, function: &str) -> [u8; SECRET_BYTES] {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.inner.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"hark webdriver function\0");
        mac.update(function.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The WebDriver URL of `function` under the listener at `base`
    /// (e.g. `http://127.0.0.1:41234`), ending in `/` as WebDriver clients expect.
    pub fn function_url(&self, base: &str, function: &str) -> String {
        let base = base.trim_end_matches('/');
        let secret = hex::encode(self.function_secret(function));
        format!("{base}/webdriver/fn/{function}/k/{secret}/")
    }

    /// A secret for call `call_id` of `function`, valid until the returned guard drops;
    /// its URL names the call, so the call's leases end with it. `None` for a call id
    /// that cannot sit in a URL path.
    pub fn open_call(&self, base: &str, function: &str, call_id: &str) -> Option<CallCapability> {
        let sensible = !call_id.is_empty()
            && call_id.len() <= 128
            && call_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && call_id != "."
            && call_id != "..";
        if !sensible {
            return None;
        }
        let secret: [u8; SECRET_BYTES] = rand::random();
        let key = (function.to_owned(), call_id.to_owned());
        self.calls().entry(key.clone()).or_default().push(secret);
        let base = base.trim_end_matches('/');
        let url = format!(
            "{base}/webdriver/fn/{function}/call/{call_id}/k/{}/",
            hex::encode(secret)
        );
        Some(CallCapability {
            capabilities: self.clone(),
            key,
            secret,
            url,
        })
    }

    /// Whether `secret` (hex, from a request's path) is the secret of `function`, or of
    /// its running call `call`. Compared in constant time.
    pub fn check(&self, function: &str, call: Option<&str>, secret: &str) -> bool {
        let Some(given) = decode(secret) else {
            return false;
        };
        match call {
            None => bool::from(self.function_secret(function).ct_eq(&given)),
            Some(call) => {
                let calls = self.calls();
                let key = (function.to_owned(), call.to_owned());
                calls.get(&key).is_some_and(|secrets| {
                    // Every one is compared, so the time does not tell which matched.
                    secrets
                        .iter()
                        .fold(subtle::Choice::from(0), |found, s| found | s.ct_eq(&given))
                        .into()
                })
            }
        }
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, CallSecrets> {
        self.inner.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running call's capability; dropping it ends it.
pub struct CallCapability {
    capabilities: Capabilities,
    key: (String, String),
    secret: [u8; SECRET_BYTES],
    url: String,
}

impl CallCapability {
    /// The call's `HARK_WEBDRIVER_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Debug for CallCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCapability")
            .field("function", &self.key.0)
            .field("call", &self.key.1)
            .finish_non_exhaustive()
    }
}

impl Drop for CallCapability {
    fn drop(&mut self) {
        let mut calls = self.capabilities.calls();
        if let Some(secrets) = calls.get_mut(&self.key) {
            secrets.retain(|s| !bool::from(s.ct_eq(&self.secret)));
            if secrets.is_empty() {
                calls.remove(&self.key);
            }
        }
    }
}

/// A secret from a URL: exactly [`SECRET_BYTES`] bytes of hex.
fn decode(secret: &str) -> Option<[u8; SECRET_BYTES]> {
    if secret.len() != SECRET_BYTES * 2 {
        return None;
    }
    let mut out = [0u8; SECRET_BYTES];
    hex::decode_to_slice(secret, &mut out).ok()?;
    Some(out)
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file that is synced and
/// renamed over it, so a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_of(url: &str) -> &str {
        url.trim_end_matches('/').rsplit('/').next().unwrap()
    }

    #[test]
    fn a_function_secret_opens_only_its_function() {
        let caps = Capabilities::ephemeral();
        let url = caps.function_url("http://127.0.0.1:1/", "shop");
        assert!(
            url.starts_with("http://127.0.0.1:1/webdriver/fn/shop/k/"),
            "{url}"
        );
        assert!(url.ends_with('/'));
        let secret = secret_of(&url);
        assert_eq!(secret.len(), 64);
        assert!(caps.check("shop", None, secret));
        assert!(!caps.check("other", None, secret));
        assert!(!caps.check("shop", Some("c1"), secret));
        assert!(!caps.check("shop", None, &secret[..62]));
        assert!(!caps.check("shop", None, ""));
        // Another key, another secret.
        assert!(!Capabilities::ephemeral().check("shop", None, secret));
    }

    #[test]
    fn a_call_secret_lives_as_long_as_its_guard() {
        let caps = Capabilities::ephemeral();
        let call = caps.open_call("http://h:1", "shop", "c1").unwrap();
        assert!(call
            .url()
            .starts_with("http://h:1/webdriver/fn/shop/call/c1/k/"));
        let secret = secret_of(call.url()).to_owned();
        assert!(caps.check("shop", Some("c1"), &secret));
        assert!(!caps.check("shop", Some("c2"), &secret));
        assert!(!caps.check("other", Some("c1"), &secret));
        assert!(!caps.check("shop", None, &secret));
        let twin = caps.open_call("http://h:1", "shop", "c1").unwrap();
        drop(call);
        assert!(!caps.check("shop", Some("c1"), &secret));
        assert!(caps.check("shop", Some("c1"), secret_of(twin.url())));
        assert!(caps.open_call("http://h:1", "shop", "a/b").is_none());
        assert!(caps.open_call("http://h:1", "shop", "..").is_none());
    }

    #[test]
    fn the_key_is_kept_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Capabilities::load_or_create(dir.path()).unwrap();
        let again = Capabilities::load_or_create(dir.path()).unwrap();
        assert_eq!(
            first.function_url("http://h", "f"),
            again.function_url("http://h", "f")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            Capabilities::load_or_create(dir.path()),
            Err(CapabilityError::Short(_))
        ));
    }
}
