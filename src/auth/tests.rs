use super::*;
use http::HeaderValue;
use jsonwebtoken::EncodingKey;

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// A gateway's auth over `dir` with its own connection to the store there: two of them
/// over one directory stand for two gateway processes sharing it.
async fn gateway(dir: &Path) -> Auth {
    let store = Store::open(&dir.join("hark.db")).unwrap();
    Auth::load_or_create(dir, store, false).await.unwrap().0
}

fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn refused(r: Result<Claims, AuthError>) -> String {
    match r {
        Err(AuthError::Invalid(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn scopes_expiry_and_forgery_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let auth = gateway(dir.path()).await;
    let (reader, record) = auth
        .mint(
            "ci",
            &scopes(&[scope::FUNCTIONS_READ]),
            "1m".parse().unwrap(),
            false,
        )
        .await
        .unwrap();
    assert!(record.expires_at.is_some());
    assert!(auth
        .check(&bearer(&reader), scope::FUNCTIONS_READ)
        .await
        .is_ok());
    assert!(matches!(
        auth.check(&bearer(&reader), scope::FUNCTIONS_WRITE).await,
        Err(AuthError::Forbidden(_))
    ));
    let other_dir = tempfile::tempdir().unwrap();
    let other = gateway(other_dir.path()).await;
    let (forged, _) = other
        .mint("x", &scopes(&[scope::ADMIN]), Ttl::Never, false)
        .await
        .unwrap();
    refused(auth.check(&bearer(&forged), scope::FUNCTIONS_READ).await);
    assert!(matches!(
        auth.check(&HeaderMap::new(), scope::FUNCTIONS_READ).await,
        Err(AuthError::Missing)
    ));
    // Expired: signed with the real key, with a recorded id, `exp` in the past.
    let ring = auth.ring();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(ring.current.kid.clone());
    let claims = Claims {
        sub: "old".into(),
        scopes: scopes(&[scope::ADMIN]),
        iat: 1,
        exp: Some(2),
        jti: Some(record.id.clone()),
    };
    let expired = jsonwebtoken::encode(&header, &claims, &ring.current.encoding).unwrap();
    refused(auth.check(&bearer(&expired), scope::FUNCTIONS_READ).await);
    // A well-signed token whose id the store never recorded.
    let claims = Claims {
        jti: Some("f".repeat(32)),
        exp: None,
        ..claims
    };
    let unrecorded = jsonwebtoken::encode(&header, &claims, &ring.current.encoding).unwrap();
    assert!(refused(auth.check(&bearer(&unrecorded), scope::ADMIN).await).contains("minted"));
    assert!(matches!(
        auth.mint("x", &scopes(&["root"]), Ttl::default(), false)
            .await,
        Err(AuthError::UnknownScope(_))
    ));
    for subject in ["", "a\nb", "evil\u{1b}[2J", &"x".repeat(129)] {
        assert!(
            matches!(
                auth.mint(subject, &scopes(&[scope::ADMIN]), Ttl::default(), false)
                    .await,
                Err(AuthError::BadSubject)
            ),
            "{subject:?}"
        );
    }
}

#[tokio::test]
async fn minted_tokens_live_a_day_unless_asked_and_carry_an_id_and_a_kid() {
    let dir = tempfile::tempdir().unwrap();
    let auth = gateway(dir.path()).await;
    let (token, record) = auth
        .mint(
            "ci",
            &scopes(&[scope::FUNCTIONS_READ]),
            Ttl::default(),
            false,
        )
        .await
        .unwrap();
    let life = record.expires_at.unwrap() - record.issued_at;
    assert_eq!(life.num_seconds(), 24 * 3600);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(record.kid.as_str()));
    assert_eq!(auth.keys()[0].kid, record.kid);
    let claims = auth
        .check_token(&token, scope::FUNCTIONS_READ)
        .await
        .unwrap();
    assert_eq!(claims.jti.as_deref(), Some(record.id.as_str()));
    assert!(!token.contains(&record.id) || token.len() > record.id.len());
    let listed = auth.tokens().await.unwrap();
    assert!(listed
        .iter()
        .any(|t| t.id == record.id && t.subject == "ci"));
    let (_, never) = auth
        .mint("ci", &scopes(&[scope::FUNCTIONS_READ]), Ttl::Never, false)
        .await
        .unwrap();
    assert_eq!(never.expires_at, None);
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once_by_every_gateway_sharing_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = gateway(dir.path()).await;
    let b = gateway(dir.path()).await;
    let (token, record) = a
        .mint(
            "ci",
            &scopes(&[scope::FUNCTIONS_READ]),
            Ttl::default(),
            false,
        )
        .await
        .unwrap();
    assert!(b.check_token(&token, scope::FUNCTIONS_READ).await.is_ok());
    assert!(a.revoke(&record.id).await.unwrap());
    assert!(refused(a.check_token(&token, scope::FUNCTIONS_READ).await).contains("revoked"));
    assert!(refused(b.check_token(&token, scope::FUNCTIONS_READ).await).contains("revoked"));
    assert!(!a.revoke("no-such-id").await.unwrap());
}

#[tokio::test]
async fn first_start_writes_a_private_admin_token_and_rotation_replaces_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hark.db")).unwrap();
    let (auth, written) = Auth::load_or_create(dir.path(), store.clone(), false)
        .await
        .unwrap();
    let path = written.expect("admin token written on first start");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let old = std::fs::read_to_string(&path).unwrap();
    assert!(auth
        .check(&bearer(old.trim()), scope::SECRETS_WRITE)
        .await
        .is_ok());
    let (again, written) = Auth::load_or_create(dir.path(), store, false)
        .await
        .unwrap();
    assert!(written.is_none(), "a good admin token is kept");
    assert!(again
        .check(&bearer(old.trim()), scope::SECRETS_WRITE)
        .await
        .is_ok());

    let other = gateway(dir.path()).await;
    let rotation = auth.rotate_admin().await.unwrap();
    assert_eq!(rotation.path, path);
    assert_eq!(rotation.revoked.len(), 1);
    let new = std::fs::read_to_string(&path).unwrap();
    assert_ne!(new, old);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for gw in [&auth, &again, &other] {
        assert!(refused(gw.check(&bearer(old.trim()), scope::ADMIN).await).contains("revoked"));
        assert!(gw.check(&bearer(new.trim()), scope::ADMIN).await.is_ok());
    }
}

#[tokio::test]
async fn tokens_without_an_id_are_accepted_until_the_admin_token_is_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let auth = gateway(dir.path()).await;
    // As an older version minted them: no `kid` in the header, no `jti`.
    let secret = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
    let claims = Claims {
        sub: "admin".into(),
        scopes: scopes(&[scope::ADMIN]),
        iat: 1,
        exp: None,
        jti: None,
    };
    let legacy = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&secret).unwrap(),
    )
    .unwrap();
    assert!(auth.check_token(&legacy, scope::ADMIN).await.is_ok());
    auth.rotate_admin().await.unwrap();
    assert!(refused(auth.check_token(&legacy, scope::ADMIN).await).contains("without an id"));
}

#[tokio::test]
async fn a_new_key_signs_old_tokens_still_verify_and_a_retired_key_verifies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = gateway(dir.path()).await;
    let b = gateway(dir.path()).await;
    let read = scopes(&[scope::FUNCTIONS_READ]);
    let (before, old) = a.mint("ci", &read, Ttl::default(), false).await.unwrap();
    let new_kid = a.rotate_key().unwrap();
    assert_ne!(new_kid, old.kid);
    let (after, record) = a.mint("ci", &read, Ttl::default(), false).await.unwrap();
    assert_eq!(record.kid, new_kid);
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid,
        Some(new_kid.clone())
    );
    // `b` learns the new key from the data directory when it first sees its kid.
    for gw in [&a, &b] {
        assert!(gw.check_token(&before, scope::FUNCTIONS_READ).await.is_ok());
        assert!(gw.check_token(&after, scope::FUNCTIONS_READ).await.is_ok());
    }
    assert!(matches!(
        a.retire_key(&new_kid).await,
        Err(AuthError::CurrentKey(_))
    ));
    assert!(matches!(
        a.retire_key("../../jwt").await,
        Err(AuthError::UnknownKey(_))
    ));
    assert!(matches!(
        a.retire_key(&old.kid).await,
        Err(AuthError::AdminTokenKey(_))
    ));
    a.rotate_admin().await.unwrap();
    a.retire_key(&old.kid).await.unwrap();
    // `a` forgot the key; `b` still holds it in memory, and the store tells it the key
    // is retired.
    assert!(refused(a.check_token(&before, scope::FUNCTIONS_READ).await).contains("unknown key"));
    assert!(refused(b.check_token(&before, scope::FUNCTIONS_READ).await).contains("retired"));
    for gw in [&a, &b] {
        assert!(gw.check_token(&after, scope::FUNCTIONS_READ).await.is_ok());
    }
    assert_eq!(
        a.keys(),
        vec![KeyInfo {
            kid: new_kid,
            current: true
        }]
    );
    assert!(!dir
        .path()
        .join(OLD_KEYS_DIR)
        .join(format!("{}.key", old.kid))
        .exists());
}

#[tokio::test]
async fn ui_sessions_hold_no_token_and_end_with_sign_out_or_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let auth = gateway(dir.path()).await;
    let other = gateway(dir.path()).await;
    let (token, record) = auth
        .mint(
            "ops",
            &scopes(&[scope::FUNCTIONS_READ]),
            Ttl::default(),
            false,
        )
        .await
        .unwrap();
    let (id, claims) = auth
        .start_session(&token, scope::FUNCTIONS_READ)
        .await
        .unwrap();
    assert_eq!(claims.sub, "ops");
    assert_eq!(id.len(), 64);
    assert!(!id.contains(&token));
    let seen = other.session(&id).await.unwrap();
    assert_eq!(seen.sub, "ops");
    assert!(
        seen.exp.unwrap() <= claims.exp.unwrap(),
        "a session never outlives its token"
    );
    auth.end_session(&id).await.unwrap();
    refused(other.session(&id).await);

    let (id, _) = auth
        .start_session(&token, scope::FUNCTIONS_READ)
        .await
        .unwrap();
    assert!(auth.session(&id).await.is_ok());
    auth.revoke(&record.id).await.unwrap();
    refused(other.session(&id).await);
    refused(auth.session("not-a-session").await);
    assert!(matches!(
        auth.start_session(&token, scope::FUNCTIONS_READ).await,
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn secret_scopes_are_minted_checked_and_covered() {
    let dir = tempfile::tempdir().unwrap();
    let auth = gateway(dir.path()).await;
    let (token, _) = auth
        .mint(
            "hr",
            &scopes(&[scope::FUNCTIONS_WRITE, "secrets:use:hr-*"]),
            Ttl::default(),
            false,
        )
        .await
        .unwrap();
    let claims = auth
        .check(&bearer(&token), scope::FUNCTIONS_WRITE)
        .await
        .unwrap();
    assert!(claims.may_use_secret("hr-portal-password"));
    assert!(!claims.may_use_secret("github-key"));
    assert!(!claims.allows(scope::SECRETS_USE));
    assert!(claims.covers("secrets:use:hr-portal"));
    assert!(!claims.covers(scope::SECRETS_USE));
    assert!(!claims.covers("secrets:use:github-key"));
    let writer = Claims {
        scopes: scopes(&[scope::FUNCTIONS_WRITE]),
        ..claims.clone()
    };
    assert!(!writer.may_use_secret("hr-portal-password"));
    let admin = Claims {
        scopes: scopes(&[scope::ADMIN]),
        ..claims
    };
    assert!(admin.may_use_secret("github-key") && admin.covers("secrets:use:x*"));
    assert!(matches!(
        auth.mint("x", &scopes(&["secrets:use:h*r"]), Ttl::default(), false)
            .await,
        Err(AuthError::UnknownScope(_))
    ));
}
