//! `hark doctor`: checks what Hark depends on on this machine and says how to fix each
//! miss — the data directory, Chromium and ChromeDriver, the Docker engine and its swarm,
//! the secrets the stack file names, the clock, the gateway at its URL and the public URLs
//! the channels expect. Exits non-zero when anything is missing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::browser::{BrowserArgs, BrowserConfig, BrowserMode};
// reqwest's own message names only the URL: the causes say what went wrong.
use crate::provider::upstream::describe;
use crate::stack::Stack;

use super::Output;
use crate::gateway::{DatabaseUrl, ProviderKind, StoreChoice, StoreConfig};

/// How far the clock may be off: Alexa refuses requests signed more than 150 s away.
const MAX_SKEW: Duration = Duration::from_secs(150);

/// How long a probe (the engine, the gateway, the time source) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `hark doctor`'s flags.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Stack file whose functions, secrets and channels are checked (skipped when absent).
    #[arg(short = 'f', long = "file", default_value = "hark.yml")]
    file: PathBuf,
    /// The backend the gateway runs functions on [default: the stack file's, else process].
    #[arg(long, env = "HARK_PROVIDER", value_enum)]
    provider: Option<ProviderKind>,
    /// The public HTTPS URL Alexa, Slack and GitHub call (as `hark up --public-url`).
    #[arg(long, env = "HARK_PUBLIC_URL")]
    public_url: Option<String>,
    /// The data directory's free-space floor (as `hark up --min-free-disk`).
    #[arg(long, env = "HARK_MIN_FREE_DISK", default_value = "256MiB", value_parser = crate::function::parse_bytes)]
    min_free_disk: u64,
    /// A web server whose `Date` header the clock is compared with.
    #[arg(
        long,
        env = "HARK_TIME_URL",
        default_value = "https://api.amazonalexa.com/"
    )]
    time_url: String,
    /// The store the gateway keeps its state in (as `hark up --store`) [default: the stack
    /// file's `store:`, else sqlite, DATA/hark.db].
    #[arg(long, env = "HARK_STORE", hide_env_values = true)]
    store: Option<String>,
    /// A file holding the store's URL, instead of `--store` (as `hark up --store-file`).
    #[arg(long, env = "HARK_STORE_FILE", conflicts_with = "store")]
    store_file: Option<PathBuf>,
    /// TESTING AID: the clock checked starts at this time (as `hark up --clock`).
    #[arg(long, alias = "test-clock", env = "HARK_TEST_CLOCK", hide = true)]
    clock: Option<String>,
    #[command(flatten)]
    browser: BrowserArgs,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    /// Worth knowing, but Hark works as configured.
    Warn,
    /// Hark will not work as configured.
    Miss,
}

/// One check: what was found and, unless all is well, what to do.
#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn miss(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Miss,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check, prints them, and exits 1 when any is a miss.
pub async fn run(
    args: DoctorArgs,
    gateway: &str,
    data: &Path,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let (stack, mut checks) = match args.file.exists() {
        false => (None, Vec::new()),
        true => match Stack::load(&args.file) {
            Ok(stack) => (Some(stack), Vec::new()),
            Err(e) => (
                None,
                vec![Check::miss(
                    "stack",
                    e.to_string(),
                    format!("correct {}", args.file.display()),
                )],
            ),
        },
    };
    let provider = ProviderKind::choose(
        args.provider,
        stack.as_ref().and_then(|s| s.provider.as_deref()),
    );
    let browser = args.browser.apply(
        stack
            .as_ref()
            .and_then(|s| s.browser.clone())
            .unwrap_or_default(),
    );
    checks.push(data_dir(data, args.min_free_disk));
    let store = super::up::store_location(args.store.clone(), args.store_file.as_deref()).and_then(
        |location| {
            StoreChoice {
                location,
                ..StoreChoice::default()
            }
            .resolve(stack.as_ref().and_then(|s| s.store.as_deref()))
        },
    );
    let stored_secrets = match store {
        Ok(StoreConfig::Sqlite { .. }) => stored_secret_names(&data.join("hark.db")),
        Ok(StoreConfig::Postgres { url, .. }) => {
            let (check, names) = postgres(&url).await;
            checks.push(check);
            names
        }
        Err(e) => {
            checks.push(Check::miss(
                "store",
                format!("{e:#}"),
                "give --store (or HARK_STORE) sqlite or postgres://USER@HOST:PORT/DB, or --store-file a file holding one",
            ));
            Vec::new()
        }
    };
    checks.push(browsers(&browser));
    checks.extend(docker(provider).await);
    if let Some(stack) = &stack {
        checks.push(secrets(stack, &stored_secrets));
    }
    checks.push(clock(&args).await);
    checks.push(gateway_answers(gateway).await);
    if let Some(stack) = &stack {
        checks.extend(channels(stack, args.public_url.as_deref()));
    }

    let healthy = checks.iter().all(|c| c.status != Status::Miss);
    match output {
        Output::Json => println!("{}", serde_json::json!({ "ok": healthy, "checks": checks })),
        Output::Table => print_table(&checks),
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(checks: &[Check]) {
    for check in checks {
        let status = match check.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Miss => "MISS",
        };
        println!("{status:<5} {:<9} {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            println!("{:<15} fix: {fix}", "");
        }
    }
    let misses = checks.iter().filter(|c| c.status == Status::Miss).count();
    match misses {
        0 => println!("\nno problem found"),
        n => println!("\n{n} problem(s) to fix"),
    }
}

/// The data directory: there (or creatable), writable, its keys private, room on its disk.
fn data_dir(data: &Path, min_free: u64) -> Check {
    const NAME: &str = "data";
    let shown = data.display();
    // The directory, or the nearest existing parent it would be created in.
    let existing = data
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    if !existing.is_dir() {
        return Check::miss(
            NAME,
            format!("{shown}: {} is not a directory", existing.display()),
            "choose another data directory with --data / HARK_DATA",
        );
    }
    let probe = existing.join(format!(".hark-doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"") {
        let what = if existing == data {
            format!("{shown} is not writable ({e})")
        } else {
            format!("{shown} cannot be created in {} ({e})", existing.display())
        };
        return Check::miss(
            NAME,
            what,
            "run hark as the directory's owner, or choose another one with --data / HARK_DATA",
        );
    }
    let _ = std::fs::remove_file(&probe);
    let free = crate::dispatch::queue::free_disk(existing).unwrap_or(u64::MAX);
    if free < min_free {
        return Check::miss(
            NAME,
            format!(
                "{shown}: {} MiB free, under the floor of {} MiB: async calls would answer 503",
                free >> 20,
                min_free >> 20
            ),
            "free disk space, or lower --min-free-disk",
        );
    }
    // Keys and the store readable by other users, through a directory they may enter.
    let mode = |path: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    let mut exposed = Vec::new();
    if existing == data && mode(data) & 0o011 != 0 {
        for key in [
            "jwt.key",
            "secret.key",
            "admin-token",
            "webdriver.key",
            "hark.db",
        ] {
            if mode(&data.join(key)) & 0o044 != 0 {
                exposed.push(key);
            }
        }
    }
    if !exposed.is_empty() {
        return Check::miss(
            NAME,
            format!("{shown}: {} readable by other users", exposed.join(", ")),
            format!(
                "chmod 700 {}; chmod 600 {}",
                data.display(),
                exposed
                    .iter()
                    .map(|k| data.join(k).display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    }
    let state = if existing == data {
        "writable"
    } else {
        "will be created"
    };
    Check::ok(NAME, format!("{shown}: {state}, {} MiB free", free >> 20))
}

/// Chromium and ChromeDriver: both run, and their major versions match.
fn browsers(config: &BrowserConfig) -> Check {
    const NAME: &str = "browser";
    const INSTALL: &str = "apt-get install chromium chromium-driver (or set --chromium / --chromedriver, HARK_CHROMIUM / HARK_CHROMEDRIVER)";
    if config.mode == BrowserMode::Off {
        return Check::ok(NAME, "browser pool off (browser.mode: off)");
    }
    let chromium = version_of(&config.chromium);
    let driver = version_of(&config.chromedriver);
    match (chromium, driver) {
        (Err(e), _) => Check::miss(
            NAME,
            format!("Chromium {}: {e}", config.chromium.display()),
            INSTALL,
        ),
        (_, Err(e)) => Check::miss(
            NAME,
            format!("ChromeDriver {}: {e}", config.chromedriver.display()),
            INSTALL,
        ),
        (Ok(chromium), Ok(driver)) => {
            let (c, d) = (major(&chromium), major(&driver));
            if c.is_some() && c == d {
                Check::ok(NAME, format!("{chromium}; {driver}"))
            } else {
                Check::miss(
                    NAME,
                    format!("versions differ: {chromium}; {driver}"),
                    "install the ChromeDriver of the same major version as Chromium (Debian: chromium and chromium-driver from the same release)",
                )
            }
        }
    }
}

/// The first line `program --version` prints.
fn version_of(program: &Path) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_owned(),
            _ => e.to_string(),
        })?;
    if !output.status.success() {
        return Err(format!("--version failed ({})", output.status));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

/// The major version in a `--version` line: the first number followed by a dot.
fn major(version: &str) -> Option<u32> {
    version
        .split_whitespace()
        .find_map(|word| word.split_once('.')?.0.parse().ok())
}

/// The Docker engine (its API version) and swarm state; misses only for the providers
/// that need them.
async fn docker(provider: ProviderKind) -> Vec<Check> {
    let needed = matches!(provider, ProviderKind::Docker | ProviderKind::Swarm);
    let engine = async {
        let docker = crate::provider::docker::connect()
            .await
            .map_err(|e| e.to_string())?;
        let version = docker.version().await.map_err(|e| e.to_string())?;
        let info = docker.info().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((version, info))
    };
    let engine = tokio::time::timeout(PROBE_TIMEOUT, engine)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")));
    let (version, info) = match engine {
        Ok(found) => found,
        Err(e) => {
            let fix = "start the engine (systemctl start docker), or point DOCKER_HOST at it";
            let detail = format!("engine unreachable: {e}");
            return vec![if needed {
                Check::miss("docker", detail, fix)
            } else {
                Check::warn(
                    "docker",
                    format!("{detail} (only the docker and swarm providers need it)"),
                    fix,
                )
            }];
        }
    };
    let mut checks = vec![Check::ok(
        "docker",
        format!(
            "engine {} speaking API {}",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ),
    )];
    let state = info
        .swarm
        .and_then(|s| s.local_node_state)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let swarm = match (state.as_str(), provider) {
        ("active", _) => Check::ok("swarm", "this engine is in a swarm"),
        (state, ProviderKind::Swarm) => Check::miss(
            "swarm",
            format!("swarm state {state:?}: the swarm provider needs an active swarm"),
            "docker swarm init (or join this engine to the swarm)",
        ),
        (state, _) => Check::ok(
            "swarm",
            format!("swarm state {state:?} (only the swarm provider needs one)"),
        ),
    };
    checks.push(swarm);
    checks
}

/// Every secret the stack file names, in the store or in `HARK_SECRET_<NAME>`, or one
/// that `hark up` generates (`secrets: NAME: {generate: true}`).
fn secrets(stack: &Stack, stored: &[String]) -> Check {
    const NAME: &str = "secrets";
    let mut named: Vec<String> = stack
        .functions
        .iter()
        .flat_map(|f| f.secrets.iter().cloned())
        .collect();
    let channels = &stack.channels;
    named.extend(
        channels
            .slack
            .values()
            .flat_map(|r| r.signing_secrets.iter().cloned()),
    );
    named.extend(
        channels
            .github
            .values()
            .flat_map(|r| r.webhook_secrets.iter().cloned()),
    );
    named.extend(
        channels
            .hooks
            .values()
            .flat_map(|r| r.standard_webhooks_secrets.iter().cloned()),
    );
    named.sort();
    named.dedup();
    if named.is_empty() {
        return Check::ok(NAME, "the stack file names no secret");
    }
    let missing: Vec<&String> = named
        .iter()
        .filter(|name| {
            !stored.contains(name)
                && !stack.generated_secrets.contains(name)
                && std::env::var_os(crate::channels::common::secrets::env_name(name)).is_none()
        })
        .collect();
    if missing.is_empty() {
        return Check::ok(NAME, format!("all {} named secrets are set", named.len()));
    }
    let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    Check::miss(
        NAME,
        format!("not set: {}", list.join(", ")),
        format!(
            "hark secret create {} (or start hark up with {} set)",
            list[0],
            crate::channels::common::secrets::env_name(list[0])
        ),
    )
}

/// The names of the secrets in the store at `db`, read without opening it for writing.
fn stored_secret_names(db: &Path) -> Vec<String> {
    let Ok(db) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let names = db.prepare("SELECT name FROM secrets").and_then(|mut stmt| {
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()
    });
    names.unwrap_or_default()
}

/// A PostgreSQL store: reachable, and its schema one this Hark can use; with the names
/// of the secrets it holds.
async fn postgres(url: &DatabaseUrl) -> (Check, Vec<String>) {
    const NAME: &str = "store";
    let fix = "start PostgreSQL, or correct --store, HARK_STORE, the file --store-file (HARK_STORE_FILE) names, or store: in hark.yml";
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(url.expose(), tokio_postgres::NoTls),
    )
    .await;
    let client = match connected {
        Ok(Ok((client, connection))) => {
            tokio::spawn(connection);
            client
        }
        Ok(Err(e)) => {
            let e = crate::store::postgres::describe(&e);
            return (Check::miss(NAME, format!("{url}: {e}"), fix), Vec::new());
        }
        Err(_) => {
            let detail = format!("{url}: no answer in 5 s");
            return (Check::miss(NAME, detail, fix), Vec::new());
        }
    };
    let ours = crate::store::postgres::SCHEMA_VERSION;
    let check = match client
        .query_opt("SELECT version FROM hark_schema", &[])
        .await
    {
        Ok(Some(row)) if row.get::<_, i64>(0) > ours => Check::miss(
            NAME,
            format!(
                "{url}: schema version {} is newer than this Hark's ({ours})",
                row.get::<_, i64>(0)
            ),
            "upgrade this Hark to the version the other gateways run",
        ),
        Ok(Some(row)) => Check::ok(
            NAME,
            format!(
                "PostgreSQL at {url}, schema version {}",
                row.get::<_, i64>(0)
            ),
        ),
        // No table yet: the first `hark up` makes it.
        Ok(None) | Err(_) => Check::ok(
            NAME,
            format!("PostgreSQL at {url}: empty, the first hark up makes its tables"),
        ),
    };
    let names = match client.query("SELECT name FROM secrets", &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(_) => Vec::new(),
    };
    (check, names)
}

/// This machine's clock against the `Date` of a web server: Alexa refuses requests signed
/// more than 150 s from its own time.
async fn clock(args: &DoctorArgs) -> Check {
    const NAME: &str = "clock";
    let ours = match &args.clock {
        None => Utc::now(),
        Some(text) => match crate::clock::parse_start(text) {
            Some(at) => at,
            None => {
                return Check::miss(
                    NAME,
                    format!("--clock {text:?} is neither an RFC 3339 time nor unix seconds"),
                    "unset HARK_TEST_CLOCK",
                )
            }
        },
    };
    let fix_source = "or name a reachable server with --time-url / HARK_TIME_URL";
    let theirs = match server_date(&args.time_url).await {
        Ok(date) => date,
        Err(e) => {
            return Check::warn(
                NAME,
                format!("not compared: {} gave no date ({e})", args.time_url),
                format!("check the network, {fix_source}"),
            )
        }
    };
    let skew = (ours - theirs).num_seconds();
    let detail = format!(
        "{} s {} {}",
        skew.abs(),
        if skew >= 0 { "ahead of" } else { "behind" },
        args.time_url
    );
    if skew.unsigned_abs() > MAX_SKEW.as_secs() {
        Check::miss(
            NAME,
            format!("{detail}: Alexa refuses requests more than 150 s off"),
            "synchronise the clock (timedatectl set-ntp true, or install chrony)",
        )
    } else {
        Check::ok(NAME, detail)
    }
}

/// The `Date` header `url` answers with.
async fn server_date(url: &str) -> Result<DateTime<Utc>, String> {
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.head(url).send().await.map_err(|e| describe(&e))?;
    let date = response
        .headers()
        .get(http::header::DATE)
        .ok_or("no Date header")?
        .to_str()
        .map_err(|e| e.to_string())?;
    DateTime::parse_from_rfc2822(date)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("Date {date:?}: {e}"))
}

/// Whether a gateway answers `/healthz` at `gateway`.
async fn gateway_answers(gateway: &str) -> Check {
    const NAME: &str = "gateway";
    let url = format!("{}/healthz", gateway.trim_end_matches('/'));
    let answer = async {
        let client = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let response = client.get(&url).send().await.map_err(|e| describe(&e))?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(format!("answered {status}")),
        }
    };
    match answer.await {
        Ok(()) => Check::ok(NAME, format!("{gateway} answers")),
        Err(e) => Check::miss(
            NAME,
            format!("{gateway}: {e}"),
            "start it (hark up), or point --gateway / HARK_GATEWAY at it",
        ),
    }
}

/// The public URL each configured channel route expects its platform to call.
fn channels(stack: &Stack, public_url: Option<&str>) -> Vec<Check> {
    let mut paths = Vec::new();
    let skills_dir = stack
        .alexa
        .as_ref()
        .and_then(|a| a.skills.clone())
        .unwrap_or_else(|| PathBuf::from("skills"));
    if let Ok(skills) = crate::route::skills::Skill::load_dir(&skills_dir) {
        paths.extend(skills.iter().map(|s| format!("/alexa/{}", s.name)));
    }
    let routes = &stack.channels;
    paths.extend(routes.slack.keys().map(|app| format!("/slack/{app}")));
    paths.extend(routes.github.keys().map(|app| format!("/github/{app}")));
    paths.extend(routes.hooks.keys().map(|name| format!("/hooks/{name}")));
    if paths.is_empty() {
        return Vec::new();
    }
    let Some(public) = public_url else {
        return vec![Check::warn(
            "channels",
            format!("{} with no public URL set", paths.join(", ")),
            "Alexa, Slack and GitHub call a public HTTPS URL: put a TLS proxy in front and pass its URL with --public-url / HARK_PUBLIC_URL",
        )];
    };
    let public = public.trim_end_matches('/');
    let urls: Vec<String> = paths.iter().map(|p| format!("{public}{p}")).collect();
    if !public.starts_with("https://") {
        return vec![Check::miss(
            "channels",
            format!("{public} is not HTTPS: {}", urls.join(", ")),
            "Alexa, Slack and GitHub call only HTTPS endpoints: give the TLS proxy's https:// URL",
        )];
    }
    vec![Check::ok(
        "channels",
        format!("platforms call {}", urls.join(", ")),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_major_version_is_read_from_either_programs_line() {
        assert_eq!(
            major("Chromium 131.0.6778.139 built on Debian 12.8"),
            Some(131)
        );
        assert_eq!(
            major("ChromeDriver 131.0.6778.139 (abc-refs/branch-heads/6778@{#2})"),
            Some(131)
        );
        assert_eq!(major("no version here"), None);
    }
}
