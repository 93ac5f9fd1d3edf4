//! {{ name }}: a browser function. The request body is a URL; the function opens it in a
//! headless browser through the WebDriver server at `$HARK_WEBDRIVER_URL` (the gateway's
//! browser pool sets it for every function) and answers `{"url": ..., "title": ...}`.
//! Failures exit non-zero with the reason on stderr, which answers 500.

use std::io::Read;
use std::process::ExitCode;

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// Where the WebDriver server is.
const WEBDRIVER_URL: &str = "HARK_WEBDRIVER_URL";

/// Chromium settings that work headless, also as root in a container; a browser pool
/// may replace them with its own.
fn capabilities() -> serde_json::Map<String, Value> {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] }),
    );
    capabilities
}

/// Opens `url` and reads the page's title.
async fn page_title(client: &Client, url: &str) -> Result<String, String> {
    client
        .goto(url)
        .await
        .map_err(|e| format!("opening {url}: {e}"))?;
    client
        .title()
        .await
        .map_err(|e| format!("reading the title of {url}: {e}"))
}

async fn run() -> Result<Value, String> {
    let webdriver = std::env::var(WEBDRIVER_URL).map_err(|_| {
        format!(
            "{WEBDRIVER_URL} is not set: run this function behind a Hark gateway with a \
             browser pool, or set {WEBDRIVER_URL} to a WebDriver server (chromedriver --port=9515 \
             → http://127.0.0.1:9515) in the function's environment"
        )
    })?;
    let mut body = String::new();
    std::io::stdin()
        .read_to_string(&mut body)
        .map_err(|e| format!("reading the request body: {e}"))?;
    let url = body.trim();
    if url.is_empty() {
        return Err("send the URL to open as the request body".to_owned());
    }
    let client = ClientBuilder::rustls()
        .map_err(|e| format!("setting up TLS: {e}"))?
        .capabilities(capabilities())
        .connect(&webdriver)
        .await
        .map_err(|e| format!("starting a browser session at {webdriver}: {e}"))?;
    // The session is closed whatever happened on the page, so the browser is freed.
    let title = page_title(&client, url).await;
    let closed = client.close().await;
    let title = title?;
    closed.map_err(|e| format!("closing the browser session: {e}"))?;
    Ok(json!({ "url": url, "title": title }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("{{ name }}: {reason}");
            ExitCode::FAILURE
        }
    }
}
