//! How fork mode starts a call's process: a program, its arguments, environment, working
//! directory and [`Sandbox`] come in; a running [`Child`] in a process group of its own,
//! with its stdin, stdout and stderr piped to the gateway, goes out.
//!
//! std (and so tokio) starts a command with `posix_spawn` — a child that borrows the
//! gateway's memory until it execs — unless the command has a pre-exec hook; then it
//! forks, which copies the page tables of the whole gateway (a multithreaded server) and
//! makes every page of it copy-on-write, for the child and for the gateway's threads,
//! on every call. Entering the sandbox needs code between start and exec, so fork mode
//! starts its processes here as glibc's `posix_spawn` does: `clone(CLONE_VM |
//! CLONE_VFORK)` onto a stack of the child's own. The calling thread waits until the
//! child has called `execve` (or failed); the child runs on the gateway's memory, so it
//! makes only system calls on values this module prepared: no allocation, no lock, no
//! libc function that keeps state, no panic.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;

use super::sandbox::Sandbox;

/// The child's stack: its steps need a few hundred bytes; the rest is margin, and a
/// guard page below it turns an overflow into a fault instead of a write into the heap.
const STACK_SIZE: usize = 64 * 1024;

/// What to start.
pub(super) struct Spawn<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    /// The whole environment; of a name given twice, the last value counts.
    pub env: Vec<(&'a str, &'a str)>,
    pub workdir: Option<&'a Path>,
    pub sandbox: &'a Sandbox,
}

/// A started call's process. Dropped before it was waited for, it is killed (`SIGKILL`)
/// and reaped in the background, as a tokio child with `kill_on_drop`.
pub(super) struct Child {
    pid: libc::pid_t,
    /// Readable once the process has exited; also keeps its pid from being reused.
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// Everything the child reads, prepared by the parent.
struct Plan {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Null for none.
    workdir: *const libc::c_char,
    /// The child's ends of the stdin, stdout and stderr pipes, all above 2.
    stdio: [RawFd; 3],
    sandbox: *const Sandbox,
    /// Set by the child to the `errno` of the step that failed.
    error: AtomicI32,
    /// Set by the child to the `errno` of a failed [`oom_first_in_child`] (not a failed start).
    oom_error: AtomicI32,
}

impl Spawn<'_> {
    /// Starts the process. The error is the one of the step that failed (no such program,
    /// permission denied, a limit).
    pub(super) fn start(&self) -> std::io::Result<Child> {
        let program = c_string(self.program.as_os_str())?;
        let mut args = vec![program.clone()];
        for arg in self.args {
            args.push(c_string(OsStr::new(arg))?);
        }
        let argv = pointers(&args);
        let env = environment(&self.env)?;
        let envp: Vec<*const libc::c_char> = env
            .split_inclusive(|b| *b == 0)
            .map(|entry| entry.as_ptr().cast())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let workdir = self
            .workdir
            .map(|dir| c_string(dir.as_os_str()))
            .transpose()?;

        let (stdin_child, stdin) = pipe_pair()?;
        let (stdout, stdout_child) = pipe_pair()?;
        let (stderr, stderr_child) = pipe_pair()?;
        let stdio = [
            above_stdio(stdin_child)?,
            above_stdio(stdout_child)?,
            above_stdio(stderr_child)?,
        ];
        // Known to be pipes with the right access: tokio's checks would cost three system
        // calls per end.
        let stdin = pipe::Sender::from_owned_fd_unchecked(nonblocking(stdin)?)?;
        let stdout = pipe::Receiver::from_owned_fd_unchecked(nonblocking(stdout)?)?;
        let stderr = pipe::Receiver::from_owned_fd_unchecked(nonblocking(stderr)?)?;
        let stack = Stack::take()?;
        let plan = Plan {
            program: program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            workdir: workdir.as_ref().map_or(std::ptr::null(), |w| w.as_ptr()),
            stdio: [
                stdio[0].as_raw_fd(),
                stdio[1].as_raw_fd(),
                stdio[2].as_raw_fd(),
            ],
            sandbox: self.sandbox,
            error: AtomicI32::new(0),
            oom_error: AtomicI32::new(0),
        };

        let mut pidfd: libc::c_int = -1;
        // SAFETY: the signal sets are written by sigfillset/pthread_sigmask before they
        // are read. All signals stay blocked in this thread while the child runs on the
        // gateway's memory (a handler of the gateway run by the child would act on the
        // gateway's state); the child sets its own dispositions and mask before exec.
        // `clone` gets a valid stack top (`Stack`), `child` with a pointer to `plan`,
        // which with everything it points to outlives the call: with CLONE_VFORK this
        // thread resumes only once the child has called execve or exited. CLONE_PIDFD
        // writes the pidfd to `pidfd`.
        let (pid, clone_error) = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                &plan as *const Plan as *mut libc::c_void,
                &mut pidfd as *mut libc::c_int,
            );
            let clone_error = std::io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            (pid, clone_error)
        };
        drop(stdio);
        // With CLONE_VFORK the child is done with its stack once clone returns (it has
        // exec'd or exited), and with CLONE_VM it wrote only the gateway's own memory.
        stack.give_back();
        if pid < 0 {
            return Err(clone_error);
        }
        // SAFETY: clone succeeded with CLONE_PIDFD, so `pidfd` is an open descriptor that
        // nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut child = Child {
            pid,
            pidfd,
            status: None,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        if let errno @ 1.. = plan.oom_error.load(Ordering::Relaxed) {
            let error = std::io::Error::from_raw_os_error(errno);
            tracing::debug!(pid, %error, "cannot raise the OOM score of a function process");
        }
        match plan.error.load(Ordering::Relaxed) {
            0 => Ok(child),
            errno => {
                // The child has exited (it failed before exec): reap it now.
                let _ = child.reap(0);
                Err(std::io::Error::from_raw_os_error(errno))
            }
        }
    }
}

impl Child {
    /// The process id (also its process group's).
    pub(super) fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Waits for the process to exit and reaps it.
    pub(super) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        // SAFETY: the pidfd is open and owned by `self`, which outlives this local
        // registration (dropped, and so deregistered, when this call returns or is dropped).
        let exited =
            unsafe { AsyncFd::register_with_interest(self.pidfd.as_raw_fd(), Interest::READABLE) }
                .map_err(std::io::Error::from)?;
        loop {
            let mut ready = exited.readable().await?;
            if let Some(status) = self.reap(libc::WNOHANG)? {
                return Ok(status);
            }
            ready.clear_ready();
        }
    }

    /// `waitpid` with `flags`: the status once the process has exited.
    fn reap(&mut self, flags: libc::c_int) -> std::io::Result<Option<ExitStatus>> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into the integer it is given.
            match unsafe { libc::waitpid(self.pid, &mut status, flags) } {
                0 => return Ok(None),
                pid if pid == self.pid => {
                    let status = ExitStatus::from_raw(status);
                    self.status = Some(status);
                    return Ok(Some(status));
                }
                _ => {
                    let error = std::io::Error::last_os_error();
                    if error.kind() != std::io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: the process is ours and not reaped, so its pid names it still.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        if matches!(self.reap(libc::WNOHANG), Ok(Some(_)) | Err(_)) {
            return;
        }
        let mut orphan = Child {
            pid: self.pid,
            pidfd: match self.pidfd.try_clone() {
                Ok(fd) => fd,
                Err(_) => return,
            },
            status: None,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        // Mark this one reaped: the orphan's drop must not come back here.
        self.status = Some(ExitStatus::from_raw(0));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = orphan.wait().await;
                });
            }
            Err(_) => {
                let _ = orphan.reap(0);
            }
        }
    }
}

/// The child: runs on `Stack` with the gateway's memory, from `clone` to `execve`. Never
/// returns; exits with 127 after writing the failed step's errno into the plan.
extern "C" fn child(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` is the parent's `Plan`, alive until this process execs or exits.
    let plan = unsafe { &*(plan as *const Plan) };
    // SAFETY: see `steps`.
    let errno = unsafe { steps(plan) };
    plan.error.store(errno, Ordering::Relaxed);
    // SAFETY: _exit ends this process only (no atexit handlers, no flushing of the
    // gateway's buffers).
    unsafe { libc::_exit(127) }
}

/// The child's steps, as std orders them for a command with a pre-exec hook: stdio, working
/// directory, process group, the sandbox; then default signal handling, and exec. Before
/// them, while it may still open /proc and write its own score, [`oom_first_in_child`]. Returns
/// only on failure, with the errno.
///
/// # Safety
///
/// Only in the child of `Spawn::start`, with the plan it prepared.
unsafe fn steps(plan: &Plan) -> libc::c_int {
    let errno = || *libc::__errno_location();
    if let Err(error) = oom_first_in_child() {
        plan.oom_error.store(error, Ordering::Relaxed);
    }
    for (fd, target) in plan.stdio.iter().zip(0..) {
        if libc::dup2(*fd, target) < 0 {
            return errno();
        }
    }
    if !plan.workdir.is_null() && libc::chdir(plan.workdir) != 0 {
        return errno();
    }
    if libc::setpgid(0, 0) != 0 {
        return errno();
    }
    if let Err(errno) = (*plan.sandbox).enter() {
        return errno;
    }
    // The gateway's handlers would run on its memory: back to the default for every
    // handled signal, and for SIGPIPE (which Rust ignores), as std does; signals the
    // gateway ignores stay ignored. Then the empty mask std gives its children.
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        let mut current: libc::sigaction = std::mem::zeroed();
        // libc refuses its own two internal signals (EINVAL); their handlers ignore
        // signals that libc itself did not send to its threads.
        if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
            continue;
        }
        if signal == libc::SIGPIPE
            || (current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN)
        {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            if libc::sigaction(signal, &default, std::ptr::null_mut()) != 0 {
                return errno();
            }
        }
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
        return errno();
    }
    libc::execve(plan.program, plan.argv, plan.envp);
    errno()
}

/// Makes this process the OOM killer's first choice (score adjustment 1000): when a
/// function runs out of memory beside the gateway, the function is killed, never the
/// gateway. Written by the child itself, so the score is in place before the program
/// runs. The kernel keeps a vfork child's score its own: it is not copied to the
/// gateway, whose memory the child shares until exec (`__set_oom_adj` skips processes with
/// `vfork_done`).
///
/// # Safety
///
/// Only in the child of `Spawn::start`: system calls on a static path and value.
unsafe fn oom_first_in_child() -> Result<(), libc::c_int> {
    // Raw system calls, as in `Sandbox::enter`: no libc wrapper touches the (shared)
    // thread's state.
    let fd = libc::syscall(
        libc::SYS_openat,
        libc::AT_FDCWD,
        c"/proc/self/oom_score_adj".as_ptr(),
        libc::O_WRONLY | libc::O_CLOEXEC,
    );
    if fd < 0 {
        return Err(*libc::__errno_location());
    }
    let value = b"1000";
    let written = libc::syscall(libc::SYS_write, fd, value.as_ptr(), value.len());
    let result = match written {
        n if n < 0 => Err(*libc::__errno_location()),
        n if n as usize != value.len() => Err(libc::EIO),
        _ => Ok(()),
    };
    libc::syscall(libc::SYS_close, fd);
    result
}

/// A child's stack: an anonymous mapping with a guard page at its low end, unmapped when
/// dropped (after `clone` returned: the child has exec'd or exited by then).
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

/// Stacks kept for the next children: mapping, guarding and unmapping one per call cost
/// three system calls, fresh page faults, and an unmap's flush of every core's TLB (the
/// gateway's threads run on all of them). At most [`STACKS_KEPT`]: one per call being
/// started at the same moment.
static STACKS: std::sync::Mutex<Vec<Stack>> = std::sync::Mutex::new(Vec::new());
const STACKS_KEPT: usize = 16;

// SAFETY: a `Stack` is a mapping owned by whoever holds it, used by one child at a time.
unsafe impl Send for Stack {}

impl Stack {
    /// A kept stack, else a new one.
    fn take() -> std::io::Result<Self> {
        let kept = STACKS.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match kept {
            Some(stack) => Ok(stack),
            None => Stack::new(),
        }
    }

    /// Keeps this stack for the next child, unless enough are kept already.
    fn give_back(self) {
        let mut kept = STACKS.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < STACKS_KEPT {
            kept.push(self);
        }
    }

    fn new() -> std::io::Result<Self> {
        // SAFETY: sysconf only reads a system setting.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|page| *page > 0)
            .unwrap_or(4096);
        let len = STACK_SIZE.next_multiple_of(page) + page;
        // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping made above.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), 16-byte aligned as every ABI asks.
    fn top(&self) -> *mut libc::c_void {
        // The mapping is page-aligned and its length a multiple of the page size.
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used by anyone.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// `text` as a C string; an interior NUL is an error, as std makes it.
fn c_string(text: &OsStr) -> std::io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("nul byte found in {text:?}"),
        )
    })
}

/// The environment `execve` takes, in one buffer (a call's start allocates no string per
/// variable): each `NAME=value` NUL-terminated, sorted by name; of a name given twice,
/// the last value.
fn environment(env: &[(&str, &str)]) -> std::io::Result<Vec<u8>> {
    let mut order: Vec<usize> = (0..env.len()).collect();
    // Stable: of equal names, the later stays later.
    order.sort_by_key(|&i| env[i].0);
    let mut bytes = Vec::with_capacity(env.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (n, &i) in order.iter().enumerate() {
        let (name, value) = env[i];
        if order.get(n + 1).is_some_and(|&next| env[next].0 == name) {
            continue;
        }
        if name.contains('=') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("environment variable name {name:?} contains '='"),
            ));
        }
        if name.contains('\0') || value.contains('\0') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("nul byte found in environment variable {name:?}"),
            ));
        }
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(b'=');
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    Ok(bytes)
}

/// The null-terminated array of pointers `execve` takes.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fd`, switched to non-blocking mode (the gateway's end of a pipe, read and written by
/// tokio; the child's end stays blocking, as programs expect of their stdio).
fn nonblocking(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads the int it is given and sets the open descriptor's mode.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &on) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// `fd`, moved above 2 if it is a standard descriptor (a gateway started with one of
/// them closed), so that putting one pipe on stdin cannot close another before its turn.
fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor onto the lowest free one ≥ 3.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn output(child: &mut Child) -> (String, ExitStatus) {
        drop(child.stdin.take());
        let mut out = String::new();
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_to_string(&mut out).await.unwrap();
        (out, child.wait().await.unwrap())
    }

    #[tokio::test]
    async fn runs_the_program_with_its_input_environment_and_directory() {
        let off = Sandbox::off();
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "-c".to_owned(),
            "read line; echo \"$line $A $B $(pwd)\"; echo oops >&2; exit 3".to_owned(),
        ];
        let spawn = Spawn {
            program: Path::new("/bin/sh"),
            args: &args,
            env: vec![("A", "first"), ("B", "b"), ("A", "last")],
            workdir: Some(dir.path()),
            sandbox: &off,
        };
        let mut child = spawn.start().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        drop(stdin);
        let mut err = String::new();
        let mut stderr = child.stderr.take().unwrap();
        stderr.read_to_string(&mut err).await.unwrap();
        let (out, status) = output(&mut child).await;
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("hello last b {}\n", cwd.display()));
        assert_eq!(err, "oops\n");
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_and_leaves_no_process() {
        let off = Sandbox::off();
        let spawn = Spawn {
            program: Path::new("/nonexistent/program"),
            args: &[],
            env: Vec::new(),
            workdir: None,
            sandbox: &off,
        };
        let error = spawn.start().err().expect("no such program");
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn the_environment_is_sorted_with_the_last_value_of_a_name() {
        let env = environment(&[("B", "2"), ("A", "first"), ("C", ""), ("A", "last")]).unwrap();
        assert_eq!(env, b"A=last\0B=2\0C=\0");
        assert_eq!(environment(&[]).unwrap(), b"");
        let bad_name = environment(&[("A=B", "1")]).unwrap_err();
        assert_eq!(bad_name.kind(), std::io::ErrorKind::InvalidInput);
        let nul = environment(&[("A", "x\0y")]).unwrap_err();
        assert_eq!(nul.kind(), std::io::ErrorKind::InvalidInput);
    }

    /// The child raises its own OOM score before exec, while it shares the gateway's
    /// memory; the gateway's score stays as it was.
    #[tokio::test]
    async fn the_child_is_the_oom_killers_first_choice_and_its_parent_is_not() {
        let before = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        let off = Sandbox::off();
        let args = vec!["/proc/self/oom_score_adj".to_owned()];
        let spawn = Spawn {
            program: Path::new("/bin/cat"),
            args: &args,
            env: Vec::new(),
            workdir: None,
            sandbox: &off,
        };
        let mut child = spawn.start().unwrap();
        let (out, status) = output(&mut child).await;
        assert!(status.success());
        assert_eq!(out, "1000\n");
        let after = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        assert_eq!(after, before, "the parent's score moved with the child's");
    }

    #[tokio::test]
    async fn the_child_leads_its_group_with_default_signals_and_dies_when_dropped() {
        let off = Sandbox::off();
        let args = vec![
            "-c".to_owned(),
            "grep -E '^Sig(Blk|Ign)' /proc/self/status; exec sleep 60".to_owned(),
        ];
        let spawn = Spawn {
            program: Path::new("/bin/sh"),
            args: &args,
            env: vec![("PATH", "/usr/bin:/bin")],
            workdir: None,
            sandbox: &off,
        };
        let mut child = spawn.start().unwrap();
        let pid = child.id() as libc::pid_t;
        // SAFETY: getpgid only reads.
        assert_eq!(unsafe { libc::getpgid(pid) }, pid, "a group of its own");
        let mut stdout = child.stdout.take().unwrap();
        let mut lines = String::new();
        while lines.lines().count() < 2 {
            let mut chunk = [0u8; 256];
            let n = stdout.read(&mut chunk).await.unwrap();
            assert!(n > 0, "{lines}");
            lines.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        }
        // The test binary ignores SIGPIPE, as Rust programs do; std's children do not, and
        // nor does ours: it gets the signal dispositions and mask a std child gets, but for
        // libc's two internal signals (32 and 33), which glibc's posix_spawn ignores in its
        // children and ours leaves as exec does.
        let std_child = std::process::Command::new("grep")
            .args(["-E", "^Sig(Blk|Ign)", "/proc/self/status"])
            .output()
            .unwrap();
        let std_lines = String::from_utf8(std_child.stdout).unwrap();
        let mask = |lines: &str, name: &str| {
            let line = lines.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.rsplit('\t').next().unwrap(), 16).unwrap() & !(0b11 << 31)
        };
        assert_eq!(mask(&lines, "SigBlk"), 0, "{lines}");
        assert_eq!(
            mask(&lines, "SigIgn"),
            mask(&std_lines, "SigIgn"),
            "{lines}"
        );
        assert_eq!(
            mask(&lines, "SigIgn") & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE is not ignored"
        );
        drop(child);
        // Killed and reaped: the pid is gone.
        let proc = format!("/proc/{pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Path::new(&proc).exists() {
            assert!(std::time::Instant::now() < deadline, "{proc} still exists");
            tokio::task::yield_now().await;
        }
    }
}
