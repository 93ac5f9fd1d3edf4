//! Interpreters that need more than their binary in an image. A program found for a
//! function's `fprocess` comes in; when it is a Python interpreter, its real executable and
//! the files of its standard library go out, so `hark build` can put them in a `FROM
//! scratch` image at the paths the interpreter looks for them. Tests, byte-code caches,
//! GUI toolkits, `ensurepip` and third-party packages (`site-packages`) are left out.

use std::path::{Path, PathBuf};

/// Directory names of the standard library that are not copied into images.
const SKIPPED: &[&str] = &[
    "__pycache__",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "site-packages",
    "dist-packages",
];

/// What the interpreter prints about itself (no `site`, no user environment).
const QUERY: &str = "import sys, sysconfig\n\
                     print(sys.executable)\n\
                     print(sysconfig.get_path('stdlib'))\n\
                     print(sysconfig.get_path('platstdlib'))";

/// A Python interpreter of the host, as an image needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    /// The interpreter's real executable (symlinks resolved; not a pyenv shim).
    pub executable: PathBuf,
    /// The standard library's directories (`stdlib` and, when elsewhere, `platstdlib`).
    pub stdlib: Vec<PathBuf>,
}

impl Python {
    /// The interpreter `program` is, if it is one: asked, when its name starts with
    /// `python`, where its executable and standard library are.
    pub fn of(program: &Path) -> Option<Python> {
        let is_python = |p: &Path| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python"))
        };
        let real = std::fs::canonicalize(program).ok()?;
        if !is_python(program) && !is_python(&real) {
            return None;
        }
        let output = std::process::Command::new(program)
            .args(["-I", "-S", "-c", QUERY])
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let executable = std::fs::canonicalize(lines.next()?).ok()?;
        let mut stdlib: Vec<PathBuf> = Vec::new();
        for dir in lines.map(PathBuf::from) {
            if dir.is_dir() && !stdlib.iter().any(|d| dir.starts_with(d)) {
                stdlib.push(dir);
            }
        }
        (!stdlib.is_empty()).then_some(Python { executable, stdlib })
    }

    /// The standard library's files (symlinks followed; dangling ones left out), without
    /// the directories in `SKIPPED` and `config-*` (the static library for embedding).
    pub fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for dir in &self.stdlib {
            walk(dir, &mut files)?;
        }
        Ok(files)
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A dangling symlink has no metadata: it is left out.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if !SKIPPED.contains(&name.as_ref()) && !name.starts_with("config-") {
                walk(&path, files)?;
            }
        } else if meta.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_interpreter_names_its_executable_and_standard_library() {
        let Ok(python) = which::which("python3") else {
            eprintln!("SKIPPED: no python3 on PATH");
            return;
        };
        let found = Python::of(&python).expect("python3 is an interpreter");
        assert!(found.executable.is_absolute() && found.executable.is_file());
        let files = found.files().unwrap();
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        assert!(names.iter().any(|f| f.ends_with("/os.py")), "{names:?}");
        assert!(names.iter().any(|f| f.ends_with("/encodings/utf_8.py")));
        assert!(!names.iter().any(|f| f.contains("/__pycache__/")));
        assert!(!names.iter().any(|f| f.contains("/test/")));
        // Not an interpreter: not asked.
        assert_eq!(Python::of(Path::new("/bin/sh")), None);
    }
}
