//! `hark token …`: token and signing-key commands come in; calls to `/system/tokens` and
//! `/system/keys` go out, and their answers are printed (never a token, except the one
//! `create` just minted).

use std::process::ExitCode;

use reqwest::Method;
use serde::Deserialize;

use super::commands::{print_json, table};
use super::{Gateway, Output, TokenCommand};
use crate::auth::{scope, KeyInfo};
use crate::store::TokenRecord;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminRotated {
    path: String,
    id: String,
}

pub async fn run(gw: &Gateway, command: TokenCommand, output: Output) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            mut scopes,
            secrets,
            ttl,
            subject,
        } => {
            scopes.extend(
                secrets
                    .iter()
                    .map(|pattern| format!("{}{pattern}", scope::SECRETS_USE_PREFIX)),
            );
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
        }
        TokenCommand::List => {
            let tokens: Vec<TokenRecord> = gw.get("/system/tokens").await?;
            match output {
                Output::Json => print_json(&tokens)?,
                Output::Table => {
                    let mut t = table(&["ID", "SUBJECT", "SCOPES", "ISSUED", "EXPIRES", "REVOKED"]);
                    let time = |t: chrono::DateTime<chrono::Utc>| {
                        t.format("%Y-%m-%d %H:%M:%S").to_string()
                    };
                    for token in tokens {
                        let subject = if token.admin_file {
                            format!("{} (admin-token file)", token.subject.escape_debug())
                        } else {
                            token.subject.escape_debug().to_string()
                        };
                        t.add_row(vec![
                            token.id,
                            subject,
                            token.scopes.join(","),
                            time(token.issued_at),
                            token.expires_at.map_or_else(|| "never".to_owned(), time),
                            token.revoked_at.map_or_else(|| "-".to_owned(), time),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let path = format!("/system/tokens/{}", urlencode(&id));
            let record: TokenRecord = gw
                .expect_ok(gw.request(Method::DELETE, &path))
                .await?
                .json()
                .await?;
            match output {
                Output::Json => print_json(&record)?,
                Output::Table => println!("revoked token {}", record.id),
            }
        }
        TokenCommand::RotateAdmin => {
            let answer: AdminRotated = gw
                .expect_ok(gw.request(Method::POST, "/system/tokens/rotate-admin"))
                .await?
                .json()
                .await?;
            println!(
                "new admin token {} written to {} (on the gateway's host); the old one is revoked",
                answer.id, answer.path
            );
        }
        TokenCommand::Keys => print_keys(gw.get("/system/keys").await?, output)?,
        TokenCommand::RotateKey => {
            let keys: Vec<KeyInfo> = gw
                .expect_ok(gw.request(Method::POST, "/system/keys"))
                .await?
                .json()
                .await?;
            print_keys(keys, output)?;
        }
        TokenCommand::RetireKey { kid } => {
            let path = format!("/system/keys/{}", urlencode(&kid));
            let keys: Vec<KeyInfo> = gw
                .expect_ok(gw.request(Method::DELETE, &path))
                .await?
                .json()
                .await?;
            print_keys(keys, output)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_keys(keys: Vec<KeyInfo>, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&keys)?,
        Output::Table => {
            let mut t = table(&["KID", "USE"]);
            for key in keys {
                let role = if key.current {
                    "signs and verifies"
                } else {
                    "verifies"
                };
                t.add_row(vec![key.kid, role.to_owned()]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
