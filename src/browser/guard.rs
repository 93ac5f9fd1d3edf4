//! `hark browser-guard`: a chromedriver command line and the pool's profile directory come
//! in; chromedriver runs as this process's child, and when the gateway dies (even by
//! SIGKILL, which runs no code of the gateway's) or asks it to stop, every browser under the
//! profile directory is killed with chromedriver before this process exits.
//!
//! Chromium is started by chromedriver, not by the gateway, so a parent-death signal set
//! on chromedriver does not reach it: without a guard, a gateway that is killed leaves its
//! browsers running, reparented to init.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::signal::unix::{signal, SignalKind};

/// Arguments of the hidden `hark browser-guard` command.
#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    /// The gateway's process id: when it is already gone, nothing is started.
    #[arg(long)]
    pub parent: u32,
    /// The pool's profile directory; browsers with a profile under it are killed at the end.
    #[arg(long)]
    pub profiles: PathBuf,
    /// The chromedriver program and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The arguments that run `command` under the guard of the `hark` binary.
pub fn guard_args(parent: u32, profiles: &Path, command: &[String]) -> Vec<String> {
    let mut args = vec![
        "browser-guard".to_owned(),
        format!("--parent={parent}"),
        format!("--profiles={}", profiles.display()),
        "--".to_owned(),
    ];
    args.extend(command.iter().cloned());
    args
}

/// Runs the guard; returns chromedriver's exit code, or 0 when told to stop.
pub async fn run(args: GuardArgs) -> anyhow::Result<std::process::ExitCode> {
    // The handlers come first, so that the parent-death signal set below cannot end this
    // process before it has cleaned up.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // SAFETY: prctl(2) with PR_SET_PDEATHSIG only sets a signal number for this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    // SAFETY: getppid(2) cannot fail.
    if unsafe { libc::getppid() } as u32 != args.parent {
        // The gateway died before the signal was asked for.
        super::proc::kill_left_over(&args.profiles);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no command to guard"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe: chromedriver dies with its guard.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let code = tokio::select! {
        status = child.wait() => status.ok().and_then(|s| s.code()).unwrap_or(1),
        _ = term.recv() => 0,
        _ = int.recv() => 0,
        _ = hup.recv() => 0,
    };
    let _ = child.kill().await;
    super::proc::kill_left_over(&args.profiles);
    Ok(std::process::ExitCode::from(
        u8::try_from(code).unwrap_or(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        guard: GuardArgs,
    }

    #[test]
    fn the_guarded_command_keeps_its_own_flags() {
        let args = guard_args(
            42,
            Path::new("/data/browser"),
            &["chromedriver".into(), "--port=9515".into()],
        );
        let parsed =
            Cli::try_parse_from(std::iter::once("hark".to_owned()).chain(args.into_iter().skip(1)))
                .unwrap()
                .guard;
        assert_eq!(parsed.parent, 42);
        assert_eq!(parsed.profiles, Path::new("/data/browser"));
        assert_eq!(parsed.command, ["chromedriver", "--port=9515"]);
    }
}
