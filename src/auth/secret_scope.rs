//! Which secrets a token may name in a deployment: a scope string comes in
//! (`secrets:use`, `secrets:use:github-key`, `secrets:use:hr-*`); whether it is well
//! formed, which secret names it lets a deployment name, and whether one grant lies
//! within another go out.
//!
//! A deployment naming a secret hands the secret's value to the code it deploys, so
//! naming one is reading it: `functions:write` alone does not allow it.

use super::scope;

/// The secret names one `secrets:use…` scope lets a deployment name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretGrant {
    /// Every secret (`secrets:use`, or `secrets:use:*`).
    All,
    /// The secrets whose names start with this (`secrets:use:hr-*`).
    Prefix(String),
    /// One secret (`secrets:use:github-key`).
    Exact(String),
}

impl SecretGrant {
    /// The grant a scope string names: None when it is not a `secrets:use` scope, or
    /// when its pattern is malformed (a `*` anywhere but at the end, or a character a
    /// secret name cannot hold).
    pub fn parse(scope: &str) -> Option<SecretGrant> {
        if scope == scope::SECRETS_USE {
            return Some(SecretGrant::All);
        }
        let pattern = scope.strip_prefix(scope::SECRETS_USE_PREFIX)?;
        let (stem, wildcard) = match pattern.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (pattern, false),
        };
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if stem.len() > 253 || !stem.chars().all(valid_char) || stem.starts_with('.') {
            return None;
        }
        Some(match (wildcard, stem.is_empty()) {
            (true, true) => SecretGrant::All,
            (true, false) => SecretGrant::Prefix(stem.to_owned()),
            (false, true) => return None,
            (false, false) => SecretGrant::Exact(stem.to_owned()),
        })
    }

    /// Whether a deployment may name secret `name` under this grant.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            SecretGrant::All => true,
            SecretGrant::Prefix(prefix) => name.starts_with(prefix.as_str()),
            SecretGrant::Exact(exact) => name == exact,
        }
    }

    /// Whether every name `other` allows, this allows too (so a token holding this may
    /// mint or revoke a token holding `other`).
    pub fn contains(&self, other: &SecretGrant) -> bool {
        match (self, other) {
            (SecretGrant::All, _) => true,
            (_, SecretGrant::All) => false,
            (SecretGrant::Prefix(p), SecretGrant::Prefix(q)) => q.starts_with(p.as_str()),
            (grant, SecretGrant::Exact(name)) => grant.matches(name),
            (SecretGrant::Exact(_), SecretGrant::Prefix(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SecretGrant::{self, *};

    fn grant(s: &str) -> SecretGrant {
        SecretGrant::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn scopes_parse_to_grants_and_malformed_patterns_are_refused() {
        assert_eq!(grant("secrets:use"), All);
        assert_eq!(grant("secrets:use:*"), All);
        assert_eq!(grant("secrets:use:hr-*"), Prefix("hr-".into()));
        assert_eq!(grant("secrets:use:github-key"), Exact("github-key".into()));
        for bad in [
            "secrets:use:",
            "secrets:use:h*r",
            "secrets:use:**",
            "secrets:use:../x",
            "secrets:use:.hidden",
            "secrets:use:a b",
            "secrets:usex",
            "secrets:read",
            "functions:write",
        ] {
            assert_eq!(SecretGrant::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_prefix_grant_matches_only_names_under_it() {
        let hr = grant("secrets:use:hr-*");
        assert!(hr.matches("hr-portal-password"));
        assert!(!hr.matches("github-key"));
        assert!(!hr.matches("hr"));
        assert!(grant("secrets:use:github-key").matches("github-key"));
        assert!(!grant("secrets:use:github-key").matches("github-key-2"));
        assert!(grant("secrets:use").matches("anything"));
    }

    #[test]
    fn a_grant_contains_only_narrower_grants() {
        let hr = grant("secrets:use:hr-*");
        assert!(hr.contains(&grant("secrets:use:hr-portal-*")));
        assert!(hr.contains(&grant("secrets:use:hr-portal")));
        assert!(hr.contains(&hr));
        assert!(!hr.contains(&All));
        assert!(!hr.contains(&grant("secrets:use:h*")));
        assert!(!hr.contains(&grant("secrets:use:github-key")));
        assert!(!grant("secrets:use:hr-portal").contains(&grant("secrets:use:hr-portal*")));
        assert!(All.contains(&hr));
    }
}
