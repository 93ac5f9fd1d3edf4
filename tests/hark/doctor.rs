//! `hark doctor` against this machine with one dependency missing or broken at a time:
//! each miss is named with its fix and makes the exit status non-zero, and a set-up with
//! nothing missing passes.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::util::{hark_bin, Gateway};

/// The stack file the checks read: a function naming a secret, a hook route.
const STACK: &str = r#"
version: 1.0
functions:
  needs-key:
    fprocess: cat
    secrets: [doctor-key]
channels:
  hooks:
    ping:
      function: needs-key
      public: true
"#;

/// `hark doctor -o json` in `dir`, with extra arguments and variables: its exit success
/// and its checks by name.
fn doctor(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, Value) {
    let mut command = Command::new(hark_bin());
    command
        .env_remove("HARK_STORE")
        .env_remove("HARK_STORE_FILE");
    // The gateway's store, when its data directory's gateway keeps it on PostgreSQL.
    let data = args
        .iter()
        .position(|a| *a == "--data")
        .map(|i| args[i + 1]);
    if let Some(url) = data.and_then(|d| crate::util::test_store(Path::new(d))) {
        command.env("HARK_STORE", url);
    }
    let output = command
        .current_dir(dir)
        .args(["-o", "json", "doctor"])
        .args(args)
        .env_remove("HARK_TEST_CLOCK")
        .env_remove("HARK_PUBLIC_URL")
        .env_remove("HARK_PROVIDER")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(report["ok"], output.status.success(), "{report}");
    let mut checks = serde_json::Map::new();
    for check in report["checks"].as_array().unwrap() {
        checks.insert(check["name"].as_str().unwrap().to_owned(), check.clone());
    }
    (output.status.success(), Value::Object(checks))
}

/// Whether the engine and the browser are here; under CI they must be.
fn machine_has(docker: bool, chromium: bool) -> bool {
    let docker_ok = !docker || Path::new("/var/run/docker.sock").exists();
    let chromium_ok = !chromium || Path::new("/usr/lib/chromium/chromium").exists();
    if docker_ok && chromium_ok {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs Docker and Chromium (apt-get install chromium chromium-driver)"
    );
    eprintln!("SKIPPED in part: Docker or Chromium is not installed here");
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_each_missing_dependency_with_its_fix_and_passes_when_none_is() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hark.yml"), STACK).unwrap();
    let data = gw.data.display().to_string();
    // The gateway's own answers carry a Date: the time source for the clock check.
    let time_url = format!("{}/healthz", gw.url);
    let base = [
        "--gateway",
        &gw.url,
        "--data",
        &data,
        "--time-url",
        &time_url,
        "--public-url",
        "https://hark.example.org",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        doctor(dir.path(), &args, env)
    };

    // The secret the stack names is missing.
    let (ok, checks) = run(&[], &[]);
    assert!(!ok, "{checks}");
    assert_eq!(checks["secrets"]["status"], "miss", "{checks}");
    assert!(checks["secrets"]["detail"]
        .as_str()
        .unwrap()
        .contains("doctor-key"));
    assert!(checks["secrets"]["fix"]
        .as_str()
        .unwrap()
        .contains("hark secret create doctor-key"));
    // Set through the environment hark up reads, it counts.
    let (_, checks) = run(&[], &[("HARK_SECRET_DOCTOR_KEY", "x")]);
    assert_eq!(checks["secrets"]["status"], "ok", "{checks}");
    let created = gw
        .request(reqwest::Method::POST, "/system/secrets")
        .json(&json!({ "name": "doctor-key", "value": "s3cret-doctor" }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());

    // Nothing missing: every check passes (the engine and Chromium are on CI machines).
    if machine_has(true, true) {
        let (ok, checks) = run(&[], &[]);
        assert!(ok, "{checks:#}");
        for name in [
            "data", "browser", "docker", "secrets", "clock", "gateway", "channels",
        ] {
            assert_eq!(checks[name]["status"], "ok", "{name}: {checks:#}");
        }
        assert!(checks["channels"]["detail"]
            .as_str()
            .unwrap()
            .contains("https://hark.example.org/hooks/ping"));
    }

    // Chromium absent.
    let (ok, checks) = run(&["--chromium", "/nonexistent/chromium"], &[]);
    assert!(!ok);
    assert_eq!(checks["browser"]["status"], "miss");
    assert!(checks["browser"]["detail"]
        .as_str()
        .unwrap()
        .contains("not found"));
    assert!(checks["browser"]["fix"]
        .as_str()
        .unwrap()
        .contains("apt-get install chromium chromium-driver"));

    // The engine unreachable: a miss for the docker provider, a warning for process.
    let nowhere = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let (ok, checks) = run(&["--provider", "docker"], &nowhere);
    assert!(!ok);
    assert_eq!(checks["docker"]["status"], "miss", "{checks}");
    assert!(checks["docker"]["fix"]
        .as_str()
        .unwrap()
        .contains("start the engine"));
    let (_, checks) = run(&["--provider", "process"], &nowhere);
    assert_eq!(checks["docker"]["status"], "warn", "{checks}");

    // The clock ten minutes ahead of the time source.
    let ahead = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let (ok, checks) = run(&[], &[("HARK_TEST_CLOCK", &ahead)]);
    assert!(!ok, "{checks:#}");
    assert_eq!(checks["clock"]["status"], "miss", "{checks}");
    let detail = checks["clock"]["detail"].as_str().unwrap();
    assert!(detail.contains("ahead"), "{detail}");
    assert!(checks["clock"]["fix"]
        .as_str()
        .unwrap()
        .contains("timedatectl"));

    // A data directory that cannot be written (even by root: /proc).
    let (ok, checks) = doctor(
        dir.path(),
        &["--gateway", &gw.url, "--data", "/proc/hark-doctor-data"],
        &[],
    );
    assert!(!ok);
    assert_eq!(checks["data"]["status"], "miss", "{checks}");
    assert!(checks["data"]["fix"].as_str().unwrap().contains("--data"));

    // A key readable by other users, in a directory they may enter.
    use std::os::unix::fs::PermissionsExt as _;
    let key = gw.data.join("jwt.key");
    let set = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set(&gw.data, 0o755);
    set(&key, 0o644);
    let (ok, checks) = run(&[], &[]);
    set(&key, 0o600);
    set(&gw.data, 0o700);
    assert!(!ok);
    assert_eq!(checks["data"]["status"], "miss", "{checks}");
    assert!(checks["data"]["detail"]
        .as_str()
        .unwrap()
        .contains("jwt.key"));
    assert!(checks["data"]["fix"]
        .as_str()
        .unwrap()
        .starts_with("chmod 700"));

    // A public URL that is not HTTPS.
    let (ok, checks) = doctor(
        dir.path(),
        &["--data", &data, "--public-url", "http://hark.example.org"],
        &[],
    );
    assert!(!ok);
    assert_eq!(checks["channels"]["status"], "miss", "{checks}");

    // No gateway at the URL.
    let (ok, checks) = doctor(
        dir.path(),
        &["--data", &data, "--gateway", "http://127.0.0.1:9"],
        &[],
    );
    assert!(!ok);
    assert_eq!(checks["gateway"]["status"], "miss", "{checks}");
    assert!(checks["gateway"]["fix"]
        .as_str()
        .unwrap()
        .contains("hark up"));
}

/// On PostgreSQL (`--store` or `HARK_STORE_FILE`, as `hark up` is given it), the doctor
/// checks the database the gateways share, and finds the secrets there rather than in a
/// SQLite file.
#[tokio::test]
async fn doctor_checks_the_postgres_store_and_finds_its_secrets_there() {
    let Some(cluster) = crate::pg_cluster::cluster() else {
        return;
    };
    let url = cluster.database().await;
    let gw = Gateway::start_with(&["--store", &url]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hark.yml"), STACK).unwrap();
    let created = gw
        .request(reqwest::Method::POST, "/system/secrets")
        .json(&json!({ "name": "doctor-key", "value": "in-postgres" }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    crate::util::register_secret("in-postgres");
    let data = gw.data.display().to_string();
    // The store checked is the database, its schema read, and the stack's secret found there.
    let found_in_postgres = |checks: &Value| {
        assert_eq!(checks["store"]["status"], "ok", "{checks}");
        let detail = checks["store"]["detail"].as_str().unwrap();
        assert!(detail.contains("schema version"), "{checks}");
        assert_eq!(checks["secrets"]["status"], "ok", "{checks}");
    };
    let (_, checks) = doctor(
        dir.path(),
        &["--gateway", &gw.url, "--data", &data, "--store", &url],
        &[],
    );
    found_in_postgres(&checks);

    // The same with the URL in a file (`HARK_STORE_FILE`, a Swarm secret), as the
    // gateways of deploy/swarm/stack.yml are given it: not SQLite's file in --data.
    let url_file = dir.path().join("store");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    let (_, checks) = doctor(
        dir.path(),
        &["--gateway", &gw.url],
        &[
            ("HARK_DATA", data.as_str()),
            ("HARK_STORE_FILE", url_file.to_str().unwrap()),
        ],
    );
    found_in_postgres(&checks);

    // A database that does not answer is named, with the cause, and no password.
    let (ok, checks) = doctor(
        dir.path(),
        &[
            "--data",
            &data,
            "--store",
            "postgres://hark:pw-not-shown@127.0.0.1:1/hark",
        ],
        &[],
    );
    assert!(!ok);
    let detail = checks["store"]["detail"].as_str().unwrap();
    assert_eq!(checks["store"]["status"], "miss", "{checks}");
    assert!(detail.contains("Connection refused"), "{detail}");
    assert!(!detail.contains("pw-not-shown"), "{detail}");
}
