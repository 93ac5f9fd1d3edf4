use super::*;
use serde_json::json;

fn session(scopes: &[&str]) -> Session {
    Session {
        id: "s".into(),
        claims: Claims {
            sub: "admin".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            iat: 0,
            exp: None,
            jti: None,
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
fn session_cookies_are_http_only_and_strict_and_host_prefixed_over_https() {
    let set = set_cookie(SESSION_COOKIE, "id", false);
    assert_eq!(set, "hark_session=id; Path=/ui; HttpOnly; SameSite=Strict");
    assert!(set_cookie(SESSION_COOKIE, "", false).contains("Max-Age=0"));
    let secure = set_cookie(session_cookie_name(true), "id", true);
    assert_eq!(
        secure,
        "__Host-hark_session=id; Path=/; HttpOnly; SameSite=Strict; Secure"
    );
    assert!(set_cookie(LOGIN_COOKIE, "n", true).ends_with("; Secure"));
}

#[test]
fn functions_never_see_the_session_cookie() {
    let mut h = HeaderMap::new();
    h.append(
        header::COOKIE,
        HeaderValue::from_static("a=1; __Host-hark_session=secret1; b=2"),
    );
    h.append(
        header::COOKIE,
        HeaderValue::from_static("hark_session=secret2"),
    );
    h.append(header::COOKIE, HeaderValue::from_static("theme=dark"));
    strip_session_cookie(&mut h);
    let left: Vec<_> = h
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(left, vec!["a=1; b=2", "theme=dark"]);
}

#[test]
fn csrf_tokens_are_checked_exactly() {
    let s = session(&[scope::ADMIN]);
    assert!(s.check_csrf(Some("abc123")).is_ok());
    assert!(matches!(s.check_csrf(Some("abc124")), Err(UiError::Csrf)));
    assert!(matches!(s.check_csrf(Some("")), Err(UiError::Csrf)));
    assert!(matches!(s.check_csrf(None), Err(UiError::Csrf)));
}

#[tokio::test]
async fn derived_csrf_tokens_differ_by_session_and_purpose() {
    async fn auth(dir: &std::path::Path) -> crate::auth::Auth {
        let store = crate::store::Store::open(&dir.join("hark.db")).unwrap();
        crate::auth::Auth::load_or_create(dir, store, false)
            .await
            .unwrap()
            .0
    }
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let auth1 = auth(d1.path()).await;
    let a = auth1.derive(CSRF_PURPOSE, b"session-a");
    assert_eq!(a, auth1.derive(CSRF_PURPOSE, b"session-a"));
    assert_ne!(a, auth1.derive(CSRF_PURPOSE, b"session-b"));
    assert_ne!(a, auth1.derive(LOGIN_PURPOSE, b"session-a"));
    let other = auth(d2.path()).await;
    assert_ne!(
        a,
        other.derive(CSRF_PURPOSE, b"session-a"),
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
    let now = chrono::Utc::now();
    let window = charts::Window::new(charts::Range::Hour, now);
    let mut series = charts::CallSeries::new(window);
    series.add(&crate::store::CallPoint {
        function: "echo".into(),
        started_at: now,
        duration_ms: 3.0,
        status: 500,
    });
    let summary = json!({ "calls": 1, "errors": 1, "error_rate": "100%", "p50": "3.0 ms", "p95": "3.0 ms", "spark": series.spark() });
    let f = json!({ "name": "echo", "image": "", "process": "cat", "mode": "fork", "replicas": 1,
        "available": 1, "invocations": 3, "status": "ready", "status_class": "ok", "auth": false, "hour": summary });
    let mut row = summary.clone();
    row["name"] = "echo".into();
    let a = json!({ "call_id": "c1", "function": "echo", "trigger": "ui", "status": 500, "ok": false,
        "duration_ms": "1.0", "started_at": "2026-11-30 05:00:00", "error": "<script>alert(1)</script>" });
    let pages = [
        (
            "functions.html",
            json!({ "nav": "functions", "provider": "process", "functions": [f.clone()], "form": {"name": "", "mode": ""}, "can_write": true }),
        ),
        (
            "function.html",
            json!({ "nav": "functions", "f": f.clone(), "annotations": {"hark.mode": "fork"}, "labels": {}, "env": {}, "secrets": [], "activations": [a.clone()], "can_write": true, "max_replicas": 64,
                "range": "hour", "totals": summary, "graphs": [series.rate_chart("c1"), series.error_chart("c2"), series.latency_chart("c3")] }),
        ),
        (
            "overview.html",
            json!({ "nav": "overview", "range": "day", "totals": summary, "rate": series.rate_chart("r"), "latency": series.latency_chart("l"),
                "busiest": [row.clone()], "failing": [row], "queue": series.rate_chart("q"), "depth": 0, "dead": 2, "browsers": series.rate_chart("b"),
                "pool": { "enabled": false, "reason": "<script>alert(1)</script>", "in_use": 0, "warm": 0, "max": 2 } }),
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
        if matches!(name, "function.html" | "overview.html" | "functions.html") {
            assert!(
                html.contains("<polyline points=\""),
                "{name} draws its charts"
            );
            assert!(name != "function.html" || html.contains("<figure class=\"chart\" id=\"c3\">"));
        }
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
async fn pages_are_not_cached_and_forwarded_proto_changes_nothing() {
    use tower::ServiceExt;
    let app = Router::new()
        .route(
            "/ui/x",
            get(|| async {
                (
                    [(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "tok", false))],
                    "x",
                )
            }),
        )
        .layer(middleware::from_fn(headers));
    let request = Request::builder()
        .uri("/ui/x")
        .header("x-forwarded-proto", "https")
        .body(axum::body::Body::empty())
        .unwrap();
    let plain = app.oneshot(request).await.unwrap();
    let cookie = plain.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        !cookie.contains("Secure"),
        "a forged header decides nothing: {cookie}"
    );
    assert_eq!(plain.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(plain.headers()[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(plain.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(plain.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
}

#[tokio::test]
async fn fetch_metadata_refuses_scripts_without_the_token_and_cross_site_posts() {
    use tower::ServiceExt;
    let app = Router::new()
        .route(
            "/ui/page",
            get(|| async { "page" }).post(|| async { "posted" }),
        )
        .route("/ui/login", get(|| async { "login" }))
        .route("/ui/assets/ui.js", get(|| async { "js" }))
        .layer(middleware::from_fn(fetch_metadata));
    let send = |method: &str, uri: &str, headers: &[(&str, &str)]| {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        app.clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
    };
    let nav = [
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
    ];
    let script = [
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-origin"),
    ];
    for (method, uri, headers, status) in [
        ("GET", "/ui/page", &nav[..], 200),
        ("GET", "/ui/page", &[][..], 200),
        ("GET", "/ui/page", &script[..], 403),
        ("GET", "/ui/page", &[("sec-fetch-mode", "no-cors")][..], 403),
        ("GET", "/ui/login", &script[..], 403),
        (
            "GET",
            "/ui/assets/ui.js",
            &[("sec-fetch-mode", "no-cors")][..],
            200,
        ),
        ("POST", "/ui/page", &nav[..], 200),
        ("POST", "/ui/page", &[][..], 200),
        (
            "POST",
            "/ui/page",
            &[("sec-fetch-site", "cross-site")][..],
            403,
        ),
        (
            "POST",
            "/ui/page",
            &[("sec-fetch-site", "same-site")][..],
            403,
        ),
    ] {
        let answer = send(method, uri, headers).await.unwrap();
        assert_eq!(
            answer.status().as_u16(),
            status,
            "{method} {uri} {headers:?}"
        );
    }
    // With a token the script request reaches the handler (whose Session checks it).
    let with_token = send(
        "GET",
        "/ui/page",
        &[("sec-fetch-mode", "cors"), ("x-csrf-token", "t")],
    )
    .await
    .unwrap();
    assert_eq!(with_token.status(), 200);
    let with_query = send("GET", "/ui/page?csrf=t", &[("sec-fetch-mode", "no-cors")])
        .await
        .unwrap();
    assert_eq!(with_query.status(), 200);
}
