//! `hark bench`: measures each gateway path next to its own baseline in one run, and
//! prints requests/s, p50/p99 latency, the peak memory of the server under test, the
//! ratio to the baseline and the issue's target for it (#9). Figures are ratios because
//! the machine is shared and noisy. Load comes from wrk when it is installed (the same
//! generator for every row; see [`load`]), else from a built-in generator.
//!
//! - http mode: the bare axum echo server (`hark bench-baseline echo`, the ceiling) vs.
//!   the same server deployed as an HTTP-mode function and called through the gateway,
//!   which reaches it over its Unix socket (`hark.listen: socket`); then the same
//!   function on a loopback TCP port (`hark.listen: tcp`), the path before sockets.
//! - fork mode: a bare server spawning `cat` per request (`hark bench-baseline spawn`) vs.
//!   `cat` in fork mode through the gateway.
//! - channels: a Slack-signed slash command, a GitHub-signed `issues.opened` delivery (a
//!   new `X-GitHub-Delivery` per request: Hark drops redeliveries) and an Alexa-signed
//!   intent (certificate chain cached after the first request), each routed to the echo
//!   function, vs. the same function called unsigned at `/function/echo`. Signatures are
//!   made at the start of each measurement, inside the platforms' windows; an Alexa skill
//!   with `verify: false` is an extra row.
//! - async enqueue (committed before the 202) vs. the gateway's `/healthz`, on a gateway
//!   with `--durability normal`; then the enqueue and the Slack row again on a second
//!   gateway with `--durability full` (each commit synced to disk before its answer),
//!   each next to its `normal` row.
//! - memory: the gateway's resident memory idle (after start and deploys) and its peak
//!   under `--memory-connections` (256) connections.
//! - cold start: scale-from-zero of the HTTP-mode echo function (first call after scaling
//!   to zero) next to the function's own start-up (started by hand until it answers), and
//!   deploy → first response in HTTP and fork mode; the bench's gateway runs its functions
//!   in the process sandbox (the default), so the fork row and these are sandboxed figures.
//! - with `--browser`: a session leased from the warm pool vs a cold one, and a WebDriver
//!   command (`GET …/title`) through the pool, where the function's capability is checked,
//!   vs the same command straight to a ChromeDriver of the bench's own.
//! - with `--booking`: the "book a day off" flow end to end (a signed Alexa request →
//!   book-holiday → a browser from the pool → hr-portal), p50/p95 next to Alexa's 8 s.
//! - with `--docker`: the same functions on the docker provider, next to a bare container of
//!   the same image (`docker run` with the port published, no gateway), and the cold start
//!   (deploy → first response) of the process provider, the docker provider and the bare
//!   container, measured in the same run.
//! - with `--swarm` (implies `--docker`): the same again on the swarm provider (the engine
//!   must manage an active swarm), next to the same bare container.

pub(crate) mod baseline;
mod load;
mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::channels::alexa::{testpki, verify};
use crate::function::parse_duration;
use load::{Figures, Generator, GeneratorChoice, Target};

/// A JSON body of about 190 bytes, like a small bot event.
const BODY: &str = r#"{"type":"IntentRequest","requestId":"amzn1.echo-api.request.0000","intent":{"name":"DaysLeft","slots":{"year":{"name":"year","value":"2026"}}},"locale":"en-GB","user":"amzn1.ask.account.bench"}"#;

/// The longest measurement: a request signed at its start must stay inside Alexa's 150 s
/// window (Slack's is 5 minutes) until its end.
const MAX_PHASE: Duration = Duration::from_secs(120);

/// The function every channel row calls: the echo server, deployed in HTTP mode and
/// reached over its Unix socket.
const ECHO: &str = "echo";
/// The same echo server reached over a loopback TCP port.
const ECHO_TCP: &str = "echo-tcp";

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// How long each measurement runs (whole seconds with wrk; at most 2m).
    #[arg(long, default_value = "5s")]
    pub duration: String,
    /// Warm-up before each measurement (0s for none).
    #[arg(long, default_value = "1s")]
    pub warmup: String,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,
    /// Connections of the memory row: the gateway's peak resident memory under load.
    #[arg(long, default_value_t = 256)]
    pub memory_connections: usize,
    /// Load generator: wrk when it is on $PATH (the issue's reference figures were taken
    /// with it), else the built-in one.
    #[arg(long, value_enum, default_value_t = GeneratorChoice::Auto)]
    pub generator: GeneratorChoice,
    /// Also measure the docker provider and a bare container (needs the Docker Engine).
    #[arg(long)]
    pub docker: bool,
    /// Also measure the swarm provider (implies --docker; the engine must manage a swarm).
    #[arg(long)]
    pub swarm: bool,
    /// Cold starts measured per provider (the median is printed).
    #[arg(long, default_value_t = 5)]
    pub cold_starts: usize,
    /// Also measure the browser pool: leasing a warm session vs starting a cold one, and a
    /// WebDriver command through the pool (capability checked) vs straight to ChromeDriver
    /// (needs Chromium and ChromeDriver).
    #[arg(long)]
    pub browser: bool,
    /// Sessions measured each way with --browser.
    #[arg(long, default_value_t = 20)]
    pub browser_sessions: usize,
    /// Also time the "book a day off" flow end to end (needs Chromium, ChromeDriver and the
    /// hr-portal and book-holiday functions built): a signed Alexa BookDayOffIntent →
    /// book-holiday → a pooled browser → hr-portal, next to Alexa's 8 s deadline.
    #[arg(long)]
    pub booking: bool,
    /// Bookings timed with --booking.
    #[arg(long, default_value_t = 20)]
    pub booking_runs: usize,
    /// Also measure the Slack and durable enqueue rows on this PostgreSQL
    /// (`postgres://USER[:PASSWORD]@HOST:PORT/DB`), next to SQLite's in the same run. The
    /// bench creates a database of its own there (the user needs CREATEDB) and drops it.
    #[arg(long, value_name = "URL", hide_env_values = true)]
    pub store: Option<String>,
}

/// One measured row of the table.
pub(super) struct Row {
    name: String,
    figures: Figures,
    /// Peak resident memory of the server under test during the row, in KiB.
    rss_kib: Option<u64>,
    /// The row this one is compared with.
    baseline: Option<usize>,
    /// The issue's target for the ratio of req/s to the baseline's.
    goal: Option<f64>,
    /// Why the row was not measured: its probe got a wrong answer.
    failed: Option<String>,
}

/// A row's figures and the peak memory of its server, or why it was not measured.
type Measured = Result<(Figures, Option<u64>), String>;

/// Rounds of each of two rows measured in turn ([`Bench::paired_rows`]).
const PAIRED_ROUNDS: u32 = 5;

/// The rows of one run, in the order measured.
#[derive(Default)]
pub(super) struct Table {
    rows: Vec<Row>,
}

impl Table {
    /// Adds a row; its index, for rows compared with it.
    fn push(
        &mut self,
        name: impl Into<String>,
        measured: Measured,
        baseline: Option<usize>,
        goal: Option<f64>,
    ) -> usize {
        let (figures, rss_kib, failed) = match measured {
            Ok((figures, rss_kib)) => (figures, rss_kib, None),
            Err(why) => (Figures::default(), None, Some(why)),
        };
        self.rows.push(Row {
            name: name.into(),
            figures,
            rss_kib,
            baseline,
            goal,
            failed,
        });
        self.rows.len() - 1
    }

    /// The rows that could not be measured, with why.
    fn failures(&self) -> Vec<String> {
        let failed = self.rows.iter().enumerate();
        failed
            .filter_map(|(i, r)| {
                Some(format!(
                    "row {} ({}): {}",
                    i + 1,
                    r.name,
                    r.failed.as_ref()?
                ))
            })
            .collect()
    }

    fn ratio(&self, row: usize) -> Option<f64> {
        let base = self.rows[row].baseline?;
        Some(self.rows[row].figures.rate() / self.rows[base].figures.rate().max(1e-9))
    }

    fn print(&self) {
        println!(
            "{:>2} {:<50} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7} {:>11}",
            "#", "path", "req/s", "p50 ms", "p99 ms", "errors", "RSS MiB", "ratio", "target"
        );
        for (i, row) in self.rows.iter().enumerate() {
            if row.failed.is_some() {
                println!("{:>2} {:<50} {:>8}", i + 1, row.name, "FAILED");
                continue;
            }
            let f = &row.figures;
            let ratio = match (row.baseline, self.ratio(i)) {
                (Some(base), Some(r)) => format!("{r:.2}/{}", base + 1),
                _ => "base".to_owned(),
            };
            let target = match (row.goal, self.ratio(i)) {
                (Some(goal), Some(r)) => {
                    format!("≥{goal:.2} {}", if r >= goal { "met" } else { "MISS" })
                }
                _ => String::new(),
            };
            let rss = row
                .rss_kib
                .map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
            println!(
                "{:>2} {:<50} {:>8.0} {:>8.2} {:>8.2} {:>6} {:>7} {:>7} {:>11}",
                i + 1,
                row.name,
                f.rate(),
                ms(f.p50),
                ms(f.p99),
                f.errors,
                rss,
                ratio,
                target
            );
        }
    }
}

/// A target of the issue that is not a ratio of req/s, and what this run found.
struct Check {
    what: String,
    value: String,
    target: String,
    met: bool,
}

fn print_checks(checks: &[Check]) {
    println!(
        "{:<58} {:>12} {:>12} {:>5}",
        "target", "measured", "goal", ""
    );
    for c in checks {
        println!(
            "{:<58} {:>12} {:>12} {:>5}",
            c.what,
            c.value,
            c.target,
            if c.met { "met" } else { "MISS" }
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(times: &[Duration]) -> Duration {
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// How each row is measured.
pub(super) struct Bench {
    generator: Generator,
    /// For set-up, probes and control requests (never for load).
    client: reqwest::Client,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    /// Why the last probe failed; the next row (or pair of rows) is then not measured.
    probe_failed: std::sync::Mutex<Option<String>>,
}

impl Bench {
    /// Measures `target` from `connections` connections (default: `-c`) while `pid`
    /// serves it; with `pid`'s peak resident memory over the measurement.
    async fn row(
        &self,
        target: &Target,
        pid: Option<u32>,
        connections: Option<usize>,
    ) -> anyhow::Result<Measured> {
        if let Some(why) = self.probe_failure() {
            return Ok(Err(why));
        }
        if let Some(pid) = pid {
            memory::reset_peak(pid);
        }
        let figures = self
            .generator
            .measure(
                target,
                connections.unwrap_or(self.connections),
                self.warmup,
                self.duration,
            )
            .await
            .with_context(|| format!("measuring {}", target.url))?;
        Ok(Ok((figures, pid.and_then(memory::peak_kib))))
    }

    /// Why the last probe failed, taken (the next measurement is then not made) and said.
    fn probe_failure(&self) -> Option<String> {
        let why = self
            .probe_failed
            .lock()
            .map(|mut f| f.take())
            .unwrap_or_default()?;
        eprintln!("hark bench: not measured: {why}");
        Some(why)
    }

    /// Probes `base` and `test` (each a target and the pid serving it) with `expect`, then
    /// measures them in turn, [`PAIRED_ROUNDS`] rounds each of a fifth of `--duration` (at
    /// least a second), for a row held to within a few percent of its baseline. This VM's
    /// speed drifts by a tenth or more over seconds; two rows measured one after the other
    /// can put a slow spell on one of them, rounds in turn put it on both. Requests and
    /// time add up over the rounds; p50 and p99 are the medians of the rounds'. When
    /// either probe fails, neither is measured, each row saying why.
    async fn paired_rows(
        &self,
        base: (&Target, Option<u32>),
        test: (&Target, Option<u32>),
        expect: &str,
    ) -> anyhow::Result<(Measured, Measured)> {
        self.probe(base.0, expect).await;
        let base_failed = self.probe_failure();
        self.probe(test.0, expect).await;
        let test_failed = self.probe_failure();
        if base_failed.is_some() || test_failed.is_some() {
            let why = |own: Option<String>| {
                own.unwrap_or_else(|| "the row measured in turn with it failed its probe".into())
            };
            return Ok((Err(why(base_failed)), Err(why(test_failed))));
        }
        let round = (self.duration / PAIRED_ROUNDS).max(Duration::from_secs(1));
        let mut rounds: [Vec<Figures>; 2] = Default::default();
        for (target, pid) in [base, test] {
            if let Some(pid) = pid {
                memory::reset_peak(pid);
            }
            if !self.warmup.is_zero() {
                self.generator
                    .measure(target, self.connections, Duration::ZERO, self.warmup)
                    .await
                    .with_context(|| format!("warming up {}", target.url))?;
            }
        }
        for _ in 0..PAIRED_ROUNDS {
            for ((target, _), figures) in [base, test].into_iter().zip(&mut rounds) {
                let measured = self
                    .generator
                    .measure(target, self.connections, Duration::ZERO, round)
                    .await
                    .with_context(|| format!("measuring {}", target.url))?;
                figures.push(measured);
            }
        }
        let [base_rounds, test_rounds] = rounds;
        Ok((
            Ok((
                Figures::combine(&base_rounds),
                base.1.and_then(memory::peak_kib),
            )),
            Ok((
                Figures::combine(&test_rounds),
                test.1.and_then(memory::peak_kib),
            )),
        ))
    }

    /// Sends `target` once and checks that the answer is 2xx and contains `expect`: each
    /// row is checked to do what it says before it is measured.
    /// A failed probe is tried again a few times, 200 ms apart (the gateway may still be
    /// finishing the previous row's calls); then the next row (or pair of rows) is reported
    /// as failed.
    async fn probe(&self, target: &Target, expect: &str) {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.probe_once(target, expect).await {
                Ok(()) => return,
                Err(e) if tries >= 5 => {
                    if let Ok(mut failed) = self.probe_failed.lock() {
                        *failed = Some(format!("{e:#}"));
                    }
                    return;
                }
                Err(e) => {
                    eprintln!("hark bench: probe failed, trying again: {e:#}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn probe_once(&self, target: &Target, expect: &str) -> anyhow::Result<()> {
        let mut request = self
            .client
            .request(target.method.clone(), &target.url)
            .body(target.body.clone());
        for (name, value) in &target.headers {
            request = request.header(name, value);
        }
        if let Some(name) = &target.unique_header {
            request = request.header(name, format!("hark-bench-probe-{}", uuid::Uuid::new_v4()));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("probing {}", target.url))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() || !text.contains(expect) {
            bail!(
                "{} answered {status} without {expect:?}: {}",
                target.url,
                text.chars().take(300).collect::<String>()
            );
        }
        Ok(())
    }
}

/// The resident memory of a process, from `/proc/PID/status`.
mod memory {
    /// `VmRSS`, in KiB.
    pub fn rss_kib(pid: u32) -> Option<u64> {
        field(pid, "VmRSS:")
    }

    /// `VmHWM`: the peak since the process started or [`reset_peak`], in KiB.
    pub fn peak_kib(pid: u32) -> Option<u64> {
        field(pid, "VmHWM:")
    }

    /// Resets `VmHWM` to the current RSS (`echo 5 > /proc/PID/clear_refs`, Linux 4.0+); if
    /// that is refused, the peak is the peak since start.
    pub fn reset_peak(pid: u32) {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }

    fn field(pid: u32, name: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let duration = parse_duration(&args.duration).context("--duration")?;
    let warmup = parse_duration(&args.warmup).context("--warmup")?;
    if duration > MAX_PHASE || warmup > MAX_PHASE {
        bail!("--duration and --warmup are at most 2m: signed requests must stay inside Alexa's 150 s window");
    }
    let dir = tempfile_dir()?;
    let result = run_in(&args, duration, warmup, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    args: &BenchArgs,
    duration: Duration,
    warmup: Duration,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let connections = args.concurrency.max(1);
    let exe = std::env::current_exe()?;
    let cat = which::which("cat").context("cat is not on $PATH")?;
    let generator = Generator::choose(args.generator, dir)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(8)
        .build()?;
    let bench = Bench {
        generator,
        client,
        connections,
        warmup,
        duration,
        probe_failed: std::sync::Mutex::new(None),
    };
    eprintln!("hark bench: {}", bench.generator.describe(connections));
    eprintln!("hark bench: {duration:?} per measurement after {warmup:?} warm-up");

    // The function's own start-up, timed by hand; the last one started stays up as the
    // ceiling.
    let mut own_start = Vec::new();
    for _ in 0..args.cold_starts.max(1) {
        let started = Instant::now();
        let server = Server::start(&exe, "echo", dir, &bench.client).await?;
        own_start.push(started.elapsed());
        server.stop().await;
    }
    own_start.sort();
    let ceiling = Server::start(&exe, "echo", dir, &bench.client).await?;
    let spawner = Server::start(&exe, "spawn", dir, &bench.client).await?;

    let secrets = ChannelSecrets::new(format!("{}slack-late-replies", ceiling.url));
    let sink_host = url::Url::parse(&ceiling.url)?
        .host_str()
        .context("the echo server's URL has no host")?
        .to_owned();
    let sink_host = sink_host.as_str();
    eprintln!("hark bench: slash commands' late replies go to the run's echo server (each gateway allows {sink_host} with --egress-allow)");
    let alexa = AlexaBench::prepare(dir, Some(ECHO))?;
    let config = dir.join("bench.yml");
    std::fs::write(&config, stack_file(&exe, connections)?)?;
    let config = config.to_str().context("the bench's path is not UTF-8")?;
    let start = |data: PathBuf, extra: Vec<String>| {
        let (exe, env) = (&exe, secrets.env());
        async move {
            std::fs::create_dir_all(&data)?;
            let mut args = vec![
                "--provider",
                "process",
                "--config",
                config,
                "--egress-allow",
                sink_host,
            ];
            args.extend(extra.iter().map(String::as_str));
            Gateway::start_with_env(exe, &data, &args, &env).await
        }
    };
    let args_of = |extra: &[&str]| extra.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut gateway = start(dir.to_owned(), args_of(&["--durability", "normal"])).await?;
    // The same again committing with --durability full, in a data directory of its own.
    let mut full = start(dir.join("full"), args_of(&["--durability", "full"])).await?;
    // The same as the first, keeping no activation stories (what keeping them costs).
    let mut untold = start(
        dir.join("untold"),
        args_of(&["--durability", "normal", "--history-max-body", "0"]),
    )
    .await?;
    // And one telling every call's story, not a sample of those that went well.
    let mut told = start(
        dir.join("told"),
        args_of(&["--durability", "normal", "--history-story-rate", "all"]),
    )
    .await?;
    // And two on PostgreSQL, each in a database made for the run: committing as the first
    // and as `full` do, so that each is compared with SQLite at the same durability.
    let databases = match &args.store {
        Some(url) => Some((
            pg::BenchDatabase::create(url, "normal").await?,
            pg::BenchDatabase::create(url, "full").await?,
        )),
        None => None,
    };
    let mut pg = match &databases {
        Some((normal, full)) => {
            let on = |database: &pg::BenchDatabase, durability: &str| {
                let store = vec!["--store".into(), database.url.clone()];
                [store, args_of(&["--durability", durability])].concat()
            };
            Some((
                start(dir.join("pg-normal"), on(normal, "normal")).await?,
                start(dir.join("pg-full"), on(full, "full")).await?,
            ))
        }
        None => None,
    };
    let gateways = Gateways {
        normal: &gateway,
        full: &full,
        untold: &untold,
        told: &told,
        pg: pg.as_ref().map(|(normal, full)| (normal, full)),
    };
    let measured = measure_process(
        &bench, &exe, &gateways, &ceiling, &spawner, &cat, &secrets, &alexa, &own_start, args,
    )
    .await;
    gateway.stop().await;
    full.stop().await;
    untold.stop().await;
    told.stop().await;
    if let Some((normal, full)) = &mut pg {
        normal.stop().await;
        full.stop().await;
    }
    if let Some((normal, full)) = databases {
        normal.drop().await;
        full.drop().await;
    }
    ceiling.stop().await;
    spawner.stop().await;
    let (mut table, checks, mut cold) = measured?;

    if args.docker || args.swarm {
        let exe = std::env::current_exe()?;
        let hello = exe.with_file_name("hello");
        if !hello.exists() {
            bail!(
                "{} is missing: run `cargo build --workspace` (or --release) first",
                hello.display()
            );
        }
        let docker = docker_bench::DockerBench::start(&exe, &hello, dir, args.swarm).await?;
        let result = docker.run(&bench, args, &mut table).await;
        docker.cleanup().await;
        cold.extend(result?);
    }

    if args.browser {
        webdriver_rows(&bench, &exe, dir, &mut table).await?;
    }
    table.print();
    let failures = table.failures();
    for failure in &failures {
        println!("FAILED {failure}");
    }
    println!();
    print_checks(&checks);
    println!();
    println!(
        "{:<58} {:>9} {:>9} {:>9}",
        "cold start", "median ms", "min ms", "max ms"
    );
    for (name, times) in &cold {
        println!(
            "{:<58} {:>9.1} {:>9.1} {:>9.1}",
            name,
            ms(median(times)),
            ms(times[0]),
            ms(times[times.len() - 1])
        );
    }
    if args.browser {
        let (cold, warm) =
            browser_bench(&exe, dir, &bench.client, args.browser_sessions.max(1)).await?;
        let pct = |times: &[Duration], p: f64| {
            let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
            times[i].as_secs_f64() * 1000.0
        };
        println!();
        println!(
            "{:<58} {:>9} {:>9} {:>7}",
            format!("browser session via /webdriver (n={})", cold.len()),
            "p50 ms",
            "p95 ms",
            "ratio"
        );
        let base = pct(&cold, 0.5);
        for (name, times) in [
            ("cold: start Chromium + session (baseline)", &cold),
            ("warm: lease from the pool", &warm),
        ] {
            println!(
                "{:<58} {:>9.1} {:>9.1} {:>7.3}",
                name,
                pct(times, 0.5),
                pct(times, 0.95),
                pct(times, 0.5) / base
            );
        }
    }
    if args.booking {
        let runs = args.booking_runs.max(1);
        let times = booking_bench(&exe, dir, &bench.client, runs).await?;
        let in_time = times.iter().filter(|(_, booked)| *booked).count();
        let mut all: Vec<Duration> = times.iter().map(|(d, _)| *d).collect();
        all.sort();
        let pct = |p: f64| {
            let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
            all[i]
        };
        let deadline = crate::route::skills::ALEXA_DEADLINE;
        println!();
        println!(
            "{:<58} {:>9} {:>9} {:>9} {:>9}",
            format!("booking: Alexa → book-holiday → Chromium (n={runs})"),
            "p50 ms",
            "p95 ms",
            "max ms",
            "8 s / p95"
        );
        println!(
            "{:<58} {:>9.0} {:>9.0} {:>9.0} {:>9.2}",
            format!("signed BookDayOffIntent, booked in time: {in_time}/{runs}"),
            ms(pct(0.5)),
            ms(pct(0.95)),
            ms(all[all.len() - 1]),
            deadline.as_secs_f64() / pct(0.95).as_secs_f64()
        );
        println!(
            "{:<58} {:>9.0}",
            "Alexa's deadline (baseline)",
            ms(deadline)
        );
    }
    if !failures.is_empty() {
        eprintln!(
            "hark bench: {} row(s) could not be measured; see FAILED above",
            failures.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

type Cold = (String, Vec<Duration>);

/// The gateways of the process-provider rows: all serve the same stack file.
#[derive(Clone, Copy)]
struct Gateways<'a> {
    /// `--durability normal`, with activation stories (the defaults otherwise).
    normal: &'a Gateway,
    /// `--durability full`.
    full: &'a Gateway,
    /// `--durability normal` and `--history-max-body 0`: records without stories.
    untold: &'a Gateway,
    /// `--durability normal` and `--history-story-rate all`: every call's story.
    told: &'a Gateway,
    /// `--store postgres://…` (with `hark bench --store`), with `--durability normal` and
    /// with `full`, each on a database of its own.
    pg: Option<(&'a Gateway, &'a Gateway)>,
}

/// A check that keeping activation stories (by default: failed calls' and a sample of
/// the others') costs at most 10 % of a row's throughput: row `told` against row
/// `untold` (none kept), measured in the same run.
fn history_cost(table: &Table, what: &str, told: usize, untold: usize) -> Check {
    let (on, off) = (
        table.rows[told].figures.rate(),
        table.rows[untold].figures.rate(),
    );
    let cost = if off > 0.0 { 1.0 - on / off } else { f64::NAN };
    Check {
        what: format!(
            "{what}: what keeping stories costs (1 − row {} / row {})",
            told + 1,
            untold + 1
        ),
        value: format!("{:.1} %", cost * 100.0),
        target: "≤ 10 %".into(),
        met: cost <= 0.10,
    }
}

/// The durable enqueue goal on row `row`: at least 5,000 calls/s committed.
fn enqueue_check(table: &Table, what: &str, row: usize) -> Check {
    let rate = table.rows[row].figures.rate();
    Check {
        what: format!("{what} (row {})", row + 1),
        value: format!("{rate:.0}/s"),
        target: "≥ 5000/s".into(),
        met: rate >= 5000.0,
    }
}

/// The process-provider rows, the checks of the issue's targets and the cold starts.
#[allow(clippy::too_many_arguments)]
async fn measure_process(
    bench: &Bench,
    exe: &Path,
    gateways: &Gateways<'_>,
    ceiling: &Server,
    spawner: &Server,
    cat: &Path,
    secrets: &ChannelSecrets,
    alexa: &AlexaBench,
    own_start: &[Duration],
    args: &BenchArgs,
) -> anyhow::Result<(Table, Vec<Check>, Vec<Cold>)> {
    let client = &bench.client;
    let Gateways {
        normal: gateway,
        full,
        untold,
        told,
        pg,
    } = *gateways;
    gateway.wait_ready(client, ECHO).await?;
    gateway.wait_ready(client, ECHO_TCP).await?;
    full.wait_ready(client, ECHO).await?;
    untold.wait_ready(client, ECHO).await?;
    told.wait_ready(client, ECHO).await?;
    gateway
        .deploy(
            client,
            serde_json::json!({ "service": "cat", "envProcess": cat.display().to_string() }),
        )
        .await?;
    let sink = serde_json::json!({ "service": "sink", "envProcess": which::which("true")?.display().to_string(), "annotations": { "hark.async.concurrency": "1" } });
    gateway.deploy(client, sink.clone()).await?;
    full.deploy(client, sink.clone()).await?;
    if let Some((pg_normal, pg_full)) = pg {
        pg_normal.wait_ready(client, ECHO).await?;
        pg_full.wait_ready(client, ECHO).await?;
        pg_full.deploy(client, sink).await?;
    }
    let gw = gateway.pid();
    // Idle: started, functions deployed, one call each, no load yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = gw.and_then(memory::rss_kib).unwrap_or(0);

    let mut table = Table::default();
    let mut checks = Vec::new();
    let json = |url: String| Target::post(url, "application/json", BODY);

    // http mode.
    let target = json(ceiling.url.clone());
    bench.probe(&target, BODY).await;
    let ceiling_row = table.push(
        "bare axum echo server (ceiling)",
        bench.row(&target, ceiling.pid(), None).await?,
        None,
        None,
    );
    let target = json(format!("{}/function/{ECHO}", gateway.url));
    bench.probe(&target, BODY).await;
    let http_row = table.push(
        "http mode: echo function through the gateway (unix socket)",
        bench.row(&target, gw, None).await?,
        Some(ceiling_row),
        Some(0.45),
    );
    let target = json(format!("{}/function/{ECHO}", untold.url));
    bench.probe(&target, BODY).await;
    let http_untold_row = table.push(
        "http mode (unix socket), --history-max-body 0 (no stories)",
        bench.row(&target, untold.pid(), None).await?,
        Some(ceiling_row),
        None,
    );
    checks.push(history_cost(&table, "http mode", http_row, http_untold_row));
    let target = json(format!("{}/function/{ECHO}", told.url));
    bench.probe(&target, BODY).await;
    table.push(
        "http mode (unix socket), --history-story-rate all (every story)",
        bench.row(&target, told.pid(), None).await?,
        Some(ceiling_row),
        None,
    );
    let target = json(format!("{}/function/{ECHO_TCP}", gateway.url));
    bench.probe(&target, BODY).await;
    table.push(
        "http mode: echo function through the gateway (tcp, hark.listen: tcp)",
        bench.row(&target, gw, None).await?,
        Some(ceiling_row),
        None,
    );
    let added = table.rows[http_row]
        .figures
        .p50
        .saturating_sub(table.rows[ceiling_row].figures.p50);
    checks.push(Check {
        what: "http mode: added p50 latency (row 2 − row 1)".into(),
        value: format!("{:.2} ms", ms(added)),
        target: "≤ 0.30 ms".into(),
        met: added <= Duration::from_micros(300),
    });

    // fork mode: measured in turn with its baseline, its goal being within a tenth of it.
    let spawn_target = json(spawner.url.clone());
    let target = json(format!("{}/function/cat", gateway.url));
    let (spawn_measured, fork_measured) = bench
        .paired_rows((&spawn_target, spawner.pid()), (&target, gw), BODY)
        .await?;
    let spawn_row = table.push(
        "bare server spawning cat per request (baseline)",
        spawn_measured,
        None,
        None,
    );
    let fork_row = table.push(
        "fork mode: cat through the gateway",
        fork_measured,
        Some(spawn_row),
        Some(0.9),
    );
    let p99 =
        ms(table.rows[fork_row].figures.p99) / ms(table.rows[spawn_row].figures.p99).max(1e-9);
    checks.push(Check {
        what: format!(
            "fork mode: p99 vs the spawn server's (row {} / row {})",
            fork_row + 1,
            spawn_row + 1
        ),
        value: format!("{p99:.2}×"),
        target: "≤ 1.20×".into(),
        met: p99 <= 1.2,
    });

    // Channels, each next to the same function called unsigned.
    let unsigned_row = table.push(
        "echo at /function/echo, unsigned (channel base)",
        bench
            .row(&json(format!("{}/function/{ECHO}", gateway.url)), gw, None)
            .await?,
        None,
        None,
    );
    let slack = secrets.slack(&format!("{}/slack/bench", gateway.url));
    bench.probe(&slack, "slash_command").await;
    let slack = secrets.slack(&format!("{}/slack/bench", gateway.url));
    let slack_row = table.push(
        "slack: signed slash command → echo",
        bench.row(&slack, gw, None).await?,
        Some(unsigned_row),
        Some(0.9),
    );
    let slack = secrets.slack(&format!("{}/slack/bench", untold.url));
    bench.probe(&slack, "slash_command").await;
    let slack = secrets.slack(&format!("{}/slack/bench", untold.url));
    let slack_untold_row = table.push(
        "slack: signed slash command, --history-max-body 0",
        bench.row(&slack, untold.pid(), None).await?,
        Some(unsigned_row),
        None,
    );
    checks.push(history_cost(&table, "slack", slack_row, slack_untold_row));
    let slack = secrets.slack(&format!("{}/slack/bench", told.url));
    bench.probe(&slack, "slash_command").await;
    let slack = secrets.slack(&format!("{}/slack/bench", told.url));
    table.push(
        "slack: signed slash command, --history-story-rate all",
        bench.row(&slack, told.pid(), None).await?,
        Some(unsigned_row),
        None,
    );
    // Acknowledged once its call is committed: with --durability full, synced to disk.
    let slack = secrets.slack(&format!("{}/slack/bench", full.url));
    bench.probe(&slack, "slash_command").await;
    let slack = secrets.slack(&format!("{}/slack/bench", full.url));
    let slack_full_row = table.push(
        "slack: signed slash command, --durability full",
        bench.row(&slack, full.pid(), None).await?,
        Some(slack_row),
        None,
    );
    if let Some((pg_normal, pg_full)) = pg {
        for (gateway, durability, sqlite_row) in [
            (pg_normal, "normal", slack_row),
            (pg_full, "full", slack_full_row),
        ] {
            let slack = secrets.slack(&format!("{}/slack/bench", gateway.url));
            bench.probe(&slack, "slash_command").await;
            let slack = secrets.slack(&format!("{}/slack/bench", gateway.url));
            let pg_row = table.push(
                format!("slack: signed slash command, --store postgres --durability {durability}"),
                bench.row(&slack, gateway.pid(), None).await?,
                Some(sqlite_row),
                None,
            );
            checks.push(pg::added_p99(
                &table,
                durability,
                unsigned_row,
                sqlite_row,
                pg_row,
            ));
        }
    }
    let github = secrets.github(&format!("{}/github/bench", gateway.url));
    bench.probe(&github, "\"status\":200").await;
    table.push(
        "github: signed issues.opened → echo",
        bench.row(&github, gw, None).await?,
        Some(unsigned_row),
        Some(0.9),
    );
    let verified = alexa.target(&format!("{}/alexa/bench", gateway.url), true);
    bench.probe(&verified, "Pong, Ada").await;
    let verified = alexa.target(&format!("{}/alexa/bench", gateway.url), true);
    table.push(
        "alexa: signed intent, chain cached → echo",
        bench.row(&verified, gw, None).await?,
        Some(unsigned_row),
        Some(0.8),
    );
    let unverified = alexa.target(&format!("{}/alexa/bench-dev", gateway.url), false);
    bench.probe(&unverified, "Pong, Ada").await;
    table.push(
        "alexa: skill with verify: false → echo (extra)",
        bench.row(&unverified, gw, None).await?,
        Some(unsigned_row),
        None,
    );

    // Durable enqueue: each 202 means the call is committed to SQLite. Its floor is the
    // cheapest request the gateway answers (`/healthz`). The queued calls run one at a
    // time meanwhile (`true`, async concurrency 1), as they would in production.
    let floor = Target::get(format!("{}/healthz", gateway.url));
    bench.probe(&floor, "").await;
    let floor_row = table.push(
        "gateway GET /healthz (HTTP floor)",
        bench.row(&floor, gw, None).await?,
        None,
        None,
    );
    // PostgreSQL's first: a gateway goes on running the calls a row queued (thousands)
    // after it, and those of the gateways measured before a row compete with it for the
    // cores. The PostgreSQL gateway is killed after its row (its calls stay queued in a
    // database dropped at the end), so that SQLite's rows run beside nothing, as it did.
    let pg_enqueue = match pg {
        Some((_, pg)) => {
            let enqueue = json(format!("{}/async-function/sink", pg.url));
            bench.probe(&enqueue, "").await;
            let figures = bench.row(&enqueue, pg.pid(), None).await?;
            if let Some(pid) = pg.pid() {
                // SAFETY: kill(2) on our own child's pid touches no memory.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            Some(figures)
        }
        None => None,
    };
    let enqueue = json(format!("{}/async-function/sink", gateway.url));
    bench.probe(&enqueue, "").await;
    let enqueue_row = table.push(
        "async enqueue, --durability normal (202 on commit)",
        bench.row(&enqueue, gw, None).await?,
        Some(floor_row),
        None,
    );
    checks.push(enqueue_check(&table, "durable async enqueue", enqueue_row));
    let enqueue = json(format!("{}/async-function/sink", full.url));
    bench.probe(&enqueue, "").await;
    table.push(
        "async enqueue, --durability full (202 after fsync)",
        bench.row(&enqueue, full.pid(), None).await?,
        Some(enqueue_row),
        None,
    );
    if let Some(figures) = pg_enqueue {
        let pg_row = table.push(
            "async enqueue, --store postgres --durability full (202 on commit; measured first)",
            figures,
            Some(enqueue_row),
            None,
        );
        checks.push(enqueue_check(
            &table,
            "PostgreSQL durable async enqueue",
            pg_row,
        ));
    }

    // Memory under many connections.
    let c = args.memory_connections.max(1);
    let memory_row = table.push(
        format!("http mode through the gateway, -c{c} (memory)"),
        bench
            .row(
                &json(format!("{}/function/{ECHO}", gateway.url)),
                gw,
                Some(c),
            )
            .await?,
        None,
        None,
    );
    checks.push(Check {
        what: "gateway RSS idle (after start and deploys)".into(),
        value: format!("{:.1} MiB", idle_kib as f64 / 1024.0),
        target: "≤ 20 MiB".into(),
        met: idle_kib > 0 && idle_kib <= 20 * 1024,
    });
    let peak = table.rows[memory_row].rss_kib.unwrap_or(0);
    checks.push(Check {
        what: format!("gateway peak RSS at -c{c} (row {})", memory_row + 1),
        value: format!("{:.1} MiB", peak as f64 / 1024.0),
        target: "≤ 60 MiB".into(),
        met: peak > 0 && peak <= 60 * 1024,
    });

    // Cold starts.
    let mut cold = Vec::new();
    let zero = gateway
        .scale_from_zero(client, ECHO, args.cold_starts)
        .await?;
    let added = median(&zero).saturating_sub(median(own_start));
    checks.push(Check {
        what: "process: scale-from-zero − the function's own start-up".into(),
        value: format!("{:.1} ms", ms(added)),
        target: "≤ 50 ms".into(),
        met: added <= Duration::from_millis(50),
    });
    cold.push((
        "echo started by hand → first response (own start-up)".to_owned(),
        own_start.to_vec(),
    ));
    cold.push((
        "process provider: scale-from-zero → first response".to_owned(),
        zero,
    ));
    let spec = |name: String| {
        serde_json::json!({
            "service": name,
            "envProcess": format!("{} bench-baseline echo", shell_words::quote(&exe.display().to_string())),
            "annotations": { "hark.mode": "http", "hark.listen": "socket" },
        })
    };
    let deployed = cold_starts(args.cold_starts, |i| {
        gateway.time_cold_start(client, spec(format!("cold-{i}")))
    })
    .await?;
    cold.push((
        "process provider: deploy → first response (sandboxed)".to_owned(),
        deployed,
    ));
    // A fork-mode function: its user, state directory and Landlock rules are prepared at
    // deploy; the first call then forks into the sandbox.
    let deployed = cold_starts(args.cold_starts, |i| {
        gateway.time_cold_start(
            client,
            serde_json::json!({ "service": format!("cold-fork-{i}"), "envProcess": cat.display().to_string() }),
        )
    })
    .await?;
    cold.push((
        "process provider: fork mode, deploy → first response (sandboxed)".to_owned(),
        deployed,
    ));
    Ok((table, checks, cold))
}

/// The stack file of the process-provider gateway: the echo server as an HTTP-mode
/// function (on its Unix socket, and again on TCP), Slack and GitHub routes to it, and the Alexa settings (JSON, which is YAML).
fn stack_file(exe: &Path, connections: usize) -> anyhow::Result<String> {
    let exe = exe
        .to_str()
        .context("the hark binary's path is not UTF-8")?;
    // Channel routes answer 429 above max_inflight (default 16): room for every connection.
    let inflight = connections.max(16) * 2;
    let stack = serde_json::json!({
        "version": "1.0",
        "functions": {
            ECHO: {
                "fprocess": format!("{} bench-baseline echo", shell_words::quote(exe)),
                "annotations": {
                    "hark.mode": "http",
                    "hark.listen": "socket",
                    // Channel calls run from the queue: let the gateway's 16 queue workers,
                    // not the per-function default of 4, bound them.
                    "hark.async.concurrency": "16",
                },
            },
            ECHO_TCP: {
                "fprocess": format!("{} bench-baseline echo", shell_words::quote(exe)),
                "annotations": { "hark.mode": "http", "hark.listen": "tcp" },
            },
        },
        "channels": {
            "slack": { "bench": {
                "signing_secrets": [SLACK_SECRET],
                "commands": { "/bench": ECHO },
                "max_inflight": inflight,
            } },
            "github": { "bench": {
                "webhook_secrets": [GITHUB_SECRET],
                "events": { "issues.opened": ECHO },
                "max_inflight": inflight,
            } },
        },
        "alexa": {
            "skills": "./skills",
            "use_default_roots": false,
            "trust_roots": ["./root.pem"],
            "cert_dir": "./certs",
            "download_missing": false,
            "max_inflight": inflight,
        },
    });
    Ok(serde_json::to_string_pretty(&stack)?)
}

const SLACK_SECRET: &str = "bench-slack-signing";
const GITHUB_SECRET: &str = "bench-github-webhook";

/// The signing secrets of the run's Slack and GitHub routes, random per run, handed to
/// the gateway in its environment; and where the slash commands' late replies go.
struct ChannelSecrets {
    slack: String,
    github: String,
    /// The slash commands' `response_url`: a local server of the run (the gateways allow
    /// its address with `--egress-allow`). The calls still running when a row's load stops
    /// answer there, at once, instead of retrying Slack's host for minutes (which does not
    /// resolve on a machine without the Internet) through the rows after.
    response_url: String,
}

impl ChannelSecrets {
    fn new(response_url: String) -> ChannelSecrets {
        let random = || uuid::Uuid::new_v4().simple().to_string();
        ChannelSecrets {
            slack: random(),
            github: random(),
            response_url,
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        use crate::channels::common::secrets::env_name;
        vec![
            (env_name(SLACK_SECRET), self.slack.clone()),
            (env_name(GITHUB_SECRET), self.github.clone()),
        ]
    }

    /// A slash command as Slack sends it, signed now (Slack's window is 5 minutes).
    fn slack(&self, url: &str) -> Target {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("token", "bench"),
                ("team_id", "T0BENCH"),
                ("team_domain", "bench"),
                ("channel_id", "C0BENCH"),
                ("channel_name", "bench"),
                ("user_id", "U0BENCH"),
                ("user_name", "ada"),
                ("command", "/bench"),
                ("text", "how many days are left"),
                ("api_app_id", "A0BENCH"),
                ("response_url", &self.response_url),
                ("trigger_id", "1.2.bench"),
            ])
            .finish();
        let now = chrono::Utc::now().timestamp();
        let signature =
            crate::channels::slack::verify::sign(self.slack.as_bytes(), now, body.as_bytes());
        Target::post(url, "application/x-www-form-urlencoded", body)
            .header(crate::channels::slack::verify::TIMESTAMP, now.to_string())
            .header(crate::channels::slack::verify::SIGNATURE, signature)
    }

    /// An `issues.opened` delivery as GitHub sends it, with a new delivery id per request
    /// (Hark answers a redelivery without running the function).
    fn github(&self, url: &str) -> Target {
        let body = serde_json::json!({
            "action": "opened",
            "issue": { "number": 1, "title": "Bench", "body": "How many days are left?", "user": { "login": "ada" } },
            "repository": { "full_name": "hark/bench", "name": "bench", "owner": { "login": "hark" } },
            "sender": { "login": "ada" },
        })
        .to_string();
        let signature =
            crate::channels::github::verify::sign(self.github.as_bytes(), body.as_bytes());
        Target::post(url, "application/json", body)
            .header(crate::channels::github::verify::EVENT, "issues")
            .header(crate::channels::github::verify::SIGNATURE_256, signature)
            .unique(crate::channels::github::verify::DELIVERY)
    }
}

/// The skill `booking_bench` talks to: the holiday skill's booking intent, answering with
/// the booking's outcome.
const BOOKING_SKILL: &str = r#"id: amzn1.ask.skill.hark-bench
invocation: holiday bench
deadline: { budget: 7s, progressive_after: 7s }
intents:
  BookDayOffIntent:
    samples: ["book {date} off"]
    slots: { date: AMAZON.DATE }
    function: book-holiday
    input: { action: book, date: "{{ slots.date }}" }
    speech: "{% if result.status == 'booked' %}Booked {{ result.confirmation }}.{% else %}Not booked: {{ result.kind }}.{% endif %}"
"#;

/// Books `runs` different working days one after another through a gateway serving
/// hr-portal, book-holiday and a skill like the holiday skill, with a warm browser pool.
/// Each run is a signed Alexa request timed until its answer; with whether the answer said
/// "Booked" (within the skill's budget), in run order.
async fn booking_bench(
    exe: &Path,
    dir: &Path,
    client: &reqwest::Client,
    runs: usize,
) -> anyhow::Result<Vec<(Duration, bool)>> {
    use chrono::Datelike;
    let (portal, book) = (
        exe.with_file_name("hr-portal"),
        exe.with_file_name("book-holiday"),
    );
    for bin in [&portal, &book] {
        if !bin.exists() {
            bail!(
                "{} is missing: run `cargo build --workspace` first",
                bin.display()
            );
        }
    }
    let data = dir.join("booking");
    std::fs::create_dir_all(&data)?;
    AlexaBench::prepare(&data, None)?;
    let skill = data.join("skills/holiday-bench");
    std::fs::create_dir_all(&skill)?;
    std::fs::write(skill.join("skill.yaml"), BOOKING_SKILL)?;
    let config = data.join("booking.yml");
    std::fs::write(
        &config,
        "browser: { mode: \"on\", warm: 1 }\nalexa:\n  skills: ./skills\n  use_default_roots: false\n  trust_roots: [./root.pem]\n  cert_dir: ./certs\n  download_missing: false\n",
    )?;
    let config = config.to_str().context("the bench's path is not UTF-8")?;
    let mut gw =
        Gateway::start_with(exe, &data, &["--provider", "process", "--config", config]).await?;
    let measured = async {
        let response = client
            .post(format!("{}/system/secrets", gw.url))
            .bearer_auth(&gw.token)
            .json(&serde_json::json!({ "name": "hr-portal-password", "value": "bench" }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("creating the secret: {}", response.status());
        }
        let deploy = |spec: serde_json::Value| {
            client
                .post(format!("{}/system/functions", gw.url))
                .bearer_auth(&gw.token)
                .json(&spec)
                .send()
        };
        let response = deploy(serde_json::json!({
            "service": "hr-portal", "envProcess": portal.display().to_string(),
            "envVars": { "HR_PORTAL_ALLOWANCE": "1000" },
            "secrets": ["hr-portal-password"], "annotations": { "hark.mode": "http" },
        })).await?;
        if !response.status().is_success() {
            bail!("deploying hr-portal: {}", response.text().await.unwrap_or_default());
        }
        let response = deploy(serde_json::json!({
            "service": "book-holiday", "envProcess": book.display().to_string(),
            "envVars": { "HR_PORTAL_URL": format!("{}/function/hr-portal/", gw.url) },
            "secrets": ["hr-portal-password"], "annotations": { "hark.timeout": "30s" },
        })).await?;
        if !response.status().is_success() {
            bail!("deploying book-holiday: {}", response.text().await.unwrap_or_default());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(format!("{}/function/hr-portal/login", gw.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("hr-portal did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Working days from next week on, one per run (and one to warm up).
        let mut day = chrono::Local::now().date_naive() + chrono::Duration::days(7);
        let mut times = Vec::new();
        for run in 0..=runs {
            while matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun) {
                day += chrono::Duration::days(1);
            }
            let body = serde_json::json!({
                "version": "1.0",
                "session": { "new": true, "sessionId": format!("s-{run}"), "application": { "applicationId": ALEXA_APP_ID },
                             "attributes": {}, "user": { "userId": "amzn1.ask.account.bench" } },
                "context": { "System": { "application": { "applicationId": ALEXA_APP_ID },
                                         "user": { "userId": "amzn1.ask.account.bench" } } },
                "request": { "type": "IntentRequest", "requestId": format!("amzn1.echo-api.request.booking-{run}"),
                             "timestamp": chrono::Utc::now().to_rfc3339(), "locale": "en-GB",
                             "intent": { "name": "BookDayOffIntent", "confirmationStatus": "NONE",
                                         "slots": { "date": { "name": "date", "value": day.to_string() } } } },
            })
            .to_string();
            day += chrono::Duration::days(1);
            let signature = testpki::sign(body.as_bytes());
            let started = Instant::now();
            let answer: serde_json::Value = client
                .post(format!("{}/alexa/holiday-bench", gw.url))
                .header("content-type", "application/json")
                .header(verify::HEADER_CERT_CHAIN_URL, ALEXA_CERT_URL)
                .header(verify::HEADER_SIGNATURE_256, signature)
                .body(body)
                .send()
                .await?
                .json()
                .await?;
            let took = started.elapsed();
            let said = answer["response"]["outputSpeech"]["ssml"].as_str().unwrap_or("");
            if run == 0 {
                // The warm-up starts the portal and the browsers; it may outlast the budget.
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            times.push((took, said.contains("Booked HR-")));
        }
        anyhow::Ok(times)
    }
    .await;
    gw.stop().await;
    measured
}

/// Times `n` session leases through `/webdriver` of a gateway with no warm browsers
/// (each starts Chromium: the cold baseline) and of one keeping a warm browser (each
/// lease waits for the pool to be warm again first). Sorted durations, cold then warm.
async fn browser_bench(
    exe: &Path,
    dir: &Path,
    client: &reqwest::Client,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut results = Vec::new();
    for warm in ["0", "1"] {
        let data = dir.join(format!("browser-{warm}"));
        std::fs::create_dir_all(&data)?;
        let mut gw = Gateway::start_with(
            exe,
            &data,
            &[
                "--browser",
                "on",
                "--browser-warm",
                warm,
                "--browser-max",
                "1",
            ],
        )
        .await?;
        let measured = async {
            let webdriver = webdriver_url(client, &gw, &data).await?;
            let mut times = Vec::new();
            for _ in 0..n {
                // Each lease starts from a quiet pool: the last browser gone, and with a
                // warm pool, a warm browser ready.
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let status: serde_json::Value = client
                        .get(format!("{}/system/browser", gw.url))
                        .bearer_auth(&gw.token)
                        .send()
                        .await?
                        .json()
                        .await?;
                    let ready = status["inUse"] == 0
                        && status["warm"].as_u64() == Some(warm.parse()?)
                        && status["sessions"].as_array().map(Vec::len)
                            == status["warm"].as_u64().map(|w| w as usize);
                    if ready {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("the browser pool did not settle: {status}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let started = Instant::now();
                let answer: serde_json::Value = client
                    .post(format!("{webdriver}session"))
                    .json(&serde_json::json!({"capabilities": {}}))
                    .send()
                    .await?
                    .json()
                    .await?;
                times.push(started.elapsed());
                let id = answer["value"]["sessionId"]
                    .as_str()
                    .with_context(|| format!("no session: {answer}"))?;
                client
                    .delete(format!("{webdriver}session/{id}"))
                    .send()
                    .await?;
            }
            times.sort();
            anyhow::Ok(times)
        }
        .await;
        gw.stop().await;
        results.push(measured?);
    }
    let warm = results.pop().unwrap_or_default();
    let cold = results.pop().unwrap_or_default();
    Ok((cold, warm))
}

/// A WebDriver URL of the gateway `gw` running on `data`, as a function gets it: the
/// functions' loopback listener (read from a fork-mode function's `HARK_WEBDRIVER_URL`)
/// with the capability of a function `bench`, made with the key in `data` (the bench is
/// the operator: it holds the data directory).
async fn webdriver_url(
    client: &reqwest::Client,
    gw: &Gateway,
    data: &Path,
) -> anyhow::Result<String> {
    const SHOW: &str = "bench-webdriver-url";
    gw.deploy(
        client,
        serde_json::json!({"service": SHOW, "envProcess": "sh -c 'echo \"$HARK_WEBDRIVER_URL\"'"}),
    )
    .await?;
    let shown = client
        .post(format!("{}/function/{SHOW}", gw.url))
        .send()
        .await?
        .text()
        .await?;
    let base = shown
        .find("/webdriver/")
        .map(|at| &shown[..at])
        .with_context(|| format!("{SHOW} was given no HARK_WEBDRIVER_URL: {shown:?}"))?;
    let capabilities = crate::browser::capability::Capabilities::load_or_create(data)?;
    Ok(capabilities.function_url(base, "bench"))
}

/// Rows of the WebDriver capability's cost: a W3C command (`GET …/title`) sent straight to
/// a ChromeDriver of the bench's own (the baseline) and through the gateway's pool, where
/// the capability is checked (constant-time HMAC compare), the command checked against the
/// allowlist and the session's owner looked up before it is proxied to ChromeDriver.
async fn webdriver_rows(
    bench: &Bench,
    exe: &Path,
    dir: &Path,
    table: &mut Table,
) -> anyhow::Result<()> {
    let data = dir.join("webdriver-cost");
    std::fs::create_dir_all(&data)?;
    let mut gw =
        Gateway::start_with(exe, &data, &["--browser", "on", "--browser-warm", "1"]).await?;
    let mut driver = None;
    let measured = async {
        let client = &bench.client;
        let page = serde_json::json!({"url": "data:text/html,<title>bench page</title>"});
        // Through the gateway, with the capability.
        let webdriver = webdriver_url(client, &gw, &data).await?;
        let session = open_session(
            client,
            &format!("{webdriver}session"),
            serde_json::json!({"capabilities": {}}),
            &page,
        )
        .await?;
        // Straight to a ChromeDriver of our own, with the pool's browser settings.
        let program = which::which("chromedriver").context("chromedriver is not on $PATH")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        driver = Some(
            tokio::process::Command::new(program)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
        let direct = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !client
            .get(format!("{direct}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = crate::browser::CHROMIUM_FLAGS
            .iter()
            .map(|f| f.to_string())
            .collect();
        args.push(format!(
            "--user-data-dir={}",
            data.join("direct-profile").display()
        ));
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": crate::browser::BrowserConfig::default().chromium,
                "args": args,
            }
        }}});
        let own = open_session(client, &format!("{direct}/session"), capabilities, &page).await?;

        let target = Target::get(format!("{direct}/session/{own}/title"));
        bench.probe(&target, "bench page").await;
        let base = table.push(
            "webdriver title: straight to chromedriver (baseline)",
            bench.row(&target, None, None).await?,
            None,
            None,
        );
        let target = Target::get(format!("{webdriver}session/{session}/title"));
        bench.probe(&target, "bench page").await;
        table.push(
            "webdriver title: via the pool, capability checked",
            bench.row(&target, gw.pid(), None).await?,
            Some(base),
            None,
        );
        let _ = client
            .delete(format!("{direct}/session/{own}"))
            .send()
            .await;
        let _ = client
            .delete(format!("{webdriver}session/{session}"))
            .send()
            .await;
        anyhow::Ok(())
    }
    .await;
    if let Some(mut driver) = driver {
        let _ = driver.kill().await;
    }
    gw.stop().await;
    measured
}

/// Starts a WebDriver session at `url` (`…/session`) and opens `page` in it; its id.
async fn open_session(
    client: &reqwest::Client,
    url: &str,
    capabilities: serde_json::Value,
    page: &serde_json::Value,
) -> anyhow::Result<String> {
    // Errors without the URL: it holds a capability.
    let answer: serde_json::Value = client
        .post(url)
        .json(&capabilities)
        .send()
        .await
        .map_err(reqwest::Error::without_url)?
        .json()
        .await
        .map_err(reqwest::Error::without_url)?;
    let id = answer["value"]["sessionId"]
        .as_str()
        .with_context(|| {
            format!(
                "no session from {}: {answer}",
                url.split("/webdriver/").next().unwrap_or(url)
            )
        })?
        .to_owned();
    let opened = client
        .post(format!("{url}/{id}/url"))
        .json(page)
        .send()
        .await
        .map_err(reqwest::Error::without_url)?;
    if !opened.status().is_success() {
        bail!("opening the bench page answered {}", opened.status());
    }
    Ok(id)
}

/// Runs `once` `n` times and returns the durations, sorted.
async fn cold_starts<F, Fut>(n: usize, mut once: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let mut times = Vec::new();
    for i in 0..n.max(1) {
        times.push(once(i).await?);
    }
    times.sort();
    Ok(times)
}

/// The certificate URL of the bench's requests; its chain is served from `cert_dir`.
const ALEXA_CERT_URL: &str = "https://s3.amazonaws.com/echo.api/hark-bench.pem";
const ALEXA_APP_ID: &str = "amzn1.ask.skill.hark-bench";

/// A test CA in `dir` (`root.pem`, `certs/`), and with a function, two skills whose intent
/// calls it: `bench`, verified, and `bench-dev`, with `verify: false`.
struct AlexaBench;

impl AlexaBench {
    fn prepare(dir: &Path, function: Option<&str>) -> anyhow::Result<AlexaBench> {
        let pki = testpki::Pki::for_time(chrono::Utc::now());
        std::fs::create_dir_all(dir.join("certs"))?;
        std::fs::write(dir.join("certs/hark-bench.pem"), &pki.good_chain)?;
        std::fs::write(dir.join("root.pem"), &pki.root_pem)?;
        let Some(function) = function else {
            return Ok(AlexaBench);
        };
        for (name, verify) in [("bench", true), ("bench-dev", false)] {
            let skill = dir.join("skills").join(name);
            std::fs::create_dir_all(&skill)?;
            std::fs::write(
                skill.join("skill.yaml"),
                format!("id: {ALEXA_APP_ID}\ninvocation: bench\nverify: {verify}\nintents:\n  Ping:\n    samples: [ping]\n    function: {function}\n    input: {{ name: \"{{{{ slots.name }}}}\" }}\n    speech: \"Pong, {{{{ result.input.name }}}}.\"\n    slots: {{ name: AMAZON.FirstName }}\n"),
            )?;
        }
        Ok(AlexaBench)
    }

    /// An IntentRequest timestamped now, signed with Signature-256 when `signed`.
    fn target(&self, url: &str, signed: bool) -> Target {
        let body = serde_json::json!({
            "version": "1.0",
            "session": { "new": true, "sessionId": "s", "application": { "applicationId": ALEXA_APP_ID },
                         "attributes": {}, "user": { "userId": "amzn1.ask.account.bench" } },
            "context": { "System": { "application": { "applicationId": ALEXA_APP_ID },
                                     "user": { "userId": "amzn1.ask.account.bench" } } },
            "request": { "type": "IntentRequest", "requestId": "amzn1.echo-api.request.bench",
                         "timestamp": chrono::Utc::now().to_rfc3339(), "locale": "en-GB",
                         "intent": { "name": "Ping", "confirmationStatus": "NONE",
                                     "slots": { "name": { "name": "name", "value": "Ada" } } } },
        })
        .to_string();
        let target = Target::post(url, "application/json", body.clone());
        if !signed {
            return target;
        }
        target
            .header(verify::HEADER_CERT_CHAIN_URL, ALEXA_CERT_URL)
            .header(verify::HEADER_SIGNATURE_256, testpki::sign(body.as_bytes()))
    }
}

/// A bare server of the run (`hark bench-baseline KIND`) on a free port, in `dir`.
struct Server {
    child: tokio::process::Child,
    url: String,
}

impl Server {
    /// Starts it and waits until it answers a request.
    async fn start(
        exe: &Path,
        kind: &str,
        dir: &Path,
        client: &reqwest::Client,
    ) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(exe)
            .args(["bench-baseline", kind, "--port", &port.to_string()])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting hark bench-baseline {kind}"))?;
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        };
        wait_answer(client, &server.url, Duration::from_secs(30)).await?;
        Ok(server)
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Polls `url` with a small POST until it answers 2xx.
async fn wait_answer(client: &reqwest::Client, url: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let answer = client.post(url).body("x").send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url} did not answer in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hark-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// How many of a gateway's log lines (warnings and errors) `hark bench` shows.
const GATEWAY_LINES_SHOWN: usize = 20;

/// A `hark up` child process on a free port.
struct Gateway {
    child: tokio::process::Child,
    url: String,
    token: String,
}

impl Gateway {
    async fn start_with(exe: &Path, data: &Path, args: &[&str]) -> anyhow::Result<Gateway> {
        Self::start_with_env(exe, data, args, &[]).await
    }

    /// `hark --data DATA up --port 0 ARGS` in `data`, with `env` added to its environment.
    async fn start_with_env(
        exe: &Path,
        data: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<Gateway> {
        let mut child = tokio::process::Command::new(exe)
            .arg("--data")
            .arg(data)
            .args(["up", "--port", "0"])
            .args(args)
            .current_dir(data)
            .env("HARK_LOG", "warn")
            .env_remove("HARK_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting hark up")?;
        let stderr = child.stderr.take().context("no stderr")?.into_owned_fd()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // The gateway logs warnings and errors only; the first few are shown, as
            // they usually explain a failed row.
            let mut shown = 0;
            for line in BufReader::new(std::fs::File::from(stderr))
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.split("gateway listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                } else if line.contains(crate::egress::ALLOWED_WARNING) {
                    // The bench's own --egress-allow, said once at the start.
                } else if shown < GATEWAY_LINES_SHOWN {
                    shown += 1;
                    eprintln!("hark bench: gateway: {line}");
                }
            }
        });
        let url = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("hark up did not start in 30 s")??;
        let token = std::fs::read_to_string(data.join(crate::auth::ADMIN_TOKEN_FILE))?
            .trim()
            .to_owned();
        Ok(Gateway { child, url, token })
    }

    async fn deploy(
        &self,
        client: &reqwest::Client,
        spec: serde_json::Value,
    ) -> anyhow::Result<()> {
        let response = client
            .post(format!("{}/system/functions", self.url))
            .bearer_auth(&self.token)
            .json(&spec)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "deploy failed: {}",
                response.text().await.unwrap_or_default()
            );
        }
        // Wait until the function answers.
        let name = spec["service"].as_str().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = client
                .post(format!("{}/function/{name}", self.url))
                .body(Bytes::from_static(b"x"))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} did not become ready");
            }
            // Short, so that cold starts are measured to within a few milliseconds.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Deploys `spec` and times it to the first successful response.
    async fn time_cold_start(
        &self,
        client: &reqwest::Client,
        spec: serde_json::Value,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.deploy(client, spec.clone()).await?;
        let elapsed = started.elapsed();
        let name = spec["service"].as_str().unwrap_or_default();
        let _ = client
            .delete(format!("{}/system/functions", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "functionName": name }))
            .send()
            .await;
        Ok(elapsed)
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until function `name` answers a call.
    async fn wait_ready(&self, client: &reqwest::Client, name: &str) -> anyhow::Result<()> {
        let url = format!("{}/function/{name}", self.url);
        wait_answer(client, &url, Duration::from_secs(30))
            .await
            .with_context(|| format!("{name} did not become ready"))
    }

    /// Scales HTTP-mode function `name` to zero `n` times, each time waiting until no
    /// replica is left, and times the first call after it to its answer. Sorted.
    async fn scale_from_zero(
        &self,
        client: &reqwest::Client,
        name: &str,
        n: usize,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut times = Vec::new();
        for _ in 0..n.max(1) {
            let response = client
                .post(format!("{}/system/scale-function/{name}", self.url))
                .bearer_auth(&self.token)
                .json(&serde_json::json!({ "serviceName": name, "replicas": 0 }))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("scaling {name} to zero: {}", response.status());
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let status: serde_json::Value = client
                    .get(format!("{}/system/function/{name}", self.url))
                    .bearer_auth(&self.token)
                    .send()
                    .await?
                    .json()
                    .await?;
                if status["availableReplicas"] == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{name} did not scale to zero: {status}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Let the stopped replica's port and process go before the next start.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let started = Instant::now();
            let response = client
                .post(format!("{}/function/{name}", self.url))
                .header("content-type", "application/json")
                .body(BODY)
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            times.push(started.elapsed());
            if !status.is_success() || body != BODY.as_bytes() {
                bail!("{name} answered {status} after scaling from zero");
            }
        }
        times.sort();
        Ok(times)
    }

    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid touches no memory.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("hark bench: a gateway did not stop in 10 s of SIGTERM: killed");
            let _ = self.child.kill().await;
        }
    }
}

/// The docker half of the bench: an image of `hello` built for the run, a gateway on
/// the docker provider, and a bare container of the same image.
mod docker_bench {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    };
    use std::collections::HashMap;

    use super::{cold_starts, wait_answer, Bench, BenchArgs, Cold, Gateway, Table, Target, BODY};
    use crate::function::FunctionDeployment;
    use crate::provider::docker::{self, build};

    fn json(url: String) -> Target {
        Target::post(url, "application/json", BODY)
    }

    pub(super) struct DockerBench {
        docker: bollard::Docker,
        image: String,
        hello: std::path::PathBuf,
        base: Option<String>,
        network: String,
        gateway: Gateway,
        data: std::path::PathBuf,
        /// A gateway on the swarm provider and its overlay network, with `--swarm`.
        swarm: Option<(Gateway, String)>,
    }

    impl DockerBench {
        pub(super) async fn start(
            exe: &Path,
            hello: &Path,
            dir: &Path,
            with_swarm: bool,
        ) -> anyhow::Result<Self> {
            let docker = docker::connect().await?;
            if with_swarm {
                let info = docker.info().await?;
                let swarm = info.swarm.unwrap_or_default();
                anyhow::ensure!(
                    swarm.local_node_state == Some(bollard::models::LocalNodeState::ACTIVE)
                        && swarm.control_available == Some(true),
                    "--swarm needs an engine that manages an active swarm (`docker swarm init --advertise-addr 127.0.0.1`)"
                );
            }
            let run = std::process::id();
            let image = format!("hark/bench:{run}");
            let network = format!("hark-bench-{run}");
            let settings = build::BuildSettings::from_host()?;
            let mut spec: FunctionDeployment = serde_json::from_value(serde_json::json!({
                "service": "bench",
                "envProcess": hello.display().to_string(),
                "annotations": { "hark.mode": "http" },
            }))?;
            spec.env_process = Some(hello.display().to_string());
            let had_base = {
                let mut quiet = |_| {};
                // Build the watchdog layer first, noting whether it existed before.
                let bytes = std::fs::read(&settings.watchdog)?;
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
                let tag = format!("hark/watchdog:{}", hex::encode(&digest.as_ref()[..6]));
                let existed = docker.inspect_image(&tag).await.is_ok();
                build::ensure_watchdog_image(&docker, &settings, &mut quiet).await?;
                (!existed).then_some(tag)
            };
            eprintln!("hark bench: building {image}");
            if let Err(e) =
                build::build_function(&docker, &spec, &image, &settings, &mut |_| {}).await
            {
                if let Some(base) = &had_base {
                    let options = RemoveImageOptionsBuilder::default().force(true).build();
                    let _ = docker.remove_image(base, Some(options), None).await;
                }
                return Err(e.into());
            }
            let data = dir.join("docker");
            std::fs::create_dir_all(&data)?;
            let gateway = Gateway::start_with(
                exe,
                &data,
                &["--provider", "docker", "--docker-network", &network],
            )
            .await?;
            let swarm = if with_swarm {
                let network = format!("hark-bench-swarm-{run}");
                let data = data.join("swarm");
                std::fs::create_dir_all(&data)?;
                let gateway = Gateway::start_with(
                    exe,
                    &data,
                    &["--provider", "swarm", "--swarm-network", &network],
                )
                .await?;
                Some((gateway, network))
            } else {
                None
            };
            Ok(DockerBench {
                docker,
                image,
                hello: hello.to_owned(),
                base: had_base,
                network,
                gateway,
                data,
                swarm,
            })
        }

        /// The function's spec on this provider: `hello` in HTTP mode from the image.
        fn spec(&self, name: &str) -> serde_json::Value {
            serde_json::json!({
                "service": name,
                "image": self.image,
                "envProcess": self.hello.display().to_string(),
                "annotations": { "hark.mode": "http" },
            })
        }

        /// Adds the docker (and swarm) rows to `table`; the cold starts.
        pub(super) async fn run(
            &self,
            bench: &Bench,
            args: &BenchArgs,
            table: &mut Table,
        ) -> anyhow::Result<Vec<Cold>> {
            let client = &bench.client;
            let mut cold = Vec::new();
            let docker_cold = cold_starts(args.cold_starts, |i| {
                self.gateway
                    .time_cold_start(client, self.spec(&format!("cold-{i}")))
            })
            .await?;
            cold.push((
                "docker provider: deploy → first response".to_owned(),
                docker_cold,
            ));
            let bare_cold = cold_starts(args.cold_starts, |_| async {
                let started = Instant::now();
                let (id, url) = self.bare_container().await?;
                let answered = wait_answer(client, &url, Duration::from_secs(30)).await;
                let elapsed = started.elapsed();
                self.remove(&id).await;
                answered?;
                Ok(elapsed)
            })
            .await?;
            cold.push((
                "bare container: create+start → first response".to_owned(),
                bare_cold,
            ));

            // Warm: the same image, http mode, behind the docker provider and bare.
            self.gateway.deploy(client, self.spec("hello")).await?;
            self.gateway
                .deploy(
                    client,
                    serde_json::json!({ "service": "cat", "image": self.image, "envProcess": "cat" }),
                )
                .await?;
            let (id, url) = self.bare_container().await?;
            wait_answer(client, &url, Duration::from_secs(30)).await?;
            let measured = bench.row(&json(url), None, None).await;
            self.remove(&id).await;
            let bare = table.push(
                "docker: bare container of the hello image (base)",
                measured?,
                None,
                None,
            );
            let gw = self.gateway.pid();
            table.push(
                "docker, http mode: hello through the gateway",
                bench
                    .row(
                        &json(format!("{}/function/hello", self.gateway.url)),
                        gw,
                        None,
                    )
                    .await?,
                Some(bare),
                None,
            );
            table.push(
                "docker, fork mode: cat through the gateway",
                bench
                    .row(
                        &json(format!("{}/function/cat", self.gateway.url)),
                        gw,
                        None,
                    )
                    .await?,
                Some(bare),
                None,
            );
            if let Some((swarm, _)) = &self.swarm {
                let swarm_cold = cold_starts(args.cold_starts, |i| {
                    swarm.time_cold_start(client, self.spec(&format!("cold-{i}")))
                })
                .await?;
                cold.push((
                    "swarm provider: deploy → first response".to_owned(),
                    swarm_cold,
                ));
                swarm.deploy(client, self.spec("hello")).await?;
                swarm
                    .deploy(
                        client,
                        serde_json::json!({ "service": "cat", "image": self.image, "envProcess": "cat" }),
                    )
                    .await?;
                for (label, path) in [
                    ("swarm, http mode: hello through the gateway", "hello"),
                    ("swarm, fork mode: cat through the gateway", "cat"),
                ] {
                    let url = format!("{}/function/{path}", swarm.url);
                    let figures = bench.row(&json(url), swarm.pid(), None).await?;
                    table.push(label, figures, Some(bare), None);
                }
            }
            Ok(cold)
        }

        /// `docker run -d -p 127.0.0.1::8080 IMAGE`: returns the id and the function's URL.
        async fn bare_container(&self) -> anyhow::Result<(String, String)> {
            let body = ContainerCreateBody {
                image: Some(self.image.clone()),
                exposed_ports: Some(vec!["8080/tcp".into()]),
                labels: Some(HashMap::from([("com.hark.bench".into(), "true".into())])),
                host_config: Some(HostConfig {
                    port_bindings: Some(HashMap::from([(
                        "8080/tcp".to_owned(),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some(String::new()),
                        }]),
                    )])),
                    init: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let name = format!(
                "hark-bench-bare-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            let id = self.docker.create_container(Some(options), body).await?.id;
            let started = async {
                self.docker.start_container(&id, None).await?;
                let inspect = self.docker.inspect_container(&id, None).await?;
                inspect
                    .network_settings
                    .and_then(|n| n.ports)
                    .and_then(|mut p| p.remove("8080/tcp"))
                    .flatten()
                    .and_then(|b| b.into_iter().find_map(|b| b.host_port))
                    .context("bare container has no published port")
            };
            match started.await {
                Ok(port) => Ok((id, format!("http://127.0.0.1:{port}/"))),
                // A container that cannot start (no docker0 bridge, say) is not left behind.
                Err(e) => {
                    self.remove(&id).await;
                    Err(e)
                }
            }
        }

        async fn remove(&self, id: &str) {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = self.docker.remove_container(id, Some(options)).await;
        }

        /// Stops the docker gateway and removes the image, network and data it made.
        pub(super) async fn cleanup(mut self) {
            self.gateway.stop().await;
            if let Some((mut swarm, network)) = self.swarm.take() {
                // A clean stop removes the services; their tasks leave the network after.
                swarm.stop().await;
                for _ in 0..20 {
                    if self.docker.remove_network(&network).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let options = RemoveImageOptionsBuilder::default().force(true).build();
            let _ = self
                .docker
                .remove_image(&self.image, Some(options.clone()), None)
                .await;
            if let Some(base) = &self.base {
                let _ = self.docker.remove_image(base, Some(options), None).await;
            }
            let _ = self.docker.remove_network(&self.network).await;
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}
