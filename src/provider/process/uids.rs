//! The machine-wide registry of function uids. A gateway's data directory and a function
//! name come in; a uid goes out: the one recorded for that pair, else the lowest of Hark's
//! range that no function of any gateway on this machine holds, recorded now.
//!
//! The registry is one file shared by every root gateway of the machine
//! ([`DEFAULT_REGISTRY`], or [`ENV_UID_REGISTRY`]), one line per uid given:
//! `UID<TAB>FUNCTION<TAB>MOUNT-NAMESPACE<TAB>DATA-DIRECTORY`. Every read-modify-write holds
//! an exclusive `flock` on `FILE.lock` (two gateways starting at once never pick the same
//! uid) and replaces the file atomically (`FILE.tmp`, 0600, then `rename`); the directory
//! is root's, 0700.
//!
//! An entry whose data directory is gone frees its uid again (pruned at allocation), so
//! the many temporary data directories of a test suite never exhaust the range. "Gone" is
//! judged only by a gateway in the mount namespace that recorded the entry: a gateway with
//! a private view of the file system (systemd's `PrivateTmp=`, `ProtectHome=`) sees other
//! gateways' directories as missing and must not give their uids away.
//!
//! A freed uid is given again only when nothing of its last function is left where a new
//! function could reach it: no process runs under it (a replica its gateway left behind
//! when killed) and nothing directly in the shared writable directories (`/tmp`,
//! `/var/tmp`, `/dev/shm`) belongs to it. Otherwise the next free uid is given, and that
//! one stays unused until what holds it is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The first uid (and gid) Hark gives a function; [`UID_COUNT`] follow. Far above the
/// ranges of login users (1000–59999), systemd's dynamic users (61184–65519) and the usual
/// subordinate ranges of user namespaces (100000 + 65536·n for the first users).
pub const UID_BASE: u32 = 1_900_000_000;
/// How many uids Hark gives, from [`UID_BASE`].
pub const UID_COUNT: u32 = 65_536;
/// Where the registry is, unless [`ENV_UID_REGISTRY`] names another file. Outside any data
/// directory (the systemd unit's is `/var/lib/hark`): it outlives them all.
pub const DEFAULT_REGISTRY: &str = "/var/lib/hark-uids/function-users";
/// Environment variable naming another registry file (tests with a private one).
pub const ENV_UID_REGISTRY: &str = "HARK_UID_REGISTRY";

/// The uids given on this machine, seen from one gateway's data directory.
pub(super) struct UidRegistry {
    file: PathBuf,
    lock: PathBuf,
    /// The gateway's data directory, canonical.
    data: PathBuf,
    /// The gateway's mount namespace (`mnt:[N]`), recorded with its entries.
    namespace: String,
    /// The uids something on the machine still uses ([`uids_in_use`]); a test's own.
    in_use: fn() -> BTreeSet<u32>,
}

/// One line of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    uid: u32,
    name: String,
    namespace: String,
    data: PathBuf,
}

/// A uid recorded in a data directory that its function could not keep.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Moved {
    pub name: String,
    pub from: u32,
    pub to: u32,
    /// Why, in words: who holds `from` now.
    pub reason: String,
}

impl UidRegistry {
    /// The registry [`ENV_UID_REGISTRY`] names, or the machine's, for the gateway whose
    /// data directory is `data` (which must exist).
    pub fn from_env(data: &Path) -> std::io::Result<Self> {
        let file = std::env::var_os(ENV_UID_REGISTRY)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_REGISTRY));
        Self::open(file, data)
    }

    /// The registry in `file` (its directory is created, root's and 0700), for the
    /// gateway whose data directory is `data`.
    pub fn open(file: PathBuf, data: &Path) -> std::io::Result<Self> {
        let invalid =
            |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
        if !file.is_absolute() {
            return Err(invalid(format!(
                "{ENV_UID_REGISTRY}: {} is not an absolute path",
                file.display()
            )));
        }
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| invalid(format!("{} has no directory", file.display())))?;
        let file_name = file
            .file_name()
            .ok_or_else(|| invalid(format!("{} names no file", file.display())))?;
        let in_dir =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(in_dir)?;
        // Anyone else who can write the directory could swap the file under us.
        let meta = std::fs::metadata(dir).map_err(in_dir)?;
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(invalid(format!(
                "the uid registry's directory {} must belong to the gateway's user and be writable by it alone",
                dir.display()
            )));
        }
        let data = std::fs::canonicalize(data)?;
        if data.as_os_str().as_bytes().contains(&b'\n') {
            return Err(invalid(format!(
                "the data directory {:?} has a line break in its path: it cannot be recorded in the uid registry",
                data
            )));
        }
        let mut lock_name = file_name.to_owned();
        lock_name.push(".lock");
        Ok(UidRegistry {
            lock: dir.join(lock_name),
            file,
            data,
            namespace: mount_namespace(),
            in_use: uids_in_use,
        })
    }

    /// The registry file.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The uid of the function `name` of this data directory: the recorded one, or the
    /// lowest free one, recorded now.
    pub fn uid_of(&self, name: &str) -> std::io::Result<u32> {
        self.locked(|entries| {
            if let Some(uid) = self.find(entries, name) {
                return Ok(uid);
            }
            self.give(entries, name)
        })
    }

    /// Claims the uids a data directory recorded itself (`DATA/function-users`), by
    /// function name. A name the registry knows keeps the registry's uid; a recorded uid
    /// no one holds is claimed; a recorded uid another function holds (or one outside
    /// Hark's range) is replaced by a free one. Returns every name's uid and the moves.
    pub fn claim(
        &self,
        recorded: &BTreeMap<String, u32>,
    ) -> std::io::Result<(BTreeMap<String, u32>, Vec<Moved>)> {
        self.locked(|entries| {
            let mut uids = BTreeMap::new();
            let mut moved = Vec::new();
            for (name, &from) in recorded {
                let holder = entries.iter().find(|e| e.uid == from).cloned();
                let (to, reason) = match (self.find(entries, name), holder) {
                    (Some(uid), _) => (
                        uid,
                        (uid != from)
                            .then(|| format!("the machine's uid registry gave it uid {uid}")),
                    ),
                    (None, None) if in_range(from) => {
                        self.record(entries, name, from)?;
                        (from, None)
                    }
                    (None, Some(e)) => (
                        self.give(entries, name)?,
                        Some(format!(
                            "uid {from} is held by the function {} of the data directory {}",
                            e.name,
                            e.data.display()
                        )),
                    ),
                    (None, None) => (
                        self.give(entries, name)?,
                        Some(format!("uid {from} is outside Hark's range")),
                    ),
                };
                if let Some(reason) = reason {
                    moved.push(Moved {
                        name: name.clone(),
                        from,
                        to,
                        reason,
                    });
                }
                uids.insert(name.clone(), to);
            }
            Ok((uids, moved))
        })
    }

    fn find(&self, entries: &[Entry], name: &str) -> Option<u32> {
        entries
            .iter()
            .find(|e| e.name == name && e.data == self.data)
            .map(|e| e.uid)
    }

    /// Gives `name` the lowest uid no entry holds and nothing on the machine uses.
    fn give(&self, entries: &mut Vec<Entry>, name: &str) -> std::io::Result<u32> {
        let mut taken = (self.in_use)();
        taken.extend(entries.iter().map(|e| e.uid));
        let uid = (UID_BASE..UID_BASE + UID_COUNT)
            .find(|uid| !taken.contains(uid))
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "every uid of Hark's range is taken (see {})",
                    self.file.display()
                ))
            })?;
        self.record(entries, name, uid)?;
        Ok(uid)
    }

    fn record(&self, entries: &mut Vec<Entry>, name: &str, uid: u32) -> std::io::Result<()> {
        if name.is_empty() || name.contains(['\t', '\n']) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the function name {name:?} cannot be recorded in the uid registry"),
            ));
        }
        entries.push(Entry {
            uid,
            name: name.to_owned(),
            namespace: self.namespace.clone(),
            data: self.data.clone(),
        });
        Ok(())
    }

    /// Runs `change` on the entries (pruned of those whose data directory is gone) under
    /// the registry's lock, and writes them back if they changed.
    fn locked<T>(
        &self,
        change: impl FnOnce(&mut Vec<Entry>) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)?;
        flock(&lock)?;
        let before = self.read()?;
        let mut entries = before.clone();
        entries.retain(|e| !self.is_gone(e));
        let result = change(&mut entries)?;
        if entries != before {
            self.write(&entries)?;
        }
        // The lock goes with the file.
        drop(lock);
        Ok(result)
    }

    /// Whether `entry`'s data directory is gone, as far as this gateway can tell.
    fn is_gone(&self, entry: &Entry) -> bool {
        entry.namespace == self.namespace
            && entry.data != self.data
            && matches!(entry.data.try_exists(), Ok(false))
    }

    fn read(&self) -> std::io::Result<Vec<Entry>> {
        let bytes = match std::fs::read(&self.file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        parse(&bytes).map_err(|(line, what)| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} line {line}: {what} (expected UID<TAB>FUNCTION<TAB>MOUNT-NAMESPACE<TAB>DATA-DIRECTORY)",
                    self.file.display()
                ),
            )
        })
    }

    fn write(&self, entries: &[Entry]) -> std::io::Result<()> {
        let mut text = b"# The uids Hark gave process functions on this machine: UID, FUNCTION, MOUNT-NAMESPACE, DATA-DIRECTORY\n".to_vec();
        let mut sorted: Vec<&Entry> = entries.iter().collect();
        sorted.sort_by_key(|e| e.uid);
        for e in sorted {
            text.extend_from_slice(format!("{}\t{}\t{}\t", e.uid, e.name, e.namespace).as_bytes());
            text.extend_from_slice(e.data.as_os_str().as_bytes());
            text.push(b'\n');
        }
        let mut tmp_name = self.file.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.file)
    }
}

/// The registry's lines; on a malformed one, its number and what is wrong.
fn parse(bytes: &[u8]) -> Result<Vec<Entry>, (usize, &'static str)> {
    let mut entries = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let mut fields = line.splitn(4, |&b| b == b'\t');
        let (Some(uid), Some(name), Some(namespace), Some(data)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err((n + 1, "not four fields"));
        };
        let uid = std::str::from_utf8(uid)
            .ok()
            .and_then(|u| u.parse().ok())
            .ok_or((n + 1, "not a uid"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| (n + 1, "not a name"))?;
        let namespace =
            String::from_utf8(namespace.to_vec()).map_err(|_| (n + 1, "not a namespace"))?;
        if data.is_empty() {
            return Err((n + 1, "no data directory"));
        }
        entries.push(Entry {
            uid,
            name,
            namespace,
            data: PathBuf::from(OsStr::from_bytes(data)),
        });
    }
    Ok(entries)
}

fn in_range(uid: u32) -> bool {
    (UID_BASE..UID_BASE + UID_COUNT).contains(&uid)
}

/// Directories every function can write (a function's own tmp is private, these are
/// not): what a function leaves there is reachable by the next holder of its uid.
const SHARED_WRITABLE: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// The uids of Hark's range that a process runs under (any of its real, effective, saved
/// or file-system uids) or that own an entry directly in [`SHARED_WRITABLE`].
fn uids_in_use() -> BTreeSet<u32> {
    let mut used = process_uids();
    used.extend(owners_in(SHARED_WRITABLE.iter().map(Path::new)));
    used.retain(|uid| in_range(*uid));
    used
}

/// Every uid a process of this machine (as far as this `/proc` shows) runs under.
fn process_uids() -> BTreeSet<u32> {
    let mut uids = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return uids;
    };
    for entry in dir.flatten() {
        let is_pid = entry.file_name().as_bytes().iter().all(u8::is_ascii_digit);
        if !is_pid {
            continue;
        }
        // A process that ended meanwhile has no status: it holds nothing.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            uids.extend(
                line[4..]
                    .split_whitespace()
                    .filter_map(|u| u.parse::<u32>().ok()),
            );
        }
    }
    uids
}

/// The owners of the entries directly in `dirs` (not below them).
fn owners_in<'a>(dirs: impl Iterator<Item = &'a Path>) -> BTreeSet<u32> {
    dirs.filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter_map(|entry| entry.path().symlink_metadata().ok())
        .map(|meta| meta.uid())
        .collect()
}

/// Takes an exclusive lock on `file`, waiting for it; released when the file is closed.
fn flock(file: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock(2) on a file descriptor we own; it touches no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// This process's mount namespace, `mnt:[N]` (empty when /proc does not say).
fn mount_namespace() -> String {
    std::fs::read_link("/proc/self/ns/mnt")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry of its own, on a machine where nothing holds a uid of Hark's range.
    fn registry(dir: &Path, data: &Path) -> UidRegistry {
        let mut registry = UidRegistry::open(dir.join("reg").join("function-users"), data).unwrap();
        registry.in_use = BTreeSet::new;
        registry
    }

    #[test]
    fn a_freed_uid_is_not_given_while_a_process_or_a_shared_file_still_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut registry = registry(dir.path(), data.path());
        registry.in_use = || BTreeSet::from([UID_BASE, UID_BASE + 1]);
        assert_eq!(registry.uid_of("f").unwrap(), UID_BASE + 2);
        registry.in_use = BTreeSet::new;
        assert_eq!(
            registry.uid_of("g").unwrap(),
            UID_BASE,
            "free once nothing has it"
        );
    }

    #[test]
    fn uids_in_use_are_found_in_processes_and_shared_directories() {
        // This test's own process runs under its uid.
        // SAFETY: getuid(2) has no arguments and cannot fail.
        let me = unsafe { libc::getuid() };
        assert!(process_uids().contains(&me));
        // A file in a shared directory: its owner is found, what is below is not looked at.
        let shared = tempfile::tempdir().unwrap();
        std::fs::create_dir(shared.path().join("deep")).unwrap();
        std::fs::write(shared.path().join("left"), b"x").unwrap();
        let owner = std::fs::metadata(shared.path().join("left")).unwrap().uid();
        assert_eq!(
            owners_in([shared.path()].into_iter()),
            BTreeSet::from([owner])
        );
        if me == 0 {
            let below = shared.path().join("deep/below");
            std::fs::write(&below, b"x").unwrap();
            std::os::unix::fs::chown(&below, Some(UID_BASE + 5), None).unwrap();
            std::os::unix::fs::chown(shared.path().join("left"), Some(UID_BASE + 4), None).unwrap();
            assert_eq!(
                owners_in([shared.path()].into_iter()),
                BTreeSet::from([UID_BASE + 4, me])
            );
        }
    }

    #[test]
    fn a_pair_keeps_its_uid_and_other_data_directories_get_others() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ra = registry(dir.path(), a.path());
        let rb = registry(dir.path(), b.path());
        let fa = ra.uid_of("f").unwrap();
        let fb = rb.uid_of("f").unwrap();
        assert_ne!(fa, fb, "the same name in two data directories");
        assert!(in_range(fa) && in_range(fb));
        assert_eq!(registry(dir.path(), a.path()).uid_of("f").unwrap(), fa);
        let meta = std::fs::metadata(dir.path().join("reg/function-users")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let meta = std::fs::metadata(dir.path().join("reg")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
    }

    #[test]
    fn entries_of_a_removed_data_directory_are_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let keep = tempfile::tempdir().unwrap();
        let gone = tempfile::tempdir().unwrap();
        let rk = registry(dir.path(), keep.path());
        let rg = registry(dir.path(), gone.path());
        let first = rg.uid_of("f").unwrap();
        let second = rk.uid_of("f").unwrap();
        assert_eq!(first, UID_BASE);
        // Recorded by a gateway with another view of the file system: not judged gone.
        let mut text = std::fs::read_to_string(rk.path()).unwrap();
        text.push_str(&format!(
            "{}\tg\tmnt:[1]\t/nonexistent/hark-data\n",
            UID_BASE + 2
        ));
        std::fs::write(rk.path(), text).unwrap();
        drop(gone);
        assert_eq!(rk.uid_of("g").unwrap(), first, "the uid of the removed one");
        assert_eq!(rk.uid_of("f").unwrap(), second);
        assert_eq!(rk.uid_of("h").unwrap(), UID_BASE + 3);
        let text = std::fs::read_to_string(rk.path()).unwrap();
        assert!(text.contains("/nonexistent/hark-data"), "{text}");
    }

    #[test]
    fn concurrent_allocations_never_share_a_uid() {
        let dir = tempfile::tempdir().unwrap();
        let datas: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let start = std::sync::Barrier::new(datas.len());
        let mut uids: Vec<u32> = std::thread::scope(|s| {
            let threads: Vec<_> = datas
                .iter()
                .map(|data| {
                    let (dir, start) = (dir.path(), &start);
                    s.spawn(move || {
                        let registry = registry(dir, data.path());
                        start.wait();
                        (0..25)
                            .map(|i| registry.uid_of(&format!("f{i}")).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        uids.sort_unstable();
        let before = uids.len();
        uids.dedup();
        assert_eq!(uids.len(), before, "a uid was given twice");
        assert_eq!(uids.last(), Some(&(UID_BASE + 99)), "the lowest free ones");
    }

    #[test]
    fn claims_keep_free_uids_and_move_held_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let rb = registry(dir.path(), b.path());
        let held = rb.uid_of("f").unwrap();
        let ra = registry(dir.path(), a.path());
        let recorded = BTreeMap::from([
            ("f".to_owned(), held),
            ("g".to_owned(), UID_BASE + 7),
            ("h".to_owned(), 1000),
        ]);
        let (uids, moved) = ra.claim(&recorded).unwrap();
        assert_eq!(uids["g"], UID_BASE + 7, "a free uid is kept");
        assert_ne!(uids["f"], held);
        assert!(in_range(uids["h"]));
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(
            moved[0].reason.contains("held by the function f"),
            "{moved:?}"
        );
        // Claimed for good: the registry answers the same afterwards.
        for (name, uid) in &uids {
            assert_eq!(ra.uid_of(name).unwrap(), *uid);
        }
        assert_eq!(rb.uid_of("f").unwrap(), held);
        // Claiming again changes nothing.
        assert_eq!(ra.claim(&recorded).unwrap().0, uids);
    }

    #[test]
    fn a_malformed_registry_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), data.path());
        std::fs::write(r.path(), "# header\n1900000000\tf\n").unwrap();
        let e = r.uid_of("f").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
