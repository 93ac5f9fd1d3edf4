//! Web UI sessions live on the server, and UI pages answer navigations only: against a
//! real `hark up`, with the requests a browser (or a hostile page) would send.

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, Method, StatusCode};
use serde_json::json;

use crate::util::{register_secret, Gateway};

pub fn no_redirects() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// The value of `name="csrf" value="…"` in a page.
pub fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// A urlencoded form body.
fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A cookie's `name=value` from a `Set-Cookie` header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

/// Signs in at `gw`'s UI with `token` as a browser would (the form, its nonce cookie and
/// CSRF token); the session's `Set-Cookie` header.
pub async fn sign_in(gw: &Gateway, token: &str) -> String {
    let client = no_redirects();
    let page = client
        .get(format!("{}/ui/login", gw.url))
        .send()
        .await
        .unwrap();
    let nonce = pair(page.headers()[SET_COOKIE].to_str().unwrap());
    let csrf = csrf_in(&page.text().await.unwrap());
    let answer = client
        .post(format!("{}/ui/login", gw.url))
        .header(COOKIE, nonce)
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", csrf.as_str()), ("token", token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "signed in");
    let set = answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.contains("hark_session=") && !c.contains("Max-Age=0"))
        .expect("a session cookie");
    register_secret(pair(&set).split_once('=').unwrap().1);
    set
}

/// `GET path` with `cookie` and extra headers; the status and body.
async fn get(gw: &Gateway, path: &str, cookie: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = no_redirects()
        .get(format!("{}{path}", gw.url))
        .header(COOKIE, cookie);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap())
}

fn signed_out(status: u16, body: &str) -> bool {
    // A redirect to the sign-in page, with no page content.
    status == 303 && !body.contains("<main")
}

#[tokio::test]
async fn the_cookie_holds_a_server_side_session_that_sign_out_and_revocation_end() {
    let gw = Gateway::start();
    let set = sign_in(&gw, &gw.token).await;
    let cookie = pair(&set);
    assert!(cookie.starts_with("hark_session="), "{set}");
    let id = cookie.split_once('=').unwrap().1;
    assert_eq!(id.len(), 64, "an opaque id: {set}");
    assert!(!set.contains(&gw.token), "the cookie holds no token");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let (status, page) = get(&gw, "/ui/", &cookie, &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("<main"));

    // Sign-out ends the session on the server: the same cookie, replayed, is signed out.
    let csrf = csrf_in(&page);
    let out = no_redirects()
        .post(format!("{}/ui/logout", gw.url))
        .header(COOKIE, &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", csrf.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let (status, body) = get(&gw, "/ui/", &cookie, &[]).await;
    assert!(signed_out(status, &body), "{status}: {body}");

    // Revoking the session's token ends the session at once.
    let minted: serde_json::Value = gw
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["functions:read"], "subject": "viewer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap();
    register_secret(token);
    let cookie = pair(&sign_in(&gw, token).await);
    assert_eq!(get(&gw, "/ui/activations", &cookie, &[]).await.0, 200);
    let revoked = gw
        .request(
            Method::DELETE,
            &format!("/system/tokens/{}", minted["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let (status, body) = get(&gw, "/ui/activations", &cookie, &[]).await;
    assert!(signed_out(status, &body), "{status}: {body}");
    // The token itself is no session.
    let (status, body) = get(&gw, "/ui/", &format!("hark_session={}", gw.token), &[]).await;
    assert!(signed_out(status, &body), "{status}: {body}");
}

/// A function's page served from the gateway's own origin runs `fetch("/ui/…")` with the
/// signed-in operator's cookie: Chromium marks it `Sec-Fetch-Mode: cors`, and the UI
/// refuses it. A cross-site form POST is refused likewise.
#[tokio::test]
async fn a_same_origin_fetch_of_a_ui_page_and_a_cross_site_post_are_refused() {
    let gw = Gateway::start();
    gw.deploy_sh("echo", "cat", json!({})).await;
    let cookie = pair(&sign_in(&gw, &gw.token).await);
    let navigate = [
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-dest", "document"),
    ];
    let (status, page) = get(&gw, "/ui/functions/echo", &cookie, &navigate).await;
    assert_eq!(status, 200);
    let csrf = csrf_in(&page);
    let fetched = [
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-dest", "empty"),
    ];
    for path in [
        "/ui/",
        "/ui/functions/echo",
        "/ui/activations",
        "/ui/functions/echo/logs",
        "/ui/login",
    ] {
        let (status, body) = get(&gw, path, &cookie, &fetched).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            !body.contains(&csrf) && !body.contains("<main"),
            "{path}: {body}"
        );
    }
    let (status, _) = get(&gw, "/ui/", &cookie, &[("sec-fetch-mode", "no-cors")]).await;
    assert_eq!(status, 403, "an <img> or <script> of a UI page");
    // A wrong token is no better than none.
    let mut wrong = fetched.to_vec();
    wrong.push(("x-csrf-token", "0123456789abcdef"));
    assert_eq!(get(&gw, "/ui/", &cookie, &wrong).await.0, 403);
    // The UI's own script sends the page's CSRF token and is answered.
    let mut own = fetched.to_vec();
    own.push(("x-csrf-token", &csrf));
    assert_eq!(get(&gw, "/ui/functions/echo", &cookie, &own).await.0, 200);
    // The live logs are a stream that does not end: its status, not its body.
    let mut logs = gw
        .client
        .get(format!("{}/ui/functions/echo/logs", gw.url))
        .header(COOKIE, &cookie);
    for (name, value) in &own {
        logs = logs.header(*name, *value);
    }
    let logs = logs.send().await.unwrap();
    assert_eq!(logs.status(), 200);
    assert_eq!(logs.headers()["content-type"], "text/event-stream");
    drop(logs);
    // curl and old browsers send no Fetch Metadata: the cookie judges them.
    assert_eq!(get(&gw, "/ui/", &cookie, &[]).await.0, 200);

    // A cross-site form POST, even carrying the cookie and a valid CSRF token, is refused.
    for site in ["cross-site", "same-site"] {
        let answer = no_redirects()
            .post(format!("{}/ui/functions/echo/scale", gw.url))
            .header(COOKIE, &cookie)
            .header("sec-fetch-site", site)
            .header("sec-fetch-mode", "navigate")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("csrf", csrf.as_str()), ("replicas", "0")]))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{site}");
    }
    let status = gw.status("echo").await;
    assert_eq!(
        status["replicas"], 1,
        "the refused POSTs changed nothing: {status}"
    );
    let same = no_redirects()
        .post(format!("{}/ui/functions/echo/scale", gw.url))
        .header(COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "navigate")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", csrf.as_str()), ("replicas", "2")]))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 303, "a same-origin form POST still works");
}

/// Behind a TLS-terminating proxy (`--public-url https://…`) the session cookie is
/// `__Host-` prefixed and `Secure`, a forged `X-Forwarded-Proto` decides nothing, and
/// functions on the same origin never receive the cookie.
#[tokio::test]
async fn over_https_the_cookie_is_host_prefixed_and_functions_never_see_it() {
    let plain = Gateway::start();
    let set = sign_in(&plain, &plain.token).await;
    assert!(!set.contains("Secure") && !set.contains("__Host-"), "{set}");

    let gw = Gateway::start_with(&["--public-url", "https://hark.example.test"]);
    let set = sign_in(&gw, &gw.token).await;
    assert!(set.starts_with("__Host-hark_session="), "{set}");
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/;"] {
        assert!(format!("{set};").contains(attr), "{attr}: {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let cookie = pair(&set);
    assert_eq!(get(&gw, "/ui/", &cookie, &[]).await.0, 200);
    // The plain name is not accepted in its place (an http response could have set it).
    let plain_name = cookie.replacen("__Host-", "", 1);
    let (status, body) = get(&gw, "/ui/", &plain_name, &[]).await;
    assert!(signed_out(status, &body), "{status}");

    gw.deploy_sh("cookies", "env | grep -i cookie || echo none", json!({}))
        .await;
    let (status, seen) = {
        let answer = gw
            .client
            .post(format!("{}/function/cookies", gw.url))
            .header(COOKIE, format!("theme=dark; {cookie}"))
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    assert_eq!(status, 200);
    let id = cookie.split_once('=').unwrap().1;
    assert!(
        !seen.contains(id) && !seen.contains("hark_session"),
        "{seen}"
    );
    assert!(seen.contains("theme=dark"), "other cookies pass: {seen}");
}
