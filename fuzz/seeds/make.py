#!/usr/bin/env python3
"""Writes the hand-made seed inputs of each fuzz target into fuzz/corpus/TARGET/.

Signed seeds use hark::fuzzing's SECRET and NOW, so they reach the verifiers' accepting paths.
Run from the repository root: python3 fuzz/seeds/make.py (then `cargo fuzz cmin` if wanted).
"""
import base64, hashlib, hmac, json, os

SECRET = b"fuzz-signing-secret"
NOW = 1740830400
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def msg(headers, body):
    return "".join(f"{k}: {v}\n" for k, v in headers) + "\n" + body


def hexmac(key, data, alg=hashlib.sha256):
    return hmac.new(key, data.encode(), alg).hexdigest()


# --- alexa_cert_url -------------------------------------------------------------------------
for i, url in enumerate([
    "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
    "https://s3.amazonaws.com:443/echo.api/echo-api-cert-12.pem",
    "HTTPS://S3.AMAZONAWS.COM/echo.api/../echo.api/echo-api-cert.pem",
    "https://s3.amazonaws.com/EcHo.aPi/echo-api-cert.pem",
    "http://s3.amazonaws.com/echo.api/echo-api-cert.pem",
    "https://notamazon.com/echo.api/echo-api-cert.pem",
    "https://s3.amazonaws.com:563/echo.api/echo-api-cert.pem",
    "https://s3.amazonaws.com/invalid.path/echo-api-cert.pem",
    "https://s3.amazonaws.com/echo.api/%2e%2e/x.pem",
    "https://user@s3.amazonaws.com/echo.api/x.pem",
    "https://s3.amazonaws.com/echo.api/./a/../b.pem?x=1#f",
    "https://s3.amazonaws.com\\@evil.com/echo.api/x.pem",
]):
    write("alexa_cert_url", f"seed-{i:02}", url)

# --- alexa_request --------------------------------------------------------------------------
APP = "amzn1.ask.skill.fuzz"
CERT = "https://s3.amazonaws.com/echo.api/echo-api-cert.pem"


def envelope(request, app=APP, session=True):
    env = {"version": "1.0",
           "context": {"System": {"application": {"applicationId": app},
                                  "user": {"userId": "amzn1.ask.account.U"},
                                  "apiEndpoint": "https://api.amazonalexa.com",
                                  "apiAccessToken": "token"}},
           "request": request}
    if session:
        env["session"] = {"new": True, "sessionId": "amzn1.echo-api.session.S",
                          "application": {"applicationId": app},
                          "attributes": {"k": "v"}, "user": {"userId": "amzn1.ask.account.U"}}
    return json.dumps(env, indent=1)


TS = "2025-03-01T12:00:00Z"
bodies = {
    "launch": envelope({"type": "LaunchRequest", "requestId": "r1", "timestamp": TS, "locale": "en-US"}),
    "intent": envelope({"type": "IntentRequest", "requestId": "r2", "timestamp": TS, "locale": "en-GB",
                        "dialogState": "STARTED",
                        "intent": {"name": "BookDayOffIntent", "confirmationStatus": "NONE",
                                   "slots": {"date": {"name": "date", "value": "2025-03-07"},
                                             "half": {"name": "half", "value": "am",
                                                      "resolutions": {"resolutionsPerAuthority": [
                                                          {"authority": "amzn1.er-authority.echo-sdk.x.HALF_DAY",
                                                           "status": {"code": "ER_SUCCESS_MATCH"},
                                                           "values": [{"value": {"name": "morning", "id": "MORNING"}}]}]}}}}}),
    "ended": envelope({"type": "SessionEndedRequest", "requestId": "r3", "timestamp": TS, "reason": "ERROR",
                       "error": {"type": "INVALID_RESPONSE", "message": "bad"}}),
    "event": envelope({"type": "AlexaSkillEvent.SkillEnabled", "requestId": "r4", "timestamp": "2025-03-01T11:30:00Z"}, session=False),
    "exception": envelope({"type": "System.ExceptionEncountered", "requestId": "r5", "timestamp": TS,
                           "error": {"type": "INVALID_RESPONSE", "message": "m"}, "cause": {"requestId": "r4"}}),
    "can-fulfill": envelope({"type": "CanFulfillIntentRequest", "requestId": "r6", "timestamp": TS,
                             "intent": {"name": "BalanceIntent", "slots": {}}}),
    "stale": envelope({"type": "LaunchRequest", "requestId": "r7", "timestamp": "2025-03-01T11:50:00Z"}),
    "other-app": envelope({"type": "LaunchRequest", "requestId": "r8", "timestamp": TS}, app="amzn1.ask.skill.other"),
    "epoch-ms": envelope({"type": "LaunchRequest", "requestId": "r9", "timestamp": 1740830400000}),
}
for name, body in bodies.items():
    write("alexa_request", f"signed-{name}", msg([("SignatureCertChainUrl", CERT), ("Signature-256", "fuzz-sign")], body))
write("alexa_request", "unsigned", msg([("SignatureCertChainUrl", CERT), ("Signature-256", base64.b64encode(b"x" * 256).decode())], bodies["launch"]))
write("alexa_request", "sha1-only", msg([("SignatureCertChainUrl", CERT), ("Signature", "c2ln")], bodies["launch"]))
write("alexa_request", "bad-url", msg([("SignatureCertChainUrl", "https://s3.amazonaws.com/echo.api/../evil.pem"), ("Signature-256", "fuzz-sign")], bodies["launch"]))

# --- ssml_slot ------------------------------------------------------------------------------
for i, text in enumerate([
    "next friday", "</speak><audio src='https://evil'/>", "Tom & Jerry's \"show\"",
    "<![CDATA[x]]> &amp; &#x41; &#0;", "<speak><p>nested</p></speak>", "tab\there\r\nnew line",
    "\u0001\u0008\u000b\ufffe control", "😀 emoji and ümlauts", "]]>", "<?xml version='1.0'?>",
]):
    write("ssml_slot", f"seed-{i:02}", text)

# --- slack_request --------------------------------------------------------------------------


def slack(body, ts=NOW, sig=None, ctype="application/x-www-form-urlencoded"):
    sig = sig or "v0=" + hexmac(SECRET, f"v0:{ts}:{body}")
    return msg([("Content-Type", ctype), ("X-Slack-Request-Timestamp", str(ts)), ("X-Slack-Signature", sig)], body)


slash = "token=legacy&team_id=T1&channel_id=C1&user_id=U1&command=%2Fsay&text=hello+%3C%2Fspeak%3E&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1%2F1%2Fx&trigger_id=13345224609.738474920.8088930838d88f008e0"
payload = json.dumps({"type": "block_actions", "trigger_id": "t1", "response_url": "https://hooks.slack.com/actions/T1/1/x",
                      "actions": [{"action_id": "approve-button", "value": "yes"}]})
event = json.dumps({"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_mention", "channel": "C1", "ts": "1.2", "text": "<@U1> hi"}})
write("slack_request", "slash", slack(slash))
write("slack_request", "interaction", slack("payload=" + payload.replace("%", "%25").replace("&", "%26").replace("+", "%2B").replace(" ", "+")))
write("slack_request", "event", slack(event, ctype="application/json"))
write("slack_request", "url-verification", slack(json.dumps({"type": "url_verification", "challenge": "c"}), ctype="application/json"))
write("slack_request", "stale", slack(slash, ts=NOW - 301))
write("slack_request", "wrong-sig", slack(slash, sig="v0=" + "0" * 64))
write("slack_request", "no-headers", "\n" + slash)

# --- github_delivery ------------------------------------------------------------------------
issue = json.dumps({"action": "opened", "issue": {"number": 7, "title": "t"}, "repository": {"full_name": "o/r"},
                    "installation": {"id": 42}})
pr = json.dumps({"action": "synchronize", "number": 3, "pull_request": {"number": 3}, "repository": {"full_name": "o/r"}})
for name, body, event in [("issue", issue, "issues"), ("pr", pr, "pull_request"), ("labels", '{"labels": ["bug", "triage"]}', "x"), ("list", '["a", "b"]', "x")]:
    write("github_delivery", name, msg([("X-GitHub-Event", event), ("X-GitHub-Delivery", "d-1"),
                                        ("X-Hub-Signature-256", "sha256=" + hexmac(SECRET, body)),
                                        ("X-Hub-Signature", "sha1=" + hexmac(SECRET, body, hashlib.sha1))], body))
write("github_delivery", "wrong", msg([("X-Hub-Signature-256", "sha256=zz")], issue))

# --- standard_webhook -----------------------------------------------------------------------


def standard(body, wid="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts=NOW, extra=""):
    sig = base64.b64encode(hmac.new(SECRET, f"{wid}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
    return msg([("webhook-id", wid), ("webhook-timestamp", str(ts)), ("webhook-signature", f"{extra}v1,{sig}")], body)


write("standard_webhook", "signed", standard('{"type":"deploy","ref":"main"}'))
write("standard_webhook", "rotated", standard('{"a":1}', extra="v1,AAAA v1a,xyz "))
write("standard_webhook", "future", standard("{}", ts=NOW + 600))
write("standard_webhook", "bad", msg([("webhook-id", "x"), ("webhook-timestamp", "nope"), ("webhook-signature", "v2,??")], "{}"))

# --- trigger_rule ---------------------------------------------------------------------------
push = '{"ref": "refs/heads/main", "head_commit": {"id": "abc"}, "n": 42, "list": [1, {"k": "v"}]}'
rules = {
    "and-hmac": ("""and:
  - match: { type: payload-hmac-sha256, secret: s3cret, parameter: { source: header, name: X-Signature } }
  - match: { type: value, value: refs/heads/main, parameter: { source: payload, name: ref } }
""", [("X-Signature", "sha256=" + hmac.new(b"s3cret", push.encode(), hashlib.sha256).hexdigest())]),
    "or-regex": ("""or:
  - match: { type: regex, regex: "^refs/tags/v[0-9]+", parameter: { source: payload, name: ref } }
  - not:
      match: { type: value, value: 42, parameter: { source: payload, name: n } }
""", []),
    "ip": ('match: { type: ip-whitelist, ip-range: "192.0.2.0/24 10.0.0.1" }\n', []),
    "query": ('match: { type: value, value: yes, parameter: { source: url, name: go } }\n', []),
    "nested-payload": ('match: { type: value, value: v, parameter: { source: payload, name: list.1.k } }\n', []),
    "sha1": ('match: { type: payload-hash-sha1, secret: k, parameter: { source: header, name: x-hub-signature } }\n',
             [("X-Hub-Signature", "sha1=" + hmac.new(b"k", push.encode(), hashlib.sha1).hexdigest())]),
}
for name, (rule, headers) in rules.items():
    write("trigger_rule", name, rule + "%%\n?go=yes&x=1\n" + msg(headers, push))

# --- stack_file and skill_file: the repository's own files plus the test suite's shapes ----
repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
write("stack_file", "hark.yml", open(os.path.join(repo, "hark.yml")).read())
write("stack_file", "channels.yml", """provider: { name: hark, gateway: "http://127.0.0.1:8080" }
functions:
  ok: { fprocess: echo ok, environment: { A: "${FUZZ_VAR}", B: "${MISSING:-default}" }, limits: { memory: 64Mi } }
  say: { image: say:latest, annotations: { hark.timeout: 2s } }
channels:
  slack:
    acme:
      signing_secrets: [slack-old, slack-new]
      commands: { /say: say }
      events: { app_mention: ok }
      actions: { approve-button: ok }
      ack_budget: 2500ms
  github:
    triage:
      webhook_secrets: [gh-hook]
      token: gh-token
      events: { issues.opened: ok, "pull_request.*": ok }
      reply: comment
  hooks:
    signed:
      trigger_rule:
        and:
          - match: { type: payload-hmac-sha256, secret: hook-hmac, parameter: { source: header, name: X-Signature } }
          - match: { type: value, value: refs/heads/main, parameter: { source: payload, name: ref } }
      function: ok
    deploy:
      standard_webhooks_secrets: [deploy-old]
      function: ok
  cron:
    nightly: { schedule: "0 3 * * *", function: ok, timezone: Europe/London }
alexa:
  skills: ./skills
  allow_sha1_signature: false
""")
write("skill_file", "holiday.yaml", open(os.path.join(repo, "skills", "holiday", "skill.yaml")).read())
write("skill_file", "minimal.yaml", """id: amzn1.ask.skill.1
invocation: echo bot
intents:
  EchoIntent:
    samples: ["say {thing}", "repeat {thing} on {when}"]
    slots: { thing: AMAZON.SearchQuery, when: { type: AMAZON.DATE, required: true, prompt: "When?" } }
    function: echo
    input: { text: "{{ slots.thing }}", list: ["{{ slots.when }}", 1] }
    speech: '<p>{{ result.text }}</p> <break time="1s"/> <say-as interpret-as="cardinal">{{ result.n }}</say-as>'
    card: { title: Echo, text: "{{ result.text }}" }
""")
