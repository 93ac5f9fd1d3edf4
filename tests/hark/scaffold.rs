//! `hark new`: each template made in a temporary project by the `hark` binary, built the
//! way its next steps say, and called through a real `hark up` — with the process provider,
//! and (shell, rust, python) after `hark build` with the docker provider. The browser
//! function drives a ChromeDriver the test starts, opening a page the test serves.
//!
//! Rust templates build with `CARGO_TARGET_DIR` set to the workspace's target directory and
//! the workspace's `Cargo.lock` beside them, so dependencies compiled for the workspace are
//! reused. Docker or ChromeDriver missing: a failure when `CI` is set, a skip otherwise.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::contract::{docker, engine_available};
use crate::util::{hark_bin, Gateway};

/// The workspace's target directory, where the `hark` under test was built.
fn target_dir() -> PathBuf {
    let bin = hark_bin();
    bin.parent()
        .and_then(Path::parent)
        .expect("hark is built in TARGET/debug")
        .to_owned()
}

/// A name no other run uses (images are global to the engine).
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A temporary project directory, also the data directory of its gateways.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `hark ARGS` in the project.
    fn hark(&self, args: &[&str]) -> Output {
        Command::new(hark_bin())
            .args(args)
            .current_dir(self.path())
            .env("CARGO_TARGET_DIR", target_dir())
            .env("HARK_LOG", "warn")
            .output()
            .expect("run hark")
    }

    /// `hark new NAME --lang LANG`, which must succeed; returns what it printed.
    fn create(&self, name: &str, lang: &str) -> String {
        let out = self.hark(&["new", name, "--lang", lang]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "hark new {name} --lang {lang}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Builds a Rust function the way `hark new` says, with the workspace's target
    /// directory and lock file, and prints how long that took. The build output is removed
    /// from the target directory when the returned guard drops (each run's crate is new).
    fn cargo_build(&self, name: &str, next_steps: &str) -> CrateArtifacts {
        let artifacts = CrateArtifacts(name.to_owned());
        let command = format!("cargo build --manifest-path functions/{name}/Cargo.toml");
        assert!(next_steps.contains(&command), "{next_steps}");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"),
            self.path().join(format!("functions/{name}/Cargo.lock")),
        )
        .unwrap();
        let started = Instant::now();
        let out = Command::new(env!("CARGO"))
            .args(["build", "--manifest-path"])
            .arg(format!("functions/{name}/Cargo.toml"))
            .current_dir(self.path())
            .env("CARGO_TARGET_DIR", target_dir())
            .env("CARGO_TERM_COLOR", "never")
            .output()
            .expect("run cargo");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "cargo build of {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "scaffold: cargo build of {name} took {:.1}s",
            took.as_secs_f64()
        );
        artifacts
    }

    /// A gateway with the process provider on this project's `hark.yml`.
    fn gateway(&self, args: &[&str]) -> Gateway {
        let target = target_dir().display().to_string();
        Gateway::start_in_with_env(self.path(), args, &[("CARGO_TARGET_DIR", &target)])
    }
}

/// A test crate's build output in the shared target directory, removed when dropped.
struct CrateArtifacts(String);

impl Drop for CrateArtifacts {
    fn drop(&mut self) {
        let debug = target_dir().join("debug");
        let _ = std::fs::remove_file(debug.join(&self.0));
        let _ = std::fs::remove_file(debug.join(format!("{}.d", self.0)));
        // deps/web_1234abcd-HASH, .fingerprint/web-1234abcd-HASH, incremental/web_1234abcd-ID
        let prefix = format!("{}_", self.0.replace('-', "_"));
        for dir in ["deps", ".fingerprint", "incremental"] {
            let Ok(entries) = std::fs::read_dir(debug.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let file_name = entry.file_name().to_string_lossy().replace('-', "_");
                if file_name.starts_with(&prefix) {
                    let path = entry.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
    }
}

/// Whether the engine is there: in CI its absence fails the test; elsewhere it is skipped.
fn docker_or_skip(test: &str) -> bool {
    let ok = engine_available();
    if !ok {
        eprintln!(
            "SKIPPED: {test}: no Docker Engine, or no static busybox for its image (set CI to make this a failure)"
        );
    }
    ok
}

static BASES_BEFORE: OnceLock<HashSet<String>> = OnceLock::new();

fn watchdog_images() -> HashSet<String> {
    docker(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "hark/watchdog",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Removes the watchdog images that appeared during the run (at process exit).
extern "C" fn remove_new_watchdog_images() {
    if let Some(before) = BASES_BEFORE.get() {
        for image in watchdog_images().difference(before) {
            docker(&["rmi", "-f", image]);
        }
    }
}

/// What a docker run of the test made: its network, its gateway's containers and its
/// images, removed when dropped (declare it before the gateway, so it drops after).
struct DockerRun {
    network: String,
    data: PathBuf,
    images: Vec<String>,
}

impl DockerRun {
    fn new(data: &Path) -> DockerRun {
        BASES_BEFORE.get_or_init(|| {
            // SAFETY: registers a plain extern "C" function once.
            unsafe {
                libc::atexit(remove_new_watchdog_images);
            }
            watchdog_images()
        });
        let network = unique("hark-test-scaffold");
        docker(&[
            "network",
            "create",
            "--label",
            "com.hark.network=true",
            &network,
        ]);
        DockerRun {
            network,
            data: data.to_owned(),
            images: Vec::new(),
        }
    }
}

impl Drop for DockerRun {
    fn drop(&mut self) {
        if let Ok(instance) = std::fs::read_to_string(self.data.join("docker-instance")) {
            let label = format!("label=com.hark.instance={}", instance.trim());
            for id in docker(&["ps", "-aq", "--filter", &label]).lines() {
                docker(&["rm", "-f", id]);
            }
        }
        // The gateway fenced its containers off the host with iptables rules for the bridge.
        let id = docker(&["network", "inspect", "--format", "{{.Id}}", &self.network]);
        if let Some(short) = id.get(..12) {
            crate::contract::remove_fence_rules(&format!("br-{short}"));
        }
        docker(&["network", "rm", &self.network]);
        for image in &self.images {
            docker(&["rmi", "-f", image]);
        }
    }
}

/// `hark build NAME` in the project; the image is removed when `run` drops.
fn hark_build(project: &Project, run: &mut DockerRun, name: &str) {
    let image = format!("hark/{name}:latest");
    run.images.push(image.clone());
    let out = project.hark(&["build", name]);
    assert!(
        out.status.success(),
        "hark build {name}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = docker(&["image", "inspect", "--format", "{{.Size}}", &image]);
    eprintln!("scaffold: {image} is {size} bytes");
}

/// Builds `name`'s image and calls it through `hark up --provider docker`.
async fn check_in_docker(project: &Project, name: &str) {
    if !docker_or_skip(&format!("{name} in docker")) {
        return;
    }
    let mut run = DockerRun::new(project.path());
    hark_build(project, &mut run, name);
    let mut gw = project.gateway(&["--provider", "docker", "--docker-network", &run.network]);
    assert_eq!(
        gw.invoke(name, "Ada").await,
        (200, format!("Hello from {name}, Ada!\n")),
        "{}",
        gw.output()
    );
    assert!(gw.stop());
}

/// Creates a function from `lang`, runs its build step, and calls it with the process
/// provider and then the docker provider.
async fn check_template(lang: &str, prefix: &str) {
    let project = Project::new();
    let name = unique(prefix);
    let next = project.create(&name, lang);
    let _artifacts = (lang == "rust").then(|| project.cargo_build(&name, &next));
    {
        let gw = project.gateway(&[]);
        assert_eq!(
            gw.invoke(&name, "Ada").await,
            (200, format!("Hello from {name}, Ada!\n")),
            "{}",
            gw.output()
        );
        assert_eq!(
            gw.invoke(&name, "").await.1,
            format!("Hello from {name}, world!\n")
        );
    }
    check_in_docker(&project, &name).await;
}

#[tokio::test]
async fn the_shell_template_runs_under_both_providers() {
    check_template("shell", "sh").await;
}

#[tokio::test]
async fn the_rust_template_runs_under_both_providers() {
    check_template("rust", "rs").await;
}

#[tokio::test]
async fn the_python_template_runs_under_both_providers() {
    check_template("python", "py").await;
}

#[test]
fn hark_new_lists_its_templates_and_refuses_bad_input_clearly() {
    let project = Project::new();
    let out = project.hark(&["new", "--list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    let langs: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(langs, ["shell", "rust", "python", "browser"], "{list}");

    // A stack file of the user's: comments, order and the other sections stay as they are.
    let stack = "\
# my bots
functions:
  # the greeter
  greet: { fprocess: cat }   # inline is fine for an entry

alexa:
  skills: ./skills
";
    std::fs::write(project.path().join("hark.yml"), stack).unwrap();
    project.create("tidy", "shell");
    assert_eq!(
        std::fs::read_to_string(project.path().join("hark.yml")).unwrap(),
        "\
# my bots
functions:
  # the greeter
  greet: { fprocess: cat }   # inline is fine for an entry
  tidy:
    lang: shell
    handler: ./functions/tidy
    fprocess: ./handler.sh

alexa:
  skills: ./skills
"
    );
    let refused = |args: &[&str], expected: &str| {
        let out = project.hark(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    refused(
        &["new", "tidy", "--lang", "python"],
        "functions/tidy already exists",
    );
    refused(
        &["new", "greet", "--lang", "python"],
        "already a function named \"greet\"",
    );
    refused(
        &["new", "Not_Valid", "--lang", "shell"],
        "invalid function name",
    );
    refused(
        &["new", "ok", "--lang", "cobol"],
        "unknown language \"cobol\"",
    );
    // Nothing was written by the refused calls.
    assert!(!project.path().join("functions/greet").exists());
    assert!(!project.path().join("functions/ok").exists());
}

/// A ChromeDriver of the test's own, killed with its browsers when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    /// Starts one on a free port; `None` (a skip) when it is not installed, outside CI.
    fn start() -> Option<ChromeDriver> {
        if Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but chromedriver is not installed");
            }
            eprintln!("SKIPPED: chromedriver is not installed (set CI to make this a failure)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so the browsers it starts go with it.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(driver)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // SAFETY: signals the process group this test started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Serves one small page on 127.0.0.1 for the life of the test process.
fn serve_page(title: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let page =
        format!("<!doctype html><html><head><title>{title}</title></head><body>hi</body></html>");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn the_browser_template_opens_a_page_through_webdriver() {
    let Some(driver) = ChromeDriver::start() else {
        return;
    };
    let project = Project::new();
    let name = unique("web");
    let next = project.create(&name, "browser");
    let _artifacts = project.cargo_build(&name, &next);
    let binary = target_dir().join("debug").join(&name);

    // Without HARK_WEBDRIVER_URL it says what is missing.
    let out = Command::new(&binary)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HARK_WEBDRIVER_URL is not set"), "{stderr}");

    // The variable in the function's environment, as the gateway's browser pool will set it.
    let stack_path = project.path().join("hark.yml");
    let stack = std::fs::read_to_string(&stack_path).unwrap();
    let with_driver = stack.replace(
        "      content_type: application/json\n",
        &format!(
            "      content_type: application/json\n      HARK_WEBDRIVER_URL: {}\n",
            driver.url
        ),
    );
    assert_ne!(stack, with_driver);
    // The sandbox lets the function connect to the gateway's ports only, unless told.
    let port = driver.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let with_driver = with_driver.replace(
        "      hark.timeout: 60s\n",
        &format!("      hark.timeout: 60s\n      hark.network.connect: \"{port}\"\n"),
    );
    std::fs::write(&stack_path, with_driver).unwrap();

    let page = serve_page("Scaffold test page");
    {
        let gw = project.gateway(&[]);
        let response = gw
            .client
            .post(format!("{}/function/{name}", gw.url))
            .body(page.clone())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", gw.output());
        assert_eq!(content_type, "application/json");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["title"], "Scaffold test page", "{answer}");
        assert_eq!(answer["url"], page.as_str());
    }

    // Its image builds too (calling it in a container waits for the gateway's browser pool).
    if docker_or_skip("browser image") {
        let mut run = DockerRun::new(project.path());
        hark_build(&project, &mut run, &name);
    }
}
