//! Function templates (`hark new`): a function name and a template language come in; a
//! function directory rendered from the template (`functions/templates/LANG/`, embedded in
//! the binary so an installed `hark` works anywhere) and the function's entry appended to
//! the stack file go out.
//!
//! Each template folder holds `template.yml` (a one-line description, the build command if
//! there is one, and the `hark.yml` entry) and the files of the function. Every file is
//! rendered with minijinja (`{{ name }}` is the function's name); a trailing `.tmpl` is
//! dropped from file names, so a template's `Cargo.toml.tmpl` is never taken for a crate.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::function::{FunctionName, InvalidName};

/// One embedded template.
#[derive(Debug)]
pub struct Template {
    /// The `--lang` value.
    pub lang: &'static str,
    /// `template.yml`.
    meta: &'static str,
    /// `(path in the function directory, text)`, before rendering.
    files: &'static [(&'static str, &'static str)],
}

macro_rules! template_file {
    ($lang:literal, $path:literal) => {
        (
            $path,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/functions/templates/",
                $lang,
                "/",
                $path
            )),
        )
    };
}

macro_rules! template {
    ($lang:literal, [$($path:literal),* $(,)?]) => {
        Template {
            lang: $lang,
            meta: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/functions/templates/",
                $lang,
                "/template.yml"
            )),
            files: &[$(template_file!($lang, $path)),*],
        }
    };
}

/// The templates, in the order `hark new --list` shows them. A file added to a template
/// folder is listed here too (a test checks that the two agree).
pub static TEMPLATES: &[Template] = &[
    template!("shell", ["handler.sh"]),
    template!("rust", ["Cargo.toml.tmpl", ".gitignore", "src/main.rs"]),
    template!("python", ["handler.py"]),
    template!("browser", ["Cargo.toml.tmpl", ".gitignore", "src/main.rs"]),
];

/// Suffix dropped from a template file's name when it is written.
const TEMPLATE_SUFFIX: &str = ".tmpl";
/// Where functions go, beside the stack file.
pub const FUNCTIONS_DIR: &str = "functions";
/// What a new stack file starts with.
const NEW_STACK: &str = "\
# Hark's stack file (the OpenFaaS stack.yml shape). `hark up` deploys these functions at
# start; `hark deploy -f hark.yml` deploys them to a running gateway.
version: 1.0
provider:
  name: hark
  gateway: ${HARK_GATEWAY:-http://127.0.0.1:8080}

functions:
";

/// Why a function could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error("unknown language {0:?}: the templates are {langs} (`hark new --list` describes them)", langs = languages())]
    UnknownLanguage(String),
    #[error("{lang} functions are Cargo packages, whose names must start with a letter: {name:?} does not")]
    CrateName { lang: String, name: String },
    #[error("{} already exists; choose another name or remove it first", .0.display())]
    DirectoryExists(PathBuf),
    #[error("{}: there is already a function named {name:?}", path.display())]
    NameTaken { path: PathBuf, name: String },
    #[error("{}: {reason}; add this entry under `functions:` by hand:\n{entry}", path.display())]
    Stack {
        path: PathBuf,
        reason: String,
        entry: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {lang}: {file}: {reason}")]
    Template {
        lang: String,
        file: String,
        reason: String,
    },
}

/// The parts of `template.yml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    description: String,
    #[serde(default)]
    build: Option<String>,
    stack: String,
}

/// What [`create`] made.
#[derive(Debug)]
pub struct Created {
    /// The function's directory.
    pub dir: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<PathBuf>,
    /// Whether the stack file was created rather than extended.
    pub stack_created: bool,
    /// The command that builds the function, run beside the stack file (none for scripts).
    pub build: Option<String>,
}

/// The template languages, comma-separated.
fn languages() -> String {
    TEMPLATES
        .iter()
        .map(|t| t.lang)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Template {
    /// The template for `lang`.
    pub fn find(lang: &str) -> Result<&'static Template, ScaffoldError> {
        TEMPLATES
            .iter()
            .find(|t| t.lang == lang)
            .ok_or_else(|| ScaffoldError::UnknownLanguage(lang.to_owned()))
    }

    fn meta(&self) -> Result<Meta, ScaffoldError> {
        serde_norway::from_str(self.meta).map_err(|e| self.error("template.yml", e.to_string()))
    }

    /// The one-line description `hark new --list` shows.
    pub fn description(&self) -> String {
        self.meta().map(|m| m.description).unwrap_or_default()
    }

    fn error(&self, file: &str, reason: String) -> ScaffoldError {
        ScaffoldError::Template {
            lang: self.lang.to_owned(),
            file: file.to_owned(),
            reason,
        }
    }

    fn is_crate(&self) -> bool {
        self.files
            .iter()
            .any(|(path, _)| *path == "Cargo.toml.tmpl" || *path == "Cargo.toml")
    }

    /// Renders `text` (the file `file` of this template) for function `name`.
    fn render(&self, file: &str, text: &str, name: &FunctionName) -> Result<String, ScaffoldError> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| self.error(file, e.to_string()))?;
        env.set_syntax(syntax);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.render_str(text, minijinja::context! { name => name.as_str() })
            .map_err(|e| self.error(file, e.to_string()))
    }

    /// The function's files, rendered: `(path in the function directory, text)`.
    fn rendered_files(&self, name: &FunctionName) -> Result<Vec<(PathBuf, String)>, ScaffoldError> {
        self.files
            .iter()
            .map(|(path, text)| {
                let target = path.strip_suffix(TEMPLATE_SUFFIX).unwrap_or(path);
                Ok((PathBuf::from(target), self.render(path, text, name)?))
            })
            .collect()
    }
}

/// Creates function `name` from `template` beside the stack file `stack_file`: the
/// directory `functions/NAME` and an entry under `functions:` in the stack file (created
/// when missing). Nothing is written unless everything can be.
pub fn create(
    template: &Template,
    name: &str,
    stack_file: &Path,
) -> Result<Created, ScaffoldError> {
    let name: FunctionName = name.parse()?;
    if template.is_crate() && !name.as_str().starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(ScaffoldError::CrateName {
            lang: template.lang.to_owned(),
            name: name.as_str().to_owned(),
        });
    }
    let project = match stack_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let dir = project.join(FUNCTIONS_DIR).join(name.as_str());
    if dir.symlink_metadata().is_ok() {
        return Err(ScaffoldError::DirectoryExists(dir));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    let meta = template.meta()?;
    let entry = template.render("template.yml", &meta.stack, &name)?;
    let build = meta
        .build
        .as_deref()
        .map(|b| template.render("template.yml", b, &name))
        .transpose()?;
    let (old, stack_created) = match std::fs::read_to_string(stack_file) {
        Ok(text) => (text, false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (NEW_STACK.to_owned(), true),
        Err(e) => return Err(io(stack_file)(e)),
    };
    let new = add_function(&old, &name, &entry).map_err(|e| match e {
        EditError::Taken => ScaffoldError::NameTaken {
            path: stack_file.to_owned(),
            name: name.as_str().to_owned(),
        },
        EditError::Cannot(reason) => ScaffoldError::Stack {
            path: stack_file.to_owned(),
            reason,
            entry: entry.clone(),
        },
    })?;
    let files = template.rendered_files(&name)?;

    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let written = write_files(&dir, &files)
        .and_then(|()| std::fs::write(stack_file, new).map_err(io(stack_file)));
    if let Err(e) = written {
        // Leave no half-made function behind.
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Created {
        dir,
        files: files.into_iter().map(|(path, _)| path).collect(),
        stack_created,
        build,
    })
}

/// Writes `files` under `dir`; scripts (`#!` first) are made executable.
fn write_files(dir: &Path, files: &[(PathBuf, String)]) -> Result<(), ScaffoldError> {
    use std::os::unix::fs::PermissionsExt;
    for (path, text) in files {
        let target = dir.join(path);
        let io = |source| ScaffoldError::Io {
            path: target.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&target, text).map_err(io)?;
        if text.starts_with("#!") {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .map_err(io)?;
        }
    }
    Ok(())
}

/// Why an entry could not be added to a stack file's text.
#[derive(Debug, PartialEq, Eq)]
pub enum EditError {
    /// A function of that name is already there.
    Taken,
    /// The file cannot be edited safely (the reason).
    Cannot(String),
}

/// `text` (a stack file) with `entry` (a function's YAML, its name at column 0) added at
/// the end of the `functions:` map, or a new `functions:` map at the end. Everything
/// else — comments, order, formatting — is kept as it was: this is a text edit, checked
/// by parsing the result.
pub fn add_function(text: &str, name: &FunctionName, entry: &str) -> Result<String, EditError> {
    let before = functions_of(text)?;
    if before.iter().any(|f| f == name.as_str()) {
        return Err(EditError::Taken);
    }
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let header = lines.iter().position(|l| {
        l.strip_prefix("functions")
            .map(|rest| rest.trim_start_matches([' ', '\t']).starts_with(':'))
            .unwrap_or(false)
    });
    let indented = |indent: &str| -> String {
        entry
            .lines()
            .map(|l| {
                if l.trim().is_empty() {
                    newline.to_owned()
                } else {
                    format!("{indent}{l}{newline}")
                }
            })
            .collect()
    };
    let mut out = String::with_capacity(text.len() + entry.len() + 64);
    match header {
        None => {
            if !before.is_empty() {
                return Err(EditError::Cannot(
                    "its `functions:` key is not at the start of a line".into(),
                ));
            }
            out.push_str(text);
            if !text.is_empty() && !text.ends_with('\n') {
                out.push_str(newline);
            }
            out.push_str("functions:");
            out.push_str(newline);
            out.push_str(&indented("  "));
        }
        Some(at) => {
            let value = lines[at]["functions".len()..]
                .trim_start_matches([' ', '\t'])
                .trim_start_matches(':');
            let value = strip_comment(value).trim();
            let inline_empty = value == "{}";
            if !value.is_empty() && !inline_empty {
                return Err(EditError::Cannot(
                    "its `functions:` map is written inline".into(),
                ));
            }
            // The block ends before the next line at column 0 that is not a comment.
            let end = lines[at + 1..]
                .iter()
                .position(|l| {
                    let first = l.chars().next().unwrap_or(' ');
                    !l.trim().is_empty() && !matches!(first, ' ' | '\t' | '#')
                })
                .map(|i| at + 1 + i)
                .unwrap_or(lines.len());
            // Insert after the block's last indented line (entries and their comments).
            let last = (at + 1..end)
                .rev()
                .find(|&i| lines[i].starts_with([' ', '\t']) && !lines[i].trim().is_empty());
            let indent = (at + 1..end)
                .map(|i| lines[i])
                .find(|l| {
                    l.starts_with([' ', '\t'])
                        && !l.trim().is_empty()
                        && !l.trim_start().starts_with('#')
                })
                .map(|l| &l[..l.len() - l.trim_start().len()])
                .unwrap_or("  ");
            if inline_empty && last.is_some() {
                return Err(EditError::Cannot(
                    "its `functions: {}` is followed by indented lines".into(),
                ));
            }
            let insert_after = last.unwrap_or(at);
            for (i, line) in lines.iter().enumerate() {
                if i == at && inline_empty {
                    out.push_str("functions:");
                    out.push_str(newline);
                } else {
                    out.push_str(line);
                }
                if i == insert_after {
                    if !line.ends_with('\n') {
                        out.push_str(newline);
                    }
                    out.push_str(&indented(indent));
                }
            }
        }
    }
    let after = functions_of(&out)
        .map_err(|_| EditError::Cannot("the file would not parse with the entry added".into()))?;
    let mut expected = before;
    expected.push(name.as_str().to_owned());
    expected.sort();
    let mut got = after;
    got.sort();
    if got != expected {
        return Err(EditError::Cannot(
            "the entry would not land in its `functions:` map".into(),
        ));
    }
    Ok(out)
}

/// A YAML value without its trailing `# comment`.
fn strip_comment(value: &str) -> &str {
    match value
        .find(" #")
        .or_else(|| value.starts_with('#').then_some(0))
    {
        Some(i) => &value[..i],
        None => value,
    }
}

/// The names under `functions:` in a stack file's text.
fn functions_of(text: &str) -> Result<Vec<String>, EditError> {
    let value: serde_norway::Value = serde_norway::from_str(text)
        .map_err(|e| EditError::Cannot(format!("it does not parse ({e})")))?;
    let functions = match &value {
        serde_norway::Value::Null => return Ok(Vec::new()),
        serde_norway::Value::Mapping(root) => root.get("functions"),
        _ => return Err(EditError::Cannot("it is not a YAML map".into())),
    };
    match functions {
        None | Some(serde_norway::Value::Null) => Ok(Vec::new()),
        Some(serde_norway::Value::Mapping(map)) => Ok(map
            .keys()
            .map(|k| match k {
                serde_norway::Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap_or_default(),
            })
            .collect()),
        Some(_) => Err(EditError::Cannot("its `functions:` is not a map".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Stack;

    fn name(s: &str) -> FunctionName {
        s.parse().unwrap()
    }

    const ENTRY: &str = "new-fn:\n  handler: ./functions/new-fn\n  fprocess: ./handler.sh\n";

    #[test]
    fn an_entry_lands_at_the_end_of_the_functions_map_and_keeps_everything_else() {
        let text = "\
# My stack
version: 1.0
functions:
    # the first one
    echo:
        fprocess: cat   # trailing comment

    # a retired one:
    # old: {}

# The Alexa channel
alexa:
  skills: ./skills
";
        let out = add_function(text, &name("new-fn"), ENTRY).unwrap();
        assert_eq!(
            out,
            "\
# My stack
version: 1.0
functions:
    # the first one
    echo:
        fprocess: cat   # trailing comment

    # a retired one:
    # old: {}
    new-fn:
      handler: ./functions/new-fn
      fprocess: ./handler.sh

# The Alexa channel
alexa:
  skills: ./skills
"
        );
    }

    #[test]
    fn a_file_without_functions_gets_a_map_at_the_end() {
        let out = add_function("version: 1.0", &name("new-fn"), ENTRY).unwrap();
        assert_eq!(
            out,
            "version: 1.0\nfunctions:\n  new-fn:\n    handler: ./functions/new-fn\n    fprocess: ./handler.sh\n"
        );
        let out = add_function("", &name("new-fn"), ENTRY).unwrap();
        assert!(out.starts_with("functions:\n  new-fn:\n"), "{out}");
        let out = add_function(
            "functions: {}  # none yet\nalexa: {}\n",
            &name("new-fn"),
            ENTRY,
        )
        .unwrap();
        assert!(
            out.starts_with("functions:\n  new-fn:\n") && out.ends_with("alexa: {}\n"),
            "{out}"
        );
    }

    #[test]
    fn crlf_files_stay_crlf() {
        let out = add_function(
            "functions:\r\n  a:\r\n    fprocess: cat\r\n",
            &name("new-fn"),
            ENTRY,
        )
        .unwrap();
        assert_eq!(
            out,
            "functions:\r\n  a:\r\n    fprocess: cat\r\n  new-fn:\r\n    handler: ./functions/new-fn\r\n    fprocess: ./handler.sh\r\n"
        );
    }

    #[test]
    fn taken_names_and_unsafe_edits_are_refused() {
        let text = "functions:\n  new-fn:\n    fprocess: cat\n";
        assert_eq!(
            add_function(text, &name("new-fn"), ENTRY),
            Err(EditError::Taken)
        );
        for text in [
            "functions: {a: {fprocess: cat}}\n",
            "functions: [a]\n",
            "- a list\n",
            "functions:\n  a: [unclosed\n",
        ] {
            assert!(
                matches!(
                    add_function(text, &name("new-fn"), ENTRY),
                    Err(EditError::Cannot(_))
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn every_template_renders_into_a_stack_entry_hark_can_load() {
        for template in TEMPLATES {
            let meta = template.meta().unwrap();
            assert!(!meta.description.is_empty());
            let entry = template
                .render("template.yml", &meta.stack, &name("my-fn"))
                .unwrap();
            let text = add_function(NEW_STACK, &name("my-fn"), &entry).unwrap();
            let stack = Stack::parse(&text, Path::new("hark.yml"), Path::new("/p"), &|_| None)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", template.lang));
            assert_eq!(stack.functions.len(), 1, "{}", template.lang);
            let f = &stack.functions[0];
            assert_eq!(f.service.as_str(), "my-fn");
            assert_eq!(
                f.annotations[crate::function::ANNOTATION_WORKDIR],
                "/p/functions/my-fn"
            );
            assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
            for (path, text) in template.rendered_files(&name("my-fn")).unwrap() {
                assert!(
                    !text.contains("{{"),
                    "{}: {} not rendered",
                    template.lang,
                    path.display()
                );
            }
        }
    }

    #[test]
    fn the_embedded_files_are_the_files_of_the_template_folders() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/templates");
        let mut on_disk = Vec::new();
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = TEMPLATES
            .iter()
            .flat_map(|t| {
                std::iter::once(format!("{}/template.yml", t.lang))
                    .chain(t.files.iter().map(move |(p, _)| format!("{}/{p}", t.lang)))
            })
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn create_writes_the_function_and_refuses_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let stack = dir.path().join("hark.yml");
        let created = create(Template::find("shell").unwrap(), "greet", &stack).unwrap();
        assert!(created.stack_created);
        let script = dir.path().join("functions/greet/handler.sh");
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(text.contains("Hello from greet"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&script).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let loaded = Stack::load(&stack).unwrap();
        assert_eq!(
            loaded.functions[0].env_process.as_deref(),
            Some("./handler.sh")
        );

        // The directory exists: refused, and the stack file is left alone.
        let before = std::fs::read_to_string(&stack).unwrap();
        let e = create(Template::find("python").unwrap(), "greet", &stack).unwrap_err();
        assert!(matches!(e, ScaffoldError::DirectoryExists(_)), "{e}");
        // The name is in the stack file but has no directory: refused, nothing written.
        std::fs::remove_dir_all(dir.path().join("functions/greet")).unwrap();
        let e = create(Template::find("python").unwrap(), "greet", &stack).unwrap_err();
        assert!(matches!(e, ScaffoldError::NameTaken { .. }), "{e}");
        assert!(!dir.path().join("functions/greet").exists());
        assert_eq!(std::fs::read_to_string(&stack).unwrap(), before);

        let e = create(Template::find("shell").unwrap(), "Bad_Name", &stack).unwrap_err();
        assert!(e.to_string().contains("invalid function name"), "{e}");
        let e = create(Template::find("rust").unwrap(), "9lives", &stack).unwrap_err();
        assert!(matches!(e, ScaffoldError::CrateName { .. }), "{e}");
        let e = Template::find("cobol").unwrap_err();
        assert!(
            e.to_string().contains("shell, rust, python, browser"),
            "{e}"
        );
    }
}
