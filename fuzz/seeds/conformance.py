#!/usr/bin/env python3
"""Generates extra seed inputs from the shared conformance vectors (never committed):
`conformance.py CONFORMANCE_DIR OUT_DIR` writes OUT_DIR/TARGET/NAME files in the targets'
input formats (see hark::fuzzing)."""
import json, os, sys

src, out = sys.argv[1], sys.argv[2]


def write(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def msg(headers, body):
    return "".join(f"{k}: {v}\n" for k, v in headers) + "\n" + body


count = 0
alexa = os.path.join(src, "alexa")
for d in ["chains", "real-2017-11-20"]:
    p = os.path.join(alexa, d)
    for name in sorted(os.listdir(p)) if os.path.isdir(p) else []:
        if name.endswith(".pem"):
            write("alexa_cert_chain", "conformance-" + name, open(os.path.join(p, name), "rb").read())
            count += 1
real = os.path.join(alexa, "real-2017-11-20")
if os.path.isdir(real):
    url = open(os.path.join(real, "signature_cert_chain_url.txt")).read().strip()
    sig = open(os.path.join(real, "signature.b64")).read().strip()
    body = open(os.path.join(real, "body.json")).read()
    write("alexa_cert_url", "conformance-real", url)
    write("alexa_request", "conformance-real-sha1", msg([("SignatureCertChainUrl", url), ("Signature", sig)], body))
    write("alexa_request", "conformance-real-placeholder", msg([("SignatureCertChainUrl", url), ("Signature-256", "fuzz-sign")], body))
    write("ssml_slot", "conformance-real-body", body)
    count += 4

hooks = os.path.join(src, "webhooks.json")
if os.path.isfile(hooks):
    vectors = json.load(open(hooks))
    for target, key in [("slack_request", "slack"), ("github_delivery", "github"), ("standard_webhook", "standard_webhooks")]:
        for i, v in enumerate(vectors.get(key, [])):
            headers = [(k[len("header_"):].replace("_", "-"), str(val)) for k, val in v.items()
                       if k.startswith("header_")]
            for k in ("webhook_id", "webhook_timestamp", "webhook_signature"):
                if k in v:
                    headers.append((k.replace("_", "-"), str(v[k])))
            if "timestamp" in v and key == "slack":
                headers.append(("x-slack-request-timestamp", str(v["timestamp"])))
            write(target, f"conformance-{i:02}", msg(headers, v.get("body", "")))
            count += 1
print(f"fuzz: {count} seed inputs generated from {src}")
