//! No secret in any log: every secret value the integration tests used (registered by
//! `tests/hark/util.rs`: `HARK_SECRET_*` values, admin and minted tokens, secrets created
//! through the API, the secrets' key) is looked for — as is, hex, base64 and
//! percent-encoded — in every log line the tests' gateways and `hark` commands wrote
//! (`target/tmp/test-logs/run-PID/*.log`).
//!
//! Cargo runs a package's integration-test binaries one after another in the order of
//! their names, so this one (`zz_...`) runs after `hark` (checked with `cargo test
//! --workspace -- --list`: `tests/hark/main.rs` is listed before `tests/zz_...`). The logs
//! of a run that passes the check are removed; those of a failing one are kept to look at.
//! Run alone without logs it passes with a note, except under `CI`, where missing logs
//! fail (so that the check cannot pass silently).

use std::path::{Path, PathBuf};

use base64::Engine;

/// Shorter values would match ordinary words; tests use longer secrets.
const MIN_LEN: usize = 6;

fn logs_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-logs")
}

/// Every spelling of `secret` a log could carry it in.
fn spellings(secret: &[u8]) -> Vec<Vec<u8>> {
    let b64 = [
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    ];
    let mut forms = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
        // As `{:?}` would print it.
        format!("{:?}", String::from_utf8_lossy(secret))
            .trim_matches('"')
            .as_bytes()
            .to_vec(),
        url::form_urlencoded::byte_serialize(secret)
            .collect::<String>()
            .into_bytes(),
    ];
    forms.extend(b64.into_iter().map(String::into_bytes));
    forms.sort();
    forms.dedup();
    forms
}

/// The secret shown safely: its first two characters and its length.
fn masked(secret: &[u8]) -> String {
    let head: String = String::from_utf8_lossy(secret).chars().take(2).collect();
    format!("{head}… ({} bytes)", secret.len())
}

struct Run {
    dir: PathBuf,
    logs: Vec<PathBuf>,
    secrets: Vec<(String, Vec<u8>)>,
}

fn read_run(dir: &Path) -> Run {
    let mut logs = Vec::new();
    let mut secrets = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            logs.push(path);
        } else if path.file_name().is_some_and(|n| n == "secrets.tsv") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let (test, value) = line.split_once('\t').unwrap_or(("?", line));
                secrets.push((test.to_owned(), hex::decode(value).unwrap()));
            }
        }
    }
    logs.sort();
    Run {
        dir: dir.to_owned(),
        logs,
        secrets,
    }
}

#[test]
fn no_secret_the_tests_used_appears_in_any_log_they_produced() {
    let runs: Vec<Run> = std::fs::read_dir(logs_root())
        .map(|dirs| {
            dirs.flatten()
                .filter(|d| d.file_name().to_string_lossy().starts_with("run-"))
                .map(|d| read_run(&d.path()))
                .collect()
        })
        .unwrap_or_default();
    let logs: usize = runs.iter().map(|r| r.logs.len()).sum();
    let mut secrets: Vec<(String, Vec<u8>)> = runs.iter().flat_map(|r| r.secrets.clone()).collect();
    secrets.sort_by(|a, b| a.1.cmp(&b.1));
    secrets.dedup_by(|a, b| a.1 == b.1);
    if logs == 0 || secrets.is_empty() {
        let why = format!(
            "no test logs ({logs} log files, {} secrets) under {}: run the whole suite \
             (`cargo test --workspace`) so that the `hark` tests write them first",
            secrets.len(),
            logs_root().display()
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let short: Vec<String> = secrets
        .iter()
        .filter(|(_, s)| s.len() < MIN_LEN)
        .map(|(test, s)| format!("{} from {test}", masked(s)))
        .collect();
    let secrets: Vec<(String, Vec<u8>, Vec<Vec<u8>>)> = secrets
        .into_iter()
        .filter(|(_, s)| s.len() >= MIN_LEN)
        .map(|(test, s)| {
            let forms = spellings(&s);
            (test, s, forms)
        })
        .collect();
    // One automaton for every spelling of every secret: each line is read once, however
    // many secrets there are (a window scan per secret and spelling took minutes over the
    // whole suite's logs in a debug build).
    let owner: Vec<usize> = secrets
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, forms))| std::iter::repeat_n(i, forms.len()))
        .collect();
    let finder = aho_corasick::AhoCorasick::new(secrets.iter().flat_map(|(_, _, forms)| forms))
        .expect("an automaton of the secrets' spellings");
    let mut found = Vec::new();
    let mut lines = 0usize;
    for run in &runs {
        for log in &run.logs {
            let text = std::fs::read(log).unwrap();
            for (n, line) in text.split(|b| *b == b'\n').enumerate() {
                lines += 1;
                let mut hits: Vec<usize> = finder
                    .find_overlapping_iter(line)
                    .map(|m| owner[m.pattern().as_usize()])
                    .collect();
                hits.sort_unstable();
                hits.dedup();
                for i in hits {
                    let (test, secret, _) = &secrets[i];
                    found.push(format!(
                        "{}:{}: the secret {} (used by {test})",
                        log.display(),
                        n + 1,
                        masked(secret)
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "secrets in the test suite's logs:\n{}",
        found.join("\n")
    );
    eprintln!(
        "checked {lines} log lines in {logs} files for {} secret values ({} too short to look for: {})",
        secrets.len(),
        short.len(),
        short.join(", ")
    );
    for run in runs {
        let _ = std::fs::remove_dir_all(run.dir);
    }
}
