//! The portal over HTTP, without a browser: what a person clicking through it would see,
//! and what ends up in its bookings file.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chrono::NaiveDate;
use hr_portal::{app, text, Config, Portal, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// 2030-01-07 is a Monday.
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 1, 7).unwrap()
}

struct Browser {
    app: Router,
    cookie: Option<String>,
    store: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    html: String,
}

impl Page {
    fn csrf(&self) -> String {
        let at = self
            .html
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.html));
        let rest = &self.html[at + 19..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
    fn error(&self) -> Option<String> {
        let at = self.html.find("id=\"error\"")?;
        let rest = &self.html[at..];
        let start = rest.find('>')? + 1;
        Some(rest[start..start + rest[start..].find('<')?].to_owned())
    }
}

impl Browser {
    fn new(allowance: f64) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("bookings.json");
        let portal = Portal::new(Config {
            store: store.clone(),
            user: "ada".into(),
            password: "s3cret pass".into(),
            allowance,
            today: Arc::new(today),
        })
        .unwrap();
        Browser {
            app: app(portal),
            cookie: None,
            store,
            _dir: dir,
        }
    }

    async fn send(&mut self, method: &str, path: &str, form: &[(&str, &str)]) -> Page {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(c) = &self.cookie {
            request = request.header(header::COOKIE, c);
        }
        let body = if method == "POST" {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(serde_urlencoded(form))
        } else {
            Body::empty()
        };
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        if let Some(set) = response.headers().get(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            assert!(
                !set.contains("Path="),
                "the cookie path is left to the browser: {set}"
            );
            let pair = set.split(';').next().unwrap().to_owned();
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        let html = String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        Page {
            status,
            location,
            html,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, &[]).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send("POST", path, form).await
    }

    async fn sign_in(&mut self, password: &str) -> Page {
        let csrf = self.get("/login").await.csrf();
        self.post(
            "/login",
            &[("csrf", &csrf), ("username", "ada"), ("password", password)],
        )
        .await
    }

    /// Steps 1 to 3 of a request; the last page.
    async fn request(&mut self, date: &str, portion: &str, kind: &str) -> Page {
        let csrf = self.get("/request").await.csrf();
        let page = self
            .post(
                "/request",
                &[("csrf", &csrf), ("date", date), ("portion", portion)],
            )
            .await;
        if page.location.as_deref() != Some("details") {
            return page;
        }
        self.get("/details").await;
        let page = self
            .post(
                "/details",
                &[
                    ("csrf", &csrf),
                    ("leave_type", kind),
                    ("comment", "by test [ref k1]"),
                ],
            )
            .await;
        assert_eq!(page.location.as_deref(), Some("review"), "{}", page.html);
        let review = self.get("/review").await;
        assert!(review.html.contains(date), "{}", review.html);
        self.post("/review", &[("csrf", &csrf), ("confirm", "yes")])
            .await
    }

    fn bookings(&self) -> Vec<hr_portal::Booking> {
        Store::read(&self.store).unwrap().bookings
    }
}

fn serde_urlencoded(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    b' ' => "+".to_owned(),
                    b => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn signing_in_needs_the_form_token_and_the_right_password() {
    let mut b = Browser::new(25.0);
    // Every page but the login form sends a stranger to it, relatively.
    for path in ["/", "/menu", "/balance", "/request", "/review", "/requests"] {
        let page = b.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location.as_deref(), Some("login"), "{path}");
    }
    // Without the token from the form.
    let page = b
        .post(
            "/login",
            &[
                ("csrf", "forged"),
                ("username", "ada"),
                ("password", "s3cret pass"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(page.error().as_deref(), Some(text::LOGIN_EXPIRED));
    assert!(b.cookie.is_none());

    let page = b.sign_in("wrong").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(page.error().as_deref(), Some(text::BAD_CREDENTIALS));
    assert!(b.cookie.is_none());

    let page = b.sign_in("s3cret pass").await;
    assert_eq!(page.location.as_deref(), Some("menu"));
    assert!(b.cookie.is_some());
    let menu = b.get("/menu").await;
    assert!(menu.html.contains("Welcome, ada"), "{}", menu.html);
    // Links and forms are relative, so the site works under /function/hr-portal/ too.
    assert!(!menu.html.contains("href=\"/") && !menu.html.contains("action=\"/"));
    // A login token works once.
    let csrf = b.get("/login").await.csrf();
    let form = [
        ("csrf", csrf.as_str()),
        ("username", "ada"),
        ("password", "s3cret pass"),
    ];
    assert_eq!(b.post("/login", &form).await.status, StatusCode::SEE_OTHER);
    assert_eq!(b.post("/login", &form).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_leave_request_goes_through_three_steps_to_a_confirmation_number() {
    let mut b = Browser::new(25.0);
    b.sign_in("s3cret pass").await;
    assert!(b
        .get("/balance")
        .await
        .html
        .contains("<td id=\"days-left\">25</td>"));
    assert!(b.get("/requests").await.html.contains("no leave requests"));

    let done = b.request("2030-01-11", "full", "annual").await;
    assert_eq!(done.location.as_deref(), Some("done?ref=HR-1042"));
    let page = b.get("/done?ref=HR-1042").await;
    assert!(page
        .html
        .contains("<strong id=\"confirmation\">HR-1042</strong>"));
    assert!(page.html.contains("Friday 11 January 2030"));
    assert!(b
        .get("/balance")
        .await
        .html
        .contains("<td id=\"days-left\">24</td>"));
    let list = b.get("/requests").await;
    assert!(list.html.contains("[ref k1]") && list.html.contains("2030-01-11"));

    // A half day takes half a day; unpaid leave takes none.
    let done = b.request("2030-01-14", "afternoon", "annual").await;
    assert_eq!(done.location.as_deref(), Some("done?ref=HR-1043"));
    let done = b.request("2030-01-15", "full", "unpaid").await;
    assert_eq!(done.location.as_deref(), Some("done?ref=HR-1044"));
    assert!(b
        .get("/balance")
        .await
        .html
        .contains("<td id=\"days-left\">23.5</td>"));

    let stored = b.bookings();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].confirmation, "HR-1042");
    assert_eq!(
        stored[0].date,
        NaiveDate::from_ymd_opt(2030, 1, 11).unwrap()
    );
    assert_eq!(stored[0].comment, "by test [ref k1]");
    assert_eq!((stored[1].days, stored[2].days), (0.5, 0.0));
    // Submitting the review again books nothing more.
    let csrf = b.get("/menu").await.csrf();
    let again = b
        .post("/review", &[("csrf", &csrf), ("confirm", "yes")])
        .await;
    assert_eq!(again.error().as_deref(), Some(text::NO_DRAFT));
    assert_eq!(b.bookings().len(), 3);
}

#[tokio::test]
async fn days_that_cannot_be_booked_are_refused_with_text_on_the_page() {
    let mut b = Browser::new(1.0);
    b.sign_in("s3cret pass").await;
    for (date, expect) in [
        ("2030-01-04", text::PAST),
        ("2030-01-12", text::WEEKEND),
        ("2030-01-13", text::WEEKEND),
        ("next friday", text::BAD_DATE),
    ] {
        let page = b.request(date, "full", "annual").await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{date}");
        let error = page
            .error()
            .unwrap_or_else(|| panic!("no error for {date}"));
        assert!(error.contains(expect), "{date}: {error}");
    }
    assert!(b.bookings().is_empty());
    // Today is still bookable; booking it again is refused, and so is going over the allowance.
    b.request("2030-01-07", "full", "annual").await;
    let page = b.request("2030-01-07", "morning", "annual").await;
    assert!(page.error().unwrap().contains(text::ALREADY_BOOKED));
    let page = b.request("2030-01-08", "full", "annual").await;
    assert_eq!(page.error().as_deref(), Some(text::NOT_ENOUGH));
    assert_eq!(b.bookings().len(), 1);

    // The review must be confirmed, and forms need the session's token.
    let csrf = b.get("/request").await.csrf();
    b.post(
        "/request",
        &[("csrf", &csrf), ("date", "2030-01-09"), ("portion", "full")],
    )
    .await;
    b.post("/details", &[("csrf", &csrf), ("leave_type", "unpaid")])
        .await;
    let page = b.post("/review", &[("csrf", &csrf)]).await;
    assert_eq!(page.error().as_deref(), Some(text::NOT_CONFIRMED));
    let page = b
        .post("/review", &[("csrf", "forged"), ("confirm", "yes")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(b.bookings().len(), 1);
}
