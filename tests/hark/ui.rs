//! The web UI in real headless Chromium (driven by fantoccini through a ChromeDriver this
//! test starts) against a real `hark up`: sign in, deploy, invoke with text and with an
//! uploaded picture, try an utterance, see the activations, and a POST without its CSRF
//! token refused. A screenshot of each page goes to `target/ui-screenshots/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::util::{hark_bin, Gateway};

/// Chromium flags that work as root in a container (see CRATES.md).
const CHROME_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-quic",
    "--no-first-run",
    "--mute-audio",
    "--window-size=1280,900",
];

/// A ChromeDriver process, killed when dropped (also when the test fails).
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser's binary and ChromeDriver, or `None` (with the reason) when missing.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let driver = which::which("chromedriver").map_err(|_| "chromedriver is not installed")?;
    let chrome = [
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or("chromium is not installed")?;
    Ok((chrome, driver))
}

/// Starts ChromeDriver on a free loopback port and waits until it answers.
async fn start_driver(driver: &Path) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..100 {
        let ready = client
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if ready.is_some() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start on port {port}");
}

async fn connect(driver: &Driver, chrome: &Path, profile: &Path) -> Client {
    let mut args: Vec<String> = CHROME_ARGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chrome, "args": args }),
    );
    ClientBuilder::rustls()
        .expect("rustls client")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("new browser session")
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// A grayscale "photo": sky, sun and hills with some texture, 320x200.
fn gray_photo(path: &Path) {
    let img = image::GrayImage::from_fn(320, 200, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let hill = 130.0 + 22.0 * (fx / 45.0).sin() + 10.0 * (fx / 17.0).cos();
        let sun = ((fx - 235.0).powi(2) + (fy - 55.0).powi(2)).sqrt() < 26.0;
        let grain = ((x * 7919 + y * 104_729) % 23) as f32;
        let v = if sun {
            245.0
        } else if fy < hill {
            90.0 + fy * 0.9 + grain
        } else {
            40.0 + (fy - hill) * 0.6 + grain * 1.5
        };
        image::Luma([v.clamp(0.0, 255.0) as u8])
    });
    img.save(path).unwrap();
}

const PARROT_SKILL: &str = r#"
id: amzn1.ask.skill.ui-parrot
invocation: parrot
locales: [en-GB]
types:
  WORD:
    values: [hello, goodbye, biscuits]
intents:
  Repeat:
    samples: ["say {word}", "repeat {word}"]
    slots:
      word: WORD
    function: parrot
    input: { word: "{{ slots.word }}" }   # the function (cat) answers its request: {"input": ...}
    speech: "You said {{ result.input.word }}."
    card: { title: "Parrot", text: "Heard {{ result.input.word }}" }
"#;

/// Waits (up to 20 s) until `script` returns a truthy value; panics with `what` otherwise.
async fn until(browser: &Client, script: &str, what: &str) -> Value {
    for _ in 0..200 {
        let v = browser.execute(script, vec![]).await.unwrap();
        if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn fill(browser: &Client, css: &str, text: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Clicks a control that loads a new page and waits until the old document is gone: a
/// WebDriver click can return before the navigation it starts has committed, most of all on a
/// loaded machine, and reading the URL then still sees the old page.
async fn submit(browser: &Client, css: &str) {
    let old = browser.find(Locator::Css("html")).await.unwrap();
    click(browser, css).await;
    for _ in 0..200 {
        if old.tag_name().await.is_err() {
            // Stale: the new document has replaced it; let it finish loading.
            until(
                browser,
                "return document.readyState === 'complete';",
                "the page load",
            )
            .await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("clicking {css} loaded no new page");
}

async fn body_text(browser: &Client) -> String {
    browser
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_web_ui_in_a_real_browser() {
    let (chrome, driver) = match browser() {
        Ok(found) => found,
        Err(why) if std::env::var_os("CI").is_some() => panic!("CI is set and {why}"),
        Err(why) => {
            eprintln!("SKIPPED the_web_ui_in_a_real_browser: {why}");
            return;
        }
    };
    let colorise = hark_bin().with_file_name("colorise");
    assert!(
        colorise.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        colorise.display()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("skills/parrot")).unwrap();
    std::fs::write(dir.path().join("skills/parrot/skill.yaml"), PARROT_SKILL).unwrap();
    let config = dir.path().join("hark.yml");
    std::fs::write(
        &config,
        format!(
            "functions:\n  parrot:\n    fprocess: cat\n  colorise:\n    fprocess: {}\n    environment: {{ content_type: image/png }}\nalexa:\n  skills: ./skills\n",
            colorise.display()
        ),
    )
    .unwrap();
    let picture = dir.path().join("gray.png");
    gray_photo(&picture);
    let gw = Gateway::start_with(&["--config", config.to_str().unwrap()]);
    let driver = start_driver(&driver).await;
    let browser = connect(&driver, &chrome, &dir.path().join("profile")).await;
    // Close the session even when an assertion fails, so no Chromium outlives the test.
    let result = tokio::spawn(walk_through(
        browser.clone(),
        gw.url.clone(),
        gw.token.clone(),
        picture,
    ))
    .await;
    let _ = browser.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }

    // The gateway saw the UI's calls as activations with trigger `ui`.
    let response = gw
        .request(reqwest::Method::GET, "/system/activations?function=shout")
        .send()
        .await
        .unwrap();
    let records: Vec<Value> = response.json().await.unwrap();
    assert!(
        records
            .iter()
            .any(|a| a["trigger"] == "ui" && a["status"] == 200),
        "{records:?}"
    );

    // A POST without the session's CSRF token is refused and changes nothing.
    let set = crate::sessions::sign_in(&gw, &gw.token).await;
    let cookie = set.split(';').next().unwrap().to_owned();
    for form in [
        "name=sneaky&fprocess=cat",
        "name=sneaky&fprocess=cat&csrf=0123456789abcdef",
    ] {
        let refused = gw
            .client
            .post(format!("{}/ui/functions", gw.url))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "{form}");
    }
    let refused = gw
        .client
        .post(format!("{}/ui/functions/parrot/invoke", gw.url))
        .header("cookie", &cookie)
        .header("content-type", "multipart/form-data; boundary=B")
        .body("--B\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nx\r\n--B--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "invoke without CSRF token");
    let missing = gw
        .request(reqwest::Method::GET, "/system/function/sneaky")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "the refused deploy did not happen");
    // Sign-in itself needs the form's token (login CSRF).
    let refused = gw
        .client
        .post(format!("{}/ui/login", gw.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", gw.token))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // No session: pages send the browser to sign in.
    let page = gw
        .client
        .get(format!("{}/ui/activations", gw.url))
        .send()
        .await
        .unwrap();
    assert!(page.url().path().ends_with("/ui/login"), "{}", page.url());
}

async fn walk_through(browser: Client, url: String, token: String, picture: PathBuf) {
    // `/` leads to the sign-in page; a wrong token is refused there.
    browser.goto(&url).await.unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/ui/login");
    shoot(&browser, "login").await;
    fill(&browser, "#token", "not-a-token").await;
    submit(&browser, "form[action='/ui/login'] button").await;
    assert!(body_text(&browser).await.contains("not a valid token"));
    fill(&browser, "#token", &token).await;
    submit(&browser, "form[action='/ui/login'] button").await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/ui/");
    let table = browser
        .find(Locator::Css("#functions"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        table.contains("colorise") && table.contains("parrot"),
        "{table}"
    );

    // Deploy from the UI.
    fill(&browser, "#d-name", "shout").await;
    // It answers in capitals and logs a line per call.
    fill(
        &browser,
        "#d-fprocess",
        "sh -c 'tr a-z A-Z; echo \"shouted at $(date +%s%N)\" >&2'",
    )
    .await;
    shoot(&browser, "functions").await;
    submit(&browser, "#deploy-form button[type=submit]").await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/ui/functions/shout"
    );
    assert!(body_text(&browser).await.contains("Function deployed."));

    // Invoke with a text body; the answer, its status and time show in the page.
    fill(&browser, "#i-body", "hello from the browser").await;
    click(&browser, "#invoke-button").await;
    let answer = until(
        &browser,
        "const t = document.getElementById('r-text'); return !t.hidden && t.textContent;",
        "the text answer",
    )
    .await;
    assert_eq!(answer, "HELLO FROM THE BROWSER");
    let status = browser
        .find(Locator::Css("#r-status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.starts_with("200"), "{status}");
    let time = browser
        .find(Locator::Css("#r-time"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(time.ends_with("ms round trip"), "{time}");
    let shown = browser
        .execute(
            "return getComputedStyle(document.getElementById('r-image')).display;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown, "none", "no image box for a text answer");
    // The call appears among the recent activations without a reload.
    until(
        &browser,
        "return document.querySelector('#recent .acts a') !== null;",
        "the activation in the function page",
    )
    .await;
    // The call's log line arrives in the open page, pushed by the gateway as a
    // server-sent event through the UI's own script (which sends the CSRF token that
    // Fetch Metadata asks of a script); so does the next call's, without a reload.
    let shouted = "(document.querySelector('#logs').textContent.match(/shouted at/g) || []).length";
    until(
        &browser,
        &format!("return {shouted} === 1;"),
        "the call's log line in the live logs",
    )
    .await;
    click(&browser, "#invoke-button").await;
    until(
        &browser,
        &format!("return {shouted} === 2;"),
        "the second call's log line, pushed to the open page",
    )
    .await;
    shoot(&browser, "function-text").await;

    // The call's activation page tells its story: what the function was given, what it
    // answered, the line it logged; Replay runs it again and shows it gave the same.
    let activation = until(
        &browser,
        "const a = document.querySelector('#recent .acts a'); return a && a.getAttribute('href');",
        "a link to the call's activation",
    )
    .await;
    browser
        .goto(&format!("{url}{}", activation.as_str().unwrap()))
        .await
        .unwrap();
    let text_of = |css: &'static str| {
        let browser = browser.clone();
        async move {
            browser
                .find(Locator::Css(css))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert_eq!(text_of("#request-body").await, "hello from the browser");
    assert_eq!(text_of("#response-body").await, "HELLO FROM THE BROWSER");
    assert!(text_of("#call-logs").await.contains("shouted at"));
    shoot(&browser, "activation-story").await;
    submit(&browser, "#replay-form button[type=submit]").await;
    assert!(body_text(&browser)
        .await
        .contains("Replayed: this is the new call."));
    assert_eq!(
        text_of("#replay-same").await,
        "The same answer as the first call."
    );

    // The function's charts: calls per minute over the last hour as an SVG line of a
    // point a minute, whose dots count every call listed under it (two from the panel,
    // one replay).
    browser
        .goto(&format!("{url}/ui/functions/shout"))
        .await
        .unwrap();
    let drawn = browser
        .execute(
            "const g = document.querySelector('#chart-calls g[data-label=calls]');
             const points = [...g.querySelectorAll('polyline')].reduce((n, p) => n + p.points.numberOfItems, 0);
             const calls = [...g.querySelectorAll('circle')].reduce((n, c) => n + Number(c.dataset.n), 0);
             const listed = document.querySelectorAll('#recent .acts li a').length;
             const width = document.querySelector('#chart-calls svg').getBoundingClientRect().width;
             return [points, calls, listed, width > 200];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(drawn, json!([60, 3, 3, true]));
    shoot(&browser, "function-charts").await;
    browser.goto(&format!("{url}/ui/overview")).await.unwrap();
    let total = browser
        .find(Locator::Css("#total-calls"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(total.parse::<u32>().unwrap() >= 3, "{total}");
    shoot(&browser, "overview").await;
    browser
        .execute(
            "document.getElementById('chart-queue').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    shoot(&browser, "overview-gauges").await;

    // Upload a grayscale picture to colorise; the colour PNG shows inline.
    browser
        .goto(&format!("{url}/ui/functions/colorise"))
        .await
        .unwrap();
    click(&browser, "input[name=kind][value=file]").await;
    browser
        .find(Locator::Css("#i-file"))
        .await
        .unwrap()
        .send_keys(picture.to_str().unwrap())
        .await
        .unwrap();
    click(&browser, "#invoke-button").await;
    let width = until(
        &browser,
        "const i = document.getElementById('r-image'); return !i.hidden && i.complete && i.naturalWidth;",
        "the colourised picture",
    )
    .await;
    assert_eq!(width, 320);
    let shown = browser
        .execute(
            "return getComputedStyle(document.getElementById('r-text')).display;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown, "none", "no text box for an image answer");
    let colourful = browser
        .execute(
            "const i = document.getElementById('r-image'); const c = document.createElement('canvas');
             c.width = i.naturalWidth; c.height = i.naturalHeight; const x = c.getContext('2d');
             x.drawImage(i, 0, 0); const d = x.getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let k = 0; k < d.length; k += 4) { if (Math.abs(d[k] - d[k + 2]) > 30) n++; }
             return n / (d.length / 4);",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        colourful.as_f64().unwrap() > 0.3,
        "most pixels have colour: {colourful}"
    );
    let kind = browser
        .find(Locator::Css("#r-type"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(kind.starts_with("image/png"), "{kind}");
    shoot(&browser, "function-colorise").await;

    // Try an utterance on the skills page.
    browser.goto(&format!("{url}/ui/skills")).await.unwrap();
    assert!(body_text(&browser).await.contains("repeat {word}"));
    fill(&browser, "#t-utterance", "say biscuits").await;
    submit(&browser, "#try-form button").await;
    shoot(&browser, "skills").await;
    let spoken = browser
        .find(Locator::Css("#spoken"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(spoken, "You said biscuits.");
    let ssml = browser
        .find(Locator::Css("#ssml"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ssml.starts_with("<speak>") && ssml.contains("biscuits"),
        "{ssml}"
    );
    let card = browser
        .find(Locator::Css("#card"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        card.contains("Parrot") && card.contains("Heard biscuits"),
        "{card}"
    );

    // The activations page lists the UI's calls; filters narrow them.
    browser
        .goto(&format!("{url}/ui/activations?trigger=ui"))
        .await
        .unwrap();
    let rows = browser
        .find(Locator::Css("#activations tbody"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        rows.contains("shout") && rows.contains("colorise"),
        "{rows}"
    );
    assert!(
        !rows.contains("parrot"),
        "the skill's call has trigger alexa: {rows}"
    );
    // The channel filter offers the names activations are recorded with (scheduled runs
    // are `schedule`, never `cron`, which matched nothing).
    let options = browser
        .find(Locator::Css("#f-trigger"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for trigger in [
        "http", "ui", "async", "schedule", "alexa", "slack", "github", "hook",
    ] {
        assert!(options.contains(trigger), "no {trigger} in {options}");
    }
    assert!(!options.contains("cron"), "{options}");
    shoot(&browser, "activations").await;
    browser
        .goto(&format!("{url}/ui/activations?function=parrot"))
        .await
        .unwrap();
    let rows = browser
        .find(Locator::Css("#activations tbody"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(rows.contains("alexa"), "{rows}");
    submit(&browser, "#activations tbody a").await;
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/ui/activations/"));
    assert!(body_text(&browser).await.contains("parrot"));
    shoot(&browser, "activation").await;

    browser.goto(&format!("{url}/ui/queue")).await.unwrap();
    shoot(&browser, "queue").await;
    browser.goto(&format!("{url}/ui/schedules")).await.unwrap();
    shoot(&browser, "schedules").await;

    // A phone-sized screen.
    browser.set_window_size(390, 844).await.unwrap();
    browser
        .goto(&format!("{url}/ui/functions/shout"))
        .await
        .unwrap();
    shoot(&browser, "function-phone").await;
    browser.goto(&format!("{url}/ui/")).await.unwrap();
    shoot(&browser, "functions-phone").await;
    browser.goto(&format!("{url}/ui/overview")).await.unwrap();
    shoot(&browser, "overview-phone").await;

    // Remove, with its confirmation page; then sign out.
    browser.set_window_size(1280, 900).await.unwrap();
    browser
        .goto(&format!("{url}/ui/functions/shout/remove"))
        .await
        .unwrap();
    shoot(&browser, "remove").await;
    submit(&browser, "main form button.danger").await;
    assert!(body_text(&browser).await.contains("Function removed."));
    submit(&browser, ".signout button").await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/ui/login");
    browser.goto(&format!("{url}/ui/")).await.unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/ui/login",
        "signed out"
    );
}
