//! The client subcommands: each turns its arguments into API calls and prints the
//! answer as a table (or JSON with `--output json`).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use comfy_table::{presets::NOTHING, Table};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;

use super::{Command, Gateway, Output, QueueCommand, SecretCommand, SecretValue};
use crate::function::{FunctionStatus, ANNOTATION_MODE};
use crate::provider::LogLine;
use crate::stack::Stack;
use crate::store::{Activation, QueueEntry};

pub async fn run(
    command: Command,
    gateway: &str,
    token: Option<String>,
    data: &Path,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let gw = Gateway::new(gateway, token, data)?;
    match command {
        Command::Up(_)
        | Command::Doctor(_)
        | Command::Completions { .. }
        | Command::Man
        | Command::Schema
        | Command::Keys { .. }
        | Command::Bench(_)
        | Command::Build(_)
        | Command::Watchdog(_)
        | Command::BrowserGuard(_)
        | Command::New(_)
        | Command::Webhook(_)
        | Command::Skill(_)
        | Command::Say(_)
        | Command::Alexa(_) => unreachable!("handled before client commands"),
        #[cfg(feature = "bench")]
        Command::BenchBaseline(_) => unreachable!("handled before client commands"),
        Command::Deploy { file, name } => deploy(&gw, &file, name.as_deref()).await,
        Command::List => list(&gw, output).await,
        Command::Describe { name } => describe(&gw, &name, output).await,
        Command::Invoke {
            name,
            headers,
            query,
            method,
            path,
            asynchronous,
            callback,
        } => {
            let call = Call {
                name: &name,
                headers: &headers,
                query: query.as_deref(),
                method: &method,
                path: &path,
            };
            if asynchronous {
                invoke_async(&gw, call, callback.as_deref()).await
            } else {
                invoke(&gw, call).await
            }
        }
        Command::Queue { command } => queue(&gw, command, output).await,
        Command::Schedules => schedules(&gw, output).await,
        Command::Remove { name } => {
            gw.send_json(
                Method::DELETE,
                "/system/functions",
                &serde_json::json!({ "functionName": name }),
            )
            .await?;
            println!("removed {name}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Scale { name, replicas } => {
            let body = serde_json::json!({ "serviceName": name, "replicas": replicas });
            gw.send_json(
                Method::POST,
                &format!("/system/scale-function/{name}"),
                &body,
            )
            .await?;
            println!("scaled {name} to {replicas}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            name,
            follow,
            tail,
            since,
        } => logs(&gw, &name, follow, tail, since, output).await,
        Command::Secret(command) => secret(&gw, command, output).await,
        Command::Telegram(super::TelegramCommand::SetWebhook {
            bot,
            url,
            drop_pending_updates,
        }) => {
            let answer: serde_json::Value = gw
                .send_json(
                    Method::POST,
                    &format!("/system/channels/telegram/{bot}/webhook"),
                    &serde_json::json!({ "url": url, "drop_pending_updates": drop_pending_updates }),
                )
                .await?
                .json()
                .await?;
            match output {
                Output::Json => print_json(&answer)?,
                Output::Table => println!(
                    "Telegram calls {url} for bot {bot} now; its new secret token is stored as secret {}",
                    answer["secret"].as_str().unwrap_or("?")
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Activations {
            show: Some(super::ActivationsCommand::Show { id, screenshot }),
            ..
        } => activation_show(&gw, &id, screenshot, output).await,
        Command::Activations {
            show: Some(super::ActivationsCommand::Replay { id, function }),
            ..
        } => activation_replay(&gw, &id, function, output).await,
        Command::Activations {
            function,
            limit,
            show: None,
        } => activations(&gw, function, limit, output).await,
        Command::Token(command) => super::tokens::run(&gw, command, output).await,
    }
}

pub(super) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(super) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(header.to_vec());
    table
}

async fn deploy(gw: &Gateway, file: &Path, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let stack = Stack::load_for(file, Some(gw.base()))?;
    for warning in &stack.warnings {
        eprintln!("warning: {}: {warning}", file.display());
    }
    let mut deployed = 0;
    for spec in &stack.functions {
        if only.is_some_and(|n| n != spec.service.as_str()) {
            continue;
        }
        // Update first, create when the function is new: faas-cli's order.
        let response = gw
            .send(gw.request(Method::PUT, "/system/functions").json(spec))
            .await?;
        if response.status() == http::StatusCode::NOT_FOUND {
            gw.send_json(Method::POST, "/system/functions", spec)
                .await?;
        } else if !response.status().is_success() {
            gw.expect_ok(gw.request(Method::PUT, "/system/functions").json(spec))
                .await?;
        }
        println!("deployed {}", spec.service);
        deployed += 1;
    }
    if let (Some(name), 0) = (only, deployed) {
        bail!("{} has no function named {name}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(gw: &Gateway, output: Output) -> anyhow::Result<ExitCode> {
    let functions: Vec<FunctionStatus> = gw.get("/system/functions").await?;
    if output == Output::Json {
        print_json(&functions)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&["NAME", "MODE", "INVOCATIONS", "REPLICAS", "AVAILABLE"]);
    for f in &functions {
        let mode = f
            .annotations
            .get(ANNOTATION_MODE)
            .map_or("fork", String::as_str);
        t.add_row(vec![
            f.name.to_string(),
            mode.to_owned(),
            f.invocation_count.to_string(),
            f.replicas.to_string(),
            f.available_replicas.to_string(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

async fn describe(gw: &Gateway, name: &str, output: Output) -> anyhow::Result<ExitCode> {
    let f: FunctionStatus = gw.get(&format!("/system/function/{name}")).await?;
    if output == Output::Json {
        print_json(&f)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    let join = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    t.add_row(vec!["Name".to_owned(), f.name.to_string()]);
    t.add_row(vec![
        "Process".to_owned(),
        f.env_process.clone().unwrap_or_default(),
    ]);
    t.add_row(vec!["Image".to_owned(), f.image.clone()]);
    t.add_row(vec![
        "Replicas".to_owned(),
        format!("{} ({} available)", f.replicas, f.available_replicas),
    ]);
    t.add_row(vec![
        "Invocations".to_owned(),
        f.invocation_count.to_string(),
    ]);
    t.add_row(vec!["Created".to_owned(), f.created_at.to_rfc3339()]);
    t.add_row(vec![
        "Environment".to_owned(),
        f.env_vars.keys().cloned().collect::<Vec<_>>().join(", "),
    ]);
    t.add_row(vec!["Secrets".to_owned(), f.secrets.join(", ")]);
    t.add_row(vec!["Labels".to_owned(), join(&f.labels)]);
    t.add_row(vec!["Annotations".to_owned(), join(&f.annotations)]);
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

/// What `hark invoke` sends.
struct Call<'a> {
    name: &'a str,
    headers: &'a [String],
    query: Option<&'a str>,
    method: &'a str,
    path: &'a str,
}

impl Call<'_> {
    /// The request to `/{prefix}/NAME/PATH?QUERY` with the body from stdin.
    fn request(&self, gw: &Gateway, prefix: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        let method = Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .context("invalid --method")?;
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .context("reading the body from stdin")?;
        let mut url = format!(
            "/{prefix}/{}/{}",
            self.name,
            self.path.trim_start_matches('/')
        );
        if let Some(q) = self.query {
            url = format!("{url}?{}", q.trim_start_matches('?'));
        }
        let mut request = gw.request(method, &url).body(body);
        for h in self.headers {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not `Name: value`"))?;
            request = request.header(k.trim(), v.trim());
        }
        Ok(request)
    }
}

async fn invoke_async(
    gw: &Gateway,
    call: Call<'_>,
    callback: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut request = call.request(gw, "async-function")?;
    if let Some(url) = callback {
        request = request.header("X-Callback-Url", url);
    }
    let response = gw.expect_ok(request).await?;
    let id = response
        .headers()
        .get("x-call-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

async fn queue(
    gw: &Gateway,
    command: Option<QueueCommand>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let (state, function, limit) = match command {
        None => (None, None, 50),
        Some(QueueCommand::List {
            state,
            function,
            limit,
        }) => (state, function, limit),
        Some(QueueCommand::Dead) => (Some("dead".to_owned()), None, 1000),
        Some(QueueCommand::Retry { call_id }) => {
            gw.expect_ok(gw.request(Method::POST, &format!("/system/queue/{call_id}/retry")))
                .await?;
            println!("queued {call_id} again");
            return Ok(ExitCode::SUCCESS);
        }
        Some(QueueCommand::Cancel { call_id }) => {
            gw.expect_ok(gw.request(Method::DELETE, &format!("/async-function/{call_id}")))
                .await?;
            println!("cancelled {call_id}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut query = vec![("limit", limit.to_string())];
    query.extend(state.map(|s| ("state", s)));
    query.extend(function.map(|f| ("function", f)));
    let entries: Vec<QueueEntry> = gw
        .expect_ok(gw.request(Method::GET, "/system/queue").query(&query))
        .await?
        .json()
        .await
        .context("reading the queue")?;
    if output == Output::Json {
        print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&[
        "CREATED", "CALL ID", "FUNCTION", "STATE", "ATTEMPTS", "STATUS", "ERROR",
    ]);
    for e in &entries {
        t.add_row(vec![
            e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            e.call_id.clone(),
            e.function.clone(),
            e.state.as_str().to_owned(),
            e.attempts.to_string(),
            e.status.map(|s| s.to_string()).unwrap_or_default(),
            e.error
                .clone()
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

async fn invoke(gw: &Gateway, call: Call<'_>) -> anyhow::Result<ExitCode> {
    let name = call.name;
    let request = call.request(gw, "function")?;
    let response = gw.send(request).await?;
    let status = response.status();
    let bytes: Bytes = response
        .bytes()
        .await
        .context("reading the function's answer")?;
    if status.is_success() {
        std::io::stdout().write_all(&bytes)?;
        Ok(ExitCode::SUCCESS)
    } else {
        std::io::stderr().write_all(&bytes)?;
        if !bytes.ends_with(b"\n") {
            eprintln!();
        }
        eprintln!("error: {name} answered {status}");
        Ok(ExitCode::FAILURE)
    }
}

/// Prints a function's log lines. They come as server-sent events; with `follow`, a
/// stream that ends (the gateway stopped or restarted) is opened again, resuming after
/// the last line printed, until the user stops the command.
async fn logs(
    gw: &Gateway,
    name: &str,
    follow: bool,
    tail: Option<usize>,
    since: Option<String>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> =
        vec![("name", name.to_owned()), ("follow", follow.to_string())];
    if let Some(t) = tail {
        query.push(("tail", t.to_string()));
    }
    if let Some(s) = since {
        query.push(("since", s));
    }
    let mut last_id: Option<String> = None;
    let mut reconnecting = false;
    loop {
        let mut request = gw
            .request(Method::GET, "/system/logs")
            .query(&query)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = if reconnecting {
            reconnect(request).await?
        } else {
            gw.expect_ok(request).await?
        };
        let mut events = response.bytes_stream().eventsource();
        let mut cut = None;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    cut = Some(e);
                    break;
                }
            };
            if event.event != "message" {
                continue;
            }
            match output {
                Output::Json => println!("{}", event.data),
                Output::Table => {
                    let l: LogLine =
                        serde_json::from_str(&event.data).context("reading a log line")?;
                    println!(
                        "{} {} {}",
                        l.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                        l.instance,
                        l.text
                    );
                }
            }
            last_id = Some(event.id);
        }
        match (follow, cut) {
            (false, None) => return Ok(ExitCode::SUCCESS),
            (false, Some(e)) => bail!("the log stream was cut off: {e}"),
            (true, _) => {}
        }
        eprintln!("hark: the log stream ended (the gateway stopped or restarted); reconnecting");
        // A gateway that ends each stream at once (it is stopping) is not asked again
        // in a tight loop.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        reconnecting = true;
    }
}

/// Sends `request` until the gateway answers it: while the request fails (refused, reset
/// or cut off) or is answered 502/503 (stopping, starting, or behind a proxy that has no
/// gateway yet), it waits a little longer each time, up to 5 s. Any other answer that is
/// not a success is an error.
async fn reconnect(request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        let attempt = request.try_clone().context("repeating the request")?;
        match attempt.send().await {
            Ok(r) if !matches!(r.status().as_u16(), 502 | 503) => return Gateway::success(r).await,
            // Refused, reset or cut off: a gateway going down or coming up.
            Ok(_) | Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}

fn secret_value(value: &SecretValue) -> anyhow::Result<Vec<u8>> {
    if let Some(v) = &value.value {
        return Ok(v.clone().into_bytes());
    }
    if let Some(path) = &value.from_file {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("reading the secret from stdin")?;
    Ok(buf)
}

async fn secret(gw: &Gateway, command: SecretCommand, output: Output) -> anyhow::Result<ExitCode> {
    use base64::Engine;
    match command {
        SecretCommand::Create(v) => {
            let raw = base64::engine::general_purpose::STANDARD.encode(secret_value(&v)?);
            gw.send_json(
                Method::POST,
                "/system/secrets",
                &serde_json::json!({ "name": v.name, "rawValue": raw }),
            )
            .await?;
            println!("created secret {}", v.name);
        }
        SecretCommand::Update(v) => {
            let raw = base64::engine::general_purpose::STANDARD.encode(secret_value(&v)?);
            gw.send_json(
                Method::PUT,
                "/system/secrets",
                &serde_json::json!({ "name": v.name, "rawValue": raw }),
            )
            .await?;
            println!("updated secret {}", v.name);
        }
        SecretCommand::List => {
            let names: Vec<serde_json::Value> = gw.get("/system/secrets").await?;
            match output {
                Output::Json => print_json(&names)?,
                Output::Table => {
                    let mut t = table(&["NAME"]);
                    for n in &names {
                        t.add_row(vec![n["name"].as_str().unwrap_or_default()]);
                    }
                    println!("{t}");
                }
            }
        }
        SecretCommand::Remove { name } => {
            gw.send_json(
                Method::DELETE,
                "/system/secrets",
                &serde_json::json!({ "name": name }),
            )
            .await?;
            println!("removed secret {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn activations(
    gw: &Gateway,
    function: Option<String>,
    limit: u32,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let mut path = format!("/system/activations?limit={limit}");
    if let Some(f) = function {
        path.push_str(&format!("&function={f}"));
    }
    let list: Vec<Activation> = gw.get(&path).await?;
    if output == Output::Json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&[
        "STARTED", "FUNCTION", "TRIGGER", "STATUS", "MS", "CALL ID", "ERROR",
    ]);
    for a in &list {
        t.add_row(vec![
            a.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            a.function.clone(),
            a.trigger.clone(),
            a.status.to_string(),
            format!("{:.1}", a.duration_ms),
            a.call_id.clone(),
            a.error
                .clone()
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

/// `hark activations show ID`: the record, and a failed browser call's screenshot saved.
async fn activation_show(
    gw: &Gateway,
    id: &str,
    screenshot: Option<std::path::PathBuf>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let record: serde_json::Value = gw.get(&format!("/system/activations/{encoded}")).await?;
    let saved = match record.get("screenshot") {
        Some(_) => {
            let response = gw
                .expect_ok(gw.request(
                    reqwest::Method::GET,
                    &format!("/system/activations/{encoded}/screenshot"),
                ))
                .await?;
            let png = response.bytes().await?;
            let safe: String = id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = screenshot.unwrap_or_else(|| format!("{safe}.png").into());
            std::fs::write(&path, &png)
                .with_context(|| format!("saving the screenshot to {}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    if output == Output::Json {
        let mut record = record;
        if let Some(path) = &saved {
            record["screenshot"]["savedTo"] = path.display().to_string().into();
        }
        print_json(&record)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = |k: &str| match &record[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        v => v.to_string(),
    };
    println!("call id:   {}", text("callId"));
    println!("function:  {}", text("function"));
    println!("trigger:   {}", text("trigger"));
    println!("started:   {}", text("startedAt"));
    println!("status:    {}", text("status"));
    println!("duration:  {} ms", text("durationMs"));
    if record.get("error").is_some() {
        println!("error:     {}", text("error"));
    }
    if let Some(story) = record.get("story") {
        print_story(story);
    }
    if let Some(path) = saved {
        let url = record["screenshot"]["url"].as_str().unwrap_or("-");
        println!("page:      {url}");
        println!("screenshot saved to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `hark activations replay ID [--function OTHER]`: runs the kept request again and
/// prints the new call's id and how its answer differs from the first.
async fn activation_replay(
    gw: &Gateway,
    id: &str,
    function: Option<String>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let response = gw
        .expect_ok(
            gw.request(
                Method::POST,
                &format!("/system/activations/{encoded}/replay"),
            )
            .json(&serde_json::json!({ "function": function })),
        )
        .await?;
    let replayed: serde_json::Value = response.json().await.context("reading the replay")?;
    if output == Output::Json {
        print_json(&replayed)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "replayed {id} as {} ({} answered {})",
        replayed["callId"].as_str().unwrap_or("-"),
        replayed["function"].as_str().unwrap_or("-"),
        replayed["status"]
    );
    if replayed["same"] == true {
        println!("the same answer as the first call");
    } else if let Some(diff) = replayed["diff"].as_str().filter(|d| !d.is_empty()) {
        print!("{diff}");
    }
    for note in replayed["notes"].as_array().map_or(&[][..], Vec::as_slice) {
        println!("note: {}", note.as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

/// The story of an activation, for a terminal: its request, answer and log lines, each
/// body's first lines (`-o json` has all that is kept).
fn print_story(story: &serde_json::Value) {
    let body = |b: &serde_json::Value| {
        let size = b["size"].as_u64().unwrap_or(0);
        let cut = if b["truncated"] == true { ", cut" } else { "" };
        let shown = match b["text"].as_str() {
            Some(text) => text
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n           "),
            None => format!(
                "(binary, {})",
                b["contentType"].as_str().unwrap_or("no content type")
            ),
        };
        format!("({size} bytes{cut}) {shown}")
    };
    let request = &story["request"];
    let query = request["query"]
        .as_str()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    println!(
        "request:   {} {}{query} {}",
        request["method"].as_str().unwrap_or("-"),
        request["path"].as_str().unwrap_or("-"),
        body(&request["body"])
    );
    match story.get("response") {
        Some(response) => println!(
            "answer:    {} {}",
            response["status"],
            body(&response["body"])
        ),
        None => println!("answer:    none"),
    }
    let lines = story["logs"].as_array().map_or(&[][..], Vec::as_slice);
    println!(
        "log lines: {} (told by {})",
        lines.len(),
        story["logsBy"].as_str().unwrap_or("-")
    );
    for line in lines {
        println!(
            "  {} {}",
            line["instance"].as_str().unwrap_or("-"),
            line["text"].as_str().unwrap_or("")
        );
    }
}

async fn schedules(gw: &Gateway, output: Output) -> anyhow::Result<ExitCode> {
    let list: Vec<serde_json::Value> = gw.get("/system/schedules").await?;
    if output == Output::Json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&[
        "FUNCTION", "SCHEDULE", "TIMEZONE", "NEXT", "LAST RUN", "OUTCOME",
    ]);
    for s in &list {
        let last = &s["runs"][0];
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
        let next = if s["suspended"] == true {
            "suspended".to_owned()
        } else {
            text(&s["next"])
        };
        t.add_row(vec![
            text(&s["function"]),
            text(&s["schedule"]),
            text(&s["timezone"]),
            next,
            text(&last["tick"]),
            text(&last["outcome"]),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
