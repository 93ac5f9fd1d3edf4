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

    let mut rows = Vec::new();
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
        "http mode: hello called directly (baseline)",
        baseline,
        None,
    ));
    let ratio = Some(rows[0].1.rate());
    rows.push(("http mode: hello through the gateway", through, ratio));

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
        "fork mode: spawn cat per request (baseline)",
        baseline,
        None,
    ));
    rows.push(("fork mode: cat through the gateway", through, ratio));

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
    rows.push(("gateway GET /healthz (HTTP floor, baseline)", floor, None));
    rows.push(("async enqueue, durable (202 after commit)", enqueue, ratio));
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
    rows.push(("alexa: verify: false (baseline)", baseline, None));
    rows.push((
        "alexa: verified Signature-256, chain cached",
        verified,
        ratio,
    ));

    let peak = gateway.peak_rss_kib();
    println!(
        "{:<46} {:>10} {:>9} {:>9} {:>8} {:>7}",
        "path", "req/s", "p50 ms", "p99 ms", "errors", "ratio"
    );
    for (name, f, baseline) in &rows {
        let ratio = baseline.map_or("1.00".to_owned(), |b| format!("{:.2}", f.rate() / b));
        println!(
            "{:<46} {:>10.0} {:>9.2} {:>9.2} {:>8} {:>7}",
            name,
            f.rate(),
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.errors,
            ratio
        );
    }
    println!("gateway peak RSS: {:.1} MiB", peak as f64 / 1024.0);
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
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
        let mut child = tokio::process::Command::new(exe)
            .arg("--data")
            .arg(data)
            .args(["up", "--port", "0", "--config"])
            .arg(config)
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
