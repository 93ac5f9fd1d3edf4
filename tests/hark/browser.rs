//! The browser pool through a real gateway and real Chromium: `/webdriver` with
//! fantoccini as the client, the pool's limits (queue, 429, time limit), replacement of a
//! killed browser, isolation between leases, a fork-mode function using
//! `HARK_WEBDRIVER_URL`, the screenshot kept for a failed call, and the lockdown of the
//! pool's browsers: no `file:` or browser-internal pages, no downloads, no answer from
//! the gateway's control plane or other loopback services, the gateway's `/function/…`
//! routes still open.
//!
//! Chromium missing: the tests fail when `CI` is set, and are skipped with a message
//! otherwise.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::Gateway;

/// Whether Chromium and ChromeDriver are installed; panics without them under CI.
fn chromium() -> bool {
    let found =
        which("chromedriver") && std::path::Path::new("/usr/lib/chromium/chromium").exists();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!(
                "Chromium or ChromeDriver is missing (apt-get install chromium chromium-driver)"
            );
        }
        eprintln!("SKIPPED: Chromium or ChromeDriver is not installed (apt-get install chromium chromium-driver)");
    }
    found
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}

/// A gateway with the pool on (browsers warmed at once) and `args`.
fn gateway(args: &[&str]) -> Gateway {
    let mut all = vec!["--browser", "on"];
    all.extend_from_slice(args);
    Gateway::start_with(&all)
}

async fn pool(gw: &Gateway) -> Value {
    gw.request(Method::GET, "/system/browser")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the pool's status until `done` holds (at most a minute).
async fn wait_pool(gw: &Gateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = pool(gw).await;
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "pool never got {what}: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(url: &str) -> Result<fantoccini::Client, fantoccini::error::NewSessionError> {
    fantoccini::ClientBuilder::rustls()
        .expect("rustls connector")
        .connect(url)
        .await
}

/// A tiny web site on loopback: every path answers the same page, whose title is
/// `Hark test page`; a `Set-Cookie` is never sent (cookies come from the browser).
async fn site() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = stream.read(&mut buf).await;
                let page = "<html><head><title>Hark test page</title></head><body><h1>hello</h1></body></html>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn the_n_plus_first_lease_waits_and_a_full_queue_answers_429() {
    if !chromium() {
        return;
    }
    let gw = gateway(&["--browser-max", "1", "--browser-queue", "1"]);
    let url = format!("{}/webdriver/", gw.url);
    let first = connect(&url).await.expect("first lease");
    // The second waits in the queue while the first holds the only slot.
    let second = tokio::spawn({
        let url = url.clone();
        async move { connect(&url).await }
    });
    wait_pool(&gw, "a queued lease", |p| p["queued"] == 1).await;
    // The third finds the queue full.
    let third = gw
        .client
        .post(format!("{url}session"))
        .json(&json!({"capabilities": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["value"]["error"], "session not created", "{body}");
    assert!(!second.is_finished(), "the queued lease did not wait");
    // Releasing the first hands its slot to the queued one.
    first.close().await.unwrap();
    let second = second.await.unwrap().expect("queued lease");
    second
        .goto("data:text/html,<title>second</title>")
        .await
        .unwrap();
    assert_eq!(second.title().await.unwrap(), "second");
    second.close().await.unwrap();
}

#[tokio::test]
async fn a_session_past_its_time_limit_is_killed() {
    if !chromium() {
        return;
    }
    let gw = gateway(&["--browser-session-timeout", "2"]);
    // No command before the check: under load one could already meet the time limit.
    let client = connect(&format!("{}/webdriver/", gw.url)).await.unwrap();
    let id = client.session_id().await.unwrap().unwrap();
    let status = wait_pool(&gw, "the leased session killed", |p| p["inUse"] == 0).await;
    assert!(
        !status["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str()),
        "{status}"
    );
    let after = gw
        .client
        .get(format!("{}/webdriver/session/{id}/title", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404);
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["value"]["error"], "invalid session id");
    assert!(
        gw.output_containing("passed its time limit")
            .contains("passed its time limit"),
        "{}",
        gw.output()
    );
}

#[tokio::test]
async fn a_killed_browser_is_replaced_and_leases_share_no_cookies() {
    if !chromium() {
        return;
    }
    // The test site is on loopback, which pages reach only when allowed.
    let site = site().await;
    let gw = gateway(&["--browser-allow", &site]);
    let url = format!("{}/webdriver/", gw.url);

    // A cookie set through one lease is absent in the next.
    let first = connect(&url).await.unwrap();
    let first_id = first.session_id().await.unwrap().unwrap();
    first.goto(&site).await.unwrap();
    first
        .execute(
            "document.cookie = 'who=first-call; path=/; max-age=3600'",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(first.get_all_cookies().await.unwrap().len(), 1);
    first.close().await.unwrap();
    let second = connect(&url).await.unwrap();
    assert_ne!(second.session_id().await.unwrap().unwrap(), first_id);
    second.goto(&site).await.unwrap();
    assert_eq!(second.title().await.unwrap(), "Hark test page");
    assert!(second.get_all_cookies().await.unwrap().is_empty());
    second.close().await.unwrap();

    // Kill the warm browser: the pool notices and starts another.
    let status = wait_pool(&gw, "a warm browser", |p| {
        p["warm"] == 1 && p["sessions"][0]["browserPid"].is_u64()
    })
    .await;
    let victim = status["sessions"][0]["id"].clone();
    let pid = status["sessions"][0]["browserPid"].as_u64().unwrap();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let status = wait_pool(&gw, "the killed browser replaced", |p| {
        p["crashes"].as_u64() >= Some(1) && p["warm"] == 1 && p["sessions"][0]["id"] != victim
    })
    .await;
    assert_eq!(status["inUse"], 0);
    let third = connect(&url).await.unwrap();
    third.goto(&site).await.unwrap();
    assert_eq!(third.title().await.unwrap(), "Hark test page");
    third.close().await.unwrap();
}

/// A fork-mode function speaking WebDriver with curl through `HARK_WEBDRIVER_URL`: it
/// opens the page its body names and prints the title; with `?fail` it fails holding its
/// session, so the gateway must reclaim it and keep a screenshot.
const BROWSE: &str = r#"set -e
U="$HARK_WEBDRIVER_URL"
S=$(curl -sf -XPOST "${U}session" -d "{\"capabilities\":{}}" | sed -n "s/.*\"sessionId\":\"\([0-9a-f]*\)\".*/\1/p")
curl -sf -XPOST "${U}session/$S/url" -d "{\"url\":\"$(cat)\"}" >/dev/null
case "$Http_Query" in *fail*) echo "the page did not have what I wanted" >&2; exit 3;; esac
curl -sf "${U}session/$S/title"
curl -sf -XDELETE "${U}session/$S" >/dev/null
echo " via $U""#;

#[tokio::test]
async fn a_fork_function_browses_through_the_gateway_and_a_failed_call_keeps_a_screenshot() {
    if !chromium() {
        return;
    }
    if !which("curl") {
        assert!(std::env::var_os("CI").is_none(), "curl is missing");
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let site = site().await;
    let gw = gateway(&["--browser-allow", &site]);
    gw.deploy_sh("browse", BROWSE, json!({})).await;

    let ok = gw
        .client
        .post(format!("{}/function/browse", gw.url))
        .header("x-call-id", "browse-ok-1")
        .body(site.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap();
    assert!(text.contains("Hark test page"), "{text}");
    assert!(
        text.contains("/webdriver/fn/browse/call/browse-ok-1/"),
        "the URL does not name the call: {text}"
    );

    let failed = gw
        .client
        .post(format!("{}/function/browse?fail", gw.url))
        .header("x-call-id", "browse-failed-1")
        .body(site.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    // The session the failed call still held was reclaimed with the call.
    assert_eq!(pool(&gw).await["inUse"], 0);

    let shot = gw
        .request(
            Method::GET,
            "/system/activations/browse-failed-1/screenshot",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(shot.status(), 200);
    assert_eq!(shot.headers()["x-hark-page-url"].to_str().unwrap(), site);
    let png = shot.bytes().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A call that succeeded keeps none.
    let none = gw
        .request(Method::GET, "/system/activations/browse-ok-1/screenshot")
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    // Without a token, no screenshot.
    let anonymous = gw
        .client
        .get(format!(
            "{}/system/activations/browse-failed-1/screenshot",
            gw.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // `hark activations show` prints the page and saves the PNG.
    let file = gw.data.join("evidence.png");
    let out = std::process::Command::new(crate::util::hark_bin())
        .args(["--gateway", &gw.url, "--token", &gw.token])
        .args(["activations", "show", "browse-failed-1", "--screenshot"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&site), "{stdout}");
    assert!(stdout.contains("evidence.png"), "{stdout}");
    assert_eq!(std::fs::read(&file).unwrap(), png.to_vec());
}

#[tokio::test]
async fn without_chromium_the_gateway_starts_and_webdriver_answers_503() {
    let gw = Gateway::start_with(&["--chromedriver", "/nonexistent/chromedriver"]);
    assert!(
        gw.output_containing("browser automation is off")
            .contains("browser automation is off"),
        "{}",
        gw.output()
    );
    let answer = gw
        .client
        .post(format!("{}/webdriver/session", gw.url))
        .json(&json!({"capabilities": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["value"]["error"], "session not created");
    assert!(
        body["value"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/chromedriver not found"),
        "{body}"
    );
}

#[tokio::test]
async fn a_container_function_reaches_webdriver_on_its_network() {
    if !chromium() {
        return;
    }
    let Some(h) = crate::contract::Harness::start(crate::contract::Kind::Docker) else {
        return;
    };
    // busybox wget can POST but not DELETE: the session is reclaimed when the call ends.
    h.deploy_sh(
        "boxed-browse",
        r#"wget -q -O- --post-data="{}" "${HARK_WEBDRIVER_URL}session"; echo; echo "$HARK_WEBDRIVER_URL""#,
        json!({}),
    )
    .await;
    let (status, body) = h.gw.invoke("boxed-browse", "").await;
    assert_eq!(status, 200, "{body}\n{}", h.gw.output());
    assert!(body.contains("\"sessionId\""), "{body}");
    assert!(body.contains("/webdriver/fn/boxed-browse/call/"), "{body}");
    assert_eq!(pool(&h.gw).await["inUse"], 0);
}

// ---------------------------------------------------------------------------------------
// What a page in a pool browser cannot reach (SECURITY.md, "Browser sessions").

/// A browser leased as a function leases one, driven with plain WebDriver requests. The
/// one place that knows how the endpoint is reached and authenticated.
struct Leased {
    client: reqwest::Client,
    /// `…/webdriver/fn/NAME/session/ID/`.
    session: String,
    capabilities: Value,
}

/// Leases a browser under a function's prefix of `/webdriver`.
async fn lease(gw: &Gateway) -> Leased {
    let base = format!("{}/webdriver/fn/lockdown-probe/", gw.url);
    let answer: Value = gw
        .client
        .post(format!("{base}session"))
        .json(&json!({"capabilities": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no lease: {answer}"));
    Leased {
        client: gw.client.clone(),
        session: format!("{base}session/{id}/"),
        capabilities: answer["value"]["capabilities"].clone(),
    }
}

impl Leased {
    async fn command(&self, method: Method, command: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{command}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    /// `POST …/url`: the status and the answer's value.
    async fn goto(&self, url: &str) -> (u16, Value) {
        self.command(Method::POST, "url", Some(json!({ "url": url })))
            .await
    }

    async fn source(&self) -> String {
        let (_, body) = self.command(Method::GET, "source", None).await;
        body["value"].as_str().unwrap_or_default().to_owned()
    }

    async fn current_url(&self) -> String {
        let (_, body) = self.command(Method::GET, "url", None).await;
        body["value"].as_str().unwrap_or_default().to_owned()
    }

    async fn close(self) {
        let session = self.session.trim_end_matches('/').to_owned();
        let _ = self.client.delete(session).send().await;
    }
}

#[tokio::test]
async fn a_pool_browser_cannot_read_the_admin_token_or_open_browser_pages() {
    if !chromium() {
        return;
    }
    let gw = gateway(&[]);
    let data = gw.data.canonicalize().unwrap();
    let wd = lease(&gw).await;
    // The capabilities do not tell where the profiles live.
    let caps = wd.capabilities.to_string();
    assert!(wd.capabilities.is_object(), "{caps}");
    assert!(!caps.contains("userDataDir"), "{caps}");
    assert!(!caps.contains("debuggerAddress"), "{caps}");
    assert!(!caps.contains(data.to_str().unwrap()), "{caps}");

    let token_url = format!("file://{}", data.join("admin-token").display());
    for url in [
        token_url.clone(),
        format!("view-source:{token_url}"),
        "file:///etc/passwd".to_owned(),
        "chrome://version".to_owned(),
        "about:version".to_owned(),
        "devtools://devtools/bundled/inspector.html".to_owned(),
    ] {
        let (status, body) = wd.goto(&url).await;
        assert_eq!(status, 400, "{url} was opened: {body}");
        assert_eq!(body["value"]["error"], "invalid argument", "{body}");
        let source = wd.source().await;
        assert!(
            !source.contains(&gw.token),
            "the admin token is on the page"
        );
        assert!(!source.contains("root:x:0:0"), "/etc/passwd is on the page");
    }
    // A command that carries the URL where the endpoint does not look (a DevTools
    // command, for as long as the endpoint forwards those) meets the browser's own
    // URL blocklist: the navigation ends on an error page.
    let (status, _) = wd
        .command(
            Method::POST,
            "goog/cdp/execute",
            Some(json!({"cmd": "Page.navigate", "params": {"url": token_url}})),
        )
        .await;
    if status == 200 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while wd.current_url().await != token_url {
            assert!(Instant::now() < deadline, "the navigation never happened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let source = wd.source().await;
        assert!(
            !source.contains(&gw.token),
            "the admin token is on the page"
        );
    }
    // A page's own script cannot go there either.
    let (status, _) = wd.goto("data:text/html,<title>start</title>").await;
    assert_eq!(status, 200);
    let (status, _) = wd
        .command(
            Method::POST,
            "execute/sync",
            Some(
                json!({"script": format!("location.href = {:?}; return 1", token_url), "args": []}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let source = wd.source().await;
    assert!(
        !source.contains(&gw.token),
        "the admin token is on the page"
    );
    wd.close().await;
}

/// The proxy's address, from the gateway's log.
fn proxy_addr(gw: &Gateway) -> String {
    let out = crate::util::strip_ansi(&gw.output_containing("browsers go out through"));
    let line = out
        .lines()
        .find(|l| l.contains("browsers go out through"))
        .unwrap_or_else(|| panic!("no proxy in the log:\n{out}"));
    let at = line.find("proxy=").expect("proxy field") + "proxy=".len();
    line[at..].split_whitespace().next().unwrap().to_owned()
}

/// The status line the proxy at `proxy` answers to a raw request.
async fn raw_status(proxy: &str, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_pool_browser_gets_no_answer_from_the_control_plane_but_reaches_functions() {
    if !chromium() {
        return;
    }
    let gw = gateway(&[]);
    gw.deploy_sh("page", "echo made-by-a-function", json!({}))
        .await;
    let wd = lease(&gw).await;
    let port = gw.url.rsplit(':').next().unwrap().to_owned();
    for path in [
        "/system/functions",
        "/ui/",
        "/metrics",
        "/webdriver/status",
        "/healthz",
        "/openapi.json",
    ] {
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("http://{host}:{port}{path}");
            let (status, body) = wd.goto(&url).await;
            assert_eq!(status, 200, "{url}: {body}");
            let source = wd.source().await;
            assert!(
                source.contains("Refused by Hark"),
                "{url} answered: {source}"
            );
            assert!(!source.contains("sign in"), "{url} showed the UI: {source}");
        }
    }
    // A script on a page cannot read them either.
    let (_, body) = wd
        .command(
            Method::POST,
            "execute/async",
            Some(json!({"script": format!(
                "const done = arguments[0]; fetch('http://127.0.0.1:{port}/system/functions').then(r => done(r.status)).catch(e => done(String(e)))"
            ), "args": []})),
        )
        .await;
    assert_ne!(body["value"], 200, "{body}");
    assert_ne!(body["value"], 401, "{body}");
    assert!(
        gw.output_containing("browser request refused")
            .contains("browser request refused"),
        "{}",
        gw.output()
    );

    // The gateway's function routes stay open (the HR-portal demo browses one).
    let url = format!("http://127.0.0.1:{port}/function/page/");
    let (status, body) = wd.goto(&url).await;
    assert_eq!(status, 200, "{body}");
    let source = wd.source().await;
    assert!(source.contains("made-by-a-function"), "{source}");
    wd.close().await;

    // The proxy is no door either: no tunnel to the gateway, no plain request to /system.
    let proxy = proxy_addr(&gw);
    let tunnel = raw_status(
        &proxy,
        &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
    )
    .await;
    assert!(tunnel.contains(" 403 "), "{tunnel}");
    let plain = raw_status(
        &proxy,
        &format!("GET http://127.0.0.1:{port}/system/functions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer x\r\n\r\n"),
    )
    .await;
    assert!(plain.contains(" 403 "), "{plain}");
}

/// A site on loopback whose `/download` answers an attachment named `NAME.bin`; the
/// notify fires once the attachment was sent in full.
async fn download_site(name: &str) -> (String, std::sync::Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = sent.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let notify = notify.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let download = request.starts_with("GET /download");
                let (headers, body) = if download {
                    (
                        format!("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}.bin\"\r\n"),
                        "downloaded bytes".to_owned(),
                    )
                } else {
                    (
                        "Content-Type: text/html\r\n".to_owned(),
                        "<html><head><title>after</title></head><body>after</body></html>"
                            .to_owned(),
                    )
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
                if download {
                    notify.notify_one();
                }
            });
        }
    });
    (format!("http://{addr}/"), sent)
}

/// Every file under `dir` whose name contains `needle`.
fn files_named(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_named(&path, needle));
        } else if entry.file_name().to_string_lossy().contains(needle) {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_pool_browser_downloads_nothing() {
    if !chromium() {
        return;
    }
    let name = format!("hark-download-{}", std::process::id());
    let (site, sent) = download_site(&name).await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in_with_env(
        dir.path(),
        &["--browser", "on", "--browser-allow", &site],
        &[("HOME", home.path().to_str().unwrap())],
    );
    let wd = lease(&gw).await;
    let (status, body) = wd.goto(&format!("{site}page")).await;
    assert_eq!(status, 200, "{body}");
    // Both a navigation to the attachment and a link with `download`.
    let _ = wd.goto(&format!("{site}download")).await;
    sent.notified().await;
    let (_, body) = wd
        .command(
            Method::POST,
            "execute/sync",
            Some(json!({"script": "const a = document.createElement('a'); a.href = '/download?again'; a.download = ''; document.body.appendChild(a); a.click(); return 1", "args": []})),
        )
        .await;
    assert_eq!(body["value"], 1, "{body}");
    sent.notified().await;
    // A round trip through the browser after both were sent in full.
    let (status, _) = wd.goto(&format!("{site}after")).await;
    assert_eq!(status, 200);
    assert_eq!(
        wd.command(Method::GET, "title", None).await.1["value"],
        "after"
    );
    for place in [home.path(), dir.path()] {
        let landed = files_named(place, &name);
        let partial = files_named(place, ".crdownload");
        assert!(
            landed.is_empty() && partial.is_empty(),
            "a download landed: {landed:?} {partial:?}"
        );
    }
    wd.close().await;
}
