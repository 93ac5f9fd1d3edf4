//! The `hr-portal` server: settings from the environment (and its password from a Hark
//! secret) in; the portal served on `127.0.0.1:$PORT` out. As a Hark function it runs in
//! HTTP mode and Hark sets `PORT`; standalone, `hr-portal --port 9000` works too.
//!
//! - `HR_PORTAL_USER` (default `ada`) and the password: the secret file `hr-portal-password`
//!   in `$HARK_SECRETS_DIR` (or `/var/openfaas/secrets`), else `HR_PORTAL_PASSWORD`.
//! - `HR_PORTAL_STORE`: the bookings file (default `hr-portal-bookings.json` in the
//!   function's own state directory `$HARK_STATE_DIR`, else in the working directory).
//! - `HR_PORTAL_ALLOWANCE`: days of annual leave (default 25).

use std::path::PathBuf;
use std::sync::Arc;

use hr_portal::{app, Config, Portal};

/// The secret holding the account's password.
const PASSWORD_SECRET: &str = "hr-portal-password";

fn secret(name: &str) -> Option<String> {
    let dirs = [
        std::env::var_os("HARK_SECRETS_DIR").map(PathBuf::from),
        Some(PathBuf::from("/var/openfaas/secrets")),
    ];
    dirs.into_iter()
        .flatten()
        .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
        .map(|v| v.trim_end_matches(['\r', '\n']).to_owned())
}

fn fail(message: &str) -> ! {
    eprintln!("hr-portal: {message}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut port = std::env::var("PORT").ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next(),
            other => fail(&format!(
                "unknown argument {other:?} (usage: hr-portal [--port N])"
            )),
        }
    }
    let port: u16 = port
        .as_deref()
        .unwrap_or("8090")
        .parse()
        .unwrap_or_else(|_| fail("the port must be a number"));
    let password = secret(PASSWORD_SECRET)
        .or_else(|| std::env::var("HR_PORTAL_PASSWORD").ok())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            fail(&format!(
                "no password: give the function the secret {PASSWORD_SECRET} or set HR_PORTAL_PASSWORD"
            ))
        });
    let allowance = match std::env::var("HR_PORTAL_ALLOWANCE") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| fail("HR_PORTAL_ALLOWANCE must be a number of days")),
        Err(_) => 25.0,
    };
    let config = Config {
        store: std::env::var_os("HR_PORTAL_STORE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HARK_STATE_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join("hr-portal-bookings.json")
            }),
        user: std::env::var("HR_PORTAL_USER").unwrap_or_else(|_| "ada".to_owned()),
        password,
        allowance,
        today: Arc::new(|| chrono::Local::now().date_naive()),
    };
    let portal = Portal::new(config).unwrap_or_else(|e| fail(&e.to_string()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| fail(&format!("cannot listen on port {port}: {e}")));
    eprintln!("hr-portal: listening on 127.0.0.1:{port}");
    if let Err(e) = axum::serve(listener, app(portal)).await {
        fail(&format!("server error: {e}"));
    }
}
