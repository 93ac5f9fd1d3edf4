//! Local image builds, with no registry and no base image to pull. A function's
//! deployment comes in; an image tagged `hark/NAME:latest` goes out, built by the engine
//! from a tar context sent through bollard.
//!
//! Two layers, both `FROM scratch` at the bottom:
//! - `hark/watchdog:HASH` (HASH names the `hark` binary): the `hark` binary (debug
//!   sections stripped when `objcopy` is at hand) as `/usr/bin/hark`, the shared
//!   libraries `ldd` lists for it, and a static busybox (Debian's `busybox-static`)
//!   with its applets linked in `/bin` and `/usr/bin`, so shell-script functions have
//!   `/bin/sh`, `cat`, `wc` and friends. Built once per `hark` binary.
//! - `hark/NAME:TAG` from it: the function's handler directory as `/home/app`, and the
//!   `fprocess` program when it lives outside the handler directory (a binary of the
//!   host, copied to the same path with the libraries `ldd` lists; a script's
//!   interpreter likewise; a Python interpreter with its standard library, see
//!   [`super::runtime`]). A program inside the handler directory but in a folder that is
//!   not copied (`target/`, where cargo puts a Rust function's binary) is added at its
//!   place. The watchdog is the entrypoint; `fprocess`, `mode` and `exec_timeout` are set
//!   from the stack file so the image also runs on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use super::{describe_engine_error, is_not_found, runtime, DockerError};
use crate::function::{FunctionDeployment, ANNOTATION_WORKDIR};

/// Where the function's files go in the image, and its working directory.
pub const APP_DIR: &str = "/home/app";
/// Where `hark` (the watchdog) goes in the image.
pub const WATCHDOG_PATH: &str = "/usr/bin/hark";
/// Label on images Hark builds, naming the function (or `watchdog`).
pub const LABEL_BUILT: &str = "com.hark.built";
/// The host's CA bundle (Debian's path), copied into the watchdog image.
const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Directory names never copied from a handler directory.
const SKIPPED_DIRS: &[&str] = &["target", ".git", ".hark", "node_modules"];
/// `PATH` inside the images.
const IMAGE_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
/// Where a program that `fprocess` names without a path is linked when its directory on
/// the host is not on the image's `PATH`.
const IMAGE_BIN: &str = "/usr/local/bin";
/// Where the program `fprocess` names goes in the image when it lives outside the handler
/// directory and outside the system's directories (a Rust function's
/// `target/debug/hello`, wherever the project was cloned): the image must not depend on
/// where the project lives, and the containers' `/tmp` is a tmpfs that would hide a copy
/// made at a path under `/tmp`.
pub const HOST_PROGRAM_DIR: &str = "/usr/local/libexec/hark";
/// Host directories whose programs keep their own path in an image (their interpreters and
/// data sit beside them).
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt"];

/// One step of a build, for a progress display.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// A line of the engine's build output (`Step 2/6 : COPY app/ /home/app/`).
    Output(String),
    /// The context is being sent (bytes).
    Context { image: String, bytes: usize },
}

/// What `hark build` needs to know besides the deployment.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// The `hark` binary to use as the watchdog.
    pub watchdog: PathBuf,
    /// A static busybox for `/bin/sh` and the usual tools, if one is at hand.
    pub busybox: Option<PathBuf>,
    /// Labels put on every image built (tests use them to clean up).
    pub labels: BTreeMap<String, String>,
}

impl BuildSettings {
    /// The running `hark` binary and the system's busybox, if it is statically linked.
    pub fn from_host() -> Result<Self, DockerError> {
        let watchdog = std::env::current_exe().map_err(|source| DockerError::Io {
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?;
        let busybox = which::which("busybox")
            .ok()
            .filter(|b| shared_libraries(b).is_empty());
        if busybox.is_none() {
            tracing::warn!("no statically linked busybox on $PATH: the function images have no /bin/sh, so a function whose fprocess is a shell script exits at once in its container (apt-get install busybox-static)");
        }
        Ok(BuildSettings {
            watchdog,
            busybox,
            labels: BTreeMap::new(),
        })
    }
}

/// Builds the image of `spec` tagged `tag`, and the watchdog image under it if missing.
pub async fn build_function(
    docker: &Docker,
    spec: &FunctionDeployment,
    tag: &str,
    settings: &BuildSettings,
    progress: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<(), DockerError> {
    let base = ensure_watchdog_image(docker, settings, progress).await?;
    let context = function_context(spec, &base, settings)?;
    build(docker, tag, context, progress).await
}

/// The tag of the watchdog image for this `hark` binary, built if missing.
pub async fn ensure_watchdog_image(
    docker: &Docker,
    settings: &BuildSettings,
    progress: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<String, DockerError> {
    let bytes = std::fs::read(&settings.watchdog).map_err(|source| DockerError::Io {
        path: settings.watchdog.clone(),
        source,
    })?;
    // aws-lc's digest: fast even in a debug build, where a Rust SHA-256 of a 170 MB
    // binary takes seconds.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    let hash = hex::encode(&digest.as_ref()[..6]);
    let tag = format!("hark/watchdog:{hash}");
    match docker.inspect_image(&tag).await {
        Ok(_) => return Ok(tag),
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            return Err(DockerError::Engine {
                what: format!("inspecting {tag}"),
                reason: describe_engine_error(&e),
            })
        }
    }
    let context = watchdog_context(settings, &hash)?;
    build(docker, &tag, context, progress).await?;
    Ok(tag)
}

/// Where the gateway image keeps its data directory (a volume).
pub const GATEWAY_DATA_DIR: &str = "/var/lib/hark";
/// The gateway image's working directory, where `hark up` looks for `hark.yml`.
pub const GATEWAY_WORKDIR: &str = "/etc/hark";

/// Builds the gateway's own image, tagged `tag`, from the watchdog image of this `hark`
/// binary (built first if missing): `hark up` as its command, listening on port 8080 of
/// every interface of the container, its data directory a volume.
pub async fn build_gateway(
    docker: &Docker,
    tag: &str,
    settings: &BuildSettings,
    progress: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<(), DockerError> {
    let base = ensure_watchdog_image(docker, settings, progress).await?;
    let context = gateway_context(&base, settings)?;
    build(docker, tag, context, progress).await
}

/// Sends a context and follows the build to its end. The engine here (20.10 on
/// fuse-overlayfs) now and then fails a build with "layer does not exist" when it reuses
/// a layer just made; such a build is tried once more.
async fn build(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
    progress: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<(), DockerError> {
    match build_once(docker, tag, context.clone(), progress).await {
        Err(DockerError::Engine { reason, .. }) if reason.contains("layer does not exist") => {
            progress(BuildEvent::Output(format!("retrying after: {reason}")));
            build_once(docker, tag, context, progress).await
        }
        other => other,
    }
}

async fn build_once(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
    progress: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<(), DockerError> {
    progress(BuildEvent::Context {
        image: tag.to_owned(),
        bytes: context.len(),
    });
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        progress(BuildEvent::Output(line.to_owned()));
                    }
                }
            }
            Err(e) => {
                return Err(DockerError::Engine {
                    what: format!("building {tag}"),
                    reason: describe_engine_error(&e),
                })
            }
        }
    }
    // A build that ends without an error has tagged the image; make sure.
    docker
        .inspect_image(tag)
        .await
        .map_err(|e| DockerError::Engine {
            what: format!("building {tag}"),
            reason: format!(
                "the build ended without an image: {}",
                describe_engine_error(&e)
            ),
        })?;
    Ok(())
}

/// A tar build context being put together.
struct Context {
    tar: tar::Builder<Vec<u8>>,
    /// Paths already added, so each goes in once.
    added: BTreeSet<PathBuf>,
}

impl Context {
    fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Context {
            tar,
            added: BTreeSet::new(),
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DockerError + '_ {
        move |source| DockerError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Adds `data` as the file `name` with `mode`.
    fn file(&mut self, name: &Path, data: &[u8], mode: u32) -> Result<(), DockerError> {
        if !self.added.insert(name.to_owned()) {
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, name, data)
            .map_err(Self::io(name))
    }

    /// Adds the host file `source` (symlinks followed) as `name`, keeping its
    /// executable bit.
    fn copy(&mut self, source: &Path, name: &Path) -> Result<(), DockerError> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(source).map_err(Self::io(source))?;
        let meta = std::fs::metadata(source).map_err(Self::io(source))?;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        self.file(name, &data, mode)
    }

    fn dir(&mut self, name: &Path, mode: u32) -> Result<(), DockerError> {
        if !self.added.insert(name.to_owned()) {
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Directory);
        self.tar
            .append_data(&mut header, name, std::io::empty())
            .map_err(Self::io(name))
    }

    fn symlink(&mut self, name: &Path, target: &str) -> Result<(), DockerError> {
        if !self.added.insert(name.to_owned()) {
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o777);
        header.set_entry_type(tar::EntryType::Symlink);
        self.tar
            .append_link(&mut header, name, target)
            .map_err(Self::io(name))
    }

    /// Adds a host program at its own path under `root`, with its shared libraries.
    fn program(&mut self, root: &Path, program: &Path) -> Result<(), DockerError> {
        self.copy(program, &under(root, program))?;
        self.libraries(root, program)
    }

    /// Adds the shared libraries of `program` at their own paths under `root`.
    fn libraries(&mut self, root: &Path, program: &Path) -> Result<(), DockerError> {
        for library in shared_libraries(program) {
            self.copy(&library, &under(root, &library))?;
        }
        Ok(())
    }

    /// Adds a Python interpreter under `root`: its real executable with its libraries, a
    /// link from `found` (where `fprocess` found it) when that differs, its standard
    /// library, and the libraries of the library's extension modules.
    fn python(
        &mut self,
        root: &Path,
        python: &runtime::Python,
        found: &Path,
    ) -> Result<(), DockerError> {
        self.program(root, &python.executable)?;
        if found != python.executable {
            self.symlink(&under(root, found), &python.executable.to_string_lossy())?;
        }
        let files = python.files().map_err(|source| DockerError::Io {
            path: python.stdlib[0].clone(),
            source,
        })?;
        for file in files {
            self.copy(&file, &under(root, &file))?;
            if file.extension().is_some_and(|e| e == "so") {
                self.libraries(root, &file)?;
            }
        }
        Ok(())
    }

    /// Adds the directory `source` as `name`, skipping build output and VCS folders.
    fn tree(&mut self, source: &Path, name: &Path) -> Result<(), DockerError> {
        self.dir(name, 0o755)?;
        let mut entries: Vec<_> = std::fs::read_dir(source)
            .map_err(Self::io(source))?
            .collect::<Result<_, _>>()
            .map_err(Self::io(source))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let file_name = entry.file_name();
            let path = entry.path();
            let target = name.join(&file_name);
            let meta = std::fs::metadata(&path).map_err(Self::io(&path))?;
            if meta.is_dir() {
                if !SKIPPED_DIRS.iter().any(|s| file_name == *s) {
                    self.tree(&path, &target)?;
                }
            } else if meta.is_file() {
                self.copy(&path, &target)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, DockerError> {
        self.tar.into_inner().map_err(|source| DockerError::Io {
            path: PathBuf::from("build context"),
            source,
        })
    }
}

/// `root` joined with an absolute `path` (`rootfs` + `/lib/x` → `rootfs/lib/x`).
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The shared libraries `ldd` lists for `program` (none for a static binary or a script).
pub fn shared_libraries(program: &Path) -> Vec<PathBuf> {
    let Ok(output) = std::process::Command::new("ldd").arg(program).output() else {
        return Vec::new();
    };
    if !output.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The busybox applets as absolute paths (`/bin/sh`, `/usr/bin/env`, ...).
fn busybox_applets(busybox: &Path) -> Vec<String> {
    let Ok(output) = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim()))
        .filter(|l| l.len() > 1)
        .collect()
}

fn watchdog_context(settings: &BuildSettings, hash: &str) -> Result<Vec<u8>, DockerError> {
    let mut context = Context::new();
    let root = Path::new("rootfs");
    // Debug sections are most of a debug build's size and not needed to run.
    let stripped =
        std::env::temp_dir().join(format!("hark-watchdog-{hash}-{}", std::process::id()));
    let watchdog = match std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&settings.watchdog)
        .arg(&stripped)
        .status()
    {
        Ok(status) if status.success() => stripped.clone(),
        _ => settings.watchdog.clone(),
    };
    let copied = context.copy(&watchdog, &under(root, Path::new(WATCHDOG_PATH)));
    let _ = std::fs::remove_file(&stripped);
    copied?;
    for library in shared_libraries(&settings.watchdog) {
        context.copy(&library, &under(root, &library))?;
    }
    if let Some(busybox) = &settings.busybox {
        context.copy(busybox, &root.join("bin/busybox"))?;
        for applet in busybox_applets(busybox) {
            if applet != "/bin/busybox" {
                context.symlink(&under(root, Path::new(&applet)), "/bin/busybox")?;
            }
        }
    }
    context.file(
        &root.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    context.file(
        &root.join("etc/group"),
        b"root:x:0:\nnogroup:x:65534:\n",
        0o644,
    )?;
    // Functions (and the watchdog's HTTP client) find the host's CA certificates.
    let certificates = Path::new(CA_CERTIFICATES);
    if certificates.is_file() {
        context.copy(certificates, &under(root, certificates))?;
    }
    context.dir(&root.join("tmp"), 0o1777)?;
    context.dir(&root.join("home/app"), 0o755)?;
    let dockerfile = format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         ENV PATH={IMAGE_PATH}\n\
         EXPOSE 8080\n\
         WORKDIR {APP_DIR}\n\
         LABEL {LABEL_BUILT}=watchdog{labels}\n\
         ENTRYPOINT [\"{WATCHDOG_PATH}\", \"watchdog\"]\n",
        labels = extra_labels(&settings.labels),
    );
    context.file(Path::new("Dockerfile"), dockerfile.as_bytes(), 0o644)?;
    context.finish()
}

fn gateway_context(base: &str, settings: &BuildSettings) -> Result<Vec<u8>, DockerError> {
    let mut context = Context::new();
    let root = Path::new("rootfs");
    // Only the gateway (root in the container) reads its data: keys, tokens, secrets.
    context.dir(&under(root, Path::new(GATEWAY_DATA_DIR)), 0o700)?;
    context.dir(&under(root, Path::new(GATEWAY_WORKDIR)), 0o755)?;
    // Swarm and `docker ps` tell a gateway that serves from one that only runs; a rolling
    // update waits for the new one to be healthy. Needs busybox's wget. The engine runs
    // each check as an exec in the container, which can take seconds on a busy host: a
    // short timeout there marks a serving gateway unhealthy and Swarm replaces it.
    let healthcheck = if settings.busybox.is_some() {
        "HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 CMD [\"/bin/sh\", \"-c\", \"wget -q -O /dev/null http://127.0.0.1:${HARK_PORT}/healthz\"]\n"
    } else {
        ""
    };
    let dockerfile = format!(
        "FROM {base}\n\
         COPY rootfs/ /\n\
         ENV HARK_DATA={GATEWAY_DATA_DIR} HARK_BIND=0.0.0.0 HARK_PORT=8080\n\
         WORKDIR {GATEWAY_WORKDIR}\n\
         VOLUME {GATEWAY_DATA_DIR}\n\
         EXPOSE 8080\n\
         STOPSIGNAL SIGTERM\n\
         {healthcheck}\
         LABEL {LABEL_BUILT}=gateway{labels}\n\
         ENTRYPOINT [\"{WATCHDOG_PATH}\"]\n\
         CMD [\"up\"]\n",
        labels = extra_labels(&settings.labels),
    );
    context.file(Path::new("Dockerfile"), dockerfile.as_bytes(), 0o644)?;
    context.finish()
}

fn function_context(
    spec: &FunctionDeployment,
    base: &str,
    settings: &BuildSettings,
) -> Result<Vec<u8>, DockerError> {
    let mut context = Context::new();
    let app = spec.annotations.get(ANNOTATION_WORKDIR).map(PathBuf::from);
    match &app {
        Some(dir) => context.tree(dir, Path::new("app"))?,
        None => context.dir(Path::new("app"), 0o755)?,
    }
    let applets: BTreeSet<String> = settings
        .busybox
        .as_deref()
        .map(busybox_applets)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let extra = Path::new("extra");

    if let Some(fprocess) = spec.env_process.as_deref() {
        let words = shell_words::split(fprocess)
            .map_err(|e| DockerError::Build(format!("fprocess {fprocess:?}: {e}")))?;
        if let Some(program) = words.first() {
            let mut todo = vec![program.clone()];
            let mut seen = BTreeSet::new();
            while let Some(program) = todo.pop() {
                if !seen.insert(program.clone()) {
                    continue;
                }
                // The program `fprocess` names may move (see `image_program`); the
                // interpreters of scripts keep their paths, which the scripts name.
                let is_main = seen.len() == 1;
                let host_path = locate(&program, app.as_deref(), &applets)?;
                let Some((host_path, in_app)) = host_path else {
                    continue;
                };
                let python = runtime::Python::of(&host_path);
                match (in_app, app.as_deref()) {
                    (true, Some(dir)) => {
                        // Copied with the handler directory, unless it sits in a folder
                        // that copy skips (a Rust function's `target/`).
                        let relative: PathBuf = host_path
                            .strip_prefix(dir)
                            .unwrap_or(&host_path)
                            .components()
                            .filter(|c| matches!(c, std::path::Component::Normal(_)))
                            .collect();
                        if relative
                            .components()
                            .any(|c| SKIPPED_DIRS.iter().any(|s| c.as_os_str() == *s))
                        {
                            context.copy(&host_path, &Path::new("app").join(&relative))?;
                        }
                        context.libraries(extra, &host_path)?;
                    }
                    _ => match &python {
                        Some(python) => context.python(extra, python, &host_path)?,
                        None if is_main => {
                            let at = image_program(&host_path, app.as_deref());
                            context.copy(&host_path, &under(extra, &at))?;
                            context.libraries(extra, &host_path)?;
                        }
                        None => context.program(extra, &host_path)?,
                    },
                }
                // A program named without a path is looked up on the image's `PATH`.
                let on_image_path = host_path
                    .parent()
                    .is_some_and(|d| IMAGE_PATH.split(':').any(|p| Path::new(p) == d));
                if !program.contains('/') && !in_app && !on_image_path {
                    let target = match &python {
                        Some(python) => python.executable.clone(),
                        None if is_main => image_program(&host_path, app.as_deref()),
                        None => host_path.clone(),
                    };
                    context.symlink(
                        &extra.join(IMAGE_BIN.trim_start_matches('/')).join(&program),
                        &target.to_string_lossy(),
                    )?;
                }
                if let Some(interpreter) = shebang(&host_path) {
                    todo.extend(interpreter);
                }
            }
        }
    }
    let has_extra = context.added.iter().any(|p| p.starts_with(extra));
    let mut env = Vec::new();
    if let Some(fprocess) = fprocess_in_image(spec) {
        env.push(format!("fprocess={}", quote(&fprocess)));
    }
    let mode = match spec.mode() {
        Ok(crate::function::Mode::Http) => "http",
        _ => "fork",
    };
    env.push(format!("mode={mode}"));
    if let Ok(timeout) = spec.timeout() {
        env.push(format!("exec_timeout={}ms", timeout.as_millis()));
    }
    env.push(format!("HARK_FUNCTION={}", spec.service));
    let dockerfile = format!(
        "FROM {base}\n\
         COPY app/ {APP_DIR}/\n\
         {extra_copy}\
         WORKDIR {APP_DIR}\n\
         ENV {env}\n\
         LABEL {LABEL_BUILT}={name}{labels}\n\
         USER {user}\n",
        extra_copy = if has_extra { "COPY extra/ /\n" } else { "" },
        env = env.join(" "),
        name = spec.service,
        labels = extra_labels(&settings.labels),
        user = super::spec::DEFAULT_USER,
    );
    context.file(Path::new("Dockerfile"), dockerfile.as_bytes(), 0o644)?;
    context.finish()
}

/// Where the host program `fprocess` names is in the image: inside the handler
/// directory, at its place under [`APP_DIR`]; in a system directory, or a Python
/// interpreter (whose standard library is found from its path), at its own path; anywhere
/// else, in [`HOST_PROGRAM_DIR`] under its file name.
pub fn image_program(host: &Path, app: Option<&Path>) -> PathBuf {
    if let Some(relative) = app.and_then(|dir| host.strip_prefix(dir).ok()) {
        return Path::new(APP_DIR).join(relative);
    }
    let is_python = host
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("python"));
    if is_python || SYSTEM_DIRS.iter().any(|d| host.starts_with(d)) {
        return host.to_owned();
    }
    match host.file_name() {
        Some(name) => Path::new(HOST_PROGRAM_DIR).join(name),
        None => host.to_owned(),
    }
}

/// `fprocess` as the image runs it: an absolute path to its program replaced by where
/// [`image_program`] puts that program. Words that name no absolute path are left as
/// they are (a relative path is relative to the working directory, [`APP_DIR`] in the
/// image; a bare name is looked up on the image's `PATH`).
pub fn fprocess_in_image(spec: &FunctionDeployment) -> Option<String> {
    let fprocess = spec
        .env_process
        .as_deref()
        .filter(|p| !p.trim().is_empty())?;
    let Ok(mut words) = shell_words::split(fprocess) else {
        return Some(fprocess.to_owned());
    };
    let Some(program) = words.first().filter(|p| p.starts_with('/')) else {
        return Some(fprocess.to_owned());
    };
    let app = spec.annotations.get(ANNOTATION_WORKDIR).map(PathBuf::from);
    let host = Path::new(program);
    let moved = image_program(host, app.as_deref());
    if moved == host {
        return Some(fprocess.to_owned());
    }
    words[0] = moved.to_string_lossy().into_owned();
    Some(shell_words::join(words))
}

/// Finds a program of `fprocess` on the host: `(path, whether it is inside the handler
/// directory)`, or `None` when busybox provides it.
fn locate(
    program: &str,
    app: Option<&Path>,
    applets: &BTreeSet<String>,
) -> Result<Option<(PathBuf, bool)>, DockerError> {
    let missing = |why: &str| {
        DockerError::Build(format!(
            "fprocess program {program:?} {why}; put it in the handler directory or give its absolute path"
        ))
    };
    if program.contains('/') {
        let path = match app {
            Some(dir) if !Path::new(program).is_absolute() => dir.join(program),
            _ => PathBuf::from(program),
        };
        if applets.contains(program) && !path.exists() {
            return Ok(None);
        }
        if !path.is_file() {
            return Err(missing(&format!("was not found at {}", path.display())));
        }
        let in_app = app.is_some_and(|dir| path.starts_with(dir));
        Ok(Some((path, in_app)))
    } else {
        if applets
            .iter()
            .any(|a| a.rsplit('/').next() == Some(program))
        {
            return Ok(None);
        }
        let path = which::which(program).map_err(|_| missing("is not in $PATH"))?;
        Ok(Some((path, false)))
    }
}

/// A script's interpreter and its first argument when that names a program
/// (`#!/usr/bin/env bash` → `["/usr/bin/env", "bash"]`).
fn shebang(path: &Path) -> Option<Vec<String>> {
    use std::io::Read;
    let mut first = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut first).ok()?;
    let text = String::from_utf8_lossy(&first[..n]);
    let line = text.strip_prefix("#!")?.lines().next()?;
    let mut words = line.split_whitespace();
    let interpreter = words.next()?.to_owned();
    let mut out = vec![interpreter.clone()];
    if interpreter.ends_with("/env") {
        out.extend(words.next().map(str::to_owned));
    }
    Some(out)
}

/// A Dockerfile `ENV` value in double quotes.
fn quote(value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$");
    format!("\"{escaped}\"")
}

fn extra_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!(" {}={}", quote(k), quote(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lists_the_libraries_of_a_dynamic_binary() {
        let libs = shared_libraries(Path::new("/bin/ls"));
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(shared_libraries(Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn shebangs_name_their_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/usr/bin/env bash\necho hi\n").unwrap();
        assert_eq!(
            shebang(&script),
            Some(vec!["/usr/bin/env".to_owned(), "bash".to_owned()])
        );
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(shebang(&script), Some(vec!["/bin/sh".to_owned()]));
        std::fs::write(&script, "plain").unwrap();
        assert_eq!(shebang(&script), None);
    }

    #[test]
    fn images_do_not_depend_on_where_the_project_lives() {
        let mut spec = FunctionDeployment {
            service: "hello".parse().unwrap(),
            env_process: Some("/tmp/tmp.Ab12/target/debug/hello --flag 'a b'".into()),
            ..Default::default()
        };
        // A program outside the handler directory and the system's directories moves to
        // the same place wherever the project was cloned (the containers' /tmp is a tmpfs).
        let moved = fprocess_in_image(&spec).unwrap();
        assert_eq!(moved, "/usr/local/libexec/hark/hello --flag 'a b'");
        spec.env_process = Some("/home/ada/src/hark/target/debug/hello --flag 'a b'".into());
        assert_eq!(fprocess_in_image(&spec).unwrap(), moved);
        // System programs and Python interpreters keep their paths.
        spec.env_process = Some("/usr/bin/jq .".into());
        assert_eq!(fprocess_in_image(&spec).unwrap(), "/usr/bin/jq .");
        spec.env_process = Some("/root/.pyenv/versions/3.11.7/bin/python3 main.py".into());
        assert_eq!(
            fprocess_in_image(&spec).unwrap(),
            "/root/.pyenv/versions/3.11.7/bin/python3 main.py"
        );
        // A program inside the handler directory is where the directory is copied.
        spec.annotations
            .insert(ANNOTATION_WORKDIR.into(), "/tmp/x/functions/hello".into());
        spec.env_process = Some("/tmp/x/functions/hello/target/release/hello".into());
        assert_eq!(
            fprocess_in_image(&spec).unwrap(),
            "/home/app/target/release/hello"
        );
        // Relative paths and bare names are left to the image's working directory and PATH.
        spec.env_process = Some("./handler.sh".into());
        assert_eq!(fprocess_in_image(&spec).unwrap(), "./handler.sh");
        spec.env_process = Some("cat".into());
        assert_eq!(fprocess_in_image(&spec).unwrap(), "cat");
    }

    #[test]
    fn env_values_are_quoted_for_a_dockerfile() {
        assert_eq!(quote(r#"sh -c "echo \x""#), r#""sh -c \"echo \\x\"""#);
        assert_eq!(quote("cat $HOME"), r#""cat \$HOME""#);
    }
}
