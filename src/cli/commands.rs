//! The client subcommands: each turns its arguments into API calls and prints the
//! answer as a table (or JSON with `--output json`).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use comfy_table::{presets::NOTHING, Table};
use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;

use super::{Command, Gateway, Output, SecretCommand, SecretValue, TokenCommand};
use crate::function::{FunctionStatus, ANNOTATION_MODE};
use crate::provider::LogLine;
use crate::stack::Stack;
use crate::store::Activation;

pub async fn run(
    command: Command,
    gateway: &str,
    token: Option<String>,
    data: &Path,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let gw = Gateway::new(gateway, token, data)?;
    match command {
        Command::Up(_) | Command::Bench(_) | Command::Build(_) | Command::Watchdog(_) => {
            unreachable!("handled before client commands")
        }
        Command::Deploy { file, name } => deploy(&gw, &file, name.as_deref()).await,
        Command::List => list(&gw, output).await,
        Command::Describe { name } => describe(&gw, &name, output).await,
        Command::Invoke {
            name,
            headers,
            query,
            method,
            path,
        } => invoke(&gw, &name, &headers, query.as_deref(), &method, &path).await,
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
        Command::Activations { function, limit } => activations(&gw, function, limit, output).await,
        Command::Token(TokenCommand::Create {
            scopes,
            ttl,
            subject,
        }) => {
            let body = serde_json::json!({ "scopes": scopes, "ttl": ttl, "subject": subject });
            let answer: serde_json::Value = gw
                .send_json(Method::POST, "/system/tokens", &body)
                .await?
                .json()
                .await?;
            match output {
                Output::Json => println!("{answer}"),
                Output::Table => println!("{}", answer["token"].as_str().unwrap_or_default()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(header.to_vec());
    table
}

async fn deploy(gw: &Gateway, file: &Path, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let stack = Stack::load(file)?;
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

async fn invoke(
    gw: &Gateway,
    name: &str,
    headers: &[String],
    query: Option<&str>,
    method: &str,
    path: &str,
) -> anyhow::Result<ExitCode> {
    let method =
        Method::from_bytes(method.to_ascii_uppercase().as_bytes()).context("invalid --method")?;
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the body from stdin")?;
    let mut url = format!("/function/{name}/{}", path.trim_start_matches('/'));
    if let Some(q) = query {
        url = format!("{url}?{}", q.trim_start_matches('?'));
    }
    let mut request = gw.request(method, &url).body(body);
    for h in headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `Name: value`"))?;
        request = request.header(k.trim(), v.trim());
    }
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
    let response = gw
        .expect_ok(gw.request(Method::GET, "/system/logs").query(&query))
        .await?;
    let mut stream = response.bytes_stream();
    let mut pending = Vec::new();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.context("reading logs")?);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match output {
                Output::Json => std::io::stdout().write_all(&line)?,
                Output::Table => {
                    let l: LogLine = serde_json::from_slice(&line).context("reading a log line")?;
                    println!(
                        "{} {} {}",
                        l.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                        l.instance,
                        l.text
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
