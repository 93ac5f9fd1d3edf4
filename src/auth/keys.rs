//! Signing keys: the data directory's key files come in (`jwt.key`, the key that signs,
//! and `jwt-keys/KID.key`, older keys that still verify); a [`Keyring`] goes out. Each
//! key is named by its `kid`, a hash of the key, which every token's header carries.
//! Key files are written atomically (temp file, fsync, rename) and readable by their
//! owner only; a key shorter than [`MIN_KEY_LEN`] bytes is refused.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

use super::AuthError;

/// File in the data directory holding the key that signs new tokens.
pub const KEY_FILE: &str = "jwt.key";
/// Directory in the data directory holding older keys that still verify.
pub const OLD_KEYS_DIR: &str = "jwt-keys";
/// The shortest signing key accepted, in bytes (HS256 wants at least its hash size).
pub const MIN_KEY_LEN: usize = 32;
/// Length of a key id: hex digits of a hash of the key.
const KID_LEN: usize = 16;

/// One HMAC key with its id.
pub struct SigningKey {
    pub kid: String,
    pub(super) secret: Vec<u8>,
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
}

impl SigningKey {
    /// The key `secret` (at least [`MIN_KEY_LEN`] bytes), read from `path`.
    pub fn new(secret: &[u8], path: &Path) -> Result<SigningKey, AuthError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(AuthError::ShortKey {
                path: path.to_owned(),
                len: secret.len(),
            });
        }
        Ok(SigningKey {
            kid: kid_of(secret),
            secret: secret.to_vec(),
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
        })
    }
}

/// The id of key `secret`: the first 16 hex digits of a SHA-256 over a label and the key
/// (telling nothing about the key, and the same in every process that holds it).
pub fn kid_of(secret: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"hark-jwt-kid\0");
    hash.update(secret);
    let mut kid = hex::encode(hash.finalize());
    kid.truncate(KID_LEN);
    kid
}

/// Whether `kid` has the shape of a key id (so it is safe in a file name).
pub fn is_kid(kid: &str) -> bool {
    kid.len() == KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The keys a gateway knows: the current one signs, all of them verify.
pub struct Keyring {
    pub current: Arc<SigningKey>,
    pub older: Vec<Arc<SigningKey>>,
}

impl Keyring {
    /// The keys in `data_dir`, creating `jwt.key` on first start; whether it was created.
    pub fn load(data_dir: &Path) -> Result<(Keyring, bool), AuthError> {
        let path = data_dir.join(KEY_FILE);
        let (secret, created) = match std::fs::read(&path) {
            Ok(secret) => (secret, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                write_private_atomic(&path, &secret).map_err(key_error(&path))?;
                (secret.to_vec(), true)
            }
            Err(e) => return Err(key_error(&path)(e)),
        };
        let current = Arc::new(SigningKey::new(&secret, &path)?);
        let mut older = Vec::new();
        let dir = data_dir.join(OLD_KEYS_DIR);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(key_error(&dir))?;
                    let name = entry.file_name();
                    let Some(kid) = name.to_str().and_then(|n| n.strip_suffix(".key")) else {
                        continue;
                    };
                    if !is_kid(kid) || kid == current.kid {
                        continue;
                    }
                    let path = entry.path();
                    let secret = std::fs::read(&path).map_err(key_error(&path))?;
                    older.push(Arc::new(SigningKey::new(&secret, &path)?));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_error(&dir)(e)),
        }
        older.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok((Keyring { current, older }, created))
    }

    /// The key named `kid`.
    pub fn find(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.kid == kid)
    }

    /// Every key, the current one first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<SigningKey>> {
        std::iter::once(&self.current).chain(&self.older)
    }
}

/// Makes a new key current in `data_dir`: the current one is kept in `jwt-keys/` (it still
/// verifies), then the new one replaces `jwt.key`. Returns the new keyring.
pub fn rotate(data_dir: &Path, ring: &Keyring) -> Result<Keyring, AuthError> {
    let dir = data_dir.join(OLD_KEYS_DIR);
    std::fs::create_dir_all(&dir).map_err(key_error(&dir))?;
    let kept = dir.join(format!("{}.key", ring.current.kid));
    write_private_atomic(&kept, &ring.current.secret).map_err(key_error(&kept))?;
    let secret: [u8; 32] = rand::random();
    let path = data_dir.join(KEY_FILE);
    write_private_atomic(&path, &secret).map_err(key_error(&path))?;
    let mut older = vec![ring.current.clone()];
    older.extend(ring.older.iter().cloned());
    Ok(Keyring {
        current: Arc::new(SigningKey::new(&secret, &path)?),
        older,
    })
}

/// Forgets the older key `kid` (a checked key id) in `data_dir`.
pub fn remove_old(data_dir: &Path, kid: &str) -> Result<(), AuthError> {
    let path = data_dir.join(OLD_KEYS_DIR).join(format!("{kid}.key"));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(key_error(&path)(e)),
    }
}

fn key_error(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError {
    let path = path.to_owned();
    move |source| AuthError::Key { path, source }
}

/// Writes `contents` to `path` readable by its owner only, atomically: into a temp file
/// beside it, flushed to disk, renamed over `path`, and the directory flushed too. A crash
/// leaves the old file or the new one, never a torn one.
pub fn write_private_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp: PathBuf = dir.join(format!(
        ".{name}.tmp-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids_are_stable_and_shaped_and_short_keys_are_refused() {
        let a = kid_of(&[1u8; 32]);
        assert_eq!(a, kid_of(&[1u8; 32]));
        assert_ne!(a, kid_of(&[2u8; 32]));
        assert!(is_kid(&a), "{a}");
        for bad in [
            "../../etc/x",
            "",
            "0123456789abcdeg",
            "0123456789ABCDEF",
            "0123456789abcdef0",
        ] {
            assert!(!is_kid(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), [7u8; 31]).unwrap();
        let err = Keyring::load(dir.path())
            .err()
            .expect("a 31-byte key is refused");
        assert!(matches!(err, AuthError::ShortKey { len: 31, .. }), "{err}");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }

    #[test]
    fn rotation_keeps_the_old_key_verifying_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ring, created) = Keyring::load(dir.path()).unwrap();
        assert!(created);
        let first = ring.current.kid.clone();
        let rotated = rotate(dir.path(), &ring).unwrap();
        assert_ne!(rotated.current.kid, first);
        let (again, created) = Keyring::load(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again.current.kid, rotated.current.kid);
        assert!(again.find(&first).is_some(), "the old key still verifies");
        for path in [
            dir.path().join(KEY_FILE),
            dir.path().join(OLD_KEYS_DIR).join(format!("{first}.key")),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        remove_old(dir.path(), &first).unwrap();
        let (after, _) = Keyring::load(dir.path()).unwrap();
        assert!(after.find(&first).is_none());
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }
}
