//! Gateways sharing one PostgreSQL database (`hark up --store postgres://…`), as an
//! operator runs them behind a proxy: each with its own data directory holding copies of
//! the first one's keys. What one is told, the others do.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::pg_cluster::cluster;
use crate::util::Gateway;

/// The files the first gateway made that every other one needs: the token signing key,
/// the admin token and the key that seals secrets.
const SHARED_FILES: &[&str] = &["jwt.key", "admin-token", "secret.key"];

fn copy_keys(from: &Path, to: &Path) {
    for file in SHARED_FILES {
        std::fs::copy(from.join(file), to.join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
}

/// Calls `echo` with "hi" through `gw` until it answers `want` (status, and body when
/// given): what another gateway was told reaches this one within a few polls.
async fn until_echo(gw: &Gateway, what: &str, want: (u16, Option<&str>)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = gw.invoke("echo", "hi").await;
        if status == want.0 && want.1.is_none_or(|w| w == body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {status} {body:?} after 10 s (want {want:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_with(gw: &Gateway, token: &str) -> u16 {
    gw.client
        .get(format!("{}/system/functions", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn what_one_gateway_is_told_the_others_do() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    let store = ["--store", url.as_str()];
    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = Gateway::start_in(dir_a.path(), &store);
    copy_keys(dir_a.path(), dir_b.path());
    copy_keys(dir_a.path(), dir_c.path());
    let b = Gateway::start_in(dir_b.path(), &store);
    let c = Gateway::start_in(dir_c.path(), &store);
    // One admin token for all: starting the others revoked nothing.
    assert_eq!(b.token, a.token);
    for gw in [&a, &b, &c] {
        assert_eq!(status_with(gw, &a.token).await, 200, "{}", gw.output());
    }

    // Deployed through one, served by every one; updated through another, served anew by
    // all; removed through a third, gone from all.
    a.deploy_sh("echo", "cat", json!({})).await;
    for gw in [&b, &c] {
        until_echo(
            gw,
            "a function deployed through another gateway",
            (200, Some("hi")),
        )
        .await;
    }
    b.deploy_sh_update("echo", "tr a-z A-Z").await;
    for gw in [&a, &c] {
        until_echo(
            gw,
            "an update made through another gateway",
            (200, Some("HI")),
        )
        .await;
    }
    let removed = c
        .request(Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "echo" }))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    for gw in [&a, &b] {
        until_echo(gw, "a removal made through another gateway", (404, None)).await;
    }

    // A secret set through one is listed by another.
    let created = b
        .request(Method::POST, "/system/secrets")
        .json(&json!({ "name": "api-key", "value": "s3cret" }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let names: Value = c.get_json("/system/secrets").await;
    assert!(names.to_string().contains("api-key"), "{names}");

    // A token minted through one works on all; revoked through another, it is refused by
    // all at once.
    let minted: Value = a
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["functions:read"], "ttl": "1h" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    crate::util::register_secret(&token);
    let id = minted["id"].as_str().unwrap().to_owned();
    for gw in [&a, &b, &c] {
        assert_eq!(status_with(gw, &token).await, 200);
    }
    let revoked = b
        .request(Method::DELETE, &format!("/system/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    for gw in [&a, &b, &c] {
        assert_eq!(
            status_with(gw, &token).await,
            401,
            "a revoked token was accepted"
        );
    }
}
