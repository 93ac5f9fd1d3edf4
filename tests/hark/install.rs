//! What an installed `hark` gives besides the gateway: shell completions, a man page, and
//! a start outside the repository that says where the examples are.

use std::process::Command;

use crate::util::hark_bin;

fn hark(args: &[&str]) -> String {
    let output = Command::new(hark_bin()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "hark {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn completions_and_the_man_page_cover_the_subcommands() {
    for (shell, marker) in [
        ("bash", "complete -F _hark"),
        ("zsh", "#compdef hark"),
        ("fish", "complete -c hark"),
    ] {
        let script = hark(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: {script}");
        for subcommand in ["up", "doctor", "deploy", "invoke", "say"] {
            assert!(script.contains(subcommand), "{shell} lacks {subcommand}");
        }
    }
    let page = hark(&["man"]);
    assert!(page.contains(".TH hark 1"), "{page}");
    assert!(page.contains("doctor"), "{page}");
    // Hidden internals stay out of the page.
    assert!(!page.contains("browser-guard"));
}

/// The stack file's JSON Schema: `hark schema` prints the committed `hark.schema.json`
/// (which `hark.yml` names for editors), it accepts the repository's `hark.yml`, and it
/// rejects a misspelt key that `hark up` would only warn of.
#[test]
fn the_schema_validates_the_stack_file_and_rejects_a_misspelt_key() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let printed: serde_json::Value = serde_json::from_str(&hark(&["schema"])).unwrap();
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("hark.schema.json")).unwrap())
            .unwrap();
    assert_eq!(
        printed, committed,
        "hark.schema.json is stale: ./target/debug/hark schema > hark.schema.json"
    );
    let stack_text = std::fs::read_to_string(root.join("hark.yml")).unwrap();
    assert!(stack_text.starts_with("# yaml-language-server: $schema=./hark.schema.json"));

    let validator = jsonschema::validator_for(&printed).unwrap();
    let stack: serde_json::Value = serde_norway::from_str(&stack_text).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&stack)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "hark.yml: {errors:?}");

    for (misspelt, key) in [
        (
            stack_text.replace("    fprocess: ./handler.sh", "    fprocesss: ./handler.sh"),
            "fprocesss",
        ),
        (
            stack_text.replace("  allow_sha1_signature", "  allow_sha1_signatures"),
            "allow_sha1_signatures",
        ),
        (stack_text.replace("functions:", "fuctions:"), "fuctions"),
    ] {
        let stack: serde_json::Value = serde_norway::from_str(&misspelt).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&stack)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.iter().any(|e| e.contains(key)),
            "{key} accepted: {errors:?}"
        );
    }
}
