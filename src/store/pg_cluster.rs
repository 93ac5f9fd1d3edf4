//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory,
//! `pg_ctl` on a free port of 127.0.0.1, one fresh database per caller, stopped and
//! removed when the test process exits. Never a shared server.
//!
//! PostgreSQL comes from Debian's packages (`apt-get install postgresql`). Without it the
//! tests that need it are skipped with a message, or fail when `CI` is set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A running cluster.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    /// `runuser -u postgres --` when the tests run as root (`initdb` refuses root).
    as_user: Option<String>,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The process's cluster, started on first use; `None` when PostgreSQL is not installed
/// and `CI` is not set.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER
        .get_or_init(|| match Cluster::start() {
            Ok(cluster) => {
                // SAFETY: registers a plain extern "C" function once.
                unsafe {
                    libc::atexit(stop_at_exit);
                }
                Some(cluster)
            }
            Err(why) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set but no PostgreSQL cluster could be started: {why}"
                );
                eprintln!("SKIPPED: the PostgreSQL store tests: {why} (apt-get install postgresql; set CI to make this a failure)");
                None
            }
        })
        .as_ref()
}

extern "C" fn stop_at_exit() {
    if let Some(Some(cluster)) = CLUSTER.get() {
        cluster.stop();
    }
}

/// `initdb` on `$PATH`, else the newest of Debian's `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(initdb) = which::which("initdb") {
        return initdb.parent().map(Path::to_owned);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let bin = bin_dir().ok_or("PostgreSQL is not installed (no initdb)")?;
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = std::env::temp_dir().join(format!(
            "hark-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let as_user = if root {
            // The cluster's files belong to Debian's `postgres` user, who runs it.
            let id = |flag: &str| -> Result<u32, String> {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .map_err(|e| e.to_string())?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .map_err(|_| "there is no postgres user to run the cluster as".to_owned())
            };
            std::os::unix::fs::chown(&dir, Some(id("-u")?), Some(id("-g")?))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            Some("postgres".to_owned())
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = Cluster {
            dir: dir.clone(),
            port,
            pg_ctl: bin.join("pg_ctl"),
            as_user,
        };
        let data = dir.join("data");
        run(cluster
            .command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "hark", "-A", "trust", "-E", "UTF8", "--no-sync"]))?;
        run(cluster
            .command(&cluster.pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400",
                dir.display()
            ))
            .args(["-w", "start"]))
        .map_err(|e| {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            format!("{e}\n{log}")
        })?;
        Ok(cluster)
    }

    fn command(&self, program: &Path) -> Command {
        match &self.as_user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// The URL of a new, empty database of its own.
    pub async fn database(&self) -> String {
        let name = format!("t{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test cluster");
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = connection.await;
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://hark@127.0.0.1:{}/{database}", self.port)
    }

    fn stop(&self) {
        let _ = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
