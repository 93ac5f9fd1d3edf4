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
