//! The sandbox of process functions. A deployment and the gateway's data directory come
//! in; a [`Sandbox`] goes out, prepared once per deployment and applied by
//! [`Sandbox::enter`] in every process the provider starts, before `exec`: fork-mode
//! calls (started by `spawn`) and HTTP-mode replicas (a pre-exec hook,
//! [`Sandbox::apply`]). It:
//!
//! 1. sets the resource limits (`hark.limits.processes`, `.files`, `.memory`);
//! 2. when the gateway runs as root, switches to the function's own unprivileged
//!    uid/gid (or the one `hark.user` names). The uids come from
//!    [`UID_BASE`](super::uids::UID_BASE) up and are given machine-wide
//!    ([`super::uids`]): two gateways on one machine with different data directories
//!    never give their functions the same uid, so a function of one cannot read, signal
//!    or trace a function of the other, nor use up its process limit. Each data
//!    directory keeps a copy of its own uids in `DATA/function-users`; at start the
//!    gateway claims them in the machine's registry, and a function whose uid another
//!    now holds gets a new one, its state directory re-owned;
//! 3. enters a Landlock domain built at deploy time: the system directories, the
//!    function's program, working directory and secrets read-only, its state directory
//!    and its socket directory (HTTP mode, `DATA/sockets/NAME`, 0700 and its user's)
//!    read-write, nothing else of the file system (the data directory included); signals
//!    to processes outside the domain (the gateway) are refused; a function that is
//!    `hark.network: internal` (the default) may open TCP connections to the gateway's
//!    own ports and those `hark.network.connect` names only (Landlock ABI 4 and up): not
//!    the Internet, the metadata address, another function's port nor a local service.
//!
//! Everything the child does is a plain system call on prepared integers: no allocation
//! between its start and `exec` (a fork-mode child runs on the gateway's own memory).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

use super::uids::{UidRegistry, UID_BASE};
use crate::function::{parse_bytes, FunctionDeployment, Network};
use crate::provider::ProviderError;

/// `hark.user`: run the function as this user (a name or a uid, `uid:gid` too) instead of
/// a uid of its own. Only users from uid 1000 up: system users own system files.
pub const ANNOTATION_USER: &str = "hark.user";
/// `hark.limits.processes`: the most processes (and threads) the function's user may have.
pub const ANNOTATION_LIMIT_PROCESSES: &str = "hark.limits.processes";
/// `hark.limits.files`: the most open files per process.
pub const ANNOTATION_LIMIT_FILES: &str = "hark.limits.files";
/// `hark.limits.memory`: the most writable private memory per process (`RLIMIT_DATA`).
pub const ANNOTATION_LIMIT_MEMORY: &str = "hark.limits.memory";
/// `hark.sandbox.read`: more paths the function may read (comma-separated), e.g. an
/// interpreter installed outside the system directories.
pub const ANNOTATION_READ: &str = "hark.sandbox.read";
/// Environment variable naming the function's private writable directory.
pub const ENV_STATE_DIR: &str = "HARK_STATE_DIR";

/// Default limits: enough for a function and its helpers, not for a fork bomb or a leak
/// that takes the machine down.
// Enough for a thread-per-connection HTTP server under load (its replicas share the user:
// the sustained-load fault test failed with 512 threads and 1024 files); still a bound on
// a fork bomb, as systemd's TasksMax is.
const DEFAULT_PROCESSES: u64 = 4096;
const DEFAULT_FILES: u64 = 65536;
const DEFAULT_MEMORY: u64 = 1 << 30;

/// File in the data directory recording which uid each of its functions was given: a
/// copy of its lines of the machine's registry, claimed there at start.
const USERS_FILE: &str = "function-users";

/// Read-only (and executable) system paths every function sees, when they exist.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    "/dev/urandom",
    "/dev/random",
];
/// The first Landlock ABI that fences TCP connections.
const NETWORK_ABI: i32 = 4;

/// What Hark keeps directly in its data directory: no function path may be one of them
/// (or a name they start, as `function-users.tmp` does, or a hidden `.NAME`) or lie
/// inside one (a function's program and working directory may otherwise sit in the data
/// directory, as a project checked out there does).
const DATA_ENTRIES: &[&str] = &[
    "jwt.key",
    "jwt-keys",
    "webdriver.key",
    "secret.key",
    "admin-token",
    "hark.db",
    "hark.db-wal",
    "hark.db-shm",
    "hark.db-journal",
    "function-users",
    "functions-webdriver-port",
    "docker-instance",
    "swarm-instance",
    "secrets",
    "state",
    "sockets",
    "browser",
    "swarm",
    "swarm-credentials",
    "docker-secrets",
    "docker-credentials",
    // Written next to a key, then renamed onto it (a rule follows the file).
    "webdriver.tmp",
];

/// Devices every function may also write.
const SYSTEM_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

/// `hark up --sandbox`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// Own users, Landlock and limits (the default).
    #[default]
    On,
    /// Functions run as the gateway's user and see everything it sees (development only).
    Off,
}

/// The sandbox settings of one gateway, shared by all its process functions.
pub struct Sandboxing {
    mode: SandboxMode,
    /// The gateway runs as root: functions get users of their own.
    root: bool,
    /// The Landlock ABI of the kernel, if it has Landlock.
    abi: Option<i32>,
    state_root: PathBuf,
    /// The data directory (canonical), which no function path may contain.
    data: PathBuf,
    /// Files of the gateway kept outside it (`--secret-key-file`).
    protected: Vec<PathBuf>,
    /// The uids of its functions: only for a root gateway with the sandbox on.
    users: Option<Mutex<Users>>,
}

/// The uids given to this gateway's functions, by name: the machine's registry, and its
/// copy in the data directory.
struct Users {
    registry: UidRegistry,
    file: PathBuf,
    by_name: BTreeMap<String, u32>,
}

/// The sandbox of one function: what the child does before `exec`.
pub(super) struct Sandbox {
    /// uid and gid to switch to (only when the gateway is root).
    ids: Option<(u32, u32)>,
    processes: Option<u64>,
    files: Option<u64>,
    memory: Option<u64>,
    /// The prepared Landlock ruleset (close-on-exec), entered by the child.
    ruleset: Option<OwnedFd>,
    /// What the sandbox is, in words: compared on redeploy, shown in `Debug`.
    policy: String,
}

/// What a function gets from its sandbox at deploy time.
pub(super) struct Prepared {
    pub sandbox: Arc<Sandbox>,
    /// `HARK_STATE_DIR`, `TMPDIR` and `HOME` pointing into its state directory.
    pub env: Vec<(String, String)>,
    /// The directory above the socket directory that the function's user cannot pass
    /// (a data directory inside a 0700 home or mount): its replicas cannot make sockets.
    pub sockets_blocked: Option<PathBuf>,
}

impl Sandboxing {
    /// Prepares the sandbox of a gateway whose data directory is `data` and whose
    /// functions' secrets live under `secrets_root`, and logs what isolation it gives.
    /// As root, the data directory and the secrets root become traversable (0711) so
    /// that each function reaches its own directories, and the files directly in the
    /// data directory lose every permission of group and others.
    pub fn start(data: &Path, secrets_root: &Path, mode: SandboxMode) -> std::io::Result<Self> {
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let abi = landlock_abi();
        let state_root = data.join("state");
        let mut sandboxing = Sandboxing {
            mode,
            root,
            abi,
            state_root,
            data: std::fs::canonicalize(data).unwrap_or_else(|_| data.to_owned()),
            protected: Vec::new(),
            users: None,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&sandboxing.state_root)?;
        if mode == SandboxMode::Off {
            tracing::warn!(
                "process sandbox OFF (--sandbox off): functions run as the gateway's user and can read its data directory (keys, tokens, store, every function's secrets); use only for development"
            );
            return Ok(sandboxing);
        }
        sandboxing.refuse_system_read(&sandboxing.data, "the data directory (--data)")?;
        for dir in [secrets_root, &sandboxing.state_root] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        if root {
            for dir in [data, secrets_root, &sandboxing.state_root] {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
            }
            for entry in std::fs::read_dir(data)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_file() && meta.mode() & 0o077 != 0 {
                    let mode = meta.mode() & 0o700;
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
                }
            }
            let users = Users::start(data, &sandboxing.state_root)?;
            tracing::info!(
                registry = %users.registry.path().display(),
                "function uids are given machine-wide: no two gateways of this machine share one"
            );
            sandboxing.users = Some(Mutex::new(users));
        }
        match abi {
            Some(abi) if abi >= NETWORK_ABI => {
                tracing::info!(
                    landlock_abi = abi,
                    own_users = root,
                    "process sandbox on: own users, Landlock file-system and network fence, limits"
                )
            }
            Some(abi) => {
                tracing::warn!(
                    landlock_abi = abi,
                    own_users = root,
                    "process sandbox on: own users, Landlock file-system fence, limits; this kernel's Landlock (ABI below {NETWORK_ABI}) cannot fence TCP, so functions reach the whole network whatever hark.network says"
                )
            }
            None => {
                tracing::warn!(own_users = root, "process sandbox: this kernel has no Landlock, the file-system fence is off; users of their own and limits still apply")
            }
        }
        if !root {
            // The normal case on a workstation, not a fault: said once, at info.
            tracing::info!(
                "the gateway does not run as root: functions run as its user. What remains: the Landlock fence (files and signals), the gateway not being dumpable (its memory and environment), and the open-files and memory limits; hark.limits.processes counts every process of the gateway's user and applies only when set"
            );
        }
        Ok(sandboxing)
    }

    /// Prepares the sandbox of one function: its user, state directory, limits and
    /// Landlock ruleset. `secrets_dir` is where its secret files are written; `sockets`
    /// the directory its HTTP-mode replicas make their sockets in, handed to its user;
    /// `gateway_ports` the TCP ports an `internal` function may connect to (the gateway's
    /// listeners).
    pub(super) fn prepare(
        &self,
        spec: &FunctionDeployment,
        program: &Path,
        workdir: Option<&Path>,
        secrets_dir: &Path,
        sockets: Option<&Path>,
        gateway_ports: &[u16],
    ) -> Result<Prepared, ProviderError> {
        let name = spec.service.as_str();
        let bad = |message: String| ProviderError::BadSpec(format!("function {name}: {message}"));
        let state = self.state_root.join(name);
        let tmp = state.join("tmp");
        // Read before anything else, so that a wrong value is refused even with the
        // sandbox off.
        let network = spec.network().map_err(|e| bad(e.to_string()))?;
        let also_connect = spec.network_connect().map_err(|e| bad(e.to_string()))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| ProviderError::io(format_args!("state directory of {name}"), &e))?;
        if self.mode == SandboxMode::Off {
            // Unfenced, but its state still lives under the data directory, not in the
            // working directory (a clone of the repository stays clean).
            return Ok(Prepared {
                sandbox: Arc::new(Sandbox::off()),
                env: vec![(ENV_STATE_DIR.to_owned(), state.display().to_string())],
                sockets_blocked: None,
            });
        }
        let extra: Vec<PathBuf> = spec
            .annotations
            .get(ANNOTATION_READ)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(relative) = extra.iter().find(|p| !p.is_absolute()) {
            return Err(bad(format!(
                "{ANNOTATION_READ}: {} is not an absolute path",
                relative.display()
            )));
        }
        // Each path the deployment names is opened once: the check and the Landlock rule
        // are of that one open file, so a link swapped between them changes neither.
        let named = std::iter::once(("its program", program))
            .chain(workdir.map(|w| ("its working directory", w)))
            .chain(extra.iter().map(|p| (ANNOTATION_READ, p.as_path())));
        let mut opened = Vec::new();
        for (what, path) in named {
            opened.extend(self.open_checked(what, path).map_err(bad)?);
        }
        let limit = |key: &'static str| -> Result<Option<u64>, ProviderError> {
            match spec.annotations.get(key) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(bad(format!("{key}: {v:?} is not a whole number above 0"))),
                },
            }
        };
        // `None`: TCP is not fenced (the Internet asked for, or a kernel that cannot).
        let connect = (network == Network::Internal
            && self.abi.is_some_and(|abi| abi >= NETWORK_ABI))
        .then(|| {
            let mut ports = [gateway_ports, &also_connect].concat();
            ports.sort_unstable();
            ports.dedup();
            ports
        });
        let mut processes = limit(ANNOTATION_LIMIT_PROCESSES)?;
        if processes.is_none() && self.root {
            processes = Some(DEFAULT_PROCESSES);
        }
        // The default stays within the gateway's own hard limit, which even root may not be
        // allowed to raise (no CAP_SYS_RESOURCE in a container).
        let mut files = Some(
            limit(ANNOTATION_LIMIT_FILES)?
                .unwrap_or_else(|| DEFAULT_FILES.min(hard_limit(libc::RLIMIT_NOFILE))),
        );
        if !self.root {
            // Without privileges a limit cannot rise above the gateway's own hard one.
            let hard = hard_limit(libc::RLIMIT_NOFILE);
            files = files.map(|n| n.min(hard));
            let hard = hard_limit(libc::RLIMIT_NPROC);
            processes = processes.map(|n| n.min(hard));
        }
        let memory = match (
            spec.annotations.get(ANNOTATION_LIMIT_MEMORY),
            spec.limits.as_ref().and_then(|l| l.memory.as_ref()),
        ) {
            (Some(v), _) => Some(
                parse_quantity(v).map_err(|e| bad(format!("{ANNOTATION_LIMIT_MEMORY}: {e}")))?,
            ),
            (None, Some(v)) => {
                Some(parse_quantity(v).map_err(|e| bad(format!("limits.memory: {e}")))?)
            }
            (None, None) => Some(DEFAULT_MEMORY),
        };

        let ids = if self.root {
            Some(match spec.annotations.get(ANNOTATION_USER) {
                Some(user) => {
                    named_user(user).map_err(|e| bad(format!("{ANNOTATION_USER}: {e}")))?
                }
                None => {
                    let users = self.users.as_ref().ok_or_else(|| {
                        ProviderError::Internal("a root gateway without its uids".to_owned())
                    })?;
                    let uid = users
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .uid_of(name)
                        .map_err(|e| {
                            ProviderError::io(format_args!("recording the user of {name}"), &e)
                        })?;
                    (uid, uid)
                }
            })
        } else {
            None
        };

        let mut sockets_blocked = None;
        if let Some((uid, gid)) = ids {
            for dir in [&state, &tmp] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
                    ProviderError::io(format_args!("state directory of {name}"), &e)
                })?;
            }
            if let Some(dir) = sockets {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
                    ProviderError::io(format_args!("socket directory of {name}"), &e)
                })?;
                sockets_blocked = unreachable(dir, uid, gid);
            }
            // Its secrets and its state live under the data directory: a directory on
            // the way that others may not pass (a data directory in a 0700 home) keeps
            // them from it. Secrets it names are needed: refused. Its state may be
            // unused: a warning.
            if let Some(blocked) = impassable(secrets_dir, uid, gid) {
                if !spec.secrets.is_empty() {
                    return Err(bad(format!(
                        "its sandbox user {uid} cannot pass {} on the way to its secret files in {}; let others pass it (chmod o+x {}), use a --data directory they can pass, or start the gateway with --sandbox off",
                        blocked.display(),
                        secrets_dir.display(),
                        blocked.display()
                    )));
                }
            }
            if let Some(blocked) = impassable(&state, uid, gid) {
                tracing::warn!(function = name, uid, blocked = %blocked.display(), "its user cannot pass {} to its state directory (HARK_STATE_DIR, TMPDIR, HOME): writing there fails; chmod o+x that directory, or use a --data directory others can pass", blocked.display());
            }
            for path in std::iter::once(program).chain(workdir) {
                if let Some(blocked) = unreachable(path, uid, gid) {
                    return Err(bad(format!(
                        "its sandbox user {uid} cannot reach {} ({} is not open to it); make it readable by others, name a user with {ANNOTATION_USER}, or start the gateway with --sandbox off",
                        path.display(),
                        blocked.display()
                    )));
                }
            }
        }

        // Hark's own paths, not the deployment's: named by path.
        let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        // /etc/resolv.conf often links to /run/…: the resolver needs its target.
        if let Ok(resolv) = std::fs::canonicalize("/etc/resolv.conf") {
            read.push(resolv);
        }
        read.push(secrets_dir.to_owned());
        let named_read: Vec<PathBuf> = opened.iter().map(|o| o.path.clone()).collect();
        let ruleset = match self.abi {
            Some(_) => ruleset(&read, opened, &state, sockets, connect.as_deref())
                .map_err(|e| ProviderError::Internal(format!("Landlock rules of {name}: {e}")))?,
            None => None,
        };
        read.extend(named_read);

        let policy = format!(
            "ids={ids:?} processes={processes:?} files={files:?} memory={memory:?} landlock={} read={read:?} write={} sockets={sockets:?} network={network:?} connect={connect:?}",
            ruleset.is_some(),
            state.display()
        );
        let mut env = vec![
            (ENV_STATE_DIR.to_owned(), state.display().to_string()),
            ("TMPDIR".to_owned(), tmp.display().to_string()),
            ("HOME".to_owned(), state.display().to_string()),
        ];
        if self.root {
            // The gateway's PATH without the directories a function's user cannot reach
            // (root's own tools, say), so that lookups inside the function find what works.
            env.push(("PATH".to_owned(), reachable_path()));
        }
        Ok(Prepared {
            sandbox: Arc::new(Sandbox {
                ids,
                processes,
                files,
                memory,
                ruleset,
                policy,
            }),
            env,
            sockets_blocked,
        })
    }

    /// Also keeps `path` (a file of the gateway's outside the data directory) out of
    /// every function's paths. Like the data directory, it may not lie inside a
    /// directory every function reads when functions share the gateway's user.
    pub fn protect(mut self, path: &Path) -> std::io::Result<Self> {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        if self.mode == SandboxMode::On {
            self.refuse_system_read(&path, "the secret key file")?;
        }
        self.protected.push(path);
        Ok(self)
    }

    /// Fails when `path` lies inside a directory every function may read and functions
    /// run as the gateway's user (only Landlock would keep them from it); warns as root.
    fn refuse_system_read(&self, path: &Path, what: &str) -> std::io::Result<()> {
        let Some(system) = SYSTEM_READ.iter().find(|dir| path.starts_with(dir)) else {
            return Ok(());
        };
        let why = format!(
            "{what} {} is inside {system}, which every function may read",
            path.display()
        );
        if !self.root {
            return Err(std::io::Error::other(format!(
                "{why}, and the gateway does not run as root (functions share its user): move it outside {}",
                SYSTEM_READ.join(", ")
            )));
        }
        tracing::warn!("{why}: only the functions' own users keep them from it");
        Ok(())
    }

    /// Refuses a path a deployment gives its function (its program, working directory,
    /// `hark.sandbox.read`) that would open the gateway's files to it: the data directory
    /// or a directory above it, one of Hark's entries in it, or a protected file.
    fn check_path(&self, what: &str, path: &Path) -> Result<(), String> {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        self.check_resolved(what, &path)
    }

    /// Opens `path` once (`O_PATH`) and checks what was opened ([`Sandboxing::check_path`]),
    /// by the name the kernel gives the open file: the Landlock rule is then made from that
    /// same file, whatever the path names by then. `None` when there is nothing to open:
    /// nothing is let in for it, and the path is checked as written.
    fn open_checked(&self, what: &str, path: &Path) -> Result<Option<NamedPath>, String> {
        let Ok(fd) = PathFd::new(path) else {
            self.check_path(what, path)?;
            return Ok(None);
        };
        let stat = fd_stat(&fd)
            .map_err(|e| format!("{what} {}: cannot tell what it opens: {e}", path.display()))?;
        let opened = match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())) {
            Ok(opened) => opened,
            // Without /proc: the path resolved again, taken only when it still names the
            // file that was opened.
            Err(_) => {
                let again = std::fs::canonicalize(path).map_err(|e| {
                    format!("{what} {}: cannot tell what it opens: {e}", path.display())
                })?;
                let same = std::fs::metadata(&again)
                    .is_ok_and(|m| m.dev() == stat.st_dev && m.ino() == stat.st_ino);
                if !same {
                    return Err(format!(
                        "{what} {} changed while it was checked",
                        path.display()
                    ));
                }
                again
            }
        };
        self.check_resolved(what, &opened)?;
        let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        Ok(Some(NamedPath {
            fd,
            path: opened,
            is_dir,
        }))
    }

    /// [`Sandboxing::check_path`] of a path already resolved.
    fn check_resolved(&self, what: &str, path: &Path) -> Result<(), String> {
        let refuse = |why: String| {
            Err(format!(
                "{what} {} {why}; functions may not see the gateway's files",
                path.display()
            ))
        };
        if self.data.starts_with(path) {
            return refuse(format!("holds the data directory {}", self.data.display()));
        }
        if let Ok(inside) = path.strip_prefix(&self.data) {
            let top = inside
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy());
            let hark_owns =
                |top: &str| top.starts_with('.') || DATA_ENTRIES.iter().any(|e| top.starts_with(e));
            if top.is_some_and(|top| hark_owns(&top)) {
                return refuse(format!(
                    "is Hark's own, in its data directory {}",
                    self.data.display()
                ));
            }
        }
        if let Some(file) = self.protected.iter().find(|f| f.starts_with(path)) {
            return refuse(format!("holds the gateway's {}", file.display()));
        }
        Ok(())
    }

    /// Whether functions run sandboxed.
    pub fn is_on(&self) -> bool {
        self.mode == SandboxMode::On
    }

    /// Hands the function's secret files (and their directory) to its user, so that it
    /// alone (with the gateway) may read them.
    pub(super) fn own_secrets(&self, sandbox: &Sandbox, dir: &Path) -> std::io::Result<()> {
        let Some((uid, gid)) = sandbox.ids else {
            return Ok(());
        };
        if !dir.exists() {
            return Ok(());
        }
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        for entry in std::fs::read_dir(dir)? {
            std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// Forgets the state directory of a removed function (its uid stays recorded, so a
    /// function deployed again under the same name gets the same one).
    pub(super) fn remove(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.state_root.join(name));
    }
}

impl Sandbox {
    /// No sandbox: the command runs as the gateway's user (and an HTTP-mode replica keeps
    /// std's `posix_spawn`).
    pub(super) fn off() -> Self {
        Sandbox {
            ids: None,
            processes: None,
            files: None,
            memory: None,
            ruleset: None,
            policy: "off".to_owned(),
        }
    }

    /// Makes `command` enter this sandbox between `fork` and `exec` (HTTP-mode replicas;
    /// fork-mode calls start through [`super::spawn`], which calls [`Sandbox::enter`]
    /// itself). Call it before `die_with_gateway`: a change of uid clears the parent-death
    /// signal.
    pub(super) fn apply(self: &Arc<Self>, command: &mut tokio::process::Command) {
        if self.policy == "off" {
            return;
        }
        let sandbox = self.clone();
        // SAFETY: the closure runs in the forked child before exec and only calls
        // `enter`, whose contract that is; the Arc it holds keeps the ruleset fd open in
        // the parent for as long as the command lives, so the child's copy is valid.
        unsafe {
            command.pre_exec(move || sandbox.enter().map_err(std::io::Error::from_raw_os_error));
        }
    }

    /// Enters this sandbox: sets the limits, switches to the function's user, enters the
    /// Landlock domain. On failure, the `errno` of the call that failed.
    ///
    /// # Safety
    ///
    /// Only in a child between its start and `exec`: the calling process changes its
    /// credentials for good. Made for children that share the gateway's memory
    /// (`CLONE_VM`, [`super::spawn`]) as well as forked ones: it reads prepared integers,
    /// allocates nothing and makes raw system calls only. The ids change through
    /// `syscall(2)`, never through libc's `setresuid` & co., which in a process libc
    /// believes multithreaded signal every thread of it to change its ids too: in a
    /// `CLONE_VM` child, the gateway's threads.
    pub(super) unsafe fn enter(&self) -> Result<(), libc::c_int> {
        let errno = || {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EPERM)
        };
        for (resource, value) in [
            (libc::RLIMIT_NPROC, self.processes),
            (libc::RLIMIT_NOFILE, self.files),
            (libc::RLIMIT_DATA, self.memory),
        ] {
            if let Some(value) = value {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(errno());
                }
            }
        }
        if let Some((uid, gid)) = self.ids {
            if libc::syscall(libc::SYS_setgroups, 1usize, &gid as *const libc::gid_t) != 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                return Err(errno());
            }
        }
        if let Some(fd) = &self.ruleset {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_landlock_restrict_self, fd.as_raw_fd(), 0) != 0
            {
                return Err(errno());
            }
        }
        Ok(())
    }
}

impl PartialEq for Sandbox {
    fn eq(&self, other: &Self) -> bool {
        self.policy == other.policy
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.policy)
    }
}

impl Users {
    /// The uids of the functions of data directory `data` (whose state directories are
    /// under `state_root`): those it recorded, claimed in the machine's registry.
    fn start(data: &Path, state_root: &Path) -> std::io::Result<Self> {
        let registry = UidRegistry::from_env(data).map_err(|e| {
            std::io::Error::new(e.kind(), format!("the machine's uid registry: {e}"))
        })?;
        let file = data.join(USERS_FILE);
        let recorded = read_users(&file)?;
        let (by_name, moved) = registry.claim(&recorded).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("the uid registry {}: {e}", registry.path().display()),
            )
        })?;
        for moved in &moved {
            let state = state_root.join(&moved.name);
            reown(&state, moved.from, moved.to)?;
            tracing::info!(
                function = %moved.name,
                from = moved.from,
                to = moved.to,
                reason = %moved.reason,
                "function given a new uid, its state directory re-owned"
            );
        }
        let users = Users {
            registry,
            file,
            by_name,
        };
        if users.by_name != recorded {
            users.save()?;
        }
        Ok(users)
    }

    /// The uid of `name`: the one it was given, or the lowest free one of the machine,
    /// recorded now.
    fn uid_of(&mut self, name: &str) -> std::io::Result<u32> {
        if let Some(uid) = self.by_name.get(name) {
            return Ok(*uid);
        }
        let uid = self.registry.uid_of(name).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("the uid registry {}: {e}", self.registry.path().display()),
            )
        })?;
        self.by_name.insert(name.to_owned(), uid);
        self.save()?;
        Ok(uid)
    }

    /// Writes the data directory's copy.
    fn save(&self) -> std::io::Result<()> {
        let text: String = self
            .by_name
            .iter()
            .map(|(name, uid)| format!("{name}\t{uid}\n"))
            .collect();
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &self.file)
    }
}

/// The uids a data directory recorded (`DATA/function-users`: `NAME<TAB>UID` lines).
fn read_users(file: &Path) -> std::io::Result<BTreeMap<String, u32>> {
    let mut by_name = BTreeMap::new();
    match std::fs::read_to_string(file) {
        Ok(text) => {
            for line in text.lines() {
                if let Some((name, uid)) = line.split_once('\t') {
                    if let Ok(uid) = uid.trim().parse() {
                        by_name.insert(name.to_owned(), uid);
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(by_name)
}

/// Hands what `from` owns under `dir` (`dir` included, symbolic links not followed) to
/// `to`, group too when its group is `from`.
fn reown(dir: &Path, from: u32, to: u32) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let uid = (meta.uid() == from).then_some(to);
    let gid = (meta.gid() == from).then_some(to);
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(dir, uid, gid)?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            reown(&entry?.path(), from, to)?;
        }
    }
    Ok(())
}

/// The directories of the gateway's `$PATH` that other users can pass through.
fn reachable_path() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute() && unreachable(dir, u32::MAX, u32::MAX).is_none())
        .collect();
    std::env::join_paths(dirs)
        .ok()
        .and_then(|p| p.into_string().ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned())
}

/// `program` looked up in the directories of `$PATH` that other users can reach: the
/// first executable file there that they can read or run.
pub(super) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                && unreachable(candidate, u32::MAX, u32::MAX).is_none()
        })
}

/// The kernel's Landlock ABI version, or `None` without Landlock.
fn landlock_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the system
    // call only returns the ABI version (or an error); it reads no memory of ours.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (abi > 0).then_some(abi as i32)
}

/// `fstat(2)` of an open file.
fn fd_stat(fd: &impl AsFd) -> std::io::Result<libc::stat> {
    // SAFETY: all-zero bytes are a valid `stat` (integers only), which fstat overwrites.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the borrow's length, and fstat writes only into
    // the struct it is given.
    if unsafe { libc::fstat(fd.as_fd().as_raw_fd(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat)
}

/// A path a deployment named, opened once: the file the check saw is the one fenced in.
struct NamedPath {
    fd: PathFd,
    /// What the kernel says the open file is.
    path: PathBuf,
    is_dir: bool,
}

/// A Landlock ruleset: `read` and `named` readable (and executable), `state` and `sockets` fully
/// writable (making a socket there is `MakeSock`), the rest of the file system out of
/// reach, signals to processes outside refused; with `connect`, TCP connections to
/// those ports only (binding is left alone: an HTTP-mode replica binds the `PORT` it is
/// given). `None` when the kernel enforces nothing.
fn ruleset(
    read: &[PathBuf],
    named: Vec<NamedPath>,
    state: &Path,
    sockets: Option<&Path>,
    connect: Option<&[u16]>,
) -> Result<Option<OwnedFd>, landlock::RulesetError> {
    let abi = ABI::V6;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?;
    if connect.is_some() {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp)?;
    }
    let created = ruleset
        .scope(Scope::Signal)?
        .create()?
        .add_rules(connect.unwrap_or_default().iter().map(|port| {
            Ok::<_, landlock::RulesetError>(NetPort::new(*port, AccessNet::ConnectTcp))
        }))?
        .add_rules(landlock::path_beneath_rules(read, AccessFs::from_read(abi)))?
        .add_rules(named.into_iter().map(|named| {
            // A rule on a file may carry a file's rights only.
            let access = match named.is_dir {
                true => AccessFs::from_read(abi),
                false => AccessFs::from_read(abi) & AccessFs::from_file(abi),
            };
            Ok::<_, landlock::RulesetError>(PathBeneath::new(named.fd, access))
        }))?
        .add_rules(landlock::path_beneath_rules(
            SYSTEM_WRITE,
            AccessFs::from_file(abi),
        ))?
        .add_rules(landlock::path_beneath_rules(
            std::iter::once(state).chain(sockets),
            AccessFs::from_all(abi),
        ))?;
    Ok(created.into())
}

/// The gateway's own hard limit of `resource`.
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return u64::MAX;
    }
    limit.rlim_max
}

/// A memory size as annotations (`512MiB`, `1G`) or OpenFaaS limits (`128Mi`, `1Gi`)
/// write it.
fn parse_quantity(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let binary = trimmed
        .strip_suffix('i')
        .filter(|t| t.ends_with(|c: char| "KMGTkmgt".contains(c)));
    match parse_bytes(binary.unwrap_or(trimmed)) {
        Ok(0) => Err(format!("{text:?} is not a size above 0")),
        other => other,
    }
}

/// The uid and gid `hark.user` names: `NAME`, `UID` or `UID:GID`. Users below 1000
/// (root, system users) are refused.
fn named_user(user: &str) -> Result<(u32, u32), String> {
    let user = user.trim();
    let (uid, gid) = if let Some((uid, gid)) = user.split_once(':') {
        let uid = uid
            .parse()
            .map_err(|_| format!("{user:?} is not UID:GID"))?;
        let gid = gid
            .parse()
            .map_err(|_| format!("{user:?} is not UID:GID"))?;
        (uid, gid)
    } else if let Ok(uid) = user.parse::<u32>() {
        (uid, uid)
    } else {
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
        passwd
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields.len() > 3 && fields[0] == user)
            .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .ok_or_else(|| format!("no user {user:?} in /etc/passwd"))?
    };
    if uid >= UID_BASE || gid >= UID_BASE {
        return Err(format!(
            "{user:?} is in the range Hark gives its functions (from {UID_BASE}): it would run as another function"
        ));
    }
    if uid < 1000 || gid < 1000 {
        return Err(format!(
            "{user:?} is a system user (uid {uid}, gid {gid}); functions run as users from 1000 up"
        ));
    }
    Ok((uid, gid))
}

/// The first directory above `path` that `uid`/`gid` may not pass through, judged by
/// the permission bits; `None` when every one lets it pass.
fn impassable(path: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        if dir.as_os_str().is_empty() {
            continue;
        }
        match std::fs::metadata(dir) {
            Ok(meta) if grants(&meta, uid, gid, 0o1) => {}
            _ => return Some(dir.to_owned()),
        }
    }
    None
}

/// Whether the permission bits of `meta` grant `bits` to `uid`/`gid`.
fn grants(meta: &std::fs::Metadata, uid: u32, gid: u32, bits: u32) -> bool {
    let mode = meta.mode();
    let granted = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == gid {
        mode >> 3
    } else {
        mode
    };
    granted & bits == bits
}

/// The first directory on the way to `path` (or `path` itself) that `uid`/`gid` may not
/// pass through or read, judged by the permission bits; `None` when it is reachable.
fn unreachable(path: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    let allowed = |meta: &std::fs::Metadata, bits: u32| grants(meta, uid, gid, bits);
    if let Some(blocked) = impassable(path, uid, gid) {
        return Some(blocked);
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() && allowed(&meta, 0o5) => None,
        Ok(meta) if !meta.is_dir() && (allowed(&meta, 0o4) || allowed(&meta, 0o1)) => None,
        _ => Some(path.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::uids::UID_BASE;
    use super::*;

    #[test]
    fn memory_sizes_in_both_spellings() {
        assert_eq!(parse_quantity("128Mi"), Ok(128 << 20));
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity("512MiB"), Ok(512 << 20));
        assert_eq!(parse_quantity("1048576"), Ok(1 << 20));
        assert!(parse_quantity("0").is_err());
        assert!(parse_quantity("lots").is_err());
    }

    #[test]
    fn system_users_are_refused() {
        assert!(named_user("root").is_err());
        assert!(named_user("0").is_err());
        assert!(named_user("33:33").is_err());
        assert_eq!(named_user("2000:2001"), Ok((2000, 2001)));
        assert_eq!(named_user("2000"), Ok((2000, 2000)));
    }

    #[tokio::test]
    async fn a_named_path_is_fenced_as_it_was_checked_though_its_link_changes() {
        let Some(abi) = landlock_abi() else {
            eprintln!("skipping: this kernel has no Landlock");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let data = root.join("data");
        let project = root.join("project");
        for d in [&data, &project] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(data.join("jwt.key"), "the gateway's key\n").unwrap();
        std::fs::write(project.join("notes"), "the project's notes\n").unwrap();
        let link = root.join("link");
        std::os::unix::fs::symlink(&project, &link).unwrap();
        let sandboxing = Sandboxing {
            mode: SandboxMode::On,
            root: false,
            abi: Some(abi),
            state_root: data.join("state"),
            data: data.clone(),
            protected: Vec::new(),
            users: None,
        };
        // Checked while the link names the project.
        let named = sandboxing
            .open_checked(ANNOTATION_READ, &link)
            .unwrap()
            .expect("the project opens");
        assert_eq!(named.path, project);
        // Then swapped to the data directory, before the rule is made.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&data, &link).unwrap();
        let e = sandboxing
            .open_checked(ANNOTATION_READ, &link)
            .err()
            .expect("the link to the data directory was accepted");
        assert!(e.contains("gateway's files"), "{e}");

        let read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        let state = root.join("state");
        std::fs::create_dir(&state).unwrap();
        let sandbox = Arc::new(Sandbox {
            ids: None,
            processes: None,
            files: None,
            memory: None,
            ruleset: ruleset(&read, vec![named], &state, None, None).unwrap(),
            policy: "test".to_owned(),
        });
        let cat = |path: PathBuf| {
            let sandbox = sandbox.clone();
            async move {
                let mut command = tokio::process::Command::new("cat");
                command.arg(path);
                sandbox.apply(&mut command);
                command.output().await.unwrap()
            }
        };
        // What was checked is what is let in: the project, through the link, and not
        // the data directory the link names now.
        let through = cat(link.join("jwt.key")).await;
        assert!(
            !through.status.success(),
            "the swapped link opened the data directory: {}",
            String::from_utf8_lossy(&through.stdout)
        );
        let key = cat(data.join("jwt.key")).await;
        assert!(!key.status.success(), "jwt.key is readable");
        let notes = cat(project.join("notes")).await;
        assert_eq!(
            String::from_utf8_lossy(&notes.stdout),
            "the project's notes\n",
            "{}",
            String::from_utf8_lossy(&notes.stderr)
        );
    }

    #[test]
    fn a_moved_function_keeps_its_files() {
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping a_moved_function_keeps_its_files: chown needs root");
            return;
        }
        let (from, to) = (UID_BASE + 60_000, UID_BASE + 60_001);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("f");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(state.join("tmp")).unwrap();
        std::fs::write(state.join("tmp/kept"), "x").unwrap();
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, state.join("link")).unwrap();
        for path in [
            &state,
            &state.join("tmp"),
            &state.join("tmp/kept"),
            &outside,
        ] {
            std::os::unix::fs::chown(path, Some(from), Some(from)).unwrap();
        }
        std::os::unix::fs::lchown(state.join("link"), Some(from), Some(from)).unwrap();

        reown(&state, from, to).unwrap();
        for path in [
            &state,
            &state.join("tmp"),
            &state.join("tmp/kept"),
            &state.join("link"),
        ] {
            let meta = std::fs::symlink_metadata(path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (to, to), "{}", path.display());
        }
        let meta = std::fs::metadata(&outside).unwrap();
        assert_eq!(meta.uid(), from, "a link is not followed");
        reown(&dir.path().join("missing"), from, to).unwrap();
    }
}
