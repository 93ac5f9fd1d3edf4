//! The `hark` command line: one clap [`Command`] enum, one function per subcommand.
//! `up` runs the gateway; the others talk to a running gateway over HTTP.

mod alexa;
#[cfg(feature = "bench")]
mod bench;
pub(crate) mod build;
mod client;
mod commands;
mod doctor;
mod new;
mod tokens;
mod up;
mod watchdog;
mod webhook;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use client::Gateway;

use crate::telemetry::logs::LogFormat;

/// Default data directory, relative to where `hark` runs.
pub const DEFAULT_DATA_DIR: &str = ".hark";
/// Default gateway address for the client commands.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

/// Hark: voice commands, chat commands, webhooks and schedules in; small functions run;
/// spoken or written replies out.
#[derive(Debug, Parser)]
#[command(name = "hark", version, about)]
pub struct Cli {
    /// Gateway to talk to.
    #[arg(long, global = true, env = "HARK_GATEWAY", default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    /// API token; defaults to the admin token in the data directory.
    #[arg(long, global = true, env = "HARK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory (store, keys, secrets, admin token).
    #[arg(long, global = true, env = "HARK_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Output format of the client commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Format of the log lines on stderr (`json`: one object per line).
    #[arg(long, global = true, value_enum, env = crate::telemetry::logs::ENV_LOG_FORMAT, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `hark bench` in a binary built without the harness: whatever it is given, it says how
/// to build one with it.
#[cfg(not(feature = "bench"))]
#[derive(Debug, clap::Args)]
pub struct NoBench {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

/// The global flags only the commands that talk to a gateway (or own a data directory) use.
const GATEWAY_FLAGS: &[&str] = &["gateway", "token", "data"];
/// Commands that work offline, by their path: their help does not offer [`GATEWAY_FLAGS`].
const OFFLINE_COMMANDS: &[&[&str]] = &[
    &["webhook", "verify"],
    &["alexa", "verify"],
    &["skill", "export"],
    &["new"],
    &["completions"],
    &["man"],
    &["schema"],
    &["bench"],
];

impl Cli {
    /// The command line as users see it: [`Cli`]'s, with the gateway flags hidden from
    /// the offline commands (clap makes global flags every subcommand's).
    pub fn command_line() -> clap::Command {
        let mut command = <Cli as clap::CommandFactory>::command();
        for path in OFFLINE_COMMANDS {
            command = hide_gateway_flags(command, path);
        }
        command
    }

    /// Parses the process's arguments (exits with clap's message on an error).
    pub fn parse_args() -> Self {
        let matches = Self::command_line().get_matches();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// `command` with [`GATEWAY_FLAGS`] hidden on the subcommand at `path`: a hidden flag of
/// its own of each name, which keeps clap from giving it the global one.
fn hide_gateway_flags(command: clap::Command, path: &[&str]) -> clap::Command {
    match path {
        [] => GATEWAY_FLAGS.iter().fold(command, |c, flag| {
            c.arg(clap::Arg::new(*flag).long(*flag).num_args(1).hide(true))
        }),
        [first, rest @ ..] => command.mut_subcommand(*first, |c| hide_gateway_flags(c, rest)),
    }
}

/// How client commands print what they get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

// Parsed once per run: the size of `up`'s many flags costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway with the embedded defaults (process provider, SQLite store).
    Up(Box<up::UpArgs>),
    /// Check what Hark depends on here (data directory, Chromium, Docker, secrets, clock,
    /// gateway, public URLs) and say how to fix each miss; exits 1 on any miss.
    Doctor(Box<doctor::DoctorArgs>),
    /// Deploy the functions of a stack file (all, or the one named).
    Deploy {
        /// Stack file.
        #[arg(short = 'f', long = "file", default_value = "hark.yml")]
        file: PathBuf,
        /// Deploy only this function.
        name: Option<String>,
    },
    /// List deployed functions.
    #[command(alias = "ls")]
    List,
    /// Show one function.
    Describe { name: String },
    /// Call a function with the body read from stdin.
    Invoke {
        name: String,
        /// Extra header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Query string, without `?`.
        #[arg(long)]
        query: Option<String>,
        /// HTTP method.
        #[arg(long, default_value = "POST")]
        method: String,
        /// Path below /function/NAME.
        #[arg(long, default_value = "")]
        path: String,
        /// Queue the call and return at once (prints its call id).
        #[arg(long = "async")]
        asynchronous: bool,
        /// With --async: where the result is POSTed when the call is done.
        #[arg(long, requires = "asynchronous")]
        callback: Option<String>,
    },
    /// Remove a function.
    #[command(alias = "rm")]
    Remove { name: String },
    /// Set a function's replica count.
    Scale { name: String, replicas: u32 },
    /// Print a function's log lines.
    Logs {
        name: String,
        /// Keep printing new lines.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Only lines at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
    /// Manage secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Telegram bots: register a bot's webhook.
    #[command(subcommand)]
    Telegram(TelegramCommand),
    /// List recent invocations (`activations show CALL_ID` for one, `activations replay
    /// CALL_ID` to run one again).
    Activations {
        /// Only this function's.
        #[arg(long)]
        function: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(subcommand)]
        show: Option<ActivationsCommand>,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The async queue: pending, running, done and dead-lettered calls.
    Queue {
        #[command(subcommand)]
        command: Option<QueueCommand>,
    },
    /// Scheduled functions: next tick and recent runs.
    Schedules,
    /// Measure the gateway's paths next to their baselines, in one run.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Measure the gateway's paths (needs a hark built with `--features bench`).
    #[cfg(not(feature = "bench"))]
    Bench(NoBench),
    /// The bare servers `hark bench` measures against (its own processes).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchBaseline(bench::baseline::BaselineArgs),
    /// Diagnose webhook deliveries (offline).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Alexa skills: export the interaction model.
    #[command(subcommand)]
    Skill(alexa::SkillCommand),
    /// Say something to a skill on the running gateway and print what Alexa would say.
    Say(alexa::SayArgs),
    /// Alexa request diagnostics.
    #[command(subcommand)]
    Alexa(alexa::AlexaCommand),
    /// Build a function's container image (`hark/NAME:latest`) with the local engine.
    Build(build::BuildArgs),
    /// Serve a function over HTTP on port 8080: the entrypoint inside function images.
    Watchdog(watchdog::WatchdogArgs),
    /// Create a function from a template (`functions/NAME/`) and add it to `hark.yml`.
    New(new::NewArgs),
    /// Print a shell completion script: `hark completions bash > /etc/bash_completion.d/hark`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print hark's man page (roff): `hark man > /usr/local/share/man/man1/hark.1`.
    Man,
    /// Print the JSON Schema of `hark.yml` (editors complete and check the file with it).
    Schema,
    /// Make the key files of gateways that will share one database, before any of them
    /// starts (offline): `jwt.key` (signs API tokens), `admin-token` (signed with it) and
    /// `secret.key` (seals secrets), each mode 0600. Give every gateway the same files, e.g.
    /// as Swarm secrets in its data directory; the first to start records the admin token.
    Keys {
        /// The directory to write them in (made if missing); files already there are never
        /// replaced.
        dir: PathBuf,
    },
    /// Runs chromedriver for the gateway's browser pool, and kills its browsers when the
    /// gateway dies (the gateway's own process).
    #[command(hide = true)]
    BrowserGuard(crate::browser::guard::GuardArgs),
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued calls, newest first.
    #[command(alias = "ls")]
    List {
        /// Only calls in this state: pending, running, done, dead, cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Only this function's calls.
        #[arg(long)]
        function: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// List dead-lettered calls.
    Dead,
    /// Queue a dead-lettered call again.
    Retry { call_id: String },
    /// Cancel a call that has not started.
    Cancel { call_id: String },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Check a captured delivery's signature and explain why it passes or fails.
    Verify(webhook::VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum TelegramCommand {
    /// Register BOT's webhook with Telegram (`setWebhook`) under a fresh secret token, which
    /// the gateway stores as the route's `secret_token` secret and checks from then on.
    SetWebhook {
        /// The bot: its route name under `channels.telegram` in hark.yml.
        bot: String,
        /// The public HTTPS URL Telegram is to call, e.g. https://hark.example.com/telegram/BOT.
        #[arg(long)]
        url: String,
        /// Drop the updates Telegram holds for the bot.
        #[arg(long)]
        drop_pending_updates: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret; the value comes from --value, --from-file or stdin.
    Create(SecretValue),
    /// Replace a secret's value.
    Update(SecretValue),
    /// List secret names.
    #[command(alias = "ls")]
    List,
    /// Remove a secret.
    #[command(alias = "rm")]
    Remove { name: String },
}

#[derive(Debug, clap::Args)]
pub struct SecretValue {
    pub name: String,
    /// The value (visible in the shell's history; prefer --from-file or stdin).
    #[arg(long, conflicts_with = "from_file")]
    pub value: Option<String>,
    /// Read the value from a file.
    #[arg(long)]
    pub from_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ActivationsCommand {
    /// One activation; a failed browser call's last page is saved as a PNG.
    Show {
        /// The call id.
        id: String,
        /// Where to save the screenshot [default: ./CALL_ID.png].
        #[arg(long)]
        screenshot: Option<PathBuf>,
    },
    /// Run an activation's kept request again as a new call, and show how the answer
    /// differs (channel replies are not sent again).
    Replay {
        /// The call id.
        id: String,
        /// Run it against this function instead.
        #[arg(long)]
        function: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token with the given scopes (prints the token; `-o json` adds its id).
    Create {
        /// Scope to grant (repeatable): admin, functions:read, functions:write,
        /// functions:invoke, secrets:read, secrets:write, secrets:use, tokens:write.
        /// Deploying a function that names a secret needs secrets:use (any secret) or
        /// --secret.
        #[arg(long = "scope", required_unless_present = "secrets")]
        scopes: Vec<String>,
        /// A secret, or a prefix ending in `*` (`hr-*`), that deployments made with
        /// the token may name (repeatable): grants the scope `secrets:use:PATTERN`.
        #[arg(long = "secret", value_name = "PATTERN")]
        secrets: Vec<String>,
        /// Lifetime: 30m, 12h, 7d (at most 365d), or `never` [default: 24h].
        #[arg(long)]
        ttl: Option<String>,
        /// Who the token is for.
        #[arg(long)]
        subject: Option<String>,
    },
    /// List the tokens the gateway minted: id, subject, scopes, expiry, revocation.
    #[command(alias = "ls")]
    List,
    /// Revoke a token by its id: it answers 401 at once, and its UI sessions end.
    Revoke { id: String },
    /// Replace the admin token (the old one is revoked) and print where the new one is.
    RotateAdmin,
    /// List the signing keys' ids.
    Keys,
    /// Make a new signing key current; tokens of the old one still verify.
    RotateKey,
    /// Retire an older signing key: every token it signed answers 401.
    RetireKey { kid: String },
}

/// Runs the parsed command line and returns the process's exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Up(args) => up::run(*args, &cli.data).await,
        Command::Doctor(args) => doctor::run(*args, &cli.gateway, &cli.data, cli.output).await,
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench::run(args).await,
        #[cfg(feature = "bench")]
        Command::BenchBaseline(args) => bench::baseline::run(args).await,
        #[cfg(not(feature = "bench"))]
        Command::Bench(_) => Err(anyhow::anyhow!(
            "this hark was built without its benchmark harness (it keeps the gateway small); \
             build one with it: cargo build --release --workspace --features bench"
        )),
        Command::Webhook(WebhookCommand::Verify(args)) => webhook::verify(args, cli.output),
        Command::Skill(command) => alexa::skill(command).await,
        Command::Say(args) => alexa::say(args, &cli.gateway, cli.token, &cli.data).await,
        Command::Alexa(command) => alexa::alexa(command, cli.output).await,
        Command::Build(args) => build::run(args).await,
        Command::Watchdog(args) => watchdog::run(args).await,
        Command::BrowserGuard(args) => crate::browser::guard::run(args).await,
        Command::New(args) => new::run(args),
        Command::Completions { shell } => {
            // Written out here: clap_complete panics when stdout is closed early.
            let mut script = Vec::new();
            let mut command = Cli::command_line();
            clap_complete::generate(shell, &mut command, "hark", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into)
        }
        Command::Schema => {
            let schema = crate::stack::Stack::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { dir } => make_keys(&dir).map(|made| {
            for path in made {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }),
        Command::Man => {
            let page = clap_mangen::Man::new(Cli::command_line());
            page.render(&mut std::io::stdout())
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into)
        }
        command => commands::run(command, &cli.gateway, cli.token, &cli.data, cli.output).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `hark keys DIR`: the shared key files, made in `dir`; their paths.
fn make_keys(dir: &Path) -> anyhow::Result<[PathBuf; 3]> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    Ok(crate::auth::make_shared_keys(dir)?)
}
