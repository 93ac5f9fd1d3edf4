//! Phone calls (Twilio Voice) through a real `hark up`: Twilio's published signature
//! vectors through the endpoint, forged and replayed requests, a skill answering in TwiML
//! turn after turn, and a slow function heard after a `<Redirect>`. Also `hark webhook
//! verify --kind twilio`.

use std::process::Command;

use crate::channels::{post, Site};
use crate::util::{hark_bin, Gateway};
use hark::channels::twilio::verify::sign_request;

const AUTH_TOKEN: &str = "twilio-test-auth-token-0001";
const PUBLIC_URL: &str = "https://hark.example.com/twilio/line";

const SKILL: &str = r#"id: amzn1.ask.skill.clinic
invocation: clinic
deadline: { budget: 1s, progressive_after: 500ms }
replies:
  launch: "Clinic line. Say hello, or ask me to find a slot."
  launch_reprompt: "Say hello, or ask me to find a slot."
  still_working: "One moment, I am looking."
intents:
  HelloIntent:
    samples: ["hello {name}"]
    slots: { name: AMAZON.SearchQuery }
    speech: "Hello {{ slots.name }} &amp; welcome."
  SlotIntent:
    samples: ["find me a slot"]
    function: slow
    input: { ask: slot }
    speech: "Your slot is {{ result.slot }}."
  RememberIntent:
    samples: ["remember me"]
    function: remember
    end_session: false
    speech: "Noted."
  WhoIntent:
    samples: ["who am i"]
    speech: "You are {% if session.name %}{{ session.name }}{% else %}nobody{% endif %}."
"#;

/// A site with the clinic skill, a slow function and the routes `extra` adds under
/// `channels.twilio`.
fn twilio_site(extra: &str) -> Site {
    let site = Site::new();
    let dir = site.path().join("skills/clinic");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("skill.yaml"), SKILL).unwrap();
    let slow = site.script(
        "slow",
        "cat > /dev/null; sleep 2; echo '{\"slot\": \"Tuesday at nine\"}'",
    );
    let remember = site.script(
        "remember",
        "cat > /dev/null; echo '{\"set_session\": {\"name\": \"Ada\"}}'",
    );
    std::fs::write(
        site.path().join("hark.yml"),
        format!(
            "functions:\n  slow:\n    fprocess: {slow}\n  remember:\n    fprocess: {remember}\nalexa:\n  skills: ./skills\nchannels:\n  twilio:\n    \
             line:\n      auth_tokens: [twilio-auth]\n      skill: clinic\n      public_url: {PUBLIC_URL}\n{extra}"
        ),
    )
    .unwrap();
    site
}

fn form(params: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(params).unwrap()
}

/// POSTs Twilio's request for `params` to `/twilio/line?query`, signed for the public URL.
async fn call(gw: &Gateway, query: &str, params: &[(&str, &str)]) -> (u16, String) {
    let url = if query.is_empty() {
        PUBLIC_URL.to_owned()
    } else {
        format!("{PUBLIC_URL}?{query}")
    };
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature = sign_request(AUTH_TOKEN.as_bytes(), &url, &owned);
    let path = if query.is_empty() {
        "/twilio/line".to_owned()
    } else {
        format!("/twilio/line?{query}")
    };
    let headers = vec![
        ("x-twilio-signature", signature),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    post(gw, &path, &headers, form(params)).await
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![("HARK_SECRET_TWILIO_AUTH", AUTH_TOKEN)]
}

#[tokio::test]
async fn a_phone_call_is_answered_by_the_skill_turn_after_turn() {
    let site = twilio_site("");
    let gw = site.start(&["--browser", "off"], &env());
    let caller = [
        ("CallSid", "CA1"),
        ("From", "+14155550100"),
        ("To", "+18005550199"),
    ];

    // The call starts: the launch reply, gathering speech for turn 1.
    let (status, twiml) = call(&gw, "", &caller).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.starts_with("<?xml"), "{twiml}");
    assert!(
        twiml.contains(&format!(
            "<Gather input=\"speech\" speechTimeout=\"auto\" method=\"POST\" action=\"{PUBLIC_URL}?turn=1\"><Say>Clinic line. Say hello, or ask me to find a slot.</Say></Gather>"
        )),
        "{twiml}"
    );

    // What the caller said goes through the skill's matcher (which lowercases slot
    // values); the answer is escaped.
    let mut said = caller.to_vec();
    said.push(("SpeechResult", "Hello Ada"));
    let (status, twiml) = call(&gw, "turn=1", &said).await;
    assert_eq!(status, 200);
    assert!(
        twiml.contains("<Say>Hello ada &amp; welcome.</Say>"),
        "{twiml}"
    );
    assert!(twiml.ends_with("<Hangup/></Response>"), "{twiml}");

    // The same request again (a replay): nothing said, nothing run.
    let (status, twiml) = call(&gw, "turn=1", &said).await;
    assert_eq!(status, 200);
    assert!(!twiml.contains("<Say>"), "{twiml}");

    // A slow function: the still-working reply and a redirect; the redirect waits for it.
    let mut slow = caller.to_vec();
    slow.push(("SpeechResult", "find me a slot"));
    let (_, twiml) = call(&gw, "turn=2", &slow).await;
    assert!(
        twiml.contains("<Say>One moment, I am looking.</Say>"),
        "{twiml}"
    );
    assert!(
        twiml.contains(&format!(
            "<Redirect method=\"POST\">{PUBLIC_URL}?turn=2&amp;wait=1</Redirect>"
        )),
        "{twiml}"
    );
    let (status, twiml) = call(&gw, "turn=2&wait=1", &caller).await;
    assert_eq!(status, 200);
    assert!(twiml.contains("Your slot is Tuesday at nine."), "{twiml}");
    assert!(
        twiml.contains("action=\"https://hark.example.com/twilio/line?turn=3\""),
        "{twiml}"
    );

    // Forged: another token, a changed word, the URL Hark sees instead of the public one.
    let owned: Vec<(String, String)> = said
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let url = format!("{PUBLIC_URL}?turn=9");
    for (signature, body) in [
        (sign_request(b"another-token", &url, &owned), form(&said)),
        (
            sign_request(AUTH_TOKEN.as_bytes(), &url, &owned),
            form(&said).replace("Ada", "Bob"),
        ),
        (
            sign_request(
                AUTH_TOKEN.as_bytes(),
                &format!("{}/twilio/line?turn=9", gw.url),
                &owned,
            ),
            form(&said),
        ),
    ] {
        let headers = vec![
            ("x-twilio-signature", signature),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ];
        assert_eq!(
            post(&gw, "/twilio/line?turn=9", &headers, body).await.0,
            401
        );
    }
    let stats: serde_json::Value = crate::channels::channel_stats(&gw, "twilio", "line").await;
    assert_eq!(stats["duplicates"], 1, "{stats}");
    assert_eq!(stats["refused"]["signature_mismatch"], 3, "{stats}");
}

/// One call is one skill session: what a turn sets in the session is there on the later
/// turns of the same call (a slow function's wait between them included), and not in
/// another call.
#[tokio::test]
async fn a_call_keeps_its_session_from_turn_to_turn() {
    let site = twilio_site("");
    let gw = site.start(&["--browser", "off"], &env());
    let turn = |sid: &'static str, words: &'static str| {
        let mut params = vec![("CallSid", sid), ("From", "+14155550111")];
        if !words.is_empty() {
            params.push(("SpeechResult", words));
        }
        params
    };
    call(&gw, "", &turn("CA7", "")).await;
    let (_, twiml) = call(&gw, "turn=1", &turn("CA7", "remember me")).await;
    assert!(twiml.contains("<Say>Noted.</Say></Gather>"), "{twiml}");
    // A slow function between the turns: the session outlives the wait for its answer.
    let (_, twiml) = call(&gw, "turn=2", &turn("CA7", "find me a slot")).await;
    assert!(twiml.contains("wait=1</Redirect>"), "{twiml}");
    let (_, twiml) = call(&gw, "turn=2&wait=1", &turn("CA7", "")).await;
    assert!(twiml.contains("Your slot is Tuesday at nine."), "{twiml}");
    let (_, twiml) = call(&gw, "turn=3", &turn("CA7", "who am i")).await;
    assert!(twiml.contains("<Say>You are Ada.</Say>"), "{twiml}");
    // Another call of the same caller is another session.
    call(&gw, "", &turn("CA8", "")).await;
    let (_, twiml) = call(&gw, "turn=1", &turn("CA8", "who am i")).await;
    assert!(twiml.contains("<Say>You are nobody.</Say>"), "{twiml}");
}

/// Every Twilio vector of `channels.json` as a route of its own, whose `public_url` is the
/// vector's URL: form requests get TwiML, the JSON one passes the signature and is then
/// refused as not a voice request (415); a changed parameter is 401.
#[tokio::test]
async fn twilio_conformance_vectors_through_the_real_endpoint() {
    let Some(doc) = hark::verify::conformance("channels.json") else {
        return;
    };
    let vectors = doc["twilio"]["vectors"].as_array().unwrap();
    let mut routes = String::new();
    let mut env = env();
    env.push(("HARK_SECRET_TWILIO_VECTORS", "12345"));
    for (i, vector) in vectors.iter().enumerate() {
        assert_eq!(vector["auth_token"], "12345");
        let url = vector["url"].as_str().unwrap();
        let public = url.split('?').next().unwrap();
        routes.push_str(&format!(
            "    case-{i}:\n      auth_tokens: [twilio-vectors]\n      skill: clinic\n      public_url: \"{public}\"\n"
        ));
    }
    let site = twilio_site(&routes);
    let gw = site.start(&["--browser", "off"], &env);
    for (i, vector) in vectors.iter().enumerate() {
        let name = vector["name"].as_str().unwrap();
        let url = vector["url"].as_str().unwrap();
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let (body, content_type) = vector_body(vector);
        let mut headers = vec![
            (
                "x-twilio-signature",
                vector["expected_x_twilio_signature"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            ("content-type", content_type.to_owned()),
        ];
        let path = format!("/twilio/case-{i}?{query}");
        let (status, answer) = post(&gw, &path, &headers, body.clone()).await;
        if content_type == "application/json" {
            assert_eq!(status, 415, "{name}: {answer}");
            let changed = body.replace("value", "valuE");
            assert_eq!(post(&gw, &path, &headers, changed).await.0, 401, "{name}");
        } else {
            assert_eq!(status, 200, "{name}: {answer}");
            assert!(answer.contains("<Response>"), "{name}: {answer}");
            headers[0].1 = headers[0]
                .1
                .replacen(|c: char| c.is_ascii_alphabetic(), "0", 1);
            assert_eq!(post(&gw, &path, &headers, body).await.0, 401, "{name}");
        }
    }
}

/// A vector's body and content type: its raw JSON body, or its parameters form-encoded
/// (a repeated parameter once per value).
fn vector_body(vector: &serde_json::Value) -> (String, &'static str) {
    if let Some(raw) = vector["raw_body"].as_str() {
        return (raw.to_owned(), "application/json");
    }
    let mut params = Vec::new();
    for (k, v) in vector["params"].as_object().unwrap() {
        match v {
            serde_json::Value::Array(values) => {
                for v in values {
                    params.push((k.clone(), v.as_str().unwrap().to_owned()));
                }
            }
            v => params.push((k.clone(), v.as_str().unwrap().to_owned())),
        }
    }
    (
        serde_urlencoded::to_string(&params).unwrap(),
        "application/x-www-form-urlencoded",
    )
}

/// Every Twilio vector passes `hark webhook verify` with the URL Twilio called, and fails
/// with a changed URL, a changed body or another auth token.
#[test]
fn hark_webhook_verify_checks_every_twilio_vector() {
    let Some(doc) = hark::verify::conformance("channels.json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    let vectors = doc["twilio"]["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 6);
    for vector in vectors {
        let name = vector["name"].as_str().unwrap();
        let (body, _) = vector_body(vector);
        let signature = vector["expected_x_twilio_signature"].as_str().unwrap();
        let run = |url: &str, body: &str, token: &str| {
            std::fs::write(&body_file, body).unwrap();
            Command::new(hark_bin())
                .args(["webhook", "verify", "--kind", "twilio", "--secret", token])
                .args(["--url", url, "--body"])
                .arg(&body_file)
                .args(["-H", &format!("X-Twilio-Signature: {signature}")])
                .output()
                .unwrap()
        };
        let url = vector["url"].as_str().unwrap();
        let passed = run(url, &body, "12345");
        let text = String::from_utf8_lossy(&passed.stdout);
        assert!(passed.status.success(), "{name}: {text}");
        assert!(text.contains("result: PASS"), "{name}: {text}");
        let other_url = url.replacen("myapp", "myapq", 1);
        assert!(!run(&other_url, &body, "12345").status.success(), "{name}");
        let other_body = body.replacen('1', "2", 1).replacen("value", "valuE", 1);
        assert_ne!(other_body, body, "{name}");
        assert!(!run(url, &other_body, "12345").status.success(), "{name}");
        assert!(!run(url, &body, "12346").status.success(), "{name}");
    }
}

/// `hark say --channel twilio` prints the TwiML a phone line of the skill would answer.
#[tokio::test]
async fn hark_say_simulates_a_phone_call() {
    let site = twilio_site("");
    let gw = site.start(&["--browser", "off"], &env());
    let say = |words: &str| {
        let out = Command::new(hark_bin())
            .args(["say", "clinic", words, "--channel", "twilio", "--skills"])
            .arg(site.path().join("skills"))
            .env("HARK_GATEWAY", &gw.url)
            .env("HARK_DATA", &gw.data)
            .env_remove("HARK_TOKEN")
            .output()
            .unwrap();
        crate::util::record_log(&out.stderr);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let opened = say("");
    assert!(opened.starts_with("<?xml"), "{opened}");
    assert!(
        opened.contains("<Gather input=\"speech\"")
            && opened.contains("<Say>Clinic line. Say hello, or ask me to find a slot.</Say>"),
        "{opened}"
    );
    let hello = say("hello Ada");
    assert!(
        hello.contains("<Say>Hello ada &amp; welcome.</Say><Hangup/>"),
        "{hello}"
    );
}
