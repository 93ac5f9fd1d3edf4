//! The "book a day off" story end to end, with real Chromium: a signed Alexa IntentRequest
//! for the holiday skill → `book-holiday` drives the HR portal (served by the same gateway
//! at `/function/hr-portal/`) in a browser → the spoken answer names the booking, and the
//! portal's bookings file holds exactly it. A retried request books nothing new; a weekend
//! and a past day get their own answers. `hark say` runs the README's demo sentence.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, Duration as Days, Local, NaiveDate, Weekday};
use hark::channels::alexa::{testpki, verify};
use serde_json::{json, Value};

use crate::util::{hark_bin, Gateway};

/// The holiday skill's application id (skills/holiday/skill.yaml).
const APP_ID: &str = "amzn1.ask.skill.00000000-0000-0000-0000-000000000000";
const CERT_URL: &str = "https://s3.amazonaws.com/echo.api/hark-holiday-test.pem";
const PASSWORD: &str = "correct horse battery";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn function_bin(name: &str) -> PathBuf {
    let path = hark_bin().with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// Whether Chromium and ChromeDriver are installed: a missing browser fails the test under
/// CI and skips it (with a message) elsewhere.
fn chromium_present(test: &str) -> bool {
    let present = which::which("chromedriver").is_ok()
        && (Path::new("/usr/lib/chromium/chromium").exists() || which::which("chromium").is_ok());
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: Chromium and ChromeDriver are required in CI (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED {test}: Chromium or ChromeDriver is not installed");
    }
    present
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A ChromeDriver of the test's own, killed with its browsers (its process group) on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The first working day on or after `day`.
fn working_day(mut day: NaiveDate) -> NaiveDate {
    while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        day += Days::days(1);
    }
    day
}

/// "next friday" as `hark say` resolves it: the first Friday after today.
fn next_friday(today: NaiveDate) -> NaiveDate {
    let mut day = today + Days::days(1);
    while day.weekday() != Weekday::Fri {
        day += Days::days(1);
    }
    day
}

struct Demo {
    gw: Gateway,
    bookings: PathBuf,
    _chromedriver: ChromeDriver,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// A gateway serving the portal, book-holiday and the repository's holiday skill, which
    /// trusts the test CA; the password comes in as `HARK_SECRET_HR_PORTAL_PASSWORD`.
    fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let pki = testpki::Pki::for_time(chrono::Utc::now());
        std::fs::create_dir_all(data.join("certs")).unwrap();
        std::fs::write(data.join("certs/hark-holiday-test.pem"), &pki.good_chain).unwrap();
        std::fs::write(data.join("root.pem"), &pki.root_pem).unwrap();
        let chromedriver = ChromeDriver::start();
        let port = free_port();
        let bookings = data.join("bookings.json");
        let config = format!(
            r#"functions:
  hr-portal:
    fprocess: {portal}
    environment: {{ HR_PORTAL_STORE: {bookings}, HR_PORTAL_USER: ada }}
    secrets: [hr-portal-password]
    annotations: {{ hark.mode: http }}
    labels: {{ com.openfaas.scale.min: "1" }}
  book-holiday:
    fprocess: {book}
    environment:
      HR_PORTAL_URL: http://127.0.0.1:{port}/function/hr-portal/
      HR_PORTAL_USER: ada
      HARK_WEBDRIVER_URL: {webdriver}
    secrets: [hr-portal-password]
    annotations: {{ hark.timeout: 30s }}
alexa:
  skills: {skills}
  use_default_roots: false
  trust_roots: [./root.pem]
  cert_dir: ./certs
  download_missing: false
"#,
            portal = function_bin("hr-portal").display(),
            book = function_bin("book-holiday").display(),
            bookings = bookings.display(),
            webdriver = chromedriver.url,
            skills = repo().join("skills").display(),
        );
        std::fs::write(data.join("hark.yml"), config).unwrap();
        let command = Gateway::up_command_on(
            data,
            port,
            &[],
            &[("HARK_SECRET_HR_PORTAL_PASSWORD", PASSWORD)],
        );
        let gw = Gateway::spawn(command, data);
        Demo {
            gw,
            bookings,
            _chromedriver: chromedriver,
            _dir: dir,
        }
    }

    /// The bookings the portal holds.
    fn bookings(&self) -> Vec<Value> {
        match std::fs::read(&self.bookings) {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes).unwrap()["bookings"]
                .as_array()
                .unwrap()
                .clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Sends a signed request to `POST /alexa/holiday`; the answer's SSML.
    async fn alexa(&self, body: &str) -> String {
        let response = self
            .gw
            .client
            .post(format!("{}/alexa/holiday", self.gw.url))
            .header("content-type", "application/json")
            .header(verify::HEADER_CERT_CHAIN_URL, CERT_URL)
            .header(verify::HEADER_SIGNATURE_256, testpki::sign(body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", self.gw.output());
        let answer: Value = response.json().await.unwrap();
        answer["response"]["outputSpeech"]["ssml"]
            .as_str()
            .unwrap_or_else(|| panic!("no speech in {answer}"))
            .to_owned()
    }
}

/// A signed-to-be IntentRequest of the holiday skill.
fn intent_request(request_id: &str, intent: &str, slots: Value) -> String {
    let app = json!({ "applicationId": APP_ID });
    let user = json!({ "userId": "amzn1.ask.account.holiday-test" });
    json!({
        "version": "1.0",
        "session": { "new": true, "sessionId": format!("s-{request_id}"), "application": app,
                     "attributes": {}, "user": user },
        "context": { "System": { "application": app, "user": user } },
        "request": {
            "type": "IntentRequest",
            "requestId": request_id,
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "locale": "en-GB",
            "intent": { "name": intent, "confirmationStatus": "NONE", "slots": slots },
        },
    })
    .to_string()
}

fn book_request(request_id: &str, date: NaiveDate) -> String {
    intent_request(
        request_id,
        "BookDayOffIntent",
        json!({ "date": { "name": "date", "value": date.to_string(), "confirmationStatus": "NONE" } }),
    )
}

/// How the skill says `date`: "Friday the <say-as …>????1204</say-as>".
fn spoken(date: NaiveDate) -> String {
    format!(
        "{} the <say-as interpret-as=\"date\">????{:02}{:02}</say-as>",
        date.format("%A"),
        date.month(),
        date.day()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn alexa_books_a_day_off_on_the_hr_portal_in_a_real_browser() {
    if !chromium_present("alexa_books_a_day_off_on_the_hr_portal_in_a_real_browser") {
        return;
    }
    let demo = Demo::start();
    let today = Local::now().date_naive();
    let day = working_day(next_friday(today) + Days::days(3));

    // 1. Book it.
    let request = book_request("amzn1.echo-api.request.book-1", day);
    let said = demo.alexa(&request).await;
    let booked = demo.bookings();
    assert_eq!(booked.len(), 1, "{said}\n{}", demo.gw.output());
    let number = booked[0]["confirmation"].as_str().unwrap().to_owned();
    assert_eq!(booked[0]["date"], day.to_string());
    assert_eq!(
        said,
        format!(
            "<speak>Done. {} is booked, confirmation {number}. You have 24 days left.</speak>",
            spoken(day)
        )
    );
    assert!(booked[0]["comment"]
        .as_str()
        .unwrap()
        .contains("[ref amzn1.echo-api.request.book-1]"));

    // 2. Alexa retries the same request: the same answer, nothing booked again.
    let again = demo.alexa(&request).await;
    assert_eq!(again, said);
    assert_eq!(demo.bookings().len(), 1);

    // 3. A new request for the same day is refused by the portal, and said so.
    let said = demo
        .alexa(&book_request("amzn1.echo-api.request.book-2", day))
        .await;
    assert_eq!(
        said,
        format!(
            "<speak>You already have {} off. I haven't booked anything new.</speak>",
            spoken(day)
        )
    );

    // 4. A weekend and a day gone by.
    let saturday = next_friday(today) + Days::days(1);
    let said = demo
        .alexa(&book_request("amzn1.echo-api.request.book-3", saturday))
        .await;
    assert_eq!(
        said,
        format!(
            "<speak>{} is a weekend day, so there is nothing to book.</speak>",
            spoken(saturday)
        )
    );
    let past = working_day(today - Days::days(14));
    let said = demo
        .alexa(&book_request("amzn1.echo-api.request.book-4", past))
        .await;
    assert_eq!(
        said,
        format!(
            "<speak>{} has already gone. I can only book days from today on.</speak>",
            spoken(past)
        )
    );
    assert_eq!(demo.bookings().len(), 1);

    // 5. The balance, read on the portal.
    let said = demo
        .alexa(&intent_request(
            "amzn1.echo-api.request.balance-1",
            "BalanceIntent",
            json!({}),
        ))
        .await;
    assert_eq!(said, "<speak>You have 24 days of leave left.</speak>");

    // 6. The README's demo sentence through `hark say`.
    let friday = next_friday(today);
    let gw = &demo.gw;
    let out = tokio::task::block_in_place(|| {
        Command::new(hark_bin())
            .args(["say", "holiday", "book next friday off", "--skills"])
            .arg(repo().join("skills"))
            .env("HARK_GATEWAY", &gw.url)
            .env("HARK_DATA", &gw.data)
            .env_remove("HARK_TOKEN")
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let booked = demo.bookings();
    assert_eq!(booked.len(), 2, "{stdout}");
    assert_eq!(booked[1]["date"], friday.to_string());
    assert!(
        stdout.starts_with(&format!(
            "Done. {} the ????{:02}{:02} is booked, confirmation {}. You have 23 days left.",
            friday.format("%A"),
            friday.month(),
            friday.day(),
            booked[1]["confirmation"].as_str().unwrap()
        )),
        "{stdout}"
    );
}
