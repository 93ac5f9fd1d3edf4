//! The load generators of `hark bench`: a [`Target`] (method, URL, body, headers) comes in
//! and its [`Figures`] (requests answered 2xx per second, p50, p99, errors) go out. `wrk`
//! is used when it is on `$PATH` — the issue's reference figures were taken with it, so
//! the ratios compare — and an in-process reqwest generator otherwise. Every row of one
//! run uses the same generator.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

/// One HTTP request, sent over and over.
#[derive(Clone)]
pub(super) struct Target {
    pub method: http::Method,
    pub url: String,
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    /// A header given a value unique to each request (`X-GitHub-Delivery`).
    pub unique_header: Option<String>,
}

impl Target {
    /// `POST url` with `body` as `content_type`.
    pub fn post(url: impl Into<String>, content_type: &str, body: impl Into<Bytes>) -> Target {
        Target {
            method: http::Method::POST,
            url: url.into(),
            body: body.into(),
            headers: vec![("Content-Type".into(), content_type.into())],
            unique_header: None,
        }
    }

    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Target {
        Target {
            method: http::Method::GET,
            url: url.into(),
            body: Bytes::new(),
            headers: Vec::new(),
            unique_header: None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Target {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn unique(mut self, name: &str) -> Target {
        self.unique_header = Some(name.to_owned());
        self
    }
}

/// What one measurement found.
#[derive(Debug, Clone, Default)]
pub(super) struct Figures {
    /// Requests answered 2xx (or 3xx).
    pub requests: u64,
    /// Requests answered 4xx/5xx, or failed on the socket.
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Figures {
    /// Rounds of one row as one: requests, errors and time added up; p50 and p99 the
    /// medians of the rounds'.
    pub fn combine(rounds: &[Figures]) -> Figures {
        let median = |pick: fn(&Figures) -> Duration| {
            let mut values: Vec<Duration> = rounds.iter().map(pick).collect();
            values.sort();
            values.get(values.len() / 2).copied().unwrap_or_default()
        };
        Figures {
            requests: rounds.iter().map(|r| r.requests).sum(),
            errors: rounds.iter().map(|r| r.errors).sum(),
            elapsed: rounds.iter().map(|r| r.elapsed).sum(),
            p50: median(|r| r.p50),
            p99: median(|r| r.p99),
        }
    }

    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Which load generator a run uses.
#[derive(Debug, Clone)]
pub(super) enum Generator {
    /// `wrk --latency` with a Lua script, `-t2` (fewer with fewer connections).
    Wrk { program: PathBuf, scripts: PathBuf },
    /// reqwest workers inside `hark bench`, one per connection.
    Builtin { client: reqwest::Client },
}

/// `--generator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GeneratorChoice {
    /// wrk when it is on $PATH, else the built-in generator.
    Auto,
    Wrk,
    Builtin,
}

/// wrk's thread count in the issue's reference runs.
const WRK_THREADS: usize = 2;

/// Tells each wrk run's unique headers apart from the previous runs'.
static RUNS: AtomicU64 = AtomicU64::new(0);

impl Generator {
    /// The generator `choice` asks for; scripts for wrk are written below `dir`.
    pub fn choose(choice: GeneratorChoice, dir: &Path) -> anyhow::Result<Generator> {
        let wrk = which::which("wrk").ok();
        match (choice, wrk) {
            (GeneratorChoice::Builtin, _) | (GeneratorChoice::Auto, None) => {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .pool_max_idle_per_host(1024)
                    .build()?;
                Ok(Generator::Builtin { client })
            }
            (_, Some(program)) => {
                let scripts = dir.join("wrk");
                std::fs::create_dir_all(&scripts)?;
                Ok(Generator::Wrk { program, scripts })
            }
            (GeneratorChoice::Wrk, None) => {
                bail!("--generator wrk: wrk is not on $PATH (Debian: apt-get install wrk)")
            }
        }
    }

    /// One line saying what generates the load.
    pub fn describe(&self, connections: usize) -> String {
        match self {
            Generator::Wrk { program, .. } => {
                let version = std::process::Command::new(program)
                    .arg("--version")
                    .output()
                    .ok()
                    .and_then(|o| {
                        let text = String::from_utf8_lossy(&o.stdout).into_owned()
                            + &String::from_utf8_lossy(&o.stderr);
                        text.lines()
                            .next()
                            .map(|l| l.split(" Copyright").next().unwrap_or(l).trim().to_owned())
                    })
                    .unwrap_or_else(|| "wrk".to_owned());
                format!(
                    "load generator: {version}, -t{} -c{connections} --latency",
                    WRK_THREADS.min(connections)
                )
            }
            Generator::Builtin { .. } => format!(
                "load generator: built-in (reqwest, {connections} connections) — wrk is not \
                 on $PATH, so figures do not compare with wrk's (apt-get install wrk)"
            ),
        }
    }

    /// Sends `target` from `connections` connections: `warmup` unrecorded, then `duration`
    /// recorded. wrk runs whole seconds (at least one).
    pub async fn measure(
        &self,
        target: &Target,
        connections: usize,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<Figures> {
        let connections = connections.max(1);
        match self {
            Generator::Wrk { program, scripts } => {
                if !warmup.is_zero() {
                    wrk(program, scripts, target, connections, warmup).await?;
                }
                wrk(program, scripts, target, connections, duration).await
            }
            Generator::Builtin { client } => {
                Ok(builtin(client, target, connections, warmup, duration).await)
            }
        }
    }
}

/// Whole seconds for wrk's `-d`, at least one.
fn wrk_seconds(d: Duration) -> u64 {
    (d.as_secs_f64().round() as u64).max(1)
}

/// A Lua string literal of `text`.
fn lua_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for b in text.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// The script of one wrk run: the request, a per-request unique header if asked for, and
/// a `done` that prints the figures on one line for [`parse_wrk`].
fn wrk_script(target: &Target, body_file: &Path, run: u64) -> String {
    let mut lua = String::new();
    lua.push_str(&format!(
        "wrk.method = {}\n",
        lua_string(target.method.as_str())
    ));
    lua.push_str(&format!(
        "local f = assert(io.open({}, \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()\n",
        lua_string(&body_file.display().to_string())
    ));
    for (name, value) in &target.headers {
        lua.push_str(&format!(
            "wrk.headers[{}] = {}\n",
            lua_string(name),
            lua_string(value)
        ));
    }
    if let Some(name) = &target.unique_header {
        // Each thread numbers its own requests; the prefix tells threads and runs apart.
        lua.push_str(&format!(
            "local threads = 0\n\
             function setup(thread)\n  threads = threads + 1\n  thread:set(\"tid\", threads)\nend\n\
             local n = 0\n\
             function request()\n  n = n + 1\n  wrk.headers[{name}] = string.format(\"hark-bench-{pid}-{run}-%d-%d\", tid, n)\n  return wrk.format()\nend\n",
            name = lua_string(name),
            pid = std::process::id(),
        ));
    }
    lua.push_str(
        "function done(summary, latency, requests)\n  local e = summary.errors\n  \
         io.write(string.format(\"HARK-BENCH %.0f %.0f %.0f %.0f %.0f %.0f\\n\", summary.requests, \
         summary.duration, latency:percentile(50), latency:percentile(99), e.status, \
         e.connect + e.read + e.write + e.timeout))\nend\n",
    );
    lua
}

/// Reads the `HARK-BENCH` line of a wrk run: requests, duration µs, p50 µs, p99 µs,
/// non-2xx/3xx answers, socket errors.
fn parse_wrk(stdout: &str) -> anyhow::Result<Figures> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("HARK-BENCH "))
        .context("wrk printed no figures")?;
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|w| w.parse::<f64>().map(|f| f as u64))
        .collect::<Result<_, _>>()
        .with_context(|| format!("wrk's figures are not numbers: {line:?}"))?;
    let [requests, duration, p50, p99, status, socket] = n[..] else {
        bail!("wrk printed {} figures, not 6: {line:?}", n.len());
    };
    Ok(Figures {
        requests: requests.saturating_sub(status),
        errors: status + socket,
        elapsed: Duration::from_micros(duration.max(1)),
        p50: Duration::from_micros(p50),
        p99: Duration::from_micros(p99),
    })
}

async fn wrk(
    program: &Path,
    scripts: &Path,
    target: &Target,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let body_file = scripts.join(format!("body-{run}"));
    let script = scripts.join(format!("run-{run}.lua"));
    std::fs::write(&body_file, &target.body)?;
    std::fs::write(&script, wrk_script(target, &body_file, run))?;
    let output = tokio::process::Command::new(program)
        .arg(format!("-t{}", WRK_THREADS.min(connections)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", wrk_seconds(duration)))
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(&script)
        .arg(&target.url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let _ = std::fs::remove_file(&body_file);
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&stdout)
}

/// The built-in generator: `connections` workers, each sending one request at a time.
async fn builtin(
    client: &reqwest::Client,
    target: &Target,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Figures {
    let start = Instant::now();
    let record_from = start + warmup;
    let end = record_from + duration;
    let counter = Arc::new(AtomicU64::new(0));
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (client, target, counter) = (client.clone(), target.clone(), counter.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let mut request = client
                    .request(target.method.clone(), &target.url)
                    .body(target.body.clone());
                for (name, value) in &target.headers {
                    request = request.header(name, value);
                }
                if let Some(name) = &target.unique_header {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let value = format!("hark-bench-{}-{run}-{n}", std::process::id());
                    request = request.header(name, value);
                }
                let ok = match request.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
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
        requests: latencies.len() as u64,
        errors,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_add_up_and_their_latencies_take_the_median() {
        let round = |requests, ms: [u64; 2]| Figures {
            requests,
            errors: requests / 100,
            elapsed: Duration::from_secs(1),
            p50: Duration::from_millis(ms[0]),
            p99: Duration::from_millis(ms[1]),
        };
        // One slow round (the third) moves the rate, not the latencies.
        let rows = [
            round(1800, [17, 27]),
            round(1900, [16, 26]),
            round(900, [35, 90]),
        ];
        let combined = Figures::combine(&rows);
        assert_eq!(combined.requests, 4600);
        assert_eq!(combined.errors, 46);
        assert_eq!(combined.elapsed, Duration::from_secs(3));
        assert_eq!(combined.p50, Duration::from_millis(17));
        assert_eq!(combined.p99, Duration::from_millis(27));
        assert!((combined.rate() - 4600.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn lua_strings_escape_quotes_and_bytes() {
        assert_eq!(lua_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(lua_string("x\ny"), r#""x\010y""#);
    }

    #[test]
    fn wrk_figures_are_read_from_the_done_line() {
        let out = "Running 1s test @ http://x\n  Latency Distribution\nHARK-BENCH 1000 2000000 250 3800 10 2\n";
        let f = parse_wrk(out).unwrap();
        assert_eq!(f.requests, 990);
        assert_eq!(f.errors, 12);
        assert_eq!(f.p50, Duration::from_micros(250));
        assert_eq!(f.p99, Duration::from_micros(3800));
        assert!((f.rate() - 495.0).abs() < 1e-6);
        assert!(parse_wrk("no figures").is_err());
        assert!(parse_wrk("HARK-BENCH 1 2").is_err());
    }

    #[test]
    fn unique_headers_get_a_request_function() {
        let target =
            Target::post("http://x/", "application/json", "{}").unique("X-GitHub-Delivery");
        let script = wrk_script(&target, Path::new("/tmp/b"), 3);
        assert!(script.contains("function request()"));
        assert!(script.contains("wrk.headers[\"X-GitHub-Delivery\"]"));
        let plain = Target::post("http://x/", "application/json", "{}");
        assert!(!wrk_script(&plain, Path::new("/tmp/b"), 3).contains("function request()"));
    }
}
