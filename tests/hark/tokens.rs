//! Tokens that can be taken back: ids, revocation across gateways sharing a data
//! directory, default lifetimes, admin token and signing key rotation — through the CLI
//! and the API of a real `hark up`.

use std::process::{Command, Output, Stdio};

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{hark_bin, register_secret, Gateway};

/// Runs `hark ARGS` against `gw` with the admin token of its data directory.
fn hark(gw: &Gateway, args: &[&str]) -> Output {
    let output = Command::new(hark_bin())
        .args(args)
        .env("HARK_GATEWAY", &gw.url)
        .env("HARK_DATA", &gw.data)
        .env_remove("HARK_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    crate::util::record_log(&output.stderr);
    output
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "hark failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The status of `GET /system/functions` with `token` on `gw`.
pub(crate) async fn status_with(gw: &Gateway, token: &str) -> u16 {
    status_at(&gw.client, &gw.url, token).await
}

/// The status of `GET /system/functions` with `token` on the gateway at `url`.
pub(crate) async fn status_at(client: &reqwest::Client, url: &str, token: &str) -> u16 {
    client
        .get(format!("{url}/system/functions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn admin_file(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_answers_401_at_once_on_every_gateway_sharing_the_data_dir() {
    let a = Gateway::start();
    // A second gateway process on the same data directory (and so the same store).
    let b = Gateway::start_in(&a.data, &[]);
    let minted: Value = serde_json::from_str(&tokio::task::block_in_place(|| {
        ok(&hark(
            &a,
            &[
                "token",
                "create",
                "--scope",
                "functions:read",
                "--subject",
                "ci",
                "-o",
                "json",
            ],
        ))
    }))
    .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    register_secret(&token);
    let id = minted["id"].as_str().unwrap().to_owned();
    assert!(
        !token.contains(&id) || token.len() > 100,
        "the id is not the token"
    );
    assert_eq!(status_with(&a, &token).await, 200);
    assert_eq!(status_with(&b, &token).await, 200);

    // Listed with its id, subject and the default lifetime of 24 hours; never the token.
    let listed: Vec<Value> = serde_json::from_str(&tokio::task::block_in_place(|| {
        ok(&hark(&a, &["token", "list", "-o", "json"]))
    }))
    .unwrap();
    let entry = listed.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(entry["subject"], "ci");
    let issued = chrono::DateTime::parse_from_rfc3339(entry["issuedAt"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(entry["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!((expires - issued).num_hours(), 24);
    let table = tokio::task::block_in_place(|| ok(&hark(&a, &["token", "list"])));
    assert!(table.contains(&id) && table.contains("ci"), "{table}");
    assert!(
        !table.contains(&token) && !table.contains(&a.token),
        "{table}"
    );

    // A token with tokens:write cannot revoke a token holding more than it does.
    let revoker: Value = a
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": ["tokens:write", "functions:read"], "ttl": "10m" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revoker = revoker["token"].as_str().unwrap().to_owned();
    register_secret(&revoker);
    let admin_id = listed
        .iter()
        .find(|t| t["adminFile"] == true && t["revokedAt"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = a
        .client
        .delete(format!("{}/system/tokens/{admin_id}", a.url))
        .bearer_auth(&revoker)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(status_with(&a, &a.token).await, 200);

    let out = tokio::task::block_in_place(|| ok(&hark(&a, &["token", "revoke", &id])));
    assert!(out.contains(&id), "{out}");
    assert_eq!(
        status_with(&a, &token).await,
        401,
        "revoked, on the gateway that revoked it"
    );
    assert_eq!(
        status_with(&b, &token).await,
        401,
        "revoked, on the other gateway"
    );
    let unknown = a
        .request(Method::DELETE, "/system/tokens/no-such-id")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn lifetimes_are_24h_by_default_never_only_when_asked_and_at_most_a_year() {
    let gw = Gateway::start();
    let mint = |body: Value| {
        let gw = &gw;
        async move {
            let response = gw
                .request(Method::POST, "/system/tokens")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if let Some(t) = body["token"].as_str() {
                register_secret(t);
            }
            (status, body)
        }
    };
    let (status, never) = mint(json!({ "scopes": ["functions:read"], "ttl": "never" })).await;
    assert_eq!(status, 201);
    assert!(never["expiresAt"].is_null(), "{never}");
    let (_, week) = mint(json!({ "scopes": ["functions:read"], "ttl": "7d" })).await;
    assert!(week["expiresAt"].is_string());
    for ttl in [
        "366d",
        "0s",
        "99999999999999999999999h",
        "18446744073709551615d",
        "1.5h",
        "soon",
    ] {
        let (status, body) = mint(json!({ "scopes": ["functions:read"], "ttl": ttl })).await;
        assert_eq!(status, 400, "{ttl}: {body}");
    }
    // A subject that would forge log lines is refused.
    let (status, _) =
        mint(json!({ "scopes": ["functions:read"], "subject": "x\nINFO hark: admin signed in" }))
            .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_admin_makes_the_old_admin_token_401_and_the_new_one_work() {
    let gw = Gateway::start();
    let old = gw.token.clone();
    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["token", "rotate-admin"])));
    let path = gw.data.join("admin-token");
    assert!(out.contains(&path.display().to_string()), "{out}");
    let new = admin_file(&gw);
    register_secret(&new);
    assert_ne!(new, old);
    assert!(!out.contains(&new), "the new token is not printed: {out}");
    assert_eq!(status_with(&gw, &old).await, 401);
    assert_eq!(status_with(&gw, &new).await, 200);
    // The CLI reads the new file.
    tokio::task::block_in_place(|| ok(&hark(&gw, &["list"])));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_signing_key_keeps_old_tokens_until_the_old_key_is_retired() {
    let gw = Gateway::start();
    let old_kid = {
        let keys: Vec<Value> = serde_json::from_str(&tokio::task::block_in_place(|| {
            ok(&hark(&gw, &["token", "keys", "-o", "json"]))
        }))
        .unwrap();
        assert_eq!(keys.len(), 1);
        keys[0]["kid"].as_str().unwrap().to_owned()
    };
    let before = tokio::task::block_in_place(|| {
        ok(&hark(
            &gw,
            &["token", "create", "--scope", "functions:read"],
        ))
    })
    .trim()
    .to_owned();
    register_secret(&before);
    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["token", "rotate-key"])));
    assert!(
        out.contains(&old_kid) && out.contains("signs and verifies"),
        "{out}"
    );
    assert_eq!(
        status_with(&gw, &before).await,
        200,
        "old tokens still verify"
    );
    // The admin token was signed by the old key: it must be replaced before the key goes.
    let refused = tokio::task::block_in_place(|| hark(&gw, &["token", "retire-key", &old_kid]));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("rotate-admin"));
    tokio::task::block_in_place(|| ok(&hark(&gw, &["token", "rotate-admin"])));
    register_secret(&admin_file(&gw));
    let after = tokio::task::block_in_place(|| {
        ok(&hark(
            &gw,
            &["token", "create", "--scope", "functions:read"],
        ))
    })
    .trim()
    .to_owned();
    register_secret(&after);
    let out = tokio::task::block_in_place(|| ok(&hark(&gw, &["token", "retire-key", &old_kid])));
    assert!(!out.contains(&old_kid), "{out}");
    assert_eq!(status_with(&gw, &before).await, 401, "its key is retired");
    assert_eq!(status_with(&gw, &after).await, 200);
    assert!(!gw
        .data
        .join("jwt-keys")
        .join(format!("{old_kid}.key"))
        .exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_made_offline_are_adopted_and_a_revoked_admin_token_is_not_taken_back() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path().join("keys");
    let make = || {
        Command::new(hark_bin())
            .arg("keys")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let made = ok(&make());
    for name in ["jwt.key", "admin-token", "secret.key"] {
        let path = dir.join(name);
        assert!(made.contains(&path.display().to_string()), "{made}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    let token = std::fs::read_to_string(dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    register_secret(&token);
    // Keys are never replaced: a second run refuses and leaves the files as they were.
    let again = make();
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("already exists"), "{said}");
    assert_eq!(
        std::fs::read_to_string(dir.join("admin-token"))
            .unwrap()
            .trim(),
        token
    );

    // A gateway given the files (as a Swarm replica is) takes the admin token as its own
    // instead of writing one.
    let data = tempfile::tempdir().unwrap();
    for name in ["jwt.key", "admin-token", "secret.key"] {
        std::fs::copy(dir.join(name), data.path().join(name)).unwrap();
    }
    let mut gw = Gateway::start_in(data.path(), &[]);
    assert_eq!(
        gw.token, token,
        "the gateway wrote an admin token of its own"
    );
    assert_eq!(status_with(&gw, &token).await, 200);
    let listed: Vec<Value> = serde_json::from_str(&tokio::task::block_in_place(|| {
        ok(&hark(&gw, &["--output", "json", "token", "list"]))
    }))
    .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["adminFile"], true, "{listed:?}");

    // Rotated away, the old token stays refused even when its file comes back.
    tokio::task::block_in_place(|| ok(&hark(&gw, &["token", "rotate-admin"])));
    register_secret(&admin_file(&gw));
    assert!(gw.stop());
    std::fs::write(data.path().join("admin-token"), format!("{token}\n")).unwrap();
    let gw = Gateway::start_in(data.path(), &[]);
    assert_eq!(status_with(&gw, &token).await, 401);
    assert_ne!(admin_file(&gw), token);
    register_secret(&admin_file(&gw));
}
