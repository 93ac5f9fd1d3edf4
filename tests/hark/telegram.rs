//! Telegram bots through a real `hark up`, against a local stand-in for the Bot API:
//! updates checked by their secret token and deduplicated by `update_id`, commands and
//! plain messages routed, a quick reply in the webhook answer and a slow one sent with
//! `sendMessage` even across a killed gateway, and `hark telegram set-webhook`.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::channels::{channel_stats, post, Recorder, Site};
use crate::util::{hark_bin, Gateway};

const BOT_TOKEN: &str = "123456:ABC-bot-token-for-tests";
const FIRST_SECRET: &str = "first-secret_token";
const HEADER: &str = "x-telegram-bot-api-secret-token";

fn update(update_id: i64, text: &str) -> Vec<u8> {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id * 10,
            "date": 1_700_000_000,
            "from": { "id": 77, "is_bot": false, "first_name": "Ada" },
            "chat": { "id": -1001, "type": "group" },
            "text": text,
        }
    })
    .to_string()
    .into_bytes()
}

async fn send(gw: &Gateway, secret: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(secret) = secret {
        headers.push((HEADER, secret.to_owned()));
    }
    let (status, text) = post(gw, "/telegram/hark", &headers, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn telegram_site(api: &str) -> Site {
    let site = Site::new();
    let runs = site.file("runs.log");
    let echo = site.script(
        "echo",
        &format!(
            "input=$(cat); echo \"$input\" >> {runs}; \
             printf '%s' \"$input\" | sed -n 's/^{{[^{{}}]*\"text\":\"\\([^\"]*\\)\".*/echo: \\1/p'"
        ),
    );
    let slow = site.script(
        "slow",
        &format!("cat > /dev/null; echo slow-start >> {runs}; sleep 2; echo done late"),
    );
    site.config(
        &[("echo", &echo), ("slow", &slow)],
        &format!(
            "telegram:\n  hark:\n    bot_token: tg-bot\n    secret_token: tg-secret\n    \
             commands: {{ /echo: echo, /slow: slow }}\n    function: echo\n    \
             ack_budget: 500ms\n    api: {api}\n    username: HarkBot\n"
        ),
    );
    site
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HARK_SECRET_TG_BOT", BOT_TOKEN),
        ("HARK_SECRET_TG_SECRET", FIRST_SECRET),
    ]
}

#[tokio::test]
async fn telegram_updates_are_checked_routed_and_answered() {
    let api = Recorder::start(|_, _| (200, r#"{"ok":true,"result":true}"#.into())).await;
    let site = telegram_site(&api.url);
    let gw = site.start(&[], &env());

    // A command, with the bot's name after it, answered in the webhook answer.
    let (status, answer) = send(&gw, Some(FIRST_SECRET), update(1, "/Echo@HarkBot hello")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["method"], "sendMessage");
    assert_eq!(answer["chat_id"], -1001);
    assert_eq!(answer["text"], "echo: hello");
    assert_eq!(answer["reply_parameters"]["message_id"], 10);
    let input: Value = serde_json::from_str(site.lines("runs.log").last().unwrap()).unwrap();
    assert_eq!(input["command"], "/echo");
    assert_eq!(input["user"]["first_name"], "Ada");

    // A command for another bot in the group runs nothing.
    let runs_before = site.lines("runs.log").len();
    let (status, answer) = send(&gw, Some(FIRST_SECRET), update(9, "/echo@OtherBot hi")).await;
    assert_eq!(status, 200);
    assert!(answer["ignored"].is_string(), "{answer}");
    assert_eq!(site.lines("runs.log").len(), runs_before);

    // A plain message goes to `function`.
    let (_, answer) = send(&gw, Some(FIRST_SECRET), update(2, "good morning")).await;
    assert_eq!(answer["text"], "echo: good morning");

    // The same update again runs nothing.
    let runs = site.lines("runs.log").len();
    let (status, answer) = send(&gw, Some(FIRST_SECRET), update(2, "good morning")).await;
    assert_eq!((status, &answer["duplicate"]), (200, &json!("2")));
    assert_eq!(site.lines("runs.log").len(), runs);

    // Updates that are not text messages are acknowledged and ignored.
    let callback = json!({"update_id": 3, "callback_query": {"id": "q", "data": "x"}});
    let (status, answer) = send(&gw, Some(FIRST_SECRET), callback.to_string().into_bytes()).await;
    assert_eq!(status, 200);
    assert!(answer["ignored"].is_string(), "{answer}");

    // No secret token, a wrong one, a near miss: refused, nothing run.
    assert_eq!(send(&gw, None, update(4, "/echo x")).await.0, 401);
    assert_eq!(
        send(&gw, Some("first-secret_tokeN"), update(4, "/echo x"))
            .await
            .0,
        401
    );
    assert_eq!(
        send(&gw, Some("first-secret_token2"), update(4, "/echo x"))
            .await
            .0,
        401
    );
    assert_eq!(
        send(&gw, Some(FIRST_SECRET), b"{\"update\":".to_vec())
            .await
            .0,
        400
    );
    assert_eq!(site.lines("runs.log").len(), runs);

    // A slow command: an empty 200 now, the result by sendMessage.
    let (status, answer) = send(&gw, Some(FIRST_SECRET), update(5, "/slow")).await;
    assert_eq!((status, answer), (200, Value::Null));
    let seen = api.wait_for(1).await;
    assert_eq!(seen[0].path, format!("/bot{BOT_TOKEN}/sendMessage"));
    let sent = seen[0].json();
    assert_eq!(sent["chat_id"], -1001);
    assert_eq!(sent["text"], "done late");
    assert_eq!(sent["reply_parameters"]["message_id"], 50);
    assert!(sent.get("method").is_none(), "{sent}");

    let stats = channel_stats(&gw, "telegram", "hark").await;
    assert_eq!(stats["duplicates"], 1, "{stats}");
    assert_eq!(stats["refused"]["missing_header"], 1, "{stats}");
    assert_eq!(stats["refused"]["signature_mismatch"], 2, "{stats}");
    assert_eq!(stats["refused"]["malformed"], 1, "{stats}");
}

#[tokio::test]
async fn set_webhook_takes_a_fresh_secret_and_late_replies_survive_a_kill() {
    let api = Recorder::start(|_, _| (200, r#"{"ok":true,"result":true}"#.into())).await;
    let site = telegram_site(&api.url);
    let mut gw = site.start(&[], &env());

    // Async: the stand-in API runs on this test's runtime.
    let out = tokio::process::Command::new(hark_bin())
        .args(["--gateway", &gw.url, "--token", &gw.token])
        .args(["telegram", "set-webhook", "hark", "--url"])
        .arg("https://hark.example.com/telegram/hark")
        .output()
        .await
        .unwrap();
    crate::util::record_log(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("secret tg-secret"), "{text}");
    let seen = api.wait_for(1).await;
    assert_eq!(seen[0].path, format!("/bot{BOT_TOKEN}/setWebhook"));
    let set = seen[0].json();
    assert_eq!(set["url"], "https://hark.example.com/telegram/hark");
    let fresh = set["secret_token"].as_str().unwrap().to_owned();
    crate::util::register_secret(&fresh);
    assert!(fresh.len() >= 32 && fresh != FIRST_SECRET, "{fresh}");

    // From now on only the new token is taken.
    assert_eq!(
        send(&gw, Some(FIRST_SECRET), update(1, "/echo a")).await.0,
        401
    );
    let (status, answer) = send(&gw, Some(&fresh), update(1, "/echo a")).await;
    assert_eq!((status, &answer["text"]), (200, &json!("echo: a")));

    // A slow command, then the gateway is killed while it runs.
    let (status, _) = send(&gw, Some(&fresh), update(2, "/slow")).await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !site.lines("runs.log").contains(&"slow-start".to_owned()) {
        assert!(std::time::Instant::now() < deadline, "slow never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.kill_hard();
    assert_eq!(api.seen().len(), 1, "sent before the kill");

    // Restarted with the first secret still in its environment: the stored one wins.
    let gw = site.start(&[], &env());
    let seen = api.wait_for(2).await;
    assert_eq!(seen[1].path, format!("/bot{BOT_TOKEN}/sendMessage"));
    assert_eq!(seen[1].json()["text"], "done late");
    assert_eq!(send(&gw, Some(&fresh), update(3, "/echo b")).await.0, 200);
    assert_eq!(
        send(&gw, Some(FIRST_SECRET), update(4, "/echo c")).await.0,
        401
    );
    // A redelivery of the update from before the kill is still a duplicate.
    let (_, answer) = send(&gw, Some(&fresh), update(2, "/slow")).await;
    assert_eq!(answer["duplicate"], "2", "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.seen().len(), 2, "sent once");
}

/// A bot configured before its first `set-webhook` starts, refuses every update, and takes
/// the token `set-webhook` makes.
#[tokio::test]
async fn a_bot_without_a_secret_token_yet_refuses_updates_until_set_webhook() {
    let api = Recorder::start(|_, _| (200, r#"{"ok":true,"result":true}"#.into())).await;
    let site = telegram_site(&api.url);
    let gw = site.start(&[], &[("HARK_SECRET_TG_BOT", BOT_TOKEN)]);
    assert!(
        gw.output().contains("no secret token yet"),
        "{}",
        gw.output()
    );
    assert_eq!(
        send(&gw, Some("anything"), update(1, "/echo a")).await.0,
        401
    );
    assert_eq!(send(&gw, Some(""), update(1, "/echo a")).await.0, 401);
    // Setting the webhook takes a token with secrets:write.
    let anonymous = gw
        .client
        .post(format!("{}/system/channels/telegram/hark/webhook", gw.url))
        .json(&json!({ "url": "https://evil.example/telegram/hark" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(api.seen().is_empty());
    let answer = gw
        .request(
            reqwest::Method::POST,
            "/system/channels/telegram/hark/webhook",
        )
        .json(&json!({ "url": "https://hark.example.com/telegram/hark" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let fresh = api.wait_for(1).await[0].json()["secret_token"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::util::register_secret(&fresh);
    let (status, answer) = send(&gw, Some(&fresh), update(1, "/echo a")).await;
    assert_eq!((status, &answer["text"]), (200, &json!("echo: a")));
}

/// A Bot API that cannot be reached: the failed `sendMessage` is logged and retried, and
/// the log never shows the bot token that its URL carries (the log check of `Gateway`
/// fails the test if it does).
#[tokio::test]
async fn failed_sends_are_logged_without_the_bot_token() {
    let site = telegram_site("http://127.0.0.1:9");
    let gw = site.start(&[], &env());
    let (status, _) = send(&gw, Some(FIRST_SECRET), update(1, "/slow")).await;
    assert_eq!(status, 200);
    let output = gw.output_containing("outbound request failed; retrying");
    assert!(output.contains("telegram sendMessage"), "{output}");
    assert!(!output.contains(BOT_TOKEN), "{output}");
}

#[test]
fn hark_webhook_verify_checks_telegram_secret_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("update.json");
    std::fs::write(&body, update(1, "/echo")).unwrap();
    let run = |sent: &str| {
        Command::new(hark_bin())
            .args([
                "webhook",
                "verify",
                "--kind",
                "telegram",
                "--secret",
                FIRST_SECRET,
            ])
            .arg("--body")
            .arg(&body)
            .args(["-H", &format!("X-Telegram-Bot-Api-Secret-Token: {sent}")])
            .output()
            .unwrap()
    };
    let passed = run(FIRST_SECRET);
    let text = String::from_utf8_lossy(&passed.stdout);
    assert!(passed.status.success(), "{text}");
    assert!(text.contains("result: PASS"), "{text}");
    let failed = run("another-token");
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success(), "{text}");
    assert!(text.contains("set-webhook"), "{text}");
}
