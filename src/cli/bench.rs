//! `hark bench`: measures each gateway path next to its own baseline in one run, and
//! prints requests/s, p50/p99 latency, the ratio to the baseline and the gateway's peak
//! memory. Figures are ratios because the machine is shared and noisy.
//!
//! - http mode: the `hello` function through the gateway vs. the same binary called directly.
//! - fork mode: `cat` through the gateway vs. spawning `cat` per request in the bench itself.
//! - async enqueue (committed to disk before the 202) vs. the gateway's `/healthz`.
//! - alexa: a Signature-256 request verified in full (chain from `cert_dir`, then cached; a
//!   test CA made at bench time) vs. the same request to the same skill with `verify: false`.
//!   The intent only speaks a template, so the difference is the cost of verification.
//! - with `--booking`: the "book a day off" flow end to end (a signed Alexa request →
//!   book-holiday → a browser from the pool → hr-portal), p50/p95 next to Alexa's 8 s.
//! - with `--docker`: the same functions on the docker provider, next to a bare container of
//!   the same image (`docker run` with the port published, no gateway), and the cold start
//!   (deploy → first response) of the process provider, the docker provider and the bare
//!   container, measured in the same run.
//! - with `--swarm` (implies `--docker`): the same again on the swarm provider (the engine
//!   must manage an active swarm), next to the same bare container.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::channels::alexa::{testpki, verify};
use crate::function::parse_duration;

/// A JSON body of about 190 bytes, like a small bot event.
const BODY: &str = r#"{"type":"IntentRequest","requestId":"amzn1.echo-api.request.0000","intent":{"name":"DaysLeft","slots":{"year":{"name":"year","value":"2026"}}},"locale":"en-GB","user":"amzn1.ask.account.bench"}"#;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// How long each measurement runs.
    #[arg(long, default_value = "5s")]
    pub duration: String,
    /// Warm-up before each measurement.
    #[arg(long, default_value = "1s")]
    pub warmup: String,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,
    /// Also measure the docker provider and a bare container (needs the Docker Engine).
    #[arg(long)]
    pub docker: bool,
    /// Also measure the swarm provider (implies --docker; the engine must manage a swarm).
    #[arg(long)]
    pub swarm: bool,
    /// Cold starts measured per provider (the median is printed).
    #[arg(long, default_value_t = 5)]
    pub cold_starts: usize,
    /// Also measure the browser pool: leasing a warm session vs starting a cold one
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
}

/// What one measurement found.
struct Figures {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let duration = parse_duration(&args.duration).context("--duration")?;
    let warmup = parse_duration(&args.warmup).context("--warmup")?;
    let concurrency = args.concurrency.max(1);
    let exe = std::env::current_exe()?;
    let hello = exe.with_file_name("hello");
    if !hello.exists() {
        bail!(
            "{} is missing: run `cargo build --workspace` (or --release) first",
            hello.display()
        );
    }
    let cat = which::which("cat").context("cat is not on $PATH")?;
    let dir = tempfile_dir()?;
    let alexa = AlexaBench::prepare(&dir)?;
    let mut gateway = Gateway::start(&exe, &dir, &alexa.config).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    gateway
        .deploy(&client, serde_json::json!({ "service": "hello", "envProcess": hello.display().to_string(), "annotations": { "hark.mode": "http" } }))
        .await?;
    gateway
        .deploy(
            &client,
            serde_json::json!({ "service": "cat", "envProcess": cat.display().to_string() }),
        )
        .await?;

    let direct = DirectHello::start(&hello).await?;
    eprintln!("hark bench: {concurrency} connections, {duration:?} per measurement after {warmup:?} warm-up");

    let mut rows: Vec<(String, Figures, Option<f64>)> = Vec::new();
    let baseline = measure(
        warmup,
        duration,
        concurrency,
        http_load(&client, &direct.url),
    )
    .await;
    let through = measure(
        warmup,
        duration,
        concurrency,
        http_load(&client, &format!("{}/function/hello", gateway.url)),
    )
    .await;
    rows.push((
        "http mode: hello called directly (baseline)".to_owned(),
        baseline,
        None,
    ));
    let ratio = Some(rows[0].1.rate());
    rows.push((
        "http mode: hello through the gateway".to_owned(),
        through,
        ratio,
    ));

    let baseline = measure(warmup, duration, concurrency, fork_load(&cat)).await;
    let through = measure(
        warmup,
        duration,
        concurrency,
        http_load(&client, &format!("{}/function/cat", gateway.url)),
    )
    .await;
    let ratio = Some(baseline.rate());
    rows.push((
        "fork mode: spawn cat per request (baseline)".to_owned(),
        baseline,
        None,
    ));
    rows.push((
        "fork mode: cat through the gateway".to_owned(),
        through,
        ratio,
    ));

    let mut cold = Vec::new();
    let spec = |name: &str, image: &str| {
        serde_json::json!({
            "service": name,
            "image": image,
            "envProcess": hello.display().to_string(),
            "annotations": { "hark.mode": "http" },
        })
    };
    let process_cold = cold_starts(args.cold_starts, |i| {
        gateway.time_cold_start(&client, spec(&format!("cold-{i}"), ""))
    })
    .await?;
    cold.push(("process provider: deploy → first response", process_cold));
    if args.docker || args.swarm {
        let bench = docker_bench::DockerBench::start(&exe, &hello, &dir, args.swarm).await?;
        let result = bench
            .run(&client, &args, warmup, duration, concurrency, &spec)
            .await;
        bench.cleanup().await;
        let (docker_rows, docker_cold) = result?;
        rows.extend(docker_rows);
        cold.extend(docker_cold);
    }

    // Durable enqueue: each 202 means the call is committed to SQLite. Its floor is the
    // cheapest request the gateway answers (`/healthz`). The queued calls run one at a
    // time meanwhile (`true`, async concurrency 1), as they would in production.
    gateway
        .deploy(&client, serde_json::json!({ "service": "sink", "envProcess": which::which("true")?.display().to_string(), "annotations": { "hark.async.concurrency": "1" } }))
        .await?;
    let floor = measure(
        warmup,
        duration,
        concurrency,
        get_load(&client, &format!("{}/healthz", gateway.url)),
    )
    .await;
    let enqueue = measure(
        warmup,
        duration,
        concurrency,
        http_load(&client, &format!("{}/async-function/sink", gateway.url)),
    )
    .await;
    let ratio = Some(floor.rate());
    rows.push((
        "gateway GET /healthz (HTTP floor, baseline)".to_owned(),
        floor,
        None,
    ));
    rows.push((
        "async enqueue, durable (202 after commit)".to_owned(),
        enqueue,
        ratio,
    ));
    // Signed now: the request stays inside Alexa's 150 s window for both measurements.
    let (body, signature) = alexa.signed_request();
    let baseline = measure(
        warmup,
        duration,
        concurrency,
        alexa_load(
            &client,
            &format!("{}/alexa/bench-dev", gateway.url),
            &body,
            None,
        ),
    )
    .await;
    let verified = measure(
        warmup,
        duration,
        concurrency,
        alexa_load(
            &client,
            &format!("{}/alexa/bench", gateway.url),
            &body,
            Some(&signature),
        ),
    )
    .await;
    let ratio = Some(baseline.rate());
    rows.push(("alexa: verify: false (baseline)".to_owned(), baseline, None));
    rows.push((
        "alexa: verified Signature-256, chain cached".to_owned(),
        verified,
        ratio,
    ));

    let peak = gateway.peak_rss_kib();
    println!(
        "{:<56} {:>10} {:>9} {:>9} {:>8} {:>7}",
        "path", "req/s", "p50 ms", "p99 ms", "errors", "ratio"
    );
    for (name, f, baseline) in &rows {
        let ratio = baseline.map_or("1.00".to_owned(), |b| format!("{:.2}", f.rate() / b));
        println!(
            "{:<56} {:>10.0} {:>9.2} {:>9.2} {:>8} {:>7}",
            name,
            f.rate(),
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.errors,
            ratio
        );
    }
    println!(
        "gateway peak RSS (process provider): {:.1} MiB",
        peak as f64 / 1024.0
    );
    println!();
    println!(
        "{:<52} {:>9} {:>9} {:>9}",
        "cold start", "median ms", "min ms", "max ms"
    );
    for (name, times) in &cold {
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<52} {:>9.0} {:>9.0} {:>9.0}",
            name,
            ms(&times[times.len() / 2]),
            ms(&times[0]),
            ms(&times[times.len() - 1])
        );
    }
    gateway.stop().await;
    if args.browser {
        let result = browser_bench(&exe, &dir, &client, args.browser_sessions.max(1)).await;
        let (cold, warm) = result?;
        let pct = |times: &[Duration], p: f64| {
            let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
            times[i].as_secs_f64() * 1000.0
        };
        println!();
        println!(
            "{:<52} {:>9} {:>9} {:>7}",
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
                "{:<52} {:>9.1} {:>9.1} {:>7.3}",
                name,
                pct(times, 0.5),
                pct(times, 0.95),
                pct(times, 0.5) / base
            );
        }
    }
    if args.booking {
        let runs = args.booking_runs.max(1);
        let times = booking_bench(&exe, &dir, &client, runs).await?;
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
            "{:<52} {:>9} {:>9} {:>9} {:>9}",
            format!("booking: Alexa → book-holiday → Chromium (n={runs})"),
            "p50 ms",
            "p95 ms",
            "max ms",
            "8 s / p95"
        );
        println!(
            "{:<52} {:>9.0} {:>9.0} {:>9.0} {:>9.2}",
            format!("signed BookDayOffIntent, booked in time: {in_time}/{runs}"),
            pct(0.5).as_secs_f64() * 1000.0,
            pct(0.95).as_secs_f64() * 1000.0,
            all[all.len() - 1].as_secs_f64() * 1000.0,
            deadline.as_secs_f64() / pct(0.95).as_secs_f64()
        );
        println!(
            "{:<52} {:>9.0}",
            "Alexa's deadline (baseline)",
            deadline.as_secs_f64() * 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
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
    AlexaBench::prepare(&data)?;
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
        let store = data.join("bookings.json");
        let deploy = |spec: serde_json::Value| {
            client
                .post(format!("{}/system/functions", gw.url))
                .bearer_auth(&gw.token)
                .json(&spec)
                .send()
        };
        let response = deploy(serde_json::json!({
            "service": "hr-portal", "envProcess": portal.display().to_string(),
            "envVars": { "HR_PORTAL_STORE": store.display().to_string(), "HR_PORTAL_ALLOWANCE": "1000" },
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
                    .post(format!("{}/webdriver/session", gw.url))
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
                    .delete(format!("{}/webdriver/session/{id}", gw.url))
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

type Load = Arc<dyn Fn() -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

fn http_load(client: &reqwest::Client, url: &str) -> Load {
    let (client, url) = (client.clone(), url.to_owned());
    Arc::new(move || {
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(BODY);
        Box::pin(async move {
            match request.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        })
    })
}

fn get_load(client: &reqwest::Client, url: &str) -> Load {
    let (client, url) = (client.clone(), url.to_owned());
    Arc::new(move || {
        let request = client.get(&url);
        Box::pin(async move {
            match request.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        })
    })
}

fn alexa_load(client: &reqwest::Client, url: &str, body: &str, signature: Option<&str>) -> Load {
    let (client, url, body) = (client.clone(), url.to_owned(), body.to_owned());
    let signature = signature.map(str::to_owned);
    Arc::new(move || {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(sig) = &signature {
            request = request
                .header(verify::HEADER_CERT_CHAIN_URL, ALEXA_CERT_URL)
                .header(verify::HEADER_SIGNATURE_256, sig);
        }
        Box::pin(async move {
            match request.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        })
    })
}

/// The certificate URL of the bench's requests; its chain is served from `cert_dir`.
const ALEXA_CERT_URL: &str = "https://s3.amazonaws.com/echo.api/hark-bench.pem";
const ALEXA_APP_ID: &str = "amzn1.ask.skill.hark-bench";

/// A test CA, a skill served verified and unverified, and the stack file that loads them.
struct AlexaBench {
    config: PathBuf,
}

impl AlexaBench {
    fn prepare(dir: &Path) -> anyhow::Result<AlexaBench> {
        let pki = testpki::Pki::for_time(chrono::Utc::now());
        std::fs::create_dir_all(dir.join("certs"))?;
        std::fs::write(dir.join("certs/hark-bench.pem"), &pki.good_chain)?;
        std::fs::write(dir.join("root.pem"), &pki.root_pem)?;
        for (name, verify) in [("bench", true), ("bench-dev", false)] {
            let skill = dir.join("skills").join(name);
            std::fs::create_dir_all(&skill)?;
            std::fs::write(
                skill.join("skill.yaml"),
                format!("id: {ALEXA_APP_ID}\ninvocation: bench\nverify: {verify}\nintents:\n  Ping:\n    samples: [ping]\n    speech: \"Pong, {{{{ slots.name }}}}.\"\n    slots: {{ name: AMAZON.FirstName }}\n"),
            )?;
        }
        let config = dir.join("bench.yml");
        std::fs::write(
            &config,
            "alexa:\n  skills: ./skills\n  use_default_roots: false\n  trust_roots: [./root.pem]\n  cert_dir: ./certs\n  download_missing: false\n",
        )?;
        Ok(AlexaBench { config })
    }

    /// An IntentRequest timestamped now, and its Signature-256.
    fn signed_request(&self) -> (String, String) {
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
        let signature = testpki::sign(body.as_bytes());
        (body, signature)
    }
}

fn fork_load(cat: &Path) -> Load {
    let cat = cat.to_owned();
    Arc::new(move || {
        let cat = cat.clone();
        Box::pin(async move {
            let child = tokio::process::Command::new(&cat)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            let Ok(mut child) = child else { return false };
            let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take())
            else {
                return false;
            };
            let write = async move {
                let _ = stdin.write_all(BODY.as_bytes()).await;
            };
            let mut out = Vec::new();
            let (_, read, status) = tokio::join!(write, stdout.read_to_end(&mut out), child.wait());
            read.is_ok() && status.is_ok_and(|s| s.success()) && out == BODY.as_bytes()
        })
    })
}

/// Runs `load` from `concurrency` workers: `warmup` unrecorded, then `duration` recorded.
async fn measure(warmup: Duration, duration: Duration, concurrency: usize, load: Load) -> Figures {
    let start = Instant::now();
    let record_from = start + warmup;
    let end = record_from + duration;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let load = load.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let ok = load().await;
                if sent >= record_from {
                    if ok {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((l, e)) = worker.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = Instant::now()
        .saturating_duration_since(record_from)
        .max(Duration::from_millis(1));
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        requests: latencies.len(),
        errors,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hark-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A `hark up` child process on a free port.
struct Gateway {
    child: tokio::process::Child,
    url: String,
    token: String,
}

impl Gateway {
    async fn start(exe: &Path, data: &Path, config: &Path) -> anyhow::Result<Gateway> {
        let config = config
            .to_str()
            .context("the bench's stack file path is not UTF-8")?;
        Self::start_with(exe, data, &["--provider", "process", "--config", config]).await
    }

    async fn start_with(exe: &Path, data: &Path, args: &[&str]) -> anyhow::Result<Gateway> {
        let mut child = tokio::process::Command::new(exe)
            .arg("--data")
            .arg(data)
            .args(["up", "--port", "0"])
            .args(args)
            .current_dir(data)
            .env("HARK_LOG", "warn")
            .env_remove("HARK_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting hark up")?;
        let stderr = child.stderr.take().context("no stderr")?.into_owned_fd()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(std::fs::File::from(stderr))
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.split("gateway listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
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

    /// The gateway's peak resident memory, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid touches no memory.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The `hello` function run directly, with no gateway in front.
struct DirectHello {
    _child: tokio::process::Child,
    url: String,
}

impl DirectHello {
    async fn start(hello: &Path) -> anyhow::Result<DirectHello> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(hello)
            .env("PORT", port.to_string())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("hello did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(DirectHello {
            _child: child,
            url: format!("http://127.0.0.1:{port}/"),
        })
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

    use super::{cold_starts, http_load, measure, BenchArgs, Figures, Gateway};
    use crate::function::FunctionDeployment;
    use crate::provider::docker::{self, build};

    type Row = (String, Figures, Option<f64>);
    type Cold = (&'static str, Vec<Duration>);

    pub(super) struct DockerBench {
        docker: bollard::Docker,
        image: String,
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
                base: had_base,
                network,
                gateway,
                data,
                swarm,
            })
        }

        pub(super) async fn run(
            &self,
            client: &reqwest::Client,
            args: &BenchArgs,
            warmup: Duration,
            duration: Duration,
            concurrency: usize,
            spec: &(dyn Fn(&str, &str) -> serde_json::Value + Sync),
        ) -> anyhow::Result<(Vec<Row>, Vec<Cold>)> {
            let mut cold = Vec::new();
            let docker_cold = cold_starts(args.cold_starts, |i| {
                self.gateway
                    .time_cold_start(client, spec(&format!("cold-{i}"), &self.image))
            })
            .await?;
            cold.push(("docker provider: deploy → first response", docker_cold));
            let bare_cold = cold_starts(args.cold_starts, |_| async {
                let started = Instant::now();
                let (id, url) = self.bare_container().await?;
                let answered = wait_answer(client, &url).await;
                let elapsed = started.elapsed();
                self.remove(&id).await;
                answered?;
                Ok(elapsed)
            })
            .await?;
            cold.push(("bare container: create+start → first response", bare_cold));

            // Warm: the same image, http mode, behind the docker provider and bare.
            self.gateway
                .deploy(client, spec("hello", &self.image))
                .await?;
            self.gateway
                .deploy(
                    client,
                    serde_json::json!({ "service": "cat", "image": self.image, "envProcess": "cat" }),
                )
                .await?;
            let (id, url) = self.bare_container().await?;
            wait_answer(client, &url).await?;
            let bare = measure(warmup, duration, concurrency, http_load(client, &url)).await;
            self.remove(&id).await;
            let through = measure(
                warmup,
                duration,
                concurrency,
                http_load(client, &format!("{}/function/hello", self.gateway.url)),
            )
            .await;
            let fork = measure(
                warmup,
                duration,
                concurrency,
                http_load(client, &format!("{}/function/cat", self.gateway.url)),
            )
            .await;
            let ratio = Some(bare.rate());
            let mut swarm_rows = Vec::new();
            if let Some((swarm, _)) = &self.swarm {
                let swarm_cold = cold_starts(args.cold_starts, |i| {
                    swarm.time_cold_start(client, spec(&format!("cold-{i}"), &self.image))
                })
                .await?;
                cold.push(("swarm provider: deploy → first response", swarm_cold));
                swarm.deploy(client, spec("hello", &self.image)).await?;
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
                    let figures =
                        measure(warmup, duration, concurrency, http_load(client, &url)).await;
                    swarm_rows.push((label.to_owned(), figures, ratio));
                }
            }
            Ok((
                vec![
                    (
                        "docker, http mode: bare container of the image (baseline)".to_owned(),
                        bare,
                        None,
                    ),
                    (
                        "docker, http mode: hello through the gateway".to_owned(),
                        through,
                        ratio,
                    ),
                    (
                        "docker, fork mode: cat through the gateway".to_owned(),
                        fork,
                        ratio,
                    ),
                ]
                .into_iter()
                .chain(swarm_rows)
                .collect(),
                cold,
            ))
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
            self.docker.start_container(&id, None).await?;
            let inspect = self.docker.inspect_container(&id, None).await?;
            let port = inspect
                .network_settings
                .and_then(|n| n.ports)
                .and_then(|mut p| p.remove("8080/tcp"))
                .flatten()
                .and_then(|b| b.into_iter().find_map(|b| b.host_port))
                .context("bare container has no published port")?;
            Ok((id, format!("http://127.0.0.1:{port}/")))
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

    /// Polls `url` until it answers 200.
    async fn wait_answer(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = client.post(url).body("x").send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{url} did not answer in 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
