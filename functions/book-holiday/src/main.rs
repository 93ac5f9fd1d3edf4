//! `book-holiday`: a fork-mode function that books a day off on the HR portal by driving a
//! browser, the way a person would. One call comes in on stdin: the JSON Hark's Alexa channel
//! sends (`input` holds `action` — `book` or `balance` —, `date` as `YYYY-MM-DD`, an optional
//! `half_day` — `morning` or `afternoon` —, `leave_type` and `idempotency_key`; the request's
//! `requestId` is the key when none is given), or that `input` object alone. One JSON answer
//! goes out on stdout:
//!
//! - `{"status": "booked", "confirmation": "HR-1042", "date", "weekday", "portion",
//!   "days_left", "repeat"}` — `repeat` is true when the key had already booked it;
//! - `{"status": "balance", "days_left"}`;
//! - `{"status": "error", "kind", "message", "date", "weekday"}` for what the portal refused:
//!   `past_date`, `weekend`, `already_booked`, `not_enough_days`, `bad_credentials`,
//!   `bad_date`, `bad_input`.
//!
//! When the site does not look as expected (`site_changed`) or cannot be reached
//! (`unavailable`) the function also prints that error but exits 1, so the call fails and its
//! activation keeps the browser's last page (the gateway's browser pool photographs a
//! session when it is released and keeps the picture when the call fails).
//!
//! Settings: `HARK_WEBDRIVER_URL` (the WebDriver server), `HR_PORTAL_URL` (the portal's base
//! URL), `HR_PORTAL_USER`, and the password in the secret `hr-portal-password` (a file in
//! `$HARK_SECRETS_DIR` or `/var/openfaas/secrets`).
//!
//! Nothing is booked twice for one key: the key goes into the booking's comment as
//! `[ref KEY]`, and the portal's list of requests is searched for it before booking, and again
//! when the portal says the day is already booked (a retry racing the first try).

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map, Value};

/// The secret holding the portal password.
const PASSWORD_SECRET: &str = "hr-portal-password";
/// How long a page may take to show what the next step needs.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a booking could not be made.
#[derive(Debug, thiserror::Error)]
enum BookError {
    /// The portal refused the request; `kind` says why, `message` is its text.
    #[error("{kind}: {message}")]
    Refused { kind: &'static str, message: String },
    /// The input cannot be booked at all.
    #[error("{kind}: {message}")]
    BadInput { kind: &'static str, message: String },
    /// An element the flow needs is missing: the site changed.
    #[error("site_changed: {0}")]
    SiteChanged(String),
    /// The browser or the portal could not be reached or failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl BookError {
    fn kind(&self) -> &'static str {
        match self {
            BookError::Refused { kind, .. } | BookError::BadInput { kind, .. } => kind,
            BookError::SiteChanged(_) => "site_changed",
            BookError::Unavailable(_) => "unavailable",
        }
    }
    fn message(&self) -> String {
        match self {
            BookError::Refused { message, .. } | BookError::BadInput { message, .. } => {
                message.clone()
            }
            BookError::SiteChanged(m) | BookError::Unavailable(m) => m.clone(),
        }
    }
    /// Whether the call as a whole failed (as opposed to the portal saying no).
    fn is_failure(&self) -> bool {
        matches!(self, BookError::SiteChanged(_) | BookError::Unavailable(_))
    }
}

/// A WebDriver error while looking for `what`.
fn cmd(what: &str) -> impl Fn(CmdError) -> BookError + '_ {
    move |e| {
        if e.is_no_such_element() {
            BookError::SiteChanged(format!("{what} is missing from the page"))
        } else {
            BookError::Unavailable(format!("{what}: {e}"))
        }
    }
}

/// What to do, parsed from the call's input.
#[derive(Debug, Clone, PartialEq)]
struct Order {
    action: Action,
    key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    Balance,
    Book {
        date: NaiveDate,
        portion: &'static str,
        leave_type: String,
    },
}

/// Reads the call's JSON: Hark's Alexa body (with `input`) or the input object itself.
fn parse_order(body: &Value) -> Result<Order, BookError> {
    let input = body.get("input").filter(|v| v.is_object()).unwrap_or(body);
    let bad = |message: String| BookError::BadInput {
        kind: "bad_input",
        message,
    };
    let text = |key: &str| input.get(key).and_then(Value::as_str).map(str::trim);
    let key = text("idempotency_key")
        .filter(|k| !k.is_empty())
        .or_else(|| body.get("requestId").and_then(Value::as_str))
        .map(str::to_owned);
    let action = match text("action").unwrap_or("book") {
        "balance" => Action::Balance,
        "book" => {
            let raw = text("date").unwrap_or("");
            let date =
                NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| BookError::BadInput {
                    kind: "bad_date",
                    message: if raw.is_empty() {
                        "no date given".to_owned()
                    } else {
                        format!("{raw:?} is not a single day (YYYY-MM-DD)")
                    },
                })?;
            let portion = match input.get("half_day") {
                None | Some(Value::Null) | Some(Value::Bool(false)) => "full",
                Some(Value::Bool(true)) => "morning",
                Some(Value::String(s)) => match s.trim().to_lowercase().as_str() {
                    "" | "no" | "false" | "full" => "full",
                    "morning" | "am" | "yes" | "true" => "morning",
                    "afternoon" | "pm" => "afternoon",
                    other => {
                        return Err(bad(format!(
                            "half_day {other:?} is not morning or afternoon"
                        )))
                    }
                },
                Some(other) => {
                    return Err(bad(format!("half_day {other} is not morning or afternoon")))
                }
            };
            let leave_type = text("leave_type")
                .filter(|t| !t.is_empty())
                .unwrap_or("annual")
                .to_lowercase();
            Action::Book {
                date,
                portion,
                leave_type,
            }
        }
        other => return Err(bad(format!("unknown action {other:?} (book or balance)"))),
    };
    Ok(Order { action, key })
}

/// Maps the portal's error text to an error kind.
fn classify(message: &str) -> &'static str {
    let m = message.to_lowercase();
    if m.contains("in the past") {
        "past_date"
    } else if m.contains("weekend") {
        "weekend"
    } else if m.contains("already have leave") {
        "already_booked"
    } else if m.contains("not have enough leave") {
        "not_enough_days"
    } else if m.contains("username or password") {
        "bad_credentials"
    } else if m.contains("date as") {
        "bad_date"
    } else {
        "refused"
    }
}

fn secret(name: &str) -> Option<String> {
    let dirs = [
        std::env::var_os("HARK_SECRETS_DIR").map(PathBuf::from),
        Some(PathBuf::from("/var/openfaas/secrets")),
    ];
    dirs.into_iter()
        .flatten()
        .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
        .map(|v| v.trim_end_matches(['\r', '\n']).to_owned())
}

/// The settings the function needs from its environment.
struct Settings {
    webdriver: String,
    portal: String,
    user: String,
    password: String,
}

impl Settings {
    fn from_env() -> Result<Settings, BookError> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| BookError::Unavailable(format!("{name} is not set")))
        };
        let mut portal = var("HR_PORTAL_URL")?;
        if !portal.ends_with('/') {
            portal.push('/');
        }
        Ok(Settings {
            webdriver: var("HARK_WEBDRIVER_URL")?,
            portal,
            user: std::env::var("HR_PORTAL_USER").unwrap_or_else(|_| "ada".to_owned()),
            password: secret(PASSWORD_SECRET).ok_or_else(|| {
                BookError::Unavailable(format!(
                    "the secret {PASSWORD_SECRET} is missing (HARK_SECRETS_DIR)"
                ))
            })?,
        })
    }
}

/// The browser, driven through the portal's pages.
struct Portal<'a> {
    client: &'a Client,
    settings: &'a Settings,
}

impl Portal<'_> {
    /// Waits for the first of `targets` to appear: its index and element.
    async fn first_of(&self, targets: &[(&str, &str)]) -> Result<(usize, Element), BookError> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            for (i, (css, _)) in targets.iter().enumerate() {
                match self.client.find(Locator::Css(css)).await {
                    Ok(e) => return Ok((i, e)),
                    Err(e) if e.is_no_such_element() => {}
                    Err(e) => return Err(BookError::Unavailable(format!("{}: {e}", targets[i].1))),
                }
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = targets.iter().map(|t| t.1).collect();
                return Err(BookError::SiteChanged(format!(
                    "none of {} appeared on the page",
                    names.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn find(&self, css: &str, what: &str) -> Result<Element, BookError> {
        Ok(self.first_of(&[(css, what)]).await?.1)
    }

    async fn click(&self, css: &str, what: &str) -> Result<(), BookError> {
        self.find(css, what).await?.click().await.map_err(cmd(what))
    }

    async fn text(&self, css: &str, what: &str) -> Result<String, BookError> {
        let text = self
            .find(css, what)
            .await?
            .text()
            .await
            .map_err(cmd(what))?;
        Ok(text.trim().to_owned())
    }

    async fn fill(&self, css: &str, what: &str, value: &str) -> Result<(), BookError> {
        let e = self.find(css, what).await?;
        e.clear().await.map_err(cmd(what))?;
        e.send_keys(value).await.map_err(cmd(what))
    }

    /// After a form was sent: the next page's `marker`, or the page's error text refused.
    async fn expect(&self, marker: &str, what: &str) -> Result<Element, BookError> {
        match self
            .first_of(&[(marker, what), (".error", "an error message")])
            .await?
        {
            (0, e) => Ok(e),
            (_, e) => {
                let message = e.text().await.map_err(cmd("the error message"))?;
                let message = message.trim().to_owned();
                Err(BookError::Refused {
                    kind: classify(&message),
                    message,
                })
            }
        }
    }

    /// Opens the portal and signs in.
    async fn sign_in(&self) -> Result<(), BookError> {
        self.client
            .goto(&format!("{}login", self.settings.portal))
            .await
            .map_err(|e| BookError::Unavailable(format!("opening the portal: {e}")))?;
        if let Err(BookError::SiteChanged(missing)) =
            self.find("#username", "the user name field").await
        {
            // Not the portal at all: the gateway's JSON error ("function hr-portal not
            // found" when it is not deployed) says more than "the site changed".
            let body = match self.client.find(Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            return Err(match serde_json::from_str::<Value>(body.trim()) {
                Ok(json) if json["error"].is_string() => BookError::Unavailable(format!(
                    "the portal at {} is not there: {}",
                    self.settings.portal, json["error"]
                )),
                _ => BookError::SiteChanged(missing),
            });
        }
        self.fill("#username", "the user name field", &self.settings.user)
            .await?;
        self.fill("#password", "the password field", &self.settings.password)
            .await?;
        self.click("#sign-in", "the sign-in button").await?;
        self.expect("#menu", "the menu").await?;
        Ok(())
    }

    async fn days_left(&self) -> Result<f64, BookError> {
        self.click("#nav-balance", "the balance link").await?;
        let text = self.text("#days-left", "the days-left figure").await?;
        text.parse()
            .map_err(|_| BookError::SiteChanged(format!("the balance {text:?} is not a number")))
    }

    /// The booking made with `key` earlier: its confirmation number and date.
    async fn find_booked(&self, key: &str) -> Result<Option<(String, NaiveDate)>, BookError> {
        self.click("#nav-requests", "the requests link").await?;
        self.first_of(&[
            ("#requests", "the list of requests"),
            ("#no-requests", "the empty list of requests"),
        ])
        .await?;
        let tag = format!("[ref {key}]");
        let rows = self
            .client
            .find_all(Locator::Css("tr.request"))
            .await
            .map_err(cmd("the requests"))?;
        for row in rows {
            let comment = row
                .find(Locator::Css(".comment"))
                .await
                .map_err(cmd("a request's comment"))?
                .text()
                .await
                .map_err(cmd("a request's comment"))?;
            if comment.contains(&tag) {
                let cell = |css: &'static str| {
                    let row = row.clone();
                    async move {
                        row.find(Locator::Css(css))
                            .await
                            .map_err(cmd("a request's cells"))?
                            .text()
                            .await
                            .map_err(cmd("a request's cells"))
                    }
                };
                let reference = cell(".ref").await?;
                let date = cell(".date").await?;
                let date = NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").map_err(|_| {
                    BookError::SiteChanged(format!("the request date {date:?} is not a date"))
                })?;
                return Ok(Some((reference.trim().to_owned(), date)));
            }
        }
        Ok(None)
    }

    /// The three steps of the leave request; the confirmation number.
    async fn request(
        &self,
        date: NaiveDate,
        portion: &str,
        leave_type: &str,
        key: Option<&str>,
    ) -> Result<String, BookError> {
        self.click("#nav-request", "the request-leave link").await?;
        // Step 1: the date picker takes its value the way a picked date sets it.
        let picker = self.find("input#date", "the date picker").await?;
        self.client
            .execute(
                "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
                vec![
                    serde_json::to_value(&picker).unwrap_or(Value::Null),
                    json!(date.to_string()),
                ],
            )
            .await
            .map_err(cmd("the date picker"))?;
        self.click(&format!("#portion-{portion}"), "the half-day choice")
            .await?;
        self.click("#next", "the continue button").await?;
        // Step 2: leave type and comment.
        let select = self.expect("#leave-type", "the leave-type list").await?;
        select
            .select_by_value(leave_type)
            .await
            .map_err(|e| match e.is_no_such_element() {
                true => BookError::BadInput {
                    kind: "bad_input",
                    message: format!("the portal has no leave type {leave_type:?}"),
                },
                false => BookError::Unavailable(format!("the leave-type list: {e}")),
            })?;
        let comment = match key {
            Some(k) => format!("Booked by voice through Hark [ref {k}]"),
            None => "Booked by voice through Hark".to_owned(),
        };
        self.fill("#comment", "the comment field", &comment).await?;
        self.click("#next", "the continue button").await?;
        // Step 3: check the summary, confirm, submit.
        let shown = self.expect("#review-date", "the review page").await?;
        let shown = shown
            .attr("data-date")
            .await
            .map_err(cmd("the reviewed date"))?
            .unwrap_or_default();
        if shown != date.to_string() {
            return Err(BookError::SiteChanged(format!(
                "the review page shows {shown:?}, not {date}"
            )));
        }
        self.click("#confirm", "the confirmation box").await?;
        self.click("#submit", "the submit button").await?;
        let number = self
            .expect("#confirmation", "the confirmation number")
            .await?;
        let number = number
            .text()
            .await
            .map_err(cmd("the confirmation number"))?;
        Ok(number.trim().to_owned())
    }

    async fn sign_out(&self) {
        let _ = self.click("#logout", "the sign-out button").await;
    }
}

fn weekday(date: NaiveDate) -> String {
    date.format("%A").to_string()
}

fn days(d: f64) -> Value {
    if d.fract() == 0.0 {
        json!(d as i64)
    } else {
        json!(d)
    }
}

/// Runs the order in the browser; the answer.
async fn run(client: &Client, settings: &Settings, order: &Order) -> Result<Value, BookError> {
    let portal = Portal { client, settings };
    portal.sign_in().await?;
    let answer = match &order.action {
        Action::Balance => {
            json!({ "status": "balance", "days_left": days(portal.days_left().await?) })
        }
        Action::Book {
            date,
            portion,
            leave_type,
        } => {
            let key = order.key.as_deref();
            let earlier = match key {
                Some(k) => portal.find_booked(k).await?,
                None => None,
            };
            let (confirmation, date, repeat) = match earlier {
                Some((number, date)) => (number, date, true),
                None => match portal.request(*date, portion, leave_type, key).await {
                    Ok(number) => (number, *date, false),
                    // A retry that raced the first try: the first one booked it.
                    Err(BookError::Refused {
                        kind: "already_booked",
                        message,
                    }) => match key {
                        Some(k) => match portal.find_booked(k).await? {
                            Some((number, date)) => (number, date, true),
                            None => {
                                return Err(BookError::Refused {
                                    kind: "already_booked",
                                    message,
                                })
                            }
                        },
                        None => {
                            return Err(BookError::Refused {
                                kind: "already_booked",
                                message,
                            })
                        }
                    },
                    Err(e) => return Err(e),
                },
            };
            let left = portal.days_left().await?;
            json!({
                "status": "booked",
                "confirmation": confirmation,
                "date": date.to_string(),
                "weekday": weekday(date),
                "day": date.day(),
                "portion": portion,
                "leave_type": leave_type,
                "days_left": days(left),
                "repeat": repeat,
            })
        }
    };
    portal.sign_out().await;
    Ok(answer)
}

fn capabilities() -> Map<String, Value> {
    let mut caps = Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"] }),
    );
    caps
}

async fn book(body: &Value) -> (Value, bool) {
    let order = match parse_order(body) {
        Ok(o) => o,
        Err(e) => return (error_answer(&e, None), false),
    };
    let date = match &order.action {
        Action::Book { date, .. } => Some(*date),
        Action::Balance => None,
    };
    let result = async {
        let settings = Settings::from_env()?;
        let mut builder = ClientBuilder::rustls()
            .map_err(|e| BookError::Unavailable(format!("TLS setup: {e}")))?;
        let client = builder
            .capabilities(capabilities())
            .connect(&settings.webdriver)
            .await
            .map_err(|e| BookError::Unavailable(format!("no browser session: {e}")))?;
        let result = run(&client, &settings, &order).await;
        // Gateway's pool: releasing photographs the last page first, and the screenshot
        // is kept with the activation when this call then fails.
        let _ = client.close().await;
        result
    }
    .await;
    match result {
        Ok(answer) => (answer, false),
        Err(e) => {
            eprintln!("book-holiday: {e}");
            (error_answer(&e, date), e.is_failure())
        }
    }
}

fn error_answer(e: &BookError, date: Option<NaiveDate>) -> Value {
    json!({
        "status": "error",
        "kind": e.kind(),
        "message": e.message(),
        "date": date.map(|d| d.to_string()),
        "weekday": date.map(weekday),
        "day": date.map(|d| d.day()),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut input = String::new();
    let body = match std::io::stdin().read_to_string(&mut input) {
        Ok(_) => serde_json::from_str::<Value>(&input).ok(),
        Err(_) => None,
    };
    let (answer, failed) = match body {
        Some(body) => book(&body).await,
        None => (
            error_answer(
                &BookError::BadInput {
                    kind: "bad_input",
                    message: "the request is not JSON".to_owned(),
                },
                None,
            ),
            false,
        ),
    };
    println!("{answer}");
    if failed {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_alexa_body_and_takes_the_request_id_as_key() {
        let order = parse_order(&json!({
            "requestId": "amzn1.echo-api.request.1",
            "input": { "action": "book", "date": "2030-01-07", "half_day": "afternoon" }
        }))
        .unwrap();
        assert_eq!(order.key.as_deref(), Some("amzn1.echo-api.request.1"));
        assert_eq!(
            order.action,
            Action::Book {
                date: NaiveDate::from_ymd_opt(2030, 1, 7).unwrap(),
                portion: "afternoon",
                leave_type: "annual".into()
            }
        );
        let own = parse_order(&json!({ "date": "2030-01-07", "idempotency_key": "k1" })).unwrap();
        assert_eq!(own.key.as_deref(), Some("k1"));
        assert_eq!(
            parse_order(&json!({ "input": { "action": "balance" } }))
                .unwrap()
                .action,
            Action::Balance
        );
    }

    #[test]
    fn vague_dates_and_unknown_actions_are_refused_before_any_browser() {
        for (input, kind) in [
            (json!({ "date": "2030-W02" }), "bad_date"),
            (json!({ "date": "" }), "bad_date"),
            (json!({ "action": "cancel" }), "bad_input"),
            (
                json!({ "date": "2030-01-07", "half_day": "evening" }),
                "bad_input",
            ),
        ] {
            assert_eq!(parse_order(&input).unwrap_err().kind(), kind, "{input}");
        }
    }

    #[test]
    fn the_portal_error_texts_map_to_kinds() {
        assert_eq!(
            classify(
                "Saturday 5 January 2030 is a weekend day. Leave is only needed on working days."
            ),
            "weekend"
        );
        assert_eq!(classify("Monday 1 January 2024 is in the past. Leave can only be requested for today or later."), "past_date");
        assert_eq!(
            classify("You already have leave booked on Monday 7 January 2030."),
            "already_booked"
        );
        assert_eq!(classify("Invalid username or password."), "bad_credentials");
        assert_eq!(
            classify("You do not have enough leave left for this request."),
            "not_enough_days"
        );
    }
}
