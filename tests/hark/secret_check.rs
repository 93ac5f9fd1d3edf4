//! No secret in any log: a log a test's gateway or `hark` command wrote comes in; the
//! test fails if any secret value this test process used (registered by `util.rs`:
//! `HARK_SECRET_*` values, admin and minted tokens, secrets created through the API, the
//! secrets' key) shows up in it — as is, hex, base64, `{:?}`-escaped or percent-encoded.
//!
//! Each log is checked when its gateway has stopped (or when a test hands over a
//! command's output), inside the test that made it, so the check depends on no order of
//! test binaries and names the test whose log leaked. A log that passes is removed; a
//! failing one is kept to look at.

use std::path::Path;

use base64::Engine;

/// Shorter values would match ordinary words; tests use longer secrets.
const MIN_LEN: usize = 6;

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

/// The secrets registered so far in `registry` (`TEST\tHEX` lines): `(test, value)`.
fn registered(registry: &Path) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(registry).unwrap_or_default();
    let mut secrets: Vec<(String, Vec<u8>)> = text
        .lines()
        .filter_map(|line| {
            let (test, value) = line.split_once('\t')?;
            Some((test.to_owned(), hex::decode(value).ok()?))
        })
        .filter(|(_, value)| value.len() >= MIN_LEN)
        .collect();
    secrets.sort_by(|a, b| a.1.cmp(&b.1));
    secrets.dedup_by(|a, b| a.1 == b.1);
    secrets
}

/// The lines of `text` that carry a secret of `secrets`, described without the secret.
fn leaks(text: &[u8], secrets: &[(String, Vec<u8>)]) -> Vec<String> {
    if secrets.is_empty() {
        return Vec::new();
    }
    let forms: Vec<Vec<Vec<u8>>> = secrets.iter().map(|(_, s)| spellings(s)).collect();
    let owner: Vec<usize> = forms
        .iter()
        .enumerate()
        .flat_map(|(i, f)| std::iter::repeat_n(i, f.len()))
        .collect();
    // One automaton for every spelling of every secret: each line is read once.
    let finder = aho_corasick::AhoCorasick::new(forms.iter().flatten())
        .expect("an automaton of the secrets' spellings");
    let mut found = Vec::new();
    for (n, line) in text.split(|b| *b == b'\n').enumerate() {
        let mut hits: Vec<usize> = finder
            .find_overlapping_iter(line)
            .map(|m| owner[m.pattern().as_usize()])
            .collect();
        hits.sort_unstable();
        hits.dedup();
        for i in hits {
            let (test, secret) = &secrets[i];
            found.push(format!(
                "line {}: the secret {} (used by {test})",
                n + 1,
                masked(secret)
            ));
        }
    }
    found
}

/// Panics if the log at `log` carries a secret registered in `registry`; removes it when
/// it is clean.
pub fn check_log(log: &Path, registry: &Path) {
    let text = std::fs::read(log).unwrap_or_default();
    let found = leaks(&text, &registered(registry));
    assert!(
        found.is_empty(),
        "secrets in the log {} (kept to look at):\n{}",
        log.display(),
        found.join("\n")
    );
    let _ = std::fs::remove_file(log);
}

#[test]
fn every_spelling_of_a_secret_is_found_and_ordinary_text_is_not() {
    let secret = b"s3cret-Value/with+chars".to_vec();
    let secrets = vec![("t".to_owned(), secret.clone())];
    for form in spellings(&secret) {
        let mut line = b"INFO something happened value=".to_vec();
        line.extend_from_slice(&form);
        assert_eq!(leaks(&line, &secrets).len(), 1, "{form:?} missed");
    }
    assert!(leaks(b"INFO nothing to see\nWARN s3cret-V", &secrets).is_empty());
    let dir = tempfile::tempdir().unwrap();
    let (log, registry) = (dir.path().join("a.log"), dir.path().join("s.tsv"));
    std::fs::write(&registry, format!("t\t{}\n", hex::encode(&secret))).unwrap();
    std::fs::write(&log, "clean\n").unwrap();
    check_log(&log, &registry);
    assert!(!log.exists(), "a clean log is removed");
    std::fs::write(&log, b"token s3cret-Value/with+chars\n").unwrap();
    let leaked = std::panic::catch_unwind(|| check_log(&log, &registry));
    assert!(leaked.is_err(), "a leaked secret must fail the test");
    assert!(log.exists(), "a leaking log is kept");
}
