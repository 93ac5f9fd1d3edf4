//! `hr-portal`: a small HR web application that behaves like a third-party site a browser
//! has to drive. Form posts and cookies come in; server-rendered HTML pages go out: a login
//! form with a CSRF token, a session cookie, a menu, the leave balance, the list of requests,
//! and a leave request in three steps (date and half-day, leave type and comment, review)
//! that ends with a confirmation number such as `HR-1042`. Bookings are kept in a JSON file
//! ([`Store`]) so tests can read what was booked.
//!
//! Every link, form action and redirect is relative and the session cookie carries no
//! `Path`, so the same pages work at the root of their own port and behind Hark's gateway at
//! `/function/hr-portal/` (the browser's default cookie path is then that directory).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{Datelike, NaiveDate, Utc, Weekday};
use serde::{Deserialize, Serialize};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "hrp_session";
/// The first confirmation number a new store hands out.
pub const FIRST_NUMBER: u32 = 1042;
/// Issued login tokens kept at most (older ones are dropped, so a flood cannot grow memory).
const MAX_LOGIN_TOKENS: usize = 10_000;
/// Sessions kept at most.
const MAX_SESSIONS: usize = 10_000;

/// Error texts the pages show; a client recognises them the way a person reads them.
pub mod text {
    pub const BAD_CREDENTIALS: &str = "Invalid username or password.";
    pub const LOGIN_EXPIRED: &str = "Your login form expired. Please try again.";
    pub const BAD_DATE: &str = "Please enter a date as YYYY-MM-DD.";
    pub const PAST: &str = "is in the past. Leave can only be requested for today or later.";
    pub const WEEKEND: &str = "is a weekend day. Leave is only needed on working days.";
    pub const ALREADY_BOOKED: &str = "You already have leave booked on";
    pub const NOT_ENOUGH: &str = "You do not have enough leave left for this request.";
    pub const BAD_TYPE: &str = "Please choose a leave type.";
    pub const NOT_CONFIRMED: &str = "Please tick the box to confirm the request.";
    pub const NO_DRAFT: &str = "There is no leave request in progress. Please start again.";
    pub const BAD_CSRF: &str = "The form expired. Please start again.";
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a bookings file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Which part of a day a booking takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Portion {
    Full,
    Morning,
    Afternoon,
}

impl Portion {
    fn parse(s: &str) -> Option<Portion> {
        match s {
            "full" => Some(Portion::Full),
            "morning" => Some(Portion::Morning),
            "afternoon" => Some(Portion::Afternoon),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Portion::Full => "full",
            Portion::Morning => "morning",
            Portion::Afternoon => "afternoon",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Portion::Full => "Full day",
            Portion::Morning => "Morning (half day)",
            Portion::Afternoon => "Afternoon (half day)",
        }
    }
    fn days(self) -> f64 {
        match self {
            Portion::Full => 1.0,
            _ => 0.5,
        }
    }
}

/// The leave types the request form offers: (value, label, counts against the allowance).
pub const LEAVE_TYPES: &[(&str, &str, bool)] = &[
    ("annual", "Annual leave", true),
    ("unpaid", "Unpaid leave", false),
    ("volunteering", "Volunteering day", false),
];

fn leave_type(value: &str) -> Option<(&'static str, &'static str, bool)> {
    LEAVE_TYPES.iter().copied().find(|(v, _, _)| *v == value)
}

/// One booked leave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Booking {
    pub confirmation: String,
    pub user: String,
    pub date: NaiveDate,
    pub portion: Portion,
    pub leave_type: String,
    pub comment: String,
    /// Days taken from the allowance (0 for leave types that do not count).
    pub days: f64,
    pub created_at: chrono::DateTime<Utc>,
}

/// The bookings file: `{"next_number": 1043, "bookings": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bookings {
    pub next_number: u32,
    pub bookings: Vec<Booking>,
}

impl Default for Bookings {
    fn default() -> Self {
        Bookings {
            next_number: FIRST_NUMBER,
            bookings: Vec::new(),
        }
    }
}

/// The bookings, kept in a JSON file rewritten (atomically) after every change.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    data: Bookings,
}

impl Store {
    /// Opens `path`, or starts empty when it does not exist.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let data = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
                path: path.to_owned(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Bookings::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(Store {
            path: path.to_owned(),
            data,
        })
    }

    /// Reads the bookings file at `path` (for tests and tools).
    pub fn read(path: &Path) -> Result<Bookings, StoreError> {
        Ok(Store::open(path)?.data)
    }

    fn save(&self) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        // Serializing plain structs of strings, numbers and dates cannot fail.
        let bytes = serde_json::to_vec_pretty(&self.data).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    fn of_user<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Booking> + 'a {
        self.data.bookings.iter().filter(move |b| b.user == user)
    }
}

/// The portal's settings.
#[derive(Clone)]
pub struct Config {
    pub store: PathBuf,
    /// The one account: its user name and password.
    pub user: String,
    pub password: String,
    /// Days of annual leave a year.
    pub allowance: f64,
    /// Today's date (the local date; tests pass a fixed one).
    pub today: Arc<dyn Fn() -> NaiveDate + Send + Sync>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("store", &self.store)
            .field("user", &self.user)
            .field("allowance", &self.allowance)
            .finish_non_exhaustive()
    }
}

/// A request in progress, kept in its session between the steps.
#[derive(Debug, Clone, Default)]
struct Draft {
    date: Option<NaiveDate>,
    portion: Option<Portion>,
    leave_type: Option<String>,
    comment: String,
}

#[derive(Debug)]
struct Session {
    user: String,
    csrf: String,
    draft: Draft,
}

struct Inner {
    store: Store,
    sessions: HashMap<String, Session>,
    login_tokens: HashSet<String>,
}

/// The running portal.
pub struct Portal {
    config: Config,
    inner: Mutex<Inner>,
}

type Shared = Arc<Portal>;

impl Portal {
    /// Opens the store and makes the portal.
    pub fn new(config: Config) -> Result<Shared, StoreError> {
        let store = Store::open(&config.store)?;
        Ok(Arc::new(Portal {
            config,
            inner: Mutex::new(Inner {
                store,
                sessions: HashMap::new(),
                login_tokens: HashSet::new(),
            }),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The portal's routes.
pub fn app(portal: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/menu", get(menu))
        .route("/balance", get(balance))
        .route("/requests", get(requests))
        .route("/request", get(step_date).post(post_date))
        .route("/details", get(step_details).post(post_details))
        .route("/review", get(step_review).post(post_review))
        .route("/done", get(done))
        .with_state(portal)
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "Friday 4 December 2026".
pub fn long_date(d: NaiveDate) -> String {
    d.format("%A %-d %B %Y").to_string()
}

fn days_text(days: f64) -> String {
    if days.fract() == 0.0 {
        format!("{days:.0}")
    } else {
        format!("{days:.1}")
    }
}

const CSS: &str = "body{font-family:sans-serif;margin:0;background:#f4f5f7;color:#222}\
header{background:#1d3557;color:#fff;padding:.6em 1em}header h1{font-size:1.2em;margin:0}\
nav{background:#457b9d;padding:.4em 1em}nav a,nav button{color:#fff;margin-right:1em;background:none;border:0;font:inherit;cursor:pointer;text-decoration:underline}\
nav form{display:inline}main{background:#fff;max-width:46em;margin:1em auto;padding:1em 2em;border-radius:6px}\
.error{color:#b00020;background:#fde8ea;padding:.5em;border-radius:4px}label{display:block;margin:.6em 0 .2em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
.steps{color:#666}button.primary{background:#1d3557;color:#fff;border:0;padding:.5em 1.2em;border-radius:4px;margin-top:1em}";

fn page(title: &str, session: Option<&Session>, body: &str) -> Html<String> {
    let nav = match session {
        Some(s) => format!(
            "<nav id=\"menu\"><a href=\"menu\">Home</a><a href=\"balance\" id=\"nav-balance\">Leave balance</a>\
             <a href=\"request\" id=\"nav-request\">Request leave</a><a href=\"requests\" id=\"nav-requests\">My requests</a>\
             <form method=\"post\" action=\"logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"logout\">Sign out</button></form></nav>",
            esc(&s.csrf)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Acme HR</title>\
         <style>{CSS}</style></head><body><header><h1>Acme HR self-service</h1></header>{nav}<main>{body}</main></body></html>",
        esc(title)
    ))
}

fn error_html(message: &str) -> String {
    format!(
        "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
        esc(message)
    )
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Runs `f` with the request's session, or redirects to the login page.
fn with_session(
    portal: &Portal,
    headers: &HeaderMap,
    f: impl FnOnce(&mut Inner, &str) -> Response,
) -> Response {
    let mut inner = portal.lock();
    match cookie(headers) {
        Some(id) if inner.sessions.contains_key(&id) => f(&mut inner, &id),
        _ => Redirect::to("login").into_response(),
    }
}

async fn index(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    with_session(&portal, &headers, |_, _| {
        Redirect::to("menu").into_response()
    })
}

fn login_form(inner: &mut Inner, error: Option<&str>) -> Html<String> {
    if inner.login_tokens.len() >= MAX_LOGIN_TOKENS {
        inner.login_tokens.clear();
    }
    let csrf = token();
    inner.login_tokens.insert(csrf.clone());
    let error = error.map(error_html).unwrap_or_default();
    page(
        "Sign in",
        None,
        &format!(
            "<h2>Sign in</h2>{error}<form method=\"post\" action=\"login\" id=\"login-form\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\">\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
             <div><button class=\"primary\" type=\"submit\" id=\"sign-in\">Sign in</button></div></form>"
        ),
    )
}

async fn login_page(State(portal): State<Shared>) -> Html<String> {
    login_form(&mut portal.lock(), None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn login(State(portal): State<Shared>, Form(form): Form<LoginForm>) -> Response {
    let mut inner = portal.lock();
    if !inner.login_tokens.remove(&form.csrf) {
        eprintln!("hr-portal: login refused: unknown CSRF token");
        return (
            StatusCode::FORBIDDEN,
            login_form(&mut inner, Some(text::LOGIN_EXPIRED)),
        )
            .into_response();
    }
    if form.username != portal.config.user || !constant_eq(&form.password, &portal.config.password)
    {
        eprintln!("hr-portal: login refused: wrong credentials");
        return (
            StatusCode::UNAUTHORIZED,
            login_form(&mut inner, Some(text::BAD_CREDENTIALS)),
        )
            .into_response();
    }
    if inner.sessions.len() >= MAX_SESSIONS {
        inner.sessions.clear();
    }
    let id = token();
    inner.sessions.insert(
        id.clone(),
        Session {
            user: form.username,
            csrf: token(),
            draft: Draft::default(),
        },
    );
    let mut response = Redirect::to("menu").into_response();
    // A token of hex digits always makes a valid header value.
    if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Lax"))
    {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let mut inner = portal.lock();
    if let Some(id) = cookie(&headers) {
        if inner
            .sessions
            .get(&id)
            .is_some_and(|s| constant_eq(&s.csrf, &form.csrf))
        {
            inner.sessions.remove(&id);
        }
    }
    let mut response = Redirect::to("login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hrp_session=; Max-Age=0; HttpOnly; SameSite=Lax"),
    );
    response
}

async fn menu(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    with_session(&portal, &headers, |inner, id| {
        let s = &inner.sessions[id];
        page(
            "Home",
            Some(s),
            &format!(
                "<h2 id=\"welcome\">Welcome, {}</h2><p>What would you like to do?</p><ul>\
                 <li><a href=\"balance\" id=\"menu-balance\">See your leave balance</a></li>\
                 <li><a href=\"request\" id=\"menu-request\">Request leave</a></li>\
                 <li><a href=\"requests\" id=\"menu-requests\">See your requests</a></li></ul>",
                esc(&s.user)
            ),
        )
        .into_response()
    })
}

fn days_left(inner: &Inner, config: &Config, user: &str) -> f64 {
    config.allowance - inner.store.of_user(user).map(|b| b.days).sum::<f64>()
}

async fn balance(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    let config = &portal.config;
    with_session(&portal, &headers, |inner, id| {
        let s = &inner.sessions[id];
        let taken: f64 = inner.store.of_user(&s.user).map(|b| b.days).sum();
        let left = days_left(inner, config, &s.user);
        page(
            "Leave balance",
            Some(s),
            &format!(
                "<h2>Leave balance</h2><table id=\"balance\"><tr><th>Annual allowance</th><td id=\"allowance\">{}</td></tr>\
                 <tr><th>Booked or taken</th><td id=\"taken\">{}</td></tr>\
                 <tr><th>Days left</th><td id=\"days-left\">{}</td></tr></table>",
                days_text(config.allowance),
                days_text(taken),
                days_text(left)
            ),
        )
        .into_response()
    })
}

async fn requests(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    with_session(&portal, &headers, |inner, id| {
        let s = &inner.sessions[id];
        let mut rows = String::new();
        for b in inner.store.of_user(&s.user) {
            let kind = leave_type(&b.leave_type).map_or(b.leave_type.as_str(), |t| t.1);
            rows.push_str(&format!(
                "<tr class=\"request\"><td class=\"ref\">{}</td><td class=\"date\">{}</td><td>{}</td><td>{}</td><td class=\"comment\">{}</td><td>Approved</td></tr>",
                esc(&b.confirmation),
                b.date,
                b.portion.label(),
                esc(kind),
                esc(&b.comment)
            ));
        }
        let body = if rows.is_empty() {
            "<h2>My requests</h2><p id=\"no-requests\">You have no leave requests.</p>".to_owned()
        } else {
            format!(
                "<h2>My requests</h2><table id=\"requests\"><tr><th>Reference</th><th>Date</th><th>Portion</th><th>Type</th><th>Comment</th><th>Status</th></tr>{rows}</table>"
            )
        };
        page("My requests", Some(s), &body).into_response()
    })
}

fn steps(n: u8) -> String {
    format!("<p class=\"steps\">Step {n} of 3</p>")
}

fn date_form(s: &Session, today: NaiveDate, error: Option<&str>) -> Html<String> {
    let date = s.draft.date.map(|d| d.to_string()).unwrap_or_default();
    let portion = s.draft.portion.unwrap_or(Portion::Full);
    let radio = |p: Portion| {
        format!(
            "<label><input type=\"radio\" name=\"portion\" id=\"portion-{v}\" value=\"{v}\"{c}> {l}</label>",
            v = p.as_str(),
            c = if p == portion { " checked" } else { "" },
            l = p.label()
        )
    };
    page(
        "Request leave",
        Some(s),
        &format!(
            "<h2>Request leave</h2>{}{}<form method=\"post\" action=\"request\" id=\"date-form\" novalidate>\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label for=\"date\">First day of leave</label><input type=\"date\" id=\"date\" name=\"date\" min=\"{today}\" value=\"{date}\" required>\
             <fieldset><legend>How much of the day?</legend>{}{}{}</fieldset>\
             <button class=\"primary\" type=\"submit\" id=\"next\">Continue</button></form>",
            steps(1),
            error.map(error_html).unwrap_or_default(),
            esc(&s.csrf),
            radio(Portion::Full),
            radio(Portion::Morning),
            radio(Portion::Afternoon),
        ),
    )
}

async fn step_date(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    let today = (portal.config.today)();
    with_session(&portal, &headers, |inner, id| {
        date_form(&inner.sessions[id], today, None).into_response()
    })
}

/// Why a date cannot be booked, as the page says it.
fn check_date(
    inner: &Inner,
    config: &Config,
    user: &str,
    date: NaiveDate,
    needed: f64,
) -> Option<String> {
    let today = (config.today)();
    if date < today {
        return Some(format!("{} {}", long_date(date), text::PAST));
    }
    if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
        return Some(format!("{} {}", long_date(date), text::WEEKEND));
    }
    if inner.store.of_user(user).any(|b| b.date == date) {
        return Some(format!("{} {}.", text::ALREADY_BOOKED, long_date(date)));
    }
    if days_left(inner, config, user) < needed {
        return Some(text::NOT_ENOUGH.to_owned());
    }
    None
}

#[derive(Deserialize)]
struct DateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    date: String,
    #[serde(default)]
    portion: String,
}

fn csrf_ok(inner: &Inner, id: &str, given: &str) -> bool {
    constant_eq(&inner.sessions[id].csrf, given)
}

fn expired(s: &Session) -> Response {
    (
        StatusCode::FORBIDDEN,
        page("Form expired", Some(s), &error_html(text::BAD_CSRF)),
    )
        .into_response()
}

async fn post_date(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<DateForm>,
) -> Response {
    let config = portal.config.clone();
    with_session(&portal, &headers, |inner, id| {
        if !csrf_ok(inner, id, &form.csrf) {
            return expired(&inner.sessions[id]);
        }
        let today = (config.today)();
        let portion = Portion::parse(&form.portion).unwrap_or(Portion::Full);
        let date = NaiveDate::parse_from_str(form.date.trim(), "%Y-%m-%d").ok();
        let problem = match date {
            None => Some(text::BAD_DATE.to_owned()),
            // The balance is checked at the review, once the leave type is known.
            Some(d) => check_date(inner, &config, &inner.sessions[id].user, d, 0.0),
        };
        let s = inner.sessions.get_mut(id).expect("checked by with_session");
        s.draft.date = date;
        s.draft.portion = Some(portion);
        match problem {
            Some(p) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                date_form(s, today, Some(&p)),
            )
                .into_response(),
            None => Redirect::to("details").into_response(),
        }
    })
}

fn details_form(s: &Session, error: Option<&str>) -> Html<String> {
    let chosen = s.draft.leave_type.as_deref().unwrap_or("");
    let mut options = String::from("<option value=\"\">Choose…</option>");
    for (value, label, _) in LEAVE_TYPES {
        options.push_str(&format!(
            "<option value=\"{value}\"{}>{label}</option>",
            if *value == chosen { " selected" } else { "" }
        ));
    }
    page(
        "Request leave",
        Some(s),
        &format!(
            "<h2>Request leave</h2>{}{}<form method=\"post\" action=\"details\" id=\"details-form\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label for=\"leave-type\">Leave type</label><select id=\"leave-type\" name=\"leave_type\">{options}</select>\
             <label for=\"comment\">Comment for your manager (optional)</label><textarea id=\"comment\" name=\"comment\" rows=\"3\" cols=\"50\">{}</textarea>\
             <div><a href=\"request\" id=\"back\">Back</a> <button class=\"primary\" type=\"submit\" id=\"next\">Continue</button></div></form>",
            steps(2),
            error.map(error_html).unwrap_or_default(),
            esc(&s.csrf),
            esc(&s.draft.comment),
        ),
    )
}

fn no_draft(s: &Session) -> Response {
    (
        StatusCode::CONFLICT,
        page(
            "Request leave",
            Some(s),
            &format!(
                "{}<p><a href=\"request\" id=\"start-again\">Start again</a></p>",
                error_html(text::NO_DRAFT)
            ),
        ),
    )
        .into_response()
}

async fn step_details(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    with_session(&portal, &headers, |inner, id| {
        let s = &inner.sessions[id];
        if s.draft.date.is_none() {
            return no_draft(s);
        }
        details_form(s, None).into_response()
    })
}

#[derive(Deserialize)]
struct DetailsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    leave_type: String,
    #[serde(default)]
    comment: String,
}

async fn post_details(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<DetailsForm>,
) -> Response {
    with_session(&portal, &headers, |inner, id| {
        if !csrf_ok(inner, id, &form.csrf) {
            return expired(&inner.sessions[id]);
        }
        let s = inner.sessions.get_mut(id).expect("checked by with_session");
        if s.draft.date.is_none() {
            return no_draft(s);
        }
        s.draft.comment = form.comment.chars().take(500).collect();
        match leave_type(&form.leave_type) {
            None => {
                s.draft.leave_type = None;
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    details_form(s, Some(text::BAD_TYPE)),
                )
                    .into_response()
            }
            Some((value, _, _)) => {
                s.draft.leave_type = Some(value.to_owned());
                Redirect::to("review").into_response()
            }
        }
    })
}

fn review_page(s: &Session, error: Option<&str>) -> Response {
    let (Some(date), Some(kind)) = (s.draft.date, s.draft.leave_type.as_deref()) else {
        return no_draft(s);
    };
    let portion = s.draft.portion.unwrap_or(Portion::Full);
    let (_, label, counts) = leave_type(kind).unwrap_or(("", "", false));
    let days = if counts { portion.days() } else { 0.0 };
    page(
        "Review your request",
        Some(s),
        &format!(
            "<h2>Review your request</h2>{}{}<table id=\"summary\">\
             <tr><th>Date</th><td id=\"review-date\" data-date=\"{date}\">{}</td></tr>\
             <tr><th>Portion</th><td id=\"review-portion\">{}</td></tr>\
             <tr><th>Leave type</th><td id=\"review-type\">{label}</td></tr>\
             <tr><th>Comment</th><td id=\"review-comment\">{}</td></tr>\
             <tr><th>Days from your allowance</th><td id=\"review-days\">{}</td></tr></table>\
             <form method=\"post\" action=\"review\" id=\"review-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label><input type=\"checkbox\" name=\"confirm\" id=\"confirm\" value=\"yes\"> I confirm this request is correct</label>\
             <div><a href=\"details\" id=\"back\">Back</a> <button class=\"primary\" type=\"submit\" id=\"submit\">Submit request</button></div></form>",
            steps(3),
            error.map(error_html).unwrap_or_default(),
            long_date(date),
            portion.label(),
            esc(&s.draft.comment),
            days_text(days),
            esc(&s.csrf),
        ),
    )
    .into_response()
}

async fn step_review(State(portal): State<Shared>, headers: HeaderMap) -> Response {
    with_session(&portal, &headers, |inner, id| {
        review_page(&inner.sessions[id], None)
    })
}

#[derive(Deserialize)]
struct ReviewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn post_review(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<ReviewForm>,
) -> Response {
    let config = portal.config.clone();
    with_session(&portal, &headers, |inner, id| {
        if !csrf_ok(inner, id, &form.csrf) {
            return expired(&inner.sessions[id]);
        }
        let s = &inner.sessions[id];
        let draft = s.draft.clone();
        let (Some(date), Some(kind)) = (draft.date, draft.leave_type.clone()) else {
            return no_draft(s);
        };
        if form.confirm != "yes" {
            let mut r = review_page(s, Some(text::NOT_CONFIRMED));
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return r;
        }
        let portion = draft.portion.unwrap_or(Portion::Full);
        let user = s.user.clone();
        let counts = leave_type(&kind).is_some_and(|t| t.2);
        let needed = if counts { portion.days() } else { 0.0 };
        // The day may have been booked since step 1 (another tab, another client).
        if let Some(problem) = check_date(inner, &config, &user, date, needed) {
            let s = inner.sessions.get_mut(id).expect("checked by with_session");
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                date_form(s, (config.today)(), Some(&problem)),
            )
                .into_response();
        }
        let confirmation = format!("HR-{}", inner.store.data.next_number);
        inner.store.data.next_number += 1;
        inner.store.data.bookings.push(Booking {
            confirmation: confirmation.clone(),
            user,
            date,
            portion,
            leave_type: kind,
            comment: draft.comment,
            days: needed,
            created_at: Utc::now(),
        });
        if let Err(e) = inner.store.save() {
            eprintln!("hr-portal: bookings not saved: {e}");
            inner.store.data.bookings.pop();
            inner.store.data.next_number -= 1;
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                page(
                    "Error",
                    Some(&inner.sessions[id]),
                    &error_html("Something went wrong; your request was not saved."),
                ),
            )
                .into_response();
        }
        eprintln!("hr-portal: booked {confirmation} for {date}");
        if let Some(s) = inner.sessions.get_mut(id) {
            s.draft = Draft::default();
        }
        Redirect::to(&format!("done?ref={confirmation}")).into_response()
    })
}

#[derive(Deserialize)]
struct DoneQuery {
    #[serde(rename = "ref", default)]
    reference: String,
}

async fn done(
    State(portal): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<DoneQuery>,
) -> Response {
    with_session(&portal, &headers, |inner, id| {
        let s = &inner.sessions[id];
        let Some(b) = inner
            .store
            .of_user(&s.user)
            .find(|b| b.confirmation == q.reference)
        else {
            return (
                StatusCode::NOT_FOUND,
                page("Not found", Some(s), &error_html("No such request.")),
            )
                .into_response();
        };
        page(
            "Request submitted",
            Some(s),
            &format!(
                "<h2>Request submitted</h2><p>Your leave on <span id=\"done-date\">{}</span> is approved.</p>\
                 <p>Confirmation number: <strong id=\"confirmation\">{}</strong></p>\
                 <p><a href=\"balance\" id=\"to-balance\">See your leave balance</a></p>",
                long_date(b.date),
                esc(&b.confirmation)
            ),
        )
        .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn dates_read_like_a_person_writes_them() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        assert_eq!(long_date(d), "Friday 4 December 2026");
        assert_eq!(days_text(12.0), "12");
        assert_eq!(days_text(11.5), "11.5");
    }
}
