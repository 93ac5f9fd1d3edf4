//! `hark bench`, run short: every row of the table appears with its figures, and the run
//! leaves no process or file behind. Not a timing test: the figures only have to exist.

use std::path::Path;
use std::process::Command;

use crate::util::hark_bin;

/// The rows every `hark bench` prints (the process provider; no flags).
const ROWS: &[&str] = &[
    "bare axum echo server (ceiling)",
    "http mode: echo function through the gateway (unix socket)",
    "http mode (unix socket), --history-max-body 0 (no stories)",
    "http mode (unix socket), --history-story-rate all (every story)",
    "http mode: echo function through the gateway (tcp, hark.listen: tcp)",
    "bare server spawning cat per request (baseline)",
    "fork mode: cat through the gateway",
    "echo at /function/echo, unsigned (channel base)",
    "slack: signed slash command → echo",
    "slack: signed slash command, --history-max-body 0",
    "slack: signed slash command, --history-story-rate all",
    "slack: signed slash command, --durability full",
    "github: signed issues.opened → echo",
    "alexa: signed intent, chain cached → echo",
    "alexa: skill with verify: false → echo (extra)",
    "gateway GET /healthz (HTTP floor)",
    "async enqueue, --durability normal (202 on commit)",
    "async enqueue, --durability full (202 after fsync)",
    "http mode through the gateway, -c8 (memory)",
];

/// The lines below the table: the other targets and the cold starts.
const CHECKS: &[&str] = &[
    "http mode: added p50 latency",
    "fork mode: p99 vs the spawn server's",
    "http mode: what keeping stories costs",
    "slack: what keeping stories costs",
    "durable async enqueue",
    "gateway RSS idle",
    "gateway peak RSS at -c8",
    "process: scale-from-zero − the function's own start-up",
    "echo started by hand → first response (own start-up)",
    "process provider: scale-from-zero → first response",
    "process provider: deploy → first response",
    "process provider: fork mode, deploy → first response",
];

/// Processes whose working directory or command line is under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if cwd.starts_with(&dir) || cmdline.contains(&dir) {
            found.push(format!("{name}: {cmdline} (in {cwd})"));
        }
    }
    found
}

#[test]
fn a_short_bench_prints_every_row_with_figures_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(hark_bin())
        .args([
            "bench",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "-c",
            "4",
            "--memory-connections",
            "8",
            "--cold-starts",
            "1",
        ])
        .env("TMPDIR", tmp.path())
        .env_remove("HARK_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "hark bench failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("load generator: "),
        "the run does not say which load generator it used:\n{stderr}"
    );
    // The slash commands still running when a row's load stops answer at their
    // response_url, a local server of the run: no gateway keeps retrying Slack's host
    // (unreachable here) through the rows after, and each stops when asked.
    for sign in ["hooks.slack.com", "did not stop"] {
        assert!(!stderr.contains(sign), "{sign:?} in:\n{stderr}");
    }
    for row in ROWS {
        let line = stdout
            .lines()
            .find(|l| l.contains(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        let rest = &line[line.find(row).unwrap() + row.len()..];
        let figures: Vec<&str> = rest.split_whitespace().collect();
        // req/s, p50 ms, p99 ms, errors, RSS MiB, ratio[, target, met]
        assert!(figures.len() >= 6, "row {row:?} lacks figures: {line}");
        let rate: f64 = figures[0].parse().unwrap_or(0.0);
        assert!(rate > 0.0, "row {row:?} served no request: {line}");
        for latency in &figures[1..3] {
            assert!(
                latency.parse::<f64>().is_ok_and(|ms| ms > 0.0),
                "row {row:?} has no latency: {line}"
            );
        }
        assert_eq!(figures[3], "0", "row {row:?} had failed requests: {line}");
        assert!(
            figures[4].parse::<f64>().is_ok_and(|mib| mib > 0.0),
            "row {row:?} has no memory figure: {line}"
        );
    }
    for check in CHECKS {
        let line = stdout
            .lines()
            .find(|l| l.contains(check))
            .unwrap_or_else(|| panic!("no line {check:?} in:\n{stdout}"));
        assert!(
            line[line.find(check).unwrap() + check.len()..]
                .chars()
                .any(|c| c.is_ascii_digit()),
            "{check:?} has no figure: {line}"
        );
    }
    let left = processes_under(tmp.path());
    assert!(
        left.is_empty(),
        "hark bench left processes behind: {left:#?}"
    );
    let files: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(files.is_empty(), "hark bench left files behind: {files:?}");
}
