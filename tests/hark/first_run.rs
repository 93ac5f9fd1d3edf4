//! A newcomer's first hour, as the README tells it: `hark up` in a fresh clone, with no
//! environment variable and nothing set up, starts without an ERROR or WARN line; the demo
//! sentence books a day through the HR portal; the clone stays clean (`git status`).
//! Run twice, on two ports, so that the portal's URL follows `--port`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, Local, Weekday};

use crate::util::{hark_bin, register_secret, strip_ansi};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh clone of the working tree as it is (tracked files, uncommitted changes too),
/// in a directory function users can reach (the sandbox runs them under uids of their own).
fn fresh_clone() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let files = git(&repo(), &["ls-files", "-z"]);
    for file in files.split('\0').filter(|f| !f.is_empty()) {
        let from = repo().join(file);
        if !from.exists() {
            continue; // deleted in the working tree, not yet committed
        }
        let to = dir.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "clone"]);
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `hark up --port PORT` in `clone` with no environment but `PATH` and `HOME`; its log.
struct FirstRun {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl FirstRun {
    fn start(clone: &Path, home: &Path, port: u16) -> FirstRun {
        let mut child = Command::new(hark_bin())
            .args(["up", "--port", &port.to_string()])
            .current_dir(clone)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hark up");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let run = FirstRun { child, log };
        run.wait_for("gateway listening on", Duration::from_secs(60));
        run
    }

    fn log(&self) -> String {
        strip_ansi(&self.log.lock().unwrap())
    }

    fn wait_for(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in hark up's output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the gateway with SIGTERM, as Ctrl-C would.
    fn stop(mut self) -> String {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "hark up exited with {status}");
        self.log()
    }
}

/// The README's second terminal: `hark say holiday "book next friday off"`, with the
/// admin token of the clone's `.hark`; what is said.
fn say(clone: &Path, port: u16, sentence: &str) -> String {
    let out = Command::new(hark_bin())
        .args(["--gateway", &format!("http://127.0.0.1:{port}")])
        .args(["say", "holiday", sentence])
        .current_dir(clone)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// The bookings the portal holds (in its state directory, under the data directory).
fn bookings(clone: &Path) -> String {
    std::fs::read_to_string(clone.join(".hark/state/hr-portal/hr-portal-bookings.json"))
        .unwrap_or_default()
}

#[test]
fn a_fresh_clone_starts_clean_books_the_demo_day_and_stays_clean_on_any_port() {
    if !crate::holiday::chromium_present("first_run") {
        return;
    }
    let clone = fresh_clone();
    let clone = clone.path();
    let home = tempfile::tempdir().unwrap();
    let today = Local::now().date_naive();
    let mut friday = today + chrono::Duration::days(1);
    while friday.weekday() != Weekday::Fri {
        friday += chrono::Duration::days(1);
    }

    for (run, port) in [free_port(), free_port()].into_iter().enumerate() {
        let gateway = FirstRun::start(clone, home.path(), port);
        // The demo portal's password was generated: it must never be logged either.
        let secret = clone.join(".hark/secrets/hr-portal/hr-portal-password");
        let password = std::fs::read_to_string(&secret)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", secret.display(), gateway.log()));
        assert!(password.len() >= 32, "a weak generated password");
        register_secret(&password);

        let said = say(clone, port, "book next friday off");
        let expected = if run == 0 {
            "is booked, confirmation HR-"
        } else {
            // The same day again, through the portal on the new port: already booked.
            "You already have"
        };
        // On a slow machine the answer may come late (the skill's 7 s budget): the
        // booking is what counts, read from the portal's own file.
        assert!(
            said.contains(expected) || said.contains("The HR portal is slow today"),
            "run {run}: {said}"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !bookings(clone).contains(&friday.to_string()) {
            assert!(Instant::now() < deadline, "run {run}: nothing booked");
            std::thread::sleep(Duration::from_millis(100));
        }
        if said.contains("The HR portal is slow today") {
            // The call goes on in the queue: let it end before stopping the gateway (the
            // booking file may already hold the first run's booking).
            gateway.wait_for(
                "late result stored for the next request",
                Duration::from_secs(60),
            );
        }

        let log = gateway.stop();
        let loud: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
            .collect();
        assert!(loud.is_empty(), "run {run}: {loud:#?}\n{log}");
        if run == 0 {
            assert!(
                log.contains("secret generated with a random value"),
                "the log does not say where the password came from:\n{log}"
            );
        }
        assert_eq!(
            git(clone, &["status", "--porcelain", "--untracked-files=all"]),
            "",
            "run {run}: the clone is no longer clean"
        );
    }
    // One booking: the second run found the first one.
    assert_eq!(bookings(clone).matches(&friday.to_string()).count(), 1);
}

/// A skill whose function is not deployed: Alexa hears the skill's error reply, and
/// `hark say` also prints why ("function book-holiday is not deployed").
#[test]
fn hark_say_names_a_function_that_is_not_deployed() {
    let skills = repo().join("skills");
    let gw = crate::util::Gateway::start_with(&["--skills", skills.to_str().unwrap()]);
    let out = Command::new(hark_bin())
        .args(["say", "holiday", "book next friday off"])
        .env("HARK_GATEWAY", &gw.url)
        .env("HARK_DATA", &gw.data)
        .env_remove("HARK_TOKEN")
        .output()
        .unwrap();
    let (said, told) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{said}{told}");
    assert!(
        said.contains("Sorry, I couldn't make the booking"),
        "{said}"
    );
    assert!(
        told.contains(
            "hark say: the call failed: status 404: function book-holiday is not deployed"
        ),
        "{told}"
    );
}
