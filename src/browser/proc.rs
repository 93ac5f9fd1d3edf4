//! Finding a session's browser processes: a profile directory comes in; the processes
//! started with `--user-data-dir=` that directory go out (found in `/proc`).

use std::path::Path;

/// Each process whose command line holds `--user-data-dir=PROFILE`, with whether it is
/// the browser's main process (no `--type=` flag, which Chromium's helpers carry).
fn processes(profile: &Path) -> Vec<(u32, bool)> {
    let flag = format!("--user-data-dir={}", profile.display());
    matching(|arg| arg == flag)
}

/// Each process with an argument for which `ours` holds, and whether it is a main one.
fn matching(ours_arg: impl Fn(&str) -> bool) -> Vec<(u32, bool)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline
            .split(|b| *b == 0)
            .map(|a| std::str::from_utf8(a).unwrap_or(""));
        let mut ours = false;
        let mut helper = false;
        for arg in args.by_ref() {
            ours |= ours_arg(arg);
            helper |= arg.starts_with("--type=");
        }
        if ours {
            found.push((pid, !helper));
        }
    }
    found
}

/// The main browser process of the profile, if it runs.
pub(super) fn browser_pid(profile: &Path) -> Option<u32> {
    processes(profile)
        .into_iter()
        .find(|(_, main)| *main)
        .map(|(pid, _)| pid)
}

/// Kills every process of the profile.
pub(super) fn kill_browsers(profile: &Path) {
    kill(processes(profile));
}

/// Kills browsers left running with a profile under `root` (by a gateway that was killed).
pub(super) fn kill_left_over(root: &Path) {
    let prefix = format!("--user-data-dir={}/", root.display());
    kill(matching(|arg| arg.starts_with(&prefix)));
}

fn kill(processes: Vec<(u32, bool)>) {
    for (pid, _) in processes {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            continue;
        };
        // SAFETY: kill(2) touches no memory of ours.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}
