use super::*;
use serde_json::json;

fn session(scopes: &[&str]) -> Session {
    Session {
        token: "t".into(),
        claims: Claims {
            sub: "admin".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            iat: 0,
            exp: None,
        },
        csrf: "abc123".into(),
    }
}

#[test]
fn cookies_are_found_among_others() {
    let mut h = HeaderMap::new();
    h.append(
        header::COOKIE,
        HeaderValue::from_static("a=1; hark_session=tok.en.x ; b=2"),
    );
    h.append(header::COOKIE, HeaderValue::from_static("hark_login=n0nce"));
    assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok.en.x"));
    assert_eq!(cookie(&h, LOGIN_COOKIE).as_deref(), Some("n0nce"));
    assert_eq!(cookie(&h, "missing"), None);
    h.insert(header::COOKIE, HeaderValue::from_static("hark_session="));
    assert_eq!(
        cookie(&h, SESSION_COOKIE),
        None,
        "an empty cookie is no session"
    );
}

#[test]
fn session_cookies_are_http_only_and_strict() {
    let set = set_cookie(SESSION_COOKIE, "tok");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui"),
        "{set}"
    );
    assert!(set_cookie(SESSION_COOKIE, "").contains("Max-Age=0"));
}

#[test]
fn csrf_tokens_are_checked_exactly() {
    let s = session(&[scope::ADMIN]);
    assert!(s.check_csrf(Some("abc123")).is_ok());
    assert!(matches!(s.check_csrf(Some("abc124")), Err(UiError::Csrf)));
    assert!(matches!(s.check_csrf(Some("")), Err(UiError::Csrf)));
    assert!(matches!(s.check_csrf(None), Err(UiError::Csrf)));
}

#[test]
fn derived_csrf_tokens_differ_by_session_and_purpose() {
    let auth = crate::auth::Auth::from_secret(&[7u8; 32]).unwrap();
    let a = auth.derive(CSRF_PURPOSE, b"token-a");
    assert_eq!(a, auth.derive(CSRF_PURPOSE, b"token-a"));
    assert_ne!(a, auth.derive(CSRF_PURPOSE, b"token-b"));
    assert_ne!(a, auth.derive(LOGIN_PURPOSE, b"token-a"));
    let other = crate::auth::Auth::from_secret(&[8u8; 32]).unwrap();
    assert_ne!(
        a,
        other.derive(CSRF_PURPOSE, b"token-a"),
        "another gateway's key"
    );
}

#[test]
fn scopes_are_required() {
    let reader = session(&[scope::FUNCTIONS_READ]);
    assert!(matches!(
        reader.require(scope::FUNCTIONS_WRITE),
        Err(UiError::Forbidden(_))
    ));
    assert!(session(&[scope::ADMIN])
        .require(scope::FUNCTIONS_WRITE)
        .is_ok());
}

/// Every page renders with realistic data, escapes what it shows, and carries the CSRF
/// token in each of its POST forms.
#[test]
fn every_page_renders_and_escapes() {
    let s = session(&[scope::ADMIN]);
    let f = json!({ "name": "echo", "image": "", "process": "cat", "mode": "fork", "replicas": 1,
        "available": 1, "invocations": 3, "status": "ready", "status_class": "ok", "auth": false });
    let a = json!({ "call_id": "c1", "function": "echo", "trigger": "ui", "status": 500, "ok": false,
        "duration_ms": "1.0", "started_at": "2026-11-30 05:00:00", "error": "<script>alert(1)</script>" });
    let pages = [
        (
            "functions.html",
            json!({ "nav": "functions", "provider": "process", "functions": [f.clone()], "form": {"name": "", "mode": ""}, "can_write": true }),
        ),
        (
            "function.html",
            json!({ "nav": "functions", "f": f.clone(), "annotations": {"hark.mode": "fork"}, "labels": {}, "env": {}, "secrets": [], "activations": [a.clone()], "can_write": true, "max_replicas": 64 }),
        ),
        ("remove.html", json!({ "f": f.clone() })),
        (
            "activations.html",
            json!({ "rows": [a.clone()], "functions": ["echo"], "triggers": ["ui"], "filter": {"function": "", "trigger": "", "status": ""}, "scanned": 1000 }),
        ),
        ("activation.html", json!({ "a": a.clone(), "record": "{}" })),
        (
            "skills.html",
            json!({ "skills": [{ "name": "parrot", "invocation": "parrot", "locales": ["en-GB"], "intents": [{ "name": "Say", "samples": ["say {word}"], "slots": [{"name": "word", "type": "WORD", "required": true}], "function": "echo" }] }],
            "selected": "parrot", "result": { "utterance": "say <b>", "matched": { "intent": "Say", "slots": {"word": "hi"} }, "spoken": "hi", "ssml": "<speak>hi</speak>", "card": {"title": "T", "text": "x"}, "end_session": true, "json": "{}" } }),
        ),
        (
            "schedules.html",
            json!({ "schedules": [{ "function": "tick", "schedule": "* * * * *", "timezone": "UTC", "concurrency": "skip", "missed": "skip", "suspended": false, "next_text": "soon", "runs": [{"tick": "t", "status": 200}] }] }),
        ),
        (
            "queue.html",
            json!({ "rows": [{ "call_id": "q1", "function": "echo", "state": "dead", "attempts": 3, "status": 500, "error": "boom", "created_at": "x" }], "depth": 0, "state": "dead", "can_write": true }),
        ),
    ];
    for (name, ctx) in pages {
        let html = render(name, &s, ctx)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .0;
        assert!(html.contains("<main id=\"main\">"), "{name}");
        assert!(!html.contains("<script>alert"), "{name} does not escape");
        let posts = html.matches("method=\"post\"").count();
        let tokens = html.matches("name=\"csrf\" value=\"abc123\"").count();
        assert_eq!(
            posts, tokens,
            "{name}: every POST form carries the CSRF token"
        );
    }
    let login = render_raw("login.html", json!({ "csrf": "n" })).unwrap();
    assert!(login.contains("name=\"token\"") && login.contains("value=\"n\""));
    let error = render_raw(
        "error.html",
        json!({ "status": 403, "reason": "Forbidden", "message": "<b>x</b>" }),
    )
    .unwrap();
    assert!(error.contains("&lt;b&gt;x"));
}

#[tokio::test]
async fn cookies_are_secure_over_https_and_pages_are_not_cached() {
    use tower::ServiceExt;
    let app = Router::new()
        .route(
            "/ui/x",
            get(|| async {
                (
                    [(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "tok"))],
                    "x",
                )
            }),
        )
        .layer(middleware::from_fn(headers));
    let get_with = |forwarded: Option<(&'static str, &'static str)>| {
        let mut request = Request::builder().uri("/ui/x");
        if let Some((name, value)) = forwarded {
            request = request.header(name, value);
        }
        app.clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
    };
    let plain = get_with(None).await.unwrap();
    let cookie = plain.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert_eq!(plain.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(plain.headers()[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(plain.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(plain.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    for forwarded in [
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=1.2.3.4;proto=https"),
    ] {
        let secure = get_with(Some(forwarded)).await.unwrap();
        let cookie = secure.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.ends_with("; Secure") && cookie.contains("HttpOnly"),
            "{forwarded:?}: {cookie}"
        );
    }
}
