//! Secret names from `hark.yml` in, secret values out. A route never holds a secret value in
//! the file: it names a secret, looked up first in Hark's secret store (`hark secret create`)
//! and then in the environment variable `HARK_SECRET_<NAME>` (upper case, every character
//! other than a letter or digit turned into `_`). The store wins when both have it. Values
//! are read once, when `hark up` starts.

use std::sync::Arc;

use crate::store::{Store, StoreError};

/// Prefix of the environment variables that may hold channel secrets.
pub const ENV_PREFIX: &str = "HARK_SECRET_";

/// The environment variable that may hold secret `name`: `gh-app.key` → `HARK_SECRET_GH_APP_KEY`.
pub fn env_name(name: &str) -> String {
    let suffix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{ENV_PREFIX}{suffix}")
}

/// Reads an environment variable.
type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Resolves secret names: the store first, then the environment.
#[derive(Clone)]
pub struct Secrets {
    store: Store,
    env: EnvLookup,
}

impl Secrets {
    /// Secrets from `store` and the process environment.
    pub fn new(store: Store) -> Secrets {
        Secrets::with_env(store, |var| std::env::var(var).ok())
    }

    /// Secrets from `store` and `env` (for tests).
    pub fn with_env(
        store: Store,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Secrets {
        Secrets {
            store,
            env: Arc::new(env),
        }
    }

    /// The value of secret `name`, or `None` when neither place has it. An empty
    /// environment variable counts as unset.
    pub async fn resolve(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.store.secret(name).await? {
            return Ok(Some(value));
        }
        Ok((self.env)(&env_name(name))
            .filter(|v| !v.is_empty())
            .map(String::into_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_upper_snake_case() {
        assert_eq!(env_name("slack-signing"), "HARK_SECRET_SLACK_SIGNING");
        assert_eq!(env_name("gh.app key"), "HARK_SECRET_GH_APP_KEY");
    }

    #[tokio::test]
    async fn the_store_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hark.db")).unwrap();
        store
            .put_secret("both", b"from-store".to_vec())
            .await
            .unwrap();
        let secrets = Secrets::with_env(store, |var| match var {
            "HARK_SECRET_BOTH" => Some("from-env".into()),
            "HARK_SECRET_ENV_ONLY" => Some("env-value".into()),
            "HARK_SECRET_EMPTY" => Some(String::new()),
            _ => None,
        });
        assert_eq!(
            secrets.resolve("both").await.unwrap().unwrap(),
            b"from-store"
        );
        assert_eq!(
            secrets.resolve("env-only").await.unwrap().unwrap(),
            b"env-value"
        );
        assert_eq!(secrets.resolve("empty").await.unwrap(), None);
        assert_eq!(secrets.resolve("nowhere").await.unwrap(), None);
    }
}
