//! Secrets are the function's own: a deployment naming a secret hands its value to the
//! code deployed, so it needs a token allowed to use that secret (`secrets:use`, or
//! `secrets:use:NAME` / `secrets:use:PREFIX*`), on a first deployment and on every
//! update. `functions:write` alone cannot name one, through the API, the CLI or a
//! redeployment of a function that already holds it. `hark.yml` at start-up is the
//! operator's and may name any.

use std::process::{Command, Output, Stdio};

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{hark_bin, register_secret, Gateway};

/// A function printing secret `secret`'s value from its secret file.
fn thief(name: &str, secret: &str) -> Value {
    json!({
        "service": name,
        "envProcess": format!("sh -c 'cat \"$HARK_SECRETS_DIR/{secret}\"; echo; echo stolen'"),
        "secrets": [secret],
    })
}

/// Mints a token with `scopes` using the admin token.
async fn mint(gw: &Gateway, scopes: &[&str]) -> String {
    let response = gw
        .request(Method::POST, "/system/tokens")
        .json(&json!({ "scopes": scopes, "subject": "deployer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    register_secret(&token);
    token
}

/// Stores secret `name` using the admin token.
async fn create_secret(gw: &Gateway, name: &str, value: &str) {
    register_secret(value);
    let response = gw
        .request(Method::POST, "/system/secrets")
        .json(&json!({ "name": name, "value": value }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// `method /system/functions` with `spec` as `token`: the status and the error message.
async fn deploy_as(gw: &Gateway, token: &str, method: Method, spec: &Value) -> (u16, String) {
    let response = gw
        .client
        .request(method, format!("{}/system/functions", gw.url))
        .bearer_auth(token)
        .json(spec)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Asserts a deployment was refused with 403, naming `secret` and the scope.
fn assert_refused((status, message): (u16, String), secret: &str) {
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains(&format!("{secret:?}")) && message.contains("secrets:use"),
        "the refusal should name the secret and the scope: {message}"
    );
}

/// Runs `hark ARGS` against `gw` with `token`.
fn hark(gw: &Gateway, token: &str, args: &[&str]) -> Output {
    let output = Command::new(hark_bin())
        .args(args)
        .env("HARK_GATEWAY", &gw.url)
        .env("HARK_TOKEN", token)
        .env_remove("HARK_DATA")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    crate::util::record_log(&output.stderr);
    output
}

#[tokio::test]
async fn functions_write_alone_cannot_deploy_nor_redeploy_a_function_naming_a_secret() {
    let gw = Gateway::start();
    let value = "ghp_the-bots-key-0d9e1f";
    create_secret(&gw, "github-key", value).await;
    // The operator's bot, holding the key.
    gw.deploy(json!({
        "service": "gh-bot",
        "envProcess": "sh -c 'test -s \"$HARK_SECRETS_DIR/github-key\" && echo has-key'",
        "secrets": ["github-key"],
    }))
    .await;
    assert_eq!(gw.invoke("gh-bot", "").await, (200, "has-key\n".to_owned()));
    let writer = mint(&gw, &["functions:write", "functions:read"]).await;

    // A new function naming the secret.
    let thief_spec = thief("thief", "github-key");
    assert_refused(
        deploy_as(&gw, &writer, Method::POST, &thief_spec).await,
        "github-key",
    );
    let (status, _) = gw.invoke("thief", "").await;
    assert_eq!(status, 404, "the refused function must not be deployed");
    // PUT creates nothing and replaces nothing either.
    assert_refused(
        deploy_as(&gw, &writer, Method::PUT, &thief_spec).await,
        "github-key",
    );

    // The real path: the bot's own name, the attacker's code, the same secret names.
    let (status, message) =
        deploy_as(&gw, &writer, Method::PUT, &thief("gh-bot", "github-key")).await;
    assert_refused((status, message), "github-key");
    let (status, body) = gw.invoke("gh-bot", "").await;
    assert_eq!((status, body.as_str()), (200, "has-key\n"));
    assert!(!body.contains(value));

    // Removing the bot (functions:write may) and deploying it again under its name.
    let response = gw
        .client
        .delete(format!("{}/system/functions", gw.url))
        .bearer_auth(&writer)
        .json(&json!({ "functionName": "gh-bot" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_refused(
        deploy_as(&gw, &writer, Method::POST, &thief("gh-bot", "github-key")).await,
        "github-key",
    );

    // Functions naming no secret still deploy with functions:write.
    let (status, message) = deploy_as(
        &gw,
        &writer,
        Method::POST,
        &json!({ "service": "plain", "envProcess": "cat" }),
    )
    .await;
    assert_eq!(status, 202, "{message}");
    assert_eq!(gw.invoke("plain", "hi").await, (200, "hi".to_owned()));

    // The refusal is logged with the names, never the value.
    let log = gw.output_containing("deployment refused");
    assert!(
        log.contains("github-key") && log.contains("deployer"),
        "{log}"
    );
    assert!(!log.contains(value));
}

#[tokio::test]
async fn a_function_redeployed_without_its_secrets_no_longer_sees_them() {
    let gw = Gateway::start();
    let value = "hr-password-41b7";
    create_secret(&gw, "hr-password", value).await;
    gw.deploy(json!({
        "service": "portal",
        "envProcess": "sh -c 'test -s \"$HARK_SECRETS_DIR/hr-password\" && echo has-key'",
        "secrets": ["hr-password"],
    }))
    .await;
    assert_eq!(gw.invoke("portal", "").await, (200, "has-key\n".to_owned()));
    let writer = mint(&gw, &["functions:write"]).await;
    // Dropping the secret names is allowed; the secret's file goes with them.
    let (status, message) = deploy_as(
        &gw,
        &writer,
        Method::PUT,
        &json!({
            "service": "portal",
            "envProcess": "sh -c 'cat \"$HARK_SECRETS_DIR/hr-password\" 2>&1; echo stolen'",
        }),
    )
    .await;
    assert_eq!(status, 202, "{message}");
    let (status, body) = gw.invoke("portal", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("stolen"), "{body}");
    assert!(
        !body.contains(value),
        "the secret's file outlived its name in the deployment"
    );
}

#[tokio::test]
async fn a_token_allowed_hr_secrets_names_them_and_no_other() {
    let gw = Gateway::start();
    let hr_value = "hr-portal-pw-93aa";
    create_secret(&gw, "hr-portal-password", hr_value).await;
    create_secret(&gw, "github-key", "ghp_other-key-55c1").await;
    // Minted by the CLI with --secret, and listed with its pattern.
    let minted = hark(
        &gw,
        &gw.token,
        &[
            "token",
            "create",
            "--scope",
            "functions:write",
            "--secret",
            "hr-*",
            "--subject",
            "hr-team",
            "-o",
            "json",
        ],
    );
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let minted: Value = serde_json::from_slice(&minted.stdout).unwrap();
    let hr = minted["token"].as_str().unwrap().to_owned();
    register_secret(&hr);
    assert_eq!(
        minted["scopes"],
        json!(["functions:write", "secrets:use:hr-*"])
    );
    let listed = hark(&gw, &gw.token, &["token", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("hr-team") && l.contains("secrets:use:hr-*")),
        "{listed}"
    );

    // Its own secrets: deploy, redeploy, read.
    let spec = thief("portal", "hr-portal-password");
    let (status, message) = deploy_as(&gw, &hr, Method::POST, &spec).await;
    assert_eq!(status, 202, "{message}");
    let (status, message) = deploy_as(&gw, &hr, Method::PUT, &spec).await;
    assert_eq!(status, 202, "{message}");
    let (status, body) = gw.invoke("portal", "").await;
    assert_eq!(status, 200);
    assert!(body.starts_with(hr_value), "{body}");

    // Another team's secret, alone or beside its own.
    assert_refused(
        deploy_as(&gw, &hr, Method::POST, &thief("sneak", "github-key")).await,
        "github-key",
    );
    let both = json!({
        "service": "portal",
        "envProcess": "cat",
        "secrets": ["hr-portal-password", "github-key"],
    });
    let (status, message) = deploy_as(&gw, &hr, Method::PUT, &both).await;
    assert_refused((status, message.clone()), "github-key");
    assert!(
        !message.contains("\"hr-portal-password\""),
        "only the refused secret is named: {message}"
    );
    // The same through `hark deploy -f`.
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("hark.yml");
    std::fs::write(
        &stack,
        "functions:\n  sneak:\n    fprocess: cat\n    secrets: [github-key]\n",
    )
    .unwrap();
    let output = hark(&gw, &hr, &["deploy", "-f", stack.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "hark deploy should fail: {stderr}"
    );
    assert!(
        stderr.contains("github-key") && stderr.contains("secrets:use"),
        "{stderr}"
    );
    assert_eq!(gw.invoke("sneak", "").await.0, 404);

    // secrets:use allows every secret.
    let any = mint(&gw, &["functions:write", "secrets:use"]).await;
    let (status, message) = deploy_as(&gw, &any, Method::POST, &thief("bot", "github-key")).await;
    assert_eq!(status, 202, "{message}");
}

#[tokio::test]
async fn a_token_grants_only_secrets_within_its_own() {
    let gw = Gateway::start();
    let hr = mint(
        &gw,
        &["tokens:write", "functions:write", "secrets:use:hr-*"],
    )
    .await;
    let mint_as = |scopes: Value| {
        let gw = &gw;
        let hr = hr.clone();
        async move {
            let response = gw
                .client
                .post(format!("{}/system/tokens", gw.url))
                .bearer_auth(hr)
                .json(&json!({ "scopes": scopes }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if let Some(token) = body["token"].as_str() {
                register_secret(token);
            }
            (status, body)
        }
    };
    for wider in [
        json!(["secrets:use"]),
        json!(["secrets:use:*"]),
        json!(["secrets:use:h*"]),
        json!(["secrets:use:github-key"]),
        json!(["admin"]),
    ] {
        let (status, body) = mint_as(wider.clone()).await;
        assert_eq!(status, 403, "{wider}: {}", body["error"]);
    }
    for narrower in [
        json!(["secrets:use:hr-portal-password"]),
        json!(["functions:write", "secrets:use:hr-portal-*"]),
    ] {
        let (status, body) = mint_as(narrower.clone()).await;
        assert_eq!(status, 201, "{narrower}: {}", body["error"]);
    }
    let (status, body) = mint_as(json!(["secrets:use:h*r"])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("secrets:use:PREFIX*"));
}

#[tokio::test]
async fn hark_yml_at_start_is_the_operators_and_names_any_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hark.yml"),
        "functions:\n  bot:\n    fprocess: sh -c 'test -s \"$HARK_SECRETS_DIR/github-key\" && echo has-key'\n    secrets: [github-key]\n",
    )
    .unwrap();
    let gw = Gateway::start_in_with_env(
        dir.path(),
        &[],
        &[("HARK_SECRET_GITHUB_KEY", "ghp_from-the-environment-7e21")],
    );
    assert_eq!(gw.invoke("bot", "").await, (200, "has-key\n".to_owned()));
    // The admin token, the operator's, keeps every secret.
    let (status, message) = deploy_as(
        &gw,
        &gw.token,
        Method::PUT,
        &json!({ "service": "bot", "envProcess": "cat", "secrets": ["github-key"] }),
    )
    .await;
    assert_eq!(status, 202, "{message}");
}
